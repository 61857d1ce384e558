"""cotgap_ray.cluster without a Ray cluster: the checks on literal node types, the three sources of node types (the
GCS cluster config of autoscaler v2, an autoscaling config file, alive nodes) with Ray's calls replaced, storage
locations, and a Ray Train checkpoint on non-local storage (a pyarrow SubTreeFileSystem stands in for S3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotgap_ray import cluster
from cotgap_ray.cluster import ResourceError, accelerator_resources, check_request, fits, slots, storage_root

ROOT = Path(__file__).resolve().parents[1]

HEAD = {"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 8.0, "memory": 3e10}}
GENERATION = {"name": "gpu_generation", "source": "autoscaler", "count": 2,
              "resources": {"GPU": 8.0, "generation_node": 1.0, "accelerator_type:A100": 1.0}}
FINETUNE = {"name": "gpu_finetune", "source": "autoscaler", "count": 8,
            "resources": {"CPU": 4.0, "GPU": 1.0, "finetune_node": 1.0, "accelerator_type:L40S": 1.0}}
TYPES = [HEAD, GENERATION, FINETUNE]


def test_accelerator_resources_follow_rays_convention():
    assert accelerator_resources("L40S") == {"accelerator_type:L40S": 0.001}
    assert accelerator_resources(None) == {} and accelerator_resources("") == {}


def test_fits_and_slots_literal():
    assert fits({"CPU": 1, "GPU": 1, "finetune_node": 0.01}, FINETUNE["resources"])
    assert not fits({"GPU": 2}, FINETUNE["resources"])
    assert not fits({"finetune_node": 0.01}, GENERATION["resources"])  # unlisted custom resource: 0
    assert fits({"CPU": 32, "memory": 1e9}, GENERATION["resources"])  # unstated CPU / memory: the instance's
    assert fits({"GPU": 0, "CPU": 0}, {})  # zero amounts ask for nothing
    assert slots({"CPU": 1, "GPU": 2}, {"CPU": 96, "GPU": 8}) == 4
    assert slots({"CPU": 1, "generation_node": 0.01}, {"CPU": 3, "generation_node": 1}) == 3
    assert slots({"CPU": 1, "GPU": 1}, {"CPU": 8}) == 0


def test_check_request_passes_when_some_node_type_holds_it():
    check_request({"CPU": 1, "GPU": 1, "finetune_node": 0.01}, "fine-tune worker", "L40S", node_types=TYPES)
    check_request({"CPU": 1, "GPU": 8}, "generation actor of teacher big", "A100", node_types=TYPES)  # TP=8
    check_request({"CPU": 8, "GPU": 0}, "evaluation engine", node_types=TYPES)  # the alive head


def test_unknown_accelerator_type_lists_the_offered_ones():
    with pytest.raises(ResourceError) as err:
        check_request({"CPU": 1, "GPU": 1}, "fine-tune worker", "H100", setting="train.accelerator_type",
                      node_types=TYPES)
    message = str(err.value)
    assert message.startswith("train.accelerator_type 'H100' (fine-tune worker) is not offered by this cluster; "
                              "it offers: A100, L40S")
    assert "gpu_finetune (autoscaler, up to 8)" in message and "head (1 alive)" in message
    with pytest.raises(ResourceError, match="it offers: no accelerator types"):
        check_request({"CPU": 1}, "evaluation engine", "A100", node_types=[HEAD])


def test_request_no_single_node_type_holds_names_work_request_and_types():
    # Each part exists somewhere, but not together: L40S nodes have 1 GPU.
    with pytest.raises(ResourceError) as err:
        check_request({"CPU": 1, "GPU": 2}, "fine-tune worker", "L40S", node_types=TYPES)
    message = str(err.value)
    assert "fine-tune worker needs {CPU: 1, GPU: 2, accelerator_type:L40S: 0.001} on one node" in message
    assert "gpu_generation (autoscaler, up to 2): GPU 8, accelerator_type:A100 1, generation_node 1" in message
    with pytest.raises(ResourceError, match="No node type has 'finetune_nod' at all"):
        check_request({"CPU": 1, "finetune_nod": 0.01}, "fine-tune worker", node_types=TYPES)


def test_generate_uses_the_same_resource_error():
    from cotgap_ray.generation import pipeline as generate

    assert generate.ResourceError is ResourceError


# ------------------------------------------------------------------------------------------- where types come from


def test_node_types_from_cluster_yaml_and_the_fake_cluster():
    types = {t["name"]: t for t in cluster._types_from_file(ROOT / "cluster.yaml")}
    assert set(types) == {"gpu_generation", "gpu_finetune"}  # the head is alive, not launched
    assert types["gpu_generation"]["count"] == 2 and types["gpu_finetune"]["count"] == 8
    assert types["gpu_finetune"]["resources"]["accelerator_type:L40S"] == 1
    fake = {t["name"]: t for t in cluster._types_from_file(ROOT / "experiments" / "fake_cluster.yaml")}
    assert set(fake) == {"gpu_generation", "gpu_finetune"}
    assert cluster.accelerator_types(list(fake.values())) == ["A100", "L40S"]


def test_node_types_from_the_gcs_cluster_config(monkeypatch):
    """Autoscaler v2 / KubeRay report their node groups to the GCS; max_count -1 means unbounded, 0 never."""
    from ray._private import state
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig(node_group_configs=[
        autoscaler_pb2.NodeGroupConfig(name="head", resources={"CPU": 8}, min_count=0, max_count=0),
        autoscaler_pb2.NodeGroupConfig(name="l40s", resources={"CPU": 4, "GPU": 1, "accelerator_type:L40S": 1},
                                       min_count=0, max_count=-1),
    ])
    monkeypatch.setattr(state.state, "get_cluster_config", lambda: config)
    assert cluster._types_from_gcs() == [{"name": "l40s", "source": "autoscaler", "count": None,
                                          "resources": {"CPU": 4.0, "GPU": 1.0, "accelerator_type:L40S": 1.0}}]
    monkeypatch.setattr(state.state, "get_cluster_config", lambda: None)
    assert cluster._types_from_gcs() is None


def test_offered_node_types_alive_plus_config_file(monkeypatch):
    import ray
    from ray._private import state

    nodes = [{"NodeID": "a", "Alive": True, "Labels": {},
              "Resources": {"CPU": 2.0, "memory": 1e9, "node:__internal_head__": 1.0, "node:10.0.0.1": 1.0}},
             {"NodeID": "b", "Alive": True, "Labels": {}, "Resources": {"CPU": 4.0, "node:10.0.0.2": 1.0}},
             {"NodeID": "c", "Alive": True, "Labels": {}, "Resources": {"CPU": 4.0, "node:10.0.0.3": 1.0}},
             {"NodeID": "d", "Alive": False, "Labels": {}, "Resources": {"CPU": 64.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(state.state, "get_cluster_config", lambda: None)
    monkeypatch.setenv("COTGAP_AUTOSCALING_CONFIG", str(ROOT / "cluster.yaml"))
    offered = cluster.offered_node_types()
    assert [(t["name"], t["source"], t["count"]) for t in offered] == [
        ("head", "alive", 1), ("worker", "alive", 2), ("gpu_generation", "autoscaler", 2),
        ("gpu_finetune", "autoscaler", 8)]
    assert offered[0]["resources"] == {"CPU": 2.0, "memory": 1e9}  # node:<ip> markers dropped
    monkeypatch.delenv("COTGAP_AUTOSCALING_CONFIG")
    monkeypatch.setattr(cluster, "BOOTSTRAP_CONFIG", str(ROOT / "no-such-bootstrap.yaml"))
    assert [t["source"] for t in cluster.offered_node_types()] == ["alive", "alive"]  # degrades to alive nodes


# ------------------------------------------------------------------------------------------------------ storage


def test_storage_root_config_then_env_then_run_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("COTGAP_STORAGE", raising=False)
    assert storage_root(None, tmp_path / "run") == str((tmp_path / "run").resolve())
    monkeypatch.setenv("COTGAP_STORAGE", "s3://bucket/cotgap_ray/")
    assert storage_root(None, tmp_path / "run") == "s3://bucket/cotgap_ray"
    assert storage_root("gs://other/prefix", tmp_path) == "gs://other/prefix"
    monkeypatch.chdir(tmp_path)
    assert storage_root("relative/dir", "ignored") == str(tmp_path / "relative" / "dir")
    assert cluster.join_storage("s3://bucket/p", "train", "trial-1") == "s3://bucket/p/train/trial-1"
    assert cluster.is_uri("file:///tmp/x") and not cluster.is_uri("/tmp/x")


def test_remote_checkpoint_is_downloaded_and_its_uri_kept(tmp_path):
    """A checkpoint on a filesystem that is not local (as on S3) is copied into a local directory for peft/vLLM."""
    import pyarrow.fs
    from ray.train import Checkpoint

    from cotgap_ray.training.ray_train import _local_dir, checkpoint_uri

    bucket = tmp_path / "bucket"
    (bucket / "prefix" / "trial-1" / "epoch_002").mkdir(parents=True)
    (bucket / "prefix" / "trial-1" / "epoch_002" / "adapter_config.json").write_text("{}")
    remote = pyarrow.fs.SubTreeFileSystem(str(bucket), pyarrow.fs.LocalFileSystem())
    checkpoint = Checkpoint("prefix/trial-1/epoch_002", filesystem=remote)
    local = _local_dir(checkpoint, "trial-1")
    assert Path(local, "adapter_config.json").read_text() == "{}" and not local.startswith(str(bucket))
    assert Path(local).name == "epoch_002"
    assert checkpoint_uri(checkpoint, "s3://b/prefix/trial-1") == "s3://b/prefix/trial-1/epoch_002"
    on_disk = Checkpoint(str(bucket / "prefix" / "trial-1" / "epoch_002"))
    assert _local_dir(on_disk, "trial-1") == checkpoint_uri(on_disk, "unused") == on_disk.path
