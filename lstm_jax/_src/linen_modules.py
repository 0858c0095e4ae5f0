"""Flax Linen modules: the same torch-like API as the NNX modules, for Linen codebases.

Parameters live in the ``params`` collection under torch's names; dropout, the
regularisers' masks and zoneout draw from the ``dropout`` RNG stream. No math lives here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax._src import validation
from lstm_jax._src.apply import apply_recurrent, single_state, step_cell
from lstm_jax._src.cells import (
    GRU_CELL,
    LSTM_CELL,
    CellDef,
    accumulation_dtype,
    get_cell,
    rnn_cell_def,
)
from lstm_jax._src.init import RecurrentInit
from lstm_jax._src.interop import torch as torch_interop
from lstm_jax._src.options import RecurrentOptions
from lstm_jax._src.types import LSTMState


def _declare_params(module: nn.Module, init_layer: Callable, name: Callable[[str], str]):
    """Declares one layer's parameters as ``module.param``s named ``name(field)``.

    ``init_layer(key)`` builds the layer's parameter named tuple; each field present in
    it (found by ``jax.eval_shape``, no computation) becomes a parameter whose initializer
    is that field of ``init_layer``.
    """
    shapes = jax.eval_shape(init_layer, jax.random.key(0))
    fields = [f for f, v in shapes._asdict().items() if v is not None]
    return type(shapes)(
        **{f: module.param(name(f), lambda key, f=f: getattr(init_layer(key), f)) for f in fields}
    )


def _layer_init(module: nn.Module, cell: CellDef, cell_options: dict[str, Any]):
    """``init_layer(key, input_size)`` of ``cell`` with the module's sizes and options."""
    validation.check_positive_int("input_size", module.input_size)
    validation.check_positive_int("hidden_size", module.hidden_size)
    return functools.partial(
        cell.init_layer,
        hidden_size=module.hidden_size,
        bias=module.bias,
        dtype=module.param_dtype,
        **cell_options,
    )


class _Stack:
    """What every Linen stack does: declare ``params[layer][direction]`` under torch's
    names and run :func:`apply_recurrent` with the module's options."""

    def _cell(self) -> tuple[CellDef, dict[str, Any]]:
        raise NotImplementedError

    def _options(self) -> RecurrentOptions:
        # torch's own arguments are fields of their own; every other option is in `options`
        return self.options.replace(batch_first=self.batch_first, dropout=self.dropout)

    def _check(self) -> None:
        validation.check_positive_int("num_layers", self.num_layers)
        validation.check_bool("bidirectional", self.bidirectional)
        cell, cell_options = self._cell()
        layer = _layer_init(self, cell, cell_options)
        params = jax.eval_shape(lambda k: layer(k, self.input_size), jax.random.key(0))
        self._options().zoneout_rates(cell.state_sizes(params)._fields)

    def _run(self, x, hx, seq_lengths, deterministic):
        cell, cell_options = self._cell()
        layer = _layer_init(self, cell, cell_options)
        first = jax.eval_shape(lambda k: layer(k, self.input_size), jax.random.key(0))
        output_size = cell.state_sizes(first).h
        directions = 2 if self.bidirectional else 1
        params = tuple(
            tuple(
                _declare_params(
                    self,
                    functools.partial(
                        layer,
                        input_size=self.input_size if index == 0 else directions * output_size,
                    ),
                    lambda f, index=index, d=d: torch_interop.torch_name(f, index, d),
                )
                for d in range(directions)
            )
            for index in range(self.num_layers)
        )
        options = self._options()
        training = bool(options.random_rates) and not deterministic
        return apply_recurrent(
            cell,
            params,
            x,
            hx,
            seq_lengths=seq_lengths,
            key=self.make_rng("dropout") if training else None,
            deterministic=not training,
            options=options,
        )


