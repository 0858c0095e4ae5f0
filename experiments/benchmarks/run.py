"""The LSTM benchmark suite: one command, one process, every implementation side by side.

Command (from the repository root)::

    python -m experiments.benchmarks.run            # full grid, ~10 min on 2 CPU cores
    python -m experiments.benchmarks.run --quick    # tiny grid, seconds (CI smoke test)

For each shape of the grid it builds every implementation, compiles ahead of time
(compile time recorded), warms up, then times ``--repeats`` rounds in which the
implementations and modes (forward; forward+backward) are interleaved, and reports the
median. Throughput is tokens/s = ``time * batch / median seconds``. Peak memory: for JAX
the compiled executable's temporary + output buffers (``compiled.memory_analysis()``);
for torch on CPU the bytes of the tensors autograd saves for the backward pass plus the
output (``torch.autograd.graph.saved_tensors_hooks``), on GPU the CUDA peak.

Writes ``results.json``, ``results.csv``, ``table.md`` and ``throughput.png`` to
``--out`` (default ``experiments/benchmarks/results/<platform>[-quick]``) and prints the
table of ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from experiments.benchmarks import peers
from experiments.benchmarks.peers import Shape

GRID = [
    Shape(100, 32, 128, 256),
    Shape(512, 16, 64, 128),
    Shape(50, 64, 512, 512),
    Shape(1000, 1, 32, 64),
    Shape(100, 32, 128, 256, num_layers=2, bidirectional=True),
]
QUICK_GRID = [Shape(20, 4, 8, 16), Shape(10, 4, 8, 16, num_layers=2, bidirectional=True)]
# Options of the fused kernel, timed on the first shape of the grid.
OPTIONS_SHAPE = Shape(100, 32, 128, 256)
# Activation checkpointing on a long sequence: memory and cost.
LONG_SHAPE = Shape(10_000, 8, 32, 64)
QUICK_LONG_SHAPE = Shape(200, 2, 4, 8)
OURS = "lstm_jax[fused]"


def _runners(shape: Shape, gpu: bool, quick: bool) -> list[peers.Runner]:
    runners = [
        peers.lstm_jax_runner(shape, "fused"),
        peers.lstm_jax_runner(shape, "scan"),
        peers.flax_runner(shape),
    ]
    if gpu:
        runners.insert(0, peers.lstm_jax_runner(shape, "cudnn"))
        runners.append(peers.experimental_rnn_runner(shape))
    try:
        runners.append(peers.torch_runner(shape, "cuda" if gpu else "cpu"))
    except ImportError:
        pass
    return runners


def _time(runners: list[peers.Runner], repeats: int, warmup: int) -> dict:
    times = {(r.name, mode): [] for r in runners for mode in r.calls}
    for r in runners:
        for call in r.calls.values():
            for _ in range(warmup):
                call()
    for _ in range(repeats):  # interleaved: every implementation sees the same load
        for r in runners:
            for mode, call in r.calls.items():
                start = time.perf_counter()
                call()
                times[(r.name, mode)].append(time.perf_counter() - start)
    return times


def _rows(section: str, shape: Shape, runners, times) -> list[dict]:
    rows = []
    for r in runners:
        for mode in r.calls:
            samples = times[(r.name, mode)]
            median = statistics.median(samples)
            rows.append(
                {
                    "section": section,
                    "shape": shape.name,
                    **{f.name: getattr(shape, f.name) for f in shape.__dataclass_fields__.values()},
                    "impl": r.name,
                    "mode": mode,
                    "median_s": median,
                    "min_s": min(samples),
                    "repeats": len(samples),
                    "samples_s": samples,  # one per round, in round order (paired ratios)
                    "tokens_per_s": shape.tokens / median,
                    "compile_s": r.compile_s[mode],
                    "memory_bytes": r.memory_bytes[mode],
                    "memory_kind": r.memory_kind,
                }
            )
    return rows


def _load() -> list[float]:
    return list(os.getloadavg())


def _machine(gpu: bool) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
    }
    try:
        import flax
        import torch

        info.update(
            flax=flax.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads()
        )
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        pass
    return info


def paired_ratio(mine: dict, peer: dict) -> float:
    """Median over rounds of ``peer time / our time``, both timed in the same round.

    Load on a shared machine drifts between rounds; a ratio taken within each round
    cancels most of that drift, which a ratio of two medians does not.
    """
    pairs = zip(peer["samples_s"], mine["samples_s"], strict=True)
    return statistics.median(p / m for p, m in pairs)


def ratio_table(rows: list[dict], ours: str = OURS) -> str:
    """A markdown table: our tokens/s and its paired ratio (:func:`paired_ratio`) to every
    peer, per shape and mode."""
    grid = [r for r in rows if r["section"] == "grid"]
    peers_ = [n for n in dict.fromkeys(r["impl"] for r in grid) if n != ours]
    header = ["shape", "mode", f"{ours} tok/s", *[f"x {p}" for p in peers_], f"{ours} compile s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for shape in dict.fromkeys(r["shape"] for r in grid):
        for mode in ("fwd", "fwd+bwd"):
            by_impl = {r["impl"]: r for r in grid if r["shape"] == shape and r["mode"] == mode}
            if ours not in by_impl:
                continue
            mine = by_impl[ours]
            cells = [shape, mode, f"{mine['tokens_per_s']:,.0f}"]
            for p in peers_:
                cells.append(f"{paired_ratio(mine, by_impl[p]):.2f}" if p in by_impl else "-")
            cells.append(f"{mine['compile_s']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full_table(rows: list[dict]) -> str:
    """Every measurement: tokens/s, compile time and memory."""
    header = ["section", "shape", "impl", "mode", "tok/s", "median ms", "compile s", "memory MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        mem = "-" if r["memory_bytes"] is None else f"{r['memory_bytes'] / 2**20:.1f}"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["section"],
                    r["shape"],
                    r["impl"],
                    r["mode"],
                    f"{r['tokens_per_s']:,.0f}",
                    f"{r['median_s'] * 1e3:.2f}",
                    f"{r['compile_s']:.2f}",
                    mem,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [r for r in rows if r["section"] == "grid"]
    shapes = list(dict.fromkeys(r["shape"] for r in grid))
    impls = list(dict.fromkeys(r["impl"] for r in grid))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    width = 0.8 / len(impls)
    for ax, mode in zip(axes, ("fwd", "fwd+bwd"), strict=True):
        for i, impl in enumerate(impls):
            values = [
                next(
                    (
                        r["tokens_per_s"]
                        for r in grid
                        if r["shape"] == s and r["impl"] == impl and r["mode"] == mode
                    ),
                    0.0,
                )
                for s in shapes
            ]
            ax.bar([k + i * width for k in range(len(shapes))], values, width, label=impl)
        ax.set_xticks(
            [k + 0.4 - width / 2 for k in range(len(shapes))], shapes, rotation=20, fontsize=7
        )
        ax.set_yscale("log")
        ax.set_ylabel("tokens / s")
        ax.set_title(mode)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny grid for a smoke test")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-options", action="store_true", help="skip the options and checkpointing sections"
    )
    args = parser.parse_args(argv)
    gpu = jax.default_backend() == "gpu"
    repeats = args.repeats or (3 if args.quick else 11)
    out = args.out or Path(__file__).parent / "results" / (
        ("gpu" if gpu else "cpu") + ("-quick" if args.quick else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = _load()
    rows = []
    for shape in QUICK_GRID if args.quick else GRID:
        runners = _runners(shape, gpu, args.quick)
        rows += _rows("grid", shape, runners, _time(runners, repeats, args.warmup))
        print(f"{shape.name}: done, load {_load()[0]:.2f}", flush=True)
    if not args.no_options:
        shape = QUICK_GRID[0] if args.quick else OPTIONS_SHAPE
        runners = [
            peers.lstm_jax_runner(shape, "fused", label="fused unroll=1"),
            peers.lstm_jax_runner(shape, "fused", unroll=4, label="fused unroll=4"),
            peers.lstm_jax_runner(shape, "scan", unroll=4, label="scan unroll=4"),
            peers.lstm_jax_runner(shape, "fused", dtype=jnp.bfloat16, label="fused bfloat16"),
        ]
        rows += _rows("options", shape, runners, _time(runners, repeats, args.warmup))
        long = QUICK_LONG_SHAPE if args.quick else LONG_SHAPE
        every = 100 if not args.quick else 20
        runners = [
            peers.lstm_jax_runner(long, "fused", label="fused, all activations"),
            peers.lstm_jax_runner(
                long, "fused", checkpoint=every, label=f"fused, checkpoint every {every}"
            ),
            peers.lstm_jax_runner(long, "scan", label="scan (autodiff)"),
            peers.lstm_jax_runner(
                long, "scan", checkpoint=every, label=f"scan, checkpoint every {every}"
            ),
        ]
        rows += _rows("checkpoint", long, runners, _time(runners, max(3, repeats // 3), 1))
    summary = {
        "command": "python -m experiments.benchmarks.run" + (" --quick" if args.quick else ""),
        "machine": _machine(gpu),
        "load_average_before": load_before,
        "load_average_after": _load(),
        "repeats": repeats,
        "wall_s": time.time() - started,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    with open(out / "results.csv", "w", newline="") as f:
        fields = [k for k in rows[0] if k != "samples_s"]  # the samples are in results.json
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    table = ratio_table(rows)
    (out / "table.md").write_text(
        f"Ratios: each peer's time divided by {OURS}'s in the same round, median over "
        f"rounds (> 1: ours is faster).\n\n{table}\n\n"
        f"All measurements:\n\n{full_table(rows)}\n"
    )
    _plot(rows, out / "throughput.png")
    print(
        f"\nmachine: {summary['machine'].get('cpu_model')} / {summary['machine']['devices']}, "
        f"load average before {load_before[0]:.2f}, after {summary['load_average_after'][0]:.2f}"
    )
    print(table)
    print(
        f"\nwrote {out}/results.json, results.csv, table.md, throughput.png "
        f"in {summary['wall_s']:.0f} s"
    )
    return rows


if __name__ == "__main__":
    main()
