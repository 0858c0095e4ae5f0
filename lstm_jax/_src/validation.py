"""Checks of user input at the public boundary, with errors that say what was expected.

Each check names the argument, what it received and what it expected. They run on
shapes and dtypes, which are static under ``jit``; value checks (``seq_lengths`` in
``1..T``) raise when the values are concrete and, inside :func:`checking_seq_lengths`, are
``checkify`` checks when traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from lstm_jax._src import compat


def check_positive_int(name: str, value) -> int:
    """Raises unless ``value`` is an int > 0 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """Raises unless ``value`` is a bool (a NumPy bool or the ints 0 and 1 are taken too,
    as torch takes them); a string such as ``"no"``, truthy in Python, is rejected.

    Example:
      >>> check_bool("bidirectional", True), check_bool("bias", 0)
      (True, False)
      >>> check_bool("bidirectional", "no")
      Traceback (most recent call last):
      ...
      TypeError: bidirectional must be a bool (True or False), got str 'no'
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")


def check_dropout_rate(value, *, name: str = "dropout") -> float:
    """Raises unless ``0 <= value < 1``; ``name`` is the argument's name in messages."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_zoneout(zoneout, fields: tuple[str, ...]) -> tuple[float, ...]:
    """One zoneout rate per state field: a rate for all ``fields`` or one per field, in [0, 1).

    Example:
      >>> check_zoneout(0.1, ("h", "c")), check_zoneout((0.05, 0.5), ("h", "c"))
      ((0.1, 0.1), (0.05, 0.5))
    """
    if isinstance(zoneout, (int, float, np.floating)) and not isinstance(zoneout, bool):
        zoneout = (zoneout,) * len(fields)
    if not isinstance(zoneout, (tuple, list)) or len(zoneout) != len(fields):
        raise ValueError(
            f"zoneout must be one rate or one rate per state field {fields}, got {zoneout!r}"
        )
    return tuple(
        check_dropout_rate(rate, name=f"zoneout ({field})")
        for field, rate in zip(fields, zoneout, strict=True)
    )


def check_proj_size(proj_size, hidden_size: int) -> int:
    """Raises unless ``0 <= proj_size < hidden_size``."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size must be an int, got {type(proj_size).__name__}")
    if proj_size < 0:
        raise ValueError(f"proj_size must be >= 0, got {proj_size}")
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size, got proj_size={proj_size} "
            f"and hidden_size={hidden_size}"
        )
    return int(proj_size)


def _as_array(name: str, value) -> jax.Array:
    if not isinstance(value, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be a jax or numpy array, got {type(value).__name__}")
    return value


def check_input(x, input_size: int, *, name: str = "input") -> tuple[jax.Array, bool]:
    """Checks a sequence input; returns it and whether it has a batch axis.

    Args:
      x: ``[time, batch, input_size]`` / ``[batch, time, input_size]`` or unbatched
        ``[time, input_size]``.
      input_size: the expected number of features.
      name: the argument's name in messages.

    Raises:
      TypeError: ``x`` is not a floating-point array.
      ValueError: ``x`` is not of rank 2 or 3, or its last axis is not ``input_size``.
    """
    x = _as_array(name, x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have rank 3 ([time, batch, input_size], or [batch, time, "
            f"input_size] with batch_first) or rank 2 (unbatched [time, input_size]); "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{name} must have input_size={input_size} features on its last axis, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or (x.ndim == 3 and x.shape[1] == 0):
        raise ValueError(f"{name} must have non-empty time and batch axes, got {tuple(x.shape)}")
    return x, x.ndim == 3


def check_state(name: str, value, expected: tuple[int, ...], meaning: str) -> jax.Array:
    """Raises unless ``value`` is a floating array of shape ``expected``.

    Args:
      name: the argument's name, e.g. ``"hx[0] (h_0)"``.
      value: what the user passed.
      expected: the expected shape.
      meaning: the expected shape in words, e.g. ``"[layers * directions, batch, H_out]"``.
    """
    value = _as_array(name, value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {value.dtype}")
    if tuple(value.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {meaning} = {tuple(expected)}, got {tuple(value.shape)}"
        )
    return value


# Part of jit's cache key: a function traced without the check is traced again inside
# ``checking_seq_lengths()``.
_CHECKING_SEQ_LENGTHS = compat.make_user_context(False)


def checking_seq_lengths():
    """A context in which traced ``seq_lengths`` out of ``1..time`` are ``checkify`` errors.

    Concrete lengths are always checked (a ``ValueError``). Traced ones (under ``jit``)
    are checked only inside this context, by a ``checkify.check`` that
    ``checkify.checkify(f)`` functionalises: a check in every program would cost every
    call (an effectful program loses jit's fast dispatch, measured 8 -> 77 us a call)
    and ``jax.export`` cannot serialise it. Outside the context, every kernel runs a row
    of length 0 as zero outputs and its initial state, and a length above ``time`` as
    ``time``.

    Example:
      >>> from jax.experimental import checkify
      >>> f = jax.jit(lambda lengths: check_seq_lengths(lengths, 2, 5))
      >>> with checking_seq_lengths():
      ...     error, _ = checkify.checkify(f)(jnp.array([0, 7]))
      >>> print(error.get())
      seq_lengths must be in 1..5 (the time axis), got min 0 and max 7 (`check` failed)
    """
    return _CHECKING_SEQ_LENGTHS(True)


def check_seq_lengths(seq_lengths, batch: int, time: int) -> jax.Array:
    """Checks ``seq_lengths`` ``[batch]`` of ints in ``1..time``; returns it as int32.

    Concrete values out of range raise ``ValueError``; traced ones are a ``checkify``
    check inside :func:`checking_seq_lengths`, and not checked outside it.
    """
    seq_lengths = _as_array("seq_lengths", seq_lengths)
    if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise TypeError(f"seq_lengths must be an integer array, got dtype {seq_lengths.dtype}")
    if tuple(seq_lengths.shape) != (batch,):
        raise ValueError(
            f"seq_lengths must have shape [batch] = ({batch},), got {tuple(seq_lengths.shape)}"
        )
    message = f"seq_lengths must be in 1..{time} (the time axis), got min {{}} and max {{}}"
    if not isinstance(seq_lengths, jax.core.Tracer):
        values = np.asarray(seq_lengths)
        if values.min() < 1 or values.max() > time:
            raise ValueError(message.format(values.min(), values.max()))
    elif _CHECKING_SEQ_LENGTHS.value:
        checkify.check(
            jnp.all((seq_lengths >= 1) & (seq_lengths <= time)),
            message,
            jnp.min(seq_lengths),
            jnp.max(seq_lengths),
        )
    return jnp.asarray(seq_lengths, jnp.int32)


def check_cell_input(x, input_size: int) -> tuple[jax.Array, bool]:
    """Checks a one-step input ``[batch, input_size]`` or ``[input_size]``.

    Returns:
      The input and whether it has a batch axis.
    """
    x = _as_array("input", x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"input must be a floating-point array, got dtype {x.dtype}")
    if x.ndim not in (1, 2) or x.shape[-1] != input_size:
        raise ValueError(
            f"input must have shape [batch, input_size] or [input_size] with "
            f"input_size={input_size}, got {tuple(x.shape)}"
        )
    return x, x.ndim == 2
