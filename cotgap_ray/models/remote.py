"""Models resolved on the node that runs them: the driver handles specs and fingerprints, never a model directory.

    facts = describe_remote(["tiny:llama@1"], cfg, "generation")   # a Ray task on a generation node resolves each
    facts[0].model.fingerprint, facts[0].context_limit             # what the driver's checks and cache keys need
    model = local_model(spec, fingerprint, models_dir_setting(cfg))  # inside an actor or task: this node's copy

On a real cluster the head has no GPU and its disk cannot hold a 72B teacher; a path resolved on one node does not
exist on another. So every stage that loads a model asks for its spec and fingerprint and resolves it where it runs
(its node's model cache: a packaged model is converted, a tiny one built, a hub model downloaded there, once per
node), and checks the fingerprint: a local directory that differs between nodes would otherwise mix two models in
one run. `describe_remote` runs with the resources of the stage that will use the model (the generation engine's node
type for teachers, the evaluation engine's for the student), so the node that resolves a model is one that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cotgap_ray.errors import InputError
from cotgap_ray.models.resolve import ResolvedModel, resolve_model


@dataclass(frozen=True)
class ModelFacts:
    """What the driver may know about a model without holding it. `model.path` is valid only on `node_id`."""

    model: ResolvedModel
    context_limit: int | None  # max_position_embeddings (None: the config does not say)
    linear_modules: list[str]  # leaf names of its nn.Linear layers (LoRA targets), from a meta-device skeleton
    node_id: str  # the Ray node that resolved it ("" outside Ray)


class ModelMismatch(InputError):
    """A spec resolved to other weights on this node than where the run first resolved it."""


def models_dir_setting(cfg) -> str | None:
    """The model cache every node uses: the config's cache_dir/models when the config names one, else None, which
    each node turns into its own default ($COTGAP_MODELS, $COTGAP_CACHE/models, ~/.cache/cotgap_ray/models:
    models.store.root). Never the storage root: weights stay on the node that runs them."""
    from pathlib import Path

    return str(Path(cfg.cache_dir).expanduser() / "models") if getattr(cfg, "cache_dir", None) else None


def local_model(spec: str, fingerprint: str | None, models_dir: str | None) -> ResolvedModel:
    """`spec` resolved on this node (built, converted or downloaded into its model cache once), checked against the
    fingerprint the run first saw (None: not checked)."""
    model = resolve_model(spec, models_dir)
    if fingerprint is not None and model.fingerprint != fingerprint:
        import socket

        raise ModelMismatch(f"model {spec!r} resolved to other weights on {socket.gethostname()} (fingerprint "
                            f"{model.fingerprint}, expected {fingerprint}): a local directory must hold the same files "
                            f"on every node; put it on the shared storage, or use a packaged or hub model")
    return model


def describe_local(spec: str, models_dir: str | None) -> ModelFacts:
    """ModelFacts of `spec` resolved in this process (the body of describe_remote's task)."""
    from cotgap_ray.engines.options import model_context_limit
    from cotgap_ray.training.examples import linear_module_names, student_skeleton

    model = resolve_model(spec, models_dir)
    from cotgap_ray.controls import is_control
    from cotgap_ray.models.resolve import split_variant

    if is_control(split_variant(spec)[0]):  # no model (controls.py): no context limit, no layers, no node
        return ModelFacts(model, None, [], "")
    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray worker there is no node to name
        node = ""
    return ModelFacts(model, model_context_limit(model.path), linear_module_names(student_skeleton(model.path)), node)


# How long resolving may take once a task has its node: a packaged model converts in seconds, but a 72B hub model is
# ~145 GB to download. Not generation.timeout_s: that bounds one shard's generation (the fault battery sets 1.5 s).
RESOLVE_S = 3600.0


def describe_remote(specs: list[str], cfg, stage: str, timeout_s: float | None = None) -> list[ModelFacts]:
    """ModelFacts of each spec, resolved by one Ray task each on a node of `stage`'s type ("generation" for teachers,
    "evaluator" for the student: stage_request), in parallel. The driver loads nothing. Waits up to
    generation.node_wait_s for a node plus RESOLVE_S to resolve (`timeout_s` overrides), then RunFailure."""
    import ray

    from cotgap_ray.errors import RunFailure

    from cotgap_ray.controls import is_control
    from cotgap_ray.models.resolve import split_variant

    request = stage_request(cfg, stage)
    options = {"num_cpus": request.pop("CPU", 1.0), "num_gpus": 0, "max_retries": 2}
    if request:
        options["resources"] = request
    # A control teacher (controls.py) has no model: its facts are known here, without a node.
    controls = {spec: describe_local(spec, None) for spec in specs if is_control(split_variant(spec)[0])}
    task = ray.remote(describe_local).options(name=f"cotgap-resolve-{stage}", **options)
    refs = [task.remote(spec, models_dir_setting(cfg)) for spec in specs if spec not in controls]
    wait = timeout_s or cfg.generation.node_wait_s + RESOLVE_S
    try:
        resolved = iter(ray.get(refs, timeout=wait))
        return [controls[spec] if spec in controls else next(resolved) for spec in specs]
    except ray.exceptions.GetTimeoutError:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise RunFailure(f"resolving {', '.join(specs)} on a {stage} node ({stage_request(cfg, stage)}) took more than "
                         f"{wait:.0f}s: no such node came up, or the download stalled; `ray status` shows pending "
                         f"demands") from None
    except ray.exceptions.RayTaskError as e:  # bad input found on the node (unknown model, bad directory): its one
        if isinstance(e.cause, InputError):   # clear message, not Ray's wrapper with the remote traceback
            raise e.cause from None
        raise


def stage_request(cfg, stage: str) -> dict:
    """What a model-resolving task asks for: one CPU and the node-type markers (custom resources, accelerator type) of
    the stage that runs the model, no GPU (resolving needs none, and must not wait for a GPU a trial holds)."""
    from cotgap_ray.cluster import full_request

    if stage == "generation":
        markers, accelerator = cfg.generation.resources, cfg.generation.accelerator_type
    elif stage == "evaluator":
        markers, accelerator = cfg.train.resources, cfg.train.accelerator_type
    else:
        raise ValueError(f"stage {stage!r}: generation | evaluator")
    return full_request({"CPU": 1.0, **markers}, accelerator)
