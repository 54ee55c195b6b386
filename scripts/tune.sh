#!/usr/bin/env bash
# The main job: install what is needed, then run (or resume) a real tuning study on MNIST.
#   scripts/tune.sh                         # search_spaces/mnist_quick.yaml, about two minutes on 2 CPU cores
#   scripts/tune.sh search_spaces/mnist_cnn.yaml --n-trials 10
# Without internet, point TUNING_DATA_DIR at a folder holding mnist.npz (Keras's layout).
set -euo pipefail
source "$(dirname "$0")/_bootstrap.sh" ""  # no extra: the script's own arguments are for tuning run
if [ $# -eq 0 ] || [[ "$1" == -* ]]; then
  set -- search_spaces/mnist_quick.yaml "$@"
fi
exec tuning run "$@"
