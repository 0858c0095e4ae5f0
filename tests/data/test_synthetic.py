"""Synthetic tasks: structure, determinism in (seed, step), and the published baselines."""

import math

import numpy as np
import pytest

from lstm_jax import data


@pytest.mark.parametrize("length", [2, 7, 100])
def test_adding_problem_structure(length):
    b = data.adding_problem(data.step_rng(0, 3), batch_size=64, length=length)
    x, y = b["inputs"], b["targets"]
    assert x.shape == (length, 64, 2) and y.shape == (64,)
    assert x.dtype == np.float32 and y.dtype == np.float32
    markers = x[:, :, 1]
    assert np.all(markers.sum(0) == 2.0)
    half = length // 2
    assert np.all(markers[:half].sum(0) == 1.0) and np.all(markers[half:].sum(0) == 1.0)
    np.testing.assert_allclose(y, (x[:, :, 0] * markers).sum(0), rtol=1e-6)
    assert x[:, :, 0].min() >= 0.0 and x[:, :, 0].max() < 1.0


def test_adding_baseline_is_mse_of_predicting_the_mean():
    b = data.adding_problem(data.step_rng(1, 0), batch_size=200_000, length=4)
    mse = float(np.mean((b["targets"].astype(np.float64) - 1.0) ** 2))
    assert data.ADDING_BASELINE_MSE == pytest.approx(1 / 6)
    assert mse == pytest.approx(data.ADDING_BASELINE_MSE, abs=3e-3)


def test_copy_task_structure_and_baseline():
    length = 30
    b = data.copy_task(data.step_rng(0, 0), batch_size=16, length=length)
    x, y = b["inputs"], b["targets"]
    assert x.shape == y.shape == (length + 20, 16) and x.dtype == np.int32
    assert np.all(x[:10] < 8) and np.all(x[10:] >= 8)
    assert np.all(x[length + 9] == 9) and np.sum(x == 9) == 16
    assert np.all(y[:-10] == 8) and np.array_equal(y[-10:], x[:10])
    # The memoryless strategy: blank with certainty, then uniform over the 8 data symbols.
    probs = np.zeros((length + 20, 16, 10))
    probs[:-10, :, 8] = 1.0
    probs[-10:, :, :8] = 1 / 8
    picked = np.take_along_axis(probs, y[..., None], axis=-1)[..., 0]
    ce = float(np.mean(-np.log(picked)))
    assert ce == pytest.approx(data.copy_task_baseline(length))
    assert data.copy_task_baseline(length) == pytest.approx(10 * math.log(8) / (length + 20))


@pytest.mark.parametrize("name", ["adding", "copy"])
def test_batches_are_a_pure_function_of_seed_and_step(name):
    task = data.SyntheticTask(name, batch_size=4, length=12, seed=5)
    later_first = task.batch(9)
    for step in range(9):
        task.batch(step)
    again = task.batch(9)
    for k in later_first:
        np.testing.assert_array_equal(later_first[k], again[k])
    assert not np.array_equal(task.batch(3)["inputs"], task.batch(4)["inputs"])
    other_seed = data.SyntheticTask(name, batch_size=4, length=12, seed=6)
    assert not np.array_equal(task.batch(3)["inputs"], other_seed.batch(3)["inputs"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="task name"):
        data.SyntheticTask("parity", 4, 10)
    with pytest.raises(ValueError, match="length"):
        data.adding_problem(data.step_rng(0, 0), 4, 1)
    with pytest.raises(ValueError, match="step"):
        data.step_rng(0, -1)


def test_lookahead_labels_depend_on_later_inputs_only():
    from lstm_jax._src.data import synthetic

    length, k = 30, 4
    b = synthetic.lookahead_task(data.step_rng(0, 0), batch_size=8, length=length, k=k)
    x, y = b["inputs"], b["targets"]
    assert x.shape == y.shape == (length, 8) and x.dtype == y.dtype == np.int32
    assert np.all(x < 8) and np.all(y[-k:] == 8) and np.array_equal(y[:-k], x[k:])
    # changing the input at step s changes exactly the target at step s - k (none if s < k)
    for s in (0, k - 1, k, 17, length - 1):
        changed = x.copy()
        changed[s] = (changed[s] + 1) % 8
        y2 = changed[k:]
        differs = np.nonzero((y2 != y[:-k]).any(axis=1))[0].tolist()
        assert differs == ([s - k] if s >= k else [])
    # the best causal model: uniform before the end marker, certain after
    task = data.SyntheticTask("lookahead", 4, length, k=k)
    assert task.baseline == pytest.approx((length - k) * math.log(8) / length)
    assert task.batch(3)["targets"].shape == (length, 4)
    with pytest.raises(ValueError, match="length must be > k"):
        synthetic.lookahead_task(data.step_rng(0, 0), 2, 4, k=4)
