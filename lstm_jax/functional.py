"""Pure functions: initialise parameter pytrees and apply them, no Flax involved.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from lstm_jax import functional as F
  >>> params = F.init_lstm_params(jax.random.key(0), 8, 16, num_layers=2, bidirectional=True)
  >>> out, (h_n, c_n) = F.lstm(params, jnp.ones((5, 4, 8)))
  >>> out.shape, h_n.shape
  ((5, 4, 32), (4, 4, 16))
"""

from lstm_jax._src.apply import lstm as lstm
from lstm_jax._src.cells import lstm_cell as lstm_cell
from lstm_jax._src.cells import lstm_input_projection as lstm_input_projection
from lstm_jax._src.cells import lstm_step as lstm_step
from lstm_jax._src.init import init_lstm_layer as init_lstm_layer
from lstm_jax._src.init import init_lstm_params as init_lstm_params
from lstm_jax._src.scan import run_layer as run_layer
from lstm_jax._src.stack import run_stack as run_stack
from lstm_jax._src.types import LSTMParams as LSTMParams
from lstm_jax._src.types import LSTMState as LSTMState

__all__ = [
    "LSTMParams",
    "LSTMState",
    "init_lstm_layer",
    "init_lstm_params",
    "lstm",
    "lstm_cell",
    "lstm_input_projection",
    "lstm_step",
    "run_layer",
    "run_stack",
]
