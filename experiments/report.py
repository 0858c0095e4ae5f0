"""Tables and figures made from run directories (``summary.json``, ``metrics.jsonl``).

  python -m experiments.report runs/adding rnn gru lstm        # comparison.{md,png}
  python -m experiments.report vanishing runs/vanishing experiments/figures/vanishing_gradients.png
  python -m experiments.report memory runs/memory experiments/figures/memory_vs_length.png
  python -m experiments.report depth runs/depth experiments/figures/depth.png
  python -m experiments.report ptb runs/ptb_small [runs/ptb_medium ...]
  python -m experiments.report cost runs/estimate/cost.json experiments/figures/cost.png
  python -m experiments.report classify runs/bidirectional experiments/figures/bidirectional.png
  python -m experiments.report collect runs experiments/results   # the run files to commit

Each prints a Markdown table; the figure path is optional. Numbers come from the files
the runs wrote, never typed by hand.

Every run of ``experiments.run`` is ``<workdir>/<cell>/``. Some committed results in
``experiments/results/`` (``ptb_small``, ``depth/L*``, ``memory/*/T*/chrono|torch``) come
from single-cell runs written directly into their workdir, before that layout; every
reader here takes both (:func:`run_dirs`, :func:`runs_under`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import sys

from lstm_jax import train

SOLVED_FRACTION = 0.1  # "solved": final eval loss below 10% of the memoryless baseline


def load_run(run_dir: str) -> tuple[dict, list[dict]]:
    """A run's ``summary.json`` and ``metrics.jsonl`` records."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    return summary, train.read_metrics(os.path.join(run_dir, "metrics.jsonl"))


def run_dirs(path: str) -> list[str]:
    """The run directories ``path`` names: ``path`` itself when it holds a run's
    ``summary.json`` (a single-cell run written directly into its workdir), else each
    ``<cell>/`` directly below it that does, in name order."""
    if os.path.exists(os.path.join(path, "summary.json")):
        return [path]
    found = sorted(os.path.dirname(f) for f in glob.glob(os.path.join(path, "*", "summary.json")))
    if not found:
        raise FileNotFoundError(f"no run under {path}: neither summary.json nor */summary.json")
    return found


