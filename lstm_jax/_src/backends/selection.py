"""Which kernel runs a stack: the registered kernels, ``"auto"``'s order, and the record
``explain_backend`` reads.

Each kernel answers for itself (:meth:`~lstm_jax._src.backends.kernel.Kernel.supports`);
this module only walks them in order of preference and keeps their answers.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from lstm_jax._src import custom_calls
from lstm_jax._src.backends.cudnn import CUDNN
from lstm_jax._src.backends.fused_kernel import FUSED, NATIVE_CPU
from lstm_jax._src.backends.kernel import Kernel, LayerPlan
from lstm_jax._src.backends.pallas import PALLAS
from lstm_jax._src.backends.parallel_kernel import PARALLEL
from lstm_jax._src.backends.scan_kernel import SCAN
from lstm_jax._src.cells import CellDef

# The kernels, in "auto"'s order of preference: the first that supports a configuration
# and may be picked on the platform runs it. The scan runs everything and comes last.
KERNELS: tuple[Kernel, ...] = (CUDNN, PARALLEL, FUSED, PALLAS, SCAN)


def backend_names() -> tuple[str, ...]:
    """The values ``backend=`` takes: ``"auto"`` and each kernel's name.

    Example:
      >>> backend_names()[:2]
      ('auto', 'cudnn')
    """
    return ("auto", *(k.name for k in KERNELS))


class BackendChoice(NamedTuple):
    """Which kernel runs one recurrent stack, and why the others do not.

    Attributes:
      backend: the kernel that runs (``"scan"``, ``"fused"``, ``"cudnn"``, ...).
      native_cpu: whether the fused layer's loops run as native CPU code where the
        program is lowered for CPU (always ``False`` for the other kernels).
      reasons: for each kernel that does not run (and ``"native_cpu"`` when the native
        loops do not), why, in that kernel's own words.

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
      >>> import jax.numpy as jnp
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


def _auto_note(kernel: Kernel, platform: str) -> str | None:
    """Why ``"auto"`` does not pick ``kernel`` on ``platform``, or ``None`` when it may."""
    if "*" in kernel.auto_platforms or platform in kernel.auto_platforms:
        return None
    where = " and ".join(repr(p) for p in kernel.auto_platforms)
    return (
        f"'auto' picks {kernel.name} on {where} only: {kernel.auto_note}"
        if where
        else f"'auto' never picks {kernel.name}: {kernel.auto_note}"
    )


def resolve_backend(
    backend: str, cell: CellDef, params: Sequence[Sequence[Any]], plan: LayerPlan
) -> Kernel:
    """The kernel that runs ``params[layer][direction]`` of ``cell`` under ``plan``.

    ``"auto"`` walks :data:`KERNELS` in order and takes the first that supports the
    configuration and may be picked on ``jax.default_backend()`` (cuDNN on a GPU, the
    fused layer on CPU, where each was measured faster than the scan; see
    ``experiments/benchmarks/RESULTS.md``), else the scan. A kernel named explicitly
    runs wherever it supports the configuration.

    Raises:
      ValueError: ``backend`` is unknown, or names a kernel that cannot run this
        configuration (the message is that kernel's reason).

    Example:
      >>> import jax.numpy as jnp
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4)
      >>> plan = LayerPlan(jnp.dtype(jnp.float32))
      >>> resolve_backend("scan", LSTM_CELL, p, plan).name
      'scan'
      >>> resolve_backend("auto", LSTM_CELL, p, plan).name in ("fused", "cudnn")
      True
    """
    names = backend_names()
    if backend not in names:
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    reasons = {k.name: k.supports(cell, params, plan) for k in KERNELS}
    if backend == "auto":
        platform = jax.default_backend()
        chosen = None
        for kernel in KERNELS:
            if reasons[kernel.name] is None:
                reasons[kernel.name] = _auto_note(kernel, platform)
            if reasons[kernel.name] is None:
                if chosen is None:
                    chosen = kernel
                else:
                    reasons[kernel.name] = f"'auto' prefers {chosen.name} here"
    else:
        chosen = next(k for k in KERNELS if k.name == backend)
        if reasons[backend] is not None:
            raise ValueError(
                f"backend={backend!r} cannot run this configuration: {reasons[backend]}"
            )
        reasons = {k: r or f"backend={backend!r} was asked for" for k, r in reasons.items()}
    records = _RECORDS.get(_EXPLAINING.value)
    if records is not None:
        if chosen is FUSED:
            reasons["native_cpu"] = NATIVE_CPU.supports(cell, params, plan)
        else:
            reasons["native_cpu"] = "the native loops run inside the fused kernel only"
        reasons = {k: r for k, r in reasons.items() if k != chosen.name and r is not None}
        records.append(BackendChoice(chosen.name, "native_cpu" not in reasons, reasons))
    return chosen
