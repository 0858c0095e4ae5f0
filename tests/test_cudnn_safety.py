"""The cuDNN backend's wrapper, on CPU: zero lengths, vmap, grad and second order.

cuDNN itself needs a GPU, so these tests replace the two calls into it
(``cudnn._cudnn_forward`` and ``cudnn._cudnn_backward``) by a kernel of the same
contract built on ``jax.experimental.rnn.lstm_ref``, the reference that ships with the
cuDNN wrapper. The fake records the batch it is traced with (to show which of the
wrapper's vmap rules ran) and the lengths it is given when it runs (cuDNN crashes on a
length outside ``1..time``), and keeps an opaque residual whose size depends on the
batch, as cuDNN's reserve space does. The reference for every number is the scan
(``backend="scan"``), which shares no code with it. The real kernel is checked against
the scan on GPU in ``tests/test_backends.py``.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from forced_devices import run_on_devices
from jax.experimental import rnn

from lstm_jax import functional as F
from lstm_jax._src.backends import cudnn
from lstm_jax._src.types import LSTMState

T, B, IN, H = 6, 3, 4, 5
N = 4  # the vmapped axis


class FakeCudnn:
    """``lstm_ref`` behind cuDNN's forward/backward contract; records the batch it sees."""

    def __init__(self):
        self.forward_batches = []  # x.shape[0] of each traced forward call
        self.backward_batches = []
        self.lengths = []  # the seq_lengths of each forward call that ran

    def _record(self, seq_lengths):
        self.lengths.append(np.asarray(seq_lengths))

    def forward(self, x, h_0, c_0, weights, seq_lengths, config):
        self.forward_batches.append(x.shape[0])
        jax.debug.callback(self._record, seq_lengths)  # the values, when it runs
        y, h_n, c_n = self._ref(x, h_0, c_0, weights, seq_lengths, config)
        reserve = jnp.zeros((7 * x.shape[0],), jnp.float32)  # sized by the batch, opaque
        return (y, h_n, c_n), (x, h_0, c_0, weights, seq_lengths, reserve)

    def backward(self, residuals, cotangents, config):
        x, h_0, c_0, weights, seq_lengths, reserve = residuals
        assert reserve.shape == (7 * x.shape[0],), "a reserve space from another batch"
        self.backward_batches.append(x.shape[0])
        _, vjp = jax.vjp(lambda *a: self._ref(*a, seq_lengths, config), x, h_0, c_0, weights)
        return vjp(cotangents)

    @staticmethod
    def _ref(x, h_0, c_0, weights, seq_lengths, config):
        c = config
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
            weights, c.input_size, c.hidden_size, c.num_layers, c.bidirectional
        )
        return rnn.lstm_ref(
            x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, seq_lengths,
            c.input_size, c.hidden_size, c.num_layers, 0.0, c.bidirectional,
        )  # fmt: skip


@pytest.fixture
def fake(monkeypatch):
    kernel = FakeCudnn()
    monkeypatch.setattr(cudnn, "_cudnn_forward", kernel.forward)
    monkeypatch.setattr(cudnn, "_cudnn_backward", kernel.backward)
    return kernel


def _inputs(num_layers, bidirectional, seed=0):
    params = F.init_lstm_params(
        jax.random.key(seed), IN, H, num_layers=num_layers, bidirectional=bidirectional
    )
    ld = num_layers * (2 if bidirectional else 1)
    keys = jax.random.split(jax.random.key(seed + 1), 3)
    x = jax.random.normal(keys[0], (T, B, IN), jnp.float32)
    h_0 = jax.random.normal(keys[1], (ld, B, H), jnp.float32)
    c_0 = jax.random.normal(keys[2], (ld, B, H), jnp.float32)
    return params, x, h_0, c_0


def run(backend, params, x, h_0, c_0, lengths=None):
    if backend == "cudnn":
        y, state = cudnn.run_cudnn_stack(params, x, LSTMState(h_0, c_0), seq_lengths=lengths)
        return y, state.h, state.c
    y, (h, c) = F.lstm(params, x, (h_0, c_0), seq_lengths=lengths, backend="scan")
    return y, h, c


def loss(backend, params, x, h_0, c_0, lengths=None):
    y, h, c = out = run(backend, params, x, h_0, c_0, lengths)
    return jnp.sum(y * y) + jnp.sum(jnp.sin(h)) + jnp.sum(c * c), out


