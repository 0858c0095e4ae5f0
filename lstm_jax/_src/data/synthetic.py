"""Synthetic long-memory tasks, generated on the fly as a pure function of ``(seed, step)``.

Every batch is drawn from ``numpy.random.default_rng([seed, step])``, so batch ``step`` is
the same whatever happened before it: a resumed run sees exactly the batches an
uninterrupted run would have seen, with no iterator state beyond the step counter.

Batches are dicts of NumPy arrays, time-major like :class:`lstm_jax.LSTM`'s input.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: MSE of always predicting 1.0, the mean of the target: Var(U(0,1) + U(0,1)) = 1/6.
ADDING_BASELINE_MSE = 1.0 / 6.0

#: Copy task alphabet (Arjovsky et al. 2016): data symbols ``0..7``, blank 8, delimiter 9.
COPY_NUM_SYMBOLS = 8
COPY_BLANK = 8
COPY_DELIMITER = 9
COPY_VOCAB_SIZE = 10
COPY_LENGTH = 10

#: Lookahead task: data symbols ``0..7``; target symbol 8 marks the last ``k`` steps.
LOOKAHEAD_NUM_SYMBOLS = 8
LOOKAHEAD_END = 8
LOOKAHEAD_VOCAB_SIZE = 9
LOOKAHEAD_DEFAULT_K = 5


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The NumPy generator for batch ``step`` of a stream seeded with ``seed``.

    Example:
      >>> float(step_rng(0, 3).uniform()) == float(step_rng(0, 3).uniform())
      True
    """
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got seed={seed}, step={step}")
    return np.random.default_rng([int(seed), int(step)])


def adding_problem(
    rng: np.random.Generator, batch_size: int, length: int, dtype=np.float32
) -> dict[str, np.ndarray]:
    """One batch of the adding problem (Hochreiter & Schmidhuber 1997, experiment 4).

    Each sequence has two channels: values drawn from U(0, 1) and a marker that is 1 at
    two positions, one in the first half and one in the second half, and 0 elsewhere.
    The target is the sum of the two marked values. Predicting the mean, 1.0, scores
    :data:`ADDING_BASELINE_MSE` = 1/6 ≈ 0.167; solving the task needs memory of the first
    marked value across up to ``length`` steps.

    Args:
      rng: the generator (see :func:`step_rng`).
      batch_size: ``B``.
      length: ``T`` >= 2.
      dtype: dtype of both arrays.

    Returns:
      ``{"inputs": [T, B, 2], "targets": [B]}``.

    Example:
      >>> b = adding_problem(step_rng(0, 0), batch_size=4, length=10)
      >>> b["inputs"].shape, b["targets"].shape, b["inputs"][:, :, 1].sum(0).tolist()
      ((10, 4, 2), (4,), [2.0, 2.0, 2.0, 2.0])
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    values = rng.uniform(0.0, 1.0, size=(length, batch_size))
    half = length // 2
    first = rng.integers(0, half, size=batch_size)
    second = rng.integers(half, length, size=batch_size)
    markers = np.zeros((length, batch_size))
    cols = np.arange(batch_size)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    inputs = np.stack([values, markers], axis=-1).astype(dtype)
    targets = (values * markers).sum(axis=0).astype(dtype)
    return {"inputs": inputs, "targets": targets}


def copy_task_baseline(length: int) -> float:
    """Cross-entropy per step of the memoryless strategy: ``10 log 8 / (T + 20)``.

    Predict the blank for the first ``T + 10`` steps, then a uniform guess over the 8
    data symbols for the last 10.

    Example:
      >>> round(copy_task_baseline(100), 4)
      0.1733
    """
    return COPY_LENGTH * math.log(COPY_NUM_SYMBOLS) / (length + 2 * COPY_LENGTH)


def copy_task(rng: np.random.Generator, batch_size: int, length: int) -> dict[str, np.ndarray]:
    """One batch of the copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    The input is 10 symbols from ``0..7``, then ``length - 1`` blanks (8), the delimiter
    (9) and 10 more blanks: ``T + 20`` steps. The target is blank everywhere except the
    last 10 steps, which must repeat the first 10 input symbols.

    Args:
      rng: the generator (see :func:`step_rng`).
      batch_size: ``B``.
      length: ``T`` >= 1, the delay between the data and the recall.

    Returns:
      ``{"inputs": int32 [T + 20, B], "targets": int32 [T + 20, B]}``.

    Example:
      >>> b = copy_task(step_rng(0, 0), batch_size=2, length=5)
      >>> b["inputs"].shape, bool((b["inputs"][:10] == b["targets"][-10:]).all())
      ((25, 2), True)
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    total = length + 2 * COPY_LENGTH
    data = rng.integers(0, COPY_NUM_SYMBOLS, size=(COPY_LENGTH, batch_size))
    inputs = np.full((total, batch_size), COPY_BLANK, dtype=np.int32)
    inputs[:COPY_LENGTH] = data
    inputs[length + COPY_LENGTH - 1] = COPY_DELIMITER
    targets = np.full((total, batch_size), COPY_BLANK, dtype=np.int32)
    targets[-COPY_LENGTH:] = data
    return {"inputs": inputs, "targets": targets}


