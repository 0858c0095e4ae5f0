r"""minLSTM and minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201):
cells whose step is a linear recurrence, so a whole sequence runs in parallel over time.

Their gates read the input only, never :math:`h_{t-1}`, so each step is

.. math::

   h_t = a_t \odot h_{t-1} + b_t, \qquad a_t, b_t > 0 \text{ functions of } x_t \text{ alone,}

an affine map of the state. Affine maps compose associatively, so all the steps of a
sequence can be composed in parallel (the ``"parallel"`` kernel,
:mod:`lstm_jax._src.backends.parallel_kernel`). This is the
paper's log-space version, the one it trains, with :math:`g(x) = x + 0.5` for
:math:`x \ge 0` and :math:`\sigma(x)` for :math:`x < 0` keeping the candidate state
positive:

.. math::

   \text{minGRU:}\quad z_t &= \sigma(W_z x_t + b_z), \quad
       \tilde h_t = g(W_h x_t + b_h), \quad
       h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t \\
   \text{minLSTM:}\quad f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i),
       \quad \tilde h_t = g(W_h x_t + b_h), \\
   f'_t &= \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t}, \quad
       h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

The sequential step (the cells' ``update``: sampling, :func:`lstm_jax.functional.step_cell`,
the ``"scan"`` kernel) computes these equations directly; the parallel form takes the
logarithms of the same coefficients, as the paper's appendix does:
:math:`\log(1 - z) = -\mathrm{softplus}(k)`, :math:`\log z = -\mathrm{softplus}(-k)`,
:math:`\log g(x) = \log(x + 0.5)` or :math:`-\mathrm{softplus}(-x)`, and for minLSTM, with
:math:`d = \mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i)`,
:math:`\log f' = -\mathrm{softplus}(d)` and :math:`\log i' = -\mathrm{softplus}(-d)`
(so :math:`f' = \sigma(-d)`, :math:`i' = \sigma(d)` in the step). Both compute the same
:math:`h_t`, to rounding, from the same initial state: :math:`h_0` enters both as it is
(zeros by default), so a state carried from one window to the next continues the
recurrence exactly.

A cell of this kind is a :class:`LinearCellDef`: a :class:`~lstm_jax._src.cells.CellDef`
that also declares its recurrence's coefficients in log space. Its parameters have no
recurrent weights: ``weight_hh`` is a property, an empty ``[0, hidden_size]`` array, so
the recurrent product of the sequential loops is empty and no parameter of size zero is
stored (orbax refuses to save those). The weights start as
``torch.nn.Linear``'s, which the paper's layers are: ``U(-1/sqrt(I), 1/sqrt(I))``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import export

from lstm_jax._src import validation
from lstm_jax._src.cells import CellDef, add_bias, dense, register_cell
from lstm_jax._src.init import uniform

_MIN_LSTM_GATES = 3  # f, i, h_tilde
_MIN_GRU_GATES = 2  # z, h_tilde


class MinLSTMState(NamedTuple):
    """The recurrent state of one minLSTM layer and direction: ``h`` alone (no cell state).

    Attributes:
      h: hidden state ``[batch, hidden_size]``.

    Example:
      >>> MinLSTMState(jnp.zeros((2, 5), jnp.float32)).h.shape
      (2, 5)
    """

    h: jax.Array


class MinGRUState(NamedTuple):
    """The recurrent state of one minGRU layer and direction.

    Attributes:
      h: hidden state ``[batch, hidden_size]``.

    Example:
      >>> MinGRUState(jnp.zeros((2, 5), jnp.float32)).h.shape
      (2, 5)
    """

    h: jax.Array


def _empty_recurrent_weight(weight_ih: jax.Array, gates: int) -> jax.Array:
    return jnp.zeros((0, weight_ih.shape[0] // gates), weight_ih.dtype)


class MinLSTMParams(NamedTuple):
    """Parameters of one minLSTM layer in one direction.

    Attributes:
      weight_ih: ``[3 * hidden_size, input_size]``, blocks f, i, h_tilde.
      bias_ih: ``[3 * hidden_size]`` or ``None`` without bias.

    Example:
      >>> from lstm_jax.functional import init_min_lstm_layer
      >>> p = init_min_lstm_layer(jax.random.key(0), 3, 5)
      >>> p.weight_ih.shape, p.bias_ih.shape, p.weight_hh.shape
      ((15, 3), (15,), (0, 5))
    """

    weight_ih: jax.Array
    bias_ih: jax.Array | None = None

    @property
    def weight_hh(self) -> jax.Array:
        """``[0, hidden_size]``: no gate reads ``h_{t-1}``, so ``W_hh h_{t-1}`` is empty."""
        return _empty_recurrent_weight(self.weight_ih, _MIN_LSTM_GATES)


class MinGRUParams(NamedTuple):
    """Parameters of one minGRU layer in one direction.

    Attributes:
      weight_ih: ``[2 * hidden_size, input_size]``, blocks z, h_tilde.
      bias_ih: ``[2 * hidden_size]`` or ``None`` without bias.

    Example:
      >>> from lstm_jax.functional import init_min_gru_layer
      >>> p = init_min_gru_layer(jax.random.key(0), 3, 5)
      >>> p.weight_ih.shape, p.weight_hh.shape
      ((10, 3), (0, 5))
    """

    weight_ih: jax.Array
    bias_ih: jax.Array | None = None

    @property
    def weight_hh(self) -> jax.Array:
        """``[0, hidden_size]``: no gate reads ``h_{t-1}``, so ``W_hh h_{t-1}`` is empty."""
        return _empty_recurrent_weight(self.weight_ih, _MIN_GRU_GATES)


for _type in (MinLSTMState, MinLSTMParams, MinGRUState, MinGRUParams):
    export.register_namedtuple_serialization(_type, serialized_name=f"lstm_jax.{_type.__name__}")
del _type


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearCellDef(CellDef):
    r"""A cell whose step is the linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t`.

    Besides what every :class:`~lstm_jax._src.cells.CellDef` declares, it gives the
    recurrence's coefficients, in log space, from the input projection alone: the
    ``"parallel"`` kernel runs any such cell with an associative scan, and ``update``
    must compute the same step sequentially. The state has one field, ``h``.

    Attributes:
      log_coefficients: ``(params, gates_x [..., G]) -> (log_a [..., H], log_b [..., H])``
        with :math:`h_t = e^{\log a_t} h_{t-1} + e^{\log b_t}` (so :math:`a_t, b_t > 0`,
        as in the log-space minGRU and minLSTM).

    Example:
      >>> cell = MIN_GRU_CELL
      >>> p = cell.init_layer(jax.random.key(0), 3, 4, bias=True, dtype=jnp.float32)
      >>> log_a, log_b = cell.log_coefficients(p, cell.input_projection(p, jnp.ones((7, 2, 3))))
      >>> log_a.shape, bool(jnp.all(log_a < 0))
      ((7, 2, 4), True)
    """

    log_coefficients: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


def g(x: jax.Array) -> jax.Array:
    """The paper's positive activation of the candidate state: ``x + 0.5`` for ``x >= 0``,
    ``sigmoid(x)`` below (continuous at 0, always ``> 0``).

    Example:
      >>> [round(v, 4) for v in g(jnp.array([-2.0, 0.0, 2.0])).tolist()]
      [0.1192, 0.5, 2.5]
    """
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: jax.Array) -> jax.Array:
    """``log(g(x))``, finite for every finite ``x``: ``log(x + 0.5)`` or ``-softplus(-x)``.

    Example:
      >>> [round(v, 4) for v in log_g(jnp.array([-100.0, 0.0, 2.0])).tolist()]
      [-100.0, -0.6931, 0.9163]
    """
    # Each branch is evaluated on a safe argument so that neither sends a NaN gradient
    # through the other's side of the where.
    positive = jnp.log(jnp.maximum(x, 0.0) + 0.5)
    negative = -jax.nn.softplus(-jnp.minimum(x, 0.0))
    return jnp.where(x >= 0, positive, negative)


def _init_linear(key, input_size, hidden_size, gates, bias, dtype):
    input_size = validation.check_positive_int("input_size", input_size)
    hidden_size = validation.check_positive_int("hidden_size", hidden_size)
    bias = validation.check_bool("bias", bias)
    bound = 1.0 / math.sqrt(input_size)
    k_w, k_b = jax.random.split(key)
    weight_ih = uniform(k_w, (gates * hidden_size, input_size), bound, dtype)
    bias_ih = uniform(k_b, (gates * hidden_size,), bound, dtype) if bias else None
    return weight_ih, bias_ih


def init_min_lstm_layer(
    key: jax.Array, input_size: int, hidden_size: int, *, bias: bool = True, dtype=jnp.float32
) -> MinLSTMParams:
    """Initializes one minLSTM layer in one direction, as ``torch.nn.Linear`` would.

    Args:
      key: PRNG key.
      input_size: features of the layer input ``I``.
      hidden_size: ``H``.
      bias: whether to create ``bias_ih``.
      dtype: parameter dtype.

    Returns:
      A :class:`MinLSTMParams`, every entry drawn from ``U(-1/sqrt(I), 1/sqrt(I))``.

    Raises:
      TypeError, ValueError: for a size that is not a positive int or a ``bias`` that is
        not a bool, naming it.

    Example:
      >>> p = init_min_lstm_layer(jax.random.key(0), 4, 8, bias=False)
      >>> p.weight_ih.shape, p.bias_ih
      ((24, 4), None)
    """
    return MinLSTMParams(*_init_linear(key, input_size, hidden_size, _MIN_LSTM_GATES, bias, dtype))


def init_min_gru_layer(
    key: jax.Array, input_size: int, hidden_size: int, *, bias: bool = True, dtype=jnp.float32
) -> MinGRUParams:
    """Initializes one minGRU layer in one direction, as ``torch.nn.Linear`` would.

    Args:
      key: PRNG key.
      input_size: features of the layer input ``I``.
      hidden_size: ``H``.
      bias: whether to create ``bias_ih``.
      dtype: parameter dtype.

    Returns:
      A :class:`MinGRUParams`, every entry drawn from ``U(-1/sqrt(I), 1/sqrt(I))``.

    Raises:
      TypeError, ValueError: for a size that is not a positive int or a ``bias`` that is
        not a bool, naming it.

    Example:
      >>> p = init_min_gru_layer(jax.random.key(0), 4, 8)
      >>> p.weight_ih.shape, p.bias_ih.shape
      ((16, 4), (16,))
    """
    return MinGRUParams(*_init_linear(key, input_size, hidden_size, _MIN_GRU_GATES, bias, dtype))


def min_rnn_input_projection(params: MinLSTMParams | MinGRUParams, x: jax.Array) -> jax.Array:
    """``W_ih x + b_ih``: every gate's pre-activation, the whole of what the step reads.

    Args:
      params: one layer's :class:`MinLSTMParams` or :class:`MinGRUParams`.
      x: ``[..., input_size]``; any leading axes (``[time, batch]`` in a loop).

    Returns:
      ``[..., 3 * hidden_size]`` (minLSTM: f, i, h_tilde) or ``[..., 2 * hidden_size]``
      (minGRU: z, h_tilde).

    Example:
      >>> p = init_min_lstm_layer(jax.random.key(0), 3, 5)
      >>> min_rnn_input_projection(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 15)
    """
    gates = dense(x, params.weight_ih)
    return gates if params.bias_ih is None else add_bias(gates, params.bias_ih)


def _min_lstm_mixing(gates_x: jax.Array):
    """``(d, k_h)``: ``d = softplus(-k_f) - softplus(-k_i) = log(i / f)``, and ``k_h``."""
    k_f, k_i, k_h = jnp.split(gates_x, _MIN_LSTM_GATES, axis=-1)
    return jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i), k_h


def min_lstm_quantities(
    params: MinLSTMParams, gates_x: jax.Array, gates_h: jax.Array, state: MinLSTMState
) -> dict[str, jax.Array]:
    """Every quantity of one minLSTM step, by the names of the equations above.

    The gate math lives here; :func:`min_lstm_update` keeps the new state of it.

    Args:
      params: one layer's :class:`MinLSTMParams` (not read: the gates come in ``gates_x``).
      gates_x: ``[batch, 3 * hidden_size]`` from :func:`min_rnn_input_projection`.
      gates_h: ``[batch, 0]``, the empty recurrent product (no gate reads ``h_{t-1}``).
      state: previous :class:`MinLSTMState`, ``h`` ``[batch, hidden_size]``.

    Returns:
      In this order, each ``[batch, hidden_size]``: the normalised gates ``f = f / (f + i)``
      and ``i = i / (f + i)`` (so ``f + i == 1``), ``h_tilde = g(W_h x + b_h)`` and
      ``h = f * h_{t-1} + i * h_tilde``.

    Example:
      >>> h = jnp.zeros((1, 1), jnp.float32)
      >>> gates_x = jnp.array([[0.0, 0.0, 1.0]], jnp.float32)
      >>> q = min_lstm_quantities(None, gates_x, None, MinLSTMState(h))
      >>> {name: v.tolist() for name, v in q.items()}
      {'f': [[0.5]], 'i': [[0.5]], 'h_tilde': [[1.5]], 'h': [[0.75]]}
    """
    del params, gates_h
    d, k_h = _min_lstm_mixing(gates_x)
    f, i, h_tilde = jax.nn.sigmoid(-d), jax.nn.sigmoid(d), g(k_h)
    return {"f": f, "i": i, "h_tilde": h_tilde, "h": f * state.h + i * h_tilde}


def min_lstm_update(
    params: MinLSTMParams, gates_x: jax.Array, gates_h: jax.Array, state: MinLSTMState
) -> MinLSTMState:
    """The minLSTM step ``h_t = f * h_{t-1} + i * h_tilde``: the state field of
    :func:`min_lstm_quantities` (arguments as there).

    Example:
      >>> p = init_min_lstm_layer(jax.random.key(0), 3, 5)
      >>> state = MinLSTMState(jnp.zeros((2, 5), jnp.float32))
      >>> gates_x = min_rnn_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> h = min_lstm_update(p, gates_x, jnp.zeros((2, 0), jnp.float32), state).h
      >>> h.shape, bool(jnp.all(h > 0))
      ((2, 5), True)
    """
    return MinLSTMState(min_lstm_quantities(params, gates_x, gates_h, state)["h"])


def min_lstm_log_coefficients(params: MinLSTMParams, gates_x: jax.Array):
    """The minLSTM's recurrence in log space: ``(log f', log i' + log h_tilde)``.

    Args:
      params: one layer's :class:`MinLSTMParams` (not read).
      gates_x: ``[..., 3 * hidden_size]`` from :func:`min_rnn_input_projection`.

    Returns:
      ``(log_a, log_b)``, each ``[..., hidden_size]``: ``h_t = exp(log_a) * h_{t-1} +
      exp(log_b)``.

    Example:
      >>> log_a, log_b = min_lstm_log_coefficients(None, jnp.array([[0.0, 0.0, 1.0]]))
      >>> round(float(jnp.exp(log_a)[0, 0]), 6), round(float(jnp.exp(log_b)[0, 0]), 6)
      (0.5, 0.75)
    """
    del params
    d, k_h = _min_lstm_mixing(gates_x)
    return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(k_h)


def min_lstm_state_sizes(params: MinLSTMParams) -> MinLSTMState:
    """``MinLSTMState(h=hidden_size)``.

    Example:
      >>> min_lstm_state_sizes(init_min_lstm_layer(jax.random.key(0), 3, 5))
      MinLSTMState(h=5)
    """
    return MinLSTMState(h=params.weight_ih.shape[0] // _MIN_LSTM_GATES)


def min_gru_quantities(
    params: MinGRUParams, gates_x: jax.Array, gates_h: jax.Array, state: MinGRUState
) -> dict[str, jax.Array]:
    """Every quantity of one minGRU step, by the names of the equations above.

    The gate math lives here; :func:`min_gru_update` keeps the new state of it.

    Args:
      params: one layer's :class:`MinGRUParams` (not read).
      gates_x: ``[batch, 2 * hidden_size]`` from :func:`min_rnn_input_projection`.
      gates_h: ``[batch, 0]``, the empty recurrent product.
      state: previous :class:`MinGRUState`, ``h`` ``[batch, hidden_size]``.

    Returns:
      In this order, each ``[batch, hidden_size]``: ``z = sigmoid(W_z x + b_z)``,
      ``h_tilde = g(W_h x + b_h)`` and ``h = (1 - z) * h_{t-1} + z * h_tilde``.

    Example:
      >>> h = jnp.ones((1, 1), jnp.float32)
      >>> q = min_gru_quantities(None, jnp.array([[0.0, 1.0]], jnp.float32), None, MinGRUState(h))
      >>> {name: v.tolist() for name, v in q.items()}
      {'z': [[0.5]], 'h_tilde': [[1.5]], 'h': [[1.25]]}
    """
    del params, gates_h
    k_z, k_h = jnp.split(gates_x, _MIN_GRU_GATES, axis=-1)
    z, h_tilde = jax.nn.sigmoid(k_z), g(k_h)
    return {"z": z, "h_tilde": h_tilde, "h": (1.0 - z) * state.h + z * h_tilde}


def min_gru_update(
    params: MinGRUParams, gates_x: jax.Array, gates_h: jax.Array, state: MinGRUState
) -> MinGRUState:
    """The minGRU step ``h_t = (1 - z) * h_{t-1} + z * h_tilde``: the state field of
    :func:`min_gru_quantities` (arguments as there).

    Example:
      >>> state = MinGRUState(jnp.ones((1, 1), jnp.float32))
      >>> min_gru_update(None, jnp.array([[0.0, 1.0]], jnp.float32), None, state).h.tolist()
      [[1.25]]
    """
    return MinGRUState(min_gru_quantities(params, gates_x, gates_h, state)["h"])


def min_gru_log_coefficients(params: MinGRUParams, gates_x: jax.Array):
    """The minGRU's recurrence in log space: ``(log(1 - z), log z + log h_tilde)``.

    Args:
      params: one layer's :class:`MinGRUParams` (not read).
      gates_x: ``[..., 2 * hidden_size]`` from :func:`min_rnn_input_projection`.

    Returns:
      ``(log_a, log_b)``, each ``[..., hidden_size]``.

    Example:
      >>> log_a, log_b = min_gru_log_coefficients(None, jnp.array([[0.0, 1.0]]))
      >>> round(float(jnp.exp(log_a)[0, 0]), 6), round(float(jnp.exp(log_b)[0, 0]), 6)
      (0.5, 0.75)
    """
    del params
    k_z, k_h = jnp.split(gates_x, _MIN_GRU_GATES, axis=-1)
    return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + log_g(k_h)


def min_gru_state_sizes(params: MinGRUParams) -> MinGRUState:
    """``MinGRUState(h=hidden_size)``.

    Example:
      >>> min_gru_state_sizes(init_min_gru_layer(jax.random.key(0), 3, 5))
      MinGRUState(h=5)
    """
    return MinGRUState(h=params.weight_ih.shape[0] // _MIN_GRU_GATES)


MIN_LSTM_CELL = register_cell(
    LinearCellDef(
        name="min_lstm",
        input_projection=min_rnn_input_projection,
        update=min_lstm_update,
        state_sizes=min_lstm_state_sizes,
        init_layer=init_min_lstm_layer,
        param_type=MinLSTMParams,
        description="a minLSTM",
        quantities=min_lstm_quantities,
        log_coefficients=min_lstm_log_coefficients,
    )
)
MIN_GRU_CELL = register_cell(
    LinearCellDef(
        name="min_gru",
        input_projection=min_rnn_input_projection,
        update=min_gru_update,
        state_sizes=min_gru_state_sizes,
        init_layer=init_min_gru_layer,
        param_type=MinGRUParams,
        description="a minGRU",
        quantities=min_gru_quantities,
        log_coefficients=min_gru_log_coefficients,
    )
)
