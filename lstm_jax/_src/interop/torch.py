"""Conversion between torch ``state_dict`` entries and this library's parameter pytrees.

Nothing here imports torch: tensors are read by duck typing (``.detach().cpu().numpy()``)
and written as NumPy arrays, so torch stays an optional dependency.

Torch's names: ``{field}_l{layer}`` for the forward direction and
``{field}_l{layer}_reverse`` for the reverse one, with ``field`` one of the parameter
named tuple's fields (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``,
``weight_hr``); a single cell (``torch.nn.LSTMCell``) uses the bare field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, JAX array or NumPy array as a NumPy array (torch not imported)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


_TORCH_MODULES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")


def check_torch_module(module: Any, expected: str) -> None:
    """Raises unless ``module`` is a ``torch.nn.{expected}`` (or a subclass), read by class
    name so that torch is not imported.

    Args:
      module: what the user passed to ``from_torch``.
      expected: the torch class's name, one of ``LSTM``, ``GRU``, ``RNN``, ``LSTMCell``,
        ``GRUCell``, ``RNNCell``; ``lstm_jax.{expected}`` is the class that converts it.

    Raises:
      TypeError: naming the class expected, the class given, and the lstm_jax class that
        converts the class given when there is one.

    Example:
      >>> class LSTMCell:  # stands for torch.nn.LSTMCell
      ...     pass
      >>> check_torch_module(LSTMCell(), "LSTM")
      Traceback (most recent call last):
      ...
      TypeError: lstm_jax.LSTM.from_torch takes a torch.nn.LSTM, got LSTMCell; convert a ...
    """
    names = [klass.__name__ for klass in type(module).__mro__]
    if expected in names:
        return
    message = (
        f"lstm_jax.{expected}.from_torch takes a torch.nn.{expected}, got {type(module).__name__}"
    )
    match = next((name for name in names if name in _TORCH_MODULES), None)
    if match is not None:
        message += f"; convert a torch.nn.{match} with lstm_jax.{match}.from_torch"
    raise TypeError(message)


def torch_name(field: str, layer: int, direction: int) -> str:
    """Torch's parameter name, e.g. ``torch_name("weight_ih", 1, 1) == "weight_ih_l1_reverse"``.

    Example:
      >>> torch_name("weight_hh", 0, 0), torch_name("bias_ih", 2, 1)
      ('weight_hh_l0', 'bias_ih_l2_reverse')
    """
    return f"{field}_l{layer}" + ("_reverse" if direction else "")


def stack_to_named(params) -> dict[str, Any]:
    """``params[layer][direction]`` as a flat dict under torch's names; ``None`` fields dropped.

    Example:
      >>> import jax
      >>> from lstm_jax.functional import init_lstm_params
      >>> sorted(stack_to_named(init_lstm_params(jax.random.key(0), 3, 4, bias=False)))
      ['weight_hh_l0', 'weight_ih_l0']
    """
    named = {}
    for layer, layer_params in enumerate(params):
        for direction, p in enumerate(layer_params):
            for field, value in p._asdict().items():
                if value is not None:
                    named[torch_name(field, layer, direction)] = value
    return named


def stack_from_named(
    named: Mapping[str, Any], param_type: type, num_layers: int, directions: int, dtype=None
):
    """Builds ``params[layer][direction]`` of ``param_type`` from torch-named arrays.

    Fields absent from ``named`` become ``None`` (no bias, no projection).

    Raises:
      KeyError: a name that ``param_type`` needs (a field without a default) is missing, or
        ``named`` has extra names.
    """
    used = set()

    def field(name):
        if name not in named:
            return None
        used.add(name)
        value = named[name]
        if not isinstance(value, jax.Array):  # jax arrays (and tracers, under jit) stay put
            value = to_numpy(value)
        return jnp.asarray(value, dtype)

    params = tuple(
        tuple(
            param_type(**{f: field(torch_name(f, layer, d)) for f in param_type._fields})
            for d in range(directions)
        )
        for layer in range(num_layers)
    )
    required = [
        torch_name(f, layer, d)
        for layer in range(num_layers)
        for d in range(directions)
        for f in param_type._fields
        if f not in param_type._field_defaults
    ]
    missing = [n for n in required if n not in named]
    extra = sorted(set(named) - used)
    if missing or extra:
        raise KeyError(f"state_dict does not match: missing {missing}, unexpected {extra}")
    return params


def cell_to_named(params) -> dict[str, Any]:
    """One cell's parameters under ``torch.nn.*Cell``'s names; ``None`` fields dropped."""
    return {f: v for f, v in params._asdict().items() if v is not None}


def cell_from_named(named: Mapping[str, Any], param_type: type, dtype=None):
    """One cell's parameters from ``torch.nn.*Cell``-named arrays."""
    extra = sorted(set(named) - set(param_type._fields))
    if extra or "weight_ih" not in named:
        raise KeyError(f"state_dict does not match {param_type.__name__}: unexpected {extra}")
    return param_type(
        **{
            f: jnp.asarray(to_numpy(named[f]), dtype) if f in named else None
            for f in param_type._fields
        }
    )
