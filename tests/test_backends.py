"""Backend selection and the cuDNN backend (``jax.experimental.rnn``).

On CPU: the choice of ``backend="auto"``, the errors of explicit backends, and the cuDNN
weight packing, checked with ``jax.experimental.rnn.lstm_ref`` (the reference that ships
with the cuDNN wrapper). On GPU (marked ``gpu``): the cuDNN backend against the scan.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from lstm_jax import functional as F
from lstm_jax._src.backends import LayerPlan, resolve_backend
from lstm_jax._src.backends.cudnn import pack_weights

on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")

T, B, IN, H = 6, 3, 4, 5


def _params(**kwargs):
    return F.init_lstm_params(jax.random.key(0), IN, H, dtype=jnp.float32, **kwargs)


def _kernel(backend, cell, params, dtype=jnp.float32, **plan):
    """The name of the kernel ``backend`` resolves to."""
    return resolve_backend(backend, cell, params, LayerPlan(jnp.dtype(dtype), **plan)).name


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="CPU choice")
def test_auto_on_cpu_takes_the_kernel_measured_faster():
    for variant in ({"proj_size": 2}, {"peephole": True}, {"cifg": True}, {"layer_norm": True}):
        params = _params(**variant)
        assert _kernel("auto", F.LSTM_CELL, params, jnp.float32, dropout=False) == "fused"
    rnn = F.init_rnn_params(jax.random.key(0), IN, H)
    assert _kernel("auto", F.RNN_TANH_CELL, rnn, jnp.float32, dropout=False) == "fused"
    gru = F.init_gru_params(jax.random.key(0), IN, H)
    assert _kernel("auto", F.GRU_CELL, gru, jnp.float32, dropout=False) == "fused"
    # zoneout mixes states inside each step: the scan
    assert (
        _kernel("auto", F.LSTM_CELL, _params(), jnp.float32, dropout=True, zoneout=True) == "scan"
    )


def test_explicit_backends_that_cannot_run_raise():
    with pytest.raises(ValueError, match="backend must be one of"):
        _kernel("cudnn_v2", F.LSTM_CELL, _params(), jnp.float32, dropout=False)
    with pytest.raises(ValueError, match="cannot run this configuration.*checkpoints the LSTM"):
        layer_norm = _params(layer_norm=True)
        _kernel("fused", F.LSTM_CELL, layer_norm, jnp.float32, dropout=False, checkpoint=4)
    with pytest.raises(ValueError, match="no projection"):
        _kernel("cudnn", F.LSTM_CELL, _params(proj_size=2), jnp.float32, dropout=False)
    with pytest.raises(ValueError, match="float32 only"):
        _kernel("cudnn", F.LSTM_CELL, _params(), jnp.bfloat16, dropout=False)
    with pytest.raises(ValueError, match="dropout"):
        _kernel("cudnn", F.LSTM_CELL, _params(), jnp.float32, dropout=True)
    with pytest.raises(ValueError, match="backend=.fused. cannot run.*zoneout"):
        F.lstm(
            _params(layer_norm=True),
            jnp.ones((T, B, IN), jnp.float32),
            backend="fused",
            zoneout=0.1,
            deterministic=True,
        )


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_cudnn_weight_packing_matches_lstm_ref(num_layers, bidirectional):
    params = _params(num_layers=num_layers, bidirectional=bidirectional)
    weights = pack_weights(params)
    assert weights.shape == (rnn.get_num_params_in_lstm(IN, H, num_layers, bidirectional),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, IN, H, num_layers, bidirectional)
    directions = 2 if bidirectional else 1
    for layer in range(num_layers):
        for d in range(directions):
            p, k = params[layer][d], layer * directions + d
            for ours, theirs in (
                (p.weight_ih, w_ih[k]),
                (p.weight_hh, w_hh[k]),
                (p.bias_ih, b_ih[k]),
                (p.bias_hh, b_hh[k]),
            ):
                np.testing.assert_array_equal(ours, theirs)

    x = jax.random.normal(jax.random.key(1), (T, B, IN), jnp.float32)
    h0 = jax.random.normal(jax.random.key(2), (num_layers * directions, B, H), jnp.float32)
    c0 = jax.random.normal(jax.random.key(3), (num_layers * directions, B, H), jnp.float32)
    lengths = jnp.full((B,), T, jnp.int32)
    y_ref, h_ref, c_ref = rnn.lstm_ref(
        jnp.swapaxes(x, 0, 1),
        h0,
        c0,
        w_ih,
        w_hh,
        b_ih,
        b_hh,
        lengths,
        IN,
        H,
        num_layers,
        0.0,
        bidirectional,
    )
    y, (h, c) = F.lstm(params, x, (h0, c0), backend="scan")
    chex.assert_trees_all_close((y, h, c), (jnp.swapaxes(y_ref, 0, 1), h_ref, c_ref), atol=1e-5)


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, np.array([6, 2, 4], np.int32)])
def test_cudnn_backend_equals_scan_on_gpu(bidirectional, lengths):
    params = _params(num_layers=2, bidirectional=bidirectional)
    x = jax.random.normal(jax.random.key(1), (T, B, IN), jnp.float32)
    seq = None if lengths is None else jnp.asarray(lengths)

    def loss(params, x, backend):
        y, (h, c) = F.lstm(params, x, seq_lengths=seq, backend=backend)
        return jnp.sum(y * y) + jnp.sum(h) + jnp.sum(c * c), (y, h, c)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True), static_argnames="backend")
    with jax.default_matmul_precision("highest"):
        got, expected = grad(params, x, "cudnn"), grad(params, x, "scan")
    chex.assert_trees_all_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@on_gpu
def test_auto_on_gpu_picks_cudnn_when_supported():
    assert _kernel("auto", F.LSTM_CELL, _params(), jnp.float32, dropout=False) == "cudnn"
    assert _kernel("auto", F.LSTM_CELL, _params(proj_size=2), jnp.float32, dropout=False) == "scan"


def test_zoneout_picks_the_scan_and_recurrent_dropout_runs_fused():
    params = F.init_lstm_params(jax.random.key(0), 3, 4)
    x = jnp.ones((5, 2, 3), jnp.float32)
    for options in (
        dict(zoneout=0.1, key=jax.random.key(1)),
        dict(zoneout=0.1, deterministic=True),  # the expectation still mixes states per step
    ):
        with pytest.raises(ValueError, match="zoneout mixes old and new state"):
            F.lstm(params, x, backend="fused", **options)
        auto = F.lstm(params, x, backend="auto", **options)
        scan = F.lstm(params, x, backend="scan", **options)
        chex.assert_trees_all_equal(auto, scan)
    # one mask per sequence: the fused layer derived from the cell runs it
    options = dict(recurrent_dropout=0.2, key=jax.random.key(1))
    chex.assert_trees_all_close(
        F.lstm(params, x, backend="fused", **options),
        F.lstm(params, x, backend="scan", **options),
        atol=1e-6,
    )


# --- The real cuDNN kernel where the wrapper steps in: traced zero lengths, vmap, and
# second order (on CPU, tests/test_cudnn_safety.py checks the wrapper around a fake). ---


@pytest.mark.gpu
@on_gpu
def test_cudnn_traced_zero_lengths_vmap_and_second_order_on_gpu():
    params = _params(num_layers=2, bidirectional=True)
    n = 4
    xs = jax.random.normal(jax.random.key(1), (n, T, B, IN), jnp.float32)
    lengths = jnp.array([[T, 0, 2], [0, 0, 1], [3, T, 0], [1, 2, 3]], jnp.int32)

    def loss(params, x, lengths, backend):
        y, (h, c) = F.lstm(params, x, seq_lengths=lengths, backend=backend)
        return jnp.sum(y * y) + jnp.sum(h) + jnp.sum(c * c), (y, h, c)

    def checks(backend):
        def grad(params, x, lengths):
            return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, x, lengths, backend)

        return (
            jax.jit(grad)(params, xs[0], lengths[0]),  # traced lengths: the 0 reaches cuDNN
            jax.jit(jax.vmap(grad, (None, 0, 0)))(params, xs, lengths),  # per example
            jax.jit(jax.vmap(lambda x, n: loss(params, x, n, backend)[1]))(xs, lengths),
        )

    with jax.default_matmul_precision("highest"):
        got = checks("cudnn")
        chex.assert_trees_all_close(got, checks("scan"), atol=1e-4, rtol=1e-4)
    y, h, _ = got[2]
    np.testing.assert_array_equal(y[1][:, :2], 0.0)  # rows of length 0: zero outputs
    np.testing.assert_array_equal(h[1][:, :2], 0.0)  # and the (zero) initial state
    with pytest.raises(NotImplementedError, match="backend='fused' or 'scan'"):
        jax.grad(lambda x: jnp.sum(jax.grad(lambda x: loss(params, x, None, "cudnn")[0])(x)))(xs[0])
