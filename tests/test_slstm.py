"""The sLSTM cell (Beck et al. 2024, xLSTM, section 2.2 and appendix A).

References written here from the paper's equations, sharing no code with the library: a
float64 NumPy loop of the stabilised step with one recurrent product per head (packed
``seq_lengths``, reverse directions, stacked layers), and the paper's unstabilised
equations (plain exponentials, no ``m``), which must give the same ``h``. Gradients:
``check_grads`` in float64 (finite differences); the fused kernel against the scan.
"""

import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import lstm_jax
import lstm_jax.linen
import lstm_jax.train
from lstm_jax import functional as F

T, B, I, H, HEADS = 6, 3, 4, 6, 2
FORGET_GATES = ["sigmoid", "exponential"]
CELL_NAMES = {"sigmoid": "slstm", "exponential": "slstm_exp"}
KEY = jax.random.key(0)


def _x(shape, dtype=np.float64, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(dtype))


def _params(forget_gate, dtype=jnp.float64, **stack):
    return F.init_params(
        CELL_NAMES[forget_gate], jax.random.key(0), I, H, num_heads=HEADS, dtype=dtype, **stack
    )


def _numpy_pre_activations(p, x_t, h):
    """``W x + b + R h`` [4H], ``R`` applied head by head; gates i, f, z, o, each
    ``[head 0 units, head 1 units, ...]``."""
    w_ih = np.asarray(p.weight_ih, np.float64)
    blocks = np.asarray(p.weight_hh_heads, np.float64)  # [heads, 4 * d, d]
    heads, _, d = blocks.shape
    hidden = heads * d
    pre = w_ih @ x_t
    if p.bias_ih is not None:
        pre = pre + np.asarray(p.bias_ih, np.float64)
    pre = pre.copy()
    for a in range(heads):
        recurrent = blocks[a] @ h[a * d : (a + 1) * d]  # this head's gates i, f, z, o
        for g in range(4):
            pre[g * hidden + a * d : g * hidden + (a + 1) * d] += recurrent[g * d : (g + 1) * d]
    return np.split(pre, 4)


def _numpy_slstm(p, x, lengths, forget_gate, reverse=False):
    """The stabilised sLSTM over ``x`` [T, B, I] in float64, packed semantics.

    Returns ``(outputs [T, B, H], final (h, c, n, m) each [B, H], per-step quantities
    {name: [T, B, H]})``. The stabiliser of the empty initial state is log(0) = -inf.
    """
    x = np.asarray(x, np.float64)
    hidden = np.asarray(p.weight_ih).shape[0] // 4
    time, batch = x.shape[:2]
    out = np.zeros((time, batch, hidden))
    names = ("i", "f", "z", "o", "c", "n", "m", "h")
    quantities = {name: np.zeros((time, batch, hidden)) for name in names}
    final = [np.zeros((batch, hidden)) for _ in range(4)]
    for row in range(batch):
        h, c, n = np.zeros(hidden), np.zeros(hidden), np.zeros(hidden)
        m = np.full(hidden, -np.inf)
        steps = range(lengths[row])
        for t in reversed(steps) if reverse else steps:
            i_pre, f_pre, z_pre, o_pre = _numpy_pre_activations(p, x[t, row], h)
            log_f = f_pre if forget_gate == "exponential" else -np.logaddexp(0.0, -f_pre)
            m_new = np.maximum(log_f + m, i_pre)
            i_gate = np.exp(i_pre - m_new)
            f_gate = np.exp(log_f + m - m_new)
            z = np.tanh(z_pre)
            o = 1.0 / (1.0 + np.exp(-o_pre))
            c = f_gate * c + i_gate * z
            n = f_gate * n + i_gate
            m = m_new
            h = o * c / n
            out[t, row] = h
            for name, value in zip(names, (i_gate, f_gate, z, o, c, n, m, h), strict=True):
                quantities[name][t, row] = value
        for field, value in zip(final, (h, c, n, m), strict=True):
            field[row] = value
    return out, final, quantities


