r"""Text sampled from a trained language-model run, at one or more temperatures.

  python -m experiments.sample --workdir runs/char_lm/lstm/seed0 --data_dir ../shared/data \
      [--prompt "ROMEO:"] [--length 500] [--temperatures 0.5,0.8,1.0] [--seed 0]

``--workdir`` is a run directory, or the workdir of a one-cell job (its ``<cell>/`` run).
Rebuilds the run's model and data from its ``config.json``, restores the newest valid
checkpoint, and writes ``samples.md`` into the run directory (one section per
temperature) besides printing it. Works for the ``char`` and ``ptb`` tasks (PTB's prompt
is words).
"""

from __future__ import annotations

import glob
import json
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from experiments import run
from experiments.run import Task
from lstm_jax import train

SAMPLES_FILE = "samples.md"

_WORKDIR = run._WORKDIR  # the entry point's --workdir and --data_dir (absl flags are global)
_DATA_DIR = run._DATA_DIR
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text the model reads before sampling.")
_LENGTH = flags.DEFINE_integer("length", 500, "Tokens to sample per temperature.")
_TEMPERATURES = flags.DEFINE_list("temperatures", ["0.5", "0.8", "1.0"], "Temperatures.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed of the draws.")


def resolve_run_dir(path: str) -> str:
    """``path`` if it holds checkpoints, else the one ``<cell>/`` below it that does."""
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return path
    runs = sorted(os.path.dirname(d) for d in glob.glob(os.path.join(path, "*", "checkpoints")))
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise FileNotFoundError(f"no checkpoints under {path} nor under {path}/<cell>/")
    raise ValueError(f"{path} holds several runs {runs}; pass one of them as --workdir")


def restore_model(run_dir: str, data_dir: str | None) -> tuple[Task, nnx.Module, int]:
    """The trained model of ``run_dir`` (eval mode), its task and checkpoint step."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.task not in ("char", "ptb"):
        raise ValueError(f"{run_dir} is a {config.task!r} run; sampling needs char or ptb")
    (cell,) = config.cells
    task = Task(config, data_dir)
    model = task.model(cell)
    carry = model.zero_carry(task.carry_batch)
    graphdef, template = train.create_train_state(model, task.optimizer(), carry)
    restored = train.Checkpointer(os.path.join(run_dir, "checkpoints")).restore_latest(template)
    if restored is None:
        raise FileNotFoundError(f"no valid checkpoint under {run_dir}/checkpoints")
    step, state = restored
    trained = nnx.merge(graphdef, state.params, state.rest)
    trained.eval()
    return task, trained, step


def encode(task: Task, text: str) -> np.ndarray:
    """``text`` as token ids: characters, or words for PTB (unknown ones as ``<unk>``)."""
    vocab = {t: i for i, t in enumerate(task.corpus.vocab)}
    if task.config.task == "ptb":
        words = text.split() or ["<eos>"]
        return np.array([vocab.get(w, vocab["<unk>"]) for w in words])
    missing = sorted(set(text) - set(vocab))
    if missing:
        raise ValueError(f"the prompt has characters the corpus lacks: {missing}")
    return np.array([vocab[ch] for ch in text])


def samples(run_dir: str, data_dir, prompt: str, length: int, temperatures, seed: int) -> str:
    """Markdown with a sample per temperature."""
    task, model, step = restore_model(run_dir, data_dir)
    ids = encode(task, prompt)
    sep = " " if task.config.task == "ptb" else ""
    sections = [f"# Samples from {run_dir} (step {step}), prompt {prompt!r}\n"]
    for i, t in enumerate(temperatures):
        drawn = train.sample_tokens(
            model, ids, length, key=jax.random.key(seed + i), temperature=float(t)
        )
        text = prompt + sep + task.corpus.decode(drawn, sep)
        sections.append(f"## temperature {t}\n\n```\n{text}\n```\n")
    return "\n".join(sections)


def main(argv):
    del argv
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    try:
        run_dir = resolve_run_dir(_WORKDIR.value)
        text = samples(
            run_dir,
            _DATA_DIR.value,
            _PROMPT.value,
            _LENGTH.value,
            _TEMPERATURES.value,
            _SEED.value,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    with open(os.path.join(run_dir, SAMPLES_FILE), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
