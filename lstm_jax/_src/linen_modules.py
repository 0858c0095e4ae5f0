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
from lstm_jax._src.apply import gru, lstm, rnn
from lstm_jax._src.backends import BACKENDS
from lstm_jax._src.cells import GRU_CELL, LSTM_CELL, CellDef, accumulation_dtype, rnn_cell_def
from lstm_jax._src.init import RecurrentInit, init_gru_layer, init_lstm_layer, init_rnn_layer
from lstm_jax._src.interop import torch as torch_interop
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


class _StackMixin:
    """Methods shared by the Linen ``LSTM``, ``GRU`` and ``RNN`` (fields live on each)."""

    def _check_config(self, state_fields: tuple[str, ...]) -> None:
        validation.check_positive_int("input_size", self.input_size)
        validation.check_positive_int("hidden_size", self.hidden_size)
        validation.check_positive_int("num_layers", self.num_layers)
        if self.checkpoint is not None:
            validation.check_positive_int("checkpoint", self.checkpoint)
        validation.check_dropout_rate(self.dropout)
        for name in ("input_dropout", "recurrent_dropout", "weight_dropout"):
            validation.check_dropout_rate(getattr(self, name), name=name)
        validation.check_zoneout(self.zoneout, state_fields)

    def _stack_params(self, init_layer: Callable[[jax.Array, int], Any], output_size: int):
        directions = 2 if self.bidirectional else 1
        return tuple(
            tuple(
                _declare_params(
                    self,
                    functools.partial(
                        init_layer,
                        input_size=self.input_size if layer == 0 else directions * output_size,
                    ),
                    lambda f, layer=layer, d=d: torch_interop.torch_name(f, layer, d),
                )
                for d in range(directions)
            )
            for layer in range(self.num_layers)
        )

    def _apply_kwargs(self, deterministic: bool) -> dict[str, Any]:
        zoneout = (
            tuple(self.zoneout) if isinstance(self.zoneout, (tuple, list)) else (self.zoneout,)
        )
        rates = (
            self.dropout,
            self.input_dropout,
            self.recurrent_dropout,
            self.weight_dropout,
            *zoneout,
        )
        training = any(rate > 0.0 for rate in rates) and not deterministic
        return {
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "input_dropout": self.input_dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "weight_dropout": self.weight_dropout,
            "zoneout": self.zoneout,
            "key": self.make_rng("dropout") if training else None,
            "deterministic": not training,
            "dtype": self.dtype,
            "unroll": self.unroll,
            "checkpoint": self.checkpoint,
        }


class LSTM(_StackMixin, nn.Module):
    """``torch.nn.LSTM`` as a Linen module (see :class:`lstm_jax.LSTM` for the arguments).

    Call ``apply(variables, x, hx=None, seq_lengths=None, deterministic=True)``; dropout
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
    dtype: Any = None
    param_dtype: Any = jnp.float32
    forget_bias: float | None = None
    recurrent_init: RecurrentInit = "uniform"
    unroll: int = 1
    checkpoint: int | None = None
    chrono_init: float | None = None
    peephole: bool = False
    layer_norm: bool = False
    cifg: bool = False
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0
    zoneout: float | tuple[float, float] = 0.0
    backend: str = "auto"

    def __post_init__(self):
        self._check_config(LSTMState._fields)
        validation.check_proj_size(self.proj_size, self.hidden_size)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
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
        init_layer = functools.partial(
            init_lstm_layer,
            hidden_size=self.hidden_size,
            bias=self.bias,
            proj_size=self.proj_size,
            dtype=self.param_dtype,
            forget_bias=self.forget_bias,
            recurrent_init=self.recurrent_init,
            chrono_init=self.chrono_init,
            peephole=self.peephole,
            layer_norm=self.layer_norm,
            cifg=self.cifg,
        )
        params = self._stack_params(init_layer, self.proj_size or self.hidden_size)
        return lstm(
            params,
            x,
            hx,
            seq_lengths=seq_lengths,
            backend=self.backend,
            **self._apply_kwargs(deterministic),
        )


class GRU(_StackMixin, nn.Module):
    """``torch.nn.GRU`` as a Linen module (see :class:`lstm_jax.GRU` for the arguments).

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
    dtype: Any = None
    param_dtype: Any = jnp.float32
    recurrent_init: RecurrentInit = "uniform"
    unroll: int = 1
    checkpoint: int | None = None
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0
    zoneout: float = 0.0

    def __post_init__(self):
        self._check_config(("h",))
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
        init_layer = functools.partial(
            init_gru_layer,
            hidden_size=self.hidden_size,
            bias=self.bias,
            dtype=self.param_dtype,
            recurrent_init=self.recurrent_init,
        )
        params = self._stack_params(init_layer, self.hidden_size)
        return gru(params, x, hx, seq_lengths=seq_lengths, **self._apply_kwargs(deterministic))


