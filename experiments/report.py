"""Tables and figures made from run directories (``summary.json``, ``metrics.jsonl``).

  python -m experiments.report runs/adding rnn gru lstm        # comparison.{md,png}
  python -m experiments.report vanishing runs/vanishing experiments/figures/vanishing_gradients.png
  python -m experiments.report memory runs/memory experiments/figures/memory_vs_length.png
  python -m experiments.report depth runs/depth experiments/figures/depth.png
  python -m experiments.report ptb runs/ptb_small [runs/ptb_medium ...]
  python -m experiments.report cost runs/estimate/cost.json experiments/figures/cost.png
  python -m experiments.report classify runs/bidirectional experiments/figures/bidirectional.png
  python -m experiments.report collect runs experiments/results   # the run files to commit
  python -m experiments.report table [experiments/results]        # experiments/README.md's table

Each prints a Markdown table; the figure path is optional. Numbers come from the files
the runs wrote, never typed by hand.

Every run of ``experiments.run`` is ``<workdir>/<cell>/seed<k>/``, one per seed. Runs
written before seeds, ``<workdir>/<cell>/`` or a single-cell run directly in its workdir,
are read as one seed by every reader (:func:`run_dirs`, :func:`runs_under`,
:func:`setting_of`).

Over seeds, a number is reported as ``mean [lo, hi]``, its 95% confidence interval from
Student's t with ``n - 1`` degrees of freedom (:func:`t_interval`; just the number for
one seed), with ``n``; every such number here (a loss, a ratio of losses, an accuracy, a
perplexity) is nonnegative, so its interval is cut at 0 (a mean cannot lie below 0, so
the cut interval covers it as often as the whole one); a fraction of seeds as ``k/n``
with its 95% Wilson score interval (:func:`wilson_interval`). A run *solves* a task with
a memoryless baseline when its final eval loss is below :data:`SOLVED_FRACTION` of the
baseline; its *steps to solve* are the first evaluation step under that mark. Per
setting, the fraction of seeds that solve and the median steps to solve over the seeds
that do are reported, and a memory horizon (the longest T) counts as solved when at
least :data:`SOLVED_SEEDS` of the seeds solve it.
"""

from __future__ import annotations

import collections
import glob
import json
import math
import os
import re
import shutil
import statistics
import sys

from experiments import analytic
from experiments.configs.memory import INITS as MEMORY_INITS
from lstm_jax import train

SOLVED_FRACTION = 0.1  # "solved": final eval loss below 10% of the memoryless baseline
SOLVED_SEEDS = 2 / 3  # a setting is solved when at least this fraction of its seeds solve
SEED_DIR = re.compile(r"^seed(\d+)$")


def load_run(run_dir: str) -> tuple[dict, list[dict]]:
    """A run's ``summary.json`` and ``metrics.jsonl`` records."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    return summary, train.read_metrics(os.path.join(run_dir, "metrics.jsonl"))


def seed_runs(path: str) -> list[str]:
    """The seeds' run directories of one setting: ``path`` itself when it holds a run (an
    old single-seed run), else each ``seed<k>/`` below it that does, in seed order."""
    if os.path.exists(os.path.join(path, "summary.json")):
        return [path]
    found = [
        os.path.dirname(f)
        for f in glob.glob(os.path.join(path, "seed*", "summary.json"))
        if SEED_DIR.match(os.path.basename(os.path.dirname(f)))
    ]
    return sorted(found, key=lambda d: int(SEED_DIR.match(os.path.basename(d)).group(1)))


def run_dirs(path: str) -> list[str]:
    """The run directories ``path`` names: ``path`` itself when it holds a run's
    ``summary.json`` (a single-cell run written directly into its workdir), else the
    seeds of ``path`` (``seed<k>/``), else those of each ``<cell>/`` below it, in order."""
    found = seed_runs(path)
    if not found:
        found = [
            d for cell in sorted(glob.glob(os.path.join(path, "*", ""))) for d in seed_runs(cell)
        ]
    if not found:
        raise FileNotFoundError(
            f"no run under {path}: neither summary.json, seed*/summary.json nor "
            "*/[seed*/]summary.json"
        )
    return found


def setting_of(run_dir: str) -> str:
    """The directory of the setting a run belongs to: ``run_dir`` without its ``seed<k>``."""
    run_dir = os.path.normpath(run_dir)
    return os.path.dirname(run_dir) if SEED_DIR.match(os.path.basename(run_dir)) else run_dir


def mean_std(values) -> tuple[float, float, int]:
    """``(mean, sample std, n)`` of the finite values; ``std`` is 0 for one value."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan, 0
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)


# Student's t, two-sided 95%: t_{0.975, df} for df = 1 ... 30 (any statistics table,
# e.g. NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom: the table to 30, then the
    Cornish-Fisher expansion around the normal quantile (error under 1e-3)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values, lower: float = -math.inf) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)``: the 95% t interval of the mean of the finite values
    (``lo = hi = mean`` for one value, NaNs for none), cut at ``lower``, the least value
    the mean can take."""
    mean, std, n = mean_std(values)
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return mean, max(lower, mean - half), mean + half, n


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a fraction ``k / n`` (``(0, 1)`` for ``n = 0``)."""
    if n == 0:
        return 0.0, 1.0
    z2 = _Z975**2
    centre = (k + z2 / 2) / (n + z2)
    half = _Z975 / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt(values, digits: int = 4) -> str:
    """``mean [lo, hi]`` of ``values``, nonnegative, the 95% t interval cut at 0 (just the
    number for one seed; ``-`` for none)."""
    mean, lo, hi, n = t_interval(values, lower=0.0)
    if n == 0:
        return "-"
    if n == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_fraction(k: int, n: int) -> str:
    """``k/n [lo, hi]``, the fraction with its 95% Wilson interval (two digits)."""
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


# Tasks scored by their loss alone: no solved mark, no steps to solve.
LANGUAGE_MODEL_TASKS = ("char", "ptb")


def is_solved(eval_loss: float, baseline: float) -> bool:
    """Whether an evaluation loss is under the solved mark of the memoryless ``baseline``."""
    return eval_loss < SOLVED_FRACTION * baseline