class Recurrent(_Stack, nn.Module):
    """A stack of any registered cell as a Linen module (see :class:`lstm_jax.Recurrent`).

    Call ``apply(variables, x, hx=None, seq_lengths=None, deterministic=True)`` ->
    ``(output, state)``, the state the cell's named tuple.

    Example:
      >>> import lstm_jax.linen
      >>> model = lstm_jax.linen.Recurrent("gru", 4, 8, num_layers=2,
      ...                                  options=lstm_jax.RecurrentOptions(unroll=2))
      >>> x = jnp.ones((5, 2, 4))
      >>> out, (h_n,) = model.apply(model.init(jax.random.key(0), x), x)
      >>> out.shape, h_n.shape
      ((5, 2, 8), (2, 2, 8))
    """

    cell: str | CellDef
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    param_dtype: Any = jnp.float32
    cell_options: tuple[tuple[str, Any], ...] = ()
    options: RecurrentOptions = RecurrentOptions()

    def _cell(self):
        return get_cell(self.cell), dict(self.cell_options)

    def _options(self) -> RecurrentOptions:
        return self.options

    def __post_init__(self):
        self._check()
        super().__post_init__()

    @nn.compact
    def __call__(self, x, hx=None, *, seq_lengths=None, deterministic: bool = True):
        return self._run(x, hx, seq_lengths, deterministic)


