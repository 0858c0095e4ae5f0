"""Checkpoints others can read: named items, plain orbax, URLs, async saves, integrity."""

import json
import logging
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore
from flax import nnx
from test_checkpoint import assert_same

from lstm_jax import data, train

TASK = data.SyntheticTask("adding", batch_size=4, length=5)


def fitted(run_dir, steps=2):
    model = train.SequenceRegressor("rnn", 2, 8, rngs=nnx.Rngs(0))
    return train.fit(
        model,
        train.regression_loss,
        train.make_optimizer("adam", 1e-2),
        TASK.batch,
        steps=steps,
        run_dir=run_dir,
        log_every=2,
        checkpoint_every=2,
        progress=False,
    )


def read_params_with_plain_orbax(checkpoint_dir):
    """What a user without lstm_jax's internals does: orbax, nnx, jax and the model class."""
    import orbax.checkpoint as ocp

    model = train.SequenceRegressor("rnn", 2, 8, rngs=nnx.Rngs(123))  # other weights
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
        nnx.to_pure_dict(nnx.state(model, nnx.Param)),
    )
    with ocp.CheckpointManager(checkpoint_dir) as manager:
        step = manager.latest_step()
        restored = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract))
        )
    nnx.update(model, restored["params"])
    return step, model


def test_a_new_model_restores_the_params_item_with_plain_orbax(tmp_path):
    result = fitted(tmp_path)
    trained = nnx.merge(result.graphdef, result.state.params, result.state.rest)
    step, model = read_params_with_plain_orbax(tmp_path / "checkpoints")
    assert step == 2
    x = TASK.batch(99)["inputs"]
    trained.eval()
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(trained(x)))
    assert not np.array_equal(  # not equal by chance: a fresh model differs
        np.asarray(train.SequenceRegressor("rnn", 2, 8, rngs=nnx.Rngs(123))(x)),
        np.asarray(trained(x)),
    )


def token_state(seed=0):
    model = train.TokenModel(
        "lstm", vocab_size=5, embed_size=3, hidden_size=4, dropout=0.1, rngs=nnx.Rngs(seed)
    )
    _, state = train.create_train_state(model, train.make_optimizer(), carry=model.zero_carry(2))
    carry = jax.tree.map(lambda c: c + 0.5, state.carry)
    return state.replace(step=jnp.array(9, jnp.int32), carry=carry)


def find_parent(tree, key):
    """The first dict in ``tree`` (depth first) that has ``key``."""
    if not isinstance(tree, dict):
        return None
    if key in tree:
        return tree
    found = (find_parent(v, key) for v in tree.values())
    return next((f for f in found if f is not None), None)


def test_step_directory_holds_named_items_readable_without_a_target(tmp_path):
    import orbax.checkpoint as ocp

    state = token_state()
    ckpt = train.Checkpointer(tmp_path)
    ckpt.save(state, step=9)
    ckpt.close()
    step_dir = tmp_path / "9"
    items = {p.name for p in step_dir.iterdir() if p.is_dir()}
    assert items == {"step", "params", "opt_state", "rng", "carry"}
    assert (step_dir / "integrity.json").exists()

    with ocp.CheckpointManager(tmp_path) as manager:
        got = manager.restore(
            9,
            args=ocp.args.Composite(
                **{k: ocp.args.StandardRestore() for k in ("params", "opt_state", "rng", "carry")},
                step=ocp.args.JsonRestore(),
            ),
        )
    assert got["step"] == {"step": 9}
    params = nnx.to_pure_dict(state.params)
    assert jax.tree.structure(got["params"]) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, got["params"], params)
    # Adam's moments under the optax state's own names (chain indices, field names).
    adam = find_parent(got["opt_state"], "mu")
    assert set(adam) == {"count", "mu", "nu"}
    assert jax.tree.structure(adam["mu"]) == jax.tree.structure(params)
    jax.tree.map(
        lambda m, p: np.testing.assert_array_equal(m, np.zeros_like(p)), adam["mu"], params
    )
    assert int(adam["count"]) == 0
    # RNG keys as raw key data, counters as they are.
    rngs = state.rest["core"]["rngs"]
    np.testing.assert_array_equal(
        got["rng"]["core"]["rngs"]["key"], jax.random.key_data(rngs["key"][...])
    )
    assert got["rng"]["core"]["rngs"]["key"].dtype == np.uint32
    np.testing.assert_array_equal(got["carry"]["h"], state.carry.h)
    np.testing.assert_array_equal(got["carry"]["c"], state.carry.c)


def test_a_bare_array_carry_and_a_plain_pytree_round_trip(tmp_path):
    def gru_state(seed, carry):
        model = train.TokenModel("gru", 5, 3, 4, dropout=0.0, rngs=nnx.Rngs(seed))
        return train.create_train_state(model, train.make_optimizer("sgd"), carry=carry)[1]

    state = gru_state(0, jnp.arange(3.0, dtype=jnp.float32))
    ckpt = train.Checkpointer(tmp_path / "a")
    ckpt.save(state, step=1)
    assert (tmp_path / "a" / "1" / "carry").is_dir()
    _, restored = ckpt.restore_latest(gru_state(1, jnp.zeros(3, jnp.float32)))
    assert_same(restored, state)
    tree = {"w": jnp.arange(4.0, dtype=jnp.float32), "k": jax.random.key(3), "n": [jnp.int32(2)]}
    plain = train.Checkpointer(tmp_path / "b")
    plain.save(tree, step=5)
    assert {p.name for p in (tmp_path / "b" / "5").iterdir() if p.is_dir()} == {"state"}
    step, got = plain.restore_latest(jax.tree.map(jnp.zeros_like, tree))
    assert step == 5
    assert_same(got, tree)


