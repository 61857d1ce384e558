"""cotgap evaluate: accuracy of a model (+ an optional LoRA adapter) on a task split, with the one prompt and greedy
decoding every baseline and post-distillation number uses.

    cotgap evaluate --model packaged:smollm2-135m-instruct --task reasoning_gym:basic_arithmetic \
        --split dev --limit 50 --json --out eval/smollm2      # eval/smollm2/rows.parquet, summary.json

The scoring and its cache are cotgap_ray.evaluation.scoring; this module reads the command line, sizes the engine
from the adapter it is given, and prints the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from cotgap_ray.cli import add_task_arguments, load, parse, verb_parser, work_output
from cotgap_ray.config import task_overrides
from cotgap_ray.evaluation.scoring import evaluate_cached


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = verb_parser("evaluate", __doc__, out="also write rows.parquet and summary.json into DIR (the evaluation "
                                                  "cache keeps its own copy either way)",
                         json_help="print the summary as JSON on stdout instead of the sentence")
    parser.add_argument("--model", metavar="SPEC", help="model spec: packaged:<name> | tiny:<name>[@<seed>] | local "
                                                        "HF dir | hub id (default: the config's student; cotgap list "
                                                        "models)")
    add_task_arguments(parser, split="dev")
    parser.add_argument("--adapter", metavar="DIR",
                        help="a peft LoRA adapter directory to evaluate on top of the model")
    return parse(parser, argv)


def adapter_rank(adapter_dir: str) -> int:
    """The largest LoRA rank in a peft adapter directory (adapter_config.json's r and rank_pattern): what the engine
    must be sized for, whatever lora.rank the config says (a search may have chosen another)."""
    from cotgap_ray.errors import MissingFile

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise MissingFile(f"--adapter {adapter_dir}: no adapter_config.json there (give a peft adapter directory)")
    config = json.loads(path.read_text())
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from cotgap_ray.models import offline_unless_hub, resolve_all
    from cotgap_ray.tasks import load_splits

    args = _parse(argv)
    cfg = load(args, task_overrides(args.task_path, []), task=args.task)
    if not args.model:
        from cotgap_ray.search.pairs import one_student_only

        one_student_only(cfg, "evaluate", flag="--model")
    spec = args.model or cfg.student
    from cotgap_ray.preflight import config_models, preflight

    preflight(cfg, models=[("--model", spec)] if args.model else config_models(cfg, teachers=False), out=args.out)
    offline_unless_hub([spec])
    # Data first: a bad row or split must fail before any model is converted or loaded.
    problems = load_splits(cfg.task)[args.split]
    if args.limit is not None:
        problems = problems[: args.limit]
    lora_rank = adapter_rank(args.adapter) if args.adapter else None  # a bad --adapter fails before the model loads
    with work_output(args.json):
        (model,) = resolve_all([spec], cfg)
        result = evaluate_cached(model, {args.split: problems}, cfg, args.adapter, lora_rank)[args.split]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.rows_path, out / "rows.parquet")
        result.rows_path = str(out / "rows.parquet")
        (out / "summary.json").write_text(json.dumps(result.summary(), indent=2))
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        lo, hi = result.ci95
        print(
            f"{model.name} on {cfg.task.name} [{args.split}, n={result.n}]: accuracy {100 * result.accuracy:.1f}% "
            f"(95% CI {100 * lo:.1f}–{100 * hi:.1f}), {result.tokens} tokens in {result.seconds:.1f}s "
            f"via {result.engine}; rows: {result.rows_path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
