"""Initializers for recurrent parameters.

The default is torch's: every weight and bias drawn from U(-1/sqrt(H), 1/sqrt(H)).
Options that LSTM papers use are available on top of it:

- ``forget_bias``: the forget gate's bias set to a constant (Gers et al. 1999;
  Jozefowicz et al. 2015 recommend 1.0), so gradients flow through ``c`` early on.
- ``recurrent_init="orthogonal"``: each gate's block of ``weight_hh`` is an orthogonal
  matrix (Saxe et al. 2014).
- ``chrono_init=T_max``: chrono initialisation (Tallec & Ollivier 2018, "Can recurrent
  neural networks warp time?"): ``b_f ~ log(U(1, T_max - 1))`` and ``b_i = -b_f``, so
  the forget gate's time constants spread over ``1..T_max`` steps.

The LSTM variants' extra parameters start as: peephole weights U(-1/sqrt(H), 1/sqrt(H))
like the others; layer-norm gains 1 and shifts 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax._src import validation
from lstm_jax._src.types import GRUParams, LSTMParams, RNNParams, StackParams

RecurrentInit = Literal["uniform", "orthogonal"]
_LSTM_GATES = 4
_INPUT_GATE, _FORGET_GATE = 0, 1  # torch's gate order is i, f, g, o


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


def _check_sizes(input_size, hidden_size) -> None:
    validation.check_positive_int("input_size", input_size)
    validation.check_positive_int("hidden_size", hidden_size)


def _check_optional_number(name: str, value) -> None:
    number = isinstance(value, (int, float, np.integer, np.floating)) or (
        isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0
    )
    if value is not None and (isinstance(value, (bool, np.bool_)) or not number):
        raise TypeError(f"{name} must be None or a number, got {type(value).__name__} {value!r}")


def _recurrent_weight(key, recurrent_init, num_blocks, rows, cols, bound, dtype):
    if recurrent_init == "orthogonal":
        return orthogonal_blocks(key, num_blocks, rows, cols, dtype)
    if recurrent_init == "uniform":
        return uniform(key, (num_blocks * rows, cols), bound, dtype)
    raise ValueError(f"recurrent_init must be 'uniform' or 'orthogonal', got {recurrent_init!r}")


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
    chrono_init: float | None = None,
    peephole: bool = False,
    layer_norm: bool = False,
    cifg: bool = False,
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
      chrono_init: ``T_max`` of chrono initialisation (Tallec & Ollivier 2018): total
        forget bias ``log(U(1, T_max - 1))``, input bias its negative (no input gate with
        CIFG). Needs ``T_max > 2``; excludes ``forget_bias``.
      peephole: add peephole weights ``weight_ci``, ``weight_cf``, ``weight_co``
        (Gers & Schmidhuber 2000); no ``weight_ci`` with ``cifg``.
      layer_norm: add layer-norm gains and shifts (Ba et al. 2016).
      cifg: coupled input-forget gate (Greff et al. 2017): 3 gate blocks f, g, o.

    Returns:
      An :class:`LSTMParams` in torch's layout.

    Raises:
      TypeError: for a flag that is not a bool (``bias="no"``) or a ``forget_bias`` or
        ``chrono_init`` that is not a number, naming it.
      ValueError: for ``forget_bias`` or ``chrono_init`` without bias, both at once, or
        ``chrono_init <= 2``.

    Example:
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5, forget_bias=1.0)
      >>> p.weight_ih.shape, p.weight_hh.shape, float((p.bias_ih + p.bias_hh)[5])
      ((20, 3), (20, 5), 1.0)
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5, cifg=True, peephole=True, chrono_init=100)
      >>> p.weight_ih.shape, p.weight_ci, p.weight_cf.shape
      ((15, 3), None, (5,))
    """
    _check_sizes(input_size, hidden_size)
    bias = validation.check_bool("bias", bias)
    peephole = validation.check_bool("peephole", peephole)
    layer_norm = validation.check_bool("layer_norm", layer_norm)
    cifg = validation.check_bool("cifg", cifg)
    _check_optional_number("forget_bias", forget_bias)
    _check_optional_number("chrono_init", chrono_init)
    proj_size = validation.check_proj_size(proj_size, hidden_size)
    bound = 1.0 / math.sqrt(hidden_size)
    h_out = proj_size or hidden_size
    gates = _LSTM_GATES - 1 if cifg else _LSTM_GATES
    forget_gate = _FORGET_GATE - 1 if cifg else _FORGET_GATE
    k_ih, k_hh, k_bih, k_bhh, k_hr, k_peep, k_chrono = jax.random.split(key, 7)
    weight_ih = uniform(k_ih, (gates * hidden_size, input_size), bound, dtype)
    weight_hh = _recurrent_weight(k_hh, recurrent_init, gates, hidden_size, h_out, bound, dtype)
    if forget_bias is not None and chrono_init is not None:
        raise ValueError("forget_bias and chrono_init are exclusive: pass one of them")
    if not bias and (forget_bias is not None or chrono_init is not None):
        raise ValueError("forget_bias and chrono_init need bias=True")
    bias_ih = bias_hh = None
    if bias:
        bias_ih = uniform(k_bih, (gates * hidden_size,), bound, dtype)
        bias_hh = uniform(k_bhh, (gates * hidden_size,), bound, dtype)

        def gate(index):
            return slice(index * hidden_size, (index + 1) * hidden_size)

        if forget_bias is not None:
            bias_ih = bias_ih.at[gate(forget_gate)].set(forget_bias)
            bias_hh = bias_hh.at[gate(forget_gate)].set(0.0)
        if chrono_init is not None:
            if not chrono_init > 2:
                raise ValueError(f"chrono_init (T_max) must be > 2, got {chrono_init}")
            b_f = jnp.log(
                jax.random.uniform(k_chrono, (hidden_size,), dtype, 1.0, chrono_init - 1.0)
            )
            bias_ih = bias_ih.at[gate(forget_gate)].set(b_f)
            bias_hh = bias_hh.at[gate(forget_gate)].set(0.0)
            if not cifg:
                bias_ih = bias_ih.at[gate(_INPUT_GATE)].set(-b_f)
                bias_hh = bias_hh.at[gate(_INPUT_GATE)].set(0.0)
    weight_hr = uniform(k_hr, (proj_size, hidden_size), bound, dtype) if proj_size else None
    peepholes = {}
    if peephole:
        k_ci, k_cf, k_co = jax.random.split(k_peep, 3)
        peepholes = {
            "weight_ci": None if cifg else uniform(k_ci, (hidden_size,), bound, dtype),
            "weight_cf": uniform(k_cf, (hidden_size,), bound, dtype),
            "weight_co": uniform(k_co, (hidden_size,), bound, dtype),
        }
    norms = {}
    if layer_norm:
        for name, size in (
            ("ih", gates * hidden_size),
            ("hh", gates * hidden_size),
            ("c", hidden_size),
        ):
            norms[f"ln_{name}_weight"] = jnp.ones((size,), dtype)
            norms[f"ln_{name}_bias"] = jnp.zeros((size,), dtype)
    return LSTMParams(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, **peepholes, **norms)