def test_urls_stay_urls(monkeypatch):
    import orbax.checkpoint as ocp

    seen = []
    monkeypatch.setattr(ocp, "CheckpointManager", lambda d, **_: seen.append(d))
    ckpt = train.Checkpointer("gs://bucket/run/checkpoints")
    assert str(ckpt.directory) == "gs://bucket/run/checkpoints"
    assert str(seen[0]) == "gs://bucket/run/checkpoints"
    assert str(ckpt.directory / "12") == "gs://bucket/run/checkpoints/12"


def test_async_save_round_trips_and_writes_integrity_when_complete(tmp_path):
    ckpt = train.Checkpointer(tmp_path, async_save=True, max_to_keep=5)
    states = {s: token_state(seed=s) for s in (1, 2)}
    ckpt.save(states[1], step=1)
    ckpt.save(states[2], step=2)  # waits for step 1 and writes its record first
    assert (tmp_path / "1" / "integrity.json").exists()
    ckpt.wait()
    assert (tmp_path / "2" / "integrity.json").exists()
    step, restored = train.Checkpointer(tmp_path).restore_latest(token_state(seed=7))
    assert step == 2
    assert_same(restored, states[2])
    ckpt.save(states[1], step=3)
    ckpt.close()  # waits too
    assert json.loads((tmp_path / "3" / "integrity.json").read_text())["step"] == 3


def fail_array_writes(monkeypatch):
    real_open = tensorstore.open

    def open_(spec, *args, create=False, **kwargs):
        if create:
            raise ValueError("PERMISSION_DENIED: cannot write")
        return real_open(spec, *args, create=create, **kwargs)

    monkeypatch.setattr(tensorstore, "open", open_)


@pytest.mark.parametrize("surfaces_at", ["wait", "save", "close"])
def test_a_failed_async_save_surfaces(tmp_path, monkeypatch, caplog, surfaces_at):
    ckpt = train.Checkpointer(tmp_path, async_save=True)
    good = token_state(seed=1)
    ckpt.save(good, step=1)
    ckpt.wait()
    fail_array_writes(monkeypatch)
    with caplog.at_level(logging.CRITICAL, logger="absl"):
        ckpt.save(token_state(seed=2), step=2)  # returns: the write fails in the background
        with pytest.raises(train.CheckpointError, match="could not write checkpoint step 2"):
            if surfaces_at == "wait":
                ckpt.wait()
            elif surfaces_at == "save":
                ckpt.save(good, step=3)
            else:
                ckpt.close()
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["1"]
    step, restored = train.Checkpointer(tmp_path).restore_latest(token_state())
    assert step == 1
    assert_same(restored, good)


def damage(path, how):
    if how == "missing":
        os.remove(path)
    elif how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:
        with open(path, "r+b") as f:
            byte = f.read(1)
            f.seek(0)
            f.write(bytes([byte[0] ^ 0x01]))


def data_files(step_dir, item):
    return sorted(
        (os.path.join(r, f) for r, _, fs in os.walk(step_dir / item) for f in fs),
        key=os.path.getsize,
    )


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped"])
def test_only_the_step_restored_is_verified(tmp_path, caplog, how):
    ckpt = train.Checkpointer(tmp_path, max_to_keep=5)
    states = {s: token_state(seed=s) for s in (1, 2, 3)}
    for s, state in states.items():
        ckpt.save(state, step=s)
    damage(data_files(tmp_path / "1", "params")[-1], how)  # an older step: never read
    damage(data_files(tmp_path / "3", "opt_state")[-1], how)  # the newest: skipped
    with caplog.at_level(logging.WARNING):
        step, restored = train.Checkpointer(tmp_path).restore_latest(token_state())
    assert step == 2
    assert_same(restored, states[2])
    assert "checkpoint 3 is corrupt" in caplog.text
    assert "checkpoint 1" not in caplog.text


def test_without_integrity_nothing_is_recorded_or_checked(tmp_path):
    ckpt = train.Checkpointer(tmp_path, integrity=False)
    ckpt.save(token_state(), step=4)
    assert not (tmp_path / "4" / "integrity.json").exists()
    step, restored = ckpt.restore_latest(token_state(seed=3))
    assert step == 4
    assert_same(restored, token_state())


def test_sharded_carry_is_restored_in_place(tmp_path):
    mesh = train.make_mesh()
    state = train.place_state(token_state(), mesh)
    ckpt = train.Checkpointer(tmp_path)
    ckpt.save(state, step=1)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    _, restored = ckpt.restore_latest(token_state(seed=2), shardings)
    assert_same(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert got.sharding == want.sharding


def test_async_save_returns_before_the_write_completes(tmp_path, monkeypatch):
    """The write runs after ``save`` returns: slowed down here, it is still going on."""
    real_open = tensorstore.open

    slowed = []

    def slow_open(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread() and not slowed:
            slowed.append(True)  # once: a write in the background takes its time
            time.sleep(0.5)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(tensorstore, "open", slow_open)
    ckpt = train.Checkpointer(tmp_path, async_save=True)
    ckpt.save(token_state(), step=1)
    assert not (tmp_path / "1").exists()  # still the temporary directory
    ckpt.close()
    assert slowed and (tmp_path / "1" / "integrity.json").exists()


def test_the_old_flat_layout_is_reported_and_not_read(tmp_path, caplog):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(1, args=ocp.args.StandardSave({"leaf_00000": jnp.zeros(2, jnp.float32)}))
    assert (tmp_path / "1" / "default").is_dir()
    with caplog.at_level(logging.WARNING):
        assert train.Checkpointer(tmp_path).restore_latest(token_state()) is None
    assert "flat leaf_ layout" in caplog.text
