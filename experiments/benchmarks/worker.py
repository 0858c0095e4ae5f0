"""One implementation in its own process, driven by ``run.py`` over stdin and stdout.

    python -m experiments.benchmarks.worker --impl torch

Alone in its process, an implementation's thread pool competes with no other library's
(torch's OpenMP threads and XLA's, side by side in one process, slowed each other by up
to 30x on two cores). The parent keeps one worker per implementation and lets one time at
a time. Protocol, one JSON object per line: the worker first answers
``{"ok": true, "info": {versions}}`` (or ``{"ok": false, "error": ...}`` when its library
does not import), then for each request:

- ``{"op": "build", "shape": {...}, "modes": [...], "warmup": W, "repeats": N,
  "budget_s": S}``: builds and compiles the implementation for that shape, runs ``W``
  warm-up calls per mode and answers ``compile_s``, ``memory_bytes``, ``kernel``,
  ``call_s`` (last warm-up call) and ``repeats`` per mode: enough calls to fill ``S``
  seconds, between 1 and ``N``.
- ``{"op": "time"}``: one turn, mode after mode: an untimed call where a call is short
  (so another process's spinning threads or cold caches do not land in the samples),
  then ``repeats`` timed calls; answers ``samples_s`` per mode.
- ``{"op": "quit"}``.

Anything the libraries print goes to stderr; stdout carries the protocol only.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback

from experiments.benchmarks import peers

SHORT_CALL_S = 0.1  # below this, a turn starts with an untimed call per mode


def _error(e: BaseException) -> dict:
    traceback.print_exc(file=sys.stderr)
    return {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:2000]}


def serve(impl: str, requests, send) -> None:
    """Answers ``requests`` (JSON lines) for ``impl`` through ``send(dict)``."""
    try:
        build = peers.builder(impl)
        send({"ok": True, "info": peers.versions(impl)})
    except Exception as e:  # an absent library is a note in the report, not a crash
        send(_error(e))
        return
    runner, call_s, repeats = None, {}, {}
    for line in requests:
        request = json.loads(line)
        try:
            if request["op"] == "build":
                runner, call_s, repeats = None, {}, {}
                gc.collect()  # free the previous shape's buffers before compiling the next
                runner = build(peers.Shape(**request["shape"]), request["modes"])
                for mode, call in runner.calls.items():
                    for _ in range(max(1, request["warmup"])):
                        start = time.perf_counter()
                        call()
                        call_s[mode] = time.perf_counter() - start
                    n = math.ceil(request["budget_s"] / max(call_s[mode], 1e-9))
                    repeats[mode] = max(1, min(request["repeats"], n))
                send(
                    {
                        "ok": True,
                        "compile_s": runner.compile_s,
                        "memory_bytes": runner.memory_bytes,
                        "memory_kind": runner.memory_kind,
                        "kernel": runner.kernel,
                        "call_s": call_s,
                        "repeats": repeats,
                    }
                )
            elif request["op"] == "time":
                samples = {}
                for mode, call in runner.calls.items():
                    if call_s[mode] < SHORT_CALL_S:
                        call()
                    samples[mode] = []
                    for _ in range(repeats[mode]):
                        start = time.perf_counter()
                        call()
                        samples[mode].append(time.perf_counter() - start)
                send({"ok": True, "samples_s": samples})
            elif request["op"] == "quit":
                return
        except Exception as e:  # e.g. a configuration the library lacks: reported per shape
            runner = None
            send(_error(e))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impl", required=True)
    args = parser.parse_args(argv)
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what native code or a library prints must not reach the protocol
    sys.stdout = sys.stderr

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    serve(args.impl, sys.stdin, send)


if __name__ == "__main__":
    main()
