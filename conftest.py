"""Test configuration shared by tests/ and the doctests under lstm_jax/.

Strict dtype promotion and rank-promotion errors catch silent upcasts and accidental
broadcasting; float64 is enabled so NumPy float64 references and ``check_grads`` run at
full precision (library code always names its dtypes, so nothing drifts to float64).
"""

import os

import jax

# Notebooks executed by the tests (nbmake) run at their small size; kernels inherit this.
os.environ.setdefault("LSTM_JAX_SMALL", "1")

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
