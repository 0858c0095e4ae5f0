"""The vanishing-gradient probe against dL/dh_t computed by splitting the sequence at t."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import gradients
from lstm_jax import data, train


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_probe_equals_gradient_of_a_split_run(cell):
    model = train.SequenceRegressor(cell, 2, 5, num_layers=2, rngs=nnx.Rngs(0))
    batch = data.SyntheticTask("adding", 3, 6, seed=1).batch(0)
    norms = gradients.carry_gradient_norms(model, batch)
    x = jnp.asarray(batch["inputs"], jnp.float32)
    y = jnp.asarray(batch["targets"], jnp.float32)
    steps = x.shape[0]
    for t in (1, 6):
        _, carry_t = model.core(x[:t])

        def loss(carry, t=t):
            if t < steps:
                _, carry = model.core(x[t:], carry)
            h_top = jax.tree.leaves(carry)[0][-1]
            return jnp.sum(jnp.square(model.head(h_top)[:, 0] - y))

        grads = [np.asarray(g, np.float64) for g in jax.tree.leaves(jax.grad(loss)(carry_t))]
        h = np.sqrt(np.sum(np.square(grads[0]), axis=(0, 2)))
        state = np.sqrt(sum(np.sum(np.square(g), axis=(0, 2)) for g in grads))
        k = steps - t
        assert norms["h"]["geomean"][k] == pytest.approx(np.exp(np.mean(np.log(h))), rel=1e-4)
        assert norms["state"]["median"][k] == pytest.approx(np.median(state), rel=1e-4)
