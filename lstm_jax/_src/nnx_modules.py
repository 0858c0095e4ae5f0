"""Flax NNX modules: hold parameters under torch's names and call the pure functions.

No math lives here: a module validates its constructor arguments, creates its
parameters with :mod:`lstm_jax._src.init`, and calls :mod:`lstm_jax._src.apply` or
:mod:`lstm_jax._src.cells`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax._src import validation
from lstm_jax._src.apply import apply_recurrent, init_params, single_state, step_cell
from lstm_jax._src.backends import BackendChoice, recording_choices
from lstm_jax._src.cells import (
    GRU_CELL,
    LSTM_CELL,
    CellDef,
    accumulation_dtype,
    get_cell,
    rnn_cell_def,
)
from lstm_jax._src.interop import torch as torch_interop
from lstm_jax._src.options import OPTION_NAMES, RecurrentOptions, split_options
from lstm_jax._src.types import LSTMState, StackParams


def _numpy_state_dict(named: dict[str, Any], as_tensors: bool) -> dict[str, Any]:
    arrays = {name: np.array(value) for name, value in named.items()}
    if not as_tensors:
        return arrays
    import torch  # optional dependency, imported only on request

    return {name: torch.from_numpy(value) for name, value in arrays.items()}


def _dropout_stream(rngs: nnx.Rngs, owner: str, options: RecurrentOptions) -> nnx.RngStream | None:
    """A fork of ``rngs``' ``dropout`` stream (its ``default`` one where it has none) when
    a regulariser in ``options`` draws random masks, else ``None``: a model without them
    needs no stream, so ``nnx.Rngs(params=0)`` builds it.

    Raises:
      ValueError: a regulariser is on and ``rngs`` has neither stream; the message names
        the stream and the options that need it.
    """
    random = options.random_rates
    if not random:
        return None
    try:
        stream = rngs["dropout"]
    except KeyError:
        configured = ", ".join(f"{name}={getattr(options, name)!r}" for name in random)
        raise ValueError(
            f"{owner}({configured}) draws random masks from the 'dropout' stream of rngs, "
            f"which has neither a 'dropout' nor a 'default' stream: pass e.g. "
            f"rngs=nnx.Rngs(params=0, dropout=1)"
        ) from None
    return stream.fork()


class Recurrent(nnx.Module):
    """A multi-layer, optionally bidirectional stack of any registered cell.

    :class:`LSTM`, :class:`GRU` and :class:`RNN` are this module with their cell; a cell
    of your own (:func:`lstm_jax.functional.register_cell`) runs through it with every
    option of theirs. Parameters live under torch's names (``weight_ih_l0``, ...).

    Args:
      cell: a registered cell name (``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``,
        or your own) or a :class:`~lstm_jax.functional.CellDef` with an ``init_layer``.
      input_size: features of ``x``, ``I``.
      hidden_size: ``H``.
      num_layers: stacked layers ``L``.
      bias: whether the layers have ``bias_ih`` and ``bias_hh``.
      batch_first: ``x`` and ``output`` are ``[batch, time, ...]``.
      dropout: dropout on the outputs of every layer but the last, in training mode.
      bidirectional: add a reverse direction to each layer (``D = 2``).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``; ``params`` for initialisation, ``dropout`` (or default) for the
        regularisers, a fresh key at every training call (needed only when one is on).
      **options: by name, the cell's initialiser options (the LSTM's ``proj_size``,
        variants and ``forget_bias``, ``recurrent_init``, ...) and the options of
        :class:`lstm_jax.RecurrentOptions` (``dtype``, ``unroll``, ``checkpoint``,
        ``backend``, the regularisers), validated once here.

    Call:
      ``model(x, hx=None, *, seq_lengths=None) -> (output, state)``: ``output``
      ``[time, batch, D * H_out]``, ``state`` the cell's state named tuple with fields
      ``[L * D, batch, size]`` (in ``hx``'s container type when given).
      ``model.eval()`` turns the regularisers off, ``model.train()`` on.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> model = lstm_jax.Recurrent("rnn_relu", 4, 8, num_layers=2, bidirectional=True,
      ...                            unroll=2, rngs=nnx.Rngs(0))
      >>> out, (h_n,) = model(jnp.ones((5, 3, 4)))
      >>> out.shape, h_n.shape
      ((5, 3, 16), (4, 3, 8))
    """

    def __init__(
        self,
        cell: str | CellDef,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        self.cell = get_cell(cell)
        self.input_size = validation.check_positive_int("input_size", input_size)
        self.hidden_size = validation.check_positive_int("hidden_size", hidden_size)
        self.num_layers = validation.check_positive_int("num_layers", num_layers)
        self.bias = validation.check_bool("bias", bias)
        self.bidirectional = validation.check_bool("bidirectional", bidirectional)
        cell_options, run_options = split_options(type(self).__name__, self.cell, options)
        self.cell_options = tuple(cell_options.items())  # hashable: static in NNX
        self.options = RecurrentOptions.build(
            type(self).__name__, {"batch_first": batch_first, "dropout": dropout, **run_options}
        )
        params = init_params(
            self.cell,
            rngs.params(),
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            bias=bias,
            dtype=param_dtype,
            **cell_options,
        )
        self.options.zoneout_rates(self.cell.state_sizes(params[0][0])._fields)
        self.deterministic = False
        self.rngs = _dropout_stream(rngs, type(self).__name__, self.options)
        self._param_names = tuple(torch_interop.stack_to_named(params))
        self.load_stack_params(params)

    def __getattr__(self, name: str) -> Any:
        # model.unroll, model.peephole, ...: the options, which live in one place each
        if name in OPTION_NAMES and "options" in vars(self):
            return getattr(self.options, name)
        cell_options = dict(vars(self).get("cell_options", ()))
        if name in cell_options:
            return cell_options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
            named, self.cell.param_type, self.num_layers, self.num_directions
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

    def _run(self, x, hx, seq_lengths):
        """``apply_recurrent`` with this module's cell, parameters and options.

        In training mode with any regulariser on, a fresh key is drawn from ``rngs`` at
        every call, so masks differ between calls; in ``eval()`` none is drawn.
        """
        training = bool(self.options.random_rates) and not self.deterministic
        return apply_recurrent(
            self.cell,
            self.stack_params,
            x,
            hx,
            seq_lengths=seq_lengths,
            key=self.rngs() if training else None,
            deterministic=not training,
            options=self.options,
        )

    def __call__(self, x: jax.Array, hx=None, *, seq_lengths: jax.Array | None = None):
        return self._run(x, hx, seq_lengths)

    def initialize_carry(self, input_shape: tuple[int, ...]) -> Any:
        """Zeros for ``hx``, as ``__call__`` takes it, for inputs of shape ``input_shape``.

        Args:
          input_shape: the shape of ``x``: ``[time, batch, I]``, ``[batch, time, I]`` with
            ``batch_first``, or unbatched ``[time, I]``.

        Returns:
          The cell's state named tuple with fields ``[L * D, batch, size]`` (``[L * D,
          size]`` unbatched) in the state dtype; a single array for GRU and RNN.

        Example:
          >>> import lstm_jax
          >>> model = lstm_jax.LSTM(4, 8, num_layers=2, rngs=nnx.Rngs(0))
          >>> h0, c0 = model.initialize_carry((5, 3, 4))
          >>> h0.shape, c0.shape
          ((2, 3, 8), (2, 3, 8))
        """
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"input_shape must be a tuple (x.shape), got {input_shape!r}")
        shape = tuple(input_shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"input_shape must have rank 2 or 3, got {shape}")
        batch = () if len(shape) == 2 else (shape[0 if self.options.batch_first else 1],)
        first = self.stack_params[0][0]
        dtype = accumulation_dtype(self.options.dtype or first.weight_ih.dtype)
        sizes = self.cell.state_sizes(first)
        rows = self.num_layers * self.num_directions
        return type(sizes)(*(jnp.zeros((rows, *batch, n), dtype) for n in sizes))

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
            model.cell.param_type,
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


class _SingleStateStack(Recurrent):
    """``GRU`` and ``RNN``: torch passes and returns their one state field as an array."""

    def __call__(
        self, x: jax.Array, hx: jax.Array | None = None, *, seq_lengths: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        output, state = self._run(x, single_state(self.cell, hx, "h_0"), seq_lengths)
        return output, state[0]

    def initialize_carry(self, input_shape: tuple[int, ...]) -> jax.Array:
        return super().initialize_carry(input_shape)[0]


class LSTM(Recurrent):
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
        dropouts and zoneout, a fresh key at every training call (needed only when one
        is on: ``nnx.Rngs(params=0)`` builds a model without them).
      backend: ``"auto"``, ``"scan"``, ``"fused"``, ``"cudnn"`` or ``"pallas"``: which
        kernel runs the stack, see :func:`lstm_jax.functional.lstm`.

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
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        super().__init__(
            LSTM_CELL,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            param_dtype=param_dtype,
            rngs=rngs,
            proj_size=proj_size,
            **options,
        )

    def __call__(
        self,
        x: jax.Array,
        hx: tuple[jax.Array, jax.Array] | None = None,
        *,
        seq_lengths: jax.Array | None = None,
    ) -> tuple[jax.Array, LSTMState]:
        return self._run(x, hx, seq_lengths)

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
        torch_interop.check_torch_module(module, "LSTM")
        return cls._from_torch(module, rngs, kwargs, proj_size=module.proj_size)


class GRU(_SingleStateStack):
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
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        super().__init__(
            GRU_CELL,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            param_dtype=param_dtype,
            rngs=rngs,
            **options,
        )

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> GRU:
        """Builds a GRU with a ``torch.nn.GRU``'s configuration and weights.

        Example:
          >>> import torch, lstm_jax
          >>> model = lstm_jax.GRU.from_torch(torch.nn.GRU(4, 8, bidirectional=True))
          >>> model.weight_hh_l0_reverse.shape
          (24, 8)
        """
        torch_interop.check_torch_module(module, "GRU")
        return cls._from_torch(module, rngs, kwargs)


class RNN(_SingleStateStack):
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
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        super().__init__(
            rnn_cell_def(nonlinearity),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            param_dtype=param_dtype,
            rngs=rngs,
            **options,
        )
        self.nonlinearity = nonlinearity

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> RNN:
        """Builds an RNN with a ``torch.nn.RNN``'s configuration and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.RNN.from_torch(torch.nn.RNN(4, 8, nonlinearity="relu")).nonlinearity
          'relu'
        """
        torch_interop.check_torch_module(module, "RNN")
        return cls._from_torch(module, rngs, kwargs, nonlinearity=module.nonlinearity)


class RecurrentCell(nnx.Module):
    """One step of any registered cell, ``torch.nn.*Cell``-style: ``cell(x, hx) -> state``.

    :class:`LSTMCell`, :class:`GRUCell` and :class:`RNNCell` are this module with their
    cell. Inside Flax's own loops (``nnx.RNN``, ``nnx.Bidirectional``) use it through
    :class:`FlaxCell`.

    Args:
      cell: a registered cell name or a :class:`~lstm_jax.functional.CellDef`.
      input_size: features of ``x``.
      hidden_size: ``H``.
      bias: whether the cell has ``bias_ih`` and ``bias_hh``.
      dtype: computation dtype (``None``: the input's).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` for initialisation.
      **cell_options: the cell's initialiser options by name (the LSTM's variants,
        ``forget_bias``, ``recurrent_init``, ...).

    Call:
      ``cell(x, hx=None) -> state``: ``x`` ``[batch, input_size]`` (or ``[input_size]``),
      ``hx`` one array per state field ``[batch, size]`` (zeros when omitted); the new
      state in ``hx``'s container type (the cell's state named tuple by default).

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> cell = lstm_jax.RecurrentCell("gru", 3, 5, rngs=nnx.Rngs(0))
      >>> (h,) = cell(jnp.ones((2, 3)))
      >>> h.shape
      (2, 5)
    """

    def __init__(
        self,
        cell: str | CellDef,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ):
        self.cell = get_cell(cell)
        cell_options, _ = split_options(type(self).__name__, self.cell, cell_options, ())
        self.input_size = validation.check_positive_int("input_size", input_size)
        self.hidden_size = validation.check_positive_int("hidden_size", hidden_size)
        self.bias = validation.check_bool("bias", bias)
        self.dtype = None if dtype is None else jnp.dtype(dtype)
        params = self.cell.init_layer(
            rngs.params(), input_size, hidden_size, bias=bias, dtype=param_dtype, **cell_options
        )
        for name, value in torch_interop.cell_to_named(params).items():
            setattr(self, name, nnx.Param(value))

    @property
    def params(self):
        """The parameters as the pure cell function takes them (e.g. ``lstm_cell``)."""
        fields = self.cell.param_type._fields
        return self.cell.param_type(
            **{f: getattr(self, f)[...] for f in fields if hasattr(self, f)}
        )

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

    def __call__(self, x: jax.Array, hx=None):
        return step_cell(self.cell, self.params, x, hx, dtype=self.dtype)

    @property
    def num_feature_axes(self) -> int:
        """Flax's cell protocol: one feature axis."""
        return 1

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None) -> Any:
        """Zeros for ``hx`` for inputs of shape ``input_shape`` (Flax's signature).

        Args:
          input_shape: ``[..., batch, input_size]``: every axis but the last is a batch axis.
          rngs: unused (the carry starts at zero), accepted for Flax's protocol.

        Returns:
          The cell's state named tuple, fields ``[..., batch, size]``, in the state dtype
          (a single array for GRU and RNN cells).

        Example:
          >>> import lstm_jax
          >>> cell = lstm_jax.LSTMCell(3, 5, rngs=nnx.Rngs(0))
          >>> [leaf.shape for leaf in cell.initialize_carry((2, 3))]
          [(2, 5), (2, 5)]
        """
        del rngs
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise TypeError(
                f"input_shape must be a tuple [..., batch, input_size], got {input_shape!r}"
            )
        params = self.params
        dtype = accumulation_dtype(self.dtype or params.weight_ih.dtype)
        sizes = self.cell.state_sizes(params)
        return type(sizes)(*(jnp.zeros((*input_shape[:-1], n), dtype) for n in sizes))

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
            torch_interop.cell_from_named(module.state_dict(), cell.cell.param_type, jnp.float32)
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


