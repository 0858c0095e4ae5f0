"""Whole-model pure functions: validate, lay out, run the stack, return torch's shapes.

:func:`apply_recurrent` is shared by every cell kind; :func:`lstm` is the LSTM's public
apply function (``lstm_jax.functional.lstm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax._src import validation
from lstm_jax._src.cells import GRU_CELL, LSTM_CELL, CellDef, accumulation_dtype, rnn_cell_def
from lstm_jax._src.stack import run_stack, weight_drop
from lstm_jax._src.types import GRUParams, LSTMState, RNNParams, StackParams


def apply_recurrent(
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    x: jax.Array,
    hx: Sequence[jax.Array] | None,
    *,
    seq_lengths: jax.Array | None = None,
    batch_first: bool = False,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    deterministic: bool = False,
    dtype=None,
    unroll: int = 1,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    zoneout: float | Sequence[float] = 0.0,
    backend: str = "auto",
    checkpoint: int | None = None,
) -> tuple[jax.Array, Any]:
    """Runs a recurrent stack of any cell kind with torch's input and output conventions.

    Args:
      cell: the cell kind.
      params: ``params[layer][direction]``.
      x: ``[time, batch, input_size]``, ``[batch, time, input_size]`` with ``batch_first``,
        or unbatched ``[time, input_size]``.
      hx: ``None`` (zeros) or one array per state field (for the LSTM ``(h_0, c_0)``), each
        ``[layers * directions, batch, size]`` (``[layers * directions, size]`` unbatched).
      seq_lengths: optional int ``[batch]`` in ``1..time``, torch's packed semantics.
      batch_first: ``x`` and the output are ``[batch, time, ...]``.
      dropout: rate of dropout on every layer's output but the last's.
      key: PRNG key for dropout; required when ``dropout > 0`` and not ``deterministic``.
      deterministic: disable dropout.
      dtype: computation dtype; ``None`` uses ``x``'s dtype. The state is kept in at least
        float32 (see :func:`~lstm_jax._src.cells.accumulation_dtype`).
      unroll: ``lax.scan``'s unroll factor.
      input_dropout: variational dropout on every layer's input, one mask per sequence
        (Gal & Ghahramani 2016).
      recurrent_dropout: variational dropout on ``h_{t-1}`` in the recurrent product, one
        mask per sequence (Gal & Ghahramani 2016).
      weight_dropout: DropConnect on ``weight_hh``, one mask per call (Merity et al. 2017).
      zoneout: zoneout rate (Krueger et al. 2017), one for every state field or one per
        field (for the LSTM ``(h, c)``); with ``deterministic`` the expectation is used.
      backend: ``"auto"``, ``"scan"``, ``"fused"`` or ``"cudnn"``
        (:mod:`lstm_jax._src.backends`).
      checkpoint: ``None`` or a chunk length in steps for activation checkpointing.

    Returns:
      ``(output, final_state)``: ``output`` ``[time, batch, directions * H_out]`` in
      ``dtype`` (batch-first or unbatched like ``x``), and the cell's state named tuple
      with fields ``[layers * directions, batch, size]`` in the state dtype.
    """
    first = params[0][0]
    input_size = first.weight_ih.shape[1]
    num_layers, directions = len(params), len(params[0])
    x, batched = validation.check_input(x, input_size)
    if batched and batch_first:
        x = jnp.swapaxes(x, 0, 1)
    if not batched:
        x = x[:, None]
    time, batch = x.shape[:2]
    if seq_lengths is not None:
        if not batched:
            raise ValueError("seq_lengths needs a batched input of rank 3")
        seq_lengths = validation.check_seq_lengths(seq_lengths, batch, time)
    validation.check_dropout_rate(dropout)
    if checkpoint is not None:
        checkpoint = validation.check_positive_int("checkpoint", checkpoint)
    for name, rate in (
        ("input_dropout", input_dropout),
        ("recurrent_dropout", recurrent_dropout),
        ("weight_dropout", weight_dropout),
    ):
        validation.check_dropout_rate(rate, name=name)
    sizes = cell.state_sizes(first)
    zoneout = validation.check_zoneout(zoneout, sizes._fields)
    rates = {
        "dropout": dropout,
        "input_dropout": input_dropout,
        "recurrent_dropout": recurrent_dropout,
        "weight_dropout": weight_dropout,
        "zoneout": max(zoneout),
    }
    random = [name for name, rate in rates.items() if rate > 0.0]
    if random and not deterministic and key is None:
        raise ValueError(f"{', '.join(random)} > 0 needs a PRNG `key` (or deterministic=True)")

    compute_dtype = jnp.dtype(dtype or x.dtype)
    params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
    state_dtype = accumulation_dtype(compute_dtype)
    if hx is None:
        states = type(sizes)(
            *(jnp.zeros((num_layers * directions, batch, n), state_dtype) for n in sizes)
        )
    else:
        states = type(sizes)(
            *(
                _check_initial_state(
                    f"hx[{i}] ({name}_0)", h, num_layers * directions, batch, size, batched
                ).astype(state_dtype)
                for i, (name, h, size) in enumerate(zip(sizes._fields, hx, sizes, strict=True))
            )
        )

    key = None if deterministic else key
    if weight_dropout > 0.0 and key is not None:
        key, weight_key = jax.random.split(key)
        params = weight_drop(weight_key, params, weight_dropout)
    output, final = run_stack(
        cell,
        params,
        x.astype(compute_dtype),
        states,
        seq_lengths=seq_lengths,
        dropout_rate=dropout,
        key=key,
        unroll=unroll,
        input_dropout=input_dropout,
        recurrent_dropout=recurrent_dropout,
        zoneout=zoneout if any(zoneout) else None,
        backend=backend,
        checkpoint=checkpoint,
    )
    output = output.astype(compute_dtype)
    if not batched:
        return output[:, 0], jax.tree.map(lambda s: s[:, 0], final)
    if batch_first:
        output = jnp.swapaxes(output, 0, 1)
    return output, final


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


def lstm(
    params: StackParams,
    x: jax.Array,
    hx: tuple[jax.Array, jax.Array] | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    batch_first: bool = False,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    deterministic: bool = False,
    dtype=None,
    unroll: int = 1,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    zoneout: float | tuple[float, float] = 0.0,
    backend: str = "auto",
    checkpoint: int | None = None,
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
      batch_first: ``x`` and ``output`` are batch-major.
      dropout: dropout rate on each layer's output except the last (torch's ``dropout``).
      key: PRNG key for dropout.
      deterministic: turn dropout off (evaluation).
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
      backend: which kernel runs the stack. ``"scan"``: ``lax.scan`` of the cell, any
        variant. ``"fused"``: the plain LSTM (projection included) with a hand-written
        backward whose weight gradients are single products outside the time loop
        (``lstm_jax.functional.run_fused_layer``). ``"cudnn"``: cuDNN through
        ``jax.experimental.rnn`` on a GPU (float32, no projection, no variants, no
        active dropout). ``"auto"`` (default): cuDNN where supported, else the fused
        kernel on CPU for the plain LSTM, else the scan. Layers with recurrent dropout or
        zoneout always run on the scan; an explicit backend that cannot run the
        configuration raises ``ValueError``.
      checkpoint: activation checkpointing over time: ``None`` (default) keeps every
        step's activations for the backward pass; ``K`` keeps each layer's state every
        ``K`` steps and recomputes the steps in between during the backward pass
        (``jax.checkpoint`` over chunks of ``K`` steps), so activation memory grows like
        ``T / K + K`` instead of ``T`` for about one extra forward pass; ``K ~ sqrt(T)``
        is the usual choice. Same results as ``None``; not with ``backend="cudnn"``.

    Returns:
      ``(output, (h_n, c_n))``: ``output`` ``[time, batch, directions * H_out]``, ``h_n``
      ``[layers * directions, batch, H_out]``, ``c_n`` ``[layers * directions, batch,
      hidden_size]``; the pair is an :class:`LSTMState`.

    Raises:
      TypeError, ValueError: for input of the wrong dtype or shape, naming the argument.

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
        batch_first=batch_first,
        dropout=dropout,
        key=key,
        deterministic=deterministic,
        dtype=dtype,
        unroll=unroll,
        input_dropout=input_dropout,
        recurrent_dropout=recurrent_dropout,
        weight_dropout=weight_dropout,
        zoneout=zoneout,
        backend=backend,
        checkpoint=checkpoint,
    )


def gru(
    params: Sequence[Sequence[GRUParams]],
    x: jax.Array,
    hx: jax.Array | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    batch_first: bool = False,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    deterministic: bool = False,
    dtype=None,
    unroll: int = 1,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    zoneout: float = 0.0,
    checkpoint: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Applies a multi-layer (bidirectional) GRU, the pure-function ``torch.nn.GRU``.

    The step is :func:`~lstm_jax.functional.gru_step` (torch's equations, reset gate on
    ``W_hn h + b_hn``). Arguments are those of :func:`~lstm_jax.functional.lstm`.

    Args:
      params: from :func:`~lstm_jax.functional.init_gru_params`, ``params[layer][direction]``.
      x: ``[time, batch, input_size]`` (``[batch, time, input_size]`` with ``batch_first``,
        or unbatched ``[time, input_size]``).
      hx: optional ``h_0`` ``[layers * directions, batch, hidden_size]``.
      **options: ``seq_lengths``, ``batch_first``, ``dropout``, ``key``, ``deterministic``,
        ``dtype``, ``unroll``, ``input_dropout``, ``recurrent_dropout``,
        ``weight_dropout``, ``zoneout`` and ``checkpoint``, as in
        :func:`~lstm_jax.functional.lstm`.

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
        None if hx is None else (hx,),
        seq_lengths=seq_lengths,
        batch_first=batch_first,
        dropout=dropout,
        key=key,
        deterministic=deterministic,
        dtype=dtype,
        unroll=unroll,
        input_dropout=input_dropout,
        recurrent_dropout=recurrent_dropout,
        weight_dropout=weight_dropout,
        zoneout=zoneout,
        checkpoint=checkpoint,
    )
    return output, state.h


def rnn(
    params: Sequence[Sequence[RNNParams]],
    x: jax.Array,
    hx: jax.Array | None = None,
    *,
    nonlinearity: str = "tanh",
    seq_lengths: jax.Array | None = None,
    batch_first: bool = False,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    deterministic: bool = False,
    dtype=None,
    unroll: int = 1,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    zoneout: float = 0.0,
    checkpoint: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Applies a multi-layer (bidirectional) Elman RNN, the pure-function ``torch.nn.RNN``.

    Each step is ``h_t = nonlinearity(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    Args:
      params: from :func:`~lstm_jax.functional.init_rnn_params`, ``params[layer][direction]``.
      x: ``[time, batch, input_size]`` (``[batch, time, input_size]`` with ``batch_first``,
        or unbatched ``[time, input_size]``).
      hx: optional ``h_0`` ``[layers * directions, batch, hidden_size]``.
      nonlinearity: ``"tanh"`` or ``"relu"``.
      **options: ``seq_lengths``, ``batch_first``, ``dropout``, ``key``, ``deterministic``,
        ``dtype``, ``unroll``, ``input_dropout``, ``recurrent_dropout``,
        ``weight_dropout``, ``zoneout`` and ``checkpoint``, as in
        :func:`~lstm_jax.functional.lstm`.

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
    output, state = apply_recurrent(
        rnn_cell_def(nonlinearity),
        params,
        x,
        None if hx is None else (hx,),
        seq_lengths=seq_lengths,
        batch_first=batch_first,
        dropout=dropout,
        key=key,
        deterministic=deterministic,
        dtype=dtype,
        unroll=unroll,
        input_dropout=input_dropout,
        recurrent_dropout=recurrent_dropout,
        weight_dropout=weight_dropout,
        zoneout=zoneout,
        checkpoint=checkpoint,
    )
    return output, state.h
