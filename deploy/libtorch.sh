#!/usr/bin/env bash
# Installs libtorch for tch: PyTorch 2.13.0 (CPU build, with the two small CUDA runtime libraries
# that libtorch_cpu links) into a venv cached under ~/.cache/prl, and links its `torch`
# directory to .libtorch, where .cargo/config.toml points LIBTORCH. Set PRL_TORCH_CUDA=1 for
# the full CUDA build (4.7 GB) on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PRL_CACHE:-$HOME/.cache/prl}"
if [ "${PRL_TORCH_CUDA:-0}" = 1 ]; then venv="$cache/torch-2.13.0-cuda"; else venv="$cache/torch-2.13.0-cpu"; fi
if ! compgen -G "$venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so" >/dev/null; then
  python3 -m venv "$venv" || { echo "python3 -m venv failed: install Debian's python3-venv" >&2; exit 1; }
  if [ "${PRL_TORCH_CUDA:-0}" = 1 ]; then
    "$venv/bin/pip" install -q torch==2.13.0
  else
    "$venv/bin/pip" install -q --no-deps torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
fi
torch_dir=$(compgen -G "$venv/lib/python3*/site-packages/torch" | head -n 1)
if [ "$(readlink .libtorch 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" .libtorch
  # torch-sys rebuilds only when LIBTORCH's value changes, not its target.
  cargo clean -q -p torch-sys 2>/dev/null || true
fi
