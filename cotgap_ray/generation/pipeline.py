"""Teacher generation on Ray Data: k rationales per problem per teacher, generated once into the rationale cache.

    cotgap generate --teacher packaged:smollm2-135m-instruct --task reasoning_gym:basic_arithmetic \
        --samples 4 --temperature 0.7 [--cache-dir DIR] [--address auto]

    facts = describe_remote(specs, cfg, "generation")     # models/remote.py: resolved on a generation node
    results = generate_teachers(facts, splits, cfg, split="train", task=cfg.task.name)

Per teacher (its ModelFacts: spec, fingerprint, context limit; the driver never holds or opens the model):
    problems ─► fixed shards by position ─► pending = shards missing from the cache or failing their check
      ─► M engines planned (placement.actor_count), one placement group each (GPU: gpus_per_actor, or tensor
         parallel GPUs for vLLM; generation.accelerator_type / generation.resources pick the node type, checked
         before anything starts); generation runs on the N that get a node within generation.node_wait_s
         ("N of M engines started on <node types>"), none fails fast (placement.reserved_engines)
      ─► per engine: ray.data.from_items(its pending shards)
         ─► map_batches(ShardWorker, compute=ActorPoolStrategy(size=1)) in its placement group: the actor resolves
            the spec on its own node and owns one engine (shard_worker.py); the N pools are unioned
      ─► driver: each finished shard's Parquet bytes are checked, written atomically and recorded in the manifest,
         so an interrupted run keeps every finished shard (cache.py has the layout and the checks)

One row through the worker (batch_size=1: one shard per call):
    {"shard_id": 3, "seed": 91522..., "problem_ids": [64 ids], "questions": [...], "answers": [...]}
      -> {"shard_id": 3, "rows": 256, "sha256": "9f..", "n_tokens": 20311, "seconds": 41.2, "engine_start_s": 26.0,
          "ready_at": 1.79e9, "node_id": "ab..", "hostname": "gpu-3", "engine_calls": 1, "parquet": b"PAR1..."}

Workers return the shard bytes instead of writing them, so the cache needs no filesystem shared across nodes: it
lives where the driver runs (the head). Teachers run one after another; each one's actors (and placement groups)
are released before the next starts. A fully cached teacher starts no engine. A teacher variant (a spec ending in
'#temperature=1.0', see cotgap_ray.models) is a teacher of its own: the base model, sampled with generation.*
overridden by its settings (sampling_params), into its own cache directory.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from cotgap_ray import answers, controls
from cotgap_ray.cluster import ResourceError, offered_node_types
from cotgap_ray.errors import InputError, RunFailure
from cotgap_ray.generation import cache
from cotgap_ray.generation.cache import CacheError, load_rationales
from cotgap_ray.generation.placement import (Placement, actor_count, actor_cpus, actor_gpus, check_resources,
                                             reserved_engines)
from cotgap_ray.generation.shard_worker import SHARD_FAILURE, ShardWorker, rationale_rows
from cotgap_ray.prompts import template_fingerprint
from cotgap_ray.records import Problem, SamplingParams

__all__ = ["CacheError", "GenerationError", "GenerationResult", "Placement", "ResourceError", "generate_rationales",
           "generate_teachers", "load_rationales", "rationale_rows", "summarize"]


class GenerationError(RunFailure):
    """Generation of one teacher failed; the message names the teacher. Other teachers' caches are untouched."""


@dataclass
class GenerationResult:
    """One teacher's cached rationales: the cache directory and the summary (see summarize + run statistics)."""

    teacher: str
    path: Path
    summary: dict

    def table(self) -> pa.Table:
        return load_rationales(self.path)


# ---------------------------------------------------------------------------------------------------- pure parts


