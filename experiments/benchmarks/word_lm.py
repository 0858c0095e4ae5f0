r"""PyTorch's word-language-model example against its port to lstm_jax: training tokens/s.

The example is ``pytorch/examples``' ``word_language_model`` at its defaults with
``--model LSTM``: embedding 200, a 2 x 200 ``nn.LSTM`` with dropout 0.2 between the
layers, dropout 0.2 on the embedding and on the LSTM's output, a linear decoder to the
vocabulary, ``log_softmax`` and ``NLLLoss``, batch 20 in contiguous columns, BPTT 35 with
the state carried from window to window (detached), gradients clipped at norm 0.25 and
plain SGD at rate 20. The port runs the same model and step with ``lstm_jax.LSTM``, Flax
NNX and optax (``optax.clip_by_global_norm`` then ``optax.sgd``), one jitted step, in three
forms: ``lstm_jax``, line for line (``jax.nn.log_softmax``, then the target's entry taken
as ``NLLLoss`` does); ``lstm_jax[optax loss]``, the same model and step with the loss
written as JAX users write torch's ``CrossEntropyLoss`` (``log_softmax`` + ``NLLLoss``):
``optax.softmax_cross_entropy_with_integer_labels`` on the decoder's logits, which never
builds the ``[tokens, vocab]`` log-probabilities; and ``lstm_jax[fused loss]``, the decoder
and the loss as one operation with its own gradient, ``lstm_jax.train.linear_cross_entropy``
(what ``lstm_jax.train.token_loss`` uses for its own language models). All three compute
the same loss and gradients (timed alone on one core, the first form's gradient is
several times slower than the second's on XLA:CPU; within the whole step they run at the
same speed, RESULTS.md).

Each implementation runs in its own process (this module with ``--worker``): torch's
and XLA's thread pools in one process slow each other. Each builds its model, then takes
``--warmup`` steps; then ``--rounds`` rounds follow, in each of which the workers take
turns (the order alternating) to time ``--steps`` consecutive training steps on the same
PTB windows. The ratios are paired: per round, torch's time over each of ours; reported
as the median and min-max over rounds (> 1: ours is faster).

Command (PTB from ``--data_dir`` or ``$LSTM_JAX_DATA``, e.g. ``../shared/data``)::

    python -m experiments.benchmarks.word_lm [--rounds 7] [--steps 30] \
        [--out experiments/benchmarks/results/word_lm-cpu]

``--quick`` shrinks the model and runs on a generated token stream (seconds, for CI).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments.benchmarks import run

EMBED, HIDDEN, LAYERS, DROPOUT, LR, CLIP, BPTT, BATCH = 200, 200, 2, 0.2, 20.0, 0.25, 35, 20


def windows(data_dir: str | None, quick: bool) -> tuple[np.ndarray, int]:
    """``([windows, BPTT + 1, BATCH] int32, vocab size)``: the first PTB training windows,
    inputs and targets overlapping by one token as in the example's ``get_batch``."""
    from lstm_jax import data

    if quick:
        vocab, ids = 50, np.random.default_rng(0).integers(0, 50, 20_000).astype(np.int32)
    else:
        corpus = data.load_ptb(os.path.join(data_dir, "ptb"))
        vocab, ids = corpus.vocab_size, corpus.train
    columns = data.batchify(ids, BATCH)  # the example's batchify: [N, BATCH]
    count = (len(columns) - 1) // BPTT
    return np.stack([columns[i * BPTT : i * BPTT + BPTT + 1] for i in range(count)]), vocab


