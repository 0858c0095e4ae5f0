r"""The fused layer for any cell, derived from its :class:`~lstm_jax._src.cells.CellDef`.

Autodiff of :func:`~lstm_jax._src.scan.run_layer` computes ``dW_hh`` as one small
product per step inside the backward loop, and carries it. A cell declared as an input
projection, the recurrent product ``W_hh h_{t-1}`` and an ``update`` (the gate math)
lets this layer keep only what is sequential inside the loops:

- forward loop: ``gates_h = W_hh h_{t-1}`` and ``update``; the input projection of all
  steps is one product before the loop;
- backward loop: the VJP of ``update`` at each step (the gate derivatives, written by
  nobody: JAX derives them from the cell's equations) and ``dgates_h @ W_hh``; the
  gradients of the parameters that ``update`` reads (peepholes, layer norm, the
  projection, the GRU's ``b_hn``) are summed in the loop;
- after the loop: ``dW_hh = dGates_h^T H_prev`` over all steps, and the VJP of the input
  projection over all steps (``dx``, ``dW_ih``, the biases) as single products.

The forward loop stores ``gates_x``, ``gates_h`` and the state before each step.
Semantics are those of :func:`~lstm_jax._src.scan.run_layer`, ``seq_lengths``, reverse
direction and variational recurrent dropout (``recurrent_mask``) included. Derivatives
of the backward pass (a gradient of a gradient) are JAX's, of these same loops.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from lstm_jax._src import compat, custom_calls
from lstm_jax._src.cells import CellDef, accumulation_dtype, recurrent_product_in_loop

# Parameters the loops multiply by themselves; ``update`` must not read their values.
_PRODUCT_WEIGHTS = ("weight_ih", "weight_hh")


def _split_params(params):
    """``(small, stored)``: the parameters with the product weights' fields set to ``None``,
    and those fields.

    ``weight_hh`` may be a property built from other fields (the sLSTM's block-diagonal
    matrix from one block per head): those fields stay in ``small``, where ``update`` does
    not read them, and receive ``dW_hh`` through the property's VJP
    (:func:`_add_weight_hh_gradient`).
    """
    stored = {f: getattr(params, f) for f in _PRODUCT_WEIGHTS if f in params._fields}
    return params._replace(**dict.fromkeys(stored)), stored


def _add_weight_hh_gradient(params, d_params, dw_hh):
    """``d_params`` with ``dW_hh`` ``[G, H_out]``: in the ``weight_hh`` field, or, for a
    ``weight_hh`` built from other fields, added to theirs through the property's VJP."""
    if "weight_hh" in params._fields:
        return d_params._replace(weight_hh=dw_hh)
    weight_hh, weight_hh_vjp = jax.vjp(lambda p: p.weight_hh, params)
    (d_fields,) = weight_hh_vjp(dw_hh.astype(weight_hh.dtype))
    return jax.tree.map(jnp.add, d_params, d_fields)


def _masked(h, recurrent_mask):
    return h if recurrent_mask is None else h * recurrent_mask.astype(h.dtype)


def _select(valid, new, old):
    return jax.tree.map(lambda n, o: jnp.where(valid[:, None], n, o), new, old)


def _gate_blocks(cell, params, gates_x):
    """``gates_x`` ``[..., G]`` as a tuple of its equal blocks of gates, for a loop's input.

    There are ``G / n`` blocks, ``n`` the largest state size (4 for the LSTM, 3 for the
    GRU), or one. XLA:CPU ran a step that reads each block as an array of its own up to
    1.5x faster than one that slices a ``[batch, G]`` step (GRU, T100 B32 H256; measured);
    the step's concatenation of the blocks folds into the slices ``update`` takes.
    """
    size = max(cell.state_sizes(params))
    blocks = gates_x.shape[-1] // size if gates_x.shape[-1] % size == 0 else 1
    return tuple(jnp.split(gates_x, blocks, axis=-1))


