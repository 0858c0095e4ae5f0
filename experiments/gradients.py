"""How far back the gradient reaches: ``||dL/dh_t||`` against the distance ``T - t``.

For a trained or fresh :class:`lstm_jax.train.SequenceRegressor` on the adding problem,
``L`` is one sequence's squared error at the last step and ``h_t`` the recurrent state
after reading ``x_t``. The state gets a zero perturbation ``e_t`` after every step
(``carry_t + e_t`` feeds step ``t + 1``), so ``dL/de_t`` is the total derivative
``dL/dh_t`` through all later steps, every ``t`` in one backward pass. The sequence is
run a step at a time through the model's own recurrent module (public API only).

Two norms per step and sequence: of the hidden state ``h_t`` alone, and of the whole
state (``h_t`` and, for the LSTM, the cell ``c_t``). Written by ``experiments.run`` as
``gradient_norms.json`` when ``config.probe_gradients > 0``; drawn by
``python -m experiments.report vanishing``.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax import data, train

FILE = "gradient_norms.json"


def probe_batch(config) -> dict[str, np.ndarray]:
    """``config.probe_gradients`` fixed adding-problem sequences, apart from train and eval."""
    task = data.SyntheticTask(
        "adding", config.probe_gradients, config.seq_len, seed=config.seed + 2 * 10**6
    )
    return task.batch(0)


def carry_gradient_norms(model: nnx.Module, batch: dict[str, np.ndarray]) -> dict:
    """Per-distance norms of ``dL/dh_t`` for ``model`` (a ``SequenceRegressor``).

    Args:
      model: ``core`` (an ``lstm_jax`` recurrent module) and ``head`` (a linear read-out).
      batch: ``{"inputs": [T, B, I], "targets": [B]}``.

    Returns:
      ``{"distance": [T], "h": {...}, "state": {...}}``; each of ``h`` and ``state`` holds
      ``geomean``, ``median``, ``q10`` and ``q90`` over the ``B`` sequences, index ``k``
      being the distance ``T - t = k``.
    """
    model.eval()
    x = jnp.asarray(batch["inputs"], jnp.float32)
    y = jnp.asarray(batch["targets"], jnp.float32)
    steps, batch_size, features = x.shape
    graphdef, state = nnx.split(model)
    carry0 = train.zero_carry(model.core, batch_size, features)
    eps = jax.tree.map(lambda c: jnp.zeros((steps, *c.shape), c.dtype), carry0)
    grads = _state_gradients(graphdef)(state, x, y, eps)
    leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)]  # [T, L, B, H]
    sq = [np.sum(np.square(g), axis=(1, 3)) for g in leaves]  # [T, B]
    norms = {"h": np.sqrt(sq[0]), "state": np.sqrt(np.sum(sq, axis=0))}
    out = {"distance": list(range(steps))}
    for name, n in norms.items():
        n = n[::-1]  # index k: distance T - t = k
        with np.errstate(divide="ignore"):
            geomean = np.exp(np.mean(np.log(n), axis=1))
        out[name] = {
            "geomean": geomean.tolist(),
            "median": np.median(n, axis=1).tolist(),
            "q10": np.quantile(n, 0.1, axis=1).tolist(),
            "q90": np.quantile(n, 0.9, axis=1).tolist(),
        }
    return out


@functools.lru_cache(maxsize=8)
def _state_gradients(graphdef: nnx.GraphDef):
    """The jitted ``(state, x, y, eps) -> dL/deps``, one compilation per model structure."""

    def loss(state, x, y, eps):
        def step(carry, inputs):
            x_t, e_t = inputs
            _, carry = nnx.merge(graphdef, state).core(x_t[None], carry)
            return jax.tree.map(jnp.add, carry, e_t), None

        carry0 = jax.tree.map(lambda e: jnp.zeros(e.shape[1:], e.dtype), eps)
        carry, _ = jax.lax.scan(step, carry0, (x, eps))
        h_top = jax.tree.leaves(carry)[0][-1]  # the top layer's h ([B, H]); LSTM: (h, c)
        pred = nnx.merge(graphdef, state).head(h_top)[:, 0]
        return jnp.sum(jnp.square(pred - y))  # a sum: each sequence's own gradient

    return jax.jit(jax.grad(loss, argnums=3))


def write(run_dir: str, cell: str, init: dict, trained: dict) -> str:
    """Writes ``gradient_norms.json`` (at initialisation and after training) in ``run_dir``."""
    path = os.path.join(run_dir, FILE)
    with open(path, "w") as f:
        json.dump({"cell": cell, "init": init, "trained": trained}, f)
    return path
