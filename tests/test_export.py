"""``jax.export`` of every public model, and lowering for accelerators on this CPU.

Exporting for ``cuda`` and ``tpu`` lowers the program for those platforms without
their hardware, so a change that breaks GPU or TPU lowering fails here. CPU export of
the native loops needs ``lstm_jax.portable_kernels()``; exported programs are run back
here and compared with the model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

import lstm_jax
from lstm_jax import data, train

ACCELERATORS = ["cuda", "tpu"]
I, H, T, B = 6, 32, 5, 4

MODELS = {
    "lstm-auto": lambda: lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0)),
    "lstm-scan": lambda: lstm_jax.LSTM(I, H, backend="scan", rngs=nnx.Rngs(0)),
    "lstm-fused-2-layer-bidirectional": lambda: lstm_jax.LSTM(
        I, H, num_layers=2, bidirectional=True, backend="fused", rngs=nnx.Rngs(0)
    ),
    "lstm-proj": lambda: lstm_jax.LSTM(I, H, proj_size=8, rngs=nnx.Rngs(0)),
    "lstm-peephole-layer-norm-cifg": lambda: lstm_jax.LSTM(
        I, H, peephole=True, layer_norm=True, cifg=True, rngs=nnx.Rngs(0)
    ),
    "gru": lambda: lstm_jax.GRU(I, H, num_layers=2, rngs=nnx.Rngs(0)),
    "rnn-relu": lambda: lstm_jax.RNN(I, H, nonlinearity="relu", rngs=nnx.Rngs(0)),
}


def _exported(name, platforms):
    model = MODELS[name]()
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)  # a list of arrays: serializable

    def apply(leaves, x, lengths):
        return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(x, seq_lengths=lengths)[0]

    x = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    lengths = jnp.array([5, 1, 3, 5], jnp.int32)
    exported = export.export(jax.jit(apply), platforms=platforms)(leaves, x, lengths)
    return exported, (model, leaves, x, lengths)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_export_for_accelerators(name):
    exported, _ = _exported(name, ACCELERATORS)
    assert exported.platforms == tuple(ACCELERATORS)
    text = exported.mlir_module()
    assert "lstm_jax_native" not in text  # the CPU kernel is never lowered for them


@pytest.mark.parametrize("name", ["lstm-fused-2-layer-bidirectional", "gru"])
def test_cpu_export_inside_portable_kernels_runs_back(name):
    with lstm_jax.portable_kernels():
        exported, (model, leaves, x, lengths) = _exported(name, ["cpu", *ACCELERATORS])
    restored = export.deserialize(exported.serialize())
    np.testing.assert_allclose(
        restored.call(leaves, x, lengths), model(x, seq_lengths=lengths)[0], rtol=1e-5, atol=1e-6
    )


def test_cpu_export_of_the_native_loops_names_them():
    from lstm_jax._src.native import lstm_cpu

    if lstm_cpu.unavailable_reason() is not None:
        pytest.skip("the native CPU loops are unavailable here")
    with pytest.raises(ValueError, match="lstm_jax_native_forward"):
        _exported("lstm-auto", ["cpu"])


def test_training_step_exports_for_accelerators():
    """The library's jitted training step (forward, fused backward, optax update)."""
    mesh = train.make_mesh(jax.devices()[:1])
    model = train.SequenceRegressor("lstm", 2, H, rngs=nnx.Rngs(0))
    opt = train.make_optimizer("adam", 1e-2)
    graphdef, state = train.create_train_state(model, opt, None)
    state = train.place_state(state, mesh)
    step = train.make_train_step(graphdef, opt, train.regression_loss, state, mesh)
    batch = train.shard_batch(data.SyntheticTask("adding", batch_size=B, length=T).batch(0), mesh)
    exported = export.export(step, platforms=ACCELERATORS)(state, batch)
    assert exported.platforms == tuple(ACCELERATORS)
    # the backward pass is in the program: the exported step updates every parameter
    assert len(exported.out_avals) == len(jax.tree.leaves(step(state, batch)))
