"""What the Ray cluster offers, checks that fail fast when a request cannot be placed, and where results are stored.

    offered_node_types()  -> [{"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 8.0, "GPU": 0.0}},
                              {"name": "gpu_finetune", "source": "autoscaler", "count": 8,
                               "resources": {"CPU": 4.0, "GPU": 1.0, "finetune_node": 1.0,
                                             "accelerator_type:L40S": 1.0}}, ...]
    check_request({"CPU": 1, "GPU": 1}, "fine-tune worker", accelerator_type="H100")
        -> ResourceError: accelerator_type 'H100' (fine-tune worker) is not offered by this cluster; it offers:
           A100, L40S. Node types: ...
    accelerator_resources("L40S") -> {"accelerator_type:L40S": 0.001}
    storage_root(None, "runs/x")  -> $COTGAP_STORAGE, else "/abs/path/runs/x"

A GPU cluster started by `ray up cluster.yaml` scales its GPU node types from zero: at start only the CPU head is
alive. So "what the cluster offers" is the alive nodes plus the node types the autoscaler can launch, read from:
  1. the cluster config the autoscaler reports to the GCS (autoscaler v2, KubeRay), readable from any node
     (private_api.ray_cluster_config);
  2. else the autoscaling config file of autoscaler v1 (Ray 2.60's default for `ray up`): $COTGAP_AUTOSCALING_CONFIG,
     else ~/ray_bootstrap_config.yaml when this process runs on the head node (where `ray up` writes it, already
     filled in with each instance type's CPUs/GPUs/memory on AWS);
  3. else the alive nodes only (a local Ray, `ray start` clusters, a driver off the head of a v1 cluster). Checks
     are then stricter than the cluster: call them from the driver on the head, where 1 or 2 applies.
Every check runs before any engine, trainer or trial starts; errors name the work, the request and the node types.
`cotgap cluster` (python -m cotgap_ray.cluster; cluster/show.py) prints what they see on a running cluster.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from cotgap_ray.errors import InputError
from cotgap_ray.private_api import (PrivateAPIMissing, ray_accelerator_resource_prefix, ray_cluster_config,
                                    ray_head_node_resource)

ACCELERATOR_PREFIX = ray_accelerator_resource_prefix()  # Ray's convention: "accelerator_type:" + the GPU type
ACCELERATOR_SHARE = 0.001  # what Ray Train / Ray Core request to pin work to a GPU type: a sliver of the marker
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the autoscaling config on the head
# Sized by the instance type: every alive node states them; an autoscaling config may leave them out (`ray up` on
# AWS fills them in from the instance type). Unstated, they count as enough. GPU counts must be stated.
_SIZED_KEYS = ("CPU", "memory", "object_store_memory")
_MEMORY_KEYS = ("memory", "object_store_memory")  # left out of messages


class ResourceError(InputError):
    """The cluster cannot host what some work asks for (raised before that work, or anything expensive, starts)."""


def accelerator_resources(accelerator_type: str | None) -> dict:
    """The custom-resource request that pins work to nodes of one GPU type ({} for None: any node)."""
    return {f"{ACCELERATOR_PREFIX}{accelerator_type}": ACCELERATOR_SHARE} if accelerator_type else {}


# ------------------------------------------------------------------------------------------------ what is offered


def _clean(resources: dict) -> dict:
    """Drop Ray's per-node bookkeeping resources (node:<ip>, node:__internal_head__); floats throughout."""
    return {k: float(v) for k, v in resources.items() if not k.startswith("node:")}


def alive_node_ids() -> list[str]:
    """The Ray node ids of the alive nodes."""
    import ray

    return [node["NodeID"] for node in ray.nodes() if node.get("Alive")]


def node_type_name(node: dict) -> str:
    """The node type of one ray.nodes() entry: its node-group label (cluster.yaml's node type), else head or worker."""
    labels = node.get("Labels") or {}
    return labels.get("ray.io/node-group") or ("head" if ray_head_node_resource() in node.get("Resources", {})
                                                else "worker")


