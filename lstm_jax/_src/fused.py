r"""A fused LSTM layer with a hand-written backward pass (``jax.custom_vjp``).

Autodiff of :func:`~lstm_jax._src.scan.run_layer` computes the weight gradients as one
small matrix product per step inside the backward loop. This layer keeps only what
must be sequential inside the loops and moves every other product outside them:

- forward loop: ``h_{t-1} @ W_hh^T`` and the gate math; when training, the input
  projection ``x @ W_ih^T`` for all steps is one product before the loop (a forward
  pass without gradients at batch >= 8 projects each step inside the loop and stores
  nothing);
- backward loop: the recurrence of the gate gradients, ``dz_t @ W_hh`` and the gate
  derivatives; the input gradient ``dx = dZ @ W_ih`` and the weight gradients
  ``dW_ih = dZ^T x``, ``dW_hh = dZ^T h_{prev}``, ``db = sum dZ`` (and ``dW_hr`` with a
  projection) are single products over all steps after the loop.

The cell is ``torch.nn.LSTM``'s, with optional peepholes (``w_ci``, ``w_cf``, ``w_co``:
``i`` and ``f`` see ``c_{t-1}``, ``o`` sees ``c_t``; their gradients are sums over the
steps and rows) and coupled input-forget gates (CIFG, run as the four-gate cell whose
input gate's block is the forget gate's negated: ``1 - sigmoid(z) = sigmoid(-z)``). The
forward loop stores the gate activations ``(i, f, g, o)`` and the cell state of every
step for the backward loop. With ``checkpoint=K`` it stores only the state every ``K``
steps and recomputes each chunk's activations in the backward pass (the effect of
``jax.checkpoint`` over chunks of time), so memory for activations falls from ``O(T)`` to
``O(T / K + K)`` per layer at the cost of a second forward pass.

Directions run in *execution order*: a layer's ``D`` directions (1, or 2 for a
bidirectional layer) are stacked on a leading axis and the reverse direction's input is
flipped in time, so one loop advances both directions at once with batched products.

On CPU, for float32 without a projection, every variant above, of any hidden size, the
forward and backward passes run as native code (:mod:`lstm_jax._src.native.lstm_cpu`,
XLA FFI calls compiled on first use): the forward loop computes each step's recurrent
product and input projection (per chunk of steps where the weights outgrow the cache) as
register-blocked products with the gate math applied to them in cache, and the backward
call computes the input and weight gradients per chunk of steps. Elsewhere, and for
derivatives of the native calls themselves (second-order gradients), the XLA loops below
run. Each native call is wrapped by :func:`~lstm_jax._src.custom_calls.batch_parallel`:
sharded along the batch under ``jit`` (each device its own rows, weight gradients
all-reduced), folded into one call under ``vmap``, and typed for ``jax.shard_map``.

Semantics are those of :func:`~lstm_jax._src.scan.run_layer`, ``seq_lengths`` included:
padded steps keep the state and output zeros, and the reverse direction runs over each
row's valid prefix. Precision follows :mod:`~lstm_jax._src.cells`: products run in the
parameters' dtype and accumulate in at least float32, the state and the stored
activations are kept in the accumulation dtype.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lstm_jax._src import compat, custom_calls
from lstm_jax._src.cells import accumulation_dtype, lstm_is_cifg, lstm_variants
from lstm_jax._src.native import lstm_cpu
from lstm_jax._src.types import LSTMParams, LSTMState


class _Weights(NamedTuple):
    """One layer's weights with the directions stacked: ``[D, ...]``."""

    w_ih: jax.Array  # [D, 4H, I]
    w_hh: jax.Array  # [D, 4H, P]
    bias: jax.Array | None  # [D, 4H], b_ih + b_hh
    w_hr: jax.Array | None  # [D, P, H]
    peep: jax.Array | None = None  # [D, 3, H]: w_ci, w_cf, w_co (zeros for an absent one)


