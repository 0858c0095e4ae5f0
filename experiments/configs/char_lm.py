r"""A character-level LSTM language model on tiny-shakespeare, with truncated BPTT.

Split and validation are char-rnn's (Karpathy, 2015): ``config.text_split = "char-rnn"``
(``lstm_jax.data``'s ``char_rnn_split`` with char-rnn's defaults ``-batch_size 50 -seq_length 50
-train_frac 0.95 -val_frac 0.05``): the file cut to 1,115,000 characters, viewed as 50
rows of 22,300, the first 423 windows of 50 of each row train (1,057,500 characters) and
the last 23 validate (57,500), no test split. Training and validation batches are those
50 rows in windows of 50 (``lstm_jax.data.LMStream``), the state carried from one window
to the next (gradient stopped) and reset at the start of each pass, as char-rnn's
``eval_split`` does; ``LMStream`` drops each row's last, partial window, so validation
covers 22 of char-rnn's 23 windows per row (55,000 of its 57,500 characters). The loss
is nats per character.

Variants:

* default: 2 x 256 LSTM, embedding 64, dropout 0.2 between the layers, Adam 2e-3, clip
  5, 7,700 steps (about the 19 M characters of the earlier 6,000 x 32 x 100 run).
* ``large``: a larger model on char-rnn's split: 3 x 512,
  dropout 0.5 between the layers and 0.25 on the embedding's output and before the
  read-out, Adam 2e-3 kept for 10 epochs then x0.97 per epoch (char-rnn's decay), 30
  epochs of 422 steps (12,660 steps, 32 M characters), validation and a checkpoint every
  epoch. CPU cost, measured on the 2-core CPU below at load ~4 (other jobs beside it;
  ``experiments.estimate``'s timing, 5 steps after compilation): 1.63 s per train step,
  0.25 s per validation window, so ~5.8 h for the 12,660 steps and 30 validations, in
  several sessions with ``--resume`` (2 x 512 instead: 1.18 s per step, ~4.2 h). GPU
  variant: the same config on one GPU (not measured: no GPU at hand); the step is
  latency-bound (3 layers x 50 sequential steps at batch 50), some 5-15 ms, so ~1-3
  minutes of steps plus compilation and 30 validations: one 10-minute command, or two
  with ``--resume``. The default's step: 0.157 s on the same CPU (~20 min for 7,700).
* ``contiguous``: the earlier recipe on the earlier split, for continuity with the
  committed runs (``depth.py``, the 1.435 below): contiguous 90/5/5 split (validation is
  characters 90-95% of the file), batch 32 x 100, 6,000 steps.
* ``smoke``: seconds, for CI.

Commands (data from --data_dir or $LSTM_JAX_DATA, e.g. ../shared/data):

  python -m experiments.run --config experiments/configs/char_lm.py --data_dir ../shared/data
  python -m experiments.run --config experiments/configs/char_lm.py:large \
      --data_dir ../shared/data --workdir runs/char_lm_large [--resume]
  python -m experiments.run --config experiments/configs/char_lm.py:contiguous \
      --data_dir ../shared/data

Hardware: 2-core AMD EPYC CPU (AVX-512), jax 0.10.2 (CPU), beside another run.
Wall time at commit 75a178a (default, seeds 0-2): 864-1,200 s a seed, 3,092 s in all.
Result there: validation 1.338 ± 0.003 nats/char at the end (1.335-1.341), best of the
16 validations 1.338 ± 0.003; training loss 1.23-1.26 at the end. No published number
exists for this split (char-rnn's README and Karpathy et al. 2015 print none for
tiny-shakespeare); its validation rows are 50 segments interleaved with the training
text, easier than a contiguous held-out part. ``large`` has not been run. (The ``contiguous``
recipe, on an older commit: validation 1.435 nats/char at best, step 5,000, 1.439 at the
end, 2,357 s; another part of the text, characters 90-95%, in windows of 32 x 100.)
Samples: ``python -m experiments.sample --workdir runs/char_lm/lstm/seed0 --data_dir
../shared/data``.
"""

import ml_collections

from experiments.configs import adding

VARIANTS = (None, "large", "contiguous", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: none (2 x 256), ``large`` (3 x 512), ``contiguous`` (the 90/5/5 split) or
    ``smoke`` (seconds)."""
    if arg not in VARIANTS:
        raise ValueError(f"char_lm.py takes large, contiguous or smoke, got {arg!r}")
    c = adding.get_config("smoke" if arg == "smoke" else None)
    c.name = "char_lm" if arg in (None, "smoke") else f"char_lm_{arg}"
    c.task = "char"
    c.text_file = "tinyshakespeare/input.txt"
    c.text_split = "char-rnn"  # or "contiguous" (90/5/5, with a test split)
    c.download = False  # True: fetch a missing file from its address, checking its MD5
    c.cells = ("lstm",)
    c.seq_len = 50  # char-rnn's rows and windows: its validation, window for window
    c.batch_size = 50
    c.eval_batches = 0  # 0: the whole validation split
    c.model.hidden_size = 256
    c.model.num_layers = 2
    c.model.embed_size = 64
    c.model.dropout = 0.2
    c.optimizer.learning_rate = 2e-3
    c.optimizer.clip_norm = 5.0
    c.steps = 7700
    c.eval_every = 500
    c.checkpoint_every = 1000
    if arg == "large":
        c.model.hidden_size = 512
        c.model.num_layers = 3
        c.model.embed_size = 128
        c.model.dropout = 0.5
        c.model.io_dropout = 0.25
        c.optimizer.decay_rate = 0.97  # per epoch, after the first 10 (char-rnn)
        c.optimizer.decay_after_epochs = 10
        c.epochs = 30
        c.eval_every = -1  # once an epoch (422 steps)
        c.checkpoint_every = -1
        c.keep_checkpoints = 2
    if arg == "contiguous":  # the committed runs' recipe (depth.py:2)
        c.text_split = "contiguous"
        c.seq_len = 100
        c.batch_size = 32
        c.steps = 6000  # ~19 passes over the 1 M training characters
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
