"""Checkpoints: exact round trip, corrupt and half-written ones skipped, a full disk."""

import errno
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from lstm_jax import train


def make_state(seed=0):
    model = train.TokenModel(
        "lstm", vocab_size=5, embed_size=3, hidden_size=4, dropout=0.0, rngs=nnx.Rngs(seed)
    )
    _, state = train.create_train_state(model, train.make_optimizer(), carry=model.zero_carry(2))
    return state


def assert_same(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_including_rng_and_optimizer(tmp_path):
    state = make_state().replace(step=jnp.array(3, jnp.int32))
    ckpt = train.Checkpointer(tmp_path)
    ckpt.save(state, step=3)
    step, restored = ckpt.restore_latest(make_state(seed=1))
    assert step == 3
    assert_same(restored, state)


def corrupt(ckpt_dir, step):
    files = [
        os.path.join(r, f)
        for r, _, fs in os.walk(os.path.join(ckpt_dir, str(step)))
        for f in fs
        if f != "integrity.json" and os.path.getsize(os.path.join(r, f)) > 0
    ]
    target = max(files, key=os.path.getsize)
    with open(target, "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_and_half_written_checkpoints_fall_back(tmp_path, caplog):
    ckpt = train.Checkpointer(tmp_path, max_to_keep=5)
    states = {s: make_state(seed=s) for s in (1, 2, 3)}
    for s, state in states.items():
        ckpt.save(state, step=s)
    corrupt(tmp_path, 3)  # bit rot in the newest
    os.remove(os.path.join(tmp_path, "2", "integrity.json"))  # killed before it was finished
    os.makedirs(os.path.join(tmp_path, "4.orbax-checkpoint-tmp-123"))  # killed mid-write
    resumed = train.Checkpointer(tmp_path)
    step, restored = resumed.restore_latest(make_state())
    assert step == 1
    assert_same(restored, states[1])
    assert "corrupt" in caplog.text and "incomplete" in caplog.text
    resumed.save(states[2], step=2)  # the resumed run overwrites the leftover
    assert resumed.latest_step() == 2


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = train.Checkpointer(tmp_path)
    good = make_state(seed=7)
    ckpt.save(good, step=10)

    def full_disk(self, step, *args, **kwargs):
        os.makedirs(os.path.join(tmp_path, f"{step}.orbax-checkpoint-tmp-1"))  # partial write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(train.CheckpointError, match="no space left on device.*step 10"):
        ckpt.save(make_state(seed=8), step=20)
    assert sorted(os.listdir(tmp_path)) == ["10"]
    monkeypatch.undo()
    step, restored = train.Checkpointer(tmp_path).restore_latest(make_state())
    assert step == 10
    assert_same(restored, good)
