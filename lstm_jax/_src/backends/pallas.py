"""The Pallas kernel as a kernel object: the recurrence on chip, for TPU and GPU.

The loops are :mod:`lstm_jax._src.backends.pallas_loops`; this module says what they
support and runs a :class:`~lstm_jax._src.backends.kernel.LayerPlan` on them. On CPU the
same kernel runs in Pallas's interpret mode (exact, slow): tests and users can run it
anywhere, and ``"auto"`` never picks it there.
"""

from __future__ import annotations

from lstm_jax._src.backends import pallas_loops
from lstm_jax._src.backends.kernel import Kernel, LayerPlan


class PallasKernel(Kernel):
    """Forward and backward time loops as Pallas kernels, ``W_hh`` resident on chip.

    The input projection, the input gradient and the weight gradients are single
    products outside the loops, as in the fused layer. ``unroll`` does not apply (the
    kernel's loop is its own).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4, peephole=True)
      >>> PALLAS.supports(LSTM_CELL, p, LayerPlan(jnp.dtype(jnp.float32)))
      'the Pallas kernel runs the plain LSTM, GRU and RNN cells only, got peephole'
    """

    name = "pallas"
    auto_note = (
        "not yet timed on a GPU or TPU against the scan and cuDNN (its predicted standing "
        "is in experiments/benchmarks/RESULTS.md)"
    )

    def supports(self, cell, params, plan: LayerPlan):
        if plan.zoneout:
            return "zoneout mixes old and new state inside each step: use the scan"
        if plan.checkpoint is not None:
            return (
                "the Pallas kernel keeps every step's activations: no checkpointing "
                "(use the scan or the fused kernel)"
            )
        for layer in params:
            for p in layer:
                reason = pallas_loops.unsupported_reason(cell, p, plan.dtype)
                if reason is not None:
                    return reason
        return None

    def run_layer(self, cell, params, x, state, plan: LayerPlan):
        return pallas_loops.run_pallas_layer(cell, params, x, state, **plan.direction_options())


PALLAS = PallasKernel()
