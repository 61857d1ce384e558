"""Where a vLLM CPU engine step spends its time: torch-profile vLLM's worker over one generate() and print its table.

    HF_HUB_OFFLINE=1 python benchmarks/engine_profile.py --model packaged:qwen2.5-coder-0.5b-instruct \\
        --questions TRAIN.jsonl --prompts 80 --samples 2 --temperature 0.7 --max-tokens 128 --dtype bfloat16

The engine is cotgap_ray's own (engines/vllm.py: eager, tcmalloc, every core), started with vLLM's torch profiler
configured (`profiler_config`); one unprofiled pass is timed first (tok/s without the profiler's overhead), then the
prefix cache is reset and the same pass runs between llm.start_profile() and llm.stop_profile(). vLLM's worker writes
the profiler's key_averages table (self CPU time per op) to `<out>/rank0.profiler_out.txt`; its first rows are printed.
What to read: `_C::onednn_mm` is every linear layer and the head (the part the matmul bound of benchmarks/engines.py
is about); `_C::fused_gumbel_argmax` is the sampler over the whole vocabulary; `_C::cpu_attention_with_kv_cache`
is attention. On a 2-core Zen 5 EPYC, Qwen2.5-Coder-0.5B, bf16, the command above: 61.3% / 16.6% / 6.8% (measured
before the engine gave each prompt its own seed, when all prompts of a call sampled together). On a 2-core Xeon with
AMX (2026-12-04, --prompts 160, a seed per prompt): 43.3% / 26.8% / 6.6%: there the GEMMs are fast enough for the
sampler to be a quarter of the step (benchmarks/sampler_ceiling.py times it alone).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

from engines import load_questions, reset_prefix_cache, resolve_model_dir  # benchmarks/engines.py, beside this

from cotgap_ray.engines import SamplingParams, load_engine
from cotgap_ray.prompts import render_prompt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--questions", help="JSONL with a 'question' field (default: built-in arithmetic questions)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rows", type=int, default=15, help="table rows to print")
    parser.add_argument("--out", help="profiler output directory (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="engine_profile-")).resolve()  # vLLM wants an absolute path
    out.mkdir(parents=True, exist_ok=True)
    import vllm

    # engines/vllm.py builds vllm.LLM itself; the profiler is one more constructor argument, given here only.
    vllm.LLM = functools.partial(vllm.LLM, profiler_config={
        "profiler": "torch", "torch_profiler_dir": str(out), "torch_profiler_with_stack": False,
        "torch_profiler_use_gzip": False})
    model_dir = resolve_model_dir(args.model)
    engine = load_engine(model_dir, "vllm", dtype=args.dtype)
    try:
        prompts = [render_prompt(q, engine.tokenizer) for q in load_questions(args.questions, args.prompts)]
        engine.generate(prompts[:1], SamplingParams(max_tokens=4))  # first-call overheads
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, n=args.samples,
                                seed=args.seed)
        start = time.perf_counter()
        results = engine.generate(prompts, params)
        plain_s = time.perf_counter() - start
        tokens = sum(g.n_tokens for per_prompt in results for g in per_prompt)
        reset_prefix_cache(engine)  # else the profiled pass would skip the prefill
        engine.llm.start_profile()
        start = time.perf_counter()
        engine.generate(prompts, params)
        profiled_s = time.perf_counter() - start
        engine.llm.stop_profile()
    finally:
        engine.close()
    print(f"model {args.model}, dtype {engine.dtype}, {len(prompts)} prompts x {args.samples} samples, "
          f"max {args.max_tokens} tokens, temperature {args.temperature}")
    print(f"unprofiled: {tokens} tokens in {plain_s:.1f} s = {tokens / plain_s:.1f} tok/s; "
          f"profiled pass {profiled_s:.1f} s")
    tables = sorted(out.glob("*profiler_out.txt"))
    if not tables:
        raise SystemExit(f"vLLM's worker wrote no profiler table under {out} (files: {os.listdir(out)})")
    lines = tables[0].read_text().splitlines()
    print("\n".join(lines[:3 + args.rows]))
    print(f"(whole table: {tables[0]})")


if __name__ == "__main__":  # required: vLLM starts its engine process with spawn, which re-imports this module
    main()
