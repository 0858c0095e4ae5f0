"""Alternative kernels behind the same call, and the choice between them.

``backend`` names how a stack of layers is run:

- ``"scan"``: :func:`~lstm_jax._src.scan.run_layer`, any cell kind, autodiff backward;
- ``"fused"``: :mod:`~lstm_jax._src.fused`, the plain LSTM cell only, a hand-written
  backward with the weight gradients as single products outside the time loop;
- ``"cudnn"``: ``jax.experimental.rnn`` (cuDNN) for the whole stack, on a GPU, for a
  float32 plain LSTM without projection or active dropout;
- ``"auto"``: cuDNN on a GPU when it supports the configuration, the fused layer on CPU,
  else the scan.
"""

from lstm_jax._src.backends.cudnn import run_cudnn_stack as run_cudnn_stack
from lstm_jax._src.backends.selection import BACKENDS as BACKENDS
from lstm_jax._src.backends.selection import BackendChoice as BackendChoice
from lstm_jax._src.backends.selection import layer_function as layer_function
from lstm_jax._src.backends.selection import recording_choices as recording_choices
from lstm_jax._src.backends.selection import resolve_backend as resolve_backend
