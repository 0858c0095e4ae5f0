"""minLSTM and minGRU (Feng et al. 2024) and the parallel kernel that runs them.

The reference is a float64 NumPy loop of the paper's sequential equations (log-space
version: ``h_tilde = g(W_h x + b_h)``), written here from the paper; the stack around it
(layers, directions, each row's valid prefix flipped by hand for the reverse direction)
is ``references.run``. The parallel kernel (the steps composed in log space, chunks at
once) and the scan and fused kernels (the cell's sequential step) are checked against it,
and against each other for gradients.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export
from jax.test_util import check_grads
from references import run, sigmoid

import lstm_jax
from lstm_jax import functional as F
from lstm_jax._src.interop.torch import stack_to_named

T, B, I, H = 6, 3, 4, 5  # noqa: E741 (time, batch, input, hidden)
CELLS = ["min_lstm", "min_gru"]


def g(x):
    """The paper's g: x + 0.5 for x >= 0, sigmoid(x) below."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def min_lstm_step(p, x, state):
    """minLSTM: f, i = sigmoid(.), normalised by f + i; h = f' h + i' g(W_h x + b_h)."""
    (h,) = state
    pre = x @ p["weight_ih"].T + p.get("bias_ih", 0.0)
    k_f, k_i, k_h = np.split(pre, 3, axis=-1)
    f, i = sigmoid(k_f), sigmoid(k_i)
    return (f / (f + i) * h + i / (f + i) * g(k_h),)


def min_gru_step(p, x, state):
    """minGRU: z = sigmoid(W_z x + b_z); h = (1 - z) h + z g(W_h x + b_h)."""
    (h,) = state
    pre = x @ p["weight_ih"].T + p.get("bias_ih", 0.0)
    k_z, k_h = np.split(pre, 2, axis=-1)
    z = sigmoid(k_z)
    return ((1.0 - z) * h + z * g(k_h),)


STEPS = {"min_lstm": min_lstm_step, "min_gru": min_gru_step}


def _params(cell, num_layers=1, bidirectional=False, dtype=jnp.float64, seed=0):
    return F.init_params(
        cell, jax.random.key(seed), I, H, num_layers, bidirectional=bidirectional, dtype=dtype
    )


def _normal(shape, dtype=np.float64, seed=1, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


def _reference(cell, params, x, h0, num_layers, bidirectional, lengths=None):
    named = stack_to_named(params)
    return run(STEPS[cell], named, x, (h0,), num_layers, bidirectional, lengths)


@functools.partial(jax.jit, static_argnames=("cell", "backend"))
def _outputs_and_grads(params, x, h0, lengths, *, cell, backend):
    def loss(params, x, h0):
        out, (h_n,) = F.apply_recurrent(
            cell, params, x, (h0,), seq_lengths=lengths, backend=backend
        )
        return jnp.sum(jnp.sin(out)) + jnp.sum(h_n * h_n), (out, h_n)

    return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, h0)


