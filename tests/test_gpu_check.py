"""benchmarks/gpu_check.py, the prepared GPU check, run as a GPU session would run it, but on the CPU with tiny sizes
(`--device cpu --small`): every section of its table is there, the JSON holds the same numbers, every sanity check
passes here (the project's loop and HF engine put every parameter on the device, in the dtype hardware.py picks), no
Ray or vLLM module was imported; and `--device cuda` without CUDA is one `error:` line and exit status 2.

No Ray is started: the script is meant for a GPU machine that has neither Ray nor vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("run", "dtype", "matmul", "model", "train", "generate", "score", "imports", "checks")
CHECKS = ("dtype_rule", "bf16_matmul", "train_on_device", "train_dtype_is_rule", "train_loss_finite",
          "engine_on_device", "engine_dtype_is_rule", "adapter_on_device", "no_ray_vllm")


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH: the repository under test (the venv's install may point at another checkout).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def table_rows(stdout: str) -> dict[tuple[str, str], str]:
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["section", "key", "value"], stdout
    rows = {}
    for line in lines[1:]:
        section, key, value = line.split(maxsplit=2)
        rows[(section, key)] = value
    return rows


def test_small_cpu_run_prints_the_table_and_writes_the_same_numbers(tmp_path):
    out = tmp_path / "results" / "check.json"
    done = run_script("--device", "cpu", "--small", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    results = json.loads(out.read_text())

    assert tuple(results) == SECTIONS
    assert {section for section, _ in rows} == set(SECTIONS)
    # Every JSON number is a table row, written the same way.
    for section, values in results.items():
        for key in values:
            assert (section, key) in rows, f"{section}.{key} is in the JSON but not in the table"
    assert rows[("train", "param_devices")] == "cpu"
    assert rows[("imports", "ray_or_vllm")] == "-"

    assert results["checks"] == {name: True for name in CHECKS}
    assert results["dtype"]["device"] == "cpu"
    rule = results["dtype"]["auto"]
    assert rule in ("bfloat16", "float32")  # the CPU half of hardware.py's rule
    train, generate, score = results["train"], results["generate"], results["score"]
    assert train["param_devices"] == ["cpu"] and train["frozen_dtype"] == [rule]
    assert train["adapter_dtype"] == ["float32"] and train["tokens"] > 0 and train["tok_s_epoch1"] > 0
    assert train["peak_gib"] is None  # CUDA memory only
    assert generate["engine"] == "hf" and generate["device"] == "cpu" and generate["dtype"] == rule
    assert generate["tokens"] > 0 and generate["tok_s"] > 0
    assert score["param_devices"] == ["cpu"] and score["lora_dtype"] == ["float32"]
    assert score["base_tokens"] > 0 and score["adapter_tokens"] > 0
    assert 0 <= score["texts_changed"] <= score["problems"]
    assert results["imports"]["ray_or_vllm"] == []
    assert 0 < results["matmul"]["bf16_rel_err"] < 2e-2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_one_error_line_and_status_2(tmp_path):
    done = run_script("--device", "cuda", "--small", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda:") and "--device cpu" in lines[0], lines
