r"""One time step per cell kind: pure gate equations, no loop over time.

The LSTM step, in torch's convention (gates stacked i, f, g, o):

.. math::

   i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
   f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
   g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
   o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
   c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
   h_t &= o_t \odot \tanh(c_t) \qquad (h_t \leftarrow W_{hr} h_t \text{ with a projection})

LSTM variants, each on when its parameters are present (see :class:`LSTMParams`); they
compose with each other and with the projection:

- Peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and count"):
  the i and f pre-activations gain :math:`w_{ci} \odot c_{t-1}` and
  :math:`w_{cf} \odot c_{t-1}`, the o pre-activation gains :math:`w_{co} \odot c_t`.
- Layer normalisation (Ba, Kiros & Hinton 2016, "Layer Normalization"): the gate
  pre-activations are :math:`\mathrm{LN}(W_{ih} x_t) + \mathrm{LN}(W_{hh} h_{t-1}) + b`,
  each LN over all gates at once with its own gain and shift, and
  :math:`h_t = o_t \odot \tanh(\mathrm{LN}(c_t))` (the carried :math:`c_t` is not
  normalised).
- Coupled input-forget gate, CIFG (Greff et al. 2017, "LSTM: A Search Space Odyssey"):
  no input-gate weights (gates f, g, o) and :math:`i_t = 1 - f_t`.

The GRU step, torch's (gates stacked r, z, n; the reset gate multiplies the recurrent
part of n *including its bias* :math:`b_{hn}`):

.. math::

   r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
   z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
   n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
   h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

The Elman RNN step: :math:`h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`
with :math:`\phi` tanh or ReLU.

Variational (recurrent) dropout (Gal & Ghahramani 2016) enters a step as
``recurrent_mask``: a ``[batch, H_out]`` multiplier, the same at every step, applied to
:math:`h_{t-1}` where it enters the recurrent product :math:`W_{hh} h_{t-1}` only (the
GRU's :math:`z_t \odot h_{t-1}` and the peepholes see the state undropped).

Each step is split in two so the loop can hoist the input part: the input projection
(``W_i* x + b_i* + b_h*``) does not depend on the state and is computed for all time
steps at once outside the loop; the recurrent step adds ``W_h* h_{t-1}`` and applies
the gate math.

The gate math of each cell is written once, as its ``quantities``: every quantity of the
step by the names of the equations above (:func:`lstm_quantities`: ``i, f, g, o, c`` and
``h``, with ``ln_c`` under layer normalisation and ``m``, the output before the
projection, with one; :func:`gru_quantities`: ``r, z, n, h``; the Elman cell: ``h``). The
step's ``update`` keeps the new state of them, and :func:`lstm_jax.internals` records them
over a sequence.

Precision: matrix products run in the parameters' dtype and accumulate in at least
float32 (:func:`accumulation_dtype`); gate math and the state stay in that dtype, so a
bfloat16 model keeps a float32 cell state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax._src import compat
from lstm_jax._src.init import init_gru_layer, init_lstm_layer, init_rnn_layer
from lstm_jax._src.types import GRUParams, GRUState, LSTMParams, LSTMState, RNNParams, RNNState

LAYER_NORM_EPS = 1e-5


def accumulation_dtype(dtype) -> jnp.dtype:
    """The dtype products accumulate in and state is kept in: ``dtype``, at least float32.

    Example:
      >>> accumulation_dtype(jnp.bfloat16), accumulation_dtype(jnp.float64)
      (dtype('float32'), dtype('float64'))
    """
    dtype = jnp.dtype(dtype)
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def dense(x: jax.Array, weight: jax.Array) -> jax.Array:
    """``x @ weight.T`` in ``weight``'s dtype, accumulated in :func:`accumulation_dtype`.

    Args:
      x: ``[..., in]``.
      weight: ``[out, in]`` (torch's layout).

    Returns:
      ``[..., out]``.
    """
    # Contracting the weight's minor axis directly: ``x @ weight.T`` made XLA:CPU copy the
    # transposed weight at every call (10x slower for one step at batch 1, measured).
    return compat.dot_general(
        x.astype(weight.dtype),
        weight,
        (((x.ndim - 1,), (1,)), ((), ())),
        preferred_element_type=accumulation_dtype(weight.dtype),
    )


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """Adds a ``[features]`` bias to ``[..., features]`` without implicit rank promotion."""
    return y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + bias.shape)


def scale(y: jax.Array, weight: jax.Array) -> jax.Array:
    """Multiplies ``[..., features]`` by a ``[features]`` vector without rank promotion."""
    return y * weight.astype(y.dtype).reshape((1,) * (y.ndim - 1) + weight.shape)


def layer_norm(y: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    """Layer normalisation over the last axis (Ba, Kiros & Hinton 2016), epsilon 1e-5.

    Args:
      y: ``[..., features]``.
      weight: gain ``[features]``.
      bias: shift ``[features]``.

    Returns:
      ``(y - mean) / sqrt(var + 1e-5) * weight + bias``, ``[..., features]``.

    Example:
      >>> y = layer_norm(jnp.arange(4.0), jnp.ones(4), jnp.zeros(4))
      >>> round(float(y.mean()), 6), round(float(y.var()), 4)
      (0.0, 1.0)
    """
    mean = jnp.mean(y, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(y - mean), axis=-1, keepdims=True)
    return add_bias(scale((y - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS), weight), bias)


def lstm_hidden_size(params: LSTMParams) -> int:
    """The cell size ``H`` of an LSTM layer (static: read from shapes).

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> lstm_hidden_size(init_lstm_layer(jax.random.key(0), 3, 5, proj_size=2))
      5
    """
    if params.weight_hr is not None:
        return params.weight_hr.shape[1]
    return params.weight_hh.shape[1]


def lstm_is_cifg(params: LSTMParams) -> bool:
    """Whether an LSTM layer has coupled input-forget gates (3 gate blocks instead of 4).

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> lstm_is_cifg(init_lstm_layer(jax.random.key(0), 3, 5, cifg=True))
      True
    """
    gates = params.weight_hh.shape[0] // lstm_hidden_size(params)
    if gates not in (3, 4) or params.weight_hh.shape[0] % lstm_hidden_size(params):
        raise ValueError(
            f"weight_hh must have 4 * hidden_size (or 3 * hidden_size with CIFG) rows, got "
            f"{params.weight_hh.shape[0]} rows for hidden_size={lstm_hidden_size(params)}"
        )
    return gates == 3


def lstm_variants(params: Any) -> tuple[str, ...]:
    """The variants of ``torch.nn.LSTM``'s cell that a layer's parameters turn on.

    Returns:
      Among ``"peephole"``, ``"layer norm"``, ``"CIFG"``, those present; empty for the
      plain cell (with or without projection and biases) and for other parameter types'
      fields being absent.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> lstm_variants(init_lstm_layer(jax.random.key(0), 3, 5, peephole=True, cifg=True))
      ('peephole', 'CIFG')
      >>> lstm_variants(init_lstm_layer(jax.random.key(0), 3, 5, proj_size=2))
      ()
    """
    variants = []
    if any(getattr(params, f) is not None for f in ("weight_ci", "weight_cf", "weight_co")):
        variants.append("peephole")
    if any(getattr(params, f) is not None for f in LSTMParams._fields if f.startswith("ln_")):
        variants.append("layer norm")
    if lstm_is_cifg(params):
        variants.append("CIFG")
    return tuple(variants)


def _masked(h: jax.Array, recurrent_mask: jax.Array | None) -> jax.Array:
    return h if recurrent_mask is None else h * recurrent_mask.astype(h.dtype)


def lstm_input_projection(params: LSTMParams, x: jax.Array) -> jax.Array:
    """The state-independent part of the gate pre-activations, both biases included.

    With layer normalisation this is ``LN(W_ih x) + b_ih + b_hh``.

    Args:
      params: one layer's :class:`LSTMParams`.
      x: ``[..., input_size]``; any leading axes (``[time, batch]`` in the loop).

    Returns:
      ``[..., 4 * hidden_size]`` (``3 * hidden_size`` with CIFG), ``W_ih x + b_ih + b_hh``.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> lstm_input_projection(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 20)
    """
    gates = dense(x, params.weight_ih)
    if params.ln_ih_weight is not None:
        gates = layer_norm(gates, params.ln_ih_weight, params.ln_ih_bias)
    if params.bias_ih is not None:
        gates = add_bias(gates, params.bias_ih)
    if params.bias_hh is not None:
        gates = add_bias(gates, params.bias_hh)
    return gates


def recurrent_product(params: Any, h: jax.Array, recurrent_mask: jax.Array | None = None):
    """``W_hh h_{t-1}``, the only product inside the loop (``h`` masked by ``recurrent_mask``).

    Args:
      params: one layer's parameters with ``weight_hh`` ``[G, H_out]``.
      h: ``[batch, H_out]``.
      recurrent_mask: optional ``[batch, H_out]`` multiplier of ``h`` (variational dropout).

    Returns:
      ``[batch, G]``.

    Example:
      >>> from lstm_jax.functional import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> recurrent_product(p, jnp.ones((2, 5), jnp.float32)).shape
      (2, 20)
    """
    return dense(_masked(h, recurrent_mask), params.weight_hh)


def recurrent_product_in_loop(params: Any) -> Callable[..., jax.Array]:
    """:func:`recurrent_product` for a loop over time, ``W_hh`` transposed once, outside.

    Per step, a product contracting the weight's minor axis ran up to 1.3x slower on
    XLA:CPU than one with the weight transposed before the loop (measured).

    Returns:
      ``product(h [batch, H_out], recurrent_mask=None) -> [batch, G]``.
    """
    weight = params.weight_hh
    transposed = weight.T

    def product(h: jax.Array, recurrent_mask: jax.Array | None = None) -> jax.Array:
        return compat.matmul(
            _masked(h, recurrent_mask).astype(weight.dtype),
            transposed,
            preferred_element_type=accumulation_dtype(weight.dtype),
        )

    return product


def lstm_quantities(
    params: LSTMParams, gates_x: jax.Array, gates_h: jax.Array, state: LSTMState
) -> dict[str, jax.Array]:
    r"""Every quantity of one LSTM step (any variant), by the names of the equations above.

    The gate math lives here; :func:`lstm_update` keeps the new state of it.

    Args:
      params: one layer's :class:`LSTMParams`.
      gates_x: ``[batch, 4 * hidden_size]`` from :func:`lstm_input_projection`.
      gates_h: ``[batch, 4 * hidden_size]``, ``W_hh h_{t-1}`` (:func:`recurrent_product`).
      state: previous :class:`LSTMState`.

    Returns:
      In the accumulation dtype, in this order: the gates ``i``, ``f``, ``g``, ``o``
      ``[batch, hidden_size]`` as applied (``i = 1 - f`` with CIFG; the peepholes and the
      layer normalisation of the pre-activations included), the new cell state ``c``;
      with layer normalisation ``ln_c = LN(c_t)``, the argument of the output tanh; with
      a projection ``m``, the output before it (``o * tanh(c_t)``, of ``ln_c`` with
      layer normalisation; Sak et al. 2014's :math:`m_t`); and ``h`` ``[batch, H_out]``.

    Example:
      >>> from lstm_jax.functional import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5, proj_size=2)
      >>> state = LSTMState(jnp.zeros((2, 2), jnp.float32), jnp.zeros((2, 5), jnp.float32))
      >>> gates_x = lstm_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> q = lstm_quantities(p, gates_x, recurrent_product(p, state.h), state)
      >>> {name: value.shape[-1] for name, value in q.items()}
      {'i': 5, 'f': 5, 'g': 5, 'o': 5, 'c': 5, 'm': 5, 'h': 2}
    """
    recurrent = gates_h
    if params.ln_hh_weight is not None:
        recurrent = layer_norm(recurrent, params.ln_hh_weight, params.ln_hh_bias)
    gates = gates_x + recurrent
    if lstm_is_cifg(params):
        f, g, o = jnp.split(gates, 3, axis=-1)
        i = None
    else:
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        if params.weight_ci is not None:
            i = i + scale(state.c, params.weight_ci)
    if params.weight_cf is not None:
        f = f + scale(state.c, params.weight_cf)
    forget = jax.nn.sigmoid(f)
    input_gate = 1.0 - forget if i is None else jax.nn.sigmoid(i)
    candidate = jnp.tanh(g)
    c = forget * state.c + input_gate * candidate
    if params.weight_co is not None:
        o = o + scale(c, params.weight_co)
    output_gate = jax.nn.sigmoid(o)
    quantities = {"i": input_gate, "f": forget, "g": candidate, "o": output_gate, "c": c}
    c_out = c
    if params.ln_c_weight is not None:
        c_out = quantities["ln_c"] = layer_norm(c, params.ln_c_weight, params.ln_c_bias)
    h = output_gate * jnp.tanh(c_out)
    if params.weight_hr is not None:
        quantities["m"] = h
        h = dense(h, params.weight_hr)
    quantities["h"] = h
    return quantities


def lstm_update(
    params: LSTMParams, gates_x: jax.Array, gates_h: jax.Array, state: LSTMState
) -> LSTMState:
    """The LSTM's gate math (any variant, see above) given both products.

    Args:
      params: one layer's :class:`LSTMParams`.
      gates_x: ``[batch, 4 * hidden_size]`` from :func:`lstm_input_projection`.
      gates_h: ``[batch, 4 * hidden_size]``, ``W_hh h_{t-1}`` (:func:`recurrent_product`).
      state: previous :class:`LSTMState`.

    Returns:
      The next :class:`LSTMState`, in the accumulation dtype: the state fields of
      :func:`lstm_quantities`.

    Example:
      >>> from lstm_jax.functional import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> state = LSTMState(jnp.zeros((2, 5), jnp.float32), jnp.zeros((2, 5), jnp.float32))
      >>> gates_x = lstm_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> lstm_update(p, gates_x, recurrent_product(p, state.h), state).c.shape
      (2, 5)
    """
    quantities = lstm_quantities(params, gates_x, gates_h, state)
    return LSTMState(quantities["h"], quantities["c"])


def lstm_step(
    params: LSTMParams,
    gates_x: jax.Array,
    state: LSTMState,
    *,
    recurrent_mask: jax.Array | None = None,
) -> LSTMState:
    """One LSTM step given the precomputed input projection (any variant, see above).

    Args:
      params: one layer's :class:`LSTMParams`.
      gates_x: ``[batch, 4 * hidden_size]`` from :func:`lstm_input_projection`.
      state: previous :class:`LSTMState`, ``h`` ``[batch, H_out]``, ``c`` ``[batch, hidden_size]``.
      recurrent_mask: optional ``[batch, H_out]`` multiplier of ``h_{t-1}`` in ``W_hh h_{t-1}``
        (variational dropout).

    Returns:
      The next :class:`LSTMState`, in the accumulation dtype.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5, peephole=True, layer_norm=True)
      >>> zeros = jnp.zeros((2, 5), jnp.float32)
      >>> gx = lstm_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> lstm_step(p, gx, LSTMState(zeros, zeros)).c.shape
      (2, 5)
    """
    return LSTM_CELL.step(params, gates_x, state, recurrent_mask=recurrent_mask)


def lstm_cell(params: LSTMParams, x: jax.Array, state: LSTMState) -> LSTMState:
    """One full LSTM step, ``torch.nn.LSTMCell``'s computation (equations above).

    Args:
      params: :class:`LSTMParams` with ``weight_ih`` ``[4 * hidden_size, input_size]``.
      x: ``[batch, input_size]``.
      state: :class:`LSTMState` with ``h`` ``[batch, H_out]``, ``c`` ``[batch, hidden_size]``.

    Returns:
      The next :class:`LSTMState`.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> zeros = jnp.zeros((2, 5), jnp.float32)
      >>> h, c = lstm_cell(p, jnp.ones((2, 3), jnp.float32), LSTMState(zeros, zeros))
      >>> h.shape, c.shape
      ((2, 5), (2, 5))
    """
    return lstm_step(params, lstm_input_projection(params, x), state)


def lstm_state_sizes(params: LSTMParams) -> LSTMState:
    """The feature size of each state field: ``LSTMState(h=H_out, c=hidden_size)``."""
    return LSTMState(h=params.weight_hh.shape[1], c=lstm_hidden_size(params))


def gru_input_projection(params: GRUParams, x: jax.Array) -> jax.Array:
    """The GRU's state-independent part: ``W_ih x + b_ih + [b_hr, b_hz, 0]``.

    ``b_hn`` is not folded in: it sits inside ``r * (W_hn h + b_hn)`` (see the step).

    Args:
      params: one layer's :class:`GRUParams`.
      x: ``[..., input_size]``.

    Returns:
      ``[..., 3 * hidden_size]``, gates r, z, n.

    Example:
      >>> from lstm_jax._src.init import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> gru_input_projection(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 15)
    """
    gates = dense(x, params.weight_ih)
    if params.bias_ih is not None:
        gates = add_bias(gates, params.bias_ih)
    if params.bias_hh is not None:
        hidden = params.weight_hh.shape[1]
        rz = params.bias_hh[: 2 * hidden]
        gates = add_bias(gates, jnp.concatenate([rz, jnp.zeros((hidden,), rz.dtype)]))
    return gates


def gru_step(
    params: GRUParams,
    gates_x: jax.Array,
    state: GRUState,
    *,
    recurrent_mask: jax.Array | None = None,
) -> GRUState:
    """One GRU step (torch's equations, module docstring) given the input projection.

    Args:
      params: one layer's :class:`GRUParams`.
      gates_x: ``[batch, 3 * hidden_size]`` from :func:`gru_input_projection`.
      state: previous :class:`GRUState`, ``h`` ``[batch, hidden_size]``.
      recurrent_mask: optional ``[batch, hidden_size]`` multiplier of ``h_{t-1}`` in
        ``W_hh h_{t-1}`` (variational dropout); ``z * h_{t-1}`` uses the undropped state.

    Returns:
      The next :class:`GRUState`.

    Example:
      >>> from lstm_jax._src.init import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> h = jnp.zeros((2, 5), jnp.float32)
      >>> gru_step(p, gru_input_projection(p, jnp.ones((2, 3), jnp.float32)), GRUState(h)).h.shape
      (2, 5)
    """
    return GRU_CELL.step(params, gates_x, state, recurrent_mask=recurrent_mask)


def gru_quantities(
    params: GRUParams, gates_x: jax.Array, gates_h: jax.Array, state: GRUState
) -> dict[str, jax.Array]:
    """Every quantity of one GRU step (torch's equations, module docstring), by name.

    The gate math lives here; :func:`gru_update` keeps the new state of it.

    Args:
      params: one layer's :class:`GRUParams`.
      gates_x: ``[batch, 3 * hidden_size]`` from :func:`gru_input_projection`.
      gates_h: ``[batch, 3 * hidden_size]``, ``W_hh h_{t-1}`` (:func:`recurrent_product`).
      state: previous :class:`GRUState`.

    Returns:
      ``r``, ``z``, ``n`` and ``h``, each ``[batch, hidden_size]``.

    Example:
      >>> from lstm_jax.functional import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> state = GRUState(jnp.zeros((2, 5), jnp.float32))
      >>> gates_x = gru_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> q = gru_quantities(p, gates_x, recurrent_product(p, state.h), state)
      >>> {name: value.shape for name, value in q.items()}
      {'r': (2, 5), 'z': (2, 5), 'n': (2, 5), 'h': (2, 5)}
    """
    hidden = params.weight_hh.shape[1]
    x_r, x_z, x_n = jnp.split(gates_x, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gates_h, 3, axis=-1)
    if params.bias_hh is not None:
        h_n = add_bias(h_n, params.bias_hh[2 * hidden :])
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return {"r": r, "z": z, "n": n, "h": (1.0 - z) * n + z * state.h}


def gru_update(params: GRUParams, gates_x: jax.Array, gates_h: jax.Array, state: GRUState):
    """The GRU's gate math given ``gates_x`` and ``gates_h = W_hh h_{t-1}``, ``[batch, 3H]``.

    Returns the state field of :func:`gru_quantities`.

    Example:
      >>> from lstm_jax.functional import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> state = GRUState(jnp.zeros((2, 5), jnp.float32))
      >>> gates_x = gru_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> gru_update(p, gates_x, recurrent_product(p, state.h), state).h.shape
      (2, 5)
    """
    return GRUState(gru_quantities(params, gates_x, gates_h, state)["h"])


def gru_cell(params: GRUParams, x: jax.Array, state: GRUState) -> GRUState:
    """One full GRU step, ``torch.nn.GRUCell``'s computation.

    Args:
      params: :class:`GRUParams`.
      x: ``[batch, input_size]``.
      state: :class:`GRUState` with ``h`` ``[batch, hidden_size]``.

    Returns:
      The next :class:`GRUState`.

    Example:
      >>> from lstm_jax._src.init import init_gru_layer
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> h0 = GRUState(jnp.zeros((2, 5), jnp.float32))
      >>> gru_cell(p, jnp.ones((2, 3), jnp.float32), h0).h.shape
      (2, 5)
    """
    return gru_step(params, gru_input_projection(params, x), state)


def gru_state_sizes(params: GRUParams) -> GRUState:
    """``GRUState(h=hidden_size)``."""
    return GRUState(h=params.weight_hh.shape[1])


def rnn_input_projection(params: RNNParams, x: jax.Array) -> jax.Array:
    """The Elman RNN's state-independent part: ``W_ih x + b_ih + b_hh``.

    Args:
      params: one layer's :class:`RNNParams`.
      x: ``[..., input_size]``.

    Returns:
      ``[..., hidden_size]``.

    Example:
      >>> from lstm_jax._src.init import init_rnn_layer
      >>> p = init_rnn_layer(jax.random.key(0), 3, 5)
      >>> rnn_input_projection(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 5)
    """
    pre = dense(x, params.weight_ih)
    for bias in (params.bias_ih, params.bias_hh):
        if bias is not None:
            pre = add_bias(pre, bias)
    return pre


def rnn_tanh_quantities(params: RNNParams, gates_x, gates_h, state) -> dict[str, jax.Array]:
    """``{"h": tanh(gates_x + gates_h)}``, ``gates_h = W_hh h_{t-1}``, all ``[batch, H]``.

    Example:
      >>> rnn_tanh_quantities(None, jnp.array([[0.0]]), jnp.array([[0.0]]), None)["h"].tolist()
      [[0.0]]
    """
    del params, state
    return {"h": jnp.tanh(gates_x + gates_h)}


def rnn_relu_quantities(params: RNNParams, gates_x, gates_h, state) -> dict[str, jax.Array]:
    """``{"h": relu(gates_x + gates_h)}``, ``gates_h = W_hh h_{t-1}``, all ``[batch, H]``.

    Example:
      >>> rnn_relu_quantities(None, jnp.array([[-1.0]]), jnp.array([[0.5]]), None)["h"].tolist()
      [[0.0]]
    """
    del params, state
    return {"h": jax.nn.relu(gates_x + gates_h)}


def rnn_tanh_update(params: RNNParams, gates_x, gates_h, state: RNNState) -> RNNState:
    """``h_t = tanh(gates_x + gates_h)``, ``gates_h = W_hh h_{t-1}``, all ``[batch, H]``.

    Example:
      >>> from lstm_jax.functional import init_rnn_layer
      >>> p = init_rnn_layer(jax.random.key(0), 3, 5)
      >>> state = RNNState(jnp.zeros((2, 5), jnp.float32))
      >>> gates_x = rnn_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> h = rnn_tanh_update(p, gates_x, recurrent_product(p, state.h), state).h
      >>> h.shape, bool(jnp.all(jnp.abs(h) < 1))
      ((2, 5), True)
    """
    return RNNState(rnn_tanh_quantities(params, gates_x, gates_h, state)["h"])


def rnn_relu_update(params: RNNParams, gates_x, gates_h, state: RNNState) -> RNNState:
    """``h_t = relu(gates_x + gates_h)``, ``gates_h = W_hh h_{t-1}``, all ``[batch, H]``.

    Example:
      >>> gates_x = jnp.array([[0.5, -2.0]])
      >>> gates_h = jnp.array([[0.5, 1.0]])
      >>> rnn_relu_update(None, gates_x, gates_h, None).h.tolist()
      [[1.0, 0.0]]
    """
    return RNNState(rnn_relu_quantities(params, gates_x, gates_h, state)["h"])


def rnn_tanh_step(
    params: RNNParams,
    gates_x: jax.Array,
    state: RNNState,
    *,
    recurrent_mask: jax.Array | None = None,
) -> RNNState:
    """One Elman step ``h_t = tanh(gates_x + W_hh h_{t-1})``.

    Args:
      params: one layer's :class:`RNNParams`.
      gates_x: ``[batch, hidden_size]`` from :func:`rnn_input_projection`.
      state: previous :class:`RNNState`, ``h`` ``[batch, hidden_size]``.
      recurrent_mask: optional ``[batch, hidden_size]`` multiplier of ``h_{t-1}``.

    Returns:
      The next :class:`RNNState`.

    Example:
      >>> from lstm_jax._src.init import init_rnn_layer
      >>> p = init_rnn_layer(jax.random.key(0), 3, 5)
      >>> gates_x, h0 = jnp.full((2, 5), 0.5, jnp.float32), jnp.zeros((2, 5), jnp.float32)
      >>> h = rnn_tanh_step(p, gates_x, RNNState(h0)).h
      >>> h.shape, round(float(h[0, 0]), 4)
      ((2, 5), 0.4621)
    """
    return RNN_TANH_CELL.step(params, gates_x, state, recurrent_mask=recurrent_mask)


def rnn_relu_step(
    params: RNNParams,
    gates_x: jax.Array,
    state: RNNState,
    *,
    recurrent_mask: jax.Array | None = None,
) -> RNNState:
    """One Elman step ``h_t = relu(gates_x + W_hh h_{t-1})`` (arguments as :func:`rnn_tanh_step`).

    Example:
      >>> from lstm_jax._src.init import init_rnn_layer
      >>> p = init_rnn_layer(jax.random.key(0), 3, 5)
      >>> gates_x, h0 = jnp.full((2, 5), 9.0, jnp.float32), jnp.zeros((2, 5), jnp.float32)
      >>> h = rnn_relu_step(p, gates_x, RNNState(h0)).h
      >>> h.shape, bool(jnp.all(h == 9.0))
      ((2, 5), True)
    """
    return RNN_RELU_CELL.step(params, gates_x, state, recurrent_mask=recurrent_mask)


def rnn_cell(
    params: RNNParams, x: jax.Array, state: RNNState, *, nonlinearity: str = "tanh"
) -> RNNState:
    """One Elman RNN step, ``torch.nn.RNNCell``'s computation.

    Args:
      params: :class:`RNNParams`.
      x: ``[batch, input_size]``.
      state: :class:`RNNState` with ``h`` ``[batch, hidden_size]``.
      nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
      The next :class:`RNNState`.

    Example:
      >>> from lstm_jax._src.init import init_rnn_layer
      >>> p = init_rnn_layer(jax.random.key(0), 3, 5)
      >>> h = jnp.zeros((2, 5), jnp.float32)
      >>> rnn_cell(p, jnp.ones((2, 3), jnp.float32), RNNState(h), nonlinearity="relu").h.shape
      (2, 5)
    """
    cell = rnn_cell_def(nonlinearity)
    return cell.step(params, cell.input_projection(params, x), state)


def rnn_state_sizes(params: RNNParams) -> RNNState:
    """``RNNState(h=hidden_size)``.

    Example:
      >>> from lstm_jax.functional import init_rnn_layer
      >>> rnn_state_sizes(init_rnn_layer(jax.random.key(0), 3, 5))
      RNNState(h=5)
    """
    return RNNState(h=params.weight_hh.shape[1])


@dataclasses.dataclass(frozen=True)
class CellDef:
    """A cell kind: everything the loops, the kernels and the modules know of it.

    A cell's step is split in three so the loops can move every product they can out of
    the time loop: ``input_projection`` (all steps at once, before the loop), the
    recurrent product ``W_hh h_{t-1}`` (:func:`recurrent_product`, inside the loop: the
    parameters' ``weight_hh`` ``[G, H_out]`` times the state's ``h``), and ``update``,
    the gate math. The fused kernel derives its backward pass from these, so any cell
    declared this way gets it; see :func:`register_cell` for a cell of your own.

    Attributes:
      name: the registry's name, e.g. ``"lstm"``.
      input_projection: ``(params, x [..., I]) -> [..., G]``, both biases folded in
        where the equations allow.
      update: ``(params, gates_x [batch, G], gates_h [batch, G], state) -> state``; it
        must not read ``weight_ih`` or ``weight_hh`` (the products are given).
      state_sizes: ``params -> state`` whose fields are the feature sizes of the state's
        fields (a named tuple of ints); field ``h`` is the output, ``[batch, H_out]``.
      init_layer: ``(key, input_size, hidden_size, *, bias, dtype, **cell_options) ->
        params`` for one layer and direction, or ``None``.
      param_type: the parameters' named tuple; its field names are torch's (``weight_ih``,
        ``weight_hh``, ``bias_ih``, ``bias_hh``, ...), which torch interop uses.
      description: how messages name the cell (``"an LSTM"``); ``None`` names it by
        ``name``.
      quantities: ``(params, gates_x [batch, G], gates_h [batch, G], state) -> {name:
        [batch, size]}``, every quantity of one step as the cell's equations name them
        and in their order: the gate activations as applied, then the new state's fields,
        ending with ``h``, the state's fields equal to those ``update`` returns (write
        the gate math once, in ``quantities``, and let ``update`` keep the state of it).
        :func:`lstm_jax.internals` reads it; ``None`` exposes the state's fields only.

    Example:
      >>> from lstm_jax import functional as F
      >>> cell = F.get_cell("lstm")
      >>> p = cell.init_layer(jax.random.key(0), 3, 5, bias=True, dtype=jnp.float32)
      >>> cell.name, cell.state_sizes(p)
      ('lstm', LSTMState(h=5, c=5))
      >>> cell.step(p, cell.input_projection(p, jnp.ones((2, 3))), cell.zero_state(p, 2)).h.shape
      (2, 5)
    """

    name: str
    input_projection: Callable[[Any, jax.Array], jax.Array]
    update: Callable[[Any, jax.Array, jax.Array, Any], Any]
    state_sizes: Callable[[Any], Any]
    init_layer: Callable[..., Any] | None = None
    param_type: type | None = None
    description: str | None = None
    quantities: Callable[[Any, jax.Array, jax.Array, Any], Mapping[str, jax.Array]] | None = None

    def step(self, params: Any, gates_x: jax.Array, state: Any, *, recurrent_mask=None) -> Any:
        """One step given the input projection: ``update(params, gates_x, W_hh h, state)``.

        ``recurrent_mask`` ``[batch, H_out]`` multiplies ``h_{t-1}`` where it enters the
        recurrent product (variational dropout).
        """
        gates_h = recurrent_product(params, state.h, recurrent_mask)
        return self.update(params, gates_x, gates_h, state)

    def named_quantities(
        self, params: Any, gates_x: jax.Array, gates_h: jax.Array, state: Any
    ) -> dict[str, jax.Array]:
        """``quantities(params, gates_x, gates_h, state)``, or the new state's fields by name
        for a cell that declares none.

        Example:
          >>> from lstm_jax import functional as F
          >>> cell = F.CellDef("plain_tanh_doc", F.rnn_input_projection, F.rnn_tanh_update,
          ...                  F.rnn_state_sizes)
          >>> p = F.init_rnn_layer(jax.random.key(0), 3, 5)
          >>> state = cell.zero_state(p, 2)
          >>> q = cell.named_quantities(p, jnp.ones((2, 5)), jnp.zeros((2, 5)), state)
          >>> list(q), q["h"].shape
          (['h'], (2, 5))
        """
        if self.quantities is not None:
            return dict(self.quantities(params, gates_x, gates_h, state))
        return self.update(params, gates_x, gates_h, state)._asdict()

    def describe(self) -> str:
        """How messages name the cell: its ``description``, else ``"the 'name' cell"``."""
        return self.description or f"the {self.name!r} cell"

    def zero_state(self, params: Any, batch: int) -> Any:
        """Zeros ``[batch, size]`` for each state field, in the accumulation dtype."""
        leaves = jax.tree.leaves(params)
        dtype = accumulation_dtype(leaves[0].dtype)
        sizes = self.state_sizes(params)
        return type(sizes)(*(jnp.zeros((batch, n), dtype) for n in sizes))


LSTM_CELL = CellDef(
    "lstm",
    lstm_input_projection,
    lstm_update,
    lstm_state_sizes,
    init_lstm_layer,
    LSTMParams,
    "an LSTM",
    lstm_quantities,
)
GRU_CELL = CellDef(
    "gru",
    gru_input_projection,
    gru_update,
    gru_state_sizes,
    init_gru_layer,
    GRUParams,
    "a GRU",
    gru_quantities,
)
RNN_TANH_CELL = CellDef(
    "rnn_tanh",
    rnn_input_projection,
    rnn_tanh_update,
    rnn_state_sizes,
    init_rnn_layer,
    RNNParams,
    "an RNN",
    rnn_tanh_quantities,
)
RNN_RELU_CELL = CellDef(
    "rnn_relu",
    rnn_input_projection,
    rnn_relu_update,
    rnn_state_sizes,
    init_rnn_layer,
    RNNParams,
    "an RNN",
    rnn_relu_quantities,
)

_REGISTRY: dict[str, CellDef] = {}


def register_cell(cell: CellDef) -> CellDef:
    """Adds ``cell`` to the registry under ``cell.name`` and returns it.

    A registered cell runs through every layer of the library by name or by value:
    :func:`lstm_jax.functional.apply_recurrent`, :class:`lstm_jax.Recurrent` and
    :class:`lstm_jax.linen.Recurrent`, with layers, directions, ``seq_lengths``, the
    regularisers, checkpointing and the fused kernel.

    Raises:
      ValueError: another cell is registered under that name.

    Example:
      >>> from lstm_jax._src.init import init_rnn_layer
      >>> def softsign_update(params, gates_x, gates_h, state):
      ...     return RNNState(jax.nn.soft_sign(gates_x + gates_h))
      >>> cell = register_cell(CellDef("softsign_doc", rnn_input_projection, softsign_update,
      ...                              rnn_state_sizes, init_rnn_layer, RNNParams))
      >>> get_cell("softsign_doc") is cell
      True
    """
    known = _REGISTRY.get(cell.name)
    if known is not None and known is not cell:
        raise ValueError(f"a cell named {cell.name!r} is already registered")
    _REGISTRY[cell.name] = cell
    return cell


def get_cell(cell: str | CellDef) -> CellDef:
    """The registered cell named ``cell`` (a :class:`CellDef` is returned as it is).

    Raises:
      ValueError: no cell of that name, listing the registered names.

    Example:
      >>> get_cell("gru") is GRU_CELL
      True
    """
    if isinstance(cell, CellDef):
        return cell
    if cell not in _REGISTRY:
        raise ValueError(f"unknown cell {cell!r}; registered cells: {', '.join(_REGISTRY)}")
    return _REGISTRY[cell]


def registered_cells() -> tuple[str, ...]:
    """The names of the registered cells, in the order they were registered.

    Example:
      >>> registered_cells()[:4]
      ('lstm', 'gru', 'rnn_tanh', 'rnn_relu')
    """
    return tuple(_REGISTRY)


for _cell in (LSTM_CELL, GRU_CELL, RNN_TANH_CELL, RNN_RELU_CELL):
    register_cell(_cell)


def rnn_cell_def(nonlinearity: str) -> CellDef:
    """The Elman cell for ``nonlinearity`` ``"tanh"`` or ``"relu"``.

    Raises:
      ValueError: for any other nonlinearity.

    Example:
      >>> rnn_cell_def("relu") is RNN_RELU_CELL
      True
    """
    cells = {"tanh": RNN_TANH_CELL, "relu": RNN_RELU_CELL}
    if nonlinearity not in cells:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return cells[nonlinearity]
