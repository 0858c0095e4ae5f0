"""Flax Linen modules: the same torch-like API as the NNX modules, for Linen codebases.

Parameters live in the ``params`` collection under torch's names; dropout draws from
the ``dropout`` RNG stream. No math lives here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

import jax
import jax.numpy as jnp

from lstm_jax._src import validation
from lstm_jax._src.apply import lstm
from lstm_jax._src.cells import accumulation_dtype, lstm_cell
from lstm_jax._src.init import RecurrentInit, init_lstm_layer
from lstm_jax._src.interop import torch as torch_interop
from lstm_jax._src.types import LSTMParams, LSTMState


class LSTM(nn.Module):
    """``torch.nn.LSTM`` as a Linen module (see :class:`lstm_jax.LSTM` for the arguments).

    Call ``apply(variables, x, hx=None, seq_lengths=None, deterministic=True)``; dropout
    runs when ``deterministic=False`` and needs ``rngs={"dropout": key}``.

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

    def __post_init__(self):
        validation.check_positive_int("input_size", self.input_size)
        validation.check_positive_int("hidden_size", self.hidden_size)
        validation.check_positive_int("num_layers", self.num_layers)
        validation.check_proj_size(self.proj_size, self.hidden_size)
        validation.check_dropout_rate(self.dropout)
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
        directions = 2 if self.bidirectional else 1
        h_out = self.proj_size or self.hidden_size
        params = tuple(
            tuple(
                self._layer_params(layer, d, self.input_size if layer == 0 else directions * h_out)
                for d in range(directions)
            )
            for layer in range(self.num_layers)
        )
        training = self.dropout > 0.0 and not deterministic
        return lstm(
            params,
            x,
            hx,
            seq_lengths=seq_lengths,
            batch_first=self.batch_first,
            dropout=self.dropout,
            key=self.make_rng("dropout") if training else None,
            deterministic=not training,
            dtype=self.dtype,
            unroll=self.unroll,
        )

    def _layer_params(self, layer: int, direction: int, input_size: int) -> LSTMParams:
        def init_field(field):
            def init(key):
                return getattr(
                    init_lstm_layer(
                        key,
                        input_size,
                        self.hidden_size,
                        bias=self.bias,
                        proj_size=self.proj_size,
                        dtype=self.param_dtype,
                        forget_bias=self.forget_bias,
                        recurrent_init=self.recurrent_init,
                    ),
                    field,
                )

            return init

        fields = ["weight_ih", "weight_hh"]
        fields += ["bias_ih", "bias_hh"] if self.bias else []
        fields += ["weight_hr"] if self.proj_size else []
        return LSTMParams(
            **{f: self.param(torch_interop.torch_name(f, layer, direction), init_field(f))
               for f in fields}
        )


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

    @nn.compact
    def __call__(self, x: jax.Array, hx: tuple[jax.Array, jax.Array] | None = None) -> LSTMState:
        x, batched = validation.check_cell_input(x, self.input_size)
        fields = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])

        def init_field(field):
            return lambda key: getattr(
                init_lstm_layer(key, self.input_size, self.hidden_size, bias=self.bias,
                                dtype=self.param_dtype, forget_bias=self.forget_bias,
                                recurrent_init=self.recurrent_init),
                field,
            )

        dtype = jnp.dtype(self.dtype or x.dtype)
        params = LSTMParams(**{f: self.param(f, init_field(f)).astype(dtype) for f in fields})
        x = x if batched else x[None]
        batch = x.shape[0]
        shape = (batch, self.hidden_size) if batched else (self.hidden_size,)
        state_dtype = accumulation_dtype(dtype)
        if hx is None:
            h = c = jnp.zeros((batch, self.hidden_size), state_dtype)
        else:
            h, c = (
                validation.check_state(name, v, shape, "[batch, hidden_size]")
                .reshape(batch, self.hidden_size)
                .astype(state_dtype)
                for name, v in zip(("hx[0] (h)", "hx[1] (c)"), hx, strict=True)
            )
        h, c = lstm_cell(params, x.astype(dtype), LSTMState(h, c))
        return LSTMState(h, c) if batched else LSTMState(h[0], c[0])
