"""Whole-model pure functions: validate, lay out, run the stack, return torch's shapes.

:func:`apply_recurrent` is shared by every cell kind; :func:`lstm` is the LSTM's public
apply function (``lstm_jax.functional.lstm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax._src import custom_calls, validation
from lstm_jax._src.cells import (
    GRU_CELL,
    LSTM_CELL,
    CellDef,
    accumulation_dtype,
    get_cell,
    rnn_cell_def,
)
from lstm_jax._src.init import init_stack
from lstm_jax._src.options import RecurrentOptions
from lstm_jax._src.stack import run_stack, weight_drop
from lstm_jax._src.types import GRUParams, LSTMParams, LSTMState, RNNParams, StackParams


def init_params(
    cell: str | CellDef,
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    **layer_options: Any,
) -> tuple[tuple[Any, ...], ...]:
    """Initializes a stack of any registered cell: ``params[layer][direction]``.

    Args:
      cell: a cell name (``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ...) or a :class:`CellDef`
        with an ``init_layer``.
      key: PRNG key.
      input_size: features of the first layer's input ``I``.
      hidden_size: ``H``.
      num_layers: ``L``.
      bidirectional: two directions per layer.
      **layer_options: the cell's ``init_layer`` options (``bias``, ``dtype``, the LSTM's
        ``proj_size`` and variants, ``recurrent_init``, ...).

    Returns:
      ``params[layer][direction]``; layer ``k > 0`` takes ``D * H_out`` features.

    Example:
      >>> p = init_params("gru", jax.random.key(0), 3, 4, num_layers=2, bidirectional=True)
      >>> len(p), len(p[1]), p[1][0].weight_ih.shape
      (2, 2, (12, 8))
    """
    cell = get_cell(cell)
    if cell.init_layer is None:
        raise ValueError(f"cell {cell.name!r} has no init_layer: build its parameters yourself")

    def layer(layer_key, layer_input_size):
        return cell.init_layer(layer_key, layer_input_size, hidden_size, **layer_options)

    output_size = cell.state_sizes(jax.eval_shape(lambda k: layer(k, input_size), key)).h
    return init_stack(layer, key, input_size, output_size, num_layers, bidirectional)


_FUNCTION_OF_PARAMS = {
    LSTMParams: "lstm_jax.functional.lstm",
    GRUParams: "lstm_jax.functional.gru",
    RNNParams: "lstm_jax.functional.rnn",
}


def _describe(value: Any) -> str:
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def _check_param_type(cell: CellDef, p: Any, name: str) -> None:
    """Raises unless ``p`` is ``cell.param_type`` (any type for a cell that declares none)."""
    expected = cell.param_type
    if expected is None or isinstance(p, expected):
        return
    hint = ""
    if type(p) in _FUNCTION_OF_PARAMS:
        hint = f", which {_FUNCTION_OF_PARAMS[type(p)]} takes"
    raise TypeError(
        f"{name} must be {expected.__name__} for {cell.describe()}, got {_describe(p)}{hint}"
    )


def _check_stack_params(cell: CellDef, params: Any) -> tuple[int, int]:
    """Checks ``params[layer][direction]`` of the cell's parameter type; returns
    ``(layers, directions)``."""
    expected = cell.param_type.__name__ if cell.param_type is not None else "parameters"
    nested = isinstance(params, (tuple, list)) and not hasattr(params, "_fields")
    if not nested or not params:
        raise TypeError(
            f"params must be params[layer][direction], a non-empty sequence of sequences of "
            f"{expected} (as init_params returns), got {_describe(params)}"
        )
    for layer, layer_params in enumerate(params):
        if not isinstance(layer_params, (tuple, list)) or hasattr(layer_params, "_fields"):
            raise TypeError(
                f"params[{layer}] must be a sequence of one {expected} per direction, got "
                f"{_describe(layer_params)} (params are params[layer][direction])"
            )
    directions = [len(layer_params) for layer_params in params]
    if directions[0] not in (1, 2) or any(d != directions[0] for d in directions):
        raise ValueError(
            f"params must have 1 or 2 directions in every layer, got {directions} per layer"
        )
    for layer, layer_params in enumerate(params):
        for direction, p in enumerate(layer_params):
            _check_param_type(cell, p, f"params[{layer}][{direction}]")
    return len(params), directions[0]


def _check_hx_fields(cell: CellDef, hx: Any, fields: tuple[str, ...], suffix: str) -> None:
    """Raises unless ``hx`` is a tuple (or list) of one array per state field."""
    if isinstance(hx, (tuple, list)) and len(hx) == len(fields):
        return
    expected = "(" + ", ".join(f"{f}{suffix}" for f in fields) + ("," if len(fields) == 1 else "")
    error = ValueError if isinstance(hx, (tuple, list)) else TypeError
    raise error(f"hx must be {expected}) for {cell.describe()}, got {_describe(hx)}")


def single_state(cell: str | CellDef, hx: Any, name: str) -> tuple[Any] | None:
    """``(hx,)`` for a cell whose state is one array (GRU, RNN), which torch passes bare.

    Args:
      cell: the cell, named in messages.
      hx: ``None`` or the state array.
      name: the state's name in messages, e.g. ``"h_0"``.

    Raises:
      TypeError: ``hx`` is a tuple or list.

    Example:
      >>> single_state("gru", None, "h_0") is None
      True
      >>> single_state("gru", (jnp.zeros(3), jnp.zeros(3)), "h_0")
      Traceback (most recent call last):
      ...
      TypeError: hx must be one array (h_0) for a GRU, got a tuple of 2
    """
    if hx is None:
        return None
    if isinstance(hx, (tuple, list)):
        kind = get_cell(cell).describe()
        raise TypeError(f"hx must be one array ({name}) for {kind}, got {_describe(hx)}")
    return (hx,)


def _structured_like(hx: Any, state: Any) -> Any:
    """``state`` in the container type ``hx`` was given in (tuple, list or named tuple), so
    a loop over calls keeps its carry's structure; ``LSTMState``-like when ``hx`` is None."""
    if hx is None or type(hx) is type(state):
        return state
    return type(hx)(state)


