"""The fused layer (hand-written backward, weight gradients outside the time loop) and
its native CPU loops.

For ``torch.nn.LSTM``'s cell (projection included), with or without peepholes and CIFG,
the layer is :mod:`lstm_jax._src.fused`, whose loops run as native CPU code where
:data:`NATIVE_CPU` supports the layer; for ``torch.nn.GRU``'s and ``torch.nn.RNN``'s
cells where the native loops run, :mod:`lstm_jax._src.fused_gru_rnn`; for every other
cell (variants, a user's own), for the GRU and the RNN elsewhere and for any cell with
variational recurrent dropout, the layer derived from the cell's definition,
:mod:`lstm_jax._src.fused_cells`.
"""

from __future__ import annotations

import jax

from lstm_jax._src import fused, fused_cells, fused_gru_rnn
from lstm_jax._src.backends.kernel import Kernel, LayerPlan
from lstm_jax._src.cells import LSTM_CELL


def _hand_written_lstm(cell, layer_params) -> bool:
    """Whether the hand-written LSTM layer can run these parameters of ``cell``.

    Cells compare by value: a copied or unpickled cell runs what the original runs.
    """
    return cell == LSTM_CELL and fused.unsupported_reason(layer_params) is None


def _layers(params):
    return [p for layer in params for p in layer]


class NativeCpuKernel(Kernel):
    """The fused LSTM, GRU and RNN layers' loops as native CPU code: a sub-kernel of
    :data:`FUSED`, never asked for by name; where it supports a layer, the fused
    kernel's CPU lowering runs it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4, layer_norm=True)
      >>> NATIVE_CPU.supports(LSTM_CELL, p, LayerPlan(jnp.dtype(jnp.float32)))
      'the native loops run the LSTM (not with layer norm), GRU and RNN cells only'
    """

    name = "native_cpu"

    def supports(self, cell, params, plan: LayerPlan):
        layers = _layers(params)
        if all(_hand_written_lstm(cell, p) for p in layers):
            projection = layers[0].weight_hr is not None
        elif all(fused_gru_rnn.runs_cell(cell, p) for p in layers):
            projection = False
        else:
            return "the native loops run the LSTM (not with layer norm), GRU and RNN cells only"
        if plan.recurrent_dropout:
            return "the native loops have no recurrent dropout mask"
        return fused.native_unsupported_reason([plan.dtype], projection)


class FusedKernel(Kernel):
    """The fused layer: every cell, products outside the loops, XLA loops on every
    platform and native loops on CPU.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4)
      >>> FUSED.supports(LSTM_CELL, p, LayerPlan(jnp.dtype(jnp.float32), zoneout=True))
      'zoneout mixes old and new state inside each step: use the scan'
    """

    name = "fused"
    auto_platforms = ("cpu",)
    auto_note = "its XLA loops were measured faster than the scan on CPU only"

    def supports(self, cell, params, plan: LayerPlan):
        if plan.zoneout:
            return "zoneout mixes old and new state inside each step: use the scan"
        for p in _layers(params):
            if _hand_written_lstm(cell, p) and not plan.recurrent_dropout:
                continue  # the hand-written LSTM layer, checkpointing included
            reason = fused_cells.unsupported_reason(cell, p)
            if reason is not None:
                return reason
            if plan.checkpoint is not None:
                return (
                    "the fused kernel checkpoints the LSTM (not with layer norm) without "
                    "recurrent dropout only: use the scan"
                )
        return None

    def run_layer(self, cell, params, x, state, plan: LayerPlan):
        if plan.recurrent_mask is None and _hand_written_lstm(cell, params):
            return fused.run_fused_layer(
                params,
                x,
                state,
                seq_lengths=plan.seq_lengths,
                reverse=plan.reverse,
                unroll=plan.unroll,
                checkpoint=plan.checkpoint,
            )
        dtypes = [a.dtype for a in jax.tree.leaves((params, x, state))]
        native = fused_gru_rnn.native_unsupported_reason(cell, params, dtypes) is None
        if plan.recurrent_mask is None and native:
            return fused_gru_rnn.run_native_layer(
                cell,
                params,
                x,
                state,
                seq_lengths=plan.seq_lengths,
                reverse=plan.reverse,
                unroll=plan.unroll,
            )
        return fused_cells.run_fused_cell_layer(
            cell, params, x, state, **plan.direction_options(), unroll=plan.unroll
        )


FUSED = FusedKernel()
NATIVE_CPU = NativeCpuKernel()
