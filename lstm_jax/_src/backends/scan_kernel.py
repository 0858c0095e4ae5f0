"""The scan: ``lax.scan`` of any cell's step, differentiated by autodiff.

It runs every configuration (every cell, zoneout, checkpointing, any dtype and
platform), so ``"auto"`` falls back to it wherever no faster kernel applies.
"""

from __future__ import annotations

from lstm_jax._src.backends.kernel import Kernel, LayerPlan
from lstm_jax._src.scan import run_layer


class ScanKernel(Kernel):
    """:func:`lstm_jax._src.scan.run_layer` as a kernel.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lstm_jax._src.cells import LSTM_CELL
      >>> from lstm_jax._src.init import init_lstm_params
      >>> p = init_lstm_params(jax.random.key(0), 3, 4)
      >>> SCAN.supports(LSTM_CELL, p, LayerPlan(jnp.dtype(jnp.float32))) is None
      True
    """

    name = "scan"
    auto_platforms = ("*",)

    def supports(self, cell, params, plan):
        return None

    def run_layer(self, cell, params, x, state, plan: LayerPlan):
        return run_layer(
            cell,
            params,
            x,
            state,
            **plan.direction_options(),
            unroll=plan.unroll,
            zoneout=plan.zoneout_weights,
            checkpoint=plan.checkpoint,
        )


SCAN = ScanKernel()
