#!/usr/bin/env bash
# The memory-horizon sweep (experiments/configs/memory.py): adding and copy, T = 10 ... 400,
# learning rates 3e-4, 1e-3, 3e-3, three seeds each, the three LSTM initialisations.
# Every run is started with --resume: a finished seed is skipped, an interrupted one continues,
# so the script can be killed and started again at any point.
#   experiments/sweeps/memory.sh [RUNS_DIR]    (default: runs)
# Set INITS="fb1" to run only the RNN / GRU / LSTM(fb1) comparison, TASKS, LENGTHS, LRS likewise.
set -euo pipefail
runs="${1:-runs}"
for task in ${TASKS:-adding copy}; do
  for T in ${LENGTHS:-10 20 50 100 200 400}; do
    for init in ${INITS:-fb1 torch chrono}; do
      for lr in ${LRS:-3e-4 1e-3 3e-3}; do
        python -m experiments.run --config "experiments/configs/memory.py:$task-$T-$init-lr$lr" \
          --workdir "$runs/memory/$task/T$T/$init/lr$lr" --resume --config.progress=False
      done
    done
  done
done
python -m experiments.report memory "$runs/memory"
