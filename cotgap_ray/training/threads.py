"""How many torch threads a Ray Train worker runs: the CPUs Ray gave it, or its whole node when nothing else of the
run computes there while it trains.

Ray sets a worker's OMP_NUM_THREADS (and so torch's thread count) to the CPUs it holds: train.cpus_per_worker, 1 by
default. On a 2-core machine a trial's worker then trains on one core while the other idles: the evaluation engine
beside it (search.eval_cpus) runs only between epochs, while the worker waits for its scores, and a second trial does
not fit. Measured there (benchmarks/results/2026-12-train-threads.md, SmolLM2-135M LoRA, bf16, 2-core Zen 4): 1
thread 194-195 tokens/s, 2 threads 329-352. So, with train.threads unset, a worker takes every CPU of its node when
the run trains one model at a time there: one Train worker per fine-tune, on CPU, and one fine-tune at once (a search
that runs one trial at a time, a confirmation seed, distill). Where several trials run at once the workers keep the
CPUs Ray accounts for, so a 16-core node running 15 trials is not asked for 15 x 16 threads.

    worker_threads(TrainConfig(), at_once=1)   -> "node"   (the worker counts its node's CPUs: node_threads)
    worker_threads(TrainConfig(), at_once=3)   -> None     (Ray's OMP_NUM_THREADS: train.cpus_per_worker)
    worker_threads(TrainConfig(threads=4), 3)  -> 4        (set by the user: pinned)
"""

from __future__ import annotations

import os

WHOLE_NODE = "node"


def worker_threads(train, at_once: int = 1) -> int | str | None:
    """The thread setting a fine-tune's workers get (TrainJob.threads): train.threads when set; else WHOLE_NODE when
    one CPU worker trains alone (`at_once`: fine-tunes of this run that may train at the same time, on any nodes);
    else None, Ray's own setting (train.cpus_per_worker). GPU workers keep Ray's: their compute is the GPU's."""
    if train.threads is not None:
        return train.threads
    if train.use_gpu or train.num_workers > 1 or at_once > 1:
        return None
    return WHOLE_NODE


def node_threads() -> int:
    """In a Ray worker: the CPUs Ray counts on this worker's node (a node started with --num-cpus 2 on a bigger
    machine counts 2), never more than this process may run on (its CPU affinity)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    cpus = next((node["Resources"].get("CPU", 1) for node in ray.nodes() if node["NodeID"] == node_id), 1)
    return max(1, min(int(cpus), len(os.sched_getaffinity(0))))


def apply_threads(setting: int | str | None) -> int:
    """Set torch's thread count from a worker_threads setting (None: leave Ray's); returns the count in force."""
    import torch

    if setting == WHOLE_NODE:
        setting = node_threads()
    if setting is not None:
        torch.set_num_threads(int(setting))
    return torch.get_num_threads()


def describe_threads(train, at_once: int) -> str:
    """What the search prints after a trial's request: how many threads its workers train on."""
    setting = worker_threads(train, at_once)
    if setting == WHOLE_NODE:
        return ", training on every CPU of its node (one trial at a time: train.threads)"
    if setting is None:
        return ""  # Ray's: the CPUs the request above holds
    return f", {setting} torch threads per worker (train.threads)"