def _alive_nodes() -> list[dict]:
    """Alive nodes grouped by (label node-group or head/worker, resources); memory sizes ignored for grouping."""
    import ray

    groups: dict[tuple, dict] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        name, resources = node_type_name(node), _clean(node.get("Resources", {}))
        key = (name, tuple(sorted((k, v) for k, v in resources.items() if k not in _MEMORY_KEYS)))
        if key in groups:
            groups[key]["count"] += 1
        else:
            groups[key] = {"name": name, "source": "alive", "count": 1, "resources": resources}
    return list(groups.values())


def _types_from_gcs() -> list[dict] | None:
    """Node types the autoscaler reported to the GCS (autoscaler v2, KubeRay); None when none were reported."""
    try:
        config = ray_cluster_config()
    except PrivateAPIMissing:
        raise  # an upgrade moved it: say so rather than silently offer fewer node types
    except Exception:  # noqa: BLE001 - an older GCS, or no connection: fall back to the next source
        return None
    if config is None or not config.node_group_configs:
        return None
    return _launchable([(g.name, dict(g.resources), None if g.max_count == -1 else g.max_count)
                        for g in config.node_group_configs])


def _types_from_file(path: str | Path) -> list[dict]:
    """Node types of an autoscaling config file (cluster YAML or `ray up`'s JSON bootstrap config)."""
    import yaml

    return node_types_from_config(yaml.safe_load(Path(path).expanduser().read_text()) or {})


def node_types_from_config(config: dict) -> list[dict]:
    """The worker node types an autoscaling config lets the autoscaler launch (the head type left out)."""
    default_max = config.get("max_workers")
    types = config.get("available_node_types") or {}
    return _launchable([(name, spec.get("resources") or {}, spec.get("max_workers", default_max))
                        for name, spec in types.items()
                        if name != config.get("head_node_type")])  # the head is alive (or nothing is)


def _launchable(types: list[tuple[str, dict, int | None]]) -> list[dict]:
    """Node types the autoscaler can start at least one of; count = its max (None: unbounded)."""
    return [{"name": name, "source": "autoscaler", "count": max_count, "resources": _clean(resources)}
            for name, resources, max_count in types if max_count is None or max_count > 0]