def apply_recurrent(
    cell: str | CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    hx: Sequence[jax.Array] | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    key: jax.Array | None = None,
    deterministic: bool = False,
    options: RecurrentOptions | None = None,
    **option_values: Any,
) -> tuple[jax.Array, Any]:
    """Runs a recurrent stack of any cell kind with torch's input and output conventions.

    Args:
      cell: a registered cell name or a :class:`CellDef`.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]``, ``[batch, time, input_size]`` with ``batch_first``,
        or unbatched ``[time, input_size]``.
      hx: ``None`` (zeros) or one array per state field (for the LSTM ``(h_0, c_0)``), each
        ``[layers * directions, batch, size]`` (``[layers * directions, size]`` unbatched).
      seq_lengths: optional int ``[batch]`` in ``1..time``, torch's packed semantics.
      key: PRNG key for the regularisers; required when one is on and not ``deterministic``.
      deterministic: disable dropout (zoneout uses its expectation).
      options: a :class:`RecurrentOptions`; or pass its fields by name (``unroll=4``).

    Returns:
      ``(output, final_state)``: ``output`` ``[time, batch, directions * H_out]`` in the
      computation dtype (batch-first or unbatched like ``x``), and the final state with
      fields ``[layers * directions, batch, size]`` in the state dtype, in the container
      type of ``hx`` (the cell's state named tuple when ``hx`` is ``None``).

    Example:
      >>> p = init_params("rnn_relu", jax.random.key(0), 3, 4, num_layers=2)
      >>> out, (h_n,) = apply_recurrent("rnn_relu", p, jnp.ones((5, 2, 3)), unroll=2)
      >>> out.shape, h_n.shape, bool(jnp.all(out >= 0))
      ((5, 2, 4), (2, 2, 4), True)
    """
    cell = get_cell(cell)
    if options is None:
        options = RecurrentOptions.build("apply_recurrent", option_values)
    elif option_values:
        options = options.replace(**option_values)
    deterministic = validation.check_bool("deterministic", deterministic)
    x, batched, seq_lengths = time_major_input(cell, params, x, seq_lengths, options)
    random = options.random_rates
    if random and not deterministic and key is None:
        raise ValueError(f"{', '.join(random)} > 0 needs a PRNG `key` (or deterministic=True)")
    params, x, states = cast_and_initial_states(cell, params, x, hx, batched, options)

    key = None if deterministic else key
    if options.weight_dropout > 0.0 and key is not None:
        key, weight_key = jax.random.split(key)
        params = weight_drop(weight_key, params, options.weight_dropout)
    output, final = run_stack(
        cell, params, x, states, seq_lengths=seq_lengths, key=key, options=options
    )
    output = user_layout(output.astype(x.dtype), batched, options.batch_first)
    if not batched:
        final = jax.tree.map(lambda s: s[:, 0], final)
    return output, _structured_like(hx, final)