def _numpy_unstabilised_h(p, x, forget_gate):
    """``h`` from the paper's equations without the stabiliser: ``i = exp(i~)``,
    ``f = sigmoid(f~)`` or ``exp(f~)``, ``c = f c + i z``, ``n = f n + i``, ``h = o c / n``."""
    x = np.asarray(x, np.float64)
    hidden = np.asarray(p.weight_ih).shape[0] // 4
    out = np.zeros((x.shape[0], x.shape[1], hidden))
    for row in range(x.shape[1]):
        h, c, n = np.zeros(hidden), np.zeros(hidden), np.zeros(hidden)
        for t in range(x.shape[0]):
            i_pre, f_pre, z_pre, o_pre = _numpy_pre_activations(p, x[t, row], h)
            f = np.exp(f_pre) if forget_gate == "exponential" else 1.0 / (1.0 + np.exp(-f_pre))
            c = f * c + np.exp(i_pre) * np.tanh(z_pre)
            n = f * n + np.exp(i_pre)
            h = c / n / (1.0 + np.exp(-o_pre))
            out[t, row] = h
    return out


def _numpy_stack(params, x, lengths, forget_gate):
    """Layers and directions as torch stacks them: outputs and the final states."""
    layer_input, finals = x, []
    for layer_params in params:
        outputs = []
        for d, p in enumerate(layer_params):
            out, final, _ = _numpy_slstm(p, layer_input, lengths, forget_gate, reverse=d == 1)
            outputs.append(out)
            finals.append(final)
        layer_input = np.concatenate(outputs, axis=-1)
    return layer_input, [np.stack([f[k] for f in finals]) for k in range(4)]


def _loss(cell, backend, **options):
    def loss(params, x):
        out, state = F.apply_recurrent(cell, params, x, backend=backend, **options)
        return jnp.sum(jnp.tanh(out) ** 2) + sum(jnp.sum(jnp.sin(s)) for s in state)

    return loss


# --- values against the paper's equations --------------------------------------------------


@pytest.mark.parametrize("forget_gate", FORGET_GATES)
def test_steps_and_quantities_match_numpy_and_the_unstabilised_equations(forget_gate):
    cell = F.slstm_cell_def(forget_gate)
    (layer,) = _params(forget_gate)
    p = layer[0]
    x = _x((T, B, I))
    want_out, want_final, want_q = _numpy_slstm(p, x, [T] * B, forget_gate)

    @jax.jit
    def step(state, gates_x_t):
        gates_h = F.recurrent_product(p, state.h)
        return cell.update(p, gates_x_t, gates_h, state), cell.quantities(
            p, gates_x_t, gates_h, state
        )

    state = cell.zero_state(p, B)
    gates_x = F.slstm_input_projection(p, x)
    for t in range(T):
        state, q = step(state, gates_x[t])
        for name, value in q.items():
            np.testing.assert_allclose(value, want_q[name][t], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state.h, want_q["h"][t], rtol=1e-12, atol=1e-12)
    # the stabiliser changes nothing of h
    np.testing.assert_allclose(want_out, _numpy_unstabilised_h(p, x, forget_gate), rtol=1e-10)
    out, final = jax.jit(F.apply_recurrent, static_argnums=0)(cell, (layer,), x)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(final, want_final, strict=True):
        np.testing.assert_allclose(got[0], want, rtol=1e-12, atol=1e-12)


