r"""Memory horizon: the longest T each cell solves, adding problem and copy task.

One run per (task, T, initialisation, learning rate), named by the config argument
``<task>-<T>[-<init>][-lr<rate>]`` (defaults ``fb1`` and ``1e-3``), over the seeds
``config.seeds`` (three by default). ``fb1`` trains a tanh RNN, a GRU and an LSTM with
forget-gate bias 1 on the same batches; the RNN's and the GRU's hidden sizes are chosen
in code so that their recurrent parameters match the LSTM's (``model.match_params =
"lstm"``; 128 LSTM units on adding: 258 RNN units, 148 GRU units). ``torch`` (torch's
uniform init) and ``chrono`` (chrono init with ``T_max = T``, Tallec & Ollivier 2018)
train the LSTM only; ``orth`` trains the RNN only, its recurrent weights orthogonal (no
direction of the state shrinks at the start; Le et al. 2015's identity is the special
case, Arjovsky et al. 2016 the motivation). Adam, clipped at norm 1, batch 64 (adding:
Hochreiter & Schmidhuber 1997, exp. 4; copy: Arjovsky et al. 2016, alphabet 8, 10
symbols).

The protocol, fixed before the runs and the same for every cell and T: a budget of
20,000 steps on adding and 30,000 on copy (:data:`BUDGET`; the literature's LSTMs solve
adding at T = 100-200 in ~10^4 Adam steps, and copy needs longer, Arjovsky et al. train
for 10^4-10^5); learning rates {3e-4, 1e-3, 3e-3, 1e-2} (:data:`LEARNING_RATES`);
evaluation every 100 steps (:data:`EVAL_EVERY`), so that steps to solve are counted to
100 steps at any T. The report calls T solved when at least 2 of 3 seeds reach 10% of
the memoryless baseline and picks the best rate per (cell, T): most seeds solved, then
fewest steps to solve, then final eval loss (``experiments/report.py``). A run stops at
its first evaluation under that mark (``config.stop_when_solved``): only unsolved runs
spend the whole budget.

Commands: the whole sweep, resumable (a finished run is skipped), then the tables and
figure:

  python -m experiments.sweeps.memory --runs runs --jobs 2   # resumable; see its docstring
  python -m experiments.report memory runs/memory experiments/figures/memory_vs_length.png

One run: ``python -m experiments.run --config experiments/configs/memory.py:adding-100-lr1e-3
--workdir runs/memory/adding/T100/fb1/lr1e-3 --resume``. Smoke variant (CI, seconds):
``--config experiments/configs/memory.py:smoke``.

Hardware: meant for a quiet machine or a GPU. Run under this protocol so far (commit
c045617, 2-core AMD EPYC, two runs at a time, ``experiments/results/memory_v2``), seeds
0-2: copy at T = 100, 3e-3, the ``chrono`` LSTM and the GRU (``fb1`` with
``--config.cells="('gru',)"``): both 3/3, at 10,000 / 10,500 / 10,100 steps (LSTM) and
4,700 / 6,200 / 10,200 (GRU), at T = 50 both 3/3 too, at 5,600 / 6,100 / 6,100 and 3,400
/ 5,300 / 7,500; the ``torch`` LSTM at T = 100 0/3 (eval / baseline 1.000, 1.000,
0.768); copy at T = 20, the RNN (``fb1`` with ``--config.cells="('rnn',)"``) at 3e-3 and
the ``orth`` RNN at 3e-3 and 1e-3: 0/3 each (1.005 / 1.007 / 2.009; 1.003-1.008; 0.777 /
1.001 / 0.778); at T = 10, 3e-3, the RNN 1/3 (1.003 / 0.096 / 0.295) and the ``orth``
RNN 0/3 (1.011 / 1.007 / 1.008); 17,052 s of runs in all. The runs of
``experiments/results/memory`` are older than this protocol: at commit 75a178a the
budget grew with T (adding 5,000 steps to T = 50, 10,000 at 100, 20,000 from 200; copy
10,000 to T = 50, 20,000 at 100, 30,000 from 200, and 30,000 for the LSTM from T = 50,
raised after its first runs), evaluations came every 2.5% of the budget, the rates were
{3e-4, 1e-3, 3e-3} and no RNN was orthogonal.
Run there on 2-core AMD EPYC CPUs (AVX-512), two or three runs side by side, three seeds
each setting (52,471 s of runs): adding, ``fb1``, all three rates up to T = 50 (3e-4 for
the RNN to T = 20), {1e-3, 3e-3} from T = 100; the ``chrono`` and ``torch`` LSTMs at
3e-3, T = 10-400; copy, ``fb1``, all three rates at T = 10 and 3e-3 from T = 20 (the GRU
also at 1e-3 at T = 20; the GRU to T = 200, the LSTM to T = 100 with a 30,000-step
budget from T = 50: ``--config.steps=30000``, which ``--resume`` accepts on a finished
run). Not run there: copy at T = 400, and at the lower rates from T = 20 but for the
GRU's 1e-3 at T = 20. Result there (RNN / GRU widths matched to the 128-unit LSTM: 258 /
148 units on adding, 265 / 149 on copy): longest T solved in >= 2 of 3 seeds, adding:
RNN 10 (0/3 at T = 20 at every rate), GRU >= 400, LSTM (fb1) >= 400, LSTM (chrono) >=
400, LSTM (torch) >= 400, every gated cell 3/3 at every T run; median steps to solve at
T = 10 / 20 / 50 / 100 / 200 / 400 (3e-3): GRU 250 / 250 / 375 / 750 / 1,000 / 1,000,
LSTM (fb1) 375 / 500 / 750 / 1,250 / 2,000 / 4,000, LSTM (chrono) 500 / 500 / 625 / 750
/ 1,000 / 1,000, LSTM (torch) 375 / 625 / 875 / 1,250 / 3,000 / 4,000. Copy: RNN 10 (2/3
at T = 10, 0/3 at T = 20, eval / baseline 1.005 ± 0.002), GRU >= 200 (3/3 at every T;
median 3,250 / 3,250 / 7,000 / 7,000 / 13,500 steps at T = 10 / 20 / 50 / 100 / 200),
LSTM (fb1) 50 (3/3 at T = 10, 2/3 at T = 20 and T = 50, median 5,250 / 8,875 / 19,125
steps; at T = 50 0/3 within 10,000 steps, 2/3 within 30,000; at T = 100 0/3 within
30,000 steps, eval / baseline 0.54 ± 0.07); at 1e-3 no cell solves copy T = 10 in more
than 1 of 3 seeds within 10,000 steps, at 3e-4 none in any seed. 3e-3 is the best rate
at every setting but one (the RNN at adding T = 20, which no rate solves); at 3e-4 the
gated cells still solve adding to T = 50 (3/3), in 4.5-8x the steps; at 1e-3 the GRU and
the fb1 LSTM solve it to T = 400 (3/3), in 1.3-2.5x the steps (T = 400: 2,500 and
6,500).
"""

