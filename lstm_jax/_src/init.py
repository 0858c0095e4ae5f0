"""Initializers for recurrent parameters.

The default is torch's: every weight and bias drawn from U(-1/sqrt(H), 1/sqrt(H)).
Options that LSTM papers use are available on top of it:

- ``forget_bias``: the forget gate's bias set to a constant (Gers et al. 1999;
  Jozefowicz et al. 2015 recommend 1.0), so gradients flow through ``c`` early on.
- ``recurrent_init="orthogonal"``: each gate's block of ``weight_hh`` is an orthogonal
  matrix (Saxe et al. 2014).
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

from lstm_jax._src.types import LSTMParams, StackParams

RecurrentInit = Literal["uniform", "orthogonal"]
_LSTM_GATES = 4
_FORGET_GATE = 1  # torch's gate order is i, f, g, o


def uniform(key: jax.Array, shape: tuple[int, ...], bound: float, dtype) -> jax.Array:
    """Samples U(-bound, bound), torch's default for recurrent layers.

    Example:
      >>> w = uniform(jax.random.key(0), (4, 3), 0.5, jnp.float32)
      >>> bool(jnp.all(jnp.abs(w) <= 0.5)), w.shape
      (True, (4, 3))
    """
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)


def orthogonal_blocks(key: jax.Array, num_blocks: int, rows: int, cols: int, dtype) -> jax.Array:
    """Stacks ``num_blocks`` independent (semi-)orthogonal ``[rows, cols]`` matrices.

    Returns:
      ``[num_blocks * rows, cols]``, one orthogonal block per gate.

    Example:
      >>> w = orthogonal_blocks(jax.random.key(0), 4, 3, 3, jnp.float32)
      >>> w.shape, bool(jnp.allclose(w[:3] @ w[:3].T, jnp.eye(3, dtype=w.dtype), atol=1e-5))
      ((12, 3), True)
    """
    init = jax.nn.initializers.orthogonal()
    keys = jax.random.split(key, num_blocks)
    return jnp.concatenate([init(k, (rows, cols), dtype) for k in keys], axis=0)


def init_lstm_layer(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    proj_size: int = 0,
    dtype=jnp.float32,
    forget_bias: float | None = None,
    recurrent_init: RecurrentInit = "uniform",
) -> LSTMParams:
    """Initializes one LSTM layer in one direction.

    Args:
      key: PRNG key.
      input_size: features of the layer input ``I``.
      hidden_size: cell size ``H``.
      bias: whether to create ``bias_ih`` and ``bias_hh``.
      proj_size: ``P``; 0 for no projection.
      dtype: parameter dtype.
      forget_bias: if given, the forget gate's total bias (``bias_ih + bias_hh``) is set
        to this value (the ``bias_ih`` slice holds it, the ``bias_hh`` slice is 0).
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"`` gate blocks of ``weight_hh``.

    Returns:
      An :class:`LSTMParams` in torch's layout.

    Example:
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5, forget_bias=1.0)
      >>> p.weight_ih.shape, p.weight_hh.shape, float((p.bias_ih + p.bias_hh)[5])
      ((20, 3), (20, 5), 1.0)
    """
    bound = 1.0 / math.sqrt(hidden_size)
    h_out = proj_size or hidden_size
    k_ih, k_hh, k_bih, k_bhh, k_hr = jax.random.split(key, 5)
    weight_ih = uniform(k_ih, (_LSTM_GATES * hidden_size, input_size), bound, dtype)
    if recurrent_init == "orthogonal":
        weight_hh = orthogonal_blocks(k_hh, _LSTM_GATES, hidden_size, h_out, dtype)
    elif recurrent_init == "uniform":
        weight_hh = uniform(k_hh, (_LSTM_GATES * hidden_size, h_out), bound, dtype)
    else:
        raise ValueError(
            f"recurrent_init must be 'uniform' or 'orthogonal', got {recurrent_init!r}"
        )
    bias_ih = bias_hh = None
    if bias:
        bias_ih = uniform(k_bih, (_LSTM_GATES * hidden_size,), bound, dtype)
        bias_hh = uniform(k_bhh, (_LSTM_GATES * hidden_size,), bound, dtype)
        if forget_bias is not None:
            forget = slice(_FORGET_GATE * hidden_size, (_FORGET_GATE + 1) * hidden_size)
            bias_ih = bias_ih.at[forget].set(forget_bias)
            bias_hh = bias_hh.at[forget].set(0.0)
    elif forget_bias is not None:
        raise ValueError("forget_bias needs bias=True")
    weight_hr = uniform(k_hr, (proj_size, hidden_size), bound, dtype) if proj_size else None
    return LSTMParams(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)


def init_lstm_params(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
    dtype=jnp.float32,
    forget_bias: float | None = None,
    recurrent_init: RecurrentInit = "uniform",
) -> StackParams:
    """Initializes a (multi-layer, optionally bidirectional) LSTM like ``torch.nn.LSTM``.

    Layer ``k > 0`` takes ``directions * H_out`` input features. Arguments are those of
    :func:`init_lstm_layer` plus ``num_layers`` and ``bidirectional``.

    Returns:
      ``params[layer][direction]``, each an :class:`LSTMParams`.

    Example:
      >>> params = init_lstm_params(jax.random.key(0), 10, 20, num_layers=2, bidirectional=True)
      >>> len(params), len(params[0]), params[1][0].weight_ih.shape
      (2, 2, (80, 40))
    """
    directions = 2 if bidirectional else 1
    h_out = proj_size or hidden_size
    keys = jax.random.split(key, num_layers * directions).reshape(num_layers, directions)
    return tuple(
        tuple(
            init_lstm_layer(
                keys[layer, d],
                input_size if layer == 0 else directions * h_out,
                hidden_size,
                bias=bias,
                proj_size=proj_size,
                dtype=dtype,
                forget_bias=forget_bias,
                recurrent_init=recurrent_init,
            )
            for d in range(directions)
        )
        for layer in range(num_layers)
    )
