#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests against real PostgreSQL and NATS
# JetStream (private servers are started unless DATABASE_URL and NATS_URL are set).
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh checkout builds everything once: incremental compilation's caches only cost time here.
export CARGO_INCREMENTAL=0
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
cargo test --workspace --locked
# The fault scenarios (tests/faults, `test = false`: run only when named), each printing its
# audit. (Run beside the other tests, they took as long in all: both keep the cores busy.)
cargo test --workspace --locked --test faults -- --nocapture
# Property-based requests against a private stack's OpenAPI document (scripts/schemathesis.sh).
bash scripts/schemathesis.sh --max-examples 10 --exclude-checks positive_data_acceptance
