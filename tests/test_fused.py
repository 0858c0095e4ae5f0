"""The fused LSTM layer (custom VJP) against autodiff of the plain scan.

The reference is ``jax.grad`` of :func:`lstm_jax.functional.run_layer` (``lax.scan`` of
``lstm_step``), which shares no code with the fused kernel's hand-written backward pass.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fused_runs import fused as _fused
from fused_runs import loss as _loss
from fused_runs import scan as _scan
from jax.test_util import check_grads

import lstm_jax
from lstm_jax import functional as F
from lstm_jax._src import fused as fused_kernel

T, B, I, H = 7, 3, 4, 5  # noqa: E741 (the dimension vocabulary)
LENGTHS = np.array([7, 2, 5], np.int32)


def _layer(key, proj=0, bias=True, dtype=jnp.float64, variants=()):
    """``variants``: the names of :func:`F.init_lstm_layer`'s flags to turn on."""
    flags = dict.fromkeys(variants, True)
    return F.init_lstm_layer(key, I, H, bias=bias, proj_size=proj, dtype=dtype, **flags)


def _inputs(proj=0, dtype=jnp.float64, batch=B):
    keys = jax.random.split(jax.random.key(1), 3)
    out = proj or H
    x = jax.random.normal(keys[0], (T, batch, I), dtype)
    state_dtype = jnp.float32 if dtype == jnp.bfloat16 else dtype
    state = F.LSTMState(
        jax.random.normal(keys[1], (batch, out), state_dtype),
        jax.random.normal(keys[2], (batch, H), state_dtype),
    )
    return x, state


@pytest.mark.parametrize(
    "reverse,lengths,proj,bias,checkpoint,unroll,variants",
    [
        (False, None, 0, True, None, 1, ()),
        (True, LENGTHS, 0, True, None, 1, ()),
        (False, LENGTHS, 2, True, None, 2, ()),
        (True, None, 2, False, 3, 1, ()),
        (True, LENGTHS, 2, True, 4, 3, ()),
        (False, LENGTHS, 0, False, 3, 1, ()),
        (True, LENGTHS, 0, True, None, 1, ("peephole",)),
        (False, LENGTHS, 2, True, 4, 2, ("peephole",)),
        (False, LENGTHS, 0, True, None, 1, ("cifg",)),
        (True, LENGTHS, 2, False, 3, 1, ("cifg", "peephole")),
    ],
)
def test_fused_layer_equals_scan_values_and_gradients(
    reverse, lengths, proj, bias, checkpoint, unroll, variants
):
    params = _layer(jax.random.key(0), proj, bias, variants=variants)
    x, state = _inputs(proj)
    seq = None if lengths is None else jnp.asarray(lengths)

    @jax.jit
    def outputs_and_grads(params, x, state):
        results = []
        for run in (_fused(seq, reverse, checkpoint, unroll), _scan(seq, reverse)):
            grads = jax.value_and_grad(_loss(run), argnums=(0, 1, 2))(params, x, state)
            results.append((run(params, x, state), grads))
        return results

    got, expected = outputs_and_grads(params, x, state)
    chex.assert_trees_all_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [3, 16])
def test_fused_forward_without_gradients_equals_scan(batch):
    """Both sides of the batch rule: the projection hoisted at batch 3, per step at 16."""
    assert 3 < fused_kernel._PER_STEP_PROJECTION_MIN_BATCH <= 16
    params = _layer(jax.random.key(0), proj=2)
    x, state = _inputs(proj=2, batch=batch)
    seq = jax.random.randint(jax.random.key(2), (batch,), 1, T + 1, jnp.int32)
    for reverse in (False, True):
        got = jax.jit(_fused(seq, reverse))(params, x, state)
        expected = jax.jit(_scan(seq, reverse))(params, x, state)
        chex.assert_trees_all_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lengths,checkpoint", [(LENGTHS, None), (None, 3)])
def test_fused_bidirectional_equals_two_scans(lengths, checkpoint):
    params = tuple(_layer(k, proj=2) for k in jax.random.split(jax.random.key(0)))
    x, state = _inputs(proj=2)
    seq = None if lengths is None else jnp.asarray(lengths)

    def fused(params, x, state):
        y, (fwd, bwd) = F.run_fused_bidirectional(
            params, x, (state, state), seq_lengths=seq, checkpoint=checkpoint
        )
        return y, F.LSTMState(fwd.h + bwd.h, fwd.c * bwd.c)

    def scans(params, x, state):
        y_f, fwd = _scan(seq, False)(params[0], x, state)
        y_b, bwd = _scan(seq, True)(params[1], x, state)
        return jnp.concatenate([y_f, y_b], -1), F.LSTMState(fwd.h + bwd.h, fwd.c * bwd.c)

    got = jax.jit(jax.value_and_grad(_loss(fused), argnums=(0, 1, 2)))(params, x, state)
    expected = jax.jit(jax.value_and_grad(_loss(scans), argnums=(0, 1, 2)))(params, x, state)
    chex.assert_trees_all_close(got, expected, rtol=1e-10, atol=1e-12)


