"""One LSTM layer run two ways, shared by the fused-kernel tests.

:func:`scan` is the reference (``lax.scan`` of the cell, differentiated by autodiff);
:func:`fused` is the fused layer with the same arguments; :func:`loss` reads every output.
Each returns a function of ``(params, x, state)``. :func:`assert_same_nonfinite_pattern`
compares the NaN and inf of two runs; :func:`assert_second_order_and_vmap_match` checks a
native layer's gradient of a gradient and ``vmap`` against a float64 scan.
"""

import chex
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


def float64(tree):
    """``tree`` with its float32 leaves in float64."""
    return jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, tree)


def assert_second_order_and_vmap_match(native, scan, loss, args, curvature_atol=1e-4):
    """A native layer ``native(params, x, state)`` against ``scan`` in float64: the
    gradient of the squared norm of ``loss``'s gradient (the native calls take their
    derivatives from XLA loops), and values and gradients under ``vmap`` over two sets of
    parameters (the native calls once per mapped element)."""
    params, x, state = args

    def curvature(run):
        def grad_norm(*a):
            return sum(jnp.sum(g * g) for g in jax.tree.leaves(jax.grad(loss(run))(*a)))

        return jax.jit(jax.grad(grad_norm))

    def values_and_grads(run, *a):
        return run(*a), jax.grad(loss(run), argnums=(0, 1, 2))(*a)

    chex.assert_trees_all_close(
        float64(curvature(native)(*args)),
        curvature(scan)(*float64(args)),
        rtol=1e-4,
        atol=curvature_atol,
    )
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
    mapped = jax.jit(jax.vmap(lambda p: values_and_grads(native, p, x, state)))(stacked)
    for k in range(2):
        p = float64(jax.tree.map(lambda a, k=k: a[k], stacked))
        expected = jax.jit(lambda *a: values_and_grads(scan, *a))(p, *float64((x, state)))
        got = jax.tree.map(lambda a, k=k: a[k], mapped)
        chex.assert_trees_all_close(float64(got), expected, rtol=2e-5, atol=2e-5)
