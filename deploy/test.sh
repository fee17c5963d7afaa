#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests against real PostgreSQL and NATS
# JetStream (private servers are started unless DATABASE_URL and NATS_URL are set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo fmt --all --check
# Clippy, with prl-api's query macros online against a database with every migration applied:
# what they see must be what api/.sqlx/ records (scripts/sqlx_prepare.sh).
bash scripts/sqlx_prepare.sh --check cargo clippy --locked --all-targets -- -D warnings
# --all-targets leaves out a target marked `test = false`: the fault tests.
cargo clippy --locked --workspace --test faults -- -D warnings
# The fault tests run the prl and prl-trainer binaries as a user would; cargo test builds
# only the test harness of a package whose own tests do not need them.
cargo build --locked --bin prl --bin prl-trainer
# The artifact store's tests talk to a real S3-compatible server, built once from crates.io.
bash scripts/s3_server.sh >/dev/null
cargo test --workspace --locked --no-run
cargo test --workspace --locked --test faults --no-run
# Two suites spend much of their time waiting (outages, leases, a stack starting), so they run
# beside the others, each into a log shown when it ends: the fault scenarios (tests/faults,
# `test = false`, so run only when named; each prints its audit) and schemathesis's
# property-based requests against a private stack's OpenAPI document (scripts/schemathesis.sh).
LOGS="$(mktemp -d)"
declare -A BESIDE=()
beside() {
  local name="$1"
  shift
  "$@" >"$LOGS/$name" 2>&1 &
  BESIDE[$name]=$!
}
beside faults cargo test --workspace --locked --test faults -- --nocapture
beside schemathesis bash scripts/schemathesis.sh --max-examples 10 \
  --exclude-checks positive_data_acceptance
failed=()
cargo test --workspace --locked || failed+=("cargo test")
for name in faults schemathesis; do
  wait "${BESIDE[$name]}" || failed+=("$name")
  echo "--- $name ---"
  cat "$LOGS/$name"
done
rm -rf "$LOGS"
[ ${#failed[@]} -eq 0 ] || { echo "test.sh: failed: ${failed[*]}" >&2; exit 1; }
