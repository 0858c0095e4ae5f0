"""Evaluation protocols (one stream, streams) against hand computations, and PTB resume."""

import math
import os
import types

import numpy as np
import pytest
from flax import nnx

from experiments import protocols
from experiments import run as run_module
from experiments.configs import ptb
from lstm_jax import data, train


def tiny_model():
    model = train.TokenModel("lstm", 5, 3, 4, 2, rngs=nnx.Rngs(0))
    graphdef, state = train.create_train_state(model, train.make_optimizer("sgd", 1.0))
    model.eval()
    return model, nnx.graphdef(model), state


def nll_reference(model, columns):
    """Mean next-token NLL of each column ``[n]`` run whole from a zero state, in float64."""
    losses = []
    for ids in columns:
        logits, _ = model(np.asarray(ids[:-1])[:, None], model.zero_carry(1))
        z = np.asarray(logits[:, 0], np.float64)
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        losses.extend(-logp[np.arange(len(ids) - 1), ids[1:]])
    return float(np.mean(losses)), len(losses)


@pytest.mark.parametrize("seq_len", [1, 3, 10])
def test_one_stream_equals_the_whole_sequence_at_once(seq_len):
    model, graphdef, state = tiny_model()
    ids = np.random.default_rng(0).integers(0, 5, 11).astype(np.int32)  # 10 predictions
    expected, n = nll_reference(model, [ids])
    got = protocols.evaluate_one_stream(
        graphdef, train.token_loss, state, ids, seq_len, model.zero_carry(1)
    )
    assert got["tokens"] == n == 10
    np.testing.assert_allclose(got["loss"], expected, rtol=1e-6)
    cut = protocols.evaluate_one_stream(
        graphdef, train.token_loss, state, ids, 3, model.zero_carry(1), max_windows=2
    )
    np.testing.assert_allclose(cut["loss"], nll_reference(model, [ids[:7]])[0], rtol=1e-6)


def test_both_protocols_on_the_test_split_against_hand_computations():
    model, graphdef, state = tiny_model()
    ids = np.random.default_rng(1).integers(0, 5, 23).astype(np.int32)
    config = types.SimpleNamespace(batch_size=2, seq_len=3, eval_batches=0)
    stream = data.LMStream(data.batchify(ids, 2), 3)  # [11, 2]: 3 windows, 9 targets a column
    task = types.SimpleNamespace(
        config=config,
        loss_fn=train.token_loss,
        corpus=types.SimpleNamespace(test=ids),
        test_batches=lambda: (stream.batch(i) for i in range(stream.num_batches)),
        eval_protocol="one_stream",
    )
    out = protocols.evaluate_test(task, graphdef, state, model)
    streams, _ = nll_reference(model, [ids[:10], ids[11:21]])  # each column's first 10
    one, n = nll_reference(model, [ids])
    np.testing.assert_allclose(out["test/loss_streams"], streams, rtol=1e-6)
    np.testing.assert_allclose(out["test/loss_one_stream"], one, rtol=1e-6)
    assert out["test/tokens_one_stream"] == n == 22
    assert out["test/perplexity_one_stream"] == pytest.approx(math.exp(one), rel=1e-6)
    assert out["test/loss"] == out["test/loss_one_stream"]
    task.eval_protocol = "streams"
    out = protocols.evaluate_test(task, graphdef, state, model)
    assert out["test/loss"] == out["test/loss_streams"]


def test_protocol_is_checked():
    config = ptb.get_config("smoke")
    assert protocols.check_protocol(config) == "one_stream"
    config.eval_protocol = "batch1"
    with pytest.raises(ValueError, match="eval_protocol.*batch1"):
        protocols.check_protocol(config)


def tiny_ptb(directory):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)]
    for split, n in (("train", 40), ("valid", 6), ("test", 6)):
        lines = [" ".join(rng.choice(words, 9)) for _ in range(n)]
        with open(os.path.join(directory, f"ptb.{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


@pytest.mark.slow  # three short runs, each compiling its steps
def test_ptb_killed_mid_epoch_and_resumed_is_bit_identical(tmp_path, monkeypatch):
    """The medium/large recipe (epochs, decay per epoch, carried state, dropout) at toy
    size: killed mid-epoch, resumed, it ends with the parameters of an unbroken run."""
    os.makedirs(tmp_path / "ptb")
    tiny_ptb(tmp_path / "ptb")
    c = ptb.get_config("medium")  # large: the same recipe, other numbers
    c.seed = 0
    c.progress = False
    c.batch_size, c.seq_len, c.epochs = 2, 5, 2  # 39 steps an epoch (400 tokens)
    c.model.hidden_size = c.model.embed_size = 8
    c.model.num_layers = 1  # compiles faster; the recipe is the same
    c.optimizer.decay_after_epochs = 1  # the second epoch at a decayed rate
    c.eval_batches, c.eval_every, c.eval_test = 1, 0, False  # the test pass: tests above
    monkeypatch.setattr(data, "fetch", lambda name, d, download=False: None)
    task = run_module.Task(c, str(tmp_path))
    assert task.steps_per_epoch == 39
    full = run_module.train_cell(task, "lstm", str(tmp_path / "full"), resume=False)

    calls = []

    def stop_at_step_50():
        calls.append(None)
        if len(calls) > 50:  # before step 51: 50 steps done, in the second epoch
            raise SystemExit(143)

    monkeypatch.setattr(run_module, "_exit_if_stopped", stop_at_step_50)
    with pytest.raises(SystemExit):
        run_module.train_cell(task, "lstm", str(tmp_path / "killed"), resume=False)
    monkeypatch.undo()
    monkeypatch.setattr(data, "fetch", lambda name, d, download=False: None)
    resumed = run_module.train_cell(task, "lstm", str(tmp_path / "killed"), resume=True)
    assert resumed["resumed_from_step"] == 50 and resumed["steps"] == full["steps"] == 78
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["final"]["eval/loss"] == full["final"]["eval/loss"]
