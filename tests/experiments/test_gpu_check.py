"""The one-command GPU check (``experiments/benchmarks/gpu_check.sh``), without a GPU.

The script itself runs only where a GPU is; here it must parse, its dry run must list
every stage with its command, and its tokens/s helper must read a run's TensorBoard
wall times.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.benchmarks import train_throughput

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "benchmarks" / "gpu_check.sh"


def test_script_parses_and_its_dry_run_lists_the_stages(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    out = tmp_path / "results"
    dry = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line.split("]")[0] + "]": line for line in dry.splitlines() if line.startswith("[")}
    assert list(lines) == ["[setup]", "[tests]", "[bench]", "[minrnn]", "[ptb]"]
    assert "pytest tests -m gpu" in lines["[tests]"]
    assert "experiments.benchmarks.run" in lines["[bench]"] and str(out) in lines["[bench]"]
    assert "experiments.benchmarks.min_rnn_speed --out" in lines["[minrnn]"]
    assert "ptb.py:medium" in lines["[ptb]"] and "--config.steps=300" in lines["[ptb]"]
    assert not out.exists()  # a dry run writes nothing
    only = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--only", "ptb", "--ptb-steps", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "[bench]" not in only and "--config.steps=2 " in only


def test_train_throughput_from_tensorboard_wall_times(tmp_path):
    tensorboardX = pytest.importorskip("tensorboardX")
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": 20, "seq_len": 35}))
    with tensorboardX.SummaryWriter(str(tmp_path / "tensorboard")) as writer:
        for step, wall in ((50, 1000.0), (100, 1002.0), (150, 1004.0)):  # 25 steps/s
            writer.add_scalar("train/loss", 1.0, step, walltime=wall)
            writer.add_scalar("eval/loss", 1.0, step, walltime=wall + 100.0)  # not counted
    result = train_throughput.main([str(tmp_path), "--json", str(tmp_path / "t.json")])
    assert result["tokens_per_s"] == pytest.approx(25 * 20 * 35)
    assert json.loads((tmp_path / "t.json").read_text())["measured"].startswith("steps 50..150")


@pytest.mark.skipif(not os.environ.get("LSTM_JAX_DATA"), reason="$LSTM_JAX_DATA not set")
def test_ptb_full_stage_runs_to_completion_and_says_so(tmp_path):
    """The whole-run PTB stage on CPU at smoke size: the run goes to ``$PTB_RUNS`` and the
    summary reports it completed; a second command finds it finished (``--resume``)."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PTB_RUNS": str(tmp_path / "runs"),
        "JAX_PLATFORMS": "cpu",
    }
    command = ["bash", str(SCRIPT), "--no-install", "--allow-cpu", "--only", "ptbfull"]
    command += ["--ptb-full", "smoke", "--out", str(tmp_path / "results")]
    for _ in range(2):
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        summary = (tmp_path / "results" / "summary.txt").read_text()
        assert "ptbfull: ok" in summary and ": completed at step" in summary, summary
    assert len(list((tmp_path / "runs" / "ptb_smoke").glob("*/seed*/summary.json"))) == 1
