"""Local multi-node rehearsals of cluster.yaml (marker `multinode`: they start extra Ray nodes on this machine).

1. A fixed three-node cluster (ray.cluster_utils.Cluster): a CPU head and two "GPU" workers shaped like cluster.yaml's
   node types (logical GPUs, the custom resources generation_node / finetune_node, accelerator_type:A100 / L40S).
   A real tiny train_student with accelerator_type="L40S" and resources={"finetune_node": 0.01} trains on the L40S
   node (storage given as a file:// URI), a real tiny generation with generation.accelerator_type A100 runs its
   engines on the A100 node, the search's evaluation engine follows train.accelerator_type / train.resources to the
   L40S node, and check_request / placement.check_resources fail fast on a GPU type nobody offers.
   Logical GPUs cannot run CUDA: the work asks for the node type's custom resources, not for use_gpu.
2. An autoscaling cluster: experiments/fake_cluster.yaml with Ray's fake_multinode provider, head started by
   `RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE` in a subprocess. A task asking for finetune_node
   makes the autoscaler launch a gpu_finetune node on demand; the node is terminated after idling (6 s); and the
   checks see the launchable node types before any such node exists.

Teardown of 2 kills the process group of the `ray start --block` it launched, never `ray stop`: that stops every Ray
on the machine, other users' and other test sessions' included. Token authentication stays on, with a token made
for the test (RAY_AUTH_TOKEN), so the test needs no ~/.ray/auth_token. Measured on 2 busy cores: about 45 s for the
fixed cluster (one TorchTrainer start, one Ray Data pipeline) and 25 s for the autoscaling one (node up 3 s after the
request, gone 10 s after it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cotgap_ray import cluster
from cotgap_ray.cluster import ResourceError, check_request
from cotgap_ray.config import ExperimentConfig, LoraSettings
from cotgap_ray.generation import pipeline as gen
from cotgap_ray.generation import placement as placement_mod
from cotgap_ray.records import RATIONALE_SCHEMA, Problem

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.multinode, pytest.mark.ray]

GENERATION_NODE = {"num_cpus": 1, "num_gpus": 2, "resources": {"generation_node": 1, "accelerator_type:A100": 1}}
FINETUNE_NODE = {"num_cpus": 1, "num_gpus": 1, "resources": {"finetune_node": 1, "accelerator_type:L40S": 1}}


def where_rank0_ran(adapter_dir: str) -> dict:
    """The fine-tune's eval hook: the node rank 0 ran on. Module-level, shipped by value to the train worker."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    (node,) = [n for n in ray.nodes() if n["NodeID"] == here]
    return {"node_id": here, "finetune_node": node["Resources"].get("finetune_node", 0.0)}


# ------------------------------------------------------------------------------------ 1. a fixed three-node cluster


@pytest.fixture(scope="module")
def three_nodes():
    """CPU head (no GPUs) + an A100-like generation node + an L40S-like fine-tune node; yields node id by role."""
    import ray
    import ray.cloudpickle
    from ray.cluster_utils import Cluster

    ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the eval hook lives in this test module
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    roles = {"generation": c.add_node(**GENERATION_NODE), "finetune": c.add_node(**FINETUNE_NODE)}
    try:
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield {"head": c.head_node.node_id, **{role: node.node_id for role, node in roles.items()}}
    finally:
        ray.shutdown()
        c.shutdown()


def test_checks_see_three_node_types_and_reject_an_unknown_gpu_type(three_nodes, monkeypatch):
    monkeypatch.delenv("COTGAP_AUTOSCALING_CONFIG", raising=False)
    offered = cluster.offered_node_types()
    assert sorted(t["name"] for t in offered) == ["head", "worker", "worker"]
    assert cluster.accelerator_types(offered) == ["A100", "L40S"]
    check_request({"CPU": 1, "finetune_node": 0.01}, "fine-tune worker", "L40S", node_types=offered)
    with pytest.raises(ResourceError, match="train.accelerator_type 'H100' .* it offers: A100, L40S"):
        check_request({"CPU": 1}, "fine-tune worker", "H100", setting="train.accelerator_type")
    with pytest.raises(ResourceError, match=r"needs \{CPU: 1, GPU: 2, finetune_node: 0.01\} on one node"):
        check_request({"CPU": 1, "GPU": 2, "finetune_node": 0.01}, "fine-tune worker")


