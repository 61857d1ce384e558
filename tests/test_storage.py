"""The storage root (cotgap_ray/storage.py): where runs and caches go with and without one, what is refused, and
the check that every Ray node sees it (the namespace cluster test shows a node that does not share it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotgap_ray.config import load_config
from cotgap_ray.errors import InputError
from cotgap_ray.models import cache_root
from cotgap_ray.models.remote import models_dir_setting
from cotgap_ray.storage import ENV, default_run_dir, shared_cache_root, storage_root


def test_without_a_root_everything_stays_where_it_was(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("COTGAP_CACHE", raising=False)
    cfg = load_config(None)
    assert storage_root(cfg) is None and shared_cache_root(cfg) is None
    assert default_run_dir(cfg) == Path("runs") / cfg.name
    assert cache_root(cfg) == Path.home() / ".cache" / "cotgap_ray"


def test_the_root_holds_runs_and_caches_but_not_models(monkeypatch, tmp_path):
    monkeypatch.delenv("COTGAP_CACHE", raising=False)
    monkeypatch.setenv(ENV, str(tmp_path / "shared"))
    cfg = load_config(None)
    assert storage_root(cfg) == tmp_path / "shared"
    assert default_run_dir(cfg) == tmp_path / "shared" / "runs" / cfg.name
    assert cache_root(cfg) == tmp_path / "shared" / "cache"
    assert models_dir_setting(cfg) is None  # each node's own model cache (models.store.root), never the root
    explicit = load_config(None, [f"storage_path={tmp_path / 'other'}"])  # the config wins over the environment
    assert storage_root(explicit) == tmp_path / "other"


def test_an_object_store_uri_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv(ENV, "s3://bucket/cotgap")
    with pytest.raises(InputError, match=r"\$COTGAP_STORAGE=s3://bucket/cotgap: .*filesystem path.*train.storage_path"):
        storage_root(load_config(None))


@pytest.mark.ray
def test_every_node_of_a_local_cluster_sees_the_root(tmp_path):
    import ray

    from cotgap_ray.storage import check_shared

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        check_shared(tmp_path / "root")
    finally:
        ray.shutdown()
    assert list((tmp_path / "root").iterdir()) == []  # the probe is removed
