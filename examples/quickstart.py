"""The quick start of README.md: torch.nn.LSTM's example, ported line for line.

Run: python examples/quickstart.py
"""

import jax
import jax.numpy as jnp
from flax import nnx

import lstm_jax

rnn = lstm_jax.LSTM(input_size=100, hidden_size=20, num_layers=4, rngs=nnx.Rngs(0))
x = jax.random.normal(jax.random.key(1), (10, 3, 100))
out, (h, c) = rnn(x)
print("output", out.shape, "h_n", h.shape, "c_n", c.shape)
print("output[-1] == h_n[-1]:", bool(jnp.all(out[-1] == h[-1])))
