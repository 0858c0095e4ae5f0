r"""The GRU and RNN layers with a hand-written backward pass whose loops run as native CPU
code.

``torch.nn.GRU``'s cell (``r, z, n``; the reset gate multiplies ``W_hn h + b_hn``) and
``torch.nn.RNN``'s (``tanh`` or ``relu``). On CPU, for float32, the forward loop (input
projection included) and the backward loop (input and weight gradients per chunk of
steps) are the native calls of :mod:`lstm_jax._src.native.lstm_cpu`, built like the
LSTM's; lowered for any other platform, and for derivatives of the native calls (a
gradient of a gradient), the same computation runs as the XLA loops below. Each native
call is wrapped by :func:`~lstm_jax._src.custom_calls.batch_parallel` (sharded along the
batch under ``jit``, folded under ``vmap``, typed for ``jax.shard_map``).

Where the native loops cannot run (another dtype, no native library, inside
:func:`~lstm_jax._src.fused.portable_kernels`), :func:`native_unsupported_reason` says
why and the fused kernel runs the layer derived from the cell's definition
(:mod:`lstm_jax._src.fused_cells`) instead.

Semantics are those of :func:`~lstm_jax._src.scan.run_layer` with the same cell,
``seq_lengths`` and the reverse direction included: a direction runs in execution order as
in :mod:`lstm_jax._src.fused` (a reverse direction's input flipped in time, its padded
steps first, keeping the initial state).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lstm_jax._src import custom_calls, fused
from lstm_jax._src.cells import GRU_CELL, RNN_RELU_CELL, RNN_TANH_CELL
from lstm_jax._src.native import lstm_cpu
from lstm_jax._src.types import GRUParams, RNNParams

# The cells these loops run, with their parameters' type (the native calls name a cell
# by its name).
_CELLS = ((GRU_CELL, GRUParams), (RNN_TANH_CELL, RNNParams), (RNN_RELU_CELL, RNNParams))


class _Weights(NamedTuple):
    """One layer's weights with the directions stacked: ``[D, ...]``."""

    w_ih: jax.Array  # [D, gH, I], gates in torch's order
    w_hh: jax.Array  # [D, gH, H]
    bias: jax.Array  # [D, bH], lstm_cpu.cell_forward's layout


def runs_cell(cell, params) -> bool:
    """Whether these loops compute ``cell`` (``torch.nn.GRU``'s or ``torch.nn.RNN``'s)
    with parameters of this type."""
    return any(cell == c and type(params) is t for c, t in _CELLS)


def native_unsupported_reason(cell, params, dtypes) -> str | None:
    """Why a layer of ``cell`` cannot run as these native loops, or ``None`` when it can.

    Example:
      >>> from lstm_jax._src.init import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> native_unsupported_reason(GRU_CELL, p, [jnp.bfloat16])
      'the native loops run float32 only, got bfloat16'
    """
    if not runs_cell(cell, params):
        return "the native loops run torch.nn.GRU's and torch.nn.RNN's cells only"
    return fused.native_unsupported_reason(dtypes, projection=False)


def _stack_weights(kind: str, params: tuple) -> _Weights:
    def stacked(name):
        return jnp.stack([getattr(p, name) for p in params])

    w_ih, w_hh = stacked("weight_ih"), stacked("weight_hh")
    zeros = jnp.zeros(w_hh.shape[:2], w_hh.dtype)
    b_ih = zeros if params[0].bias_ih is None else stacked("bias_ih")
    b_hh = zeros if params[0].bias_hh is None else stacked("bias_hh")
    if kind != GRU_CELL.name:
        return _Weights(w_ih, w_hh, b_ih + b_hh)
    h2 = 2 * w_hh.shape[-1]  # r and z take both biases; n takes b_hn inside r * (...)
    bias = jnp.concatenate([b_ih[:, :h2] + b_hh[:, :h2], b_ih[:, h2:], b_hh[:, h2:]], -1)
    return _Weights(w_ih, w_hh, bias)


def _step(kind, gx, gh, bias, h_prev):
    """``(h_new, acts)`` of one step from ``gx = x W_ih^T``, ``gh = h_prev W_hh^T``."""
    if kind == RNN_TANH_CELL.name:
        h_new = jnp.tanh(gx + gh + bias)
        return h_new, h_new
    if kind == RNN_RELU_CELL.name:
        h_new = jax.nn.relu(gx + gh + bias)
        return h_new, h_new
    h = h_prev.shape[-1]
    r = jax.nn.sigmoid(gx[..., :h] + gh[..., :h] + bias[..., :h])
    z = jax.nn.sigmoid(gx[..., h : 2 * h] + gh[..., h : 2 * h] + bias[..., h : 2 * h])
    hn = gh[..., 2 * h :] + bias[..., 3 * h :]
    n = jnp.tanh(gx[..., 2 * h :] + bias[..., 2 * h : 3 * h] + r * hn)
    return (1 - z) * n + z * h_prev, jnp.concatenate([r, z, n, hn], -1)


