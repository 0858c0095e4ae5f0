"""The options every recurrent stack shares, in one frozen, validated object.

The pure functions, the NNX modules and the Linen modules all take these options by
name (``lstm(params, x, unroll=4)``, ``LSTM(8, 16, unroll=4, rngs=...)``) and hand them
on as one :class:`RecurrentOptions`, validated once where it is built.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax.numpy as jnp
import numpy as np

from lstm_jax._src import validation
from lstm_jax._src.backends.selection import backend_names


@dataclasses.dataclass(frozen=True)
class RecurrentOptions:
    """How a recurrent stack runs: layout, regularisers, loop and kernel options.

    Hashable, so it can be a static argument of ``jax.jit``.

    Attributes:
      batch_first: ``x`` and the output are ``[batch, time, ...]`` (torch's ``batch_first``).
      dropout: dropout on every layer's output but the last's (torch's ``dropout``).
      input_dropout: variational dropout of each layer's input, one mask per sequence
        (Gal & Ghahramani 2016).
      recurrent_dropout: variational dropout of ``h_{t-1}`` where it enters
        ``W_hh h_{t-1}``, one mask per sequence (Gal & Ghahramani 2016).
      weight_dropout: DropConnect on ``weight_hh``, one mask per call (Merity et al. 2017).
      zoneout: zoneout rate (Krueger et al. 2017), one for every state field or a tuple
        with one per field (the LSTM's ``(rate_h, rate_c)``); the expectation is used
        when deterministic.
      unroll: ``lax.scan``'s unroll factor.
      checkpoint: ``None``, or a chunk length ``K`` in steps: activation checkpointing
        over time, activation memory ``~T/K + K`` steps instead of ``T`` for about one
        more forward pass.
      backend: ``"auto"`` or a kernel's name (``"scan"``, ``"fused"``, ``"cudnn"``, ...):
        which kernel runs the stack (see :func:`lstm_jax.functional.lstm`).
      dtype: computation dtype; ``None`` uses the input's. The state is kept in at least
        float32.

    Raises:
      TypeError, ValueError: for an option of the wrong type or out of range, naming it.

    Example:
      >>> RecurrentOptions(dropout=0.1, zoneout=(0.05, 0.5)).random_rates
      ('dropout', 'zoneout')
      >>> RecurrentOptions(unroll=0)
      Traceback (most recent call last):
      ...
      ValueError: unroll must be > 0, got 0
    """

    batch_first: bool = False
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0
    zoneout: float | tuple[float, ...] = 0.0
    unroll: int = 1
    checkpoint: int | None = None
    backend: str = "auto"
    dtype: Any = None

    def __post_init__(self):
        def set_(name, value):
            object.__setattr__(self, name, value)

        set_("batch_first", validation.check_bool("batch_first", self.batch_first))
        for name in ("dropout", "input_dropout", "recurrent_dropout", "weight_dropout"):
            set_(name, validation.check_dropout_rate(getattr(self, name), name=name))
        zoneout = self.zoneout
        if isinstance(zoneout, (list, tuple)):
            zoneout = tuple(
                validation.check_dropout_rate(rate, name=f"zoneout[{i}]")
                for i, rate in enumerate(zoneout)
            )
        else:
            zoneout = validation.check_dropout_rate(zoneout, name="zoneout")
        set_("zoneout", zoneout)
        set_("unroll", validation.check_positive_int("unroll", self.unroll))
        if self.checkpoint is not None:
            set_("checkpoint", validation.check_positive_int("checkpoint", self.checkpoint))
        if not isinstance(self.backend, str) or self.backend not in backend_names():
            raise ValueError(f"backend must be one of {backend_names()}, got {self.backend!r}")
        if self.dtype is not None:
            try:
                set_("dtype", jnp.dtype(self.dtype))
            except TypeError:
                raise TypeError(
                    f"dtype must be None or a dtype (e.g. jnp.bfloat16), got {self.dtype!r}"
                ) from None

    @classmethod
    def build(cls, caller: str, options: dict[str, Any]) -> RecurrentOptions:
        """The options from keyword arguments, with an error naming ``caller`` and the
        valid names for an unknown one.

        Example:
          >>> try:
          ...     RecurrentOptions.build("lstm", {"unrol": 2})
          ... except TypeError as e:
          ...     print(str(e).split(";")[0])
          lstm() got an unknown option 'unrol'
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            raise TypeError(
                f"{caller}() got an unknown option {unknown[0]!r}; "
                f"the options are {', '.join(names)}"
            )
        return cls(**options)

    @property
    def random_rates(self) -> tuple[str, ...]:
        """The names of the regularisers that draw random masks (rate > 0)."""
        rates = {
            "dropout": self.dropout,
            "input_dropout": self.input_dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "weight_dropout": self.weight_dropout,
            "zoneout": max(np.atleast_1d(self.zoneout)),
        }
        return tuple(name for name, rate in rates.items() if rate > 0.0)

    def zoneout_rates(self, fields: tuple[str, ...]) -> tuple[float, ...]:
        """One zoneout rate per state field ``fields``.

        Raises:
          ValueError: a tuple of rates whose length is not the number of fields.
        """
        return validation.check_zoneout(self.zoneout, fields)

    def replace(self, **changes: Any) -> RecurrentOptions:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RecurrentOptions))


# Arguments of every initialiser that the modules set themselves.
_INIT_ARGUMENTS_OF_THE_MODULE = ("key", "input_size", "hidden_size", "bias", "dtype")


def split_options(
    caller: str, cell: Any, options: dict[str, Any], run_names: tuple[str, ...] = OPTION_NAMES
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits a module's keyword options into its cell's initialiser options (with the
    initialiser's defaults filled in) and the options of :class:`RecurrentOptions`.

    Raises:
      TypeError: a name that is neither, listing the valid names.

    Example:
      >>> from lstm_jax._src.cells import GRU_CELL
      >>> split_options("GRU", GRU_CELL, {"recurrent_init": "orthogonal", "unroll": 2})
      ({'recurrent_init': 'orthogonal'}, {'unroll': 2})
    """
    signature = inspect.signature(cell.init_layer).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values())
    init_names = [
        name
        for name, p in signature.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _INIT_ARGUMENTS_OF_THE_MODULE
    ]
    cell_options = {n: options.get(n, signature[n].default) for n in init_names}
    rest = {k: v for k, v in options.items() if k not in init_names}
    if takes_any:
        cell_options.update({k: v for k, v in rest.items() if k not in run_names})
        rest = {k: v for k, v in rest.items() if k in run_names}
    unknown = [k for k in rest if k not in run_names]
    if unknown:
        raise TypeError(
            f"{caller}() got an unknown option {unknown[0]!r}; the options are "
            f"{', '.join([*init_names, *run_names])}"
        )
    return cell_options, rest
