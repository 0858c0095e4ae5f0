"""Activation checkpointing over time (``checkpoint=K``): same numbers, less memory.

The reference is the same computation without checkpointing (autodiff of the plain
scan, itself checked against the float64 NumPy loop and torch elsewhere), in float64 so
that recomputation can only differ by rounding.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F
from lstm_jax._src.backends import LayerPlan, resolve_backend

T, B, IN, H = 11, 3, 4, 5
LENGTHS = jnp.array([11, 6, 1])


def _value_and_grads(params, x, **kwargs):
    def loss(params, x):
        out, state = F.lstm(params, x, **kwargs)
        return jnp.sum(out**2) + jnp.sum(jnp.sin(state.c)) + jnp.sum(state.h)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)


def _stack_inputs():
    params = F.init_lstm_params(
        jax.random.key(0), IN, H, num_layers=2, bidirectional=True, dtype=jnp.float64
    )
    return params, jax.random.normal(jax.random.key(1), (T, B, IN), jnp.float64)


@functools.cache
def _plain_stack(packed: bool):
    """The reference: the same stack's value and gradients on the scan, not checkpointed."""
    return _value_and_grads(
        *_stack_inputs(), backend="scan", seq_lengths=LENGTHS if packed else None
    )


@pytest.mark.parametrize("backend", ["scan", "fused"])
@pytest.mark.parametrize("checkpoint", [3, T + 5])  # chunks with a padded tail; one chunk
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "packed"])
def test_checkpointed_stack_equals_the_plain_one(backend, checkpoint, lengths):
    params, x = _stack_inputs()
    expected = _plain_stack(lengths is not None)
    got = _value_and_grads(params, x, backend=backend, seq_lengths=lengths, checkpoint=checkpoint)
    chex.assert_trees_all_close(got, expected, rtol=1e-12, atol=1e-12)


def test_checkpoint_with_zoneout_and_variants_on_the_scan():
    """The per-step regularisers and variants run on the scan, checkpointed too."""
    params = F.init_lstm_params(
        jax.random.key(0), IN, H, peephole=True, layer_norm=True, dtype=jnp.float64
    )
    x = jax.random.normal(jax.random.key(1), (T, B, IN), jnp.float64)
    kwargs = dict(zoneout=(0.2, 0.1), recurrent_dropout=0.3, key=jax.random.key(2))
    expected = _value_and_grads(params, x, **kwargs)
    chex.assert_trees_all_close(
        _value_and_grads(params, x, checkpoint=4, **kwargs), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("cls", [lstm_jax.LSTM, lstm_jax.GRU, lstm_jax.RNN])
def test_modules_take_checkpoint(cls):
    def grads(checkpoint):
        model = cls(
            IN, H, num_layers=2, checkpoint=checkpoint, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
        )
        x = jax.random.normal(jax.random.key(1), (T, B, IN), jnp.float64)
        return nnx.grad(lambda m: jnp.sum(m(x)[0] ** 2))(model)

    chex.assert_trees_all_close(grads(3), grads(None), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="checkpoint"):
        cls(IN, H, checkpoint=0, rngs=nnx.Rngs(0))


def test_linen_takes_checkpoint_and_backend():
    x = jax.random.normal(jax.random.key(1), (T, B, IN))
    plain = lstm_jax.linen.LSTM(
        IN, H, num_layers=2, options=lstm_jax.RecurrentOptions(backend="scan")
    )
    variables = plain.init(jax.random.key(0), x)
    chunked = lstm_jax.linen.LSTM(
        IN, H, num_layers=2, options=lstm_jax.RecurrentOptions(backend="fused", checkpoint=4)
    )
    chex.assert_trees_all_close(
        chunked.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="backend must be one of"):
        lstm_jax.linen.LSTM(IN, H, options=lstm_jax.RecurrentOptions(backend="cuda"))
    with pytest.raises(ValueError, match="checkpoint"):
        lstm_jax.linen.GRU(IN, H, options=lstm_jax.RecurrentOptions(checkpoint=-1))


def test_cudnn_refuses_checkpointing():
    params = F.init_lstm_params(jax.random.key(0), IN, H, dtype=jnp.float32)
    plan = LayerPlan(jnp.dtype(jnp.float32), checkpoint=4)
    with pytest.raises(ValueError, match="no activation checkpointing"):
        resolve_backend("cudnn", F.LSTM_CELL, params, plan)
    assert resolve_backend("auto", F.LSTM_CELL, params, plan).name in ("fused", "scan")


@pytest.mark.parametrize("backend", ["scan", "fused"])
def test_checkpoint_reduces_compiled_memory_of_the_stack(backend):
    """XLA's own accounting of the backward pass's temporary buffers (no timing)."""
    params = F.init_lstm_params(jax.random.key(0), 8, 32, dtype=jnp.float32)
    x = jnp.zeros((1000, 4, 8), jnp.float32)

    def temp_bytes(checkpoint):
        def loss(p, x):
            return jnp.sum(F.lstm(p, x, backend=backend, checkpoint=checkpoint)[0])

        compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    full, chunked = temp_bytes(None), temp_bytes(50)
    assert chunked < full / 3, (full, chunked)
