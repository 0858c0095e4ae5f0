#!/usr/bin/env bash
# One GPU check, one command: the GPU tests (the Pallas kernel against the scan on the
# device among them), the Pallas kernel timed against the scan, cuDNN, Flax and torch's
# cuDNN LSTM and GRU over the benchmark grid, minLSTM and minGRU on the parallel kernel
# timed against the LSTM, and a few hundred PTB-medium training steps with their tokens/s.
#
#   experiments/benchmarks/gpu_check.sh [--dry-run] [--no-install] [--out DIR]
#       [--only STAGES] [--ptb-steps N] [--bench-quick] [--allow-cpu]
#
# Run from anywhere on a machine with one GPU (written for an H100/H200). Every stage has
# its own time limit; with a ready environment the whole check stays under 10 minutes
# (tests 120 s, benchmark 200 s, min RNNs 150 s, PTB 120 s: override with TESTS_TIMEOUT,
# BENCH_TIMEOUT, MINRNN_TIMEOUT, PTB_TIMEOUT). Everything goes under one results
# directory: --out, else $OUT if set, else experiments/benchmarks/results/gpu/<date>. It
# ends with a summary (GPU name, test counts, benchmark ratios, min RNN times, PTB
# tokens/s), also written to summary.txt there.
#
# Python: $PYTHON if set, else python3, if its jax sees a GPU. Otherwise a venv
# ($GPU_VENV, default ~/.cache/lstm_jax/venv-gpu, reusing system packages) is used, and
# created and filled with `pip install -e ".[test,torch]" "jax[cuda12]"` (JAX_PIP_SPEC
# overrides the jax part) unless --no-install. The install is tolerant: without network it
# fails within INSTALL_TIMEOUT (300 s) and the check goes on with what there is.
#
# Options:
#   --dry-run      print the stages and their commands, run nothing
#   --no-install   never install; use the python found
#   --out DIR      the results directory
#   --only LIST    comma-separated stages among: tests,bench,minrnn,ptb (default: all)
#   --ptb-steps N  PTB-medium training steps (default 300)
#   --bench-quick  the benchmark's tiny grid (to check the command, e.g. on CPU)
#   --ptb-full V   adds the stage ptbfull: PTB V (medium, large; smoke to check it on CPU), the
#                  whole run of Zaremba et al., in $PTB_RUNS/ptb_V (default runs/gpu: kept
#                  between commands while the machine is), stopped with SIGTERM before
#                  PTBFULL_TIMEOUT (540 s) and resumed by the same command; the summary
#                  says whether it completed (medium: 51,753 steps; large: 72,985)
#   --allow-cpu    go on when jax sees no GPU (to check the commands on CPU)
#
# PTB data: $LSTM_JAX_DATA, else ../shared/data next to the repository; without it the
# PTB stage is skipped.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

DRY_RUN=0
INSTALL=1
ONLY="tests,bench,minrnn,ptb"
PTB_FULL=""
PTB_STEPS=300
BENCH_QUICK=0
ALLOW_CPU=0
RESULTS="${OUT:-}"
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-install) INSTALL=0 ;;
    --out) RESULTS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --ptb-steps) PTB_STEPS="$2"; shift ;;
    --bench-quick) BENCH_QUICK=1 ;;
    --ptb-full) PTB_FULL="$2"; ONLY="${ONLY},ptbfull"; shift ;;
    --allow-cpu) ALLOW_CPU=1 ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

