#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests against real PostgreSQL and NATS
# JetStream (private servers are started unless DATABASE_URL and NATS_URL are set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo test --workspace --locked
