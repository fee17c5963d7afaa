#!/usr/bin/env bash
# Runs the parser's fuzz target for a bounded time (default 300 s) and prints libFuzzer's summary.
# cargo-fuzz wants a nightly toolchain; where there is none, this builds the same target on stable
# with the instrumentation flags cargo-fuzz passes (minus the address sanitizer, which needs
# nightly). Usage: scripts/fuzz_parser.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-300}"
mkdir -p corpus/parse artifacts/parse
# Seeds: well-formed and broken responses.
printf '%s' 'a<Parallel><Path>1+1=2</Path><Path>2</Path></Parallel><Summary>2</Summary> Final Answer: 2' > corpus/parse/valid
printf '%s' '<Parallel><Path>a<Parallel></Path><Path>b' > corpus/parse/broken
if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
    exec cargo +nightly fuzz run parse corpus/parse -- -max_total_time="$seconds"
fi
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# With an explicit --target, RUSTFLAGS reach the target's crates only, not build scripts.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bin parse --target-dir target --target "$host"
"./target/$host/release/parse" corpus/parse -artifact_prefix=artifacts/parse/ -max_total_time="$seconds" \
    -max_len=4096 -print_final_stats=1
