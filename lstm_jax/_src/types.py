"""Named tuples for recurrent state and parameters, and the dimension vocabulary.

Shapes in docstrings across the package use these names:

- ``time``: sequence length ``T``; ``batch``: ``B``; ``input_size``: ``I``;
- ``hidden_size``: ``H``, the size of the cell state ``c``;
- ``proj_size``: ``P``, the size of ``h`` when the LSTM has a projection (LSTMP);
  ``H_out`` is ``P`` when ``proj_size > 0`` and ``H`` otherwise;
- ``layers``: ``L``; ``directions``: ``D`` (2 when bidirectional, else 1).

Parameter fields follow torch's names and layouts (``weight_ih`` is
``[4 * hidden_size, input_size]``, gates stacked in torch's order i, f, g, o), so a
``torch.nn.LSTM`` state dict maps onto them without transposes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class LSTMState(NamedTuple):
    """The recurrent state of one LSTM layer and direction.

    Attributes:
      h: hidden state ``[batch, H_out]``.
      c: cell state ``[batch, hidden_size]``.
    """

    h: jax.Array
    c: jax.Array


class LSTMParams(NamedTuple):
    """Parameters of one LSTM layer in one direction, in torch's layout.

    Attributes:
      weight_ih: ``[4 * hidden_size, input_size]``, gates i, f, g, o.
      weight_hh: ``[4 * hidden_size, H_out]``.
      bias_ih: ``[4 * hidden_size]`` or ``None`` when the LSTM has no bias.
      bias_hh: ``[4 * hidden_size]`` or ``None``.
      weight_hr: ``[proj_size, hidden_size]`` or ``None`` without projection.
    """

    weight_ih: jax.Array
    weight_hh: jax.Array
    bias_ih: jax.Array | None = None
    bias_hh: jax.Array | None = None
    weight_hr: jax.Array | None = None


# Parameters of a stack: ``params[layer][direction]``, direction 0 forward, 1 reverse.
StackParams = tuple[tuple[LSTMParams, ...], ...]