class RNN(_StackMixin, nn.Module):
    """``torch.nn.RNN`` as a Linen module (see :class:`lstm_jax.RNN` for the arguments).

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
    dtype: Any = None
    param_dtype: Any = jnp.float32
    recurrent_init: RecurrentInit = "uniform"
    unroll: int = 1
    checkpoint: int | None = None
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0
    zoneout: float = 0.0

    def __post_init__(self):
        self._check_config(("h",))
        rnn_cell_def(self.nonlinearity)
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
        init_layer = functools.partial(
            init_rnn_layer,
            hidden_size=self.hidden_size,
            bias=self.bias,
            dtype=self.param_dtype,
            recurrent_init=self.recurrent_init,
        )
        params = self._stack_params(init_layer, self.hidden_size)
        return rnn(
            params,
            x,
            hx,
            nonlinearity=self.nonlinearity,
            seq_lengths=seq_lengths,
            **self._apply_kwargs(deterministic),
        )


def _cell_step(module: nn.Module, cell: CellDef, init_layer: Callable, x, hx, names):
    """One step of any cell kind: declare parameters, check input and state, run the step."""
    x, batched = validation.check_cell_input(x, module.input_size)
    init_layer = functools.partial(init_layer, input_size=module.input_size)
    dtype = jnp.dtype(module.dtype or x.dtype)
    params = jax.tree.map(lambda p: p.astype(dtype), _declare_params(module, init_layer, str))
    x = x if batched else x[None]
    batch = x.shape[0]
    sizes = cell.state_sizes(params)
    state_dtype = accumulation_dtype(dtype)
    if hx is None:
        state = type(sizes)(*(jnp.zeros((batch, n), state_dtype) for n in sizes))
    else:
        state = type(sizes)(
            *(
                validation.check_state(
                    name, v, (batch, n) if batched else (n,), "[batch, hidden_size]"
                )
                .reshape(batch, n)
                .astype(state_dtype)
                for name, v, n in zip(names, hx, sizes, strict=True)
            )
        )
    state = cell.step(params, cell.input_projection(params, x.astype(dtype)), state)
    return state if batched else jax.tree.map(lambda s: s[0], state)


class LSTMCell(nn.Module):
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

    @nn.compact
    def __call__(self, x: jax.Array, hx: tuple[jax.Array, jax.Array] | None = None) -> LSTMState:
        init_layer = functools.partial(
            init_lstm_layer,
            hidden_size=self.hidden_size,
            bias=self.bias,
            dtype=self.param_dtype,
            forget_bias=self.forget_bias,
            recurrent_init=self.recurrent_init,
            chrono_init=self.chrono_init,
            peephole=self.peephole,
            layer_norm=self.layer_norm,
            cifg=self.cifg,
        )
        return _cell_step(self, LSTM_CELL, init_layer, x, hx, ("hx[0] (h)", "hx[1] (c)"))


class GRUCell(nn.Module):
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

    @nn.compact
    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        init_layer = functools.partial(
            init_gru_layer,
            hidden_size=self.hidden_size,
            bias=self.bias,
            dtype=self.param_dtype,
            recurrent_init=self.recurrent_init,
        )
        return _cell_step(self, GRU_CELL, init_layer, x, None if hx is None else (hx,), ("hx",)).h


class RNNCell(nn.Module):
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

    @nn.compact
    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        init_layer = functools.partial(
            init_rnn_layer,
            hidden_size=self.hidden_size,
            bias=self.bias,
            dtype=self.param_dtype,
            recurrent_init=self.recurrent_init,
        )
        return _cell_step(
            self,
            rnn_cell_def(self.nonlinearity),
            init_layer,
            x,
            None if hx is None else (hx,),
            ("hx",),
        ).h
