"""The GRU's and the RNN's native CPU loops (``lstm_jax/_src/native/lstm_cpu.cc``,
``fused_gru_rnn.py``).

The reference is autodiff of the plain scan of the same cell
(:func:`lstm_jax.functional.run_layer`) run in float64 on the same float32 parameters and
inputs: it shares no code with the C++ loops or with the layer's XLA loops.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fused_runs import (
    assert_same_nonfinite_pattern,
    assert_second_order_and_vmap_match,
)
from fused_runs import float64 as _float64

import lstm_jax
from lstm_jax import functional as F
from lstm_jax._src import fused, fused_gru_rnn
from lstm_jax._src.native import lstm_cpu

T, B, I, H = 9, 11, 6, 64  # B = 11 leaves a partial tile of rows
LENGTHS = np.array([9, 2, 5, 1, 9, 7, 3, 8, 9, 4, 6], np.int32)

_REASON = lstm_cpu.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))


CELLS = {"gru": F.GRU_CELL, "rnn_tanh": F.RNN_TANH_CELL, "rnn_relu": F.RNN_RELU_CELL}
INIT = {"gru": F.init_gru_layer, "rnn_tanh": F.init_rnn_layer, "rnn_relu": F.init_rnn_layer}
STATE = {"gru": F.GRUState, "rnn_tanh": F.RNNState, "rnn_relu": F.RNNState}


def _problem(kind, key, scale=1.0, time=T, batch=B, hidden=H, inputs=I, bias=True):
    keys = jax.random.split(key, 3)
    params = INIT[kind](keys[0], inputs, hidden, bias=bias)
    x = scale * jax.random.normal(keys[1], (time, batch, inputs), jnp.float32)
    state = STATE[kind](jax.random.normal(keys[2], (batch, hidden), jnp.float32))
    return params, x, state


def _loss(run):
    def loss_of(params, x, state):
        y, final = run(params, x, state)
        return jnp.sum(y * jnp.cos(y)) + jnp.sum(jnp.sin(final.h))

    return loss_of


def _native(kind, seq_lengths=None, reverse=False):
    def run(params, x, state):
        return fused_gru_rnn.run_native_layer(
            CELLS[kind], params, x, state, seq_lengths=seq_lengths, reverse=reverse
        )

    return run


def _scan(kind, seq_lengths=None, reverse=False):
    def run(params, x, state):
        return F.run_layer(CELLS[kind], params, x, state, seq_lengths=seq_lengths, reverse=reverse)

    return run


def _values_and_grads(run, *args):
    return run(*args), jax.grad(_loss(run), argnums=(0, 1, 2))(*args)


def _assert_native_equals_float64(kind, native, scan, args, tol=2e-5):
    lowered = jax.jit(lambda *a: _values_and_grads(native, *a)).lower(*args)
    assert f"lstm_jax_native_{kind}_forward" in lowered.as_text()
    assert f"lstm_jax_native_{kind}_backward" in lowered.as_text()
    expected = jax.jit(lambda *a: _values_and_grads(scan, *a))(*_float64(args))
    chex.assert_trees_all_close(_float64(lowered.compile()(*args)), expected, rtol=tol, atol=tol)


# Hidden sizes that leave the last block of 32 units partial (less than a vector, less
# than a block, a block and one unit), padded steps in both directions, saturated gates.
@pytest.mark.parametrize(
    "hidden,reverse,lengths,scale,bias",
    [
        (H, False, None, 1.0, True),
        (H, True, LENGTHS, 1.0, True),
        (1, False, LENGTHS, 1.0, False),
        (5, True, None, 1.0, True),
        (33, False, LENGTHS, 30.0, True),
        (100, True, LENGTHS, 1.0, True),
    ],
)
@pytest.mark.parametrize("kind", list(CELLS))
def test_native_layer_equals_float64_scan(kind, hidden, reverse, lengths, scale, bias):
    params, x, state = _problem(kind, jax.random.key(hidden), scale, hidden=hidden, bias=bias)
    seq = None if lengths is None else jnp.asarray(lengths)
    # x30 inputs saturate the gates; relu's unbounded state grows to ~1e3 there instead,
    # and float32 rounds its gradients to ~1e-4 relative.
    tol = 5e-4 if kind == "rnn_relu" and scale > 1 else 2e-5
    _assert_native_equals_float64(
        kind, _native(kind, seq, reverse), _scan(kind, seq, reverse), (params, x, state), tol
    )


@pytest.mark.parametrize("time,batch,hidden", [(60, 11, 64), (7, 130, 100)])
@pytest.mark.parametrize("kind", ["gru", "rnn_tanh"])
def test_native_backward_over_several_chunks_equals_float64_scan(kind, time, batch, hidden):
    """Weight gradients every ~256 rows of gate gradients (B = 11: chunks of 24 steps;
    B = 130: of 2), several threads at B = 130 where the CPUs allow."""
    params, x, state = _problem(kind, jax.random.key(6), time=time, batch=batch, hidden=hidden)
    seq = jax.random.randint(jax.random.key(7), (batch,), 1, time + 1, jnp.int32)
    _assert_native_equals_float64(kind, _native(kind, seq), _scan(kind, seq), (params, x, state))


@pytest.mark.parametrize("kind", ["gru", "rnn_relu"])
def test_native_batch_of_one_equals_float64_scan(kind):
    """One row: the forward call takes the input products of each chunk of 256 steps at
    its first step (T = 300: 256 and 44), here with a partial block, backwards."""
    params, x, state = _problem(kind, jax.random.key(11), time=300, batch=1, hidden=100)
    _assert_native_equals_float64(
        kind, _native(kind, reverse=True), _scan(kind, reverse=True), (params, x, state)
    )


@pytest.mark.parametrize("kind,size", [("gru", 520), ("rnn_relu", 900)])
def test_native_forward_with_weights_beyond_the_cache_equals_float64_scan(kind, size):
    """Weights over 6 MiB (GRU, I = H = 520: 6.5 MB; RNN, I = H = 900: 6.5 MB): the forward
    call takes the input products of each chunk of steps at its first step, here with a
    partial block. Sums over I + H >= 1,000 terms: float32 is ~1e-4 from float64 there."""
    params, x, state = _problem(kind, jax.random.key(9), batch=64, hidden=size, inputs=size)
    seq = jax.random.randint(jax.random.key(10), (64,), 1, T + 1, jnp.int32)
    _assert_native_equals_float64(
        kind, _native(kind, seq, True), _scan(kind, seq, True), (params, x, state), 2e-4
    )


@pytest.mark.parametrize("kind", list(CELLS))
def test_native_xla_loops_equal_the_native_calls(kind):
    """The XLA loops that run lowered for other platforms and give the native calls'
    derivatives, called directly on CPU."""
    params, x, state = _problem(kind, jax.random.key(11), hidden=20)
    w = fused_gru_rnn._stack_weights(kind, (params,))
    x, h0 = x[None], state.h[None]
    valid = (jnp.arange(T, dtype=jnp.int32)[:, None] < jnp.asarray(LENGTHS)[None])[None]
    native = fused_gru_rnn._native_forward(kind, w, x, valid, h0, save=True)
    xla = fused_gru_rnn._xla_forward(kind, w, x, valid, h0, unroll=1, save=True)
    chex.assert_trees_all_close(native, xla, rtol=1e-5, atol=1e-5)
    y, _, acts = native
    dy, dh_t = jnp.cos(y), jnp.sin(h0)
    h_prev = fused.previous_state(y, h0, valid)
    args = (w, x, valid, h_prev, acts, dy, dh_t)
    chex.assert_trees_all_close(
        fused_gru_rnn._native_backward(kind, *args),
        fused_gru_rnn._xla_backward(kind, *args, unroll=1),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("kind", list(CELLS))
def test_native_second_order_gradients_and_vmap_equal_the_scan(kind):
    params, x, state = _problem(kind, jax.random.key(5))
    seq = jnp.asarray(LENGTHS)
    native, scan = _native(kind, seq), _scan(kind, seq)

    # Curvatures up to ~1e4 here: float32's own scan is ~2e-3 from float64 on them.
    assert_second_order_and_vmap_match(native, scan, _loss, (params, x, state), 5e-3)


def test_gru_fused_backend_runs_the_native_loops_and_equals_the_scan_backend():
    """``backend="fused"`` on a 2-layer bidirectional GRU with lengths: the native calls,
    the scan's outputs and gradients; float64 and recurrent dropout take the derived layer.
    The RNN's modules go through the same kernel code."""
    params = F.init_gru_params(jax.random.key(1), I, 24, num_layers=2, bidirectional=True)
    x = jax.random.normal(jax.random.key(2), (T, B, I), jnp.float32)
    seq = jnp.asarray(LENGTHS)

    def loss(backend):
        def of(params, x):
            out, h = F.gru(params, x, seq_lengths=seq, backend=backend)
            return jnp.sum(out * jnp.cos(out)) + jnp.sum(h * h)

        return jax.jit(jax.value_and_grad(of, argnums=(0, 1)))

    assert "lstm_jax_native_gru_backward" in loss("fused").lower(params, x).as_text()
    chex.assert_trees_all_close(
        loss("fused")(params, x), loss("scan")(params, x), rtol=2e-5, atol=2e-5
    )
    forward = jax.jit(lambda p, x: F.gru(p, x, seq_lengths=seq, backend="fused"))
    assert "lstm_jax_native_gru_forward" in forward.lower(params, x).as_text()
    chex.assert_trees_all_close(
        forward(params, x), F.gru(params, x, seq_lengths=seq, backend="scan"), rtol=2e-5, atol=2e-5
    )
    for model in (
        lstm_jax.GRU(I, 24, num_layers=2, rngs=nnx.Rngs(0)),
        lstm_jax.RNN(I, 24, nonlinearity="relu", rngs=nnx.Rngs(0)),
    ):
        assert [c.native_cpu for c in lstm_jax.explain_backend(model, x)] == [True]
    relu = jax.jit(lambda p, x: F.rnn(p, x, nonlinearity="relu", backend="fused"))
    assert (
        "lstm_jax_native_rnn_relu_forward"
        in relu.lower(F.init_rnn_params(jax.random.key(3), I, 24), x).as_text()
    )
    p64, x64 = _float64((params, x))
    assert "lstm_jax_native" not in loss("fused").lower(p64, x64).as_text()
    dropped = jax.jit(
        lambda p, x: F.gru(p, x, backend="fused", recurrent_dropout=0.5, key=jax.random.key(0))
    )
    assert "lstm_jax_native" not in dropped.lower(params, x).as_text()


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh"])
def test_native_layer_lowers_for_gpu_and_tpu_without_the_native_calls(kind):
    params, x, state = _problem(kind, jax.random.key(12))
    f = jax.jit(lambda *a: _values_and_grads(_native(kind), *a))
    for platform in ("cuda", "tpu"):
        text = f.trace(params, x, state).lower(lowering_platforms=(platform,)).as_text()
        assert "lstm_jax_native" not in text and "while" in text


