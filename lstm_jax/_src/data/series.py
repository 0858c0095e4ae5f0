"""Time series: sliding windows, splits by time, and standardisation fitted on training data.

A forecaster learns ``inputs [T, F] -> targets [horizon, F]`` from windows of one series.
The split is by time (train, then validation, then test), never shuffled across time, and
the scaler is fitted on the training part only, so that no statistic of the future leaks
into training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def _as_series(series: np.ndarray, name: str = "series") -> np.ndarray:
    """``[N]`` or ``[N, F]`` as ``[N, F]``, checked finite."""
    a = np.asarray(series)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be [time] or [time, features], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}[{int(np.argmax(bad))}] holds NaN or infinity: fill or drop the missing "
            "values before windowing"
        )
    return a


def sliding_windows(
    series: np.ndarray, input_length: int, horizon: int = 1, *, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a series: ``input_length`` steps in, the next ``horizon`` steps out.

    Args:
      series: ``[N]`` or ``[N, F]``, in time order.
      input_length: ``T``, the steps a window shows the model.
      horizon: the steps to forecast after each window.
      stride: steps between the starts of consecutive windows.

    Returns:
      ``(inputs [W, T, F], targets [W, horizon, F])``, ``W = (N - T - horizon) // stride + 1``
      windows in time order (a 1-D series has ``F = 1``).

    Raises:
      ValueError: the series is shorter than one window, a non-positive length, or NaN
        (naming the first bad time index).

    Example:
      >>> x, y = sliding_windows(np.arange(10.0), input_length=4, horizon=2, stride=2)
      >>> x.shape, y.shape, x[1, :, 0].tolist(), y[1, :, 0].tolist()
      ((3, 4, 1), (3, 2, 1), [2.0, 3.0, 4.0, 5.0], [6.0, 7.0])
    """
    for name, value in (("input_length", input_length), ("horizon", horizon), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    a = _as_series(series)
    span = input_length + horizon
    if len(a) < span:
        raise ValueError(
            f"the series has {len(a)} steps, fewer than one window (input_length {input_length}"
            f" + horizon {horizon} = {span})"
        )
    starts = np.arange(0, len(a) - span + 1, stride)
    idx = starts[:, None] + np.arange(span)[None, :]
    windows = a[idx]  # [W, span, F]
    return windows[:, :input_length], windows[:, input_length:]


def split_by_time(
    series: np.ndarray, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> tuple[np.ndarray, ...]:
    """Consecutive parts of a series in time order (train, validation, test by default).

    Args:
      series: ``[N, ...]``, in time order.
      fractions: each part's share of ``N``, summing to 1; the last part takes the
        remainder of the rounding.

    Returns:
      One array per fraction, ``series[a:b]`` for consecutive ``[a, b)``.

    Example:
      >>> [len(p) for p in split_by_time(np.arange(100), (0.8, 0.1, 0.1))]
      [80, 10, 10]
    """
    fractions = np.asarray(fractions, np.float64)
    if fractions.ndim != 1 or (fractions <= 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions.tolist()}")
    bounds = np.round(np.cumsum(fractions) * len(series)).astype(int)
    bounds[-1] = len(series)
    parts = np.split(np.asarray(series), bounds[:-1])
    if any(len(p) == 0 for p in parts):
        raise ValueError(f"a series of {len(series)} steps leaves a part empty: {fractions}")
    return tuple(parts)


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-feature ``(x - mean) / std``, fitted on training data only.

    Example:
      >>> train_part = np.array([[1.0], [3.0]])
      >>> scaler = Standardizer.fit(train_part)
      >>> scaler.transform(np.array([[5.0]])).tolist(), scaler.inverse(np.array([[0.0]])).tolist()
      ([[3.0]], [[2.0]])
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, series: np.ndarray) -> Standardizer:
        """The mean and standard deviation of each feature of ``series`` ``[N]`` or ``[N, F]``.

        A constant feature gets a standard deviation of 1 (it is only centred).
        """
        a = _as_series(series).astype(np.float64)
        std = a.std(axis=0)
        return cls(a.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` on the last axis (features), in ``x``'s float dtype."""
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return ((x - self.mean) / self.std).astype(dtype)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Back to the data's units: ``x * std + mean``."""
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return (x * self.std + self.mean).astype(dtype)
