r"""Depth on word-level PTB: 1, 2 and 3 LSTM layers, each trained until validation stops
improving, with its learning rate and dropout chosen on validation.

The claim tested is Karpathy et al. (2015, sec. 4.1)'s, in the setting the LSTM's
language-modelling results come from: at about equal parameters a depth of at least two
helps, two against three layers is mixed. Two families, named by the config argument
``<family>-<L>[-d<dropout>][-lr<rate>]`` (defaults ``d0.5``, ``lr1``):

* ``params-<L>``: the hidden size of each depth chosen in code so that the whole model
  (embedding 200, the stack, the 10,000-word read-out) holds as many parameters as the
  2 x 200 reference (:func:`matched_hidden`: 1 x 226, 2 x 200, 3 x 183);
* ``width-<L>``: 200 units at every depth (``width-2`` is ``params-2``: run it once).

The recipe is Zaremba et al. (2014)'s with dropout (``ptb.py``: 20 streams, BPTT 35,
plain SGD, clip 5, every parameter uniform in [-0.1, 0.1], dropout on the non-recurrent
connections), but the schedule is set by validation, not by a fixed epoch count: the
rate is divided by 4 when an epoch's validation perplexity does not improve (torch's
word-language-model example's rule; ``lstm_jax.train.ReduceOnPlateau``), and the run
ends at the plateau after the third cut, within a budget of 60 epochs that no run is
meant to reach (a run that does is reported as such). The checkpoint of the best
validation is evaluated on the test split (``select_best``). Protocol: the grid
``d`` in {0.2, 0.35, 0.5} x ``lr`` in {0.5, 1} with seed 0 for each of the five settings,
then seeds 0-2 at each setting's best validation.

Commands (data from --data_dir or $LSTM_JAX_DATA), one per setting and grid point:

  python -m experiments.run --config experiments/configs/ptb_depth.py:params-3-d0.35-lr1 \
      --config.seeds='(0,)' --data_dir ../shared/data \
      --workdir runs/ptb_depth/params/L3/d0.35/lr1 --resume

Cost, predicted from PTB small's 275 s an epoch at 2 x 200 on the 2-core CPU below (a
model: an epoch's time proportional to the stack's and read-out's FLOPs; dropout runs
stop after about 20-30 epochs): 1.5-2.5 h a run, ~30 runs for the grid and the seeds, so
some 50-70 CPU-hours, beyond what this machine's sessions hold; on one GPU a run is
latency-bound at a few ms a step (~5 minutes). Not run yet.

Smoke variant (CI, seconds): ``--config experiments/configs/ptb_depth.py:smoke``.
"""

import re

import ml_collections

from experiments import analytic
from experiments.configs import ptb

VOCAB, EMBED = 10_000, 200
REFERENCE = (200, 2)  # (hidden, layers): the model the other depths match
FAMILIES = ("params", "width")
DROPOUTS = (0.2, 0.35, 0.5)
LEARNING_RATES = (0.5, 1.0)


def model_params(hidden: int, layers: int) -> int:
    """Parameters of the whole model: embedding, LSTM stack, read-out with its bias."""
    stack = analytic.recurrent_params("lstm", EMBED, hidden, layers)
    return VOCAB * EMBED + stack + hidden * VOCAB + VOCAB


def matched_hidden(layers: int) -> int:
    """The hidden size whose ``layers``-deep model is closest to the reference's size
    (bisection: the count grows with the hidden size)."""
    target = model_params(*REFERENCE)
    lo, hi = 1, 4096
    while lo < hi:  # the smallest hidden size with at least `target` parameters
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if model_params(mid, layers) < target else (lo, mid)
    return min((lo - 1, lo), key=lambda h: abs(model_params(h, layers) - target))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``<params|width>-<1|2|3>[-d<dropout>][-lr<rate>]`` or ``smoke``."""
    c = ptb.get_config("smoke" if arg == "smoke" else "small")
    c.optimizer.decay_rate = 1.0  # the rate falls on plateaus only
    c.optimizer.decay_after_epochs = 0
    c.optimizer.plateau_patience = 1
    c.optimizer.plateau_factor = 0.25
    c.optimizer.plateau_max_reductions = 3
    c.select_best = True
    if arg == "smoke":
        c.name = "ptb_depth/smoke"
        c.eval_every = c.checkpoint_every = 10
        return c
    match = re.fullmatch(r"(params|width)-([123])(?:-d([0-9.]+))?(?:-lr([0-9.]+))?", arg or "")
    if not match:
        raise ValueError(
            f"ptb_depth.py takes <params|width>-<1|2|3>[-d<dropout>][-lr<rate>], got {arg!r}"
        )
    family, layers = match.group(1), int(match.group(2))
    dropout, rate = float(match.group(3) or 0.5), float(match.group(4) or 1.0)
    c.name = f"ptb_depth/{family}/L{layers}/d{dropout:g}/lr{rate:g}"
    c.model.num_layers = layers
    c.model.embed_size = EMBED
    c.model.hidden_size = matched_hidden(layers) if family == "params" else REFERENCE[0]
    c.model.dropout = c.model.io_dropout = dropout
    c.optimizer.learning_rate = rate
    c.seq_len = 35
    c.epochs = 60
    c.seeds = (0, 1, 2)
    return c
