"""LoRA fine-tune of the student on teacher rationales: one epoch loop, run by Ray Train's TorchTrainer or plainly.

    result = train_student(student_dir, "rationales.parquet", {"p1": "What is 3 + 4?"}, LoraSettings(epochs=2),
                           storage_path="/runs/x/train", name="trial-0007")
    result.adapter_dir          -> ".../trial-0007/epoch_002"   (peft adapter, safetensors; load with PeftModel)
    result.metrics_per_epoch    -> [{"epoch": 1, "train_loss": 2.31, "tokens": 5120, "seconds": 3.1,
                                     "tokens_per_s": 1651.6, ...}, {"epoch": 2, ...}]

Pieces, in the order they run:
  check_target_modules   before anything expensive: every LoRA target names a linear layer of the student
  check_examples         before Ray starts: the rows sft drops by reason (sft.ExampleDrops, for the trial's filter
                         report); zero usable rationales raise NoTrainingData (the trial's "no data"), which carries
                         the same drops. count_examples is its count.
  train_loop_per_worker  the TorchTrainer worker: its shard of the length-bucketed batches, DDP when world size > 1,
                         a report per epoch (metrics + the adapter as a checkpoint, written by rank 0)
  train_student          builds and fit()s the TorchTrainer in the caller (the Train V2 pattern, so a Tune trial
                         function can call it; pass `callbacks=[TuneReportCallback()]` to forward the epoch reports)
  train_plain            the same loop without Ray: the benchmark's baseline and the debugging path

Both paths share `_train` (load, wrap with LoRA, optimizer, epochs) and `run_epoch`; they differ only in how the
model is placed (`prepare_model` vs `.to(device)`) and what happens at the end of an epoch (report vs save).
Examples come from cotgap_ray.sft (prompt masked, loss on the rationale only). The student's frozen weights load in
the dtype hardware.resolve_dtype picks where the worker runs (`auto`: bfloat16 on CUDA and on CPUs with native bf16,
float32 on CPUs without it); peft keeps the adapter weights in float32 either way.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch

from cotgap_ray.cluster import join_storage, normalize_storage
from cotgap_ray.config import LoraSettings
from cotgap_ray.errors import InputError
from cotgap_ray.sft import Example, ExampleDrops, build_examples_and_drops, collate, length_bucketed_batches

log = logging.getLogger(__name__)

EvalFn = Callable[[str], dict]  # adapter dir -> metrics merged into the epoch report (e.g. {"dev_accuracy": 0.4})


@dataclass
class TrainResult:
    adapter_dir: str  # the last epoch's adapter (peft, safetensors), a local directory on this node
    metrics_per_epoch: list[dict]
    train_tokens: int  # non-padding tokens through the forward pass, all epochs, all workers
    seconds: float  # wall time of the whole call, start-up included
    n_examples: int = 0
    checkpoint: str = ""  # the adapter in storage: a local path, or a URI (s3://...) that other nodes can read


class NoTrainingData(ValueError):
    """No usable SFT example: raised before any training starts. A search turns it into a "no data" trial result
    (n_train_examples=0, no adapter, no dev score) rather than a failed trial. `drops`: what sft did with the rows
    (sft.ExampleDrops) when the examples were built, else None (e.g. fewer batches than workers: the drops are then
    those check_examples returned)."""

    def __init__(self, message: str, drops: ExampleDrops | None = None):
        super().__init__(message)
        self.drops = drops

    def __reduce__(self):  # keep `drops` when Ray or Tune pickle the exception
        return type(self), (str(self), self.drops)


class TrainingFailed(RuntimeError):
    """The TorchTrainer run failed; the message names the student, the rationales and the run directory."""


# ----------------------------------------------------------------------------------------------- checks before work


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct leaf names of the model's nn.Linear layers (e.g. q_proj, ..., down_proj, lm_head)."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def check_target_modules(model: torch.nn.Module, target_modules: list[str]) -> None:
    """Raise ValueError when a LoRA target is not the name of a linear layer of `model`.

    Works on a meta-device skeleton (student_skeleton), so a typo fails before any weights load."""
    available = linear_module_names(model)
    missing = [t for t in target_modules if t not in available]
    if missing:
        raise InputError(
            f"LoRA target module(s) {', '.join(map(repr, missing))} not found in {type(model).__name__}; "
            f"its linear modules are: {', '.join(available)}. Set lora.target_modules to some of these."
        )


def student_skeleton(student_path: str) -> torch.nn.Module:
    """The student's architecture on the meta device: module names without loading (or allocating) weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(student_path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def load_examples_and_drops(student_path: str, rationales, problems: dict[str, str],
                            max_length: int) -> tuple[object, list[Example], ExampleDrops]:
    """The student's tokenizer, one SFT example per usable rationale row, and the rows dropped by reason
    (sft.build_examples_and_drops). `rationales`: a Parquet path, or the Parquet file's bytes (how a worker on
    another node gets them)."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student_path)
    table = pq.read_table(pa.BufferReader(rationales) if isinstance(rationales, bytes) else rationales)
    examples, drops = build_examples_and_drops(table, problems, tokenizer, max_length)
    return tokenizer, examples, drops


def load_examples(student_path: str, rationales, problems: dict[str, str],
                  max_length: int) -> tuple[object, list[Example]]:
    """load_examples_and_drops without the drops (sft logs them)."""
    tokenizer, examples, _ = load_examples_and_drops(student_path, rationales, problems, max_length)
    return tokenizer, examples


# What to do about each drop reason, for the NoTrainingData message.
_DROP_HINTS = {
    "prompt does not tokenize as a prefix": "check the rationales' first characters or the student's tokenizer",
    "prompt alone fills lora.max_length": "raise lora.max_length",
    "truncated at lora.max_length": "raise lora.max_length or cut long rationales with the 'length' filter",
}


def check_examples(student_path: str, rationales_path: str, problems: dict[str, str],
                   max_length: int) -> ExampleDrops:
    """What the SFT example builder makes of the rationales (tokenizer only, no model): `kept` examples and the rows
    dropped by reason (sft.ExampleDrops; `.to_dict()` for a report, FilterReport.add_sft_drops for a filter
    report). Drops are logged. Raises NoTrainingData, carrying the drops, when no example is left."""
    _, _, drops = load_examples_and_drops(student_path, rationales_path, problems, max_length)
    if drops.kept == 0:
        if drops.rows_in == 0:
            why = " (the filters kept no rationale)"
        else:
            why = "; ".join(f"{n} {reason}: {_DROP_HINTS[reason]}" for reason, n in drops.dropped.items() if n)
            why = f" (dropped: {why})"
        raise NoTrainingData(f"no SFT examples from {rationales_path}: {drops.rows_in} rationale rows, none usable "
                             f"at max_length={max_length}{why}", drops)
    return drops


def count_examples(student_path: str, rationales_path: str, problems: dict[str, str], max_length: int) -> int:
    """Usable examples (tokenizer only, no model); NoTrainingData when there are none. check_examples also says which
    rows were dropped and why."""
    return check_examples(student_path, rationales_path, problems, max_length).kept


# ------------------------------------------------------------------------------------------------------ the loop


def load_student(student_path: str, settings: LoraSettings, device: torch.device,
                 dtype: str = "auto") -> torch.nn.Module:
    """The student with fresh LoRA adapters (seeded), in train mode. `dtype` of the frozen weights: see
    hardware.resolve_dtype (auto: bf16 on CUDA or a CPU with native bf16, else float32; emulated bf16 is ~60x slower)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cotgap_ray.hardware import dtype_for

    choice = dtype_for("training", dtype, device.type)
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=choice.torch)
    check_target_modules(model, settings.target_modules)
    torch.manual_seed(settings.seed)  # LoRA A is randomly initialized: the same seed gives the same adapter
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    return model


