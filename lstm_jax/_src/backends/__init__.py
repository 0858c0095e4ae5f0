"""Alternative kernels behind the same call, and the choice between them.

Each kernel is one object (:class:`~lstm_jax._src.backends.kernel.Kernel`) in its own
module that says what it supports and runs a :class:`LayerPlan`; ``backend=`` names one
(see :data:`~lstm_jax._src.backends.selection.KERNELS` for the list and ``"auto"``'s
order of preference):

- ``"scan"``: ``lax.scan`` of any cell's step, autodiff backward; runs everything.
- ``"fused"``: every cell, a hand-written (the LSTM, layer norm aside) or derived (any
  other cell) backward with the weight gradients as single products outside the
  time loop; its LSTM, GRU and RNN loops run as native CPU code where :data:`NATIVE_CPU`
  supports them.
- ``"cudnn"``: ``jax.experimental.rnn`` (cuDNN) for a whole float32 plain-LSTM stack on
  a GPU.
- ``"pallas"``: forward and backward time loops as Pallas kernels with ``W_hh`` on chip
  (TPU: VMEM; GPU: through Triton), for the plain LSTM, the GRU and the RNN, float32 or
  bfloat16; interpret mode (exact, slow) elsewhere. ``"auto"`` does not pick it until it
  has been timed on a device.
- ``"parallel"``: cells whose step is a linear recurrence (minLSTM, minGRU), all steps
  at once by an associative scan in log space.
- ``"auto"``: the first of these that supports the configuration and was measured
  faster than the scan on the platform.
"""

from lstm_jax._src.backends.fused_kernel import NATIVE_CPU as NATIVE_CPU
from lstm_jax._src.backends.kernel import Kernel as Kernel
from lstm_jax._src.backends.kernel import LayerPlan as LayerPlan
from lstm_jax._src.backends.selection import KERNELS as KERNELS
from lstm_jax._src.backends.selection import BackendChoice as BackendChoice
from lstm_jax._src.backends.selection import backend_names as backend_names
from lstm_jax._src.backends.selection import recording_choices as recording_choices
from lstm_jax._src.backends.selection import resolve_backend as resolve_backend
