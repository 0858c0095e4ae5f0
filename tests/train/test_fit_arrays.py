"""Training on a user's own arrays: epochs, validation, early stopping, the best step,
history, predict, the module trained in place, and resume bit for bit with shuffling."""

import numpy as np
import pytest
from flax import nnx

from lstm_jax import data, train

RNG = np.random.default_rng(0)
X = RNG.standard_normal((10, 6, 2)).astype(np.float32)
Y = X[:, :, 0].sum(axis=1, keepdims=True)  # [N, 1]: a target one row each, Keras's layout


def model():
    return train.SequenceRegressor("gru", 2, 4, rngs=nnx.Rngs(0))


def fit(run_dir=None, *, batches=None, **kwargs):
    m = model()
    batches = batches or data.ArrayBatches(X, Y, batch_size=4, seed=3)
    kwargs = {"log_every": 1, "checkpoint_every": 100, "progress": False, **kwargs}
    if "steps" not in kwargs:
        kwargs.setdefault("epochs", 3)
    result = train.fit(
        m,
        train.regression_loss,
        train.make_optimizer("adam", 1e-2),
        batches,
        run_dir=run_dir,
        **kwargs,
    )
    return m, result


class Stop(Exception):
    pass


def test_resume_mid_epoch_is_bit_identical_with_shuffling(tmp_path):
    """Batches are a pure function of the step (tests/data/test_arrays.py checks every
    step in any order), so one stop inside an epoch stands for any."""
    _, full = fit(tmp_path / "full")
    assert full.summary["steps"] == 9  # 3 epochs of ceil(10 / 4) batches
    steps = iter(range(100))

    def stop_at_4():
        if next(steps) == 4:
            raise SystemExit  # saved at step 4 (epoch 2, batch 2), as under SIGTERM

    with pytest.raises(SystemExit):
        fit(tmp_path / "stopped", stop_check=stop_at_4)
    _, resumed = fit(tmp_path / "stopped", resume=True)
    assert resumed.summary["resumed_from_step"] == 4
    assert resumed.summary["params_sha256"] == full.summary["params_sha256"]
    assert resumed.history["train/step"] == list(range(1, 10))  # across the resume


def test_fit_trains_the_module_given_validates_every_epoch_and_keeps_a_history():
    val = data.ArrayBatches(X[:7], Y[:7], batch_size=4, shuffle=False)  # a last batch of 3
    m, result = fit(None, eval_batches=val, eval_every="epoch")  # no run_dir: a quick run
    trained = nnx.merge(result.graphdef, result.state.params, result.state.rest)
    np.testing.assert_array_equal(m(X.swapaxes(0, 1)), trained(X.swapaxes(0, 1)))
    assert not np.allclose(m(X.swapaxes(0, 1)), model()(X.swapaxes(0, 1)))
    assert result.history["eval/step"] == [3, 6, 9]
    assert len(result.history["train/loss"]) == 9 == len(result.history["train/step"])
    mse = np.mean((train.predict(m, X[:7]) - Y[:7]) ** 2)  # over examples, not batches
    np.testing.assert_allclose(result.history["eval/loss"][-1], mse, rtol=1e-5)


def test_early_stopping_ends_at_patience_and_restore_best_ends_on_the_best_step(tmp_path):
    # mode="max" on a loss that falls: the first evaluation is the best, so the stop
    # (one evaluation later) and the step restored (3) are known in advance.
    val = data.ArrayBatches(X, Y, batch_size=5, shuffle=False)
    stop = train.EarlyStopping("eval/loss", patience=1, mode="max")
    m, result = fit(
        tmp_path,
        epochs=5,
        eval_batches=val,
        eval_every="epoch",
        early_stopping=stop,
        restore_best=True,
    )
    losses = result.history["eval/loss"]
    assert result.summary["stopped_at_step"] == 6 and losses[0] > losses[1]
    assert result.summary["monitored"] == {
        "metric": "eval/loss",
        "best_step": 3,
        "best_value": losses[0],
        "restored_best": True,
    }
    mse = np.mean((train.predict(m, X) - Y) ** 2)
    np.testing.assert_allclose(mse, losses[0], rtol=1e-5)  # the module holds step 3's
    assert int(result.state.step) == 3


def test_predict_returns_each_sequence_in_order_without_padding():
    m = train.SequenceRegressor("lstm", 2, 5, out_size=3, pooling="mean", rngs=nnx.Rngs(1))
    seqs = [RNG.standard_normal((n, 2)).astype(np.float32) for n in (5, 2, 9, 3, 7)]
    alone = np.stack([np.asarray(m(s[:, None, :]))[0] for s in seqs])
    for buckets in (None, 2):
        out = train.predict(m, seqs, batch_size=2, buckets=buckets)
        np.testing.assert_allclose(out, alone, rtol=1e-5, atol=1e-6)
    per_step = train.predict(m.core, seqs, batch_size=2, per_step=True)  # (out, state) -> out
    assert [p.shape for p in per_step] == [(len(s), 5) for s in seqs]


def test_mistakes_are_named_in_python_terms(tmp_path):
    batch = {"inputs": X.swapaxes(0, 1), "targets": Y}
    with pytest.raises(TypeError, match="function of the step.*ArrayBatches"):
        train.fit(model(), train.regression_loss, train.make_optimizer(), batch, steps=1)
    with pytest.raises(ValueError, match="either steps or epochs"):
        fit(steps=2, epochs=1)
    with pytest.raises(ValueError, match="epochs needs batches that know their epoch"):
        train.fit(model(), train.regression_loss, train.make_optimizer(), lambda s: batch, epochs=1)
    keras_layout = {"inputs": X, "targets": Y}  # [B, T, F] read as [T, B, F]
    with pytest.raises(ValueError, match=r"\(10, 1\).*time-major.*batch_first=True"):
        train.regression_loss(model(), keras_layout)
    logits_model = train.SequenceRegressor("gru", 2, 4, out_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"integer class labels \[batch\]"):
        train.classification_loss(logits_model, {"inputs": X.swapaxes(0, 1), "targets": Y})
