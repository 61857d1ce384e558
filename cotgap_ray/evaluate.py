"""Accuracy of a model (student + optional LoRA adapter) on a task split: the baseline and every post-distillation
number come from here, with the one prompt and decoding of cotgap_ray.prompts.

    python -m cotgap_ray.evaluate --model packaged:smollm2-135m-instruct --task reasoning_gym:basic_arithmetic \
        --split dev --limit 50 --json

Per-problem rows (records.EVAL_SCHEMA) are saved as Parquet; the accuracy comes with a 95% Wilson interval.
Evaluations are cached by a key over everything that changes the rows (model weights, adapter, problems, prompt,
decoding, engine), so the baseline is computed once per experiment and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgap_ray.answers import extract_answer, is_correct
from cotgap_ray.engines.base import Engine, Generation
from cotgap_ray.prompts import EVAL_SAMPLING, render_prompt, template_fingerprint
from cotgap_ray.records import EVAL_SCHEMA, Problem
from cotgap_ray.stats import wilson_ci


@dataclass
class EvalResult:
    """Accuracy of one (model, adapter) on one list of problems, with its per-problem rows."""

    model: str
    adapter: str | None
    split: str
    n: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    tokens: int
    seconds: float
    engine: str
    rows_path: str | None = None

    def summary(self) -> dict:
        return asdict(self)


def eval_rows(problems: list[Problem], outputs: list[list[Generation]], model: str, adapter: str | None) -> pa.Table:
    """Score one greedy generation per problem into EVAL_SCHEMA rows (pure)."""
    if len(problems) != len(outputs):
        raise ValueError(f"{len(problems)} problems but {len(outputs)} outputs")
    rows = []
    for problem, gens in zip(problems, outputs):
        gen = gens[0]
        pred = extract_answer(gen.text)
        rows.append(
            {
                "problem_id": problem.id,
                "model": model,
                "adapter": adapter,
                "text": gen.text,
                "pred": pred,
                "correct": is_correct(pred, problem.answer),
                "n_tokens": gen.n_tokens,
            }
        )
    return pa.Table.from_pylist(rows, schema=EVAL_SCHEMA)


def result_from_rows(rows: pa.Table, model: str, adapter: str | None, split: str, engine: str, seconds: float):
    n = rows.num_rows
    correct = sum(rows.column("correct").to_pylist())
    return EvalResult(
        model=model,
        adapter=adapter,
        split=split,
        n=n,
        correct=correct,
        accuracy=correct / n,
        ci95=wilson_ci(correct, n),
        tokens=sum(rows.column("n_tokens").to_pylist()),
        seconds=seconds,
        engine=engine,
    )


def eval_key(model_fingerprint: str, problems: list[Problem], engine: str, dtype: str, adapter_fp: str | None,
             lora_rank: int | None = None, adapter_scoring: str = "per-request") -> str:
    """Cache key of an evaluation: everything that can change its rows."""
    h = hashlib.sha256()
    material = {
        "model": model_fingerprint,
        "adapter": adapter_fp,
        "problems": hashlib.sha256("\x1e".join(f"{p.id}\x1f{p.question}\x1f{p.answer}" for p in problems).encode())
        .hexdigest(),
        "prompt": template_fingerprint(),
        "sampling": asdict(EVAL_SAMPLING),
        "engine": engine,
        "dtype": dtype,
        "lora_rank": lora_rank,
        # vLLM's LoRA-enabled engine computes differently from a bare one; "merged" runs a bare engine.
        "adapter_scoring": adapter_scoring,
    }
    h.update(json.dumps(material, sort_keys=True).encode())
    return h.hexdigest()[:20]


def evaluate(
    engine: Engine,
    tokenizer,
    problems: list[Problem],
    model_name: str,
    split: str,
    adapter: str | None = None,
    rows_path: Path | None = None,
) -> EvalResult:
    """Generate greedily for every problem with the shared prompt, score, optionally save the rows as Parquet."""
    if not problems:
        raise ValueError(f"nothing to evaluate: the {split} split is empty")
    prompts = [render_prompt(p.question, tokenizer) for p in problems]
    start = time.perf_counter()
    outputs = engine.generate(prompts, EVAL_SAMPLING, adapter=adapter)
    seconds = time.perf_counter() - start
    rows = eval_rows(problems, outputs, model_name, adapter)
    result = result_from_rows(rows, model_name, adapter, split, engine.name, seconds)
    if rows_path is not None:
        write_rows(rows, rows_path)
        result.rows_path = str(rows_path)
    return result


def write_rows(rows: pa.Table, path: Path) -> None:
    """Atomic Parquet write: a killed process never leaves a truncated file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(rows, tmp)
    tmp.replace(path)


def read_rows(path: Path) -> pa.Table | None:
    """Cached rows, or None when absent or unreadable (then they are recomputed)."""
    try:
        table = pq.read_table(path)
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None
    return table if table.schema.equals(EVAL_SCHEMA, check_metadata=False) else None


