"""Named tuples for recurrent state and parameters, and the dimension vocabulary.

Shapes in docstrings across the package use these names:

- ``time``: sequence length ``T``; ``batch``: ``B``; ``input_size``: ``I``;
- ``hidden_size``: ``H``, the size of the cell state ``c``;
- ``proj_size``: ``P``, the size of ``h`` when the LSTM has a projection (LSTMP);
  ``H_out`` is ``P`` when ``proj_size > 0`` and ``H`` otherwise;
- ``layers``: ``L``; ``directions``: ``D`` (2 when bidirectional, else 1).

Parameter fields follow torch's names and layouts (``weight_ih`` is
``[4 * hidden_size, input_size]``, gates stacked in torch's order i, f, g, o), so a
``torch.nn.LSTM`` state dict maps onto them without transposes. ``G`` is the number of
gates times ``hidden_size``: ``4H`` for the LSTM (``3H`` with coupled gates), ``3H`` for
the GRU (r, z, n) and ``H`` for the Elman RNN. Fields that torch does not have (the LSTM
variants' peephole and layer-norm parameters) are ``None`` unless the variant is on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
from jax import export


class LSTMState(NamedTuple):
    """The recurrent state of one LSTM layer and direction.

    Attributes:
      h: hidden state ``[batch, H_out]``.
      c: cell state ``[batch, hidden_size]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from lstm_jax import LSTMState
      >>> state = LSTMState(h=jnp.zeros((2, 4)), c=jnp.zeros((2, 8)))
      >>> h, c = state  # unpacks like torch's (h, c)
      >>> h.shape, state.c.shape
      ((2, 4), (2, 8))
    """

    h: jax.Array
    c: jax.Array


class LSTMParams(NamedTuple):
    """Parameters of one LSTM layer in one direction, in torch's layout.

    The first five fields are ``torch.nn.LSTM``'s. The others belong to the variants
    (see :func:`lstm_jax.functional.lstm_step`) and are ``None`` when the variant is off;
    the cell reads which variant it is from which fields are present, and the coupled
    input-forget gate (CIFG) from ``weight_hh`` having 3 gate blocks instead of 4.

    Attributes:
      weight_ih: ``[4 * hidden_size, input_size]``, gates i, f, g, o
        (``[3 * hidden_size, input_size]``, gates f, g, o, with CIFG).
      weight_hh: ``[4 * hidden_size, H_out]`` (``[3 * hidden_size, H_out]`` with CIFG).
      bias_ih: ``[4 * hidden_size]`` or ``None`` when the LSTM has no bias.
      bias_hh: ``[4 * hidden_size]`` or ``None``.
      weight_hr: ``[proj_size, hidden_size]`` or ``None`` without projection.
      weight_ci: peephole from ``c_{t-1}`` to the input gate, ``[hidden_size]`` (``None``
        without peepholes or with CIFG).
      weight_cf: peephole from ``c_{t-1}`` to the forget gate, ``[hidden_size]``.
      weight_co: peephole from ``c_t`` to the output gate, ``[hidden_size]``.
      ln_ih_weight: layer-norm gain of the input part ``W_ih x``, ``[G]``.
      ln_ih_bias: layer-norm shift of the input part, ``[G]``.
      ln_hh_weight: layer-norm gain of the recurrent part ``W_hh h``, ``[G]``.
      ln_hh_bias: layer-norm shift of the recurrent part, ``[G]``.
      ln_c_weight: layer-norm gain of the cell before the output tanh, ``[hidden_size]``.
      ln_c_bias: layer-norm shift of the cell, ``[hidden_size]``.

    Example:
      >>> import jax
      >>> from lstm_jax.functional import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5, cifg=True, peephole=True)
      >>> p.weight_ih.shape, p.weight_ci, p.weight_cf.shape
      ((15, 3), None, (5,))
    """

    weight_ih: jax.Array
    weight_hh: jax.Array
    bias_ih: jax.Array | None = None
    bias_hh: jax.Array | None = None
    weight_hr: jax.Array | None = None
    weight_ci: jax.Array | None = None
    weight_cf: jax.Array | None = None
    weight_co: jax.Array | None = None
    ln_ih_weight: jax.Array | None = None
    ln_ih_bias: jax.Array | None = None
    ln_hh_weight: jax.Array | None = None
    ln_hh_bias: jax.Array | None = None
    ln_c_weight: jax.Array | None = None
    ln_c_bias: jax.Array | None = None


class GRUState(NamedTuple):
    """The recurrent state of one GRU layer and direction.

    Attributes:
      h: hidden state ``[batch, hidden_size]``.

    Example:
      >>> import jax.numpy as jnp
      >>> GRUState(jnp.zeros((2, 5), jnp.float32)).h.shape
      (2, 5)
    """

    h: jax.Array


class GRUParams(NamedTuple):
    """Parameters of one GRU layer in one direction, ``torch.nn.GRU``'s layout.

    Attributes:
      weight_ih: ``[3 * hidden_size, input_size]``, gates r, z, n.
      weight_hh: ``[3 * hidden_size, hidden_size]``.
      bias_ih: ``[3 * hidden_size]`` or ``None`` when the GRU has no bias.
      bias_hh: ``[3 * hidden_size]`` or ``None``.

    Example:
      >>> import jax
      >>> from lstm_jax.functional import init_gru_layer
      >>> init_gru_layer(jax.random.key(0), 3, 5)._fields
      ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
    """

    weight_ih: jax.Array
    weight_hh: jax.Array
    bias_ih: jax.Array | None = None
    bias_hh: jax.Array | None = None


class RNNState(NamedTuple):
    """The recurrent state of one Elman RNN layer and direction.

    Attributes:
      h: hidden state ``[batch, hidden_size]``.

    Example:
      >>> import jax.numpy as jnp
      >>> RNNState(jnp.zeros((2, 5), jnp.float32)).h.shape
      (2, 5)
    """

    h: jax.Array


class RNNParams(NamedTuple):
    """Parameters of one Elman RNN layer in one direction, ``torch.nn.RNN``'s layout.

    Attributes:
      weight_ih: ``[hidden_size, input_size]``.
      weight_hh: ``[hidden_size, hidden_size]``.
      bias_ih: ``[hidden_size]`` or ``None`` when the RNN has no bias.
      bias_hh: ``[hidden_size]`` or ``None``.

    Example:
      >>> import jax
      >>> from lstm_jax.functional import init_rnn_layer
      >>> init_rnn_layer(jax.random.key(0), 3, 5, bias=False).bias_ih is None
      True
    """

    weight_ih: jax.Array
    weight_hh: jax.Array
    bias_ih: jax.Array | None = None
    bias_hh: jax.Array | None = None


@jax.tree_util.register_pytree_with_keys_class
class Quantities(Mapping):
    """A read-only mapping from names to values that keeps its order through ``jax.jit``
    and ``jax.tree.map`` (which sort a ``dict``'s keys): the order of a cell's equations.

    :func:`lstm_jax.internals` returns one per layer and direction.

    Args:
      items: a mapping, or ``(name, value)`` pairs, in order.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lstm_jax import Quantities
      >>> q = Quantities({"f": jnp.zeros(2), "c": jnp.ones(2)})
      >>> list(jax.jit(lambda q: q)(q)), q["c"].tolist()
      (['f', 'c'], [1.0, 1.0])
    """

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]]):
        self._items = dict(items)

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Quantities({self._items!r})"

    def tree_flatten_with_keys(self):
        children = [(jax.tree_util.DictKey(name), value) for name, value in self._items.items()]
        return children, tuple(self._items)

    @classmethod
    def tree_unflatten(cls, names, values):
        return cls(zip(names, values, strict=True))


# Parameters of a stack: ``params[layer][direction]``, direction 0 forward, 1 reverse.
StackParams = tuple[tuple[LSTMParams, ...], ...]


# ``jax.export`` serialises a function's input and output structure; named tuples in it
# must be registered under a stable name, once, so that an exported function returning
# ``out, (h, c)`` (an LSTMState) or taking the parameters serialises and loads back.
for _type in (LSTMState, LSTMParams, GRUState, GRUParams, RNNState, RNNParams):
    export.register_namedtuple_serialization(_type, serialized_name=f"lstm_jax.{_type.__name__}")
del _type
