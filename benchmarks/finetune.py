"""Training throughput of the LoRA fine-tune: Ray Train's TorchTrainer against the plain peft + PyTorch loop, on the
same model, data, settings and thread count; and the padding that length bucketing saves.

    HF_HUB_OFFLINE=1 python benchmarks/finetune.py --model packaged:smollm2-135m-instruct --examples 32 --epochs 1

Rationales are GSM8K's worked answers (../shared/data/gsm8k/train.jsonl when present: the <<calculator>> notes
removed, "#### N" rewritten as "The answer is N."), else synthetic arithmetic ones. Both paths run
cotgap_ray.training.loop's epoch loop, so the difference is Ray: TorchTrainer start-up, worker placement, reporting
and checkpointing. The plain path runs first, in this process, before Ray is started. The table:

    path   examples  tokens  total s  train s  tokens/s  overhead

`tokens` are non-padding tokens through the forward pass; `total s` is the whole call (model load, and for Ray the
TorchTrainer start-up; ray.init is printed apart); `train s` the epochs alone; `tokens/s` = tokens / train s;
`overhead` = total s / the plain path's total s.

Measured here (2 shared cores, load ~4-6 from other jobs), SmolLM2-135M fp32, 16 GSM8K rationales, 1 epoch, --threads 1:
plain 3360 tokens, 34.3 s total, 32.6 s train, 103 tok/s; ray-train 53.9 s total, 32.9 s train, 102 tok/s (1.57x):
the epoch loop runs at the same speed, Ray adds ~20 s of TorchTrainer start-up per fit. Padding waste 7.5% with
bucketing, 18.0% without. With --threads 2 on the loaded machine both paths were 2-3x slower (oversubscription).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgap_ray.config import LoraSettings
from cotgap_ray.records import RATIONALE_SCHEMA
from cotgap_ray.sft import length_bucketed_batches, padding_waste
from cotgap_ray.training.examples import load_examples
from cotgap_ray.training.loop import train_plain
from cotgap_ray.training.ray_train import train_student

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def gsm8k_rationale(answer: str) -> str:
    """A GSM8K worked answer as a teacher-like rationale ending in the project's answer line."""
    text = re.sub(r"<<[^>]*>>", "", answer)
    body, _, gold = text.rpartition("####")
    return f" {body.strip()}\nThe answer is {gold.strip()}."


def synthetic(n: int) -> list[tuple[str, str]]:
    """(question, rationale) pairs of a few lengths, when GSM8K is not around."""
    pairs = []
    for i in range(n):
        a, b, k = 3 + i, 7 + 2 * i, 1 + i % 4
        steps = " ".join(f"Step {j}: {a} + {b * j} = {a + b * j}." for j in range(1, k + 1))
        pairs.append((f"What is {a} + {b * k}?", f" {steps}\nThe answer is {a + b * k}."))
    return pairs


def load_pairs(path: Path, n: int) -> tuple[list[tuple[str, str]], str]:
    if not path.is_file():
        return synthetic(n), "synthetic"
    with open(path) as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    return [(r["question"], gsm8k_rationale(r["answer"])) for r in rows], str(path)


def write_rationales(pairs: list[tuple[str, str]], path: Path) -> dict[str, str]:
    """The pairs as a rationale Parquet (records.RATIONALE_SCHEMA); returns problem_id -> question."""
    rows = [{"problem_id": f"q{i}", "teacher": "gsm8k-gold", "sample_idx": 0, "text": text, "pred": None,
             "correct": True, "n_tokens": 0} for i, (_, text) in enumerate(pairs)]
    pq.write_table(pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA), path)
    return {f"q{i}": question for i, (question, _) in enumerate(pairs)}


def padding_report(model_dir: str, rationales: Path, problems: dict[str, str], settings: LoraSettings) -> dict:
    """Padding waste of the training batches, with length bucketing and without (mega_batch=1: every batch is a
    random draw, which pads exactly like unsorted batching)."""
    _, examples = load_examples(model_dir, str(rationales), problems, settings.max_length)
    bucketed = length_bucketed_batches(examples, settings.batch_size, settings.seed + 1)
    random = length_bucketed_batches(examples, settings.batch_size, settings.seed + 1, mega_batch=1)
    return {"bucketed": padding_waste(bucketed, examples), "random": padding_waste(random, examples)}


