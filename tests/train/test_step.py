"""Train step, optimizer, evaluation and truncated BPTT."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lstm_jax import data, train


def test_make_optimizer_clips_by_global_norm():
    opt = train.make_optimizer("sgd", 1.0, clip_norm=1.0)
    params = {"a": jnp.zeros((3,), jnp.float32), "b": jnp.zeros((4,), jnp.float32)}
    grads = {"a": jnp.full((3,), 30.0, jnp.float32), "b": jnp.full((4,), 40.0, jnp.float32)}
    updates, _ = opt.update(grads, opt.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)
    small = jax.tree.map(lambda g: g / 1000, grads)
    updates, _ = opt.update(small, opt.init(params), params)
    chex.assert_trees_all_close(updates, jax.tree.map(jnp.negative, small), rtol=1e-6)
    with pytest.raises(ValueError, match="optimizer"):
        train.make_optimizer("lbfgs")


def regression_setup(cell="rnn"):
    task = data.SyntheticTask("adding", batch_size=8, length=6)
    model = train.SequenceRegressor(cell, 2, 8, rngs=nnx.Rngs(0))
    optimizer = train.make_optimizer("adam", 1e-2)
    graphdef, state = train.create_train_state(model, optimizer)
    mesh = train.make_mesh()
    state = train.place_state(state, mesh)
    step = train.make_train_step(graphdef, optimizer, train.regression_loss, state, mesh)
    return task, mesh, state, step


def test_train_step_matches_manual_update_and_does_not_retrace():
    task, mesh, state, step = regression_setup()
    batch = task.batch(0)
    # Reference: the loss and Adam update computed by hand on the same parameters.
    graphdef, params, rest = nnx.split(
        train.SequenceRegressor("rnn", 2, 8, rngs=nnx.Rngs(0)), nnx.Param, ...
    )

    def loss(p):
        pred = nnx.merge(graphdef, p, rest)(jnp.asarray(batch["inputs"]))[:, 0]
        return jnp.mean((pred - batch["targets"]) ** 2)

    ref_loss, grads = jax.value_and_grad(loss)(params)
    opt = train.make_optimizer("adam", 1e-2)
    updates, _ = opt.update(grads, opt.init(params), params)
    expected = optax.apply_updates(params, updates)

    new_state, metrics = step(state, train.shard_batch(batch, mesh))
    assert float(metrics["loss"]) == pytest.approx(float(ref_loss), rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-5)
    chex.assert_trees_all_close(new_state.params, expected, rtol=1e-5, atol=1e-7)
    assert int(new_state.step) == 1
    for i in range(1, 4):
        new_state, _ = step(new_state, train.shard_batch(task.batch(i), mesh))
    assert step._cache_size() == 1  # one compilation for every step


def test_training_reduces_the_loss():
    task, mesh, state, step = regression_setup("gru")
    losses = []
    for i in range(60):
        state, m = step(state, train.shard_batch(task.batch(i % 4), mesh))
        losses.append(float(m["loss"]))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])


def lm_setup():
    model = train.TokenModel("lstm", vocab_size=7, embed_size=4, hidden_size=8, rngs=nnx.Rngs(1))
    ids = np.random.default_rng(0).integers(0, 7, size=200).astype(np.int32)
    return model, data.LMStream(data.batchify(ids, 4), seq_len=5)


def test_tbptt_carry_equals_one_long_sequence():
    """Evaluating consecutive windows with the carried state = one pass over all of them."""
    model, stream = lm_setup()
    mesh = train.make_mesh()
    optimizer = train.make_optimizer()
    model.eval()
    graphdef, state = train.create_train_state(model, optimizer)
    eval_step = train.make_eval_step(graphdef, train.token_loss, mesh)
    windows = [stream.batch(i) for i in range(3)]
    got = train.evaluate(eval_step, state, windows, mesh, carry=model.zero_carry(4))

    model = nnx.merge(graphdef, state.params, state.rest)
    inputs = np.concatenate([w["inputs"] for w in windows])
    targets = np.concatenate([w["targets"] for w in windows])
    logits, _ = model(jnp.asarray(inputs))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(targets))
    assert got["loss"] == pytest.approx(float(jnp.mean(ce)), rel=1e-5)


def test_tbptt_reset_and_stopped_gradient():
    model, stream = lm_setup()
    batch = {k: jnp.asarray(v) for k, v in stream.batch(1).items()}
    carry = jax.tree.map(lambda c: jnp.full_like(c, 0.5), model.zero_carry(4))
    reset = jnp.array([True, False, True, False])
    _, (_, out) = train.token_loss(model, dict(batch, reset=reset), carry)
    _, (_, fresh) = train.token_loss(model, batch, model.zero_carry(4))
    _, (_, kept) = train.token_loss(model, batch, carry)
    for o, f, k in zip(out, fresh, kept, strict=True):
        np.testing.assert_allclose(o[:, [0, 2]], f[:, [0, 2]], rtol=1e-6)  # reset rows
        np.testing.assert_allclose(o[:, [1, 3]], k[:, [1, 3]], rtol=1e-6)  # carried rows

    # The carry handed to the next batch has no gradient path back into this batch.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def carried_sum(p):
        _, (_, c) = train.token_loss(nnx.merge(graphdef, p, rest), batch, carry)
        return sum(jnp.sum(x) for x in c)

    grads = jax.grad(carried_sum)(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_unknown_cell_kind():
    with pytest.raises(ValueError, match="cell must be one of"):
        train.make_recurrent("lstmp", 2, 4, rngs=nnx.Rngs(0))


def test_dropout_advances_the_checkpointed_rng_and_eval_is_deterministic():
    model = train.TokenModel(
        "rnn",
        vocab_size=7,
        embed_size=4,
        hidden_size=8,
        num_layers=2,
        dropout=0.5,
        rngs=nnx.Rngs(params=0, dropout=1),
    )
    stream = data.LMStream(data.batchify(np.arange(200, dtype=np.int32) % 7, 4), seq_len=5)
    mesh, optimizer = train.make_mesh(), train.make_optimizer()
    graphdef, state = train.create_train_state(model, optimizer, model.zero_carry(4))
    step = train.make_train_step(graphdef, optimizer, train.token_loss, state, mesh)
    counts = []
    for i in range(2):
        state, _ = step(state, train.shard_batch(stream.batch(i), mesh))
        counts.append([int(c) for c in jax.tree.leaves(state.rest) if c.dtype == jnp.uint32])
    assert counts[1][0] == counts[0][0] + 1  # a fresh dropout mask every step
    model.eval()
    eval_step = train.make_eval_step(nnx.graphdef(model), train.token_loss, mesh)
    runs = [
        train.evaluate(eval_step, state, [stream.batch(0)], mesh, model.zero_carry(4))
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
