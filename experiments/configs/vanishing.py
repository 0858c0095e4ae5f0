r"""Vanishing gradients: ``||dL/dh_t||`` against the distance ``T - t``, RNN vs GRU vs LSTM.

The seed claim "the LSTM mitigates vanishing gradients", shown (issue 6, item 5). The
main job's models and training (``adding.py``: the adding problem at T = 100, 64 units,
Adam, 2,000 steps, LSTM forget-gate bias 1), with a probe: before training and after it,
``experiments/gradients.py`` measures on 256 fixed sequences the norm of the gradient of
one sequence's squared error with respect to the recurrent state after step ``t``, for
every ``t``, and writes ``<workdir>/<cell>/gradient_norms.json``.

Command, then the figure (``experiments/figures/vanishing_gradients.png``):

  python -m experiments.run --config experiments/configs/vanishing.py --workdir runs/vanishing
  python -m experiments.report vanishing runs/vanishing experiments/figures/vanishing_gradients.png

Smoke variant (CI, seconds): ``--config experiments/configs/vanishing.py:smoke``.

Hardware: 2-core x86 CPU shared with other jobs (load average ~4-5), jax 0.10.2 (CPU).
Wall time and result: see the results table in experiments/README.md (numbers from the
run files, ``python -m experiments.report vanishing runs/vanishing``).
Expected result: at initialisation the tanh RNN's gradient falls geometrically with the
distance (orders of magnitude over 100 steps), the LSTM's and GRU's far more slowly;
after training the gated cells keep a gradient at the distance of the marked inputs.
"""

import ml_collections

from experiments.configs import adding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The adding-problem job with the gradient probe; ``arg="smoke"``: seconds."""
    c = adding.get_config(arg)
    c.name = "vanishing"
    c.probe_gradients = 8 if arg == "smoke" else 256
    return c
