r"""The parallel kernel: a layer of a linear-recurrence cell (minLSTM, minGRU) with its
steps composed in parallel, in log space.

A :class:`~lstm_jax._src.min_rnn.LinearCellDef` steps as
:math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`a_t, b_t > 0` from the input alone.
Each step is then an affine map of the state, and maps compose associatively:
applying :math:`(a_1, b_1)` then :math:`(a_2, b_2)` is :math:`(a_1 a_2, a_2 b_1 + b_2)`.
In log space (Feng et al. 2024, appendix B; Heinsen 2023) each step is
:math:`(\log a, \log b)` and the composition is a log-sum-exp,

.. math::

   (\alpha_1, \beta_1) \circ (\alpha_2, \beta_2) =
   (\alpha_1 + \alpha_2,\ \mathrm{logaddexp}(\beta_1 + \alpha_2, \beta_2)),

so the composition of steps :math:`1..t` is :math:`(A_t, B_t)` with
:math:`h_t = e^{A_t} h_0 + e^{B_t}`. The initial state stays out of the logarithms (the
paper's listing prepends a logarithm of :math:`h_0` to the values, which needs
:math:`h_0 > 0`), so any :math:`h_0`, zero or negative included, is exact and its
gradient finite, and a state carried from one window to the next continues the same
recurrence. Composing
pairwise, rather than the paper's ``cumsum`` and ``logcumsumexp`` of
:math:`\log b - \sum \log a`, never subtracts the large cumulative :math:`\sum \log a`
of a long sequence from small numbers, which costs float32 digits at thousands of steps.

The prefixes are computed in two levels (the chunked form of a parallel scan): time is
cut into about :math:`\sqrt{T}` chunks of about :math:`\sqrt{T}` steps; every chunk
composes its own steps at once (a loop of :math:`\sqrt{T}` steps over all chunks
together), ``jax.lax.associative_scan`` composes the chunks' totals, and one elementwise
pass composes each step with what came before its chunk: about two compositions per
step, on a critical path of :math:`O(\sqrt{T})` steps instead of :math:`T`. A single
associative scan over all :math:`T` steps (a path of :math:`O(\log T)`) took 2 to 4 times
longer to compile (5 to 30 s for the gradient of one layer of 64 to 4,096 steps, on a
loaded 2-core CPU) and ran 2 to 2.5 times slower there (measured), for every layer and
direction of a model.

``seq_lengths`` and reverse directions follow :func:`lstm_jax._src.scan.run_layer`: a
padded step is the identity map (:math:`a = 1`, :math:`b = 0`) and outputs zeros, so a
forward row ends at its last valid step, and a reverse row, whose padded steps come
first, starts its valid prefix from the initial state.

Pure JAX: ``jit``, ``grad`` (of any order) and ``vmap`` are JAX's.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from lstm_jax._src.backends.kernel import Kernel, LayerPlan
from lstm_jax._src.cells import CellDef, get_cell, registered_cells
from lstm_jax._src.custom_calls import match_batch_sharding, match_vma
from lstm_jax._src.min_rnn import LinearCellDef


def _compose(earlier, later):
    """The affine map ``later`` after ``earlier``, both ``(log a, log b)``."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def _log_zero(dtype) -> float:
    """``log 0`` as a finite number far below any real ``log b``, so that neither the
    composition nor its gradient meets ``inf - inf``."""
    return float(jnp.finfo(dtype).min) / 4


def _prefixes(log_a: jax.Array, log_b: jax.Array, unroll: int = 1):
    """The composition of steps ``0..t`` for every ``t``: ``(A, B)``, ``[time, ...]`` like
    ``log_a`` and ``log_b``, in two levels (chunks of about ``sqrt(time)`` steps)."""
    time = log_a.shape[0]
    chunk = math.isqrt(time - 1) + 1  # ceil(sqrt(time))
    chunks = -(-time // chunk)
    pad = chunks * chunk - time
    zero = _log_zero(log_b.dtype)

    def to_chunks(y, fill):  # [time, ...] -> [chunk, chunks, ...], padded with identities
        y = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1), constant_values=fill)
        return y.reshape(chunks, chunk, *y.shape[1:]).swapaxes(0, 1)

    def step(prefix, element):
        prefix = _compose(prefix, element)
        return prefix, prefix

    elements = (to_chunks(log_a, 0.0), to_chunks(log_b, zero))
    # the identity map per chunk, typed like the elements (sharding, shard_map variance)
    identity = match_vma(
        (jnp.zeros_like(elements[0][0]), jnp.full_like(elements[1][0], zero)), elements
    )
    _, local = lax.scan(step, identity, elements, unroll=unroll)
    totals = lax.associative_scan(_compose, (local[0][-1], local[1][-1]), axis=0)
    # what comes before each chunk: the identity, then the totals of the chunks before it
    before = jax.tree.map(lambda i, y: jnp.concatenate([i[:1], y[:-1]])[None], identity, totals)
    prefix = _compose(before, local)
    return jax.tree.map(
        lambda y: y.swapaxes(0, 1).reshape(chunks * chunk, *y.shape[2:])[:time], prefix
    )


