#!/usr/bin/env bash
# Builds the web UI into web/dist (which the API serves at /) and installs what its browser tests
# need: the npm packages pinned by web/package-lock.json and Debian's Chromium. Skips the build
# when nothing under web/ changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/../web"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"
}

node_major() { node -e 'console.log(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ] || ! command -v npm >/dev/null; then
  echo "web: installing Node.js and npm"
  apt_install nodejs npm
  if [ "$(node_major)" -lt 20 ]; then
    echo "web: Node.js 20 or newer is needed to build the UI (found $(node --version 2>/dev/null || echo none))" >&2
    exit 1
  fi
fi
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "web: installing Chromium for the browser tests"
  apt_install chromium
fi

stamp=dist/.built-from
source_hash=$(cat package.json package-lock.json index.html vite.config.ts tsconfig.json openapi.json \
  $(find src -type f -not -path 'src/generated/*' | sort) | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$source_hash" ] && [ -d node_modules ]; then
  echo "web: up to date"
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
echo "$source_hash" > "$stamp"
echo "web: built into web/dist"
