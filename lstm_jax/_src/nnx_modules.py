"""Flax NNX modules: hold parameters under torch's names and call the pure functions.

No math lives here: a module validates its constructor arguments, creates its
parameters with :mod:`lstm_jax._src.init`, and calls :mod:`lstm_jax._src.apply` or
:mod:`lstm_jax._src.cells`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax._src import validation
from lstm_jax._src.apply import gru, lstm, rnn
from lstm_jax._src.backends import BACKENDS, BackendChoice, recording_choices
from lstm_jax._src.cells import GRU_CELL, LSTM_CELL, CellDef, accumulation_dtype, rnn_cell_def
from lstm_jax._src.init import (
    RecurrentInit,
    init_gru_layer,
    init_gru_params,
    init_lstm_layer,
    init_lstm_params,
    init_rnn_layer,
    init_rnn_params,
)
from lstm_jax._src.interop import torch as torch_interop
from lstm_jax._src.types import (
    GRUParams,
    GRUState,
    LSTMParams,
    LSTMState,
    RNNParams,
    RNNState,
    StackParams,
)


def _numpy_state_dict(named: dict[str, Any], as_tensors: bool) -> dict[str, Any]:
    arrays = {name: np.array(value) for name, value in named.items()}
    if not as_tensors:
        return arrays
    import torch  # optional dependency, imported only on request

    return {name: torch.from_numpy(value) for name, value in arrays.items()}


class _RecurrentStack(nnx.Module):
    """What ``LSTM``, ``GRU`` and ``RNN`` share: parameters under torch's names, the
    train/eval switch, the regularisers' configuration and torch interop. No math."""

    _param_type: ClassVar[type]
    _state_fields: ClassVar[tuple[str, ...]]

    def _setup(
        self,
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first,
        dropout,
        bidirectional,
        *,
        dtype,
        unroll,
        checkpoint,
        input_dropout,
        recurrent_dropout,
        weight_dropout,
        zoneout,
        rngs: nnx.Rngs,
    ) -> None:
        self.input_size = validation.check_positive_int("input_size", input_size)
        self.hidden_size = validation.check_positive_int("hidden_size", hidden_size)
        self.num_layers = validation.check_positive_int("num_layers", num_layers)
        self.dropout = validation.check_dropout_rate(dropout)
        self.input_dropout = validation.check_dropout_rate(input_dropout, name="input_dropout")
        self.recurrent_dropout = validation.check_dropout_rate(
            recurrent_dropout, name="recurrent_dropout"
        )
        self.weight_dropout = validation.check_dropout_rate(weight_dropout, name="weight_dropout")
        self.zoneout = validation.check_zoneout(zoneout, self._state_fields)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = dtype
        self.unroll = validation.check_positive_int("unroll", unroll)
        self.checkpoint = (
            None if checkpoint is None else validation.check_positive_int("checkpoint", checkpoint)
        )
        self.deterministic = False
        self.rngs = rngs["dropout"].fork()

    def _create_params(self, params) -> None:
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
            named, self._param_type, self.num_layers, self.num_directions
        )

    def load_stack_params(self, params) -> None:
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

    def _apply_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the pure apply function: layout, dtype and regularisers.

        In training mode with any regulariser on, a fresh key is drawn from ``rngs`` at
        every call, so masks differ between calls; in ``eval()`` none is drawn.
        """
        rates = (
            self.dropout,
            self.input_dropout,
            self.recurrent_dropout,
            self.weight_dropout,
            *self.zoneout,
        )
        training = any(rate > 0.0 for rate in rates) and not self.deterministic
        return {
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "input_dropout": self.input_dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "weight_dropout": self.weight_dropout,
            "zoneout": self.zoneout,
            "key": self.rngs() if training else None,
            "deterministic": not training,
            "dtype": self.dtype,
            "unroll": self.unroll,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def _from_torch(cls, module, rngs, kwargs, **config):
        model = cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
            rngs=rngs or nnx.Rngs(0),
            **config,
            **kwargs,
        )
        params = torch_interop.stack_from_named(
            module.state_dict(),
            cls._param_type,
            model.num_layers,
            model.num_directions,
            jnp.float32,
        )
        model.load_stack_params(params)
        return model

    def to_torch_state_dict(self, *, as_tensors: bool = False) -> dict[str, Any]:
        """The parameters under torch's names, as NumPy arrays (or torch tensors).

        ``torch.nn.Module.load_state_dict`` needs tensors: pass ``as_tensors=True`` (imports
        torch) or convert with ``torch.from_numpy``. The LSTM variants' extra parameters
        (peepholes, layer norm) keep their own names (``weight_ci_l0``, ``ln_c_weight_l0``);
        torch has no module that loads them.

        Example:
          >>> from flax import nnx
          >>> import lstm_jax
          >>> sd = lstm_jax.LSTM(3, 4, rngs=nnx.Rngs(0)).to_torch_state_dict()
          >>> {k: v.shape for k, v in sd.items()}
          {'weight_ih_l0': (16, 3), 'weight_hh_l0': (16, 4),
           'bias_ih_l0': (16,), 'bias_hh_l0': (16,)}
        """
        return _numpy_state_dict(torch_interop.stack_to_named(self.stack_params), as_tensors)


class LSTM(_RecurrentStack):
    """A multi-layer, optionally bidirectional LSTM with ``torch.nn.LSTM``'s API.

    Arguments, defaults, parameter names (``weight_ih_l0``, ``weight_hh_l0_reverse``, ...),
    shapes and return values mirror ``torch.nn.LSTM``, so torch code ports line for line
    (``rngs`` and the keyword-only options are additions). The gate equations and the
    variants' equations are in :func:`lstm_jax.functional.lstm_step`.

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
      forget_bias: if set, the forget gate's total bias starts at this value (e.g. 1.0;
        Gers et al. 1999, Jozefowicz et al. 2015).
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"`` recurrent weights.
      chrono_init: ``T_max`` of chrono initialisation (Tallec & Ollivier 2018).
      peephole: peephole connections from ``c`` to the i, f, o gates (Gers & Schmidhuber 2000).
      layer_norm: layer-normalised LSTM (Ba, Kiros & Hinton 2016).
      cifg: coupled input-forget gate, ``i = 1 - f`` (Greff et al. 2017).
      input_dropout: variational dropout of each layer's input, one mask per sequence
        (Gal & Ghahramani 2016).
      recurrent_dropout: variational dropout of ``h_{t-1}`` in ``W_hh h_{t-1}``, one mask per
        sequence (Gal & Ghahramani 2016).
      weight_dropout: DropConnect on ``weight_hh``, one mask per call (Merity et al. 2017).
      zoneout: zoneout rate for ``h`` and ``c``, or ``(rate_h, rate_c)`` (Krueger et al.
        2017); the expectation is used in ``eval()``.
      unroll: ``lax.scan`` unroll factor.
      checkpoint: ``None``, or a chunk length ``K`` in steps: activation checkpointing over
        time, so long sequences train in ``~T/K + K`` steps of activation memory instead of
        ``T`` (see :func:`lstm_jax.functional.lstm`).
      rngs: ``nnx.Rngs``; ``params`` for initialisation, ``dropout`` (or default) for the
        dropouts and zoneout, a fresh key at every training call.
      backend: ``"auto"``, ``"scan"``, ``"fused"`` or ``"cudnn"``: which kernel runs the
        stack, see :func:`lstm_jax.functional.lstm`.

    Call:
      ``model(x, hx=None, *, seq_lengths=None) -> (output, (h_n, c_n))`` with ``x``
      ``[time, batch, I]`` (``[batch, time, I]`` with ``batch_first``, or ``[time, I]``),
      ``output`` ``[time, batch, D * H_out]``, ``h_n`` ``[L * D, batch, H_out]``, ``c_n``
      ``[L * D, batch, H]``. See :func:`lstm_jax.functional.lstm` for ``seq_lengths``.
      ``model.eval()`` turns the regularisers off (zoneout to its expectation),
      ``model.train()`` on.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> rnn = lstm_jax.LSTM(input_size=100, hidden_size=20, num_layers=4, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((10, 3, 100))
      >>> out, (h, c) = rnn(x)
      >>> out.shape, h.shape, c.shape, bool(jnp.all(out[-1] == h[-1]))
      ((10, 3, 20), (4, 3, 20), (4, 3, 20), True)
    """

    _param_type = LSTMParams
    _state_fields = LSTMState._fields

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
        chrono_init: float | None = None,
        peephole: bool = False,
        layer_norm: bool = False,
        cifg: bool = False,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        unroll: int = 1,
        checkpoint: int | None = None,
        rngs: nnx.Rngs,
        backend: str = "auto",
    ):
        self._setup(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype=dtype,
            unroll=unroll,
            checkpoint=checkpoint,
            input_dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
            zoneout=zoneout,
            rngs=rngs,
        )
        self.proj_size = validation.check_proj_size(proj_size, hidden_size)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.peephole, self.layer_norm, self.cifg = bool(peephole), bool(layer_norm), bool(cifg)
        self._create_params(
            init_lstm_params(
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
                chrono_init=chrono_init,
                peephole=peephole,
                layer_norm=layer_norm,
                cifg=cifg,
            )
        )

    def __call__(
        self,
        x: jax.Array,
        hx: tuple[jax.Array, jax.Array] | None = None,
        *,
        seq_lengths: jax.Array | None = None,
    ) -> tuple[jax.Array, LSTMState]:
        return lstm(
            self.stack_params,
            x,
            hx,
            seq_lengths=seq_lengths,
            backend=self.backend,
            **self._apply_kwargs(),
        )

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> LSTM:
        """Builds an LSTM with a ``torch.nn.LSTM``'s configuration and weights.

        Args:
          module: a ``torch.nn.LSTM`` (read by attribute, torch is not imported).
          rngs: for dropout; defaults to ``nnx.Rngs(0)``.
          **kwargs: further keyword arguments of the constructor (``dtype``, ``unroll``,
            the regularisers).

        Example:
          >>> import torch, lstm_jax
          >>> torch_lstm = torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True)
          >>> model = lstm_jax.LSTM.from_torch(torch_lstm)
          >>> model.weight_hh_l1_reverse.shape
          (32, 8)
        """
        return cls._from_torch(module, rngs, kwargs, proj_size=module.proj_size)


class GRU(_RecurrentStack):
    """A multi-layer, optionally bidirectional GRU with ``torch.nn.GRU``'s API.

    Arguments, defaults, parameter names and shapes (gates r, z, n) and return values
    mirror ``torch.nn.GRU``, so torch code ports line for line; the equations are in
    :func:`lstm_jax.functional.gru_step`. The regularisers are those of
    :class:`lstm_jax.LSTM` (``zoneout`` is one rate, for ``h``).

    Arguments: ``input_size``, ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``,
    ``dropout`` and ``bidirectional`` as ``torch.nn.GRU``; ``dtype``, ``param_dtype``,
    ``recurrent_init``, ``input_dropout``, ``recurrent_dropout``, ``weight_dropout``,
    ``zoneout``, ``unroll``, ``checkpoint`` and ``rngs`` as :class:`lstm_jax.LSTM`.

    Call:
      ``model(x, hx=None, *, seq_lengths=None) -> (output, h_n)`` with ``output``
      ``[time, batch, D * H]`` and ``h_n`` ``[L * D, batch, H]``; ``hx`` is ``h_0`` of that shape.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> rnn = lstm_jax.GRU(10, 20, 2, rngs=nnx.Rngs(0))
      >>> out, h = rnn(jnp.ones((5, 3, 10)), jnp.zeros((2, 3, 20)))
      >>> out.shape, h.shape
      ((5, 3, 20), (2, 3, 20))
    """

    _param_type = GRUParams
    _state_fields = GRUState._fields

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        recurrent_init: RecurrentInit = "uniform",
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
        unroll: int = 1,
        checkpoint: int | None = None,
        rngs: nnx.Rngs,
    ):
        self._setup(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype=dtype,
            unroll=unroll,
            checkpoint=checkpoint,
            input_dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
            zoneout=zoneout,
            rngs=rngs,
        )
        self._create_params(
            init_gru_params(
                rngs.params(),
                input_size,
                hidden_size,
                num_layers,
                bias=bias,
                bidirectional=bidirectional,
                dtype=param_dtype,
                recurrent_init=recurrent_init,
            )
        )

    def __call__(
        self, x: jax.Array, hx: jax.Array | None = None, *, seq_lengths: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        return gru(self.stack_params, x, hx, seq_lengths=seq_lengths, **self._apply_kwargs())

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> GRU:
        """Builds a GRU with a ``torch.nn.GRU``'s configuration and weights.

        Example:
          >>> import torch, lstm_jax
          >>> model = lstm_jax.GRU.from_torch(torch.nn.GRU(4, 8, bidirectional=True))
          >>> model.weight_hh_l0_reverse.shape
          (24, 8)
        """
        return cls._from_torch(module, rngs, kwargs)


class RNN(_RecurrentStack):
    """A multi-layer, optionally bidirectional Elman RNN with ``torch.nn.RNN``'s API.

    ``h_t = nonlinearity(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with ``nonlinearity``
    ``"tanh"`` or ``"relu"``; arguments (in torch's positional order), parameter names,
    shapes and return values mirror ``torch.nn.RNN``. The regularisers are those of
    :class:`lstm_jax.LSTM` (``zoneout`` is one rate, for ``h``).

    Arguments: ``input_size``, ``hidden_size``, ``num_layers``, ``nonlinearity``, ``bias``,
    ``batch_first``, ``dropout`` and ``bidirectional`` as ``torch.nn.RNN``; ``dtype``,
    ``param_dtype``, ``recurrent_init``, ``input_dropout``, ``recurrent_dropout``,
    ``weight_dropout``, ``zoneout``, ``unroll``, ``checkpoint`` and ``rngs`` as
    :class:`lstm_jax.LSTM`.

    Call:
      ``model(x, hx=None, *, seq_lengths=None) -> (output, h_n)`` as :class:`lstm_jax.GRU`.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> rnn = lstm_jax.RNN(10, 20, 2, nonlinearity="relu", rngs=nnx.Rngs(0))
      >>> out, h = rnn(jnp.ones((5, 3, 10)))
      >>> out.shape, h.shape, bool(jnp.all(out >= 0))
      ((5, 3, 20), (2, 3, 20), True)
    """

    _param_type = RNNParams
    _state_fields = RNNState._fields

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        recurrent_init: RecurrentInit = "uniform",
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
        unroll: int = 1,
        checkpoint: int | None = None,
        rngs: nnx.Rngs,
    ):
        rnn_cell_def(nonlinearity)  # validates
        self.nonlinearity = nonlinearity
        self._setup(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype=dtype,
            unroll=unroll,
            checkpoint=checkpoint,
            input_dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
            zoneout=zoneout,
            rngs=rngs,
        )
        self._create_params(
            init_rnn_params(
                rngs.params(),
                input_size,
                hidden_size,
                num_layers,
                bias=bias,
                bidirectional=bidirectional,
                dtype=param_dtype,
                recurrent_init=recurrent_init,
            )
        )

    def __call__(
        self, x: jax.Array, hx: jax.Array | None = None, *, seq_lengths: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        return rnn(
            self.stack_params,
            x,
            hx,
            nonlinearity=self.nonlinearity,
            seq_lengths=seq_lengths,
            **self._apply_kwargs(),
        )

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> RNN:
        """Builds an RNN with a ``torch.nn.RNN``'s configuration and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.RNN.from_torch(torch.nn.RNN(4, 8, nonlinearity="relu")).nonlinearity
          'relu'
        """
        return cls._from_torch(module, rngs, kwargs, nonlinearity=module.nonlinearity)


class _RecurrentCell(nnx.Module):
    """What ``LSTMCell``, ``GRUCell`` and ``RNNCell`` share: parameters under torch's names,
    input and state checks, dtype handling and torch interop. No math."""

    _param_type: ClassVar[type]

    def _setup(self, input_size, hidden_size, bias, dtype, params) -> None:
        self.input_size = validation.check_positive_int("input_size", input_size)
        self.hidden_size = validation.check_positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.dtype = dtype
        for name, value in torch_interop.cell_to_named(params).items():
            setattr(self, name, nnx.Param(value))

    @property
    def params(self):
        """The parameters as the pure cell function takes them (e.g. ``lstm_cell``)."""
        fields = self._param_type._fields
        return self._param_type(**{f: getattr(self, f)[...] for f in fields if hasattr(self, f)})

    def load_params(self, params) -> None:
        """Replaces the parameters with ``params`` (same fields and shapes)."""
        named = torch_interop.cell_to_named(params)
        current = torch_interop.cell_to_named(self.params)
        if set(named) != set(current):
            raise ValueError(f"expected parameters {tuple(current)}, got {tuple(named)}")
        for name, value in named.items():
            if value.shape != current[name].shape:
                raise ValueError(f"{name} must have shape {current[name].shape}, got {value.shape}")
            getattr(self, name)[...] = value

    def _step(self, cell: CellDef, x: jax.Array, hx, names: tuple[str, ...]):
        """Runs one step; ``hx`` is ``None`` or one array per state field, named ``names``."""
        x, batched = validation.check_cell_input(x, self.input_size)
        if not batched:
            x = x[None]
        batch = x.shape[0]
        dtype = jnp.dtype(self.dtype or x.dtype)
        params = jax.tree.map(lambda p: p.astype(dtype), self.params)
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

    @classmethod
    def _from_torch(cls, module, rngs, kwargs, **config):
        cell = cls(
            module.input_size,
            module.hidden_size,
            bias=module.bias,
            rngs=rngs or nnx.Rngs(0),
            **config,
            **kwargs,
        )
        cell.load_params(
            torch_interop.cell_from_named(module.state_dict(), cls._param_type, jnp.float32)
        )
        return cell

    def to_torch_state_dict(self, *, as_tensors: bool = False) -> dict[str, Any]:
        """The parameters under ``torch.nn.*Cell``'s names (see ``LSTM.to_torch_state_dict``).

        Example:
          >>> from flax import nnx
          >>> import lstm_jax
          >>> sorted(lstm_jax.GRUCell(3, 4, rngs=nnx.Rngs(0)).to_torch_state_dict())
          ['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih']
        """
        return _numpy_state_dict(torch_interop.cell_to_named(self.params), as_tensors)


class LSTMCell(_RecurrentCell):
    """One LSTM step with ``torch.nn.LSTMCell``'s API (equations in ``lstm_step``).

    Args:
      input_size: features of ``x``.
      hidden_size: size of ``h`` and ``c``.
      bias: whether the cell has ``bias_ih`` and ``bias_hh``.
      dtype: computation dtype (``None``: the input's).
      param_dtype: parameter dtype.
      forget_bias: if set, the forget gate's total bias starts at this value.
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"``.
      chrono_init, peephole, layer_norm, cifg: the variants, as :class:`lstm_jax.LSTM`.
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

    _param_type = LSTMParams

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
        chrono_init: float | None = None,
        peephole: bool = False,
        layer_norm: bool = False,
        cifg: bool = False,
        rngs: nnx.Rngs,
    ):
        params = init_lstm_layer(
            rngs.params(),
            input_size,
            hidden_size,
            bias=bias,
            dtype=param_dtype,
            forget_bias=forget_bias,
            recurrent_init=recurrent_init,
            chrono_init=chrono_init,
            peephole=peephole,
            layer_norm=layer_norm,
            cifg=cifg,
        )
        self._setup(input_size, hidden_size, bias, dtype, params)

    def __call__(self, x: jax.Array, hx: tuple[jax.Array, jax.Array] | None = None) -> LSTMState:
        return self._step(LSTM_CELL, x, hx, ("hx[0] (h)", "hx[1] (c)"))

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> LSTMCell:
        """Builds an LSTMCell with a ``torch.nn.LSTMCell``'s sizes and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.LSTMCell.from_torch(torch.nn.LSTMCell(4, 8)).weight_hh.shape
          (32, 8)
        """
        return cls._from_torch(module, rngs, kwargs)


class GRUCell(_RecurrentCell):
    """One GRU step with ``torch.nn.GRUCell``'s API (equations in ``gru_step``).

    Args:
      input_size: features of ``x``.
      hidden_size: size of ``h``.
      bias: whether the cell has ``bias_ih`` and ``bias_hh``.
      dtype: computation dtype (``None``: the input's).
      param_dtype: parameter dtype.
      recurrent_init: ``"uniform"`` (torch) or ``"orthogonal"``.
      rngs: ``nnx.Rngs`` for initialisation.

    Call:
      ``cell(x, hx=None) -> h``, ``x`` ``[batch, input_size]`` (or ``[input_size]``),
      ``hx`` and ``h`` ``[batch, hidden_size]``; zeros when ``hx`` is omitted.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> cell = lstm_jax.GRUCell(10, 20, rngs=nnx.Rngs(0))
      >>> h = None
      >>> for x_t in jnp.ones((6, 3, 10)):
      ...     h = cell(x_t, h)
      >>> h.shape
      (3, 20)
    """

    _param_type = GRUParams

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        recurrent_init: RecurrentInit = "uniform",
        rngs: nnx.Rngs,
    ):
        params = init_gru_layer(
            rngs.params(),
            input_size,
            hidden_size,
            bias=bias,
            dtype=param_dtype,
            recurrent_init=recurrent_init,
        )
        self._setup(input_size, hidden_size, bias, dtype, params)

    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        return self._step(GRU_CELL, x, None if hx is None else (hx,), ("hx",)).h

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> GRUCell:
        """Builds a GRUCell with a ``torch.nn.GRUCell``'s sizes and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.GRUCell.from_torch(torch.nn.GRUCell(4, 8)).weight_ih.shape
          (24, 4)
        """
        return cls._from_torch(module, rngs, kwargs)


class RNNCell(_RecurrentCell):
    """One Elman step with ``torch.nn.RNNCell``'s API.

    ``h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh)``.

    Args:
      input_size: features of ``x``.
      hidden_size: size of ``h``.
      bias: whether the cell has ``bias_ih`` and ``bias_hh``.
      nonlinearity: ``"tanh"`` or ``"relu"``.
      dtype, param_dtype, recurrent_init, rngs: as :class:`lstm_jax.GRUCell`.

    Call:
      ``cell(x, hx=None) -> h`` as :class:`lstm_jax.GRUCell`.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> cell = lstm_jax.RNNCell(10, 20, nonlinearity="relu", rngs=nnx.Rngs(0))
      >>> h = cell(jnp.ones((3, 10)))
      >>> h.shape, bool(jnp.all(h >= 0))
      ((3, 20), True)
    """

    _param_type = RNNParams

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype=None,
        param_dtype=jnp.float32,
        recurrent_init: RecurrentInit = "uniform",
        rngs: nnx.Rngs,
    ):
        rnn_cell_def(nonlinearity)  # validates
        self.nonlinearity = nonlinearity
        params = init_rnn_layer(
            rngs.params(),
            input_size,
            hidden_size,
            bias=bias,
            dtype=param_dtype,
            recurrent_init=recurrent_init,
        )
        self._setup(input_size, hidden_size, bias, dtype, params)

    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        cell = rnn_cell_def(self.nonlinearity)
        return self._step(cell, x, None if hx is None else (hx,), ("hx",)).h

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> RNNCell:
        """Builds an RNNCell with a ``torch.nn.RNNCell``'s sizes, nonlinearity and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.RNNCell.from_torch(torch.nn.RNNCell(4, 8, nonlinearity="relu")).nonlinearity
          'relu'
        """
        return cls._from_torch(module, rngs, kwargs, nonlinearity=module.nonlinearity)


