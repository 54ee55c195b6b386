#!/usr/bin/env bash
# The tests: install what is needed (the project with its test extra; Chromium and PostgreSQL from Debian when
# running as root without them), then ruff and pytest. Extra arguments go to pytest, e.g. scripts/test.sh -k space
set -euo pipefail
source "$(dirname "$0")/_bootstrap.sh" test
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing ${missing[*]} from Debian for the browser and database tests ..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The MNIST tests read a local copy when there is one (no download needed).
if [ -z "${TUNING_DATA_DIR:-}" ] && [ -f "$ROOT/../shared/datasets/mnist.npz" ]; then
  export TUNING_DATA_DIR="$ROOT/../shared/datasets"
fi
ruff check .
exec python -m pytest "$@"
