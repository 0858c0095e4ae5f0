"""The training-loop pieces behind :mod:`lstm_jax.train`, which need the ``train`` extra.

Importing any of them first checks that the extra's modules are there, so that a missing
one raises an error naming it and ``pip install "lstm_jax[train]"``.
"""

from lstm_jax._src.compat import require_extra

require_extra(
    "train",
    {
        "tqdm": "tqdm",
        "tensorstore": "tensorstore",
        "etils.epath": "etils",
        "optax": "optax",
        "orbax.checkpoint": "orbax-checkpoint",
    },
    what="lstm_jax.train",
)