def time_major_input(
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    seq_lengths: jax.Array | None,
    options: RecurrentOptions,
) -> tuple[jax.Array, bool, jax.Array | None]:
    """Checks a stack's parameters, input and lengths; lays the input out time-major.

    Args:
      cell: the cell kind.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]``, ``[batch, time, input_size]`` with
        ``options.batch_first``, or unbatched ``[time, input_size]``.
      seq_lengths: optional int ``[batch]``.
      options: the stack's options (``batch_first``, ``zoneout`` are read).

    Returns:
      ``(x, batched, seq_lengths)``: ``x`` ``[time, batch, input_size]`` (batch 1 when
      unbatched), whether it came batched, and the checked lengths.

    Raises:
      TypeError, ValueError: naming the argument, for parameters, input, lengths or
        zoneout rates that do not fit.

    Example:
      >>> p = init_params("gru", jax.random.key(0), 3, 4)
      >>> x, batched, _ = time_major_input(GRU_CELL, p, jnp.ones((5, 3)), None,
      ...                                  RecurrentOptions())
      >>> x.shape, batched
      ((5, 1, 3), False)
    """
    _check_stack_params(cell, params)
    first = params[0][0]
    x, batched = validation.check_input(x, first.weight_ih.shape[1])
    if batched and options.batch_first:
        x = jnp.swapaxes(x, 0, 1)
    if not batched:
        x = x[:, None]
    time, batch = x.shape[:2]
    if seq_lengths is not None:
        if not batched:
            raise ValueError("seq_lengths needs a batched input of rank 3")
        seq_lengths = validation.check_seq_lengths(seq_lengths, batch, time)
    options.zoneout_rates(cell.state_sizes(first)._fields)  # one rate per field, if a tuple
    return x, batched, seq_lengths


def cast_and_initial_states(
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    hx: Sequence[jax.Array] | None,
    batched: bool,
    options: RecurrentOptions,
) -> tuple[Any, jax.Array, Any]:
    """Parameters and input in the computation dtype, and the checked initial states.

    Args:
      cell: the cell kind.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]`` from :func:`time_major_input`.
      hx: ``None`` (zeros) or one array per state field, ``[layers * directions, batch,
        size]`` (``[layers * directions, size]`` when not ``batched``).
      batched: whether the user's input had a batch axis.
      options: the stack's options (``dtype`` is read).

    Returns:
      ``(params, x, states)``: ``states`` the cell's state named tuple with fields
      ``[layers * directions, batch, size]`` in the state dtype.

    Example:
      >>> p = init_params("lstm", jax.random.key(0), 3, 4, num_layers=2)
      >>> _, x, (h0, c0) = cast_and_initial_states(LSTM_CELL, p, jnp.ones((5, 2, 3)), None,
      ...                                          True, RecurrentOptions(dtype="bfloat16"))
      >>> x.dtype, h0.shape, h0.dtype
      (dtype(bfloat16), (2, 2, 4), dtype('float32'))
    """
    first = params[0][0]
    sizes = cell.state_sizes(first)
    rows = len(params) * len(params[0])
    batch = x.shape[1]
    compute_dtype = jnp.dtype(options.dtype or x.dtype)
    params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
    # Shared by every row: replicated on the batch's mesh where it has explicit axes.
    params = custom_calls.replicate_like(params, x)
    state_dtype = accumulation_dtype(compute_dtype)
    if hx is None:
        states = type(sizes)(*(jnp.zeros((rows, batch, n), state_dtype) for n in sizes))
    else:
        _check_hx_fields(cell, hx, sizes._fields, "_0")
        states = type(sizes)(
            *(
                _check_initial_state(f"hx[{i}] ({name}_0)", h, rows, batch, size, batched).astype(
                    state_dtype
                )
                for i, (name, h, size) in enumerate(zip(sizes._fields, hx, sizes, strict=True))
            )
        )
    return params, x.astype(compute_dtype), states


