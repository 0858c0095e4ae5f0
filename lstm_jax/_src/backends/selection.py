"""Which kernel runs a stack: resolving ``backend`` and running the chosen one."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lstm_jax._src import custom_calls, fused, fused_cells
from lstm_jax._src.backends import cudnn
from lstm_jax._src.cells import LSTM_CELL, CellDef
from lstm_jax._src.options import BACKENDS
from lstm_jax._src.scan import run_layer


class BackendChoice(NamedTuple):
    """Which kernel runs one recurrent stack, and why the others do not.

    Attributes:
      backend: ``"scan"``, ``"fused"`` or ``"cudnn"``.
      native_cpu: whether the fused layer's loops run as native CPU code where the
        program is lowered for CPU (always ``False`` for the other kernels).
      reasons: for each kernel that does not run (``"fused"``, ``"cudnn"``,
        ``"native_cpu"``), why; ``"scan"`` is never ruled out.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import lstm_jax
      >>> model = lstm_jax.GRU(3, 4, backend="scan", rngs=nnx.Rngs(0))
      >>> [choice] = lstm_jax.explain_backend(model, jnp.ones((5, 2, 3), jnp.float32))
      >>> choice.backend, choice.native_cpu, choice.reasons["fused"]
      ('scan', False, "backend='scan' was asked for")
    """

    backend: str
    native_cpu: bool
    reasons: dict[str, str]


# While explain_backend traces: a fresh value per call (part of jit's cache key, so
# cached traces are traced again) and the choices recorded under it.
_EXPLAINING = custom_calls.trace_context(None)
_RECORDS: dict[int, list[BackendChoice]] = {}
_EXPLAIN_IDS = itertools.count()


@contextlib.contextmanager
def recording_choices():
    """A context that collects the :class:`BackendChoice` of every recurrent stack traced
    inside it, in call order; see ``lstm_jax.explain_backend``.

    It is part of jit's cache key, so functions already traced are traced again.

    Example:
      >>> from lstm_jax._src.apply import lstm
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4)
      >>> with recording_choices() as choices:
      ...     _ = jax.eval_shape(lambda x: lstm(p, x, backend="scan"), jnp.ones((5, 2, 3)))
      >>> choices[0].backend, choices[0].reasons["fused"]
      ('scan', "backend='scan' was asked for")
    """
    explain_id = next(_EXPLAIN_IDS)
    _RECORDS[explain_id] = choices = []
    try:
        with _EXPLAINING(explain_id):
            yield choices
    finally:
        del _RECORDS[explain_id]


def _lstm_kernel_runs(cell: CellDef, params: Any) -> bool:
    """Whether the hand-written LSTM kernel (native CPU loops) runs this layer."""
    return cell is LSTM_CELL and fused.unsupported_reason(params) is None


def _fused_unsupported_reason(
    cell: CellDef, params: Sequence[Sequence[Any]], *, recurrent_dropout: bool, checkpoint: bool
) -> str | None:
    for layer in params:
        for p in layer:
            if _lstm_kernel_runs(cell, p) and not recurrent_dropout:
                continue  # the LSTM kernel, checkpointing included
            reason = fused_cells.unsupported_reason(cell, p)
            if reason is not None:
                return reason
            if checkpoint:
                return (
                    "the fused kernel checkpoints the plain LSTM without recurrent dropout "
                    "only: use the scan"
                )
    return None


def resolve_backend(
    backend: str,
    cell: CellDef,
    params: Sequence[Sequence[Any]],
    dtype,
    *,
    dropout: bool,
    recurrent_dropout: bool = False,
    zoneout: bool = False,
    checkpoint: bool = False,
) -> str:
    """Turns ``backend`` into the kernel that will run: ``"scan"``, ``"fused"`` or ``"cudnn"``.

    ``"auto"`` takes cuDNN on a GPU when it supports the configuration, the fused layer
    on CPU wherever it runs (faster than the scan for training in our benchmarks,
    ``experiments/benchmarks/RESULTS.md``), and the scan elsewhere and for zoneout,
    which acts inside each step.
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
    fused_reason = _fused_unsupported_reason(
        cell, params, recurrent_dropout=recurrent_dropout, checkpoint=checkpoint
    )
    if fused_reason is None and zoneout:
        fused_reason = "zoneout mixes old and new state inside each step: use the scan"
    if backend == "auto":
        if cudnn_reason is None:
            chosen = "cudnn"
        elif jax.default_backend() == "cpu" and fused_reason is None:
            chosen = "fused"
        else:
            chosen = "scan"
            if fused_reason is None:
                fused_reason = (
                    f"'auto' takes the scan on {jax.default_backend()!r}: the fused kernel's "
                    "XLA loops were measured faster on CPU only"
                )
    else:
        reason = {"cudnn": cudnn_reason, "fused": fused_reason}.get(backend)
        if reason is not None:
            raise ValueError(f"backend={backend!r} cannot run this configuration: {reason}")
        chosen = backend
        fused_reason = fused_reason or f"backend={backend!r} was asked for"
        cudnn_reason = cudnn_reason or f"backend={backend!r} was asked for"
    records = _RECORDS.get(_EXPLAINING.value)
    if records is not None:
        records.append(_choice(chosen, cell, params, dtype, fused_reason, cudnn_reason))
    return chosen


def _choice(chosen, cell, params, dtype, fused_reason, cudnn_reason) -> BackendChoice:
    reasons = {"fused": fused_reason, "cudnn": cudnn_reason}
    if chosen == "fused" and not _lstm_kernel_runs(cell, params[0][0]):
        reasons["native_cpu"] = "the native loops run the plain LSTM kernel only"
    elif chosen == "fused":
        first = params[0][0]
        reasons["native_cpu"] = fused.native_unsupported_reason(
            [jnp.dtype(dtype)], first.weight_hr is not None
        )
    else:
        reasons["native_cpu"] = "the native loops run inside the fused kernel only"
    reasons = {k: v for k, v in reasons.items() if k != chosen and v is not None}
    return BackendChoice(chosen, "native_cpu" not in reasons, reasons)


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
    """``run_layer``'s signature on the fused kernels: the hand-written LSTM kernel for
    the plain LSTM, the layer derived from the cell's definition for any other cell."""
    if zoneout is not None:
        raise ValueError("the fused kernel has no zoneout: use the scan")
    if recurrent_mask is None and _lstm_kernel_runs(cell, params):
        return fused.run_fused_layer(
            params,
            x,
            state,
            seq_lengths=seq_lengths,
            reverse=reverse,
            unroll=unroll,
            checkpoint=checkpoint,
        )
    if checkpoint is not None:
        raise ValueError("the fused kernel checkpoints the plain LSTM only: use the scan")
    return fused_cells.run_fused_cell_layer(
        cell,
        params,
        x,
        state,
        seq_lengths=seq_lengths,
        reverse=reverse,
        unroll=unroll,
        recurrent_mask=recurrent_mask,
    )


def layer_function(backend: str) -> Callable[..., Any] | None:
    """The per-layer function for ``backend`` (``run_layer``'s signature), ``None`` for cuDNN.

    Each direction of a bidirectional layer runs its own fused loop: on CPU two loops
    were faster than one loop advancing both directions (XLA runs the two loops side by
    side), see ``experiments/benchmarks/RESULTS.md``.
    """
    return {"scan": run_layer, "fused": _fused_layer, "cudnn": None}[backend]