def sampling_params(gen_cfg, variant: dict | None = None) -> SamplingParams:
    """The config's generation settings, overridden by a teacher variant's (models.split_variant: temperature,
    top_p, samples); max_tokens is always the config's, and so is the seed, except for a clone (``#clone=N``, a
    control: the same teacher drawing another sample of rationales, so its seed differs, by a hash of N)."""
    settings = {"temperature": gen_cfg.temperature, "top_p": gen_cfg.top_p, "samples": gen_cfg.samples,
                **(variant or {})}
    seed = gen_cfg.seed
    if settings.get("clone"):
        seed = int.from_bytes(hashlib.sha256(f"{seed}:clone:{settings['clone']}".encode()).digest()[:4], "big")
    return SamplingParams(max_tokens=gen_cfg.max_tokens, temperature=settings["temperature"],
                          top_p=settings["top_p"], n=settings["samples"], seed=seed & 0x7FFFFFFF)


def shard_seed(seed: int, shard_id: int) -> int:
    """A per-shard sampling seed: reruns of a shard repeat, and shards do not share random streams."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{shard_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def summarize(table: pa.Table, n_problems: int, *, max_tokens: int) -> dict:
    """Teacher accuracy and yield from rationale rows (pure). Problems without rows count as wrong.

    pass_at_1: mean over problems of the fraction of correct samples; majority_accuracy: the most frequent extracted
    answer (ties: the earliest sample) is correct; yield_rows: fraction of rows correct; yield_problems: fraction of
    problems with at least one correct rationale; truncated_rows / truncated_fraction: rows that stopped at
    `max_tokens`, the limit the rows were generated under (answers.truncated: such a row is never correct, so a large
    share makes every number here a measure of the budget; proxies.truncation_warning says so)."""
    rows = table.select(["problem_id", "sample_idx", "pred", "correct", "n_tokens"]).to_pylist()
    per_problem: dict[str, list[dict]] = {}
    for row in rows:
        per_problem.setdefault(row["problem_id"], []).append(row)
    pass1 = majority = any_correct = 0.0
    for samples in per_problem.values():
        samples.sort(key=lambda r: r["sample_idx"])
        pass1 += sum(r["correct"] for r in samples) / len(samples)
        votes = Counter(r["pred"] for r in samples if r["pred"] is not None)
        if votes:
            top = max(votes.values())
            winner = next(r["pred"] for r in samples if votes.get(r["pred"]) == top)
            majority += any(r["correct"] for r in samples if r["pred"] == winner)
        any_correct += any(r["correct"] for r in samples)
    n = max(n_problems, 1)
    correct_rows = sum(r["correct"] for r in rows)
    cut = sum(answers.truncated(r["n_tokens"], max_tokens) for r in rows)
    return {"n_problems": n_problems, "rows": len(rows), "correct_rows": correct_rows,
            "max_tokens": max_tokens, "truncated_rows": cut, "truncated_fraction": cut / len(rows) if rows else 0.0,
            "pass_at_1": pass1 / n, "majority_accuracy": majority / n,
            "yield_rows": correct_rows / len(rows) if rows else 0.0, "yield_problems": any_correct / n,
            "mean_tokens": sum(r["n_tokens"] for r in rows) / len(rows) if rows else 0.0}


# ---------------------------------------------------------------------------------------------- driver: planning


@dataclass
class TeacherJob:
    """Everything known about one teacher before any generation: where its cache is and what is missing."""

    spec: str
    model: object  # models.ResolvedModel, from ModelFacts: its path is valid only on the node that resolved it
    models_dir: str | None  # the model cache each engine's node resolves the spec into (models_dir_setting)
    path: Path
    manifest: dict
    pending: dict[int, str]  # shard id -> why it must be generated
    problems: list[Problem]
    sampling: SamplingParams
    kind: str
    options: dict
    tp: int


def plan_teacher(facts, problems: list[Problem], task: str, split: str, cfg, root: Path, placement: Placement):
    """The teacher's cache key and directory, and the shards still to generate, from its ModelFacts (models.remote:
    resolved on a generation node; nothing here opens a model directory)."""
    from cotgap_ray.engines.base import SEEDING
    from cotgap_ray.engines.options import engine_kind, engine_options
    from cotgap_ray.hardware import dtype_key
    from cotgap_ray.models import split_variant
    from cotgap_ray.models.remote import ModelFacts, models_dir_setting

    if not isinstance(facts, ModelFacts):
        raise TypeError(f"plan_teacher takes a teacher's ModelFacts (models.remote.describe_remote), not "
                        f"{type(facts).__name__} {facts!r}")
    model = facts.model
    spec = model.spec
    control = controls.is_control(split_variant(spec)[0])
    tp, kind = placement.tp(spec), "control" if control else engine_kind(cfg.engine)
    options = {} if control else engine_options(cfg.engine, context_limit=facts.context_limit, name=model.name)
    if tp > 1:
        if kind != "vllm":
            raise ResourceError(f"teacher {spec}: tensor_parallel={tp} needs engine kind vllm, not {kind}")
        options["tensor_parallel_size"] = tp
    # A variant (spec 'model#temperature=1.0') samples with its own settings; they are in the key through `sampling`
    # (and in model.fingerprint), so each variant has its own cache.
    sampling = sampling_params(cfg.generation, split_variant(spec)[1])
    if control:  # one rationale a problem, written, not sampled (controls.py)
        sampling = SamplingParams(max_tokens=sampling.max_tokens, temperature=0.0, top_p=1.0, n=1, seed=0)
    material = {"teacher": model.fingerprint, "task": task, "split": split,
                "problems": cache.problems_fingerprint(task, problems), "prompt": template_fingerprint(),
                "sampling": asdict(sampling), "shard_size": placement.shard_size,
                "engine": {"kind": kind, "dtype": dtype_key(cfg.engine.dtype),
                           "batch_size": None if kind == "vllm" else cfg.engine.batch_size},
                "scoring": answers.SCORING_VERSION,  # rows' pred/correct: rescored rows must not reuse old ones
                "seeding": SEEDING}  # how a shard's seed becomes each prompt's random stream (engines.base)
    key = cache.cache_key(material)
    path = cache.cache_dir(root, model.name, key)
    manifest = cache.open_manifest(path, key, material=material, teacher=model.name, n_problems=len(problems),
                                   samples=sampling.n, shard_size=placement.shard_size)
    pending = cache.pending_shards(path, manifest)
    return TeacherJob(spec, model, models_dir_setting(cfg), path, manifest, pending, problems, sampling, kind,
                      options, tp)


# --------------------------------------------------------------------------------------------- driver: running


def run_pipeline(job: TeacherJob, placement: Placement, groups: list, node_types: list[dict] | None = None
                 ) -> Iterator[dict]:
    """The Ray Data pipeline over the pending shards of one teacher, one engine in each placement group of `groups`
    (placement.reserved_engines: the engines that got a node); yields each finished shard's metadata + bytes."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bounds = cache.shard_bounds(len(job.problems), placement.shard_size)
    work = []
    for sid in sorted(job.pending):
        chunk = job.problems[bounds[sid][0]:bounds[sid][1]]
        work.append({"shard_id": sid, "seed": shard_seed(job.sampling.seed, sid),
                     "problem_ids": [p.id for p in chunk], "questions": [p.question for p in chunk],
                     "answers": [p.answer for p in chunk]})
    # max_restarts=0: a dead actor (hung engine killed by its deadline, lost node) fails the run, which a re-run
    # resumes; Ray Data's default (restart forever, retry the shard) would loop on a deterministic hang.
    node_types = offered_node_types() if node_types is None else node_types
    remote: dict = {"num_cpus": actor_cpus(placement, node_types), "max_restarts": 0,
                    # tensor parallel: vLLM's Ray workers take the group's GPUs, the engine actor none
                    "num_gpus": 0 if job.tp > 1 else actor_gpus(placement, node_types)}
    custom = placement.custom_resources()
    if custom:  # e.g. {"generation_node": 0.01, "accelerator_type:A100": 0.001}: held in the group's bundle 0
        remote["resources"] = custom
    # Ray 2.60's Data usage collection starts, in this driver, a daemon thread (data-usage-metrics-poller) that queries
    # a Prometheus server on localhost:9090 every 10 s for the rest of the process, logging a connection error each
    # time none runs (ours never does), and outliving ray.shutdown(). It only feeds Ray's usage statistics: off,
    # unless the user set it (RAY_DATA_USAGE_DISABLED=0 turns it back on).
    os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    ctx = ray.data.DataContext.get_current()
    # 0: each pool starts its actor without waiting for it. Ray Data starts its operators one after another, and a
    # positive wait blocks each start until that pool's actor is up: N engines would start one at a time. Every actor
    # has a node already (its group is placed), and its deadline (generation.timeout_s) bounds its start.
    saved_wait, ctx.wait_for_min_actors_s = ctx.wait_for_min_actors_s, 0
    # In a log file or CI (stdout not a terminal) Ray Data prints its whole progress block every 10 s and buries
    # the run's own lines; there our per-shard lines (rows, tok/s, ETA) are the progress. Bars stay on a terminal.
    saved_bars = ctx.enable_progress_bars
    if not sys.stdout.isatty():
        ctx.enable_progress_bars = False
    constructor = {"spec": job.spec, "fingerprint": job.model.fingerprint, "models_dir": job.models_dir,
                   "teacher": job.model.name, "kind": job.kind, "options": job.options,
                   "sampling": asdict(job.sampling), "timeout_s": placement.timeout_s}
    try:
        with warnings.catch_warnings():
            # Ray 2.60 deprecates **ray_remote_args (removal in 2.64) but has no named replacement yet for
            # max_restarts or a placement group (ray-project/ray#65227).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            pools = [ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                ShardWorker, batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=2),
                # this engine's shard count: it closes itself after its last one
                fn_constructor_kwargs={**constructor, "close_after": len(items)},
                # capture child tasks: vLLM's tensor-parallel workers land in the engine's group
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True),
                **remote) for items, group in zip(engine_shares(work, len(groups)), groups)]
            ds = pools[0].union(*pools[1:]) if len(pools) > 1 else pools[0]
        ds.set_name(f"cotgap-generate-{job.model.name}")  # the dashboard's Ray Data view: one row per teacher
        yield from shard_rows(ds)
    finally:
        ctx.wait_for_min_actors_s, ctx.enable_progress_bars = saved_wait, saved_bars


