#!/usr/bin/env bash
# Regenerates tests/fixtures/tiny-sft-unseen, the SFT checkpoint the RL learning check and the
# rollout benchmark start from, by running scripts/fixtures/tiny-sft-unseen.toml on a private
# local stack (release build; about 10 minutes on 2 cores). Prints the checkpoint's evaluations.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin prl --bin prl-trainer
home="$(mktemp -d)"
port=8097
target/release/prl --home "$home" up --port "$port" >"$home/up.log" 2>&1 &
stack=$!
trap 'kill -INT $stack; wait $stack || true; rm -rf "$home"' EXIT
for _ in $(seq 120); do [ -f "$home/stack.json" ] && break; sleep 1; done
id=$(target/release/prl --home "$home" submit scripts/fixtures/tiny-sft-unseen.toml | awk '{print $3}')
target/release/prl --home "$home" watch "$id"
target/release/prl --home "$home" results "$id"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$home/stack.json")
uri=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/experiments/$id" |
  python3 -c 'import json,sys; print([r for r in json.load(sys.stdin)["runs"] if r["checkpoint"]][-1]["checkpoint"]["uri"])')
src="$(dirname "${uri#file://}")"
dest=tests/fixtures/tiny-sft-unseen
rm -rf "$dest" && mkdir -p "$dest"
cp "$src"/{config.json,model.safetensors,tokenizer.json,prl.json} "$dest/"
echo "wrote $dest from $src"
