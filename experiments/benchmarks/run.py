"""The benchmark suite: lstm_jax against Flax NNX and torch, each in its own process.

Command (from the repository root)::

    python -m experiments.benchmarks.run                      # every case, 10-15 min, 2 cores
    python -m experiments.benchmarks.run --quick              # tiny shapes, < 1 min (CI)
    python -m experiments.benchmarks.run --cases lstm,gru --rounds 5 --backends auto,scan

Every implementation runs in its own worker process (``worker.py``): torch's and XLA's
thread pools, side by side in one process on a small machine, slow each other by up to
~30x, and unevenly. For each case and shape, every worker builds and compiles its
implementation (in parallel), warms up, then ``--rounds`` rounds follow; in each round the
workers take turns, one at a time (the order rotating from round to round), and each times
up to ``--repeats`` calls per mode (as many as fill ``--budget`` seconds); past 3 rounds,
no round starts once a shape's rounds took ``--shape-budget`` seconds. The ratio to a
peer is paired: per round, the peer's median over ours, then the median and min-max over
rounds, so slow drift of a shared machine hits both sides of every ratio alike.

Cases (``--cases``): ``lstm``, ``gru``, ``rnn`` (tanh) on a grid of shapes; ``zaremba``
(Zaremba et al. 2014's PTB LSTMs: T35 B20, 2 layers, hidden = input = 200 / 650 / 1500);
``small`` (the tutorials' language model: 2 x 200 at T20 B20, one layer at T35 B20, where
per-call costs weigh most); ``packed`` (``seq_lengths`` uniform in [T/2, T]; torch
through ``pack_padded_sequence``);
``bf16`` (bfloat16 products; torch's module in bfloat16); ``variants`` (peephole,
layer_norm, cifg, proj against plain ``lax.scan`` implementations of the same equations,
per-step and hoisted input product); ``inference`` (a forward pass, and single steps of a
jitted cell in a Python loop); ``checkpoint`` (activation checkpointing on 10,000 steps).
Modes: ``fwd`` (loss = sum of the outputs), ``fwd+bwd`` (gradients of all parameters and
the input), ``step``.

Writes ``results.json`` (after every shape: a crash loses nothing), ``results.csv``,
``table.md`` and ``throughput.png`` to ``--out`` (default
``experiments/benchmarks/results/<platform>[-quick]``); ``report.py`` regenerates the
last three from ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from experiments.benchmarks import report
from experiments.benchmarks.peers import VARIANTS, Shape

ROOT = Path(__file__).resolve().parents[2]
S = Shape
TRAIN, INFERENCE, MODES = ("fwd", "fwd+bwd"), ("fwd", "step"), ("fwd", "fwd+bwd", "step")
LSTM_GRID = [
    S(100, 32, 128, 256),
    S(512, 16, 64, 128),
    S(50, 64, 512, 512),
    S(1000, 1, 32, 64),
    S(100, 32, 128, 256, 2, True),
]
SMALL, LONG, STACK = LSTM_GRID[0], LSTM_GRID[3], LSTM_GRID[4]
GRID = {
    "lstm": LSTM_GRID,
    "gru": [dataclasses.replace(s, cell="gru") for s in (SMALL, LONG, STACK)],
    "rnn": [dataclasses.replace(s, cell="rnn") for s in (SMALL, LONG, STACK)],
    "zaremba": [S(35, 20, h, h, 2) for h in (200, 650, 1500)],
    "small": [S(20, 20, 200, 200, 2), S(35, 20, 200, 200, 1)],
    "packed": [dataclasses.replace(s, packed=True) for s in (SMALL, STACK)],
    "bf16": [dataclasses.replace(s, dtype="bfloat16") for s in (SMALL, LSTM_GRID[2])],
    "variants": [dataclasses.replace(SMALL, variant=v) for v in VARIANTS],
    "inference": [S(200, 1, 256, 256), S(200, 32, 256, 256)],
    "checkpoint": [S(10_000, 8, 32, 64), S(10_000, 8, 32, 64, checkpoint=100)],
}
TINY = S(20, 4, 8, 16)
QUICK_GRID = {  # one tiny shape per case: compiling, not timing, is what takes time here
    "lstm": [S(10, 4, 8, 16, bidirectional=True)],
    "gru": [dataclasses.replace(TINY, cell="gru")],
    "rnn": [dataclasses.replace(TINY, cell="rnn")],
    "zaremba": [S(35, 2, 24, 24, 2)],
    "small": [S(20, 2, 24, 24)],
    "packed": [dataclasses.replace(TINY, cell="rnn", packed=True)],
    "bf16": [dataclasses.replace(TINY, cell="gru", dtype="bfloat16")],
    "variants": [dataclasses.replace(TINY, variant="proj")],
    "inference": [S(20, 2, 8, 16)],
    "checkpoint": [S(200, 2, 4, 8, checkpoint=20)],
}
CASES = tuple(GRID)
MIN_ROUNDS = 3
# --quick's default runs every implementation and every code path of peers.py in as few
# compilations as possible: its packed and bf16 shapes are the RNN's and the GRU's, and
# the forward pass alone is part of what fwd+bwd runs.
QUICK_CASES = ("lstm", "packed", "bf16", "variants", "inference")
QUICK_MODES = ("fwd+bwd", "step")


def implementations(case: str, shape: Shape, backends: list[str], gpu: bool, modes=MODES) -> dict:
    """``{implementation: its modes among modes}`` of one shape of a case; ours first."""
    ours = [f"lstm_jax[{b}]" for b in backends]
    case_modes = INFERENCE if case == "inference" else TRAIN
    if case == "checkpoint":
        impls = dict.fromkeys(dict.fromkeys([ours[0], "lstm_jax[scan]"]), case_modes)
    elif case == "variants":
        peers = ["scan per step", "scan hoisted"] + (["torch"] if shape.variant == "proj" else [])
        impls = dict.fromkeys(ours + peers, case_modes)
    elif case == "inference":
        impls = {  # other backends of ours run the forward pass only: a step has no backend
            ours[0]: case_modes,
            **dict.fromkeys(ours[1:], ("fwd",)),
            "lstm_jax.functional.lstm_cell": ("step",),
            **dict.fromkeys(["flax.nnx", "torch"], case_modes),
        }
    else:
        peers = ["flax.nnx", "torch"]
        if gpu and shape.cell == "lstm" and shape.dtype == "float32":
            peers.append("jax.experimental.rnn")
        impls = dict.fromkeys(ours + peers, case_modes)
    impls = {i: tuple(m for m in ms if m in modes) for i, ms in impls.items()}
    return {i: ms for i, ms in impls.items() if ms}


class Worker:
    """A ``worker.py`` process for one implementation; its stderr goes to ``log``."""

    def __init__(self, impl: str, log: Path, env: dict):
        self.impl, self.log = impl, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.benchmarks.worker", "--impl", impl],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "a"),  # the child holds it
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the process is gone: receive() says why

    def receive(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            return {"ok": False, "error": f"no answer within {timeout:.0f} s (killed)"}
        if line is None:
            code = self.proc.wait()
            tail = " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
            return {
                "ok": False,
                "error": f"worker exited with code {code}" + (f": {tail}" * bool(tail)),
            }
        return json.loads(line)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.send({"op": "quit"})
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Pool:
    """One :class:`Worker` per implementation, started on first use, restarted after a
    crash; an implementation whose library does not import is remembered as absent."""

    def __init__(self, log_dir: Path, timeout: float):
        self.log_dir, self.timeout = log_dir, timeout
        self.workers: dict[str, Worker] = {}
        self.absent: dict[str, str] = {}  # impl -> why
        self.info: dict[str, dict] = {}
        self.env = dict(os.environ)
        # several JAX processes share one GPU: none may take 75% of its memory up front
        self.env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    def start(self, impls) -> None:
        """Starts the workers of ``impls`` not yet running, in parallel."""
        new = [i for i in impls if i not in self.absent and not self._alive(i)]
        for impl in new:
            log = self.log_dir / (impl.replace("/", "_").replace(" ", "_") + ".log")
            self.workers[impl] = Worker(impl, log, self.env)
        for impl in new:
            hello = self.workers[impl].receive(self.timeout)
            if hello["ok"]:
                self.info[impl] = hello["info"]
            else:
                self.absent[impl] = hello["error"]
                self.workers.pop(impl).close()

    def _alive(self, impl: str) -> bool:
        return impl in self.workers and self.workers[impl].alive

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


def bench_shape(pool: Pool, case: str, shape: Shape, impls: dict, args) -> tuple[list, list]:
    """Builds every implementation of ``impls`` (``{impl: modes}``) on ``shape``, then
    times ``args.rounds`` rounds of turns; returns ``(rows, notes)``."""
    pool.start(impls)
    notes = [
        dict(case=case, shape=shape.name, impl=i, note=pool.absent[i])
        for i in impls
        if i in pool.absent
    ]
    live = [i for i in impls if i in pool.workers]
    build = dict(op="build", shape=dataclasses.asdict(shape), warmup=args.warmup)
    build.update(repeats=args.repeats, budget_s=args.budget)
    for impl in live:  # compiles run side by side; nothing is timed yet
        pool.workers[impl].send({**build, "modes": list(impls[impl])})
    meta = {}
    for impl in live:
        reply = pool.workers[impl].receive(pool.timeout)
        if reply["ok"] and reply["call_s"]:
            meta[impl] = reply
        else:
            error = reply.get("error", "no mode of this case")
            notes.append(dict(case=case, shape=shape.name, impl=impl, note=error))
    samples = {i: {m: [None] * args.rounds for m in meta[i]["call_s"]} for i in meta}
    order, active, started = list(meta), set(meta), time.time()
    for r in range(args.rounds if order else 0):
        if r >= MIN_ROUNDS and time.time() - started > args.shape_budget:
            break  # a slow shape (seconds per call) keeps the rounds it has
        k = r % len(order)  # the order rotates: no implementation always follows another
        for impl in order[k:] + order[:k]:
            if impl not in active:
                continue
            pool.workers[impl].send({"op": "time"})
            reply = pool.workers[impl].receive(pool.timeout)
            if not reply["ok"]:  # keep the rounds it did; stop timing it on this shape
                notes.append(dict(case=case, shape=shape.name, impl=impl, note=reply["error"]))
                active.discard(impl)
                continue
            for mode, values in reply["samples_s"].items():
                samples[impl][mode][r] = values
    rows = []
    for impl, by_mode in samples.items():
        m = meta[impl]
        for mode, rounds in by_mode.items():
            flat = [t for values in rounds if values for t in values]
            if not flat:
                continue
            rows.append(
                {
                    "case": case,
                    "shape": shape.name,
                    **dataclasses.asdict(shape),
                    "impl": impl,
                    "mode": mode,
                    "tokens": shape.tokens,
                    "median_s": statistics.median(flat),
                    "tokens_per_s": shape.tokens / statistics.median(flat),
                    "rounds_s": [statistics.median(v) if v else None for v in rounds],
                    "samples_s": rounds,
                    "repeats": m["repeats"][mode],
                    "compile_s": m["compile_s"].get(mode),
                    "memory_bytes": m["memory_bytes"].get(mode),
                    "memory_kind": m["memory_kind"],
                    "kernel": "" if mode == "step" else m["kernel"],
                    "load": os.getloadavg()[0],
                }
            )
    return rows, notes


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return result.stdout.strip()
    except OSError:
        return ""


def machine(info: dict[str, dict]) -> dict:
    """The CPU (model, vector flags, cores), OS, versions (from every worker's ``info``)
    and the git commit, with whether the tree differs from it."""
    m = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in cpuinfo if ":" in line)  # last CPU's
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        m["cpu_model"] = fields.get("model name")
        flags = set(fields.get("flags", "").split())
        wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
        m["cpu_flags"] = [f for f in wanted if f in flags]
    except OSError:
        m["cpu_model"] = platform.processor()
    for versions in info.values():
        m.update(versions)
    changed = _git("status", "--porcelain").splitlines()
    m.update(
        git_commit=_git("rev-parse", "HEAD"), git_dirty=bool(changed), git_changed=changed[:50]
    )
    return m


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    parser.add_argument(
        "--cases", default=None, help=f"among {','.join(CASES)} (default: all; quick: fewer)"
    )
    parser.add_argument(
        "--backends", default="auto", help="lstm_jax backends; the first is 'ours' in ratios"
    )
    parser.add_argument(
        "--modes", default=None, help="among fwd,fwd+bwd,step (default: all; quick: fwd+bwd,step)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 7 (quick: 3)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="most timed calls per turn (default 5, quick 1)"
    )
    parser.add_argument(
        "--budget", type=float, default=0.3, help="seconds of timed calls per turn and mode"
    )
    parser.add_argument(
        "--shape-budget",
        type=float,
        default=60.0,
        help=f"seconds of rounds per shape after which, past {MIN_ROUNDS} rounds, none starts",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls after compiling")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker answer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cases = args.cases.split(",") if args.cases else list(QUICK_CASES if args.quick else CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose among {CASES}")
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    backends = args.backends.split(",")
    modes = args.modes.split(",") if args.modes else QUICK_MODES if args.quick else MODES
    ours = f"lstm_jax[{backends[0]}]"
    started, load_before = time.time(), list(os.getloadavg())
    pool = Pool(Path(tempfile.mkdtemp(prefix="lstm_jax_bench_")), args.timeout)
    try:
        grid = QUICK_GRID if args.quick else GRID
        pool.start(implementations(cases[0], grid[cases[0]][0], backends, False, modes))
        gpu = pool.info.get(ours, {}).get("jax_backend") == "gpu"
        out = args.out or ROOT / "experiments" / "benchmarks" / "results" / (
            ("gpu" if gpu else "cpu") + ("-quick" if args.quick else "")
        )
        out.mkdir(parents=True, exist_ok=True)
        summary = {
            "command": " ".join(["python -m experiments.benchmarks.run", *(argv or sys.argv[1:])]),
            "ours": ours,
            "cases": cases,
            "modes": list(modes),
            "rounds": args.rounds,
            "repeats": args.repeats,
            "budget_s": args.budget,
            "shape_budget_s": args.shape_budget,
            "load_before": load_before,
            "worker_logs": str(pool.log_dir),
            "rows": [],
            "notes": [],
        }
        for case in cases:
            for shape in grid[case]:
                shape_started = time.time()
                impls = implementations(case, shape, backends, gpu, modes)
                rows, notes = bench_shape(pool, case, shape, impls, args)
                summary["rows"] += rows
                summary["notes"] += notes
                summary.update(
                    machine=machine(pool.info), load_after=list(os.getloadavg()),
                    wall_s=time.time() - started,
                )  # fmt: skip
                report.write_outputs(summary, out, figure=False)  # the figure takes seconds
                _progress(case, shape, rows, notes, ours, time.time() - shape_started)
    finally:
        pool.close()
    report.write_outputs(summary, out)
    print(report.markdown(summary))
    print(f"wrote {out}/results.json, results.csv, table.md, throughput.png in "
          f"{summary['wall_s']:.0f} s; worker logs in {pool.log_dir}")  # fmt: skip
    return summary


def _progress(case: str, shape: Shape, rows: list, notes: list, ours: str, wall: float) -> None:
    """One line per shape and mode: our tokens/s and the paired ratio to each peer."""
    for mode in dict.fromkeys(r["mode"] for r in rows):
        by_impl = {r["impl"]: r for r in rows if r["mode"] == mode}
        mine = by_impl.get(ours)
        ratios = [
            f"x {impl} {report.format_ratio(report.paired_ratios(mine, r))}"
            for impl, r in by_impl.items()
            if mine and impl != ours
        ]
        head = f"{mine['tokens_per_s']:,.0f} tok/s" if mine else "ours not timed"
        print(f"[{case}] {shape.name} {mode}: {head}; " + "; ".join(ratios), flush=True)
    print(f"[{case}] {shape.name}: {wall:.0f} s", flush=True)
    for n in notes:
        print(f"[{case}] {shape.name}: {n['impl']} not timed: {n['note']}", flush=True)


if __name__ == "__main__":
    main()
