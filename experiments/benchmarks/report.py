"""Tables, CSV and figure of a benchmark run, generated from its ``results.json``.

    python -m experiments.benchmarks.report experiments/benchmarks/results/cpu/results.json

rewrites ``table.md``, ``results.csv`` and ``throughput.png`` next to it (``run.py`` calls
:func:`write_outputs` after every shape).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

LEGEND = (
    "Ratio: the peer's time over ours, both timed in the same round (each in its own "
    "process, one after the other); the median over rounds, and in brackets the min-max "
    "over rounds. > 1: ours is faster. Tokens/s: valid time steps x batch per call over the "
    "median call time. `step`: `time` calls of a jitted single-step cell in a Python loop, "
    "the state fed back (as when sampling); ours is the `lstm_jax.LSTMCell` module there."
)


def paired_ratios(ours: dict, peer: dict) -> list[float]:
    """``peer / ours`` in every round that timed both (``rounds_s``: one median per round,
    ``None`` where a round has none).

    Load on a shared machine drifts between rounds; a ratio taken within each round cancels
    most of that drift, which a ratio of two medians over all rounds does not.
    """
    pairs = zip(peer["rounds_s"], ours["rounds_s"], strict=True)
    return [p / m for p, m in pairs if p is not None and m is not None]


def format_ratio(ratios: list[float]) -> str:
    """``median (min-max)`` of the paired ratios, e.g. ``1.04 (0.98-1.10)``."""
    if not ratios:
        return "-"
    median = f"{statistics.median(ratios):.2f}"
    return median if len(ratios) == 1 else f"{median} ({min(ratios):.2f}-{max(ratios):.2f})"


def _md(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])


def _mib(row: dict) -> str:
    return "-" if row.get("memory_bytes") is None else f"{row['memory_bytes'] / 2**20:.1f}"


def case_table(rows: list[dict], ours: str) -> str:
    """One row per (shape, mode): our tokens/s and the paired ratio to every peer."""
    peers = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != ours]
    header = ["shape", "mode", f"{ours} tok/s", *[f"x {p}" for p in peers]]
    header += ["compile s", "MiB", "kernel"]
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows if r["shape"] == shape):
            by_impl = {r["impl"]: r for r in rows if r["shape"] == shape and r["mode"] == mode}
            mine = by_impl.get(ours)
            cells = [shape, mode, f"{mine['tokens_per_s']:,.0f}" if mine else "-"]
            for p in peers:
                ok = mine is not None and p in by_impl
                cells.append(format_ratio(paired_ratios(mine, by_impl[p])) if ok else "-")
            if mine:
                compile_s = mine["compile_s"]
                cells += ["-" if compile_s is None else f"{compile_s:.2f}", _mib(mine)]
                cells.append(mine.get("kernel") or "-")
            else:
                cells += ["-"] * 3
            lines.append(cells)
    return _md(header, lines)


def full_table(rows: list[dict]) -> str:
    """Every measurement."""
    header = ["case", "shape", "impl", "mode", "tok/s", "median ms", "rounds", "calls/turn"]
    header += ["compile s", "MiB"]
    lines = [
        [
            r["case"],
            r["shape"],
            r["impl"],
            r["mode"],
            f"{r['tokens_per_s']:,.0f}",
            f"{r['median_s'] * 1e3:.3f}",
            str(sum(s is not None for s in r["rounds_s"])),
            str(r["repeats"]),
            "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}",
            _mib(r),
        ]
        for r in rows
    ]
    return _md(header, lines)


def machine_section(summary: dict) -> str:
    m = summary["machine"]
    versions = ", ".join(
        f"{k} {m[k]}" for k in ("python", "jax", "flax", "torch", "lstm_jax") if m.get(k)
    )
    native = m.get("native") or {}
    lines = [
        f"- CPU: {m.get('cpu_model')}, {m.get('cores')} cores usable "
        f"({m.get('cpu_count')} online), flags: {', '.join(m.get('cpu_flags', [])) or '-'}",
        f"- {m.get('platform')}; JAX devices: {', '.join(m.get('devices', []))}",
        f"- {versions}; torch threads: {m.get('torch_threads', '-')}; lstm_jax native "
        f"kernel: {native.get('isa') or native.get('reason') or '-'}",
        f"- git {m.get('git_commit', '?')[:12]}" + (" (dirty tree)" if m.get("git_dirty") else ""),
        f"- command: `{summary['command']}`; {summary['rounds']} rounds (fewer where a "
        f"shape's rounds passed {summary.get('shape_budget_s', 0):.0f} s), at most "
        f"{summary['repeats']} calls per implementation and mode per round; wall "
        f"{summary['wall_s']:.0f} s; load average (1 min) {summary['load_before'][0]:.2f} "
        f"before, {summary['load_after'][0]:.2f} after",
    ]
    return "## Machine\n\n" + "\n".join(lines)


def markdown(summary: dict) -> str:
    """``table.md``: the machine, then one ratio table per case, then every measurement."""
    rows, ours = summary["rows"], summary["ours"]
    parts = [f"# Benchmark: {ours} against its peers", machine_section(summary), LEGEND]
    for case in dict.fromkeys([r["case"] for r in rows] + [n["case"] for n in summary["notes"]]):
        parts.append(f"## {case}")
        case_rows = [r for r in rows if r["case"] == case]
        if case_rows:
            parts.append(case_table(case_rows, ours))
        notes = {}
        for n in summary["notes"]:
            if n["case"] == case:
                notes.setdefault((n["impl"], n["note"]), []).append(n["shape"])
        if notes:
            parts.append(
                "\n".join(
                    f"- {impl} not timed on {', '.join(shapes)}: {note}"
                    for (impl, note), shapes in notes.items()
                )
            )
    parts += ["## All measurements", full_table(rows)]
    return "\n\n".join(parts) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Tokens/s, one panel per case, one bar per implementation (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(len(cases), 1, figsize=(14, 3.6 * len(cases)), squeeze=False)
    for ax, case in zip(axes[:, 0], cases, strict=True):
        case_rows = [r for r in rows if r["case"] == case]
        keys = list(dict.fromkeys((r["shape"], r["mode"]) for r in case_rows))
        impls = list(dict.fromkeys(r["impl"] for r in case_rows))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            by_key = {
                (r["shape"], r["mode"]): r["tokens_per_s"] for r in case_rows if r["impl"] == impl
            }
            values = [by_key.get(k, 0.0) for k in keys]
            ax.bar([k + i * width for k in range(len(keys))], values, width, label=impl)
        ax.set_xticks(
            [k + 0.4 - width / 2 for k in range(len(keys))],
            [f"{s}\n{m}" for s, m in keys],
            fontsize=6,
        )
        ax.set_yscale("log")
        ax.set_ylabel("tokens / s")
        ax.set_title(case)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(summary: dict, out: Path, figure: bool = True) -> None:
    """Writes ``results.json`` (every round's samples), ``results.csv``, ``table.md`` and,
    with ``figure``, ``throughput.png`` to ``out``."""
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    write_derived(summary, out, figure)


def write_derived(summary: dict, out: Path, figure: bool = True) -> None:
    """Everything but ``results.json``, generated from it."""
    rows = summary["rows"]
    with open(out / "results.csv", "w", newline="") as f:
        fields = [k for k in (rows[0] if rows else {}) if k not in ("rounds_s", "samples_s")]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(markdown(summary))
    if rows and figure:
        try:
            plot(rows, out / "throughput.png")
        except ImportError:  # matplotlib is optional: the tables do not need it
            pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a results.json written by run.py")
    args = parser.parse_args(argv)
    write_derived(json.loads(args.results.read_text()), args.results.parent)
    print((args.results.parent / "table.md").read_text())


if __name__ == "__main__":
    main()
