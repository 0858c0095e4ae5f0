"""Predictions for a whole dataset, batched, in the input's order and without padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from lstm_jax._src.data.arrays import INPUTS, SEQ_LENGTHS, ArrayBatches
from lstm_jax._src.train.losses import apply_to_batch


def predict(
    model: nnx.Module,
    inputs: Any,
    *,
    batch_size: int = 256,
    buckets: int | Sequence[int] | None = None,
    per_step: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """``model``'s outputs for every example of ``inputs``, in order, in inference mode.

    The examples are batched as :class:`lstm_jax.data.ArrayBatches` batches them (time-major,
    sequences padded with their ``seq_lengths``, by bucket with ``buckets``); the last
    batch of each bucket is padded to ``batch_size`` rows, so each bucket compiles once.
    ``model`` is called as in training (``model(inputs, seq_lengths=...)`` for sequences),
    on a copy in evaluation mode (dropout off); ``model`` itself is left as it was.

    Args:
      model: an NNX model mapping a batch's inputs to ``[batch, ...]`` outputs, or to
        ``[time, batch, ...]`` with ``per_step`` (of ``(output, state)``, as
        ``lstm_jax.LSTM`` returns, the output).
      inputs: ``[N, T, ...]`` array, list of ``[T_i, ...]`` arrays, or a random-access
        source (see :class:`lstm_jax.data.ArrayBatches`).
      batch_size: rows per call.
      buckets: group sequences by length (see :class:`lstm_jax.data.ArrayBatches`).
      per_step: the model returns one output per step (time-major): each example gets
        its valid steps only.

    Returns:
      ``[N, ...]`` (one output per example); with ``per_step``, ``[N, T, ...]`` for array
      inputs and a list of ``[T_i, ...]`` arrays for sequences.

    Example:
      >>> import numpy as np
      >>> from flax import nnx
      >>> from lstm_jax import train
      >>> model = train.SequenceRegressor("lstm", 1, 8, out_size=3, rngs=nnx.Rngs(0))
      >>> seqs = [np.ones((n, 1), np.float32) for n in (4, 9, 2)]
      >>> predict(model, seqs, batch_size=2).shape
      (3, 3)
    """
    n = len(inputs)
    batches = ArrayBatches(inputs, batch_size=min(batch_size, n), shuffle=False, buckets=buckets)
    copy = nnx.clone(model)  # evaluation mode without touching the caller's module
    copy.eval()
    graphdef, state = nnx.split(copy)

    @jax.jit
    def run(state, batch):
        outputs = apply_to_batch(nnx.merge(graphdef, state), batch)
        return outputs[0] if isinstance(outputs, tuple) else outputs  # (output, h_n) modules

    results: list[Any] = [None] * n
    for bucket in range(len(batches.bounds)):
        members = np.flatnonzero(batches.bucket_of == bucket)
        for start in range(0, len(members), batches.batch_size):
            chunk = members[start : start + batches.batch_size]
            padded = np.resize(chunk, batches.batch_size)  # a full batch: one compilation
            batch = batches.batch(padded)
            outputs = np.asarray(
                run(state, {k: batch[k] for k in (INPUTS, SEQ_LENGTHS) if k in batch})
            )
            for row, index in enumerate(chunk):
                if per_step:
                    steps = int(batches.examples.lengths[index])
                    results[index] = outputs[:steps, row]
                else:
                    results[index] = outputs[row]
    if per_step and batches.variable_length:
        return results
    return np.stack(results)