TOL = dict(atol=1e-5, rtol=1e-5)


def test_traced_zero_lengths_match_the_scan_with_gradients(fake):
    # Outputs and the gradients with respect to everything but the lengths, one compilation.
    outputs_and_grads = jax.jit(
        jax.grad(loss, argnums=(1, 2, 3, 4), has_aux=True), static_argnums=0
    )
    params, x, h_0, c_0 = _inputs(1, True)
    lengths = jnp.array([T, 0, 2], jnp.int32)  # traced under jit: no check can see the 0
    got = outputs_and_grads("cudnn", params, x, h_0, c_0, lengths)
    expected = outputs_and_grads("scan", params, x, h_0, c_0, lengths)
    seen = np.concatenate(fake.lengths)  # what cuDNN was given: never a length outside 1..T
    assert seen.min() >= 1 and seen.max() <= T and 0 in lengths
    chex.assert_trees_all_close(got, expected, **TOL)
    y, h, c = got[1]
    np.testing.assert_array_equal(y[:, 1], 0.0)
    np.testing.assert_array_equal(h[:, 1], h_0[:, 1])
    np.testing.assert_array_equal(c[:, 1], c_0[:, 1])


def _stacked(f, *batched):
    """``f`` on each example in turn, stacked: what vmap must give. ``f`` is jitted, so
    that the lengths are traced there too."""
    outs = [f(*jax.tree.map(lambda a, i=i: a[i], batched)) for i in range(N)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def test_vmap_with_shared_weights_folds_into_the_batch(fake):
    params, _, _, _ = _inputs(1, True)
    xs = jax.random.normal(jax.random.key(5), (N, T, B, IN), jnp.float32)
    h0s = jax.random.normal(jax.random.key(6), (N, 2, B, H), jnp.float32)
    c_0 = jnp.zeros((2, B, H), jnp.float32)  # shared by all examples
    lengths = jax.random.randint(jax.random.key(7), (N, B), 0, T + 1).astype(jnp.int32)
    scan_one = jax.jit(lambda x, h, n: run("scan", params, x, h, c_0, n))

    def f(x, h_0, lengths):
        return run("cudnn", params, x, h_0, c_0, lengths)

    got = jax.jit(jax.vmap(f))(xs, h0s, lengths)
    assert max(fake.forward_batches) == N * B  # one cuDNN call on every example's rows
    assert np.concatenate(fake.lengths).min() >= 1 and lengths.min() == 0
    chex.assert_trees_all_close(got, _stacked(scan_one, xs, h0s, lengths), **TOL)
    # vmap of vmap: x over the inner axis; h_0 and the lengths over the outer one.
    got = jax.jit(jax.vmap(jax.vmap(f, (0, None, None)), (None, 0, 0)))(xs, h0s, lengths)
    assert max(fake.forward_batches) == N * N * B
    for i, j in ((0, 0), (1, 3), (3, 2)):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, k=(i, j): a[k], got), scan_one(xs[j], h0s[i], lengths[i]), **TOL
        )


def test_vmap_with_batched_weights_runs_each_example(fake):
    keys = jax.random.split(jax.random.key(0), N)
    params = jax.vmap(lambda k: F.init_lstm_params(k, IN, H))(keys)
    _, x, h_0, c_0 = _inputs(1, False)
    got = jax.jit(jax.vmap(lambda p: run("cudnn", p, x, h_0, c_0)))(params)
    assert max(fake.forward_batches) == B  # inside lax.map, one example at a time
    expected = _stacked(jax.jit(lambda p: run("scan", p, x, h_0, c_0)), params)
    chex.assert_trees_all_close(got, expected, **TOL)


