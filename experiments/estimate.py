r"""Times a config's train step (and eval step) and estimates the full run's wall time.

  python -m experiments.estimate --config experiments/configs/ptb.py:small \
      [--steps 50] [--data_dir DIR] [--out runs/estimate_ptb_small.json]

Builds the config's task and first model exactly as ``experiments.run`` does, compiles
the train and eval steps, then times ``--steps`` train steps and as many eval steps on
the real batches. The estimate is ``steps x train step + evaluations x eval windows x
eval step``; checkpoint writes and logging are left out (small next to the steps). A
JSON record goes to ``--out`` when given.

``--backends scan,fused`` times every cell once per kernel (``model.backend`` forced), so
cells are compared on the same kernel; each row also has the analytic FLOPs of a train
step (``experiments/analytic.py``) and the rate achieved.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
from absl import app, flags
from flax import nnx

from experiments import analytic, run
from lstm_jax import train

_CONFIG = run._CONFIG  # the entry point's --config and --data_dir (absl flags are global)
_DATA_DIR = run._DATA_DIR
_STEPS = flags.DEFINE_integer("steps", 50, "Train steps to time (after compilation).")
_OUT = flags.DEFINE_string("out", None, "Write the record as JSON here.")
_BACKENDS = flags.DEFINE_list("backends", [], "Kernels to time each cell on (default: config's).")


def _timed(fn, n):
    start = time.perf_counter()
    for i in range(n):
        out = fn(i)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n


def time_cell(task: run.Task, cell: str, steps: int) -> dict:
    """Seconds per train step and per eval step of ``cell``, and the full run's estimate."""
    c = task.config
    plan = task.schedule()
    model = task.model(cell)
    carry = model.zero_carry(task.carry_batch) if task.carry_batch else None
    o = c.optimizer
    optimizer = train.make_optimizer(
        o.name, o.learning_rate, clip_norm=o.clip_norm, decay_steps=o.decay_steps, **plan["decay"]
    )
    mesh = train.make_mesh()
    graphdef, state = train.create_train_state(model, optimizer, carry)
    state = train.place_state(state, mesh)
    step = train.make_train_step(graphdef, optimizer, task.loss_fn, state, mesh)
    model.eval()  # dropout off: the graph definition of the evaluation step
    eval_step = train.make_eval_step(nnx.graphdef(model), task.loss_fn, mesh)
    batches = [train.shard_batch(task.train_batch(i), mesh) for i in range(steps + 1)]
    holder = {"state": step(state, batches[0])[0]}  # compiles

    def one(i):
        holder["state"], metrics = step(holder["state"], batches[i + 1])
        return metrics

    t_train = _timed(one, steps)
    s = holder["state"]
    jax.block_until_ready(eval_step(s.params, s.rest, s.carry, batches[0]))  # compiles
    t_eval = _timed(lambda i: eval_step(s.params, s.rest, s.carry, batches[i])[0], steps)
    n_eval = sum(1 for _ in task.eval_batches())
    n_test = sum(1 for _ in task.test_batches()) if task.test_batches else 0
    evals = plan["steps"] // plan["eval_every"] if plan["eval_every"] else 1
    total = plan["steps"] * t_train + (evals * n_eval + n_test) * t_eval
    m = c.model
    features = task.input_size if task.vocab_size is None else m.embed_size
    flops = analytic.step_flops(
        cell,
        features,
        task.hidden_size(cell),
        m.num_layers,
        directions=2 if m.bidirectional else 1,
        batch_size=c.batch_size,
        seq_len=c.seq_len,
    )
    return {
        "cell": cell,
        "backend": m.get("backend", "auto"),
        "train_flops": flops,
        "train_step_s": t_train,
        "eval_step_s": t_eval,
        "timed_steps": steps,
        "steps": plan["steps"],
        "evaluations": evals,
        "eval_windows": n_eval,
        "test_windows": n_test,
        "estimated_wall_time_s": total,
    }


def main(argv):
    del argv
    rows = []
    for backend in _BACKENDS.value or [None]:
        c = run.seed_config(_CONFIG.value, run.seeds_of(_CONFIG.value)[0])
        if backend:
            c.model.backend = backend
        task = run.Task(c, _DATA_DIR.value)
        for cell in c.cells:
            rows.append(time_cell(task, cell, _STEPS.value))
            print(json.dumps(rows[-1]))
            print(
                f"{cell} ({c.model.backend}): estimated wall time "
                f"{rows[-1]['estimated_wall_time_s'] / 3600:.2f} h",
                file=sys.stderr,
            )
    record = {
        "config": c.name,
        "command": " ".join(sys.argv),
        "seq_len": c.seq_len,
        "batch_size": c.batch_size,
        "hidden_size": c.model.hidden_size,
        "num_layers": c.model.num_layers,
        "cells": rows,
        "load_average": os.getloadavg(),
        **train.environment_info(),
    }
    if _OUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        train.write_json(_OUT.value, record)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
