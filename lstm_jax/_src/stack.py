"""Layers and directions: multi-layer, bidirectional stacks with inter-layer dropout.

Layer ``k > 0`` takes layer ``k - 1``'s output; a bidirectional layer runs a forward and
a reverse direction with their own weights and concatenates their outputs on the
feature axis (forward first), as ``torch.nn.LSTM`` does. Dropout, when asked for, is
applied to the output of every layer but the last, again as torch.

The regularisers of the LSTM literature draw their masks here, per layer and direction,
once per call, and hand them to the loop; every cell kind gets them for free:

- variational input dropout (Gal & Ghahramani 2016): one ``[batch, features]`` mask per
  sequence on each layer's input, the same at every step;
- variational recurrent dropout (same paper): one ``[batch, H_out]`` mask per sequence
  on ``h_{t-1}`` where it enters ``W_hh h_{t-1}``, passed to the step;
- zoneout (Krueger et al. 2017): a fresh Bernoulli mask per step, unit and state field
  (``[time, batch, size]``, drawn before the loop), or the rate itself at evaluation.
- weight drop / DropConnect on ``W_hh`` (Merity et al. 2017): one mask per call on the
  weight itself (:func:`weight_drop`), applied to the parameters before any loop.

Without a ``key`` (evaluation) the dropouts are off and zoneout uses its expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax._src.backends import LayerPlan, resolve_backend
from lstm_jax._src.cells import CellDef
from lstm_jax._src.options import RecurrentOptions
from lstm_jax._src.scan import run_layer
from lstm_jax._src.types import Quantities


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zeroes a fraction ``rate`` of ``x`` and scales the rest up.

    Example:
      >>> y = dropout(jax.random.key(0), jnp.ones((1000,)), 0.5)
      >>> sorted(set(y.tolist()))
      [0.0, 2.0]
    """
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def dropout_mask(key: jax.Array, shape: tuple[int, ...], rate: float, dtype) -> jax.Array:
    """An inverted-dropout mask: 0 with probability ``rate``, else ``1 / (1 - rate)``.

    Example:
      >>> m = dropout_mask(jax.random.key(0), (2, 500), 0.5, jnp.float32)
      >>> sorted(set(m.ravel().tolist()))
      [0.0, 2.0]
    """
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros(shape, dtype))


def weight_drop(key: jax.Array, params: Sequence[Sequence[Any]], rate: float):
    """DropConnect on every ``weight_hh`` (Merity et al. 2017, AWD-LSTM), one mask per call.

    Each layer and direction's ``weight_hh`` gets its own mask, drawn once and shared by
    every step and every row of the batch; kept entries are scaled by ``1 / (1 - rate)``.
    The result is ordinary parameters, so any backend (the fused kernels included) runs
    on them unchanged.

    Args:
      key: PRNG key.
      params: ``params[layer][direction]``, named tuples with a ``weight_hh`` field.
      rate: probability of dropping each recurrent weight.

    Returns:
      The parameters with ``weight_hh`` masked.

    Raises:
      ValueError: a cell's parameters have no ``weight_hh`` field (minLSTM, minGRU: their
        gates do not read ``h_{t-1}``; sLSTM: ``weight_hh`` is built from the heads' blocks).

    Example:
      >>> from lstm_jax._src.init import init_gru_params
      >>> p = init_gru_params(jax.random.key(0), 3, 4)
      >>> w = weight_drop(jax.random.key(1), p, 0.5)[0][0].weight_hh
      >>> w.shape, bool(jnp.any(w == 0.0)), bool(jnp.all(p[0][0].weight_ih == p[0][0].weight_ih))
      ((12, 4), True, True)
    """
    kind = type(params[0][0])
    if "weight_hh" not in kind._fields:
        raise ValueError(
            f"weight_dropout drops entries of weight_hh, and {kind.__name__} has no such "
            f"field (its weight_hh is a property built from other fields, or the cell's gates "
            f"do not read h_(t-1)): use weight_dropout=0"
        )
    keys = jax.random.split(key, len(params) * len(params[0]))
    directions = len(params[0])
    return tuple(
        tuple(
            p._replace(weight_hh=dropout(keys[layer * directions + d], p.weight_hh, rate))
            for d, p in enumerate(layer_params)
        )
        for layer, layer_params in enumerate(params)
    )