def user_layout(y: jax.Array, batched: bool, batch_first: bool) -> jax.Array:
    """``[time, batch, ...]`` back in the layout the input came in: ``[batch, time, ...]``
    with ``batch_first``, ``[time, ...]`` unbatched (batch 1 dropped).

    Example:
      >>> user_layout(jnp.zeros((5, 2, 4)), True, True).shape
      (2, 5, 4)
    """
    if not batched:
        return y[:, 0]
    return jnp.swapaxes(y, 0, 1) if batch_first else y


def _check_initial_state(name, value, layers_directions, batch, size, batched) -> jax.Array:
    if batched:
        value = validation.check_state(
            name, value, (layers_directions, batch, size), "[layers * directions, batch, size]"
        )
        return value
    value = validation.check_state(
        name, value, (layers_directions, size), "[layers * directions, size] (unbatched)"
    )
    return value[:, None]


def step_cell(cell: str | CellDef, params: Any, x: jax.Array, hx=None, *, dtype=None) -> Any:
    """One step of any cell with ``torch.nn.*Cell``'s conventions: checks, zeros, dtypes.

    Args:
      cell: a registered cell name or a :class:`CellDef`.
      params: that cell's parameters (one layer, one direction).
      x: ``[batch, input_size]`` or unbatched ``[input_size]``.
      hx: ``None`` (zeros) or one array per state field, ``[batch, size]`` (``[size]``).
      dtype: computation dtype (``None``: ``x``'s); the state stays in at least float32.

    Returns:
      The next state, in ``hx``'s container type (the cell's state named tuple when
      ``hx`` is ``None``).

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> h, c = step_cell("lstm", p, jnp.ones((2, 3)), (jnp.zeros((2, 5)), jnp.zeros((2, 5))))
      >>> h.shape, c.shape
      ((2, 5), (2, 5))
    """
    cell = get_cell(cell)
    _check_param_type(cell, params, "params")
    x, batched = validation.check_cell_input(x, params.weight_ih.shape[1])
    if not batched:
        x = x[None]
    batch = x.shape[0]
    dtype = jnp.dtype(dtype or x.dtype)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    sizes = cell.state_sizes(params)
    state_dtype = accumulation_dtype(dtype)
    if hx is None:
        state = type(sizes)(*(jnp.zeros((batch, n), state_dtype) for n in sizes))
    else:
        _check_hx_fields(cell, hx, sizes._fields, "")
        state = type(sizes)(
            *(
                validation.check_state(
                    "hx" if len(sizes) == 1 else f"hx[{i}] ({name})",
                    v,
                    (batch, n) if batched else (n,),
                    "[batch, size]",
                )
                .reshape(batch, n)
                .astype(state_dtype)
                for i, (name, v, n) in enumerate(zip(sizes._fields, hx, sizes, strict=True))
            )
        )
    state = cell.step(params, cell.input_projection(params, x.astype(dtype)), state)
    if not batched:
        state = jax.tree.map(lambda s: s[0], state)
    return _structured_like(hx, state)


