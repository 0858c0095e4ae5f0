"""Pure functions: initialise parameter pytrees and apply them, no Flax involved.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from lstm_jax import functional as F
  >>> params = F.init_lstm_params(jax.random.key(0), 8, 16, num_layers=2, bidirectional=True)
  >>> out, (h_n, c_n) = F.lstm(params, jnp.ones((5, 4, 8)))
  >>> out.shape, h_n.shape
  ((5, 4, 32), (4, 4, 16))
"""

from lstm_jax._src.apply import apply_recurrent as apply_recurrent
from lstm_jax._src.apply import gru as gru
from lstm_jax._src.apply import init_params as init_params
from lstm_jax._src.apply import lstm as lstm
from lstm_jax._src.apply import rnn as rnn
from lstm_jax._src.apply import step_cell as step_cell
from lstm_jax._src.backends.pallas_loops import block_plan as pallas_block_plan
from lstm_jax._src.backends.pallas_loops import run_pallas_layer as run_pallas_layer
from lstm_jax._src.backends.parallel_kernel import run_parallel_layer as run_parallel_layer
from lstm_jax._src.cells import GRU_CELL as GRU_CELL
from lstm_jax._src.cells import LSTM_CELL as LSTM_CELL
from lstm_jax._src.cells import RNN_RELU_CELL as RNN_RELU_CELL
from lstm_jax._src.cells import RNN_TANH_CELL as RNN_TANH_CELL
from lstm_jax._src.cells import CellDef as CellDef
from lstm_jax._src.cells import get_cell as get_cell
from lstm_jax._src.cells import gru_cell as gru_cell
from lstm_jax._src.cells import gru_input_projection as gru_input_projection
from lstm_jax._src.cells import gru_quantities as gru_quantities
from lstm_jax._src.cells import gru_step as gru_step
from lstm_jax._src.cells import gru_update as gru_update
from lstm_jax._src.cells import layer_norm as layer_norm
from lstm_jax._src.cells import lstm_cell as lstm_cell
from lstm_jax._src.cells import lstm_input_projection as lstm_input_projection
from lstm_jax._src.cells import lstm_quantities as lstm_quantities
from lstm_jax._src.cells import lstm_step as lstm_step
from lstm_jax._src.cells import lstm_update as lstm_update
from lstm_jax._src.cells import recurrent_product as recurrent_product
from lstm_jax._src.cells import register_cell as register_cell
from lstm_jax._src.cells import registered_cells as registered_cells
from lstm_jax._src.cells import rnn_cell as rnn_cell
from lstm_jax._src.cells import rnn_input_projection as rnn_input_projection
from lstm_jax._src.cells import rnn_relu_quantities as rnn_relu_quantities
from lstm_jax._src.cells import rnn_relu_step as rnn_relu_step
from lstm_jax._src.cells import rnn_relu_update as rnn_relu_update
from lstm_jax._src.cells import rnn_state_sizes as rnn_state_sizes
from lstm_jax._src.cells import rnn_tanh_quantities as rnn_tanh_quantities
from lstm_jax._src.cells import rnn_tanh_step as rnn_tanh_step
from lstm_jax._src.cells import rnn_tanh_update as rnn_tanh_update
from lstm_jax._src.fused import run_fused_bidirectional as run_fused_bidirectional
from lstm_jax._src.fused import run_fused_layer as run_fused_layer
from lstm_jax._src.fused_cells import run_fused_cell_layer as run_fused_cell_layer
from lstm_jax._src.init import init_gru_layer as init_gru_layer
from lstm_jax._src.init import init_gru_params as init_gru_params
from lstm_jax._src.init import init_lstm_layer as init_lstm_layer
from lstm_jax._src.init import init_lstm_params as init_lstm_params
from lstm_jax._src.init import init_rnn_layer as init_rnn_layer
from lstm_jax._src.init import init_rnn_params as init_rnn_params
from lstm_jax._src.internals import internals as internals
from lstm_jax._src.min_rnn import MIN_GRU_CELL as MIN_GRU_CELL
from lstm_jax._src.min_rnn import MIN_LSTM_CELL as MIN_LSTM_CELL
from lstm_jax._src.min_rnn import LinearCellDef as LinearCellDef
from lstm_jax._src.min_rnn import MinGRUParams as MinGRUParams
from lstm_jax._src.min_rnn import MinGRUState as MinGRUState
from lstm_jax._src.min_rnn import MinLSTMParams as MinLSTMParams
from lstm_jax._src.min_rnn import MinLSTMState as MinLSTMState
from lstm_jax._src.min_rnn import init_min_gru_layer as init_min_gru_layer
from lstm_jax._src.min_rnn import init_min_lstm_layer as init_min_lstm_layer
from lstm_jax._src.scan import run_layer as run_layer
from lstm_jax._src.slstm import SLSTM_CELL as SLSTM_CELL
from lstm_jax._src.slstm import SLSTM_EXP_CELL as SLSTM_EXP_CELL
from lstm_jax._src.slstm import SLSTMParams as SLSTMParams
from lstm_jax._src.slstm import SLSTMState as SLSTMState
from lstm_jax._src.slstm import init_slstm_layer as init_slstm_layer
from lstm_jax._src.slstm import slstm_cell_def as slstm_cell_def
from lstm_jax._src.slstm import slstm_input_projection as slstm_input_projection
from lstm_jax._src.slstm import slstm_quantities as slstm_quantities
from lstm_jax._src.slstm import slstm_update as slstm_update
from lstm_jax._src.stack import run_stack as run_stack
from lstm_jax._src.stack import weight_drop as weight_drop
from lstm_jax._src.types import GRUParams as GRUParams
from lstm_jax._src.types import GRUState as GRUState
from lstm_jax._src.types import LSTMParams as LSTMParams
from lstm_jax._src.types import LSTMState as LSTMState
from lstm_jax._src.types import RNNParams as RNNParams
from lstm_jax._src.types import RNNState as RNNState

