#!/usr/bin/env bash
# An S3-compatible server for the artifact store's tests: s3s-fs (a real S3 server over a
# directory, with SigV4 authentication), built once from crates.io into $PRL_CACHE and pinned.
# Prints the binary's path.
set -euo pipefail
VERSION=0.14.1
PRL_CACHE="${PRL_CACHE:-$HOME/.cache/prl}"
ROOT="$PRL_CACHE/s3s-fs-$VERSION"
mkdir -p "$PRL_CACHE"
# Tests running at once may ask for it: one builds it, the others wait.
exec 9>"$ROOT.lock"
flock 9
if [ ! -x "$ROOT/bin/s3s-fs" ]; then
  echo "s3_server.sh: building s3s-fs $VERSION from crates.io (a few minutes, once)" >&2
  cargo install --quiet --locked --features binary --root "$ROOT" "s3s-fs@$VERSION" >&2
fi
echo "$ROOT/bin/s3s-fs"
