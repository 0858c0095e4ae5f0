"""The experiment configs: their variants, and their smoke runs with the reports."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from experiments import report
from experiments import run as run_module
from experiments.configs import bidirectional, depth, descendants, memory, ptb, ptb_depth, vanishing
from lstm_jax import train


def smoke_run(config, workdir, cells):
    config.progress = False
    task = run_module.Task(config, os.environ.get("LSTM_JAX_DATA"))
    return {
        cell: run_module.train_cell(task, cell, str(workdir / cell), resume=False) for cell in cells
    }


def test_ptb_variants_follow_zaremba():
    expected = {  # Zaremba et al. 2014, section 4.1
        "small": dict(hidden=200, scale=0.1, bptt=20, epochs=13, keep=4, rate=0.5, p=0.0, clip=5),
        "medium": dict(
            hidden=650, scale=0.05, bptt=35, epochs=39, keep=6, rate=1 / 1.2, p=0.5, clip=5
        ),
        "large": dict(
            hidden=1500, scale=0.04, bptt=35, epochs=55, keep=14, rate=1 / 1.15, p=0.65, clip=10
        ),
    }
    for name, e in expected.items():
        c = ptb.get_config(name)
        assert (c.model.hidden_size, c.model.embed_size, c.model.num_layers) == (
            e["hidden"],
            e["hidden"],
            2,
        )
        assert c.model.init_scale == e["scale"] and c.seq_len == e["bptt"]
        assert c.batch_size == 20 and c.epochs == e["epochs"]
        assert c.optimizer.name == "sgd" and c.optimizer.learning_rate == 1.0
        assert c.optimizer.clip_norm == e["clip"] and c.loss_sum_over_time
        assert c.optimizer.decay_after_epochs == e["keep"]
        assert c.optimizer.decay_rate == pytest.approx(e["rate"])
        assert c.model.dropout == c.model.io_dropout == e["p"]
        assert c.eval_test and c.eval_every == -1
    assert ptb.get_config(None).name == "ptb_small"
    with pytest.raises(ValueError, match="variant"):
        ptb.get_config("huge")


def test_depth_and_memory_variants():
    counts = [
        depth.lstm_params(depth.get_config(f"params-{L}").model.hidden_size, int(L)) for L in "123"
    ]
    assert max(counts) / min(counts) < 1.01  # matched parameter counts
    assert [depth.get_config(f"params-{L}").model.hidden_size for L in "123"] == [431, 256, 200]
    assert {depth.get_config(f"width-{L}").model.hidden_size for L in "123"} == {256}
    for L in "123":  # the same dropout at every depth, the best checkpoint tested
        m = depth.get_config(f"width-{L}")
        assert m.model.dropout == m.model.io_dropout == depth.DROPOUT and m.select_best
        assert m.eval_test and m.eval_every == m.checkpoint_every
    with pytest.raises(ValueError, match="params"):
        depth.get_config("2")
    stack = lstm_jax.LSTM(depth.EMBED, 200, num_layers=3, rngs=nnx.Rngs(0))
    assert depth.lstm_params(200, 3) == sum(
        x.size for x in jax.tree.leaves(nnx.state(stack, nnx.Param))
    )
    c = memory.get_config("copy-200-chrono")
    assert (c.task, c.seq_len, c.cells, c.model.lstm_chrono_init) == ("copy", 200, ("lstm",), 200)
    assert c.steps == memory.BUDGET["copy"] and c.seeds == (0, 1, 2)
    assert c.eval_every == memory.EVAL_EVERY  # steps to solve at the same resolution at any T
    orth = memory.get_config("copy-50-orth-lr1e-2")
    assert orth.cells == ("rnn",) and orth.optimizer.learning_rate == 1e-2
    rnn = run_module.Task(run_module.seed_config(orth, 0), None).model("rnn")
    w_hh = np.asarray(rnn.core.weight_hh_l0.value)  # orthogonal: no decay along any direction
    np.testing.assert_allclose(w_hh @ w_hh.T, np.eye(len(w_hh)), atol=1e-5)
    a = memory.get_config("adding-100-lr3e-3")
    assert a.model.lstm_forget_bias == 1.0 and a.optimizer.learning_rate == 3e-3
    assert a.cells == ("rnn", "gru", "lstm") and a.model.match_params == "lstm"
    with pytest.raises(ValueError, match="task"):
        memory.get_config("adding-50-xavier")
    with pytest.raises(ValueError, match="<task>-<T>"):
        memory.get_config("adding")


def test_parameter_matched_rnn_and_flops_by_hand():
    from experiments import analytic

    task = run_module.Task(run_module.seed_config(memory.get_config("adding-100"), 0), None)
    lstm, rnn = task.model("lstm"), task.model("rnn")
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m.core, nnx.Param)))  # noqa: E731
    assert task.hidden_size("rnn") == 258 and task.hidden_size("gru") == 148
    assert abs(count(rnn) - count(lstm)) / count(lstm) < 0.01
    assert count(lstm) == analytic.recurrent_params("lstm", 2, 128)
    # by hand, one LSTM layer, I = 2, H = 3, one step of one sequence: the products
    # W_ih x (4*3 x 2) and W_hh h (4*3 x 3) at 2 FLOPs a multiply-add = 2*12*2 + 2*12*3 = 120,
    # plus 17 elementwise FLOPs per unit = 51; a train step is 3 forwards
    assert analytic.step_flops("lstm", 2, 3, train=False) == 171
    assert analytic.step_flops("lstm", 2, 3, batch_size=4, seq_len=5) == 3 * 171 * 20
    # a GRU layer above a bidirectional one reads 2H: 2*(2*3*4*(8+4) + 13*4) per direction
    two = analytic.step_flops("gru", 1, 4, 2, directions=2, train=False)
    assert two == 2 * (2 * 3 * 4 * 5 + 13 * 4) + 2 * (2 * 3 * 4 * 12 + 13 * 4)


def test_vanishing_smoke_writes_gradient_norms_and_figure(tmp_path):
    config = vanishing.get_config("smoke")
    config.steps, config.checkpoint_every = 5, 5
    smoke_run(config, tmp_path, ("lstm",))  # the RNN's probe: test_gradients.py
    record = json.loads((tmp_path / "lstm" / "gradient_norms.json").read_text())
    assert len(record["init"]["state"]["geomean"]) == config.seq_len
    figure = tmp_path / "vanishing.png"
    table = report.vanishing(str(tmp_path), str(figure))
    assert "| lstm | 1 | init |" in table and "| lstm | 1 | trained |" in table
    assert figure.stat().st_size > 0


def test_vanishing_variants_name_the_initialisation_they_measure():
    orth = vanishing.get_config("orth")
    assert orth.cells == ("rnn",) and orth.model.recurrent_init == "orthogonal"
    assert vanishing.get_config("torch").model.lstm_forget_bias is None
    labels = {
        setting: report._vanishing_label(setting)
        for setting in ("fb1/lstm", "torch/lstm", "orth/rnn", "fb1/rnn", "fb1/gru", "lstm")
    }
    assert labels == {
        "fb1/lstm": "lstm (forget bias 1)",
        "torch/lstm": "lstm (torch init)",
        "orth/rnn": "rnn (orthogonal init)",
        "fb1/rnn": "rnn",
        "fb1/gru": "gru",
        "lstm": "lstm",
    }
    with pytest.raises(ValueError, match="orth"):
        vanishing.get_config("identity")


def test_memory_smoke_and_report(tmp_path):
    config = memory.get_config("smoke")
    config.steps, config.checkpoint_every = 10, 10
    config.select_best, config.eval_every = True, 5
    smoke_run(config, tmp_path / "adding" / "T20" / "fb1", ("lstm",))
    table = report.memory(str(tmp_path), str(tmp_path / "memory.png"))
    assert "| adding | 20 | lstm (fb1) | 0.001 | 1 |" in table
    best = json.loads((tmp_path / "adding/T20/fb1/lstm/summary.json").read_text())["best"]
    assert best["step"] in (5, 10) and {"eval/loss", "test/loss"} <= set(best)
    assert (tmp_path / "adding/T20/fb1/lstm/best" / str(best["step"])).is_dir()
    assert (tmp_path / "memory.png").stat().st_size > 0


@pytest.mark.skipif(not os.environ.get("LSTM_JAX_DATA"), reason="$LSTM_JAX_DATA not set")
def test_ptb_and_depth_smoke_on_real_data(tmp_path):
    (summary,) = smoke_run(ptb.get_config("smoke"), tmp_path / "ptb", ("lstm",)).values()
    final = summary["final"]
    assert summary["steps_per_epoch"] == (929_589 // 4 - 1) // 10
    assert {"eval/perplexity", "test/loss", "test/perplexity"} <= set(final)
    assert final["test/perplexity"] == pytest.approx(2.718281828 ** final["test/loss"])
    assert "| 2 x 16 (?) | 0 |" in report.ptb(str(tmp_path / "ptb" / "lstm"))
    smoke_run(depth.get_config("smoke"), tmp_path / "depth", ("lstm",))
    table = report.depth(str(tmp_path / "depth"), str(tmp_path / "depth.png"))
    assert "| 2 | 16 |" in table
    # the committed copy of a run holds what the reports read, without checkpoints
    copied = report.collect(str(tmp_path / "depth"), str(tmp_path / "results")).split()
    assert {"lstm/summary.json", "lstm/metrics.jsonl", "lstm/config.json"} <= set(copied)
    assert not any("checkpoints" in f or "tensorboard" in f for f in copied)
    assert report.depth(str(tmp_path / "results")) == table


def test_bidirectional_smoke_and_report(tmp_path):
    pytest.importorskip("mnist1d")
    config = bidirectional.get_config("smoke")
    config.steps, config.checkpoint_every = 5, 5
    (summary,) = smoke_run(config, tmp_path / "bi", ("lstm",)).values()
    assert 0.0 <= summary["final"]["eval/accuracy"] <= 1.0
    assert "| BiLSTM | 1 |" in report.classify(str(tmp_path))
    assert bidirectional.get_config("bi").cells == ("lstm", "gru")


def test_lookahead_smoke_bidirectional_beats_nothing_yet_but_runs(tmp_path):
    config = bidirectional.get_config("lookahead-smoke")
    config.steps, config.checkpoint_every = 5, 5
    (summary,) = smoke_run(config, tmp_path / "la", ("lstm",)).values()
    assert summary["task"] == "lookahead" and 0.0 <= summary["final"]["eval/accuracy"] <= 1.0
    assert bidirectional.get_config("lookahead-uni").model.bidirectional is False
    assert bidirectional.get_config().model.bidirectional and bidirectional.get_config().task == (
        "lookahead"
    )


def test_ptb_depth_matches_the_whole_model_and_cuts_the_rate_on_plateaus():
    sizes = {L: ptb_depth.get_config(f"params-{L}").model.hidden_size for L in (1, 2, 3)}
    assert sizes == {1: 226, 2: 200, 3: 183}
    reference = ptb_depth.model_params(200, 2)
    for L, hidden in sizes.items():
        assert abs(ptb_depth.model_params(hidden, L) - reference) / reference < 0.002
    c = ptb_depth.get_config("width-3-d0.2-lr0.5")
    assert c.model.hidden_size == 200 and c.model.dropout == c.model.io_dropout == 0.2
    assert c.optimizer.learning_rate == 0.5 and c.optimizer.decay_rate == 1.0
    assert run_module.plateau(c.optimizer) == train.ReduceOnPlateau(
        "eval/loss", patience=1, factor=0.25, max_reductions=3
    )
    assert c.select_best and c.name == "ptb_depth/width/L3/d0.2/lr0.5"
    run_module.validate_config(c)
    with pytest.raises(ValueError, match="params|width"):
        ptb_depth.get_config("depth-2")


def test_descendants_match_the_lstm_with_stacked_min_cells(tmp_path):
    c = descendants.get_config("copy-20")
    assert c.name == "descendants/copy/T20/lr0.003" and c.cells == descendants.CELLS
    assert c.steps == memory.BUDGET["copy"] and c.model.lstm_forget_bias == 1.0
    task = run_module.Task(run_module.seed_config(c, 0), None)
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m.core, nnx.Param)))  # noqa: E731
    lstm = count(task.model("lstm"))
    for cell in descendants.CELLS:
        model = task.model(cell)
        assert abs(count(model) - lstm) / lstm < 0.01, cell
        assert model.core.num_layers == descendants.STACKED.get(cell, 1), cell
    with pytest.raises(ValueError, match="<task>-<T>"):
        descendants.get_config("copy")
    smoke = descendants.get_config("smoke")
    smoke.steps, smoke.checkpoint_every, smoke.eval_every = 4, 4, 2
    smoke_run(smoke, tmp_path / "adding" / "T20", ("min_gru",))
    table = report.memory(str(tmp_path))
    hidden = run_module.Task(run_module.seed_config(smoke, 0), None).hidden_size("min_gru")
    assert f"| adding | 20 | min_gru (3 x {hidden} units, matched) | 0.001 | 1 |" in table
    char = descendants.get_config("char")
    assert (char.task, char.model.num_layers, char.cells) == ("char", 2, descendants.CELLS)
    assert dict(char.model.layers_by_cell) == descendants.STACKED
