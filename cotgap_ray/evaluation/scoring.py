"""Accuracy of a model (student + optional LoRA adapter) on a task split: the baseline and every post-distillation
number come from here, with the one prompt and decoding of cotgap_ray.prompts.

    cotgap evaluate --model packaged:smollm2-135m-instruct --task reasoning_gym:basic_arithmetic \
        --split dev --limit 50 --json

Per-problem rows (records.EVAL_SCHEMA) are saved as Parquet; the accuracy comes with a 95% Wilson interval.
Evaluations are cached by a key over everything that changes the rows (model weights, adapter, problems, prompt,
decoding, engine), so the baseline is computed once per experiment and reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgap_ray.answers import SCORING_VERSION, extract_answer, is_correct
from cotgap_ray.engines.base import Engine, Generation
from cotgap_ray.prompts import EVAL_SAMPLING, render_prompt, template_fingerprint
from cotgap_ray.records import EVAL_SCHEMA, Problem, write_json
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
        "scoring": SCORING_VERSION,  # how an answer is read from the text (answers.py): a new rule, new rows
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


def _read_summary(path: Path) -> dict | None:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("seconds"), (int, float)) else None


def evaluate_cached(model, problem_sets: dict[str, list[Problem]], cfg, adapter: str | None = None,
                    lora_rank: int | None = None):
    """Evaluate `model` (a models.ResolvedModel) on several named problem lists, reusing cached rows.

    The engine is opened once, and only if some evaluation is not cached yet. Returns {name: EvalResult}.
    `lora_rank` opens a LoRA-capable engine: pass it for the student's baseline too, so that the baseline and every
    adapter are measured on identically configured engines (vLLM's LoRA kernels change the numerics slightly).
    """
    from cotgap_ray.engines.options import engine_kind, for_evaluation, open_engine
    from cotgap_ray.hardware import dtype_key
    from cotgap_ray.models import cache_root

    engine_cfg = for_evaluation(cfg.engine)
    kind = engine_kind(engine_cfg)
    adapter_fp = _dir_fingerprint(adapter) if adapter else None
    results, todo = {}, {}
    for name, problems in problem_sets.items():
        key = eval_key(model.fingerprint, problems, kind, dtype_key(engine_cfg.dtype), adapter_fp,
                       lora_rank if engine_cfg.adapter_scoring != "merged" else None, engine_cfg.adapter_scoring)
        path = cache_root(cfg) / "evals" / f"{model.name}-{key}" / "rows.parquet"
        rows = read_rows(path)
        summary = _read_summary(path.parent / "summary.json")
        # Rows without their summary are what a kill between the two writes leaves: not a cache hit, rescored.
        if rows is not None and rows.num_rows == len(problems) and summary is not None:
            results[name] = result_from_rows(rows, model.name, adapter, name, kind, summary["seconds"])
            results[name].rows_path = str(path)
        else:
            todo[name] = (problems, path)
    if todo:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.path)
        engine = open_engine(model.path, engine_cfg, lora_rank=lora_rank)
        try:
            for name, (problems, path) in todo.items():
                result = evaluate(engine, tokenizer, problems, model.name, name, adapter, path)
                write_json(path.parent / "summary.json", result.summary())  # atomic, after the rows it describes
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
