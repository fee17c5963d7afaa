#!/usr/bin/env bash
# A pinned Python environment of its own for a tool prl talks to or measures itself against:
# `scripts/python_venv.sh NAME` makes $PRL_CACHE/NAME-venv from scripts/requirements-NAME.txt
# (again when the pins change) and prints its directory.
set -euo pipefail
NAME="${1:?usage: python_venv.sh NAME (scripts/requirements-NAME.txt)}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/scripts/requirements-$NAME.txt"
[ -f "$REQUIREMENTS" ] || { echo "python_venv.sh: no $REQUIREMENTS" >&2; exit 2; }
PRL_CACHE="${PRL_CACHE:-$HOME/.cache/prl}"
VENV="$PRL_CACHE/$NAME-venv"
# Tests running at once may ask for the same venv: one makes it, the others wait.
mkdir -p "$PRL_CACHE"
exec 9>"$VENV.lock"
flock 9
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q -r "$REQUIREMENTS" >&2
  cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi
echo "$VENV"
