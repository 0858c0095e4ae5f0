r"""Depth: 1, 2 and 3 LSTM layers at about the same parameter count, char-level.

The claim of Karpathy et al. (2015, sec. 4.1, Table 1: at about equal parameters, a depth
of at least two helps; two against three layers is mixed), in two families:

* ``params-<L>``: the hidden size of each depth chosen in code so that the recurrent
  layers hold about as many parameters as the 2 x 256 reference (~0.86 M: 1 x 431,
  2 x 256, 3 x 200; embedding 64, read-out over 65 characters);
* ``width-<L>``: 256 units at every depth (more parameters with depth).

The recipe is ``char_lm.py:contiguous`` (tiny-shakespeare, 90/5/5 split with a test
split, BPTT 100, batch 32, Adam 2e-3, 6,000 steps), with the same dropout at every depth
(0.2 on the embedding's output, between layers and before the read-out, so the 1-layer
model is regularised too), over ``config.seeds`` (three). Validation every 500 steps; the
checkpoint of the best validation loss is kept (``best/``) and evaluated on the test
split: the reported number is that test loss (model selection on validation, never on
test). Same budget (steps, batch) for every depth.

``width-2`` is ``params-2`` (the 2 x 256 reference), so it is run once: the report's
equal-width rows borrow the ``params/L2`` runs. Commands (data from --data_dir or
$LSTM_JAX_DATA; 15 runs), then the table and figure:

  for run in params-1 params-2 params-3 width-1 width-3; do
    python -m experiments.run --config experiments/configs/depth.py:$run \
        --data_dir ../shared/data --workdir runs/depth/${run%-*}/L${run#*-} --resume
  done
  python -m experiments.report depth runs/depth experiments/figures/depth.png

Smoke variant (CI, seconds): ``--config experiments/configs/depth.py:smoke``.

Hardware: 2-core x86 CPU (AMD EPYC), jax 0.10.2 (CPU), two runs at a time. Wall time per
run: 1 x 256 ~370-480 s, 1 x 431 ~830-960 s, 2 x 256 ~1,020-1,210 s, 3 x 200 ~1,200-1,650
s, 3 x 256 ~1,550-1,590 s; 16,117 s for the 15 runs.
Result (seeds 0-2, test loss at the best validation, nats/char): equal parameters 1 x 431
1.539 ± 0.010, 2 x 256 1.548 ± 0.007, 3 x 200 1.620 ± 0.011; equal width 1 x 256 1.597 ±
0.012, 3 x 256 1.569 ± 0.023 (validation 1.389 ± 0.002, the best of all). Every seed's
best validation is at step 5,000-6,000: the budget, not overfitting, orders the depths.
(An older recipe, one seed, no dropout for 1 layer: best validation 1.453 / 1.435 / 1.488
for 1 / 2 / 3 layers at ~0.86 M parameters; git history at 7c31772.)
"""

import ml_collections

from experiments import analytic
from experiments.configs import char_lm

EMBED, VOCAB = 64, 65
DROPOUT = 0.2
FAMILIES = ("params", "width")
REFERENCE = (256, 2)  # (hidden, layers): the stack the other depths match or share


def lstm_params(hidden: int, layers: int, embed: int = EMBED) -> int:
    """Parameters of a torch-style LSTM stack (two bias vectors per layer)."""
    return analytic.recurrent_params("lstm", embed, hidden, layers)


def matched_hidden(layers: int, target: int) -> int:
    """The hidden size whose ``layers``-deep stack has closest to ``target`` parameters."""
    return analytic.matched_hidden("lstm", target, EMBED, layers)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``<params|width>-<1|2|3>`` (default ``params-2``), or ``smoke``."""
    arg = arg or "params-2"
    if arg != "smoke":
        family, _, layers = arg.partition("-")
        if family not in FAMILIES or layers not in ("1", "2", "3"):
            raise ValueError(f"depth.py takes <params|width>-<1|2|3> or smoke, got {arg!r}")
    c = char_lm.get_config("smoke" if arg == "smoke" else "contiguous")
    c.text_split = "contiguous"  # the split with a test set: depth reports test numbers
    c.eval_test = True
    c.select_best = True
    c.model.dropout = c.model.io_dropout = DROPOUT
    if arg == "smoke":
        c.name = "depth/smoke"
        c.model.num_layers = 2
        c.eval_every = c.checkpoint_every = 10
        c.seeds = (0,)
        return c
    layers = int(layers)
    c.name = f"depth/{family}/L{layers}"
    c.model.num_layers = layers
    c.model.embed_size = EMBED
    hidden, ref_layers = REFERENCE
    c.model.hidden_size = (
        matched_hidden(layers, lstm_params(hidden, ref_layers)) if family == "params" else hidden
    )
    c.eval_every = c.checkpoint_every = 500
    return c
