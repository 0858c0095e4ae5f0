"""Early stopping, the best step and the learning rate's reductions on a plateau, decided
from the history of one logged metric.

All are pure functions of the values logged so far, so a resumed run, which reads its
history back from ``metrics.jsonl``, decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

MODES = ("min", "max")


def _improves(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Whether ``value`` improves on ``best`` (none yet: any value but NaN does)."""
    if math.isnan(value):
        return False
    sign = 1.0 if mode == "min" else -1.0
    return best is None or sign * (best - value) > min_delta


def _is_count(value, minimum: int) -> bool:
    """An ``int`` (not a ``bool``) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_mode_and_min_delta(mode: str, min_delta: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop training once ``monitor`` has not improved for ``patience`` of its logs.

    Keras's ``EarlyStopping``: a value improves on the best so far when it is lower by
    more than ``min_delta`` (``mode="min"``) or higher by more than ``min_delta``
    (``"max"``). ``monitor`` is any metric :func:`lstm_jax.train.fit` logs (``"eval/loss"``
    after every evaluation, ``"train/loss"`` every ``log_every`` steps, ...). With
    ``restore_best=True``, ``fit`` ends on the parameters of the best value's step.

    Attributes:
      monitor: the metric's name in ``metrics.jsonl``.
      patience: logs without improvement before stopping; ``None`` never stops (the best
        step is still tracked, e.g. for ``restore_best``).
      min_delta: the smallest change that counts as an improvement, >= 0.
      mode: ``"min"`` (losses) or ``"max"`` (accuracies).

    Example:
      >>> stop = EarlyStopping("eval/loss", patience=2)
      >>> stop.best_index([3.0, 2.0, 2.5, 2.1]), stop.should_stop([3.0, 2.0, 2.5, 2.1])
      (1, True)
    """

    monitor: str = "eval/loss"
    patience: int | None = 5
    min_delta: float = 0.0
    mode: str = "min"

    def __post_init__(self):
        _check_mode_and_min_delta(self.mode, self.min_delta)
        if self.patience is not None and not _is_count(self.patience, 1):
            raise ValueError(f"patience must be an integer >= 1 or None, got {self.patience!r}")

    def best_index(self, values: Sequence[float]) -> int | None:
        """The index of the best value (the first of equals; NaN never counts), or ``None``."""
        best, best_value = None, None
        for i, value in enumerate(values):
            if _improves(value, best_value, self.mode, self.min_delta):
                best, best_value = i, value
        return best

    def should_stop(self, values: Sequence[float]) -> bool:
        """True when the last ``patience`` values brought no improvement."""
        if self.patience is None or not values:
            return False
        best = self.best_index(values)
        return len(values) - 1 - (-1 if best is None else best) >= self.patience


@dataclasses.dataclass(frozen=True)
class ReduceOnPlateau:
    """Multiply the learning rate by ``factor`` each time ``monitor`` has not improved for
    ``patience`` of its logs; stop once it has been cut ``max_reductions`` times and the
    next plateau comes.

    Keras's ``ReduceLROnPlateau`` (without cooldown) and the "divide by 4 when validation
    stops improving" of torch's word-language-model example: after each reduction the
    count of logs without improvement starts again; an improvement is as in
    :class:`EarlyStopping` (lower by more than ``min_delta`` for ``mode="min"``).

    Attributes:
      monitor: the metric's name in ``metrics.jsonl``, e.g. ``"eval/loss"``.
      patience: logs without improvement before each reduction, >= 1.
      factor: the multiplier of each reduction, in (0, 1).
      min_delta: the smallest change that counts as an improvement, >= 0.
      mode: ``"min"`` or ``"max"``.
      max_reductions: the run stops at the plateau after this many reductions; ``None``
        never stops.

    Example:
      >>> plateau = ReduceOnPlateau("eval/loss", patience=2, factor=0.5)
      >>> plateau.reductions([3.0, 2.0, 2.5, 2.1, 1.0, 1.5, 1.2, 1.1])
      2
      >>> plateau.scale([3.0, 2.0, 2.5, 2.1, 1.0, 1.5, 1.2, 1.1])
      0.25
    """

    monitor: str = "eval/loss"
    patience: int = 1
    factor: float = 0.25
    min_delta: float = 0.0
    mode: str = "min"
    max_reductions: int | None = None

    def __post_init__(self):
        _check_mode_and_min_delta(self.mode, self.min_delta)
        if not _is_count(self.patience, 1):
            raise ValueError(f"patience must be an integer >= 1, got {self.patience!r}")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor!r}")
        if self.max_reductions is not None and not _is_count(self.max_reductions, 0):
            raise ValueError(
                f"max_reductions must be an integer >= 0 or None, got {self.max_reductions!r}"
            )

    def _plateaus(self, values: Sequence[float]) -> int:
        """The plateaus reached in ``values``: every ``patience`` logs in a row without an
        improvement on the best so far."""
        best, waited, plateaus = None, 0, 0
        for value in values:
            if _improves(value, best, self.mode, self.min_delta):
                best, waited = value, 0
                continue
            waited += 1
            if waited >= self.patience:
                plateaus, waited = plateaus + 1, 0
        return plateaus

    def reductions(self, values: Sequence[float]) -> int:
        """How many times the learning rate has been cut after ``values``."""
        plateaus = self._plateaus(values)
        return plateaus if self.max_reductions is None else min(plateaus, self.max_reductions)

    def scale(self, values: Sequence[float]) -> float:
        """The learning rate's multiplier after ``values``: ``factor ** reductions``."""
        return self.factor ** self.reductions(values)

    def should_stop(self, values: Sequence[float]) -> bool:
        """True at the plateau that follows the last allowed reduction."""
        return self.max_reductions is not None and self._plateaus(values) > self.max_reductions
