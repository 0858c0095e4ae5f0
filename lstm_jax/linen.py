"""Flax Linen modules with ``torch.nn`` semantics, for Linen codebases.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import lstm_jax.linen
  >>> model = lstm_jax.linen.LSTM(input_size=4, hidden_size=8, batch_first=True)
  >>> x = jnp.ones((2, 5, 4))
  >>> out, (h, c) = model.apply(model.init(jax.random.key(0), x), x)
  >>> out.shape, h.shape
  ((2, 5, 8), (1, 2, 8))
"""

from lstm_jax._src.linen_modules import GRU as GRU
from lstm_jax._src.linen_modules import LSTM as LSTM
from lstm_jax._src.linen_modules import RNN as RNN
from lstm_jax._src.linen_modules import FlaxCell as FlaxCell
from lstm_jax._src.linen_modules import GRUCell as GRUCell
from lstm_jax._src.linen_modules import LSTMCell as LSTMCell
from lstm_jax._src.linen_modules import Recurrent as Recurrent
from lstm_jax._src.linen_modules import RecurrentCell as RecurrentCell
from lstm_jax._src.linen_modules import RNNCell as RNNCell

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "FlaxCell",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "Recurrent",
    "RecurrentCell",
]
