"""The fused read-out + cross-entropy against a float64 NumPy reference and optax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from lstm_jax import data, train


def _inputs(dtype=np.float64, shape=(4, 3), features=5, vocab=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*shape, features)).astype(dtype)
    kernel = rng.standard_normal((features, vocab)).astype(dtype)
    bias = rng.standard_normal(vocab).astype(dtype)
    labels = rng.integers(0, vocab, shape).astype(np.int32)
    return x, kernel, bias, labels


def _numpy_reference(x, kernel, bias, labels, weights):
    """Losses, argmax and the gradients of ``sum(weights * losses)``, written out in NumPy."""
    logits = x @ kernel + bias
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    losses = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    d_logits = np.exp(log_probs)
    np.put_along_axis(
        d_logits, labels[..., None], np.take_along_axis(d_logits, labels[..., None], -1) - 1, -1
    )
    d_logits *= weights[..., None]
    rows, d_rows = x.reshape(-1, x.shape[-1]), d_logits.reshape(-1, kernel.shape[1])
    grads = (d_logits @ kernel.T, rows.T @ d_rows, d_rows.sum(0))
    return losses, logits.argmax(-1), grads


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_numpy_float64(use_bias):
    x, kernel, bias, labels = _inputs()
    bias = bias if use_bias else np.zeros_like(bias)
    weights = np.random.default_rng(1).random(labels.shape)
    losses, predictions, grads = _numpy_reference(x, kernel, bias, labels, weights)

    def weighted(x, kernel, *maybe_bias):
        out, _ = train.linear_cross_entropy(
            x, kernel, maybe_bias[0] if maybe_bias else None, labels
        )
        return jnp.sum(out * weights)

    args = (x, kernel, bias) if use_bias else (x, kernel)
    ours, ours_predictions = train.linear_cross_entropy(
        *args[:2], args[2] if use_bias else None, labels
    )
    np.testing.assert_allclose(ours, losses, rtol=1e-13)
    np.testing.assert_array_equal(ours_predictions, predictions)
    ours_grads = jax.grad(weighted, argnums=tuple(range(len(args))))(*args)
    for got, expected in zip(ours_grads, grads, strict=False):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    check_grads(weighted, args, order=2, modes=("rev",))  # grad of grad, reverse over reverse


def test_float32_matches_optax_under_jit_and_vmap():
    x, kernel, bias, labels = _inputs(np.float32)

    def optax_loss(x, kernel, bias):
        return optax.softmax_cross_entropy_with_integer_labels(
            x @ kernel + bias[None, None], labels
        )

    def ours(x, kernel, bias):
        return train.linear_cross_entropy(x, kernel, bias, labels)[0]

    for f in (optax_loss, ours):
        assert f(x, kernel, bias).dtype == jnp.float32
    np.testing.assert_allclose(
        jax.jit(ours)(x, kernel, bias), optax_loss(x, kernel, bias), rtol=1e-6
    )

    def grads(f):
        return jax.grad(lambda *a: f(*a).mean(), argnums=(0, 1, 2))(x, kernel, bias)

    chex.assert_trees_all_close(grads(ours), grads(optax_loss), rtol=1e-5, atol=1e-7)
    # vmap over a leading axis: each slice alone
    stacked = jax.vmap(lambda x, y: train.linear_cross_entropy(x, kernel, bias, y)[0])(x, labels)
    alone = jnp.stack(
        [train.linear_cross_entropy(x[i], kernel, bias, labels[i])[0] for i in range(4)]
    )
    np.testing.assert_allclose(stacked, alone, rtol=1e-6)


def test_bfloat16_inputs_give_float32_losses_and_gradients_in_their_dtypes():
    x, kernel, bias, labels = _inputs(np.float32)
    reference = train.linear_cross_entropy(x, kernel, bias, labels)[0]
    low = jnp.asarray(x, jnp.bfloat16)
    losses, _ = train.linear_cross_entropy(
        low, kernel, bias, labels
    )  # promoted, as nnx.Linear does
    assert losses.dtype == jnp.float32
    np.testing.assert_allclose(losses, reference, rtol=2e-2)
    grads = jax.grad(
        lambda x, k: train.linear_cross_entropy(x, k, None, labels)[0].sum(), argnums=(0, 1)
    )(low, jnp.asarray(kernel, jnp.bfloat16))
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def test_bad_labels_and_non_finite_inputs_give_nan_rows_only():
    x, kernel, bias, labels = _inputs(np.float32)
    labels[0, 0], labels[1, 2] = 7, -1  # vocab 7: both out of range
    x[2, 1, 0] = np.inf
    losses, _ = train.linear_cross_entropy(x, kernel, bias, labels)
    grad = jax.grad(lambda x: train.linear_cross_entropy(x, kernel, bias, labels)[0].sum())(x)
    bad = np.zeros(labels.shape, bool)
    bad[0, 0] = bad[1, 2] = bad[2, 1] = True
    assert np.isnan(losses[bad]).all() and np.isfinite(losses[~bad]).all()
    assert np.isnan(grad[bad]).all() and np.isfinite(grad[~bad]).all()
    # the shared gradients carry the NaN on, as autodiff of the unfused form does
    d_kernel = jax.grad(lambda k: train.linear_cross_entropy(x, k, bias, labels)[0].sum())(kernel)
    assert np.isnan(d_kernel).any()


def test_shape_and_dtype_errors_name_what_was_expected():
    x, kernel, bias, labels = _inputs(np.float32)
    with pytest.raises(ValueError, match=r"share F"):
        train.linear_cross_entropy(x, kernel.T, bias, labels)
    with pytest.raises(ValueError, match=r"bias must be \[vocab\]"):
        train.linear_cross_entropy(x, kernel, bias[:3], labels)
    with pytest.raises(ValueError, match=r"labels must be integers of shape"):
        train.linear_cross_entropy(x, kernel, bias, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels must be integers of shape"):
        train.linear_cross_entropy(x, kernel, bias, labels[:2])


def test_exports_and_runs_from_the_serialised_form():
    x, kernel, bias, labels = _inputs(np.float32)

    def loss_and_grad(x, kernel, bias):
        return jax.value_and_grad(
            lambda k: train.linear_cross_entropy(x, k, bias, labels)[0].mean()
        )(kernel)

    exported = jax.export.export(jax.jit(loss_and_grad))(x, kernel, bias)
    restored = jax.export.deserialize(exported.serialize())
    for got, expected in zip(
        restored.call(x, kernel, bias), loss_and_grad(x, kernel, bias), strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_token_loss_on_a_token_model_equals_optax_on_its_logits():
    """token_loss fuses a TokenModel's read-out with the loss; the model's own call and
    optax's loss give the same loss, accuracy and gradients (dropout masks included)."""
    stream = data.LMStream(data.batchify(np.arange(200, dtype=np.int32) % 11, 4), seq_len=6)
    batch = stream.batch(0)

    def unfused(model):
        logits, _ = model(batch["inputs"], model.zero_carry(4))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        predictions = jnp.argmax(logits, -1).astype(batch["targets"].dtype)
        accuracy = jnp.mean((predictions == batch["targets"]).astype(jnp.float32))
        return jnp.mean(losses), ({"loss": jnp.mean(losses), "accuracy": accuracy}, None)

    def fused(model):
        return train.token_loss(model, batch, model.zero_carry(4))

    model = train.TokenModel("rnn", 11, 4, 8, io_dropout=0.3, rngs=nnx.Rngs(0))
    results = []
    for loss_fn, m in ((fused, model), (unfused, nnx.clone(model))):  # the same dropout masks
        (loss, (metrics, _)), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(m)
        results.append((loss, metrics["accuracy"], nnx.state(grads)))
    chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
