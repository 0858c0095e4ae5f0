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

import jax

# Notebooks executed by the tests (nbmake) run at their small size; kernels inherit this.
os.environ.setdefault("LSTM_JAX_SMALL", "1")

_OWN_COMPILATION_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_COMPILATION_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lstm_jax_tests_xla_")
# Programs that compile in under half a second are not worth a file.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The environment reaches the workers and subprocesses; this process reads it here.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_unconfigure(config):
    if _OWN_COMPILATION_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
