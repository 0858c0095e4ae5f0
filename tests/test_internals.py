"""``lstm_jax.internals`` and ``lstm_jax.gate_saturation``.

References: float64 NumPy loops written here from the equations (torch's LSTM and GRU
and the LSTM variants' papers), one row at a time, with an explicit flip of each row's
valid prefix for the reverse direction, recording every gate; and a NumPy count of
saturated steps. They share no code with lstm_jax.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F

T, B, I, H = 6, 3, 4, 5
LENGTHS = np.array([6, 2, 4])


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _ln(v, gain, shift):
    return (v - v.mean()) / np.sqrt(v.var() + 1e-5) * gain + shift


def _numpy(p):
    return {k: np.asarray(v, np.float64) for k, v in p._asdict().items() if v is not None}


def numpy_lstm_step(p, x, h, c):
    """One step for one row, every quantity by name: x [I], h [H_out], c [H]."""
    a, r = p["weight_ih"] @ x, p["weight_hh"] @ h
    if "ln_ih_weight" in p:
        a = _ln(a, p["ln_ih_weight"], p["ln_ih_bias"])
        r = _ln(r, p["ln_hh_weight"], p["ln_hh_bias"])
    z = a + r + p.get("bias_ih", 0.0) + p.get("bias_hh", 0.0)
    hidden = c.size
    cifg = z.size == 3 * hidden
    blocks = np.split(z, z.size // hidden)
    zf, zg, zo = blocks[-3:]
    if "weight_cf" in p:
        zf = zf + p["weight_cf"] * c
    f = _sigmoid(zf)
    i = 1.0 - f if cifg else _sigmoid(blocks[0] + p.get("weight_ci", 0.0) * c)
    g = np.tanh(zg)
    c = f * c + i * g
    o = _sigmoid(zo + p.get("weight_co", 0.0) * c)
    q = {"i": i, "f": f, "g": g, "o": o, "c": c}
    read = c
    if "ln_c_weight" in p:
        read = q["ln_c"] = _ln(c, p["ln_c_weight"], p["ln_c_bias"])
    h = o * np.tanh(read)
    if "weight_hr" in p:
        q["m"] = h
        h = p["weight_hr"] @ h
    q["h"] = h
    return q


def numpy_gru_step(p, x, h):
    hidden = h.size
    zx = p["weight_ih"] @ x + p["bias_ih"]
    zh = p["weight_hh"] @ h + p["bias_hh"]
    r = _sigmoid(zx[:hidden] + zh[:hidden])
    z = _sigmoid(zx[hidden : 2 * hidden] + zh[hidden : 2 * hidden])
    n = np.tanh(zx[2 * hidden :] + r * zh[2 * hidden :])
    return {"r": r, "z": z, "n": n, "h": (1 - z) * n + z * h}


def numpy_stack(kind, params, x, lengths, state0=None):
    """Every quantity of every layer and direction: ``x`` [T, B, I] -> [layer][direction]
    dicts of [T, B, size], zero past each row's length; ``state0[field]`` [L * D, B, size]."""
    x = np.asarray(x, np.float64)
    directions = len(params[0])
    result, layer_input = [], x
    for layer, layer_params in enumerate(params):
        layer_result = []
        for d, p in enumerate(layer_params):
            p = _numpy(p)
            hidden = p["weight_hr"].shape[1] if "weight_hr" in p else p["weight_hh"].shape[1]
            index = layer * directions + d
            rows = {}
            for b in range(x.shape[1]):
                h, c = np.zeros(p["weight_hh"].shape[1]), np.zeros(hidden)
                if state0 is not None:
                    h = state0["h"][index, b]
                    c = state0["c"][index, b] if "c" in state0 else None
                steps = list(range(lengths[b]))  # the valid prefix, flipped for reverse
                for t in reversed(steps) if d == 1 else steps:
                    if kind == "gru":
                        q = numpy_gru_step(p, layer_input[t, b], h)
                    else:
                        q = numpy_lstm_step(p, layer_input[t, b], h, c)
                        c = q["c"]
                    h = q["h"]
                    for name, value in q.items():
                        rows.setdefault(name, np.zeros((x.shape[0], x.shape[1], value.size)))
                        rows[name][t, b] = value
            layer_result.append(rows)
        layer_input = np.concatenate([r["h"] for r in layer_result], axis=-1)
        result.append(layer_result)
    return result


