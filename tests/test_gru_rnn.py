"""GRU and Elman RNN: torch parity (outputs, states, input and weight gradients), an
independent float64 NumPy reference, gradient checks, seq_lengths and bidirectional."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads
from references import gru_step, rnn_step, run

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F
from lstm_jax._src.interop.torch import stack_to_named

T, B, I, H = 5, 3, 4, 6  # noqa: E741 (time, batch, input, hidden)
KINDS = ["gru", "rnn_tanh", "rnn_relu"]


def _pure(kind):
    """(init_params, apply, numpy step) for a cell kind."""
    if kind == "gru":
        return F.init_gru_params, F.gru, gru_step
    nonlinearity = kind.split("_")[1]

    def apply(*args, **kwargs):
        return F.rnn(*args, nonlinearity=nonlinearity, **kwargs)

    def step(p, x, state):
        return rnn_step(p, x, state, nonlinearity)

    return F.init_rnn_params, apply, step


def _x(shape, dtype=np.float64, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# (kind, num_layers, bidirectional, bias, lengths): small, but every cell kind meets
# seq_lengths, and bidirectional and multi-layer stacks appear; torch parity adds more.
NUMPY_GRID = [
    ("gru", 2, True, True, [5, 2, 4]),
    ("gru", 1, False, False, None),
    ("rnn_tanh", 2, True, True, [1, 5, 3]),
    ("rnn_relu", 2, False, True, [3, 5, 1]),
]


@pytest.mark.parametrize("kind,num_layers,bidirectional,bias,lengths", NUMPY_GRID)
def test_matches_numpy_float64(kind, num_layers, bidirectional, bias, lengths):
    init, apply, step = _pure(kind)
    params = init(
        jax.random.key(0),
        I,
        H,
        num_layers,
        bias=bias,
        bidirectional=bidirectional,
        dtype=jnp.float64,
    )
    d = 2 if bidirectional else 1
    x, h0 = _x((T, B, I)), _x((num_layers * d, B, H), seed=2)
    seq = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    out, h_n = apply(params, jnp.asarray(x), jnp.asarray(h0), seq_lengths=seq)
    named = {k: np.asarray(v) for k, v in stack_to_named(params).items()}
    ref_out, (ref_h,) = run(step, named, x, (h0,), num_layers, bidirectional, lengths)
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, ref_h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_float64(kind):
    init, apply, _ = _pure(kind)
    params = init(jax.random.key(0), 3, 4, 1, bidirectional=True, dtype=jnp.float64)
    x = jnp.asarray(_x((3, 2, 3)))
    seq = jnp.asarray([3, 2], jnp.int32)

    def loss(params, x):
        out, h = apply(params, x, seq_lengths=seq)
        return jnp.sum(jnp.sin(out)) + jnp.sum(h * h)

    check_grads(jax.jit(loss), (params, x), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_gru_reset_gate_multiplies_recurrent_bias():
    """torch's GRU puts b_hn inside r * (W_hn h + b_hn): with r = 0 it must vanish from n."""
    p = F.init_gru_layer(jax.random.key(0), 2, 3, dtype=jnp.float64)
    big = jnp.full((3,), -1e3, jnp.float64)  # r = sigmoid(-1e3) = 0
    p = p._replace(bias_ih=p.bias_ih.at[:3].set(big), bias_hh=p.bias_hh.at[6:].set(50.0))
    x, h = _x((1, 2)), _x((1, 3), seed=3)
    w_ih, w_hh, b_ih, b_hh = (np.asarray(a) for a in p)
    n_without_bhn = np.tanh(x @ w_ih[6:].T + b_ih[6:])
    z = 1 / (1 + np.exp(-(x @ w_ih[3:6].T + b_ih[3:6] + h @ w_hh[3:6].T + b_hh[3:6])))
    new = F.gru_cell(p, jnp.asarray(x), F.GRUState(jnp.asarray(h))).h
    np.testing.assert_allclose(new, (1 - z) * n_without_bhn + z * h, atol=1e-12)


