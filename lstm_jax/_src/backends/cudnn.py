"""The cuDNN LSTM of ``jax.experimental.rnn`` behind the stack's call.

cuDNN keeps all weights in one flat vector: for each pseudo-layer ``layer * D +
direction`` its ``W_ih`` and ``W_hh``, then for each pseudo-layer ``b_ih`` and ``b_hh``,
gates in torch's order (i, f, g, o). :func:`pack_weights` builds that vector from
``params[layer][direction]``; autodiff through it returns the gradients in our layout.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lstm_jax._src import custom_calls
from lstm_jax._src.backends.kernel import Kernel, LayerPlan
from lstm_jax._src.cells import LSTM_CELL, CellDef, lstm_variants
from lstm_jax._src.types import LSTMParams, LSTMState


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


class CudnnConfig(NamedTuple):
    """The static sizes of one cuDNN LSTM call."""

    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool


def _cudnn_forward(x, h_0, c_0, weights, seq_lengths, config: CudnnConfig):
    """cuDNN's forward, ``rnn.lstm_fwd``: ``((y, h_n, c_n), residuals)``.

    This and :func:`_cudnn_backward` are the only calls into cuDNN (tests without a GPU
    substitute a reference of the same contract). ``x`` is batch-first
    ``[batch, time, input_size]``, ``h_0`` and ``c_0`` ``[layers * directions, batch, H]``,
    ``seq_lengths`` int32 ``[batch]`` in ``1..time``; ``y`` is ``[batch, time, D * H]``.
    """
    from jax.experimental import rnn

    return rnn.lstm_fwd(
        x, h_0, c_0, weights, seq_lengths, **config._asdict(), dropout=0.0, precision=None
    )


def _cudnn_backward(residuals, cotangents, config: CudnnConfig):
    """cuDNN's backward, ``rnn.lstm_bwd``: ``(dx, dh_0, dc_0, dweights)``."""
    from jax.experimental import rnn

    c = config
    dx, dh_0, dc_0, dw, _ = rnn.lstm_bwd(
        c.input_size,
        c.hidden_size,
        c.num_layers,
        0.0,
        c.bidirectional,
        None,
        residuals,
        cotangents,
    )
    return dx, dh_0, dc_0, dw


SECOND_ORDER_ERROR = (
    "cuDNN's LSTM backward has no derivative: use backend='fused' or 'scan' for "
    "higher-order gradients (grad of grad, hessian, forward mode over a gradient)"
)


@jax.custom_jvp
def _first_order_only(tree):
    """The identity, whose derivative is an error: cuDNN's kernels have no derivative rule."""
    return tree


@_first_order_only.defjvp
def _first_order_only_jvp(primals, tangents):
    raise NotImplementedError(SECOND_ORDER_ERROR)


# Batch axes of the forward's arguments and outputs (``None``: the shared weights), for
# ``custom_calls.batch_parallel``.
_FORWARD_IN_AXES = (0, 1, 1, None, 0)  # x, h_0, c_0, weights, seq_lengths
_FORWARD_OUT_AXES = (0, 1, 1)  # y, h_n, c_n