nan, inf = float("nan"), float("inf")
# (what, index, value) planted in a layer of hidden size 37 (a full block of 32 units and
# a partial one); row 1 of the lengths below is padded from step 2 on. The GRU's recurrent
# bias of n at -inf gives r * -inf (n = -1, but a NaN gradient); an RNN's saturates.
NONFINITE = {
    "x_nan": ("x", (2, 1, 3), nan),
    "x_posinf": ("x", (2, 1, 3), inf),
    "x_nan_at_a_padded_step": ("x", (4, 1, 3), nan),
    "x_posinf_at_a_padded_step": ("x", (4, 1, 3), inf),
    "h0_nan_in_the_last_unit": ("h0", (3, -1), nan),
    "h0_posinf": ("h0", (2, 7), inf),
    "weight_hh_nan": ("weight_hh", (-3, 9), nan),
    "bias_hh_neginf": ("bias_hh", (-5,), -inf),
    "bias_hh_nan": ("bias_hh", (-5,), nan),
}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("padded", [False, True], ids=["full", "seq_lengths"])
@pytest.mark.parametrize("case", list(NONFINITE))
def test_native_propagates_nonfinite_values_as_the_scan(case, padded, kind):
    if case == "bias_hh_neginf" and kind != "gru":
        pytest.skip("an RNN's state saturates at -1 or 0 there: nothing to propagate")
    params, x, state = _problem(kind, jax.random.key(13), time=6, batch=4, hidden=37, inputs=5)
    what, index, value = NONFINITE[case]
    if what == "x":
        x = x.at[index].set(value)
    elif what == "h0":
        state = STATE[kind](state.h.at[index].set(value))
    else:
        params = params._replace(**{what: getattr(params, what).at[index].set(value)})
    seq = jnp.asarray([6, 2, 4, 1], jnp.int32) if padded else None
    native = jax.jit(lambda *a: _values_and_grads(_native(kind, seq), *a))
    assert f"lstm_jax_native_{kind}_backward" in native.lower(params, x, state).as_text()
    expected = jax.jit(lambda *a: _values_and_grads(_scan(kind, seq), *a))(params, x, state)
    assert any(not np.isfinite(a).all() for a in jax.tree.leaves(expected))
    assert_same_nonfinite_pattern(native(params, x, state), expected)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_native_loops_give_the_same_bits_on_one_thread_as_on_two(kind, monkeypatch):
    """Each thread computes whole units and whole rows of every product, in the same
    order on any number of threads: jobs that share the CPUs lose nothing by taking one.
    B = 64, H = 100: several threads where the CPUs allow."""
    init = {"lstm": F.init_lstm_params, "gru": F.init_gru_params, "rnn": F.init_rnn_params}
    run = {"lstm": F.lstm, "gru": F.gru, "rnn": F.rnn}[kind]
    params = init[kind](
        jax.random.key(0), 40, 100, num_layers=2, bidirectional=True, dtype=jnp.float32
    )
    x = jax.random.normal(jax.random.key(1), (12, 64, 40), jnp.float32)
    grads = []
    for threads in ("1", "2"):
        monkeypatch.setenv("LSTM_JAX_NATIVE_THREADS", threads)  # read when traced
        loss = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(run(p, x)[0])), argnums=(0, 1)))
        assert f"max_threads = {threads} : i64" in loss.lower(params, x).as_text()
        grads.append(jax.tree.leaves(loss(params, x)))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_array_equal(a, b)
