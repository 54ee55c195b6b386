#!/usr/bin/env bash
# The real-GPU check of `tuning run --gpus all`, for a machine with NVIDIA GPUs (none is lent to this project's
# CI): a two-trial study in mixed_float16 on every visible GPU, one worker per GPU, in a temporary folder.
# It prints the trials with the GPU each ran on and fails unless every trial completed on a GPU.
# Usage: scripts/check_gpu.sh            (needs the CUDA build: .venv/bin/pip install -e '.[gpu]')
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
command -v nvidia-smi >/dev/null 2>&1 || { echo "check_gpu: nvidia-smi not found: no NVIDIA GPU here" >&2; exit 2; }
nvidia-smi -L
N_GPUS=$(nvidia-smi -L | grep -c '^GPU')
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/space.yaml" <<'YAML'
data: {dataset: mnist, train_size: 5000, validation_split: 0.1, test_size: 1000}
model: {family: cnn, depth: {low: 1, high: 2}, width: {per_layer: [16, 32]}, kernel_size: 3, dense_units: 128,
        dropout: 0.2}
train: {epochs: 1, batch_size: 128, learning_rate: 0.001, precision: mixed_float16}
objective: {metric: val_accuracy}
study: {name: check_gpu, n_trials: 2, seed: 0}
YAML
cd "$WORK"
PYTHONPATH="$ROOT" "$PY" -m tuning run space.yaml --gpus all --n-trials $((2 * N_GPUS)) --no-tracking
PYTHONPATH="$ROOT" "$PY" - <<'PYCODE'
import sys

import optuna

trials = optuna.load_study(study_name="check_gpu", storage="sqlite:///mlruns/optuna.db").trials
for t in trials:
    print(t.number, t.state.name, t.user_attrs.get("device"), t.value)
bad = [t.number for t in trials if t.state.name != "COMPLETE" or not t.user_attrs.get("device")]
sys.exit(f"check_gpu: trials {bad} did not complete on a GPU" if bad else 0)
PYCODE
echo "check_gpu: OK"