def zoneout_weights(key: jax.Array | None, rate: float, shape: tuple[int, ...], dtype) -> jax.Array:
    """Zoneout's per-step weights of the old state: Bernoulli(``rate``), or ``rate`` without key.

    Example:
      >>> z = zoneout_weights(jax.random.key(0), 0.25, (3, 2, 4), jnp.float32)
      >>> z.shape, sorted(set(z.ravel().tolist())) == [0.0, 1.0]
      ((3, 2, 4), True)
      >>> float(zoneout_weights(None, 0.25, (3, 2, 4), jnp.float32)[0, 0, 0])
      0.25
    """
    if key is None:
        return jnp.full(shape, rate, dtype)
    return jax.random.bernoulli(key, rate, shape).astype(dtype)


def _zoneout_masks(key: jax.Array | None, rates: tuple[float, ...] | None, state: Any, time: int):
    """Zoneout's weights of the old state, ``[time, batch, size]`` per state field, drawn
    from ``key`` (or the rates themselves without one); ``None`` without zoneout."""
    if rates is None:
        return None
    fields = jax.random.split(key, len(state)) if key is not None else None
    return type(state)(
        *(
            zoneout_weights(
                None if fields is None else fields[i], rate, (time, *leaf.shape), leaf.dtype
            )
            for i, (rate, leaf) in enumerate(zip(rates, state, strict=True))
        )
    )


def run_stack(
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    initial_states: Any,
    *,
    seq_lengths: jax.Array | None = None,
    key: jax.Array | None = None,
    options: RecurrentOptions | None = None,
    **option_values: Any,
) -> tuple[jax.Array, Any]:
    """Runs all layers and directions.

    Args:
      cell: the cell kind.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]`` (``batch_first`` and ``dtype`` are the caller's:
        :func:`lstm_jax.functional.apply_recurrent` applies them).
      initial_states: the cell's state pytree with leaves ``[layers * directions, batch, ...]``,
        ordered as torch's ``h_0``: index ``layer * directions + direction``.
      seq_lengths: optional int32 ``[batch]``.
      key: PRNG key for the regularisers, or ``None`` for none (dropout off, zoneout at
        its expectation).
      options: a :class:`RecurrentOptions`, or its fields by name: ``dropout`` on each
        layer's output but the last's; variational ``input_dropout`` and
        ``recurrent_dropout`` (one mask per sequence, layer and direction); ``zoneout``;
        ``unroll``; ``checkpoint``; ``backend`` (see :mod:`lstm_jax._src.backends`;
        zoneout acts inside each step, so ``"auto"`` runs it on the scan).

    Returns:
      ``(outputs, final_states)``: ``outputs`` ``[time, batch, directions * H_out]`` and the
      final states stacked like ``initial_states``.

    Raises:
      ValueError: ``backend`` names a kernel that cannot run this configuration, or
        ``recurrent_dropout > 0`` for a cell whose gates do not read ``h_{t-1}`` (an empty
        ``weight_hh``, as minLSTM's and minGRU's).

    Example:
      >>> from lstm_jax import functional as F
      >>> params = F.init_lstm_params(jax.random.key(0), 3, 5, num_layers=2, bidirectional=True)
      >>> zeros = jnp.zeros((4, 2, 5), jnp.float32)  # [layers * directions, batch, hidden]
      >>> x = jnp.ones((7, 2, 3), jnp.float32)
      >>> out, (h_n, c_n) = run_stack(F.LSTM_CELL, params, x, F.LSTMState(zeros, zeros))
      >>> out.shape, h_n.shape
      ((7, 2, 10), (4, 2, 5))
    """
    if options is None:
        options = RecurrentOptions.build("run_stack", option_values)
    elif option_values:
        options = options.replace(**option_values)
    if options.recurrent_dropout > 0.0 and params[0][0].weight_hh.shape[0] == 0:
        raise ValueError(
            f"recurrent_dropout drops h_(t-1) where it enters W_hh h_(t-1), and the gates of "
            f"{cell.describe()} do not read h_(t-1): use recurrent_dropout=0"
        )
    directions = len(params[0])
    time, batch = x.shape[:2]
    zoneout = options.zoneout_rates(initial_states._fields)
    zoneout = zoneout if any(zoneout) else None
    input_dropout, recurrent_dropout = options.input_dropout, options.recurrent_dropout
    regularized = input_dropout > 0.0 or recurrent_dropout > 0.0 or zoneout is not None
    regularizer_key = None
    if key is not None and regularized:
        key, regularizer_key = jax.random.split(key)
    plan = LayerPlan(
        x.dtype,
        unroll=options.unroll,
        checkpoint=options.checkpoint,
        dropout=key is not None and (options.dropout > 0.0 or input_dropout > 0.0),
        recurrent_dropout=key is not None and recurrent_dropout > 0.0,
        zoneout=zoneout is not None,
        seq_lengths=seq_lengths,
    )
    kernel = resolve_backend(options.backend, cell, params, plan)
    if kernel.runs_stack:
        return kernel.run_stack(cell, params, x, initial_states, plan)
    layer_input = x
    final_states = []
    for layer, layer_params in enumerate(params):
        outputs = []
        for direction, direction_params in enumerate(layer_params):
            index = layer * directions + direction
            state = jax.tree.map(lambda leaf, i=index: leaf[i], initial_states)
            k_in = k_rec = k_zone = None
            if regularizer_key is not None:
                layer_key = jax.random.fold_in(regularizer_key, index)
                k_in, k_rec, k_zone = jax.random.split(layer_key, 3)
            direction_input = layer_input
            if input_dropout > 0.0 and k_in is not None:
                shape = (1, batch, layer_input.shape[-1])
                direction_input = layer_input * dropout_mask(
                    k_in, shape, input_dropout, layer_input.dtype
                )
            recurrent_mask = None
            if recurrent_dropout > 0.0 and k_rec is not None:
                recurrent_mask = dropout_mask(
                    k_rec, state.h.shape, recurrent_dropout, state.h.dtype
                )
            zoneout_masks = _zoneout_masks(k_zone, zoneout, state, time)
            direction_plan = plan.for_direction(
                reverse=direction == 1, recurrent_mask=recurrent_mask, zoneout_weights=zoneout_masks
            )
            out, final = kernel.run_layer(
                cell, direction_params, direction_input, state, direction_plan
            )
            outputs.append(out)
            final_states.append(final)
        layer_input = jnp.concatenate(outputs, axis=-1) if directions > 1 else outputs[0]
        if options.dropout > 0.0 and key is not None and layer < len(params) - 1:
            key, layer_key = jax.random.split(key)
            layer_input = dropout(layer_key, layer_input, options.dropout)
    return layer_input, jax.tree.map(lambda *leaves: jnp.stack(leaves), *final_states)


