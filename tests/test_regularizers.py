"""Regularisers: variational input and recurrent dropout, weight drop, zoneout.

The tests check the randomness properties each paper prescribes, not just shapes. Most
use an Elman RNN with hand-set weights whose output exposes the masks exactly (the
masks are drawn by the stack and the loop, which do not know the cell kind), plus
reference checks of how the LSTM and GRU steps consume the recurrent mask, zoneout's
evaluation-time expectation against the float64 NumPy LSTM, and module-level behaviour.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads
from references import gru_step, lstm_variant_step, run

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F
from lstm_jax._src.interop.torch import stack_to_named

T, B, H = 5, 4, 8


def _rnn_params(weight_ih, weight_hh):
    """One layer, one direction, no bias: ``h_t = relu(W_ih x_t + W_hh h_{t-1})``."""
    return (
        (F.RNNParams(jnp.asarray(weight_ih, jnp.float64), jnp.asarray(weight_hh, jnp.float64)),),
    )


def _relu_rnn(params, x, h0, **kwargs):
    return F.rnn(
        params,
        jnp.asarray(x, jnp.float64),
        jnp.asarray(h0, jnp.float64),
        nonlinearity="relu",
        **kwargs,
    )


def test_recurrent_dropout_is_one_mask_per_sequence_reused_at_every_step():
    # W_ih = 0, W_hh = I, h_0 = 1: h_t = m * h_{t-1} = m^t, so a mask that changed between
    # steps would show as a unit that is nonzero at one step and zero at a later one.
    params = _rnn_params(np.zeros((H, 1)), np.eye(H))
    x, h0 = np.zeros((T, B, 1)), np.ones((1, B, H))
    out, _ = _relu_rnn(params, x, h0, recurrent_dropout=0.5, key=jax.random.key(0))
    out = np.asarray(out)
    kept = out[0] > 0
    powers = 2.0 ** np.arange(1, T + 1)[:, None, None]  # kept units scale by 1 / (1 - 0.5)
    np.testing.assert_array_equal(out, np.where(kept[None], powers, 0.0))
    assert 0 < kept.sum() < kept.size
    assert len({tuple(row) for row in kept}) > 1, "rows of the batch must get their own masks"
    other, _ = _relu_rnn(params, x, h0, recurrent_dropout=0.5, key=jax.random.key(1))
    again, _ = _relu_rnn(params, x, h0, recurrent_dropout=0.5, key=jax.random.key(0))
    assert not np.array_equal(other, out) and np.array_equal(again, out)
    evaluation, _ = _relu_rnn(params, x, h0, recurrent_dropout=0.5, deterministic=True)
    np.testing.assert_array_equal(evaluation, np.ones((T, B, H)))


def test_input_dropout_is_one_mask_per_sequence_on_every_layer_input():
    # W_ih = I, W_hh = 0, x = 1: each layer outputs its input mask times its input, so
    # two layers give values in {0, 4}, constant over time.
    eye = np.eye(H)
    params = _rnn_params(eye, np.zeros((H, H))) * 2
    x, h0 = np.ones((T, B, H)), np.zeros((2, B, H))
    out, _ = _relu_rnn(params, x, h0, input_dropout=0.5, key=jax.random.key(0))
    out = np.asarray(out)
    assert set(np.unique(out)) == {0.0, 4.0}
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))
    assert len({tuple(row) for row in out[0]}) > 1
    # a unit is 4 when both layers' masks keep it: probability 1/4
    assert 0.1 < np.mean(out[0] == 4.0) < 0.45
    evaluation, _ = _relu_rnn(params, x, h0, input_dropout=0.5, deterministic=True)
    np.testing.assert_array_equal(evaluation, np.ones((T, B, H)))


def test_weight_drop_is_one_mask_per_call_on_the_recurrent_weight():
    # W_ih = 0 and h_0 = identity rows: step 1 outputs the columns of the effective W_hh;
    # step 2 must be that same matrix applied again (one mask for all steps and rows).
    a = np.random.default_rng(0).uniform(0.5, 1.5, size=(H, H))
    params = _rnn_params(np.zeros((H, 1)), a)
    x, h0 = np.zeros((3, H, 1)), np.eye(H)[None]
    out, _ = _relu_rnn(params, x, h0, weight_dropout=0.5, key=jax.random.key(0))
    out = np.asarray(out)
    w_eff = out[0].T
    dropped = w_eff == 0.0
    np.testing.assert_allclose(np.where(dropped, 0.0, w_eff), np.where(dropped, 0.0, 2 * a))
    assert 0 < dropped.sum() < dropped.size
    np.testing.assert_allclose(out[1], out[0] @ w_eff.T, rtol=1e-12)
    np.testing.assert_allclose(out[2], out[1] @ w_eff.T, rtol=1e-12)
    other, _ = _relu_rnn(params, x, h0, weight_dropout=0.5, key=jax.random.key(1))
    assert not np.array_equal(np.asarray(other)[0], out[0])
    evaluation, _ = _relu_rnn(params, x, h0, weight_dropout=0.5, deterministic=True)
    np.testing.assert_allclose(np.asarray(evaluation)[0], a.T, rtol=1e-12)

    # the mask is on the weight: dropped entries get exactly zero gradient
    def loss(params):
        return jnp.sum(_relu_rnn(params, x, h0, weight_dropout=0.5, key=jax.random.key(0))[0])

    grad = np.asarray(jax.grad(loss)(params)[0][0].weight_hh)
    assert np.all(grad[dropped] == 0.0) and np.all(grad[~dropped] != 0.0)


def test_zoneout_fresh_mask_per_step_and_expectation_at_evaluation():
    # W_ih = I, W_hh = 0, x_t = t + 1: the candidate at step t is t + 1, so each unit is
    # either updated to t + 1 or keeps its previous value exactly.
    hidden, batch, time, rate = 16, 4, 6, 0.5
    params = _rnn_params(np.eye(hidden), np.zeros((hidden, hidden)))
    x = np.broadcast_to(np.arange(1.0, time + 1)[:, None, None], (time, batch, hidden))
    h0 = np.zeros((1, batch, hidden))
    out, _ = _relu_rnn(params, x, h0, zoneout=rate, key=jax.random.key(0))
    out = np.asarray(out)
    previous = np.concatenate([h0, out[:-1]])
    kept = out == previous
    np.testing.assert_array_equal(np.where(kept, previous, x), out)
    assert 0.35 < kept.mean() < 0.65
    assert not np.array_equal(kept[1], kept[2]), "zoneout draws a new mask at every step"
    other, _ = _relu_rnn(params, x, h0, zoneout=rate, key=jax.random.key(1))
    assert not np.array_equal(other, out)
    evaluation, _ = _relu_rnn(params, x, h0, zoneout=rate, deterministic=True)
    expected, h = [], h0[0]
    for t in range(time):
        h = rate * h + (1 - rate) * x[t]
        expected.append(h)
    np.testing.assert_allclose(evaluation, np.stack(expected), rtol=1e-12)


@pytest.mark.parametrize("bidirectional,lengths", [(True, [5, 2, 4]), (False, None)])
def test_lstm_zoneout_expectation_matches_numpy(bidirectional, lengths):
    """Zoneout on h and c with different rates; evaluation uses rate * old + (1 - rate) * new."""
    params = F.init_lstm_params(
        jax.random.key(0),
        3,
        5,
        2,
        bidirectional=bidirectional,
        proj_size=2,
        peephole=True,
        dtype=jnp.float64,
    )
    d = 2 if bidirectional else 1
    x = np.random.default_rng(1).normal(size=(T, 3, 3))
    h0, c0 = np.zeros((2 * d, 3, 2)), np.zeros((2 * d, 3, 5))
    seq = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    out, (h_n, c_n) = F.lstm(
        params, jnp.asarray(x), zoneout=(0.1, 0.6), deterministic=True, seq_lengths=seq
    )
    named = {k: np.asarray(v) for k, v in stack_to_named(params).items()}
    ref_out, (ref_h, ref_c) = run(
        lstm_variant_step, named, x, (h0, c0), 2, bidirectional, lengths, zoneout=(0.1, 0.6)
    )
    chex.assert_trees_all_close((out, h_n, c_n), (ref_out, ref_h, ref_c), atol=1e-12)


def test_recurrent_mask_enters_only_the_recurrent_product():
    """Variational dropout drops h_{t-1} in W_hh h_{t-1}; c, the peepholes and the GRU's
    z * h_{t-1} see the undropped state."""
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    mask = rng.choice([0.0, 2.0], size=(2, 4))
    p = F.init_lstm_layer(jax.random.key(0), 3, 4, peephole=True, dtype=jnp.float64)
    pd = {k: np.asarray(v) for k, v in p._asdict().items() if v is not None}
    got = F.lstm_step(
        p,
        F.lstm_input_projection(p, jnp.asarray(x)),
        F.LSTMState(jnp.asarray(h), jnp.asarray(c)),
        recurrent_mask=jnp.asarray(mask),
    )
    # in the LSTM, h_{t-1} enters nothing but W_hh h_{t-1}: the reference takes h * mask
    want = lstm_variant_step(pd, x, (h * mask, c))
    chex.assert_trees_all_close(tuple(got), want, atol=1e-12)

    g = F.init_gru_layer(jax.random.key(1), 3, 4, dtype=jnp.float64)
    gd = {k: np.asarray(v) for k, v in g._asdict().items()}
    got = F.gru_step(
        g,
        F.gru_input_projection(g, jnp.asarray(x)),
        F.GRUState(jnp.asarray(h)),
        recurrent_mask=jnp.asarray(mask),
    ).h
    gx = x @ gd["weight_ih"].T + gd["bias_ih"]
    gh = (h * mask) @ gd["weight_hh"].T + gd["bias_hh"]
    r = 1 / (1 + np.exp(-(gx[:, :4] + gh[:, :4])))
    z = 1 / (1 + np.exp(-(gx[:, 4:8] + gh[:, 4:8])))
    n = np.tanh(gx[:, 8:] + r * gh[:, 8:])
    np.testing.assert_allclose(got, (1 - z) * n + z * h, atol=1e-12)  # z * undropped h
    (masked_everywhere,) = gru_step(gd, x, (h * mask,))
    assert not np.allclose(got, masked_everywhere)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_training_regularisers_respect_seq_lengths_bidirectional(kind):
    init, apply = (F.init_lstm_params, F.lstm) if kind == "lstm" else (F.init_gru_params, F.gru)
    params = init(jax.random.key(0), 3, 4, 2, bidirectional=True, dtype=jnp.float64)
    lengths = np.array([5, 2, 3])
    x = jnp.asarray(np.random.default_rng(1).normal(size=(T, 3, 3)))
    out, state = apply(
        params,
        x,
        seq_lengths=jnp.asarray(lengths, jnp.int32),
        key=jax.random.key(2),
        dropout=0.3,
        input_dropout=0.3,
        recurrent_dropout=0.3,
        weight_dropout=0.3,
        zoneout=0.3,
    )
    h_n = np.asarray(state.h if kind == "lstm" else state)
    out = np.asarray(out)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(out[n:, b], 0.0)
        np.testing.assert_array_equal(h_n[2, b], out[n - 1, b, :4])  # last layer, forward
        np.testing.assert_array_equal(h_n[3, b], out[0, b, 4:])  # last layer, reverse


def test_gradients_float64_with_every_regulariser():
    params = F.init_lstm_params(jax.random.key(0), 3, 4, 1, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 2, 3)))
    seq = jnp.asarray([3, 2], jnp.int32)

    def loss(params, x):
        out, (h, c) = F.lstm(
            params,
            x,
            seq_lengths=seq,
            key=jax.random.key(5),
            input_dropout=0.2,
            recurrent_dropout=0.2,
            weight_dropout=0.2,
            zoneout=(0.2, 0.3),
        )
        return jnp.sum(jnp.sin(out)) + jnp.sum(c * c)

    check_grads(jax.jit(loss), (params, x), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


REGULARISERS = [
    dict(input_dropout=0.3),
    dict(recurrent_dropout=0.3),
    dict(weight_dropout=0.3),
    dict(zoneout=(0.2, 0.4)),
]


@pytest.mark.parametrize("regulariser", REGULARISERS, ids=lambda r: next(iter(r)))
def test_module_masks_differ_between_calls_and_eval_is_deterministic(regulariser):
    model = lstm_jax.LSTM(3, 4, rngs=nnx.Rngs(0), **regulariser)
    plain = lstm_jax.LSTM(3, 4, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(T, 2, 3)), jnp.float32)
    first, second = model(x)[0], model(x)[0]
    assert not np.allclose(first, second), "training masks must change from call to call"
    model.eval()
    ev1, ev2 = model(x), model(x)
    chex.assert_trees_all_equal(ev1, ev2)
    if "zoneout" in regulariser:  # expectation: differs from the plain LSTM
        assert not np.allclose(ev1[0], plain(x)[0])
    else:  # dropout off at evaluation
        chex.assert_trees_all_close(ev1, plain(x), atol=0)
    model.train()
    assert not np.allclose(model(x)[0], ev1[0])


def test_linen_regularisers_use_the_dropout_stream():
    model = lstm_jax.linen.GRU(
        3,
        4,
        options=lstm_jax.RecurrentOptions(recurrent_dropout=0.3, zoneout=0.2, weight_dropout=0.2),
    )
    x = jnp.asarray(np.random.default_rng(1).normal(size=(T, 2, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)

    def train(seed):
        rngs = {"dropout": jax.random.key(seed)}
        return model.apply(variables, x, deterministic=False, rngs=rngs)

    chex.assert_trees_all_equal(train(1), train(1))
    assert not np.allclose(train(1)[0], train(2)[0])
    chex.assert_trees_all_equal(model.apply(variables, x), model.apply(variables, x))


def test_off_by_default_and_validation():
    model = lstm_jax.GRU(3, 4, rngs=nnx.Rngs(0))
    x = jnp.ones((T, 2, 3), jnp.float32)
    chex.assert_trees_all_equal(model(x), model(x))  # training mode, nothing random
    params = F.init_lstm_params(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match=r"recurrent_dropout, zoneout > 0 needs a PRNG `key`"):
        F.lstm(params, x, recurrent_dropout=0.1, zoneout=0.1)
    with pytest.raises(ValueError, match=r"zoneout must be one rate or one rate per state field"):
        F.lstm(params, x, zoneout=(0.1,), deterministic=True)
    with pytest.raises(ValueError, match=r"zoneout\[1\] must be in \[0, 1\), got 1.0"):
        lstm_jax.LSTM(3, 4, zoneout=(0.1, 1.0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"weight_dropout must be in \[0, 1\)"):
        lstm_jax.RNN(3, 4, weight_dropout=-0.1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="input_dropout must be a float"):
        F.gru(F.init_gru_params(jax.random.key(0), 3, 4), x, input_dropout="0.1")


def test_weight_drop_runs_on_the_fused_kernel_like_on_the_scan():
    """The mask is applied to the parameters before any kernel runs: the fused LSTM kernel
    gives the scan's outputs and gradients for the same key."""
    params = F.init_lstm_params(jax.random.key(0), 3, 4, 1, bidirectional=True, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 3)))
    seq = jnp.asarray([4, 3], jnp.int32)

    def run_on(backend):
        def f(params):
            out, state = F.lstm(
                params,
                x,
                seq_lengths=seq,
                key=jax.random.key(3),
                weight_dropout=0.3,
                input_dropout=0.2,
                backend=backend,
            )
            return jnp.sum(out**2) + jnp.sum(state.c), (out, state)

        return jax.grad(f, has_aux=True)(params)

    chex.assert_trees_all_close(run_on("scan"), run_on("fused"), atol=1e-12)