def setting_solved(stats: dict) -> bool:
    """Whether at least :data:`SOLVED_SEEDS` of a setting's seeds (``seed_stats``) solve."""
    return bool(stats["n"]) and stats["solved"] / stats["n"] >= SOLVED_SEEDS


def solved_step(records: list[dict], baseline: float) -> int | None:
    """The first evaluation step whose loss is below the solved mark, or ``None``."""
    for r in records:
        if "eval/loss" in r and is_solved(r["eval/loss"], baseline):
            return r["step"]
    return None


def seed_stats(dirs: list[str]) -> dict:
    """Per-setting numbers over the seeds' run directories ``dirs``.

    Returns ``n``, lists ``final_eval``, ``final_train``, ``best_eval`` (lowest logged eval
    loss) and ``best_step`` (its step), ``test`` (the final ``test/loss``) and
    ``best_test`` (``summary["best"]``'s, the test loss at the best validation checkpoint),
    ``ratio`` (final eval / baseline), ``accuracy``, ``budget`` (each seed's step budget);
    ``solved`` (seeds whose final eval is under the mark), ``steps_to_solve`` (their first
    evaluation step under it; for a seed that solves only on the way, too),
    ``median_steps`` and ``wall_time_s`` (summed), ``baseline``.
    """
    keys = ("final_eval", "final_train", "best_eval", "best_step", "test", "best_test")
    out = {k: [] for k in keys}
    out.update(ratio=[], accuracy=[], budget=[], steps_to_solve=[], solved=0, wall_time_s=0.0)
    baseline = math.nan
    for d in dirs:
        summary, records = load_run(d)
        f = summary["final"]
        baseline = summary.get("baseline", math.nan)
        out["final_eval"].append(f.get("eval/loss"))
        out["final_train"].append(f.get("train/loss"))
        out["test"].append(f.get("test/loss"))
        out["accuracy"].append(f.get("eval/accuracy"))
        out["budget"].append(summary.get("steps"))
        out["best_test"].append(summary.get("best", {}).get("test/loss"))
        ev = [(r["eval/loss"], r["step"]) for r in records if "eval/loss" in r]
        best_eval, best_step = min(ev) if ev else (None, None)
        out["best_eval"].append(best_eval)
        out["best_step"].append(best_step)
        if f.get("eval/loss") is not None and baseline:
            out["ratio"].append(f["eval/loss"] / baseline)
            solved = is_solved(f["eval/loss"], baseline)
            out["solved"] += solved
            step = solved_step(records, baseline)
            if step is not None and solved:
                out["steps_to_solve"].append(step)
        out["wall_time_s"] += summary.get("wall_time_s", 0.0)
    out["n"], out["baseline"] = len(dirs), baseline
    steps = out["steps_to_solve"]
    out["median_steps"] = statistics.median(steps) if steps else None
    return out


def table(workdir: str, cells: list[str]) -> str:
    """A Markdown table of each cell's final losses (mean [95% interval] over its seeds)
    against the task's baseline, with the fraction of seeds that solve (Wilson interval)
    and their median steps; for a language model (:data:`LANGUAGE_MODEL_TASKS`), which
    has no solved mark, its best evaluation loss and the step of each seed's best instead."""
    summary, _ = load_run(seed_runs(os.path.join(workdir, cells[0]))[0])
    language_model = summary.get("task") in LANGUAGE_MODEL_TASKS
    middle = (
        ["best eval loss", "steps of the best"]
        if language_model
        else ["baseline", "eval / baseline", "solved", "median steps to solve"]
    )
    columns = ["cell", "seeds", "final train loss", "final eval loss", *middle, "wall time (s)"]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for cell in cells:
        st = seed_stats(seed_runs(os.path.join(workdir, cell)))
        if language_model:
            middle = [fmt(st["best_eval"]), ", ".join(f"{s:,}" for s in st["best_step"])]
        else:
            median = "-" if st["median_steps"] is None else f"{st['median_steps']:.0f}"
            solved = fmt_fraction(st["solved"], st["n"])
            middle = [f"{st['baseline']:.4f}", fmt(st["ratio"], 3), solved, median]
        values = [cell, str(st["n"]), fmt(st["final_train"]), fmt(st["final_eval"]), *middle]
        rows.append("| " + " | ".join([*values, f"{st['wall_time_s']:.0f}"]) + " |")
    return "\n".join(rows)


def curves(dirs: list[str], key: str) -> tuple[list[int], list[list[float]]]:
    """``(steps, values per seed)`` of ``key`` at the steps every seed logged."""
    per_seed = []
    for d in dirs:
        _, records = load_run(d)
        per_seed.append({r["step"]: r[key] for r in records if key in r})
    steps = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
    return steps, [[p[s] for s in steps] for p in per_seed]


def band(ax, steps, values, label, style="-", color=None):
    """The mean over seeds of a nonnegative value as a line and its 95% t interval (cut
    at 0) as a band."""
    if not steps:
        return None
    intervals = [t_interval(c, lower=0.0) for c in zip(*values, strict=True)]
    mean = [i[0] for i in intervals]
    (line,) = ax.plot(steps, mean, style, color=color, label=f"{label} (n={len(values)})")
    if len(values) > 1:
        lo, hi = [i[1] for i in intervals], [i[2] for i in intervals]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def plot(workdir: str, cells: list[str], path: str) -> None:
    """Training and evaluation loss against step for each cell (mean over seeds, 95% t
    interval band), with the baseline."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    baseline = None
    for cell in cells:
        dirs = seed_runs(os.path.join(workdir, cell))
        summary, _ = load_run(dirs[0])
        baseline = summary["baseline"]
        line = band(ax, *curves(dirs, "train/loss"), f"{cell} (train)")
        color = line.get_color() if line else None
        band(ax, *curves(dirs, "eval/loss"), f"{cell} (eval)", "o--", color)
    ax.axhline(baseline, color="k", linestyle=":", label=f"baseline {baseline:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{summary['task']}, T = {summary.get('seq_len', '?')}")
    ax.legend(fontsize=8)
    _save(fig, path)


def compare(workdir: str, cells: list[str]) -> str:
    """Writes ``comparison.md`` and ``comparison.png`` into ``workdir``; returns the table."""
    text = table(workdir, cells)
    with open(os.path.join(workdir, "comparison.md"), "w") as f:
        f.write(text + "\n")
    plot(workdir, cells, os.path.join(workdir, "comparison.png"))
    return text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()


def _label(run_dir: str, workdir: str) -> str:
    """A setting's name: its directory relative to ``workdir`` (``.`` for ``workdir``)."""
    return os.path.relpath(setting_of(run_dir), workdir)


