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

Hardware: 2-core x86 CPU (AMD EPYC) shared with other jobs (load average ~4.5-5), jax
0.10.2 (CPU).
Wall time: 117 s for the three models, probes included (RNN 15 s, GRU 39 s, LSTM 53 s).
Result (geometric mean over 256 sequences of the state-gradient norm; the table:
``python -m experiments.report vanishing runs/vanishing``): from distance 0 to 99 it
falls by 1e-23 (RNN), 7e-21 (GRU) and 1e-8 (LSTM, forget bias 1) at initialisation,
and by 2e-20 (RNN), 0.16 (GRU) and 0.71 (LSTM) after training, where the GRU and LSTM
solve the task (eval MSE 0.0004, 0.0021) and the RNN stays at the baseline (0.171).
"""

import ml_collections

from experiments.configs import adding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The adding-problem job with the gradient probe; ``arg="smoke"``: seconds."""
    c = adding.get_config(arg)
    c.name = "vanishing"
    c.probe_gradients = 8 if arg == "smoke" else 256
    return c
