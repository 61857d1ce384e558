"""Where teacher generation runs: the engine actors' layout (Placement), the resource planning done before any
engine starts (which node types an engine may use, CPUs/GPUs per engine, how many engines fit, fail-fast checks),
and the nodes reserved for the engines.

    placement = Placement.from_config(cfg.generation)
    check_resources(jobs, placement)            # ResourceError naming the teacher and the node types on offer
    n = actor_count(job, placement)             # engines to plan for one teacher
    with reserved_engines(job, placement, n, progress) as groups:   # "2 of 3 engines started on gpu_a100"
        ...                                     # one engine per placement group that got a node

Node types come from cluster.offered_node_types(): the alive nodes, plus the types an autoscaler can launch, so a GPU
type that scales from zero counts. What is planned is not what a cloud grants (a GPU quota, a type's stock): each
engine's resources are reserved first (a placement group), and generation runs on the engines that got a node
within generation.node_wait_s. pipeline.py runs what this plans.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cotgap_ray.cluster import (ResourceError, accelerator_resources, check_request, describe_types, fits,
                                node_type_name, offered_node_types, slots)

# On a cluster that cannot grow (no node type an autoscaler can launch), a placement group that fits the free
# resources is placed within a second; one still pending this long after the last placement waits for resources that
# other work holds, which may take hours: generation then runs on the engines it has instead of waiting
# generation.node_wait_s.
SETTLE_S = 10.0


@dataclass(frozen=True)
class Placement:
    """How generation is laid out on the cluster. `from_config` reads the same names from cfg.generation."""

    shard_size: int = 64  # problems per shard: the unit of work, of caching and of resume
    actors: int | None = None  # engines at once; None: every GPU slot (GPU cluster) or 1 (CPU), <= pending shards
    cpus_per_actor: float | None = None  # None: 1 with GPUs; on CPU machines all CPUs of the largest node
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    tensor_parallel: dict = field(default_factory=dict)  # teacher spec -> GPUs per engine (vLLM), default 1
    timeout_s: float = 1800.0  # engine start, and one shard: past it the worker is killed (hung engines)
    node_wait_s: float = 600.0  # for nodes for every planned engine; then it runs on those that got one (none: fails)
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
    """Engines to plan: what the config asks for, else what fits (GPU slots, or 1 engine on CPU machines); never
    more than fit on the nodes (GPUs, CPUs, custom resources) nor than there are pending shards. What fits is
    counted on the alive nodes, or, when none of them can host an engine, on the nodes the autoscaler can launch
    (up to each type's max_workers: a cloud may grant fewer, which reserved_engines finds out). `node_types`
    defaults to offered_node_types() (search/plan.py passes the ones it plans for)."""
    node_types = offered_node_types() if node_types is None else node_types
    gpus = job.tp if job.tp > 1 else actor_gpus(placement, node_types)
    request = {"CPU": max(actor_cpus(placement, node_types), 1e-9), "GPU": gpus, **placement.custom_resources()}

    def capacity(source: str) -> int:
        return sum(slots(request, t["resources"]) * (10**6 if t["count"] is None else t["count"])
                   for t in node_types if t["source"] == source)

    fit = capacity("alive") or capacity("autoscaler")
    wanted = placement.actors or (fit if gpus > 0 else 1)
    return max(1, min(wanted, fit, len(job.pending)))


def engine_bundles(tp: int, placement: Placement, node_types: list[dict] | None = None) -> list[dict]:
    """One engine's placement group: bundle 0 holds the engine actor (its CPUs, GPU, custom resources and accelerator
    marker); with tensor parallel, one more GPU per extra rank, where vLLM's Ray executor places its workers. Placed
    STRICT_PACK: all on one node."""
    node_types = offered_node_types() if node_types is None else node_types
    first = {"CPU": actor_cpus(placement, node_types), "GPU": 1.0 if tp > 1 else actor_gpus(placement, node_types),
             **placement.custom_resources()}
    return [{k: float(v) for k, v in first.items() if v}] + [{"GPU": 1.0}] * (tp - 1)


@contextmanager
def reserved_engines(job, placement: Placement, planned: int, progress, node_types: list[dict] | None = None
                     ) -> Iterator[list]:
    """Reserve one placement group per planned engine of `job`, wait for them, and yield those that got a node (one
    engine each; every group is removed on exit, so the next teacher finds its GPUs free).

    Waits until every group is placed, or generation.node_wait_s has passed, or, on a cluster that cannot grow, no
    group was placed for SETTLE_S (nothing else is coming). Then says "N of M engines started on <node types>" and
    why the others did not, and proceeds with the N; none raises a ResourceError naming the request, the node types
    that could hold it and what to change, instead of Ray Data waiting generation.timeout_s for actors that have no
    node and then failing."""
    import ray

    node_types = offered_node_types() if node_types is None else node_types
    bundles = engine_bundles(job.tp, placement, node_types)
    groups = [ray.util.placement_group(bundles, strategy="STRICT_PACK") for _ in range(planned)]
    try:
        ready, why = _wait_placed(groups, placement, any(t["source"] == "autoscaler" for t in node_types))
        if not ready:
            raise ResourceError(_nothing_placed(job, placement, planned, bundles, node_types))
        names = _placed_on(ready)
        line = f"[{job.model.name}] {len(ready)} of {planned} engines started on {names}"
        if len(ready) < planned:
            line += f"; the other {planned - len(ready)} got no node {why} (each needs {_fmt(bundles)})"
        progress(line)
        yield ready
    finally:
        for group in groups:
            ray.util.remove_placement_group(group)


def _wait_placed(groups: list, placement: Placement, can_grow: bool) -> tuple[list, str]:
    """The groups placed (in creation order) when waiting ends, and why the others were not."""
    import ray

    start = last = time.monotonic()
    placed: set[int] = set()
    while True:
        for i, group in enumerate(groups):
            if i not in placed and ray.util.placement_group_table(group).get("state") == "CREATED":
                placed.add(i)
                last = time.monotonic()
        now = time.monotonic()
        if len(placed) == len(groups):
            return groups, ""
        if now - start >= placement.node_wait_s:
            return [g for i, g in enumerate(groups) if i in placed], (
                f"within generation.node_wait_s={placement.node_wait_s:g}s: for more engines, raise the node type's "
                f"max_workers or the cloud's GPU quota (`ray status` shows what the autoscaler is waiting for)")
        if placed and not can_grow and now - last >= SETTLE_S:
            return [g for i, g in enumerate(groups) if i in placed], (
                "and none can come: this cluster has no autoscaler and other work holds the resources")
        time.sleep(0.25)


def _placed_on(groups: list) -> str:
    """'gpu_a100 x2, gpu_h100': the node types the groups' engines landed on (where bundle 0, the actor, went)."""
    import ray

    names = {node["NodeID"]: node_type_name(node) for node in ray.nodes()}
    counts = Counter(names.get(ray.util.placement_group_table(g)["bundles_to_node_id"][0], "?") for g in groups)
    return ", ".join(name + (f" x{n}" if n > 1 else "") for name, n in sorted(counts.items()))


def _nothing_placed(job, placement: Placement, planned: int, bundles: list[dict], node_types: list[dict]) -> str:
    total: dict = {}
    for bundle in bundles:
        for k, v in bundle.items():
            total[k] = total.get(k, 0.0) + v
    able = [t for t in node_types if fits(total, t["resources"])]
    return (f"teacher {job.spec}: none of its {planned} engine(s) got a node within generation.node_wait_s="
            f"{placement.node_wait_s:g}s; each needs {_fmt(bundles)} on one node, which these node types hold:\n"
            f"{describe_types(able)}\nIf the autoscaler launched none (`ray status` says why), raise that type's "
            f"max_workers in cluster.yaml or the cloud's GPU quota for it; if other work holds the nodes, wait for it "
            f"or raise generation.node_wait_s; or ask for less per engine (generation.gpus_per_actor, cpus_per_actor, "
            f"tensor_parallel)")


def _fmt(bundles: list[dict]) -> str:
    shown = [", ".join(f"{k} {v:g}" for k, v in b.items()) for b in bundles]
    return " + ".join("{" + b + "}" for b in shown)