def explain_backend(fn: Any, *args: Any, **kwargs: Any) -> list[BackendChoice]:
    """Which kernel each recurrent stack in ``fn(*args, **kwargs)`` runs, and why.

    Traces the call abstractly (nothing is computed, the model's state is not touched)
    and reports, in call order, what ``backend`` resolved to for every LSTM, GRU or RNN
    stack: the kernel (``"scan"``, ``"fused"``, ``"cudnn"``), whether the fused layer's
    loops run as native CPU code, and why each other kernel does not run.

    Args:
      fn: an NNX model (in train or eval mode), a pure function of
        :mod:`lstm_jax.functional`, or any function that calls them (jitted or not).
      *args: its arguments (arrays, or ``jax.ShapeDtypeStruct``).
      **kwargs: its keyword arguments.

    Returns:
      One :class:`BackendChoice` per stack call.

    Example:
      >>> import lstm_jax
      >>> model = lstm_jax.LSTM(8, 20, rngs=nnx.Rngs(0))
      >>> [choice] = lstm_jax.explain_backend(model, jnp.ones((5, 2, 8), jnp.float32))
      >>> choice.backend, choice.native_cpu
      ('fused', False)
      >>> choice.reasons["native_cpu"]
      'the native loops need a hidden size that is a multiple of 32, got 20'
    """
    with recording_choices() as choices:
        if isinstance(fn, nnx.Module):  # the model's state (dropout's RNG) is not advanced
            nnx.eval_shape(lambda model: model(*args, **kwargs), fn)
        else:
            jax.eval_shape(lambda: fn(*args, **kwargs))
    return choices
