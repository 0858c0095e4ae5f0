r"""One time step per cell kind: pure gate equations, no loop over time.

The LSTM step, in torch's convention (gates stacked i, f, g, o):

.. math::

   i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
   f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
   g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
   o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
   c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
   h_t &= o_t \odot \tanh(c_t) \qquad (h_t \leftarrow W_{hr} h_t \text{ with a projection})

Each step is split in two so the loop can hoist the input part: the input projection
(``W_i* x + b_i* + b_h*``) does not depend on the state and is computed for all time
steps at once outside the loop; the recurrent step adds ``W_h* h_{t-1}`` and applies
the gate math.

Precision: matrix products run in the parameters' dtype and accumulate in at least
float32 (:func:`accumulation_dtype`); gate math and the state stay in that dtype, so a
bfloat16 model keeps a float32 cell state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax._src.types import LSTMParams, LSTMState


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
    return jnp.matmul(
        x.astype(weight.dtype),
        weight.T,
        preferred_element_type=accumulation_dtype(weight.dtype),
    )


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """Adds a ``[features]`` bias to ``[..., features]`` without implicit rank promotion."""
    return y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + bias.shape)


def lstm_input_projection(params: LSTMParams, x: jax.Array) -> jax.Array:
    """The state-independent part of the gate pre-activations, both biases included.

    Args:
      params: one layer's :class:`LSTMParams`.
      x: ``[..., input_size]``; any leading axes (``[time, batch]`` in the loop).

    Returns:
      ``[..., 4 * hidden_size]``, ``W_ih x + b_ih + b_hh``.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> lstm_input_projection(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 20)
    """
    gates = dense(x, params.weight_ih)
    if params.bias_ih is not None:
        gates = add_bias(gates, params.bias_ih)
    if params.bias_hh is not None:
        gates = add_bias(gates, params.bias_hh)
    return gates


def lstm_step(params: LSTMParams, gates_x: jax.Array, state: LSTMState) -> LSTMState:
    """One LSTM step given the precomputed input projection.

    Args:
      params: one layer's :class:`LSTMParams`.
      gates_x: ``[batch, 4 * hidden_size]`` from :func:`lstm_input_projection`.
      state: previous :class:`LSTMState`, ``h`` ``[batch, H_out]``, ``c`` ``[batch, hidden_size]``.

    Returns:
      The next :class:`LSTMState`, in the accumulation dtype.
    """
    gates = gates_x + dense(state.h, params.weight_hh)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    if params.weight_hr is not None:
        h = dense(h, params.weight_hr)
    return LSTMState(h, c)


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
    return LSTMState(h=params.weight_hh.shape[1], c=params.weight_hh.shape[0] // 4)


@dataclasses.dataclass(frozen=True)
class CellDef:
    """What the time loop needs to know about a cell kind: three pure functions.

    Attributes:
      input_projection: ``(params, x [..., I]) -> [..., G]``, hoisted out of the loop.
      step: ``(params, gates_x [batch, G], state) -> state``; ``state.h`` is the output.
      state_sizes: ``params -> state`` whose fields are the feature sizes of the state's
        fields (a named tuple of ints), so the stack can make zeros and check shapes.
    """

    input_projection: Callable[[Any, jax.Array], jax.Array]
    step: Callable[[Any, jax.Array, Any], Any]
    state_sizes: Callable[[Any], Any]

    def zero_state(self, params: Any, batch: int) -> Any:
        """Zeros ``[batch, size]`` for each state field, in the accumulation dtype."""
        leaves = jax.tree.leaves(params)
        dtype = accumulation_dtype(leaves[0].dtype)
        sizes = self.state_sizes(params)
        return type(sizes)(*(jnp.zeros((batch, n), dtype) for n in sizes))


LSTM_CELL = CellDef(lstm_input_projection, lstm_step, lstm_state_sizes)
