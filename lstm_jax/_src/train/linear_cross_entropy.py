"""A linear read-out and its softmax cross-entropy as one operation, with a written-out VJP.

A language model's last layer maps ``[tokens, features]`` to ``[tokens, vocab]`` logits
and its loss reduces them again; at a word-level vocabulary that pair is most of a small
model's step. Composed from ``nnx.Linear`` and optax, autodiff materialises the logits'
log-softmax or its gradient through a scatter of the labels into a zero array; here the
forward keeps only the logits and their log-normaliser, and the backward forms the logits'
gradient ``softmax - one_hot`` in one elementwise pass that feeds the three gradient
products (features, kernel, bias).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lstm_jax._src import compat, custom_calls


def linear_cross_entropy(
    features: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    labels: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Per-token cross-entropy of ``features @ kernel + bias`` against integer labels.

    Equal to ``optax.softmax_cross_entropy_with_integer_labels(features @ kernel + bias,
    labels)`` and to ``torch.nn.functional.cross_entropy(..., reduction="none")`` of
    ``nn.Linear``'s output, with the same gradients; faster to differentiate, since the
    backward builds the logits' gradient in one pass. The logits are computed in at least
    float32 whatever the inputs' dtype; gradients come back in the inputs' dtypes. The
    kernel is in ``nnx.Linear``'s layout, ``[features, vocab]`` (torch's
    ``nn.Linear.weight`` is its transpose). Also returns the most likely token of each
    row, for an accuracy metric without a second pass over the logits.

    A label outside ``[0, vocab)`` gives a NaN loss and a NaN gradient row (torch raises
    there; a jitted function cannot), so a training loop's non-finite check stops on it.
    Differentiable in reverse mode to any order (``jax.grad`` of ``jax.grad``); forward
    mode (``jax.jvp``, ``jax.hessian``) is not defined for it. Composes with ``jit``,
    ``vmap``, ``jax.export``, rows sharded over a mesh under ``jit`` (each device computes
    its own rows; the weights' gradients are summed across them) and ``jax.shard_map``.

    Args:
      features: ``[..., features]``, e.g. an LSTM's output ``[time, batch, hidden_size]``.
      kernel: ``[features, vocab]``.
      bias: ``[vocab]`` or ``None``.
      labels: int ``[...]``, the target token of each row of ``features``.

    Returns:
      ``(losses [...], predictions int32 [...])``: the cross-entropy in nats and the
      argmax of each row's logits.

    Raises:
      ValueError: shapes that do not fit together, or labels that are not integers.

    Example:
      >>> from lstm_jax import train
      >>> features, kernel = jnp.ones((5, 3, 8)), jnp.zeros((8, 10))
      >>> losses, predictions = train.linear_cross_entropy(
      ...     features, kernel, jnp.zeros(10), jnp.zeros((5, 3), jnp.int32))
      >>> losses.shape, round(float(losses[0, 0]), 4), predictions.dtype  # log(10)
      ((5, 3), 2.3026, dtype('int32'))
    """
    features, kernel, labels = jnp.asarray(features), jnp.asarray(kernel), jnp.asarray(labels)
    _check(features, kernel, bias, labels)
    bias = None if bias is None else jnp.asarray(bias)
    # the widest of the inputs' float types (explicitly: strict promotion has no bf16 + f32)
    dtype = max(
        (a.dtype for a in (features, kernel, *(() if bias is None else (bias,)))),
        key=lambda t: t.itemsize,
    )
    # Inside jax.shard_map the weights vary over the rows' axes too, so that their
    # gradients, summed per shard here, are summed across shards by pvary's transpose.
    rows_axes = compat.vma(features)
    kernel = compat.pvary(kernel.astype(dtype), rows_axes)
    features, labels = features.astype(dtype), labels.astype(jnp.int32)
    # The rows keep their axes: merging a sharded batch axis with time would make every
    # device compute every row's logits.
    if bias is None:
        return _no_bias(features, kernel, labels)
    return _with_bias(features, kernel, compat.pvary(bias.astype(dtype), rows_axes), labels)


