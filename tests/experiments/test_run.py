"""The entry point: the main job's smoke config, kill-and-resume, and bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import types

import pytest
from flax import nnx

from lstm_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "experiments/configs/adding.py:smoke"


def command(*args):
    return [sys.executable, "-m", "experiments.run", *args]


def env():
    return dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")


def run(*args, check=True):
    proc = subprocess.run(
        command(*args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_main_job_smoke(tmp_path):
    """What CI runs: the main job at smoke size, all three cells, table and plot."""
    proc = run("--config", SMOKE, "--workdir", str(tmp_path))
    assert "| cell | seeds | final train loss" in proc.stdout and "| lstm | 1 |" in proc.stdout
    for cell in ("rnn", "gru", "lstm"):
        d = tmp_path / cell / "seed0"  # <workdir>/<cell>/seed<k>/
        for name in ("config.json", "metrics.jsonl", "summary.json", "tensorboard", "checkpoints"):
            assert (d / name).exists(), (cell, name)
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["cell"] == cell
        assert json.loads((d / "config.json").read_text())["cells"] == [cell]
        assert os.listdir(d / "tensorboard")
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert (tmp_path / "comparison.md").read_text().count("\n") == 5


KILL_ARGS = (
    "--config",
    SMOKE,
    "--config.cells=('rnn',)",
    "--config.steps=300",  # long enough after the kill point that the signal lands mid-run
    "--config.checkpoint_every=10",
    "--config.log_every=10",
    "--config.progress=False",
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, sig):
    """SIGKILL loses the steps since the last checkpoint; SIGTERM saves them first."""
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = subprocess.Popen(
        command(*KILL_ARGS, "--workdir", str(full_dir)),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = subprocess.Popen(
        command(*KILL_ARGS, "--workdir", str(killed_dir)),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_after = random.Random().randint(20, 60)
    metrics = killed_dir / "rnn" / "seed0" / "metrics.jsonl"  # one cell: still <workdir>/<cell>/
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= kill_after:
                break
        time.sleep(0.01)
    victim.send_signal(sig)
    try:
        code = victim.wait(timeout=120)
    except subprocess.TimeoutExpired:
        victim.kill()
        pytest.fail(f"the run did not exit within 120 s of {signal.Signals(sig).name}")
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL, "the run finished before it could be killed"
        assert not (killed_dir / "rnn" / "seed0" / "summary.json").exists()
    else:
        assert code == 128 + signal.SIGTERM, "the run finished before it could be stopped"
        stopped = json.loads((killed_dir / "rnn" / "seed0" / "summary.json").read_text())
        assert stopped["status"] == "interrupted" and "SystemExit" in stopped["error"]
        assert kill_after <= stopped["last_checkpoint_step"] < 300
    first_process = json.loads((killed_dir / "rnn" / "seed0" / "wall_clock.json").read_text())[
        "process_seconds"
    ]
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err[-3000:]

    run(*KILL_ARGS, "--workdir", str(killed_dir), "--resume")
    resumed = json.loads((killed_dir / "rnn" / "seed0" / "summary.json").read_text())
    reference = json.loads((full_dir / "rnn" / "seed0" / "summary.json").read_text())
    assert 0 < resumed["resumed_from_step"] < 300
    if sig == signal.SIGTERM:
        assert resumed["resumed_from_step"] == stopped["last_checkpoint_step"]
    # the wall time counts both processes
    assert len(resumed["process_wall_times_s"]) == 2
    assert resumed["process_wall_times_s"][0] >= first_process[0]
    assert resumed["wall_time_s"] == pytest.approx(sum(resumed["process_wall_times_s"]), abs=0.02)
    assert resumed["params_sha256"] == reference["params_sha256"]
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == list(range(10, 301, 10))  # the redone steps are logged once


def test_bad_values_exit_2_before_anything_is_built(tmp_path):
    proc = run(
        "--config",
        SMOKE,
        "--config.steps=-5",
        "--config.checkpoint_every=0",
        "--config.optimizer.learning_rate=-0.001",
        "--workdir",
        str(tmp_path / "run"),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    for line in (
        "config.steps must be an integer >= 1, got -5",
        "config.checkpoint_every must be an integer >= 1 or -1 (each epoch), got 0",
        "config.optimizer.learning_rate must be a number > 0, got -0.001",
    ):
        assert line in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "config.steps must be an integer >= 1, got 0"),
        ("log_every", 0, "config.log_every must be an integer >= 1, got 0"),
        ("eval_every", -2, "config.eval_every must be an integer >= 1, 0 (only at the end)"),
        ("eval_every", -1, "config.eval_every = -1 means once an epoch, which needs epochs > 0"),
        ("checkpoint_every", 0, "config.checkpoint_every must be an integer >= 1 or -1"),
        ("optimizer.learning_rate", 0.0, "config.optimizer.learning_rate must be a number > 0"),
        ("optimizer.learning_rate", float("nan"), "learning_rate must be a number > 0, got nan"),
        ("model.bidirectional", "no", "config.model.bidirectional must be True or False"),
        ("progress", "false", "config.progress must be True or False (a bool, not a string)"),
        ("cells", ("lstm", "tcn"), "config.cells must be a non-empty tuple of registered cell"),
        ("cells", (), "config.cells must be a non-empty tuple"),
        ("task", "imagenet", "config.task must be one of ('adding',"),
        ("model.dropout", 1.0, "config.model.dropout must be a number in [0, 1), got 1.0"),
        ("stop_when_solved", "yes", "config.stop_when_solved must be True or False"),
        ("seq_len", 1, "config.seq_len is the adding task's length: length must be >= 2, got 1"),
        ("seq_len", 0, "config.seq_len must be an integer >= 1, got 0"),
        ("optimizer.plateau_factor", 1.0, "config.optimizer.plateau_factor must be a number in"),
        ("optimizer.plateau_max_reductions", -2, "plateau_max_reductions must be an integer >="),
        ("model.recurrent_init", "identity", "config.model.recurrent_init must be uniform or"),
    ],
)
def test_validate_config_names_the_field_value_and_rule(field, value, message):
    from ml_collections import ConfigDict

    from experiments import run as run_module
    from experiments.configs import adding

    config = adding.get_config("smoke").to_dict()
    *parents, key = field.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[key] = value  # as a config file may write it (a str where a bool belongs)
    with pytest.raises(run_module.ConfigError) as error:
        run_module.validate_config(ConfigDict(config))
    assert message in str(error.value)
    run_module.validate_config(adding.get_config("smoke"))  # the unchanged config passes


def test_one_cell_job_writes_its_cell_directory_and_resume_checks_the_layout(tmp_path):
    from experiments import run as run_module
    from experiments.configs import adding

    config = adding.get_config("smoke")
    config.cells, config.steps, config.checkpoint_every = ("lstm",), 4, 4
    config.progress = False
    proc = run(
        "--config", SMOKE, "--config.cells=('lstm',)", "--config.steps=4",
        "--config.checkpoint_every=4", "--config.progress=False", "--workdir", str(tmp_path),
    )  # fmt: skip
    assert (tmp_path / "lstm" / "seed0" / "checkpoints").is_dir(), proc.stdout
    assert not (tmp_path / "checkpoints").exists()
    cells = {"lstm/seed0": run_module.cell_config(config, "lstm", 0)}
    run_module.check_workdir(str(tmp_path), cells, resume=True)  # the same config: fine
    longer = dict(cells["lstm/seed0"], steps=8, eval_every=2)  # the budget may change
    run_module.check_workdir(str(tmp_path), {"lstm/seed0": longer}, resume=True)
    changed = dict(cells["lstm/seed0"], model=dict(cells["lstm/seed0"]["model"], hidden_size=32))
    with pytest.raises(FileExistsError, match=r"seed0/config.json.*model.hidden_size: stored 16"):
        run_module.check_workdir(str(tmp_path), {"lstm/seed0": changed}, resume=True)
    again = run(
        "--config", SMOKE, "--config.cells=('lstm',)", "--config.steps=4",
        "--config.checkpoint_every=4", "--config.progress=False", "--workdir", str(tmp_path),
        "--resume",
    )  # fmt: skip
    assert "lstm/seed0: completed (4 steps), skipped" in again.stdout, again.stdout
    old = tmp_path / "old"  # a run of the layout before seeds: <workdir>/<cell>/
    (old / "lstm").mkdir(parents=True)
    (old / "lstm" / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"old/lstm holds a run's summary.json"):
        run_module.check_workdir(str(old), cells, resume=True)

    legacy = tmp_path / "legacy"  # a run written directly into its workdir
    (legacy / "checkpoints").mkdir(parents=True)
    (legacy / "metrics.jsonl").write_text("")
    for resume in (True, False):
        with pytest.raises(FileExistsError, match=r"legacy holds a run's checkpoints, metrics"):
            run_module.check_workdir(str(legacy), cells, resume=resume)
    proc = run("--config", SMOKE, "--workdir", str(legacy), "--resume", check=False)
    assert proc.returncode == 2 and "legacy/rnn/seed0/" in proc.stderr, proc.stderr[-2000:]


def test_bad_config_key(tmp_path):
    proc = run("--config", SMOKE, "--config.no_such_key=1", "--workdir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "no_such_key" in proc.stderr, proc.stderr[-2000:]


def test_missing_data_path(tmp_path):
    from experiments import run as run_module
    from experiments.configs import char_lm, ptb

    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*karpathy"):
        run_module.Task(char_lm.get_config("smoke"), str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="ptb.train.txt does not exist"):
        run_module.Task(ptb.get_config("smoke"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="LSTM_JAX_DATA"):
        run_module.Task(ptb.get_config("smoke"), None)


@pytest.mark.skipif(not os.environ.get("LSTM_JAX_DATA"), reason="$LSTM_JAX_DATA not set")
@pytest.mark.parametrize("name", ["char_lm", "ptb"])
def test_text_smoke_configs_on_real_data(tmp_path, name):
    """The text configs at smoke size, in process (the entry point's own functions)."""
    import importlib

    from experiments import run as run_module

    config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
    config.progress = False
    task = run_module.Task(config, os.environ["LSTM_JAX_DATA"])
    summary = run_module.train_cell(task, "lstm", str(tmp_path), resume=False)
    assert summary["status"] == "completed" and "eval/loss" in summary["final"]
    assert summary["final"]["eval/loss"] < 1.1 * summary["baseline"]  # log(vocab)

    from experiments import sample

    _, restored, step = sample.restore_model(str(tmp_path), os.environ["LSTM_JAX_DATA"])
    assert step == summary["steps"]
    assert train.params_digest(nnx.state(restored, nnx.Param)) == summary["params_sha256"]
    prompt = "the" if name == "ptb" else "ROMEO:"
    text = sample.samples(str(tmp_path), os.environ["LSTM_JAX_DATA"], prompt, 30, ["0.5", "1"], 0)
    blocks = text.split("```")[1::2]
    texts = [b[1:-1] for b in blocks]  # each block is "\n<prompt><sample>\n"
    assert len(texts) == 2 and all(t.startswith(prompt) for t in texts)
    lengths = [len(t.split()) - 1 if name == "ptb" else len(t) - len(prompt) for t in texts]
    assert lengths == [30, 30]


def test_lookahead_seq_len_must_exceed_k():
    from experiments import run as run_module
    from experiments.configs import adding

    config = adding.get_config("smoke")
    config.task, config.seq_len, config.lookahead_k = "lookahead", 5, 5
    with pytest.raises(run_module.ConfigError, match=r"seq_len is the lookahead task's length"):
        run_module.validate_config(config)


def unwritable_dir(tmp_path):
    """A directory this process cannot write to (root writes through chmod: use sysfs)."""
    if os.geteuid() == 0:
        return "/sys/lstm_jax_test_workdir"
    path = tmp_path / "read-only"
    path.mkdir(mode=0o555)
    return str(path / "run")


def test_unwritable_workdir_is_one_line_at_start(tmp_path):
    workdir = unwritable_dir(tmp_path)
    proc = run("--config", SMOKE, "--workdir", workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("error: ")
    ], proc.stderr[-2000:]
    assert f"error: cannot write to --workdir {workdir}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_compares_the_vocabulary_the_data_fixes(tmp_path):
    """--data_dir is not part of the config: the vocabulary size it gives is recorded."""
    from experiments import run as run_module
    from experiments.configs import adding

    config = adding.get_config("smoke")
    config.cells = ("lstm",)
    task = types.SimpleNamespace(vocab_size=65)
    stored = run_module.cell_config(config, "lstm", 0, task)
    assert stored["vocab_size"] == 65
    (tmp_path / "lstm" / "seed0").mkdir(parents=True)
    train.write_json(tmp_path / "lstm" / "seed0" / "config.json", stored)
    now = run_module.cell_config(config, "lstm", 0, types.SimpleNamespace(vocab_size=30))
    with pytest.raises(FileExistsError, match="vocab_size: stored 65, now 30"):
        run_module.check_workdir(str(tmp_path), {"lstm/seed0": now}, resume=True)
    run_module.check_workdir(str(tmp_path), {"lstm/seed0": stored}, resume=True)
    # a run written before vocab_size was recorded: the checkpoints' shapes decide
    del stored["vocab_size"]
    train.write_json(tmp_path / "lstm" / "seed0" / "config.json", stored)
    run_module.check_workdir(str(tmp_path), {"lstm/seed0": now}, resume=True)


def test_a_second_run_in_the_same_workdir_is_refused_and_names_the_first(tmp_path):
    args = (
        "--config", SMOKE, "--config.cells=('rnn',)", "--config.steps=100000",
        "--config.progress=False", "--workdir", str(tmp_path),
    )  # fmt: skip
    first = subprocess.Popen(
        command(*args), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        lock = tmp_path / "rnn" / "seed0" / "run.lock"
        deadline = time.time() + 120
        while f"process {first.pid} " not in (lock.read_text() if lock.exists() else ""):
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.2)
        second = run(*args, check=False)
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"in use by process {first.pid} " in second.stderr, second.stderr[-2000:]
        assert first.poll() is None  # untouched
    finally:
        first.kill()
        first.wait()
