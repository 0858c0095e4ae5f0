"""Run-directory files: ``metrics.jsonl`` beside TensorBoard events, run provenance, and
the plain progress lines of a job whose output is not a terminal.

Only process 0 writes, so a multi-host job produces one set of files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"
WALL_CLOCK_FILE = "wall_clock.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    return value


def flatten_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b": value}`` with TensorBoard's value types.

    Booleans, numbers and strings are kept; anything else (``None``, tuples) becomes its
    ``repr``.

    Example:
      >>> flatten_hparams({"lr": 0.1, "model": {"cells": ("lstm",), "bias": None}})
      {'lr': 0.1, 'model.cells': "('lstm',)", 'model.bias': 'None'}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = repr(value)
    return flat


def is_interactive() -> bool:
    """Whether progress is drawn as a bar: stdout is a terminal, or this is a Jupyter kernel.

    Elsewhere (a scheduler's log file, a pipe) a redrawn bar would fill the log with
    carriage returns, so the training loop writes plain lines instead (:func:`log_line`).
    """
    try:
        if sys.stdout.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stdout
        pass
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def log_line(text: str) -> None:
    """Writes one line of progress to stdout, flushed (process 0 only)."""
    if jax.process_index() == 0:
        print(text, file=sys.stdout, flush=True)


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``name value`` pairs with 4 significant digits, for a progress line.

    Example:
      >>> format_metrics({"train/loss": 0.123456, "train/accuracy": 0.5})
      'loss 0.1235 accuracy 0.5'
    """
    return " ".join(f"{k.rsplit('/', 1)[-1]} {v:.4g}" for k, v in metrics.items())


def write_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Writes ``obj`` as indented JSON, atomically (temporary file and rename).

    Example:
      >>> import json, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "summary.json")
      >>> write_json(path, {"status": "completed", "steps": 3})
      >>> json.load(open(path))
      {'status': 'completed', 'steps': 3}
    """
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order.

    Example:
      >>> import tempfile
      >>> w = MetricsWriter(tempfile.mkdtemp(), tensorboard=False)
      >>> w.write(10, {"train/loss": 0.5}); w.close()
      >>> read_metrics(os.path.join(w.run_dir, "metrics.jsonl"))
      [{'step': 10, 'train/loss': 0.5}]
    """
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and to TensorBoard.

    Args:
      run_dir: the run directory.
      tensorboard: also write TensorBoard events under ``run_dir/tensorboard``.
      truncate_after: on resume, drop records with a step above this (they belong to the
        part of the killed run that is being redone).

    Example:
      >>> import tempfile
      >>> writer = MetricsWriter(tempfile.mkdtemp(), tensorboard=False)
      >>> writer.write(1, {"train/loss": 0.25})
      >>> writer.close()
      >>> open(os.path.join(writer.run_dir, "metrics.jsonl")).read().splitlines()
      ['{"step": 1, "train/loss": 0.25}']
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        truncate_after: int | None = None,
    ):
        self.run_dir = os.fspath(run_dir)
        self.active = jax.process_index() == 0
        self._tb = None
        if not self.active:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        path = os.path.join(self.run_dir, METRICS_FILE)
        if truncate_after is not None and os.path.exists(path):
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= truncate_after]
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        self._file = open(path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(
                os.path.join(self.run_dir, TENSORBOARD_DIR),
                purge_step=None if truncate_after is None else truncate_after + 1,
            )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Records scalar ``metrics`` at ``step``."""
        if not self.active:
            return
        record = {"step": int(step), **{k: _jsonable(float(v)) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))

    def write_hparams(
        self, hparams: Mapping[str, Any], metrics: tuple[str, ...] = ("train/loss",)
    ) -> None:
        """Records a run's hyperparameters once, for TensorBoard's HParams and Text tabs.

        Args:
          hparams: the (nested) config; flattened by :func:`flatten_hparams`.
          metrics: the scalar tags the HParams tab shows against them.
        """
        if not self.active or self._tb is None:
            return
        from tensorboardX.summary import hparams as hparams_summary

        flat = flatten_hparams(hparams)
        # the three summaries add_hparams writes, here into this run's own event file
        # (add_hparams opens a new writer in a subdirectory)
        writer = self._tb._get_file_writer()
        for summary in hparams_summary(flat, dict.fromkeys(metrics, 0.0)):
            writer.add_summary(summary)
        table = "\n".join(f"| {k} | {v} |" for k, v in flat.items())
        self._tb.add_text("hparams", "| name | value |\n| --- | --- |\n" + table, 0)

    def close(self) -> None:
        if not self.active:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class WallClock:
    """The wall time of a run, summed over every process that worked on it.

    A run killed and resumed spans several processes; each appends its own entry to
    ``wall_clock.json`` and rewrites it at every :meth:`save`, so a process killed
    without warning still counts up to its last save.

    Args:
      run_dir: the run directory.
      resume: keep the entries of earlier processes (otherwise start afresh).

    Example:
      >>> import tempfile
      >>> d = tempfile.mkdtemp()
      >>> WallClock(d, resume=False).save()
      >>> clock = WallClock(d, resume=True)
      >>> len(clock.process_seconds())
      2
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume: bool):
        self.path = os.path.join(os.fspath(run_dir), WALL_CLOCK_FILE)
        self.active = jax.process_index() == 0
        self._start = time.time()
        self._earlier: list[float] = []
        if resume and os.path.exists(self.path):
            with open(self.path) as f:
                self._earlier = [float(x) for x in json.load(f)["process_seconds"]]

    def elapsed(self) -> float:
        """Seconds since this process's clock started."""
        return time.time() - self._start

    def process_seconds(self) -> list[float]:
        """The seconds of each process so far, this one last."""
        return [*self._earlier, round(self.elapsed(), 2)]

    def total(self) -> float:
        """The run's wall time so far: the sum over its processes."""
        return round(sum(self.process_seconds()), 2)

    def save(self) -> None:
        """Records this process's time so far."""
        if self.active:
            write_json(self.path, {"process_seconds": self.process_seconds()})


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The git commit of the checkout at ``path``, or None.

    ``+dirty`` marks a tree with changes to tracked files or with untracked files that git
    does not ignore (a script or config not yet committed is part of what ran).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=normal"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def environment_info() -> dict[str, Any]:
    """Versions, devices and git commit, for ``summary.json``.

    Example:
      >>> info = environment_info()
      >>> info["versions"]["jax"] == jax.__version__, "git_commit" in info
      (True, True)
    """
    import flax
    import numpy
    import optax
    import orbax.checkpoint

    import lstm_jax

    device = jax.devices()[0]
    return {
        "git_commit": git_commit(os.path.dirname(os.path.abspath(lstm_jax.__file__))),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax_checkpoint": orbax.checkpoint.__version__,
            "numpy": numpy.__version__,
            "lstm_jax": lstm_jax.__version__,
        },
        "device": {
            "platform": device.platform,
            "kind": device.device_kind,
            "local_devices": jax.local_device_count(),
            "global_devices": jax.device_count(),
            "processes": jax.process_count(),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
        },
        "argv": sys.argv,
    }
