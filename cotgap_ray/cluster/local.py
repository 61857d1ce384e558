"""Before a command starts its own local Ray: is another Ray cluster already running on this machine?

Two local clusters on one machine are not safe with Ray Train 2.60. Its PlacementGroupCleaner (a detached actor per
fine-tune) finds the state API by auto-discovery, and with two clusters it attaches to the other one ("Found
multiple active Ray instances ... Connecting to latest cluster"); seen 2026-12-02 with two test suites on one
machine, where a trial died with ActorDiedError meanwhile (a cleaner that takes its live controller for dead removes
the trial's placement group; ray-project/ray#65447). `ray.init()` joins a cluster only when RAY_ADDRESS names one or
`ray start` started one; a cluster another command's `ray.init()` started is not joined, so two searches started by
hand each start their own. This module says so before the second one starts, and says what the local cluster
would offer before it starts (local_node_types: the CLIs' preflight checks resource requests against it).
"""

from __future__ import annotations

import os

from cotgap_ray.private_api import (PrivateAPIMissing, ray_bootstrap_address, ray_local_gcs_addresses,
                                    ray_local_node_resources)


def starts_local_cluster(address: str | None = None) -> bool:
    """Would ray.init(address) here start a new local cluster (rather than join one)? Uses Ray's own resolution:
    RAY_ADDRESS, else the cluster `ray start` recorded (/tmp/ray/ray_current_cluster). "local" always starts one;
    any other address ("auto" included, which fails when it finds nothing) joins one."""
    if address == "local":
        return True
    if address is not None:
        return False
    return ray_bootstrap_address() is None


def local_node_types(address: str | None = None) -> list[dict] | None:
    """The one node that ray.init(address) would start here, in offered_node_types()'s form, found without starting
    it: Ray's own resolution of this machine's CPUs, GPUs (CUDA_VISIBLE_DEVICES respected), accelerator type and
    RAY_OVERRIDE_RESOURCES. None when Ray is already up or ray.init would join a cluster (its checks run once it
    is joined), or when Ray's resolution is not available here (then too: nothing is refused on a guess).

        local_node_types() -> [{"name": "this machine", "source": "alive", "count": 1,
                                "resources": {"CPU": 2.0, "memory": 1.7e10, "object_store_memory": 7.3e9}}]"""
    import ray

    if ray.is_initialized() or not starts_local_cluster(address):
        return None
    try:
        resources = ray_local_node_resources()
    except PrivateAPIMissing:  # an upgrade moved Ray's resolution: say so in one place (private_api), not guess
        raise
    except Exception:  # noqa: BLE001 - Ray could not size this machine here: leave the check to the started cluster
        return None
    from cotgap_ray.cluster import _clean

    return [{"name": "this machine", "source": "alive", "count": 1, "resources": _clean(resources)}]


def running_clusters() -> list[str]:
    """GCS addresses of the Ray clusters running on this machine (Ray's own scan of the process table)."""
    return sorted(ray_local_gcs_addresses())


def second_cluster_warning() -> str | None:
    """The warning to print before ray.init() starts a local cluster beside a running one; None when it will not.
    RAY_ADDRESS=local is taken as a deliberate choice (tests and benchmarks isolate their runs that way) and gets
    none; so does a process that will join a cluster."""
    if os.environ.get("RAY_ADDRESS") == "local":
        return None
    others = running_clusters()
    if not others or not starts_local_cluster():
        return None
    return (f"warning: another Ray cluster runs on this machine ({', '.join(others)}) and this command would start a "
            f"second local one; with two, Ray Train's placement-group cleaner can attach to the wrong cluster and "
            f"kill this run's fine-tunes (ActorDiedError). Run the commands on one cluster: `ray start --head` once, "
            f"then every command joins it, or set RAY_ADDRESS={others[0]}")