RESULTS="${RESULTS:-$ROOT/experiments/benchmarks/results/gpu/$(date +%Y%m%d-%H%M%S)}"
[[ "$RESULTS" == /* ]] || RESULTS="$PWD/$RESULTS"
cd "$ROOT" || exit 1
TESTS_TIMEOUT="${TESTS_TIMEOUT:-120}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-200}"
MINRNN_TIMEOUT="${MINRNN_TIMEOUT:-150}"
PTB_TIMEOUT="${PTB_TIMEOUT:-120}"
PTBFULL_TIMEOUT="${PTBFULL_TIMEOUT:-540}"
PTB_RUNS="${PTB_RUNS:-$ROOT/runs/gpu}"
if [[ -n "$PTB_FULL" && ! " medium large smoke " == *" $PTB_FULL "* ]]; then
  echo "gpu_check: --ptb-full takes medium, large or smoke (CPU check), got $PTB_FULL" >&2
  exit 2
fi
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-300}"
GPU_VENV="${GPU_VENV:-$HOME/.cache/lstm_jax/venv-gpu}"
JAX_PIP_SPEC="${JAX_PIP_SPEC:-jax[cuda12]>=0.10.2}"
DATA="${LSTM_JAX_DATA:-$ROOT/../shared/data}"
PYTHON="${PYTHON:-python3}"

wants() { [[ ",$ONLY," == *",$1,"* ]]; }

# The commands of each stage ($PYTHON is resolved at run time).
install_cmd() {
  echo "$PYTHON -m venv --system-site-packages $GPU_VENV &&" \
    "$GPU_VENV/bin/python -m pip install --timeout 30 --retries 1 -q" \
    "-e '.[test,torch]' '$JAX_PIP_SPEC'"
}
tests_cmd() {
  echo "$PYTHON -m pytest tests -m gpu -q -o addopts= -p no:cacheprovider --timeout=100" \
    "--junitxml=$RESULTS/gpu_tests.xml"
}
bench_cmd() {
  # pallas first: every ratio is a peer (auto = cuDNN for the float32 LSTM, the scan,
  # Flax, torch's cuDNN LSTM and GRU) over the Pallas kernel.
  local args="--cases lstm,gru,zaremba,bf16 --backends pallas,auto,scan --rounds 3"
  ((BENCH_QUICK)) && args="--quick --cases lstm,gru --backends pallas,auto,scan --rounds 1"
  echo "$PYTHON -m experiments.benchmarks.run $args --out $RESULTS/bench"
}
minrnn_cmd() {
  echo "$PYTHON -m experiments.benchmarks.min_rnn_speed$( ((BENCH_QUICK)) && echo " --quick")" \
    "--out $RESULTS/min_rnn"
}
ptb_cmd() {
  # epochs=0 counts steps instead of epochs; the per-epoch settings then need values
  # in steps: no decay, no periodic evaluation, one checkpoint at the end.
  echo "$PYTHON -m experiments.run --config experiments/configs/ptb.py:medium" \
    "--config.epochs=0 --config.steps=$PTB_STEPS --config.optimizer.decay_rate=1.0" \
    "--config.eval_every=0 --config.checkpoint_every=$PTB_STEPS --config.log_every=50" \
    "--config.eval_batches=20 --config.eval_test=False" \
    "--data_dir $DATA --workdir $RESULTS/ptb_medium &&" \
    "$PYTHON -m experiments.benchmarks.train_throughput $RESULTS/ptb_medium" \
    "--json $RESULTS/ptb_tokens_per_s.json"
}
ptbfull_cmd() {
  # --resume: the first command starts the run, each later one continues where the last
  # one's SIGTERM left it (a checkpoint at that step), with the same batches.
  echo "$PYTHON -m experiments.run --config experiments/configs/ptb.py:$PTB_FULL" \
    "--config.progress=False --data_dir $DATA --workdir $PTB_RUNS/ptb_$PTB_FULL --resume"
}

if ((DRY_RUN)); then
  echo "results: $RESULTS"
  echo "[setup] if \`$PYTHON -c 'import jax; print(jax.default_backend())'\` is not gpu:"
  echo "  $(install_cmd)   (timeout ${INSTALL_TIMEOUT}s; skipped with --no-install)"
  wants tests && echo "[tests] (timeout ${TESTS_TIMEOUT}s) $(tests_cmd)"
  wants bench && echo "[bench] (timeout ${BENCH_TIMEOUT}s) $(bench_cmd)"
  wants minrnn && echo "[minrnn] (timeout ${MINRNN_TIMEOUT}s) $(minrnn_cmd)"
  wants ptb && echo "[ptb] (timeout ${PTB_TIMEOUT}s) $(ptb_cmd)"
  wants ptbfull && echo "[ptbfull] (SIGTERM at ${PTBFULL_TIMEOUT}s) $(ptbfull_cmd)"
  exit 0
fi

mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
note() { echo "gpu_check: $*" | tee -a "$LOG"; }

backend() { "$1" -c 'import jax; print(jax.default_backend())' 2>/dev/null | tail -1; }

# --- setup: a python whose jax sees the GPU -------------------------------------------
if [[ "$(backend "$PYTHON")" != gpu ]]; then
  if [[ -x "$GPU_VENV/bin/python" && "$(backend "$GPU_VENV/bin/python")" == gpu ]]; then
    PYTHON="$GPU_VENV/bin/python"
  elif ((INSTALL)); then
    note "jax sees no GPU from $PYTHON: installing into $GPU_VENV (log: install.log)"
    timeout --kill-after=10 "$INSTALL_TIMEOUT" bash -c "$(install_cmd)" \
      >"$RESULTS/install.log" 2>&1 || note "install failed or timed out (see install.log)"
    [[ "$(backend "$GPU_VENV/bin/python")" == gpu ]] && PYTHON="$GPU_VENV/bin/python"
  fi
fi
BACKEND="$(backend "$PYTHON")"
note "python: $PYTHON (jax backend: ${BACKEND:-none})"
if [[ "$BACKEND" != gpu ]] && ! ((ALLOW_CPU)); then
  note "jax sees no GPU; stopping (--allow-cpu runs the stages anyway)"
  exit 2
fi
export LSTM_JAX_DATA="$DATA"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"  # torch too

{
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  else
    echo "no nvidia-smi"
  fi
  "$PYTHON" - <<'EOF' 2>&1
import jax
print("jax", jax.__version__, jax.devices())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("torch: not installed")
EOF
} >"$RESULTS/environment.txt"
tee -a "$LOG" <"$RESULTS/environment.txt"

declare -A STATUS
run_stage() {  # name, time limit, command
  local name="$1" limit="$2" cmd="$3" start rc
  note "[$name] $cmd"
  start=$SECONDS
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$RESULTS/$name.log" 2>&1
  rc=$?
  case $rc in
    0) STATUS[$name]="ok" ;;
    124|137) STATUS[$name]="TIMEOUT after ${limit}s" ;;
    *) STATUS[$name]="FAILED (exit $rc)" ;;
  esac
  STATUS[$name]+=" in $((SECONDS - start))s, log $RESULTS/$name.log"
  note "[$name] ${STATUS[$name]}"
}

wants tests && run_stage tests "$TESTS_TIMEOUT" "$(tests_cmd)"
wants bench && run_stage bench "$BENCH_TIMEOUT" "$(bench_cmd)"
wants minrnn && run_stage minrnn "$MINRNN_TIMEOUT" "$(minrnn_cmd)"
if wants ptb; then
  if [[ -f "$DATA/ptb/ptb.train.txt" ]]; then
    run_stage ptb "$PTB_TIMEOUT" "$(ptb_cmd)"
  else
    STATUS[ptb]="skipped: no $DATA/ptb/ptb.train.txt (set LSTM_JAX_DATA)"
  fi
fi
if wants ptbfull; then
  run_stage ptbfull "$PTBFULL_TIMEOUT" "$(ptbfull_cmd)"
  STATUS[ptbfull]+="; $("$PYTHON" - "$PTB_RUNS/ptb_$PTB_FULL" <<'EOF'
import glob, json, sys
summaries = sorted(glob.glob(f"{sys.argv[1]}/*/seed*/summary.json"))
if not summaries:
    print("no summary yet: run the same command again")
for path in summaries:
    s = json.load(open(path))
    ppl = ", ".join(
        f"{k} {v:.1f}" for k, v in s.get("final", {}).items() if k.endswith("perplexity")
    )
    done = "completed" if s.get("status") == "completed" else "stopped: run it again"
    print(f"{path}: {done} at step {s.get('stopped_at_step', '?')}; {ppl}")
EOF
)"
fi

# --- summary --------------------------------------------------------------------------
{
  echo "=== gpu_check summary ($(date -Iseconds)) ==="
  echo "device: $(head -1 "$RESULTS/environment.txt")"
  echo "python: $PYTHON, jax backend ${BACKEND:-none}"
  for name in tests bench minrnn ptb ptbfull; do
    wants $name && echo "$name: ${STATUS[$name]:-not run}"
  done
  if [[ -f "$RESULTS/gpu_tests.xml" ]]; then
    "$PYTHON" - "$RESULTS/gpu_tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"gpu tests: {passed} passed, {n['failures']} failed, {n['errors']} errors, "
      f"{n['skipped']} skipped")
EOF
  fi
  if [[ -f "$RESULTS/bench/table.md" ]]; then
    echo "benchmark (peer time / lstm_jax[auto] time, > 1: ours faster): $RESULTS/bench"
    sed -n '/^| shape/,/^$/p' "$RESULTS/bench/table.md"
  fi
  if [[ -f "$RESULTS/min_rnn/table.md" ]]; then
    echo "min RNNs (ms per forward + backward; LSTM time / this one): $RESULTS/min_rnn"
    sed -n '/^| T /,/^$/p' "$RESULTS/min_rnn/table.md" | head -n 7
  fi
  if [[ -f "$RESULTS/ptb_tokens_per_s.json" ]]; then
    echo "ptb medium: $(tail -1 "$RESULTS/ptb.log")"
  fi
} 2>&1 | tee "$RESULTS/summary.txt" | tee -a "$LOG"

for name in tests bench minrnn ptb; do
  if wants $name && [[ "${STATUS[$name]:-}" != ok* && "${STATUS[$name]:-}" != skipped* ]]; then
    exit 1
  fi
done
exit 0
