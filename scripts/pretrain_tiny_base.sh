#!/usr/bin/env bash
# Pretrains the `tiny-base` preset on sequential solutions of the built-in task and writes it to
# trainer-daemon/assets/tiny-base (weights, config, tokenizer and prl.json, which records the
# command, the time it took and the accuracy it reached). Seeded. Extra arguments go to the
# program (see trainer-daemon/examples/pretrain_tiny_base.rs: --seed, --steps, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/libtorch.sh
cargo run --release --locked -p prl-trainer --example pretrain_tiny_base -- \
  --out trainer-daemon/assets/tiny-base "$@"