def test_rnn_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        lstm_jax.RNN(3, 4, nonlinearity="gelu", rngs=nnx.Rngs(0))
    params = F.init_rnn_params(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        F.rnn(params, jnp.ones((2, 1, 3), jnp.float32), nonlinearity="sigmoid")


def test_nnx_linen_functional_agree():
    model = lstm_jax.GRU(I, H, bidirectional=True, batch_first=True, rngs=nnx.Rngs(0))
    x = jnp.asarray(_x((B, T, I), np.float32))
    out, h = model(x)
    ref_out, ref_h = F.gru(model.stack_params, x, batch_first=True)
    linen = lstm_jax.linen.GRU(I, H, bidirectional=True, batch_first=True)
    lin_out, lin_h = linen.apply({"params": model.to_torch_state_dict()}, x)
    chex.assert_trees_all_close((out, h), (ref_out, ref_h), (lin_out, lin_h), atol=1e-6)
    cell = lstm_jax.RNNCell(I, H, nonlinearity="relu", rngs=nnx.Rngs(0))
    lin_cell = lstm_jax.linen.RNNCell(I, H, nonlinearity="relu")
    chex.assert_trees_all_close(
        cell(x[:, 0]), lin_cell.apply({"params": cell.to_torch_state_dict()}, x[:, 0])
    )


def test_unbatched_and_hx_validation():
    model = lstm_jax.GRU(I, H, rngs=nnx.Rngs(0))
    x = jnp.asarray(_x((T, I), np.float32))
    out, h = model(x)
    out_b, h_b = model(x[:, None])
    chex.assert_trees_all_close((out, h), (out_b[:, 0], h_b[:, 0]))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\) must have shape"):
        model(x[:, None], jnp.zeros((1, 2, H), jnp.float32))
    cell = lstm_jax.GRUCell(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hx must have shape"):
        cell(x, jnp.zeros((2, H), jnp.float32))


# --- torch parity ------------------------------------------------------------------------


def _torch_module(kind, num_layers, bidirectional, bias, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kwargs = dict(
        num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional
    )
    if kind == "gru":
        return torch.nn.GRU(I, H, **kwargs), lstm_jax.GRU
    return torch.nn.RNN(I, H, nonlinearity=kind.split("_")[1], **kwargs), lstm_jax.RNN


def torch_parity_errors(kind, num_layers, bidirectional, bias, lengths, batch_first):
    """Max abs differences of outputs, states and gradients against torch, in float32."""
    torch = pytest.importorskip("torch")
    module, cls = _torch_module(kind, num_layers, bidirectional, bias, batch_first)
    model = cls.from_torch(module)
    d = 2 if bidirectional else 1
    x = _x((B, T, I) if batch_first else (T, B, I), np.float32)
    h0 = _x((num_layers * d, B, H), np.float32, seed=2)
    w_out = _x((T, B, d * H), np.float32, seed=3)
    w_out = np.swapaxes(w_out, 0, 1).copy() if batch_first else w_out
    w_h = _x((num_layers * d, B, H), np.float32, seed=4)

    # torch
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    if lengths is None:
        t_out, t_h = module(tx, th0)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            tx, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
        )
        t_out, t_h = module(packed, th0)
        t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            t_out, batch_first=batch_first, total_length=T
        )
    t_loss = (t_out * torch.tensor(w_out)).sum() + (t_h * torch.tensor(w_h)).sum()
    t_loss.backward()
    t_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}

    # jax
    apply = F.gru if kind == "gru" else _pure(kind)[1]
    seq = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    def loss(params, x, h0):
        out, h = apply(params, x, h0, seq_lengths=seq, batch_first=batch_first)
        return jnp.sum(out * w_out) + jnp.sum(h * w_h), (out, h)

    (_, (out, h)), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        model.stack_params, jnp.asarray(x), jnp.asarray(h0)
    )
    g_params, g_x, g_h0 = grads
    g_named = stack_to_named(g_params)
    assert set(g_named) == set(t_grads)
    return {
        "output": float(np.max(np.abs(out - t_out.detach().numpy()))),
        "h_n": float(np.max(np.abs(h - t_h.detach().numpy()))),
        "grad_x": float(np.max(np.abs(g_x - tx.grad.numpy()))),
        "grad_h0": float(np.max(np.abs(g_h0 - th0.grad.numpy()))),
        "grad_params": max(float(np.max(np.abs(g_named[n] - t_grads[n]))) for n in t_grads),
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "num_layers,bidirectional,bias,lengths,batch_first",
    [(2, True, True, [5, 2, 4], True), (1, False, False, None, False)],
)
def test_torch_parity(kind, num_layers, bidirectional, bias, lengths, batch_first):
    errors = torch_parity_errors(kind, num_layers, bidirectional, bias, lengths, batch_first)
    assert max(errors.values()) < 2e-5, errors


@pytest.mark.parametrize("kind", KINDS)
def test_cell_torch_parity(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    if kind == "gru":
        module, cls = torch.nn.GRUCell(I, H), lstm_jax.GRUCell
    else:
        module, cls = torch.nn.RNNCell(I, H, nonlinearity=kind.split("_")[1]), lstm_jax.RNNCell
    cell = cls.from_torch(module)
    x, h = _x((B, I), np.float32), _x((B, H), np.float32, seed=2)
    tx, th = torch.tensor(x, requires_grad=True), torch.tensor(h)
    t_new = module(tx, th)
    t_new.sum().backward()
    new = cell(jnp.asarray(x), jnp.asarray(h))
    np.testing.assert_allclose(new, t_new.detach().numpy(), atol=1e-6)
    g_x = jax.grad(lambda x: jnp.sum(cell(x, jnp.asarray(h))))(jnp.asarray(x))
    np.testing.assert_allclose(g_x, tx.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(cell(jnp.asarray(x[0])), module(tx[0]).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_state_dict_round_trip(kind):
    torch = pytest.importorskip("torch")
    if kind == "gru":
        model = lstm_jax.GRU(I, H, 2, bidirectional=True, rngs=nnx.Rngs(3))
        module = torch.nn.GRU(I, H, 2, bidirectional=True)
    else:
        nonlinearity = kind.split("_")[1]
        model = lstm_jax.RNN(I, H, 1, nonlinearity, rngs=nnx.Rngs(3))
        module = torch.nn.RNN(I, H, 1, nonlinearity)
    module.load_state_dict(model.to_torch_state_dict(as_tensors=True))
    x = _x((T, B, I), np.float32)
    out, h = model(jnp.asarray(x))
    t_out, t_h = module(torch.tensor(x))
    np.testing.assert_allclose(out, t_out.detach().numpy(), atol=2e-6)
    np.testing.assert_allclose(h, t_h.detach().numpy(), atol=2e-6)
