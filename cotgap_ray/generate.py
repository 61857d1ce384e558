"""cotgap generate: teachers' rationales for a task split, into the content-addressed rationale cache (Ray Data).

    cotgap generate --teacher packaged:smollm2-135m-instruct --task reasoning_gym:basic_arithmetic \
        --samples 4 --temperature 0.7 [--cache-dir DIR] [--address auto]

The pipeline itself (shards, actor pool, resumable cache) is cotgap_ray.generation.pipeline; this module only reads
the command line, checks the data before any model loads, joins (or starts) Ray, has each teacher resolved on a
generation node (models.remote.describe_remote: the driver never holds a model), and prints one summary line per
teacher.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cotgap_ray.cli import add_task_arguments, load, parse, verb_parser, work_output
from cotgap_ray.generation.pipeline import generate_teachers


# generate's options that stand for a config key: they become overrides placed before the key=value ones (which win).
CONFIG_FLAGS = {"samples": "generation.samples", "temperature": "generation.temperature",
                "shard_size": "generation.shard_size", "actors": "generation.actors"}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = verb_parser("generate", __doc__, json_help="print one JSON object per teacher (teacher, cache, summary) "
                                                        "as a list instead of the table")
    parser.add_argument("--teacher", action="append", metavar="NAME",
                        help="teacher model spec (repeatable; default: the config's teachers; cotgap list models)")
    add_task_arguments(parser, split="train")
    parser.add_argument("--samples", type=int, metavar="K", help="rationales per problem, k (generation.samples)")
    parser.add_argument("--temperature", type=float, metavar="T",
                        help="sampling temperature (generation.temperature)")
    parser.add_argument("--shard-size", type=int, metavar="N", help="problems per shard (generation.shard_size)")
    parser.add_argument("--actors", type=int, metavar="N",
                        help="engines at once (generation.actors; default: one per GPU, or 1 on CPU)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="the rationale cache root: rationales go to DIR/rationales/<teacher>-<key>/ (default: "
                             "the cache root, i.e. config cache_dir, $COTGAP_CACHE or ~/.cache/cotgap_ray; models "
                             "stay there)")
    parser.add_argument("--out", help=argparse.SUPPRESS)  # refused in _main with a pointer to --cache-dir
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address (default: a running local cluster, else a new one)")
    return parse(parser, argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from cotgap_ray.config import ConfigError, task_overrides
    from cotgap_ray.models import offline_unless_hub
    from cotgap_ray.tasks import load_splits

    args = _parse(argv)
    if args.out is not None:
        raise ConfigError(f"generate has no --out: it writes into the content-addressed rationale cache; to choose "
                          f"that cache, pass --cache-dir {args.out} (--out is the results directory of search, "
                          f"distill and evaluate)")
    flags = [f"{key}={getattr(args, name)}" for name, key in CONFIG_FLAGS.items() if getattr(args, name) is not None]
    cfg = load(args, task_overrides(args.task_path, flags), task=args.task)
    teachers = args.teacher or cfg.teachers
    if not teachers:
        raise ConfigError("no teacher: pass --teacher SPEC or set teachers in the config")
    from cotgap_ray.preflight import check_writable_dir, config_models, preflight

    models = [("--teacher", t) for t in args.teacher] if args.teacher else config_models(cfg, student=False)
    preflight(cfg, models=models, work=("generation",), teachers=teachers, address=args.address)
    if args.cache_dir:
        check_writable_dir(Path(args.cache_dir), "--cache-dir", "the rationale cache")
    offline_unless_hub(teachers)
    problems = load_splits(cfg.task)[args.split]  # data first: a bad task fails before any model loads
    if args.limit is not None:
        problems = problems[: args.limit]
    import ray

    from cotgap_ray.models.remote import describe_remote

    with work_output(args.json):  # placement: cfg.generation, --shard-size / --actors included
        if not ray.is_initialized():
            ray.init(address=args.address)
        facts = describe_remote(teachers, cfg, "generation")  # on a generation node: specs cross nodes, paths do not
        results = generate_teachers(facts, problems, cfg, args.cache_dir, split=args.split, task=cfg.task.name)
    if args.json:
        print(json.dumps([{"teacher": r.teacher, "cache": str(r.path), "summary": r.summary} for r in results],
                         indent=2, default=str))
        return 0
    from cotgap_ray.proxies import base_proxies, truncation_warning

    # cut: the share of rationales that stopped at generation.max_tokens (a pilot with a generous limit shows the
    # teacher's own lengths in `tokens`)
    print(f"\n{'teacher':32} {'pass@1':>7} {'maj@k':>7} {'yield':>7} {'solved':>7} {'tokens':>7} {'cut':>7} "
          f"{'tok/s':>7} {'wall s':>7}  cache")
    for r in results:
        s = r.summary
        print(f"{r.teacher[:32]:32} {s['pass_at_1']:7.3f} {s['majority_accuracy']:7.3f} {s['yield_rows']:7.3f} "
              f"{s['yield_problems']:7.3f} {s['mean_tokens']:7.1f} {s['truncated_fraction']:7.3f} "
              f"{s['tokens_per_s']:7.1f} {s['wall_s']:7.1f}  "
              f"{r.path} ({s['generated_shards']} generated, {s['cached_shards']} cached)")
    for r in results:
        if warning := truncation_warning(r.teacher, base_proxies(r.summary)):
            print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
