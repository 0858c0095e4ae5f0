"""One cell contract: the registry, the shared options, a user's own cell, Flax's protocol.

References: a float64 NumPy loop of the user's cell written here from its equations, and
Flax's own loops (``nnx.RNN``, ``nnx.Bidirectional``, ``flax.linen.RNN``) against our
layers with the same weights.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
import lstm_jax.linen
import lstm_jax.train
from lstm_jax import functional as F

T, B, I, H = 5, 3, 4, 6


def _x(shape, dtype=np.float32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(dtype))


# --- the shared options ------------------------------------------------------------------


def test_unknown_option_names_the_valid_ones():
    params = F.init_gru_params(jax.random.key(0), I, H)
    with pytest.raises(TypeError, match=r"gru\(\) got an unknown option 'unrol'.*unroll"):
        F.gru(params, _x((T, B, I)), unrol=2)
    with pytest.raises(TypeError, match="LSTM.*unknown option 'dropout_rate'"):
        lstm_jax.LSTM(I, H, dropout_rate=0.1, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"unroll": 0}, "unroll must be > 0"),
        ({"checkpoint": 1.5}, "checkpoint must be an int"),
        ({"backend": "cuda"}, "backend must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"zoneout": (0.1, 0.2, 0.3)}, "zoneout must be one rate or one rate per state field"),
    ],
)
def test_invalid_options_raise_once_for_every_layer(options, message):
    params = F.init_lstm_params(jax.random.key(0), I, H)
    with pytest.raises((TypeError, ValueError), match=message):
        F.lstm(params, _x((T, B, I)), **options)
    with pytest.raises((TypeError, ValueError), match=message):
        lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0), **options)
    with pytest.raises((TypeError, ValueError), match=message):
        x = _x((T, B, I))
        linen_options = lstm_jax.RecurrentOptions(**options)  # options beyond torch's
        lstm_jax.linen.LSTM(I, H, options=linen_options).init(jax.random.key(0), x)


def test_options_object_is_hashable_and_shared():
    options = lstm_jax.RecurrentOptions(unroll=2, zoneout=[0.1, 0.2], dtype="bfloat16")
    assert options.zoneout == (0.1, 0.2) and options.dtype == jnp.bfloat16
    assert hash(options) == hash(
        lstm_jax.RecurrentOptions(unroll=2, zoneout=(0.1, 0.2), dtype=jnp.bfloat16)
    )
    model = lstm_jax.GRU(I, H, unroll=2, backend="scan", rngs=nnx.Rngs(0))
    assert model.options.unroll == 2 and model.unroll == 2 and model.backend == "scan"


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_gru_and_rnn_take_a_backend_everywhere(kind):
    init, apply = {"gru": (F.init_gru_params, F.gru), "rnn": (F.init_rnn_params, F.rnn)}[kind]
    params = init(jax.random.key(0), I, H, num_layers=2, bidirectional=True)
    x = _x((T, B, I))
    outs = [apply(params, x, backend=b) for b in ("scan", "fused", "auto")]
    for out in outs[1:]:
        chex.assert_trees_all_close(out, outs[0], atol=1e-5)
    module = {"gru": lstm_jax.GRU, "rnn": lstm_jax.RNN}[kind]
    model = module(I, H, backend="fused", rngs=nnx.Rngs(0))
    assert model(x)[0].shape == (T, B, H)
    linen_module = {"gru": lstm_jax.linen.GRU, "rnn": lstm_jax.linen.RNN}[kind]
    linen_model = linen_module(I, H, options=lstm_jax.RecurrentOptions(backend="fused"))
    out, h = linen_model.apply(linen_model.init(jax.random.key(0), x), x)
    assert out.shape == (T, B, H) and h.shape == (1, B, H)


# --- sizes are checked before any arithmetic ---------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: lstm_jax.LSTMCell(5, 0, rngs=nnx.Rngs(0)),
        lambda: lstm_jax.GRUCell(0, 5, rngs=nnx.Rngs(0)),
        lambda: F.init_lstm_params(jax.random.key(0), 3, 0),
        lambda: F.init_gru_layer(jax.random.key(0), 3, -1),
        lambda: F.init_rnn_params(jax.random.key(0), 3, 4, num_layers=0),
    ],
)
def test_zero_sizes_raise_value_errors(build):
    with pytest.raises(ValueError, match="must be > 0"):
        build()


def test_projection_must_be_smaller_than_the_cell():
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        F.init_lstm_params(jax.random.key(0), 3, 4, proj_size=5)
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        F.init_lstm_layer(jax.random.key(0), 3, 4, proj_size=4)


# --- a cell of the user's own -------------------------------------------------------------


def mgu_input_projection(params, x):
    """The minimal gated unit (Zhou et al. 2016): gates f, n; ``W_ih x + b``."""
    return F.rnn_input_projection(params, x)


def mgu_update(params, gates_x, gates_h, state):
    hidden = state.h.shape[-1]
    f = jax.nn.sigmoid(gates_x[..., :hidden] + gates_h[..., :hidden])
    # the candidate sees the forget-gated state: f * (W_hn h), as in torch's GRU reset
    n = jnp.tanh(gates_x[..., hidden:] + f * gates_h[..., hidden:])
    return F.RNNState((1.0 - f) * state.h + f * n)


def mgu_state_sizes(params):
    return F.RNNState(h=params.weight_hh.shape[1])


def init_mgu_layer(key, input_size, hidden_size, *, bias=True, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    bound = 1.0 / np.sqrt(hidden_size)
    u = lambda k, shape: jax.random.uniform(k, shape, dtype, -bound, bound)  # noqa: E731
    return F.RNNParams(
        u(k1, (2 * hidden_size, input_size)),
        u(k2, (2 * hidden_size, hidden_size)),
        jnp.full((2 * hidden_size,), 0.1, dtype) if bias else None,
        None,
    )


MGU = F.register_cell(
    F.CellDef(
        "mgu_test", mgu_input_projection, mgu_update, mgu_state_sizes, init_mgu_layer, F.RNNParams
    )
)


def _numpy_mgu(p, x, lengths, reverse=False):
    """float64 loop of the MGU over ``x`` [T, B, I], packed semantics, from the equations."""
    w_ih, w_hh, b = (np.asarray(a, np.float64) for a in (p.weight_ih, p.weight_hh, p.bias_ih))
    x = np.asarray(x, np.float64)
    hidden = w_hh.shape[1]
    out = np.zeros((x.shape[0], x.shape[1], hidden))
    h_final = np.zeros((x.shape[1], hidden))
    for row in range(x.shape[1]):
        h = np.zeros(hidden)
        steps = range(lengths[row])
        for t in reversed(steps) if reverse else steps:
            gx, gh = w_ih @ x[t, row] + b, w_hh @ h
            f = 1 / (1 + np.exp(-(gx[:hidden] + gh[:hidden])))
            n = np.tanh(gx[hidden:] + f * gh[hidden:])
            h = (1 - f) * h + f * n
            out[t, row] = h
        h_final[row] = h
    return out, h_final


def test_the_registry_knows_the_library_cells_and_refuses_a_second_name():
    assert F.get_cell("lstm") is F.LSTM_CELL and F.get_cell("rnn_relu") is F.RNN_RELU_CELL
    assert F.get_cell(MGU) is MGU and F.register_cell(MGU) is MGU
    with pytest.raises(ValueError, match="already registered"):
        F.register_cell(F.CellDef("mgu_test", mgu_input_projection, mgu_update, mgu_state_sizes))
    with pytest.raises(ValueError, match="unknown cell 'nope'; registered cells: lstm, gru"):
        F.get_cell("nope")


@pytest.mark.parametrize("backend", ["scan", "fused"])
def test_users_cell_runs_bidirectional_packed_against_numpy(backend):
    lengths = np.array([5, 2, 4])
    model = lstm_jax.Recurrent(
        "mgu_test", I, H, bidirectional=True, backend=backend, rngs=nnx.Rngs(0)
    )
    x = _x((T, B, I))
    out, (h_n,) = model(x, seq_lengths=jnp.asarray(lengths))
    forward, backward = model.stack_params[0]
    want_f, h_f = _numpy_mgu(forward, x, lengths)
    want_b, h_b = _numpy_mgu(backward, x, lengths, reverse=True)
    np.testing.assert_allclose(out, np.concatenate([want_f, want_b], -1), atol=1e-5)
    np.testing.assert_allclose(h_n, np.stack([h_f, h_b]), atol=1e-5)


def test_users_cell_gets_layers_dropout_checkpoint_and_the_fused_gradients():
    x = _x((T, B, I), np.float64)
    lengths = jnp.asarray([5, 3, 1])
    params = F.init_params(
        MGU, jax.random.key(0), I, H, num_layers=2, bidirectional=True, dtype=jnp.float64
    )

    def loss(p, backend, **options):
        out, (h_n,) = F.apply_recurrent(
            MGU, p, x, seq_lengths=lengths, backend=backend, key=jax.random.key(1), **options
        )
        return jnp.sum(out**2) + jnp.sum(jnp.sin(h_n))

    ref = jax.grad(loss)(params, "scan")
    chex.assert_trees_all_close(jax.grad(loss)(params, "fused"), ref, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(
        jax.grad(loss)(params, "scan", checkpoint=2), ref, rtol=1e-10, atol=1e-12
    )
    with_dropout = jax.grad(lambda p: loss(p, "fused", dropout=0.5, recurrent_dropout=0.3))
    chex.assert_trees_all_close(
        with_dropout(params),
        jax.grad(lambda p: loss(p, "scan", dropout=0.5, recurrent_dropout=0.3))(params),
        rtol=1e-10,
        atol=1e-12,
    )
    model = lstm_jax.train.make_recurrent("mgu_test", I, H, 2, dropout=0.2, rngs=nnx.Rngs(0))
    assert isinstance(model, lstm_jax.Recurrent) and model(x)[0].shape == (T, B, H)


# --- Flax's RNN protocol ------------------------------------------------------------------


def _copy_cell(cell, params):
    cell.load_params(params)
    return cell


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_our_cells_inside_nnx_rnn_match_our_layer(kind):
    stack = {"lstm": lstm_jax.LSTM, "gru": lstm_jax.GRU, "rnn": lstm_jax.RNN}[kind]
    cell_type = {"lstm": lstm_jax.LSTMCell, "gru": lstm_jax.GRUCell, "rnn": lstm_jax.RNNCell}
    model = stack(I, H, batch_first=True, rngs=nnx.Rngs(0))
    cell = _copy_cell(cell_type[kind](I, H, rngs=nnx.Rngs(1)), model.stack_params[0][0])
    x = _x((B, T, I))
    rnn = nnx.RNN(lstm_jax.FlaxCell(cell), return_carry=True)
    carry, out = rnn(x)
    want, state = model(x)
    np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_allclose(jax.tree.leaves(carry)[0], jax.tree.leaves(state)[0][0], atol=1e-6)
    assert cell.num_feature_axes == 1


def test_nnx_bidirectional_matches_our_bidirectional_layer():
    model = lstm_jax.LSTM(I, H, batch_first=True, bidirectional=True, rngs=nnx.Rngs(0))
    forward, backward = model.stack_params[0]
    cells = [
        _copy_cell(lstm_jax.LSTMCell(I, H, rngs=nnx.Rngs(k)), p)
        for k, p in enumerate((forward, backward))
    ]
    bi = nnx.Bidirectional(
        nnx.RNN(lstm_jax.FlaxCell(cells[0])), nnx.RNN(lstm_jax.FlaxCell(cells[1]))
    )
    x = _x((B, T, I))
    lengths = jnp.asarray([5, 2, 4])
    out = bi(x, seq_lengths=lengths)
    want, _ = model(x, seq_lengths=lengths)
    valid = (np.arange(T)[None, :] < np.asarray(lengths)[:, None])[..., None]
    np.testing.assert_allclose(np.where(valid, out, 0), want, atol=1e-6)


def test_our_linen_cell_inside_linen_rnn_matches_our_linen_layer():
    x = _x((B, T, I))
    stack = lstm_jax.linen.GRU(I, H, batch_first=True)
    variables = stack.init(jax.random.key(0), x)
    rnn = nn.RNN(lstm_jax.linen.FlaxCell(lstm_jax.linen.GRUCell(I, H)))
    rnn_vars = rnn.init(jax.random.key(1), x)
    names = {k[: -len("_l0")] for k in variables["params"]}
    rnn_vars = {"params": {"cell": {"cell": {n: variables["params"][f"{n}_l0"] for n in names}}}}
    np.testing.assert_allclose(rnn.apply(rnn_vars, x), stack.apply(variables, x)[0], atol=1e-6)


def test_a_carry_keeps_the_structure_it_was_given():
    cell = lstm_jax.LSTMCell(I, H, rngs=nnx.Rngs(0))
    carry = tuple(cell.initialize_carry((B, I)))  # a plain tuple, not LSTMState

    @nnx.scan(in_axes=(None, nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def run(cell, carry, x):
        carry = cell(x, carry)
        return carry, carry[0]

    final, hs = run(cell, carry, _x((T, B, I)))
    assert type(final) is tuple and hs.shape == (T, B, H)
    model = lstm_jax.LSTM(I, H, num_layers=2, rngs=nnx.Rngs(0))
    h0, c0 = model.initialize_carry((T, B, I))
    assert h0.shape == c0.shape == (2, B, H)
    _, state = model(_x((T, B, I)), [h0, c0])
    assert type(state) is list
    assert lstm_jax.GRU(I, H, rngs=nnx.Rngs(0)).initialize_carry((T, I)).shape == (1, H)
