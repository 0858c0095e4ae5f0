r"""The memory-horizon sweep (``experiments/configs/memory.py``): per task, T upwards, every
learning rate and seed, for as long as each cell keeps solving.

Every (task, T, LSTM initialisation, learning rate, cell) is one ``experiments.run``
process with ``--resume`` under ``<runs>/memory/<task>/T<T>/<init>/lr<rate>/``: a finished
seed is skipped, an interrupted one continues, so the sweep can be stopped (Ctrl-C, or
SIGTERM, which it passes on to its runs: each saves the step it reached) and started again
at any point. Runs stop once solved (``config.stop_when_solved``), so
only unsolved ones spend the whole budget. A cell that solves T at no learning rate (in
fewer than :data:`report.SOLVED_SEEDS` of its seeds) is not run at longer T: its horizon
is the longest T it solved, on the assumption that a cell which fails at T also fails at
every longer T (the adding and copy tasks get harder with T).

  python -m experiments.sweeps.memory [--runs runs] [--tasks adding,copy]
      [--lengths 10,20,50,100,200,400] [--lrs 3e-4,1e-3,3e-3,1e-2]
      [--inits fb1,torch,chrono,orth]
      [--jobs 2] [--config.<key>=<value> ...]
  python -m experiments.report memory runs/memory experiments/figures/memory_vs_length.png

``--config.*`` overrides go to every run (they must be the same on a resume).
``--jobs`` runs that many processes at once, one setting each. Cost on a 2-core x86 CPU:
adding at T = 100 takes 34 (LSTM), 74 (GRU, 148 units) and 53 ms (RNN, 258 units) per
step, proportional to T.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys

from experiments import report
from experiments.configs import memory

CELLS = {"fb1": ("rnn", "gru", "lstm"), "torch": ("lstm",), "chrono": ("lstm",), "orth": ("rnn",)}
_RUNNING: set[subprocess.Popen] = set()  # the runs started and not yet finished
_STOPPING: list[int] = []  # the signal received: no run starts after it


def _pass_on_sigterm(signum, frame):
    """SIGTERM reaches the runs too (each saves a checkpoint at the step it reached, see
    ``experiments.run``); the sweep exits once they have."""
    del frame
    _STOPPING.append(signum)
    for proc in list(_RUNNING):
        proc.send_signal(signal.SIGTERM)
    for proc in list(_RUNNING):
        proc.wait()
    raise SystemExit(128 + signum)


def workdir(runs: str, task: str, length: int, init: str, lr: float) -> str:
    return os.path.join(runs, "memory", task, f"T{length}", init, f"lr{lr:g}")


def command(
    task: str, length: int, init: str, lr: float, cell: str, runs: str, overrides=()
) -> list[str]:
    """The ``experiments.run`` command of one cell of one setting (``overrides``: more
    ``--config.<key>=<value>`` flags)."""
    return [
        sys.executable,
        "-m",
        "experiments.run",
        f"--config=experiments/configs/memory.py:{task}-{length}-{init}-lr{lr:g}",
        f"--config.cells=('{cell}',)",
        f"--workdir={workdir(runs, task, length, init, lr)}",
        "--resume",
        "--config.progress=False",
        *overrides,
    ]


def solved(runs: str, task: str, length: int, init: str, lr: float, cell: str) -> bool:
    """Whether at least :data:`report.SOLVED_SEEDS` of the cell's seeds solved the setting."""
    dirs = report.seed_runs(os.path.join(workdir(runs, task, length, init, lr), cell))
    return bool(dirs) and report.setting_solved(report.seed_stats(dirs))


def shared_cpus_env(jobs: int) -> dict[str, str]:
    """The environment of one of ``jobs`` runs side by side: each run's native loops get
    its share of the CPUs (``LSTM_JAX_NATIVE_THREADS``, unless it is set). Their threads
    meet at every step, and a thread descheduled for another run stalls them all: with
    two busy processes beside it on 2 cores, a 2 x 200 LSTM's training step (T35 B20) took
    3-4x longer on 2 threads than on 1 (docs/install.md). The numbers are the same bits."""
    env = dict(os.environ)
    share = max(1, len(os.sched_getaffinity(0)) // max(1, jobs))
    env.setdefault("LSTM_JAX_NATIVE_THREADS", str(share))
    return env


def run_all(commands: dict[str, list[str]], jobs: int, log_dir: str) -> None:
    """Runs ``{name: command}`` ``jobs`` at a time (each with :func:`shared_cpus_env`),
    each logging to ``<log_dir>/<name>.log``; raises if one fails."""
    os.makedirs(log_dir, exist_ok=True)
    env = shared_cpus_env(jobs)

    def one(name):
        if _STOPPING:
            return name, None
        with open(os.path.join(log_dir, f"{name}.log"), "a") as log:
            proc = subprocess.Popen(commands[name], stdout=log, stderr=subprocess.STDOUT, env=env)
            _RUNNING.add(proc)
            if _STOPPING:  # the signal came while this run was starting
                proc.send_signal(signal.SIGTERM)
            try:
                return name, proc.wait()
            finally:
                _RUNNING.discard(proc)

    pool = concurrent.futures.ThreadPoolExecutor(jobs)
    try:
        for name, returncode in pool.map(one, commands):
            if returncode not in (0, None):
                raise SystemExit(
                    f"{name} failed (exit {returncode}), see {log_dir}/{name}.log: "
                    + " ".join(commands[name])
                )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def sweep(runs, tasks, lengths, lrs, inits, jobs, overrides=()) -> None:
    """Both tasks advance together, T by T, so a sweep cut short has covered each task's
    short lengths."""
    alive = {(task, init, cell) for task in tasks for init in inits for cell in CELLS[init]}
    for length in sorted(lengths):
        if not alive:
            break
        print(f"T={length}: {sorted(alive)} at lr {lrs}", flush=True)
        run_all(
            {
                f"{task}-T{length}-{init}-lr{lr:g}-{cell}": command(
                    task, length, init, lr, cell, runs, overrides
                )
                for task, init, cell in sorted(alive)
                for lr in lrs
            },
            jobs,
            os.path.join(runs, "memory", "logs"),
        )
        for task, init, cell in sorted(alive):
            if not any(solved(runs, task, length, init, lr, cell) for lr in lrs):
                print(f"{task} T={length}: {cell} ({init}) solves at no lr: stops here")
                alive.discard((task, init, cell))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--tasks", default="adding,copy")
    parser.add_argument("--lengths", default=",".join(map(str, memory.LENGTHS)))
    parser.add_argument("--lrs", default=",".join(f"{x:g}" for x in memory.LEARNING_RATES))
    parser.add_argument("--inits", default=",".join(memory.INITS))
    parser.add_argument("--jobs", type=int, default=1)
    a, overrides = parser.parse_known_args(argv)
    if bad := [x for x in overrides if not x.startswith("--config.")]:
        parser.error(
            f"unrecognized arguments: {' '.join(bad)} (only --config.<key>=<value> "
            "overrides pass through to experiments.run)"
        )
    signal.signal(signal.SIGTERM, _pass_on_sigterm)
    inits = a.inits.split(",")
    if unknown := set(inits) - set(CELLS):
        parser.error(f"--inits: unknown {sorted(unknown)}, choose from {sorted(CELLS)}")
    sweep(
        a.runs,
        a.tasks.split(","),
        [int(x) for x in a.lengths.split(",")],
        [float(x) for x in a.lrs.split(",")],
        inits,
        a.jobs,
        overrides,
    )


if __name__ == "__main__":
    main()
