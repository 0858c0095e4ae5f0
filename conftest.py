"""Test configuration shared by tests/ and the doctests under lstm_jax/.

Strict dtype promotion and rank-promotion errors catch silent upcasts and accidental
broadcasting; float64 is enabled so NumPy float64 references and ``check_grads`` run at
full precision (library code always names its dtypes, so nothing drifts to float64).

One test session shares one JAX compilation cache: a private directory made by the first
process (pytest, or its controller under ``-n``) and removed by it at the end. Its xdist
workers and every subprocess a test starts inherit it through the environment, so a program
compiled once (a worker's grid point, each process of a killed-and-resumed run, the notebooks
of the documentation build) is loaded by the others instead of compiled again.
"""

import os
import shutil
import tempfile

# Notebooks executed by the tests (nbmake) run at their small size; kernels inherit this.
os.environ.setdefault("LSTM_JAX_SMALL", "1")
# The suite's time is mostly XLA compiling small programs: its LLVM backend at the lowest
# optimisation level compiles them about a third faster (measured on the fused layers'
# tests). XLA's HLO passes (fusion, SPMD partitioning, buffer assignment) still run, so
# the checks of compiled programs hold; JAX_DISABLE_MOST_OPTIMIZATIONS=0 tests the fully
# optimised code. Workers, subprocesses and the notebooks inherit the setting.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402 (after the environment it reads)

jax.config.update("jax_enable_x64", True)
jax.config.update(
    "jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"
)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


_own_compilation_cache = []  # the directory this process made, if it made one


def pytest_configure(config):
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # workers and subprocesses inherit it
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lstm_jax_tests_xla_")
        _own_compilation_cache.append(os.environ["JAX_COMPILATION_CACHE_DIR"])
    # Programs that compile in under half a second are not worth a file.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )


def pytest_unconfigure(config):
    for directory in _own_compilation_cache:
        shutil.rmtree(directory, ignore_errors=True)