def _forward(cell, unroll, reverse, params, gates_x, valid, state, recurrent_mask, save):
    product = recurrent_product_in_loop(params)

    def body(s, inputs):
        gx_blocks, v_t = inputs
        gx_t = jnp.concatenate(gx_blocks, axis=-1)
        gh_t = product(s.h, recurrent_mask)
        new = cell.update(params, gx_t, gh_t, s)
        if v_t is not None:
            new = _select(v_t, new, s)
            y = jnp.where(v_t[:, None], new.h, jnp.zeros_like(new.h))
        else:
            y = new.h
        return new, (y, gh_t, s) if save else y

    gx_blocks = _gate_blocks(cell, params, gates_x)
    return lax.scan(body, state, (gx_blocks, valid), reverse=reverse, unroll=unroll)


def _weight_gradient(dgates, inputs, dtype):
    """``sum_t,b dgates[t, b, g] inputs[t, b, k]`` ``[G, K]``, one product over all steps."""
    return compat.einsum(
        "tbg,tbk->gk",
        dgates.astype(dtype),
        inputs.astype(dtype),
        preferred_element_type=accumulation_dtype(dtype),
        **custom_calls.summed_out_sharding(inputs),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(cell, unroll, reverse, params, x, valid, state, recurrent_mask):
    gates_x = cell.input_projection(params, x)
    final, y = _forward(cell, unroll, reverse, params, gates_x, valid, state, recurrent_mask, False)
    return y, final


def _fused_fwd(cell, unroll, reverse, params, x, valid, state, recurrent_mask):
    gates_x = cell.input_projection(params, x)
    final, (y, gates_h, previous) = _forward(
        cell, unroll, reverse, params, gates_x, valid, state, recurrent_mask, True
    )
    residuals = (params, x, valid, state, recurrent_mask, gates_x, gates_h, previous)
    return (y, final), residuals


def _fused_bwd(cell, unroll, reverse, residuals, cotangents):
    params, x, valid, state, recurrent_mask, gates_x, gates_h, previous = residuals
    dy, d_final = cotangents
    # Inside shard_map the parameters' gradients are this shard's sums, summed over the
    # shards once at the end: differentiated as varying, so no VJP below sums them early.
    varying = custom_calls.match_vma(params, x, dy)
    small, stored = _split_params(varying)
    w_hh = varying.weight_hh
    acc = accumulation_dtype(w_hh.dtype)

    def update(small_params, gx_blocks, gh_t, s):
        gx_t = jnp.concatenate(gx_blocks, axis=-1)
        return cell.update(small_params._replace(**stored), gx_t, gh_t, s)

    def body(carry, inputs):
        ds, d_small = carry
        gx_blocks, gh_t, s_prev, dy_t, v_t = inputs
        d_new = ds._replace(h=ds.h + dy_t.astype(ds.h.dtype))
        if v_t is not None:  # a padded step passed the state through and output zeros
            keep = jax.tree.map(lambda d: jnp.where(v_t[:, None], jnp.zeros_like(d), d), ds)
            d_new = jax.tree.map(lambda d: jnp.where(v_t[:, None], d, jnp.zeros_like(d)), d_new)
        _, vjp = jax.vjp(update, small, gx_blocks, gh_t, s_prev)
        d_small_t, dgx_t, dgh_t, ds_prev = vjp(d_new)
        dh = compat.matmul(dgh_t.astype(w_hh.dtype), w_hh, preferred_element_type=acc)
        dh = _masked(dh, recurrent_mask).astype(ds_prev.h.dtype)
        ds_prev = ds_prev._replace(h=ds_prev.h + dh)
        if v_t is not None:
            ds_prev = jax.tree.map(jnp.add, ds_prev, keep)
        d_small = jax.tree.map(jnp.add, d_small, d_small_t)
        return (ds_prev, d_small), (dgx_t, dgh_t)

    d_small0 = jax.tree.map(jnp.zeros_like, small)
    # The backward loop runs in the opposite order of the forward one.
    (d_state, d_small), (dgates_x, dgates_h) = lax.scan(
        body,
        (d_final, d_small0),
        (_gate_blocks(cell, params, gates_x), gates_h, previous, dy, valid),
        reverse=not reverse,
        unroll=unroll,
    )
    h_prev = _masked(previous.h, None if recurrent_mask is None else recurrent_mask[None])
    dw_hh = _weight_gradient(dgates_h, h_prev, w_hh.dtype)
    _, projection_vjp = jax.vjp(cell.input_projection, varying, x)
    dgates_x = jnp.concatenate(dgates_x, axis=-1).astype(gates_x.dtype)
    d_params, dx = projection_vjp(dgates_x)
    d_params = d_params._replace(
        **{
            f: getattr(d_params, f) + g
            for f, g in d_small._asdict().items()
            if g is not None and f not in _PRODUCT_WEIGHTS
        },
    )
    d_params = _add_weight_hh_gradient(varying, d_params, dw_hh)

    def cotangent(g, p):  # the primal's dtype, and its variance inside shard_map
        return custom_calls.sum_to_vma(g.astype(p.dtype), p)

    d_mask = None if recurrent_mask is None else jnp.zeros_like(recurrent_mask)
    return (
        jax.tree.map(cotangent, d_params, params),
        cotangent(dx, x),
        None,
        jax.tree.map(cotangent, d_state, state),
        d_mask,
    )


_fused.defvjp(_fused_fwd, _fused_bwd)


def unsupported_reason(cell: CellDef, params: Any) -> str | None:
    """Why this fused layer cannot run ``cell`` with ``params``, or ``None`` when it can.

    Example:
      >>> from lstm_jax._src.cells import GRU_CELL
      >>> from lstm_jax._src.init import init_gru_layer
      >>> unsupported_reason(GRU_CELL, init_gru_layer(jax.random.key(0), 3, 5)) is None
      True
    """
    fields = getattr(params, "_fields", ())
    if not ("weight_ih" in fields and "bias_ih" in fields and hasattr(type(params), "weight_hh")):
        return (
            f"the fused kernel needs torch's weight_ih and bias_ih fields and a weight_hh "
            f"(a field or a property), got {fields}"
        )
    return None


def run_fused_cell_layer(
    cell: CellDef,
    params: Any,
    x: jax.Array,
    initial_state: Any,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    recurrent_mask: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """One layer of any cell in one direction, fused: the contract of ``scan.run_layer``.

    Gives the outputs and gradients of ``run_layer(cell, ...)`` with the input projection,
    the input gradient and ``dW_ih``, ``dW_hh`` and the biases' gradients computed as
    single products outside the time loops.

    Args:
      cell: the cell kind.
      params: its parameters for this layer and direction.
      x: ``[time, batch, input_size]``.
      initial_state: the cell's state, leaves ``[batch, size]``.
      seq_lengths: optional int32 ``[batch]`` in ``1..time``.
      reverse: run from each row's last valid step to the first.
      unroll: unroll factor of the forward and backward loops.
      recurrent_mask: optional ``[batch, H_out]`` multiplier of ``h_{t-1}`` in the
        recurrent product (variational dropout), the same at every step.

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, H_out]`` (zero at padded
      steps) and the state after each row's last valid step.

    Example:
      >>> from lstm_jax._src.cells import GRU_CELL
      >>> from lstm_jax._src.init import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> out, (h,) = run_fused_cell_layer(GRU_CELL, p, jnp.ones((7, 2, 3)),
      ...                                  GRU_CELL.zero_state(p, 2))
      >>> out.shape, bool(jnp.allclose(out[-1], h))
      ((7, 2, 5), True)
    """
    reason = unsupported_reason(cell, params)
    if reason is not None:
        raise ValueError(reason)
    initial_state = custom_calls.match_vma(initial_state, params, x, seq_lengths, recurrent_mask)
    initial_state = custom_calls.match_batch_sharding(initial_state, x, 1, 0)
    valid = None
    if seq_lengths is not None:
        valid = jnp.arange(x.shape[0], dtype=jnp.int32)[:, None] < seq_lengths[None, :]
    return _fused(cell, int(unroll), bool(reverse), params, x, valid, initial_state, recurrent_mask)
