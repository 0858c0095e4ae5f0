"""Early stopping and the best step, decided from the history of one logged metric.

Both are pure functions of the values logged so far, so a resumed run, which reads its
history back from ``metrics.jsonl``, decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

MODES = ("min", "max")


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
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.patience is not None and (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            raise ValueError(f"patience must be an integer >= 1 or None, got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")

    def best_index(self, values: Sequence[float]) -> int | None:
        """The index of the best value (the first of equals; NaN never counts), or ``None``."""
        sign = 1.0 if self.mode == "min" else -1.0
        best = None
        for i, value in enumerate(values):
            if math.isnan(value):
                continue
            if best is None or sign * (values[best] - value) > self.min_delta:
                best = i
        return best

    def should_stop(self, values: Sequence[float]) -> bool:
        """True when the last ``patience`` values brought no improvement."""
        if self.patience is None or not values:
            return False
        best = self.best_index(values)
        return len(values) - 1 - (-1 if best is None else best) >= self.patience