def torch_trainer(vocab: int, sizes: tuple[int, int]):
    """The example's model and ``train()`` step, as written there."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    embed, hidden = sizes

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(DROPOUT)
            self.encoder = nn.Embedding(vocab, embed)
            self.rnn = nn.LSTM(embed, hidden, LAYERS, dropout=DROPOUT)
            self.decoder = nn.Linear(hidden, vocab)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, x, state):
            emb = self.drop(self.encoder(x))
            output, state = self.rnn(emb, state)
            decoded = self.decoder(self.drop(output)).view(-1, vocab)
            return nn.functional.log_softmax(decoded, dim=1), state

    model, criterion = RNNModel(), nn.NLLLoss()
    model.train()
    zeros = torch.zeros(LAYERS, BATCH, hidden)
    state = (zeros, zeros.clone())

    def step(window: np.ndarray) -> None:
        nonlocal state
        w = torch.from_numpy(window.astype(np.int64))
        state = tuple(s.detach() for s in state)  # repackage_hidden
        model.zero_grad()
        output, state = model(w[:-1], state)
        loss = criterion(output, w[1:].reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-LR)

    def info() -> dict:
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    return step, info


def lstm_jax_trainer(vocab: int, sizes: tuple[int, int], loss: str = "nll"):
    """The port: the same model in Flax NNX with ``lstm_jax.LSTM``, one jitted step; the
    loss (``loss``) as ``log_softmax`` + ``NLLLoss`` (``"nll"``), optax's integer-label
    cross-entropy on the decoder's logits (``"optax"``), or the decoder and the loss as
    ``lstm_jax.train.linear_cross_entropy`` (``"fused"``)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import lstm_jax
    from lstm_jax import train

    embed, hidden = sizes
    uniform = nnx.initializers.uniform(0.2)  # [0, 0.2), shifted below to [-0.1, 0.1)

    class WordLM(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.drop = nnx.Dropout(DROPOUT, rngs=rngs)
            self.encoder = nnx.Embed(
                vocab, embed, embedding_init=lambda *a: uniform(*a) - 0.1, rngs=rngs
            )
            self.rnn = lstm_jax.LSTM(embed, hidden, LAYERS, dropout=DROPOUT, rngs=rngs)
            self.decoder = nnx.Linear(
                hidden, vocab, kernel_init=lambda *a: uniform(*a) - 0.1, rngs=rngs
            )

        def __call__(self, x, state):
            output, state = self.rnn(self.drop(self.encoder(x)), state)
            return self.drop(output), state

    model = WordLM(nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, optax.chain(optax.clip_by_global_norm(CLIP), optax.sgd(LR)), wrt=nnx.Param
    )

    @nnx.jit
    def train_step(model, optimizer, window, state):
        def loss_fn(model):
            output, new_state = model(window[:-1], state)
            decoder, targets = model.decoder, window[1:]
            if loss == "fused":
                kernel, bias = decoder.kernel[...], decoder.bias[...]
                nll, _ = train.linear_cross_entropy(output, kernel, bias, targets)
            elif loss == "optax":
                nll = optax.softmax_cross_entropy_with_integer_labels(decoder(output), targets)
            else:
                log_probs = jax.nn.log_softmax(decoder(output))
                nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)
            return jnp.mean(nll), new_state

        (_, new_state), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return jax.tree.map(jax.lax.stop_gradient, new_state)  # repackage_hidden

    zeros = jnp.zeros((LAYERS, BATCH, hidden), jnp.float32)
    state = (zeros, zeros)

    def step(window: np.ndarray) -> None:
        nonlocal state
        state = train_step(model, optimizer, jnp.asarray(window), state)
        jax.block_until_ready(state)

    def info() -> dict:
        native = lstm_jax.native_status()
        return {"jax": jax.__version__, "native": native.isa, "threads": native.threads}

    return step, info


TRAINERS = {
    "torch": torch_trainer,
    "lstm_jax": lstm_jax_trainer,
    "lstm_jax[optax loss]": functools.partial(lstm_jax_trainer, loss="optax"),
    "lstm_jax[fused loss]": functools.partial(lstm_jax_trainer, loss="fused"),
}
OURS = ("lstm_jax", "lstm_jax[optax loss]", "lstm_jax[fused loss]")


def worker(name: str, data_dir: str | None, quick: bool, warmup: int) -> None:
    """Builds ``name``'s trainer, warms up, then times ``run N`` requests read from stdin,
    one JSON line per answer on stdout."""
    batches, vocab = windows(data_dir, quick)
    step, info = TRAINERS[name](vocab, (16, 16) if quick else (EMBED, HIDDEN))
    position = 0

    def run(n: int) -> float:
        nonlocal position
        start = time.perf_counter()
        for _ in range(n):
            step(batches[position % len(batches)])
            position += 1
        return time.perf_counter() - start

    run(warmup)
    print(json.dumps({"ready": True, **info()}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"seconds": run(int(line.split()[1]))}), flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per turn")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--data_dir", default=os.environ.get("LSTM_JAX_DATA"))
    parser.add_argument("--quick", action="store_true", help="tiny model, generated tokens")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=tuple(TRAINERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.data_dir, args.quick, args.warmup)
        return {}
    if not args.quick and not args.data_dir:
        parser.error("PTB is read from --data_dir or $LSTM_JAX_DATA (e.g. ../shared/data)")
    base = [sys.executable, "-m", "experiments.benchmarks.word_lm", "--warmup", str(args.warmup)]
    base += ["--quick"] if args.quick else ["--data_dir", args.data_dir]
    procs = {
        name: subprocess.Popen(
            [*base, "--worker", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for name in TRAINERS
    }
    infos = {name: json.loads(p.stdout.readline()) for name, p in procs.items()}
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in TRAINERS}
    for r in range(args.rounds):
        for name in list(TRAINERS)[:: 1 if r % 2 == 0 else -1]:
            procs[name].stdin.write(f"run {args.steps}\n")
            procs[name].stdin.flush()
            seconds[name].append(json.loads(procs[name].stdout.readline())["seconds"])
    for p in procs.values():
        p.stdin.close()
        p.wait(timeout=60)
    ratios = {
        name: [t / o for t, o in zip(seconds["torch"], seconds[name], strict=True)] for name in OURS
    }
    tokens = args.steps * BPTT * BATCH
    result = {
        "machine": run.machine({name: dict(info) for name, info in infos.items()}),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "workers": infos,
        "steps_per_turn": args.steps,
        "tokens_per_s": {n: tokens / statistics.median(s) for n, s in seconds.items()},
        "seconds": seconds,
        "ratio_torch_over": {
            name: {"median": statistics.median(r), "min": min(r), "max": max(r)}
            for name, r in ratios.items()
        },
    }
    rates = result["tokens_per_s"]
    print(f"training tokens/s over {args.rounds} rounds: torch {rates['torch']:,.0f}")
    for name, r in ratios.items():
        print(
            f"  {name} {rates[name]:,.0f}: torch's time over this one "
            f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