# Both directions, padded rows (row 0 full) and a state of both signs; two layers for one
# cell (the stack around the kernel is the same for every cell).
@pytest.mark.parametrize("cell,num_layers", [("min_lstm", 2), ("min_gru", 1)])
def test_parallel_and_scan_match_the_paper_equations(cell, num_layers):
    params = _params(cell, num_layers, True)
    x = _normal((T, B, I))
    h0 = _normal((2 * num_layers, B, H), seed=2)
    lengths = [T, 2, 4]
    out_ref, (h_ref,) = _reference(cell, params, x, h0, num_layers, True, lengths)
    grads = {}
    for backend in ("parallel", "scan", "fused"):
        grads[backend], (out, h_n) = _outputs_and_grads(
            params, x, h0, jnp.asarray(lengths, jnp.int32), cell=cell, backend=backend
        )
        np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12, err_msg=backend)
        np.testing.assert_allclose(h_n, h_ref, rtol=1e-12, atol=1e-12, err_msg=backend)
    chex.assert_trees_all_close(grads["parallel"], grads["scan"], rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(grads["fused"], grads["scan"], rtol=1e-10, atol=1e-12)


def test_parallel_gradients_of_first_and_second_order():
    p = _params("min_gru")[0][0]
    x = jnp.asarray(_normal((4, 2, I)))
    h0 = F.MinGRUState(jnp.asarray(_normal((2, H), seed=2)))
    lengths = jnp.array([4, 2], jnp.int32)

    @jax.jit
    def f(p, x, h0):  # the reverse direction: padded steps come first
        out, (h_n,) = F.run_parallel_layer(
            F.MIN_GRU_CELL, p, x, h0, seq_lengths=lengths, reverse=True
        )
        return jnp.sum(jnp.sin(out)) + jnp.sum(h_n * h_n)

    check_grads(f, (p, x, h0), order=2, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_a_padded_row_equals_that_sequence_run_alone():
    params = _params("min_gru", 2, True)
    x = jnp.asarray(_normal((T, B, I)))
    lengths = jnp.array([T, 2, 4], jnp.int32)
    run_parallel = jax.jit(
        lambda x, seq: F.apply_recurrent("min_gru", params, x, seq_lengths=seq, backend="parallel")
    )
    out, (h_n,) = run_parallel(x, lengths)
    alone, (h_alone,) = run_parallel(x[:2, 1:2], None)
    np.testing.assert_allclose(out[:2, 1], alone[:, 0], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(out[2:, 1], 0.0)
    np.testing.assert_allclose(h_n[:, 1], h_alone[:, 0], rtol=1e-12, atol=1e-13)


def test_state_carried_across_two_windows_equals_one_long_run():
    params = _params("min_gru", 2, False, dtype=jnp.float32)
    x = jnp.asarray(_normal((2 * T, B, I), np.float32))
    apply = jax.jit(lambda x, hx: F.apply_recurrent("min_gru", params, x, hx, backend="parallel"))
    whole, (h_whole,) = apply(x, None)
    first, state = apply(x[:T], None)
    second, (h_second,) = apply(x[T:], state)
    np.testing.assert_allclose(jnp.concatenate([first, second]), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_second, h_whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_the_sequential_step_equals_the_parallel_run(cell):
    params = _params(cell, dtype=jnp.float32)
    x = jnp.asarray(_normal((T, B, I), np.float32))
    out, (h_n,) = jax.jit(lambda x: F.apply_recurrent(cell, params, x, backend="parallel"))(x)
    step = jax.jit(functools.partial(F.step_cell, cell, params[0][0]))  # RecurrentCell's step
    state = None
    for t in range(T):
        state = step(x[t], state)
        np.testing.assert_allclose(state.h, out[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, h_n[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_the_quantities_are_the_paper_gates(cell):
    p = _params(cell)[0][0]
    x = _normal((B, I))
    definition = F.get_cell(cell)
    state = type(definition.state_sizes(p))(_normal((B, H), seed=2))
    gates_x = definition.input_projection(p, x)
    q = definition.named_quantities(p, gates_x, F.recurrent_product(p, state.h), state)
    pre = x @ np.asarray(p.weight_ih).T + np.asarray(p.bias_ih)
    if cell == "min_lstm":
        k_f, k_i, k_h = np.split(pre, 3, axis=-1)
        f, i = sigmoid(k_f), sigmoid(k_i)
        expected = {"f": f / (f + i), "i": i / (f + i), "h_tilde": g(k_h)}
    else:
        k_z, k_h = np.split(pre, 2, axis=-1)
        expected = {"z": sigmoid(k_z), "h_tilde": g(k_h)}
    named = {"weight_ih": np.asarray(p.weight_ih), "bias_ih": np.asarray(p.bias_ih)}
    (expected["h"],) = STEPS[cell](named, x, (np.asarray(state.h),))
    assert list(q) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(q[name], value, rtol=1e-12, atol=1e-14, err_msg=name)


def test_log_space_is_stable_over_4096_steps():
    long_t = 4096
    params = F.init_params("min_lstm", jax.random.key(0), 3, 4, dtype=jnp.float32)
    # large inputs saturate the gates: products of thousands of decays underflow
    x = jnp.asarray(_normal((long_t, 2, 3), np.float32, scale=4.0))

    def loss(params, x):
        out, (h_n,) = F.apply_recurrent("min_lstm", params, x, backend="parallel")
        return jnp.sum(out) + jnp.sum(h_n), out

    grads, out = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, x)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves((grads, out)))
    named = stack_to_named(params)
    out_ref, _ = run(min_lstm_step, named, np.asarray(x), (np.zeros((1, 2, 4)),), 1, False)
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-5)


def test_explain_backend_names_the_parallel_kernel_and_other_cells_are_refused():
    from lstm_jax._src.backends import backend_names

    x = jnp.ones((T, B, I), jnp.float32)
    assert "parallel" in backend_names()
    for cell in CELLS:
        asked = lstm_jax.Recurrent(cell, I, H, backend="parallel", rngs=nnx.Rngs(0))
        [choice] = lstm_jax.explain_backend(asked, x)
        assert choice.backend == "parallel", choice
        # "auto" keeps to the sequential kernels until the parallel one is measured faster
        [choice] = lstm_jax.explain_backend(lstm_jax.Recurrent(cell, I, H, rngs=nnx.Rngs(0)), x)
        assert choice.backend in ("fused", "scan"), choice
        assert choice.reasons["parallel"].startswith("'auto' never picks parallel: on CPU")
    with pytest.raises(
        ValueError, match="backend='parallel' cannot run.*linear recurrence.*an LSTM"
    ):
        F.lstm(F.init_lstm_params(jax.random.key(0), I, H), x, backend="parallel")
    params = _params("min_gru", dtype=jnp.float32)
    # zoneout mixes states inside each step: "auto" takes the scan, "parallel" says why
    with pytest.raises(ValueError, match="cannot run.*zoneout"):
        F.apply_recurrent("min_gru", params, x, backend="parallel", zoneout=0.1, deterministic=True)
    [choice] = lstm_jax.explain_backend(
        lambda x: F.apply_recurrent("min_gru", params, x, zoneout=0.1, deterministic=True), x
    )
    assert choice.backend == "scan" and "zoneout" in choice.reasons["parallel"]
    with pytest.raises(ValueError, match="cannot run.*checkpoint"):
        F.apply_recurrent("min_gru", params, x, backend="parallel", checkpoint=2)
    # the regularisers of W_hh h_(t-1) have nothing to act on
    with pytest.raises(ValueError, match="weight_dropout drops entries of weight_hh"):
        F.apply_recurrent("min_gru", params, x, weight_dropout=0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="recurrent_dropout drops h_.t-1.*a minGRU"):
        F.apply_recurrent("min_gru", params, x, recurrent_dropout=0.5, key=jax.random.key(0))


def test_the_parallel_kernel_composes_with_jit_vmap_export_and_propagates_nan():
    params = _params("min_lstm", 1, True, dtype=jnp.float32)
    xs = jnp.asarray(_normal((3, T, 2, I), np.float32))
    lengths = jnp.array([[T, 3], [1, T], [4, 2]], jnp.int32)

    def apply(x, seq, backend="parallel"):
        return F.apply_recurrent("min_lstm", params, x, seq_lengths=seq, backend=backend)

    batched = jax.jit(jax.vmap(apply))(xs, lengths)
    one = jax.jit(apply)
    for k in range(3):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, k=k: a[k], batched), one(xs[k], lengths[k]), atol=1e-6
        )
    exported = export.deserialize(export.export(one)(xs[0], lengths[0]).serialize())
    chex.assert_trees_all_close(exported.call(xs[0], lengths[0]), one(xs[0], lengths[0]))
    # a NaN input poisons the steps after it (in both directions), as in the scan
    x, full = xs[0].at[2, 0, 0].set(jnp.nan), jnp.array([T, T], jnp.int32)
    out, _ = one(x, full)
    scan, _ = jax.jit(functools.partial(apply, backend="scan"))(x, full)
    np.testing.assert_array_equal(jnp.isnan(out), jnp.isnan(scan))
    assert bool(jnp.isnan(out[2:, 0, :H]).all()) and not bool(jnp.isnan(out[:2, 0, :H]).any())
