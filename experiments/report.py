"""Tables and figures made from run directories (``summary.json``, ``metrics.jsonl``).

  python -m experiments.report runs/adding rnn gru lstm

Numbers come from the files the runs wrote, never typed by hand.
"""

from __future__ import annotations

import json
import os
import sys

from lstm_jax import train

SOLVED_FRACTION = 0.1  # "solved": final eval loss below 10% of the memoryless baseline


def load_run(run_dir: str) -> tuple[dict, list[dict]]:
    """A run's ``summary.json`` and ``metrics.jsonl`` records."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    return summary, train.read_metrics(os.path.join(run_dir, "metrics.jsonl"))


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


if __name__ == "__main__":
    print(compare(sys.argv[1], sys.argv[2:]))
