"""A job for tests/test_cluster_namespaces.py: what a task pinned to a worker (custom resource gen_node) sees.

    ray job submit ... -- python tests/data/ns_probe.py TAG

The task reports whether ~/probe.txt and $COTGAP_STORAGE/probe.txt existed before it wrote TAG to both, its node,
mount namespace and pid, its /tmp/ray, its working dir's entries and where cotgap_ray was imported from; the driver
adds its own node and namespace and writes it all to $COTGAP_STORAGE/probe-TAG.json (the test reads that file: the
storage is the only shared dir).
"""

import json
import os
import socket
import sys
from pathlib import Path

import ray


@ray.remote(num_cpus=1, resources={"gen_node": 1}, max_retries=3)
def probe(tag: str) -> dict:
    import cotgap_ray

    home, storage = Path.home() / "probe.txt", Path(os.environ["COTGAP_STORAGE"]) / "probe.txt"
    facts = {"home_had_probe": home.exists(), "storage_had_probe": storage.exists(),
             "storage_text": storage.read_text() if storage.exists() else None}
    home.write_text(tag)
    storage.write_text(tag)
    return {**facts, "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "mount_ns": os.readlink("/proc/self/ns/mnt"), "home": str(Path.home()),
            "tmp_ray": sorted(os.listdir("/tmp/ray")), "cotgap_ray": cotgap_ray.__file__, "cwd": os.getcwd(),
            "cwd_entries": sorted(os.listdir()), "pid": os.getpid()}


def main(tag: str) -> None:
    ray.init()
    task = ray.get(probe.remote(tag), timeout=300)
    driver = {"node_id": ray.get_runtime_context().get_node_id(), "mount_ns": os.readlink("/proc/self/ns/mnt"),
              "home_has_probe": (Path.home() / "probe.txt").exists()}
    result = {"task": task, "driver": driver}
    (Path(os.environ["COTGAP_STORAGE"]) / f"probe-{tag}.json").write_text(json.dumps(result, indent=1))
    print("PROBE", json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