class LSTM(_Stack, nn.Module):
    """``torch.nn.LSTM`` as a Linen module (see :class:`lstm_jax.LSTM` for the arguments).

    torch's arguments and the cell's initialisation are fields; every other option
    (``dtype``, ``unroll``, ``checkpoint``, ``backend``, the regularisers) is one
    :class:`lstm_jax.RecurrentOptions` in ``options``, as in :class:`Recurrent`. Call
    ``apply(variables, x, hx=None, seq_lengths=None, deterministic=True)``; dropout
    and the regularisers run when ``deterministic=False`` and need
    ``rngs={"dropout": key}``.

    Example:
      >>> import lstm_jax.linen
      >>> model = lstm_jax.linen.LSTM(input_size=100, hidden_size=20, num_layers=4)
      >>> x = jnp.ones((10, 3, 100))
      >>> variables = model.init(jax.random.key(0), x)
      >>> out, (h, c) = model.apply(variables, x)
      >>> out.shape, h.shape, sorted(variables["params"])[:2]
      ((10, 3, 20), (4, 3, 20), ['bias_hh_l0', 'bias_hh_l1'])
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    param_dtype: Any = jnp.float32
    forget_bias: float | None = None
    recurrent_init: RecurrentInit = "uniform"
    chrono_init: float | None = None
    peephole: bool = False
    layer_norm: bool = False
    cifg: bool = False
    options: RecurrentOptions = RecurrentOptions()

    def _cell(self):
        variants = ("proj_size", "forget_bias", "recurrent_init", "chrono_init", "peephole")
        return LSTM_CELL, {
            **{name: getattr(self, name) for name in variants},
            "layer_norm": self.layer_norm,
            "cifg": self.cifg,
        }

    def __post_init__(self):
        self._check()
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        hx: tuple[jax.Array, jax.Array] | None = None,
        *,
        seq_lengths: jax.Array | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, LSTMState]:
        return self._run(x, hx, seq_lengths, deterministic)


class GRU(_Stack, nn.Module):
    """``torch.nn.GRU`` as a Linen module (see :class:`lstm_jax.GRU` for the arguments;
    options beyond torch's in ``options``, as :class:`LSTM`).

    Example:
      >>> import lstm_jax.linen
      >>> model = lstm_jax.linen.GRU(input_size=4, hidden_size=8, bidirectional=True)
      >>> x = jnp.ones((5, 2, 4))
      >>> out, h = model.apply(model.init(jax.random.key(0), x), x)
      >>> out.shape, h.shape
      ((5, 2, 16), (2, 2, 8))
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    param_dtype: Any = jnp.float32
    recurrent_init: RecurrentInit = "uniform"
    options: RecurrentOptions = RecurrentOptions()

    def _cell(self):
        return GRU_CELL, {"recurrent_init": self.recurrent_init}

    def __post_init__(self):
        self._check()
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        hx: jax.Array | None = None,
        *,
        seq_lengths: jax.Array | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        hx = single_state(self._cell()[0], hx, "h_0")
        output, state = self._run(x, hx, seq_lengths, deterministic)
        return output, state[0]


class RNN(_Stack, nn.Module):
    """``torch.nn.RNN`` as a Linen module (see :class:`lstm_jax.RNN` for the arguments;
    options beyond torch's in ``options``, as :class:`LSTM`).

    Example:
      >>> import lstm_jax.linen
      >>> model = lstm_jax.linen.RNN(input_size=4, hidden_size=8, nonlinearity="relu")
      >>> x = jnp.ones((5, 2, 4))
      >>> out, h = model.apply(model.init(jax.random.key(0), x), x)
      >>> out.shape, h.shape
      ((5, 2, 8), (1, 2, 8))
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    param_dtype: Any = jnp.float32
    recurrent_init: RecurrentInit = "uniform"
    options: RecurrentOptions = RecurrentOptions()

    def _cell(self):
        return rnn_cell_def(self.nonlinearity), {"recurrent_init": self.recurrent_init}

    def __post_init__(self):
        self._check()
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        hx: jax.Array | None = None,
        *,
        seq_lengths: jax.Array | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        hx = single_state(self._cell()[0], hx, "h_0")
        output, state = self._run(x, hx, seq_lengths, deterministic)
        return output, state[0]


class _Cell:
    """What every Linen cell does: declare one layer's parameters, run one step, and
    offer Flax's ``initialize_carry`` and ``num_feature_axes``."""

    def _cell(self) -> tuple[CellDef, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, x, hx):
        cell, cell_options = self._cell()
        layer = _layer_init(self, cell, cell_options)
        params = _declare_params(self, functools.partial(layer, input_size=self.input_size), str)
        return step_cell(cell, params, x, hx, dtype=self.dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1

    def initialize_carry(self, rng: jax.Array | None, input_shape: tuple[int, ...]) -> Any:
        """Zeros for ``hx`` for inputs ``[..., batch, input_size]`` (Flax's signature).

        ``rng`` is unused (the carry starts at zero). Returns the cell's state named tuple
        with fields ``[..., batch, size]`` (one array for the GRU and RNN cells).
        """
        del rng
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise TypeError(
                f"input_shape must be a tuple [..., batch, input_size], got {input_shape!r}"
            )
        cell, cell_options = self._cell()
        layer = _layer_init(self, cell, cell_options)
        params = jax.eval_shape(lambda k: layer(k, self.input_size), jax.random.key(0))
        dtype = accumulation_dtype(self.dtype or self.param_dtype)
        sizes = cell.state_sizes(params)
        state = type(sizes)(*(jnp.zeros((*input_shape[:-1], n), dtype) for n in sizes))
        return state if len(state) > 1 else state[0]


class RecurrentCell(_Cell, nn.Module):
    """One step of any registered cell as a Linen module (see :class:`lstm_jax.RecurrentCell`).

    Example:
      >>> import lstm_jax.linen
      >>> cell = lstm_jax.linen.RecurrentCell("rnn_relu", input_size=3, hidden_size=5)
      >>> x = jnp.ones((2, 3))
      >>> (h,) = cell.apply(cell.init(jax.random.key(0), x), x)
      >>> h.shape
      (2, 5)
    """

    cell: str | CellDef
    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    cell_options: tuple[tuple[str, Any], ...] = ()

    def _cell(self):
        return get_cell(self.cell), dict(self.cell_options)

    def initialize_carry(self, rng, input_shape):
        carry = super().initialize_carry(rng, input_shape)
        return carry if isinstance(carry, tuple) else (carry,)

    @nn.compact
    def __call__(self, x: jax.Array, hx=None):
        return self._step(x, hx)


class LSTMCell(_Cell, nn.Module):
    """``torch.nn.LSTMCell`` as a Linen module (see :class:`lstm_jax.LSTMCell`).

    Example:
      >>> import lstm_jax.linen
      >>> cell = lstm_jax.linen.LSTMCell(input_size=3, hidden_size=5)
      >>> x = jnp.ones((2, 3))
      >>> variables = cell.init(jax.random.key(0), x)
      >>> h, c = cell.apply(variables, x)
      >>> h.shape, c.shape
      ((2, 5), (2, 5))
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    forget_bias: float | None = None
    recurrent_init: RecurrentInit = "uniform"
    chrono_init: float | None = None
    peephole: bool = False
    layer_norm: bool = False
    cifg: bool = False

    def _cell(self):
        variants = ("forget_bias", "recurrent_init", "chrono_init", "peephole", "layer_norm")
        return LSTM_CELL, {**{name: getattr(self, name) for name in variants}, "cifg": self.cifg}

    @nn.compact
    def __call__(self, x: jax.Array, hx: tuple[jax.Array, jax.Array] | None = None) -> LSTMState:
        return self._step(x, hx)


class GRUCell(_Cell, nn.Module):
    """``torch.nn.GRUCell`` as a Linen module (see :class:`lstm_jax.GRUCell`).

    Example:
      >>> import lstm_jax.linen
      >>> cell = lstm_jax.linen.GRUCell(input_size=3, hidden_size=5)
      >>> x = jnp.ones((2, 3))
      >>> cell.apply(cell.init(jax.random.key(0), x), x).shape
      (2, 5)
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    recurrent_init: RecurrentInit = "uniform"

    def _cell(self):
        return GRU_CELL, {"recurrent_init": self.recurrent_init}

    @nn.compact
    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        return self._step(x, single_state(self._cell()[0], hx, "h"))[0]


class RNNCell(_Cell, nn.Module):
    """``torch.nn.RNNCell`` as a Linen module (see :class:`lstm_jax.RNNCell`).

    Example:
      >>> import lstm_jax.linen
      >>> cell = lstm_jax.linen.RNNCell(input_size=3, hidden_size=5, nonlinearity="relu")
      >>> x = jnp.ones((2, 3))
      >>> cell.apply(cell.init(jax.random.key(0), x), x).shape
      (2, 5)
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    nonlinearity: str = "tanh"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    recurrent_init: RecurrentInit = "uniform"

    def _cell(self):
        return rnn_cell_def(self.nonlinearity), {"recurrent_init": self.recurrent_init}

    @nn.compact
    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        return self._step(x, single_state(self._cell()[0], hx, "h"))[0]


class FlaxCell(nn.RNNCellBase):
    """Flax's cell protocol around one of our Linen cells, for ``flax.linen.RNN``.

    The carry is the cell's state (``LSTMState(h, c)`` for an LSTM, ``h`` otherwise) and
    the output ``h`` (see :class:`lstm_jax.FlaxCell`).

    Example:
      >>> import flax.linen as nn
      >>> import lstm_jax.linen
      >>> rnn = nn.RNN(lstm_jax.linen.FlaxCell(lstm_jax.linen.LSTMCell(3, 5)))
      >>> x = jnp.ones((2, 7, 3), jnp.float32)  # Flax's layout: [batch, time, features]
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (2, 7, 5)
    """

    cell: nn.Module

    @nn.compact
    def __call__(self, carry: Any, inputs: jax.Array) -> tuple[Any, jax.Array]:
        new = self.cell(inputs, carry)
        return new, new if isinstance(new, jax.Array) else new[0]

    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> Any:
        return self.cell.initialize_carry(rng, input_shape)

    @property
    def num_feature_axes(self) -> int:
        return 1
