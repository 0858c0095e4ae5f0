"""Smoke test of the benchmark suite: the quick run times every implementation, each in
its own process, pairs the rounds, and reports a peer that fails instead of crashing.

Speed is not checked here (no timed unit tests); ``python -m experiments.benchmarks.run``
measures it.
"""

import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import peers, report, run

pytest.importorskip("matplotlib")


def test_quick_run_times_every_implementation_in_paired_rounds(tmp_path):
    summary = run.main(["--quick", "--out", str(tmp_path)])
    for name in ("results.json", "results.csv", "table.md", "throughput.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text()) == summary
    m = summary["machine"]
    assert m["jax_backend"] and m["cpu_count"] and m["git_commit"] and "git_dirty" in m
    rows, notes = summary["rows"], summary["notes"]
    assert {r["case"] for r in rows} == set(run.QUICK_CASES)
    impls = {(r["case"], r["impl"], r["mode"]) for r in rows}
    ours = "lstm_jax[auto]"
    assert {r["cell"] for r in rows} == {"lstm", "gru", "rnn"}
    for case in ("lstm", "packed", "bf16"):
        for impl in (ours, "flax.nnx", "torch"):
            assert (case, impl, "fwd+bwd") in impls or any(
                n["case"] == case and n["impl"] == impl for n in notes
            ), (case, impl)
    for impl in ("scan per step", "scan hoisted", "torch"):
        assert ("variants", impl, "fwd+bwd") in impls
    for impl in (ours, "lstm_jax.functional.lstm_cell", "flax.nnx", "torch"):
        assert ("inference", impl, "step") in impls
    assert not [n for n in notes if n["impl"] != "torch"], notes  # torch may lack bf16
    table = (tmp_path / "table.md").read_text()
    assert (
        "## Machine" in table and f"| shape | mode | {ours} tok/s | x flax.nnx | x torch" in table
    )
    # every ratio in the table is the median over rounds of the per-round ratio
    by_key = {(r["case"], r["shape"], r["mode"], r["impl"]): r for r in rows}
    for (case, shape, mode, impl), r in by_key.items():
        assert len(r["rounds_s"]) == summary["rounds"] == 3
        assert r["rounds_s"] == [statistics.median(s) for s in r["samples_s"]]
        mine = by_key.get((case, shape, mode, ours))
        if impl != ours and mine:
            expected = statistics.median(
                p / o for p, o in zip(r["rounds_s"], mine["rounds_s"], strict=True)
            )
            cell = report.format_ratio(report.paired_ratios(mine, r))
            assert cell.startswith(f"{expected:.2f} (") and cell in table


def test_a_peer_that_fails_to_import_is_reported_not_fatal(tmp_path, monkeypatch):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    summary = run.main(["--quick", "--cases", "lstm", "--rounds", "1", "--out", str(tmp_path)])
    assert {r["impl"] for r in summary["rows"]} == {"lstm_jax[auto]", "flax.nnx"}
    [note] = summary["notes"]
    assert note["impl"] == "torch" and "torch is not installed here" in note["note"]
    table = (tmp_path / "table.md").read_text()
    assert "torch not timed on" in table and "| x torch |" not in table


def test_paired_ratio_cancels_load_that_drifts_between_rounds():
    # The peer takes twice our time in every round but the third, where a spike hit it
    # alone; the load triples in rounds 4-5. Paired: 2. Ratio of medians: 6 / 1 = 6.
    # A round that timed only one side (None) is left out.
    ours = {"rounds_s": [1.0, 1.0, 1.0, 3.0, 3.0, None]}
    peer = {"rounds_s": [2.0, 2.0, 6.0, 6.0, 6.0, 1.0]}
    ratios = report.paired_ratios(ours, peer)
    assert ratios == [2.0, 2.0, 6.0, 2.0, 2.0]
    assert report.format_ratio(ratios) == "2.00 (2.00-6.00)"
    with pytest.raises(ValueError):  # rounds must pair up
        report.paired_ratios(ours, {"rounds_s": [2.0]})


@pytest.mark.parametrize("variant", peers.VARIANTS)
def test_scan_references_compute_the_library_variants(variant):
    """The benchmark's hand-written scans compute what ``F.lstm`` computes."""
    from lstm_jax import functional as F

    shape = peers.Shape(6, 3, 5, 8, variant=variant)
    flags = {v: variant == v for v in peers.VARIANTS[:3]}
    params = F.init_lstm_params(jax.random.key(0), 5, 8, proj_size=shape.proj_size, **flags)
    x = jnp.asarray(np.random.RandomState(0).standard_normal((6, 3, 5)), jnp.float32)
    expected = F.lstm(params, x, backend="scan")[0]
    for hoisted in (False, True):
        with jax.numpy_rank_promotion("allow"):  # written as a user would, with broadcasting
            got = peers.REFERENCES[variant](params[0][0], x, hoisted)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_min_rnn_speed_worker_builds_and_times_and_its_table_reads_the_rows():
    """One worker of ``min_rnn_speed.py``, in this process (the script runs one process
    per implementation, which ``python -m experiments.benchmarks.min_rnn_speed --quick``
    checks in seconds more)."""
    from experiments.benchmarks import min_rnn_speed

    build = dict(op="build", time=8, batch=2, input=4, hidden=6, warmup=1, repeats=2)
    requests = [{**build, "budget_s": 1.0}, {"op": "time", "repeats": 2}, {"op": "quit"}]
    replies = []
    min_rnn_speed.serve("min_gru[parallel]", map(json.dumps, requests), replies.append)
    hello, built, timed = replies
    assert hello["ok"] and built["ok"] and timed["ok"], replies
    assert built["kernel"] == "parallel" and built["parameters"] == 2 * 6 * (4 + 1)
    assert built["repeats"] == 2 and len(timed["samples_s"]) == 2
    row = {**built, "impl": "min_gru[parallel]", "time": 8, "batch": 2, "x_lstm": 0.5}
    row["median_s"] = statistics.median(timed["samples_s"])
    machine = dict(device="cpu", cpu_count=2, cpu_model="x", jax="0", git_commit="0" * 40)
    machine.update(git_dirty=False, load_before=0.0, load_after=0.0)
    summary = dict(machine=machine, command="c", rounds=1, wall_s=1.0, rows=[row])
    table = min_rnn_speed.table(summary)
    assert "| min_gru[parallel] | min_gru | 6 | 60 | parallel |" in table
    assert f"| 8 | {1e3 * row['median_s']:.3g} |" in table


def test_word_lm_port_and_torch_example_train_in_paired_rounds(tmp_path):
    pytest.importorskip("torch")
    from experiments.benchmarks import word_lm

    args = ["--quick", "--rounds", "2", "--steps", "2", "--warmup", "1", "--out", str(tmp_path)]
    result = word_lm.main(args)
    assert json.loads((tmp_path / "results.json").read_text()) == result
    assert set(result["seconds"]) == {"torch", *word_lm.OURS}
    assert {len(s) for s in result["seconds"].values()} == {2}
    assert all(t > 0 for s in result["seconds"].values() for t in s)
    assert set(result["ratio_torch_over"]) == set(word_lm.OURS)
    for ratio in result["ratio_torch_over"].values():
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert all(result["workers"][name]["threads"] >= 1 for name in word_lm.OURS)
    assert result["workers"]["torch"]["torch"]
    assert result["machine"]["git_commit"] and "git_dirty" in result["machine"]
    window = word_lm.windows(None, quick=True)[0][0]  # BPTT + 1 rows of BATCH columns
    assert window.shape == (word_lm.BPTT + 1, word_lm.BATCH) == (36, 20)
    ids = np.random.default_rng(0).integers(0, 50, 20_000)  # the quick token stream
    assert list(window[:, 1]) == list(ids[1000:1036])  # column 1: tokens 1,000 on, contiguous
