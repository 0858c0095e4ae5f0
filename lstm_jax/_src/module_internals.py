""":func:`lstm_jax.internals` for the modules: read a module's cell, parameters and options
and call the pure :func:`lstm_jax.functional.internals`. No math lives here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from lstm_jax._src import internals as pure
from lstm_jax._src import linen_modules, nnx_modules
from lstm_jax._src.apply import single_state
from lstm_jax._src.cells import CellDef
from lstm_jax._src.interop import torch as torch_interop

_CALLS = (
    "internals(model, x, hx=None, *, seq_lengths=None) for an NNX stack (lstm_jax.LSTM, "
    "GRU, RNN, Recurrent), internals(model, variables, x, hx=None, *, seq_lengths=None) for "
    "a Linen one (lstm_jax.linen.*), or internals(cell, params, x, hx=None, *, "
    "seq_lengths=None, **options) for parameters"
)


def _arguments(args: tuple, names: tuple[str, ...], required: int) -> list[Any]:
    if not required <= len(args) <= len(names):
        raise TypeError(
            f"internals takes {', '.join(names)} after the model ({required} to {len(names)} "
            f"arguments), got {len(args)}: {_CALLS}"
        )
    return [*args, *(None,) * (len(names) - len(args))]


def _no_options(options: dict[str, Any], model: Any) -> None:
    if options:
        raise TypeError(
            f"internals of a {type(model).__name__} runs with the module's own options; got "
            f"{', '.join(options)}"
        )


def internals(
    model: Any, *args: Any, seq_lengths: jax.Array | None = None, **options: Any
) -> pure.Internals:
    """Every gate and state of every step, layer and direction of a recurrent stack.

    Records each quantity the cell's equations name (``CellDef.quantities``; the LSTM's
    ``i, f, g, o, c, h``, plus ``ln_c`` with layer normalisation and ``m``, the output
    before the projection, with ``proj_size``; the GRU's ``r, z, n, h``; the Elman RNN's
    ``h``; a cell that declares none gives its state's fields) with the numbers of the
    forward pass. Runs in inference mode whatever the module's mode: no dropout between
    layers, on the inputs, on ``h_{t-1}`` or on ``W_hh``, zoneout at its expectation (the
    numbers of ``model.eval()``), on the scan whatever ``backend`` says.

    Three ways to call it:

    - an NNX stack (:class:`lstm_jax.LSTM`, :class:`~lstm_jax.GRU`, :class:`~lstm_jax.RNN`,
      :class:`~lstm_jax.Recurrent`): ``internals(model, x, hx=None, *, seq_lengths=None)``
      with the arguments of ``model(...)``;
    - a Linen stack (:mod:`lstm_jax.linen`'s ``LSTM``, ``GRU``, ``RNN``, ``Recurrent``):
      ``internals(model, variables, x, hx=None, *, seq_lengths=None)``, ``variables``
      as ``model.apply`` takes them (``{"params": {...}}``, the module's own; for a
      module inside a larger one pass ``{"params": variables["params"][its name]}``);
    - parameters: ``internals(cell, params, x, hx=None, *, seq_lengths=None,
      **options)``, as :func:`lstm_jax.functional.internals`.

    Args:
      model: an NNX or Linen stack, or a cell name or :class:`~lstm_jax.functional.CellDef`.
      *args: see the three calls above; ``x`` ``[time, batch, input_size]`` (``[batch,
        time, input_size]`` with ``batch_first``, or unbatched ``[time, input_size]``);
        ``hx`` as the module takes it (``(h_0, c_0)`` for the LSTM, ``h_0`` for GRU and
        RNN), fields ``[layers * directions, batch, size]``.
      seq_lengths: optional int ``[batch]`` in ``1..time``, as the module takes it.
      **options: with a cell only, :class:`~lstm_jax.RecurrentOptions` fields by name.

    Returns:
      ``result[layer][direction]``, a :class:`~lstm_jax.Quantities` mapping (it keeps the
      equations' order under ``jax.jit``) from each quantity's name to an array laid out
      like the module's output (``[time, batch, size]``, ``[batch, time, size]`` with
      ``batch_first``, ``[time, size]`` unbatched), zero past each row's length, the
      reverse direction aligned with the input's steps: ``result[-1][d]["h"]`` is the
      output's direction ``d``, and layer ``k``'s ``h`` is layer ``k + 1``'s input.

    Raises:
      TypeError: ``model`` is none of the above, or arguments that do not fit its call.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import lstm_jax
      >>> model = lstm_jax.LSTM(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((10, 4, 3))
      >>> result = lstm_jax.internals(model, x, seq_lengths=jnp.array([10, 7, 5, 1]))
      >>> list(result[0][1]), result[0][1]["f"].shape
      (['i', 'f', 'g', 'o', 'c', 'h'], (10, 4, 8))
      >>> out, _ = model(x, seq_lengths=jnp.array([10, 7, 5, 1]))
      >>> bool(jnp.allclose(out[..., 8:], result[1][1]["h"]))
      True
    """
    if isinstance(model, nnx_modules.Recurrent):
        _no_options(options, model)
        x, hx = _arguments(args, ("x", "hx"), 1)
        if isinstance(model, nnx_modules._SingleStateStack):
            hx = single_state(model.cell, hx, "h_0")
        return pure.internals(
            model.cell, model.stack_params, x, hx, seq_lengths=seq_lengths, options=model.options
        )
    if isinstance(model, linen_modules._Stack) and isinstance(model, nn.Module):
        _no_options(options, model)
        variables, x, hx = _arguments(args, ("variables", "x", "hx"), 2)
        cell, _ = model._cell()
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise TypeError(
                f"internals of a Linen {type(model).__name__} takes its variables "
                f"({{'params': ...}}, as model.apply does) after the model, got "
                f"{type(variables).__name__}"
            )
        params = torch_interop.stack_from_named(
            variables["params"], cell.param_type, model.num_layers, 2 if model.bidirectional else 1
        )
        if isinstance(model, (linen_modules.GRU, linen_modules.RNN)):
            hx = single_state(cell, hx, "h_0")
        return pure.internals(
            cell, params, x, hx, seq_lengths=seq_lengths, options=model._options()
        )
    if isinstance(model, (str, CellDef)):
        params, x, hx = _arguments(args, ("params", "x", "hx"), 2)
        return pure.internals(model, params, x, hx, seq_lengths=seq_lengths, **options)
    raise TypeError(
        f"internals takes a recurrent stack or a cell, got {type(model).__name__}: {_CALLS}"
    )
