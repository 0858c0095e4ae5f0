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


@pytest.mark.parametrize("hold, rate", [(4, 0.5), (6, 1 / 1.2), (14, 1 / 1.15), (0, 0.5)])
def test_step_decay_is_zarembas_epoch_schedule(hold, rate):
    """SGD's applied rate in every step equals lr * rate ** max(epoch - hold, 0), epoch 1-based."""
    epoch_steps, epochs = 3, 8
    opt = train.make_optimizer(
        "sgd",
        1.0,
        clip_norm=None,
        decay_rate=rate,
        decay_begin=hold * epoch_steps,
        decay_every=epoch_steps,
    )
    params = {"w": jnp.zeros((1,), jnp.float32)}
    opt_state = opt.init(params)
    for step in range(epochs * epoch_steps):
        epoch = step // epoch_steps + 1
        updates, opt_state = opt.update({"w": jnp.ones((1,), jnp.float32)}, opt_state, params)
        expected = rate ** max(epoch - hold, 0)
        assert float(-updates["w"][0]) == pytest.approx(expected, rel=1e-6), (step, epoch)
        # the rate recorded in the state (what fit logs) is the one just applied
        assert float(train.applied_learning_rate(opt_state)) == pytest.approx(expected, rel=1e-6)
        schedule = train.make_schedule(
            1.0, decay_rate=rate, decay_begin=hold * epoch_steps, decay_every=epoch_steps
        )
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="does not combine"):
        train.make_optimizer("sgd", 1.0, decay_every=3, decay_steps=10)
    with pytest.raises(ValueError, match="decay_begin must be >= 0, got -1"):
        train.make_schedule(1.0, decay_rate=0.5, decay_begin=-1, decay_every=3)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_make_optimizer_keeps_the_parameter_dtype_and_records_the_rate(name):
    """The learning rate sits in the state as float32 (optax.inject_hyperparams) and does
    not promote float32 parameters, even with x64 on; without a schedule it is constant."""
    opt = train.make_optimizer(name, 0.25, warmup_steps=0)
    params = {"w": jnp.ones((3,), jnp.float32)}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.ones((3,), jnp.float32)}, state, params)
    assert updates["w"].dtype == jnp.float32
    lr = train.applied_learning_rate(state)
    assert lr.dtype == jnp.float32 and float(lr) == 0.25
    assert train.applied_learning_rate(optax.adam(0.1).init(params)) is None


def test_warmup_and_cosine_schedules():
    warm = train.make_schedule(1.0, warmup_steps=4)
    assert [float(warm(s)) for s in (0, 2, 4, 10)] == [0.0, 0.5, 1.0, 1.0]
    cosine = train.make_schedule(1.0, warmup_steps=2, decay_steps=4)
    half = 0.5 * (1 + np.cos(np.pi * 2 / 4))
    assert [float(cosine(s)) for s in (1, 2, 4, 6)] == pytest.approx([0.5, 1.0, half, 0.0])


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
    with pytest.raises(ValueError, match="unknown cell .lstmp.; registered cells: lstm, gru"):
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
    # carries made before the first step, which donates the model's arrays
    train_carry, eval_carry = model.zero_carry(4), model.zero_carry(4)
    graphdef, state = train.create_train_state(model, optimizer, train_carry)
    step = train.make_train_step(graphdef, optimizer, train.token_loss, state, mesh)
    counts = []
    for i in range(2):
        state, _ = step(state, train.shard_batch(stream.batch(i), mesh))
        counts.append([int(c) for c in jax.tree.leaves(state.rest) if c.dtype == jnp.uint32])
    assert counts[1][0] == counts[0][0] + 1  # a fresh dropout mask every step
    model.eval()
    eval_step = train.make_eval_step(nnx.graphdef(model), train.token_loss, mesh)
    runs = [train.evaluate(eval_step, state, [stream.batch(0)], mesh, eval_carry) for _ in range(2)]
    assert runs[0] == runs[1]


