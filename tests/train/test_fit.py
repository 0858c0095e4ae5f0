"""The training loop: run files, resume equals an uninterrupted run, NaN and misuse."""

import dataclasses
import json
import os
import re
import struct

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


def test_existing_run_needs_resume_named_as_the_caller_wrote_it(tmp_path):
    run(tmp_path, 3)
    with pytest.raises(FileExistsError, match=r"pass resume=True .* another run_dir"):
        run(tmp_path, 6)
    with train.spelled_as(resume="--resume", run_dir="--workdir"):
        with pytest.raises(FileExistsError, match="pass --resume .* another --workdir"):
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


def test_stop_when_ends_training_at_an_evaluation_with_a_checkpoint(tmp_path):
    """``stop_when`` sees each evaluation's metrics; once true, the run ends there as
    completed, its last window of training metrics logged and its state checkpointed."""
    seen = []

    def stop_when(metrics):
        seen.append(metrics["eval/loss"])
        return len(seen) == 2  # at the second evaluation, step 6

    eval_batches = lambda: [TASK.batch(10_000)]  # noqa: E731
    result = run(tmp_path, 12, eval_batches=eval_batches, eval_every=3, stop_when=stop_when,
                 log_every=4, checkpoint_every=100)  # fmt: skip
    assert result.summary["status"] == "completed" and result.summary["stopped_at_step"] == 6
    assert int(result.state.step) == 6 and result.summary["last_checkpoint_step"] == 6
    assert train.Checkpointer(tmp_path / "checkpoints").all_steps()[-1] == 6
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [4, 6]  # steps 5-6, between log lines, are logged at the stop
    assert result.summary["final"]["eval/loss"] == seen[-1]
    never = run(tmp_path / "never", 6, eval_batches=eval_batches, eval_every=3,
                stop_when=lambda m: False)  # fmt: skip
    assert never.summary["stopped_at_step"] is None and int(never.state.step) == 6


def test_reduce_on_plateau_scales_the_updates_resumes_alike_and_stops(tmp_path):
    """With a min_delta no change can pass, every evaluation after the first is a plateau
    (patience 1): the rate halves after the evaluations at steps 4 and 6, a resumed run
    scales as the uninterrupted one, and max_reductions=1 ends the run at step 6."""
    eval_batches = lambda: [TASK.batch(10_000)]  # noqa: E731
    plateau = train.ReduceOnPlateau("eval/loss", patience=1, factor=0.5, min_delta=1e9)
    common = dict(eval_batches=eval_batches, eval_every=2, reduce_on_plateau=plateau)
    full = run(tmp_path / "full", 8, **common)
    records = train.read_metrics(tmp_path / "full" / "metrics.jsonl")
    rates = {r["step"]: r["train/learning_rate"] for r in records if "train/learning_rate" in r}
    np.testing.assert_allclose([rates[s] for s in (2, 4, 6, 8)], [1e-2, 1e-2, 5e-3, 2.5e-3])
    plain = run(tmp_path / "plain", 8, eval_batches=eval_batches, eval_every=2)
    assert plain.summary["params_sha256"] != full.summary["params_sha256"]

    calls = []

    def stop_check():  # interrupted before step 6 (0-based 5): saved at 5, evaluated at 2, 4
        calls.append(None)
        if len(calls) == 6:
            raise SystemExit(143)

    with pytest.raises(SystemExit):
        run(tmp_path / "part", 8, stop_check=stop_check, **common)
    resumed = run(tmp_path / "part", 8, resume=True, **common)
    assert resumed.summary["resumed_from_step"] == 5
    assert resumed.summary["params_sha256"] == full.summary["params_sha256"]

    once = dataclasses.replace(plateau, max_reductions=1)
    stopped = run(tmp_path / "once", 8, **dict(common, reduce_on_plateau=once))
    assert stopped.summary["stopped_at_step"] == 6 and int(stopped.state.step) == 6


@pytest.mark.parametrize(
    "field, value, message",
    [("patience", 0, "patience"), ("factor", 1.0, "factor"), ("max_reductions", -1, "max_red")],
)
def test_reduce_on_plateau_rejects_bad_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        train.ReduceOnPlateau(**{field: value})
    with pytest.raises(ValueError, match="monitors 'eval/loss', logged only with eval_batches"):
        run(None, 2, reduce_on_plateau=train.ReduceOnPlateau())


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


