"""How messages name the arguments of :func:`lstm_jax.train.fit`, for whoever called it.

A Python caller passed ``resume=True`` and ``run_dir``; a command line, flags such as
``--resume`` and ``--workdir``. Messages ask :func:`spelled` and a command-line entry
point wraps its call in :func:`spelled_as`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_PYTHON = {"resume": "resume=True", "run_dir": "run_dir"}
_SPELLING: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "lstm_jax_argument_spelling", default=_PYTHON
)


def spelled(argument: str) -> str:
    """How the caller wrote ``argument`` (``"resume"`` or ``"run_dir"``).

    Example:
      >>> spelled("resume")
      'resume=True'
    """
    return _SPELLING.get()[argument]


@contextlib.contextmanager
def spelled_as(**spellings: str) -> Iterator[None]:
    """Within the block, messages name ``fit``'s arguments as given (a command line's flags).

    Example:
      >>> with spelled_as(resume="--resume", run_dir="--workdir"):
      ...     spelled("resume"), spelled("run_dir")
      ('--resume', '--workdir')
    """
    unknown = set(spellings) - set(_PYTHON)
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: {sorted(_PYTHON)}")
    token = _SPELLING.set({**_PYTHON, **spellings})
    try:
        yield
    finally:
        _SPELLING.reset(token)
