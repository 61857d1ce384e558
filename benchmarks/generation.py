"""Benchmark: teacher generation through the Ray Data pipeline against the same engine called directly, and against
batched HF transformers, on the same prompts, shards and seeds. Prints one table.

    python benchmarks/generation.py                                  # SmolLM2-135M, 256 prompts, 64 new tokens
    python benchmarks/generation.py --prompts 128 --max-tokens 48 --engine hf

Rows:
  bare <engine>      the engine in this process, one generate() call per shard (what the pipeline's actor does)
  ray-data <engine>  cotgap_ray.generate.generate_rationales on a local Ray (fresh cache dir): actor pool of one
                     engine owning all CPUs, shards through map_batches, Parquet written and recorded by the driver
  bare hf            batched HF transformers (engine.batch_size sequences per forward), the fallback engine

`start s` is engine start-up; for the pipeline it is everything before the engine is ready in its actor (dataset
planning, actor process, imports, engine). `generate s` is the time after it: for the pipeline, from the engine ready
to the last shard recorded by the driver, so it includes Ray Data scheduling, transfer and the cache writes;
`engine s` is the part spent inside engine.generate. Overhead = pipeline generate s / bare generate s - 1 (goal:
under 10%). Ray start-up itself (ray.init, once per cluster) is not counted.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bare_engine(path: str, kind: str, options: dict, shards: list[list[str]], params, seeds: list[int]) -> dict:
    from dataclasses import replace

    from cotgap_ray.engines import load_engine

    start = time.perf_counter()
    engine = load_engine(path, kind, **options)
    started = time.perf_counter() - start
    tokens, start = 0, time.perf_counter()
    for prompts, seed in zip(shards, seeds):
        outputs = engine.generate(prompts, replace(params, seed=seed))
        tokens += sum(g.n_tokens for gens in outputs for g in gens)
    generate_s = time.perf_counter() - start
    engine.close()
    return {"start_s": started, "generate_s": generate_s, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--task", default="reasoning_gym:basic_arithmetic")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=1, help="k samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--engine", default="auto", help="engine of the pipeline and the bare run: auto | vllm | hf")
    parser.add_argument("--no-hf", action="store_true", help="skip the batched-HF row")
    parser.add_argument("--bare-under-ray", action="store_true",
                        help="add a bare-engine row run while the idle Ray runtime is up (isolates Ray's own CPU use)")
    args = parser.parse_args()

    import ray
    from transformers import AutoTokenizer

    from cotgap_ray.config import ExperimentConfig, TaskConfig
    from cotgap_ray.engines.options import engine_kind, engine_options
    from cotgap_ray.generation import cache
    from cotgap_ray.generation import pipeline as gen
    from cotgap_ray.models import cache_root, resolve_model
    from cotgap_ray.models.remote import describe_remote
    from cotgap_ray.prompts import render_prompt
    from cotgap_ray.tasks import load_splits

    cfg = ExperimentConfig()
    cfg.task = TaskConfig(name=args.task, n_train=args.prompts, n_dev=10, n_test=10)
    cfg.engine.kind = args.engine
    cfg.generation.samples, cfg.generation.max_tokens = args.samples, args.max_tokens
    problems = load_splits(cfg.task).train
    model = resolve_model(args.model, cache_root(cfg) / "models")
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    params = gen.sampling_params(cfg.generation)
    bounds = cache.shard_bounds(len(problems), args.shard_size)
    shards = [[render_prompt(p.question, tokenizer) for p in problems[a:b]] for a, b in bounds]
    seeds = [gen.shard_seed(params.seed, i) for i in range(len(bounds))]
    kind = engine_kind(cfg.engine)
    print(f"{model.name}: {len(problems)} prompts x {args.samples} samples, {args.max_tokens} new tokens max, "
          f"{len(shards)} shards of {args.shard_size}, engine {kind}, {os.cpu_count()} CPUs")

    rows = {}
    rows[f"bare {kind}"] = bare_engine(model.path, kind, engine_options(cfg.engine), shards, params, seeds)
    print(f"bare {kind}: {rows[f'bare {kind}']}", flush=True)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    (facts,) = describe_remote([args.model], cfg, "generation")  # as cotgap generate: resolved by a Ray task
    with tempfile.TemporaryDirectory() as tmp:
        cpu, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = gen.generate_rationales(facts, problems, cfg, tmp, placement=gen.Placement(shard_size=args.shard_size),
                                         progress=lambda line: None)
        wall, cpu_end = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        recorded = cache.read_manifest(result.path)["shards"].values()
    # From the engine ready (end of the actor's __init__) to the last shard recorded by the driver.
    steady = max(x["written_at"] for x in recorded) - min(x["ready_at"] for x in recorded)
    s = result.summary
    rows[f"ray-data {kind}"] = {"start_s": wall - steady, "generate_s": steady,
                                "engine_s": s["engine_seconds"], "tokens": s["tokens"], "wall_s": wall,
                                "driver_cpu_s": cpu_end.ru_utime + cpu_end.ru_stime - cpu.ru_utime - cpu.ru_stime}
    print(f"ray-data {kind}: {rows[f'ray-data {kind}']}", flush=True)
    if args.bare_under_ray:  # the same bare run while the (idle) Ray runtime shares the CPUs
        rows[f"bare {kind}, Ray up"] = bare_engine(model.path, kind, engine_options(cfg.engine), shards, params, seeds)
        print(f"bare {kind}, Ray up: {rows[f'bare {kind}, Ray up']}", flush=True)
    ray.shutdown()
    if not args.no_hf and kind != "hf":
        rows["bare hf"] = bare_engine(model.path, "hf", {"batch_size": cfg.engine.batch_size}, shards, params, seeds)

    bare = rows[f"bare {kind}"]
    print(f"\n{'path':20} {'start s':>8} {'generate s':>11} {'engine s':>9} {'tokens':>7} {'tok/s':>7} {'vs bare':>8}")
    for name, r in rows.items():
        print(f"{name:20} {r['start_s']:8.1f} {r['generate_s']:11.1f} {r.get('engine_s', r['generate_s']):9.1f} "
              f"{r['tokens']:7d} {r['tokens'] / r['generate_s']:7.1f} {r['generate_s'] / bare['generate_s']:8.3f}")
    pipe = rows[f"ray-data {kind}"]
    print(f"\nRay Data overhead over the bare engine: {100 * (pipe['generate_s'] / bare['generate_s'] - 1):+.1f}% "
          f"(goal < 10%); of which outside engine calls (scheduling, transfer, cache writes): "
          f"{pipe['generate_s'] - pipe['engine_s']:.1f}s; driver CPU {pipe['driver_cpu_s']:.1f}s; "
          f"end to end incl. actor + engine start: {pipe['wall_s']:.1f}s vs {bare['start_s'] + bare['generate_s']:.1f}s")


if __name__ == "__main__":
    main()