def _check(features, kernel, bias, labels) -> None:
    if kernel.ndim != 2 or features.ndim < 1 or features.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"features [..., F] and kernel [F, vocab] must share F, got features "
            f"{features.shape} and kernel {kernel.shape}"
        )
    if bias is not None and jnp.shape(bias) != kernel.shape[1:]:
        raise ValueError(f"bias must be [vocab] = {kernel.shape[1:]}, got {jnp.shape(bias)}")
    if labels.shape != features.shape[:-1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integers of shape features.shape[:-1] = {features.shape[:-1]}, "
            f"got {labels.dtype} {labels.shape}"
        )


def _forward(features, kernel, bias, labels):
    """``(losses, predictions), residuals`` of rows ``[..., F]``; ``bias`` may be ``None``."""
    accumulate = jnp.float64 if features.dtype == jnp.float64 else jnp.float32
    logits = compat.einsum("...f,fv->...v", features, kernel, preferred_element_type=accumulate)
    if bias is not None:
        logits = logits + jnp.expand_dims(bias.astype(accumulate), tuple(range(logits.ndim - 1)))
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)
    valid = (labels >= 0) & (labels < logits.shape[-1])
    safe = jnp.where(valid, labels, 0)[..., None]
    picked = jnp.take_along_axis(logits, safe, axis=-1)[..., 0]
    losses = jnp.where(valid, log_normaliser - picked, jnp.nan)
    predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return (losses, predictions), (features, kernel, logits, log_normaliser, labels, valid)


def _backward(residuals, cotangents, with_bias: bool):
    """The gradients of ``sum(cotangent * losses)``: ``(d_features, d_kernel, d_bias)``
    (``d_bias`` ``None`` unless ``with_bias``)."""
    features, kernel, logits, log_normaliser, labels, valid = residuals
    loss_cotangent = cotangents[0]  # the predictions' (float0) cotangent is unused
    # [1, ..., 1, vocab]: a whole [..., vocab] iota would not be split with the rows
    vocab = jnp.arange(logits.shape[-1], dtype=jnp.int32).reshape((1,) * labels.ndim + (-1,))
    one_hot = (vocab == labels[..., None]).astype(logits.dtype)
    softmax = jnp.exp(logits - log_normaliser[..., None])
    d_logits = jnp.where(valid[..., None], softmax - one_hot, jnp.nan) * loss_cotangent[..., None]
    d_features = compat.einsum("...v,fv->...f", d_logits, kernel.astype(d_logits.dtype))
    # The bias's gradient, a sum over rows, comes out of the kernel's product through a
    # column of ones: every use of d_logits is then a product, and XLA:CPU forms d_logits
    # once (a separate row sum made it form the softmax and d_logits twice: 1.16x slower).
    inputs = features.astype(d_logits.dtype)
    if with_bias:
        inputs = jnp.concatenate([inputs, jnp.ones_like(inputs[..., :1])], axis=-1)
    d_weights = compat.einsum(
        "...f,...v->fv", inputs, d_logits, **custom_calls.summed_out_sharding(features)
    )
    d_kernel = d_weights[: kernel.shape[0]].astype(kernel.dtype)
    d_bias = d_weights[kernel.shape[0]] if with_bias else None
    return d_features.astype(features.dtype), d_kernel, d_bias


@jax.custom_vjp
def _with_bias(features, kernel, bias, labels):
    return _forward(features, kernel, bias, labels)[0]


def _with_bias_fwd(features, kernel, bias, labels):
    return _forward(features, kernel, bias, labels)


def _with_bias_bwd(residuals, cotangents):
    d_features, d_kernel, d_bias = _backward(residuals, cotangents, with_bias=True)
    return d_features, d_kernel, d_bias.astype(residuals[0].dtype), None


_with_bias.defvjp(_with_bias_fwd, _with_bias_bwd)


@jax.custom_vjp
def _no_bias(features, kernel, labels):
    return _forward(features, kernel, None, labels)[0]


def _no_bias_fwd(features, kernel, labels):
    return _forward(features, kernel, None, labels)


def _no_bias_bwd(residuals, cotangents):
    d_features, d_kernel, _ = _backward(residuals, cotangents, with_bias=False)
    return d_features, d_kernel, None


_no_bias.defvjp(_no_bias_fwd, _no_bias_bwd)
