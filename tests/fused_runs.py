"""One LSTM layer run two ways, shared by the fused-kernel tests.

:func:`scan` is the reference (``lax.scan`` of the cell, differentiated by autodiff);
:func:`fused` is the fused layer with the same arguments; :func:`loss` reads every output.
Each returns a function of ``(params, x, state)``. :func:`pytest_on_avx2_build` reruns a
test file's checks on the native kernel's AVX2 version; :func:`assert_same_nonfinite_pattern`
compares the NaN and inf of two runs.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import functional as F


def loss(run):
    """A loss that reads every output, with a different weight per element."""

    def loss_of(params, x, state):
        y, final = run(params, x, state)
        return jnp.sum(y * jnp.cos(y)) + jnp.sum(final.h * final.h) + jnp.sum(jnp.sin(final.c))

    return loss_of


def scan(seq_lengths=None, reverse=False):
    def run(params, x, state):
        return F.run_layer(F.LSTM_CELL, params, x, state, seq_lengths=seq_lengths, reverse=reverse)

    return run


def fused(seq_lengths=None, reverse=False, checkpoint=None, unroll=1):
    def run(params, x, state):
        return F.run_fused_layer(
            params,
            x,
            state,
            seq_lengths=seq_lengths,
            reverse=reverse,
            checkpoint=checkpoint,
            unroll=unroll,
        )

    return run


def pytest_on_avx2_build(test_file: str, selection: str, cwd) -> None:
    """Runs ``pytest test_file -k selection`` in a subprocess on the AVX2 build of the
    native kernel (``LSTM_JAX_NATIVE_ISA=avx2``) and asserts that the checks ran and passed."""
    env = dict(os.environ, LSTM_JAX_NATIVE_ISA="avx2")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", test_file, "-k", selection],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]


def assert_same_nonfinite_pattern(got, expected):
    """NaN, +inf and -inf in exactly the same entries of every leaf, close values elsewhere."""
    leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
    for (path, e), g in zip(leaves, jax.tree.leaves(got), strict=True):
        e, g = np.asarray(e), np.asarray(g)
        name = jax.tree_util.keystr(path)
        for test in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(test(g), test(e), err_msg=f"{test.__name__} {name}")
        finite = np.isfinite(e)
        np.testing.assert_allclose(g[finite], e[finite], rtol=1e-4, atol=1e-5, err_msg=name)
