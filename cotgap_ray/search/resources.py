"""What the search asks Ray for: one trial's request, how many trials run at once on the cluster's node types, and
the check, before any model loads, that a node can hold a generation engine, the evaluation engine and one
fine-tune worker (on the cluster once Ray is up, or, in preflight, on the one node a local Ray would start).

    per_trial_request(cfg) -> {"CPU": 2.01}            (two Train workers of 1 CPU + the trial driver)
    max_concurrent(cfg, [{"resources": {"CPU": 8}, "count": 1}]) -> 3
"""

from __future__ import annotations

from cotgap_ray.evaluation.evaluator import evaluator_request

TRIAL_DRIVER = {"CPU": 0.01}  # the trial function only drives its TorchTrainer; the workers hold the real CPUs


def trial_request(cfg) -> dict:
    """What the trial function itself (Tune's trainable, a confirmation seed's driver) asks for: a sliver of CPU on a
    node of the fine-tune type (train.resources, train.accelerator_type), because it reads the student's tokenizer to
    check the SFT examples: it resolves the student on its own node, which must be one that trains it, not the head."""
    from cotgap_ray.cluster import full_request

    return {**TRIAL_DRIVER, **{k: v for k, v in full_request(cfg.train.resources, cfg.train.accelerator_type).items()
                               if k not in ("CPU", "GPU")}}


def per_trial_request(cfg) -> dict:
    """What one trial holds while it trains: its Train workers (+ the small trial driver)."""
    workers = cfg.train.num_workers
    request = {"CPU": workers * cfg.train.cpus_per_worker + TRIAL_DRIVER["CPU"]}
    if cfg.train.use_gpu:
        request["GPU"] = float(workers)
    return request


def worker_request(cfg) -> dict:
    """One Train worker of a trial as Ray places it, with its share of the trial driver's sliver."""
    from cotgap_ray.cluster import full_request

    return full_request({"CPU": cfg.train.cpus_per_worker + TRIAL_DRIVER["CPU"] / cfg.train.num_workers,
                         "GPU": 1.0 if cfg.train.use_gpu else 0.0, **cfg.train.resources}, cfg.train.accelerator_type)


def max_concurrent(cfg, node_types: list[dict], evaluators: int = 1) -> int:
    """Trials at once: how many trials' workers the cluster's node types hold (alive nodes, plus the types an
    autoscaler may launch, up to their max_workers), after `evaluators` evaluation engines (one per node, on the
    first nodes that hold one: evaluation/pool.py) take their share; at least 1, at most the budget. `node_types` as
    cluster.offered_node_types() returns them."""
    from cotgap_ray.cluster import fits, slots

    if cfg.search.max_concurrent_trials:
        return cfg.search.max_concurrent_trials
    worker = worker_request(cfg)
    evaluator = evaluator_request(cfg)
    workers, left = 0, evaluators
    for node_type in node_types:
        resources, count = dict(node_type["resources"]), node_type["count"]
        count = cfg.search.trials * cfg.train.num_workers + left if count is None else count
        shared = min(left, count) if fits(evaluator, resources) else 0  # nodes that also hold an engine
        rest = {k: v - evaluator.get(k, 0.0) for k, v in resources.items()}
        workers += min(slots(worker, rest), 10**6) * shared + min(slots(worker, resources), 10**6) * (count - shared)
        left -= shared
    return max(1, min(workers // cfg.train.num_workers, cfg.search.trials))


def concurrency(cfg, node_types: list[dict]) -> tuple[int, int]:
    """(trials at once, evaluation engines): the pool asks for one engine per TRIALS_PER_ENGINE trials at once, on
    nodes that hold one (evaluation/pool.py), and the trials fit beside the engines it takes."""
    from cotgap_ray.evaluation.pool import pool_size

    engines = pool_size(cfg, max_concurrent(cfg, node_types), node_types)
    return max_concurrent(cfg, node_types, engines), engines


# The work each stage asks Ray for, and the config keys that size its request (named when it cannot be placed).
WORK_KEYS = {
    "generation": ("generation.cpus_per_actor", "generation.gpus_per_actor", "generation.tensor_parallel",
                   "generation.resources", "generation.accelerator_type"),
    "evaluator": ("search.eval_cpus", "search.eval_gpus", "train.resources", "train.accelerator_type"),
    "finetune": ("train.cpus_per_worker", "train.use_gpu", "train.resources", "train.accelerator_type"),
}


def check_resources(cfg, node_types: list[dict] | None = None, work: tuple[str, ...] = tuple(WORK_KEYS),
                    teachers: list[str] | None = None) -> None:
    """Fail before any model loads when no node can hold one engine of some teacher's generation, the evaluation
    engine, or one fine-tune worker (`work`: which of them; all by default): every stage's request, checked against
    `node_types` (default: the alive nodes and the node types an autoscaler may launch; preflight passes the one
    local node a plain ray.init() would start). `teachers`: the specs generated for (default: the config's).
    (The baseline runs in the driver's process and asks Ray for nothing.)"""
    from types import SimpleNamespace

    from cotgap_ray import cluster
    from cotgap_ray.cluster import check_request
    from cotgap_ray.controls import is_control
    from cotgap_ray.generation.placement import Placement
    from cotgap_ray.generation.placement import check_resources as check_generation

    if node_types is None:
        node_types = cluster.offered_node_types()  # one view of the cluster for every stage's check
    if "generation" in work:
        placement = Placement.from_config(cfg.generation)
        # check_generation reads only a job's spec and tensor-parallel size, both known from the config: no model
        # is resolved (a packaged teacher would be converted) before an impossible request is refused.
        # A control teacher (controls.py) is written from the task by the driver: it asks Ray for no engine.
        check_generation([SimpleNamespace(spec=spec, tp=placement.tp(spec)) for spec in teachers or cfg.teachers
                          if not is_control(spec)], placement, node_types)
    if "evaluator" in work:
        check_request({"CPU": cfg.search.eval_cpus, "GPU": cfg.search.eval_gpus, **cfg.train.resources},
                      "the evaluation engine (search.eval_cpus / search.eval_gpus, on a train.accelerator_type / "
                      "train.resources node)", accelerator_type=cfg.train.accelerator_type,
                      setting="train.accelerator_type", node_types=node_types)
    if "finetune" in work:
        worker = {"CPU": float(cfg.train.cpus_per_worker), "GPU": 1.0 if cfg.train.use_gpu else 0.0,
                  **cfg.train.resources}
        check_request(worker, "a fine-tune worker (train.cpus_per_worker / train.use_gpu / train.resources)",
                      accelerator_type=cfg.train.accelerator_type, setting="train.accelerator_type",
                      node_types=node_types)