def make_optimizer(model: torch.nn.Module, settings: LoraSettings, total_steps: int):
    """AdamW over the trainable (LoRA) parameters, linear warmup then linear decay to 0 over total_steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    warmup = math.ceil(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches: every world_size-th one, the same count on every rank (DDP steps in lockstep, so an
    extra step on one rank would hang the others); at most world_size - 1 trailing batches are left out."""
    per_rank = len(batches) // world_size
    return batches[rank::world_size][:per_rank]


@dataclass
class EpochStats:
    loss_sum: float  # per-token loss summed over the completion tokens
    label_tokens: int  # completion tokens that carried a loss
    tokens: int  # non-padding tokens through the forward pass
    batches: int
    seconds: float


def run_epoch(model, optimizer, scheduler, examples: list[Example], batches: list[list[int]], pad_id: int,
              device: torch.device, max_grad_norm: float) -> EpochStats:
    """One pass over `batches` (lists of example indices): forward, backward, clip, step."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum, label_tokens, tokens = 0.0, 0, 0
    start = time.perf_counter()
    for batch_idx in batches:
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in batch_idx], pad_id).items()}
        loss = model(**batch).loss  # HF shifts the labels and averages over the tokens that are not IGNORE
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n_labels = int((batch["labels"][:, 1:] != -100).sum())
        loss_sum += float(loss.detach()) * n_labels
        label_tokens += n_labels
        tokens += int(batch["attention_mask"].sum())
    return EpochStats(loss_sum, label_tokens, tokens, len(batches), time.perf_counter() - start)


def all_reduce_stats(stats: EpochStats, device: torch.device) -> EpochStats:
    """Sum the counts over the DDP ranks (no-op when torch.distributed is not initialized); seconds = the slowest."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return stats
    sums = torch.tensor([stats.loss_sum, stats.label_tokens, stats.tokens, stats.batches], dtype=torch.float64,
                        device=device)
    dist.all_reduce(sums)
    slowest = torch.tensor([stats.seconds], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    loss_sum, label_tokens, tokens, batches = sums.tolist()
    return EpochStats(loss_sum, int(label_tokens), int(tokens), int(batches), float(slowest))


def epoch_metrics(epoch: int, stats: EpochStats, lr: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": stats.loss_sum / max(1, stats.label_tokens),
        "tokens": stats.tokens,
        "label_tokens": stats.label_tokens,
        "batches": stats.batches,  # all ranks together
        "seconds": stats.seconds,
        "tokens_per_s": stats.tokens / stats.seconds if stats.seconds > 0 else 0.0,
        "lr": lr,
        "threads": torch.get_num_threads(),  # per worker; Ray sets it from the CPUs a worker holds
    }


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The PeftModel inside a DDP wrapper (save_pretrained lives there)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_adapter(model: torch.nn.Module, directory: str) -> None:
    unwrap(model).save_pretrained(directory, safe_serialization=True)


OnEpoch = Callable[[dict, torch.nn.Module], None]  # (epoch metrics, model) -> save / evaluate / report


def _train(job: dict, rank: int, world_size: int, device: torch.device,
           place: Callable[[torch.nn.Module], torch.nn.Module], on_epoch: OnEpoch) -> list[dict]:
    """Load, wrap with LoRA, place, train settings.epochs epochs; on_epoch gets each epoch's metrics and the model."""
    settings = LoraSettings.from_dict(job["settings"])
    job = {**job, "student_path": local_student(job)}
    tokenizer, examples = load_examples(job["student_path"], job["rationales"], job["problems"],
                                        settings.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    steps_per_epoch = len(shard_batches(length_bucketed_batches(examples, settings.batch_size, settings.seed),
                                        rank, world_size))
    if steps_per_epoch == 0:
        raise NoTrainingData(f"{len(examples)} examples make fewer batches than the {world_size} workers")
    model = place(load_student(job["student_path"], settings, device, job.get("dtype", "auto")))
    optimizer, scheduler = make_optimizer(model, settings, settings.epochs * steps_per_epoch)
    # stop_after: run the schedule planned for settings.epochs but end after this many epochs, which is what a trial
    # ASHA stopped early measured on dev (its confirmation re-trains exactly that: search/confirm.py).
    last = min(settings.epochs, job.get("stop_after") or settings.epochs)
    history = []
    for epoch in range(1, last + 1):
        # A new batch order every epoch (the seed moves with it); bucketing keeps similar lengths together.
        batches = length_bucketed_batches(examples, settings.batch_size, settings.seed + epoch)
        stats = run_epoch(model, optimizer, scheduler, examples, shard_batches(batches, rank, world_size), pad_id,
                          device, settings.max_grad_norm)
        metrics = epoch_metrics(epoch, all_reduce_stats(stats, device), scheduler.get_last_lr()[0])
        on_epoch(metrics, model)
        history.append(metrics)
        if rank == 0:
            log.info("epoch %d: loss %.4f, %d tokens, %.0f tok/s", epoch, metrics["train_loss"], metrics["tokens"],
                     metrics["tokens_per_s"])
    return history


def local_student(job: dict) -> str:
    """The student's directory on this node: the caller's path when it exists here, else the spec resolved into
    this node's model cache (a worker on another node than the caller converts or downloads it once)."""
    if Path(job["student_path"]).exists() or not job.get("student_spec"):
        return job["student_path"]
    from cotgap_ray.models import resolve_model

    return resolve_model(job["student_spec"], job.get("models_dir")).path


def _job(student_path: str, rationales_path: str, problems: dict[str, str], settings: LoraSettings,
         eval_fn: EvalFn | None, student_spec: str | None = None, models_dir: str | None = None,
         dtype: str = "auto", stop_after: int | None = None) -> dict:
    """The picklable description of one fine-tune: what every worker needs. The rationales travel as Parquet bytes
    (a few MB at most), so workers on other nodes than the caller need no shared filesystem for them."""
    return {"student_path": str(student_path), "rationales": Path(rationales_path).read_bytes(),
            "problems": dict(problems), "settings": asdict(settings), "eval_fn": eval_fn,
            "student_spec": student_spec, "models_dir": models_dir, "dtype": dtype, "stop_after": stop_after}


# ------------------------------------------------------------------------------------------------------ Ray path


def train_loop_per_worker(config: dict) -> list[dict]:
    """The TorchTrainer worker function. `config` is a _job dict; returns the epoch metrics (Result.return_value)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    eval_fn = config["eval_fn"]

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

    return _train(config, rank, world_size, ray.train.torch.get_device(), ray.train.torch.prepare_model, report)


def _checks_before_training(student_path: str, rationales_path: str, problems: dict[str, str],
                            settings: LoraSettings, num_workers: int) -> int:
    """Everything that can fail cheaply, before Ray or the weights: paths, target modules, examples, batches."""
    for what, path in (("student", student_path), ("rationales", rationales_path)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} path {path} does not exist")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    check_target_modules(student_skeleton(student_path), settings.target_modules)
    n_examples = count_examples(student_path, rationales_path, problems, settings.max_length)
    n_batches = math.ceil(n_examples / settings.batch_size)
    if n_batches < num_workers:
        raise NoTrainingData(f"{n_examples} examples make {n_batches} batch(es) of {settings.batch_size}: fewer "
                             f"than the {num_workers} workers (lower num_workers or lora.batch_size)")
    return n_examples


def train_student(student_path: str, rationales_path: str, problems: dict[str, str], settings: LoraSettings,
                  storage_path: str, name: str, num_workers: int = 1, use_gpu: bool = False,
                  eval_fn: EvalFn | None = None, cpus_per_worker: int = 1, keep_checkpoints: int | None = 1,
                  callbacks: list | None = None, accelerator_type: str | None = None,
                  resources: dict | None = None, student_spec: str | None = None,
                  models_dir: str | None = None, dtype: str = "auto", stop_after: int | None = None) -> TrainResult:
    """LoRA fine-tune of the student on the rationales in a Parquet file, with a TorchTrainer built and fit() here.

    `problems` maps problem_id -> question. Raises NoTrainingData (before Ray starts) when no rationale makes an
    example, ValueError for a LoRA target the student lacks, TrainingFailed when the run fails. The run lives in
    storage_path/name; each epoch's adapter is a checkpoint there (the newest `keep_checkpoints` are kept; None:
    all) and `adapter_dir` is the last one. `eval_fn(adapter_dir) -> dict` (picklable: a module-level function or a
    functools.partial) runs on rank 0 after each epoch; its metrics join the epoch report, so a Tune scheduler can
    stop the trial. `student_spec` (+ `models_dir`) lets a worker on another node resolve the student itself when
    `student_path` does not exist there. In a Tune trial pass
    `callbacks=[ray.tune.integration.ray_train.TuneReportCallback()]`.
    `cpus_per_worker` is also each worker's torch thread count (Ray sets OMP_NUM_THREADS from it). Reusing a `name`
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
    n_examples = _checks_before_training(student_path, rationales_path, problems, settings, num_workers)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # slow import: after checks
    from ray.train.torch import TorchTrainer

    storage = normalize_storage(storage_path)  # URIs as they are; local paths absolute (workers chdir)
    run_dir = join_storage(storage, name)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=_job(student_path, rationales_path, problems, settings, eval_fn, student_spec, models_dir,
                               dtype, stop_after),
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


# ---------------------------------------------------------------------------------------------------- plain path


def train_plain(student_path: str, rationales_path: str, problems: dict[str, str], settings: LoraSettings,
                out_dir: str, eval_fn: EvalFn | None = None, device: str = "auto",
                dtype: str = "auto") -> TrainResult:
    """The same fine-tune without Ray, in this process: adapters go to out_dir/epoch_NNN. For the benchmark's
    baseline and for debugging a trial (set breakpoints in run_epoch)."""
    start = time.perf_counter()
    n_examples = _checks_before_training(student_path, rationales_path, problems, settings, 1)
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    out = Path(out_dir)

    def save(metrics: dict, model) -> None:
        directory = out / f"epoch_{metrics['epoch']:03d}"
        save_adapter(model, str(directory))
        if eval_fn is not None:
            metrics.update(eval_fn(str(directory)))

    history = _train(_job(student_path, rationales_path, problems, settings, eval_fn, dtype=dtype), 0, 1, target,
                     lambda model: model.to(target), save)
    return TrainResult(adapter_dir=str(out / f"epoch_{settings.epochs:03d}"), metrics_per_epoch=history,
                       train_tokens=sum(m["tokens"] for m in history), seconds=time.perf_counter() - start,
                       n_examples=n_examples)
