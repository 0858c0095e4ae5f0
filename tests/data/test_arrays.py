"""Batches of a user's examples: a pure function of the step, shuffled per epoch, padded by
bucket with their lengths, from arrays, lists and Grain sources; errors name the example."""

import numpy as np
import pytest

from lstm_jax import data

RNG = np.random.default_rng(0)
SEQS = [RNG.standard_normal((n, 3)).astype(np.float32) for n in RNG.integers(1, 30, 23)]
LABELS = np.arange(23) % 4


def test_batches_are_a_pure_function_of_the_step_in_any_order():
    make = lambda: data.ArrayBatches(SEQS, LABELS, batch_size=5, seed=7, buckets=3)  # noqa: E731
    steps = list(range(3 * make().steps_per_epoch))
    forward, backward = make(), make()
    ahead = {s: forward(s) for s in steps}
    for s in reversed(steps):
        b = backward(s)
        for key in ("inputs", "targets", "seq_lengths"):
            np.testing.assert_array_equal(b[key], ahead[s][key])


def test_each_epoch_is_a_new_permutation_of_every_example():
    batches = data.ArrayBatches(np.arange(10)[:, None, None], np.arange(10), batch_size=4, seed=1)
    per_epoch = batches.steps_per_epoch
    epochs = [
        np.concatenate([batches(e * per_epoch + i)["targets"] for i in range(per_epoch)])
        for e in range(2)
    ]
    assert [sorted(e.tolist()) for e in epochs] == [list(range(10))] * 2
    assert epochs[0].tolist() != epochs[1].tolist()
    assert [len(batches(i)["targets"]) for i in range(per_epoch)] == [4, 4, 2]
    dropped = data.ArrayBatches(np.zeros((10, 2, 1)), batch_size=4, drop_last=True)
    assert dropped.steps_per_epoch == 2


def test_sequences_are_padded_with_zeros_and_their_lengths_by_bucket():
    plain = data.ArrayBatches(SEQS, LABELS, batch_size=5, shuffle=False)
    bucketed = data.ArrayBatches(SEQS, LABELS, batch_size=5, buckets=3, seed=0)
    longest = max(len(s) for s in SEQS)
    assert {plain(i)["inputs"].shape[0] for i in range(plain.steps_per_epoch)} == {longest}
    padded = sum(
        bucketed(i)["inputs"].shape[0] * len(bucketed(i)["targets"])
        for i in range(bucketed.steps_per_epoch)
    )
    assert padded < longest * len(SEQS)  # buckets waste less padding
    for i in range(bucketed.steps_per_epoch):
        b = bucketed(i)
        for row, length in enumerate(b["seq_lengths"]):
            index = next(
                j
                for j, s in enumerate(SEQS)
                if len(s) == length and np.array_equal(s, b["inputs"][:length, row])
            )
            assert LABELS[index] == b["targets"][row]
            assert not b["inputs"][length:, row].any()


def test_per_step_targets_follow_the_inputs_and_a_grain_source_equals_the_list():
    grain = pytest.importorskip("grain")
    tags = [np.arange(len(s)) for s in SEQS]
    listed = data.ArrayBatches(SEQS, tags, batch_size=4, seed=2, buckets=2)
    b = listed(0)
    assert b["targets"].shape == b["inputs"].shape[:2]  # time-major like the inputs
    assert b.batch_axes == {"inputs": 1, "seq_lengths": 0, "targets": 1}
    source = grain.MapDataset.source(list(zip(SEQS, tags, strict=True)))
    from_grain = data.ArrayBatches(source, batch_size=4, seed=2, buckets=2)
    for step in range(listed.steps_per_epoch):
        for key in ("inputs", "targets", "seq_lengths"):
            np.testing.assert_array_equal(from_grain(step)[key], listed(step)[key])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((np.zeros((5, 3, 1)), np.zeros(4)), {}, "inputs has 5 examples and targets 4"),
        ((np.zeros((0, 3, 1)),), {}, "empty"),
        ((np.zeros((5, 3, 1)),), {"batch_size": 6}, "batch_size 6 is larger than the dataset"),
        (([np.zeros((2, 1)), np.zeros((0, 1))],), {}, r"inputs\[1\] has length 0"),
        ((np.array([[[0.0]], [[1.0]], [[np.nan]]]),), {}, r"inputs\[2\] holds NaN"),
        (([np.zeros((2, 1)), np.full((3, 1), np.inf)],), {}, r"inputs\[1\] holds NaN or inf"),
        ((np.zeros((3, 2, 1)), [0.0, np.nan, 1.0]), {}, r"targets\[1\] holds NaN"),
        (([np.zeros((2, 1)), np.zeros((2, 2))],), {}, r"inputs\[1\] has shape \(2, 2\)"),
    ],
)
def test_bad_data_is_named_with_the_first_bad_example(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.ArrayBatches(*args, **{"batch_size": 2, **kwargs})


def test_windows_splits_and_a_scaler_fitted_on_the_training_part():
    series = np.stack([np.arange(50.0), np.arange(50.0) ** 2], axis=1)
    x, y = data.sliding_windows(series, input_length=8, horizon=3, stride=5)
    starts = range(0, 50 - 11 + 1, 5)
    np.testing.assert_array_equal(x, np.stack([series[s : s + 8] for s in starts]))
    np.testing.assert_array_equal(y, np.stack([series[s + 8 : s + 11] for s in starts]))
    train, val, test = data.split_by_time(series, (0.6, 0.2, 0.2))
    assert (len(train), len(val), len(test)) == (30, 10, 10) and val[0, 0] == 30
    scaler = data.Standardizer.fit(train)
    np.testing.assert_allclose(scaler.transform(train).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(scaler.transform(train).std(0), 1)
    assert scaler.transform(test).mean(0)[0] > 1  # the future is not used to fit it
    np.testing.assert_allclose(scaler.inverse(scaler.transform(test)), test)
    with pytest.raises(ValueError, match="fewer than one window"):
        data.sliding_windows(np.arange(5.0), input_length=4, horizon=2)
    with pytest.raises(ValueError, match=r"series\[3\] holds NaN"):
        data.sliding_windows(np.array([1.0, 2, 3, np.nan, 5]), 2)
