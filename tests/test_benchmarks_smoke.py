"""Smoke test of the benchmark suite: the quick grid runs end to end and writes its files.

Speed is not checked here (no timed unit tests); ``python -m experiments.benchmarks.run``
measures it.
"""

import json

import pytest

pytest.importorskip("matplotlib")


def test_quick_benchmark_writes_results(tmp_path):
    from experiments.benchmarks import run

    rows = run.main(
        ["--quick", "--no-options", "--repeats", "1", "--warmup", "1", "--out", str(tmp_path)]
    )
    for name in ("results.json", "results.csv", "table.md", "throughput.png"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["machine"]["jax_backend"]
    impls = {r["impl"] for r in rows}
    assert {"lstm_jax[fused]", "lstm_jax[scan]", "flax.nnx.RNN(OptimizedLSTMCell)"} <= impls
    assert all(r["tokens_per_s"] > 0 and r["compile_s"] >= 0 for r in rows)
    assert "lstm_jax[fused] tok/s" in (tmp_path / "table.md").read_text()


def test_paired_ratio_cancels_load_that_drifts_between_rounds():
    from experiments.benchmarks.run import paired_ratio

    # The peer takes twice our time in every round but the third, where a spike hit it
    # alone; the load triples in rounds 4-5. Paired: 2. Ratio of medians: 6 / 1 = 6.
    ours = {"samples_s": [1.0, 1.0, 1.0, 3.0, 3.0]}
    peer = {"samples_s": [2.0, 2.0, 6.0, 6.0, 6.0]}
    assert paired_ratio(ours, peer) == pytest.approx(2.0)
    with pytest.raises(ValueError):  # rounds must pair up
        paired_ratio(ours, {"samples_s": [2.0]})