def test_per_example_gradients_under_vmap(fake):
    params, _, h_0, c_0 = _inputs(1, True)
    xs = jax.random.normal(jax.random.key(5), (N, T, B, IN), jnp.float32)
    lengths = jnp.array([T, 0, 3], jnp.int32)
    per_example = jax.grad(lambda *a: loss(*a)[0], argnums=(1, 2))
    got = jax.jit(jax.vmap(lambda x: per_example("cudnn", params, x, h_0, c_0, lengths)))(xs)
    assert set(fake.backward_batches) == {B}  # each example has its own weight gradient
    all_lengths = jnp.broadcast_to(lengths, (N, B))  # an argument: traced, as in the vmap
    scan_one = jax.jit(lambda x, n: per_example("scan", params, x, h_0, c_0, n))
    expected = _stacked(scan_one, xs, all_lengths)
    chex.assert_trees_all_close(got, expected, **TOL)

    def total(params, lengths):  # grad of a vmapped loss: the per-example grads summed
        return jnp.sum(jax.vmap(lambda x: loss("cudnn", params, x, h_0, c_0, lengths)[0])(xs))

    got = jax.jit(jax.grad(total))(params, lengths)
    chex.assert_trees_all_close(got, jax.tree.map(lambda g: g.sum(0), expected[0]), **TOL)


def test_jacobian_maps_the_backward_over_cotangents(fake):
    params, x, h_0, c_0 = _inputs(1, False)
    h_0, c_0 = h_0[:1], c_0[:1]

    def last_h(backend, x):
        return run(backend, params, x, h_0, c_0)[1][0, 0]  # [H]

    got = jax.jit(jax.jacrev(last_h, argnums=1), static_argnums=0)("cudnn", x)
    expected = jax.jacrev(last_h, argnums=1)("scan", x)
    chex.assert_trees_all_close(got, expected, **TOL)


def test_second_order_raises_a_clear_error(fake):
    params, x, h_0, c_0 = _inputs(1, False)

    def f(x):
        return loss("cudnn", params, x, h_0, c_0)[0]

    jax.grad(f)(x)  # first order is fine
    for higher in (
        lambda: jax.grad(lambda x: jnp.sum(jax.grad(f)(x)))(x),
        lambda: jax.hessian(f)(x[:2, :1]),
        lambda: jax.jvp(jax.grad(f), (x,), (x,)),
        lambda: jax.jit(jax.grad(lambda x: jnp.sum(jax.grad(f)(x))))(x),
    ):
        with pytest.raises(NotImplementedError, match="backend='fused' or 'scan'"):
            higher()


SHARDED = """
import json, sys
import numpy as np
import jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, sys.argv[1])
import test_cudnn_safety as t
from lstm_jax._src.backends import cudnn

class Fake(t.FakeCudnn):  # without the host callback, which crashes in a partitioned call
    def forward(self, x, h_0, c_0, weights, seq_lengths, config):
        self.forward_batches.append(x.shape[0])
        y, h_n, c_n = self._ref(x, h_0, c_0, weights, seq_lengths, config)
        reserve = jnp.zeros((7 * x.shape[0],), jnp.float32)
        return (y, h_n, c_n), (x, h_0, c_0, weights, seq_lengths, reserve)


fake = Fake()
cudnn._cudnn_forward, cudnn._cudnn_backward = fake.forward, fake.backward
mesh = Mesh(np.array(jax.devices()), ("data",))
params, x, h_0, c_0 = t._inputs(2, True)
x = jnp.concatenate([x] * 4, axis=1)  # B = 12: 3 rows per device
h_0, c_0 = (jnp.concatenate([a] * 4, axis=1) for a in (h_0, c_0))
lengths = jnp.asarray(np.arange(12) % t.T + 1, jnp.int32)
grads = jax.jit(jax.grad(t.loss, argnums=(1, 2, 3, 4), has_aux=True), static_argnums=0)
expected = grads("scan", params, x, h_0, c_0, lengths)
rows = NamedSharding(mesh, P(None, "data"))
args = (jax.device_put(params, NamedSharding(mesh, P())), jax.device_put(x, rows),
        jax.device_put(h_0, rows), jax.device_put(c_0, rows),
        jax.device_put(lengths, NamedSharding(mesh, P("data"))))
got = grads("cudnn", *args)
error = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True))
text = grads.lower("cudnn", *args).compile().as_text()
print("RESULT" + json.dumps({"error": error, "forward": fake.forward_batches,
      "backward": fake.backward_batches, "all_gather": "all-gather" in text}))
"""


def test_training_on_several_devices_splits_the_batch(tmp_path):
    """4 host devices: forward and the recomputing backward each see 3 of the 12 rows."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    result = run_on_devices(SHARDED, 4, tests_dir, cwd=tmp_path)
    assert result["error"] < 1e-4, result
    # traced once on the global batch (shapes), then per device on its own rows
    assert 3 in result["forward"] and 3 in result["backward"], result
    assert not result["all_gather"], result