import re

import ml_collections

from experiments.configs import adding, copy

INITS = ("fb1", "torch", "chrono", "orth")
LENGTHS = (10, 20, 50, 100, 200, 400)
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
BUDGET = {"adding": 20_000, "copy": 30_000}  # steps, every T and cell: runs stop once solved
EVAL_EVERY = 100  # steps: the resolution of "steps to solve"


def parse(arg: str) -> tuple[str, int, str, float]:
    """``<task>-<T>[-<init>][-lr<rate>]`` as ``(task, T, init, rate)``."""
    match = re.fullmatch(r"(.*?)(?:-lr([0-9.]+(?:e-?[0-9]+)?))?", arg or "")
    parts = match.group(1).split("-")
    try:
        task, length, rest = parts[0], int(parts[1]), parts[2:]
    except (IndexError, ValueError):
        raise ValueError(
            f"memory.py needs <task>-<T>[-<init>][-lr<rate>], e.g. adding-200-chrono-lr1e-3, "
            f"got {arg!r}"
        ) from None
    init = rest[0] if rest else "fb1"
    rate = float(match.group(2)) if match.group(2) else 1e-3
    if len(rest) > 1:
        raise ValueError(f"memory.py needs <task>-<T>[-<init>][-lr<rate>], got {arg!r}")
    if task not in BUDGET or init not in INITS:
        raise ValueError(f"task must be adding or copy and init one of {INITS}, got {arg!r}")
    return task, length, init, rate


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``<task>-<T>[-<init>][-lr<rate>]`` or ``smoke``."""
    if arg == "smoke":
        task, length, init, rate = "adding", 20, "fb1", 1e-3
    else:
        task, length, init, rate = parse(arg)
    c = (adding if task == "adding" else copy).get_config("smoke" if arg == "smoke" else None)
    c.name = f"memory/{task}/T{length}/{init}/lr{rate:g}"
    c.seq_len = length
    c.optimizer.learning_rate = rate
    c.model.lstm_forget_bias = 1.0 if init == "fb1" else None
    c.model.lstm_chrono_init = float(length) if init == "chrono" else None
    c.model.match_params = "lstm"
    c.model.recurrent_init = "orthogonal" if init == "orth" else "uniform"
    if init != "fb1":
        c.cells = ("rnn",) if init == "orth" else ("lstm",)
    if arg != "smoke":
        c.model.hidden_size = 128
        c.steps = BUDGET[task]
        c.eval_every = EVAL_EVERY
        c.checkpoint_every = 2000
        c.stop_when_solved = True  # a solved run stops: only unsolved ones spend the budget
        c.log_every = 100
    return c
