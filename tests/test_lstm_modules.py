"""The NNX/Linen module API: the seed examples, dropout modes, options, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
import lstm_jax.linen
from lstm_jax import functional as F


def test_seed_example_ports_line_for_line():
    rnn = lstm_jax.LSTM(input_size=100, hidden_size=20, num_layers=4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (10, 3, 100), jnp.float32)
    out, (h, c) = rnn(x)
    assert out.shape == (10, 3, 20) and h.shape == (4, 3, 20) and c.shape == (4, 3, 20)
    np.testing.assert_array_equal(out[-1], h[-1])


def test_two_cells_stepped_like_torch_example():
    cell1 = lstm_jax.LSTMCell(100, 30, rngs=nnx.Rngs(0))
    cell2 = lstm_jax.LSTMCell(30, 20, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (10, 3, 100), jnp.float32)
    hx1 = hx2 = None
    outputs = []
    for t in range(10):
        hx1 = cell1(x[t], hx1)
        hx2 = cell2(hx1[0], hx2)
        outputs.append(hx2[0])
    # The same two cells run as two one-layer scans give the same sequence.
    out1, _ = F.lstm(((cell1.params,),), x)
    out2, _ = F.lstm(((cell2.params,),), out1)
    np.testing.assert_allclose(jnp.stack(outputs), out2, atol=1e-6)


def test_default_init_is_torch_uniform_and_options_apply():
    model = lstm_jax.LSTM(8, 16, rngs=nnx.Rngs(0))
    bound = 1 / np.sqrt(16)
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        w = np.asarray(getattr(model, name)[...])
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound and w.std() > bound / 2
    model = lstm_jax.LSTM(8, 16, forget_bias=1.0, recurrent_init="orthogonal", rngs=nnx.Rngs(0))
    total = np.asarray(model.bias_ih_l0[...] + model.bias_hh_l0[...])
    np.testing.assert_array_equal(total[16:32], 1.0)
    w = np.asarray(model.weight_hh_l0[...])
    for gate in range(4):
        block = w[gate * 16 : (gate + 1) * 16]
        np.testing.assert_allclose(block @ block.T, np.eye(16), atol=1e-5)


def test_dropout_between_layers_only_and_eval_switches_it_off():
    model = lstm_jax.LSTM(4, 8, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 3, 4), jnp.float32)
    out1, (h1, c1) = model(x)
    out2, (h2, _) = model(x)
    assert not np.allclose(out1, out2)  # a fresh mask each call
    model.eval()
    ref, (h_ref, c_ref) = model(x)
    ref_again, _ = model(x)
    np.testing.assert_array_equal(ref, ref_again)
    np.testing.assert_array_equal(ref, F.lstm(model.stack_params, x)[0])
    # Dropout acts on layer 0's output, never on its state or on the last layer's output.
    np.testing.assert_array_equal(h1[0], h_ref[0])
    np.testing.assert_array_equal(c1[0], c_ref[0])
    assert not np.allclose(h1[1], h_ref[1])
    model.train()
    assert not np.allclose(model(x)[0], ref)


def test_linen_dropout_needs_rng_and_is_deterministic_by_default():
    model = lstm_jax.linen.LSTM(4, 8, num_layers=2, dropout=0.5)
    x = jnp.ones((5, 3, 4), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    a = model.apply(variables, x)[0]
    np.testing.assert_array_equal(a, model.apply(variables, x)[0])
    b = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})[0]
    c = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(2)})[0]
    assert not np.allclose(a, b) and not np.allclose(b, c)


def test_nnx_module_jits_with_nnx_jit_and_grads():
    model = lstm_jax.LSTM(4, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    x = jnp.ones((5, 3, 4), jnp.float32)

    @nnx.jit
    def loss_and_grad(model, x):
        return nnx.value_and_grad(lambda m: jnp.sum(m(x)[0] ** 2))(model)

    loss, grads = loss_and_grad(model, x)
    assert np.isfinite(loss)
    assert grads["weight_hh_l1_reverse"][...].shape == (32, 8)


def test_param_dtype_and_bfloat16_compute():
    model = lstm_jax.LSTM(4, 8, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    out, (h, c) = model(jnp.ones((5, 3, 4), jnp.float32))
    assert model.weight_ih_l0[...].dtype == jnp.float32
    assert out.dtype == jnp.bfloat16 and c.dtype == jnp.float32


BAD_CONSTRUCTOR = [
    (dict(input_size=0, hidden_size=4), ValueError, "input_size must be > 0, got 0"),
    (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size must be > 0"),
    (dict(input_size=3, hidden_size=4, num_layers=0), ValueError, "num_layers must be > 0"),
    (dict(input_size=3.0, hidden_size=4), TypeError, "input_size must be an int, got float"),
    (dict(input_size=3, hidden_size=4, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    (dict(input_size=3, hidden_size=4, dropout=-0.1), ValueError, "dropout must be in"),
    (
        dict(input_size=3, hidden_size=4, proj_size=4),
        ValueError,
        "proj_size must be smaller than hidden_size, got proj_size=4 and hidden_size=4",
    ),
    (dict(input_size=3, hidden_size=4, proj_size=-1), ValueError, "proj_size must be >= 0"),
    (dict(input_size=3, hidden_size=4, recurrent_init="zeros"), ValueError, "recurrent_init"),
    (dict(input_size=3, hidden_size=4, bias=False, forget_bias=1.0), ValueError, "bias=True"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_CONSTRUCTOR)
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        lstm_jax.LSTM(**kwargs, rngs=nnx.Rngs(0))
    if "recurrent_init" not in kwargs and "forget_bias" not in kwargs:
        with pytest.raises(error, match=match):
            lstm_jax.linen.LSTM(**kwargs)


@pytest.fixture(scope="module")
def model():
    return lstm_jax.LSTM(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))


X = np.zeros((5, 2, 3), np.float32)
H0 = np.zeros((4, 2, 4), np.float32)

BAD_CALLS = [
    (
        dict(x=np.zeros((5, 2, 7), np.float32)),
        ValueError,
        r"input must have input_size=3 features on its last axis, got shape \(5, 2, 7\)",
    ),
    (dict(x=np.zeros((5,), np.float32)), ValueError, "input must have rank 3"),
    (dict(x=np.zeros((1, 5, 2, 3), np.float32)), ValueError, "got shape \\(1, 5, 2, 3\\)"),
    (dict(x=np.zeros((5, 2, 3), np.int32)), TypeError, "input must be a floating-point array"),
    (dict(x=[[0.0, 0.0, 0.0]]), TypeError, "input must be a jax or numpy array, got list"),
    (
        dict(x=X, hx=(np.zeros((2, 2, 4), np.float32), H0)),
        ValueError,
        r"hx\[0\] \(h_0\) must have shape \[layers \* directions, batch, size\] = \(4, 2, 4\), "
        r"got \(2, 2, 4\)",
    ),
    (dict(x=X, hx=(H0, np.zeros((4, 3, 4), np.float32))), ValueError, r"hx\[1\] \(c_0\).*batch"),
    (dict(x=X, hx=(H0, np.zeros((4, 2, 5), np.float32))), ValueError, r"hx\[1\] \(c_0\)"),
    (
        dict(x=X, seq_lengths=np.array([5, 2, 1])),
        ValueError,
        r"seq_lengths must have shape \[batch\] = \(2,\), got \(3,\)",
    ),
    (dict(x=X, seq_lengths=np.array([5.0, 2.0])), TypeError, "seq_lengths must be an integer"),
    (dict(x=X, seq_lengths=np.array([6, 2])), ValueError, r"seq_lengths must be in 1\.\.5"),
    (dict(x=X, seq_lengths=np.array([0, 2])), ValueError, "got min 0"),
]


@pytest.mark.parametrize("call,error,match", BAD_CALLS)
def test_bad_call_arguments(model, call, error, match):
    with pytest.raises(error, match=match):
        model(call.pop("x"), call.pop("hx", None), **call)


def test_bad_cell_input_and_functional_dropout_without_key():
    cell = lstm_jax.LSTMCell(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"input must have shape \[batch, input_size\]"):
        cell(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h\) must have shape"):
        cell(np.zeros((2, 3), np.float32), (np.zeros((3, 4), np.float32),) * 2)
    params = F.init_lstm_params(jax.random.key(0), 3, 4, 2)
    with pytest.raises(ValueError, match="dropout > 0 needs a PRNG `key`"):
        F.lstm(params, X, dropout=0.5)
