"""Throughput of the generation engines on one model and one prompt set, per dtype, against this CPU's limit.

    HF_HUB_OFFLINE=1 python benchmarks/engines.py --model packaged:smollm2-135m-instruct \\
        --questions ../shared/data/gsm8k/test.jsonl --prompts 32 --max-tokens 128 --batch-size 8

Every engine gets the same rendered prompts (cotgap_ray.prompts.render_prompt) and decoding (greedy by default), once
per dtype in --dtypes. Start-up (model load, vLLM engine start, one tiny warm-up call) is timed apart from generation:

    engine  dtype  prompts  out tokens  start s  gen s  tok/s  bound tok/s  % of bound  +prompt tok/s  % of bound
      prefill s  decode tok/s  % of bound  vs first  same text

`bound tok/s` is what the CPU's matmul rate allows: a matmul of the model's shape (batch: prompts x samples, hidden,
intermediate), measured now on all torch threads in that dtype through the fastest GEMM at hand (torch's, and vLLM's
oneDNN one where vLLM is installed: torch's float32 GEMM was 2.3x slower on an AMD EPYC), divided by the model's
FLOPs per token (2 x the parameters that take part in a matmul: every weight but the input embedding, plus the
output projection). It is a compute bound at full batch; small batches are memory-bound and stay below it. `tok/s`
counts generated tokens; `+prompt tok/s` adds the prompt tokens the engine prefilled in the same seconds (the same
matmuls per token), the engine's whole work against the same bound. `prefill s` is a pass over the same prompts that
stops after one token (prefix cache reset before the full pass); `decode tok/s` = (out tokens - one per sequence) /
(gen s - prefill s), the decoding rate the bound is about. --temperature / --samples / --seed sample as the default
experiment's teachers do (0.7, 2, a shard's seed); all samples count, the bound's batch is prompts x samples. vLLM's
engine process gets tcmalloc when the machine has it and every core of a small machine
(cotgap_ray/engines/preload.py); --tcmalloc on,off and --reserved-cpus auto,1 compare them with vLLM's own start in
the same run; --compile on,off compares cotgap_ray's eager CPU engine with vLLM's own compiled one; --block-size and
--max-num-seqs compare KV block sizes and batch limits (vLLM's CPU defaults: 128, 256); --shard-size N calls the engine
once per N prompts with each shard's seed, as the generation pipeline does with generation.shard_size (the bound stays
at all sequences in one batch: the same work, laid out as the run lays it out). `same text`
counts prompts whose first text equals the first row's (the fp32 HF loop by default). `engine.kind: auto` /
`engine.dtype: auto` pick vLLM when installed and the dtype hardware.resolve_dtype names (printed first): this table
is the evidence.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from dataclasses import replace
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
    return {"dtype": dtype}


def flops_per_token(model_dir: str) -> tuple[float, dict]:
    """2 x the weights a token goes through as matmuls (all but the input embedding; a tied output projection counted
    once), from the safetensors headers; and the model's config (hidden / intermediate sizes)."""
    from safetensors import safe_open

    config = json.loads((Path(model_dir) / "config.json").read_text())
    config = config.get("text_config", config)
    params, embed, has_head = 0, 0, False
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                n = 1
                for d in st.get_slice(name).get_shape():
                    n *= d
                params += n
                embed += n if "embed_tokens" in name else 0
                has_head |= name.endswith("lm_head.weight")
    matmul_params = params - embed + (0 if has_head else embed)  # tied head: the embedding matrix is the head
    return 2.0 * matmul_params, config


def gemm_gflops(dtype: str, m: int, k: int, n: int, seconds: float = 0.5) -> dict[str, float]:
    """GFLOP/s of an (m x k) @ (k x n) matmul in `dtype` on all torch threads, through each GEMM this machine offers:
    torch's (MKL on x86) and, where vLLM is installed, the oneDNN GEMM vLLM's CPU linear layers use. They differ:
    on a 2-core AMD EPYC (Zen 5) torch's float32 GEMM ran at 194 GFLOP/s and oneDNN's at 447 (m=320)."""
    import torch

    from cotgap_ray.hardware import matmul_gflops

    rates = {"torch": matmul_gflops(dtype, m=m, k=k, n=n, seconds=seconds)}
    if vllm_available():
        try:
            from vllm import _custom_ops as ops
        except ImportError:
            return rates
        dt = getattr(torch, dtype)
        a, w = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
        handler = ops.create_onednn_mm(w, 32)
        ops.onednn_mm(handler, a, None)  # warm-up: primitive creation
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            ops.onednn_mm(handler, a, None)
            count += 1
        rates["oneDNN"] = 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
    return rates


