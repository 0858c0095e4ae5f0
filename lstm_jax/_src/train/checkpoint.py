"""Orbax checkpoints of a whole :class:`TrainState`, verified on restore.

What is saved: parameters, optimizer state, step (which is also the data position: every
batch is a pure function of the step), the model's RNG streams and the carried recurrent
state. Orbax's ``CheckpointManager`` writes each step into a temporary directory and
renames it when complete, so a killed job never leaves a step directory that looks
finished. On top of that, once a save has completed this module writes
``integrity.json`` into the step directory (atomically, by rename) with the SHA-256 of
every file; on restore a step without it, or with a file that does not match, is
skipped with a warning and the previous step is used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

INTEGRITY_FILE = "integrity.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full) or none could be read."""


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _file_digests(directory: str) -> dict[str, str]:
    digests = {}
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            if name == INTEGRITY_FILE:
                continue
            path = os.path.join(root, name)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digests[os.path.relpath(path, directory)] = h.hexdigest()
    return digests


def _leaf_name(i: int) -> str:
    return f"leaf_{i:05d}"


class Checkpointer:
    """Saves and restores train states under ``directory/<step>/``.

    Args:
      directory: the checkpoint directory (created if needed).
      max_to_keep: how many recent checkpoints to keep.

    Example:
      >>> import tempfile
      >>> import jax.numpy as jnp
      >>> ckpt = Checkpointer(tempfile.mkdtemp())
      >>> state = {"w": jnp.arange(3, dtype=jnp.float32), "step": jnp.array(7, jnp.int32)}
      >>> ckpt.save(state, step=7)
      >>> ckpt.latest_step(), ckpt.restore_latest(state)[1]["w"].tolist()
      (7, [0.0, 1.0, 2.0])
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def all_steps(self) -> list[int]:
        """Steps with a step directory (complete or not), ascending."""
        return sorted(self._manager.all_steps())

    def is_valid(self, step: int) -> bool:
        """Whether ``step``'s files match the digests written after its save completed."""
        path = os.path.join(self._step_dir(step), INTEGRITY_FILE)
        try:
            with open(path) as f:
                expected = json.load(f)["files"]
        except (OSError, ValueError, KeyError) as e:
            log.warning(
                "checkpoint %d has no readable %s (%s): incomplete", step, INTEGRITY_FILE, e
            )
            return False
        got = _file_digests(self._step_dir(step))
        if got != expected:
            bad = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
            log.warning(
                "checkpoint %d is corrupt: files %s differ from %s", step, bad[:5], INTEGRITY_FILE
            )
            return False
        return True

    def latest_step(self) -> int | None:
        """The newest step that passes :meth:`is_valid`, or ``None``."""
        for step in reversed(self.all_steps()):
            if self.is_valid(step):
                return step
        return None

    def save(self, state: Any, *, step: int) -> None:
        """Writes ``state`` as checkpoint ``step`` and waits until it is complete.

        Raises:
          CheckpointError: the write failed (the message says when the disk is full); the
            half-written checkpoint is removed and the previous ones are untouched.
        """
        leaves = jax.tree.leaves(state)
        # jax.Arrays go to orbax as they are, so each host writes the shards it holds.
        items = {
            _leaf_name(i): jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)
        }
        try:
            if step in self._manager.all_steps():  # only a leftover that failed verification
                self._manager.delete(step)
            self._manager.save(step, args=ocp.args.StandardSave(items), force=True)
            self._manager.wait_until_finished()
            if jax.process_index() == 0:
                record = {
                    "step": step,
                    "num_leaves": len(leaves),
                    "files": _file_digests(self._step_dir(step)),
                }
                tmp = os.path.join(self._step_dir(step), INTEGRITY_FILE + ".tmp")
                with open(tmp, "w") as f:
                    json.dump(record, f, indent=1)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, os.path.join(self._step_dir(step), INTEGRITY_FILE))
        except OSError as e:
            self._remove_partial(step)
            previous = self.latest_step()
            reason = "no space left on device" if e.errno == errno.ENOSPC else str(e)
            raise CheckpointError(
                f"could not write checkpoint {step} to {self.directory}: {reason}. "
                f"The previous checkpoint (step {previous}) is intact; free space and "
                f"rerun with --resume."
            ) from e

    def _remove_partial(self, step: int) -> None:
        if jax.process_index() != 0 or not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if name == str(step) or name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        self._manager.reload()

    def restore_latest(self, template: Any, shardings: Any = None) -> tuple[int, Any] | None:
        """The newest valid checkpoint as ``(step, state)``, skipping bad ones; or ``None``.

        Args:
          template: a state of the same structure, shapes and dtypes (e.g. a fresh one).
          shardings: optional pytree of shardings like ``template`` to place leaves with.
        """
        leaves, treedef = jax.tree.flatten(template)
        if shardings is None:
            sharding_leaves = [getattr(x, "sharding", None) for x in leaves]
        else:
            sharding_leaves = treedef.flatten_up_to(shardings)
        abstract = {}
        for i, (x, s) in enumerate(zip(leaves, sharding_leaves, strict=True)):
            raw = jax.random.key_data(x) if _is_key(x) else x
            abstract[_leaf_name(i)] = jax.ShapeDtypeStruct(np.shape(raw), raw.dtype, sharding=s)
        for step in reversed(self.all_steps()):
            if not self.is_valid(step):
                continue
            try:
                items = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # a bad checkpoint must not stop the run: try the previous
                log.warning(
                    "checkpoint %d could not be restored (%s); trying the previous", step, e
                )
                continue
            restored = []
            for i, x in enumerate(leaves):
                value = items[_leaf_name(i)]
                if _is_key(x):
                    value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(x))
                restored.append(value)
            return step, jax.tree.unflatten(treedef, restored)
        return None

    def close(self) -> None:
        self._manager.close()