def test_fused_check_grads_float64():
    params = _layer(jax.random.key(2), proj=2)
    x, state = _inputs(proj=2)
    loss = jax.jit(_loss(_fused(jnp.asarray(LENGTHS), True, checkpoint=3)))
    check_grads(loss, (params, x, state), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_fused_bfloat16_matmuls_keep_float32_state():
    params = _layer(jax.random.key(0), dtype=jnp.bfloat16)
    x, state = _inputs(dtype=jnp.bfloat16)
    seq = jnp.asarray(LENGTHS)
    y, final = _fused(seq, False)(params, x, state)
    y_ref, final_ref = _scan(seq, False)(params, x, state)
    assert y.dtype == final.c.dtype == jnp.float32
    chex.assert_trees_all_close((y, final), (y_ref, final_ref), atol=2e-2)
    grads = jax.grad(_loss(_fused(seq, False)), argnums=(0, 1, 2))(params, x, state)
    grads_ref = jax.grad(_loss(_scan(seq, False)), argnums=(0, 1, 2))(params, x, state)
    assert grads[0].weight_hh.dtype == grads[1].dtype == jnp.bfloat16
    assert grads[2].c.dtype == jnp.float32
    scale = jax.tree.map(lambda g: float(jnp.max(jnp.abs(g.astype(jnp.float32)))), grads_ref)
    error = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))),
        grads,
        grads_ref,
    )
    for err, ref in zip(jax.tree.leaves(error), jax.tree.leaves(scale), strict=True):
        assert err <= 0.05 * ref + 1e-2


def test_checkpoint_reduces_compiled_memory():
    params = F.init_lstm_layer(jax.random.key(0), 8, 32, dtype=jnp.float32)
    x = jnp.zeros((1000, 4, 8), jnp.float32)
    state = F.LSTMState(jnp.zeros((4, 32), jnp.float32), jnp.zeros((4, 32), jnp.float32))

    def temp_bytes(checkpoint):
        loss = _loss(_fused(None, False, checkpoint))
        compiled = jax.jit(jax.grad(loss)).lower(params, x, state).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    full, chunked = temp_bytes(None), temp_bytes(50)
    # Without checkpointing the backward pass keeps every step's gate activations and
    # cell state, 5H floats per row; chunks of 50 keep 1/50 of the states and one
    # chunk's activations. At least 80% of those bytes must be gone.
    stored = 1000 * 4 * 5 * 32 * 4
    assert full - chunked > 0.8 * stored, (full, chunked, stored)


def test_fused_jit_equals_eager_and_does_not_retrace():
    params = _layer(jax.random.key(0))
    x, state = _inputs()
    run = jax.jit(F.run_fused_layer)
    first = run(params, x, state)
    run(jax.tree.map(lambda a: a + 1.0, params), x, state)
    assert run._cache_size() == 1
    chex.assert_trees_all_close(first, F.run_fused_layer(params, x, state), rtol=1e-12)


def test_fused_rejects_layer_norm():
    params = F.init_lstm_layer(jax.random.key(0), I, H, dtype=jnp.float64, layer_norm=True)
    x, state = _inputs()
    with pytest.raises(ValueError, match="peepholes and CIFG, not layer norm"):
        F.run_fused_layer(params, x, state)


def test_lstm_backends_agree_on_a_bidirectional_stack():
    batch_first = True
    params = F.init_lstm_params(
        jax.random.key(0), I, H, num_layers=2, bidirectional=True, proj_size=3, dtype=jnp.float64
    )
    x = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)
    h0 = jax.random.normal(jax.random.key(2), (4, B, 3), jnp.float64)
    c0 = jax.random.normal(jax.random.key(3), (4, B, H), jnp.float64)

    def loss(params, x, h0, c0, backend):
        y, (h, c) = F.lstm(
            params,
            x,
            (h0, c0),
            seq_lengths=jnp.asarray(LENGTHS),
            batch_first=batch_first,
            backend=backend,
        )
        return jnp.sum(jnp.tanh(y) * y) + jnp.sum(h * c[..., :3]) + jnp.sum(c)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)), static_argnames="backend")
    chex.assert_trees_all_close(
        grad(params, x, h0, c0, backend="fused"),
        grad(params, x, h0, c0, backend="scan"),
        rtol=1e-10,
        atol=1e-12,
    )


def test_inter_layer_and_input_dropout_draw_the_same_masks_on_both_kernels():
    # Masks applied outside the loop work on the fused kernel; recurrent dropout and
    # zoneout (inside the loop) are covered in test_backends.py.
    params = F.init_lstm_params(jax.random.key(0), I, H, num_layers=2, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    kwargs = dict(dropout=0.3, input_dropout=0.2, key=jax.random.key(5))
    fused, _ = F.lstm(params, x, backend="fused", **kwargs)
    scan, _ = F.lstm(params, x, backend="scan", **kwargs)
    chex.assert_trees_all_close(fused, scan, rtol=1e-12)
    assert not np.allclose(fused, F.lstm(params, x, backend="fused")[0])


def test_nnx_lstm_backend_option():
    x = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    outputs = {
        backend: lstm_jax.LSTM(
            I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0), backend=backend
        )(x)
        for backend in ("scan", "fused", "auto")
    }
    chex.assert_trees_all_close(outputs["fused"], outputs["scan"], atol=1e-5)
    chex.assert_trees_all_close(outputs["auto"], outputs["fused"], atol=1e-6)
    with pytest.raises(ValueError, match="backend must be one of"):
        lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0), backend="oneDNN")