def test_layers_directions_and_seq_lengths_match_numpy():
    lengths = np.array([6, 2, 4])
    model = lstm_jax.Recurrent(
        "slstm",
        I,
        H,
        num_layers=2,
        bidirectional=True,
        num_heads=HEADS,
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(0),
    )
    assert model.num_heads == HEADS
    x = _x((T, B, I))
    run = nnx.jit(lambda model, x, seq_lengths=None: model(x, seq_lengths=seq_lengths))
    out, state = run(model, x, jnp.asarray(lengths))
    # the reference runs each row over its own steps only
    want_out, want_final = _numpy_stack(model.stack_params, x, lengths, "sigmoid")
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    assert state._fields == ("h", "c", "n", "m")
    for got, want in zip(state, want_final, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # a padded row equals that sequence run alone
    alone_out, alone_state = run(model, x[:2, 1:2])
    np.testing.assert_allclose(out[:2, 1:2], alone_out, rtol=1e-12)
    np.testing.assert_array_equal(out[2:, 1], 0.0)
    for got, alone in zip(state, alone_state, strict=True):
        np.testing.assert_allclose(got[:, 1:2], alone, rtol=1e-12)


def test_first_step_from_zeros_is_finite_where_exp_would_overflow():
    zeros = jnp.zeros((1, 1), jnp.float32)
    # log f - log i = 200 - log(1 + e^-f~) > 88: exp(log f + 0 - log i) overflows float32
    gates_x = jnp.array([[-200.0, 5.0, 0.5, 1.0]], jnp.float32)
    for cell in (F.SLSTM_CELL, F.SLSTM_EXP_CELL):
        q = cell.quantities(None, gates_x, jnp.zeros_like(gates_x), F.SLSTMState(*[zeros] * 4))
        assert list(q) == ["i", "f", "z", "o", "c", "n", "m", "h"]  # the equations' order
        assert float(q["f"][0, 0]) == 0.0 and float(q["i"][0, 0]) == 1.0
        assert float(q["n"][0, 0]) == 1.0 and float(q["m"][0, 0]) == -200.0
        np.testing.assert_allclose(q["h"], jax.nn.sigmoid(1.0) * np.tanh(0.5), rtol=1e-6)


# --- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("forget_gate, backend", [("sigmoid", "scan"), ("exponential", "fused")])
def test_gradients_match_finite_differences(forget_gate, backend):
    params, x = _params(forget_gate), _x((4, 2, I))
    loss = jax.jit(_loss(CELL_NAMES[forget_gate], backend, seq_lengths=jnp.asarray([4, 3])))
    check_grads(loss, (params, x), order=1, modes=("rev",))


def test_fused_equals_scan_values_and_gradients():
    cell = "slstm"
    params, x = _params("sigmoid"), _x((T, B, I))
    options = {"seq_lengths": jnp.asarray([6, 2, 4])}
    scan = jax.jit(jax.value_and_grad(_loss(cell, "scan", **options)))(params, x)
    fused = jax.jit(jax.value_and_grad(_loss(cell, "fused", **options)))(params, x)
    chex.assert_trees_all_close(fused, scan, rtol=1e-10, atol=1e-12)
    # the gradient is the parameters' own structure: the heads' blocks, no dense matrix
    assert jax.tree.structure(fused[1]) == jax.tree.structure(params)
    assert fused[1][0][0].weight_hh_heads.shape == (HEADS, 4 * H // HEADS, H // HEADS)


def test_long_sequences_with_large_pre_activations_stay_finite():
    """T = 10,000 with pre-activations of +-50: outputs, states and gradients finite."""
    time, batch, inputs, hidden = 10_000, 2, 2, 4
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.choice([-1.0, 1.0], size=(time, batch, inputs)), jnp.float32)
    (layer,) = F.init_params("slstm_exp", jax.random.key(0), inputs, hidden, num_heads=2)
    p = layer[0]._replace(
        weight_ih=jnp.asarray(
            25.0 * rng.choice([-1.0, 1.0], size=(4 * hidden, inputs)), jnp.float32
        ),
        weight_hh_heads=10.0 * layer[0].weight_hh_heads,
    )
    gates_x = F.slstm_input_projection(p, x)
    assert float(jnp.max(gates_x)) >= 49.0 and float(jnp.min(gates_x)) <= -49.0

    def loss(params):  # the exponential forget gate: m grows by up to 50 a step
        out, state = F.apply_recurrent("slstm_exp", ((params,),), x, backend="scan")
        return jnp.sum(out**2) + jnp.sum(state.h) + jnp.sum(state.c / state.n), (out, state)

    (_, (out, state)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
    for leaf in jax.tree.leaves((out, state, grads)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert float(jnp.max(jnp.abs(out))) <= 1.0 and float(jnp.min(state.n)) >= 1.0
    assert float(jnp.max(state.m)) > 1e4  # unstabilised, c and n would be exp(m): inf


# --- heads ---------------------------------------------------------------------------------


def test_heads_see_only_their_own_units():
    p = F.init_slstm_layer(jax.random.key(0), I, H, num_heads=HEADS, dtype=jnp.float64)
    d = H // HEADS
    w = np.asarray(p.weight_hh).reshape(4, HEADS, d, HEADS, d)  # [gate, head, unit, head, unit]
    for a in range(HEADS):
        for b in range(HEADS):
            block = w[:, a, :, b, :]
            assert np.all(block == 0.0) if a != b else np.all(block != 0.0)
    h = _x((B, H))
    moved = h.at[:, :d].add(1.0)  # head 0's units only
    before, after = (
        np.asarray(F.recurrent_product(p, v)).reshape(B, 4, HEADS, d) for v in (h, moved)
    )
    np.testing.assert_array_equal(after[:, :, 1:], before[:, :, 1:])
    assert np.all(after[:, :, 0] != before[:, :, 0])


def test_module_gradients_reach_only_the_heads_blocks():
    model = lstm_jax.Recurrent(
        "slstm", I, H, num_heads=HEADS, backend="fused", param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    x = _x((T, B, I))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x)[0] ** 2)))(model)
    shapes = {name: g.shape for name, g in nnx.to_flat_state(grads)}
    d = H // HEADS
    assert shapes == {
        ("weight_ih_l0",): (4 * H, I),
        ("weight_hh_heads_l0",): (HEADS, 4 * d, d),
        ("bias_ih_l0",): (4 * H,),
    }


