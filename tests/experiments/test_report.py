"""The readers over seeds: numbers computed from hand-written run files, and the table."""

import glob
import json
import os
import statistics

import pytest

from experiments import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = 1 / 6


def write_run(
    d, *, cell, evals, lr=1e-3, seq_len=100, name="memory/adding/T100/fb1/lr1e-3", task="adding"
):
    """A finished run: evaluations ``[(step, loss)]``, the last one final."""
    d.mkdir(parents=True)
    config = {"name": name, "model": {"match_params": None, "bidirectional": False}}
    config["optimizer"] = {"learning_rate": lr}
    (d / "config.json").write_text(json.dumps(config))
    lines = [{"step": s, "train/loss": loss, "eval/loss": loss} for s, loss in evals]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {
        "status": "completed", "cell": cell, "task": task, "seq_len": seq_len,
        "baseline": BASE, "steps": evals[-1][0], "wall_time_s": 10.0,
        "final": {"eval/loss": evals[-1][1], "train/loss": evals[-1][1]},
    }  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


def test_seed_statistics_and_memory_horizon(tmp_path):
    w = tmp_path / "memory" / "adding"
    # LSTM, T = 100: seeds 0 and 1 solve (first under 0.1 * 1/6 at steps 200 and 400), 2 not
    lstm = {0: [(100, 0.1), (200, 0.01), (300, 0.005)], 1: [(100, 0.1), (400, 0.001)],
            2: [(100, 0.15), (400, 0.1)]}  # fmt: skip
    for k, ev in lstm.items():
        write_run(w / "T100/fb1/lr1e-3/lstm" / f"seed{k}", cell="lstm", evals=ev)
    # a worse learning rate at T = 100 (not selected), and T = 200 solved by 1 of 3 only
    for k in range(3):
        write_run(w / "T100/fb1/lr3e-3/lstm" / f"seed{k}", cell="lstm", evals=[(400, 0.2)], lr=3e-3)
        loss = 0.001 if k == 0 else 0.2
        write_run(
            w / f"T200/fb1/lr1e-3/lstm/seed{k}", cell="lstm", evals=[(400, loss)], seq_len=200
        )
    st = report.seed_stats(report.seed_runs(str(w / "T100/fb1/lr1e-3/lstm")))
    finals = [0.005, 0.001, 0.1]
    assert st["n"] == 3 and st["solved"] == 2 and st["steps_to_solve"] == [200, 400]
    assert st["median_steps"] == 300
    assert report.mean_std(st["final_eval"]) == pytest.approx(
        (statistics.fmean(finals), statistics.stdev(finals), 3)
    )
    assert st["best_eval"] == [0.005, 0.001, 0.1]
    # t(0.975, 1) = 12.71: [-10.71, 14.71], cut at 0 for a nonnegative number
    assert report.fmt([1.0, 3.0], 2) == "2.00 [0.00, 14.71]" and report.fmt([2.0]) == "2.0000"
    assert report.t_interval([1.0, 3.0])[1] == pytest.approx(-10.706, abs=1e-3)
    settings = report.memory_settings(str(tmp_path / "memory"))
    assert set(settings) == {
        ("adding", 100, "lstm (fb1)", 1e-3), ("adding", 100, "lstm (fb1)", 3e-3),
        ("adding", 200, "lstm (fb1)", 1e-3),
    }  # fmt: skip
    horizon = report.memory_horizon(settings)[("adding", "lstm (fb1)")]
    assert horizon["longest"] == 100  # T = 200: 1 of 3 seeds only
    assert horizon["best"][100][0] == 1e-3
    table = report.memory(str(tmp_path / "memory"), str(tmp_path / "m.png"))
    assert "| adding | 100 | lstm (fb1) | 0.001 | 3 | 300-400 | 0.0353 [0.0000, 0.1746] |" in table
    assert "| adding | 200 | lstm (fb1) | 0.001 | 3 | 400 |" in table
    assert "| 2/3 [0.21, 0.94] | 300 |" in table and "| adding | lstm (fb1) | 100 |" in table
    assert (tmp_path / "m.png").stat().st_size > 0


