r"""The LSTM's descendants on the LSTM's own tests: LSTM, GRU, sLSTM, minLSTM, minGRU.

Memory tasks: one run per (task, T, learning rate), named by the config argument
``<task>-<T>[-lr<rate>]`` (default rate 3e-3, the memory study's best for every gated
cell at every T), over the seeds ``config.seeds`` (three by default). The protocol is the
memory study's (``memory.py``: the same batches, evaluation set, budget per T fixed
before the runs, solved mark, a run stops at its first evaluation under the mark), with
five cells at the recurrent parameters of the 128-unit LSTM (67,584 on adding): the
LSTM with forget-gate bias 1, the GRU (148 units on adding) and sLSTM (Beck et al. 2024,
sigmoid forget gate, one head, 128 units), one layer each; minLSTM and minGRU (Feng et
al. 2024) as stacks of three layers (105 and 129 units on adding), the depth of that
paper's selective-copying runs. Their gates read the input only: a single layer at this
budget would be 7,509 minLSTM units reading two input features, and only a layer above
another sees the past in its gates. The read-out is the same linear layer for all.

``char``: the character language model (``char_lm.py``'s default recipe, 2 x 256 LSTM)
with the five cells at its recurrent parameters, minLSTM and minGRU in three layers.

Commands: one setting, then the table and figure:

  python -m experiments.run --config experiments/configs/descendants.py:copy-20 \
      --workdir runs/descendants/copy/T20/lr3e-3 --resume
  python -m experiments.run --config experiments/configs/descendants.py:char \
      --data_dir ../shared/data --workdir runs/descendants_char --resume
  python -m experiments.report memory runs/descendants experiments/figures/descendants.png

Smoke variant (CI, seconds): ``--config experiments/configs/descendants.py:smoke``.

Hardware: 2-core AMD EPYC CPU (AVX-512), jax 0.10.2 (CPU), two runs side by side. Run
at commit ebefb32: adding at T = 50, 100 and 200 and copy at T = 20, 12,044 s for the 60
runs (each cell's seeds one after the other). Result there
(median steps to solve; every cell solves adding at every T in 3/3 seeds): adding T = 50 /
100 / 200, LSTM 750 / 1,250 / 2,000, GRU 375 / 750 / 1,000, sLSTM 375 / 500 / 1,000,
minLSTM 250 / 500 / 500, minGRU 375 / 500 / 500; copy T = 20, GRU 3,250 (3/3), sLSTM
2,500 (3/3), LSTM 8,875 (2/3), minLSTM 7,125 (2/3), minGRU 6,375 (2/3). ``char`` at the
same commit (15 runs of 7,700 steps, 45,233 s two or three at a time; table:
``python -m experiments.report <runs>/descendants_char lstm gru slstm min_lstm min_gru``),
validation nats/char at the end: LSTM 1.337 [1.329, 1.345], GRU 1.346 [1.340, 1.352], sLSTM
1.341 [1.322, 1.360], minLSTM 1.405 [1.394, 1.417], minGRU 1.398 [1.384, 1.412].
"""

import re

import ml_collections

from experiments.configs import char_lm, memory

CELLS = ("lstm", "gru", "slstm", "min_lstm", "min_gru")
STACKED = {"min_lstm": 3, "min_gru": 3}  # layers of the cells whose gates read the input only


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``<task>-<T>[-lr<rate>]``, ``char`` or ``smoke``."""
    if arg == "smoke":
        c = memory.get_config("smoke")
    elif arg == "char":
        c = char_lm.get_config()
        c.name = "descendants_char"
        c.model.match_params = "lstm"  # the 2 x 256 LSTM's recurrent parameters
        c.cells = CELLS
        c.model.layers_by_cell = dict(STACKED)  # the other cells: the LSTM's 2 layers
        return c
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
