#!/usr/bin/env bash
# Installs what prl needs on a Debian machine that has a Rust toolchain: the PostgreSQL server
# (for the private cluster `prl up` and the tests start), nats-server, a C compiler, and the
# tools the tests use.
# It installs only what is missing, and does nothing on a machine that has it all.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || missing+=(postgresql)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v c++ >/dev/null || missing+=(g++)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
# scripts/schemathesis.sh waits for the stack with curl; the NATS cluster fault test makes
# network namespaces with ip.
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# deploy/test.sh checks formatting and lints; a minimal rustup profile has neither tool.
if command -v rustup >/dev/null; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi
bash "$(dirname "$0")/libtorch.sh"
bash "$(dirname "$0")/../scripts/setup_smollm2.sh"
bash "$(dirname "$0")/web.sh"
