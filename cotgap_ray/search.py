"""python -m cotgap_ray.search: which teacher should this student distill chain-of-thought from, on this task?

    python -m cotgap_ray.search                                   # the embedded default (experiments/default.yaml)
    python -m cotgap_ray.search --config experiments/X.yaml --out runs/X task.n_dev=50

Stages, in order, each cached so a re-run or --resume redoes nothing finished:
  1. validate the config, the task data and the model specs (before any model loads)
  2. baseline: the student with no adapter on dev and test, with the shared prompt and greedy decoding
  (teacher generation, proxies, the Tune search, the test-split confirmation and the report build on this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cotgap_ray.config import ConfigError, ExperimentConfig, load_config


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cotgap_ray.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="experiment YAML (default: the embedded experiments/default.yaml)")
    parser.add_argument("--out", help="run directory (default: <out_dir>/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (config must match)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. task.n_dev=50")
    return parser.parse_args(argv)


def prepare_run_dir(cfg: ExperimentConfig, out: str | None, resume: bool) -> Path:
    """The run directory, bound to one config: a directory holding a different experiment is refused."""
    run_dir = Path(out) if out else Path(cfg.out_dir) / cfg.name
    saved = run_dir / "config.json"
    if saved.exists():
        previous = json.loads(saved.read_text())
        if previous.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(
                f"{run_dir} holds a different experiment (config {previous.get('fingerprint')}, this one "
                f"{cfg.fingerprint()}); choose another --out or restore that config"
            )
    elif resume:
        raise ConfigError(f"--resume: {run_dir} holds no run to resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.to_dict()}, indent=2))
    return run_dir


def _print_baseline(student: str, baseline: dict) -> None:
    print(f"\nbaseline of {student} (no adapter, greedy, shared prompt):")
    print(f"  {'split':<6} {'n':>5} {'accuracy':>9}  95% CI")
    for split, r in baseline.items():
        lo, hi = r.ci95
        print(f"  {split:<6} {r.n:>5} {100 * r.accuracy:>8.1f}%  [{100 * lo:.1f}, {100 * hi:.1f}]")


def run(cfg: ExperimentConfig, out: str | None = None, resume: bool = False) -> Path:
    from cotgap_ray.evaluate import evaluate_cached
    from cotgap_ray.runtime import offline_unless_hub, resolve_all
    from cotgap_ray.tasks import load_splits

    if not cfg.teachers:
        raise ConfigError("teachers: the list is empty; name at least one teacher model spec")
    offline_unless_hub([cfg.student, *cfg.teachers])
    splits = load_splits(cfg.task)  # bad data fails here, before any model work
    run_dir = prepare_run_dir(cfg, out, resume)
    print(f"run {run_dir}: task {cfg.task.name} {splits.sizes()} (split {splits.fingerprint()})")

    (student,) = resolve_all([cfg.student], cfg)
    # LoRA-capable engine even without an adapter: the baseline runs on the engine the adapters will run on.
    baseline = evaluate_cached(student, {"dev": splits.dev, "test": splits.test}, cfg, lora_rank=cfg.lora.rank)
    (run_dir / "baseline.json").write_text(json.dumps({k: v.summary() for k, v in baseline.items()}, indent=2))
    _print_baseline(student.name, baseline)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        run(cfg, args.out, args.resume)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