def _autoscaling_config_path() -> Path | None:
    explicit = os.environ.get("COTGAP_AUTOSCALING_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    bootstrap = Path(BOOTSTRAP_CONFIG).expanduser()
    if not bootstrap.is_file():
        return None
    import ray

    here = ray.get_runtime_context().get_node_id()
    on_head = any(n["NodeID"] == here and ray_head_node_resource() in n.get("Resources", {})
                  for n in ray.nodes() if n.get("Alive"))
    return bootstrap if on_head else None


def offered_node_types() -> list[dict]:
    """Every alive node (grouped) and every node type the autoscaler can launch; see the module docstring for the
    sources. Each entry: name, source ("alive" | "autoscaler"), count (alive nodes, or the type's max_workers;
    None: unbounded) and resources (Ray resource name -> amount per node). Needs a connected Ray."""
    types = _types_from_gcs()
    if types is None:
        path = _autoscaling_config_path()
        types = _types_from_file(path) if path is not None and path.is_file() else []
    return _alive_nodes() + types


def accelerator_types(node_types: list[dict]) -> list[str]:
    """The GPU types on offer (resources named accelerator_type:X), sorted."""
    return sorted({k[len(ACCELERATOR_PREFIX):] for t in node_types for k in t["resources"]
                   if k.startswith(ACCELERATOR_PREFIX)})


# ------------------------------------------------------------------------------------------------------- checks


def fits(request: dict, resources: dict) -> bool:
    """Whether one node with `resources` holds `request`. CPUs or memory a node type does not state count as
    enough (see _SIZED_KEYS); any other resource a node type does not list is 0."""
    return all(resources.get(k, math.inf if k in _SIZED_KEYS else 0.0) >= v - 1e-9
               for k, v in request.items() if v)


def slots(request: dict, resources: dict) -> int:
    """How many `request`s one node with `resources` holds at once (10**9 for an empty request)."""
    need = {k: v for k, v in request.items() if v and not (k in _SIZED_KEYS and k not in resources)}
    if not need:
        return 10**9
    return max(0, min(math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in need.items()))


def full_request(resources: dict, accelerator_type: str | None = None) -> dict:
    """The request as Ray sees it: non-zero amounts, plus the accelerator_type:X marker."""
    return {**{k: float(v) for k, v in resources.items() if v}, **accelerator_resources(accelerator_type)}


def describe_types(node_types: list[dict]) -> str:
    """One line per node type, for error messages."""
    if not node_types:
        return "  (none: is Ray connected?)"
    lines = []
    for t in node_types:
        shown = ", ".join(f"{k} {v:g}" for k, v in sorted(t["resources"].items()) if k not in _MEMORY_KEYS)
        count = (f"{t['count']} alive" if t["source"] == "alive" else
                 "autoscaler, unbounded" if t["count"] is None else f"autoscaler, up to {t['count']}")
        lines.append(f"  {t['name']} ({count}): {shown or 'no resources'}")
    return "\n".join(lines)


def check_request(resources: dict, what: str, accelerator_type: str | None = None, *,
                  setting: str = "accelerator_type", node_types: list[dict] | None = None) -> None:
    """Raise ResourceError when no alive node and no node type the autoscaler can launch holds `resources` (plus
    the accelerator_type marker) on one node. `what` names the work (e.g. "generation actor of teacher X"),
    `setting` the config key of the accelerator type in the message. `node_types` defaults to offered_node_types()
    (pass a list to check several requests against one snapshot)."""
    node_types = offered_node_types() if node_types is None else node_types
    request = full_request(resources, accelerator_type)
    offered_gpus = accelerator_types(node_types)
    asked = [k[len(ACCELERATOR_PREFIX):] for k in request if k.startswith(ACCELERATOR_PREFIX)]
    for gpu in asked:
        if gpu not in offered_gpus:
            offers = ", ".join(offered_gpus) if offered_gpus else (
                "no accelerator types (no node has an accelerator_type:X resource)")
            raise ResourceError(f"{setting} '{gpu}' ({what}) is not offered by this cluster; it offers: {offers}. "
                                f"Node types:\n{describe_types(node_types)}")
    if any(fits(request, t["resources"]) for t in node_types):
        return
    unknown = sorted(k for k in request if not any(k in t["resources"] for t in node_types) and k not in _SIZED_KEYS)
    hint = (f" No node type has {', '.join(map(repr, unknown))} at all: a typo, or a node type missing from "
            f"cluster.yaml?" if unknown else " Lower the request or add a larger node type to cluster.yaml.")
    raise ResourceError(f"{what} needs {_fmt(request)} on one node, but no node type offers that.{hint} "
                        f"Node types:\n{describe_types(node_types)}")


def _fmt(request: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in request.items()) + "}"


# ------------------------------------------------------------------------------------------------------ storage


def is_uri(path: str) -> bool:
    """s3://, gs://, file://, ... (pyarrow.fs handles them); anything else is a local path."""
    return "://" in str(path)


def normalize_storage(path: str | Path) -> str:
    """A storage location as Ray Train and Tune want it: URIs unchanged (no trailing /), local paths absolute
    (Train workers run in their own working directories)."""
    path = str(path)
    return path.rstrip("/") if is_uri(path) else str(Path(path).expanduser().resolve())


def storage_root(cfg_storage_path: str | None, run_dir: str | Path) -> str:
    """Where checkpoints and trial results go: the config's train.storage_path, else $COTGAP_STORAGE (cluster.yaml
    sets it to s3://YOUR-BUCKET/cotgap_ray on every node), else the run directory. Join parts onto it with
    join_storage, not Path: Path("s3://b/p") collapses the scheme's //."""
    return normalize_storage(cfg_storage_path or os.environ.get("COTGAP_STORAGE") or run_dir)


def join_storage(root: str, *parts: str) -> str:
    """root/part/...; keeps a URI's scheme intact."""
    return "/".join([root.rstrip("/"), *(str(p).strip("/") for p in parts)])

