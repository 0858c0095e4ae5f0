r"""The LSTM's descendants on the memory-horizon tasks: LSTM, GRU, sLSTM, minLSTM, minGRU.

One run per (task, T, learning rate), named by the config argument
``<task>-<T>[-lr<rate>]`` (default rate 3e-3, the memory study's best for every gated
cell at every T), over the seeds ``config.seeds`` (three by default). The protocol is the
memory study's (``memory.py``: same batches, evaluation set, budget per T, solved mark,
stop at the first evaluation under it), with five cells at matched recurrent
parameters, the 128-unit LSTM's (67,584 on adding): the LSTM with forget-gate bias 1,
the GRU (148 units), sLSTM (Beck et al. 2024; sigmoid forget gate, one head, 128
units) one layer each; minLSTM and minGRU (Feng et al. 2024) as stacks of three layers
(105 and 129 units), the depth that paper's experiments use: their gates read the
input only, so one layer at this budget would be 7,509 minLSTM units fed by two input
features, and a layer above another is where they see the past through the input.
The learned read-out is the same for all.

Commands: one setting, then the table and figure:

  python -m experiments.run --config experiments/configs/descendants.py:adding-100 \
      --workdir runs/descendants/adding/T100/lr3e-3 --resume
  python -m experiments.report memory runs/descendants experiments/figures/descendants.png

Smoke variant (CI, seconds): ``--config experiments/configs/descendants.py:smoke``.
"""

import re

import ml_collections

from experiments.configs import memory

CELLS = ("lstm", "gru", "slstm", "min_lstm", "min_gru")
STACKED = {"min_lstm": 3, "min_gru": 3}  # layers of the cells whose gates read the input only


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``<task>-<T>[-lr<rate>]`` or ``smoke``."""
    if arg == "smoke":
        c = memory.get_config("smoke")
    else:
        match = re.fullmatch(r"(adding|copy)-(\d+)(?:-lr([0-9.]+(?:e-?[0-9]+)?))?", arg or "")
        if not match:
            raise ValueError(
                f"descendants.py needs <task>-<T>[-lr<rate>], e.g. copy-20-lr1e-3, got {arg!r}"
            )
        task, length, rate = match.group(1), match.group(2), match.group(3) or "3e-3"
        c = memory.get_config(f"{task}-{length}-fb1-lr{rate}")
        c.name = c.name.replace("memory/", "descendants/").replace("/fb1/", "/")
    c.cells = CELLS
    c.model.layers_by_cell = dict(STACKED)
    return c