def stack_quantities(
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    initial_states: Any,
    *,
    seq_lengths: jax.Array | None = None,
    options: RecurrentOptions | None = None,
) -> tuple[tuple[Quantities, ...], ...]:
    """Every named quantity of every layer and direction, in inference mode, on the scan.

    The layers and directions of :func:`run_stack` without a key: no dropout of any kind,
    zoneout at its expectation. Each direction runs :func:`~lstm_jax._src.scan.run_layer`
    with ``quantities=True``, so the numbers are the scan's.

    Args:
      cell: the cell kind.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]``.
      initial_states: as :func:`run_stack`'s, fields ``[layers * directions, batch, size]``.
      seq_lengths: optional int32 ``[batch]``.
      options: a :class:`RecurrentOptions`; ``unroll`` and ``zoneout`` are read.

    Returns:
      ``result[layer][direction]``, a :class:`~lstm_jax.Quantities` from each quantity's
      name to ``[time, batch, size]`` (zero at padded steps; reverse directions aligned
      with the input's steps).

    Example:
      >>> from lstm_jax import functional as F
      >>> params = F.init_gru_params(jax.random.key(0), 3, 5, num_layers=2, bidirectional=True)
      >>> zeros = jnp.zeros((4, 2, 5), jnp.float32)  # [layers * directions, batch, hidden]
      >>> x = jnp.ones((7, 2, 3), jnp.float32)
      >>> result = stack_quantities(F.GRU_CELL, params, x, F.GRUState(zeros))
      >>> out, _ = run_stack(F.GRU_CELL, params, x, F.GRUState(zeros))
      >>> list(result[1][0]), bool(jnp.allclose(result[1][1]["h"], out[..., 5:], atol=1e-6))
      (['r', 'z', 'n', 'h'], True)
    """
    options = options or RecurrentOptions()
    directions = len(params[0])
    zoneout = options.zoneout_rates(initial_states._fields)
    zoneout = zoneout if any(zoneout) else None
    layer_input = x
    result = []
    for layer, layer_params in enumerate(params):
        layer_result = []
        for direction, direction_params in enumerate(layer_params):
            index = layer * directions + direction
            state = jax.tree.map(lambda leaf, i=index: leaf[i], initial_states)
            quantities, _ = run_layer(
                cell,
                direction_params,
                layer_input,
                state,
                seq_lengths=seq_lengths,
                reverse=direction == 1,
                unroll=options.unroll,
                zoneout=_zoneout_masks(None, zoneout, state, x.shape[0]),
                quantities=True,
            )
            layer_result.append(quantities)
        outputs = [q["h"] for q in layer_result]
        layer_input = jnp.concatenate(outputs, axis=-1) if directions > 1 else outputs[0]
        result.append(tuple(layer_result))
    return tuple(result)
