# Sourced by tune.sh and test.sh: make ./.venv hold this project and its dependencies, once.
# Usage: source scripts/_bootstrap.sh EXTRA   (EXTRA: an optional-dependency group of pyproject.toml, e.g. test, or
# "" for none; always pass it: `source` without arguments hands the caller's own arguments to this file)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TUNING_VENV:-$ROOT/.venv}"
EXTRA="${1:-}"

find_python() {
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 or newer is needed (found: $(python3 --version 2>&1)). Fix: install it, or set PYTHON=/path/to/python3.11." >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)"
  echo "Creating the virtual environment $VENV with $PY ..." >&2
  "$PY" -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed or the requested extra is not installed yet: the stamp holds one line
# "<hash of pyproject.toml> <extra>" per installed extra (an empty extra is satisfied by any of them).
STAMP="$VENV/.tuning-installed"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ -n "$EXTRA" ]; then WANT="^$HASH $EXTRA\$"; else WANT="^$HASH "; fi
if [ ! -f "$STAMP" ] || ! grep -q "$WANT" "$STAMP"; then
  SPEC="$ROOT"
  [ -n "$EXTRA" ] && SPEC="$ROOT[$EXTRA]"
  echo "Installing tuning${EXTRA:+[$EXTRA]} and its dependencies into $VENV (about a minute the first time) ..." >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e "$SPEC" >&2
  { grep "^$HASH " "$STAMP" 2>/dev/null || true; echo "$HASH $EXTRA"; } > "$STAMP.new" && mv "$STAMP.new" "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
