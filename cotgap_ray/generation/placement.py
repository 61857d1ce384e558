"""Where teacher generation runs: the engine actors' layout (Placement) and the resource planning done before any
engine starts (which node types an engine may use, CPUs/GPUs per engine, how many engines fit, fail-fast checks).

    placement = Placement.from_config(cfg.generation)
    check_resources(jobs, placement)            # ResourceError naming the teacher and the node types on offer
    n = actor_count(job, placement)             # engines to start for one teacher

Node types come from cluster.offered_node_types(): the alive nodes, plus the types an autoscaler can launch, so a GPU
type that scales from zero counts. pipeline.py runs what this plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cotgap_ray.cluster import ResourceError, accelerator_resources, check_request, fits, offered_node_types, slots


@dataclass(frozen=True)
class Placement:
    """How generation is laid out on the cluster. `from_config` reads the same names from cfg.generation."""

    shard_size: int = 64  # problems per shard: the unit of work, of caching and of resume
    actors: int | None = None  # engines at once; None: every GPU slot (GPU cluster) or 1 (CPU), <= pending shards
    cpus_per_actor: float | None = None  # None: 1 with GPUs; on CPU machines all CPUs of the largest node
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    tensor_parallel: dict = field(default_factory=dict)  # teacher spec -> GPUs per engine (vLLM), default 1
    timeout_s: float = 1800.0  # engine start, and one shard: past it the worker is killed (hung engines)
    accelerator_type: str | None = None  # GPU type of the engines' nodes (cluster.yaml's accelerator_type:X)
    resources: dict = field(default_factory=dict)  # custom resources per engine actor, e.g. {"generation_node": 0.01}

    @classmethod
    def from_config(cls, gen_cfg) -> Placement:
        names = [f for f in cls.__dataclass_fields__ if hasattr(gen_cfg, f)]
        return cls(**{f: getattr(gen_cfg, f) for f in names})

    def tp(self, spec: str) -> int:
        return int(self.tensor_parallel.get(spec, 1))

    def custom_resources(self) -> dict:
        """What pins an engine actor to its node type: the custom resources plus the accelerator_type marker."""
        return {**self.resources, **accelerator_resources(self.accelerator_type)}


def check_resources(jobs: list, placement: Placement, node_types: list[dict] | None = None) -> None:
    """Fail before anything starts when no node (alive, or of a type the autoscaler can launch) can host one engine
    of some teacher: more GPUs (or CPUs) than the largest node has, or an accelerator type or custom resource
    (generation.accelerator_type / generation.resources) that no node type offers. `node_types` defaults to
    offered_node_types() (pass a snapshot to check several stages against one view of the cluster)."""
    node_types = offered_node_types() if node_types is None else node_types
    max_gpus = max((t["resources"].get("GPU", 0) for t in node_types), default=0)
    for job in jobs:
        need = job.tp if job.tp > 1 else actor_gpus(placement, node_types)
        if need > max_gpus:
            raise ResourceError(f"teacher {job.spec} needs {need:g} GPU(s) on one node (tensor_parallel={job.tp}, "
                                f"gpus_per_actor={placement.gpus_per_actor}) but the largest node has {max_gpus:g}; "
                                f"lower tensor_parallel for this teacher or add a larger GPU node")
        # CPUs, custom resources, accelerator type, and all of them together on one node type:
        check_request({"CPU": actor_cpus(placement, node_types), "GPU": need, **placement.resources},
                      f"generation actor of teacher {job.spec} (generation.cpus_per_actor / gpus_per_actor / "
                      f"tensor_parallel / resources)", placement.accelerator_type,
                      setting="generation.accelerator_type", node_types=node_types)


def engine_node_types(placement: Placement, node_types: list[dict] | None = None) -> list[dict]:
    """The node types an engine may land on: those with its custom resources and accelerator type (all without)."""
    node_types = offered_node_types() if node_types is None else node_types
    custom = placement.custom_resources()
    return [t for t in node_types if fits(custom, t["resources"])]


def actor_cpus(placement: Placement, node_types: list[dict] | None = None) -> float:
    """CPUs per engine actor. On CPU machines one engine takes the whole node by default: Ray sets OMP_NUM_THREADS
    to an actor's CPU count, so an engine given 1 CPU would run torch on one thread."""
    if placement.cpus_per_actor is not None:
        return placement.cpus_per_actor
    if actor_gpus(placement, node_types) > 0:
        return 1.0
    return max((t["resources"].get("CPU", 0) for t in engine_node_types(placement, node_types)), default=1.0) or 1.0


def actor_gpus(placement: Placement, node_types: list[dict] | None = None) -> float:
    """GPUs per engine actor: the configured number, else 1 when a node the engine may use has GPUs (alive, or of a
    type the autoscaler can launch: GPU types scale from zero), else 0."""
    if placement.gpus_per_actor is not None:
        return placement.gpus_per_actor
    return 1.0 if any(t["resources"].get("GPU", 0) > 0 for t in engine_node_types(placement, node_types)) else 0.0


def actor_count(job, placement: Placement, node_types: list[dict] | None = None) -> int:
    """Engines to start: what the config asks for, else what fits (GPU slots, or 1 engine on CPU machines); never
    more than fit on the nodes (GPUs, CPUs, custom resources) nor than there are pending shards. What fits is
    counted on the alive nodes, or, when none of them can host an engine, on the nodes the autoscaler can launch.
    `node_types` defaults to offered_node_types() (search/plan.py passes the ones it plans for)."""
    node_types = offered_node_types() if node_types is None else node_types
    gpus = job.tp if job.tp > 1 else actor_gpus(placement, node_types)
    request = {"CPU": max(actor_cpus(placement, node_types), 1e-9), "GPU": gpus, **placement.custom_resources()}

    def capacity(source: str) -> int:
        return sum(slots(request, t["resources"]) * (10**6 if t["count"] is None else t["count"])
                   for t in node_types if t["source"] == source)

    fit = capacity("alive") or capacity("autoscaler")
    wanted = placement.actors or (fit if gpus > 0 else 1)
    return max(1, min(wanted, fit, len(job.pending)))