def engine_shares(work: list, n_engines: int) -> list[list]:
    """The shards each engine generates: round-robin, so shares differ by at most one shard and every engine knows
    its count. Ray Data ends a pool's actors by killing their child processes before any Python teardown of the UDF
    (the actor's log: "all references to the actor were removed", then "killing all child processes"), so an engine
    must close itself after its last shard; in one shared pool of several engines no engine knows which is its last
    (the resource tracker's `KeyError: '/psm_...'` tracebacks at every exit). One pool of one engine per share, unioned,
    trades dynamic balancing (equal shards on equal engines need none) for engines that close cleanly."""
    shares = [work[i::n_engines] for i in range(max(1, n_engines))]
    return [share for share in shares if share]


def shard_rows(ds) -> Iterator[dict]:
    """Every row of `ds` as its blocks are produced (here one row per finished shard: its metadata and bytes).

    Not ds.iter_rows(): when that iteration stops early (a failed shard, an interrupted run) Ray Data's block
    prefetcher thread (WaitBlockPrefetcher, named "Prefetcher") is never stopped (Ray 2.60 stops it only when the
    iterator runs to its end); it stays parked for the life of the process holding the last ObjectRefs it fetched,
    and outlives ray.shutdown(). A thread that keeps Ray objects past ray.shutdown() and into the next Ray session is
    what Ray reports as unsafe (ray-project/ray#31145: segfaults when restarting Ray with background threads running),
    and the likeliest cause of the suite's one crash at interpreter exit (issue 16). A row per shard needs neither
    batching nor prefetching: the ref-bundle iterator starts no thread."""
    import ray
    from ray.data.block import BlockAccessor

    bundles = ds.iter_internal_ref_bundles()
    try:
        for bundle in bundles:
            for entry in bundle.blocks:
                yield from BlockAccessor.for_block(ray.get(entry.ref)).iter_rows(public_row_format=True)
    finally:
        del bundles  # the executor (and its engine actors) ends with its iterator, on an early exit too