__all__ = [
    "GRUParams",
    "GRUState",
    "GRU_CELL",
    "LSTMParams",
    "LSTMState",
    "LSTM_CELL",
    "LinearCellDef",
    "MIN_GRU_CELL",
    "MIN_LSTM_CELL",
    "MinGRUParams",
    "MinGRUState",
    "MinLSTMParams",
    "MinLSTMState",
    "RNNParams",
    "RNNState",
    "RNN_RELU_CELL",
    "RNN_TANH_CELL",
    "SLSTMParams",
    "SLSTMState",
    "SLSTM_CELL",
    "SLSTM_EXP_CELL",
    "CellDef",
    "apply_recurrent",
    "get_cell",
    "gru",
    "gru_cell",
    "gru_input_projection",
    "gru_quantities",
    "gru_step",
    "gru_update",
    "init_gru_layer",
    "init_gru_params",
    "init_lstm_layer",
    "init_lstm_params",
    "init_min_gru_layer",
    "init_min_lstm_layer",
    "init_params",
    "init_rnn_layer",
    "init_rnn_params",
    "init_slstm_layer",
    "internals",
    "layer_norm",
    "lstm",
    "lstm_cell",
    "lstm_input_projection",
    "lstm_quantities",
    "lstm_step",
    "lstm_update",
    "recurrent_product",
    "register_cell",
    "registered_cells",
    "rnn",
    "rnn_cell",
    "rnn_input_projection",
    "rnn_relu_quantities",
    "rnn_relu_step",
    "rnn_relu_update",
    "rnn_state_sizes",
    "rnn_tanh_quantities",
    "rnn_tanh_step",
    "rnn_tanh_update",
    "run_fused_bidirectional",
    "run_fused_cell_layer",
    "pallas_block_plan",
    "run_pallas_layer",
    "run_parallel_layer",
    "run_fused_layer",
    "run_layer",
    "run_stack",
    "slstm_cell_def",
    "slstm_input_projection",
    "slstm_quantities",
    "slstm_update",
    "step_cell",
    "weight_drop",
]