def bound_tok_s(model_dir: str, dtype: str, batch: int) -> float:
    """The fastest GEMM's rate at the model's MLP shape over the model's FLOPs per token (the rates printed)."""
    flops, config = flops_per_token(model_dir)
    hidden = config.get("hidden_size", 576)
    inter = config.get("intermediate_size", 4 * hidden)
    rates = gemm_gflops(dtype, m=max(batch, 1), k=hidden, n=inter)
    print(f"GEMM {max(batch, 1)}x{hidden}x{inter} {dtype}: "
          + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items())
          + f"; bound = the fastest / {flops / 1e9:.2f} GFLOP a token", flush=True)
    return max(rates.values()) * 1e9 / flops


def run_engine(kind: str, dtype: str, model_dir: str, prompts: list[str], params: SamplingParams,
               options: dict, prompt_tokens: int, shard_size: int | None = None) -> dict:
    """Start the engine, warm it up, time a prefill-only pass (one token per sequence) and then the full pass over
    all prompts, close it. The full pass's time less the prefill pass's is the decode time. shard_size: prompts per
    generate() call, each with its shard's own seed, as the generation pipeline calls an engine (None: one call)."""
    from cotgap_ray.generation.cache import shard_bounds
    from cotgap_ray.generation.pipeline import shard_seed

    def passes(p: SamplingParams) -> list:
        if shard_size is None:
            return engine.generate(prompts, p)
        return [out for sid, (start, stop) in enumerate(shard_bounds(len(prompts), shard_size))
                for out in engine.generate(prompts[start:stop], replace(p, seed=shard_seed(p.seed, sid)))]

    t0 = time.perf_counter()
    engine = load_engine(model_dir, kind, **options)
    engine.generate(prompts[:1], SamplingParams(max_tokens=4))  # first-call overheads belong to start-up
    start_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        passes(replace(params, max_tokens=1))
        prefill_s = time.perf_counter() - t0
        reset_prefix_cache(engine)  # else the full pass would skip the prefill just timed
        t0 = time.perf_counter()
        results = passes(params)
        gen_s = time.perf_counter() - t0
    finally:
        engine.close()
    gens = [g for per_prompt in results for g in per_prompt]
    tokens = sum(g.n_tokens for g in gens)
    decode_s = max(gen_s - prefill_s, 1e-9)
    return {"engine": kind, "dtype": dtype, "prompts": len(prompts), "tokens": tokens, "start_s": start_s,
            "gen_s": gen_s, "tok_s": tokens / gen_s, "all_tok_s": (tokens + prompt_tokens) / gen_s,
            "prefill_s": prefill_s, "decode_tok_s": (tokens - len(gens)) / decode_s,
            "texts": [per_prompt[0].text for per_prompt in results]}


def reset_prefix_cache(engine) -> None:
    """vLLM keeps computed prompt blocks (prefix caching): drop them so a pass pays its own prefill."""
    llm = getattr(engine, "llm", None)
    if llm is not None and not llm.reset_prefix_cache():
        raise RuntimeError("vLLM refused to reset its prefix cache (requests still running?)")


