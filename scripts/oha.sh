#!/usr/bin/env bash
# oha, the HTTP load generator the analytics bench measures the read API with (a second process
# sending requests at a fixed rate), built once from crates.io into $PRL_CACHE and pinned.
# Prints the binary's path.
set -euo pipefail
VERSION=1.16.0
PRL_CACHE="${PRL_CACHE:-$HOME/.cache/prl}"
ROOT="$PRL_CACHE/oha-$VERSION"
mkdir -p "$PRL_CACHE"
exec 9>"$ROOT.lock"
flock 9
if [ ! -x "$ROOT/bin/oha" ]; then
  echo "oha.sh: building oha $VERSION from crates.io (a few minutes, once)" >&2
  cargo install --quiet --locked --root "$ROOT" "oha@$VERSION" >&2
fi
echo "$ROOT/bin/oha"
