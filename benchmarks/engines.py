"""Throughput of the generation engines on one model and one prompt set: vLLM, batched HF, and the HF loop.

    HF_HUB_OFFLINE=1 python benchmarks/engines.py --model packaged:smollm2-135m-instruct \\
        --questions ../shared/data/gsm8k/test.jsonl --prompts 32 --max-tokens 128 --batch-size 8

Every engine gets the same rendered prompts (cotgap_ray.prompts.render_prompt) and greedy decoding. Start-up (model
load, vLLM engine start, one tiny warm-up call) is timed apart from generation. The table:

    engine   prompts  out tokens  start s  gen s  tok/s  vs hf-loop  same text as hf-loop

`same text as hf-loop` counts prompts whose greedy text equals the fp32 loop's: HF batched should match all of
them in fp32; vLLM runs bf16 on CPU by default, so it may drift after a few dozen tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cotgap_ray.engines import SamplingParams, load_engine, vllm_available
from cotgap_ray.prompts import render_prompt

BUILTIN_QUESTIONS = [
    "What is 17 + 25?",
    "Calculate 5 - 3 - 6.",
    "A shop sells pens at 3 dollars each. How much do 12 pens cost?",
    "Tom has 48 marbles and gives a third of them away. How many are left?",
    "What is 9 times 8, minus 10?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
    "Sara reads 15 pages a day. How many pages does she read in two weeks?",
    "What is 144 divided by 12, plus 7?",
]


def load_questions(path: str | None, n: int) -> list[str]:
    """n questions: from a JSONL file with a "question" field (GSM8K), else the built-in ones, repeated as needed."""
    if path:
        with open(path) as f:
            questions = [json.loads(line)["question"] for line in f if line.strip()]
    else:
        questions = BUILTIN_QUESTIONS
    if not questions:
        raise ValueError(f"no questions in {path}")
    return [questions[i % len(questions)] for i in range(n)]


def resolve_model_dir(spec: str) -> str:
    """A local HF directory, or any spec cotgap_ray.models understands (packaged:<name>, hub id)."""
    try:
        from cotgap_ray.models import resolve_model
    except ImportError:
        if not Path(spec).is_dir():
            raise SystemExit(f"--model {spec!r}: not a directory (and cotgap_ray.models is unavailable)") from None
        return spec
    return resolve_model(spec).path


def engine_options(kind: str, batch_size: int, dtype: str) -> dict:
    if kind == "hf":
        return {"batch_size": batch_size, "dtype": dtype}
    if kind == "hf-loop":
        return {"dtype": dtype}
    return {"dtype": "auto" if dtype == "float32" else dtype}  # vLLM: its own default precision unless told


def run_engine(kind: str, model_dir: str, prompts: list[str], params: SamplingParams, options: dict) -> dict:
    """Start the engine, warm it up, time one greedy pass over all prompts, close it."""
    t0 = time.perf_counter()
    engine = load_engine(model_dir, kind, **options)
    engine.generate(prompts[:1], SamplingParams(max_tokens=4))  # first-call overheads belong to start-up
    start_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        results = engine.generate(prompts, params)
        gen_s = time.perf_counter() - t0
    finally:
        engine.close()
    tokens = sum(gens[0].n_tokens for gens in results)
    return {"engine": kind, "prompts": len(prompts), "tokens": tokens, "start_s": start_s, "gen_s": gen_s,
            "tok_s": tokens / gen_s, "texts": [gens[0].text for gens in results]}


def print_table(rows: list[dict]) -> None:
    base = next((r for r in rows if r["engine"] == "hf-loop"), None)
    header = f"{'engine':<8} {'prompts':>7} {'out tokens':>10} {'start s':>8} {'gen s':>8} {'tok/s':>8} " \
             f"{'vs hf-loop':>10} {'same text as hf-loop':>21}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['tok_s'] / base['tok_s']:.2f}x" if base else "-"
        same = f"{sum(a == b for a, b in zip(r['texts'], base['texts']))}/{r['prompts']}" if base else "-"
        print(f"{r['engine']:<8} {r['prompts']:>7} {r['tokens']:>10} {r['start_s']:>8.1f} {r['gen_s']:>8.1f} "
              f"{r['tok_s']:>8.1f} {ratio:>10} {same:>21}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct",
                        help="local HF directory, or a spec for cotgap_ray.models (packaged:<name>)")
    parser.add_argument("--questions", help="JSONL with a 'question' field, e.g. ../shared/data/gsm8k/test.jsonl "
                                            "(default: built-in arithmetic questions)")
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts")
    parser.add_argument("--max-tokens", type=int, default=64, help="greedy tokens per prompt at most")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per sub-batch of the batched HF engine")
    parser.add_argument("--dtype", default="float32", help="HF dtype (vLLM keeps its default unless not float32)")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads for the HF engines (default: torch's "
                                                           "choice); 1 is far faster on a CPU shared with other jobs")
    parser.add_argument("--engines", default="hf-loop,hf,vllm", help="comma-separated; vllm skipped if absent")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [render_prompt(q, tokenizer) for q in load_questions(args.questions, args.prompts)]
    params = SamplingParams(max_tokens=args.max_tokens)
    kinds = [k for k in args.engines.split(",") if k != "vllm" or vllm_available()]
    print(f"model {args.model} ({model_dir}); {len(prompts)} prompts, greedy, max {args.max_tokens} tokens", flush=True)
    rows = []
    for kind in kinds:
        rows.append(run_engine(kind, model_dir, prompts, params, engine_options(kind, args.batch_size, args.dtype)))
        print(f"  {kind}: {rows[-1]['tokens']} tokens in {rows[-1]['gen_s']:.1f} s", flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":  # required: vLLM starts its engine process with spawn, which re-imports this module
    main()