def wait_released(before: dict, timeout_s: float = 30.0) -> None:
    """Wait until the CPUs/GPUs available before a teacher are available again (its actors have exited)."""
    import ray

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        now = ray.available_resources()
        if all(now.get(r, 0) >= before.get(r, 0) - 1e-6 for r in ("CPU", "GPU")):
            return
        time.sleep(0.2)
    print(f"cotgap_ray.generate: resources not all back after {timeout_s:.0f}s (before {before}, now "
          f"{ray.available_resources()})", file=sys.stderr)


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _stall(job: TeacherJob, placement: Placement, last: float, done: set) -> str:
    """Why an engine actor died, when the reason is our own deadline (shard_worker.deadline ends the worker's
    process, so Ray reports only a dead actor): no shard arrived for longer than generation.timeout_s."""
    stalled = time.perf_counter() - last
    if stalled < placement.timeout_s:
        return ""
    unfinished = sorted(set(job.pending) - done)
    return (f"; no shard finished in the last {stalled:.0f}s, past generation.timeout_s={placement.timeout_s:g}: the "
            f"worker's deadline ended an engine that hung or a shard slower than the limit (shard "
            f"{', '.join(map(str, unfinished[:4]))}{' ...' if len(unfinished) > 4 else ''} of teacher "
            f"{job.model.name} unfinished); if the engine was only slow, raise generation.timeout_s or lower "
            f"generation.shard_size")


