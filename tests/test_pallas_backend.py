"""``backend="pallas"`` through the public API: stacks, modules, the kernel's own
reasons, and copies of a model keeping their kernel.

The kernel's loops themselves (both variants in interpret mode, every gradient,
lowering and export for TPU and CUDA) are tested in ``test_pallas.py``; here the
reference is the scan on the same stack. The ``gpu`` test runs the compiled kernel
against the scan on a GPU.
"""

import copy
import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from lstm_jax import functional as F

T, B, I, H = 5, 3, 4, 8


def _loss(apply, params, x, lengths, backend, **options):
    out, state = apply(params, x, seq_lengths=lengths, backend=backend, **options)
    return jnp.sum(out**2) + sum(jnp.sum(s * s) for s in jax.tree.leaves(state))


@pytest.mark.parametrize(
    "apply, init",
    [(F.lstm, F.init_lstm_params), (F.gru, F.init_gru_params), (F.rnn, F.init_rnn_params)],
    ids=["lstm", "gru", "rnn"],
)
def test_pallas_stack_equals_the_scan(apply, init):
    params = init(jax.random.key(0), I, H, num_layers=2, bidirectional=True)
    x = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    lengths = jnp.array([5, 2, 4], jnp.int32)
    grad = jax.jit(jax.value_and_grad(_loss, argnums=(1, 2)), static_argnums=(0, 4))
    got = grad(apply, params, x, lengths, "pallas")
    want = grad(apply, params, x, lengths, "scan")
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_pallas_modules_and_recurrent_dropout():
    model = lstm_jax.GRU(I, H, num_layers=2, backend="pallas", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    out, h = model(x)
    model.backend = "scan"
    chex.assert_trees_all_close((out, h), model(x), rtol=1e-5, atol=1e-6)
    # variational recurrent dropout: the same mask, the same numbers as the scan
    params = F.init_lstm_params(jax.random.key(0), I, H)
    options = dict(recurrent_dropout=0.3, key=jax.random.key(2))
    chex.assert_trees_all_close(
        F.lstm(params, x, backend="pallas", **options),
        F.lstm(params, x, backend="scan", **options),
        rtol=1e-5,
        atol=1e-6,
    )


def test_pallas_says_what_it_cannot_run_and_auto_does_not_pick_it():
    x = jnp.ones((T, B, I), jnp.float32)
    for options, reason in [
        (dict(zoneout=0.1, deterministic=True), "zoneout"),
        (dict(checkpoint=2), "no checkpointing"),
    ]:
        with pytest.raises(ValueError, match=f"backend='pallas' cannot run.*{reason}"):
            F.lstm(F.init_lstm_params(jax.random.key(0), I, H), x, backend="pallas", **options)
    with pytest.raises(ValueError, match="plain LSTM, GRU and RNN cells only, got layer norm"):
        F.lstm(F.init_lstm_params(jax.random.key(0), I, H, layer_norm=True), x, backend="pallas")
    [choice] = lstm_jax.explain_backend(lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0)), x)
    assert choice.backend != "pallas"
    assert "'auto' never picks pallas: not yet timed" in choice.reasons["pallas"]
    [asked] = lstm_jax.explain_backend(lstm_jax.GRU(I, H, backend="pallas", rngs=nnx.Rngs(0)), x)
    assert asked.backend == "pallas" and asked.reasons["scan"] == "backend='pallas' was asked for"


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copied_model_runs_the_kernel_of_the_original(copier):
    model = lstm_jax.LSTM(I, 32, num_layers=2, rngs=nnx.Rngs(0))
    x = jnp.ones((T, B, I), jnp.float32)
    copied = copier(model)
    assert lstm_jax.explain_backend(copied, x) == lstm_jax.explain_backend(model, x)
    cell = pickle.loads(pickle.dumps(F.LSTM_CELL))
    assert cell == F.LSTM_CELL
    chex.assert_trees_all_equal(copied(x), model(x))


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_compiled_pallas_kernel_equals_the_scan_on_gpu(cell, dtype):
    apply, init = {"lstm": (F.lstm, F.init_lstm_params), "gru": (F.gru, F.init_gru_params)}[cell]
    params = init(jax.random.key(0), 64, 200, num_layers=2, bidirectional=True, dtype=dtype)
    x = jax.random.normal(jax.random.key(1), (50, 20, 64), jnp.float32).astype(dtype)
    lengths = jnp.asarray(np.arange(20) % 50 + 1, jnp.int32)
    grad = jax.jit(jax.value_and_grad(_loss, argnums=(1, 2)), static_argnums=(0, 4))
    with jax.default_matmul_precision("highest"):
        got = grad(apply, params, x, lengths, "pallas")
        want = grad(apply, params, x, lengths, "scan")
    tol = 1e-4 if dtype == jnp.float32 else 5e-2
    chex.assert_trees_all_close(got, want, rtol=tol, atol=tol)


def _grid_shapes():
    from experiments.benchmarks.run import GRID

    return [*GRID["lstm"], *GRID["gru"], *GRID["rnn"], *GRID["zaremba"], *GRID["bf16"]]


@pytest.mark.parametrize("platform, kernel_call", [("tpu", "tpu_custom_call"), ("cuda", "triton")])
def test_a_training_step_lowers_for_the_accelerators_at_every_grid_shape(platform, kernel_call):
    """Every shape of the benchmark grid (``experiments/benchmarks/run.py``), as the GPU
    script will run it: a jitted gradient of a whole stack, lowered from this CPU."""
    functions = {
        "lstm": (F.lstm, F.init_lstm_params),
        "gru": (F.gru, F.init_gru_params),
        "rnn": (F.rnn, F.init_rnn_params),
    }
    for shape in _grid_shapes():
        apply, init = functions[shape.cell]
        dtype = jnp.dtype(shape.dtype)

        def make(key, shape=shape, init=init, dtype=dtype):
            return init(
                key,
                shape.input_size,
                shape.hidden_size,
                num_layers=shape.num_layers,
                bidirectional=shape.bidirectional,
                dtype=dtype,
            )

        params = jax.eval_shape(make, jax.random.key(0))
        x = jax.ShapeDtypeStruct((shape.time, shape.batch, shape.input_size), dtype)

        def loss(params, x, apply=apply):
            out, _ = apply(params, x, backend="pallas")
            return jnp.sum(out.astype(jnp.float32) ** 2)

        step = jax.jit(jax.value_and_grad(loss)).trace(params, x)
        text = step.lower(lowering_platforms=(platform,)).as_text()
        assert kernel_call in text, (shape.name, platform)
