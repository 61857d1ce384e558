"""Before a command starts its own local Ray: is another Ray cluster already running on this machine?

Two local clusters on one machine are not safe with Ray Train 2.60. Its PlacementGroupCleaner (a detached actor per
fine-tune) finds the state API by auto-discovery, and with two clusters it attaches to the other one ("Found
multiple active Ray instances ... Connecting to latest cluster"); seen 2026-12-02 with two test suites on one
machine, where a trial died with ActorDiedError meanwhile (a cleaner that takes its live controller for dead removes
the trial's placement group; ray-project/ray#65447). `ray.init()` joins a cluster only when RAY_ADDRESS names one or
`ray start` started one; a cluster another command's `ray.init()` started is not joined, so two searches started by
hand each start their own. This module says so before the second one starts.
"""

from __future__ import annotations

import os

from cotgap_ray.private_api import ray_bootstrap_address, ray_local_gcs_addresses


def starts_local_cluster() -> bool:
    """Would a plain ray.init() here start a new local cluster (rather than join one)? Uses Ray's own resolution:
    RAY_ADDRESS, else the cluster `ray start` recorded (/tmp/ray/ray_current_cluster)."""
    return ray_bootstrap_address() is None


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
