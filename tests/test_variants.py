"""LSTM variants (peepholes, layer norm, CIFG, with projection) against an independent
float64 NumPy step; gradient checks; the initialisers (forget bias, chrono, orthogonal)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads
from references import lstm_variant_step, run

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F
from lstm_jax._src.interop.torch import stack_to_named

T, B, I, H = 5, 3, 4, 6  # noqa: E741 (time, batch, input, hidden)


def _x(shape, dtype=np.float64, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _variant_params(num_layers, bidirectional, proj_size=0, dtype=jnp.float64, **variant):
    """Parameters with the variant's extra fields drawn at random (not 1 and 0), so a
    layer-norm gain or shift that is applied wrongly shows up."""
    params = F.init_lstm_params(
        jax.random.key(0),
        I,
        H,
        num_layers,
        bidirectional=bidirectional,
        proj_size=proj_size,
        dtype=dtype,
        **variant,
    )
    rng = np.random.default_rng(7)

    def perturb(layer_params):
        extra = {}
        for field, value in layer_params._asdict().items():
            if value is not None and field.startswith(("ln_", "weight_c")):
                centre = 1.0 if field.startswith("ln_") and field.endswith("_weight") else 0.0
                extra[field] = jnp.asarray(centre + 0.5 * rng.normal(size=value.shape), dtype)
        return layer_params._replace(**extra)

    return tuple(tuple(perturb(p) for p in layer) for layer in params)


# (variant, num_layers, bidirectional, proj_size, lengths, with_hx): each variant meets
# seq_lengths and the bidirectional stack; the last two rows compose them with each other
# and with torch's projection.
GRID = [
    (dict(peephole=True), 1, True, 0, [5, 2, 4], False),
    (dict(layer_norm=True), 2, True, 0, [1, 5, 3], True),
    (dict(cifg=True), 1, True, 0, [4, 5, 2], False),
    (dict(peephole=True, layer_norm=True, cifg=True), 2, True, 3, [5, 1, 3], True),
    (dict(peephole=True, cifg=True), 2, False, 2, None, False),
]


@pytest.mark.parametrize("variant,num_layers,bidirectional,proj_size,lengths,with_hx", GRID)
def test_matches_numpy_float64(variant, num_layers, bidirectional, proj_size, lengths, with_hx):
    params = _variant_params(num_layers, bidirectional, proj_size, **variant)
    d = 2 if bidirectional else 1
    x = _x((T, B, I))
    h0 = _x((num_layers * d, B, proj_size or H), seed=2)
    c0 = _x((num_layers * d, B, H), seed=3)
    if not with_hx:
        h0, c0 = np.zeros_like(h0), np.zeros_like(c0)
    seq = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    hx = (jnp.asarray(h0), jnp.asarray(c0)) if with_hx else None
    out, (h_n, c_n) = F.lstm(params, jnp.asarray(x), hx, seq_lengths=seq)
    named = {k: np.asarray(v) for k, v in stack_to_named(params).items()}
    ref_out, (ref_h, ref_c) = run(
        lstm_variant_step, named, x, (h0, c0), num_layers, bidirectional, lengths
    )
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, ref_h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n, ref_c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "variant",
    [dict(peephole=True), dict(layer_norm=True), dict(cifg=True)],
    ids=["peephole", "layer_norm", "cifg"],
)
def test_gradients_float64(variant):
    params = _variant_params(1, True, proj_size=2, **variant)
    x = jnp.asarray(_x((3, 2, I)))
    seq = jnp.asarray([3, 2], jnp.int32)

    def loss(params, x):
        out, (h, c) = F.lstm(params, x, seq_lengths=seq)
        return jnp.sum(jnp.sin(out)) + jnp.sum(c * c)

    check_grads(jax.jit(loss), (params, x), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_cell_matches_numpy_step_and_lstm_of_one_step():
    cell = lstm_jax.LSTMCell(
        I, H, peephole=True, layer_norm=True, cifg=True, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    x, h, c = _x((B, I)), _x((B, H), seed=2), _x((B, H), seed=3)
    new = cell(jnp.asarray(x), (jnp.asarray(h), jnp.asarray(c)))
    p = {k: np.asarray(v) for k, v in cell.to_torch_state_dict().items()}
    ref = lstm_variant_step(p, x, (h, c))
    chex.assert_trees_all_close(tuple(new), ref, atol=1e-12)
    assert "weight_ci" not in p and p["weight_ih"].shape == (3 * H, I)


def test_nnx_linen_functional_agree_with_variants():
    kwargs = dict(
        num_layers=1,
        bidirectional=True,
        proj_size=2,
        peephole=True,
        layer_norm=True,
        cifg=True,
        batch_first=True,
        param_dtype=jnp.float64,
    )
    model = lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0), **kwargs)
    x = jnp.asarray(_x((B, T, I)))
    out = model(x)
    linen = lstm_jax.linen.LSTM(I, H, **kwargs)
    variables = linen.init(jax.random.key(1), x)
    assert set(variables["params"]) == set(model.to_torch_state_dict())
    lin_out = linen.apply({"params": model.to_torch_state_dict()}, x)
    fn_out = F.lstm(model.stack_params, x, batch_first=True)
    chex.assert_trees_all_close(out, lin_out, fn_out, atol=1e-12)


def test_variant_parameter_shapes_and_names():
    model = lstm_jax.LSTM(
        I, H, 2, proj_size=2, peephole=True, layer_norm=True, cifg=True, rngs=nnx.Rngs(0)
    )
    shapes = {k: v.shape for k, v in model.to_torch_state_dict().items()}
    assert shapes["weight_ih_l0"] == (3 * H, I) and shapes["weight_hh_l1"] == (3 * H, 2)
    assert shapes["weight_cf_l1"] == shapes["weight_co_l1"] == (H,)
    assert "weight_ci_l0" not in shapes  # no input gate with CIFG
    assert shapes["ln_ih_weight_l0"] == shapes["ln_hh_bias_l1"] == (3 * H,)
    assert shapes["ln_c_weight_l1"] == (H,)
    assert shapes["weight_hr_l1"] == (2, H)
    fresh = F.init_lstm_layer(jax.random.key(0), I, H, layer_norm=True)
    np.testing.assert_array_equal(fresh.ln_ih_weight, np.ones(4 * H))
    np.testing.assert_array_equal(fresh.ln_c_bias, np.zeros(H))


# --- initialisers ------------------------------------------------------------------------


def test_forget_bias():
    for cifg, gate in ((False, 1), (True, 0)):
        p = F.init_lstm_layer(jax.random.key(0), I, H, forget_bias=1.0, cifg=cifg)
        total = np.asarray(p.bias_ih + p.bias_hh)
        np.testing.assert_array_equal(total[gate * H : (gate + 1) * H], np.ones(H))


def test_chrono_init():
    t_max, hidden = 50.0, 2000
    p = F.init_lstm_layer(jax.random.key(0), 2, hidden, chrono_init=t_max, dtype=jnp.float64)
    b_i, b_f = np.asarray(p.bias_ih[:hidden]), np.asarray(p.bias_ih[hidden : 2 * hidden])
    np.testing.assert_array_equal(p.bias_hh[: 2 * hidden], np.zeros(2 * hidden))
    np.testing.assert_array_equal(b_i, -b_f)
    # b_f = log(u), u ~ U(1, T_max - 1): exp(b_f) uniform on [1, 49]
    u = np.exp(b_f)
    assert u.min() >= 1.0 and u.max() <= t_max - 1
    assert abs(u.mean() - t_max / 2) < 1.5 and abs(np.median(u) - t_max / 2) < 2.0
    # the other gates keep torch's uniform init
    g_o = np.asarray(p.bias_ih[2 * hidden :])
    assert np.abs(g_o).max() <= 1 / np.sqrt(hidden)
    cifg = F.init_lstm_layer(jax.random.key(0), 2, 8, chrono_init=t_max, cifg=True)
    assert 0.0 <= float(cifg.bias_ih[:8].min()) and float(cifg.bias_ih[:8].max()) <= np.log(49)


def test_init_errors():
    with pytest.raises(ValueError, match="exclusive"):
        F.init_lstm_layer(jax.random.key(0), 2, 3, forget_bias=1.0, chrono_init=10)
    with pytest.raises(ValueError, match="must be > 2"):
        F.init_lstm_layer(jax.random.key(0), 2, 3, chrono_init=2)
    with pytest.raises(ValueError, match="need bias=True"):
        F.init_lstm_layer(jax.random.key(0), 2, 3, bias=False, chrono_init=10)
    with pytest.raises(ValueError, match="recurrent_init"):
        F.init_gru_layer(jax.random.key(0), 2, 3, recurrent_init="xavier")


@pytest.mark.parametrize(
    "init,gates", [(F.init_lstm_layer, 4), (F.init_gru_layer, 3), (F.init_rnn_layer, 1)]
)
def test_orthogonal_recurrent_blocks(init, gates):
    p = init(jax.random.key(0), 3, 5, recurrent_init="orthogonal", dtype=jnp.float64)
    w = np.asarray(p.weight_hh)
    assert w.shape == (gates * 5, 5)
    for k in range(gates):
        block = w[k * 5 : (k + 1) * 5]
        np.testing.assert_allclose(block @ block.T, np.eye(5), atol=1e-10)