def direction_product(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """``einsum`` over a leading direction axis ``d``, operands in ``dtype``, accumulated
    in :func:`accumulation_dtype`.

    One plain product per direction: XLA:CPU runs a batched product of two directions
    markedly slower than two products (measured).
    """
    spec = spec.replace("d", "")
    summed = "b" not in spec.split("->")[1]  # a weight gradient: a sum over the batch
    options = custom_calls.summed_out_sharding(a) if summed else {}
    return jnp.stack(
        [
            compat.einsum(
                spec,
                a_d.astype(dtype),
                b_d.astype(dtype),
                preferred_element_type=accumulation_dtype(dtype),
                **options,
            )
            for a_d, b_d in zip(a, b, strict=True)
        ]
    )


def _gates(z: jax.Array) -> jax.Array:
    """Activations ``[i, f, g, o]`` of pre-activations ``z`` ``[..., 4H]``.

    One ``tanh`` over all four gates, using ``sigmoid(x) = (tanh(x / 2) + 1) / 2``: no
    split and concatenation, and the fastest form on CPU in our measurements.
    """
    scale = _per_gate(z, (0.5, 0.5, 1.0, 0.5))
    offset = _per_gate(z, (0.5, 0.5, 0.0, 0.5))
    return jnp.tanh(z * scale) * scale + offset


def _per_gate(like: jax.Array, values: tuple[float, float, float, float]) -> np.ndarray:
    """A constant broadcastable against ``like`` ``[..., 4H]``: ``values[k]`` over the
    ``k``-th gate's block of ``[i, f, g, o]``."""
    quarter = like.shape[-1] // 4
    row = np.repeat(np.asarray(values, like.dtype), quarter)
    return row.reshape((1,) * (like.ndim - 1) + row.shape)


def _peephole_gates(z: jax.Array, c: jax.Array, peep: jax.Array):
    """``(acts [D, B, 4H], c_new [D, B, H])`` of pre-activations ``z`` ``[D, B, 4H]``, the
    state ``c`` ``[D, B, H]`` and the peephole weights ``peep`` ``[D, 3, H]``: ``i`` and
    ``f`` see ``c``, ``o`` sees ``c_new`` (the equations of ``cells.lstm_quantities``)."""
    z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
    i = jax.nn.sigmoid(z_i + peep[:, 0:1] * c)
    f = jax.nn.sigmoid(z_f + peep[:, 1:2] * c)
    g = jnp.tanh(z_g)
    c_new = f * c + i * g
    o = jax.nn.sigmoid(z_o + peep[:, 2:3] * c_new)
    return jnp.concatenate([i, f, g, o], axis=-1), c_new


def _gate_gradients(acts, dc_total, dm, c_prev, tanh_c) -> jax.Array:
    """Gradients of the gate pre-activations, ``[..., 4H]``, as one elementwise expression.

    ``[dc*g, dc*c_prev, dc*i, dm*tanh(c)]`` times the activation's derivative,
    ``a (1 - a)`` for the sigmoid gates and ``1 - a^2`` for ``g``, written over all four
    blocks at once rather than as four per-gate expressions concatenated. Measured 5-10%
    faster forward+backward at H = 128-256 on XLA:CPU (same-process A/B), though the
    loop body has as many kernels as before.
    """
    i, f, g, _ = jnp.split(acts, 4, axis=-1)
    upstream = jnp.concatenate([dc_total, dc_total, dc_total, dm], axis=-1)
    partner = jnp.concatenate([g, c_prev, i, tanh_c], axis=-1)
    is_tanh = _per_gate(acts, (0.0, 0.0, 1.0, 0.0))
    derivative = (1 - is_tanh) * acts + is_tanh - acts * acts  # a - a^2, or 1 - a^2 for g
    return upstream * partner * derivative


def _input_projection(w_ih_t: jax.Array, bias: jax.Array | None, x: jax.Array) -> jax.Array:
    """``x @ W_ih^T + b``, ``[D, ..., I] -> [D, ..., 4H]``, from ``w_ih_t`` ``[D, I, 4H]``:
    all steps at once (``[D, T, B, I]``) or one step (``[D, B, I]``)."""
    gx = direction_product("d...i,dig->d...g", x, w_ih_t, w_ih_t.dtype)
    if bias is None:
        return gx
    return gx + bias.astype(gx.dtype).reshape(bias.shape[:1] + (1,) * (gx.ndim - 2) + (-1,))


def _shift(seq: jax.Array, first: jax.Array) -> jax.Array:
    """``seq`` ``[D, T, ...]`` delayed by one step along ``T``, with ``first`` in front."""
    return jnp.concatenate([first[:, None], seq[:, :-1]], axis=1)


def previous_state(y: jax.Array, h0: jax.Array, valid: jax.Array | None) -> jax.Array:
    """The state ``h`` before each step, ``[D, T, B, H]``, from the outputs ``y`` ``[D, T,
    B, H]`` (execution order), ``h0`` ``[D, B, H]`` and ``valid`` ``[D, T, B]`` or ``None``."""
    if valid is None:
        return _shift(y, h0)
    # a padded step keeps the state: before a row's first valid step it is h0
    prev_valid = _shift(valid, jnp.zeros_like(valid[:, 0]))
    return jnp.where(prev_valid[..., None], _shift(y, h0), h0[:, None])


_PER_STEP_PROJECTION_MIN_BATCH = 8


# Part of jit's cache key: a function traced with the native calls is traced again
# inside ``portable_kernels``.
_PORTABLE = custom_calls.trace_context(False)


def portable_kernels():
    """A context in which the fused layer is traced with its XLA loops only, never the
    native CPU calls.

    The native loops are custom calls that ``jax.export`` cannot serialize for CPU
    ("custom calls whose targets have no compatibility guarantees":
    ``lstm_jax_native_forward``). Programs traced inside this context contain only XLA
    operations, so they export for every platform and run wherever they are loaded,
    with the same results to float32 rounding. Exports for ``cuda`` and ``tpu`` never
    contain the native calls and need no context.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 32)
      >>> zeros = jnp.zeros((2, 32), jnp.float32)
      >>> def f(x):
      ...     return run_fused_layer(p, x, LSTMState(zeros, zeros))[0]
      >>> x = jnp.ones((4, 2, 3), jnp.float32)
      >>> with portable_kernels():
      ...     exported = jax.export.export(jax.jit(f), platforms=["cpu"])(x)
      >>> exported.call(x).shape
      (4, 2, 32)
    """
    return _PORTABLE(True)


def native_unsupported_reason(dtypes, projection: bool) -> str | None:
    """Why a layer's loops cannot run as native CPU code, or ``None`` when they can.

    They run for float32 throughout, without a projection, at any hidden size, with the
    native library built (:mod:`lstm_jax._src.native.lstm_cpu`), outside
    :func:`portable_kernels`. The choice is made at trace time; on other platforms
    ``lax.platform_dependent`` lowers the XLA loops.
    """
    if _PORTABLE.value:
        return "traced inside portable_kernels(): XLA loops only"
    if projection:
        return "the native loops have no projection (proj_size > 0)"
    wrong = sorted({str(jnp.dtype(d)) for d in dtypes} - {"float32"})
    if wrong:
        return f"the native loops run float32 only, got {', '.join(wrong)}"
    reason = lstm_cpu.unavailable_reason()
    return None if reason is None else f"the native library is unavailable: {reason}"


def _native(w: _Weights, x: jax.Array, h0: jax.Array) -> bool:
    arrays = (w.w_ih, w.w_hh, x, h0) + tuple(a for a in (w.bias, w.peep) if a is not None)
    reason = native_unsupported_reason([a.dtype for a in arrays], w.w_hr is not None)
    return reason is None


def _chunk_forward(w, x, valid, h0, c0, unroll, save=True):
    """Runs the forward loop over ``x`` ``[D, T, B, I]`` (execution order).

    Returns ``(y [D, T, B, P], h_T, c_T, acts [D, T, B, 4H], cs [D, T, B, H])``; ``cs``
    is the carried cell state after each step, ``acts`` the gate activations; both are
    ``None`` unless ``save``.
    """
    loop = functools.partial(_xla_chunk_forward, unroll=unroll, save=save)
    if _native(w, x, h0):
        loop = custom_calls.native_on_cpu(loop, functools.partial(_native_chunk_forward, save=save))
    return loop(w, x, valid, h0, c0)


def _native_forward_rows(x, w_ih, bias, w_hh, h0, c0, valid, peep, *, save):
    outs = lstm_cpu.forward(x, w_ih, bias, w_hh, h0, c0, valid, peep, save)
    return outs if save else outs[:3]


def _native_backward_rows(*args):
    outs = lstm_cpu.backward(*args)
    return outs if outs[-1] is not None else outs[:-1]


# Batch axes of the native calls' arguments and results (``None``: shared weights, or
# weight gradients summed over rows), for ``custom_calls.batch_parallel``.
# x, w_ih, bias, w_hh, h0, c0, valid, peep
_FORWARD_IN_AXES = (2, None, None, None, 1, 1, 2, None)
_FORWARD_OUT_AXES = (2, 1, 1, 2, 2)  # y, h_T, c_T, acts, cs
# acts, cs, c0, dy, dh_T, dc_T, w_hh, w_ih, x, h_prev, valid, peep
_BACKWARD_IN_AXES = (2, 2, 1, 2, 1, 1, None, None, 2, 2, 2, None)
_BACKWARD_OUT_AXES = (2, None, None, None, 1, 1)  # dx, dW_ih, dW_hh, dbias, dh0, dc0
_BACKWARD_PEEPHOLE_OUT_AXES = (*_BACKWARD_OUT_AXES, None)  # and dpeep


def _native_chunk_forward(w, x, valid, h0, c0, save):
    out_axes = _FORWARD_OUT_AXES if save else _FORWARD_OUT_AXES[:3]
    run = custom_calls.batch_parallel(
        functools.partial(_native_forward_rows, save=save), _FORWARD_IN_AXES, out_axes
    )
    outs = run(x, w.w_ih, w.bias, w.w_hh, h0, c0, valid, w.peep)
    return outs if save else (*outs, None, None)


def _xla_chunk_forward(w, x, valid, h0, c0, unroll, save):
    """:func:`_chunk_forward` as an XLA loop."""
    dtype = w.w_hh.dtype
    # Transposed once, outside the loop: a per-step product with the weight's minor axis
    # as its contracting axis ran up to 1.3x slower on XLA:CPU (measured).
    w_hh_t, w_ih_t = jnp.swapaxes(w.w_hh, 1, 2), jnp.swapaxes(w.w_ih, 1, 2)
    w_hr_t = None if w.w_hr is None else jnp.swapaxes(w.w_hr, 1, 2)
    # Training hoists the input projection into one large product (projecting inside
    # the loop measured the same). Without ``save``, at batch >= 8, the loop projects
    # each step itself: it keeps no ``[D, T, B, 4H]`` array, and it measured up to 1.35x
    # faster at batch >= 16 and within noise at 8; at batch <= 4 it was 1.25-1.5x
    # slower than hoisting (RESULTS.md).
    project = functools.partial(_input_projection, w_ih_t, w.bias)
    per_step = (  # a symbolic batch (jax.export) hoists: the choice is made while tracing
        not save and isinstance(x.shape[2], int) and x.shape[2] >= _PER_STEP_PROJECTION_MIN_BATCH
    )
    inputs = x if per_step else project(x)

    def preactivation(h, inputs_t):
        gx_t = project(inputs_t) if per_step else inputs_t
        return gx_t + direction_product("dbp,dpg->dbg", h, w_hh_t, dtype)

    def body(carry, inputs):
        h, c = carry
        inputs_t, valid_t = inputs
        z = preactivation(h, inputs_t)
        if w.peep is None:
            acts = _gates(z)
            i, f, g, o = jnp.split(acts, 4, axis=-1)
            c_new = f * c + i * g
        else:
            acts, c_new = _peephole_gates(z, c, w.peep.astype(c.dtype))
            o = jnp.split(acts, 4, axis=-1)[3]
        h_new = o * jnp.tanh(c_new)
        if w.w_hr is not None:
            h_new = direction_product("dbh,dhp->dbp", h_new, w_hr_t, dtype)
        y = h_new
        if valid_t is not None:
            v = valid_t[..., None]
            h_new, c_new, y = (
                jnp.where(v, h_new, h),
                jnp.where(v, c_new, c),
                jnp.where(v, h_new, jnp.zeros_like(h_new)),
            )
        return (h_new, c_new), (y, acts, c_new) if save else (y, None, None)

    xs = (jnp.moveaxis(inputs, 1, 0), None if valid is None else jnp.moveaxis(valid, 1, 0))
    (h_t, c_t), (y, acts, cs) = lax.scan(body, (h0, c0), xs, unroll=unroll)
    y, acts, cs = (None if a is None else jnp.moveaxis(a, 0, 1) for a in (y, acts, cs))
    return y, h_t, c_t, acts, cs


def _xla_backward_loop(w, valid, c_prev, acts, cs, dy, dh_t, dc_t, unroll):
    """The recurrence of :func:`_chunk_backward` as an XLA loop: returns the gate
    gradients ``dz`` ``[D, T, B, 4H]``, ``dh0``, ``dc0`` and, with a projection, the
    gradient of each step's output ``[D, T, B, P]``."""
    dtype = w.w_hh.dtype
    peep = None if w.peep is None else w.peep.astype(cs.dtype)  # [D, 3, H]

    def body(carry, inputs):
        dh, dc = carry
        dy_t, acts_t, c_t, c_prev_t, valid_t = inputs
        dh_new = dh + dy_t
        dc_new = dc
        if valid_t is not None:
            v = valid_t[..., None]
            dh_new = jnp.where(v, dh_new, jnp.zeros_like(dh_new))
            dc_new = jnp.where(v, dc_new, jnp.zeros_like(dc_new))
        dm = dh_new if w.w_hr is None else direction_product("dbp,dph->dbh", dh_new, w.w_hr, dtype)
        f, o = jnp.split(acts_t, 4, axis=-1)[1::2]
        tc = jnp.tanh(c_t)
        dc_tot = dc_new + dm * o * (1 - tc * tc)
        if w.peep is not None:  # o saw c_t
            dc_tot = dc_tot + dm * tc * o * (1 - o) * peep[:, 2:3]
        dz = _gate_gradients(acts_t, dc_tot, dm, c_prev_t, tc)
        dh_prev = direction_product("dbg,dgp->dbp", dz, w.w_hh, dtype)
        dc_prev = dc_tot * f
        if w.peep is not None:  # i and f saw c_{t-1}
            dz_i, dz_f = jnp.split(dz, 4, axis=-1)[:2]
            dc_prev = dc_prev + dz_i * peep[:, 0:1] + dz_f * peep[:, 1:2]
        if valid_t is not None:
            # A padded step keeps the state: it passes the gradient through and adds its
            # own, zero unless its activations are NaN (as autodiff of the scan's select).
            dh_prev = jnp.where(v, dh_prev, dh + dh_prev)
            dc_prev = jnp.where(v, dc_prev, dc + dc_prev)
        return (dh_prev, dc_prev), (dz, dh_new if w.w_hr is not None else None)

    def time_major(a):
        return None if a is None else jnp.moveaxis(a, 1, 0)

    xs = tuple(time_major(a) for a in (dy, acts, cs, c_prev, valid))
    (dh0, dc0), (dz, dh_out) = lax.scan(body, (dh_t, dc_t), xs, reverse=True, unroll=unroll)
    dh_out = None if dh_out is None else jnp.moveaxis(dh_out, 0, 1)
    return jnp.moveaxis(dz, 0, 1), dh0, dc0, dh_out


def _chunk_backward(w, x, valid, h0, c0, y, acts, cs, dy, dh_t, dc_t, unroll):
    """The backward pass of :func:`_chunk_forward`.

    Returns ``(dw: _Weights, dx [D, T, B, I], dh0, dc0)`` with ``dw`` in the accumulation
    dtype (the caller casts).
    """
    h_prev = previous_state(y, h0, valid)
    run = functools.partial(_xla_chunk_backward, unroll=unroll)
    if _native(w, x, h0):
        run = custom_calls.native_on_cpu(run, _native_chunk_backward)
    return run(w, x, valid, h_prev, c0, acts, cs, dy, dh_t, dc_t)


def _native_chunk_backward(w, x, valid, h_prev, c0, acts, cs, dy, dh_t, dc_t):
    out_axes = _BACKWARD_OUT_AXES if w.peep is None else _BACKWARD_PEEPHOLE_OUT_AXES
    run = custom_calls.batch_parallel(_native_backward_rows, _BACKWARD_IN_AXES, out_axes)
    dx, dw_ih, dw_hh, dbias, dh0, dc0, *dpeep = run(
        acts, cs, c0, dy, dh_t, dc_t, w.w_hh, w.w_ih, x, h_prev, valid, w.peep
    )
    dbias = None if w.bias is None else dbias
    dpeep = dpeep[0] if dpeep else None
    return _Weights(dw_ih, dw_hh, dbias, None, dpeep), dx, dh0, dc0


def _xla_chunk_backward(w, x, valid, h_prev, c0, acts, cs, dy, dh_t, dc_t, unroll):
    """:func:`_chunk_backward` as an XLA loop and, after it, one large product per
    gradient over all steps."""
    dtype = w.w_hh.dtype
    c_prev = _shift(cs, c0)  # the state before each step
    dz, dh0, dc0, dh_out = _xla_backward_loop(w, valid, c_prev, acts, cs, dy, dh_t, dc_t, unroll)
    dw_ih = direction_product("dtbg,dtbi->dgi", dz, x, dtype)
    dw_hh = direction_product("dtbg,dtbp->dgp", dz, h_prev, dtype)
    dx = direction_product("dtbg,dgi->dtbi", dz, w.w_ih, dtype)
    dbias = None if w.bias is None else jnp.sum(dz, axis=(1, 2))
    dw_hr = None
    if w.w_hr is not None:
        o = jnp.split(acts, 4, axis=-1)[3]
        dw_hr = direction_product("dtbp,dtbh->dph", dh_out, o * jnp.tanh(cs), dtype)
    dpeep = None
    if w.peep is not None:  # i and f saw the state before each step, o the state after it
        dz_i, dz_f, _, dz_o = jnp.split(dz, 4, axis=-1)
        dpeep = jnp.stack(
            [jnp.sum(g * c, axis=(1, 2)) for g, c in ((dz_i, c_prev), (dz_f, c_prev), (dz_o, cs))],
            axis=1,
        )
    return _Weights(dw_ih, dw_hh, dbias, dw_hr, dpeep), dx, dh0, dc0


def _chunked(a, chunks):
    """``[D, N * K, ...] -> [N, D, K, ...]``."""
    if a is None:
        return None
    d, t = a.shape[:2]
    return jnp.moveaxis(a.reshape((d, chunks, t // chunks) + a.shape[2:]), 1, 0)


def _unchunked(a):
    """``[N, D, K, ...] -> [D, N * K, ...]``."""
    a = jnp.moveaxis(a, 0, 1)
    return a.reshape((a.shape[0], a.shape[1] * a.shape[2]) + a.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused(unroll, checkpoint, w, x, valid, h0, c0):
    del checkpoint  # without differentiation nothing is stored
    y, h_t, c_t, _, _ = _chunk_forward(w, x, valid, h0, c0, unroll, save=False)
    return y, h_t, c_t


def _fused_fwd(unroll, checkpoint, w, x, valid, h0, c0):
    if checkpoint is None:
        y, h_t, c_t, acts, cs = _chunk_forward(w, x, valid, h0, c0, unroll)
        return (y, h_t, c_t), (w, x, valid, h0, c0, y, acts, cs)

    def chunk(carry, inputs):
        x_k, valid_k = inputs
        y_k, h_t, c_t, _, _ = _chunk_forward(w, x_k, valid_k, *carry, unroll, save=False)
        return (h_t, c_t), (y_k, carry)

    chunks = x.shape[1] // checkpoint
    (h_t, c_t), (y, states) = lax.scan(
        chunk, (h0, c0), (_chunked(x, chunks), _chunked(valid, chunks))
    )
    y = _unchunked(y)
    return (y, h_t, c_t), (w, x, valid, h0, c0, y, states, None)


def _fused_bwd(unroll, checkpoint, residuals, cotangents):
    w, x, valid, h0, c0, y, acts, cs = residuals
    dy, dh_t, dc_t = cotangents
    if checkpoint is None:
        dw, dx, dh0, dc0 = _chunk_backward(w, x, valid, h0, c0, y, acts, cs, dy, dh_t, dc_t, unroll)
    else:
        states = acts
        chunks = x.shape[1] // checkpoint

        def chunk(carry, inputs):
            dw_sum, dh, dc = carry
            x_k, valid_k, (h_k, c_k), y_k, dy_k = inputs
            _, _, _, acts_k, cs_k = _chunk_forward(w, x_k, valid_k, h_k, c_k, unroll)
            dw_k, dx_k, dh, dc = _chunk_backward(
                w, x_k, valid_k, h_k, c_k, y_k, acts_k, cs_k, dy_k, dh, dc, unroll
            )
            return (jax.tree.map(jnp.add, dw_sum, dw_k), dh, dc), dx_k

        acc = accumulation_dtype(w.w_hh.dtype)
        dw0 = jax.tree.map(lambda p: jnp.zeros(p.shape, acc), w)
        # summed over this shard's rows inside shard_map: varying like the inputs
        dw0 = custom_calls.match_vma(dw0, w, x, h0, dy)
        xs = (
            _chunked(x, chunks),
            _chunked(valid, chunks),
            states,
            _chunked(y, chunks),
            _chunked(dy, chunks),
        )
        (dw, dh0, dc0), dx = lax.scan(chunk, (dw0, dh_t, dc_t), xs, reverse=True)
        dx = _unchunked(dx)

    def cotangent(g, p):  # the primal's dtype, and its variance inside shard_map
        return custom_calls.sum_to_vma(g.astype(p.dtype), p)

    dw = jax.tree.map(cotangent, dw, w)
    return dw, cotangent(dx, x), None, cotangent(dh0, h0), cotangent(dc0, c0)


_fused.defvjp(_fused_fwd, _fused_bwd)


def unsupported_reason(params: LSTMParams) -> str | None:
    """Why this layer cannot run a layer's parameters, or ``None`` when it can.

    It runs ``torch.nn.LSTM``'s cell (projection included) with or without peepholes and
    coupled input-forget gates, not layer normalisation.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> unsupported_reason(init_lstm_layer(jax.random.key(0), 3, 5, cifg=True)) is None
      True
      >>> unsupported_reason(init_lstm_layer(jax.random.key(0), 3, 5, layer_norm=True))
      'the hand-written LSTM layer runs the LSTM with or without peepholes and CIFG, not layer norm'
    """
    if type(params) is not LSTMParams:
        return f"the hand-written LSTM layer runs the LSTM only, got {type(params).__name__}"
    if "layer norm" in lstm_variants(params):
        return (
            "the hand-written LSTM layer runs the LSTM with or without peepholes and CIFG, "
            "not layer norm"
        )
    return None


def _with_input_gate(p: LSTMParams) -> LSTMParams:
    """A CIFG layer as the four-gate cell it equals, other layers as they are.

    CIFG's input gate ``1 - sigmoid(z_f)`` is ``sigmoid(-z_f)``: a gate block (and an
    input peephole) equal to the forget gate's negated. Autodiff of this tying sums both
    blocks' gradients into the forget gate's weights; the loops run the plain cell's code
    with a fourth block of the recurrent product.
    """
    if not lstm_is_cifg(p):
        return p

    def four_blocks(w):  # [3H, ...] in the order f, g, o -> [4H, ...]: -f, f, g, o
        return None if w is None else jnp.concatenate([-w[: w.shape[0] // 3], w])

    return p._replace(
        weight_ih=four_blocks(p.weight_ih),
        weight_hh=four_blocks(p.weight_hh),
        bias_ih=four_blocks(p.bias_ih),
        bias_hh=four_blocks(p.bias_hh),
        weight_ci=None if p.weight_cf is None else -p.weight_cf,
    )


def _stack_weights(params: tuple[LSTMParams, ...]) -> _Weights:
    for p in params:
        reason = unsupported_reason(p)
        if reason is not None:
            raise ValueError(reason)
    params = tuple(_with_input_gate(p) for p in params)
    first = params[0]

    def stacked(name):
        return jnp.stack([getattr(p, name) for p in params])

    bias = None
    for name in ("bias_ih", "bias_hh"):
        if getattr(first, name) is not None:
            bias = stacked(name) if bias is None else bias + stacked(name)
    peep = None
    if "peephole" in lstm_variants(first):
        hidden, dtype = first.weight_hh.shape[0] // 4, first.weight_hh.dtype

        def peepholes(p):  # an absent one is zero: it adds nothing, and gets no gradient
            weights = (p.weight_ci, p.weight_cf, p.weight_co)
            return [jnp.zeros((hidden,), dtype) if w is None else w for w in weights]

        peep = jnp.stack([jnp.stack(peepholes(p)) for p in params])
    return _Weights(
        stacked("weight_ih"),
        stacked("weight_hh"),
        bias,
        None if first.weight_hr is None else stacked("weight_hr"),
        peep,
    )


def execution_order(x: jax.Array, reverse, seq_lengths: jax.Array | None):
    """``(x_exec [D, T, B, I], valid [D, T, B] or None)``: ``x`` ``[T, B, I]`` for each
    direction's ``reverse`` flag in the order its loop runs (flipped in time for a reverse
    direction, whose padded steps then come first), and which steps are within each row's
    ``seq_lengths``."""
    time = x.shape[0]
    x_exec = jnp.stack([jnp.flip(x, 0) if r else x for r in reverse])
    if seq_lengths is None:
        return x_exec, None
    t = jnp.arange(time, dtype=jnp.int32)
    t_exec = jnp.stack([time - 1 - t if r else t for r in reverse])  # [D, T]
    return x_exec, t_exec[:, :, None] < seq_lengths.astype(jnp.int32)[None, None, :]


def _run(params, x, initial_states, reverse, seq_lengths, unroll, checkpoint):
    """Runs directions with the given ``reverse`` flags in one loop; see the public wrappers."""
    w = _stack_weights(params)
    time = x.shape[0]
    x_exec, valid = execution_order(x, reverse, seq_lengths)
    if checkpoint is not None:
        checkpoint = min(int(checkpoint), time)
        pad = -time % checkpoint
        if pad:  # masked steps at the end of execution order change nothing
            if valid is None:
                valid = jnp.ones((len(reverse), time, x.shape[1]), bool)
            x_exec = jnp.pad(x_exec, ((0, 0), (0, pad), (0, 0), (0, 0)))
            valid = jnp.pad(valid, ((0, 0), (0, pad), (0, 0)))
    h0 = jnp.stack([s.h for s in initial_states])
    c0 = jnp.stack([s.c for s in initial_states])
    # A zero state must vary over the shard_map axes the inputs vary over, and be split
    # over the batch like them under explicit sharding: a loop's carry keeps its type.
    h0, c0 = custom_calls.match_vma((h0, c0), w, x_exec, valid)
    h0, c0 = custom_calls.match_batch_sharding((h0, c0), x_exec, 2, 1)
    y, h_t, c_t = _fused(unroll, checkpoint, w, x_exec, valid, h0, c0)
    y = y[:, :time]
    y = [jnp.flip(y[d], 0) if r else y[d] for d, r in enumerate(reverse)]
    return y, [LSTMState(h_t[d], c_t[d]) for d in range(len(reverse))]


def run_fused_bidirectional(
    params: tuple[LSTMParams, LSTMParams],
    x: jax.Array,
    initial_states: tuple[LSTMState, LSTMState],
    *,
    seq_lengths: jax.Array | None = None,
    unroll: int = 1,
    checkpoint: int | None = None,
) -> tuple[jax.Array, tuple[LSTMState, LSTMState]]:
    """Both directions of a bidirectional layer advanced together in one fused loop.

    Args:
      params: ``(forward, reverse)`` :class:`LSTMParams` of the same shapes.
      x: ``[time, batch, input_size]``.
      initial_states: ``(forward, reverse)`` :class:`LSTMState`.
      seq_lengths: optional int32 ``[batch]`` in ``1..time``.
      unroll: unroll factor of the forward and backward loops.
      checkpoint: see :func:`run_fused_layer`.

    Returns:
      ``(outputs, final_states)``: ``outputs`` ``[time, batch, 2 * H_out]`` (forward
      features first, as ``torch.nn.LSTM``) and the two final :class:`LSTMState`.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = tuple(init_lstm_layer(k, 3, 5) for k in jax.random.split(jax.random.key(0)))
      >>> s = LSTMState(jnp.zeros((2, 5), jnp.float32), jnp.zeros((2, 5), jnp.float32))
      >>> out, (fwd, bwd) = run_fused_bidirectional(p, jnp.ones((7, 2, 3), jnp.float32), (s, s))
      >>> out.shape, bool(jnp.allclose(out[0, :, 5:], bwd.h))
      ((7, 2, 10), True)
    """
    y, states = _run(
        tuple(params), x, tuple(initial_states), (False, True), seq_lengths, unroll, checkpoint
    )
    return jnp.concatenate(y, axis=-1), tuple(states)


def run_fused_layer(
    params: LSTMParams,
    x: jax.Array,
    initial_state: LSTMState,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    checkpoint: int | None = None,
) -> tuple[jax.Array, LSTMState]:
    """One LSTM layer in one direction, fused: the contract of ``scan.run_layer``.

    Gives the same outputs and gradients as ``run_layer(LSTM_CELL, ...)``, with the input
    projection and all weight gradients computed outside the time loops.

    Args:
      params: one layer's :class:`LSTMParams` (``weight_hr`` optional).
      x: ``[time, batch, input_size]``.
      initial_state: :class:`LSTMState`, ``h`` ``[batch, H_out]``, ``c`` ``[batch, hidden_size]``.
      seq_lengths: optional int32 ``[batch]`` in ``1..time``.
      reverse: run from each row's last valid step to the first.
      unroll: unroll factor of the forward and backward loops.
      checkpoint: ``None`` stores every step's activations for the backward pass; an int
        ``K`` stores the state every ``K`` steps and recomputes each chunk of ``K`` steps
        in the backward pass.

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, H_out]`` (zero at padded
      steps) and the final :class:`LSTMState`.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> zeros = jnp.zeros((2, 5), jnp.float32)
      >>> x = jnp.ones((7, 2, 3), jnp.float32)
      >>> out, (h, c) = run_fused_layer(p, x, LSTMState(zeros, zeros), checkpoint=4)
      >>> out.shape, bool(jnp.allclose(out[-1], h))
      ((7, 2, 5), True)
    """
    y, (state,) = _run(
        (params,), x, (initial_state,), (bool(reverse),), seq_lengths, unroll, checkpoint
    )
    return y[0], state
