r"""Word-level Penn Treebank, Zaremba et al. (2014)'s "small" LSTM (2x200, no dropout).

Mikolov's split with ``<eos>`` per line (``lstm_jax.data.load_ptb``), ``[35, 20]``
windows with the state carried across them (truncated BPTT), SGD at learning rate 1
with gradients clipped to norm 5. The reported metric is ``exp(eval/loss)``, perplexity.

Command (data from --data_dir or $LSTM_JAX_DATA, e.g. ../shared/data):

  python -m experiments.run --config experiments/configs/ptb.py --data_dir ../shared/data

Smoke variant: ``--config experiments/configs/ptb.py:smoke``.

Hardware: 2-core x86 CPU, jax 0.10.2 (CPU).
Wall time: not measured on the full config here (13 epochs; hours on this CPU).
Expected result: Zaremba et al. 2014, Table 1, small: test perplexity 114.5 after 13
epochs with the learning rate halved each epoch after the 4th (here a cosine decay).
"""

import ml_collections

from experiments.configs import adding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The PTB config; ``arg="smoke"`` shrinks it to seconds."""
    c = adding.get_config(arg)
    c.name = "ptb"
    c.task = "ptb"
    c.cells = ("lstm",)
    c.download = False  # True: fetch a missing file from its address, checking its MD5
    c.seq_len = 35
    c.batch_size = 20
    c.eval_batches = 0
    c.model.hidden_size = 200
    c.model.num_layers = 2
    c.model.embed_size = 200
    c.model.lstm_forget_bias = None
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 1.0
    c.optimizer.clip_norm = 5.0
    c.optimizer.decay_steps = 13 * 1327  # 13 epochs of 1,327 windows
    c.steps = 13 * 1327
    c.eval_every = 1327
    c.checkpoint_every = 1327
    if arg == "smoke":
        c.seq_len = 10
        c.batch_size = 4
        c.eval_batches = 2
        c.model.hidden_size = 16
        c.model.num_layers = 1
        c.model.embed_size = 16
        c.optimizer.decay_steps = 0
        c.steps = 20
        c.log_every = 10
        c.eval_every = 0
        c.checkpoint_every = 10
    return c
