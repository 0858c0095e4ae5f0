"""The native loops under process limits: a worker thread that cannot start.

Each case runs in a subprocess with ``RLIMIT_STACK`` at 1 GiB (so every new thread needs a
1 GiB stack) and, after a first call on one thread has built the native library and its
working memory, ``RLIMIT_AS`` a little above what the process maps: no new thread can
start, so a call that asks for two threads gets no worker.
The native loops then run on the threads they have (the caller's), with the numbers of
the unconstrained call; before, ``std::thread``'s error left the call failing.
"""

import os
import resource
import subprocess
import sys
import textwrap

import pytest

import lstm_jax

SCRIPT = textwrap.dedent(
    """
    import os, re, resource, threading
    os.environ["LSTM_JAX_NATIVE_THREADS"] = "1"  # no worker thread yet
    import jax, jax.numpy as jnp, numpy as np
    from lstm_jax import functional as F

    p = F.init_lstm_params(jax.random.key(0), 16, 256)  # enough units for two threads
    x = jax.random.normal(jax.random.key(1), (20, 32, 16), jnp.float32)
    loss = lambda p, x: jnp.sum(F.lstm(p, x, backend="fused")[0] ** 2)
    ref = [np.asarray(a) for a in jax.tree.leaves(jax.jit(jax.value_and_grad(loss))(p, x))]
    os.environ["LSTM_JAX_NATIVE_THREADS"] = "2"  # read when traced: f asks for a worker
    f = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x))).lower(p, x).compile()
    mapped = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    resource.setrlimit(resource.RLIMIT_AS, (mapped * 1024 + 64 * 2**20, resource.RLIM_INFINITY))
    try:
        threading.Thread(target=lambda: None).start()
        print("a thread started: the limit does not bite here")
    except RuntimeError:
        got = [np.asarray(a) for a in jax.tree.leaves(f(p, x))]
        print("RESULT", max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref)))
    """
)


@pytest.mark.skipif(
    lstm_jax.native_status().reason is not None, reason="the native loops are unavailable"
)
def test_native_loops_run_on_fewer_threads_when_no_thread_can_start():
    def big_stacks():
        resource.setrlimit(resource.RLIMIT_STACK, (2**30, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=big_stacks,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "a thread started" in proc.stdout:
        pytest.skip("the address-space limit does not stop threads on this machine")
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    assert float(line.split()[1]) == 0.0