def row(path: str, result, total_s: float) -> dict:
    train_s = sum(m["seconds"] for m in result.metrics_per_epoch)
    return {"path": path, "examples": result.n_examples, "tokens": result.train_tokens, "total_s": total_s,
            "train_s": train_s, "tok_s": result.train_tokens / train_s,
            "threads": result.metrics_per_epoch[0]["threads"], "loss": result.metrics_per_epoch[-1]["train_loss"]}


def run_plain(model_dir: str, rationales: Path, problems: dict[str, str], settings: LoraSettings, out: Path,
              threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = train_plain(model_dir, str(rationales), problems, settings, str(out / "plain"))
    return row("plain", result, time.perf_counter() - start)


def run_ray(model_dir: str, rationales: Path, problems: dict[str, str], settings: LoraSettings, out: Path,
            threads: int) -> dict:
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=threads, include_dashboard=False, log_to_driver=False)
    print(f"  ray.init: {time.perf_counter() - start:.1f} s (not in the table)", flush=True)
    try:
        start = time.perf_counter()
        result = train_student(model_dir, str(rationales), problems, settings, str(out / "ray"), "bench",
                               cpus_per_worker=threads)
        return row("ray-train", result, time.perf_counter() - start)
    finally:
        ray.shutdown()


def print_table(rows: list[dict]) -> None:
    base = next((r for r in rows if r["path"] == "plain"), None)
    header = (f"{'path':<10} {'examples':>8} {'tokens':>7} {'total s':>8} {'train s':>8} {'tokens/s':>9} "
              f"{'overhead':>8} {'threads':>7} {'last loss':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        overhead = f"{r['total_s'] / base['total_s']:.2f}x" if base else "-"
        print(f"{r['path']:<10} {r['examples']:>8} {r['tokens']:>7} {r['total_s']:>8.1f} {r['train_s']:>8.1f} "
              f"{r['tok_s']:>9.1f} {overhead:>8} {r['threads']:>7} {r['loss']:>9.4f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct",
                        help="student: packaged:<name> | local HF directory | hub id (cotgap_ray.models)")
    parser.add_argument("--data", default=str(GSM8K_TRAIN), help="GSM8K-format JSONL (else synthetic rationales)")
    parser.add_argument("--examples", type=int, default=32, help="rationales to train on")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (targets q_proj, v_proj)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of both paths = CPUs of the Ray worker (on busy cores 1 beats 2)")
    parser.add_argument("--paths", default="plain,ray-train", help="comma-separated subset of plain,ray-train")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from cotgap_ray.models import resolve_model

    args = parse_args(argv)
    model_dir = resolve_model(args.model).path
    settings = LoraSettings(rank=args.rank, alpha=2.0 * args.rank, epochs=args.epochs, batch_size=args.batch_size,
                            max_length=args.max_length)
    pairs, source = load_pairs(Path(args.data), args.examples)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        out = Path(tmp)
        problems = write_rationales(pairs, out / "rationales.parquet")
        waste = padding_report(model_dir, out / "rationales.parquet", problems, settings)
        print(f"model {args.model} ({model_dir}); {len(pairs)} rationales from {source}; LoRA r={args.rank} q,v; "
              f"batch {args.batch_size} x <= {args.max_length} tokens, {args.epochs} epoch(s), {args.threads} threads")
        print(f"padding waste: {100 * waste['bucketed']:.1f}% with length bucketing, "
              f"{100 * waste['random']:.1f}% with random batches", flush=True)
        runners = {"plain": run_plain, "ray-train": run_ray}
        rows = []
        for name in args.paths.split(","):
            rows.append(runners[name](model_dir, out / "rationales.parquet", problems, settings, out, args.threads))
            print(f"  {name}: {rows[-1]['tokens']} tokens, {rows[-1]['train_s']:.1f} s training, "
                  f"{rows[-1]['total_s']:.1f} s in all", flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
