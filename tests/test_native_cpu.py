"""The fused layer's native CPU loops (``lstm_jax/_src/native/lstm_cpu.cc``).

The reference is autodiff of the plain scan (:func:`lstm_jax.functional.run_layer`) run
in float64 on the same float32 parameters and inputs: it shares no code with the C++
loops, and its rounding error is far below float32's.
"""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fused_runs import assert_second_order_and_vmap_match
from fused_runs import float64 as _float64
from fused_runs import fused as _fused
from fused_runs import loss as _loss
from fused_runs import scan as _scan

from lstm_jax import functional as F
from lstm_jax._src.native import lstm_cpu

T, B, I, H = 9, 11, 6, 64  # B = 11 leaves a partial tile of rows
LENGTHS = np.array([9, 2, 5, 1, 9, 7, 3, 8, 9, 4, 6], np.int32)

_REASON = lstm_cpu.unavailable_reason()
if _REASON is not None and os.environ.get("CI"):
    # CI runs on a machine like the developers' (x86-64, AVX-512, g++): there the native
    # loops must build, or the fused kernel's speed would silently fall back.
    raise RuntimeError(f"the native CPU loops did not build in CI: {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))


def _problem(key, scale=1.0, time=T, batch=B, hidden=H, inputs=I, variants=()):
    """``variants``: the names of :func:`F.init_lstm_layer`'s flags to turn on."""
    keys = jax.random.split(key, 4)
    params = F.init_lstm_layer(keys[0], inputs, hidden, **dict.fromkeys(variants, True))
    f32 = jnp.float32
    x = scale * jax.random.normal(keys[1], (time, batch, inputs), f32)
    state = F.LSTMState(
        jax.random.normal(keys[2], (batch, hidden), f32),
        jax.random.normal(keys[3], (batch, hidden), f32),
    )
    return params, x, state


def _values_and_grads(run, params, x, state):
    grads = jax.grad(_loss(run), argnums=(0, 1, 2))(params, x, state)
    return run(params, x, state), grads


def _assert_native_equals_float64(fused, scan, args):
    """``fused``'s outputs and gradients, through the native calls, against ``scan``'s in
    float64 on the same inputs."""
    lowered = jax.jit(lambda *a: _values_and_grads(fused, *a)).lower(*args)
    assert "lstm_jax_native_forward" in lowered.as_text()
    assert "lstm_jax_native_backward" in lowered.as_text()
    expected = jax.jit(lambda *a: _values_and_grads(scan, *a))(*_float64(args))
    got = _float64(lowered.compile()(*args))
    chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "reverse,lengths,checkpoint,scale,variants",
    [
        (False, None, None, 1.0, ()),
        (True, LENGTHS, None, 1.0, ()),
        (False, LENGTHS, 4, 1.0, ()),
        (True, None, None, 30.0, ()),  # saturated gates: exp and tanh at their extremes
        (True, LENGTHS, None, 1.0, ("peephole",)),
        (False, LENGTHS, 4, 30.0, ("peephole",)),
        (False, LENGTHS, None, 1.0, ("cifg",)),
        (True, LENGTHS, 4, 1.0, ("cifg", "peephole")),
    ],
)
def test_native_layer_equals_float64_scan(reverse, lengths, checkpoint, scale, variants):
    params, x, state = _problem(jax.random.key(0), scale, variants=variants)
    seq = None if lengths is None else jnp.asarray(lengths)
    _assert_native_equals_float64(
        _fused(seq, reverse, checkpoint), _scan(seq, reverse), (params, x, state)
    )


# Hidden sizes that leave the kernel's last block of 32 units partial: less than a vector
# (8 lanes with AVX2, 16 with AVX-512), less than a block, a block and one unit, several.
@pytest.mark.parametrize(
    "hidden,reverse,lengths,checkpoint,scale,variants",
    [
        (1, False, None, None, 1.0, ()),
        (5, True, LENGTHS, None, 1.0, ()),
        (20, False, LENGTHS, 4, 1.0, ()),
        (33, True, None, None, 30.0, ()),
        (100, False, LENGTHS, 4, 1.0, ()),
        (5, False, LENGTHS, None, 1.0, ("peephole",)),
        (37, True, LENGTHS, None, 1.0, ("peephole",)),
        (37, False, None, None, 1.0, ("cifg", "peephole")),
    ],
)
def test_native_layer_of_any_hidden_size_equals_float64_scan(
    hidden, reverse, lengths, checkpoint, scale, variants
):
    params, x, state = _problem(jax.random.key(hidden), scale, hidden=hidden, variants=variants)
    seq = None if lengths is None else jnp.asarray(lengths)
    _assert_native_equals_float64(
        _fused(seq, reverse, checkpoint), _scan(seq, reverse), (params, x, state)
    )