def test_fine_tune_lands_on_the_l40s_node_with_uri_storage(three_nodes, tiny_llama_dir, tmp_path):
    from cotgap_ray.training.ray_train import train_student

    problems = {f"p{i}": f"What is {i} + {i}?" for i in range(4)}
    rationales = tmp_path / "rationales.parquet"
    pq.write_table(pa.Table.from_pylist(
        [{"problem_id": pid, "teacher": "t", "sample_idx": 0, "text": f" The answer is {2 * i}.", "pred": None,
          "correct": True, "n_tokens": 16} for i, pid in enumerate(problems)], schema=RATIONALE_SCHEMA), rationales)
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, epochs=1, batch_size=2, max_length=400)  # rows fit whole
    storage = f"file://{tmp_path / 'shared-storage'}"  # a URI, kept as one (s3://... on a real cluster)
    result = train_student(tiny_llama_dir, str(rationales), problems, settings, storage_path=storage, name="ft",
                           eval_fn=where_rank0_ran, accelerator_type="L40S", resources={"finetune_node": 0.01})
    (epoch,) = result.metrics_per_epoch
    assert epoch["node_id"] == three_nodes["finetune"] and epoch["finetune_node"] == 1
    assert (Path(result.adapter_dir) / "adapter_model.safetensors").is_file()
    assert Path(result.adapter_dir).is_relative_to(tmp_path / "shared-storage" / "ft")


def test_evaluation_engine_lands_on_the_l40s_node(three_nodes, tiny_llama_dir, tmp_path):
    import ray

    from cotgap_ray.evaluation.pool import close_pool, start_pool
    from cotgap_ray.models.remote import describe_remote

    cfg = ExperimentConfig()
    cfg.engine.kind, cfg.engine.dtype = "hf", "float32"
    cfg.train.accelerator_type, cfg.train.resources = "L40S", {"finetune_node": 0.01}
    cfg.student = tiny_llama_dir
    problems = [Problem("p0", "What is 1 + 1?", "2", "dev")]
    (student,) = describe_remote([cfg.student], cfg, "evaluator")
    assert student.node_id == three_nodes["finetune"]  # resolved where it runs, not in the driver
    names = start_pool(student, {"dev": problems}, cfg, 4, tmp_path / "run", size=1)
    try:
        assert names == ["cotgap-evaluator-0"]  # one fine-tune node: one engine
        actor = ray.get_actor(names[0])
        assert ray.get(actor.ready.remote())["node_id"] == three_nodes["finetune"]
        summary, rows, baseline = ray.get(actor.score.remote("dev", None, "t1"))
        assert rows.num_rows == 1 and set(baseline) == {"p0"}
    finally:
        close_pool(names)


def test_generation_engines_land_on_the_a100_node(three_nodes, tiny_llama_dir, tmp_path):
    from cotgap_ray.models.remote import describe_remote

    cfg = ExperimentConfig()
    cfg.engine.kind, cfg.engine.dtype = "hf", "float32"
    cfg.generation.samples, cfg.generation.max_tokens = 1, 4
    cfg.generation.accelerator_type, cfg.generation.resources = "A100", {"generation_node": 0.01}
    # The teacher is resolved on a node of the engines' type, not on the head.
    (teacher,) = describe_remote([tiny_llama_dir], cfg, "generation")
    assert teacher.node_id == three_nodes["generation"]
    problems = [Problem(f"p{i}", f"What is {i} + 1?", str(i + 1), "train") for i in range(4)]
    wrong = gen.Placement(shard_size=2, timeout_s=300, accelerator_type="H100")
    job = gen.plan_teacher(teacher, problems, "t", "train", cfg, tmp_path, wrong)
    with pytest.raises(ResourceError, match="generation.accelerator_type 'H100' .* it offers: A100, L40S"):
        placement_mod.check_resources([job], wrong)
    placement = gen.Placement(shard_size=2, timeout_s=300, accelerator_type="A100",
                              resources={"generation_node": 0.01})
    assert placement_mod.actor_gpus(placement) == 1  # the A100 type has GPUs, although the head has none
    job = gen.plan_teacher(teacher, problems, "t", "train", cfg, tmp_path, placement)
    assert placement_mod.actor_count(job, placement) == 1  # one CPU on the A100 node: one engine
    result = gen.run_teacher(job, placement, progress=lambda line: None)
    shards = gen.cache.read_manifest(result.path)["shards"].values()
    assert {s["node_id"] for s in shards} == {three_nodes["generation"]}
    assert result.table().num_rows == 4


