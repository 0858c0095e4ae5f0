"""LSTM against the independent float64 NumPy loop, plus the structural properties of RNN code.

Scan == Python loop of steps; reverse == flip of each valid prefix; a padded row == that
sequence alone; batch_first == time-major; jit == eager with no retrace; gradients by
check_grads in float64; NNX == Linen == functional on the same weights.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads
from numpy_lstm import lstm as numpy_lstm

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F
from lstm_jax._src.interop.torch import stack_to_named

T, B, I, H = 6, 3, 4, 5


def _params(num_layers, bidirectional, proj_size=0, bias=True, dtype=jnp.float64, seed=0):
    return F.init_lstm_params(
        jax.random.key(seed),
        I,
        H,
        num_layers,
        bidirectional=bidirectional,
        proj_size=proj_size,
        bias=bias,
        dtype=dtype,
    )


def _x(dtype=np.float64, shape=(T, B, I), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


GRID = [
    # (num_layers, bidirectional, proj_size, bias, lengths)
    (1, False, 0, True, None),
    (2, True, 0, True, [6, 2, 4]),
    (3, False, 3, True, [1, 6, 3]),
    (2, True, 2, False, [5, 6, 1]),
]


@pytest.mark.parametrize("num_layers,bidirectional,proj_size,bias,lengths", GRID)
@pytest.mark.parametrize("with_hx", [False, True])
def test_matches_numpy_float64(num_layers, bidirectional, proj_size, bias, lengths, with_hx):
    params = _params(num_layers, bidirectional, proj_size, bias)
    named = {k: np.asarray(v) for k, v in stack_to_named(params).items()}
    x = _x()
    h_out, ld = proj_size or H, num_layers * (2 if bidirectional else 1)
    hx = (_x(shape=(ld, B, h_out), seed=2), _x(shape=(ld, B, H), seed=3)) if with_hx else None
    lengths_arr = None if lengths is None else np.asarray(lengths, np.int32)
    out, (h_n, c_n) = F.lstm(params, jnp.asarray(x), hx, seq_lengths=lengths_arr)
    ref_out, ref_h, ref_c = numpy_lstm(
        named, x, num_layers, bidirectional, *(hx or (None, None)), lengths=lengths
    )
    np.testing.assert_allclose(out, ref_out, atol=1e-12)
    np.testing.assert_allclose(h_n, ref_h, atol=1e-12)
    np.testing.assert_allclose(c_n, ref_c, atol=1e-12)


def test_scan_equals_python_loop_of_cell_steps():
    params = _params(1, False)[0][0]
    x = jnp.asarray(_x())
    state = F.LSTMState(jnp.zeros((B, H), jnp.float64), jnp.zeros((B, H), jnp.float64))
    outs = []
    for t in range(T):
        state = F.lstm_cell(params, x[t], state)
        outs.append(state.h)
    out, (h_n, c_n) = F.lstm(((params,),), x)
    np.testing.assert_allclose(out, jnp.stack(outs), atol=1e-13)
    np.testing.assert_allclose(h_n[0], state.h, atol=1e-13)
    np.testing.assert_allclose(c_n[0], state.c, atol=1e-13)


def test_reverse_equals_forward_on_flipped_valid_prefix():
    fwd, bwd = _params(1, True)[0]
    x = jnp.asarray(_x())
    lengths = np.array([6, 2, 4], np.int32)
    out, (h_n, _) = F.lstm(((fwd, bwd),), x, seq_lengths=lengths)
    for b, n in enumerate(lengths):
        flipped = x[:n, b : b + 1][::-1]
        rev_out, (rev_h, _) = F.lstm(((bwd,),), flipped)
        np.testing.assert_allclose(out[:n, b, H:], rev_out[::-1, 0], atol=1e-13)
        np.testing.assert_allclose(h_n[1, b], rev_h[0, 0], atol=1e-13)
        np.testing.assert_array_equal(out[n:, b], 0.0)


def test_padded_row_equals_sequence_alone():
    params = _params(2, True)
    x = jnp.asarray(_x())
    lengths = np.array([6, 3, 1], np.int32)
    out, (h_n, c_n) = F.lstm(params, x, seq_lengths=lengths)
    for b, n in enumerate(lengths):
        alone_out, (alone_h, alone_c) = F.lstm(params, x[:n, b : b + 1])
        np.testing.assert_allclose(out[:n, b], alone_out[:, 0], atol=1e-13)
        np.testing.assert_allclose(h_n[:, b], alone_h[:, 0], atol=1e-13)
        np.testing.assert_allclose(c_n[:, b], alone_c[:, 0], atol=1e-13)


def test_batch_first_equals_time_major():
    params = _params(2, True, proj_size=3)
    x = jnp.asarray(_x())
    lengths = np.array([6, 3, 1], np.int32)
    out_tm, state_tm = F.lstm(params, x, seq_lengths=lengths)
    out_bf, state_bf = F.lstm(params, jnp.swapaxes(x, 0, 1), seq_lengths=lengths, batch_first=True)
    np.testing.assert_array_equal(jnp.swapaxes(out_bf, 0, 1), out_tm)
    chex.assert_trees_all_equal(state_bf, state_tm)


def test_unbatched_equals_batch_of_one():
    params = _params(2, True)
    x = jnp.asarray(_x())
    out, (h, c) = F.lstm(params, x[:, 0])
    out1, (h1, c1) = F.lstm(params, x[:, :1])
    assert out.shape == (T, 2 * H) and h.shape == (4, H)
    np.testing.assert_array_equal(out, out1[:, 0])
    np.testing.assert_array_equal(h, h1[:, 0])


def test_jit_equals_eager_and_does_not_retrace():
    params = _params(2, True)
    x = jnp.asarray(_x())
    lengths = jnp.asarray([6, 2, 4], jnp.int32)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(params, x, lengths):
        return F.lstm(params, x, seq_lengths=lengths)

    eager = F.lstm(params, x, seq_lengths=lengths)
    chex.assert_trees_all_close(run(params, x, lengths), eager, atol=1e-13)
    # Second call with new values of the same shapes, traced lengths included: no retrace.
    out2 = run(params, x + 1.0, jnp.asarray([1, 6, 3], jnp.int32))
    chex.assert_trees_all_close(
        out2, F.lstm(params, x + 1.0, seq_lengths=np.array([1, 6, 3])), atol=1e-13
    )


@pytest.mark.parametrize("bidirectional,proj_size,lengths", [(False, 0, None), (True, 2, [3, 1])])
def test_gradients_float64(bidirectional, proj_size, lengths):
    params = F.init_lstm_params(
        jax.random.key(0),
        2,
        3,
        2,
        bidirectional=bidirectional,
        proj_size=proj_size,
        dtype=jnp.float64,
    )
    x = jnp.asarray(_x(shape=(3, 2, 2)))
    h_out = proj_size or 3
    ld = 2 * (2 if bidirectional else 1)
    h0 = jnp.asarray(_x(shape=(ld, 2, h_out), seed=4))
    c0 = jnp.asarray(_x(shape=(ld, 2, 3), seed=5))
    seq = None if lengths is None else np.asarray(lengths, np.int32)

    def f(params, x, h0, c0):
        out, (h, c) = F.lstm(params, x, (h0, c0), seq_lengths=seq)
        return jnp.sum(jnp.sin(out)) + jnp.sum(h**2) + jnp.sum(jnp.cos(c))

    check_grads(f, (params, x, h0, c0), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_bfloat16_compute_keeps_float32_state():
    params = _params(2, False, dtype=jnp.float32)
    x = jnp.asarray(_x(np.float32))
    out, (h, c) = F.lstm(params, x, dtype=jnp.bfloat16)
    ref, (h_ref, c_ref) = F.lstm(params, x)
    assert out.dtype == jnp.bfloat16 and h.dtype == c.dtype == jnp.float32
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)
    np.testing.assert_allclose(c, c_ref, atol=3e-2)


def test_nnx_linen_functional_agree():
    x = jnp.asarray(_x(np.float32))
    lengths = jnp.asarray([6, 2, 4], jnp.int32)
    model = lstm_jax.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, rngs=nnx.Rngs(0))
    out_nnx, state_nnx = model(x, seq_lengths=lengths)
    out_f, state_f = F.lstm(model.stack_params, x, seq_lengths=lengths)
    linen_model = lstm_jax.linen.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3)
    variables = {"params": stack_to_named(model.stack_params)}
    out_linen, state_linen = linen_model.apply(variables, x, seq_lengths=lengths)
    chex.assert_trees_all_equal((out_nnx, state_nnx), (out_f, state_f))
    chex.assert_trees_all_close((out_linen, state_linen), (out_f, state_f), atol=1e-6)
    # The Linen module's own init creates exactly the torch-named parameters of the NNX one.
    linen_init = linen_model.init(jax.random.key(0), x)["params"]
    chex.assert_trees_all_equal_shapes(dict(linen_init), stack_to_named(model.stack_params))
