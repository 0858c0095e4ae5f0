"""Data parallelism with ``jax.sharding``: one ``"data"`` mesh axis over every device.

Parameters and optimizer state are replicated; every batch is sharded along its batch
axis, so each device computes the loss of ``B / devices`` rows and XLA inserts the
gradient all-reduce. On several hosts, start JAX with :func:`initialize_distributed`
first; each host then builds the same global batch (batches are pure functions of the
step) and contributes the rows its own devices hold.

Batches are dicts of time-major arrays: the batch axis is 1 for arrays ``[T, B, ...]``
and 0 for arrays ``[B]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
_COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"

log = logging.getLogger(__name__)


def initialize_distributed(mode: str = "auto") -> bool:
    """Calls ``jax.distributed.initialize()`` when the job runs on several hosts.

    Args:
      mode: ``"auto"`` initialises when ``$JAX_COORDINATOR_ADDRESS`` (``host:port`` of
        process 0) is set, with ``$JAX_NUM_PROCESSES`` and ``$JAX_PROCESS_ID``; ``"on"``
        always initialises, letting JAX detect the cluster (TPU pods, SLURM, Open MPI)
        unless those variables are set; ``"off"`` never does.

    Returns:
      Whether ``jax.distributed`` was initialised.

    Raises:
      ValueError: a bad ``mode``, or ``$JAX_COORDINATOR_ADDRESS`` without the other two.

    Example:
      >>> initialize_distributed("off")
      False
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"distributed must be 'auto', 'on' or 'off', got {mode!r}")
    address = os.environ.get(_COORDINATOR_ENV)
    if mode == "off" or (mode == "auto" and not address):
        return False
    kwargs = {}
    if address:
        try:
            kwargs = {
                "coordinator_address": address,
                "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                "process_id": int(os.environ["JAX_PROCESS_ID"]),
            }
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"${_COORDINATOR_ENV}={address} needs integer $JAX_NUM_PROCESSES and "
                f"$JAX_PROCESS_ID as well ({e!r})"
            ) from e
    jax.distributed.initialize(**kwargs)
    log.info(
        "jax.distributed: process %d of %d, %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis ``"data"`` mesh over ``devices`` (default: all global devices).

    Example:
      >>> make_mesh().axis_names
      ('data',)
    """
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_axis(ndim: int) -> int:
    """The batch axis of a time-major array: 0 for ``[B]``, 1 for ``[T, B, ...]``."""
    return 0 if ndim == 1 else 1


def batch_axis_of(batch: Mapping[str, Any], name: str) -> int:
    """The batch axis of ``batch[name]``: as the batch declares it in ``batch_axes`` (as
    :class:`lstm_jax.data.ArrayBatches`' batches do), else :func:`batch_axis`."""
    declared = getattr(batch, "batch_axes", {})
    return declared[name] if name in declared else batch_axis(np.ndim(batch[name]))


def batch_rows(batch: Mapping[str, Any]) -> int:
    """The number of rows (examples) of a batch, read from its ``"inputs"`` (or first array)."""
    name = "inputs" if "inputs" in batch else next(iter(batch))
    return int(np.shape(batch[name])[batch_axis_of(batch, name)])


def batch_sharding(mesh: Mesh, ndim: int, axis: int | None = None) -> NamedSharding:
    """Shards an array of rank ``ndim`` along ``axis`` (default: the time-major batch axis)."""
    spec = [None] * ndim
    spec[batch_axis(ndim) if axis is None else axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises ``ValueError`` unless ``batch_size`` splits evenly over the mesh."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {n} devices of the mesh; "
            f"use a multiple of {n}"
        )


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a global batch (the same NumPy arrays on every host) sharded over ``mesh``.

    Each device receives only its slice of rows, on every host. Arrays are time-major
    (``[T, B, ...]``, or ``[B]``) unless the batch declares their batch axes
    (:func:`batch_axis_of`).

    Example:
      >>> import numpy as np
      >>> b = shard_batch({"inputs": np.zeros((5, 4, 2), np.float32)}, make_mesh())
      >>> b["inputs"].sharding.spec
      P(None, 'data', None)
    """
    out = {}
    for name, value in batch.items():
        axis = batch_axis_of(batch, name)
        value = np.asarray(value)
        check_batch_size(value.shape[axis], mesh)
        sharding = batch_sharding(mesh, value.ndim, axis)
        out[name] = jax.make_array_from_callback(value.shape, sharding, lambda i, v=value: v[i])
    return out


def carry_sharding(mesh: Mesh, carry: Any) -> Any:
    """Shardings for a recurrent state: leaves ``[layers * directions, B, H]`` split on B."""
    return jax.tree.map(lambda c: batch_sharding(mesh, c.ndim), carry)


def put_global(tree: Any, shardings: Any) -> Any:
    """Places a host-complete ``tree`` (every process has all of it) with ``shardings``.

    Works on one host and on several: each process hands over only the pieces its own
    devices hold (``jax.device_put`` cannot target other hosts' devices). Typed PRNG keys
    are placed through their raw data.

    Args:
      tree: leaves that are fully available on this process (NumPy or local jax arrays).
      shardings: a sharding per leaf (a pytree like ``tree``, or one for all).
    """
    leaves, treedef = jax.tree.flatten(tree)
    if isinstance(shardings, jax.sharding.Sharding):
        sharding_leaves = [shardings] * len(leaves)
    else:
        sharding_leaves = treedef.flatten_up_to(shardings)

    def put(x, sharding):
        if _is_key(x):
            data = put(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.unflatten(
        treedef, [put(x, s) for x, s in zip(leaves, sharding_leaves, strict=True)]
    )


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
