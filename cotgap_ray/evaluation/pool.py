"""The search's evaluation engines: as many as the cluster can place for the trials that run at once, started with a
bounded wait, and whatever they logged merged into the run directory.

    names = start_pool(student_facts, {"dev": dev, "test": test}, cfg, lora_rank, run_dir, size=2, stage_rows)
    -> ["cotgap-evaluator-0", "cotgap-evaluator-1"]      ("evaluation engines: 2 of 2 started ...")
    merge_logs(run_dir)   # evaluators/*.json -> evals.json (every evaluation) and noise.json (every engine's floor)

One engine per TRIALS_PER_ENGINE trials at once, at most one per node that can hold one (search.eval_engines
overrides; search/resources.concurrency sizes trials and engines together): on one laptop that is one engine. A
trial is routed to an engine by a hash of its tag (scorers.EvaluatorScorer), and every delta pairs rows of the
engine that scored it, so engines need not agree (each has its own A/A noise floor; the report shows the largest).
An engine that dies with its node is restarted by Ray (max_restarts) on another node; it then resolves the student
there and measures its own baseline again before its next score.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cotgap_ray.evaluation.evaluator import Evaluator, evaluator_name, evaluator_request
from cotgap_ray.records import write_json

RESTARTS = 4  # a node lost mid-search is routine on a cloud; a deterministic crash must still end the run
# Trials at once per evaluation engine when search.eval_engines is not set. An engine scores one adapter on dev per
# trial epoch, while the trial trains that epoch on the whole train split: on 2 CPU cores scoring the smoke dev split
# took a small fraction of an epoch (benchmarks/results/2026-12-scoring.md for the engines' rates), so a few trials
# share one engine; an engine on a GPU node takes that node from the trials (cluster.yaml's 1-GPU fine-tune type).
TRIALS_PER_ENGINE = 4
# The handles of the started engines, until close_pool: a named actor that is not detached dies when the last handle
# to it goes ("all references to the actor were removed"), and trials only hold its name.
_HANDLES: dict[str, object] = {}


def pool_size(cfg, concurrent: int, node_types: list[dict]) -> int:
    """search.eval_engines, else one engine per TRIALS_PER_ENGINE trials at once, at most one per node (alive, or
    launchable up to its max) that holds one, at least 1."""
    import math

    from cotgap_ray.cluster import fits

    if cfg.search.eval_engines:
        return cfg.search.eval_engines
    request = evaluator_request(cfg)
    nodes = sum(concurrent if t["count"] is None else t["count"] for t in node_types if fits(request, t["resources"]))
    return max(1, min(nodes, math.ceil(concurrent / TRIALS_PER_ENGINE)))


def start_pool(student, problem_sets: dict, cfg, lora_rank: int, run_dir: Path, size: int,
               stage_baselines: dict | None = None) -> list[str]:
    """Start `size` engines (pool_size; student: models.remote.ModelFacts) and wait up to generation.node_wait_s (a
    node) + generation.timeout_s (the student resolved and its engine started, bounded like a generation engine's);
    returns the names of those that started (at least one, else RunFailure naming the request and the node types).
    Engines that did not start in time are killed: the search goes on with the engines that exist."""
    import ray

    from cotgap_ray.cluster import describe_types, offered_node_types
    from cotgap_ray.errors import RunFailure
    from cotgap_ray.models.remote import models_dir_setting

    node_types = offered_node_types()
    request = evaluator_request(cfg)
    options = {"max_restarts": RESTARTS, "max_task_retries": 0, "num_cpus": request.pop("CPU", 0.0),
               "num_gpus": request.pop("GPU", 0.0)}
    if request:
        options["resources"] = request
    actors = {}
    for index in range(size):
        name = evaluator_name(index)
        actors[name] = ray.remote(Evaluator).options(name=name, get_if_exists=True, **options).remote(
            student.model.spec, student.model.fingerprint, models_dir_setting(cfg), cfg.engine, lora_rank,
            problem_sets, str(run_dir / "evaluators"), index, stage_baselines)
    pending = {actor.ready.remote(): name for name, actor in actors.items()}
    wait = cfg.generation.node_wait_s + cfg.generation.timeout_s
    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=wait)
    started, infos = [], []
    for ref in ready:
        try:
            infos.append(ray.get(ref))
            started.append(pending[ref])
        except ray.exceptions.RayError as e:  # the engine failed to start: its error, if none starts
            print(f"warning: evaluation engine {pending[ref]} failed to start: {str(e).splitlines()[0]}",
                  file=sys.stderr)
    for name in set(actors) - set(started):
        ray.kill(actors[name], no_restart=True)
    _HANDLES.update({name: actors[name] for name in started})
    if not started:
        raise RunFailure(f"no evaluation engine started within {wait:g}s (generation.node_wait_s + "
                         f"generation.timeout_s; each asks for {evaluator_request(cfg)}: search.eval_cpus / "
                         f"search.eval_gpus on a train.accelerator_type / train.resources node). The cluster offers:\n"
                         f"{describe_types(node_types)}\nCheck that such a node can start (max_workers, the GPU "
                         f"quota of the account), or lower search.eval_gpus")
    started.sort()
    seconds = max(i["start_seconds"] for i in infos)
    nodes = len({i["node_id"] for i in infos})
    print(f"evaluation engines: {len(started)} of {size} started on {nodes} node(s) ({infos[0]['engine']}, "
          f"{seconds:.0f}s to start)")
    return started


def handles(names: list[str]) -> list:
    import ray

    return [ray.get_actor(name) for name in names]


def close_pool(names: list[str]) -> None:
    """Close each engine (its engine process and shared memory end cleanly), then kill the actor."""
    import ray

    for name in names:
        try:
            actor = _HANDLES.pop(name, None) or ray.get_actor(name)
        except ValueError:
            continue
        try:
            ray.get(actor.close.remote(), timeout=60)
        except Exception as e:  # noqa: BLE001 - a dead or stuck evaluator is killed below all the same
            print(f"warning: evaluation engine {name} did not close cleanly ({type(e).__name__}); killing it",
                  file=sys.stderr)
        ray.kill(actor, no_restart=True)


def merge_logs(run_dir: Path) -> None:
    """evals.json and noise.json from every engine's log under evaluators/ (every start of every engine, earlier
    sessions' too), in time order. Entries of a run written before engines kept logs (no `engine` key) are kept."""
    logs = []
    for path in sorted((run_dir / "evaluators").glob("*.json")):
        try:
            logs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:  # a damaged log loses its own records, not the run
            print(f"warning: {path}: unreadable ({e}); its evaluations are left out of evals.json", file=sys.stderr)
    for name, key in (("evals.json", "calls"), ("noise.json", "noise")):
        path = run_dir / name
        try:
            legacy = [e for e in json.loads(path.read_text()) if "engine" not in e] if path.exists() else []
        except (OSError, ValueError):
            legacy = []
        entries = legacy + [e for log in logs for e in log.get(key, [])]
        write_json(path, sorted(entries, key=lambda e: e.get("time", 0.0)))
