"""minLSTM and minGRU on the parallel kernel against the LSTM, at equal parameter counts:
the time of a forward and backward pass (gradients of every parameter and the input) over
sequence lengths 64 to 4096.

Command (from the repository root)::

    python -m experiments.benchmarks.min_rnn_speed            # about 2 min on 2 CPU cores
    python -m experiments.benchmarks.min_rnn_speed --quick    # tiny sizes, to check it runs

Sizes: batch 16, input 32, one layer, float32. The LSTM has hidden size 64, minLSTM 253,
minGRU 380, so that all three have about 25,000 parameters (``4H(I + H) + 8H``,
``3H(I + 1)``, ``2H(I + 1)``; the counts are read from the parameters and written with
the results). The implementations are ``lstm[auto]`` (``lstm_jax.functional.lstm``'s
default kernel), ``min_lstm[parallel]`` and ``min_gru[parallel]`` (``backend="parallel"``)
and, for reference, the min cells on ``backend="auto"`` and ``"scan"``, which run their
sequential step.

As in ``run.py``, every implementation runs in its own worker process (this module with
``--worker``). For each length every worker compiles its pass ahead of time and warms up;
then ``--rounds`` rounds follow, in which the workers take turns in an order that rotates
from round to round, each timing up to ``--repeats`` calls (as many as fill ``--budget``
seconds). The ratio to the LSTM is paired: per round, the LSTM's median over the other's,
then the median over rounds (> 1: faster than the LSTM).

Writes ``results.json`` and ``table.md`` to ``--out`` (default
``experiments/benchmarks/results/min_rnn-<platform>[-quick]``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BATCH, INPUT = 16, 32
LENGTHS = (64, 256, 1024, 4096)
# implementation -> (cell, hidden size, backend); the first is the reference of the ratios
IMPLS = {
    "lstm[auto]": ("lstm", 64, "auto"),
    "min_lstm[parallel]": ("min_lstm", 253, "parallel"),
    "min_gru[parallel]": ("min_gru", 380, "parallel"),
    "min_lstm[auto]": ("min_lstm", 253, "auto"),
    "min_gru[auto]": ("min_gru", 380, "auto"),
    "min_lstm[scan]": ("min_lstm", 253, "scan"),
    "min_gru[scan]": ("min_gru", 380, "scan"),
}
QUICK = {
    "lengths": (8, 16),
    "batch": 2,
    "input": 4,
    "hidden": {"lstm": 8, "min_lstm": 30, "min_gru": 45},
}


# ----------------------------------------------------------------------------- worker


def build(impl: str, time_steps: int, batch: int, input_size: int, hidden: int | None):
    """Compiles ``impl``'s forward and backward pass for one length; returns the call and
    what it is: ``(call, info)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import lstm_jax
    from lstm_jax import functional as F

    cell, default_hidden, backend = IMPLS[impl]
    params = F.init_params(cell, jax.random.key(0), input_size, hidden or default_hidden)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((time_steps, batch, input_size)), jnp.float32)

    def loss(params, x):
        out, _ = F.apply_recurrent(cell, params, x, backend=backend)
        return jnp.sum(out)

    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    compile_s = time.perf_counter() - start
    [choice] = lstm_jax.explain_backend(lambda x: loss(params, x), x)
    info = {
        "cell": cell,
        "hidden_size": hidden or default_hidden,
        "backend": backend,
        "kernel": choice.backend,
        "parameters": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)),
        "compile_s": compile_s,
    }
    return (lambda: jax.block_until_ready(compiled(params, x))), info


