"""The training loop: run files, resume equals an uninterrupted run, NaN and misuse."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from lstm_jax import data, train

TASK = data.SyntheticTask("adding", batch_size=4, length=5)


def run(run_dir, steps, resume=False, batch=TASK.batch, **kwargs):
    model = train.SequenceRegressor("rnn", 2, 4, rngs=nnx.Rngs(0))
    kwargs = {"log_every": 2, "checkpoint_every": 3, "progress": False, **kwargs}
    return train.fit(
        model,
        train.regression_loss,
        train.make_optimizer("adam", 1e-2),
        batch,
        steps=steps,
        run_dir=run_dir,
        resume=resume,
        **kwargs,
    )


def test_run_files_and_in_process_resume(tmp_path):
    full = run(tmp_path / "full", 8)
    assert full.summary["status"] == "completed"
    for name in ("metrics.jsonl", "summary.json", "tensorboard", "checkpoints"):
        assert os.path.exists(tmp_path / "full" / name), name
    records = train.read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 3, 4, 6, 8]
    summary = json.load(open(tmp_path / "full" / "summary.json"))
    assert {"git_commit", "versions", "device", "wall_time_s", "final"} <= set(summary)

    run(tmp_path / "part", 5)  # checkpoints at 3 and 5
    resumed = run(tmp_path / "part", 8, resume=True)
    assert resumed.summary["resumed_from_step"] == 5
    assert resumed.summary["params_sha256"] == full.summary["params_sha256"]
    steps = [r["step"] for r in train.read_metrics(tmp_path / "part" / "metrics.jsonl")]
    assert steps == [2, 3, 4, 5, 6, 8]
    again = run(tmp_path / "part", 8, resume=True)  # already finished: nothing to redo
    assert again.summary["final"] == resumed.summary["final"]
    assert again.summary["params_sha256"] == full.summary["params_sha256"]


def test_existing_run_needs_resume(tmp_path):
    run(tmp_path, 3)
    with pytest.raises(FileExistsError, match="--resume"):
        run(tmp_path, 6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poisoned(step):
        batch = TASK.batch(step)
        if step >= 7:
            batch["inputs"] = np.full_like(batch["inputs"], np.nan)
        return batch

    with pytest.raises(train.NonFiniteLossError, match="last good checkpoint is step 6"):
        run(tmp_path, 12, batch=poisoned)
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["status"] == "diverged" and summary["last_checkpoint_step"] == 6
    ckpt = train.Checkpointer(tmp_path / "checkpoints")
    assert ckpt.latest_step() == 6
    step, state = ckpt.restore_latest(run_template())
    assert step == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def run_template():
    model = train.SequenceRegressor("rnn", 2, 4, rngs=nnx.Rngs(0))
    return train.create_train_state(model, train.make_optimizer("adam", 1e-2))[1]


def test_stop_check_stops_at_a_step_boundary_and_resume_matches(tmp_path):
    """A stop requested through ``stop_check`` (SIGTERM in experiments.run) is raised
    before the next step: the steps done are saved and the writers close."""
    full = run(tmp_path / "full", 10)
    calls = []

    def stop_check():
        calls.append(None)
        if len(calls) == 6:  # before step 6 (0-based): five steps are done
            raise SystemExit(143)

    with pytest.raises(SystemExit):
        run(tmp_path / "part", 10, stop_check=stop_check)
    summary = json.load(open(tmp_path / "part" / "summary.json"))
    assert summary["status"] == "interrupted" and "SystemExit" in summary["error"]
    assert summary["last_checkpoint_step"] == 5
    resumed = run(tmp_path / "part", 10, resume=True)
    assert resumed.summary["resumed_from_step"] == 5
    assert resumed.summary["params_sha256"] == full.summary["params_sha256"]


def test_interrupt_saves_the_step_reached_and_resume_matches(tmp_path):
    """Ctrl-C (KeyboardInterrupt) between checkpoints: the steps done are kept."""
    full = run(tmp_path / "full", 10)

    def interrupted(step):
        if step == 7:
            raise KeyboardInterrupt
        return TASK.batch(step)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "part", 10, batch=interrupted)  # checkpoints every 3: at 3 and 6
    summary = json.load(open(tmp_path / "part" / "summary.json"))
    assert summary["status"] == "interrupted" and summary["last_checkpoint_step"] == 7
    resumed = run(tmp_path / "part", 10, resume=True)
    assert resumed.summary["resumed_from_step"] == 7
    assert resumed.summary["params_sha256"] == full.summary["params_sha256"]
    times = resumed.summary["process_wall_times_s"]
    assert len(times) == 2 and resumed.summary["wall_time_s"] == pytest.approx(sum(times), abs=0.02)
