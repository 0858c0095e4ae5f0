"""Layers and directions: multi-layer, bidirectional stacks with inter-layer dropout.

Layer ``k > 0`` takes layer ``k - 1``'s output; a bidirectional layer runs a forward and
a reverse direction with their own weights and concatenates their outputs on the
feature axis (forward first), as ``torch.nn.LSTM`` does. Dropout, when asked for, is
applied to the output of every layer but the last, again as torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax._src.cells import CellDef
from lstm_jax._src.scan import run_layer


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zeroes a fraction ``rate`` of ``x`` and scales the rest up.

    Example:
      >>> y = dropout(jax.random.key(0), jnp.ones((1000,)), 0.5)
      >>> sorted(set(y.tolist()))
      [0.0, 2.0]
    """
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def run_stack(
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    initial_states: Any,
    *,
    seq_lengths: jax.Array | None = None,
    dropout_rate: float = 0.0,
    key: jax.Array | None = None,
    unroll: int = 1,
) -> tuple[jax.Array, Any]:
    """Runs all layers and directions.

    Args:
      cell: the cell kind.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]``.
      initial_states: the cell's state pytree with leaves ``[layers * directions, batch, ...]``,
        ordered as torch's ``h_0``: index ``layer * directions + direction``.
      seq_lengths: optional int32 ``[batch]``.
      dropout_rate: dropout on each layer's output but the last's; applied only with a ``key``.
      key: PRNG key for dropout, or ``None`` for none.
      unroll: ``lax.scan``'s unroll factor.

    Returns:
      ``(outputs, final_states)``: ``outputs`` ``[time, batch, directions * H_out]`` and the
      final states stacked like ``initial_states``.
    """
    directions = len(params[0])
    layer_input = x
    final_states = []
    for layer, layer_params in enumerate(params):
        outputs = []
        for direction, direction_params in enumerate(layer_params):
            index = layer * directions + direction
            state = jax.tree.map(lambda leaf, i=index: leaf[i], initial_states)
            out, final = run_layer(
                cell,
                direction_params,
                layer_input,
                state,
                seq_lengths=seq_lengths,
                reverse=direction == 1,
                unroll=unroll,
            )
            outputs.append(out)
            final_states.append(final)
        layer_input = jnp.concatenate(outputs, axis=-1) if directions > 1 else outputs[0]
        if dropout_rate > 0.0 and key is not None and layer < len(params) - 1:
            key, layer_key = jax.random.split(key)
            layer_input = dropout(layer_key, layer_input, dropout_rate)
    return layer_input, jax.tree.map(lambda *leaves: jnp.stack(leaves), *final_states)