class _SingleStateCell(RecurrentCell):
    """``GRUCell`` and ``RNNCell``: torch passes and returns their state as one array."""

    def __call__(self, x: jax.Array, hx: jax.Array | None = None) -> jax.Array:
        return super().__call__(x, single_state(self.cell, hx, "h"))[0]

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None) -> jax.Array:
        return super().initialize_carry(input_shape, rngs)[0]


class LSTMCell(RecurrentCell):
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

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ):
        super().__init__(
            LSTM_CELL,
            input_size,
            hidden_size,
            bias,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            **cell_options,
        )

    def __call__(self, x: jax.Array, hx: tuple[jax.Array, jax.Array] | None = None) -> LSTMState:
        return super().__call__(x, hx)

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> LSTMCell:
        """Builds an LSTMCell with a ``torch.nn.LSTMCell``'s sizes and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.LSTMCell.from_torch(torch.nn.LSTMCell(4, 8)).weight_hh.shape
          (32, 8)
        """
        torch_interop.check_torch_module(module, "LSTMCell")
        return cls._from_torch(module, rngs, kwargs)


class GRUCell(_SingleStateCell):
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

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ):
        super().__init__(
            GRU_CELL,
            input_size,
            hidden_size,
            bias,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            **cell_options,
        )

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> GRUCell:
        """Builds a GRUCell with a ``torch.nn.GRUCell``'s sizes and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.GRUCell.from_torch(torch.nn.GRUCell(4, 8)).weight_ih.shape
          (24, 4)
        """
        torch_interop.check_torch_module(module, "GRUCell")
        return cls._from_torch(module, rngs, kwargs)