def run_teacher(job: TeacherJob, placement: Placement, progress=print_progress, on_shard=None) -> GenerationResult:
    """Generate the pending shards of one teacher (nothing when none is pending) and summarize its cache."""
    start = time.perf_counter()
    run = {"started": time.time(), "generated_shards": 0, "engine_calls": 0, "tokens": 0, "rows": 0,
           "regenerated": {str(i): why for i, why in job.pending.items() if why != "not recorded"}}
    if job.pending and job.kind == "control":
        write_control(job, placement, run, progress)
    elif job.pending:
        import ray

        job.path.mkdir(parents=True, exist_ok=True)
        cache.drop_shards(job.manifest, job.pending)
        node_types = offered_node_types()  # one view of the cluster for the check, the plan and the actors
        check_resources([job], placement, node_types)
        planned, before = actor_count(job, placement, node_types), ray.available_resources()
        total_rows = sum(cache.expected_rows(job.manifest, i) for i in job.pending)
        progress(f"[{job.model.name}] generating {len(job.pending)}/{job.manifest['n_shards']} shards "
                 f"({total_rows} rows) on up to {planned} engine(s) -> {job.path}")
        last, done = time.perf_counter(), set()
        try:
            # closing: the pipeline (and its actors) ends before the engines' placement groups are removed
            with reserved_engines(job, placement, planned, progress, node_types) as groups, \
                    closing(run_pipeline(job, placement, groups, node_types)) as shards:
                last = time.perf_counter()  # the stall clock starts when the engines have nodes
                for meta in shards:
                    meta = {k: v.item() if hasattr(v, "item") else v for k, v in meta.items()}  # numpy -> plain
                    sid = int(meta["shard_id"])
                    cache.record_shard(job.path, job.manifest, sid, meta.pop("parquet"), meta)
                    last = time.perf_counter()
                    done.add(sid)
                    for k, n in (("generated_shards", 1), ("engine_calls", meta["engine_calls"]),
                                 ("tokens", meta["n_tokens"]), ("rows", meta["rows"])):
                        run[k] += n
                    elapsed = time.perf_counter() - start
                    eta = elapsed / run["rows"] * (total_rows - run["rows"]) if run["rows"] else 0.0
                    progress(f"[{job.model.name}] shard {sid} done: {run['rows']}/{total_rows} rows, "
                             f"{run['tokens'] / elapsed:.0f} tok/s, {elapsed:.0f}s, ETA {eta:.0f}s, "
                             f"node {meta['node_id'][:8]}")
                    if on_shard is not None:
                        on_shard(meta)
        except (CacheError, ResourceError):  # a damaged cache, or no engine got a node: their own messages
            raise
        except Exception as e:  # noqa: BLE001 - one clear error naming the teacher; finished shards stay cached
            run["error"] = f"{type(e).__name__}: {e}"
            raise GenerationError(f"teacher {job.spec}: generation failed after {run['generated_shards']} of "
                                  f"{len(job.pending)} shards ({_cause(e)}){_stall(job, placement, last, done)}; "
                                  f"finished shards are kept in {job.path} and a re-run resumes there") from e
        finally:
            run["wall_s"] = time.perf_counter() - start
            job.manifest["runs"].append(run)
            cache.write_manifest(job.path, job.manifest)
            wait_released(before)
    table = load_rationales(job.path)
    summary = summarize(table, len(job.problems), max_tokens=job.sampling.max_tokens)  # the rows' own limit
    shards = job.manifest["shards"].values()
    engine_s = sum(s["seconds"] for s in shards)
    summary.update(teacher=job.model.name, spec=job.spec, path=str(job.path), key=job.manifest["key"],
                   engine=job.kind, samples=job.sampling.n, temperature=job.sampling.temperature,
                   tokens=sum(s["n_tokens"] for s in shards), engine_seconds=engine_s,
                   engine_start_s=max((s.get("engine_start_s", 0.0) for s in shards), default=0.0),
                   tokens_per_s=sum(s["n_tokens"] for s in shards) / engine_s if engine_s else 0.0,
                   generation_wall_s=sum(r.get("wall_s", 0.0) for r in job.manifest["runs"]),
                   wall_s=time.perf_counter() - start, generated_shards=run["generated_shards"],
                   cached_shards=job.manifest["n_shards"] - run["generated_shards"],
                   engine_calls=run["engine_calls"], run_tokens_per_s=run["tokens"] / (time.perf_counter() - start))
    return GenerationResult(job.model.name, job.path, summary)


