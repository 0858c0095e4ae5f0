"""Task losses with the signature the train step takes.

A loss function is ``loss_fn(model, batch, carry) -> (loss, (metrics, new_carry))``:
``model`` is the merged NNX model, ``batch`` a dict of arrays (time-major), ``carry`` the
recurrent state carried from the previous batch (``None`` for tasks without one), and
``metrics`` a dict of scalars averaged over the batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lstm_jax._src.data.arrays import SEQ_LENGTHS
from lstm_jax._src.train.linear_cross_entropy import linear_cross_entropy
from lstm_jax._src.train.models import TokenModel, reset_carry


def apply_to_batch(model, batch: dict[str, jax.Array]) -> jax.Array:
    """``model(batch["inputs"])``, with ``seq_lengths=`` where the batch has lengths.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import train
      >>> model = train.SequenceRegressor("lstm", 2, 8, rngs=nnx.Rngs(0))
      >>> batch = {"inputs": jnp.ones((6, 3, 2), jnp.float32), "seq_lengths": jnp.array([6, 2, 4])}
      >>> apply_to_batch(model, batch).shape
      (3, 1)
    """
    if SEQ_LENGTHS in batch:
        return model(batch["inputs"], seq_lengths=batch[SEQ_LENGTHS])
    return model(batch["inputs"])


def _batch_mismatch(outputs: jax.Array, targets: jax.Array, key: str) -> str:
    """The error for outputs and targets that do not pair row by row."""
    message = (
        f"the model's outputs have shape {outputs.shape} and batch[{key!r}] {targets.shape}: "
        "they must have the same rows (the batch)"
    )
    return message + (
        "; the inputs are read as [time, batch, features] (time-major): for [batch, time, "
        "features] data, build the batches with data.ArrayBatches (time-major) or the "
        "model with batch_first=True"
        if outputs.shape[0] != targets.shape[0]
        else ""
    )


def regression_loss(model, batch: dict[str, jax.Array], carry: Any = None):
    """Mean squared error of ``model(inputs)`` ``[B, out]`` against ``targets``.

    ``targets`` may be ``[B]`` (for ``out = 1``) or any ``[B, ...]`` with ``out`` values
    per row (a forecast's ``[B, horizon, features]``): they are compared value by value.

    Args:
      model: maps ``inputs`` ``[time, batch, features]`` (and ``seq_lengths`` ``[batch]``
        when the batch has them) to ``[batch, out]``.
      batch: ``{"inputs": [T, B, I], "targets": [B, ...]}``, optionally ``"seq_lengths"``.
      carry: unused (returned as is).

    Returns:
      ``(mse, ({"loss": mse}, carry))``.

    Raises:
      ValueError: outputs and targets of different sizes (the message names both shapes).

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import data, train
      >>> model = train.SequenceRegressor("lstm", 2, 8, rngs=nnx.Rngs(0))
      >>> batch = data.SyntheticTask("adding", batch_size=4, length=10).batch(0)
      >>> loss, (metrics, carry) = regression_loss(model, batch)
      >>> loss.shape, sorted(metrics), carry
      ((), ['loss'], None)
    """
    pred = apply_to_batch(model, batch)
    targets = batch["targets"]
    if pred.shape[0] != targets.shape[0] or pred.size != targets.size:
        raise ValueError(_batch_mismatch(pred, targets, "targets"))
    targets = targets.reshape(pred.shape).astype(pred.dtype)
    mse = jnp.mean(optax.squared_error(pred, targets))
    return mse, ({"loss": mse}, carry)


def classification_loss(model, batch: dict[str, jax.Array], carry: Any = None):
    """Mean cross-entropy of ``model(inputs)`` logits ``[B, C]`` against integer labels.

    Args:
      model: maps ``inputs`` ``[time, batch, features]`` (and ``seq_lengths`` ``[batch]``
        when the batch has them) to logits ``[batch, classes]``.
      batch: ``{"inputs": [T, B, I], "labels": int [B]}`` (or the labels as
        ``"targets"``, as :class:`lstm_jax.data.ArrayBatches` names them), optionally
        ``"seq_lengths"``.
      carry: unused (returned as is).

    Returns:
      ``(loss, ({"loss": loss, "accuracy": acc}, carry))``.

    Raises:
      ValueError: labels that are not one integer per row of the logits.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import train
      >>> model = train.SequenceRegressor("gru", 3, 8, out_size=5, rngs=nnx.Rngs(0))
      >>> batch = {"inputs": jnp.ones((6, 4, 3), jnp.float32), "labels": jnp.arange(4)}
      >>> loss, (metrics, _) = classification_loss(model, batch)
      >>> sorted(metrics), bool(0.0 <= metrics["accuracy"] <= 1.0)
      (['accuracy', 'loss'], True)
    """
    logits = apply_to_batch(model, batch).astype(jnp.float32)
    key = "labels" if "labels" in batch else "targets"
    labels = batch[key]
    if labels.shape != logits.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            _batch_mismatch(logits, labels, key)
            if labels.shape[:1] != logits.shape[:1]
            else f"batch[{key!r}] must be integer class labels [batch] = {logits.shape[:1]}, "
            f"got {labels.dtype} {labels.shape}"
        )
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    correct = jnp.argmax(logits, axis=-1).astype(labels.dtype) == labels
    accuracy = jnp.mean(correct.astype(jnp.float32))
    return loss, ({"loss": loss, "accuracy": accuracy}, carry)


def token_loss(model, batch: dict[str, jax.Array], carry: Any, *, sum_over_time: bool = False):
    """Mean next-token cross-entropy (nats) with the state carried across batches (TBPTT).

    Rows whose ``batch["reset"]`` is true start from a zero state; the new carry leaves
    the loss with its gradient stopped, so backpropagation is truncated at the boundary
    between batches. A :class:`TokenModel`'s read-out and the loss run as one operation,
    :func:`lstm_jax.train.linear_cross_entropy` (the same numbers, a faster gradient).

    Args:
      model: ``model(tokens [T, B], carry) -> (logits [T, B, V], carry)``.
      batch: ``{"inputs": int [T, B], "targets": int [T, B]}`` and optionally
        ``"reset": bool [B]``.
      carry: the state from the previous batch (leaves ``[layers * directions, B, H]``).
      sum_over_time: differentiate the cross-entropy summed over the ``T`` steps and
        averaged over the batch (Zaremba et al. 2014's objective, whose gradient is ``T``
        times the mean's; their learning rate 1 and clip norm 5 are for it). The
        ``"loss"`` metric stays the mean per token either way.

    Returns:
      ``(objective, ({"loss": mean_loss, "accuracy": acc}, new_carry))``.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import train
      >>> model = train.TokenModel("lstm", vocab_size=10, embed_size=4, hidden_size=8,
      ...                          rngs=nnx.Rngs(0))
      >>> tokens = jnp.zeros((5, 3), jnp.int32)  # [T, B]
      >>> batch = {"inputs": tokens, "targets": tokens, "reset": jnp.array([True, False, True])}
      >>> loss, (metrics, carry) = token_loss(model, batch, model.zero_carry(3))
      >>> sorted(metrics), carry[0].shape
      (['accuracy', 'loss'], (1, 3, 8))
    """
    if "reset" in batch:
        carry = reset_carry(carry, batch["reset"])
    targets = batch["targets"]
    if isinstance(model, TokenModel) and type(model).__call__ is TokenModel.__call__:
        # (a subclass with its own call is called as it is)
        features, carry = model.features(batch["inputs"], carry)
        bias = None if model.head.bias is None else model.head.bias[...]
        losses, predictions = linear_cross_entropy(features, model.head.kernel[...], bias, targets)
    else:
        logits, carry = model(batch["inputs"], carry)
        logits = logits.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        predictions = jnp.argmax(logits, axis=-1)
    loss = jnp.mean(losses)
    accuracy = jnp.mean((predictions.astype(targets.dtype) == targets).astype(jnp.float32))
    objective = loss * jnp.float32(losses.shape[0]) if sum_over_time else loss
    return objective, ({"loss": loss, "accuracy": accuracy}, jax.lax.stop_gradient(carry))
