"""Flax NNX modules: hold parameters under torch's names and call the pure functions.

No math lives here: a module validates its constructor arguments, creates its
parameters with :mod:`lstm_jax._src.init`, and calls :mod:`lstm_jax._src.apply` or
:mod:`lstm_jax._src.cells`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

import jax
import jax.numpy as jnp

from lstm_jax._src import validation
from lstm_jax._src.apply import lstm
from lstm_jax._src.cells import accumulation_dtype, lstm_cell
from lstm_jax._src.init import RecurrentInit, init_lstm_layer, init_lstm_params
from lstm_jax._src.interop import torch as torch_interop
from lstm_jax._src.types import LSTMParams, LSTMState, StackParams


def _numpy_state_dict(named: dict[str, Any], as_tensors: bool) -> dict[str, Any]:
    arrays = {name: np.array(value) for name, value in named.items()}
    if not as_tensors:
        return arrays
    import torch  # optional dependency, imported only on request

    return {name: torch.from_numpy(value) for name, value in arrays.items()}


class LSTM(nnx.Module):
    """A multi-layer, optionally bidirectional LSTM with ``torch.nn.LSTM``'s API.

    Arguments, defaults, parameter names (``weight_ih_l0``, ``weight_hh_l0_reverse``, ...),
    shapes and return values mirror ``torch.nn.LSTM``, so torch code ports line for line
    (``rngs`` is the only addition). The gate equations are in :func:`lstm_jax.functional.lstm_cell`.

    Args:
      input_size: features of ``x``, ``I``.
      hidden_size: cell size ``H``.
      num_layers: stacked layers ``L``.
      bias: whether the layers have ``bias_ih`` and ``bias_hh``.
      batch_first: ``x`` and ``output`` are ``[batch, time, ...]``.
      dropout: dropout on the outputs of every layer but the last, in training mode.
      bidirectional: add a reverse direction to each layer (``D = 2``).
      proj_size: ``P > 0`` adds torch's projection ``weight_hr_l{k}`` (LSTMP); ``h`` has size P.
      dtype: computation dtype (``None``: the input's); bfloat16 keeps the state in float32.
      param_dtype: parameter dtype.
      forget_bias: if set, the forget gate's total bias starts at this value (e.g. 1.0).
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"`` recurrent weights.
      unroll: ``lax.scan`` unroll factor.
      rngs: ``nnx.Rngs``; ``params`` for initialisation, ``dropout`` (or default) for dropout.

    Call:
      ``model(x, hx=None, *, seq_lengths=None) -> (output, (h_n, c_n))`` with ``x``
      ``[time, batch, I]`` (``[batch, time, I]`` with ``batch_first``, or ``[time, I]``),
      ``output`` ``[time, batch, D * H_out]``, ``h_n`` ``[L * D, batch, H_out]``, ``c_n``
      ``[L * D, batch, H]``. See :func:`lstm_jax.functional.lstm` for ``seq_lengths``.
      ``model.eval()`` turns dropout off, ``model.train()`` on.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> rnn = lstm_jax.LSTM(input_size=100, hidden_size=20, num_layers=4, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((10, 3, 100))
      >>> out, (h, c) = rnn(x)
      >>> out.shape, h.shape, c.shape, bool(jnp.all(out[-1] == h[-1]))
      ((10, 3, 20), (4, 3, 20), (4, 3, 20), True)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        forget_bias: float | None = None,
        recurrent_init: RecurrentInit = "uniform",
        unroll: int = 1,
        rngs: nnx.Rngs,
    ):
        self.input_size = validation.check_positive_int("input_size", input_size)
        self.hidden_size = validation.check_positive_int("hidden_size", hidden_size)
        self.num_layers = validation.check_positive_int("num_layers", num_layers)
        self.proj_size = validation.check_proj_size(proj_size, hidden_size)
        self.dropout = validation.check_dropout_rate(dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = dtype
        self.unroll = validation.check_positive_int("unroll", unroll)
        self.deterministic = False
        self.rngs = rngs["dropout"].fork()
        params = init_lstm_params(
            rngs.params(),
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            bidirectional=bidirectional,
            proj_size=proj_size,
            dtype=param_dtype,
            forget_bias=forget_bias,
            recurrent_init=recurrent_init,
        )
        self._param_names = tuple(torch_interop.stack_to_named(params))
        self.load_stack_params(params)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``: ``deterministic=True`` turns dropout off."""
        if deterministic is not None:
            self.deterministic = deterministic

    @property
    def stack_params(self) -> StackParams:
        """The parameters as the pure functions take them, ``params[layer][direction]``."""
        named = {name: getattr(self, name)[...] for name in self._param_names}
        return torch_interop.stack_from_named(
            named, LSTMParams, self.num_layers, self.num_directions
        )

    def load_stack_params(self, params: StackParams) -> None:
        """Replaces the parameters with ``params[layer][direction]`` (same structure)."""
        named = torch_interop.stack_to_named(params)
        if set(named) != set(self._param_names):
            raise ValueError(f"expected parameters {self._param_names}, got {tuple(named)}")
        for name, value in named.items():
            if hasattr(self, name):
                expected = getattr(self, name)[...].shape
                if value.shape != expected:
                    raise ValueError(f"{name} must have shape {expected}, got {value.shape}")
                getattr(self, name)[...] = value
            else:
                setattr(self, name, nnx.Param(value))

    def __call__(
        self,
        x: jax.Array,
        hx: tuple[jax.Array, jax.Array] | None = None,
        *,
        seq_lengths: jax.Array | None = None,
    ) -> tuple[jax.Array, LSTMState]:
        training = self.dropout > 0.0 and not self.deterministic
        return lstm(
            self.stack_params,
            x,
            hx,
            seq_lengths=seq_lengths,
            batch_first=self.batch_first,
            dropout=self.dropout,
            key=self.rngs() if training else None,
            deterministic=not training,
            dtype=self.dtype,
            unroll=self.unroll,
        )

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> LSTM:
        """Builds an LSTM with a ``torch.nn.LSTM``'s configuration and weights.

        Args:
          module: a ``torch.nn.LSTM`` (read by attribute, torch is not imported).
          rngs: for dropout; defaults to ``nnx.Rngs(0)``.
          **kwargs: further keyword arguments of the constructor (``dtype``, ``unroll``).

        Example:
          >>> import torch, lstm_jax
          >>> torch_lstm = torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True)
          >>> model = lstm_jax.LSTM.from_torch(torch_lstm)
          >>> model.weight_hh_l1_reverse.shape
          (32, 8)
        """
        model = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            rngs=rngs or nnx.Rngs(0),
            **kwargs,
        )
        params = torch_interop.stack_from_named(
            module.state_dict(), LSTMParams, model.num_layers, model.num_directions, jnp.float32
        )
        model.load_stack_params(params)
        return model

    def to_torch_state_dict(self, *, as_tensors: bool = False) -> dict[str, Any]:
        """The parameters under torch's names, as NumPy arrays (or torch tensors).

        ``torch.nn.Module.load_state_dict`` needs tensors: pass ``as_tensors=True`` (imports
        torch) or convert with ``torch.from_numpy``.

        Example:
          >>> from flax import nnx
          >>> import lstm_jax
          >>> sd = lstm_jax.LSTM(3, 4, rngs=nnx.Rngs(0)).to_torch_state_dict()
          >>> {k: v.shape for k, v in sd.items()}
          {'weight_ih_l0': (16, 3), 'weight_hh_l0': (16, 4), 'bias_ih_l0': (16,), 'bias_hh_l0': (16,)}
        """
        return _numpy_state_dict(torch_interop.stack_to_named(self.stack_params), as_tensors)


class LSTMCell(nnx.Module):
    """One LSTM step with ``torch.nn.LSTMCell``'s API (gate equations in ``lstm_cell``).

    Args:
      input_size: features of ``x``.
      hidden_size: size of ``h`` and ``c``.
      bias: whether the cell has ``bias_ih`` and ``bias_hh``.
      dtype: computation dtype (``None``: the input's).
      param_dtype: parameter dtype.
      forget_bias: if set, the forget gate's total bias starts at this value.
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"``.
      rngs: ``nnx.Rngs`` for initialisation.

    Call:
      ``cell(x, hx=None) -> (h, c)``, ``x`` ``[batch, input_size]`` (or ``[input_size]``),
      ``hx = (h, c)`` each ``[batch, hidden_size]``; zeros when omitted.

    Example (torch's ``LSTMCell`` example, ported line for line):
      >>> from flax import nnx
      >>> import lstm_jax
      >>> cell1 = lstm_jax.LSTMCell(100, 30, rngs=nnx.Rngs(0))
      >>> cell2 = lstm_jax.LSTMCell(30, 20, rngs=nnx.Rngs(1))
      >>> x = jnp.ones((10, 3, 100))
      >>> hx1, hx2 = None, None
      >>> outputs = []
      >>> for t in range(x.shape[0]):
      ...     hx1 = cell1(x[t], hx1)
      ...     hx2 = cell2(hx1[0], hx2)
      ...     outputs.append(hx2[0])
      >>> jnp.stack(outputs).shape
      (10, 3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        forget_bias: float | None = None,
        recurrent_init: RecurrentInit = "uniform",
        rngs: nnx.Rngs,
    ):
        self.input_size = validation.check_positive_int("input_size", input_size)
        self.hidden_size = validation.check_positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.dtype = dtype
        params = init_lstm_layer(
            rngs.params(),
            input_size,
            hidden_size,
            bias=bias,
            dtype=param_dtype,
            forget_bias=forget_bias,
            recurrent_init=recurrent_init,
        )
        for name, value in torch_interop.cell_to_named(params).items():
            setattr(self, name, nnx.Param(value))

    @property
    def params(self) -> LSTMParams:
        """The parameters as :func:`lstm_jax.functional.lstm_cell` takes them."""
        named = {f: getattr(self, f)[...] for f in LSTMParams._fields if hasattr(self, f)}
        return LSTMParams(**named)

    def __call__(
        self, x: jax.Array, hx: tuple[jax.Array, jax.Array] | None = None
    ) -> LSTMState:
        x, batched = validation.check_cell_input(x, self.input_size)
        if not batched:
            x = x[None]
        batch = x.shape[0]
        dtype = jnp.dtype(self.dtype or x.dtype)
        params = jax.tree.map(lambda p: p.astype(dtype), self.params)
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

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> LSTMCell:
        """Builds an LSTMCell with a ``torch.nn.LSTMCell``'s sizes and weights."""
        cell = cls(module.input_size, module.hidden_size, module.bias,
                   rngs=rngs or nnx.Rngs(0), **kwargs)
        params = torch_interop.cell_from_named(module.state_dict(), LSTMParams, jnp.float32)
        for name, value in torch_interop.cell_to_named(params).items():
            getattr(cell, name)[...] = value
        return cell

    def to_torch_state_dict(self, *, as_tensors: bool = False) -> dict[str, Any]:
        """The parameters under ``torch.nn.LSTMCell``'s names (see ``LSTM.to_torch_state_dict``)."""
        return _numpy_state_dict(torch_interop.cell_to_named(self.params), as_tensors)
