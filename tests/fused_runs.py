"""One LSTM layer run two ways, shared by the fused-kernel tests.

:func:`scan` is the reference (``lax.scan`` of the cell, differentiated by autodiff);
:func:`fused` is the fused layer with the same arguments; :func:`loss` reads every output.
Each returns a function of ``(params, x, state)``.
"""

import jax.numpy as jnp

from lstm_jax import functional as F


def loss(run):
    """A loss that reads every output, with a different weight per element."""

    def loss_of(params, x, state):
        y, final = run(params, x, state)
        return jnp.sum(y * jnp.cos(y)) + jnp.sum(final.h * final.h) + jnp.sum(jnp.sin(final.c))

    return loss_of


def scan(seq_lengths=None, reverse=False):
    def run(params, x, state):
        return F.run_layer(F.LSTM_CELL, params, x, state, seq_lengths=seq_lengths, reverse=reverse)

    return run


def fused(seq_lengths=None, reverse=False, checkpoint=None, unroll=1):
    def run(params, x, state):
        return F.run_fused_layer(
            params,
            x,
            state,
            seq_lengths=seq_lengths,
            reverse=reverse,
            checkpoint=checkpoint,
            unroll=unroll,
        )

    return run
