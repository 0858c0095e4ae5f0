"""Batches of a user's own examples, as a pure function of the step.

A dataset held as arrays (``inputs [N, T, ...]``), as a list of sequences of different
lengths (``[T_i, ...]`` each), or as a random-access source (a Grain ``MapDataset``, any
object with ``len`` and ``[i]``) becomes ``batches(step) -> batch``: the step's epoch
seeds that epoch's shuffle, so batch ``step`` is the same whatever ran before it and a
resumed run sees exactly the batches of an uninterrupted one.

Batches are dicts of NumPy arrays: ``"inputs"`` time-major ``[T, B, ...]`` as the
library's models take them (``batch_first=True`` keeps ``[B, T, ...]``), ``"targets"``
``[B, ...]`` (one per example; targets that are sequences, one per step, are laid out like
the inputs), and ``"seq_lengths"`` ``[B]`` for sequences given as a list or a source.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

INPUTS, TARGETS, SEQ_LENGTHS = "inputs", "targets", "seq_lengths"


def _as_example(value: Any, name: str, index: int) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype == object:
        raise ValueError(f"{name}[{index}] is not a numeric array (dtype object)")
    _check_finite(a[None], name, index)
    return a


def _check_finite(a: np.ndarray, name: str, offset: int = 0) -> None:
    """Raises naming the first example of ``a`` (axis 0) with a NaN or an infinity."""
    if not np.issubdtype(a.dtype, np.inexact):
        return
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}[{offset + int(np.argmax(bad))}] holds NaN or infinity; clean or drop that "
            "example (np.isfinite finds the others) before training"
        )


class _Examples:
    """Random access to examples ``(inputs_i, targets_i | None)`` and their lengths."""

    def __init__(self, inputs: Any, targets: Any, lengths: Sequence[int] | None):
        self.source = None
        if isinstance(inputs, np.ndarray | list | tuple) or hasattr(inputs, "__array__"):
            self.inputs = self._collect(inputs, INPUTS)
            self.targets = None if targets is None else self._collect_targets(targets)
            if self.targets is not None and len(self.targets) != len(self.inputs):
                raise ValueError(
                    f"inputs has {len(self.inputs)} examples and targets {len(self.targets)}: "
                    "they must pair one to one (axis 0 of arrays, items of lists)"
                )
        else:
            if targets is not None:
                raise ValueError(
                    "a source gives both parts of each example (an (inputs, targets) pair or "
                    "a dict with 'inputs' and 'targets'): pass no targets beside it"
                )
            if not (hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")):
                raise TypeError(
                    "inputs must be an array [N, T, ...], a list of arrays [T_i, ...], or a "
                    "random-access source with len() and [i] (e.g. a Grain MapDataset); got "
                    f"{type(inputs).__name__}"
                )
            self.source, self.inputs, self.targets = inputs, None, None
        if len(self) == 0:
            raise ValueError("the dataset is empty: inputs has no examples")
        if self.source is None:
            self.sequence_targets = isinstance(self.targets, list)
        else:  # as the first item shows: targets as long as the inputs are per step
            x, y = self.get(0)
            self.sequence_targets = y is not None and y.ndim > 0 and len(y) == len(x)
        if lengths is not None:
            self.lengths = np.asarray(lengths, np.int64)
            if self.lengths.shape != (len(self),):
                raise ValueError(f"lengths must have one entry per example ({len(self)})")
        elif isinstance(self.inputs, np.ndarray):
            self.lengths = np.full(len(self), self.inputs.shape[1], np.int64)
        else:
            self.lengths = np.array([len(self.get(i)[0]) for i in range(len(self))], np.int64)
        if self.lengths.min() < 1:
            first = int(np.argmin(self.lengths >= 1))
            raise ValueError(f"inputs[{first}] has length 0: every sequence needs a step")

    @staticmethod
    def _collect(data: Any, name: str) -> np.ndarray | list[np.ndarray]:
        if isinstance(data, list | tuple):
            examples = [_as_example(x, name, i) for i, x in enumerate(data)]
            for i, x in enumerate(examples):
                if x.ndim == 0 or x.shape[1:] != examples[0].shape[1:]:
                    raise ValueError(
                        f"{name}[{i}] has shape {x.shape}, {name}[0] {examples[0].shape}: "
                        "each sequence is [T_i, ...] with the same step shape"
                    )
            return examples
        array = np.asarray(data)
        if len(array) == 0:
            raise ValueError(f"the dataset is empty: {name} has no examples")
        if array.ndim < (2 if name == INPUTS else 1):
            raise ValueError(
                f"{name} must be [N, T, ...] (examples, then time), got shape {array.shape}"
                if name == INPUTS
                else f"{name} must have an examples axis, got a scalar"
            )
        _check_finite(array, name)
        return array

    def _collect_targets(self, targets: Any) -> np.ndarray | list[np.ndarray]:
        """Sequences (a list pairing each input sequence with one as long), else ``[N, ...]``."""
        if isinstance(targets, list | tuple) and isinstance(self.inputs, list):
            items = [np.asarray(y) for y in targets]
            if len(items) == len(self.inputs) and all(
                y.ndim and len(y) == len(x) for x, y in zip(self.inputs, items, strict=True)
            ):
                return self._collect(items, TARGETS)
        return self._collect(np.asarray(targets), TARGETS)

    def __len__(self) -> int:
        return len(self.source) if self.source is not None else len(self.inputs)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.source is None:
            return self.inputs[i], None if self.targets is None else self.targets[i]
        item = self.source[int(i)]
        if isinstance(item, dict):
            x, y = item[INPUTS], item.get(TARGETS)
        elif isinstance(item, tuple | list) and len(item) == 2:
            x, y = item
        else:
            x, y = item, None
        x = _as_example(x, "source inputs", i)
        return x, None if y is None else _as_example(y, "source targets", i)


class Batch(dict):
    """A batch: a dict of arrays that declares each one's batch axis in ``batch_axes``.

    Training code shards each array along that axis (time-major inputs on axis 1,
    per-example targets on axis 0), where a plain dict's arrays are all taken as
    time-major.
    """

    batch_axes: dict[str, int]


def _pad(examples: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(examples), length, *examples[0].shape[1:]), examples[0].dtype)
    for row, x in enumerate(examples):
        out[row, : len(x)] = x
    return out


def _bucket_bounds(lengths: np.ndarray, buckets: int | Sequence[int] | None) -> np.ndarray:
    """Upper length bound of each bucket, ascending; the last is the longest sequence."""
    longest = int(lengths.max())
    if buckets is None:
        return np.array([longest])
    if isinstance(buckets, int):
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        bounds = np.quantile(lengths, np.arange(1, buckets + 1) / buckets, method="higher")
    else:
        bounds = np.asarray(sorted(buckets))
        if bounds.size == 0 or bounds.min() < 1:
            raise ValueError(f"bucket bounds must be lengths >= 1, got {list(buckets)}")
    return np.unique(np.append(bounds[bounds < longest], longest)).astype(np.int64)


class ArrayBatches:
    """A user's examples as ``batches(step) -> batch``, shuffled per epoch with a seed.

    Examples are along axis 0 of ``inputs`` (``[N, T, ...]``) or are the items of a list of
    ``[T_i, ...]`` arrays of different lengths, or of a random-access source (a Grain
    ``MapDataset`` or any object with ``len`` and ``[i]`` whose items are ``(inputs,
    targets)`` pairs or dicts with those keys). Each epoch is a seeded permutation
    (``numpy.random.default_rng([seed, epoch])``), so batch ``step`` depends on
    ``(seed, step)`` only: :func:`lstm_jax.train.fit` resumes bit for bit.

    Sequences of different lengths are padded with zeros to their bucket's bound and the
    batch gains ``"seq_lengths"``. Without ``buckets`` every batch is padded to the longest
    sequence (one shape: one compilation); ``buckets=k`` groups the sequences by length
    into ``k`` buckets of equal count (or ``buckets=[20, 50, ...]`` gives the bounds), each
    batch drawn from one bucket: less padding, one compilation per bucket.

    Args:
      inputs: ``[N, T, ...]`` array, list of ``[T_i, ...]`` arrays, or a source.
      targets: ``[N, ...]`` array (one per example), list of ``[T_i, ...]`` arrays as long
        as their inputs (one per step: padded and laid out like the inputs), or ``None``
        (a source carries its own; per step when its first item's are as long as its
        inputs).
      batch_size: examples per batch.
      shuffle: a new seeded order every epoch (off: the data's order, for evaluation).
      seed: the shuffle's seed.
      drop_last: drop each epoch's last partial batch (kept by default: a smaller batch,
        one more compilation).
      buckets: ``None``, a count, or ascending length bounds (see above).
      batch_first: keep inputs ``[B, T, ...]`` instead of time-major ``[T, B, ...]``.
      lengths: each example's length, to spare a source one pass over its items.

    Attributes:
      steps_per_epoch: the number of batches in an epoch.

    Raises:
      ValueError: inputs and targets of different counts, an empty dataset, a batch size
        larger than the data, a sequence of length 0, NaN or infinity (each naming the
        first bad example's index).

    Example:
      >>> import numpy as np
      >>> from lstm_jax import data
      >>> x, y = np.ones((10, 7, 3), np.float32), np.arange(10)
      >>> batches = data.ArrayBatches(x, y, batch_size=4, seed=0)
      >>> batches.steps_per_epoch, batches(0)["inputs"].shape, batches(2)["targets"].shape
      (3, (7, 4, 3), (2,))
      >>> seqs = [np.ones((n, 2), np.float32) for n in (3, 5, 4)]
      >>> b = data.ArrayBatches(seqs, [0, 1, 0], batch_size=3, shuffle=False)(0)
      >>> b["inputs"].shape, b["seq_lengths"].tolist()
      ((5, 3, 2), [3, 5, 4])
    """

    def __init__(
        self,
        inputs: Any,
        targets: Any = None,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        buckets: int | Sequence[int] | None = None,
        batch_first: bool = False,
        lengths: Sequence[int] | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.examples = _Examples(inputs, targets, lengths)
        n = len(self.examples)
        if batch_size > n:
            raise ValueError(
                f"batch_size {batch_size} is larger than the dataset ({n} examples): "
                f"use batch_size <= {n}"
            )
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.batch_first = drop_last, batch_first
        lengths = self.examples.lengths
        # sequences (a list, a source) get seq_lengths; an array's rows share its length
        self.variable_length = not isinstance(self.examples.inputs, np.ndarray)
        self.bounds = _bucket_bounds(lengths, buckets)
        self.bucket_of = np.searchsorted(self.bounds, lengths)
        sizes = np.bincount(self.bucket_of, minlength=len(self.bounds))
        per_bucket = sizes // batch_size if drop_last else -(-sizes // batch_size)
        self.steps_per_epoch = int(per_bucket.sum())
        self._plan: tuple[int, tuple[np.ndarray, ...]] = (-1, ())
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"with drop_last, no bucket holds a full batch of {batch_size}: use fewer "
                "buckets or a smaller batch_size"
            )

    def __len__(self) -> int:
        """The number of examples."""
        return len(self.examples)

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, ...]:
        """The example indices of each batch of ``epoch``, in the order they are drawn."""
        if self._plan[0] != epoch:
            self._plan = (epoch, self._make_plan(epoch))
        return self._plan[1]

    def _make_plan(self, epoch: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        plan = []
        for bucket in range(len(self.bounds)):
            members = np.flatnonzero(self.bucket_of == bucket)
            if rng is not None:
                members = rng.permutation(members)
            stop = len(members) - len(members) % self.batch_size if self.drop_last else len(members)
            plan += [members[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]
        if rng is not None and len(self.bounds) > 1:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        return tuple(plan)

    def __call__(self, step: int) -> Batch:
        """Batch ``step`` (of epoch ``step // steps_per_epoch``)."""
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        epoch, index = divmod(int(step), self.steps_per_epoch)
        return self.batch(self.epoch_plan(epoch)[index])

    def in_order(self) -> Iterator[Batch]:
        """Every example once, in batches (the last one partial), for evaluation."""
        for bucket in range(len(self.bounds)):
            members = np.flatnonzero(self.bucket_of == bucket)
            for i in range(0, len(members), self.batch_size):
                yield self.batch(members[i : i + self.batch_size])

    def batch(self, indices: np.ndarray) -> Batch:
        """The batch of the examples at ``indices``, padded to their bucket's bound."""
        pairs = [self.examples.get(i) for i in indices]
        xs = [x for x, _ in pairs]
        out = Batch()
        out.batch_axes = {INPUTS: self._batch_axis, SEQ_LENGTHS: 0, TARGETS: 0}
        length = int(self.bounds[self.bucket_of[indices[0]]])
        if self.variable_length:
            out[INPUTS] = self._layout(_pad(xs, length))
            out[SEQ_LENGTHS] = self.examples.lengths[indices].astype(np.int32)
        else:
            out[INPUTS] = self._layout(np.stack(xs))
        if pairs[0][1] is not None:
            ys = [y for _, y in pairs]
            if not self.examples.sequence_targets:
                out[TARGETS] = np.stack(ys)  # one per example: [B, ...]
            else:  # sequences, laid out like the inputs
                longest = max(len(y) for y in ys)
                out[TARGETS] = self._layout(_pad(ys, max(length, longest)))
                out.batch_axes[TARGETS] = self._batch_axis
        return out

    @property
    def _batch_axis(self) -> int:
        return 0 if self.batch_first else 1

    def _layout(self, padded: np.ndarray) -> np.ndarray:
        """``[B, T, ...]`` to the batch's layout (time-major unless ``batch_first``)."""
        return padded if self.batch_first else np.swapaxes(padded, 0, 1)

    def epochs(self, steps: int) -> float:
        """How many epochs ``steps`` batches are.

        Example:
          >>> ArrayBatches(np.zeros((10, 2, 1)), batch_size=5).epochs(3)
          1.5
        """
        return steps / self.steps_per_epoch


def steps_for_epochs(batches: Any, epochs: int) -> int:
    """``epochs * batches.steps_per_epoch``, naming what is missing for other batches.

    Example:
      >>> steps_for_epochs(ArrayBatches(np.zeros((10, 2, 1)), batch_size=4), 2)
      6
    """
    per_epoch = getattr(batches, "steps_per_epoch", None)
    if per_epoch is None:
        raise ValueError(
            "epochs needs batches that know their epoch (data.ArrayBatches); for a function "
            "of the step, pass steps instead"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    return epochs * per_epoch