@functools.cache
def _cudnn_lstm(config: CudnnConfig):
    """``f(x, h_0, c_0, weights, seq_lengths) -> (y, h_n, c_n)`` on cuDNN, made to compose.

    * ``vmap``: cuDNN's primitives have no batching rule. Without a derivative the rows
      are independent, so a vmapped batch whose weights are shared is folded into
      cuDNN's batch (one call on ``n * batch`` rows), and vmapped weights run one call
      per example (:func:`~lstm_jax._src.custom_calls.batch_parallel`, which also splits
      the batch over devices under ``jit``). Differentiated under ``vmap``, forward and
      backward run one call per example: cuDNN's weight gradient is a sum over its
      batch, and each example needs its own.
    * ``grad``: cuDNN's own backward, on the forward's saved reserve space. Where there
      are several devices, forward and backward are each split along the batch instead
      (``batch_parallel``: each device its own rows, the weight gradient all-reduced),
      and the backward recomputes the forward on its rows: the reserve space is opaque
      and sized for the batch of its call, so it cannot be a residual split over
      devices. That costs one more forward pass per step.
    * Second order: cuDNN's backward has no derivative; differentiating it (or the
      forward inside a gradient) raises ``NotImplementedError`` saying so.
    """

    def forward(x, h_0, c_0, weights, seq_lengths):
        return _cudnn_forward(x, h_0, c_0, weights, seq_lengths, config)[0]

    primal = custom_calls.batch_parallel(forward, _FORWARD_IN_AXES, _FORWARD_OUT_AXES)
    # The residuals hold cuDNN's reserve space, opaque and sized for the whole batch: no
    # batch axis to fold or split along.
    forward_with_residuals = jax.custom_batching.sequential_vmap(
        lambda *args: _cudnn_forward(*args, config)
    )
    backward = jax.custom_batching.sequential_vmap(
        lambda residuals, cotangents: _cudnn_backward(residuals, cotangents, config)
    )

    def backward_rows(x, h_0, c_0, weights, seq_lengths, dy, dh_n, dc_n):
        _, residuals = _cudnn_forward(x, h_0, c_0, weights, seq_lengths, config)
        return _cudnn_backward(residuals, (dy, dh_n, dc_n), config)

    recomputing_backward = custom_calls.batch_parallel(
        backward_rows, _FORWARD_IN_AXES + _FORWARD_OUT_AXES, (0, 1, 1, None)
    )

    @jax.custom_vjp
    def lstm(x, h_0, c_0, weights, seq_lengths):
        return primal(x, h_0, c_0, weights, seq_lengths)

    def lstm_fwd(x, h_0, c_0, weights, seq_lengths):
        x, h_0, c_0, weights = _first_order_only((x, h_0, c_0, weights))
        inputs = (x, h_0, c_0, weights, seq_lengths)
        if jax.device_count() > 1:
            return primal(*inputs), (inputs, None)
        out, reserved = forward_with_residuals(*inputs)
        return out, (inputs, reserved)

    def lstm_bwd(residuals, cotangents):
        (inputs, reserved), cotangents = _first_order_only((residuals, cotangents))
        if reserved is None:
            grads = recomputing_backward(*inputs, *cotangents)
        else:
            grads = backward(reserved, cotangents)
        # inside shard_map: the weights' gradient is summed over the shards
        return (*map(custom_calls.sum_to_vma, grads, inputs[:4]), None)

    lstm.defvjp(lstm_fwd, lstm_bwd)
    return lstm


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
      seq_lengths: optional int32 ``[batch]``. Checked to lie in ``1..time`` only where
        concrete; cuDNN is given them clamped to ``1..time`` and a row of length ``<= 0``
        then comes out as the scan makes it: zero outputs, final state = initial state.

    Returns:
      ``(outputs [time, batch, directions * H], final LSTMState)``.

    Under ``vmap`` and ``grad`` it behaves as described in :func:`_cudnn_lstm`; a second
    derivative raises ``NotImplementedError`` (use ``backend="fused"`` or ``"scan"``).
    """
    num_layers, directions = len(params), len(params[0])
    first = params[0][0]
    time, batch, input_size = x.shape
    config = CudnnConfig(input_size, first.weight_hh.shape[1], num_layers, directions == 2)
    h_0, c_0 = initial_states.h, initial_states.c
    if seq_lengths is None:
        lengths = jnp.full((batch,), time, jnp.int32)
    else:  # cuDNN must never see a length outside 1..time: a traced 0 crashes it
        seq_lengths = jnp.asarray(seq_lengths)
        lengths = jnp.clip(seq_lengths, 1, time).astype(jnp.int32)
    y, h_n, c_n = _cudnn_lstm(config)(
        jnp.swapaxes(x, 0, 1), h_0, c_0, pack_weights(params), lengths
    )
    y = jnp.swapaxes(y, 0, 1)
    if seq_lengths is not None:  # as the scan: an empty row outputs zeros, keeps its state
        empty = seq_lengths <= 0
        y = jnp.where(empty[None, :, None], jnp.zeros_like(y), y)
        h_n = jnp.where(empty[None, :, None], h_0, h_n)
        c_n = jnp.where(empty[None, :, None], c_0, c_n)
    return y, LSTMState(h_n, c_n)


class CudnnKernel(Kernel):
    """cuDNN's LSTM (``jax.experimental.rnn``) for whole stacks, on a GPU.

    Example:
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4, proj_size=2)
      >>> CUDNN.supports(LSTM_CELL, p, LayerPlan(jnp.dtype(jnp.float32)))
      'cuDNN via jax.experimental.rnn has no projection (proj_size > 0)'
    """

    name = "cudnn"
    auto_platforms = ("gpu",)
    runs_stack = True

    def supports(self, cell: CellDef, params, plan: LayerPlan) -> str | None:
        if cell != LSTM_CELL:
            return "cuDNN runs the LSTM cell only"
        variants = sorted({v for layer in params for p in layer for v in lstm_variants(p)})
        if variants:
            return f"cuDNN runs torch.nn.LSTM's plain cell only, got {', '.join(variants)}"
        if params[0][0].weight_hr is not None:
            return "cuDNN via jax.experimental.rnn has no projection (proj_size > 0)"
        if jnp.dtype(plan.dtype) != jnp.float32:
            return f"cuDNN via jax.experimental.rnn runs float32 only, got {jnp.dtype(plan.dtype)}"
        if plan.dropout or plan.recurrent_dropout or plan.zoneout:
            return "cuDNN via jax.experimental.rnn takes no dropout or zoneout: use the scan"
        if plan.checkpoint is not None:
            return "cuDNN has no activation checkpointing: use the scan or fused kernel"
        if jax.default_backend() != "gpu":
            return f"cuDNN needs a GPU, the default backend is {jax.default_backend()!r}"
        from jax.experimental import rnn

        if getattr(rnn, "gpu_rnn", None) is None:
            return "this jaxlib has no cuDNN RNN kernels"
        return None

    def run_stack(self, cell, params, x, states, plan: LayerPlan):
        return run_cudnn_stack(params, x, states, seq_lengths=plan.seq_lengths)


CUDNN = CudnnKernel()
