"""Small task models around a recurrent core: a regressor and a token-level model.

The recurrent core is chosen by name, ``"lstm"``, ``"gru"`` or ``"rnn"``, and built from
the library's NNX modules (``lstm_jax.LSTM``, ``lstm_jax.GRU``, ``lstm_jax.RNN``), which
share ``torch.nn``'s constructor and call. The models only add an embedding (or input
projection) and a linear read-out.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax._src import nnx_modules
from lstm_jax._src.cells import registered_cells

# The kinds built as torch.nn's modules (lstm_jax.LSTM, GRU, RNN); every other registered
# cell is built as lstm_jax.Recurrent.
TORCH_MODULES = ("lstm", "gru", "rnn")


def cell_kinds() -> tuple[str, ...]:
    """The cell kinds a model can be built from: torch's three modules, then every
    registered cell (:func:`lstm_jax.functional.register_cell`, a user's own included).

    Example:
      >>> cell_kinds()[:4]
      ('lstm', 'gru', 'rnn', 'rnn_tanh')
    """
    return tuple(dict.fromkeys((*TORCH_MODULES, *registered_cells())))


def recurrent_class(cell: str) -> type:
    """The NNX module class for a cell kind: ``lstm_jax.LSTM``, ``GRU`` or ``RNN`` for
    ``"lstm"``, ``"gru"``, ``"rnn"``, ``lstm_jax.Recurrent`` for any other registered cell.

    Raises:
      ValueError: a kind that is neither, listing :func:`cell_kinds`.

    Example:
      >>> recurrent_class("lstm").__name__, recurrent_class("rnn_relu").__name__
      ('LSTM', 'Recurrent')
    """
    if cell not in cell_kinds():
        raise ValueError(f"unknown cell {cell!r}; registered cells: {', '.join(cell_kinds())}")
    if cell in TORCH_MODULES:
        return getattr(nnx_modules, cell.upper())
    return nnx_modules.Recurrent


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    nonlinearity: str = "tanh",
    dropout: float = 0.0,
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module:
    """Builds ``lstm_jax.LSTM``/``GRU``/``RNN`` with ``torch.nn``'s arguments.

    Args:
      cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (torch's modules), or the name of any
        registered cell (:func:`lstm_jax.functional.register_cell`), built as
        ``lstm_jax.Recurrent``.
      input_size: ``I``.
      hidden_size: ``H``.
      num_layers: ``L``.
      nonlinearity: the RNN's ``"tanh"`` or ``"relu"`` (ignored by LSTM and GRU).
      dropout: between-layer dropout.
      rngs: ``nnx.Rngs``.
      **kwargs: further constructor arguments (e.g. ``forget_bias`` for the LSTM).

    Example:
      >>> m = make_recurrent("lstm", 3, 8, rngs=nnx.Rngs(0))
      >>> m(jnp.ones((5, 2, 3), jnp.float32))[0].shape
      (5, 2, 8)
    """
    cls = recurrent_class(cell)
    if cls is nnx_modules.Recurrent:
        return cls(cell, input_size, hidden_size, num_layers, dropout=dropout, rngs=rngs, **kwargs)
    if cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    return cls(input_size, hidden_size, num_layers, dropout=dropout, rngs=rngs, **kwargs)


def zero_carry(core: nnx.Module, batch_size: int, input_size: int) -> Any:
    """Zeros shaped like the final state ``core`` returns for a batch (any cell kind).

    Returns:
      The state pytree (``(h, c)`` for the LSTM, ``h`` for GRU/RNN), leaves
      ``[layers * directions, batch, size]``.

    Example:
      >>> core = make_recurrent("lstm", 3, 8, num_layers=2, rngs=nnx.Rngs(0))
      >>> h, c = zero_carry(core, batch_size=4, input_size=3)
      >>> h.shape, c.shape
      ((2, 4, 8), (2, 4, 8))
    """
    shape = (batch_size, 1, input_size) if core.batch_first else (1, batch_size, input_size)
    return core.initialize_carry(shape)


def reset_carry(carry: Any, reset: jax.Array) -> Any:
    """Zeros the rows of ``carry`` where ``reset`` ``[batch]`` is true.

    Example:
      >>> h = jnp.ones((1, 3, 2), jnp.float32)
      >>> reset_carry(h, jnp.array([True, False, True]))[0, :, 0].tolist()
      [0.0, 1.0, 0.0]
    """

    def one(c):
        mask = reset.reshape((1, -1) + (1,) * (c.ndim - 2))
        return jnp.where(mask, jnp.zeros_like(c), c)

    return jax.tree.map(one, carry)


def init_uniform(model: nnx.Module, scale: float, *, key: jax.Array) -> None:
    """Re-initialises every ``nnx.Param`` of ``model`` in place, uniform in ``[-scale, scale]``.

    Zaremba et al. (2014)'s initialisation of all parameters (embedding, recurrent
    weights and biases, read-out). Each parameter gets its own key from ``key``; dtypes
    and shapes are kept.

    Args:
      model: any NNX module.
      scale: the half-width of the interval, > 0.
      key: a JAX PRNG key.

    Example:
      >>> m = TokenModel("lstm", vocab_size=10, embed_size=4, hidden_size=8, rngs=nnx.Rngs(0))
      >>> init_uniform(m, 0.1, key=jax.random.key(0))
      >>> float(jnp.max(jnp.abs(m.core.weight_hh_l0[...]))) <= 0.1
      True
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [
        jax.random.uniform(k, leaf.shape, leaf.dtype, minval=-scale, maxval=scale)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    nnx.update(model, jax.tree.unflatten(treedef, new))


POOLINGS = ("last", "mean")


class SequenceRegressor(nnx.Module):
    """A recurrent core read out linearly from its sequence summary: ``[T, B, I] -> [B, out]``.

    The summary is chosen by ``pooling``:

    - ``"last"``: the top layer's final hidden state ``h_n``, which with ``seq_lengths`` is
      each row's state after its last valid step; for a bidirectional core
      (``bidirectional=True`` among ``core_kwargs``) the forward direction's final state
      and the backward direction's after step 1, concatenated.
    - ``"mean"``: the top layer's outputs averaged over each row's valid steps.

    The model of the adding problem (``out_size=1``), of forecasting (``out_size`` =
    horizon x features) and of sequence classification (``out_size`` = classes, logits).
    Inputs are time-major unless the core is built with ``batch_first=True``.

    Example:
      >>> m = SequenceRegressor("lstm", 2, 16, rngs=nnx.Rngs(0))
      >>> m(jnp.ones((10, 4, 2), jnp.float32)).shape
      (4, 1)
      >>> m = SequenceRegressor("gru", 1, 8, out_size=10, bidirectional=True, pooling="mean",
      ...                       rngs=nnx.Rngs(0))
      >>> m(jnp.ones((10, 4, 1), jnp.float32), seq_lengths=jnp.array([10, 3, 5, 1])).shape
      (4, 10)
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        out_size: int = 1,
        *,
        pooling: str = "last",
        rngs: nnx.Rngs,
        **core_kwargs: Any,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.input_size, self.pooling = input_size, pooling
        self.directions = 2 if core_kwargs.get("bidirectional", False) else 1
        self.core = make_recurrent(
            cell, input_size, hidden_size, num_layers, rngs=rngs, **core_kwargs
        )
        features = self.directions * (core_kwargs.get("proj_size") or hidden_size)
        self.head = nnx.Linear(features, out_size, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, seq_lengths: jax.Array | None = None) -> jax.Array:
        """``x`` ``[time, batch, input_size]`` (``seq_lengths`` ``[batch]``) to ``[batch, out]``."""
        out, state = self.core(x, seq_lengths=seq_lengths)
        if self.pooling == "mean":
            time_axis = 1 if self.core.batch_first else 0
            steps = jnp.arange(out.shape[time_axis], dtype=jnp.int32)
            if seq_lengths is None:
                summary = jnp.mean(out, axis=time_axis)
            else:
                valid = (steps[:, None] < seq_lengths[None, :].astype(jnp.int32)).astype(out.dtype)
                valid = valid.T if self.core.batch_first else valid
                total = jnp.sum(out * valid[..., None], axis=time_axis)
                count = jnp.maximum(jnp.sum(valid, axis=time_axis), 1)[:, None]
                summary = total / count
        else:
            h_n = jax.tree.leaves(state)[0]  # [layers * directions, B, H]; the LSTM's (h, c)
            top = [h_n[h_n.shape[0] - self.directions + d] for d in range(self.directions)]
            summary = jnp.concatenate(top, axis=-1)
        return self.head(summary)


class TokenModel(nnx.Module):
    """Embedding, recurrent core and a linear read-out at every step: a language model.

    Called as ``model(tokens [T, B], carry) -> (logits [T, B, vocab], carry)``: the carry is
    the core's state, for truncated BPTT across batches. Used for character/word language
    modelling, the copy task and, with ``bidirectional=True`` (the read-out then takes
    both directions' outputs, ``[T, B, 2H]``), tagging tasks whose answer at a step depends
    on later inputs.

    ``dropout`` is the core's between-layer dropout (``torch.nn.LSTM``'s); ``io_dropout``
    adds dropout on the embedding's output and on the top layer's output before the
    read-out. Both at the same rate is Zaremba et al. (2014)'s dropout on every
    non-recurrent connection.

    Example:
      >>> m = TokenModel("lstm", vocab_size=10, embed_size=4, hidden_size=8, rngs=nnx.Rngs(0))
      >>> carry = m.zero_carry(3)
      >>> logits, carry = m(jnp.zeros((5, 3), jnp.int32), carry)
      >>> logits.shape, carry[0].shape
      ((5, 3, 10), (1, 3, 8))
    """

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        dropout: float = 0.0,
        io_dropout: float = 0.0,
        rngs: nnx.Rngs,
        **core_kwargs: Any,
    ):
        if not 0.0 <= io_dropout < 1.0:
            raise ValueError(f"io_dropout must be in [0, 1), got {io_dropout}")
        self.embed_size = embed_size
        self.io_dropout = nnx.Dropout(io_dropout, rngs=rngs) if io_dropout > 0 else None
        self.embed = nnx.Embed(vocab_size, embed_size, param_dtype=jnp.float32, rngs=rngs)
        self.core = make_recurrent(
            cell, embed_size, hidden_size, num_layers, dropout=dropout, rngs=rngs, **core_kwargs
        )
        directions = 2 if core_kwargs.get("bidirectional") else 1
        features = directions * (core_kwargs.get("proj_size") or hidden_size)
        self.head = nnx.Linear(features, vocab_size, param_dtype=jnp.float32, rngs=rngs)

    def zero_carry(self, batch_size: int) -> Any:
        """The zero state for ``batch_size`` rows."""
        return zero_carry(self.core, batch_size, self.embed_size)

    def features(self, tokens: jax.Array, carry: Any = None) -> tuple[jax.Array, Any]:
        """``tokens`` int ``[time, batch]`` to ``(features [time, batch, F], carry)``, what
        the read-out ``self.head`` maps to logits (:func:`lstm_jax.train.token_loss` fuses
        the two with the loss)."""
        x = self.embed(tokens)
        if self.io_dropout is not None:
            x = self.io_dropout(x)
        out, carry = self.core(x, carry)
        if self.io_dropout is not None:
            out = self.io_dropout(out)
        return out, carry

    def __call__(self, tokens: jax.Array, carry: Any = None) -> tuple[jax.Array, Any]:
        """``tokens`` int ``[time, batch]`` to ``(logits [time, batch, vocab], carry)``."""
        out, carry = self.features(tokens, carry)
        return self.head(out), carry