def read_events(path):
    """``{tag: [(step, plugin, value)]}`` of a TensorBoard event file (TFRecord framing:
    u64 length, u32 crc, payload, u32 crc), parsed with tensorboardX's protobuf."""
    from tensorboardX.proto import event_pb2

    raw, tags, i = path.read_bytes(), {}, 0
    while i < len(raw):
        (n,) = struct.unpack("<Q", raw[i : i + 8])
        event = event_pb2.Event.FromString(raw[i + 12 : i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            entry = (event.step, v.metadata.plugin_data.plugin_name, v.simple_value)
            tags.setdefault(v.tag, []).append(entry)
    return tags


def test_monitoring_lr_throughput_hparams_and_plain_log_lines(tmp_path, capsys):
    """Each log step records the applied learning rate (a step decay here), the time per
    step and tokens/s; the hparams go to TensorBoard once; a non-terminal stdout (pytest's
    capture) gets plain lines and no carriage returns."""
    lr, rate, begin, every = 0.1, 0.5, 2, 2

    def reference_lr(update):  # the rate of update `update` (0-based)
        return lr * rate ** max(0, (update - begin) // every + 1)

    model = train.SequenceRegressor("rnn", 2, 4, rngs=nnx.Rngs(0))
    opt = train.make_optimizer("sgd", lr, decay_rate=rate, decay_begin=begin, decay_every=every)
    result = train.fit(
        model,
        train.regression_loss,
        opt,
        TASK.batch,
        steps=8,
        run_dir=tmp_path,
        eval_batches=lambda: (TASK.batch(100 + i) for i in range(2)),
        log_every=2,
        checkpoint_every=8,
        desc="adding",
        hparams={"optimizer": {"learning_rate": lr, "name": "sgd"}, "cells": ("rnn",)},
    )
    records = [r for r in train.read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    for r in records:
        assert r["train/learning_rate"] == pytest.approx(reference_lr(r["step"] - 1), rel=1e-6)
        assert r["train/step_time_s"] > 0
        tokens = 5 * 4  # time x batch
        assert r["train/tokens_per_s"] == pytest.approx(tokens / r["train/step_time_s"])
    summary = result.summary
    assert summary["compile_time_s"] > 0 and summary["tokens_per_step"] == 20
    assert summary["tokens_per_s"] > 0 and summary["step_time_s"] > 0
    assert summary["hparams"] == {
        "optimizer.learning_rate": lr,
        "optimizer.name": "sgd",
        "cells": "('rnn',)",
    }
    assert set(summary["final"]) == {"train/loss", "train/grad_norm", "eval/loss"}

    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    tags = read_events(events)
    assert [step for step, _, _ in tags["train/learning_rate"]] == [2, 4, 6, 8]
    assert tags["train/learning_rate"][-1][2] == pytest.approx(reference_lr(7), rel=1e-6)
    assert {"train/step_time_s", "train/tokens_per_s", "eval/loss"} <= set(tags)
    assert tags["_hparams_/experiment"][0][1] == "hparams"
    assert len(tags["_hparams_/session_start_info"]) == 1
    assert tags["hparams/text_summary"][0][1] == "text"

    out, err = capsys.readouterr()
    assert "\r" not in out and "\r" not in err
    lines = out.splitlines()
    step_lines = [x for x in lines if x.startswith("adding step ") and " eval " not in x]
    assert len(step_lines) == 4, out
    assert re.fullmatch(
        r"adding step 2/8 loss \S+ grad_norm \S+ lr 1\.0e-01 [\d,]+ tok/s [\d.]+ ms/step",
        step_lines[0],
    ), step_lines[0]
    assert "lr 1.3e-02" in step_lines[-1]  # 0.1 * 0.5 ** 3
    assert any(re.match(r"adding step 8/8 eval loss \S+ \(2 batches", x) for x in lines), out


def test_progress_bar_in_a_terminal_and_silence_without_progress(tmp_path, capsys, monkeypatch):
    from lstm_jax._src.train import metrics as metrics_lib

    monkeypatch.setattr(metrics_lib, "is_interactive", lambda: True)
    run(tmp_path / "bar", 2, progress=True)
    out, err = capsys.readouterr()
    assert "step 2/2" not in out and "train" in err  # the tqdm bar, on stderr
    run(tmp_path / "quiet", 2, progress=False)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "argument, value",
    [("steps", 0), ("steps", -5), ("log_every", 0), ("checkpoint_every", 0), ("eval_every", -1)],
)
def test_fit_rejects_bad_counts_before_building_anything(tmp_path, argument, value):
    kwargs = {"steps": 4, argument: value}
    with pytest.raises(ValueError, match=rf"{argument} must be an integer >= \d, got {value}"):
        run(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_resume_with_another_model_is_refused_and_keeps_the_run(tmp_path):
    run(tmp_path, 6)  # checkpoints at 3 and 6
    names = ("metrics.jsonl", "summary.json", "wall_clock.json")
    before = {n: (tmp_path / n).read_bytes() for n in names}
    steps = sorted(os.listdir(tmp_path / "checkpoints"))
    other = train.SequenceRegressor("rnn", 2, 8, rngs=nnx.Rngs(0))  # another hidden size
    with pytest.raises(train.CheckpointError, match=r"another model.*\[4, 4\] float32 in the"):
        train.fit(
            other, train.regression_loss, train.make_optimizer("adam", 1e-2), TASK.batch,
            steps=9, run_dir=tmp_path, resume=True, progress=False, config={"hidden": 8},
        )  # fmt: skip
    assert {n: (tmp_path / n).read_bytes() for n in names} == before
    assert sorted(os.listdir(tmp_path / "checkpoints")) == steps
    assert not (tmp_path / "config.json").exists()  # a refused run writes no config
    resumed = run(tmp_path, 9, resume=True, config={"hidden": 4})  # the right model: fine
    assert resumed.summary["resumed_from_step"] == 6
    assert json.loads((tmp_path / "config.json").read_text()) == {"hidden": 4}


HOLD_LOCK = """
import sys, time
from lstm_jax._src.train.loop import _locked_run_dir
with _locked_run_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_process_in_the_run_directory_is_refused_until_the_first_dies(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BlockingIOError, match=f"in use by process {holder.pid} "):
            run(tmp_path, 3)
        assert sorted(os.listdir(tmp_path)) == ["run.lock"]  # nothing else written
    finally:
        holder.kill()  # SIGKILL: no cleanup at all
        holder.wait()
    assert run(tmp_path, 3).summary["status"] == "completed"  # no stale lock
    assert run(tmp_path, 5, resume=True).summary["resumed_from_step"] == 3  # released on return


def test_unwritable_run_directory_is_one_clear_error(tmp_path):
    run_dir = "/sys/lstm_jax_test_run" if os.geteuid() == 0 else tmp_path / "ro" / "run"
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OSError, match=f"cannot write to the run directory {run_dir}"):
        run(run_dir, 3)