def evaluate_cached(model, problem_sets: dict[str, list[Problem]], cfg, adapter: str | None = None,
                    lora_rank: int | None = None):
    """Evaluate `model` (a models.ResolvedModel) on several named problem lists, reusing cached rows.

    The engine is opened once, and only if some evaluation is not cached yet. Returns {name: EvalResult}.
    `lora_rank` opens a LoRA-capable engine: pass it for the student's baseline too, so that the baseline and every
    adapter are measured on identically configured engines (vLLM's LoRA kernels change the numerics slightly).
    """
    from cotgap_ray.runtime import cache_root, dtype_key, engine_kind, open_engine

    kind = engine_kind(cfg.engine)
    adapter_fp = _dir_fingerprint(adapter) if adapter else None
    results, todo = {}, {}
    for name, problems in problem_sets.items():
        key = eval_key(model.fingerprint, problems, kind, dtype_key(cfg.engine.dtype), adapter_fp,
                       lora_rank if cfg.engine.adapter_scoring != "merged" else None, cfg.engine.adapter_scoring)
        path = cache_root(cfg) / "evals" / f"{model.name}-{key}" / "rows.parquet"
        rows = read_rows(path)
        if rows is not None and rows.num_rows == len(problems):
            summary = json.loads((path.parent / "summary.json").read_text())
            results[name] = result_from_rows(rows, model.name, adapter, name, kind, summary["seconds"])
            results[name].rows_path = str(path)
        else:
            todo[name] = (problems, path)
    if todo:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.path)
        engine = open_engine(model.path, cfg.engine, lora_rank=lora_rank)
        try:
            for name, (problems, path) in todo.items():
                result = evaluate(engine, tokenizer, problems, model.name, name, adapter, path)
                (path.parent / "summary.json").write_text(json.dumps(result.summary(), indent=2))
                results[name] = result
        finally:
            engine.close()
    return {name: results[name] for name in problem_sets}


def _dir_fingerprint(directory: str) -> str:
    """sha256 over the files of an adapter directory (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cotgap_ray.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model spec: packaged:<name> | tiny:<name>[@<seed>] | local HF dir | hub id "
                                        "(default: the student)")
    parser.add_argument("--task", help="task name, e.g. gsm8k, reasoning_gym:basic_arithmetic, file")
    parser.add_argument("--task-path", help="gsm8k directory or file task path")
    parser.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    parser.add_argument("--limit", type=int, help="evaluate only the first N problems of the split")
    parser.add_argument("--adapter", help="a peft LoRA adapter directory to evaluate on top of the model")
    parser.add_argument("--config", help="experiment YAML for task sizes and engine (default: embedded default)")
    parser.add_argument("--out", help="also copy rows.parquet and summary.json here (they always go to the cache)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. engine.kind=hf task.n_dev=50")
    from cotgap_ray.config import add_help_config

    add_help_config(parser)
    return parser.parse_args(argv)


def adapter_rank(adapter_dir: str) -> int:
    """The largest LoRA rank in a peft adapter directory (adapter_config.json's r and rank_pattern): what the engine
    must be sized for, whatever lora.rank the config says (a search may have chosen another)."""
    from cotgap_ray.errors import MissingFile

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise MissingFile(f"--adapter {adapter_dir}: no adapter_config.json there (give a peft adapter directory)")
    config = json.loads(path.read_text())
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from cotgap_ray.config import load_config
    from cotgap_ray.runtime import task_overrides, offline_unless_hub, resolve_all
    from cotgap_ray.tasks import load_splits

    args = _parse(sys.argv[1:] if argv is None else argv)
    cfg = load_config(args.config, task_overrides(args.task_path, args.overrides), task=args.task)
    spec = args.model or cfg.student
    offline_unless_hub([spec])
    # Data first: a bad row or split must fail before any model is converted or loaded.
    problems = load_splits(cfg.task)[args.split]
    if args.limit is not None:
        problems = problems[: args.limit]
    (model,) = resolve_all([spec], cfg)
    lora_rank = adapter_rank(args.adapter) if args.adapter else None
    result = evaluate_cached(model, {args.split: problems}, cfg, args.adapter, lora_rank)[args.split]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.rows_path, out / "rows.parquet")
        result.rows_path = str(out / "rows.parquet")
        (out / "summary.json").write_text(json.dumps(result.summary(), indent=2))
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        lo, hi = result.ci95
        print(
            f"{model.name} on {cfg.task.name} [{args.split}, n={result.n}]: accuracy {100 * result.accuracy:.1f}% "
            f"(95% CI {100 * lo:.1f}–{100 * hi:.1f}), {result.tokens} tokens in {result.seconds:.1f}s "
            f"via {result.engine}; rows: {result.rows_path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