class RNNCell(_SingleStateCell):
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

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ):
        super().__init__(
            rnn_cell_def(nonlinearity),
            input_size,
            hidden_size,
            bias,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            **cell_options,
        )
        self.nonlinearity = nonlinearity

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | None = None, **kwargs) -> RNNCell:
        """Builds an RNNCell with a ``torch.nn.RNNCell``'s sizes, nonlinearity and weights.

        Example:
          >>> import torch, lstm_jax
          >>> lstm_jax.RNNCell.from_torch(torch.nn.RNNCell(4, 8, nonlinearity="relu")).nonlinearity
          'relu'
        """
        torch_interop.check_torch_module(module, "RNNCell")
        return cls._from_torch(module, rngs, kwargs, nonlinearity=module.nonlinearity)


class FlaxCell(nnx.RNNCellBase):
    """Flax's cell protocol around one of ours, for ``nnx.RNN`` and ``nnx.Bidirectional``.

    Flax's loops call ``cell(carry, x) -> (carry, y)``, ``cell.initialize_carry`` and
    ``cell.num_feature_axes``; our cells keep torch's ``cell(x, hx) -> state``. This
    adapter holds the cell (its parameters stay the cell's) and speaks Flax's protocol:
    the carry is the cell's state (``LSTMState(h, c)`` for an LSTM, ``h`` otherwise) and
    ``y`` is ``h``. The numbers are those of our layers with the same weights. The carry
    starts in the state dtype of the parameters' dtype (float32 for float32 or bfloat16
    parameters), so feed inputs of the parameters' dtype or set the cell's ``dtype``.

    Args:
      cell: an :class:`LSTMCell`, :class:`GRUCell`, :class:`RNNCell` or
        :class:`RecurrentCell`.

    Example:
      >>> from flax import nnx
      >>> import lstm_jax
      >>> cell = lstm_jax.LSTMCell(3, 5, rngs=nnx.Rngs(0))
      >>> rnn = nnx.RNN(lstm_jax.FlaxCell(cell))
      >>> rnn(jnp.ones((2, 7, 3), jnp.float32)).shape  # Flax's layout: [batch, time, features]
      (2, 7, 5)
    """

    def __init__(self, cell: RecurrentCell):
        if not isinstance(cell, RecurrentCell):
            raise TypeError(f"FlaxCell wraps an lstm_jax cell module, got {type(cell).__name__}")
        self.cell = cell

    def __call__(self, carry: Any, inputs: jax.Array) -> tuple[Any, jax.Array]:
        new = self.cell(inputs, carry)
        return new, new if isinstance(new, jax.Array) else new[0]

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init=None):
        if carry_init is not None:
            raise ValueError("the carry of lstm_jax cells starts at zero: carry_init is not taken")
        return self.cell.initialize_carry(input_shape, rngs)

    @property
    def num_feature_axes(self) -> int:
        return 1


