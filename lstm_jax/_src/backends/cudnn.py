"""The cuDNN LSTM of ``jax.experimental.rnn`` behind the stack's call.

cuDNN keeps all weights in one flat vector: for each pseudo-layer ``layer * D +
direction`` its ``W_ih`` and ``W_hh``, then for each pseudo-layer ``b_ih`` and ``b_hh``,
gates in torch's order (i, f, g, o). :func:`pack_weights` builds that vector from
``params[layer][direction]``; autodiff through it returns the gradients in our layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from lstm_jax._src import fused
from lstm_jax._src.cells import LSTM_CELL, CellDef
from lstm_jax._src.types import LSTMParams, LSTMState


def unsupported_reason(
    cell: CellDef, params: Sequence[Sequence[object]], dtype, *, dropout: bool
) -> str | None:
    """Why cuDNN cannot run this configuration, or ``None`` when it can.

    Example:
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4, proj_size=2)
      >>> unsupported_reason(LSTM_CELL, p, jnp.float32, dropout=False)
      'cuDNN via jax.experimental.rnn has no projection (proj_size > 0)'
    """
    first = params[0][0]
    if cell is not LSTM_CELL:
        return "cuDNN runs the LSTM cell only"
    reason = next(
        filter(None, (fused.unsupported_reason(p) for layer in params for p in layer)), None
    )
    if reason is not None:
        return reason.replace("the fused kernel", "cuDNN")
    if first.weight_hr is not None:
        return "cuDNN via jax.experimental.rnn has no projection (proj_size > 0)"
    if jnp.dtype(dtype) != jnp.float32:
        return f"cuDNN via jax.experimental.rnn runs float32 only, got {jnp.dtype(dtype)}"
    if dropout:
        return "inter-layer dropout is not supported by the cuDNN backend"
    if jax.default_backend() != "gpu":
        return f"cuDNN needs a GPU, the default backend is {jax.default_backend()!r}"
    from jax.experimental import rnn

    if getattr(rnn, "gpu_rnn", None) is None:
        return "this jaxlib has no cuDNN RNN kernels"
    return None


def pack_weights(params: Sequence[Sequence[LSTMParams]]) -> jax.Array:
    """Flattens ``params[layer][direction]`` into cuDNN's weight vector.

    Missing biases (``bias=False``) become zeros.

    Example:
      >>> from jax.experimental import rnn
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4, num_layers=2, bidirectional=True)
      >>> pack_weights(p).shape == (rnn.get_num_params_in_lstm(3, 4, 2, True),)
      True
    """
    layers = [p for layer in params for p in layer]
    weights = [w for p in layers for w in (p.weight_ih, p.weight_hh)]
    biases = []
    for p in layers:
        zeros = jnp.zeros(p.weight_hh.shape[:1], p.weight_hh.dtype)
        biases += [
            zeros if p.bias_ih is None else p.bias_ih,
            zeros if p.bias_hh is None else p.bias_hh,
        ]
    return jnp.concatenate([a.reshape(-1) for a in weights + biases])


def run_cudnn_stack(
    params: Sequence[Sequence[LSTMParams]],
    x: jax.Array,
    initial_states: LSTMState,
    *,
    seq_lengths: jax.Array | None = None,
) -> tuple[jax.Array, LSTMState]:
    """Runs the whole stack with cuDNN; :func:`~lstm_jax._src.stack.run_stack`'s contract.

    Args:
      params: ``params[layer][direction]`` of the plain LSTM, float32, no projection.
      x: ``[time, batch, input_size]``.
      initial_states: :class:`LSTMState` with fields ``[layers * directions, batch, H]``.
      seq_lengths: optional int32 ``[batch]``.

    Returns:
      ``(outputs [time, batch, directions * H], final LSTMState)``.
    """
    from jax.experimental import rnn

    num_layers, directions = len(params), len(params[0])
    first = params[0][0]
    hidden_size = first.weight_hh.shape[1]
    time, batch, input_size = x.shape
    if seq_lengths is None:
        seq_lengths = jnp.full((batch,), time, jnp.int32)
    y, h_n, c_n = rnn.lstm(
        jnp.swapaxes(x, 0, 1),
        initial_states.h,
        initial_states.c,
        pack_weights(params),
        seq_lengths.astype(jnp.int32),
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=0.0,
        bidirectional=directions == 2,
    )
    return jnp.swapaxes(y, 0, 1), LSTMState(h_n, c_n)