def write_control(job: TeacherJob, placement: Placement, run: dict, progress=print_progress) -> None:
    """A control teacher's pending shards, written in this process: its rationales are a pure function of the
    problems (controls.py), so no engine, no Ray; recorded in the manifest like any teacher's shards."""
    from cotgap_ray.models import split_variant

    start = time.perf_counter()
    job.path.mkdir(parents=True, exist_ok=True)
    cache.drop_shards(job.manifest, job.pending)
    table = controls.rationale_rows(split_variant(job.spec)[0], job.problems, job.model.name,
                                    job.sampling.max_tokens)
    bounds = cache.shard_bounds(len(job.problems), placement.shard_size)
    for sid in sorted(job.pending):
        lo, hi = bounds[sid]
        data = cache.table_to_parquet(table.slice(lo, hi - lo))
        n_tokens = sum(table.column("n_tokens").to_pylist()[lo:hi])
        cache.record_shard(job.path, job.manifest, sid, data,
                           {"shard_id": sid, "rows": hi - lo, "sha256": cache.sha256_bytes(data), "n_tokens": n_tokens,
                            "seconds": 0.0, "engine_start_s": 0.0, "node_id": "", "hostname": "", "engine_calls": 0})
        for k, n in (("generated_shards", 1), ("tokens", n_tokens), ("rows", hi - lo)):
            run[k] += n
    job.manifest["runs"].append({**run, "wall_s": time.perf_counter() - start})
    cache.write_manifest(job.path, job.manifest)
    progress(f"[{job.model.name}] control teacher: {len(job.pending)} shard(s) written from the task's reference "
             f"solutions -> {job.path}")


