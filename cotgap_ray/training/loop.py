"""The LoRA training loop of the student, shared by the Ray Train worker (training/ray_train.py) and the plain path.

    result = train_plain(student_dir, "rationales.parquet", {"p1": "What is 3 + 4?"}, LoraSettings(epochs=2), "out")
    result.adapter_dir          -> "out/epoch_002"   (peft adapter, safetensors; load with PeftModel)
    result.metrics_per_epoch    -> [{"epoch": 1, "train_loss": 2.31, "tokens": 5120, "seconds": 3.1, ...}, ...]

Both paths run `train_epochs` (load, wrap with LoRA, optimizer, epochs) and `run_epoch`; they differ only in how the
model is placed (`prepare_model` vs `.to(device)`) and what happens at the end of an epoch (report vs save).
Examples come from cotgap_ray.sft (prompt masked, loss on the rationale only). The student's frozen weights load in
the dtype hardware.resolve_dtype picks where the worker runs (`auto`: bfloat16 on CUDA and on CPUs with native bf16,
float32 on CPUs without it); peft keeps the adapter weights in float32 either way. `train_plain` is the benchmark's
baseline and the debugging path (set breakpoints in run_epoch).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cotgap_ray.config import LoraSettings
from cotgap_ray.sft import Example, collate, length_bucketed_batches
from cotgap_ray.training.examples import (
    NoTrainingData,
    check_target_modules,
    checks_before_training,
    load_examples,
)

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


@dataclass(repr=False)
class TrainJob:
    """The picklable description of one fine-tune: what every worker needs, typed (a dataclass pickles as it is, so
    the settings reach the workers as the LoraSettings the caller built). The rationales travel as Parquet bytes
    (a few MB at most), so workers on other nodes than the caller need no shared filesystem for them."""

    student_path: str
    rationales: bytes
    problems: dict[str, str]
    settings: LoraSettings
    eval_fn: EvalFn | None = None
    student_spec: str | None = None  # resolved on a worker whose node lacks student_path (local_student)
    models_dir: str | None = None
    dtype: str = "auto"
    stop_after: int | None = None  # end after this many epochs of the schedule planned for settings.epochs
    threads: int | str | None = None  # torch threads per worker (training/threads.py); None: Ray's OMP_NUM_THREADS

    def __repr__(self) -> str:  # Ray Train's run state prints the config: not megabytes of Parquet bytes
        return (f"TrainJob(student_path={self.student_path!r}, rationales=<{len(self.rationales)} bytes>, "
                f"problems=<{len(self.problems)}>, settings={self.settings!r}, stop_after={self.stop_after}, "
                f"threads={self.threads!r})")


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
        "threads": torch.get_num_threads(),  # per worker (training/threads.py)
    }


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The PeftModel inside a DDP wrapper (save_pretrained lives there)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_adapter(model: torch.nn.Module, directory: str) -> None:
    unwrap(model).save_pretrained(directory, safe_serialization=True)


OnEpoch = Callable[[dict, torch.nn.Module], None]  # (epoch metrics, model) -> save / evaluate / report


def train_epochs(job: TrainJob, rank: int, world_size: int, device: torch.device,
                 place: Callable[[torch.nn.Module], torch.nn.Module], on_epoch: OnEpoch) -> list[dict]:
    """Load, wrap with LoRA, place, train settings.epochs epochs; on_epoch gets each epoch's metrics and the model."""
    settings = job.settings
    student_path = local_student(job)
    tokenizer, examples = load_examples(student_path, job.rationales, job.problems, settings.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    steps_per_epoch = len(shard_batches(length_bucketed_batches(examples, settings.batch_size, settings.seed),
                                        rank, world_size))
    if steps_per_epoch == 0:
        raise NoTrainingData(f"{len(examples)} examples make fewer batches than the {world_size} workers")
    model = place(load_student(student_path, settings, device, job.dtype))
    optimizer, scheduler = make_optimizer(model, settings, settings.epochs * steps_per_epoch)
    # stop_after: run the schedule planned for settings.epochs but end after this many epochs, which is what a trial
    # ASHA stopped early measured on dev (its confirmation re-trains exactly that: search/confirm.py).
    last = min(settings.epochs, job.stop_after or settings.epochs)
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


def local_student(job: TrainJob) -> str:
    """The student's directory on this node: the caller's path when it exists here, else the spec resolved into
    this node's model cache (a worker on another node than the caller converts or downloads it once)."""
    if Path(job.student_path).exists() or not job.student_spec:
        return job.student_path
    from cotgap_ray.models import resolve_model

    return resolve_model(job.student_spec, job.models_dir).path


def make_job(student_path: str, rationales_path: str, problems: dict[str, str], settings: LoraSettings,
             eval_fn: EvalFn | None, student_spec: str | None = None, models_dir: str | None = None,
             dtype: str = "auto", stop_after: int | None = None, threads: int | str | None = None) -> TrainJob:
    """The TrainJob of a fine-tune of the rationales in a Parquet file."""
    return TrainJob(str(student_path), Path(rationales_path).read_bytes(), dict(problems), settings, eval_fn,
                    student_spec, models_dir, dtype, stop_after, threads)


def train_plain(student_path: str, rationales_path: str, problems: dict[str, str], settings: LoraSettings,
                out_dir: str, eval_fn: EvalFn | None = None, device: str = "auto",
                dtype: str = "auto") -> TrainResult:
    """The same fine-tune without Ray, in this process: adapters go to out_dir/epoch_NNN. For the benchmark's
    baseline and for debugging a trial (set breakpoints in run_epoch)."""
    start = time.perf_counter()
    n_examples = checks_before_training(student_path, rationales_path, problems, settings, 1)
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    out = Path(out_dir)

    def save(metrics: dict, model) -> None:
        directory = out / f"epoch_{metrics['epoch']:03d}"
        save_adapter(model, str(directory))
        if eval_fn is not None:
            metrics.update(eval_fn(str(directory)))

    history = train_epochs(make_job(student_path, rationales_path, problems, settings, eval_fn, dtype=dtype), 0, 1,
                           target, lambda model: model.to(target), save)
    return TrainResult(adapter_dir=str(out / f"epoch_{settings.epochs:03d}"), metrics_per_epoch=history,
                       train_tokens=sum(m["tokens"] for m in history), seconds=time.perf_counter() - start,
                       n_examples=n_examples)
