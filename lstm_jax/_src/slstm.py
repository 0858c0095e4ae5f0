r"""The sLSTM cell (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory",
arXiv:2405.04517, section 2.2 and appendix A): exponential input gates, a normaliser
state, a stabiliser state and a recurrence split into heads.

With the pre-activations :math:`\tilde\imath_t, \tilde f_t, \tilde z_t, \tilde o_t`, each
:math:`W x_t + R h_{t-1} + b` (gates stacked i, f, z, o, the order of the paper's
reference code), one step is

.. math::

   z_t &= \tanh(\tilde z_t), \quad o_t = \sigma(\tilde o_t), \quad
   \log i_t = \tilde\imath_t, \quad
   \log f_t = \log \sigma(\tilde f_t) \ \text{or}\ \tilde f_t \\
   m_t &= \max(\log f_t + m_{t-1},\ \log i_t) \\
   i'_t &= \exp(\log i_t - m_t), \quad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
   c_t &= f'_t\, c_{t-1} + i'_t\, z_t, \quad n_t = f'_t\, n_{t-1} + i'_t, \quad
   h_t = o_t\, c_t / n_t

Two cells share everything but the forget gate: ``"slstm"`` (:data:`SLSTM_CELL`,
:math:`f_t = \sigma(\tilde f_t)`, the reference code's) and ``"slstm_exp"``
(:data:`SLSTM_EXP_CELL`, :math:`f_t = \exp(\tilde f_t)`); :func:`slstm_cell_def` picks one
by the paper's name of the choice.

The stabiliser :math:`m_t` makes every exponential at most 1: :math:`c_t` and :math:`n_t`
are the paper's unstabilised :math:`c_t, n_t` times :math:`e^{-m_t}`, and :math:`h_t` is
theirs exactly. One of :math:`i'_t, f'_t` is 1 at each step, so from the first step on
:math:`n_t \ge 1` and :math:`|c_t| \le n_t`, hence :math:`|h_t| \le 1`, at any
pre-activation and sequence length.

The zero state. A state with :math:`n = 0` is empty (its :math:`c` is 0 too), and its
stabiliser is taken as :math:`m = -\infty`, the logarithm of an empty sum, whatever the
``m`` field holds: the first step from zeros gives :math:`m_1 = \log i_1`,
:math:`f'_1 = 0`, :math:`n_1 = 1`, :math:`c_1 = z_1` and :math:`h_1 = o_1 z_1`. The
reference code also sets :math:`m_1 = \log i_1` when :math:`n = 0`, but keeps
:math:`f'_1 = \exp(\log f_1 + 0 - \log i_1)`, which overflows to infinity (and
:math:`f'_1 c_0` to NaN) once :math:`\log f_1 - \log i_1` passes 88 in float32; here
:math:`f'_1` is 0. So zeros (``initialize_carry``, ``hx=None``) start every sequence.

Heads. The recurrent matrix :math:`R` is block-diagonal with ``num_heads`` blocks: each
head's gates read that head's units of :math:`h_{t-1}` only. The parameters hold the
blocks (``weight_hh_heads`` ``[num_heads, 4 * head_size, head_size]``, the reference
code's layout), and ``weight_hh`` is a property that lays them out as the dense
``[4 * hidden_size, hidden_size]`` matrix every loop and kernel multiplies by, so the
gradient of a loss reaches the blocks only. The loops multiply by the whole matrix, its
zeros included (``num_heads`` times the arithmetic of the blocks' own products).

The stabilised :math:`c, n, m` are the state's fields, so zoneout (which mixes the old
and new value of each field) mixes numbers stabilised by different :math:`m`: give it
one rate per field, ``(rate_h, 0, 0, 0)``, to zone out :math:`h` alone.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import export

from lstm_jax._src import validation
from lstm_jax._src.cells import CellDef, add_bias, dense, register_cell
from lstm_jax._src.init import uniform

_GATES = 4  # i, f, z, o
ForgetGate = Literal["sigmoid", "exponential"]


class SLSTMState(NamedTuple):
    """The recurrent state of one sLSTM layer and direction, each ``[batch, hidden_size]``.

    Attributes:
      h: hidden state, the output.
      c: cell state, stabilised (the paper's :math:`c_t e^{-m_t}`).
      n: normaliser state, stabilised (the paper's :math:`n_t e^{-m_t}`); 0 marks an empty
        state, where ``c`` must be 0 too.
      m: stabiliser state, the logarithm of the scale taken out of ``c`` and ``n``.

    Example:
      >>> zeros = jnp.zeros((2, 8), jnp.float32)
      >>> state = SLSTMState(zeros, zeros, zeros, zeros)
      >>> state._fields, state.n.shape
      (('h', 'c', 'n', 'm'), (2, 8))
    """

    h: jax.Array
    c: jax.Array
    n: jax.Array
    m: jax.Array


def block_diagonal(blocks: jax.Array) -> jax.Array:
    """The dense recurrent matrix of the sLSTM's heads, gate blocks i, f, z, o.

    Args:
      blocks: ``[num_heads, 4 * head_size, head_size]``: head ``a``'s row
        ``g * head_size + k`` (gate ``g``, unit ``k`` of the head) holds the weights from
        the head's units of ``h``.

    Returns:
      ``[4 * hidden_size, hidden_size]`` with ``hidden_size = num_heads * head_size``: row
      ``g * hidden_size + a * head_size + k`` is head ``a``'s row ``g * head_size + k`` in
      columns ``a * head_size ...`` and 0 elsewhere.

    Example:
      >>> w = block_diagonal(jnp.ones((2, 4, 1), jnp.float32))
      >>> w.shape, w[:, 0].tolist()
      ((8, 2), [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    """
    heads, rows, head_size = blocks.shape
    per_gate = blocks.reshape(heads, _GATES, head_size, head_size).transpose(1, 0, 2, 3)
    shape = (_GATES, heads, head_size, heads, head_size)
    spread = jnp.broadcast_to(per_gate[:, :, :, None, :], shape)
    same_head = jnp.arange(heads)[:, None] == jnp.arange(heads)[None, :]
    # A select, not a product with an identity: a NaN in one head stays in that head.
    dense_matrix = jnp.where(same_head[None, :, None, :, None], spread, jnp.zeros_like(spread))
    return dense_matrix.reshape(rows * heads, heads * head_size)


class SLSTMParams(NamedTuple):
    """Parameters of one sLSTM layer in one direction.

    Attributes:
      weight_ih: ``[4 * hidden_size, input_size]``, gates i, f, z, o.
      weight_hh_heads: ``[num_heads, 4 * head_size, head_size]``, one block of the
        block-diagonal recurrent matrix per head (:func:`block_diagonal`).
      bias_ih: ``[4 * hidden_size]`` or ``None`` without bias.

    ``weight_hh`` is the dense ``[4 * hidden_size, hidden_size]`` recurrent matrix built
    from ``weight_hh_heads`` (a property, not a stored parameter).

    Example:
      >>> p = init_slstm_layer(jax.random.key(0), 3, 8, num_heads=2)
      >>> p.weight_ih.shape, p.weight_hh_heads.shape, p.weight_hh.shape
      ((32, 3), (2, 16, 4), (32, 8))
    """

    weight_ih: jax.Array
    weight_hh_heads: jax.Array
    bias_ih: jax.Array | None = None

    @property
    def weight_hh(self) -> jax.Array:
        """``[4 * hidden_size, hidden_size]``, block-diagonal: :func:`block_diagonal` of
        ``weight_hh_heads``."""
        return block_diagonal(self.weight_hh_heads)


for _type in (SLSTMState, SLSTMParams):
    export.register_namedtuple_serialization(_type, serialized_name=f"lstm_jax.{_type.__name__}")
del _type


def init_slstm_layer(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    dtype=jnp.float32,
    num_heads: int = 1,
) -> SLSTMParams:
    """Initializes one sLSTM layer in one direction, every entry ``U(-1/sqrt(H), 1/sqrt(H))``.

    The bound is torch's for its recurrent layers, as for the library's other cells.

    Args:
      key: PRNG key.
      input_size: features of the layer input ``I``.
      hidden_size: ``H``, a multiple of ``num_heads``.
      bias: whether to create ``bias_ih``.
      dtype: parameter dtype.
      num_heads: heads of the block-diagonal recurrence, each of ``H / num_heads`` units.

    Returns:
      An :class:`SLSTMParams`.

    Raises:
      TypeError, ValueError: for a size or ``num_heads`` that is not a positive int, a
        ``hidden_size`` that ``num_heads`` does not divide, or a ``bias`` that is not a
        bool, naming it.

    Example:
      >>> p = init_slstm_layer(jax.random.key(0), 3, 8, num_heads=4, bias=False)
      >>> p.weight_hh_heads.shape, p.bias_ih
      ((4, 8, 2), None)
    """
    input_size = validation.check_positive_int("input_size", input_size)
    hidden_size = validation.check_positive_int("hidden_size", hidden_size)
    num_heads = validation.check_positive_int("num_heads", num_heads)
    bias = validation.check_bool("bias", bias)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be a multiple of num_heads, got hidden_size={hidden_size} "
            f"and num_heads={num_heads}"
        )
    head_size = hidden_size // num_heads
    bound = 1.0 / math.sqrt(hidden_size)
    k_ih, k_hh, k_b = jax.random.split(key, 3)
    return SLSTMParams(
        uniform(k_ih, (_GATES * hidden_size, input_size), bound, dtype),
        uniform(k_hh, (num_heads, _GATES * head_size, head_size), bound, dtype),
        uniform(k_b, (_GATES * hidden_size,), bound, dtype) if bias else None,
    )


def slstm_input_projection(params: SLSTMParams, x: jax.Array) -> jax.Array:
    """``W_ih x + b_ih``, the input's part of the gate pre-activations.

    Args:
      params: one layer's :class:`SLSTMParams`.
      x: ``[..., input_size]``; any leading axes (``[time, batch]`` in a loop).

    Returns:
      ``[..., 4 * hidden_size]``, gates i, f, z, o.

    Example:
      >>> p = init_slstm_layer(jax.random.key(0), 3, 8)
      >>> slstm_input_projection(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 32)
    """
    gates = dense(x, params.weight_ih)
    return gates if params.bias_ih is None else add_bias(gates, params.bias_ih)


def slstm_quantities(
    params: SLSTMParams,
    gates_x: jax.Array,
    gates_h: jax.Array,
    state: SLSTMState,
    *,
    forget_gate: ForgetGate = "sigmoid",
) -> dict[str, jax.Array]:
    """Every quantity of one sLSTM step (equations above), by the equations' names.

    Args:
      params: one layer's :class:`SLSTMParams` (not read: the products are given).
      gates_x: ``[batch, 4 * hidden_size]`` from :func:`slstm_input_projection`.
      gates_h: ``[batch, 4 * hidden_size]``, ``W_hh h_{t-1}``
        (:func:`~lstm_jax.functional.recurrent_product`).
      state: previous :class:`SLSTMState`.
      forget_gate: ``"sigmoid"`` (:math:`f = \\sigma(\\tilde f)`) or ``"exponential"``
        (:math:`f = \\exp(\\tilde f)`).

    Returns:
      Each ``[batch, hidden_size]``, in this order: the gates as applied, ``i`` and ``f``
      stabilised (:math:`i'_t, f'_t`), ``z``, ``o``; then the new state ``c``, ``n``,
      ``m`` and ``h``.

    Example:
      >>> zeros = jnp.zeros((1, 1), jnp.float32)
      >>> gates = jnp.array([[-200.0, 5.0, 1.0, 0.0]], jnp.float32)  # i, f, z, o
      >>> q = slstm_quantities(None, gates, jnp.zeros_like(gates), SLSTMState(*[zeros] * 4))
      >>> {name: round(v.item(), 4) for name, v in q.items()}
      {'i': 1.0, 'f': 0.0, 'z': 0.7616, 'o': 0.5, 'c': 0.7616, 'n': 1.0, 'm': -200.0, 'h': 0.3808}
    """
    del params
    if forget_gate not in ("sigmoid", "exponential"):
        raise ValueError(f"forget_gate must be 'sigmoid' or 'exponential', got {forget_gate!r}")
    log_i, f_pre, z_pre, o_pre = jnp.split(gates_x + gates_h, _GATES, axis=-1)
    log_f = f_pre if forget_gate == "exponential" else jax.nn.log_sigmoid(f_pre)
    # An empty state (n = 0) has stabiliser -inf: its forget term is exactly 0.
    m_prev = jnp.where(state.n == 0, jnp.full_like(state.m, -jnp.inf), state.m)
    m = jnp.maximum(log_f + m_prev, log_i)
    i = jnp.exp(log_i - m)
    f = jnp.exp(log_f + m_prev - m)
    z = jnp.tanh(z_pre)
    o = jax.nn.sigmoid(o_pre)
    c = f * state.c + i * z
    n = f * state.n + i
    return {"i": i, "f": f, "z": z, "o": o, "c": c, "n": n, "m": m, "h": o * c / n}


def slstm_update(
    params: SLSTMParams,
    gates_x: jax.Array,
    gates_h: jax.Array,
    state: SLSTMState,
    *,
    forget_gate: ForgetGate = "sigmoid",
) -> SLSTMState:
    """One sLSTM step given both products: the state fields of :func:`slstm_quantities`.

    Args:
      params: one layer's :class:`SLSTMParams` (not read).
      gates_x: ``[batch, 4 * hidden_size]`` from :func:`slstm_input_projection`.
      gates_h: ``[batch, 4 * hidden_size]``, ``W_hh h_{t-1}``.
      state: previous :class:`SLSTMState`, fields ``[batch, hidden_size]``.
      forget_gate: ``"sigmoid"`` or ``"exponential"``.

    Returns:
      The next :class:`SLSTMState`.

    Example:
      >>> from lstm_jax.functional import recurrent_product
      >>> p = init_slstm_layer(jax.random.key(0), 3, 8, num_heads=2)
      >>> state = SLSTM_CELL.zero_state(p, 2)
      >>> gates_x = slstm_input_projection(p, jnp.ones((2, 3), jnp.float32))
      >>> new = slstm_update(p, gates_x, recurrent_product(p, state.h), state)
      >>> new.h.shape, bool(jnp.all(new.n == 1.0))
      ((2, 8), True)
    """
    q = slstm_quantities(params, gates_x, gates_h, state, forget_gate=forget_gate)
    return SLSTMState(q["h"], q["c"], q["n"], q["m"])


def slstm_state_sizes(params: SLSTMParams) -> SLSTMState:
    """``SLSTMState(h=H, c=H, n=H, m=H)``, read from the shapes (no computation).

    Example:
      >>> slstm_state_sizes(init_slstm_layer(jax.random.key(0), 3, 8, num_heads=2))
      SLSTMState(h=8, c=8, n=8, m=8)
    """
    hidden = params.weight_ih.shape[0] // _GATES
    return SLSTMState(h=hidden, c=hidden, n=hidden, m=hidden)


def _slstm_exp_quantities(params, gates_x, gates_h, state) -> dict[str, jax.Array]:
    """:func:`slstm_quantities` with the exponential forget gate (a function of its own, so
    that copied and unpickled cells compare equal to :data:`SLSTM_EXP_CELL`)."""
    return slstm_quantities(params, gates_x, gates_h, state, forget_gate="exponential")


def _slstm_exp_update(params, gates_x, gates_h, state) -> SLSTMState:
    """:func:`slstm_update` with the exponential forget gate."""
    return slstm_update(params, gates_x, gates_h, state, forget_gate="exponential")


SLSTM_CELL = register_cell(
    CellDef(
        "slstm",
        slstm_input_projection,
        slstm_update,
        slstm_state_sizes,
        init_slstm_layer,
        SLSTMParams,
        "an sLSTM",
        slstm_quantities,
    )
)
SLSTM_EXP_CELL = register_cell(
    CellDef(
        "slstm_exp",
        slstm_input_projection,
        _slstm_exp_update,
        slstm_state_sizes,
        init_slstm_layer,
        SLSTMParams,
        "an sLSTM with exponential forget gates",
        _slstm_exp_quantities,
    )
)


def slstm_cell_def(forget_gate: ForgetGate = "sigmoid") -> CellDef:
    """The sLSTM cell with the paper's forget gate ``"sigmoid"`` or ``"exponential"``.

    Raises:
      ValueError: for any other ``forget_gate``.

    Example:
      >>> slstm_cell_def("exponential").name
      'slstm_exp'
    """
    cells = {"sigmoid": SLSTM_CELL, "exponential": SLSTM_EXP_CELL}
    if forget_gate not in cells:
        raise ValueError(f"forget_gate must be 'sigmoid' or 'exponential', got {forget_gate!r}")
    return cells[forget_gate]
