"""lstm_jax: LSTM, GRU and RNN for JAX and Flax, with ``torch.nn`` semantics.

The NNX modules are the primary API; pure functions live in :mod:`lstm_jax.functional`
and Linen modules in :mod:`lstm_jax.linen`.
"""

from lstm_jax._src.nnx_modules import LSTM as LSTM
from lstm_jax._src.nnx_modules import LSTMCell as LSTMCell
from lstm_jax._src.types import LSTMParams as LSTMParams
from lstm_jax._src.types import LSTMState as LSTMState

__version__ = "0.1.0"

__all__ = ["LSTM", "LSTMCell", "LSTMParams", "LSTMState", "__version__"]
