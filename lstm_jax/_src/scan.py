"""The loop over time: ``lax.scan`` of a cell's step, with the input projection hoisted.

The scan knows time and nothing of gates: it takes a :class:`~lstm_jax._src.cells.CellDef`.

Variable lengths follow torch's packed-sequence semantics. For row ``b`` with length
``n = seq_lengths[b]``, steps ``t >= n`` leave the state unchanged and output zeros. Run
forward, the final state is the one at step ``n - 1``. Run in reverse, the masked steps
``T-1 .. n`` come first and keep the initial state, so the reverse direction starts at
step ``n - 1`` from the initial state: exactly the valid prefix, reversed, with no flip.

Zoneout (Krueger et al. 2017) is a property of the state, not of the gates, so it lives
here: each new state field is ``z_t * old + (1 - z_t) * step(old)`` with ``z_t`` a
per-step mask (training) or the zoneout rate (evaluation), drawn by the caller and fed
as scan inputs. Variational dropout's per-sequence ``recurrent_mask`` is passed to the
cell's step unchanged at every step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from lstm_jax._src.cells import CellDef


def run_layer(
    cell: CellDef,
    params: Any,
    x: jax.Array,
    initial_state: Any,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    recurrent_mask: jax.Array | None = None,
    zoneout: Any | None = None,
) -> tuple[jax.Array, Any]:
    """Runs one layer in one direction over a time-major sequence.

    Args:
      cell: the cell kind, e.g. ``LSTM_CELL``.
      params: that cell's parameters for this layer and direction.
      x: ``[time, batch, input_size]``.
      initial_state: the cell's state pytree, leaves ``[batch, ...]``.
      seq_lengths: optional int32 ``[batch]``, each in ``1..time``; may be traced.
      reverse: run from the last valid step to the first.
      unroll: ``lax.scan``'s unroll factor.
      recurrent_mask: optional ``[batch, H_out]``, passed to every step (variational
        dropout: the same mask at each step).
      zoneout: optional state pytree like ``initial_state`` with leaves
        ``[time, batch, size]``: the weight of the old state in each new state.

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, H_out]`` (zero at padded
      steps) and the state after each row's last valid step.

    Example:
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> out, (h, c) = run_layer(LSTM_CELL, p, jnp.ones((7, 2, 3)), LSTM_CELL.zero_state(p, 2))
      >>> out.shape, bool(jnp.allclose(out[-1], h))
      ((7, 2, 5), True)
    """
    gates_x = cell.input_projection(params, x)  # one large product for all steps
    steps = jnp.arange(x.shape[0], dtype=jnp.int32)

    step_kwargs = {} if recurrent_mask is None else {"recurrent_mask": recurrent_mask}

    def body(state, inputs):
        gates_t, t, zoneout_t = inputs
        new_state = cell.step(params, gates_t, state, **step_kwargs)
        if zoneout_t is not None:
            new_state = jax.tree.map(
                lambda z, old, new: z * old + (1.0 - z) * new, zoneout_t, state, new_state
            )
        if seq_lengths is None:
            return new_state, new_state.h
        valid = (t < seq_lengths)[:, None]
        new_state = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_state, state)
        return new_state, jnp.where(valid, new_state.h, jnp.zeros_like(new_state.h))

    final_state, outputs = lax.scan(
        body, initial_state, (gates_x, steps, zoneout), reverse=reverse, unroll=unroll
    )
    return outputs, final_state
