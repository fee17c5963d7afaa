#!/usr/bin/env bash
# Writes tests/fixtures/reward_parity.json: the reference answer check's verdict on a corpus of
# tricky answers, which schema/tests/reward_parity.rs compares with prl's. Run by hand after
# changing the corpus; the venv is cached under ~/.cache/prl/verl-ref.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PRL_CACHE:-$HOME/.cache/prl}/verl-ref"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-deps -r scripts/requirements-verl-reward.txt
"$venv/bin/python" scripts/make_reward_fixture.py tests/fixtures/reward_parity.json
