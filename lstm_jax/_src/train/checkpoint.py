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

import asyncio
import errno
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

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


# How the OS says it (errno), and how tensorstore passes it on (a ValueError whose text
# holds strerror, e.g. "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']").
_OUT_OF_SPACE = {
    errno.ENOSPC: "No space left on device",
    getattr(errno, "EDQUOT", -1): "Disk quota exceeded",  # no EDQUOT on Windows
}


def _out_of_space(e: BaseException | None) -> str | None:
    """``"no space left on device"`` or ``"disk quota exceeded"`` if that caused ``e``."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for code, text in _OUT_OF_SPACE.items():
            if (isinstance(e, OSError) and e.errno == code) or text in str(e):
                return text.lower()
        e = e.__cause__ or e.__context__
    return None


def _mentions_out_of_space(record: logging.LogRecord) -> bool:
    if record.exc_info and _out_of_space(record.exc_info[1]):
        return True
    return any(text in record.getMessage() for text in _OUT_OF_SPACE.values())


def _is(o: object, cls: type) -> bool:
    """``isinstance`` without asking ``o`` for its ``__class__``, which some objects on the
    garbage collector's list (lazy modules, proxies) answer with a warning or an import."""
    return issubclass(type(o), cls)


def _is_closed_loop_callback(unraisable) -> bool:
    """Tensorstore finishing a write for an asyncio loop that orbax has already closed."""
    exc = unraisable.exc_value
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


class _HeldReports(logging.Filter):
    """Holds back what orbax's writer threads report while a save runs.

    When a write fails, orbax logs it with a traceback through absl (logger ``"absl"``)
    from each writer thread; asyncio logs every failed future whose exception nobody
    read when the future is freed; tensorstore, finishing the writes still in flight
    after orbax has closed their event loop, reports ``RuntimeError: Event loop is
    closed`` through ``sys.unraisablehook``. While active this holds back the warnings
    and errors of those two loggers and those unraisable errors (nothing else), and
    :meth:`release` passes them on, or, after a full disk, drops the ones about it.
    """

    LOGGERS = ("absl", "asyncio")
    QUIET_S, MAX_WAIT_S = 0.25, 3.0

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.unraisables: list[tuple[Any, Any, Any]] = []
        self._last = time.monotonic()
        self._previous_hook = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.records.append(record)
        self._last = time.monotonic()
        return False

    def _unraisable_hook(self, u) -> None:
        if not _is_closed_loop_callback(u):
            self._previous_hook(u)
            return
        # The argument is only valid during the call: keep what printing it needs.
        self.unraisables.append((u.exc_type, u.exc_value, u.exc_traceback))
        self._last = time.monotonic()

    def __enter__(self):
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable_hook
        self._last = time.monotonic()
        return self

    def __exit__(self, *exc_info):
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        if sys.unraisablehook == self._unraisable_hook:
            sys.unraisablehook = self._previous_hook

    def settle(self) -> None:
        """After a failed write: waits (a few seconds at most) for the writes in flight.

        Orbax runs its writes on event loops that it closes when the first write fails;
        the tensorstore writes still in flight then finish into a closed loop. Once none
        is left, the failed futures of those loops are marked as seen when their error
        is the full disk, so that asyncio does not report each of them (with a
        traceback) whenever the garbage collector frees it.
        """
        deadline = time.monotonic() + self.MAX_WAIT_S
        while True:
            gc.collect()
            in_flight = any(_is(o, ts.Future) and not o.done() for o in gc.get_objects())
            now = time.monotonic()
            if now >= deadline or (not in_flight and now - self._last >= self.QUIET_S):
                break
            time.sleep(self.QUIET_S / 5)
        for o in gc.get_objects():
            if (
                _is(o, asyncio.Future)
                and o.get_loop().is_closed()
                and getattr(o, "_log_traceback", False)  # failed, and nobody has asked
                and _out_of_space(getattr(o, "_exception", None))
            ):
                o.exception()  # asking is what tells asyncio that the error was seen

    def release(self, drop: bool = False) -> None:
        """Passes the held reports on; with ``drop``, those about a full disk are dropped."""
        records, self.records = self.records, []
        unraisables, self.unraisables = self.unraisables, []
        for record in records:
            if not (drop and _mentions_out_of_space(record)):
                logging.getLogger(record.name).handle(record)
        if not drop:  # as Python's default hook would have printed them
            for exc_type, exc_value, exc_traceback in unraisables:
                traceback.print_exception(exc_type, exc_value, exc_traceback)


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

        Orbax writes from its own threads; when a write fails, they, asyncio and
        tensorstore report it, each with a traceback, before orbax raises it. Those
        reports are held back while saving: when the disk is full the ones about the full
        disk are dropped, as the error raised here says all there is to say (and chains
        orbax's); any other is passed on.

        Raises:
          CheckpointError: the write failed; its message says when the disk is full and
            whether an earlier checkpoint is there to resume from. The half-written
            checkpoint is removed and the previous ones are untouched.
        """
        leaves = jax.tree.leaves(state)
        # jax.Arrays go to orbax as they are, so each host writes the shards it holds.
        items = {
            _leaf_name(i): jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)
        }
        failure = None
        with _HeldReports() as held:
            try:
                self._write(items, step=step, num_leaves=len(leaves))
            except Exception as e:  # nothing of this step may remain, whatever failed
                failure = e
                held.settle()  # first, so that no write still in flight follows
                self._remove_partial(step)
        no_space = _out_of_space(failure)
        held.release(drop=no_space is not None)
        if failure is None:
            return
        previous = self.latest_step()
        kept = (
            f"step {previous}, the newest checkpoint, is intact"
            if previous is not None
            else "there is no earlier checkpoint, so the run starts over"
        )
        if no_space:
            raise CheckpointError(
                f"{no_space} writing checkpoint step {step} to {self.directory}: "
                f"free space, then rerun with --resume ({kept})"
            ) from failure
        raise CheckpointError(
            f"could not write checkpoint step {step} to {self.directory}: "
            f"{type(failure).__name__}: {failure} ({kept})"
        ) from failure

    def _write(self, items: dict[str, Any], *, step: int, num_leaves: int) -> None:
        if step in self._manager.all_steps():  # only a leftover that failed verification
            self._manager.delete(step)
        self._manager.save(step, args=ocp.args.StandardSave(items), force=True)
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            record = {
                "step": step,
                "num_leaves": num_leaves,
                "files": _file_digests(self._step_dir(step)),
            }
            tmp = os.path.join(self._step_dir(step), INTEGRITY_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self._step_dir(step), INTEGRITY_FILE))

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