# --- the library around the cell -----------------------------------------------------------


def test_registry_training_kinds_and_errors():
    assert {"slstm", "slstm_exp"} <= set(F.registered_cells())
    assert {"slstm", "slstm_exp"} <= set(lstm_jax.train.cell_kinds())
    assert F.get_cell("slstm") is F.SLSTM_CELL is F.slstm_cell_def("sigmoid")
    assert F.slstm_cell_def("exponential") is F.SLSTM_EXP_CELL
    assert copy.deepcopy(F.SLSTM_EXP_CELL) == F.SLSTM_EXP_CELL  # cells compare by value
    with pytest.raises(ValueError, match="forget_gate must be 'sigmoid' or 'exponential'"):
        F.slstm_cell_def("tanh")
    with pytest.raises(ValueError, match="hidden_size must be a multiple of num_heads"):
        lstm_jax.Recurrent("slstm", I, 8, num_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_heads must be > 0"):
        F.init_slstm_layer(jax.random.key(0), I, 8, num_heads=0)
    params = _params("sigmoid", dtype=jnp.float32)
    with pytest.raises(ValueError, match="weight_hh is a property built from other fields"):
        F.apply_recurrent("slstm", params, _x((T, B, I), np.float32), weight_dropout=0.5, key=KEY)


def test_auto_runs_the_fused_kernel_and_the_others_say_why_not():
    model = lstm_jax.Recurrent("slstm", I, H, num_heads=HEADS, rngs=nnx.Rngs(0))
    x = _x((T, B, I), np.float32)
    [choice] = lstm_jax.explain_backend(model, x)
    assert choice.backend == ("fused" if jax.default_backend() == "cpu" else "scan")
    assert not choice.native_cpu
    assert "sLSTM" in choice.reasons["pallas"] and "LSTM cell only" in choice.reasons["cudnn"]
    assert "the LSTM (not with layer norm), GRU and RNN" in choice.reasons["native_cpu"]
    with pytest.raises(ValueError, match="sLSTM"):
        lstm_jax.Recurrent("slstm", I, H, backend="pallas", rngs=nnx.Rngs(0))(x)


def test_linen_runs_the_same_parameters():
    model = lstm_jax.linen.Recurrent("slstm_exp", I, H, cell_options=(("num_heads", HEADS),))
    x = _x((T, B, I), np.float32)
    (out, state), variables = jax.jit(model.init_with_output)(jax.random.key(0), x)
    named = variables["params"]
    assert named["weight_hh_heads_l0"].shape == (HEADS, 4 * H // HEADS, H // HEADS)
    p = F.SLSTMParams(named["weight_ih_l0"], named["weight_hh_heads_l0"], named["bias_ih_l0"])
    want_out, want_final, _ = _numpy_slstm(p, x, [T] * B, "exponential")
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    for got, want in zip(state, want_final, strict=True):
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