def test_init_uniform_sets_every_parameter_in_range():
    model = train.TokenModel("lstm", 11, 6, 8, num_layers=2, rngs=nnx.Rngs(0))
    train.init_uniform(model, 0.05, key=jax.random.key(3))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert len(leaves) == 11  # embedding, 2 layers x 4 tensors, read-out kernel and bias
    for leaf in leaves:
        a = np.asarray(leaf)
        assert a.dtype == np.float32 and np.abs(a).max() <= 0.05
        if a.size > 50:  # spread over the interval, not the library's default init
            assert np.abs(a).max() > 0.04 and abs(a.mean()) < 0.01
    with pytest.raises(ValueError, match="scale"):
        train.init_uniform(model, 0.0, key=jax.random.key(0))


def test_io_dropout_masks_embedding_and_output_only_in_training():
    model = train.TokenModel("lstm", 7, 16, 16, io_dropout=0.5, rngs=nnx.Rngs(params=0, dropout=1))
    tokens, carry = jnp.zeros((3, 2), jnp.int32), model.zero_carry(2)
    a, _ = model(tokens, carry)
    b, _ = model(tokens, carry)
    assert not np.allclose(a, b)  # fresh masks
    model.eval()
    c, _ = model(tokens, carry)
    reference = train.TokenModel("lstm", 7, 16, 16, rngs=nnx.Rngs(params=0, dropout=1))
    nnx.update(reference, nnx.state(model, nnx.Param))
    d, _ = reference(tokens, carry)
    np.testing.assert_allclose(c, d, rtol=1e-6)  # evaluation: dropout off, same parameters


def test_token_loss_sum_over_time_scales_the_objective_not_the_metric():
    model = train.TokenModel("gru", 7, 4, 8, rngs=nnx.Rngs(0))
    stream = data.LMStream(data.batchify(np.arange(100, dtype=np.int32) % 7, 4), seq_len=5)
    batch, carry = stream.batch(0), model.zero_carry(4)
    mean, (m1, _) = train.token_loss(model, batch, carry)
    total, (m2, _) = train.token_loss(model, batch, carry, sum_over_time=True)
    assert float(total) == pytest.approx(5 * float(mean), rel=1e-6)
    assert float(m1["loss"]) == float(m2["loss"]) == float(mean)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_readout_is_the_final_state_of_each_direction(cell):
    x = jax.random.normal(jax.random.key(0), (7, 3, 2), jnp.float32)
    uni = train.SequenceRegressor(cell, 2, 4, num_layers=2, rngs=nnx.Rngs(0))
    out, _ = uni.core(x)
    np.testing.assert_allclose(uni(x), uni.head(out[-1]), rtol=1e-6)
    bi = train.SequenceRegressor(
        cell, 2, 4, num_layers=2, out_size=5, bidirectional=True, rngs=nnx.Rngs(0)
    )
    out, _ = bi.core(x)  # [T, B, 2H]: forward half ends at step T, backward half at step 1
    expected = bi.head(jnp.concatenate([out[-1, :, :4], out[0, :, 4:]], axis=-1))
    np.testing.assert_allclose(bi(x), expected, rtol=1e-6)


def test_classification_loss():
    model = train.SequenceRegressor("rnn", 1, 4, out_size=3, rngs=nnx.Rngs(0))
    batch = {
        "inputs": jnp.ones((5, 2, 1), jnp.float32),
        "labels": jnp.array([0, 2], jnp.int32),
    }
    loss, (metrics, carry) = train.classification_loss(model, batch)
    logp = jax.nn.log_softmax(model(batch["inputs"]))
    assert float(loss) == pytest.approx(-float(logp[0, 0] + logp[1, 2]) / 2, rel=1e-6)
    assert carry is None and 0.0 <= float(metrics["accuracy"]) <= 1.0
