#!/usr/bin/env bash
# The main job: install what is missing, build, start the local stack (private PostgreSQL and
# nats-server unless DATABASE_URL and NATS_URL are set) and run the demo suite, deploy/suite/tiny.
# Extra arguments go to `prl up`, e.g. `--exit-after-demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo build --release --locked --bin prl --bin prl-trainer
exec target/release/prl up --demo deploy/suite/tiny --trainers 2 "$@"
