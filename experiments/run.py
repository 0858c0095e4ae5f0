r"""The one entry point for experiments: a config file, overrides, a run directory.

  python -m experiments.run --config experiments/configs/<name>.py[:smoke] \
      [--config.key=value ...] [--workdir runs/<name>] [--resume] [--data_dir DIR]

Configs are ml_collections config files (as in Flax's examples and big_vision); any field
can be overridden on the command line, and a field that does not exist is an error, and so
is a value out of range (checked by :func:`validate_config` before anything is built). A
config lists one or more recurrent cells (``config.cells``) and seeds (``config.seeds``);
each (cell, seed) is trained in ``<workdir>/<cell>/seed<k>/`` whatever their number
(``config.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``,
``summary.json``), the job's whole config goes to ``<workdir>/config.json`` (the last
job's: jobs that share a workdir, one cell or seed each, or a budget raised on resume,
overwrite it; each run's own ``config.json`` is the record), and with several cells or
seeds the job ends with a table of final losses (mean over seeds, 95% interval) against
the task's baseline, or with the best losses for a language model, and a plot,
``<workdir>/comparison.{md,png}``. The seed sets the model's initialisation, dropout and
the training and evaluation streams. ``--resume`` continues each seed's run, skips a seed
that has completed its budget, and refuses a workdir laid out otherwise or a config that
differs from the stored one in anything but the step budget and the logging, evaluation
and checkpoint cadence (:data:`RESUMABLE`). With ``config.select_best`` the checkpoint of
the best validation loss is kept in ``best/`` and evaluated on the validation and test
sets (``summary.json``'s ``best``).
When stdout is not a terminal (a scheduler's log) progress is plain lines, not a bar.

Data for the text tasks is found under ``--data_dir``, which defaults to
``$LSTM_JAX_DATA``. On several hosts, start the same command on every host with
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` set (or
``--config.distributed=on`` on a TPU pod / SLURM cluster).

Killed with SIGTERM (acted on at the next step) or Ctrl-C, a run checkpoints the step it
reached and writes ``summary.json`` with status ``"interrupted"``; ``--resume`` continues
it. ``wall_time_s`` in ``summary.json`` sums every process of a run (``wall_clock.json``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from flax import nnx
from ml_collections import config_flags

from experiments import analytic, gradients, protocols, report
from lstm_jax import data, train

DATA_ENV = "LSTM_JAX_DATA"
TASKS = ("adding", "copy", "lookahead", "mnist1d", "char", "ptb")
SYNTHETIC = ("adding", "copy", "lookahead")  # generated on the fly: data.SyntheticTask
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
# the config fields a resumed run may change: its length and its cadence
RESUMABLE = frozenset(
    {
        "steps",
        "epochs",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "progress",
        "distributed",
        "download",
        "seeds",
    }
)
# what a run writes into its own directory: found directly in a workdir, it is a run
# written there before every run had its <workdir>/<cell>/
RUN_MARKERS = ("checkpoints", "metrics.jsonl", "summary.json")
# what the data, not the config, fixes of a model's shapes; recorded in each run's
# config.json beside the config, so that --resume compares it (where it was recorded)
DATA_SHAPES = ("vocab_size",)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the newest valid checkpoint.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.environ.get(DATA_ENV), f"Data directory (default: ${DATA_ENV})."
)


class Task:
    """A task's data, model and loss, built from the config (public API only)."""

    def __init__(self, config, data_dir: str | None):
        if config.get("seed") is None:  # a job config: its first seed
            config = seed_config(config, seeds_of(config)[0])
        self.config = config
        c = config
        self.carry_batch = None
        self.out_size, self.input_size = 1, 2  # the sequence models' (adding problem)
        self.steps_per_epoch = None  # text tasks: windows per pass over the training split
        self.test_batches = None
        self.heldout_batches = None  # synthetic tasks: the test stream of select_best
        self.corpus = None  # the text tasks' data.Corpus (its vocab decodes samples)
        if c.task in SYNTHETIC:
            if c.epochs:
                raise ValueError(f"config.epochs is for the text tasks; {c.task} counts steps")
            k = c.get("lookahead_k", 5)

            def stream(offset):
                seed = c.seed + offset
                return data.SyntheticTask(c.task, c.batch_size, c.seq_len, seed=seed, k=k)

            train_data, eval_data, test_data = stream(0), stream(10**6), stream(3 * 10**6)
            self.baseline = train_data.baseline
            self.train_batch = train_data.batch
            self.eval_batches = lambda: (eval_data.batch(i) for i in range(c.eval_batches))
            # a held-out stream, apart from the one that selects checkpoints and rates
            self.heldout_batches = lambda: (test_data.batch(i) for i in range(c.eval_batches))
            if c.task == "adding":
                self.loss_fn, self.vocab_size = train.regression_loss, None
            else:
                self.loss_fn, self.vocab_size = token_loss_fresh_state, train_data.vocab_size
                self.carry_batch = c.batch_size
            return
        if c.task == "mnist1d":
            self._init_mnist1d()
            return
        if not data_dir:
            raise FileNotFoundError(
                f"task {c.task!r} needs data: pass --data_dir or set ${DATA_ENV} "
                f"(e.g. to ../shared/data)"
            )
        if c.task == "char":
            if c.text_file in data.KNOWN_FILES:  # knows its address: says it, or downloads
                path = data.fetch(c.text_file, data_dir, download=c.download)
            else:
                path = os.path.join(data_dir, c.text_file)
            corpus = data.load_char_text(path, split=c.get("text_split", "contiguous"))
        elif c.task == "ptb":
            for split in ("train", "valid", "test"):
                data.fetch(f"ptb/ptb.{split}.txt", data_dir, download=c.download)
            corpus = data.load_ptb(os.path.join(data_dir, "ptb"))
        else:
            raise ValueError(
                f"config.task must be adding, copy, mnist1d, char or ptb, got {c.task!r}"
            )
        self.corpus = corpus
        self.eval_protocol = protocols.check_protocol(c, corpus)  # of the test split
        self.baseline = float(np.log(corpus.vocab_size))  # uniform guess, nats per token
        self.vocab_size = corpus.vocab_size
        stream = data.LMStream(data.batchify(corpus.train, c.batch_size), c.seq_len)
        valid = data.LMStream(data.batchify(corpus.valid, c.batch_size), c.seq_len)
        self.train_batch = stream.batch
        n_eval = (
            valid.num_batches if c.eval_batches <= 0 else min(c.eval_batches, valid.num_batches)
        )
        self.eval_batches = lambda: (valid.batch(i) for i in range(n_eval))
        self.steps_per_epoch = stream.num_batches
        if c.eval_test:
            test = data.LMStream(data.batchify(corpus.test, c.batch_size), c.seq_len)
            n_test = (
                test.num_batches if c.eval_batches <= 0 else min(c.eval_batches, test.num_batches)
            )
            self.test_batches = lambda: (test.batch(i) for i in range(n_test))
        self.loss_fn = (
            functools.partial(train.token_loss, sum_over_time=True)
            if c.loss_sum_over_time
            else train.token_loss
        )
        self.carry_batch = c.batch_size

    def _init_mnist1d(self) -> None:
        """MNIST-1D (Greydanus 2020): 4,000 + 1,000 sequences of 40 steps, 10 classes.

        Generated by the ``mnist1d`` package's ``make_dataset`` (no download). Training
        batches are a pure function of the step: epoch ``e`` visits the training set in
        the order of a permutation seeded by ``(seed, e)``. Evaluation is on the test set.
        """
        c = self.config
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as e:
            raise FileNotFoundError(
                "task mnist1d needs the mnist1d package: pip install mnist1d "
                "(part of lstm_jax[train])"
            ) from e
        if c.epochs:
            raise ValueError("config.epochs is for the text tasks; mnist1d counts steps")
        d = make_dataset(get_dataset_args())
        x, y = d["x"].astype(np.float32), d["y"].astype(np.int32)
        x_test, y_test = d["x_test"].astype(np.float32), d["y_test"].astype(np.int32)
        b = c.batch_size
        per_epoch = len(x) // b

        def train_batch(step):
            order = np.random.default_rng((c.seed, step // per_epoch)).permutation(len(x))
            idx = order[(step % per_epoch) * b : (step % per_epoch + 1) * b]
            return {"inputs": np.ascontiguousarray(x[idx].T[..., None]), "labels": y[idx]}

        n_eval = len(x_test) // b if c.eval_batches <= 0 else c.eval_batches
        self.train_batch = train_batch
        self.eval_batches = lambda: (
            {
                "inputs": np.ascontiguousarray(x_test[i * b : (i + 1) * b].T[..., None]),
                "labels": y_test[i * b : (i + 1) * b],
            }
            for i in range(n_eval)
        )
        self.baseline = float(np.log(10.0))  # cross-entropy of a uniform guess
        self.vocab_size = None
        self.out_size, self.input_size = 10, 1
        self.loss_fn = train.classification_loss

    def schedule(self) -> dict:
        """Steps, evaluation/checkpoint intervals and step-decay arguments, in steps.

        With ``config.epochs > 0`` (text tasks) the run is that many passes over the
        training split, ``-1`` for ``eval_every``/``checkpoint_every`` means once an epoch,
        and the learning rate decays by ``optimizer.decay_rate`` every epoch after
        ``optimizer.decay_after_epochs`` epochs.
        """
        c, o = self.config, self.config.optimizer
        per_epoch = self.steps_per_epoch if c.epochs else None
        if not per_epoch and -1 in (c.eval_every, c.checkpoint_every):
            raise ValueError("eval_every/checkpoint_every = -1 (once an epoch) needs epochs > 0")
        if o.decay_rate != 1.0 and not per_epoch:
            raise ValueError("optimizer.decay_rate (a decay per epoch) needs epochs > 0")
        every = {
            k: per_epoch if v == -1 else v
            for k, v in (("eval_every", c.eval_every), ("checkpoint_every", c.checkpoint_every))
        }
        decay = {}
        if o.decay_rate != 1.0:
            decay = dict(
                decay_rate=o.decay_rate,
                decay_begin=o.decay_after_epochs * per_epoch,
                decay_every=per_epoch,
            )
        steps = c.epochs * per_epoch if per_epoch else c.steps
        return dict(steps=steps, steps_per_epoch=self.steps_per_epoch, decay=decay, **every)

    def optimizer(self):
        """The config's optax optimizer, with the schedule's per-epoch decay."""
        o = self.config.optimizer
        return train.make_optimizer(
            o.name,
            o.learning_rate,
            clip_norm=o.clip_norm,
            weight_decay=o.weight_decay,
            warmup_steps=o.warmup_steps,
            decay_steps=o.decay_steps,
            **self.schedule()["decay"],
        )

    def model(self, cell: str) -> nnx.Module:
        m = self.config.model
        kwargs = {"nonlinearity": m.nonlinearity} if cell == "rnn" else {}
        if cell == "lstm" and m.lstm_forget_bias is not None:
            kwargs["forget_bias"] = m.lstm_forget_bias
        if cell == "lstm" and m.lstm_chrono_init is not None:
            kwargs["chrono_init"] = m.lstm_chrono_init
        if m.get("recurrent_init", "uniform") != "uniform":
            kwargs["recurrent_init"] = m.recurrent_init
        if m.bidirectional:
            kwargs["bidirectional"] = True
        if m.get("backend", "auto") != "auto":
            kwargs["backend"] = m.backend
        hidden = self.hidden_size(cell)
        rngs = nnx.Rngs(params=self.config.seed, dropout=self.config.seed + 1)
        if self.vocab_size is None:
            model = train.SequenceRegressor(
                cell,
                self.input_size,
                hidden,
                self.num_layers(cell),
                self.out_size,
                rngs=rngs,
                dropout=m.dropout,
                **kwargs,
            )
        else:
            model = train.TokenModel(
                cell,
                self.vocab_size,
                m.embed_size,
                hidden,
                self.num_layers(cell),
                dropout=m.dropout,
                io_dropout=m.io_dropout,
                rngs=rngs,
                **kwargs,
            )
        if m.init_scale:  # every parameter uniform in [-s, s] (Zaremba et al. 2014)
            train.init_uniform(model, m.init_scale, key=jax.random.key(self.config.seed + 2))
        return model

    def num_layers(self, cell: str) -> int:
        """``model.layers_by_cell[cell]`` where given, else ``model.num_layers``."""
        m = self.config.model
        return (m.get("layers_by_cell") or {}).get(cell, m.num_layers)

    def hidden_size(self, cell: str) -> int:
        """``model.hidden_size``, or with ``model.match_params`` naming a cell kind, the
        hidden size at which ``cell``'s recurrent layers (:meth:`num_layers` of them) have
        as many parameters as that cell's at ``model.hidden_size``
        (:func:`experiments.analytic.matched_hidden`)."""
        m = self.config.model
        ref = m.get("match_params")
        if not ref or ref == cell or cell not in train.cell_kinds():
            return m.hidden_size
        features = self.input_size if self.vocab_size is None else m.embed_size
        directions = 2 if m.bidirectional else 1
        target = analytic.recurrent_params(
            ref, features, m.hidden_size, self.num_layers(ref), directions
        )
        return analytic.matched_hidden(cell, target, features, self.num_layers(cell), directions)


class ConfigError(ValueError):
    """A config value out of range; the message names each field, its value and the rule."""


_MISSING = object()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_config(c) -> None:
    """Checks every field the entry point reads, before anything is built.

    Raises:
      ConfigError: one line per bad field: ``config.<field> must be <rule>, got <value>``.
    """
    errors = []

    def check(path, ok, rule):
        value = c
        for key in path.split("."):
            value = value.get(key, _MISSING) if hasattr(value, "get") else _MISSING
        if value is not _MISSING and not ok(value):
            errors.append(f"config.{path} must be {rule}, got {value!r}")

    def count(minimum, *also):
        return lambda v: (_is_int(v) and v >= minimum) or v in also

    def positive(v):
        return _is_number(v) and v > 0

    def boolean(v):
        return isinstance(v, bool)

    def fraction(v):
        return _is_number(v) and 0 <= v < 1

    check("task", lambda v: v in TASKS, f"one of {TASKS}")
    check(
        "cells",
        lambda v: isinstance(v, tuple | list) and v and all(x in train.cell_kinds() for x in v),
        f"a non-empty tuple of registered cell kinds {train.cell_kinds()}, e.g. ('lstm',)",
    )
    check("epochs", count(0), "an integer >= 0 (0: count steps)")
    if not c.get("epochs"):
        check("steps", count(1), "an integer >= 1")
    for field in ("seq_len", "batch_size", "log_every", "keep_checkpoints"):
        check(field, count(1), "an integer >= 1")
    check("lookahead_k", count(1), "an integer >= 1")
    k = c.get("lookahead_k", 5)
    if c.get("task") in SYNTHETIC and count(1)(c.get("seq_len")) and count(1)(k):
        try:  # the task's own rule for its length
            data.SyntheticTask(c.task, 1, c.seq_len, k=k).batch(0)
        except ValueError as e:
            errors.append(f"config.seq_len is the {c.task} task's length: {e}")
    check("seed", _is_int, "an integer")
    check(
        "seeds",
        lambda v: (
            isinstance(v, tuple | list)
            and v
            and all(_is_int(x) and x >= 0 for x in v)
            and len(set(v)) == len(v)
        ),
        "a non-empty tuple of distinct integers >= 0, e.g. (0, 1, 2)",
    )
    check("select_best", boolean, "True or False (a bool, not a string)")
    check("stop_when_solved", boolean, "True or False (a bool, not a string)")
    if c.get("stop_when_solved") and (c.get("task") not in ("adding", "copy") or not c.eval_every):
        errors.append(
            "config.stop_when_solved needs the adding or copy task (a solved mark) and "
            "evaluations during training (eval_every >= 1)"
        )
    check("model.backend", lambda v: v in ("auto", "scan", "fused", "cudnn"), "a backend name")
    check(
        "model.match_params",
        lambda v: v is None or v in train.cell_kinds(),
        f"None or one of {train.cell_kinds()}",
    )
    if c.get("select_best") and not c.get("eval_every"):
        errors.append("config.select_best needs evaluations during training (eval_every != 0)")
    check("eval_every", count(0, -1), "an integer >= 1, 0 (only at the end) or -1 (each epoch)")
    check("checkpoint_every", count(1, -1), "an integer >= 1 or -1 (each epoch)")
    if c.get("task") in ("adding", "copy"):
        check("eval_batches", count(1), f"an integer >= 1 for the {c.task} task")
    else:
        check("eval_batches", _is_int, "an integer (<= 0: the whole split)")
    check("probe_gradients", count(0), "an integer >= 0")
    check("distributed", lambda v: v in ("auto", "on", "off"), "'auto', 'on' or 'off'")
    for field in ("eval_test", "loss_sum_over_time", "progress", "download", "model.bidirectional"):
        check(field, boolean, "True or False (a bool, not a string)")
    check("model.hidden_size", count(1), "an integer >= 1")
    check("model.num_layers", count(1), "an integer >= 1")
    check(
        "model.layers_by_cell",
        lambda v: (
            hasattr(v, "items")
            and all(k in train.cell_kinds() and count(1)(n) for k, n in v.items())
        ),
        "a mapping from cell kinds to integers >= 1, e.g. {'min_lstm': 3}",
    )
    check("model.embed_size", count(0), "an integer >= 0")
    check("model.dropout", fraction, "a number in [0, 1)")
    check("model.io_dropout", fraction, "a number in [0, 1)")
    check("model.init_scale", lambda v: _is_number(v) and v >= 0, "a number >= 0 (0: off)")
    check("model.nonlinearity", lambda v: v in ("tanh", "relu"), "'tanh' or 'relu'")
    check("model.lstm_forget_bias", lambda v: v is None or _is_number(v), "a number or None")
    check("model.lstm_chrono_init", lambda v: v is None or positive(v), "a number > 0 or None")
    check("model.recurrent_init", lambda v: v in ("uniform", "orthogonal"), "uniform or orthogonal")
    check("optimizer.plateau_patience", count(0), "an integer >= 0 (0: no cut on a plateau)")
    check("optimizer.plateau_factor", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)")
    check("optimizer.plateau_max_reductions", count(-1), "an integer >= -1 (-1: never stop)")
    if c.get("optimizer", {}).get("plateau_patience") and not c.get("eval_every"):
        errors.append("config.optimizer.plateau_patience needs evaluations (eval_every != 0)")
    check("optimizer.name", lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}")
    check("optimizer.learning_rate", positive, "a number > 0")
    check("optimizer.clip_norm", lambda v: v is None or positive(v), "a number > 0 or None")
    check("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    check("optimizer.warmup_steps", count(0), "an integer >= 0")
    check("optimizer.decay_steps", count(0), "an integer >= 0")
    check("optimizer.decay_rate", positive, "a number > 0 (1: no decay)")
    check("optimizer.decay_after_epochs", count(0), "an integer >= 0")
    for field in ("eval_every", "checkpoint_every"):
        if c.get(field) == -1 and not c.get("epochs"):
            errors.append(f"config.{field} = -1 means once an epoch, which needs epochs > 0")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def seeds_of(c) -> tuple[int, ...]:
    """The config's seeds: ``config.seeds``, or ``(config.seed,)`` for a config without."""
    seeds = c.get("seeds")
    return tuple(seeds) if seeds else (c.get("seed", 0),)


def run_name(cell: str, seed: int) -> str:
    """A run's directory relative to its workdir: ``<cell>/seed<k>``."""
    return os.path.join(cell, f"seed{seed}")


def seed_config(c, seed: int) -> ml_collections.ConfigDict:
    """The job config ``c`` for one seed: ``seed`` set, ``seeds`` that one seed."""
    config = ml_collections.ConfigDict(c.to_dict())
    config.seed = seed
    config.seeds = (seed,)
    return config


def check_workdir(workdir: str, run_configs: dict[str, dict], resume: bool) -> None:
    """Refuses a workdir whose layout or stored configs do not match this job.

    Every run is ``<workdir>/<cell>/seed<k>/`` (the keys of ``run_configs``, relative
    paths), so run files directly in ``workdir`` or in ``<workdir>/<cell>/`` are runs of
    an older layout; with ``resume``, each run's stored ``config.json`` must equal its
    config but for the fields in :data:`RESUMABLE`, the data's :data:`DATA_SHAPES`
    included (where the stored one records them: runs written before did not).

    Raises:
      FileExistsError: naming the directory, what it holds and what to do.
    """
    for name in run_configs:
        parts = name.split(os.sep)
        for depth in range(len(parts)):  # the workdir and each directory above the run
            above = os.path.join(workdir, *parts[:depth])
            found = [m for m in RUN_MARKERS if os.path.exists(os.path.join(above, m))]
            if found:
                raise FileExistsError(
                    f"{above} holds a run's {', '.join(found)} directly, but every run now "
                    f"goes to <workdir>/<cell>/seed<k>/ (here {os.path.join(workdir, name)}/):"
                    f" move that run's files there to {'resume' if resume else 'keep'} it, "
                    "or choose another --workdir"
                )
    if not resume:
        return
    for name, config in run_configs.items():
        path = os.path.join(workdir, name, "config.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            stored = _flat(json.load(f))
        now = _flat(json.loads(json.dumps(config, default=str)))
        diffs = [
            f"{k}: stored {stored.get(k, '(absent)')!r}, now {now.get(k, '(absent)')!r}"
            for k in sorted(set(stored) | set(now))
            if k not in RESUMABLE
            and stored.get(k, _MISSING) != now.get(k, _MISSING)
            and not (k in DATA_SHAPES and (k not in stored or k not in now))
        ]
        if diffs:
            raise FileExistsError(
                f"--resume: {path} was written by a different config ("
                + "; ".join(diffs)
                + f"); a resumed run may change only {sorted(RESUMABLE)}. Resume with the "
                "stored values, or choose another --workdir"
            )


def cell_config(c, cell: str, seed: int | None = None, task: Task | None = None) -> dict:
    """The config of one run (``<workdir>/<cell>/seed<k>/config.json``); with ``task``,
    what its data fixes of the model's shapes (:data:`DATA_SHAPES`) beside it."""
    config = c.to_dict()
    config["cells"] = [cell]
    if seed is not None:
        config["seed"], config["seeds"] = seed, [seed]
    if task is not None:
        config.update({k: getattr(task, k) for k in DATA_SHAPES})
    return config


def completed_summary(run_dir: str, steps: int) -> dict | None:
    """The run's summary when it has completed at least ``steps`` steps, else ``None``."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    if summary.get("status") == "completed" and summary.get("steps", 0) >= steps:
        return summary
    return None


def token_loss_fresh_state(model, batch, carry):
    """Per-step cross-entropy where every sequence starts from a zero state (copy task)."""
    reset = np.ones((batch["inputs"].shape[1],), dtype=bool)
    return train.token_loss(model, dict(batch, reset=reset), carry)


def train_cell(task: Task, cell: str, run_dir: str, resume: bool) -> dict:
    """Trains one cell kind in ``run_dir`` and returns its summary."""
    c = task.config
    config = cell_config(c, cell, task=task)  # written by fit, once run_dir is locked
    model = task.model(cell)
    if c.probe_gradients and jax.process_index() == 0:
        probe = gradients.probe_batch(c)
        init_norms = gradients.carry_gradient_norms(model, probe)
    carry = model.zero_carry(task.carry_batch) if task.carry_batch else None
    eval_carry = (lambda: model.zero_carry(c.batch_size)) if task.carry_batch else None
    plan = task.schedule()
    optimizer = task.optimizer()
    keep = c.keep_checkpoints
    if c.get("select_best"):  # every evaluation's checkpoint, until the best is known
        keep = max(keep, plan["steps"] // plan["checkpoint_every"] + 1)
    with train.spelled_as(resume="--resume", run_dir="--workdir"):
        result = train.fit(
            model,
            task.loss_fn,
            optimizer,
            task.train_batch,
            steps=plan["steps"],
            run_dir=run_dir,
            eval_batches=task.eval_batches,
            carry=carry,
            eval_carry=eval_carry,
            log_every=c.log_every,
            eval_every=plan["eval_every"],
            checkpoint_every=plan["checkpoint_every"],
            keep_checkpoints=keep,
            resume=resume,
            progress=c.progress,
            desc=f"{c.name}/{cell}",
            stop_check=_exit_if_stopped,
            stop_when=solved_mark(task.baseline) if c.get("stop_when_solved") else None,
            reduce_on_plateau=plateau(c.optimizer),
            hparams=config,
            config=config,
            extra_summary={
                "cell": cell,
                "task": c.task,
                "seq_len": c.seq_len,
                "seed": c.seed,
                "hidden_size": task.hidden_size(cell),
                "num_layers": task.num_layers(cell),
                "recurrent_params": _recurrent_params(model),
                "baseline": task.baseline,
                "steps_per_epoch": plan["steps_per_epoch"],
            },
        )
    summary = result.summary
    trained = nnx.merge(result.graphdef, result.state.params, result.state.rest)
    trained.eval()
    extra = {}
    if task.test_batches is not None:  # text tasks: both protocols, one as test/loss
        extra.update(protocols.evaluate_test(task, nnx.graphdef(trained), result.state, model))
    if task.vocab_size is not None and c.task in ("char", "ptb"):  # perplexity = exp(nats)
        for split in ("train", "eval", "test"):
            loss = {**summary["final"], **extra}.get(f"{split}/loss")
            if loss is not None:
                extra[f"{split}/perplexity"] = math.exp(loss)
    if c.get("select_best"):
        summary["best"] = evaluate_best(task, cell, run_dir, result)
    if c.probe_gradients and jax.process_index() == 0:
        trained_norms = gradients.carry_gradient_norms(trained, probe)
        gradients.write(run_dir, cell, init_norms, trained_norms)
    if extra or c.get("select_best"):
        summary["final"].update(extra)
        if jax.process_index() == 0:
            train.write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def plateau(o) -> train.ReduceOnPlateau | None:
    """The optimizer config's cut of the rate when eval/loss stops improving, or ``None``."""
    if not o.get("plateau_patience"):
        return None
    most = o.get("plateau_max_reductions", -1)
    return train.ReduceOnPlateau(
        "eval/loss", o.plateau_patience, o.plateau_factor, max_reductions=None if most < 0 else most
    )


def solved_mark(baseline: float):
    """``eval metrics -> bool``: true under the solved mark (:func:`report.is_solved`), the
    early stop of ``config.stop_when_solved``."""
    return lambda metrics: report.is_solved(metrics["eval/loss"], baseline)


def _recurrent_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model.core, nnx.Param)))


BEST_DIR = "best"  # <run_dir>/best/<step>/: the checkpoint of the best validation loss


def evaluate_best(task: Task, cell: str, run_dir: str, result) -> dict:
    """Evaluates the checkpoint of the lowest validation loss on validation and test.

    The step is read from ``metrics.jsonl``; that checkpoint is copied to
    ``<run_dir>/best/<step>/`` (kept, unlike the rotating ones) and restored from there.
    Returns ``{"step", "eval/<metric>", "test/<metric>"}`` (and perplexities for text).
    """
    import shutil

    c = task.config
    records = train.read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    evals = [(r["eval/loss"], r["step"]) for r in records if "eval/loss" in r]
    _, step = min(evals)
    best_dir = os.path.join(run_dir, BEST_DIR)
    src, dst = os.path.join(run_dir, "checkpoints", str(step)), os.path.join(best_dir, str(step))
    if jax.process_index() == 0 and not os.path.isdir(dst):
        if not os.path.isdir(src):
            raise train.CheckpointError(
                f"no checkpoint of step {step} (the best validation) in {run_dir}/checkpoints: "
                "select_best needs checkpoint_every = eval_every"
            )
        shutil.rmtree(best_dir, ignore_errors=True)
        shutil.copytree(src, dst)
    restored = train.Checkpointer(best_dir).restore_latest(result.state)
    if restored is None:
        raise train.CheckpointError(f"the best checkpoint {dst} could not be restored")
    _, state = restored
    model = nnx.merge(result.graphdef, state.params, state.rest)
    model.eval()
    mesh = train.make_mesh()
    eval_step = train.make_eval_step(nnx.graphdef(model), task.loss_fn, mesh)
    carry = model.zero_carry(c.batch_size) if task.carry_batch else None
    best = {"step": step}
    splits = [("eval", task.eval_batches)]
    if (task.test_batches or task.heldout_batches) is not None:
        splits.append(("test", task.test_batches or task.heldout_batches))
    for split, batches in splits:
        metrics = train.evaluate(eval_step, state, batches(), mesh, carry)
        best.update({f"{split}/{k}": v for k, v in metrics.items()})
        if c.task in ("char", "ptb"):
            best[f"{split}/perplexity"] = math.exp(metrics["loss"])
    return best


_STOP_SIGNAL: list[int] = []  # the SIGTERM received, if any


def _record_sigterm(signum, frame):
    """SIGTERM (a scheduler's or ``timeout``'s kill) is recorded here and acted on at the
    next step boundary by :func:`_exit_if_stopped`: raising from the handler could land
    inside the TensorBoard writer or a checkpoint save and hang the exit."""
    del frame
    _STOP_SIGNAL.append(signum)


def _exit_if_stopped():
    """After SIGTERM, unwinds like Ctrl-C: ``fit`` saves a checkpoint and an "interrupted"
    summary before the process exits with status 128 + 15."""
    if _STOP_SIGNAL:
        raise SystemExit(128 + _STOP_SIGNAL[0])


def main(argv):
    del argv
    signal.signal(signal.SIGTERM, _record_sigterm)
    absl_logging.set_verbosity(absl_logging.WARNING)
    c = _CONFIG.value
    if c is None:
        raise app.UsageError("--config is required, e.g. --config experiments/configs/adding.py")
    try:
        validate_config(c)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    train.initialize_distributed(c.distributed)
    workdir = _WORKDIR.value or os.path.join("runs", c.name)
    start = time.time()
    try:
        task = Task(seed_config(c, seeds_of(c)[0]), _DATA_DIR.value)
        for cell in c.cells:
            train.recurrent_class(cell)  # fail before training if a cell kind is unknown
        seeds = seeds_of(c)
        check_workdir(
            workdir,
            {run_name(cell, s): cell_config(c, cell, s, task) for cell in c.cells for s in seeds},
            _RESUME.value,
        )
    except (FileNotFoundError, FileExistsError, NotImplementedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        os.makedirs(workdir, exist_ok=True)
        if jax.process_index() == 0:
            train.write_json(os.path.join(workdir, "config.json"), c.to_dict())
    except OSError as e:
        print(f"error: cannot write to --workdir {workdir}: {e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    summaries = {}
    tasks = {seeds[0]: task}
    steps = task.schedule()["steps"]
    for seed in seeds:
        for cell in c.cells:
            _exit_if_stopped()
            name = run_name(cell, seed)
            run_dir = os.path.join(workdir, name)
            done = completed_summary(run_dir, steps) if _RESUME.value else None
            if done is not None:
                print(f"{c.name}/{name}: completed ({done['steps']} steps), skipped")
                summaries[name] = done
                continue
            if seed not in tasks:
                tasks[seed] = Task(seed_config(c, seed), _DATA_DIR.value)
            try:
                summaries[name] = train_cell(tasks[seed], cell, run_dir, _RESUME.value)
            except (
                train.NonFiniteLossError,
                train.CheckpointError,
                FileExistsError,
                BlockingIOError,  # another process runs in this run directory
                PermissionError,  # the run directory cannot be written
            ) as e:
                print(f"error ({name}): {e}", file=sys.stderr)
                sys.exit(1)
    if len(summaries) > 1 and jax.process_index() == 0:
        table = report.compare(workdir, list(c.cells))
        print(table)
    print(f"{c.name}: {len(summaries)} run(s) in {time.time() - start:.0f} s, see {workdir}")
    print(json.dumps({name: s["final"] for name, s in summaries.items()}, indent=1))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with an override of a config key that does not exist as a flag error."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: no such field
        while isinstance(e, (AttributeError, KeyError)) and e.args:  # unwrap the nested key
            e = e.args[0]
        detail = " ".join(str(e).split())
        print(
            f"error: a --config.* override names a key the config does not have: {detail}",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
