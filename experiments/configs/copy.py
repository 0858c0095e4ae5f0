r"""The copy task: recall 10 symbols after a delay of T steps, RNN vs GRU vs LSTM.

Each model reads 10 symbols from an alphabet of 8, waits T = 50 blank steps, sees a
delimiter and must write the 10 symbols back (Hochreiter & Schmidhuber 1997; Arjovsky et
al. 2016). The loss is the mean cross-entropy per step; the memoryless strategy (blanks,
then a uniform guess) scores 10 log 8 / (T + 20) ≈ 0.297 at T = 50.

Command:

  python -m experiments.run --config experiments/configs/copy.py

Smoke variant: ``--config experiments/configs/copy.py:smoke``.

Hardware: 2-core x86 CPU. This config itself (T = 50, 3,000 steps) has no committed run;
the memory sweep (``memory.py``, copy at T = 10-200, 10,000-30,000 steps, three seeds) is
where the task was measured: the GRU solves every T run, to 200 (3/3 seeds at 3e-3,
median 7,000 steps at T = 50 and 100, 13,500 at 200), the LSTM to T = 50 (2/3 within
30,000 steps, none within 10,000; 0/3 at T = 100), the RNN T = 10 only. Arjovsky et al.
(2016, Fig. 1) show LSTMs leaving the baseline at T = 100 only after thousands of steps.
"""

import ml_collections

from experiments.configs import adding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The copy-task config; ``arg="smoke"`` shrinks it to seconds."""
    c = adding.get_config(arg)
    c.name = "copy"
    c.task = "copy"
    c.model.embed_size = 16
    if arg != "smoke":
        c.seq_len = 50
        c.model.hidden_size = 128
        c.steps = 3000
    return c