# -------------------------------------------------------------------------- 2. an autoscaling (fake_multinode) one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refresh_ray_auth_config() -> None:
    """Make this process re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (Ray caches both; ray.init with an explicit address
    does not re-read them)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _kill_session(proc: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM the process group of our `ray start --block` (its GCS, raylet, autoscaler and the fake nodes the
    autoscaler started), SIGKILL what is left after 5 s; then any stray process of this cluster's temp dir, by pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def fake_autoscaling_cluster(tmp_path, monkeypatch):
    """experiments/fake_cluster.yaml on a free port, head started with RAY_FAKE_CLUSTER=1; yields the config path."""
    import ray

    ray.shutdown()
    ip, port = ray.util.get_node_ip_address(), _free_port()
    config = yaml.safe_load((ROOT / "experiments" / "fake_cluster.yaml").read_text())
    config["provider"]["gcs_address"] = f"{ip}:{port}"  # the fake workers join this GCS, not the default 6379
    config_path = tmp_path / "fake_cluster.yaml"
    config_path.write_text(yaml.safe_dump(config))
    temp_dir = tempfile.mkdtemp(prefix="cgr", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    env = {**os.environ, **auth, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    log = open(tmp_path / "ray_start.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", f"--autoscaling-config={config_path}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for key, value in auth.items():
        monkeypatch.setenv(key, value)
    _refresh_ray_auth_config()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ray.init(address=f"{ip}:{port}", log_to_driver=False)
                break
            except ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake cluster did not start: {(tmp_path / 'ray_start.log').read_text()[-3000:]}")
                time.sleep(1)
        monkeypatch.setenv("COTGAP_AUTOSCALING_CONFIG", str(config_path))  # the v1 autoscaler's config file
        yield config_path
    finally:
        ray.shutdown()
        _kill_session(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        log.close()
        monkeypatch.undo()
        _refresh_ray_auth_config()


def test_autoscaler_launches_a_finetune_node_on_demand_and_releases_it(fake_autoscaling_cluster):
    import ray

    def alive() -> dict:
        return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}

    (head,) = alive()
    # Before any GPU node exists, the checks already see the node types the autoscaler can launch ...
    offered = cluster.offered_node_types()
    assert sorted((t["source"], t["name"]) for t in offered) == [
        ("alive", "head"), ("autoscaler", "gpu_finetune"), ("autoscaler", "gpu_generation")]
    check_request({"CPU": 1, "GPU": 1, "finetune_node": 0.01}, "fine-tune worker", "L40S", node_types=offered)
    with pytest.raises(ResourceError, match="'H100' .* it offers: A100, L40S"):
        check_request({"CPU": 1}, "fine-tune worker", "H100", node_types=offered)

    # ... and work that asks for finetune_node makes the autoscaler start one.
    @ray.remote(num_cpus=1, resources={"finetune_node": 0.01})
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    start = time.monotonic()
    node = ray.get(where.remote(), timeout=90)
    launched_s = time.monotonic() - start
    assert node != head and alive()[node]["finetune_node"] == 1 and alive()[node]["accelerator_type:L40S"] == 1
    # Idle for idle_timeout_minutes (0.1 = 6 s): the autoscaler terminates it.
    deadline = time.monotonic() + 60
    while node in alive() and time.monotonic() < deadline:
        time.sleep(1)
    assert node not in alive(), "the idle gpu_finetune node was not terminated within 60 s"
    assert list(alive()) == [head]
    print(f"gpu_finetune node up {launched_s:.0f}s after the request; released {time.monotonic() - start:.0f}s in")
