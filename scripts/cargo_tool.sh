#!/usr/bin/env bash
# A Rust tool built once from crates.io, pinned, into $PRL_CACHE/CRATE-VERSION; prints its binary's
# path. Callers running at once wait while one builds it.
#
#   cargo_tool.sh CRATE VERSION BINARY [cargo install options...]
set -euo pipefail
CRATE="$1" VERSION="$2" BINARY="$3"
shift 3
PRL_CACHE="${PRL_CACHE:-$HOME/.cache/prl}"
ROOT="$PRL_CACHE/$CRATE-$VERSION"
mkdir -p "$PRL_CACHE"
exec 9>"$ROOT.lock"
flock 9
if [ ! -x "$ROOT/bin/$BINARY" ]; then
  echo "cargo_tool.sh: building $CRATE $VERSION from crates.io (a few minutes, once)" >&2
  cargo install --quiet --locked --root "$ROOT" "$@" "$CRATE@$VERSION" >&2
fi
echo "$ROOT/bin/$BINARY"