def lstm(
    params: StackParams,
    x: jax.Array,
    hx: tuple[jax.Array, jax.Array] | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    key: jax.Array | None = None,
    deterministic: bool = False,
    **options: Any,
) -> tuple[jax.Array, LSTMState]:
    """Applies a multi-layer (bidirectional) LSTM, the pure-function ``torch.nn.LSTM``.

    Args:
      params: from :func:`~lstm_jax.functional.init_lstm_params`, ``params[layer][direction]``.
      x: ``[time, batch, input_size]``; ``[batch, time, input_size]`` with ``batch_first``;
        or unbatched ``[time, input_size]``.
      hx: optional ``(h_0, c_0)``: ``h_0`` ``[layers * directions, batch, H_out]``, ``c_0``
        ``[layers * directions, batch, hidden_size]`` (no batch axis when ``x`` has none).
      seq_lengths: optional int ``[batch]`` in ``1..time``: outputs past a row's length are
        zero, its final state is the one at its last valid step, and the reverse direction
        runs over its valid prefix reversed (``pack_padded_sequence`` semantics). May be
        traced under ``jit``; the range is checked when concrete.
      key: PRNG key for dropout and the regularisers.
      deterministic: turn dropout off (evaluation).
      **options: the options below (the fields of
        :class:`~lstm_jax._src.options.RecurrentOptions`), by name.

    Options:
      batch_first: ``x`` and ``output`` are batch-major.
      dropout: dropout rate on each layer's output except the last (torch's ``dropout``).
      dtype: computation dtype (``None``: ``x``'s). With bfloat16 the products run in
        bfloat16 and the gate math, ``h_n`` and ``c_n`` stay float32.
      unroll: ``lax.scan`` unroll factor.
      input_dropout: variational dropout of each layer's input, one mask per sequence
        shared by all steps (Gal & Ghahramani 2016).
      recurrent_dropout: variational dropout of ``h_{t-1}`` in ``W_hh h_{t-1}``, one mask
        per sequence (Gal & Ghahramani 2016).
      weight_dropout: DropConnect on ``weight_hh``, one mask per call (Merity et al. 2017).
      zoneout: zoneout rate for ``h`` and ``c`` (Krueger et al. 2017), or a pair
        ``(rate_h, rate_c)``; the expectation is used when ``deterministic``.
        Every regulariser is off by default, needs ``key`` in training, and is
        deterministic under ``deterministic=True``.
      backend: which kernel runs the stack. ``"scan"``: ``lax.scan`` of the cell.
        ``"fused"``: a custom-VJP layer whose input projection, input gradient and weight
        gradients are single products outside the time loop: the hand-written LSTM
        kernel (native CPU loops) for the plain LSTM, projection included, with or
        without peepholes and CIFG (``lstm_jax.functional.run_fused_layer``), and for
        layer normalisation and every other cell the layer derived from the cell's
        definition (``lstm_jax.functional.run_fused_cell_layer``). ``"cudnn"``: cuDNN through
        ``jax.experimental.rnn`` on a GPU (LSTM, float32, no projection, no variants, no
        active dropout). ``"pallas"``: forward and backward loops as Pallas kernels with
        ``W_hh`` on chip, for TPU and GPU (plain LSTM without projection, GRU, RNN;
        interpret mode elsewhere, ``lstm_jax.functional.run_pallas_layer``).
        ``"auto"`` (default): cuDNN where supported, else the fused kernel on CPU where
        it was measured faster, else the scan (never the Pallas kernel, until it is
        timed on a device). Zoneout runs on the
        scan; an explicit backend that cannot run the configuration raises
        ``ValueError`` saying why (``lstm_jax.explain_backend`` says what ``"auto"``
        chose).
      checkpoint: activation checkpointing over time: ``None`` (default) keeps every
        step's activations for the backward pass; ``K`` keeps each layer's state every
        ``K`` steps and recomputes the steps in between during the backward pass
        (``jax.checkpoint`` over chunks of ``K`` steps), so activation memory grows like
        ``T / K + K`` instead of ``T`` for about one extra forward pass; ``K ~ sqrt(T)``
        is the usual choice. Same results as ``None``; not with ``backend="cudnn"``.

    Returns:
      ``(output, (h_n, c_n))``: ``output`` ``[time, batch, directions * H_out]``, ``h_n``
      ``[layers * directions, batch, H_out]``, ``c_n`` ``[layers * directions, batch,
      hidden_size]``: an :class:`LSTMState`, or the container type ``hx`` came in.

    Raises:
      TypeError, ValueError: for input of the wrong dtype or shape, or an unknown or
        invalid option, naming the argument.

    Example:
      >>> from lstm_jax.functional import init_lstm_params, lstm
      >>> params = init_lstm_params(jax.random.key(0), 100, 20, num_layers=4)
      >>> out, (h, c) = lstm(params, jnp.ones((10, 3, 100)))
      >>> out.shape, h.shape, c.shape, bool(jnp.all(out[-1] == h[-1]))
      ((10, 3, 20), (4, 3, 20), (4, 3, 20), True)
    """
    return apply_recurrent(
        LSTM_CELL,
        params,
        x,
        hx,
        seq_lengths=seq_lengths,
        key=key,
        deterministic=deterministic,
        options=RecurrentOptions.build("lstm", options),
    )


