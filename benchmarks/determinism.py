"""Is greedy scoring repeatable? The student's answers on a split, scored three times by one engine per dtype: in
split order, in a shuffled order, and in split order again.

    HF_HUB_OFFLINE=1 python benchmarks/determinism.py --dtypes float32,bfloat16 [--split test] [--engine vllm]

Every delta the search reports pairs an adapter's answers with the baseline's, problem by problem, so an engine whose
greedy answers move with batch order (or from one call to the next) puts noise inside every delta; this is why
evaluations run in `engine.eval_dtype` (float32 by default). Student, task, prompt and decoding are the experiment's
(the embedded default unless --config). The table:

    engine  dtype  n  changed by order  changed on repeat  outcomes changed by order  seconds (3 passes)
"""

from __future__ import annotations

import argparse
import random
import time

from cotgap_ray.answers import extract_answer, is_correct


def main() -> None:
    from transformers import AutoTokenizer

    from cotgap_ray.config import load_config
    from cotgap_ray.engines import load_engine
    from cotgap_ray.engines.options import engine_kind, engine_options, for_evaluation
    from cotgap_ray.models import resolve_all
    from cotgap_ray.prompts import EVAL_SAMPLING, render_prompt
    from cotgap_ray.tasks import load_splits

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="experiment YAML (default: the embedded default)")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--engine", default=None, help="engine kind (default: the config's)")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"engine.kind={args.engine}"] if args.engine else [])
    (student,) = resolve_all([cfg.student], cfg)
    tokenizer = AutoTokenizer.from_pretrained(student.path)
    problems = load_splits(cfg.task)[args.split]
    prompts = [render_prompt(p.question, tokenizer) for p in problems]
    order = list(range(len(prompts)))
    random.Random(1).shuffle(order)
    print(f"{'engine':<7} {'dtype':<9} {'n':>4} {'changed by order':>17} {'changed on repeat':>18} "
          f"{'outcomes by order':>18} {'seconds':>8}")
    for dtype in args.dtypes.split(","):
        ecfg = for_evaluation(cfg.engine)
        ecfg.dtype = dtype
        kind = engine_kind(ecfg)
        engine = load_engine(student.path, kind, **engine_options(ecfg, model_dir=student.path))
        try:
            start = time.perf_counter()
            first = [g[0].text for g in engine.generate(prompts, EVAL_SAMPLING)]
            shuffled = engine.generate([prompts[i] for i in order], EVAL_SAMPLING)
            by_order = [None] * len(prompts)
            for position, index in enumerate(order):
                by_order[index] = shuffled[position][0].text
            again = [g[0].text for g in engine.generate(prompts, EVAL_SAMPLING)]
            seconds = time.perf_counter() - start
        finally:
            engine.close()
        outcomes = sum(is_correct(extract_answer(a), p.answer) != is_correct(extract_answer(b), p.answer)
                       for a, b, p in zip(first, by_order, problems))
        print(f"{kind:<7} {dtype:<9} {len(prompts):>4} {sum(a != b for a, b in zip(first, by_order)):>17} "
              f"{sum(a != b for a, b in zip(first, again)):>18} {outcomes:>18} {seconds:>8.0f}", flush=True)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry point must be guarded
    main()