@pytest.mark.parametrize(
    "time,batch,hidden", [(60, 11, 64), (7, 130, 64), (60, 11, 20), (7, 130, 100)]
)
def test_native_backward_over_several_chunks_equals_float64_scan(time, batch, hidden):
    """The backward call takes the weight gradients every ~256 rows of gate gradients:
    at B = 11 in chunks of 24 steps (24, 24, 12), at B = 130 of 2 (2, 2, 2, 1). At
    B = 130 the call runs on several threads (where the CPUs allow), at H = 100 with the
    partial block on the last thread's share."""
    params, x, state = _problem(jax.random.key(6), time=time, batch=batch, hidden=hidden)
    seq = jax.random.randint(jax.random.key(7), (batch,), 1, time + 1, jnp.int32)
    _assert_native_equals_float64(_fused(seq), _scan(seq), (params, x, state))


@pytest.mark.parametrize("reverse", [False, True])
def test_native_batch_of_one_equals_float64_scan(reverse):
    """One row: the forward call takes the input projections of each chunk of 256 steps
    at its first step (T = 300: 256 and 44), here with a partial block."""
    params, x, state = _problem(jax.random.key(11), time=300, batch=1, hidden=100)
    _assert_native_equals_float64(_fused(None, reverse), _scan(None, reverse), (params, x, state))


def test_native_forward_with_weights_beyond_the_cache_equals_float64_scan():
    """Weights over 6 MiB (8 MB at I = H = 500): the forward call takes the input
    projections of each chunk of ceil(256 / B) steps at its first step (T = 9 at B = 64:
    4, 4 and 1 steps), here with a partial block and padded steps."""
    params, x, state = _problem(jax.random.key(9), batch=64, hidden=500, inputs=500)
    seq = jax.random.randint(jax.random.key(10), (64,), 1, T + 1, jnp.int32)
    _assert_native_equals_float64(_fused(seq, True), _scan(seq, True), (params, x, state))


@pytest.mark.parametrize("hidden,batch,inputs", [(H, B, I), (45, 64, I), (333, 20, 333)])
def test_native_bidirectional_equals_float64_scans(hidden, batch, inputs):
    """At H = 45 each direction ends with a partial block, the first direction's in the
    middle of the blocks the threads share (several threads at B = 64, where the CPUs
    allow). At I = H = 333 the weights (7 MB) take the forward's chunked input projection."""
    keys = jax.random.split(jax.random.key(3))
    pf, x, state = _problem(keys[0], batch=batch, hidden=hidden, inputs=inputs)
    pb = _problem(keys[1], batch=batch, hidden=hidden, inputs=inputs)[0]
    seq = jax.random.randint(jax.random.key(8), (batch,), 1, T + 1, jnp.int32)

    def fused(params, x, state):
        y, (sf, sb) = F.run_fused_bidirectional(params, x, (state, state), seq_lengths=seq)
        return y, F.LSTMState(sf.h + sb.h, sf.c - sb.c)

    def scans(params, x, state):
        yf, sf = F.run_layer(F.LSTM_CELL, params[0], x, state, seq_lengths=seq)
        yb, sb = F.run_layer(F.LSTM_CELL, params[1], x, state, seq_lengths=seq, reverse=True)
        return jnp.concatenate([yf, yb], -1), F.LSTMState(sf.h + sb.h, sf.c - sb.c)

    _assert_native_equals_float64(fused, scans, ((pf, pb), x, state))


@pytest.mark.parametrize("hidden", [H, 20])
def test_native_forward_without_gradients_equals_float64_scan(hidden):
    params, x, state = _problem(jax.random.key(4), hidden=hidden)
    for batch in (1, B):  # one thread for a small step, all threads for a larger one
        args = (params, x[:, :batch], jax.tree.map(lambda a, n=batch: a[:n], state))
        fused = jax.jit(F.run_fused_layer).lower(*args)
        assert "lstm_jax_native_forward" in fused.as_text()
        expected = jax.jit(lambda *a: F.run_layer(F.LSTM_CELL, *a))(*_float64(args))
        chex.assert_trees_all_close(
            _float64(fused.compile()(*args)), expected, rtol=2e-5, atol=2e-5
        )