def _cause(e: BaseException) -> str:
    """The shard worker's own explanation (shard_worker.ShardFailure) when the exception chain holds one, else the
    most telling line. Ray Data wraps a worker's exception in its own and appends generic advice on retries."""
    seen, todo = set(), [e]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        for line in str(err).splitlines():
            if SHARD_FAILURE in line:
                return line.split(SHARD_FAILURE, 1)[1].strip()
        todo += [err.__cause__, err.__context__, getattr(err, "cause", None)]
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if "Error" in line or "error" in line] or lines or [type(e).__name__]
    return useful[-1][:300]


# --------------------------------------------------------------------------------------------------- public API


def _problems(problems, split: str, task: str | None, cfg) -> tuple[list[Problem], str]:
    if hasattr(problems, "fingerprint"):  # a tasks.Splits
        return list(problems[split]), task or problems.task
    return list(problems), task or cfg.task.name


def _root(cfg, cache_dir) -> Path:
    from cotgap_ray.models import cache_root

    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root(cfg)


def generate_teachers(teachers: list, problems, cfg, cache_dir=None, *, split: str = "train", task: str | None = None,
                      placement: Placement | None = None, progress=print_progress, on_shard=None,
                      address: str | None = None) -> list[GenerationResult]:
    """Rationales of every teacher, one teacher after another (each releases its engines before the next).

    `teachers` are ModelFacts (models.remote.describe_remote(specs, cfg, "generation"): each resolved on a generation
    node; the driver never resolves or opens a model). `problems` is a list of Problem or a tasks.Splits (then
    `split` picks one). Everything that can fail cheaply (resources, the cache) fails before the first teacher
    starts; a failing teacher stops the run with its name. `address`: the Ray to join when none is connected."""
    from cotgap_ray.models.remote import ModelFacts

    wrong = [t for t in teachers if not isinstance(t, ModelFacts)]
    if wrong:
        raise TypeError(f"generate_teachers takes ModelFacts (models.remote.describe_remote(specs, cfg, "
                        f"'generation')), not {type(wrong[0]).__name__} {wrong[0]!r}")
    placement = placement or Placement.from_config(cfg.generation)
    problems, task = _problems(problems, split, task, cfg)
    if not problems:
        raise ValueError(f"no problems to generate rationales for (split {split})")
    root = _root(cfg, cache_dir)
    jobs = []
    for facts in teachers:
        try:
            jobs.append(plan_teacher(facts, problems, task, split, cfg, root, placement))
        except ResourceError:
            raise
        except InputError as e:  # stays a user-input error (one `error:` line), now naming the teacher
            raise type(e)(f"teacher {facts.model.spec}: {e}") from e
        except Exception as e:  # noqa: BLE001
            raise GenerationError(f"teacher {facts.model.spec}: {e}") from e
    if any(job.pending and job.kind != "control" for job in jobs):
        import ray

        if not ray.is_initialized():
            ray.init(address=address)
        check_resources([job for job in jobs if job.pending and job.kind != "control"], placement)
    return [run_teacher(job, placement, progress, on_shard) for job in jobs]


def generate_rationales(teacher, problems, cfg, cache_dir=None, **kwargs) -> GenerationResult:
    """Rationales of one teacher (its ModelFacts); see generate_teachers for the arguments."""
    return generate_teachers([teacher], problems, cfg, cache_dir, **kwargs)[0]
