"""What a LoRA adapter costs when scoring the student: bare model vs per-request LoRA vs the adapter merged in place.

    python benchmarks/adapter_scoring.py --prompts 50 --rank 16
    python benchmarks/adapter_scoring.py --config experiments/default.yaml --adapter runs/default/trials/<key>/adapter

Scoring each trial's adapter on dev is the main cost of a search on CPU, so this is the number to watch when choosing
the engine or the split sizes. The student, task, prompt, dtype and greedy decoding are the experiment's (the
embedded default unless --config); every engine is opened as the search's evaluation actor opens it, once per way of
applying an adapter:
    vllm/per-request   vLLM's LoRA: the engine starts with enable_lora and each call carries a LoRARequest
    vllm/merged        a bare engine; the adapter is merged into the weights and reloaded in place (engines/merge.py)
    hf                 HF transformers + peft (per-request)
Without --adapter the adapter is a fresh peft LoRA of --rank on the config's target modules with peft's default
initialisation (B = 0): in exact arithmetic it changes no output, so the slowdown is adapter overhead, and `same text`
shows whether greedy decoding gave the same text with the adapter (always, for merged: the weights are identical).
`swap s` is the time to merge and reload (merged only), included in the adapter pass. The table:

    engine  mode  prompts  start s  base tok/s  adapter tok/s  adapter/base  swap s  same text
"""

from __future__ import annotations

import argparse
import tempfile
import time

from cotgap_ray.config import load_config
from cotgap_ray.engines import vllm_available
from cotgap_ray.engines.options import open_engine
from cotgap_ray.models import resolve_all
from cotgap_ray.prompts import EVAL_SAMPLING, render_prompt
from cotgap_ray.tasks import load_splits

WARMUP_PROMPTS = 4


def zero_adapter(model_dir: str, rank: int, target_modules: list[str], out_dir: str) -> str:
    """A peft LoRA adapter with B = 0 (peft's default init), saved as safetensors in out_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules, task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(out_dir)
    return out_dir


def timed_pass(engine, prompts: list[str], adapter: str | None) -> dict:
    t0 = time.perf_counter()
    results = engine.generate(prompts, EVAL_SAMPLING, adapter=adapter)
    seconds = time.perf_counter() - t0
    tokens = sum(gens[0].n_tokens for gens in results)
    return {"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds, "texts": [g[0].text for g in results]}


def run_engine(kind: str, mode: str, cfg, model_dir: str, prompts: list[str], adapter: str, rank: int) -> dict:
    """Open `kind` as the evaluator does (adapter mode `mode` for vLLM), warm both paths, then time the bare pass and
    the adapter pass. The adapter is written to a fresh directory before the timed pass, as the evaluator receives
    every trial's adapter, so a merged engine pays its merge and reload inside the timed pass."""
    import shutil

    cfg.engine.kind, cfg.engine.adapter_scoring = kind, mode
    t0 = time.perf_counter()
    engine = open_engine(model_dir, cfg.engine, lora_rank=rank)
    try:
        # First-call overheads (loading the adapter, growing buffers to full length) belong to start-up, not to
        # whichever pass happens to run first: warm both paths on a few prompts with the real decoding.
        for warm in (None, adapter):
            engine.generate(prompts[:WARMUP_PROMPTS], EVAL_SAMPLING, adapter=warm)
        start_s = time.perf_counter() - t0
        base = timed_pass(engine, prompts, None)
        with tempfile.TemporaryDirectory() as tmp:
            fresh = shutil.copytree(adapter, f"{tmp}/adapter")
            swap_before = getattr(engine, "swap_seconds", 0.0)
            tuned = timed_pass(engine, prompts, fresh)
            swap_s = getattr(engine, "swap_seconds", 0.0) - swap_before
    finally:
        engine.close()
    same = sum(a == b for a, b in zip(base["texts"], tuned["texts"]))
    return {"engine": kind, "mode": getattr(engine, "adapter_mode", "per-request"), "dtype": str(engine.dtype),
            "prompts": len(prompts), "start_s": start_s, "base": base, "adapter": tuned, "same": same,
            "swap_s": swap_s}


def print_table(rows: list[dict], zero_init: bool) -> None:
    header = f"{'engine':<6} {'mode':<12} {'dtype':<9} {'prompts':>7} {'start s':>8} {'base tok/s':>11} " \
             f"{'adapter tok/s':>14} {'adapter/base':>13} {'swap s':>7} {'same text':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["adapter"]["tok_s"] / r["base"]["tok_s"]
        print(f"{r['engine']:<6} {r['mode']:<12} {r['dtype'].removeprefix('torch.'):<9} {r['prompts']:>7} "
              f"{r['start_s']:>8.1f} {r['base']['tok_s']:>11.1f} {r['adapter']['tok_s']:>14.1f} {ratio:>12.2f}x "
              f"{r['swap_s']:>7.2f} {r['same']:>5}/{r['prompts']:<4}")
    if zero_init:
        print("(zero-initialised adapter: 'same text' short of all prompts means the adapter path computes "
              "differently from the bare one, or greedy decoding did not repeat)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="experiment YAML (default: the embedded default)")
    parser.add_argument("--prompts", type=int, default=30, help="dev problems to score (the default's n_dev is 30)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank of the fresh adapter and the engine's maximum")
    parser.add_argument("--adapter", help="a trained peft adapter directory instead of a fresh zero-init one")
    parser.add_argument("--engines", default="vllm/per-request,vllm/merged,hf",
                        help="comma-separated engine[/adapter mode]; vllm skipped if absent")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. engine.dtype=float32")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, [f"task.n_dev={args.prompts}", *args.overrides])
    (student,) = resolve_all([cfg.student], cfg)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student.path)
    prompts = [render_prompt(p.question, tokenizer) for p in load_splits(cfg.task).dev]
    from cotgap_ray.hardware import cpu_model

    kinds = [k for k in args.engines.split(",") if not k.startswith("vllm") or vllm_available()]
    print(f"student {cfg.student} on {cfg.task.name} dev, {len(prompts)} prompts, greedy, "
          f"max {EVAL_SAMPLING.max_tokens} tokens, LoRA rank {args.rank}; CPU: {cpu_model()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter or zero_adapter(student.path, args.rank, cfg.lora.target_modules, tmp)
        rows = []
        for item in kinds:
            kind, _, mode = item.partition("/")
            rows.append(run_engine(kind, mode or "auto", cfg, student.path, prompts, adapter, args.rank))
            r = rows[-1]
            print(f"  {item}: base {r['base']['tokens']} tokens in {r['base']['seconds']:.1f} s, adapter "
                  f"{r['adapter']['tokens']} tokens in {r['adapter']['seconds']:.1f} s", flush=True)
    print()
    print_table(rows, zero_init=not args.adapter)


if __name__ == "__main__":  # required: vLLM starts its engine process with spawn, which re-imports this module
    main()