def _not_linear_reason(cell: CellDef) -> str | None:
    if isinstance(cell, LinearCellDef):
        return None
    linear = [n for n in registered_cells() if isinstance(get_cell(n), LinearCellDef)]
    return (
        f"the parallel kernel runs cells whose step is a linear recurrence "
        f"h_t = a_t * h_(t-1) + b_t with a_t, b_t from the input alone "
        f"({', '.join(linear)}); the gates of {cell.describe()} read h_(t-1): "
        f"use 'scan' or 'fused'"
    )


def run_parallel_layer(
    cell: LinearCellDef,
    params: Any,
    x: jax.Array,
    initial_state: Any,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
) -> tuple[jax.Array, Any]:
    """One layer of a linear-recurrence cell in one direction, parallel over time.

    Gives what :func:`lstm_jax.functional.run_layer` gives for the same cell, to rounding,
    with the steps composed in log space, chunks at once (see the module docstring).

    Args:
      cell: a :class:`~lstm_jax.functional.LinearCellDef` (``MIN_LSTM_CELL``, ``MIN_GRU_CELL``).
      params: its parameters for this layer and direction.
      x: ``[time, batch, input_size]``.
      initial_state: the cell's state, ``h`` ``[batch, hidden_size]``.
      seq_lengths: optional int32 ``[batch]`` in ``0..time``; may be traced.
      reverse: run from each row's last valid step to the first.
      unroll: unroll factor of the loop over each chunk's steps.

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, hidden_size]`` (zero at
      padded steps) and the state after each row's last valid step.

    Raises:
      ValueError: ``cell`` is not a linear recurrence.

    Example:
      >>> from lstm_jax import functional as F
      >>> p = F.init_min_gru_layer(jax.random.key(0), 3, 5)
      >>> x = jnp.ones((7, 2, 3), jnp.float32)
      >>> out, (h,) = run_parallel_layer(F.MIN_GRU_CELL, p, x, F.MIN_GRU_CELL.zero_state(p, 2))
      >>> scan, _ = F.run_layer(F.MIN_GRU_CELL, p, x, F.MIN_GRU_CELL.zero_state(p, 2))
      >>> out.shape, bool(jnp.allclose(out[-1], h)), bool(jnp.allclose(out, scan, atol=1e-6))
      ((7, 2, 5), True, True)
    """
    reason = _not_linear_reason(cell)
    if reason is not None:
        raise ValueError(reason)
    initial_state = match_vma(initial_state, params, x, seq_lengths)
    initial_state = match_batch_sharding(initial_state, x, 1, 0)
    log_a, log_b = cell.log_coefficients(params, cell.input_projection(params, x))
    valid = None
    if seq_lengths is not None:
        steps = jnp.arange(x.shape[0], dtype=jnp.int32)
        valid = (steps[:, None] < seq_lengths[None, :])[..., None]  # [time, batch, 1]
        log_a = jnp.where(valid, log_a, jnp.zeros_like(log_a))  # the identity map
        log_b = jnp.where(valid, log_b, jnp.full_like(log_b, _log_zero(log_b.dtype)))
    if reverse:
        log_a, log_b = jnp.flip(log_a, 0), jnp.flip(log_b, 0)
    log_a, log_b = _prefixes(log_a, log_b, unroll)
    if reverse:
        log_a, log_b = jnp.flip(log_a, 0), jnp.flip(log_b, 0)
    h0 = initial_state.h.astype(log_b.dtype)
    h = jnp.exp(log_a) * h0[None] + jnp.exp(log_b)
    final = h[0] if reverse else h[-1]
    outputs = h if valid is None else jnp.where(valid, h, jnp.zeros_like(h))
    return outputs, initial_state._replace(h=final.astype(initial_state.h.dtype))


class ParallelKernel(Kernel):
    """:func:`run_parallel_layer` as a kernel, for cells that declare a linear recurrence.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lstm_jax import functional as F
      >>> p = F.init_params("min_lstm", jax.random.key(0), 3, 4)
      >>> PARALLEL.supports(F.MIN_LSTM_CELL, p, LayerPlan(jnp.dtype(jnp.float32))) is None
      True
      >>> PARALLEL.supports(F.GRU_CELL, p, LayerPlan(jnp.dtype(jnp.float32)))[:56]
      'the parallel kernel runs cells whose step is a linear re'
    """

    name = "parallel"
    auto_platforms = ()
    auto_note = (
        "on CPU it was measured slower than these cells' sequential step on the scan and "
        "fused kernels (experiments/benchmarks/min_rnn_speed.py), and it has not been "
        "timed on a GPU yet (experiments/benchmarks/gpu_check.sh times it)"
    )

    def supports(self, cell, params, plan: LayerPlan):
        reason = _not_linear_reason(cell)
        if reason is not None:
            return reason
        if plan.zoneout:
            return "zoneout mixes old and new state inside each step: use the scan"
        if plan.checkpoint is not None:
            return (
                "the parallel kernel does not checkpoint over chunks of time: use the scan "
                "(or checkpoint=None)"
            )
        return None

    def run_layer(self, cell, params, x, state, plan: LayerPlan):
        return run_parallel_layer(
            cell,
            params,
            x,
            state,
            seq_lengths=plan.seq_lengths,
            reverse=plan.reverse,
            unroll=plan.unroll,
        )


PARALLEL = ParallelKernel()