def assert_same_quantities(got, want, atol=1e-10):
    assert len(got) == len(want)
    for layer, (got_layer, want_layer) in enumerate(zip(got, want, strict=True)):
        for d, (g, w) in enumerate(zip(got_layer, want_layer, strict=True)):
            assert list(g) == list(w), (layer, d)
            for name in w:
                np.testing.assert_allclose(
                    g[name], w[name], atol=atol, err_msg=f"{layer} {d} {name}"
                )


# --- against NumPy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers, bidirectional, options, names",
    [
        (2, True, {}, ["i", "f", "g", "o", "c", "h"]),
        (
            1,
            False,
            {"proj_size": 3, "layer_norm": True},
            ["i", "f", "g", "o", "c", "ln_c", "m", "h"],
        ),
        (1, False, {"cifg": True, "peephole": True}, ["i", "f", "g", "o", "c", "h"]),
    ],
    ids=["2-layer bidirectional", "projection+layer norm", "cifg+peephole"],
)
def test_lstm_gates_and_states_match_numpy(layers, bidirectional, options, names):
    params = F.init_lstm_params(
        jax.random.key(1), I, H, layers, bidirectional=bidirectional, dtype=jnp.float64, **options
    )
    params = jax.tree.map(lambda a: a + 0.1, params)  # nonzero peepholes and layer-norm shifts
    rows, h_out = layers * (2 if bidirectional else 1), options.get("proj_size") or H
    h0, c0 = _x((rows, B, h_out), 1), _x((rows, B, H), 2)
    x = _x((T, B, I))
    got = F.internals("lstm", params, x, (h0, c0), seq_lengths=jnp.asarray(LENGTHS))
    want = numpy_stack("lstm", params, x, LENGTHS, {"h": np.asarray(h0), "c": np.asarray(c0)})
    assert list(got[0][0]) == names
    assert_same_quantities(got, want)
    if options.get("cifg"):
        valid = np.arange(T)[:, None] < LENGTHS  # padded steps are zero in both
        i, f = np.asarray(got[0][0]["i"]), np.asarray(got[0][0]["f"])
        np.testing.assert_allclose(i[valid], 1.0 - f[valid])


