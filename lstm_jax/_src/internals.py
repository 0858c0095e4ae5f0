"""What a recurrent stack computes inside: every gate and state of every step, and how
often each gate saturates.

:func:`internals` runs a stack of any registered cell over a sequence and records, for
every layer and direction, each quantity its cell names (``CellDef.quantities``: the
LSTM's ``i, f, g, o, c, h``, the GRU's ``r, z, n, h``, ...), laid out like the stack's
output. :func:`gate_saturation` counts, per unit, how often a gate sits near 0 or 1, the
statistic of Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent
Networks", section 4.2 and figure 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lstm_jax._src import validation
from lstm_jax._src.apply import cast_and_initial_states, time_major_input, user_layout
from lstm_jax._src.cells import CellDef, get_cell
from lstm_jax._src.options import RecurrentOptions
from lstm_jax._src.stack import stack_quantities
from lstm_jax._src.types import Quantities

Internals = tuple[tuple[Quantities, ...], ...]

# One program for the whole stack: called eagerly, the layers' loops compile once per
# shape instead of at every call.
_stack_quantities = jax.jit(stack_quantities, static_argnums=0, static_argnames="options")


def internals(
    cell: str | CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    hx: Sequence[jax.Array] | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    options: RecurrentOptions | None = None,
    **option_values: Any,
) -> Internals:
    """Every named quantity of every step, layer and direction of a recurrent stack.

    Runs in inference mode: no dropout of any kind (between layers, on the inputs, on
    ``h_{t-1}`` or on ``W_hh``), zoneout at its expectation, as
    :func:`~lstm_jax.functional.apply_recurrent` with ``deterministic=True``; always on
    the scan (``backend`` is not read), with the same numbers as the scan's forward pass.

    Args:
      cell: a registered cell name or a :class:`~lstm_jax.functional.CellDef`.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]``, ``[batch, time, input_size]`` with
        ``batch_first``, or unbatched ``[time, input_size]``.
      hx: ``None`` (zeros) or one array per state field, each ``[layers * directions,
        batch, size]`` (``[layers * directions, size]`` unbatched).
      seq_lengths: optional int ``[batch]`` in ``1..time``, torch's packed semantics.
      options: a :class:`~lstm_jax.RecurrentOptions`, or its fields by name
        (``batch_first``, ``dtype``, ``unroll``, ``zoneout`` are read).

    Returns:
      ``result[layer][direction]``: a :class:`Quantities` mapping from each quantity's
      name (in the order of the cell's equations, see ``CellDef.quantities``; a cell that
      declares none gives its state's fields) to an array laid out like the stack's
      output: ``[time, batch, size]``, ``[batch, time, size]`` with ``batch_first``,
      ``[time, size]`` unbatched;
      in the state dtype (float32 for a bfloat16 stack). Steps past a row's length are
      zero, and the reverse direction's values sit at the input step they were computed
      at, so ``result[-1][d]["h"]`` is the output's direction ``d`` and layer ``k``'s
      ``h`` (directions concatenated) is layer ``k + 1``'s input.

    Raises:
      TypeError, ValueError: as :func:`~lstm_jax.functional.apply_recurrent`, naming the
        argument.

    Example:
      >>> from lstm_jax import functional as F
      >>> params = F.init_lstm_params(jax.random.key(0), 3, 5, num_layers=2)
      >>> x = jnp.ones((7, 2, 3))
      >>> result = F.internals("lstm", params, x)
      >>> list(result[1][0]), result[1][0]["f"].shape
      (['i', 'f', 'g', 'o', 'c', 'h'], (7, 2, 5))
      >>> bool(jnp.allclose(result[1][0]["h"], F.lstm(params, x)[0]))
      True
    """
    cell = get_cell(cell)
    if options is None:
        options = RecurrentOptions.build("internals", option_values)
    elif option_values:
        options = options.replace(**option_values)
    x, batched, seq_lengths = time_major_input(cell, params, x, seq_lengths, options)
    params, x, states = cast_and_initial_states(cell, params, x, hx, batched, options)
    result = _stack_quantities(cell, params, x, states, seq_lengths=seq_lengths, options=options)
    return jax.tree.map(lambda y: user_layout(y, batched, options.batch_first), result)


class Saturation(NamedTuple):
    """How often each unit of one quantity saturates, over the valid steps of a sequence.

    Attributes:
      left: ``[size]``, the fraction of steps at which the unit was below ``low``.
      right: ``[size]``, the fraction of steps at which it was above ``high``.

    Example:
      >>> import jax.numpy as jnp
      >>> from lstm_jax import gate_saturation
      >>> gate = jnp.array([[[0.05]], [[0.5]], [[0.95]], [[0.99]]])  # [time, batch, size]
      >>> left, right = gate_saturation((({"f": gate},),))[0][0]["f"]
      >>> left.tolist(), right.tolist()
      ([0.25], [0.5])
    """

    left: jax.Array
    right: jax.Array


def gate_saturation(
    internals: Sequence[Sequence[Mapping[str, jax.Array]]],
    seq_lengths: jax.Array | None = None,
    *,
    batch_first: bool = False,
    names: Iterable[str] | None = None,
    low: float = 0.1,
    high: float = 0.9,
) -> tuple[tuple[Quantities, ...], ...]:
    """The fraction of steps at which each unit's gate is left- or right-saturated.

    Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent
    Networks", section 4.2: a gate is left-saturated at a step when its activation is
    below 0.1 and right-saturated when above 0.9; figure 3 plots, for every unit, the
    fraction of time spent in each. Steps past a row's length are not counted.

    The statistic means something for the gates whose values lie in ``[0, 1]``: the
    LSTM's ``i``, ``f``, ``o`` and the GRU's ``r``, ``z``. It is computed for every
    quantity named in ``names`` (all of them by default); read the gates.

    Args:
      internals: ``result[layer][direction]`` mappings from names to arrays, as
        :func:`lstm_jax.internals` returns: ``[time, batch, size]``, ``[batch, time,
        size]`` with ``batch_first``, or unbatched ``[time, size]``.
      seq_lengths: optional int ``[batch]``: only the steps ``t < seq_lengths[b]`` of row
        ``b`` count (as ``internals`` was given).
      batch_first: the arrays are ``[batch, time, size]``.
      names: the quantities to measure; ``None``: all.
      low: left-saturated below this value.
      high: right-saturated above this value.

    Returns:
      ``saturation[layer][direction][name]`` (a :class:`Quantities` mapping per layer and
      direction), a :class:`Saturation` of two ``[size]`` fractions in ``[0, 1]``.

    Raises:
      ValueError: ``low > high``, a name absent from a layer's quantities, or
        ``seq_lengths`` that do not match the arrays' batch and time.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> model = lstm_jax.LSTM(3, 8, num_layers=2, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((20, 4, 3))
      >>> saturation = lstm_jax.gate_saturation(lstm_jax.internals(model, x), names=("i", "f", "o"))
      >>> forget = saturation[1][0]["f"]
      >>> forget.left.shape, bool(jnp.all((forget.left >= 0) & (forget.right <= 1)))
      ((8,), True)
    """
    if not low <= high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")
    batch_first = validation.check_bool("batch_first", batch_first)
    wanted = None if names is None else tuple(names)
    result = []
    for layer, layer_internals in enumerate(internals):
        layer_result = []
        for direction, quantities in enumerate(layer_internals):
            selected = tuple(quantities) if wanted is None else wanted
            missing = [name for name in selected if name not in quantities]
            if missing:
                raise ValueError(
                    f"internals[{layer}][{direction}] has no quantity {missing[0]!r}; it has "
                    f"{', '.join(map(repr, quantities))}"
                )
            layer_result.append(
                Quantities(
                    (name, _saturation(quantities[name], seq_lengths, batch_first, low, high))
                    for name in selected
                )
            )
        result.append(tuple(layer_result))
    return tuple(result)


def _saturation(value, seq_lengths, batch_first, low, high) -> Saturation:
    """One quantity's :class:`Saturation`: ``value`` ``[time, batch, size]`` (see above)."""
    value = jnp.asarray(value)
    if value.ndim == 2:  # unbatched [time, size]
        if seq_lengths is not None:
            raise ValueError("seq_lengths needs batched quantities of rank 3")
        value = value[:, None]
    elif batch_first:
        value = jnp.swapaxes(value, 0, 1)
    time, batch = value.shape[:2]
    if seq_lengths is None:
        valid = jnp.ones((time, batch), bool)
    else:
        seq_lengths = validation.check_seq_lengths(seq_lengths, batch, time)
        valid = jnp.arange(time, dtype=jnp.int32)[:, None] < seq_lengths[None, :]
    steps = jnp.sum(valid).astype(jnp.float32)
    valid = valid[:, :, None]

    def fraction(saturated):
        return jnp.sum(valid & saturated, axis=(0, 1)).astype(jnp.float32) / steps

    return Saturation(fraction(value < low), fraction(value > high))