def test_unsupported_configurations_run_the_xla_loops():
    """float64, or a projection."""
    for dtype, proj in ((jnp.float64, 0), (jnp.float32, 16)):
        params = F.init_lstm_layer(jax.random.key(0), I, H, proj_size=proj, dtype=dtype)
        out = proj or H
        state = F.LSTMState(jnp.zeros((B, out), dtype), jnp.zeros((B, H), dtype))
        x = jnp.ones((T, B, I), dtype)
        text = jax.jit(F.run_fused_layer).lower(params, x, state).as_text()
        assert "lstm_jax_native" not in text and "while" in text


def test_native_second_order_gradients_and_vmap_equal_the_scan():
    """The native calls take their derivatives from the XLA loops (a gradient of a
    gradient), and ``vmap`` runs them once per mapped element. With peepholes: the plain
    cell's calls and loops are the same code with the peephole terms left out."""
    params, x, state = _problem(jax.random.key(5), variants=("peephole",))
    seq = jnp.asarray(LENGTHS)
    fused, scan = _fused(seq), _scan(seq)

    assert_second_order_and_vmap_match(fused, scan, _loss, (params, x, state))


def test_native_gate_functions_are_accurate_to_float32_rounding():
    """Sigmoid and tanh of the C++ vector math against float64 NumPy over [-80, 80]:
    with ``W_ih = 1`` and a zero state, one step's stored activations are the gate
    functions of the input itself."""
    h = 512
    z = np.concatenate([np.linspace(-80, 80, h // 2), np.geomspace(1e-30, 20, h // 4)])
    z = np.concatenate([z, -z[h // 2 :]]).astype(np.float32)  # [H]: -80..80, tiny, negative
    x = jnp.asarray(np.tile(z, 4)).reshape(1, 1, 1, 4 * h)  # the same values for every gate
    zeros = jnp.zeros((1, 1, h), jnp.float32)
    eye = jnp.eye(4 * h, dtype=jnp.float32)[None]
    w_hh = jnp.zeros((1, 4 * h, h), jnp.float32)
    _, _, _, acts, _ = jax.jit(lambda *a: lstm_cpu.forward(*a, None, None, True))(
        x, eye, None, w_hh, zeros, zeros
    )
    i, f, g, o = np.split(np.asarray(acts, np.float64).reshape(4 * h), 4)
    z64 = z.astype(np.float64)
    sigmoid, tanh = 1 / (1 + np.exp(-z64)), np.tanh(z64)
    for got, expected in ((i, sigmoid), (f, sigmoid), (g, tanh), (o, sigmoid)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-37)


def _busy_on(cpu):
    """A process that keeps ``cpu`` busy until killed."""
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.parametrize("fixed", [False, True])
def test_calls_on_busy_cpus_run_on_the_caller_alone_unless_the_team_is_fixed(fixed, monkeypatch):
    """With another busy process on every CPU, a team's threads wait for each other at
    every step; the native loops then run the next calls on the caller alone, with the
    same bits, unless ``LSTM_JAX_NATIVE_THREADS`` fixes the team."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the native loops run on the caller alone")
    if fixed:
        monkeypatch.setenv("LSTM_JAX_NATIVE_THREADS", "2")  # read when traced
    args = _problem(jax.random.key(4), hidden=256, batch=32, time=40)
    grad = jax.jit(jax.grad(_loss(_fused()), argnums=(0, 1)))
    expected = jax.block_until_ready(grad(*args))
    busy = [_busy_on(cpu) for cpu in sorted(os.sched_getaffinity(0))]
    try:
        teams = []
        for _ in range(8 if fixed else 40):  # a fixed team's calls are the slow ones
            got = jax.block_until_ready(grad(*args))
            teams.append(lstm_cpu.last_call_team())
            chex.assert_trees_all_equal(got, expected)
            if not fixed and teams[-1] == 1:
                break
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert (set(teams) == {2}) if fixed else (teams[-1] == 1), teams


def test_native_calls_leave_every_other_threads_cpus_as_they_were():
    """The native team holds its caller on one CPU for a call only, and pins only its own
    workers (named ``lstm_jax_native``), one per CPU."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the native loops run on the caller alone")
    allowed = os.sched_getaffinity(0)
    args = _problem(jax.random.key(3), hidden=256, batch=32)
    jax.block_until_ready(jax.jit(jax.grad(_loss(_fused()), argnums=(0, 1)))(*args))

    def threads():
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/comm") as f:
                yield int(task), f.read().strip()

    workers = [tid for tid, name in threads() if name == "lstm_jax_native"]
    assert workers, "a call of 256 units on 2 CPUs runs on a worker beside its caller"
    assert all(len(os.sched_getaffinity(tid)) == 1 for tid in workers)
    for tid, name in threads():
        if name != "lstm_jax_native":
            assert os.sched_getaffinity(tid) == allowed, (tid, name)