def explain_backend(fn: Any, *args: Any, **kwargs: Any) -> list[BackendChoice]:
    """Which kernel each recurrent stack in ``fn(*args, **kwargs)`` runs, and why.

    Traces the call abstractly (nothing is computed, the model's state is not touched)
    and reports, in call order, what ``backend`` resolved to for every LSTM, GRU or RNN
    stack: the kernel (``"scan"``, ``"fused"``, ``"cudnn"``, ``"pallas"``, ``"parallel"``),
    whether the fused layer's loops run as native CPU code, and why each other kernel does
    not run.

    Args:
      fn: an NNX model (in train or eval mode), a pure function of
        :mod:`lstm_jax.functional`, or any function that calls them (jitted or not, under
        ``jax.jit``, ``nnx.jit``, ``nnx.vmap`` or ``nnx.value_and_grad``).
      *args: its arguments (arrays, or ``jax.ShapeDtypeStruct``; models are passed here,
        not closed over, for the NNX transforms).
      **kwargs: its keyword arguments: models and arrays are traced, other values (a
        ``dtype``, a number, a string) passed as they are.

    Returns:
      One :class:`BackendChoice` per stack call.

    Example:
      >>> import lstm_jax
      >>> model = lstm_jax.LSTM(8, 20, proj_size=10, rngs=nnx.Rngs(0))
      >>> [choice] = lstm_jax.explain_backend(model, jnp.ones((5, 2, 8), jnp.float32))
      >>> choice.backend, choice.native_cpu
      ('fused', False)
      >>> choice.reasons["native_cpu"]
      'the native loops have no projection (proj_size > 0)'
    """
    if isinstance(fn, nnx.Module):
        fn, args = (lambda model, *a, **k: model(*a, **k)), (fn, *args)
    static = {k: v for k, v in kwargs.items() if not _holds_arrays(v)}
    traced = {k: v for k, v in kwargs.items() if k not in static}
    with recording_choices() as choices:
        # Every argument through nnx.eval_shape: a model among them is traced as a copy
        # (its state, dropout's RNG included, is not advanced), so a function under nnx.jit
        # or nnx.vmap gets a model of its own trace level.
        nnx.eval_shape(lambda *a, **k: fn(*a, **k, **static), *args, **traced)
    return choices


def _holds_arrays(value: Any) -> bool:
    """Whether ``value`` is or holds an array or a model (a pytree of them)."""
    leaves = jax.tree.leaves(value, is_leaf=lambda v: isinstance(v, nnx.Module))
    array_like = (jax.Array, np.ndarray, jax.ShapeDtypeStruct, nnx.Module)
    return any(isinstance(leaf, array_like) for leaf in leaves)