def _grouped(runs):
    """``{setting: [(run_dir, config, summary), ...]}`` in first-seen order."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(setting_of(run[0]), []).append(run)
    return groups


def gradient_norms(workdir: str) -> dict[str, list[dict]]:
    """``{label: [each seed's gradient_norms.json]}`` of the runs below ``workdir`` (labels
    from :func:`_vanishing_label`)."""
    runs: dict[str, list[dict]] = {}
    for f in sorted(glob.glob(os.path.join(workdir, "**", "gradient_norms.json"), recursive=True)):
        with open(f) as fh:
            label = _vanishing_label(_label(os.path.dirname(f), workdir))
            runs.setdefault(label, []).append(json.load(fh))
    if not runs:
        raise FileNotFoundError(f"no gradient_norms.json under {workdir}")
    return runs


def _vanishing_label(setting: str) -> str:
    """``fb1/lstm`` -> ``lstm (forget bias 1)``, ``torch/lstm`` -> ``lstm (torch init)``,
    ``orth/rnn`` -> ``rnn (orthogonal init)``, ``fb1/gru`` -> ``gru``: the forget bias is
    the LSTM's alone."""
    variant, _, cell = setting.rpartition("/")
    if not variant or (variant == "fb1" and cell != "lstm"):
        return cell or setting
    if variant == "fb1":
        return "lstm (forget bias 1)"
    return f"{cell} ({'orthogonal' if variant == 'orth' else variant} init)"


def vanishing_ratios(workdir: str) -> dict[str, dict[str, list[float]]]:
    """``{setting: {"init" | "trained": [per seed, ||g(T-1)|| / ||g(0)||]}}``."""
    return {
        label: {
            when: [s[when]["state"]["geomean"][-1] / s[when]["state"]["geomean"][0] for s in seeds]
            for when in ("init", "trained")
        }
        for label, seeds in gradient_norms(workdir).items()
    }


def _geo(xs) -> float:
    """The geometric mean of the positive values (0 when there are none)."""
    xs = [x for x in xs if x > 0]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else 0.0


def vanishing(workdir: str, path: str | None = None) -> str:
    """``||dL/dh_t||`` against ``T - t`` at initialisation and after training (log scale).

    Reads every ``gradient_norms.json`` below ``workdir`` (``experiments/gradients.py``):
    ``<init>/<cell>/seed<k>/`` or, committed before seeds, ``<cell>/``. Per setting, the
    table gives the geometric mean over seeds of each seed's geometric mean over the probe
    sequences of the whole state's gradient norm at distances 0, 10, 50 and ``T - 1``,
    and the ratio of the last to the first (the 95% t interval of its log10 over seeds in
    brackets); the figure draws that mean and the same interval as a band.
    """
    runs = gradient_norms(workdir)
    rows = [
        "| setting | seeds | when | d = 0 | d = 10 | d = 50 | d = T-1 | ratio T-1 / 0 [95% t] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    for label, seeds in runs.items():
        for when in ("init", "trained"):
            gs = [s[when]["state"]["geomean"] for s in seeds]
            picks = [
                _geo(g[d] for g in gs) if d < len(gs[0]) else math.nan
                for d in (0, 10, 50, len(gs[0]) - 1)
            ]
            ratios = [g[-1] / g[0] for g in gs]
            _, lo, hi, _ = t_interval([math.log10(max(r, 1e-300)) for r in ratios])
            rows.append(
                f"| {label} | {len(gs)} | {when} | "
                + " | ".join(f"{v:.2e}" for v in picks)
                + f" | {_geo(ratios):.1e} [{10**lo:.1e}, {10**hi:.1e}] |"
            )
    if path:
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, when, title in zip(
            axes, ("init", "trained"), ("at initialisation", "after training"), strict=True
        ):
            for label, seeds in runs.items():
                d = seeds[0][when]["distance"]
                gs = [[max(v, 1e-300) for v in s[when]["state"]["geomean"]] for s in seeds]
                logs = [[math.log10(v) for v in g] for g in gs]
                mean = [10 ** statistics.fmean(c) for c in zip(*logs, strict=True)]
                (line,) = ax.plot(d, mean, label=f"{label} (n={len(gs)})")
                if len(gs) > 1:  # the 95% t interval of log10 over seeds
                    intervals = [t_interval(c) for c in zip(*logs, strict=True)]
                    ax.fill_between(
                        d,
                        [10 ** i[1] for i in intervals],
                        [10 ** i[2] for i in intervals],
                        color=line.get_color(),
                        alpha=0.2,
                        linewidth=0,
                    )
            ax.set_yscale("log")
            ax.set_xlabel("distance T - t (steps)")
            ax.set_title(f"adding problem, {title}")
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel("||dL/d state_t|| (LSTM: h_t and c_t)\ngeometric mean, 95% interval")
        axes[0].legend(fontsize=7)
        _save(fig, path)
    return "\n".join(rows)


def runs_under(workdir: str) -> list[tuple[str, dict, dict]]:
    """``(run_dir, config, summary)`` for every completed run below ``workdir``."""
    out = []
    for f in sorted(glob.glob(os.path.join(workdir, "**", "summary.json"), recursive=True)):
        run_dir = os.path.dirname(f)
        with open(f) as fh:
            summary = json.load(fh)
        with open(os.path.join(run_dir, "config.json")) as fh:
            config = json.load(fh)
        if summary.get("status") == "completed":
            out.append((run_dir, config, summary))
    return out


_MATCHED = " ({} units, matched)"  # a memory model label's width, when matched


def _without_width(model: str) -> str:
    """``"gru (148 units, matched)"`` -> ``"gru"``, ``"min_gru (3 x 129 units, matched)"``
    -> ``"min_gru"``: the cell, whatever width and depth a task gave it."""
    return re.sub(re.escape(_MATCHED).replace(r"\{\}", r"[0-9x ]+"), "", model)


def memory_settings(workdir: str) -> dict[tuple, dict]:
    """``{(task, T, model, learning rate): seed_stats}`` of the memory runs below
    ``workdir``; ``model`` is the cell, with the LSTM's initialisation (``lstm (fb1)``)
    or the RNN's orthogonal one (``rnn (orth)``), and the hidden size when it was
    matched to another cell's parameters."""
    out: dict[tuple, list[str]] = {}
    for runs in _grouped(runs_under(workdir)).values():
        _, config, summary = runs[0]
        cell = summary["cell"]
        parts = config["name"].split("/")
        init = next((p for p in parts if p in MEMORY_INITS), "fb1")
        model = f"{cell} ({init})" if cell == "lstm" or init == "orth" else cell
        if config["model"].get("match_params") not in (None, cell):
            width, layers = summary.get("hidden_size", "?"), summary.get("num_layers", 1)
            model += _MATCHED.format(f"{layers} x {width}" if layers > 1 else width)
        key = (summary["task"], summary["seq_len"], model, config["optimizer"]["learning_rate"])
        out.setdefault(key, []).extend(r[0] for r in runs)
    order = {"rnn": 0, "gru": 1, "lstm": 2}
    keys = sorted(out, key=lambda k: (k[0], k[1], order.get(k[2].split()[0], 3), k[2], k[3]))
    return {k: seed_stats(out[k]) for k in keys}


def memory_horizon(settings: dict[tuple, dict]) -> dict[tuple[str, str], dict]:
    """Per (task, model): the best learning rate at each T and the longest T solved by at
    least :data:`SOLVED_SEEDS` of its seeds there. The best rate solves the most seeds,
    then in the fewest median steps, then to the lowest mean final eval loss (runs that
    stop once solved all end just under the mark, so the loss alone does not rank them)."""

    def rank(st):
        median = st["median_steps"] if st["median_steps"] is not None else math.inf
        return (-st["solved"] / max(st["n"], 1), median, mean_std(st["final_eval"])[0])

    best: dict[tuple[str, str], dict[int, tuple[float, dict]]] = {}
    for (task, length, model, lr), st in settings.items():
        current = best.setdefault((task, model), {}).get(length)
        if current is None or rank(st) < rank(current[1]):
            best[(task, model)][length] = (lr, st)
    out = {}
    for key, by_length in best.items():
        solved = [t for t, (_, st) in by_length.items() if setting_solved(st)]
        out[key] = {"best": dict(sorted(by_length.items())), "longest": max(solved, default=None)}
    return out


def memory(workdir: str, path: str | None = None) -> str:
    """Final eval loss / baseline against T, per task, model and learning rate (step
    budget, mean [95% interval] over seeds, fraction solved with its Wilson interval,
    median steps to solve), then the memory
    horizon: per (task, model), the longest T solved at its best learning rate."""
    settings = memory_settings(workdir)
    rows = [
        "| task | T | model | lr | seeds | budget (steps) | eval loss | eval / baseline | "
        "solved | median steps to solve |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (task, length, model, lr), st in settings.items():
        median = "-" if st["median_steps"] is None else f"{st['median_steps']:.0f}"
        low, high = min(st["budget"]), max(st["budget"])
        budget = f"{low}" if low == high else f"{low}-{high}"
        rows.append(
            f"| {task} | {length} | {model} | {lr:g} | {st['n']} | {budget} | "
            f"{fmt(st['final_eval'])} | "
            f"{fmt(st['ratio'], 3)} | {fmt_fraction(st['solved'], st['n'])} | {median} |"
        )
    horizon = memory_horizon(settings)
    rows += [
        "",
        "| task | model | longest T solved (>= 2/3 of seeds) | best lr per T |",
        "| --- | --- | --- | --- |",
    ]
    for (task, model), h in sorted(horizon.items()):
        lrs = ", ".join(f"{t}: {lr:g}" for t, (lr, _) in h["best"].items())
        rows.append(f"| {task} | {model} | {h['longest'] or 'none'} | {lrs} |")
    if path:
        _memory_figure(horizon, path)
    return "\n".join(rows)


def _memory_figure(horizon: dict, path: str) -> None:
    """Per task, two panels against T at each model's best rate: the final eval loss over
    the baseline, and the steps to solve (the budget's share a solved run needed)."""
    plt = _pyplot()
    tasks = sorted({t for t, _ in horizon})
    # one colour per cell across tasks (the matched widths differ from task to task)
    kinds = sorted({_without_width(m) for _, m in horizon})
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        lengths = set()
        for (t, model), h in sorted(horizon.items()):
            if t != task:
                continue
            xs = list(h["best"])
            lengths |= set(xs)
            ratios = [h["best"][x][1]["ratio"] for x in xs]
            color = colors[_without_width(model)]
            row[0].plot(xs, [mean_std(r)[0] for r in ratios], "o-", color=color, label=model)
            intervals = [t_interval(r, lower=0.0) for r in ratios]
            row[0].fill_between(
                xs, [i[1] for i in intervals], [i[2] for i in intervals], color=color,
                alpha=0.2, linewidth=0,
            )  # fmt: skip
            solved = [(x, h["best"][x][1]["steps_to_solve"]) for x in xs]
            solved = [(x, steps) for x, steps in solved if steps]
            if solved:
                sx = [x for x, _ in solved]
                row[1].plot(sx, [statistics.median(v) for _, v in solved], "o-", color=color,
                            label=model)  # fmt: skip
                row[1].fill_between(
                    sx, [min(v) for _, v in solved], [max(v) for _, v in solved], color=color,
                    alpha=0.2, linewidth=0,
                )  # fmt: skip
        row[0].axhline(1.0, color="k", linestyle=":", label="memoryless baseline")
        row[0].axhline(SOLVED_FRACTION, color="k", linestyle="--", lw=0.8, label="solved mark")
        row[0].set_yscale("log")
        row[0].set_ylabel("final eval loss / baseline\n(best lr; mean, 95% interval)")
        row[1].set_yscale("log")
        row[1].set_ylabel("steps to solve (median of the seeds\nthat solve; their range)")
        for ax in row:
            ax.set_xscale("log")
            ax.set_xticks(sorted(lengths), [str(x) for x in sorted(lengths)])
            ax.minorticks_off()
            ax.set_xlabel("T")
            ax.set_title(task)
            ax.legend(fontsize=7)
    _save(fig, path)


def _model_shape(config: dict) -> tuple[int, int, int]:
    """``(layers, hidden, embed)``: what makes two depth settings the same model."""
    m = config["model"]
    return m["num_layers"], m["hidden_size"], m["embed_size"]


def depth_families(workdir: str) -> dict[str, list[tuple[str, dict, list[str]]]]:
    """``{family: [(label, config, seed run dirs), ...]}`` of the runs below ``workdir``,
    by layer count; a family is the config name without its last part
    (``depth/params/L2`` -> ``depth/params``).

    A model that belongs to two families is run once: ``depth.py:width-2`` is
    ``params-2`` (2 x 256), so a family that lacks a layer count borrows the runs of the
    same model from another family, labelled ``<its own setting> (= <the runs'>)``.
    """
    families: dict[str, dict[int, tuple[str, dict, list[str]]]] = {}
    for setting, runs in _grouped(runs_under(workdir)).items():
        config = runs[0][1]
        family = families.setdefault(config["name"].rsplit("/", 1)[0], {})
        family[config["model"]["num_layers"]] = (
            os.path.relpath(setting, workdir),
            config,
            [r[0] for r in runs],
        )
    for family in families.values():
        label = next(iter(family.values()))[0]
        widths = {_model_shape(c)[1:] for _, c, _ in family.values()}
        for other in families.values():
            for layers, (other_label, config, dirs) in other.items():
                if layers not in family and _model_shape(config)[1:] in widths:
                    own = re.sub(r"(^|/)L\d+(/|$)", rf"\g<1>L{layers}\g<2>", label)
                    family[layers] = (f"{own} (= {other_label})", config, dirs)
    return {name: [f[k] for k in sorted(f)] for name, f in sorted(families.items())}


def depth(workdir: str, path: str | None = None) -> str:
    """Validation loss of each depth (mean [95% interval] over seeds): best and final, the test
    loss at the best validation checkpoint where the runs kept it; the figure has each
    family's validation curves and, for depth families, test loss against depth.

    Example (the committed runs)::

        print(depth("experiments/results/depth", "/tmp/depth.png"))
    """
    rows = [
        "| setting | layers | hidden | recurrent parameters | seeds | best eval loss | "
        "test loss at best eval | final eval loss | steps (each seed's best eval at) | "
        "wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    families = depth_families(workdir)
    for settings in families.values():
        for label, config, dirs in settings:
            layers, hidden, embed = _model_shape(config)
            summary, _ = load_run(dirs[0])
            params = summary.get("recurrent_params") or analytic.recurrent_params(
                "lstm", embed, hidden, layers
            )
            st = seed_stats(dirs)
            best_at = ", ".join(str(step) for step in st["best_step"])
            rows.append(
                f"| {label} | {layers} | {hidden} | {params:,} | {st['n']} | "
                f"{fmt(st['best_eval'])} | {fmt(st['best_test'])} | {fmt(st['final_eval'])} | "
                f"{summary['steps']} ({best_at}) | {st['wall_time_s']:.0f} |"
            )
    if path:
        _depth_figure(families, path)
    return "\n".join(rows)


def _depth_figure(families: dict[str, list[tuple[str, dict, list[str]]]], path: str) -> None:
    """One panel of validation curves per family; with several depths, a last panel of
    test loss at the best validation checkpoint against depth (mean, 95% t interval)."""
    plt = _pyplot()
    by_depth = any(len(settings) > 1 for settings in families.values())
    fig, axes = plt.subplots(
        1, len(families) + by_depth, figsize=(5 * (len(families) + by_depth), 4), squeeze=False
    )
    for ax, (name, settings) in zip(axes[0], families.items(), strict=False):
        for label, config, dirs in settings:
            layers, hidden, _ = _model_shape(config)
            band(ax, *curves(dirs, "eval/loss"), f"{label}: {layers} x {hidden}", "o-")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (nats/char)")
        ax.legend(fontsize=7)
    if by_depth:
        ax = axes[0][-1]
        for name, settings in families.items():
            xs = [_model_shape(config)[0] for _, config, _ in settings]
            tests = [
                [v for v in seed_stats(dirs)["best_test"] if v is not None]
                for _, _, dirs in settings
            ]
            if all(tests):  # every depth kept its test loss at the best validation
                intervals = [t_interval(v, lower=0.0) for v in tests]
                means = [i[0] for i in intervals]
                spread = [[i[0] - i[1] for i in intervals], [i[2] - i[0] for i in intervals]]
                ax.errorbar(xs, means, yerr=spread, fmt="o-", capsize=3, label=name)
        ax.set_xticks(sorted({_model_shape(c)[0] for s in families.values() for _, c, _ in s}))
        ax.set_xlabel("layers")
        ax.set_ylabel("test loss at the best validation (nats/char)")
        ax.set_title("test loss against depth (mean, 95% interval)")
        ax.legend(fontsize=7)
    _save(fig, path)


def ptb(*paths: str) -> str:
    """Perplexities of PTB runs (``summary.json``), against Zaremba et al. 2014, Table 1.

    Each path is a run directory or a workdir whose ``<cell>/`` runs are read
    (:func:`run_dirs`).
    """
    published = {
        200: ("small", 120.7, 114.5),
        650: ("medium", 86.2, 82.7),
        1500: ("large", 82.2, 78.4),
    }
    rows = [
        "| run | size | epochs | valid ppl | test ppl | published valid / test | test vs "
        "published | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run_dir in [d for p in paths for d in run_dirs(p)]:
        summary, _ = load_run(run_dir)
        with open(os.path.join(run_dir, "config.json")) as fh:
            config = json.load(fh)
        m, f = config["model"], summary["final"]
        name, pv, pt = published.get(m["hidden_size"], ("?", math.nan, math.nan))
        test = f.get("test/perplexity", math.nan)
        rows.append(
            f"| {config['name']} | "
            f"{m['num_layers']} x {m['hidden_size']} ({name}) | {config['epochs']} | "
            f"{f.get('eval/perplexity', math.nan):.1f} | {test:.1f} | {pv} / {pt} | "
            f"{100 * (test / pt - 1):+.1f}% | {summary['wall_time_s']:.0f} |"
        )
    return "\n".join(rows)


def cost_records(src: str) -> list[dict]:
    """``experiments.estimate``'s JSON records: the file ``src``, or every ``*.json`` in the
    directory ``src`` (repeats of one command, in separate processes)."""
    paths = sorted(glob.glob(os.path.join(src, "*.json"))) if os.path.isdir(src) else [src]
    if not paths:
        raise FileNotFoundError(f"no experiments.estimate record (*.json) in {src}")
    records = []
    for p in paths:
        with open(p) as fh:
            records.append(json.load(fh))
    return records


def cost(src: str, path: str | None = None) -> str:
    """Time per train step of each cell on the kernel named in each row, with the analytic
    FLOPs of the step and the rate achieved: the median over the repeats in ``src`` (see
    :func:`cost_records`), their range in brackets; the ratio to the RNN on the same
    kernel is taken within each repeat, then its median."""
    records = cost_records(src)
    rows = [
        f"| cell | backend | train step (ms) [range, n={len(records)}] | eval step (ms) | "
        "train step / RNN's | GFLOP per train step | GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def ms(values):
        values = [1e3 * v for v in values]
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]"

    medians = []
    for i, r in enumerate(records[0]["cells"]):
        backend = r.get("backend", "auto")
        rows_i = [rec["cells"][i] for rec in records]
        train_s = [x["train_step_s"] for x in rows_i]
        ratios = []
        for rec, x in zip(records, rows_i, strict=True):
            ref = next(
                (
                    y["train_step_s"]
                    for y in rec["cells"]
                    if y["cell"] == "rnn" and y.get("backend", "auto") == backend
                ),
                rec["cells"][0]["train_step_s"],
            )
            ratios.append(x["train_step_s"] / ref)
        flops = r.get("train_flops")
        median = statistics.median(train_s)
        rate = f"{flops / median / 1e9:.1f}" if flops else "-"
        rows.append(
            f"| {r['cell']} | {backend} | {ms(train_s)} | "
            f"{ms([x['eval_step_s'] for x in rows_i])} | {statistics.median(ratios):.2f} | "
            f"{flops / 1e9 if flops else math.nan:.3f} | {rate} |"
        )
        medians.append((f"{r['cell']}\n{backend}", 1e3 * median, 1e3 * min(train_s),
                        1e3 * max(train_s)))  # fmt: skip
    if path:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        heights = [m[1] for m in medians]
        errors = [[m[1] - m[2] for m in medians], [m[3] - m[1] for m in medians]]
        ax.bar([m[0] for m in medians], heights, yerr=errors)
        ax.set_ylabel("ms per train step (median, range)")
        first = records[0]
        ax.set_title(
            f"{first['config']}, T = {first['seq_len']}, B = {first['batch_size']}, "
            f"H = {first['hidden_size']} ({first['device']['kind']})"
        )
        _save(fig, path)
    return "\n".join(rows)


def classify(workdir: str, path: str | None = None) -> str:
    """Accuracy of each sequence classifier or tagger below ``workdir`` (bidirectional.py),
    mean [95% interval] over seeds, with the eval loss against the task's baseline."""
    rows = [
        "| setting | model | seeds | eval accuracy | eval loss | eval / baseline | steps | "
        "wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    bars = []
    for setting, runs in _grouped(runs_under(workdir)).items():
        _, config, summary = runs[0]
        name = ("Bi" if config["model"]["bidirectional"] else "") + summary["cell"].upper()
        st = seed_stats([r[0] for r in runs])
        rows.append(
            f"| {os.path.relpath(os.path.dirname(setting), workdir)} | {name} | {st['n']} | "
            f"{fmt(st['accuracy'], 3)} | {fmt(st['final_eval'], 3)} | {fmt(st['ratio'], 3)} | "
            f"{summary['steps']} | {st['wall_time_s']:.0f} |"
        )
        mean, lo, hi, _ = t_interval(st["accuracy"], lower=0.0)
        bars.append((f"{config['task']}\n{name}", mean, (mean - lo, hi - mean)))
    if path:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(max(5, len(bars)), 3.5))
        errors = [[b[2][0] for b in bars], [b[2][1] for b in bars]]
        ax.bar([b[0] for b in bars], [b[1] for b in bars], yerr=errors)
        ax.set_ylim(0, 1)
        ax.set_ylabel("eval accuracy (mean, 95% interval over seeds)")
        _save(fig, path)
    return "\n".join(rows)


#: The rows of experiments/README.md's results table: what each experiment is, its
#: config and command, its run files under the results directory, the published number
#: it is compared with, and what the row says while no run files are committed.
EXPERIMENTS = (
    (
        "adding problem, T = 100, RNN / GRU / LSTM (the main job)",
        "`adding.py`",
        "`python -m experiments.run --config experiments/configs/adding.py`",
        "adding",
        "baseline 1/6 ≈ 0.167; LSTM solves T = 100 (Hochreiter & Schmidhuber 1997, sec. 5.4, "
        "exp. 4)",
        "not run at this commit",
    ),
    (
        "1. PTB small (2x200, no dropout, 13 epochs)",
        "`ptb.py:small`",
        "`python -m experiments.run --config experiments/configs/ptb.py:small`",
        "ptb_small",
        "valid 120.7 / test 114.5, one run (Zaremba et al. 2014, arXiv:1409.2329, Table 1); "
        "TensorFlow's rerun valid 121.39 / test 115.91 (tensorflow/models "
        "tutorials/rnn/ptb/ptb_word_lm.py at 086660f)",
        "not run at this commit (~1 h on a 2-core CPU)",
    ),
    (
        "1. PTB medium (2x650, dropout 0.5, 39 epochs)",
        "`ptb.py:medium`",
        "same, `ptb.py:medium --resume`",
        "ptb_medium",
        "valid 86.2 / test 82.7 (ibid.); TensorFlow's rerun 86.16 / 82.07 (same file)",
        "not run: a GPU job (~1 day on a 2-core CPU)",
    ),
    (
        "1. PTB large (2x1500, dropout 0.65, 55 epochs)",
        "`ptb.py:large`",
        "same, `ptb.py:large --resume`",
        "ptb_large",
        "valid 82.2 / test 78.4 (ibid.); TensorFlow's rerun 82.62 / 78.29 (same file)",
        "not run: a GPU job (~1 week on a 2-core CPU)",
    ),
    (
        "2. depth: 1 / 2 / 3 layers, equal parameters and equal width, tiny-shakespeare",
        "`depth.py:params-<L>`, `:width-<L>`",
        "loop in `depth.py`'s docstring",
        "depth",
        "at about equal parameters, a depth of at least two helps, two against three layers "
        "is mixed (Karpathy et al. 2015, arXiv:1506.02078, sec. 4.1, Table 1: War and Peace, "
        "Linux kernel)",
        "not run at this commit (~6 h on a 2-core CPU for the 15 runs)",
    ),
    (
        "2b. depth on word-level PTB: 1 / 2 / 3 layers, equal parameters and equal width, "
        "trained until validation stops improving",
        "`ptb_depth.py:params-<L>-d<dropout>-lr<rate>`, `:width-<L>-...`",
        "see `ptb_depth.py`'s docstring",
        "ptb_depth",
        "at about equal parameters, a depth of at least two helps, two against three layers "
        "is mixed (Karpathy et al. 2015, sec. 4.1, Table 1)",
        "not run: ~30 runs, 50-70 CPU-hours on a 2-core CPU (minutes each on a GPU)",
    ),
    (
        "3. char-LM, tiny-shakespeare, char-rnn's split (last 5% of each of 50 rows), 2x256",
        "`char_lm.py`",
        "`python -m experiments.run --config experiments/configs/char_lm.py`",
        "char_lm",
        "no number printed for an LSTM on this split; for scale, nanoGPT's 6-layer character "
        "GPT (10.7 M parameters) reaches 1.4697 validation on the contiguous last 10% "
        "(karpathy/nanoGPT README.md at 196160b; its split: data/shakespeare_char/prepare.py)",
        "not run at this commit (~20 min a seed on a 2-core CPU)",
    ),
    (
        "4. memory horizon: adding and copy, T = 10 ... 400, lr grid",
        "`memory.py:<task>-<T>-<init>-lr<lr>`",
        "`python -m experiments.sweeps.memory --jobs 2`",
        "memory",
        "LSTM solves adding at T ≥ 100 (Hochreiter & Schmidhuber 1997, sec. 5.4, exp. 4); "
        "the LSTM beats the copy baseline at T = 100 only, after thousands of steps "
        "(Arjovsky et al. 2016, arXiv:1511.06464, sec. 4.1, Fig. 1)",
        "not run at this commit",
    ),
    (
        "4a. memory without the confounds (one budget for every cell, evaluations every "
        "100 steps, chrono and orthogonal initialisation): the settings run so far",
        "`memory.py:<task>-<T>-<init>-lr<lr>`",
        "`python -m experiments.sweeps.memory --jobs 2` (see `memory.py`'s docstring)",
        "memory_v2",
        "the LSTM beats the copy baseline at T = 100 only, after thousands of steps (Arjovsky "
        "et al. 2016, arXiv:1511.06464, sec. 4.1, Fig. 1); chrono initialisation is made "
        "for such tasks (Tallec & Ollivier 2018, arXiv:1804.11188)",
        "not run at this commit",
    ),
    (
        "4b. the LSTM's descendants: LSTM, GRU, sLSTM, minLSTM, minGRU at matched "
        "parameters, adding T = 50, 100, 200, copy T = 20",
        "`descendants.py:<task>-<T>`",
        "see `descendants.py`'s docstring",
        "descendants",
        "no number on these tasks; the claims: sLSTM's exponential gating lets it revise "
        "what it stored (Beck et al. 2024, arXiv:2405.04517, sec. 1); stacked minLSTM and "
        "minGRU solve selective copying, one layer does not (Feng et al. 2024, "
        "arXiv:2410.01201, sec. 4)",
        "not run at this commit",
    ),
    (
        "4c. the LSTM's descendants on the char-LM: the five cells at the 2 x 256 LSTM's "
        "recurrent parameters, char-rnn's split",
        "`descendants.py:char`",
        "`python -m experiments.run --config experiments/configs/descendants.py:char`",
        "descendants_char",
        "no number on this split; the claim: minLSTM and minGRU model characters about as "
        "well as recent sequence models (Feng et al. 2024, arXiv:2410.01201, sec. 4, "
        "Shakespeare)",
        "not run yet (15 runs of 7,700 steps, ~4 h on a 2-core CPU two at a time)",
    ),
    (
        "5. vanishing gradients: ‖dL/dh_t‖ vs T − t, adding T = 100",
        "`vanishing.py:fb1`, `:torch`, `:orth`",
        "loop in `vanishing.py`'s docstring",
        "vanishing",
        "the LSTM mitigates vanishing gradients (Hochreiter & Schmidhuber 1997, secs. 3-4: "
        "the constant error carousel); the RNN's gradient vanishes (Bengio et al. 1994)",
        "not run at this commit",
    ),
    (
        "6. bidirectional vs unidirectional (lookahead tagging; MNIST-1D)",
        "`bidirectional.py:lookahead-uni`, `:lookahead-bi`, `:mnist1d-uni`, `:mnist1d-bi`",
        "loop in `bidirectional.py`'s docstring",
        "bidirectional",
        "a causal model cannot beat the baseline on lookahead (by construction); a "
        "bidirectional RNN reads the future (Schuster & Paliwal 1997, IEEE Trans. Signal "
        "Processing 45(11))",
        "not run at this commit",
    ),
    (
        "7. cost: train step, every cell on the same kernel, FLOP-normalised",
        "`adding.py` + override",
        "`python -m experiments.estimate --config experiments/configs/adding.py "
        "--config.model.hidden_size=256 --backends scan,fused --out runs/estimate/<k>.json`",
        "estimate",
        "the LSTM is slower to train (a common claim; no published number)",
        "not run at this commit",
    ),
)


def commits(summaries: list[dict]) -> str:
    """The short git commits the runs came from (``+dirty``: a tree with local changes)."""
    found = sorted({s.get("git_commit") or "unknown" for s in summaries})
    return ", ".join(c[:7] + ("+dirty" if c.endswith("+dirty") else "") for c in found)


def _summary_line(kind: str, src: str) -> tuple[str, str, str, str] | None:
    """``(hardware, wall time, our number, commits)`` of one experiment's committed run
    files, or ``None`` when there are none."""
    if kind == "estimate":
        records = cost_records(src)
        device = records[0]["device"]
        cells = {}
        for rec in records:
            for r in rec["cells"]:
                key = f"{r['cell'].upper()} {r.get('backend', 'auto')}"
                cells.setdefault(key, []).append(1e3 * r["train_step_s"])
        number = f"ms per train step (median of {len(records)}): " + ", ".join(
            f"{k} {statistics.median(v):.0f}" for k, v in cells.items()
        )
        hardware = f"{device['kind']} ({device.get('cpu_count', '?')} cores)"
        return hardware, "-", number, commits(records)
    runs = runs_under(src)
    if not runs:
        return None
    device = runs[0][2].get("device", {})
    hardware = f"{device.get('kind', '?')} ({device.get('cpu_count', '?')} cores)"
    wall = f"{sum(r[2].get('wall_time_s', 0.0) for r in runs):,.0f} s"
    parts = []
    if kind in ("descendants", "memory_v2"):
        settings = memory_settings(src)
        rates = collections.Counter(key[:3] for key in settings)  # > 1: run at several rates
        for (task, length, model, lr), st in settings.items():
            median = "-" if st["median_steps"] is None else f"{st['median_steps']:,.0f}"
            at = f" at lr {lr:g}" if rates[task, length, model] > 1 else ""
            parts.append(
                f"{task} T {length} {_without_width(model)}{at}: solved "
                f"{fmt_fraction(st['solved'], st['n'])}, median steps {median}"
            )
    elif kind == "memory":
        horizon = memory_horizon(memory_settings(src))
        for (task, model), h in sorted(horizon.items()):
            lengths = ", ".join(str(t) for t in h["best"])
            parts.append(f"{task} {model}: longest T {h['longest'] or 'none'} (ran T {lengths})")
    elif kind == "vanishing":
        for label, by_when in vanishing_ratios(src).items():
            init, trained = (_geo(by_when[w]) for w in ("init", "trained"))
            parts.append(
                f"{label}: ratio d=T-1 / d=0 {init:.1e} at init, {trained:.1e} trained "
                f"(n={len(by_when['init'])})"
            )
    elif kind == "depth":
        for family, settings in depth_families(src).items():
            values = [
                f"{c['model']['num_layers']} x {c['model']['hidden_size']} "
                f"{fmt(seed_stats(dirs)['best_test'], 3)} (n={len(dirs)})"
                for _, c, dirs in settings
            ]
            parts.append(f"{family.rpartition('/')[2]}: test at best eval " + ", ".join(values))
    else:
        for setting, group in _grouped(runs).items():
            st = seed_stats([r[0] for r in group])
            name = os.path.relpath(setting, src)
            f = group[0][2]["final"]
            if kind in ("char_lm", "descendants_char"):
                value = (
                    f"valid nats/char {fmt(st['final_eval'], 3)} at the end, "
                    f"{fmt(st['best_eval'], 3)} at best"
                )
            elif "eval/perplexity" in f:
                ppl = {
                    k: fmt([r[2]["final"].get(k) for r in group], 1)
                    for k in ("eval/perplexity", "test/perplexity_one_stream",
                              "test/perplexity_streams")
                }  # fmt: skip
                value = (
                    f"valid ppl {ppl['eval/perplexity']}, test ppl one stream "
                    f"{ppl['test/perplexity_one_stream']}, streams {ppl['test/perplexity_streams']}"
                )
            elif "eval/accuracy" in f and kind == "bidirectional":
                value = f"acc {fmt(st['accuracy'], 3)}, eval/baseline {fmt(st['ratio'], 3)}"
            else:
                solved = fmt_fraction(st["solved"], st["n"])
                value = f"eval/baseline {fmt(st['ratio'], 3)} ({solved} solved)"
            name = kind if name == "." else name
            parts.append(f"{name}: {value} (n={st['n']})")
    return hardware, wall, "; ".join(parts), commits([r[2] for r in runs])


def results_table(results: str = "experiments/results") -> str:
    """experiments/README.md's results table, each number from the run files under
    ``results`` (mean [95% interval] over seeds, n seeds), with the commits the runs came
    from."""
    rows = [
        "| experiment | config | command | hardware | wall time | our number | commit | "
        "published number (source) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for title, config, command, kind, published, not_run in EXPERIMENTS:
        src = os.path.join(results, kind)
        line = _summary_line(kind, src) if os.path.exists(src) else None
        hardware, wall, number, commit = line or ("-", "-", not_run, "-")
        rows.append(
            f"| {title} | {config} | {command} | {hardware} | {wall} | {number} | {commit} | "
            f"{published} |"
        )
    return "\n".join(rows)


RUN_FILES = (".json", ".jsonl", ".md")  # the small files every table and figure reads
SKIPPED_DIRS = {"checkpoints", "tensorboard"}


def collect(src: str, dst: str) -> str:
    """Copies the run files under ``src`` (config, metrics, summary, wall clock, gradient
    norms, samples, tables) to ``dst`` with the same layout, leaving out checkpoints and
    TensorBoard events: a few hundred KB that can be committed, so the tables and
    figures can be rebuilt without the runs. Returns the list of copied files."""
    copied = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(RUN_FILES):
                rel = os.path.relpath(os.path.join(root, name), src)
                os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
                shutil.copy2(os.path.join(src, rel), os.path.join(dst, rel))
                copied.append(rel)
    return "\n".join(copied)


COMMANDS = {
    "collect": collect,
    "vanishing": vanishing,
    "memory": memory,
    "depth": depth,
    "ptb": ptb,
    "cost": cost,
    "classify": classify,
    "table": results_table,
}


def main(argv: list[str]) -> None:
    if argv and argv[0] in COMMANDS:
        print(COMMANDS[argv[0]](*argv[1:]))
    elif len(argv) >= 2:
        print(compare(argv[0], argv[1:]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
