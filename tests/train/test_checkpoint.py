"""Checkpoints: exact round trip, corrupt and half-written ones skipped, a full disk."""

import errno
import gc
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore
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


# What tensorstore raises when a write hits a full disk (its text holds strerror), and
# what a plain Python write raises.
TENSORSTORE_FULL = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "leaf_00000/0" in OCDBT database at local file '
    '"/ckpt/20.orbax-checkpoint-tmp/": Failed to write 4096 bytes to file 14: '
    "No space left on device [os_error_code='28']"
)
OS_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
ORBAX_LOGS_WRITE_ERRORS = tuple(
    int(x) for x in importlib.metadata.version("orbax-checkpoint").split(".")[:2]
) >= (0, 12)


def fail_array_writes(monkeypatch, error):
    """Makes every array write of orbax fail with ``error``, inside orbax's writer threads."""
    real_open = tensorstore.open

    def open_(spec, *args, create=False, **kwargs):
        if create:  # orbax creates each array's store before writing it
            raise error
        return real_open(spec, *args, create=create, **kwargs)

    monkeypatch.setattr(tensorstore, "open", open_)


def save_fails_cleanly(ckpt, state, step, capfd, caplog, monkeypatch):
    """Saves ``state`` expecting a full disk: returns the error, after checking that nothing
    of the step is left and nothing was printed, logged or reported as unraisable."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    capfd.readouterr()
    with caplog.at_level(logging.WARNING), pytest.raises(train.CheckpointError) as info:
        ckpt.save(state, step=step)
    gc.collect()  # anything left for the garbage collector to report would be reported now
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not unraisable
    assert not [n for n in os.listdir(ckpt.directory) if n.startswith(str(step))]
    return info.value


@pytest.mark.parametrize("error", [TENSORSTORE_FULL, OS_FULL], ids=["tensorstore", "oserror"])
def test_full_disk_raises_checkpoint_error_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, capfd, caplog, error
):
    ckpt = train.Checkpointer(tmp_path)
    good = make_state(seed=7)
    ckpt.save(good, step=10)
    fail_array_writes(monkeypatch, error)
    e = save_fails_cleanly(ckpt, make_state(seed=8), 20, capfd, caplog, monkeypatch)
    assert str(e) == (
        f"no space left on device writing checkpoint step 20 to {tmp_path}: free space, then "
        "rerun with resume=True (step 10, the newest checkpoint, is intact)"
    )
    assert e.__cause__ is not None  # the original error, for whoever wants the details
    assert sorted(os.listdir(tmp_path)) == ["10"]
    monkeypatch.undo()
    step, restored = train.Checkpointer(tmp_path).restore_latest(make_state())
    assert step == 10
    assert_same(restored, good)
    ckpt.save(good, step=20)  # once there is space again, the same checkpointer goes on
    assert ckpt.latest_step() == 20


def test_full_disk_before_any_checkpoint_says_the_run_starts_over(
    tmp_path, monkeypatch, capfd, caplog
):
    ckpt = train.Checkpointer(tmp_path)
    fail_array_writes(monkeypatch, TENSORSTORE_FULL)
    e = save_fails_cleanly(ckpt, make_state(), 5, capfd, caplog, monkeypatch)
    assert "rerun with resume=True (there is no earlier checkpoint" in str(e)


def test_other_write_errors_are_checkpoint_errors_and_stay_visible(tmp_path, monkeypatch, caplog):
    ckpt = train.Checkpointer(tmp_path)
    ckpt.save(make_state(), step=1)
    fail_array_writes(monkeypatch, ValueError("PERMISSION_DENIED: cannot write"))
    with caplog.at_level(logging.WARNING), pytest.raises(train.CheckpointError) as info:
        ckpt.save(make_state(), step=2)
    assert "could not write checkpoint step 2" in str(info.value)
    assert "PERMISSION_DENIED" in str(info.value) and "step 1" in str(info.value)
    if ORBAX_LOGS_WRITE_ERRORS:  # orbax's own report is passed on (0.11 does not log one)
        assert "PERMISSION_DENIED" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["1"]


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MiB tmpfs at ``tmp_path/fs``; skips where mounting is not permitted."""
    mount = shutil.which("mount")
    path = tmp_path / "fs"
    path.mkdir()
    if mount is None or sys.platform != "linux":
        pytest.skip("needs Linux and mount(8)")
    made = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)  # lazy: even if a file is open


def test_a_really_full_disk(tiny_filesystem, monkeypatch, capfd, caplog):
    ckpt = train.Checkpointer(tiny_filesystem / "ckpt")
    good = make_state(seed=3)
    ckpt.save(good, step=1)
    # 200 arrays of random floats (which do not compress), 1.6 MB in all: many writes in
    # flight when the first one fails.
    big = {f"w{i}": jax.random.normal(jax.random.key(i), (2000,), jnp.float32) for i in range(200)}
    e = save_fails_cleanly(ckpt, big, 2, capfd, caplog, monkeypatch)
    assert str(e).startswith("no space left on device writing checkpoint step 2 to ")
    assert "(step 1, the newest checkpoint, is intact)" in str(e)
    assert os.listdir(ckpt.directory) == ["1"]
    step, restored = ckpt.restore_latest(make_state())
    assert step == 1
    assert_same(restored, good)
    ckpt.close()


def test_a_checkpoint_of_another_model_is_an_error_not_skipped(tmp_path, caplog):
    ckpt = train.Checkpointer(tmp_path, max_to_keep=5)
    for s in (1, 2):
        ckpt.save(make_state(seed=s), step=s)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    bigger = train.TokenModel(
        "lstm", vocab_size=7, embed_size=3, hidden_size=4, dropout=0.0, rngs=nnx.Rngs(0)
    )  # another vocabulary: the embedding and the head have other shapes
    _, other = train.create_train_state(bigger, train.make_optimizer(), bigger.zero_carry(2))
    with pytest.raises(train.CheckpointError, match=r"checkpoint 2 .* another model") as error:
        train.Checkpointer(tmp_path).restore_latest(other)
    assert "[5, 3] float32 in the checkpoint, [7, 3] float32 here" in str(error.value)
    _, sgd = train.create_train_state(  # another optimizer: the optimizer state's names
        train.TokenModel("lstm", 5, 3, 4, dropout=0.0, rngs=nnx.Rngs(0)),
        train.make_optimizer("sgd"),
        carry=make_state().carry,
    )
    with pytest.raises(train.CheckpointError, match=r"opt_state/.*only in the checkpoint"):
        train.Checkpointer(tmp_path).restore_latest(sgd)
    assert {p: p.read_bytes() for p in files} == before  # nothing touched
    # a corrupt newest one is still skipped, down to one that fits or that does not
    corrupt(tmp_path, 2)
    step, _ = train.Checkpointer(tmp_path).restore_latest(make_state())
    assert step == 1 and "checkpoint 2 is corrupt" in caplog.text
    with pytest.raises(train.CheckpointError, match=r"checkpoint 1 .* another model"):
        train.Checkpointer(tmp_path).restore_latest(other)


def test_unreadable_metadata_is_corrupt_and_skipped(tmp_path, caplog):
    ckpt = train.Checkpointer(tmp_path, max_to_keep=5, integrity=False)
    for s in (1, 2):
        ckpt.save(make_state(seed=s), step=s)
    (tmp_path / "2" / "params" / "_METADATA").write_text("{not json")
    step, restored = train.Checkpointer(tmp_path, integrity=False).restore_latest(make_state())
    assert step == 1 and "metadata could not be read" in caplog.text
    assert_same(restored, make_state(seed=1))
