"""lstm_jax.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell with copied weights (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from lstm_jax import functional as F
from lstm_jax._src.interop.torch import stack_to_named

torch = pytest.importorskip("torch")

T, B, I, H = 7, 4, 5, 6
ATOL = 2e-5

GRID = [
    # (num_layers, bidirectional, batch_first, proj_size, with_hx, lengths)
    (1, False, False, 0, False, None),
    (1, True, True, 0, True, None),
    (2, False, False, 3, True, [7, 3, 5, 1]),
    (2, True, False, 0, False, [2, 7, 7, 4]),
    (3, True, True, 4, True, [5, 1, 7, 6]),
    (3, False, True, 0, False, None),
]


def _torch_forward(module, x, hx, lengths, batch_first):
    if lengths is None:
        return module(x, hx)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
    )
    out, state = module(packed, hx)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, state


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,proj_size,with_hx,lengths", GRID)
def test_lstm_outputs_states_and_gradients_match_torch(
    num_layers, bidirectional, batch_first, proj_size, with_hx, lengths
):
    torch.manual_seed(0)
    module = torch.nn.LSTM(
        I, H, num_layers, batch_first=batch_first, bidirectional=bidirectional, proj_size=proj_size
    )
    model = lstm_jax.LSTM.from_torch(module)
    rng = np.random.default_rng(0)
    d = 2 if bidirectional else 1
    h_out = proj_size or H
    x = rng.normal(size=(B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    hx = None
    if with_hx:
        hx = (
            rng.normal(size=(num_layers * d, B, h_out)).astype(np.float32),
            rng.normal(size=(num_layers * d, B, H)).astype(np.float32),
        )
    # Random cotangents so that every output, state and gradient entry is checked.
    r_out = rng.normal(size=x.shape[:2] + (d * h_out,)).astype(np.float32)
    r_h = rng.normal(size=(num_layers * d, B, h_out)).astype(np.float32)
    r_c = rng.normal(size=(num_layers * d, B, H)).astype(np.float32)

    x_t = torch.tensor(x, requires_grad=True)
    hx_t = None if hx is None else tuple(torch.tensor(a) for a in hx)
    out_t, (h_t, c_t) = _torch_forward(module, x_t, hx_t, lengths, batch_first)
    loss_t = (
        (out_t * torch.tensor(r_out)).sum()
        + (h_t * torch.tensor(r_h)).sum()
        + (c_t * torch.tensor(r_c)).sum()
    )
    loss_t.backward()

    seq = None if lengths is None else np.asarray(lengths, np.int32)

    def loss(params, x):
        out, (h, c) = F.lstm(params, x, hx, seq_lengths=seq, batch_first=batch_first)
        return jnp.sum(out * r_out) + jnp.sum(h * r_h) + jnp.sum(c * r_c), (out, h, c)

    (_, (out, h, c)), (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        model.stack_params, jnp.asarray(x)
    )
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(h, h_t.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(c, c_t.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(g_x, x_t.grad.numpy(), atol=ATOL)
    grads = stack_to_named(g_params)
    assert set(grads) == {n for n, _ in module.named_parameters()}
    for name, p in module.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), atol=ATOL, err_msg=name)
    # The module call agrees with the functional call it wraps.
    out_m, (h_m, _) = model(jnp.asarray(x), hx, seq_lengths=seq)
    np.testing.assert_allclose(out_m, out, atol=1e-6)
    np.testing.assert_allclose(h_m, h, atol=1e-6)


def test_to_torch_state_dict_round_trip():
    model = lstm_jax.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, rngs=nnx.Rngs(3))
    module = torch.nn.LSTM(I, H, 2, bidirectional=True, proj_size=2)
    module.load_state_dict(model.to_torch_state_dict(as_tensors=True))
    numpy_sd = model.to_torch_state_dict()
    assert all(isinstance(v, np.ndarray) for v in numpy_sd.values())
    module.load_state_dict({k: torch.from_numpy(v) for k, v in numpy_sd.items()})
    x = np.random.default_rng(1).normal(size=(T, B, I)).astype(np.float32)
    out, (h, c) = model(jnp.asarray(x))
    out_t, (h_t, c_t) = module(torch.tensor(x))
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(c, c_t.detach().numpy(), atol=ATOL)


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_matches_torch_in_a_stepped_loop(bias):
    torch.manual_seed(0)
    t1, t2 = torch.nn.LSTMCell(I, 8, bias=bias), torch.nn.LSTMCell(8, H, bias=bias)
    c1, c2 = lstm_jax.LSTMCell.from_torch(t1), lstm_jax.LSTMCell.from_torch(t2)
    x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
    hx1 = hx2 = None
    thx1 = thx2 = None
    for t in range(T):
        hx1 = c1(jnp.asarray(x[t]), hx1)
        hx2 = c2(hx1[0], hx2)
        thx1 = t1(torch.tensor(x[t]), thx1)
        thx2 = t2(thx1[0], thx2)
    np.testing.assert_allclose(hx2[0], thx2[0].detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(hx2[1], thx2[1].detach().numpy(), atol=ATOL)
    sd = c2.to_torch_state_dict(as_tensors=True)
    t3 = torch.nn.LSTMCell(8, H, bias=bias)
    t3.load_state_dict(sd)
    for name, p in t3.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), getattr(t2, name).detach().numpy())


def test_lstm_cell_unbatched_and_gradients_match_torch():
    torch.manual_seed(1)
    tcell = torch.nn.LSTMCell(I, H)
    cell = lstm_jax.LSTMCell.from_torch(tcell)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(I,)).astype(np.float32)
    h0, c0 = (rng.normal(size=(H,)).astype(np.float32) for _ in range(2))
    h, c = cell(jnp.asarray(x), (h0, c0))
    x_t = torch.tensor(x, requires_grad=True)
    h_t, c_t = tcell(x_t, (torch.tensor(h0), torch.tensor(c0)))
    assert h.shape == (H,) and c.shape == (H,)
    np.testing.assert_allclose(h, h_t.detach().numpy(), atol=ATOL)
    (h_t.sum() + c_t.sum()).backward()
    g = jax.grad(lambda x: sum(jnp.sum(s) for s in cell(x, (h0, c0))))(jnp.asarray(x))
    np.testing.assert_allclose(g, x_t.grad.numpy(), atol=ATOL)
