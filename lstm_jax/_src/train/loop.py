"""The training loop: steps, logging, evaluation, checkpoints, resume and failure handling.

:func:`fit` is what an experiment calls once it has a model, a loss and its data. It owns
the run directory (``metrics.jsonl``, TensorBoard events, ``checkpoints/``,
``summary.json``, and ``config.json`` from the experiment's config), which it locks while
it runs. Besides the loss, every log step records the learning rate applied, the time per
step and the throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

from lstm_jax._src.data.arrays import ArrayBatches, steps_for_epochs
from lstm_jax._src.train import metrics as metrics_lib
from lstm_jax._src.train import sharding as sharding_lib
from lstm_jax._src.train.callers import spelled
from lstm_jax._src.train.checkpoint import Checkpointer
from lstm_jax._src.train.early_stopping import EarlyStopping, ReduceOnPlateau
from lstm_jax._src.train.step import (
    LossFn,
    applied_learning_rate,
    create_train_state,
    evaluate,
    make_eval_step,
    make_train_step,
    place_state,
    state_shardings,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best_checkpoint"  # the best step's checkpoint, with restore_best
CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"  # locked (flock) by the process training in the run directory


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient became NaN or infinite; the run stopped before saving it.

    Example:
      >>> from lstm_jax import train
      >>> issubclass(train.NonFiniteLossError, FloatingPointError)
      True
    """


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      summary: the contents written to ``summary.json``.
      state: the final train state.
      graphdef: the model's graph definition (``nnx.merge(graphdef, state.params,
        state.rest)`` rebuilds the trained model).
      history: every logged metric as a list, in the order logged, across resumes:
        ``history["eval/loss"]``, ..., with the steps of each group of metrics as
        ``history["train/step"]`` and ``history["eval/step"]`` (see :func:`history_of`).

    Example:
      >>> import dataclasses
      >>> from lstm_jax import train
      >>> [field.name for field in dataclasses.fields(train.FitResult)]
      ['summary', 'state', 'graphdef', 'history']
    """

    summary: dict[str, Any]
    state: Any
    graphdef: nnx.GraphDef
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def history_of(records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Metrics records (``metrics.jsonl``'s) as a dict of lists, Keras's ``History`` style.

    Each metric ``"group/name"`` gets the list of its values, and each group the list of
    the steps it was logged at, ``"group/step"``.

    Example:
      >>> history_of([{"step": 2, "train/loss": 1.0}, {"step": 4, "train/loss": 0.5},
      ...             {"step": 4, "eval/loss": 0.7}])
      {'train/step': [2, 4], 'train/loss': [1.0, 0.5], 'eval/step': [4], 'eval/loss': [0.7]}
    """
    history: dict[str, list[float]] = {}
    for record in records:
        groups = dict.fromkeys(k.split("/")[0] for k in record if k != "step" and "/" in k)
        for group in groups:
            history.setdefault(f"{group}/step", []).append(record["step"])
        for key, value in record.items():
            if key != "step":
                history.setdefault(key, []).append(value)
    return history


def params_digest(params: Any) -> str:
    """SHA-256 over the bytes of every parameter, to compare runs bit for bit.

    Example:
      >>> a, b = {"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)}
      >>> params_digest(a) == params_digest(dict(a)), params_digest(a) == params_digest(b)
      (True, False)
    """
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _non_finite(records: list[dict[str, Any]]) -> set[str]:
    """The metric names that are NaN or infinite in any of ``records`` (host values)."""
    return {k for r in records for k, v in r.items() if not math.isfinite(float(v))}


def _mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in records])) for k in records[0]}


# the monitoring scalars of each log step, beside the loss function's metrics
LEARNING_RATE = "train/learning_rate"
STEP_TIME = "train/step_time_s"
MONITORING = (LEARNING_RATE, STEP_TIME, "train/tokens_per_s", "train/examples_per_s")


