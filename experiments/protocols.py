"""Evaluation protocols of the language-model experiments, as their references ran them.

Two ways to measure a split's loss per token (perplexity is ``exp`` of it):

* ``"streams"``: the split cut into the run's ``B`` contiguous columns
  (``data.batchify``) and windows of the BPTT length ``T`` (``data.LMStream``), the state
  starting from zeros and carried from window to window; the final partial window and the
  last ``len % B`` tokens are left out. The validation protocol of Zaremba et al. (2014)
  (``run_valid`` in their Lua code) and of char-rnn (``eval_split``, with its 50 rows).
* ``"one_stream"``: the whole split as one stream (batch 1), the state carried from the
  first token to the last, ``T`` steps at a time; every token after the first is
  predicted once, the mean is over all ``len - 1`` of them. Zaremba et al.'s test
  protocol (``run_test``: one step at a time over the test set, ``exp(nll / (len - 1))``);
  the window length changes nothing but the speed, since the forward pass does not see
  where the gradient would have been truncated.

At the end of a run with ``config.eval_test``, :func:`evaluate_test` runs both on the
test split: ``summary.json`` gets ``test/{loss,accuracy,perplexity}_{streams,one_stream}``
and ``test/tokens_one_stream``, and ``test/loss`` (and ``test/perplexity``) is the one
named by ``config.eval_protocol``. Validation during training is ``"streams"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from lstm_jax import data, train

PROTOCOLS = ("streams", "one_stream")


def check_protocol(config, corpus: data.Corpus | None = None) -> str:
    """The config's ``eval_protocol`` (default ``"streams"``), checked before training.

    Raises:
      ValueError: an unknown protocol, ``config.eval_test`` with an empty test split
        (char-rnn's split has none), or on several processes (the one-stream pass runs on
        one device).
    """
    protocol = config.get("eval_protocol", "streams")
    if protocol not in PROTOCOLS:
        raise ValueError(f"config.eval_protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if config.get("eval_test") and corpus is not None and len(corpus.test) < 2:
        raise ValueError(
            "config.eval_test=True needs a test split, and this corpus has none (char-rnn's "
            "split: config.text_split='contiguous' has one)"
        )
    if config.get("eval_test") and jax.process_count() > 1:
        raise ValueError(
            "the one-stream test pass runs on one device of one process; run the test "
            "evaluation of a multi-host run on one host (config.eval_test=False here)"
        )
    return protocol


def evaluate_one_stream(
    graphdef: nnx.GraphDef,
    loss_fn: Callable,
    state: train.TrainState,
    ids: np.ndarray,
    seq_len: int,
    zero_carry: Any,
    *,
    max_windows: int = 0,
) -> dict[str, float]:
    """The ``"one_stream"`` protocol: mean loss per token over every prediction of ``ids``.

    Args:
      graphdef: of the model in evaluation mode (dropout off).
      loss_fn: ``train.token_loss`` (or a partial of it): its ``"loss"`` metric is the
        window's mean per token.
      state: the train state whose parameters are evaluated.
      ids: int ``[tokens]``, the split.
      seq_len: the window length (the run's BPTT length).
      zero_carry: the model's zero state for one row.
      max_windows: > 0: only the first that many windows (smoke runs).

    Returns:
      ``{"loss", "accuracy"}``, means over the tokens predicted, and ``"tokens"``, their
      number (``len(ids) - 1`` unless ``max_windows`` cut it short).
    """
    mesh = train.make_mesh(jax.devices()[:1])  # batch 1 is not split over devices
    state = train.place_state(state, mesh)
    eval_step = train.make_eval_step(graphdef, loss_fn, mesh)
    carry = zero_carry
    sums, tokens = {}, 0
    for i, window in enumerate(data.stream_windows(data.batchify(ids, 1), seq_len)):
        if max_windows > 0 and i == max_windows:
            break
        n = window["inputs"].shape[0]
        metrics, carry = eval_step(state.params, state.rest, carry, train.shard_batch(window, mesh))
        for k in ("loss", "accuracy"):
            sums[k] = sums.get(k, 0.0) + metrics[k] * n  # device arrays: no sync per window
        tokens += n
    return {k: float(v) / tokens for k, v in sums.items()} | {"tokens": tokens}


def evaluate_test(task, graphdef: nnx.GraphDef, state: train.TrainState, model) -> dict:
    """Both protocols on the test split of a text task; ``test/*`` metrics for the summary.

    Args:
      task: ``experiments.run.Task`` of a ``char`` or ``ptb`` config with ``eval_test``.
      graphdef: of the trained model in evaluation mode.
      state: the final train state.
      model: the model (its ``zero_carry``).
    """
    c = task.config
    mesh = train.make_mesh()
    eval_step = train.make_eval_step(graphdef, task.loss_fn, mesh)
    streams = train.evaluate(
        eval_step, state, task.test_batches(), mesh, model.zero_carry(c.batch_size)
    )
    one = evaluate_one_stream(
        graphdef,
        task.loss_fn,
        state,
        task.corpus.test,
        c.seq_len,
        model.zero_carry(1),
        max_windows=max(c.eval_batches, 0),
    )
    out = {"test/tokens_one_stream": one.pop("tokens")}
    for name, result in (("streams", streams), ("one_stream", one)):
        for k, v in result.items():
            out[f"test/{k}_{name}"] = v
        out[f"test/perplexity_{name}"] = math.exp(result["loss"])
    headline = streams if task.eval_protocol == "streams" else one
    out.update({f"test/{k}": v for k, v in headline.items()})
    return out
