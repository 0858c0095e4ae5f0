r"""A character-level LSTM language model on tiny-shakespeare, with truncated BPTT.

The corpus is split contiguously 90/5/5 (train/valid/test) by
``lstm_jax.data.load_char_text``; batches are ``[T, B]`` windows of ``B`` contiguous
streams (``lstm_jax.data.LMStream``), the state carried from one window to the next with
its gradient stopped, reset at the start of each pass. The loss is nats per character.

Command (data from --data_dir or $LSTM_JAX_DATA, e.g. ../shared/data):

  python -m experiments.run --config experiments/configs/char_lm.py --data_dir ../shared/data

Smoke variant: ``--config experiments/configs/char_lm.py:smoke``.

Hardware: 2-core x86 CPU, jax 0.10.2 (CPU), shared with other jobs.
Wall time: 2,357 s, run as ``depth.py:2`` (the same config but its name).
Result: validation 1.435 nats/char at best (step 5,000), 1.439 at the end; char-rnn's
2-3 layer LSTMs reach about 1.40. Samples: ``python -m experiments.sample --workdir
runs/char_lm --data_dir ../shared/data``.
"""

import ml_collections

from experiments.configs import adding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The char-LM config; ``arg="smoke"`` shrinks it to seconds."""
    c = adding.get_config(arg)
    c.name = "char_lm"
    c.task = "char"
    c.text_file = "tinyshakespeare/input.txt"
    c.download = False  # True: fetch a missing file from its address, checking its MD5
    c.cells = ("lstm",)
    c.seq_len = 100
    c.batch_size = 32
    c.eval_batches = 0  # 0: the whole validation split
    c.model.hidden_size = 256
    c.model.num_layers = 2
    c.model.embed_size = 64
    c.model.dropout = 0.2
    c.optimizer.learning_rate = 2e-3
    c.optimizer.clip_norm = 5.0
    c.steps = 6000  # ~19 passes over the 1 M training characters; fits a CPU session
    c.eval_every = 500
    c.checkpoint_every = 1000
    if arg == "smoke":
        c.seq_len = 20
        c.batch_size = 8
        c.eval_batches = 2
        c.model.hidden_size = 16
        c.model.num_layers = 1
        c.model.embed_size = 8
        c.steps = 20
        c.log_every = 10
        c.eval_every = 0
        c.checkpoint_every = 10
    return c
