"""The fused layer derived from a cell's definition: it composes like the scan.

The reference for every value and gradient is ``backend="scan"`` (autodiff of
``lax.scan``), which tests/test_gru_rnn.py and tests/test_variants.py check against
float64 NumPy loops and torch. In float32 on CPU the GRU and the RNN run native loops
instead (tests/test_native_gru_rnn.py): float32 checks here trace inside
``portable_kernels()``, where the derived layer runs.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import lstm_jax
from lstm_jax import functional as F

T, B, I, H = 6, 3, 4, 5
CELLS = [
    ("gru", {}),
    ("rnn_tanh", {}),
    ("lstm", {"peephole": True, "layer_norm": True}),
    ("lstm", {"cifg": True, "proj_size": 3}),
]


def _params(name, options, dtype=jnp.float64, **stack):
    return F.init_params(name, jax.random.key(0), I, H, dtype=dtype, **options, **stack)


def _x(dtype=jnp.float64, seed=1):
    return jax.random.normal(jax.random.key(seed), (T, B, I), dtype)


def _loss(name, backend, **options):
    def loss(p, x):
        out, state = F.apply_recurrent(name, p, x, backend=backend, **options)
        out = out.astype(state[0].dtype)  # bfloat16 outputs, float32 state
        return jnp.sum(jnp.tanh(out) ** 2) + sum(jnp.sum(jnp.sin(s)) for s in state)

    return loss


@pytest.mark.parametrize("name, options", CELLS[::2], ids=lambda v: str(v))
def test_second_order_gradients_match_the_scan(name, options):
    params, x = _params(name, options), _x()
    lengths = jnp.asarray([6, 2, 4])

    def grad_norm(backend):
        loss = _loss(name, backend, seq_lengths=lengths)
        return lambda p: sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(loss)(p, x)))

    chex.assert_trees_all_close(
        jax.grad(grad_norm("fused"))(params),
        jax.grad(grad_norm("scan"))(params),
        rtol=1e-8,
        atol=1e-10,
    )


@pytest.mark.parametrize("name, options", CELLS[:2], ids=lambda v: str(v))
def test_vmap_and_jit_match_the_scan(name, options):
    params = _params(name, options, num_layers=2, bidirectional=True)
    xs = jnp.stack([_x(seed=s) for s in range(3)])
    run = {
        b: jax.jit(jax.vmap(jax.value_and_grad(_loss(name, b)), in_axes=(None, 0)))
        for b in ("scan", "fused")
    }
    chex.assert_trees_all_close(run["fused"](params, xs), run["scan"](params, xs), rtol=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name, options", CELLS[1:], ids=lambda v: str(v))
def test_nan_and_inf_propagate_as_the_scan(name, options, bad):
    params = _params(name, options, dtype=jnp.float32)
    x = _x(jnp.float32).at[2, 1, 0].set(bad)
    with lstm_jax.portable_kernels():
        fused = jax.value_and_grad(_loss(name, "fused"), (0, 1))(params, x)
    for wanted, got in zip(
        jax.value_and_grad(_loss(name, "scan"), (0, 1))(params, x), fused, strict=True
    ):
        for a, b in zip(jax.tree.leaves(wanted), jax.tree.leaves(got), strict=True):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
            finite = np.isfinite(a)
            np.testing.assert_allclose(a[finite], b[finite], rtol=2e-4, atol=1e-5)


def test_exports_and_runs_like_the_scan():
    params, x = _params("gru", {}, dtype=jnp.float32), _x(jnp.float32)
    grad = jax.jit(jax.grad(_loss("gru", "fused")))
    with lstm_jax.portable_kernels():
        exported = export.export(grad, platforms=["cpu", "cuda", "tpu"])(params, x)
    chex.assert_trees_all_close(
        exported.call(params, x), jax.grad(_loss("gru", "scan"))(params, x), rtol=1e-5
    )


def test_bfloat16_products_keep_a_float32_state():
    params, x = _params("gru", {}, dtype=jnp.float32), _x(jnp.float32)
    run = {b: jax.value_and_grad(_loss("gru", b, dtype=jnp.bfloat16)) for b in ("scan", "fused")}
    (v_scan, g_scan), (v_fused, g_fused) = run["scan"](params, x), run["fused"](params, x)
    np.testing.assert_allclose(v_fused, v_scan, rtol=2e-2)
    for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_fused), strict=True):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_allclose(b, a, rtol=5e-2, atol=5e-2)