def table(workdir: str, cells: list[str]) -> str:
    """A Markdown table of each cell's final losses against the task's baseline."""
    rows = [
        "| cell | final train loss | final eval loss | baseline | eval / baseline | solved | "
        "wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell in cells:
        summary, _ = load_run(os.path.join(workdir, cell))
        final, baseline = summary["final"], summary["baseline"]
        eval_loss = final.get("eval/loss", float("nan"))
        ratio = eval_loss / baseline
        rows.append(
            f"| {cell} | {final.get('train/loss', float('nan')):.4f} | {eval_loss:.4f} | "
            f"{baseline:.4f} | {ratio:.3f} | {'yes' if ratio < SOLVED_FRACTION else 'no'} | "
            f"{summary['wall_time_s']:.0f} |"
        )
    return "\n".join(rows)


def plot(workdir: str, cells: list[str], path: str) -> None:
    """Training and evaluation loss against step for each cell, with the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    baseline = None
    for cell in cells:
        summary, records = load_run(os.path.join(workdir, cell))
        baseline = summary["baseline"]
        tr = [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]
        ev = [(r["step"], r["eval/loss"]) for r in records if "eval/loss" in r]
        (line,) = ax.plot(*zip(*tr, strict=True), label=f"{cell} (train)", alpha=0.8)
        if ev:
            ax.plot(*zip(*ev, strict=True), "o--", color=line.get_color(), label=f"{cell} (eval)")
    ax.axhline(baseline, color="k", linestyle=":", label=f"baseline {baseline:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{summary['task']}, T = {summary.get('seq_len', '?')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def vanishing(workdir: str, path: str | None = None) -> str:
    """``||dL/dh_t||`` against ``T - t`` at initialisation and after training (log scale).

    Reads ``<workdir>/<cell>/gradient_norms.json`` (``experiments/gradients.py``); the
    table gives the geometric mean over the probe sequences of the whole state's gradient
    norm at distances 0, 10, 50 and ``T - 1``, and the ratio of the last to the first.
    """
    runs = {}
    for f in sorted(glob.glob(os.path.join(workdir, "*", "gradient_norms.json"))):
        with open(f) as fh:
            runs[os.path.basename(os.path.dirname(f))] = json.load(fh)
    if not runs:
        raise FileNotFoundError(f"no */gradient_norms.json under {workdir}")
    rows = [
        "| cell | when | d = 0 | d = 10 | d = 50 | d = T-1 | ratio T-1 / 0 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell in [c for c in ("rnn", "gru", "lstm") if c in runs] + sorted(
        set(runs) - {"rnn", "gru", "lstm"}
    ):
        for when in ("init", "trained"):
            g = runs[cell][when]["state"]["geomean"]
            picks = [g[d] if d < len(g) else math.nan for d in (0, 10, 50, len(g) - 1)]
            rows.append(
                f"| {cell} | {when} | "
                + " | ".join(f"{v:.2e}" for v in picks)
                + f" | {g[-1] / g[0]:.1e} |"
            )
    if path:
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, when, title in zip(
            axes, ("init", "trained"), ("at initialisation", "after training"), strict=True
        ):
            for cell, run in runs.items():
                r = run[when]["state"]
                d = run[when]["distance"]
                (line,) = ax.plot(d, r["geomean"], label=cell)
                ax.fill_between(d, r["q10"], r["q90"], color=line.get_color(), alpha=0.2)
            ax.set_yscale("log")
            ax.set_xlabel("distance T - t (steps)")
            ax.set_title(f"adding problem, {title}")
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel("||dL/d state_t|| (LSTM: h_t and c_t)\ngeometric mean, 10-90% band")
        axes[0].legend()
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


def memory(workdir: str, path: str | None = None) -> str:
    """Final eval loss / baseline against T, per task, cell and initialisation."""
    points: dict[tuple[str, str], list[tuple[int, float]]] = {}
    rows = [
        "| task | T | cell | init | eval loss | baseline | eval / baseline |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {"rnn": 0, "gru": 1, "lstm": 2}
    runs = sorted(
        runs_under(workdir),
        key=lambda r: (r[2]["task"], r[2]["seq_len"], order.get(r[2]["cell"], 3), r[1]["name"]),
    )
    for _, config, summary in runs:
        cell, task, length = summary["cell"], summary["task"], summary["seq_len"]
        init = config["name"].rsplit("/", 1)[-1] if cell == "lstm" else "-"  # LSTM's only
        loss, base = summary["final"]["eval/loss"], summary["baseline"]
        rows.append(
            f"| {task} | {length} | {cell} | {init} | {loss:.4f} | {base:.4f} | {loss / base:.3f} |"
        )
        label = f"lstm ({init})" if cell == "lstm" else cell
        points.setdefault((task, label), []).append((length, loss / base))
    if path:
        plt = _pyplot()
        tasks = sorted({t for t, _ in points})
        fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5 * max(len(tasks), 1), 4))
        axes = [axes] if len(tasks) <= 1 else axes
        for ax, task in zip(axes, tasks, strict=False):
            for (t, label), pts in sorted(points.items()):
                if t == task:
                    ax.plot(*zip(*sorted(pts), strict=True), "o-", label=label)
            ax.axhline(1.0, color="k", linestyle=":", label="memoryless baseline")
            ax.set_xscale("log")
            ax.set_yscale("log")
            lengths = sorted({x for (t, _), pts in points.items() if t == task for x, _ in pts})
            ax.set_xticks(lengths, [str(x) for x in lengths])
            ax.minorticks_off()
            ax.set_xlabel("T")
            ax.set_ylabel("final eval loss / baseline")
            ax.set_title(task)
            ax.legend(fontsize=7)
        _save(fig, path)
    return "\n".join(rows)


def depth(workdir: str, path: str | None = None) -> str:
    """Validation loss of each depth: best and final numbers, and the curves."""
    from experiments.configs.depth import lstm_params

    rows = [
        "| layers | hidden | recurrent parameters | best eval loss (step) | final eval loss | "
        "final train loss | steps | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    curves = []
    for run_dir, config, summary in sorted(
        runs_under(workdir), key=lambda r: r[1]["model"]["num_layers"]
    ):
        m, f = config["model"], summary["final"]
        records = train.read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        ev = [(r["step"], r["eval/loss"]) for r in records if "eval/loss" in r]
        best_step, best = min(ev, key=lambda p: p[1]) if ev else (0, math.nan)
        rows.append(
            f"| {m['num_layers']} | {m['hidden_size']} | "
            f"{lstm_params(m['hidden_size'], m['num_layers'], m['embed_size']):,} | "
            f"{best:.4f} ({best_step}) | {f.get('eval/loss', math.nan):.4f} | "
            f"{f.get('train/loss', math.nan):.4f} | {summary['steps']} | "
            f"{summary['wall_time_s']:.0f} |"
        )
        curves.append((f"{m['num_layers']} x {m['hidden_size']}", ev))
    if path:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, ev in curves:
            if ev:
                ax.plot(*zip(*ev, strict=True), "o-", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (nats/char)")
        ax.legend()
        _save(fig, path)
    return "\n".join(rows)


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


def cost(record_path: str, path: str | None = None) -> str:
    """Time per train step of each cell (``experiments.estimate``'s JSON record)."""
    with open(record_path) as fh:
        record = json.load(fh)
    cells = record["cells"]
    ref = next((r["train_step_s"] for r in cells if r["cell"] == "rnn"), cells[0]["train_step_s"])
    rows = [
        "| cell | train step (ms) | eval step (ms) | train step / RNN's |",
        "| --- | --- | --- | --- |",
    ]
    for r in cells:
        rows.append(
            f"| {r['cell']} | {1e3 * r['train_step_s']:.2f} | {1e3 * r['eval_step_s']:.2f} | "
            f"{r['train_step_s'] / ref:.2f} |"
        )
    if path:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar([r["cell"] for r in cells], [1e3 * r["train_step_s"] for r in cells])
        ax.set_ylabel("ms per train step")
        ax.set_title(
            f"{record['config']}, T = {record['seq_len']}, B = {record['batch_size']}, "
            f"H = {record['hidden_size']} ({record['device']['kind']})"
        )
        _save(fig, path)
    return "\n".join(rows)


def classify(workdir: str, path: str | None = None) -> str:
    """Test accuracy of each sequence classifier below ``workdir`` (bidirectional.py)."""
    rows = [
        "| model | test accuracy | test loss | steps | wall time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    bars = []
    for _, config, summary in runs_under(workdir):
        name = ("Bi" if config["model"]["bidirectional"] else "") + summary["cell"].upper()
        f = summary["final"]
        rows.append(
            f"| {name} | {f['eval/accuracy']:.3f} | {f['eval/loss']:.3f} | {summary['steps']} | "
            f"{summary['wall_time_s']:.0f} |"
        )
        bars.append((name, f["eval/accuracy"]))
    if path:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(*zip(*bars, strict=True))
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title("MNIST-1D sequence classification")
        _save(fig, path)
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
