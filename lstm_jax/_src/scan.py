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

from lstm_jax._src.cells import CellDef, recurrent_product_in_loop
from lstm_jax._src.custom_calls import match_batch_sharding, match_vma
from lstm_jax._src.types import Quantities


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
    checkpoint: int | None = None,
    quantities: bool = False,
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
      checkpoint: ``None`` keeps every step's activations for the backward pass; ``K``
        keeps only the state every ``K`` steps and recomputes each chunk of ``K`` steps in
        the backward pass (``jax.checkpoint`` over chunks of time): activation memory
        ``~T/K + K`` steps instead of ``T``, for about one more forward pass.
      quantities: output every named quantity of each step
        (:meth:`~lstm_jax._src.cells.CellDef.named_quantities`) instead of ``h`` alone;
        the state fields among them are the state as carried (after zoneout).

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, H_out]`` (with
      ``quantities``, a :class:`~lstm_jax.Quantities` of ``[time, batch, size]`` by
      name), zero at padded steps,
      and the state after each row's last valid step.

    Example:
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> out, (h, c) = run_layer(LSTM_CELL, p, jnp.ones((7, 2, 3)), LSTM_CELL.zero_state(p, 2))
      >>> out.shape, bool(jnp.allclose(out[-1], h))
      ((7, 2, 5), True)
      >>> q, _ = run_layer(LSTM_CELL, p, jnp.ones((7, 2, 3)), LSTM_CELL.zero_state(p, 2),
      ...                  quantities=True)
      >>> list(q), bool(jnp.allclose(q["h"], out))
      (['i', 'f', 'g', 'o', 'c', 'h'], True)
    """
    time = x.shape[0]
    # A zero state must vary over the shard_map axes the inputs vary over, and be split
    # over the batch like them under explicit sharding: a loop's carry keeps its type.
    initial_state = match_vma(initial_state, params, x, seq_lengths, recurrent_mask, zoneout)
    initial_state = match_batch_sharding(initial_state, x, 1, 0)
    if checkpoint is not None and seq_lengths is None and time % checkpoint:
        # the padded steps must leave the state alone: mask them like a short sequence
        seq_lengths = jnp.full(x.shape[1:2], time, jnp.int32)

    product = recurrent_product_in_loop(params)

    def body(state, inputs):
        gates_t, t, zoneout_t = inputs
        gates_h = product(state.h, recurrent_mask)
        if quantities:  # the step's math once: the new state is among its quantities
            named = cell.named_quantities(params, gates_t, gates_h, state)
            new_state = type(state)(*(named[field] for field in state._fields))
        else:
            new_state = cell.update(params, gates_t, gates_h, state)
        if zoneout_t is not None:
            new_state = jax.tree.map(
                lambda z, old, new: z * old + (1.0 - z) * new, zoneout_t, state, new_state
            )
        output = Quantities({**named, **new_state._asdict()}) if quantities else new_state.h
        if seq_lengths is None:
            return new_state, output
        valid = (t < seq_lengths)[:, None]
        new_state = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_state, state)
        return new_state, jax.tree.map(lambda y: jnp.where(valid, y, jnp.zeros_like(y)), output)

    def run_steps(state, inputs):
        x_steps, steps, zoneout_steps = inputs
        gates_x = cell.input_projection(params, x_steps)  # one large product for all steps
        return lax.scan(
            body, state, (gates_x, steps, zoneout_steps), reverse=reverse, unroll=unroll
        )

    if checkpoint is None:
        steps = jnp.arange(time, dtype=jnp.int32)
        final_state, outputs = run_steps(initial_state, (x, steps, zoneout))
        return outputs, final_state
    # Chunks of `checkpoint` steps, each recomputed in the backward pass from the state at
    # its start, its input projection included, so nothing of size [time, batch, gates] is
    # kept.
    chunks = -(-time // checkpoint)
    pad = chunks * checkpoint - time

    def to_chunks(a):
        a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape(chunks, checkpoint, *a.shape[1:])

    padded_steps = jnp.arange(time + pad, dtype=jnp.int32)  # t >= time: masked, no-ops
    inputs = (
        to_chunks(x),
        padded_steps.reshape(chunks, checkpoint),
        jax.tree.map(to_chunks, zoneout),
    )
    final_state, outputs = lax.scan(
        jax.checkpoint(run_steps), initial_state, inputs, reverse=reverse
    )
    outputs = jax.tree.map(lambda y: y.reshape(chunks * checkpoint, *y.shape[2:])[:time], outputs)
    return outputs, final_state
