# Sourced by scripts/*: create or refresh .venv with fedrt[dev] at the versions pinned in
# constraints.txt (re-installs when pyproject.toml or constraints.txt changes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "fedrt needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    echo "creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv .venv
fi
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ "$(cat .venv/.fedrt-installed 2>/dev/null || true)" != "$want" ]]; then
    echo "installing fedrt[dev] into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
    echo "$want" > .venv/.fedrt-installed
fi