def gru(
    params: Sequence[Sequence[GRUParams]],
    x: jax.Array,
    hx: jax.Array | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    key: jax.Array | None = None,
    deterministic: bool = False,
    **options: Any,
) -> tuple[jax.Array, jax.Array]:
    """Applies a multi-layer (bidirectional) GRU, the pure-function ``torch.nn.GRU``.

    The step is :func:`~lstm_jax.functional.gru_step` (torch's equations, reset gate on
    ``W_hn h + b_hn``). Arguments are those of :func:`~lstm_jax.functional.lstm`.

    Args:
      params: from :func:`~lstm_jax.functional.init_gru_params`, ``params[layer][direction]``.
      x: ``[time, batch, input_size]`` (``[batch, time, input_size]`` with ``batch_first``,
        or unbatched ``[time, input_size]``).
      hx: optional ``h_0`` ``[layers * directions, batch, hidden_size]``.
      seq_lengths, key, deterministic: as in :func:`~lstm_jax.functional.lstm`.
      **options: ``batch_first``, ``dropout``, ``dtype``, ``unroll``, ``checkpoint``,
        ``backend``, ``input_dropout``, ``recurrent_dropout``, ``weight_dropout`` and
        ``zoneout`` (one rate, for ``h``), as in :func:`~lstm_jax.functional.lstm`.

    Returns:
      ``(output, h_n)``: ``output`` ``[time, batch, directions * hidden_size]``, ``h_n``
      ``[layers * directions, batch, hidden_size]``, as ``torch.nn.GRU``.

    Example:
      >>> from lstm_jax.functional import gru, init_gru_params
      >>> params = init_gru_params(jax.random.key(0), 10, 20, num_layers=2)
      >>> out, h = gru(params, jnp.ones((5, 3, 10)))
      >>> out.shape, h.shape, bool(jnp.all(out[-1] == h[-1]))
      ((5, 3, 20), (2, 3, 20), True)
    """
    output, state = apply_recurrent(
        GRU_CELL,
        params,
        x,
        single_state(GRU_CELL, hx, "h_0"),
        seq_lengths=seq_lengths,
        key=key,
        deterministic=deterministic,
        options=RecurrentOptions.build("gru", options),
    )
    return output, state[0]


def rnn(
    params: Sequence[Sequence[RNNParams]],
    x: jax.Array,
    hx: jax.Array | None = None,
    *,
    nonlinearity: str = "tanh",
    seq_lengths: jax.Array | None = None,
    key: jax.Array | None = None,
    deterministic: bool = False,
    **options: Any,
) -> tuple[jax.Array, jax.Array]:
    """Applies a multi-layer (bidirectional) Elman RNN, the pure-function ``torch.nn.RNN``.

    Each step is ``h_t = nonlinearity(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    Args:
      params: from :func:`~lstm_jax.functional.init_rnn_params`, ``params[layer][direction]``.
      x: ``[time, batch, input_size]`` (``[batch, time, input_size]`` with ``batch_first``,
        or unbatched ``[time, input_size]``).
      hx: optional ``h_0`` ``[layers * directions, batch, hidden_size]``.
      nonlinearity: ``"tanh"`` or ``"relu"``.
      seq_lengths, key, deterministic: as in :func:`~lstm_jax.functional.lstm`.
      **options: ``batch_first``, ``dropout``, ``dtype``, ``unroll``, ``checkpoint``,
        ``backend``, ``input_dropout``, ``recurrent_dropout``, ``weight_dropout`` and
        ``zoneout`` (one rate, for ``h``), as in :func:`~lstm_jax.functional.lstm`.

    Returns:
      ``(output, h_n)``: ``output`` ``[time, batch, directions * hidden_size]``, ``h_n``
      ``[layers * directions, batch, hidden_size]``, as ``torch.nn.RNN``.

    Raises:
      ValueError: for a ``nonlinearity`` other than ``"tanh"`` or ``"relu"``.

    Example:
      >>> from lstm_jax.functional import init_rnn_params, rnn
      >>> params = init_rnn_params(jax.random.key(0), 10, 20, bidirectional=True)
      >>> out, h = rnn(params, jnp.ones((5, 3, 10)), nonlinearity="relu")
      >>> out.shape, h.shape, bool(jnp.all(out >= 0))
      ((5, 3, 40), (2, 3, 20), True)
    """
    cell = rnn_cell_def(nonlinearity)
    output, state = apply_recurrent(
        cell,
        params,
        x,
        single_state(cell, hx, "h_0"),
        seq_lengths=seq_lengths,
        key=key,
        deterministic=deterministic,
        options=RecurrentOptions.build("rnn", options),
    )
    return output, state[0]
