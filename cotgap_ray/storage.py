"""The storage root: one directory that holds everything a run must not lose when a node goes, the head included.

    storage_root(cfg)            -> Path("/mnt/shared/cotgap") from storage_path or $COTGAP_STORAGE, else None
    default_run_dir(cfg)         -> <root>/runs/<name>   (without a root: <out_dir>/<name>, as on a laptop)
    shared_cache_root(cfg)       -> <root>/cache          (rationale and evaluation caches; models stay node-local)
    check_shared(root)           -> every alive Ray node sees the same files under root, or InputError

Under it: the run directory (config, records, the Optuna journal, Tune's experiment, adapters, report) and the
content-addressed caches (rationales, evaluations). A head replaced by a new machine with an empty disk and the same
storage resumes with --resume: no finished trial retrained, no finished shard regenerated.

It is a filesystem path mounted at the same place on every node (NFS, EFS, Filestore, a local directory on one
machine). An object-store URI (s3://) is not supported as the root yet: the caches are appended to and renamed in
place, and the study is a journal file (search/tuning.py); train.storage_path alone still takes a URI for checkpoints.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cotgap_ray.errors import InputError

ENV = "COTGAP_STORAGE"


def storage_root(cfg) -> Path | None:
    """The configured root (storage_path, else $COTGAP_STORAGE), or None: everything stays where it was (out_dir,
    the cache_dir / $COTGAP_CACHE / ~/.cache/cotgap_ray)."""
    value = getattr(cfg, "storage_path", None) or os.environ.get(ENV)
    if not value:
        return None
    where = "storage_path" if getattr(cfg, "storage_path", None) else f"${ENV}"
    if "://" in value:
        raise InputError(f"{where}={value}: the storage root must be a filesystem path mounted at the same place on "
                         f"every node (NFS, EFS, Filestore); an object-store URI is not supported for the run "
                         f"directory and caches (train.storage_path takes one for checkpoints only). Mount the "
                         f"shared filesystem and set {where} to its path")
    return Path(value).expanduser().resolve()


def default_run_dir(cfg) -> Path:
    """Where a run directory goes when --out is not given."""
    root = storage_root(cfg)
    return root / "runs" / cfg.name if root is not None else Path(cfg.out_dir) / cfg.name


def shared_cache_root(cfg) -> Path | None:
    """The caches' directory under the storage root (None without a root)."""
    root = storage_root(cfg)
    return root / "cache" if root is not None else None


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared(root: Path, timeout_s: float = 60.0) -> None:
    """Every alive node of the Ray cluster reads the file the driver just wrote under `root`: else the root is not
    shared and a worker's adapters, records or evaluations would land on a disk the next node cannot see."""
    import ray

    from cotgap_ray.cluster import alive_node_ids

    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".probe-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    probe.write_text(token)
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = alive_node_ids()
        task = ray.remote(_sees)
        refs = {node: task.options(num_cpus=0, max_retries=0, name="cotgap-storage-check",
                                   scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(str(probe), token) for node in nodes}
        blind = [node for node, ref in refs.items() if not ray.get(ref, timeout=timeout_s)]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise InputError(f"storage root {root} is not shared: {len(blind)} of {len(refs)} Ray node(s) "
                         f"({', '.join(n[:8] for n in blind)}) do not see a file the driver wrote there. Mount one "
                         f"shared filesystem at {root} on every node (cluster.yaml: file_mounts / setup_commands) "
                         f"and set ${ENV} to it")
