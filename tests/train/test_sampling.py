"""Temperature sampling draws from softmax(logits / T) and feeds each token back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstm_jax._src.train.sampling import sample_tokens
from lstm_jax.train import TokenModel


def _fixed_distribution_model(probs):
    """A model whose logits ignore the input: zero read-out weights, bias = log p."""
    model = TokenModel("lstm", vocab_size=len(probs), embed_size=4, hidden_size=8, rngs=nnx.Rngs(0))
    model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
    model.head.bias[...] = jnp.log(jnp.asarray(probs, jnp.float32))
    return model


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_frequencies_follow_tempered_softmax(temperature):
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    model = _fixed_distribution_model(probs)
    n = 4000
    tokens = sample_tokens(model, np.array([0]), n, key=jax.random.key(1), temperature=temperature)
    expected = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
    freq = np.bincount(tokens, minlength=4) / n
    # Within 4 standard errors of a binomial proportion.
    np.testing.assert_array_less(
        np.abs(freq - expected), 4 * np.sqrt(expected * (1 - expected) / n)
    )


def test_feeds_back_tokens_like_a_greedy_python_loop():
    model = TokenModel("gru", vocab_size=7, embed_size=4, hidden_size=16, rngs=nnx.Rngs(3))
    prompt = np.array([1, 4, 2], np.int32)
    drawn = sample_tokens(model, prompt, 6, key=jax.random.key(0), temperature=1e-4)
    # At a tiny temperature sampling is the argmax: compare with an explicit loop.
    logits, carry = model(jnp.asarray(prompt)[:, None], model.zero_carry(1))
    expected = []
    for _ in range(6):
        token = int(jnp.argmax(logits[-1, 0]))
        expected.append(token)
        logits, carry = model(jnp.full((1, 1), token, jnp.int32), carry)
    np.testing.assert_array_equal(drawn, expected)


def test_same_key_same_sample_and_bad_arguments():
    model = TokenModel("lstm", vocab_size=5, embed_size=4, hidden_size=8, rngs=nnx.Rngs(0))
    a = sample_tokens(model, np.array([1]), 20, key=jax.random.key(5))
    np.testing.assert_array_equal(a, sample_tokens(model, np.array([1]), 20, key=jax.random.key(5)))
    assert not np.array_equal(a, sample_tokens(model, np.array([1]), 20, key=jax.random.key(6)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_tokens(model, np.array([1]), 3, key=jax.random.key(0), temperature=0.0)
    with pytest.raises(ValueError, match="prompt must be a non-empty int array"):
        sample_tokens(model, np.array([], np.int32), 3, key=jax.random.key(0))