def test_old_single_seed_layout_reads_as_one_seed(tmp_path):
    write_run(tmp_path / "adding" / "lstm", cell="lstm", evals=[(500, 0.3), (1000, 0.001)])
    for k in (0, 1):
        write_run(
            tmp_path / "adding" / "gru" / f"seed{k}", cell="gru", evals=[(1000, 0.01 * (k + 1))]
        )
    assert report.run_dirs(str(tmp_path / "adding" / "lstm")) == [str(tmp_path / "adding/lstm")]
    assert len(report.run_dirs(str(tmp_path / "adding"))) == 3
    table = report.table(str(tmp_path / "adding"), ["lstm", "gru"])
    assert "| lstm | 1 | 0.0010 | 0.0010 | 0.1667 | 0.006 | 1/1 [0.21, 1.00] | 1000 |" in table
    # gru seed 1 ends at 0.02, above the mark 1/60: 1 of 2 solve, median over that one
    assert "| gru | 2 | 0.0150 [0.0000, 0.0785] |" in table  # cut at 0
    assert "| 1/2 [0.09, 0.91] | 1000 |" in table
    report.plot(str(tmp_path / "adding"), ["lstm", "gru"], str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0


def test_descendants_char_row_gives_each_cells_validation_over_seeds(tmp_path):
    src = tmp_path / "descendants_char"
    for cell, losses in (("lstm", (1.40, 1.30, 1.35)), ("min_gru", (1.50, 1.45))):
        for k, loss in enumerate(losses):
            evals = [(500, loss + 0.1), (1000, loss)]
            write_run(src / cell / f"seed{k}", cell=cell, evals=evals, task="char")
    hardware, wall, number, _ = report._summary_line("descendants_char", str(src))
    assert wall == "50 s"
    assert "lstm: valid nats/char 1.350 [1.226, 1.474] at the end" in number
    assert "min_gru: valid nats/char 1.475 [1.157, 1.793] at the end" in number
    assert "(n=2)" in number and "(n=3)" in number


def test_results_table_on_the_committed_results():
    results = os.path.join(ROOT, "experiments", "results")
    text = report.results_table(results)
    rows = text.splitlines()
    assert rows[0].startswith("| experiment |") and len(rows) == 2 + len(report.EXPERIMENTS)
    assert all(r.count("|") == 9 for r in rows)
    assert "rnn: eval/baseline" in rows[2] and "lstm: eval/baseline" in rows[2]
    assert "(n=3)" in rows[2]
    with open(os.path.join(ROOT, "experiments", "README.md")) as f:
        assert text in f.read()  # experiments/README.md holds exactly this table


def test_committed_results_come_from_one_clean_commit_per_experiment():
    """Every committed run file (summaries and cost records) of an experiment was written
    by one commit with a clean tree, and every synthetic or character-level setting has 3
    seeds."""
    results = os.path.join(ROOT, "experiments", "results")
    for kind in sorted(os.listdir(results)):
        if kind == "estimate":
            summaries = report.cost_records(os.path.join(results, kind))
        else:
            paths = glob.glob(f"{results}/{kind}/**/summary.json", recursive=True)
            summaries = [json.load(open(f)) for f in paths]
        found = {s.get("git_commit") for s in summaries}
        assert len(found) == 1 and None not in found, (kind, found)
        assert not next(iter(found)).endswith("+dirty"), kind
    kinds = ("adding", "memory", "vanishing", "bidirectional", "char_lm", "depth", "descendants")
    for kind in kinds:
        for setting, runs in report._grouped(report.runs_under(f"{results}/{kind}")).items():
            assert len(runs) >= 3, setting


def test_best_rate_solves_the_most_seeds_then_in_the_fewest_steps(tmp_path):
    """Runs that stop once solved all end just under the mark: the rate that gets there
    first is the best, not the one whose last loss is lowest; solving seeds comes first."""
    w = tmp_path / "memory" / "adding" / "T50" / "fb1"
    for k in range(3):
        slow = [(100, 0.1), (400, 0.015)]  # lowest mean final loss of the two that solve
        write_run(w / "lr1e-3/lstm" / f"seed{k}", cell="lstm", evals=slow, seq_len=50)
        fast = [(200, 0.016)]
        write_run(w / "lr3e-3/lstm" / f"seed{k}", cell="lstm", evals=fast, lr=3e-3, seq_len=50)
        one = [(400, 0.001 if k == 0 else 0.05)]  # the lowest single loss, 1 of 3 solve
        write_run(w / "lr3e-4/lstm" / f"seed{k}", cell="lstm", evals=one, lr=3e-4, seq_len=50)
    settings = report.memory_settings(str(tmp_path / "memory"))
    horizon = report.memory_horizon(settings)[("adding", "lstm (fb1)")]
    assert horizon["best"][50][0] == 3e-3 and horizon["longest"] == 50
    # the results table names the rate of each setting, a model having been run at three
    number = report._summary_line("memory_v2", str(tmp_path / "memory"))[2]
    assert "adding T 50 lstm (fb1) at lr 0.003: solved 3/3 [0.44, 1.00], median steps 200" in (
        number
    )
    assert "lstm (fb1) at lr 0.0003: solved 1/3" in number


def test_cost_over_repeats_gives_median_and_range(tmp_path):
    def record(k, scale):
        cells = [
            {"cell": c, "backend": "fused", "train_step_s": t * scale, "eval_step_s": 0.01,
             "train_flops": 1e9 * t}
            for c, t in (("rnn", 0.05), ("lstm", 0.1))
        ]  # fmt: skip
        info = {"config": "adding", "seq_len": 100, "batch_size": 64, "hidden_size": 256}
        rec = {**info, "device": {"kind": "cpu", "cpu_count": 2}, "cells": cells}
        (tmp_path / f"{k}.json").write_text(json.dumps({**rec, "git_commit": "abc1234def"}))

    for k, scale in enumerate((1.0, 1.2, 0.9)):
        record(k, scale)
    table = report.cost(str(tmp_path), str(tmp_path / "cost.png"))
    assert (
        "| lstm | fused | 100.0 [90.0, 120.0] | 10.0 [10.0, 10.0] | 2.00 | 0.100 | 1.0 |" in table
    )
    assert "[range, n=3]" in table and (tmp_path / "cost.png").stat().st_size > 0
    hardware, _, number, commit = report._summary_line("estimate", str(tmp_path))
    assert number == "ms per train step (median of 3): RNN fused 50, LSTM fused 100"
    assert commit == "abc1234" and hardware == "cpu (2 cores)"


def test_depth_table_shares_the_model_two_families_hold(tmp_path):
    """``width-2`` is ``params-2`` (2 x 256): the equal-width family borrows those runs,
    and each row's numbers come from its own seeds (test loss at the best validation)."""
    shapes = {("params", 1): 431, ("params", 2): 256, ("width", 1): 256}
    for (family, layers), hidden in shapes.items():
        for k in range(3):
            d = tmp_path / family / f"L{layers}" / "lstm" / f"seed{k}"
            loss = 1.0 + layers / 10 + k / 100
            write_run(d, cell="lstm", evals=[(500, loss + 0.1), (1000, loss)],
                      name=f"depth/{family}/L{layers}")  # fmt: skip
            config = json.loads((d / "config.json").read_text())
            config["model"].update(num_layers=layers, hidden_size=hidden, embed_size=64)
            (d / "config.json").write_text(json.dumps(config))
            summary = json.loads((d / "summary.json").read_text())
            summary["best"] = {"step": 1000, "test/loss": loss + 0.05}
            (d / "summary.json").write_text(json.dumps(summary))
    families = report.depth_families(str(tmp_path))
    assert [label for label, _, _ in families["depth/width"]] == [
        "width/L1/lstm", "width/L2/lstm (= params/L2/lstm)"
    ]  # fmt: skip
    assert families["depth/width"][1][2] == families["depth/params"][1][2]
    rows = report.depth(str(tmp_path), str(tmp_path / "depth.png")).splitlines()
    assert len(rows) == 2 + 4
    assert (
        "| params/L1/lstm | 1 | 431 |" in rows[2] and "| 3 | 1.1100 [1.0852, 1.1348] |" in rows[2]
    )
    assert "| 1.1600 [1.1352, 1.1848] |" in rows[2]  # the test loss at the best validation
    assert "| 1000 (1000, 1000, 1000) |" in rows[2]  # the budget, and each seed's best step
    assert rows[3].split("|")[6:8] == rows[5].split("|")[6:8]  # the shared 2 x 256 runs
    assert (tmp_path / "depth.png").stat().st_size > 0
    number = report._summary_line("depth", str(tmp_path))[2]
    assert number == (
        "params: test at best eval 1 x 431 1.160 [1.135, 1.185] (n=3), "
        "2 x 256 1.260 [1.235, 1.285] (n=3); "
        "width: test at best eval 1 x 256 1.160 [1.135, 1.185] (n=3), "
        "2 x 256 1.260 [1.235, 1.285] (n=3)"
    )


def test_intervals_match_scipy_and_statsmodels():
    """The t quantiles and Wilson intervals against independent implementations."""
    stats = pytest.importorskip("scipy.stats")
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for df in (1, 2, 5, 30, 31, 60, 500):
        assert report.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    values = [1.2, 0.7, 1.9, 1.1]
    mean, lo, hi, n = report.t_interval(values)
    expected = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(values))
    assert (lo, hi) == pytest.approx(expected, abs=1e-3)
    for k, n in ((0, 3), (2, 3), (3, 3), (7, 20)):
        wilson = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
        assert report.wilson_interval(k, n) == pytest.approx(wilson, abs=1e-6)


def test_language_model_table_has_best_losses_and_no_solved_mark(tmp_path):
    src = tmp_path / "char"
    for k, evals in enumerate(([(500, 1.5), (1000, 1.3), (1500, 1.4)], [(500, 1.6), (1500, 1.2)])):
        write_run(src / "lstm" / f"seed{k}", cell="lstm", evals=evals, task="char")
    table = report.table(str(src), ["lstm"])
    assert "solved" not in table and "best eval loss" in table
    # final 1.4 and 1.2; best 1.3 at step 1,000 and 1.2 at 1,500
    assert "| lstm | 2 | 1.3000 [0.0294, 2.5706] | 1.3000 [0.0294, 2.5706] |" in table
    assert "| 1.2500 [0.6147, 1.8853] | 1,000, 1,500 | 20 |" in table