def _step_gradients(kind, acts, dm, h_prev):
    """``(dgates_x, dgates_h, direct)``: the gradients of a step's input and recurrent
    products from that of its new state ``dm``, and the part of ``dh_prev`` that skips
    ``W_hh``; ``None`` for none."""
    if kind == RNN_TANH_CELL.name:
        d = dm * (1 - acts * acts)
        return d, d, None
    if kind == RNN_RELU_CELL.name:
        d = jnp.where(acts > 0, dm, jnp.zeros_like(dm))  # jax.nn.relu's derivative
        return d, d, None
    r, z, n, hn = jnp.split(acts, 4, axis=-1)
    dn = dm * (1 - z) * (1 - n * n)
    dr = dn * hn * r * (1 - r)
    dz = dm * (h_prev - n) * z * (1 - z)
    return jnp.concatenate([dr, dz, dn], -1), jnp.concatenate([dr, dz, dn * r], -1), dm * z


def _xla_forward(kind, w, x, valid, h0, unroll, save):
    """:func:`_forward` as an XLA loop."""
    dtype = w.w_hh.dtype
    bias = w.bias[:, None]
    gx = fused.direction_product("dtbi,dgi->dtbg", x, w.w_ih, dtype)

    def body(h_prev, inputs):
        gx_t, valid_t = inputs
        gh = fused.direction_product("dbk,dgk->dbg", h_prev, w.w_hh, dtype)
        h_new, acts = _step(kind, gx_t, gh, bias, h_prev)
        y = h_new
        if valid_t is not None:
            v = valid_t[..., None]
            h_new, y = jnp.where(v, h_new, h_prev), jnp.where(v, h_new, jnp.zeros_like(h_new))
        return h_new, (y, acts if save else None)

    xs = (jnp.moveaxis(gx, 1, 0), None if valid is None else jnp.moveaxis(valid, 1, 0))
    h_t, (y, acts) = lax.scan(body, h0, xs, unroll=unroll)
    return jnp.moveaxis(y, 0, 1), h_t, None if acts is None else jnp.moveaxis(acts, 0, 1)


# Batch axes of the native calls' arguments and results (``None``: shared weights, or
# weight gradients summed over rows), for ``custom_calls.batch_parallel``.
_FORWARD_IN_AXES = (2, None, None, None, 1, 2)  # x, w_ih, bias, w_hh, h0, valid
_FORWARD_OUT_AXES = (2, 1, 2)  # y, h_T, acts
_BACKWARD_IN_AXES = (2, 2, 1, None, None, 2, 2, 2)  # acts, dy, dh_T, w_hh, w_ih, x, h_prev, valid
_BACKWARD_OUT_AXES = (2, None, None, None, 1)  # dx, dW_ih, dW_hh, dbias, dh0


def _native_forward(kind, w, x, valid, h0, save):
    def rows(*args):
        y, h_t, acts = lstm_cpu.cell_forward(kind, *args, save)
        return (y, h_t, acts) if save else (y, h_t)

    out_axes = _FORWARD_OUT_AXES if save else _FORWARD_OUT_AXES[:2]
    outs = custom_calls.batch_parallel(rows, _FORWARD_IN_AXES, out_axes)(
        x, w.w_ih, w.bias, w.w_hh, h0, valid
    )
    return outs if save else (*outs, None)


def _forward(kind, w, x, valid, h0, unroll, save):
    """``(y [D, T, B, H], h_T [D, B, H], acts or None)``: the loop over ``x`` ``[D, T, B,
    I]`` in execution order, ``acts`` as :func:`lstm_cpu.cell_forward` stores them."""
    xla = functools.partial(_xla_forward, kind, unroll=unroll, save=save)
    native = functools.partial(_native_forward, kind, save=save)
    return custom_calls.native_on_cpu(xla, native)(w, x, valid, h0)


def _xla_backward(kind, w, x, valid, h_prev, acts, dy, dh_t, unroll):
    """:func:`_backward` as an XLA loop, then one product per gradient over all steps."""
    dtype = w.w_hh.dtype

    def body(dh, inputs):
        dy_t, acts_t, h_prev_t, valid_t = inputs
        dm = dh + dy_t
        if valid_t is not None:
            v = valid_t[..., None]
            dm = jnp.where(v, dm, jnp.zeros_like(dm))
        dgates_x, dgates_h, direct = _step_gradients(kind, acts_t, dm, h_prev_t)
        dh_prev = fused.direction_product("dbg,dgk->dbk", dgates_h, w.w_hh, dtype)
        if direct is not None:
            dh_prev = direct + dh_prev
        if valid_t is not None:  # a padded step passes the gradient through, adds its own
            dh_prev = jnp.where(v, dh_prev, dh + dh_prev)
        return dh_prev, (dgates_x, dgates_h)

    xs = tuple(None if a is None else jnp.moveaxis(a, 1, 0) for a in (dy, acts, h_prev, valid))
    dh0, (dgates_x, dgates_h) = lax.scan(body, dh_t, xs, reverse=True, unroll=unroll)
    dgates_x, dgates_h = jnp.moveaxis(dgates_x, 0, 1), jnp.moveaxis(dgates_h, 0, 1)
    dx = fused.direction_product("dtbg,dgi->dtbi", dgates_x, w.w_ih, dtype)
    dw_ih = fused.direction_product("dtbg,dtbi->dgi", dgates_x, x, dtype)
    dw_hh = fused.direction_product("dtbg,dtbk->dgk", dgates_h, h_prev, dtype)
    dbias = jnp.sum(dgates_x, axis=(1, 2))
    if kind == GRU_CELL.name:  # and b_hn's, from n's recurrent part
        h2 = 2 * h_prev.shape[-1]
        dbias = jnp.concatenate([dbias, jnp.sum(dgates_h[..., h2:], axis=(1, 2))], -1)
    return dx, dw_ih, dw_hh, dbias, dh0


