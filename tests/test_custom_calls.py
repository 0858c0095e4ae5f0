"""``batch_parallel`` (vmap of a custom call) and ``explain_backend``, on one device.

Partitioning over several devices and ``shard_map`` are in test_kernel_sharding.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from lstm_jax import functional as F
from lstm_jax._src.custom_calls import batch_parallel
from lstm_jax._src.native import lstm_cpu

calls = []


def _rows(x, w, bias):
    """A stand-in kernel: per-row products and a sum over rows; records its batch."""
    calls.append(x.shape)
    y = x @ w + (0.0 if bias is None else bias[None])
    return y, jnp.sum(y, axis=0)


def _reference(x, w, bias):
    y = np.asarray(x) @ np.asarray(w) + (0.0 if bias is None else np.asarray(bias))
    return y, y.sum(axis=0)


@pytest.mark.parametrize("with_bias", [False, True])
def test_vmap_of_row_outputs_folds_into_one_call(with_bias):
    run = batch_parallel(lambda x, w, b: _rows(x, w, b)[:1], (0, None, None), (0,))
    xs = jax.random.normal(jax.random.key(0), (3, 4, 5), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (5, 2), jnp.float32)
    bias = jnp.ones((2,), jnp.float32) if with_bias else None
    calls.clear()
    (y,) = jax.jit(jax.vmap(lambda x: run(x, w, bias)))(xs)
    assert calls[-1] == (12, 5)  # one call over the 3 * 4 rows (after tracing one element)
    np.testing.assert_allclose(y, np.stack([_reference(x, w, bias)[0] for x in xs]), rtol=1e-5)


def test_vmap_with_a_summed_output_or_mapped_weights_runs_per_element():
    run = batch_parallel(_rows, (0, None, None), (0, None))
    xs = jax.random.normal(jax.random.key(0), (3, 4, 5), jnp.float32)
    ws = jax.random.normal(jax.random.key(1), (3, 5, 2), jnp.float32)
    for in_axes in [(0, None), (0, 0), (None, 0)]:
        x_in = xs if in_axes[0] == 0 else xs[0]
        w_in = ws if in_axes[1] == 0 else ws[0]
        calls.clear()
        y, total = jax.jit(jax.vmap(lambda x, w: run(x, w, None), in_axes=in_axes))(x_in, w_in)
        assert set(calls) == {(4, 5)}  # never folded: mapped one element at a time
        for k in range(3):
            x = xs[k] if in_axes[0] == 0 else xs[0]
            w = ws[k] if in_axes[1] == 0 else ws[0]
            want_y, want_total = _reference(x, w, None)
            np.testing.assert_allclose(y[k], want_y, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(total[k], want_total, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(lstm_cpu.unavailable_reason() is not None, reason="no native loops")
def test_vmapped_native_layer_is_one_call_over_the_folded_batch():
    params = F.init_lstm_params(jax.random.key(0), 8, 32)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 4, 8), jnp.float32)
    run = jax.jit(jax.vmap(lambda x: F.lstm(params, x)[0]))
    text = run.lower(xs).compile().as_text()
    native = [line for line in text.splitlines() if "lstm_jax_native_forward" in line]
    assert len(native) == 1 and "f32[1,5,12,32]" in native[0], native
    want = jnp.stack([F.lstm(params, x, backend="scan")[0] for x in xs])
    np.testing.assert_allclose(run(xs), want, rtol=1e-5, atol=1e-6)


def test_explain_backend_names_the_kernel_and_the_reasons():
    x = jnp.ones((5, 2, 8), jnp.float32)
    [plain] = lstm_jax.explain_backend(lstm_jax.LSTM(8, 32, rngs=nnx.Rngs(0)), x)
    assert plain.backend == "fused"
    assert plain.native_cpu == (lstm_cpu.unavailable_reason() is None)
    assert "cuDNN needs a GPU" in plain.reasons["cudnn"]

    [odd] = lstm_jax.explain_backend(lstm_jax.LSTM(8, 20, rngs=nnx.Rngs(0)), x)
    assert odd.native_cpu == (lstm_cpu.unavailable_reason() is None)
    [projected] = lstm_jax.explain_backend(lstm_jax.LSTM(8, 20, proj_size=4, rngs=nnx.Rngs(0)), x)
    assert not projected.native_cpu and "proj_size" in projected.reasons["native_cpu"]

    [gru] = lstm_jax.explain_backend(lstm_jax.GRU(8, 20, rngs=nnx.Rngs(0)), x)
    assert gru.backend == "fused" and gru.native_cpu == (lstm_cpu.unavailable_reason() is None)
    [rnn] = lstm_jax.explain_backend(lstm_jax.RNN(8, 20, rngs=nnx.Rngs(0)), x)
    assert rnn.native_cpu == (lstm_cpu.unavailable_reason() is None)
    for variant in ("peephole", "cifg"):
        model = lstm_jax.LSTM(8, 20, **{variant: True}, rngs=nnx.Rngs(0))
        [choice] = lstm_jax.explain_backend(model, x)
        assert choice.native_cpu == (lstm_cpu.unavailable_reason() is None), variant
    [layer_norm] = lstm_jax.explain_backend(
        lstm_jax.LSTM(8, 32, layer_norm=True, rngs=nnx.Rngs(0)), x
    )
    assert layer_norm.backend == "fused" and not layer_norm.native_cpu
    assert "not with layer norm" in layer_norm.reasons["native_cpu"]

    with lstm_jax.portable_kernels():
        [portable] = lstm_jax.explain_backend(lstm_jax.LSTM(8, 32, rngs=nnx.Rngs(0)), x)
    assert not portable.native_cpu and "portable_kernels" in portable.reasons["native_cpu"]


def test_explain_backend_in_train_mode_leaves_the_model_alone():
    model = lstm_jax.LSTM(8, 32, num_layers=2, zoneout=0.2, rngs=nnx.Rngs(0))
    model.train()
    before = nnx.state(model, nnx.RngCount)
    [choice] = lstm_jax.explain_backend(model, jnp.ones((5, 2, 8), jnp.float32))
    assert choice.backend == "scan" and "inside each step" in choice.reasons["fused"]
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(model, nnx.RngCount))


def test_explain_backend_of_a_pure_function_already_jitted():
    params = F.init_lstm_params(jax.random.key(0), 8, 32, num_layers=2)
    run = jax.jit(lambda x: F.lstm(params, x, backend="scan")[0])
    x = jnp.ones((5, 2, 8), jnp.float32)
    run(x)  # cached: explain_backend traces it again
    [choice] = lstm_jax.explain_backend(run, x)
    assert choice.backend == "scan" and choice.reasons["fused"] == "backend='scan' was asked for"