def serve(impl: str, requests, send) -> None:
    """Answers ``build``, ``time`` and ``quit`` requests (JSON lines) for ``impl``."""
    import jax

    device = jax.devices()[0]
    info = {"jax": jax.__version__, "platform": device.platform, "device": device.device_kind}
    send({"ok": True, "info": info})
    call, call_s = None, None
    for line in requests:
        request = json.loads(line)
        if request["op"] == "quit":
            return
        try:
            if request["op"] == "build":
                call = None
                call, info = build(
                    impl, request["time"], request["batch"], request["input"], request["hidden"]
                )
                for _ in range(max(1, request["warmup"])):
                    start = time.perf_counter()
                    call()
                    call_s = time.perf_counter() - start
                repeats = max(1, min(request["repeats"], math.ceil(request["budget_s"] / call_s)))
                send({"ok": True, **info, "call_s": call_s, "repeats": repeats})
            elif request["op"] == "time":
                samples = []
                for _ in range(request["repeats"]):
                    start = time.perf_counter()
                    call()
                    samples.append(time.perf_counter() - start)
                send({"ok": True, "samples_s": samples})
        except Exception as e:  # reported in the results, not a crash of the run
            send({"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})


# ----------------------------------------------------------------------------- parent


class Worker:
    """A worker process for one implementation, spoken to in JSON lines."""

    def __init__(self, impl: str, log):
        self.impl = impl
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.benchmarks.min_rnn_speed", "--worker", impl],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
            env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
        )

    def ask(self, message: dict) -> dict:
        if message is not None:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker exited with code {self.proc.wait()}"}
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def bench_length(workers: dict, time_steps: int, args, sizes: dict) -> list[dict]:
    """Builds every implementation for ``time_steps``, then times ``args.rounds`` rounds."""
    meta = {}
    for impl, worker in workers.items():
        reply = worker.ask(
            {
                "op": "build",
                "time": time_steps,
                "batch": sizes["batch"],
                "input": sizes["input"],
                "hidden": sizes.get("hidden", {}).get(IMPLS[impl][0]),
                "warmup": args.warmup,
                "repeats": args.repeats,
                "budget_s": args.budget,
            }
        )
        if reply["ok"]:
            meta[impl] = reply
        else:
            print(f"T={time_steps} {impl}: {reply['error']}", file=sys.stderr)
    rounds = {impl: [] for impl in meta}
    order = list(meta)
    for r in range(args.rounds):
        k = r % len(order)
        for impl in order[k:] + order[:k]:
            reply = workers[impl].ask({"op": "time", "repeats": meta[impl]["repeats"]})
            rounds[impl].append(statistics.median(reply["samples_s"]) if reply["ok"] else None)
    rows = []
    reference = next(iter(IMPLS))
    for impl, per_round in rounds.items():
        ratios = [
            ref / mine
            for ref, mine in zip(rounds.get(reference, []), per_round, strict=False)
            if ref and mine
        ]
        rows.append(
            {
                "impl": impl,
                "time": time_steps,
                "batch": sizes["batch"],
                "input_size": sizes["input"],
                **{k: meta[impl][k] for k in ("cell", "hidden_size", "backend", "kernel")},
                **{k: meta[impl][k] for k in ("parameters", "compile_s", "repeats")},
                "rounds_s": per_round,
                "median_s": statistics.median([t for t in per_round if t is not None]),
                "x_lstm": statistics.median(ratios) if ratios else None,
                "x_lstm_range": [min(ratios), max(ratios)] if ratios else None,
                "load": os.getloadavg()[0],
            }
        )
    return rows


def _ms(seconds: float) -> str:
    """Milliseconds, three significant digits below 100, whole above."""
    ms = 1e3 * seconds
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def table(summary: dict) -> str:
    """The results as markdown: milliseconds per pass and the paired ratio to the LSTM."""
    rows = summary["rows"]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    first = {i: next(r for r in rows if r["impl"] == i) for i in impls}
    m = summary["machine"]
    lines = [
        "# minLSTM and minGRU against the LSTM: forward + backward",
        "",
        f"Machine: {m['device']}, {m['cpu_count']} CPUs ({m['cpu_model']}), jax {m['jax']}, "
        f"commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; load "
        f"{m['load_before']:.1f} before, {m['load_after']:.1f} after.",
        f"Command: `{summary['command']}`; {summary['rounds']} rounds, wall "
        f"{summary['wall_s']:.0f} s.",
        "",
        "| implementation | cell | hidden | parameters | kernel |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i in impls:
        r = first[i]
        lines.append(
            f"| {i} | {r['cell']} | {r['hidden_size']} | {r['parameters']:,} | {r['kernel']} |"
        )
    lines += [
        "",
        f"Median milliseconds per forward + backward pass, batch {first[impls[0]]['batch']} "
        f"(in brackets: the LSTM's time over this one, paired per round; > 1 is faster than "
        f"the LSTM):",
        "",
        "| T | " + " | ".join(impls) + " |",
        "| --- |" + " --- |" * len(impls),
    ]
    by_key = {(r["time"], r["impl"]): r for r in rows}
    for t in sorted({r["time"] for r in rows}):
        cells = []
        for i in impls:
            r = by_key.get((t, i))
            if r is None:
                cells.append("-")
            elif i == impls[0] or r["x_lstm"] is None:
                cells.append(_ms(r["median_s"]))
            else:
                cells.append(f"{_ms(r['median_s'])} ({r['x_lstm']:.2f})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Compile time of the pass, seconds:",
        "",
        "| T | " + " | ".join(impls) + " |",
        "| --- |" + " --- |" * len(impls),
    ]
    for t in sorted({r["time"] for r in rows}):
        compile_s = [by_key.get((t, i), {}).get("compile_s") for i in impls]
        lines.append(
            f"| {t} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in compile_s) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--lengths", default=None, help="comma-separated T (default 64..4096)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="most timed calls per turn")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of calls per turn")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling")
    parser.add_argument("--out", default=None, help="results directory")
    args = parser.parse_args(argv)
    if args.worker:
        protocol = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # what a library prints must not reach the protocol
        sys.stdout = sys.stderr
        serve(args.worker, sys.stdin, lambda m: protocol.write(json.dumps(m) + "\n"))
        return {}

    from experiments.benchmarks.run import machine

    sizes = QUICK if args.quick else {"lengths": LENGTHS, "batch": BATCH, "input": INPUT}
    lengths = [int(t) for t in args.lengths.split(",")] if args.lengths else sizes["lengths"]
    args.rounds = args.rounds or (1 if args.quick else 3)
    start, load_before = time.time(), os.getloadavg()[0]
    rows, info = [], {}
    with tempfile.TemporaryFile("w+") as log:
        workers = {impl: Worker(impl, log) for impl in IMPLS}
        try:
            for impl, worker in workers.items():
                hello = worker.ask(None)
                if not hello["ok"]:
                    raise RuntimeError(f"{impl}: {hello.get('error')}")
                info = hello["info"]
            for t in lengths:
                rows += bench_length(workers, t, args, sizes)
                print(f"T={t} timed ({time.time() - start:.0f} s)", file=sys.stderr)
        finally:
            for worker in workers.values():
                worker.close()
        log.seek(0)
        worker_log = log.read()
    m = machine({"worker": info})
    m.update(load_before=load_before, load_after=os.getloadavg()[0])
    summary = {
        "machine": m,
        "command": "python -m experiments.benchmarks.min_rnn_speed" + " --quick" * args.quick,
        "rounds": args.rounds,
        "wall_s": time.time() - start,
        "rows": rows,
    }
    if args.out:
        out = Path(args.out)
    else:
        name = f"min_rnn-{info['platform']}" + ("-quick" if args.quick else "")
        out = ROOT / "experiments/benchmarks/results" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "table.md").write_text(table(summary))
    if worker_log.strip():
        (out / "workers.log").write_text(worker_log)
    print(table(summary))
    return summary


if __name__ == "__main__":
    main()