def init_gru_layer(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    dtype=jnp.float32,
    recurrent_init: RecurrentInit = "uniform",
) -> GRUParams:
    """Initializes one GRU layer in one direction like ``torch.nn.GRU``.

    Args:
      key: PRNG key.
      input_size: features of the layer input ``I``.
      hidden_size: ``H``.
      bias: whether to create ``bias_ih`` and ``bias_hh``.
      dtype: parameter dtype.
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"`` gate blocks of ``weight_hh``.

    Returns:
      A :class:`GRUParams`, gates r, z, n.

    Example:
      >>> p = init_gru_layer(jax.random.key(0), 3, 5)
      >>> p.weight_ih.shape, p.weight_hh.shape, p.bias_hh.shape
      ((15, 3), (15, 5), (15,))
    """
    _check_sizes(input_size, hidden_size)
    bias = validation.check_bool("bias", bias)
    bound = 1.0 / math.sqrt(hidden_size)
    k_ih, k_hh, k_bih, k_bhh = jax.random.split(key, 4)
    weight_ih = uniform(k_ih, (3 * hidden_size, input_size), bound, dtype)
    weight_hh = _recurrent_weight(k_hh, recurrent_init, 3, hidden_size, hidden_size, bound, dtype)
    if not bias:
        return GRUParams(weight_ih, weight_hh)
    return GRUParams(
        weight_ih,
        weight_hh,
        uniform(k_bih, (3 * hidden_size,), bound, dtype),
        uniform(k_bhh, (3 * hidden_size,), bound, dtype),
    )


def init_rnn_layer(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    dtype=jnp.float32,
    recurrent_init: RecurrentInit = "uniform",
) -> RNNParams:
    """Initializes one Elman RNN layer in one direction like ``torch.nn.RNN``.

    Args: as :func:`init_gru_layer`.

    Returns:
      An :class:`RNNParams`.

    Example:
      >>> p = init_rnn_layer(jax.random.key(0), 3, 5, recurrent_init="orthogonal")
      >>> w = p.weight_hh
      >>> w.shape, bool(jnp.allclose(w @ w.T, jnp.eye(5, dtype=w.dtype), atol=1e-5))
      ((5, 5), True)
    """
    _check_sizes(input_size, hidden_size)
    bias = validation.check_bool("bias", bias)
    bound = 1.0 / math.sqrt(hidden_size)
    k_ih, k_hh, k_bih, k_bhh = jax.random.split(key, 4)
    weight_ih = uniform(k_ih, (hidden_size, input_size), bound, dtype)
    weight_hh = _recurrent_weight(k_hh, recurrent_init, 1, hidden_size, hidden_size, bound, dtype)
    if not bias:
        return RNNParams(weight_ih, weight_hh)
    return RNNParams(
        weight_ih,
        weight_hh,
        uniform(k_bih, (hidden_size,), bound, dtype),
        uniform(k_bhh, (hidden_size,), bound, dtype),
    )


