"""Sampling text from a trained token model with a temperature, in one jitted scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax


@functools.partial(jax.jit, static_argnums=(0, 3))
def _sample_scan(graphdef, state, prompt, length, key, temperature):
    model = nnx.merge(graphdef, state)
    logits, carry = model(prompt[:, None], model.zero_carry(1))

    def body(loop_state, step_key):
        last_logits, carry = loop_state
        token = jax.random.categorical(step_key, last_logits / temperature)
        logits, carry = model(token.reshape(1, 1), carry)
        return (logits[0, 0], carry), token

    _, tokens = lax.scan(body, (logits[-1, 0], carry), jax.random.split(key, length))
    return tokens


def sample_tokens(
    model: nnx.Module,
    prompt: np.ndarray,
    length: int,
    *,
    key: jax.Array,
    temperature: float = 1.0,
) -> np.ndarray:
    """Continues ``prompt`` by ``length`` tokens drawn from ``softmax(logits / temperature)``.

    The prompt is read in one call; each new token is fed back with the carried state.
    Dropout follows the model's mode: call ``model.eval()`` first.

    Args:
      model: a token model called as ``model(tokens [T, B], carry) -> (logits [T, B, V], carry)``
        with a ``zero_carry(batch)`` method, e.g. :class:`lstm_jax.train.TokenModel`.
      prompt: int ``[P]``, ``P >= 1``.
      length: number of tokens to draw.
      key: PRNG key.
      temperature: ``> 0``; below 1 sharpens the distribution, above 1 flattens it.

    Returns:
      int ``[length]``, the drawn tokens (the prompt not included).

    Raises:
      ValueError: an empty prompt, ``length < 1`` or ``temperature <= 0``.

    Example:
      >>> from lstm_jax.train import TokenModel
      >>> m = TokenModel("lstm", vocab_size=10, embed_size=4, hidden_size=8, rngs=nnx.Rngs(0))
      >>> sample_tokens(m, np.array([1, 2, 3]), 5, key=jax.random.key(0)).shape
      (5,)
    """
    prompt = np.asarray(prompt)
    if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(
            f"prompt must be a non-empty int array [P], got {prompt.dtype} {prompt.shape}"
        )
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    graphdef, state = nnx.split(model)
    tokens = _sample_scan(
        graphdef, state, jnp.asarray(prompt, jnp.int32), length, key, jnp.float32(temperature)
    )
    return np.asarray(tokens)