def items_per_step(batch: Mapping[str, Any]) -> tuple[int, str]:
    """What one step processes: ``(T * B, "tokens")`` for a time-major ``[T, B, ...]``
    sequence batch (its ``"inputs"``, else its first array), ``(B, "examples")`` for a
    ``[B]`` one.

    Example:
      >>> items_per_step({"inputs": np.zeros((20, 8, 2)), "targets": np.zeros(8)})
      (160, 'tokens')
      >>> items_per_step({"x": np.zeros(8)})
      (8, 'examples')
    """
    shape = np.shape(batch["inputs"] if "inputs" in batch else next(iter(batch.values())))
    if len(shape) >= 2:
        return int(shape[0]) * int(shape[1]), "tokens"
    return int(shape[0]), "examples"


@contextlib.contextmanager
def _locked_run_dir(run_dir: str):
    """Creates ``run_dir`` and holds an exclusive lock on it while the block runs.

    The lock is ``fcntl.flock`` on ``run_dir/run.lock`` (on process 0 only, as only it
    writes the run's files), which names the holder. The operating system releases it
    when the process ends, however it ends, so a killed run never leaves a stale lock.

    Raises:
      PermissionError, OSError: ``run_dir`` cannot be created or written (one line:
        the directory and the reason).
      BlockingIOError: another process holds the lock (the message names it).
    """
    handle = None
    try:
        os.makedirs(run_dir, exist_ok=True)
        if jax.process_index() == 0:
            handle = open(os.path.join(run_dir, LOCK_FILE), "a+")
    except OSError as e:
        raise OSError(
            e.errno, f"cannot write to the run directory {run_dir} ({e.strerror or e})"
        ) from e
    if handle is None or fcntl is None:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BlockingIOError(
                f"{run_dir} is in use by {holder}, which holds {LOCK_FILE}: two runs in one "
                "run directory would mix their files. Wait for it to end (or stop it), or "
                "choose another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _logged(records: list[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
    """The steps at which metric ``name`` was logged, and its values there."""
    pairs = [(r["step"], r[name]) for r in records if name in r]
    return [step for step, _ in pairs], [value for _, value in pairs]


@contextlib.contextmanager
def _run_directory(run_dir: str | os.PathLike | None):
    """``run_dir`` locked while the block runs; a temporary one, removed after, for ``None``."""
    temporary = run_dir is None
    path = tempfile.mkdtemp(prefix="lstm_jax_fit_") if temporary else os.fspath(run_dir)
    try:
        with _locked_run_dir(path):
            yield path
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _progress_line(
    desc: str, done: int, steps: int, window: dict[str, float], monitoring: dict[str, float]
) -> str:
    """``train step 200/3000 loss 0.1234 grad_norm 0.5 lr 1.0e-03 12,345 tok/s 5.1 ms/step``."""
    window = {"loss": window["loss"], **window} if "loss" in window else window  # loss first
    parts = [f"{desc} step {done}/{steps}", metrics_lib.format_metrics(window)]
    if LEARNING_RATE in monitoring:
        parts.append(f"lr {monitoring[LEARNING_RATE]:.1e}")
    for key, label in (("train/tokens_per_s", "tok/s"), ("train/examples_per_s", "ex/s")):
        if key in monitoring:
            parts.append(f"{monitoring[key]:,.0f} {label}")
    if STEP_TIME in monitoring:
        parts.append(f"{1e3 * monitoring[STEP_TIME]:.1f} ms/step")
    return " ".join(parts)


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    train_batch: Callable[[int], dict[str, np.ndarray]],
    *,
    steps: int | None = None,
    epochs: int | None = None,
    run_dir: str | os.PathLike | None = None,
    eval_batches: Callable[[], Iterable[dict[str, np.ndarray]]] | ArrayBatches | None = None,
    carry: Any = None,
    eval_carry: Callable[[], Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    log_every: int = 50,
    eval_every: int | str = 0,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 3,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
    extra_summary: dict[str, Any] | None = None,
    stop_check: Callable[[], None] | None = None,
    hparams: Mapping[str, Any] | None = None,
    stop_when: Callable[[dict[str, float]], bool] | None = None,
    config: Mapping[str, Any] | None = None,
    early_stopping: EarlyStopping | None = None,
    restore_best: bool = False,
    reduce_on_plateau: ReduceOnPlateau | None = None,
) -> FitResult:
    """Trains ``model`` for ``steps`` updates, with logging, evaluation and checkpoints.

    Batch ``step`` is ``train_batch(step)``, a pure function of the step, so the data
    position is the step and a resumed run sees the same batches as an uninterrupted one.
    For arrays and lists of sequences, :class:`lstm_jax.data.ArrayBatches` is that
    function (shuffled per epoch with a seed), and ``epochs`` counts its passes.

    ``model`` itself is trained: when ``fit`` returns (or is interrupted), it holds the
    final parameters, or the best step's with ``restore_best``.

    Every ``log_every`` steps ``metrics.jsonl`` and TensorBoard get the mean of the loss
    function's metrics over the window (``train/loss``, ...) and ``train/grad_norm``, and:
    ``train/learning_rate``, the rate applied by the window's last update (read from the
    optimizer state, present when the optimizer is built with ``optax.inject_hyperparams``
    as :func:`make_optimizer` does); ``train/step_time_s``, wall seconds per step over the
    window, evaluation and checkpoints excluded; and ``train/tokens_per_s`` (time x batch
    of a ``[T, B, ...]`` batch, see :func:`items_per_step`) or ``train/examples_per_s``.
    The first step, which compiles, is timed apart: ``compile_time_s`` in the summary.

    Args:
      model: an NNX model; ``loss_fn`` calls it. It is updated in place.
      loss_fn: ``loss_fn(model, batch, carry) -> (loss, (metrics, carry))``.
      optimizer: an optax transformation (clipping included, see ``make_optimizer``).
      train_batch: ``step -> batch`` of time-major NumPy arrays (the global batch), e.g.
        a :class:`lstm_jax.data.ArrayBatches`.
      steps: total number of updates; or give ``epochs``.
      epochs: passes over ``train_batch``'s data (it must know ``steps_per_epoch``).
      run_dir: where ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` and
        ``summary.json`` go; ``None`` trains in a temporary directory removed at the end
        (nothing to resume from: for a quick run in a notebook).
      eval_batches: ``() -> iterable of batches`` for evaluation, an
        :class:`lstm_jax.data.ArrayBatches` (every example once, in order), or ``None``.
        Metrics are averaged over examples (batches weighted by their rows).
      carry: initial recurrent state for truncated BPTT (``None`` for tasks without).
      eval_carry: ``() -> initial state`` for evaluation.
      mesh: device mesh (default: all devices on a ``"data"`` axis).
      log_every: log the mean training metrics every this many steps.
      eval_every: evaluate every this many steps, or ``"epoch"`` (0: only at the end).
      checkpoint_every: checkpoint every this many steps (and always at the end).
      keep_checkpoints: how many checkpoints to keep.
      resume: continue from the newest checkpoint in ``run_dir`` that is not corrupt
        (corrupt ones are skipped; checkpoints of another model or optimizer are an
        error, never skipped).
      progress: report progress on process 0: a tqdm bar in a terminal or Jupyter; where
        stdout is not a terminal (a scheduler's log file, a pipe), a plain line per log
        step instead (``train step 200/3000 loss 0.1234 ... lr 1.0e-03 12,345 tok/s``).
      desc: the label of the bar or the lines.
      extra_summary: more entries for ``summary.json``.
      stop_check: called before every step; what it raises stops training there, at a
        step boundary, handled as below for ``SystemExit``. A signal handler should only
        record the signal and let this raise: an exception raised from the handler itself
        can land inside a library call (a TensorBoard writer's queue, a checkpoint) and
        leave it unable to close.
      hparams: the run's hyperparameters (a nested config), recorded once for
        TensorBoard's HParams and Text tabs and as ``hparams`` in ``summary.json``.
      stop_when: called with the metrics of every evaluation (``{"eval/loss": ...}``);
        when it returns true, training ends there with a checkpoint, status
        ``"completed"`` and ``stopped_at_step`` in the summary (early stopping, e.g. once
        a task counts as solved).
      config: the run's config, written to ``config.json`` in ``run_dir`` once the run
        directory is locked and its checkpoints are checked, so that a run refused
        (another run in the directory, checkpoints without ``resume``, checkpoints of
        another model) leaves the record of the run it found as it was.
      early_stopping: an :class:`EarlyStopping`: training ends (with a checkpoint) once its
        metric has not improved for ``patience`` of its logs.
      restore_best: keep a checkpoint of the best step (``run_dir/best_checkpoint/``) of
        ``early_stopping``'s metric (else ``"eval/loss"`` with ``eval_batches``, else
        ``"train/loss"``) and end on its parameters.
      reduce_on_plateau: a :class:`ReduceOnPlateau`: every update is scaled by its
        :meth:`~ReduceOnPlateau.scale` of its metric's history (an
        ``optax.inject_hyperparams(optax.scale)`` chained after ``optimizer``, its
        ``step_size`` set after each log of the metric and on resume, so that a resumed
        run scales as an uninterrupted one; a finished run resumed with a longer budget
        keeps its last evaluation in that history), ``train/learning_rate`` shows the
        scaled rate, and training ends (with a checkpoint) at the plateau after its last
        reduction.

    While it runs, ``fit`` holds an exclusive lock on ``run_dir`` (``run.lock``, released
    when it returns or the process ends): a second run started in the same directory is
    refused rather than interleaving its files with the first's.

    Returns:
      A :class:`FitResult`, with ``history``: every logged metric as a list.

    Raises:
      TypeError: ``train_batch`` is not a function of the step (e.g. one batch's dict).
      ValueError: ``steps``, ``log_every``, ``checkpoint_every`` or ``keep_checkpoints``
        below 1, ``eval_every`` below 0, neither or both of ``steps`` and ``epochs``, a
        ``reduce_on_plateau`` on an ``eval/`` metric without ``eval_batches``.
      FileExistsError: ``run_dir`` holds checkpoints and ``resume`` is false.
      BlockingIOError: another process is running in ``run_dir`` (named in the message).
      OSError: ``run_dir`` cannot be created or written (e.g. ``PermissionError``).
      NonFiniteLossError: the loss went NaN/inf; nothing after the last finite step was
        saved, so the newest checkpoint is the last good one.
      CheckpointError: a checkpoint could not be written (e.g. a full disk), or, with
        ``resume``, the checkpoints are of another model or optimizer (the message says
        what differs; nothing in ``run_dir`` is changed).
      KeyboardInterrupt, SystemExit: re-raised after saving a checkpoint of the step
        reached (when its metrics are finite) and a ``summary.json`` with status
        ``"interrupted"``; Ctrl-C in Jupyter and ``experiments.run`` under SIGTERM (through
        ``stop_check``) land here.

    Example:
      >>> import tempfile
      >>> from flax import nnx
      >>> from lstm_jax import data, train
      >>> task = data.SyntheticTask("adding", batch_size=8, length=5)
      >>> model = train.SequenceRegressor("lstm", 2, 4, rngs=nnx.Rngs(0))
      >>> result = train.fit(model, train.regression_loss, train.make_optimizer("adam", 1e-2),
      ...                    task.batch, steps=3, log_every=3, run_dir=tempfile.mkdtemp(),
      ...                    progress=False)
      >>> result.summary["status"], int(result.state.step), len(result.history["train/loss"])
      ('completed', 3, 1)
      >>> model(task.batch(0)["inputs"]).shape  # the trained model
      (8, 1)
    """
    if not callable(train_batch):
        raise TypeError(
            f"train_batch must be a function of the step, step -> batch; got "
            f"{type(train_batch).__name__}. For arrays or sequences use "
            "data.ArrayBatches(inputs, targets, batch_size=...); for one fixed batch, "
            "lambda step: batch"
        )
    if (steps is None) == (epochs is None):
        raise ValueError(f"give either steps or epochs, got steps={steps}, epochs={epochs}")
    if epochs is not None:
        steps = steps_for_epochs(train_batch, epochs)
    if eval_every == "epoch":
        eval_every = steps_for_epochs(train_batch, 1)
    if isinstance(eval_batches, ArrayBatches):
        eval_batches = eval_batches.in_order
    for name, value, minimum in (
        ("steps", steps, 1),
        ("log_every", log_every, 1),
        ("checkpoint_every", checkpoint_every, 1),
        ("keep_checkpoints", keep_checkpoints, 1),
        ("eval_every", eval_every, 0),
    ):
        _check_count(name, value, minimum)
    if reduce_on_plateau and reduce_on_plateau.monitor.startswith("eval/") and not eval_batches:
        raise ValueError(
            f"reduce_on_plateau monitors {reduce_on_plateau.monitor!r}, logged only with "
            "eval_batches: pass them, or monitor a train/ metric"
        )
    monitor = early_stopping or EarlyStopping(
        "eval/loss" if eval_batches else "train/loss", patience=None
    )
    with _run_directory(run_dir) as run_dir:
        clock = metrics_lib.WallClock(run_dir, resume=resume)
        mesh = mesh or sharding_lib.make_mesh()
        first = train_batch(0)
        sharding_lib.check_batch_size(sharding_lib.batch_rows(first), mesh)
        per_step, unit = items_per_step(first)
        lines = progress and jax.process_index() == 0 and not metrics_lib.is_interactive()

        if reduce_on_plateau is not None:
            plateau_scale = optax.inject_hyperparams(optax.scale, hyperparam_dtype=np.float32)
            optimizer = optax.chain(optimizer, plateau_scale(step_size=1.0))
        graphdef, state = create_train_state(model, optimizer, carry)
        model.eval()
        eval_graphdef = nnx.graphdef(model)
        model.train()
        shardings = state_shardings(state, mesh)
        state = place_state(state, mesh)

        checkpointer = Checkpointer(f"{run_dir}/{CHECKPOINT_DIR}", max_to_keep=keep_checkpoints)
        best = Checkpointer(f"{run_dir}/{BEST_DIR}", max_to_keep=1) if restore_best else None
        start_step = 0
        if checkpointer.all_steps() and not resume:
            raise FileExistsError(
                f"{run_dir} already holds checkpoints {checkpointer.all_steps()}; pass "
                f"{spelled('resume')} to continue that run, or choose another "
                f"{spelled('run_dir')}"
            )
        if resume:
            restored = checkpointer.restore_latest(state, shardings)
            if restored is None:
                log.warning(
                    "%s: no valid checkpoint in %s, starting at step 0", spelled("resume"), run_dir
                )
            else:
                start_step, state = restored
                log.info("resumed from step %d", start_step)
        for stale in best.all_steps() if best else ():  # written after the step resumed
            if stale > start_step:
                best.delete(stale)
        if config is not None and jax.process_index() == 0:
            metrics_lib.write_json(os.path.join(run_dir, CONFIG_FILE), config)
        last_saved = start_step if start_step else None
        state_step = start_step  # the step `state` has reached

        writer = metrics_lib.MetricsWriter(run_dir, truncate_after=start_step if resume else None)
        records = (  # every record of the run so far: the history, and what early stopping reads
            metrics_lib.read_metrics(os.path.join(run_dir, metrics_lib.METRICS_FILE))
            if start_step
            else []
        )
        stop_requested = False

        def scale_on_plateau() -> None:
            # The multiplier of the metric's history so far into the last stage of the
            # optimizer (chained above), same dtype and placement: no recompilation.
            nonlocal state, stop_requested
            _, history = _logged(records, reduce_on_plateau.monitor)
            *rest, scaling = state.opt_state
            old = scaling.hyperparams["step_size"]
            new = jax.device_put(
                np.asarray(reduce_on_plateau.scale(history), old.dtype), old.sharding
            )
            hyperparams = {**scaling.hyperparams, "step_size": new}
            opt_state = (*rest, scaling._replace(hyperparams=hyperparams))
            state = state.replace(opt_state=opt_state)
            if reduce_on_plateau.should_stop(history):
                stop_requested = True

        if reduce_on_plateau is not None:
            scale_on_plateau()

        def log_metrics(step: int, values: dict[str, float]) -> None:
            nonlocal stop_requested
            writer.write(step, values)
            records.append({"step": step, **values})
            if reduce_on_plateau is not None and reduce_on_plateau.monitor in values:
                scale_on_plateau()
            if monitor.monitor not in values:
                return
            _, monitored = _logged(records, monitor.monitor)
            if best is not None and monitor.best_index(monitored) == len(monitored) - 1:
                best.save(state, step=step)
            if early_stopping is not None and early_stopping.should_stop(monitored):
                stop_requested = True

        if hparams is not None:
            writer.write_hparams(
                hparams, ("train/loss", "eval/loss") if eval_batches else ("train/loss",)
            )
        train_step = make_train_step(graphdef, optimizer, loss_fn, state, mesh)
        eval_step = make_eval_step(eval_graphdef, loss_fn, mesh) if eval_batches else None
        status, error, stopped_at = "completed", None, None
        train_metrics: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        if start_step >= steps:  # resuming a finished run: report what it logged
            for record in records:
                for prefix, target in (("train/", train_metrics), ("eval/", eval_metrics)):
                    if any(k.startswith(prefix) for k in record):
                        target.clear()
                        target.update(
                            {
                                k: v
                                for k, v in record.items()
                                if k.startswith(prefix) and k not in MONITORING
                            }
                        )
        pending: list[dict[str, jax.Array]] = []

        def run_eval(step):
            nonlocal eval_metrics
            result = evaluate(
                eval_step,
                state,
                eval_batches(),
                mesh,
                eval_carry() if eval_carry else None,
                progress=progress,
                desc=f"{desc} step {step}/{steps} eval",
            )
            eval_metrics = {f"eval/{k}": v for k, v in result.items()}
            log_metrics(step, eval_metrics)

        bar = tqdm(
            total=steps,
            initial=start_step,
            desc=desc,
            dynamic_ncols=True,
            disable=not progress or jax.process_index() != 0 or lines,
            mininterval=1.0,
        )
        if lines and start_step < steps:
            metrics_lib.log_line(
                f"{desc} steps {start_step + 1}-{steps}, {per_step:,} {unit} a step, "
                f"logging every {log_every}"
            )
        compile_time_s = None
        timed_s, timed_steps = 0.0, 0  # this process's steps after the first, and their time
        window_start, window_steps, paused = time.perf_counter(), 0, 0.0
        try:
            for step in range(start_step, steps):
                if stop_check is not None:
                    stop_check()
                batch = sharding_lib.shard_batch(train_batch(step), mesh)
                new_state, step_metrics = train_step(state, batch)
                pending.append(step_metrics)
                state, state_step = new_state, step + 1  # one statement: an interrupt sees a pair
                done = step + 1
                if compile_time_s is None:  # the first step compiles: timed on its own
                    jax.block_until_ready(step_metrics)
                    compile_time_s = round(time.perf_counter() - window_start, 3)
                    window_start = time.perf_counter()
                    if lines:
                        metrics_lib.log_line(
                            f"{desc} first step (compilation) {compile_time_s:.1f} s"
                        )
                else:
                    window_steps += 1
                save = done % checkpoint_every == 0 or done == steps
                logged = done % log_every == 0 or save
                if logged:
                    host = jax.device_get(pending)
                    bad = _non_finite(host)
                    if bad:
                        good = (
                            f"The last good checkpoint is step {last_saved} in "
                            f"{checkpointer.directory}"
                            if last_saved is not None
                            else "No checkpoint had been written yet"
                        )
                        raise NonFiniteLossError(
                            f"non-finite {sorted(bad)} between steps {done - len(pending) + 1} and "
                            f"{done}: training stopped. {good}. Lower the learning rate or the "
                            f"clip norm, then rerun with {spelled('resume')}."
                        )
                    window = _mean_metrics(host)
                    pending = []
                    train_metrics = {f"train/{k}": v for k, v in window.items()}
                    monitoring = {}
                    lr = applied_learning_rate(state.opt_state)
                    if lr is not None and reduce_on_plateau is not None:
                        lr = lr * state.opt_state[-1].hyperparams["step_size"]
                    if lr is not None:
                        monitoring[LEARNING_RATE] = float(jax.device_get(lr))
                    if window_steps:
                        seconds = time.perf_counter() - window_start - paused
                        timed_s, timed_steps = timed_s + seconds, timed_steps + window_steps
                        monitoring[STEP_TIME] = seconds / window_steps
                        monitoring[f"train/{unit}_per_s"] = per_step * window_steps / seconds
                    log_metrics(done, {**train_metrics, **monitoring})
                    clock.save()
                    postfix = {"loss": f"{window['loss']:.4f}"}
                    if lr is not None:
                        postfix["lr"] = f"{monitoring[LEARNING_RATE]:.1e}"
                    bar.set_postfix(postfix, refresh=False)
                    if lines:
                        metrics_lib.log_line(_progress_line(desc, done, steps, window, monitoring))
                evaluating = eval_step and (
                    (eval_every and done % eval_every == 0) or done == steps
                )
                if evaluating or save or stop_requested:  # not part of the step time
                    jax.block_until_ready(state.step)
                    pause_start = time.perf_counter()
                    if evaluating:
                        run_eval(done)
                        if stop_when is not None and stop_when(eval_metrics):
                            stop_requested = True
                    if stop_requested and done < steps:
                        stopped_at, save = done, True
                    if save:
                        checkpointer.save(state, step=done)
                        last_saved = done
                    paused += time.perf_counter() - pause_start
                if logged:
                    window_start, window_steps, paused = time.perf_counter(), 0, 0.0
                bar.update(1)
                if stopped_at is not None:
                    if pending:  # the window since the last log line ends here
                        window = _mean_metrics(jax.device_get(pending))
                        pending = []
                        train_metrics = {f"train/{k}": v for k, v in window.items()}
                        log_metrics(done, train_metrics)
                    if lines:
                        metrics_lib.log_line(f"{desc} stopped early at step {done}")
                    break
        except NonFiniteLossError as e:
            status, error = "diverged", str(e)
            raise
        except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C, or SIGTERM via experiments.run
            status, error = "interrupted", f"{type(e).__name__}: {e}"
            if state_step > (last_saved or 0) and not _non_finite(jax.device_get(pending)):
                try:  # keep the work done since the last save
                    checkpointer.save(state, step=state_step)
                    last_saved = state_step
                    log.warning(
                        "interrupted: saved step %d; rerun with %s", state_step, spelled("resume")
                    )
                except Exception as save_error:  # the interrupt, not this, is what to report
                    log.error("interrupted, and saving step %d failed: %s", state_step, save_error)
            raise
        except BaseException as e:
            status, error = "failed", f"{type(e).__name__}: {e}"
            raise
        finally:
            bar.close()
            writer.close()
            checkpointer.close()
            clock.save()
            final_digest = params_digest(state.params) if status == "completed" else None
            logged_at, monitored = _logged(records, monitor.monitor)
            best_index = monitor.best_index(monitored)
            best_step = logged_at[best_index] if best_index is not None else None
            if best is not None:
                if status == "completed" and best_step is not None:
                    state = best.restore(best_step, state, shardings)
                best.close()
            if status in ("completed", "interrupted"):  # the module given is the one trained
                nnx.update(model, state.params, state.rest)
            summary = {
                "status": status,
                "error": error,
                "steps": steps,
                "stopped_at_step": stopped_at,
                "resumed_from_step": start_step if resume else None,
                "last_checkpoint_step": last_saved,
                "final": {**train_metrics, **eval_metrics},
                "params_sha256": final_digest,
                "monitored": {
                    "metric": monitor.monitor,
                    "best_step": best_step,
                    "best_value": monitored[best_index] if best_index is not None else None,
                    "restored_best": best is not None and best_step is not None,
                },
                # every process of the run, kills and resumes included
                "wall_time_s": clock.total(),
                "process_wall_times_s": clock.process_seconds(),
                # this process's: its first step (compilation) and the mean of the others
                "compile_time_s": compile_time_s,
                "step_time_s": timed_s / timed_steps if timed_steps else None,
                f"{unit}_per_s": per_step * timed_steps / timed_s if timed_steps else None,
                f"{unit}_per_step": per_step,
                "mesh": {"shape": dict(mesh.shape), "devices": int(mesh.devices.size)},
                **metrics_lib.environment_info(),
                **(
                    {"hparams": metrics_lib.flatten_hparams(hparams)} if hparams is not None else {}
                ),
                **(extra_summary or {}),
            }
            if jax.process_index() == 0:
                metrics_lib.write_json(os.path.join(run_dir, metrics_lib.SUMMARY_FILE), summary)
        return FitResult(summary, state, graphdef, history_of(records))
