"""lstm_jax: LSTM, GRU and RNN for JAX and Flax, with ``torch.nn`` semantics.

The NNX modules are the primary API; pure functions live in :mod:`lstm_jax.functional`
and Linen modules in :mod:`lstm_jax.linen`.
"""

from lstm_jax._src.backends import BackendChoice as BackendChoice
from lstm_jax._src.fused import portable_kernels as portable_kernels
from lstm_jax._src.internals import Saturation as Saturation
from lstm_jax._src.internals import gate_saturation as gate_saturation
from lstm_jax._src.min_rnn import MinGRUParams as MinGRUParams
from lstm_jax._src.min_rnn import MinGRUState as MinGRUState
from lstm_jax._src.min_rnn import MinLSTMParams as MinLSTMParams
from lstm_jax._src.min_rnn import MinLSTMState as MinLSTMState
from lstm_jax._src.module_internals import internals as internals
from lstm_jax._src.native.lstm_cpu import NativeStatus as NativeStatus
from lstm_jax._src.native.lstm_cpu import native_status as native_status
from lstm_jax._src.nnx_modules import GRU as GRU
from lstm_jax._src.nnx_modules import LSTM as LSTM
from lstm_jax._src.nnx_modules import RNN as RNN
from lstm_jax._src.nnx_modules import FlaxCell as FlaxCell
from lstm_jax._src.nnx_modules import GRUCell as GRUCell
from lstm_jax._src.nnx_modules import LSTMCell as LSTMCell
from lstm_jax._src.nnx_modules import Recurrent as Recurrent
from lstm_jax._src.nnx_modules import RecurrentCell as RecurrentCell
from lstm_jax._src.nnx_modules import RNNCell as RNNCell
from lstm_jax._src.nnx_modules import explain_backend as explain_backend
from lstm_jax._src.options import RecurrentOptions as RecurrentOptions
from lstm_jax._src.slstm import SLSTMParams as SLSTMParams
from lstm_jax._src.slstm import SLSTMState as SLSTMState
from lstm_jax._src.types import GRUParams as GRUParams
from lstm_jax._src.types import GRUState as GRUState
from lstm_jax._src.types import LSTMParams as LSTMParams
from lstm_jax._src.types import LSTMState as LSTMState
from lstm_jax._src.types import Quantities as Quantities
from lstm_jax._src.types import RNNParams as RNNParams
from lstm_jax._src.types import RNNState as RNNState
from lstm_jax._src.validation import checking_seq_lengths as checking_seq_lengths

__version__ = "0.1.0"

__all__ = [
    "BackendChoice",
    "FlaxCell",
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "GRUParams",
    "GRUState",
    "LSTMCell",
    "LSTMParams",
    "LSTMState",
    "MinGRUParams",
    "MinGRUState",
    "MinLSTMParams",
    "MinLSTMState",
    "NativeStatus",
    "RNNCell",
    "Recurrent",
    "RecurrentCell",
    "RecurrentOptions",
    "RNNParams",
    "Quantities",
    "RNNState",
    "SLSTMParams",
    "SLSTMState",
    "Saturation",
    "__version__",
    "checking_seq_lengths",
    "explain_backend",
    "gate_saturation",
    "internals",
    "native_status",
    "portable_kernels",
]