def init_stack(
    init_layer: Callable[..., Any],
    key: jax.Array,
    input_size: int,
    output_size: int,
    num_layers: int,
    bidirectional: bool,
) -> tuple[tuple[Any, ...], ...]:
    """``params[layer][direction]`` from ``init_layer(key, layer_input_size)``.

    Layer ``k > 0`` takes ``directions * output_size`` input features.

    Example:
      >>> import functools
      >>> layer = functools.partial(init_gru_layer, hidden_size=4)
      >>> p = init_stack(layer, jax.random.key(0), 3, 4, 2, True)
      >>> len(p), len(p[1]), p[1][0].weight_ih.shape
      (2, 2, (12, 8))
    """
    validation.check_positive_int("num_layers", num_layers)
    directions = 2 if validation.check_bool("bidirectional", bidirectional) else 1
    keys = jax.random.split(key, num_layers * directions).reshape(num_layers, directions)
    return tuple(
        tuple(
            init_layer(keys[layer, d], input_size if layer == 0 else directions * output_size)
            for d in range(directions)
        )
        for layer in range(num_layers)
    )


def _init_params(init_layer, key, input_size, hidden_size, num_layers, bidirectional, options):
    layer = functools.partial(init_layer, hidden_size=hidden_size, **options)
    output_size = options.get("proj_size") or hidden_size
    return init_stack(layer, key, input_size, output_size, num_layers, bidirectional)


def init_lstm_params(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    **layer_options: Any,
) -> StackParams:
    """Initializes a (multi-layer, optionally bidirectional) LSTM like ``torch.nn.LSTM``.

    Layer ``k > 0`` takes ``directions * H_out`` input features.

    Args:
      key: PRNG key.
      input_size: features of the first layer's input ``I``.
      hidden_size: cell size ``H``.
      num_layers: ``L``.
      bidirectional: two directions per layer.
      **layer_options: the options of :func:`init_lstm_layer` (``bias``, ``proj_size``,
        ``dtype``, ``forget_bias``, ``recurrent_init``, ``chrono_init``, ``peephole``,
        ``layer_norm``, ``cifg``).

    Returns:
      ``params[layer][direction]``, each an :class:`LSTMParams`.

    Example:
      >>> params = init_lstm_params(jax.random.key(0), 10, 20, num_layers=2, bidirectional=True)
      >>> len(params), len(params[0]), params[1][0].weight_ih.shape
      (2, 2, (80, 40))
    """
    return _init_params(
        init_lstm_layer, key, input_size, hidden_size, num_layers, bidirectional, layer_options
    )


def init_gru_params(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    **layer_options: Any,
) -> tuple[tuple[GRUParams, ...], ...]:
    """Initializes a (multi-layer, optionally bidirectional) GRU like ``torch.nn.GRU``.

    Arguments as :func:`init_lstm_params`; ``layer_options`` those of
    :func:`init_gru_layer` (``bias``, ``dtype``, ``recurrent_init``).

    Returns:
      ``params[layer][direction]``, each a :class:`GRUParams`.

    Example:
      >>> params = init_gru_params(jax.random.key(0), 10, 20, num_layers=2, bidirectional=True)
      >>> params[1][1].weight_ih.shape
      (60, 40)
    """
    return _init_params(
        init_gru_layer, key, input_size, hidden_size, num_layers, bidirectional, layer_options
    )


def init_rnn_params(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    **layer_options: Any,
) -> tuple[tuple[RNNParams, ...], ...]:
    """Initializes a (multi-layer, optionally bidirectional) Elman RNN like ``torch.nn.RNN``.

    Arguments as :func:`init_lstm_params`; ``layer_options`` those of
    :func:`init_rnn_layer` (``bias``, ``dtype``, ``recurrent_init``).

    Returns:
      ``params[layer][direction]``, each an :class:`RNNParams`.

    Example:
      >>> params = init_rnn_params(jax.random.key(0), 10, 20, num_layers=2)
      >>> params[1][0].weight_ih.shape
      (20, 20)
    """
    return _init_params(
        init_rnn_layer, key, input_size, hidden_size, num_layers, bidirectional, layer_options
    )