def _native_backward(kind, w, x, valid, h_prev, acts, dy, dh_t):
    run = custom_calls.batch_parallel(
        functools.partial(lstm_cpu.cell_backward, kind), _BACKWARD_IN_AXES, _BACKWARD_OUT_AXES
    )
    return run(acts, dy, dh_t, w.w_hh, w.w_ih, x, h_prev, valid)


def _backward(kind, w, x, valid, h_prev, acts, dy, dh_t, unroll):
    """``(dx, dW_ih, dW_hh, dbias, dh0)`` of :func:`_forward`."""
    xla = functools.partial(_xla_backward, kind, unroll=unroll)
    native = functools.partial(_native_backward, kind)
    return custom_calls.native_on_cpu(xla, native)(w, x, valid, h_prev, acts, dy, dh_t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _layer(kind, unroll, w, x, valid, h0):
    y, h_t, _ = _forward(kind, w, x, valid, h0, unroll, save=False)
    return y, h_t


def _layer_fwd(kind, unroll, w, x, valid, h0):
    y, h_t, acts = _forward(kind, w, x, valid, h0, unroll, save=True)
    return (y, h_t), (w, x, valid, h0, y, acts)


def _layer_bwd(kind, unroll, residuals, cotangents):
    w, x, valid, h0, y, acts = residuals
    dy, dh_t = cotangents
    h_prev = fused.previous_state(y, h0, valid)
    dx, dw_ih, dw_hh, dbias, dh0 = _backward(kind, w, x, valid, h_prev, acts, dy, dh_t, unroll)

    def cotangent(g, p):  # the primal's dtype, and its variance inside shard_map
        return custom_calls.sum_to_vma(g.astype(p.dtype), p)

    dw = jax.tree.map(cotangent, _Weights(dw_ih, dw_hh, dbias), w)
    return dw, cotangent(dx, x), None, cotangent(dh0, h0)


_layer.defvjp(_layer_fwd, _layer_bwd)


def run_native_layer(
    cell,
    params,
    x: jax.Array,
    initial_state,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
):
    """One GRU or RNN layer in one direction with native CPU loops: the contract of
    ``scan.run_layer(cell, ...)``.

    Args:
      cell: ``GRU_CELL``, ``RNN_TANH_CELL`` or ``RNN_RELU_CELL``.
      params: one layer's :class:`GRUParams` or :class:`RNNParams`, float32.
      x: ``[time, batch, input_size]``.
      initial_state: the cell's state, ``h`` ``[batch, hidden_size]``.
      seq_lengths: optional int32 ``[batch]`` in ``1..time``.
      reverse: run from each row's last valid step to the first.
      unroll: unroll factor of the XLA loops (other platforms, second-order derivatives).

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, hidden_size]`` (zero at
      padded steps) and the final state, of ``initial_state``'s type.

    Raises:
      ValueError: for a cell these loops do not run.

    Example:
      >>> from lstm_jax._src.init import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> x = jnp.ones((7, 2, 3), jnp.float32)
      >>> out, (h,) = run_native_layer(GRU_CELL, p, x, GRU_CELL.zero_state(p, 2))
      >>> out.shape, bool(jnp.allclose(out[-1], h))
      ((7, 2, 5), True)
    """
    if not runs_cell(cell, params):
        raise ValueError(native_unsupported_reason(cell, params, []))
    w = _stack_weights(cell.name, (params,))
    x_exec, valid = fused.execution_order(x, (bool(reverse),), seq_lengths)
    h0 = initial_state.h[None]
    # A zero state must vary over the shard_map axes the inputs vary over, and be split
    # over the batch like them under explicit sharding: a loop's carry keeps its type.
    h0 = custom_calls.match_vma(h0, w, x_exec, valid)
    h0 = custom_calls.match_batch_sharding(h0, x_exec, 2, 1)
    y, h_t = _layer(cell.name, int(unroll), w, x_exec, valid, h0)
    return (jnp.flip(y[0], 0) if reverse else y[0]), type(initial_state)(h_t[0])
