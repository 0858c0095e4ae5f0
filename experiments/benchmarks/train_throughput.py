"""Training throughput of a run directory written by ``experiments.run``, in tokens/s.

Command (from the repository root)::

    python -m experiments.benchmarks.train_throughput RUN_DIR [--json OUT.json]

The steady-state rate is taken between the first and the last logged training step,
from the wall times TensorBoard recorded with each logged loss (``RUN_DIR/tensorboard``):
the first logged step carries the compilation, and each logged step is written before
that step's evaluation and checkpoint, so the interval holds training steps only.
Tokens per step are ``batch_size * seq_len`` from ``RUN_DIR/config.json``. With a single
logged step the rate over the whole run (``summary.json``'s ``wall_time_s``, compilation,
evaluation and checkpoints included) is reported instead, and marked so.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import struct

TAG = "train/loss"


def logged_wall_times(run_dir: str, tag: str = TAG) -> dict[int, float]:
    """``{step: wall time}`` of every ``tag`` scalar in the run's TensorBoard event files."""
    from tensorboardX.proto import event_pb2

    times = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            while header := f.read(12):  # TFRecord: length, its CRC, data, the data's CRC
                (length,) = struct.unpack("<Q", header[:8])
                event = event_pb2.Event.FromString(f.read(length))
                f.read(4)
                if any(v.tag == tag for v in event.summary.value):
                    times[int(event.step)] = event.wall_time
    return times


def throughput(run_dir: str) -> dict:
    """``tokens_per_s`` and how it was measured (see the module docstring)."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    tokens_per_step = config["batch_size"] * config["seq_len"]
    times = logged_wall_times(run_dir)
    result = {"run_dir": run_dir, "tokens_per_step": tokens_per_step}
    if len(times) >= 2:
        first, last = min(times), max(times)
        seconds = times[last] - times[first]
        result.update(
            tokens_per_s=(last - first) * tokens_per_step / seconds,
            steps_per_s=(last - first) / seconds,
            measured=f"steps {first}..{last}, compilation excluded",
        )
    else:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        steps, seconds = summary["steps"], summary["wall_time_s"]
        result.update(
            tokens_per_s=steps * tokens_per_step / seconds,
            steps_per_s=steps / seconds,
            measured=f"whole run of {steps} steps, compilation and evaluation included",
        )
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = throughput(args.run_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"{result['tokens_per_s']:,.0f} tokens/s ({result['measured']})")
    return result


if __name__ == "__main__":
    main()