def lookahead_task(
    rng: np.random.Generator, batch_size: int, length: int, k: int = LOOKAHEAD_DEFAULT_K
) -> dict[str, np.ndarray]:
    """One batch of the lookahead task: at each step, name the symbol ``k`` steps ahead.

    The input is ``length`` symbols drawn uniformly from ``0..7``; the target at step
    ``t`` is the input at step ``t + k``, and the end marker 8 for the last ``k`` steps.
    The answer at step ``t`` depends on later inputs only, so a model that reads
    forwards (causally) cannot beat a uniform guess over the 8 symbols before the last
    ``k`` steps (:func:`lookahead_baseline`), while a bidirectional one needs only ``k``
    steps of memory in its backward direction (Schuster & Paliwal 1997).

    Args:
      rng: the generator (see :func:`step_rng`).
      batch_size: ``B``.
      length: ``T`` > ``k``.
      k: how far ahead, ``>= 1``.

    Returns:
      ``{"inputs": int32 [T, B], "targets": int32 [T, B]}``.

    Example:
      >>> b = lookahead_task(step_rng(0, 0), batch_size=2, length=12, k=3)
      >>> bool((b["targets"][:-3] == b["inputs"][3:]).all()), b["targets"][-3:, 0].tolist()
      (True, [8, 8, 8])
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if length <= k:
        raise ValueError(f"length must be > k = {k}, got {length}")
    inputs = rng.integers(0, LOOKAHEAD_NUM_SYMBOLS, size=(length, batch_size)).astype(np.int32)
    targets = np.full((length, batch_size), LOOKAHEAD_END, dtype=np.int32)
    targets[:-k] = inputs[k:]
    return {"inputs": inputs, "targets": targets}


def lookahead_baseline(length: int, k: int = LOOKAHEAD_DEFAULT_K) -> float:
    """Cross-entropy per step of the best causal model: ``(T - k) log 8 / T``.

    A uniform guess while the target is still to come, the end marker (with certainty,
    given the position) for the last ``k`` steps.

    Example:
      >>> round(lookahead_baseline(100, 5), 4)
      1.9755
    """
    return (length - k) * math.log(LOOKAHEAD_NUM_SYMBOLS) / length


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """An endless stream of a synthetic task; batch ``step`` is a pure function of it.

    Attributes:
      name: ``"adding"``, ``"copy"`` or ``"lookahead"`` (with ``k``).
      batch_size: ``B``.
      length: ``T``.
      seed: stream seed; evaluation streams use a different seed from training.
      k: the lookahead task's distance (ignored by the others).

    Example:
      >>> task = SyntheticTask("adding", batch_size=8, length=20, seed=1)
      >>> task.batch(5)["inputs"].shape, task.baseline == ADDING_BASELINE_MSE
      ((20, 8, 2), True)
    """

    name: str
    batch_size: int
    length: int
    seed: int = 0
    k: int = LOOKAHEAD_DEFAULT_K

    def __post_init__(self):
        if self.name not in ("adding", "copy", "lookahead"):
            raise ValueError(
                f"task name must be 'adding', 'copy' or 'lookahead', got {self.name!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def baseline(self) -> float:
        """The memoryless loss the task is measured against."""
        if self.name == "adding":
            return ADDING_BASELINE_MSE
        if self.name == "lookahead":
            return lookahead_baseline(self.length, self.k)
        return copy_task_baseline(self.length)

    @property
    def vocab_size(self) -> int | None:
        """Symbols of a token task's inputs and targets (``None`` for adding)."""
        return {"copy": COPY_VOCAB_SIZE, "lookahead": LOOKAHEAD_VOCAB_SIZE}.get(self.name)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch number ``step`` (any ``step >= 0``, in any order)."""
        rng = step_rng(self.seed, step)
        if self.name == "adding":
            return adding_problem(rng, self.batch_size, self.length)
        if self.name == "lookahead":
            return lookahead_task(rng, self.batch_size, self.length, self.k)
        return copy_task(rng, self.batch_size, self.length)


#: The classes of :func:`waveform_dataset`, in label order.
WAVEFORM_CLASSES = ("sine", "square", "sawtooth")


def waveform_dataset(
    num_examples: int,
    *,
    min_length: int = 20,
    max_length: int = 100,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """A variable-length classification dataset: which waveform is hidden in the noise.

    Each example is a sine, square or sawtooth wave (label 0, 1, 2: :data:`WAVEFORM_CLASSES`)
    with a random period (8 to 24 steps), phase and amplitude (0.5 to 1.5), plus Gaussian
    noise, over a random number of steps in ``[min_length, max_length]``. Telling the
    classes apart needs the shape of several periods, not one value, and the lengths differ:
    the task of a classifier with ``seq_lengths``.

    Args:
      num_examples: ``N``.
      min_length: the shortest sequence, >= 2.
      max_length: the longest sequence.
      noise: the noise's standard deviation.
      seed: the generator's seed; the dataset is a pure function of the arguments.

    Returns:
      ``(sequences, labels)``: ``N`` float32 arrays ``[T_i, 1]`` and int32 labels ``[N]``.

    Example:
      >>> xs, ys = waveform_dataset(4, min_length=5, max_length=9, seed=0)
      >>> [x.shape[1] for x in xs], all(5 <= len(x) <= 9 for x in xs), ys.dtype
      ([1, 1, 1, 1], True, dtype('int32'))
    """
    if not 2 <= min_length <= max_length:
        raise ValueError(
            f"need 2 <= min_length <= max_length, got min_length={min_length}, "
            f"max_length={max_length}"
        )
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(WAVEFORM_CLASSES), num_examples).astype(np.int32)
    sequences = []
    for label in labels:
        t = np.arange(rng.integers(min_length, max_length + 1))
        cycles = t / rng.uniform(8, 24) + rng.uniform(0, 1)
        phase = cycles - np.floor(cycles)
        wave = (
            np.sin(2 * np.pi * cycles),
            np.where(phase < 0.5, 1.0, -1.0),
            2 * phase - 1,
        )[label]
        x = rng.uniform(0.5, 1.5) * wave + noise * rng.standard_normal(len(t))
        sequences.append(x.astype(np.float32)[:, None])
    return sequences, labels