def test_gru_module_matches_numpy_with_a_bare_h0():
    model = lstm_jax.GRU(I, H, 2, bidirectional=True, param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    x, h0 = _x((T, B, I)), _x((4, B, H), 4)
    got = lstm_jax.internals(model, x, h0, seq_lengths=jnp.asarray(LENGTHS))
    want = numpy_stack("gru", model.stack_params, x, LENGTHS, {"h": np.asarray(h0)})
    assert [list(q) for q in got[1]] == [["r", "z", "n", "h"]] * 2
    assert_same_quantities(got, want)


# --- the same numbers as the forward pass ------------------------------------------------------


def test_top_h_is_the_output_and_each_layer_feeds_the_next():
    model = lstm_jax.LSTM(I, H, 2, bidirectional=True, rngs=nnx.Rngs(0))
    x, lengths = _x((T, B, I)).astype(jnp.float32), jnp.asarray(LENGTHS)
    result = lstm_jax.internals(model, x, seq_lengths=lengths)
    out, _ = model(x, seq_lengths=lengths)
    top = jnp.concatenate([q["h"] for q in result[-1]], axis=-1)
    np.testing.assert_allclose(top, out, atol=1e-6)
    for t in range(T):  # zero at the padded steps, both directions
        assert np.all(np.asarray(top[t])[LENGTHS <= t] == 0)
    h_0 = jnp.concatenate([q["h"] for q in result[0]], axis=-1)
    upper = F.internals("lstm", model.stack_params[1:], h_0, seq_lengths=lengths)
    chex.assert_trees_all_close(upper[0], result[1], atol=1e-6)


def test_inference_mode_whatever_the_module_mode():
    """Dropouts off and zoneout at its expectation: the numbers of model.eval()."""
    model = lstm_jax.LSTM(
        I, H, 2, dropout=0.5, zoneout=0.3, recurrent_dropout=0.2, rngs=nnx.Rngs(0, dropout=1)
    )
    x = _x((T, B, I)).astype(jnp.float32)
    result = lstm_jax.internals(model, x)  # the module is in training mode
    model.eval()
    out, (h_n, c_n) = model(x)
    np.testing.assert_allclose(result[-1][0]["h"], out, atol=1e-6)
    np.testing.assert_allclose(result[-1][0]["c"][-1], c_n[-1], atol=1e-6)


def test_layouts_batch_first_and_unbatched():
    params = F.init_lstm_params(jax.random.key(0), I, H, bidirectional=True, dtype=jnp.float64)
    x, lengths = _x((T, B, I)), jnp.asarray(LENGTHS)
    time_major = F.internals("lstm", params, x, seq_lengths=lengths)
    batch_first = F.internals(
        "lstm", params, jnp.swapaxes(x, 0, 1), seq_lengths=lengths, batch_first=True
    )
    chex.assert_trees_all_close(batch_first, jax.tree.map(lambda a: a.swapaxes(0, 1), time_major))
    unbatched = F.internals("lstm", params, x[:, 1])
    alone = F.internals("lstm", params, x[:, 1:2])
    chex.assert_trees_all_close(unbatched, jax.tree.map(lambda a: a[:, 0], alone))
    chex.assert_shape(unbatched[0][1]["c"], (T, H))
    # saturation reads either layout to the same fractions
    chex.assert_trees_all_close(
        lstm_jax.gate_saturation(time_major, lengths),
        lstm_jax.gate_saturation(batch_first, lengths, batch_first=True),
    )


# --- every cell, every API ----------------------------------------------------------------------


def _leaky_update(params, gates_x, gates_h, state):
    return F.RNNState(0.5 * state.h + 0.5 * jnp.tanh(gates_x + gates_h))


LEAKY = F.register_cell(
    F.CellDef(
        "leaky_internals_test",
        F.rnn_input_projection,
        _leaky_update,
        F.rnn_state_sizes,
        F.init_rnn_layer,
        F.RNNParams,
    )
)


def test_a_users_cell_without_quantities_gives_its_state():
    model = lstm_jax.Recurrent("leaky_internals_test", I, H, bidirectional=True, rngs=nnx.Rngs(0))
    x, lengths = _x((T, B, I)).astype(jnp.float32), jnp.asarray(LENGTHS)
    result = lstm_jax.internals(model, x, seq_lengths=lengths)
    out, _ = model(x, seq_lengths=lengths)
    assert [list(q) for q in result[0]] == [["h"], ["h"]]
    np.testing.assert_allclose(jnp.concatenate([q["h"] for q in result[0]], -1), out, atol=1e-6)


@pytest.mark.parametrize("name", F.registered_cells())
def test_every_registered_cells_quantities_agree_with_its_update(name):
    """The state fields among a cell's quantities are its update's, ``h`` comes last."""
    cell = F.get_cell(name)
    if cell.init_layer is None:
        pytest.skip("no initialiser")
    p = cell.init_layer(jax.random.key(0), I, H, bias=True, dtype=jnp.float64)
    state = cell.zero_state(p, B)
    state = type(state)(*(_x(s.shape, 5 + i) for i, s in enumerate(state)))
    gates_x = cell.input_projection(p, _x((B, I)))
    gates_h = F.recurrent_product(p, state.h)
    q = cell.named_quantities(p, gates_x, gates_h, state)
    new = cell.update(p, gates_x, gates_h, state)
    assert list(q)[-1] == "h"
    for field, value in new._asdict().items():
        np.testing.assert_allclose(q[field], value, atol=1e-12, err_msg=field)


def test_linen_modules_take_their_variables():
    x, lengths = _x((T, B, I)).astype(jnp.float32), jnp.asarray(LENGTHS)
    lstm = lstm_jax.linen.LSTM(I, H, bidirectional=True, batch_first=True)
    xb = jnp.swapaxes(x, 0, 1)
    variables = lstm.init(jax.random.key(0), xb)
    result = lstm_jax.internals(lstm, variables, xb, seq_lengths=lengths)
    out, _ = lstm.apply(variables, xb, seq_lengths=lengths)
    chex.assert_shape(result[0][1]["f"], (B, T, H))
    np.testing.assert_allclose(jnp.concatenate([q["h"] for q in result[0]], -1), out, atol=1e-6)
    gru = lstm_jax.linen.GRU(I, H)
    variables = gru.init(jax.random.key(0), x)
    h0 = _x((1, B, H), 1).astype(jnp.float32)
    result = lstm_jax.internals(gru, variables, x, h0)
    np.testing.assert_allclose(result[0][0]["h"], gru.apply(variables, x, h0)[0], atol=1e-6)
    with pytest.raises(TypeError, match="variables"):
        lstm_jax.internals(gru, x)


def test_under_jit_in_order_without_retracing():
    params = F.init_lstm_params(jax.random.key(0), I, H, proj_size=2)
    x, lengths = _x((T, B, I)).astype(jnp.float32), jnp.asarray(LENGTHS)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(params, x, lengths):
        return lstm_jax.internals("lstm", params, x, seq_lengths=lengths)

    jitted = run(params, x, lengths)
    run(params, x + 1.0, lengths)
    assert list(jitted[0][0]) == ["i", "f", "g", "o", "c", "m", "h"]
    chex.assert_trees_all_close(jitted, F.internals("lstm", params, x, seq_lengths=lengths))
    model = lstm_jax.GRU(I, H, rngs=nnx.Rngs(0))
    nnx_jitted = nnx.jit(lambda m, x: lstm_jax.internals(m, x))(model, x)
    np.testing.assert_allclose(nnx_jitted[0][0]["h"], model(x)[0], atol=1e-6)
    assert list(nnx_jitted[0][0]) == ["r", "z", "n", "h"]


def test_what_internals_does_not_take():
    with pytest.raises(TypeError, match="recurrent stack or a cell, got LSTMCell"):
        lstm_jax.internals(lstm_jax.LSTMCell(I, H, rngs=nnx.Rngs(0)), _x((T, B, I)))
    with pytest.raises(TypeError, match="module's own options; got unroll"):
        lstm_jax.internals(lstm_jax.GRU(I, H, rngs=nnx.Rngs(0)), _x((T, B, I)), unroll=2)


# --- saturation -------------------------------------------------------------------------------


def numpy_saturation(value, lengths, low, high):
    """Per unit: the fraction of the valid (t, b) at which value < low / value > high."""
    value = np.asarray(value)
    valid = [(t, b) for b in range(value.shape[1]) for t in range(lengths[b])]
    left = np.mean([value[t, b] < low for t, b in valid], axis=0)
    right = np.mean([value[t, b] > high for t, b in valid], axis=0)
    return left, right


def test_gate_saturation_matches_numpy():
    params = F.init_lstm_params(jax.random.key(2), I, H, 2, bidirectional=True, dtype=jnp.float64)
    params = jax.tree.map(lambda a: 4.0 * a, params)  # saturating gates
    x, lengths = 3.0 * _x((T, B, I)), jnp.asarray(LENGTHS)
    result = F.internals("lstm", params, x, seq_lengths=lengths)
    saturation = lstm_jax.gate_saturation(result, lengths, names=("i", "f", "o"), low=0.2)
    assert [list(s) for s in saturation[1]] == [["i", "f", "o"]] * 2
    total = 0.0
    for layer in range(2):
        for d in range(2):
            for gate in ("i", "f", "o"):
                left, right = numpy_saturation(result[layer][d][gate], LENGTHS, 0.2, 0.9)
                got = saturation[layer][d][gate]
                np.testing.assert_allclose(got.left, left, atol=1e-7)
                np.testing.assert_allclose(got.right, right, atol=1e-7)
                total += left.sum() + right.sum()
    assert total > 0  # the test saw saturated steps
    everything = lstm_jax.gate_saturation(result)  # all names, all steps counted
    assert list(everything[0][0]) == list(result[0][0])
    left, _ = numpy_saturation(result[0][0]["c"], [T] * B, 0.1, 0.9)
    np.testing.assert_allclose(everything[0][0]["c"].left, left, atol=1e-7)
    with pytest.raises(ValueError, match="has no quantity 'z'"):
        lstm_jax.gate_saturation(result, names=("z",))
    with pytest.raises(ValueError, match="low must be <= high"):
        lstm_jax.gate_saturation(result, low=0.9, high=0.1)
