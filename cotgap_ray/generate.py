"""python -m cotgap_ray.generate: teachers' rationales for a task split, into the rationale cache (Ray Data).

    python -m cotgap_ray.generate --teacher packaged:smollm2-135m-instruct --task reasoning_gym:basic_arithmetic \
        --samples 4 --temperature 0.7 [--out CACHE_DIR] [--address auto]

The pipeline itself (shards, actor pool, resumable cache) is cotgap_ray.generation.pipeline; this module only reads
the command line, checks the data before any model loads, and prints one summary line per teacher.
"""

from __future__ import annotations

import argparse
import sys

from cotgap_ray.generation.pipeline import generate_teachers
from cotgap_ray.generation.placement import Placement


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cotgap_ray.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", action="append", help="teacher spec (repeatable; default: the config's teachers)")
    parser.add_argument("--task", help="task name, e.g. gsm8k, reasoning_gym:basic_arithmetic, file")
    parser.add_argument("--task-path", help="gsm8k directory or file task path")
    parser.add_argument("--split", default="train", choices=["train", "dev", "test"])
    parser.add_argument("--limit", type=int, help="only the first N problems of the split")
    parser.add_argument("--samples", type=int, help="rationales per problem (k)")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--shard-size", type=int, help="problems per shard (default 64)")
    parser.add_argument("--actors", type=int, help="engines at once (default: one per GPU, or 1 on CPU)")
    parser.add_argument("--config", help="experiment YAML (default: the embedded default)")
    parser.add_argument("--out", help="cache directory (default: config cache_dir, $COTGAP_CACHE, ~/.cache/cotgap_ray)")
    parser.add_argument("--address", help="Ray cluster address (default: a running local cluster, else a new one)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. engine.kind=hf")
    from cotgap_ray.config import add_help_config

    add_help_config(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from dataclasses import replace

    from cotgap_ray.config import ConfigError, load_config, task_overrides
    from cotgap_ray.models import offline_unless_hub
    from cotgap_ray.tasks import load_splits

    args = _parse(sys.argv[1:] if argv is None else argv)
    cfg = load_config(args.config, task_overrides(args.task_path, args.overrides), task=args.task)
    if args.samples is not None:
        cfg.generation.samples = args.samples
    if args.temperature is not None:
        cfg.generation.temperature = args.temperature
    teachers = args.teacher or cfg.teachers
    if not teachers:
        raise ConfigError("no teacher: pass --teacher SPEC or set teachers in the config")
    from cotgap_ray.preflight import config_models, preflight

    models = [("--teacher", t) for t in args.teacher] if args.teacher else config_models(cfg, student=False)
    preflight(cfg, models=models, out=args.out, work=("generation",), teachers=teachers, address=args.address)
    placement = Placement.from_config(cfg.generation)
    placement = replace(placement, **{k: v for k, v in (("shard_size", args.shard_size), ("actors", args.actors))
                                      if v is not None})
    offline_unless_hub(teachers)
    problems = load_splits(cfg.task)[args.split]  # data first: a bad task fails before any model loads
    if args.limit is not None:
        problems = problems[: args.limit]
    results = generate_teachers(teachers, problems, cfg, args.out, split=args.split, task=cfg.task.name,
                                placement=placement, address=args.address)
    print(f"\n{'teacher':32} {'pass@1':>7} {'maj@k':>7} {'yield':>7} {'solved':>7} {'tokens':>7} {'tok/s':>7} "
          f"{'wall s':>7}  cache")
    for r in results:
        s = r.summary
        print(f"{r.teacher[:32]:32} {s['pass_at_1']:7.3f} {s['majority_accuracy']:7.3f} {s['yield_rows']:7.3f} "
              f"{s['yield_problems']:7.3f} {s['mean_tokens']:7.1f} {s['tokens_per_s']:7.1f} {s['wall_s']:7.1f}  "
              f"{r.path} ({s['generated_shards']} generated, {s['cached_shards']} cached)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
