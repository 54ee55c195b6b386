#!/usr/bin/env bash
# The tests: install what is needed (the project with its test extra; Chromium from Debian, for the HTML report's
# browser test, and PostgreSQL, for the scale-out tests, when running as root without them), then ruff and pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k space. `--fast` runs only the tests not marked slow
# (pytest -m "not slow"): no training, no subprocess, no server; under a minute.
set -euo pipefail
source "$(dirname "$0")/_bootstrap.sh" test
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing chromium from Debian for the browser test ..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The scale-out tests start a throwaway PostgreSQL cluster (tests/servers.py): install Debian's server when root.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing postgresql from Debian for the scale-out tests ..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# The MNIST tests read a local copy when there is one (no download needed).
if [ -z "${TUNING_DATA_DIR:-}" ] && [ -f "$ROOT/../shared/datasets/mnist.npz" ]; then
  export TUNING_DATA_DIR="$ROOT/../shared/datasets"
fi
ruff check .
args=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then args+=(-m "not slow"); else args+=("$arg"); fi
done
# The suite, and the fast tier, run in TUNING_TEST_PROCESSES (default 2) pytest-xdist processes, file by file (a
# file's servers start once, in one process): the fast tier took 75 s in one process and 32 s in two here.
# An -n of your own wins; 1 runs in one process.
processes="${TUNING_TEST_PROCESSES:-2}"
if [ "$processes" != 1 ]; then
  args=(-n "$processes" --dist loadfile ${args[@]+"${args[@]}"})
fi
exec python -m pytest ${args[@]+"${args[@]}"}
