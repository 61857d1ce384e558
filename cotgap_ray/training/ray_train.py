"""LoRA fine-tune of the student on Ray Train: a TorchTrainer built and fit() in the caller (the Train V2 pattern, so a
Tune trial function can call it; pass `callbacks=[TuneReportCallback()]` to forward the epoch reports).

    result = train_student(student_dir, "rationales.parquet", {"p1": "What is 3 + 4?"}, LoraSettings(epochs=2),
                           storage_path="/runs/x/train", name="trial-0007")
    result.adapter_dir          -> ".../trial-0007/checkpoint_..."   (peft adapter, safetensors)
    result.metrics_per_epoch    -> [{"epoch": 1, "train_loss": 2.31, "tokens": 5120, ...}, {"epoch": 2, ...}]

train_loop_per_worker is the TorchTrainer worker: its shard of the length-bucketed batches (training/loop.py), DDP
when world size > 1, a report per epoch (metrics + the adapter as a checkpoint, written by rank 0).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cotgap_ray.cluster import join_storage, normalize_storage
from cotgap_ray.config import LoraSettings
from cotgap_ray.training.examples import checks_before_training
from cotgap_ray.training.loop import EvalFn, TrainResult, make_job, save_adapter, train_epochs


class TrainingFailed(RuntimeError):
    """The TorchTrainer run failed; the message names the student, the rationales and the run directory."""


def train_loop_per_worker(config: dict) -> list[dict]:
    """The TorchTrainer worker function. `config["job"]` is the loop.TrainJob (Ray Train wants a dict around it);
    returns the epoch metrics (Result.return_value)."""
    import ray.train
    import ray.train.torch

    from cotgap_ray.training.threads import apply_threads

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    job = config["job"]
    apply_threads(job.threads)  # before the first torch op: its thread pool is sized then
    eval_fn = job.eval_fn

    def report(metrics: dict, model) -> None:
        # All ranks report every epoch (report is a barrier); only rank 0 writes the adapter and evaluates it.
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_adapter(model, directory)
            if eval_fn is not None:
                metrics.update(eval_fn(directory))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=f"epoch_{metrics['epoch']:03d}")

    return train_epochs(job, rank, world_size, ray.train.torch.get_device(), ray.train.torch.prepare_model, report)


def train_student(student_path: str, rationales_path: str, problems: dict[str, str], settings: LoraSettings,
                  storage_path: str, name: str, num_workers: int = 1, use_gpu: bool = False,
                  eval_fn: EvalFn | None = None, cpus_per_worker: int = 1, keep_checkpoints: int | None = 1,
                  callbacks: list | None = None, accelerator_type: str | None = None,
                  resources: dict | None = None, student_spec: str | None = None,
                  models_dir: str | None = None, dtype: str = "auto", stop_after: int | None = None,
                  threads: int | str | None = None) -> TrainResult:
    """LoRA fine-tune of the student on the rationales in a Parquet file, with a TorchTrainer built and fit() here.

    `problems` maps problem_id -> question. Raises NoTrainingData (before Ray starts) when no rationale makes an
    example, ValueError for a LoRA target the student lacks, TrainingFailed when the run fails. The run lives in
    storage_path/name; each epoch's adapter is a checkpoint there (the newest `keep_checkpoints` are kept; None:
    all) and `adapter_dir` is the last one. `eval_fn(adapter_dir) -> dict` (picklable: a module-level function or a
    functools.partial) runs on rank 0 after each epoch; its metrics join the epoch report, so a Tune scheduler can
    stop the trial. `student_spec` (+ `models_dir`) lets a worker on another node resolve the student itself when
    `student_path` does not exist there. In a Tune trial pass
    `callbacks=[ray.tune.integration.ray_train.TuneReportCallback()]`.
    `threads`: each worker's torch threads (training/threads.worker_threads: a count, "node" for every CPU of its
    node, None for Ray's OMP_NUM_THREADS, which is `cpus_per_worker`). Reusing a `name`
    starts training over: Ray Train loads the old run's checkpoint list, but this loop does not resume from it.

    Placement on a cluster: `accelerator_type` (e.g. "L40S") and `resources` (custom resources per worker, e.g.
    {"finetune_node": 0.01}) go to ScalingConfig, so every worker lands on such a node (the Train controller stays
    on the caller's node). Check them first with cluster.check_request: a request no node type can hold waits
    for resources instead of failing. `storage_path` is a local directory or a URI (s3://bucket/prefix, gs://...,
    shared by all nodes); with a URI, `adapter_dir` is a download of the last checkpoint on this node and
    `checkpoint` its URI. `dtype` (train.dtype) is resolved on each worker's own hardware (hardware.resolve_dtype).
    """
    start = time.perf_counter()
    # Workers run in their own working directories: hand them absolute paths.
    student_path, rationales_path = (str(Path(p).expanduser().resolve()) for p in (student_path, rationales_path))
    n_examples = checks_before_training(student_path, rationales_path, problems, settings, num_workers)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # slow import: after checks
    from ray.train.torch import TorchTrainer

    storage = normalize_storage(storage_path)  # URIs as they are; local paths absolute (workers chdir)
    run_dir = join_storage(storage, name)
    clear_previous_attempt(run_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": make_job(student_path, rationales_path, problems, settings, eval_fn, student_spec,
                                           models_dir, dtype, stop_after, threads)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **(resources or {})},
                                     accelerator_type=accelerator_type),
        run_config=RunConfig(storage_path=storage, name=name, callbacks=callbacks,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
                             # Ray Train retries a worker group that cannot start forever by default; a request
                             # that never fits (e.g. resources held by a leaked placement group) must fail instead.
                             failure_config=FailureConfig(max_failures=0, controller_failure_limit=2)),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - TrainingFailedError / WorkerGroupError / ControllerError: say which run
        raise TrainingFailed(f"LoRA training of {student_path} on {rationales_path} failed (run directory "
                             f"{run_dir}): {e}") from e
    if result.checkpoint is None or not result.return_value:
        raise TrainingFailed(f"LoRA training of {student_path} in {run_dir} finished without an adapter")
    history = result.return_value
    return TrainResult(adapter_dir=_local_dir(result.checkpoint, name), metrics_per_epoch=history,
                       train_tokens=sum(m["tokens"] for m in history), seconds=time.perf_counter() - start,
                       n_examples=n_examples, checkpoint=checkpoint_uri(result.checkpoint, run_dir))


def clear_previous_attempt(run_dir: str) -> None:
    """Remove what an earlier attempt under this name left (a trial that failed, or was killed, and now runs again).
    This loop always starts over, so none of it would be used, and Ray Train would read its run state: a state file
    cut short by a full disk or a kill makes the TrainController fail in __init__, failing the retried trial too."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(run_dir if "://" in run_dir else str(Path(run_dir).resolve()))
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        print(f"training {run_dir}: removing an earlier attempt's files (training starts over)")
        fs.delete_dir(path)


def checkpoint_uri(checkpoint, run_dir: str) -> str:
    """Where a Ray Train checkpoint lives: its local path, or run_dir/<checkpoint dir> for remote storage."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return checkpoint.path
    return join_storage(run_dir, Path(checkpoint.path).name)


def _local_dir(checkpoint, name: str) -> str:
    """The checkpoint as a local directory: its own path on local storage, else a download into a fresh local
    directory (remote storage: the adapter is small, and peft / vLLM read local files)."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return checkpoint.path
    local = Path(tempfile.mkdtemp(prefix=f"cotgap-adapter-{name}-")) / Path(checkpoint.path).name
    return checkpoint.to_directory(str(local))