def print_table(rows: list[dict], bounds: dict[str, float]) -> None:
    base = rows[0] if rows else None
    header = f"{'engine':<20} {'dtype':<9} {'prompts':>7} {'out tokens':>10} {'start s':>8} {'gen s':>8} " \
             f"{'tok/s':>8} {'bound tok/s':>11} {'% of bound':>10} {'+prompt tok/s':>13} {'% of bound':>10} " \
             f"{'prefill s':>9} {'decode tok/s':>12} {'% of bound':>10} {'vs first':>9} {'same text':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        bound = bounds[r["dtype"]]
        same = f"{sum(a == b for a, b in zip(r['texts'], base['texts']))}/{r['prompts']}"
        print(f"{r['engine']:<20} {r['dtype']:<9} {r['prompts']:>7} {r['tokens']:>10} {r['start_s']:>8.1f} "
              f"{r['gen_s']:>8.1f} {r['tok_s']:>8.1f} {bound:>11.0f} {100 * r['tok_s'] / bound:>9.1f}% "
              f"{r['all_tok_s']:>13.1f} {100 * r['all_tok_s'] / bound:>9.1f}% "
              f"{r['prefill_s']:>9.1f} {r['decode_tok_s']:>12.1f} {100 * r['decode_tok_s'] / bound:>9.1f}% "
              f"{r['tok_s'] / base['tok_s']:>8.2f}x {same:>10}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct",
                        help="local HF directory, or a spec for cotgap_ray.models (packaged:<name>)")
    parser.add_argument("--questions", help="JSONL with a 'question' field, e.g. ../shared/data/gsm8k/test.jsonl "
                                            "(default: built-in arithmetic questions)")
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts")
    parser.add_argument("--max-tokens", type=int, default=64, help="greedy tokens per prompt at most")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per sub-batch of the batched HF engine")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0: greedy (default); the default experiment's teachers sample at 0.7")
    parser.add_argument("--samples", type=int, default=1, help="completions per prompt (the default experiment: 2)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (a generation shard's seed)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes to run every engine in")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads for the HF engines (default: torch's "
                                                           "choice); 1 is far faster on a CPU shared with other jobs")
    parser.add_argument("--engines", default="hf-loop,hf,vllm", help="comma-separated; vllm skipped if absent")
    parser.add_argument("--tcmalloc", default="on", help="comma-separated on/off: vLLM once per value, with and "
                                                         "without tcmalloc preloaded (off: row 'vllm-no-tcm')")
    parser.add_argument("--reserved-cpus", default="auto",
                        help="comma-separated: vLLM once per value of VLLM_CPU_NUM_OF_RESERVED_CPU (auto: unset, "
                             "cotgap_ray's rule, none reserved below 8 CPUs, engines/preload.py; N: row 'vllm-rN'; "
                             "1 is vLLM's own default on x86)")
    parser.add_argument("--block-size", default="auto",
                        help="comma-separated: vLLM once per KV block size (auto: cotgap_ray's, 32 on CPU, "
                             "engines/vllm.py; N: row 'vllm-bN'; 128 is vLLM's own CPU default)")
    parser.add_argument("--max-num-seqs", default="auto",
                        help="comma-separated: vLLM once per max_num_seqs (auto: the engine's default, 256 on CPU; "
                             "N: row 'vllm-sN')")
    parser.add_argument("--shard-size", default="all",
                        help="comma-separated: prompts per generate() call, each with its own shard seed, as the "
                             "generation pipeline calls an engine (all: one call; N: row suffix '-shN'; the default "
                             "experiment's generation.shard_size)")
    parser.add_argument("--compile", default="off",
                        help="comma-separated on/off: vLLM once per value, eager (off: cotgap_ray's CPU choice) or "
                             "compiled with torch.compile, vLLM's own CPU default (on: row 'vllm-compiled'; the "
                             "compile is part of start s)")
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
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, n=args.samples, seed=args.seed)
    # Prompt tokens go through the same matmuls as generated ones (prefill): the engine's work is both.
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    from cotgap_ray.hardware import cpu_model, resolve_dtype

    kinds = [k for k in args.engines.split(",") if k != "vllm" or vllm_available()]
    dtypes = args.dtypes.split(",")
    decoding = "greedy" if args.temperature == 0 else f"temperature {args.temperature}, seed {args.seed}"
    print(f"model {args.model} ({model_dir}); {len(prompts)} prompts ({prompt_tokens} tokens), {decoding}, "
          f"{args.samples} sample(s) each, max {args.max_tokens} tokens", flush=True)
    print(f"CPU: {cpu_model()}; dtype auto here: {resolve_dtype('auto', 'cpu').name} "
          f"({resolve_dtype('auto', 'cpu').reason})", flush=True)
    bounds = {d: bound_tok_s(model_dir, d, args.prompts * args.samples) for d in dtypes}  # sequences per step
    rows = []
    for dtype in dtypes:
        for kind in kinds:
            variants = list(itertools.product(args.tcmalloc.split(","), args.reserved_cpus.split(","),
                                              args.compile.split(","), args.block_size.split(","),
                                              args.max_num_seqs.split(",")))
            for shard in args.shard_size.split(","):
                for tcmalloc, reserved, compiled, block, seqs in (
                        variants if kind == "vllm" else [("on", "auto", "off", "auto", "auto")]):
                    # read by engines/preload.py and by vLLM when it spawns its engine process
                    os.environ["COTGAP_TCMALLOC"] = "auto" if tcmalloc == "on" else "0"
                    if reserved == "auto":
                        os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)
                    else:
                        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = reserved
                    options = engine_options(kind, args.batch_size, dtype)
                    if compiled == "on":
                        options["enforce_eager"] = False  # vLLM's CPU default: torch.compile (inductor), traced once
                    if block != "auto":
                        options["block_size"] = int(block)
                    if seqs != "auto":
                        options["max_num_seqs"] = int(seqs)
                    row = run_engine(kind, dtype, model_dir, prompts, params, options, prompt_tokens,
                                     shard_size=None if shard == "all" else int(shard))
                    row["engine"] += "" if tcmalloc == "on" else "-no-tcm"
                    row["engine"] += "" if reserved == "auto" else f"-r{reserved}"
                    row["engine"] += "-compiled" if compiled == "on" else ""
                    row["engine"] += "" if block == "auto" else f"-b{block}"
                    row["engine"] += "" if seqs == "auto" else f"-s{seqs}"
                    row["engine"] += "" if shard == "all" else f"-sh{shard}"
                    rows.append(row)
                    print(f"  {row['engine']} {dtype}: {row['tokens']} tokens in {row['gen_s']:.1f} s", flush=True)
    print()
    print_table(rows, bounds)


if __name__ == "__main__":  # required: vLLM starts its engine process with spawn, which re-imports this module
    main()
