"""Which kernel runs a stack: resolving ``backend`` and running the chosen one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from lstm_jax._src import fused
from lstm_jax._src.backends import cudnn
from lstm_jax._src.cells import LSTM_CELL, CellDef
from lstm_jax._src.scan import run_layer

BACKENDS = ("auto", "scan", "fused", "cudnn")


def _fused_unsupported_reason(cell: CellDef, params: Sequence[Sequence[Any]]) -> str | None:
    if cell is not LSTM_CELL:
        return "the fused kernel runs the LSTM cell only"
    for layer in params:
        for p in layer:
            reason = fused.unsupported_reason(p)
            if reason is not None:
                return reason
    return None


def resolve_backend(
    backend: str,
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    dtype,
    *,
    dropout: bool,
    per_step_regularizers: bool = False,
    checkpoint: bool = False,
) -> str:
    """Turns ``backend`` into the kernel that will run: ``"scan"``, ``"fused"`` or ``"cudnn"``.

    ``"auto"`` takes cuDNN on a GPU when it supports the configuration, the fused layer
    for the plain LSTM elsewhere (faster than the scan on CPU for training in our
    benchmarks, ``experiments/benchmarks/RESULTS.md``), and the scan for other cells and
    for ``per_step_regularizers`` (recurrent dropout, zoneout), which act inside the loop.
    ``checkpoint`` (activation checkpointing over time) rules cuDNN out: it keeps its
    own activations.

    Raises:
      ValueError: ``backend`` is unknown, or names a kernel that cannot run this
        configuration (the message says why).

    Example:
      >>> import jax.numpy as jnp
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4)
      >>> resolve_backend("scan", LSTM_CELL, p, jnp.float32, dropout=False)
      'scan'
      >>> resolve_backend("auto", LSTM_CELL, p, jnp.float32, dropout=False) in ("fused", "cudnn")
      True
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    cudnn_reason = cudnn.unsupported_reason(cell, params, dtype, dropout=dropout)
    if checkpoint:
        cudnn_reason = "cuDNN has no activation checkpointing: use the scan or fused kernel"
    fused_reason = _fused_unsupported_reason(cell, params)
    if fused_reason is None and per_step_regularizers:
        fused_reason = "recurrent dropout and zoneout act inside the loop: use the scan"
    if backend == "auto":
        if cudnn_reason is None:
            return "cudnn"
        if jax.default_backend() == "cpu" and fused_reason is None:
            return "fused"
        return "scan"
    reason = {"cudnn": cudnn_reason, "fused": fused_reason}.get(backend)
    if reason is not None:
        raise ValueError(f"backend={backend!r} cannot run this configuration: {reason}")
    return backend


def _fused_layer(
    cell,
    params,
    x,
    state,
    *,
    seq_lengths=None,
    reverse=False,
    unroll=1,
    recurrent_mask=None,
    zoneout=None,
    checkpoint=None,
):
    """``run_layer``'s signature on the fused kernel (plain LSTM, no per-step regularisers)."""
    del cell  # resolve_backend has checked that it is the LSTM cell
    if recurrent_mask is not None or zoneout is not None:
        raise ValueError("the fused kernel has no recurrent dropout or zoneout: use the scan")
    return fused.run_fused_layer(
        params,
        x,
        state,
        seq_lengths=seq_lengths,
        reverse=reverse,
        unroll=unroll,
        checkpoint=checkpoint,
    )


def layer_function(backend: str) -> Callable[..., Any] | None:
    """The per-layer function for ``backend`` (``run_layer``'s signature), ``None`` for cuDNN.

    Each direction of a bidirectional layer runs its own fused loop: on CPU two loops
    were faster than one loop advancing both directions (XLA runs the two loops side by
    side), see ``experiments/benchmarks/RESULTS.md``.
    """
    return {"scan": run_layer, "fused": _fused_layer, "cudnn": None}[backend]
