"""The memory-horizon sweep: which runs it starts, where a cell stops, one real run."""

import json
import os
import signal
import subprocess
import sys
import time

from experiments import report
from experiments.sweeps import memory as sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fake_runs(solves):
    """A ``run_all`` that writes one finished seed per command, solved when
    ``solves(cell, T)``; returns it and the list of names it was given."""
    started = []

    def run_all(commands, jobs, log_dir):
        for name, cmd in commands.items():
            started.append(name)
            task, length, init, lr, cell = name.split("-", 4)
            loss = 0.001 if solves(cell, int(length[1:])) else 0.2
            d = os.path.join(_workdir(cmd), cell, "seed0")
            os.makedirs(d)
            with open(os.path.join(d, "metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": 100, "eval/loss": loss}) + "\n")
            with open(os.path.join(d, "summary.json"), "w") as f:
                summary = {"status": "completed", "baseline": 1 / 6, "final": {"eval/loss": loss}}
                json.dump(summary, f)

    return run_all, started


def _workdir(cmd):
    return next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))


def test_a_cell_that_fails_at_T_is_not_run_at_longer_T(tmp_path, monkeypatch):
    run_all, started = fake_runs(lambda cell, T: cell == "lstm" or T == 10)
    monkeypatch.setattr(sweep, "run_all", run_all)
    sweep.sweep(str(tmp_path), ["adding"], [10, 20, 50], [1e-3, 3e-3], ["fb1"], jobs=1)
    at = lambda T: sorted({n.split("-")[-1] for n in started if f"-T{T}-" in n})  # noqa: E731
    assert at(10) == ["gru", "lstm", "rnn"] and at(20) == ["gru", "lstm", "rnn"]
    assert at(50) == ["lstm"]  # the RNN and the GRU failed at T = 20 at both rates
    assert len(started) == 2 * (3 + 3 + 1)
    assert sweep.solved(str(tmp_path), "adding", 50, "fb1", 3e-3, "lstm")
    assert not sweep.solved(str(tmp_path), "adding", 20, "fb1", 1e-3, "rnn")


def test_one_real_setting_runs_and_stops_once_solved(tmp_path):
    args = ["--runs", str(tmp_path), "--tasks", "adding", "--lengths", "5", "--lrs", "1e-2",
            "--inits", "torch", "--config.seeds=(0,)", "--config.steps=400",
            "--config.eval_every=20", "--config.eval_batches=2",
            "--config.model.hidden_size=16"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sweeps.memory", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = tmp_path / "memory" / "adding" / "T5" / "torch" / "lr0.01" / "lstm" / "seed0"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["seq_len"] == 5
    stopped = summary["stopped_at_step"]
    assert stopped is not None and stopped < 400, summary  # T = 5 is solved well before
    assert summary["final"]["eval/loss"] < report.SOLVED_FRACTION * summary["baseline"]
    assert (tmp_path / "memory" / "logs" / "adding-T5-torch-lr0.01-lstm.log").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.sweeps.memory", "--inits", "xavier"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "--inits: unknown ['xavier']" in bad.stderr


def test_sigterm_reaches_the_run_which_saves_and_resumes(tmp_path):
    """SIGTERM to the sweep is passed on to its run: the run saves the step it reached,
    and the same sweep started again resumes it from there."""
    args = ["--runs", str(tmp_path), "--tasks", "adding", "--lengths", "5", "--lrs", "1e-2",
            "--inits", "torch", "--config.seeds=(0,)", "--config.eval_every=100000",
            "--config.eval_batches=2", "--config.model.hidden_size=8",
            "--config.log_every=5", "--config.checkpoint_every=100000"]  # fmt: skip
    cmd = [sys.executable, "-m", "experiments.sweeps.memory", *args]
    sweep_proc = subprocess.Popen([*cmd, "--config.steps=1000000"], cwd=ROOT)
    d = tmp_path / "memory" / "adding" / "T5" / "torch" / "lr0.01" / "lstm" / "seed0"
    deadline = time.time() + 240
    logged = lambda: (d / "metrics.jsonl").exists() and (d / "metrics.jsonl").stat().st_size  # noqa: E731
    while not logged() and time.time() < deadline:
        assert sweep_proc.poll() is None, "the sweep ended before its run trained"
        time.sleep(0.5)
    assert logged(), "the run did not log a step"
    sweep_proc.send_signal(signal.SIGTERM)
    assert sweep_proc.wait(timeout=120) == 128 + signal.SIGTERM
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["last_checkpoint_step"] > 0
    reached = summary["last_checkpoint_step"]
    done = subprocess.run([*cmd, f"--config.steps={reached + 10}"], cwd=ROOT, timeout=300)
    assert done.returncode == 0
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_step"] == reached


def test_runs_side_by_side_share_the_cpus_of_the_native_loops(monkeypatch):
    monkeypatch.delenv("LSTM_JAX_NATIVE_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert sweep.shared_cpus_env(2)["LSTM_JAX_NATIVE_THREADS"] == "2"
    assert sweep.shared_cpus_env(8)["LSTM_JAX_NATIVE_THREADS"] == "1"
    monkeypatch.setenv("LSTM_JAX_NATIVE_THREADS", "3")  # the user's choice stays
    assert sweep.shared_cpus_env(2)["LSTM_JAX_NATIVE_THREADS"] == "3"
