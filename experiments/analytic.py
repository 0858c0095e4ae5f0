"""Analytic parameter counts and FLOPs of the recurrent cells, and parameter matching.

Parameter counts are read from each cell's initialiser, so they hold for every
registered cell (torch's ``LSTM``/``GRU``/``RNN`` layout: per layer and direction ``g``
gate blocks of ``W_ih [gH, I]``, ``W_hh [gH, H]`` and two bias vectors ``[gH]``, with
``g`` 4 for the LSTM, 3 for the GRU, 1 for the RNN); a layer above a bidirectional one
reads ``2H`` features.

FLOPs count a multiply-add as 2 and every elementwise operation (an add, a product, a
sigmoid, a tanh) as 1. A forward step of one sequence through one layer is the two
matrix products, ``2 g H (I + H)``, plus :data:`ELEMENTWISE` ``[cell] x H``; a train
step (forward and backward) is counted as 3 forwards, the usual estimate (the backward
pass computes two products for each of the forward's).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from lstm_jax import functional as F
from lstm_jax import train

#: Elementwise FLOPs per unit and step, as torch's equations are written:
#: LSTM: 8 bias adds, 4 gate activations, c' = f c + i g (3), o tanh(c') (2) = 17;
#: GRU: 6 bias adds, 3 activations, r (W_hn h + b_hn) (1), h' = (1 - z) n + z h (3) = 13;
#: RNN: 2 bias adds, 1 activation = 3.
ELEMENTWISE = {"lstm": 17, "gru": 13, "rnn": 3}


@functools.cache
def gates(cell: str) -> int:
    """Gate blocks of a registered cell (``"rnn"``: torch's RNN, the tanh cell), read from
    the rows of its ``weight_hh`` per unit.

    Raises:
      ValueError: a cell that is not registered.

    Example:
      >>> gates("lstm"), gates("gru"), gates("rnn")
      (4, 3, 1)
    """
    if cell not in train.cell_kinds():
        raise ValueError(f"cell must be one of {train.cell_kinds()}, got {cell!r}")
    layer = F.get_cell("rnn_tanh" if cell == "rnn" else cell).init_layer
    weight_hh = jax.eval_shape(  # traced: weight_hh may be a property built from blocks
        lambda k: layer(k, 1, 1, bias=True, dtype=jnp.float32).weight_hh, jax.random.key(0)
    )
    return weight_hh.shape[0]


def recurrent_params(
    cell: str, input_size: int, hidden_size: int, num_layers: int = 1, directions: int = 1
) -> int:
    """Parameters of a recurrent stack of any registered cell, counted from the shapes its
    initialiser gives (torch's cells: two bias vectors per gate block; a layer above a
    bidirectional one reads ``2H`` features).

    Example:
      >>> recurrent_params("lstm", 2, 3)  # 4*3*(2+3) + 2*4*3
      84
    """
    total = 0
    for layer in range(num_layers):
        features = input_size if layer == 0 else directions * hidden_size
        total += directions * _layer_params(cell, features, hidden_size)
    return total


@functools.cache
def _layer_params(cell: str, input_size: int, hidden_size: int) -> int:
    init = F.get_cell("rnn_tanh" if cell == "rnn" else cell).init_layer
    shapes = jax.eval_shape(
        lambda k: init(k, input_size, hidden_size, bias=True, dtype=jnp.float32),
        jax.random.key(0),
    )
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def matched_hidden(
    cell: str,
    target: int,
    input_size: int,
    num_layers: int = 1,
    directions: int = 1,
) -> int:
    """The hidden size whose ``cell`` stack has closest to ``target`` parameters.

    Example:
      >>> lstm = recurrent_params("lstm", 2, 128)
      >>> h = matched_hidden("rnn", lstm, 2)
      >>> h, abs(recurrent_params("rnn", 2, h) - lstm) / lstm < 0.01
      (258, True)
    """
    lo, hi = 1, 1
    while recurrent_params(cell, input_size, hi, num_layers, directions) < target:
        hi *= 2
    while lo < hi:  # the smallest h with at least `target` parameters
        mid = (lo + hi) // 2
        if recurrent_params(cell, input_size, mid, num_layers, directions) < target:
            lo = mid + 1
        else:
            hi = mid
    return min(
        (h for h in (lo - 1, lo) if h >= 1),
        key=lambda h: abs(recurrent_params(cell, input_size, h, num_layers, directions) - target),
    )


def step_flops(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    directions: int = 1,
    batch_size: int = 1,
    seq_len: int = 1,
    train: bool = True,
) -> int | None:
    """FLOPs of the recurrent stack for ``seq_len`` steps of ``batch_size`` sequences.

    Leaves out the embedding, the read-out and the loss (the same for every cell). ``None``
    for a cell whose elementwise work is not counted in :data:`ELEMENTWISE`.

    Example:
      >>> step_flops("lstm", 2, 3, train=False)  # 2*4*3*(2+3) + 17*3
      171
    """
    if cell not in ELEMENTWISE:
        return None
    g, h = gates(cell), hidden_size
    forward = 0
    for layer in range(num_layers):
        i = input_size if layer == 0 else directions * h
        forward += directions * (2 * g * h * (i + h) + ELEMENTWISE[cell] * h)
    return (3 if train else 1) * forward * batch_size * seq_len
