#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests against real PostgreSQL and NATS
# JetStream (private servers are started unless DATABASE_URL and NATS_URL are set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo fmt --all --check
# The query macros' recorded descriptions (api/.sqlx/) still match the queries and migrations.
bash scripts/sqlx_prepare.sh --check
cargo clippy --locked --all-targets -- -D warnings
# The fault tests run the prl and prl-trainer binaries as a user would; cargo test builds
# only the test harness of a package whose own tests do not need them.
cargo build --locked --bin prl --bin prl-trainer
# The artifact store's tests talk to a real S3-compatible server, built once from crates.io.
bash scripts/s3_server.sh >/dev/null
cargo test --workspace --locked
# Property-based requests against a private stack's OpenAPI document (scripts/schemathesis.sh).
bash scripts/schemathesis.sh --max-examples 10 --exclude-checks positive_data_acceptance
