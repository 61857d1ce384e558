"""One distillation trial: (teacher, filter chain, LoRA settings) -> the student's accuracy change over its baseline.

    python -m cotgap_ray.distill --config experiments/default.yaml teacher=qwen2.5-coder-0.5b-instruct lora.epochs=1

Steps, each reusing the caches (a re-run of a finished trial computes nothing):
    baseline on dev (student, no adapter)  ─► the teacher's rationales on train (Ray Data, cache)
    ─► filter chain (filters.py) ─► LoRA fine-tune on Ray Train (training/ray_train.py)
    ─► the adapter on dev with the baseline's prompt and decoding ─► paired delta, bootstrap CI, McNemar p (stats.py)

A chain that leaves no training example ends the trial with status "no_data" (no fake score). The test split is
never touched here: trials select on dev; only the search's final confirmation reads test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cotgap_ray.config import ConfigError, ExperimentConfig, load_config


@dataclass
class TrialResult:
    """What a trial produced. `status`: "ok" | "no_data". Accuracies are fractions; delta in accuracy points/100."""

    teacher: str
    filters: list
    lora: dict
    status: str
    n_train_examples: int = 0
    filter_report: list = field(default_factory=list)
    baseline_dev_accuracy: float | None = None
    dev_accuracy: float | None = None
    dev_delta: float | None = None
    dev_delta_ci95: list | None = None
    p_value: float | None = None
    degrades: bool | None = None
    improves: bool | None = None
    adapter_dir: str | None = None
    train_tokens: int = 0
    train_seconds: float = 0.0
    seconds: float = 0.0
    epochs: list = field(default_factory=list)


def trial_id(teacher_fingerprint: str, cfg: ExperimentConfig) -> str:
    """Content address of a trial: what it trains on and how."""
    material = {"teacher": teacher_fingerprint, "filters": cfg.filters, "lora": asdict(cfg.lora),
                "train": asdict(cfg.train), "task": asdict(cfg.task), "generation": asdict(cfg.generation),
                "student": cfg.student}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]


def pick_teacher(cfg: ExperimentConfig, name: str) -> str:
    """A teacher spec from the config's list, by spec or by its short name (the part after 'packaged:' or '/')."""
    from cotgap_ray.models import spec_name

    for spec in cfg.teachers:
        if name in (spec, spec.removeprefix("packaged:"), spec.rstrip("/").rsplit("/", 1)[-1], spec_name(spec)):
            return spec
    raise ConfigError(f"teacher {name!r} is not in the config's teachers: {', '.join(cfg.teachers)}")


def _needs(cfg: ExperimentConfig, step: str) -> bool:
    return any(s.get("name") == step for s in cfg.filters)


def filtered_rationales(cfg, teacher_spec: str, student, splits, generations: dict):
    """Apply the filter chain to one teacher's rationales; returns (table, report).

    `generations` maps teacher spec -> generate.GenerationResult; all of them are the cross_teacher context."""
    from cotgap_ray.filters import FilterContext, apply_filters

    tables = {spec: g.table() for spec, g in generations.items()}
    # Rationale rows name their teacher by model name (GenerationResult.teacher), which is what filters key on.
    context = FilterContext(teacher_tables={generations[spec].teacher: t for spec, t in tables.items()})
    table = tables[teacher_spec]
    if _needs(cfg, "student_nll"):
        table = _with_student_nll(table, student, splits)
    from cotgap_ray.search.space import training_chain

    return apply_filters(table, training_chain(cfg.filters, cfg.generation.max_tokens), context)


def _with_student_nll(table, student, splits):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotgap_ray.sft import with_student_nll

    tokenizer = AutoTokenizer.from_pretrained(student.path)
    model = AutoModelForCausalLM.from_pretrained(student.path, dtype=torch.float32).eval()
    return with_student_nll(table, model, tokenizer, {p.id: p.question for p in splits.train})


def run_trial(cfg: ExperimentConfig, teacher: str, run_dir: Path) -> TrialResult:
    """Run (or reload) one trial of `teacher` (a spec from cfg.teachers) in run_dir/trials/<id>."""
    from cotgap_ray.evaluation.paired import paired, rows_correct
    from cotgap_ray.evaluation.scoring import evaluate_cached
    from cotgap_ray.generation.pipeline import generate_teachers
    from cotgap_ray.models import offline_unless_hub, resolve_all
    from cotgap_ray.stats import compare
    from cotgap_ray.tasks import load_splits
    from cotgap_ray.training.examples import NoTrainingData, check_examples, check_target_modules, student_skeleton
    from cotgap_ray.training.step import fine_tune, rationale_file

    start = time.perf_counter()
    offline_unless_hub([cfg.student, *cfg.teachers])
    splits = load_splits(cfg.task)  # bad data fails before any model work
    # cross_teacher needs every candidate's rationales; otherwise only this teacher's.
    teacher_specs = cfg.teachers if _needs(cfg, "cross_teacher") else [teacher]
    student, *teachers = resolve_all([cfg.student, *teacher_specs], cfg)
    # A LoRA target the student lacks must fail now, not after generation (meta-device skeleton: no weights).
    check_target_modules(student_skeleton(student.path), cfg.lora.target_modules)
    this = teachers[teacher_specs.index(teacher)]
    trial_dir = run_dir / "trials" / trial_id(this.fingerprint, cfg)
    if (trial_dir / "trial.json").exists():
        return TrialResult(**json.loads((trial_dir / "trial.json").read_text()))

    baseline = evaluate_cached(student, {"dev": splits.dev}, cfg, lora_rank=cfg.lora.rank)["dev"]
    results = generate_teachers(teachers, splits, cfg, split="train", task=cfg.task.name)
    generations = dict(zip(teacher_specs, results))
    table, report = filtered_rationales(cfg, teacher, student, splits, generations)
    result = TrialResult(teacher=teacher, filters=cfg.filters, lora=asdict(cfg.lora), status="ok",
                         filter_report=report.to_dict()["steps"], baseline_dev_accuracy=baseline.accuracy)
    questions = {p.id: p.question for p in splits.train}
    try:
        with rationale_file(table, trial_dir) as rationales:  # kept in trial_dir: what this trial trained on
            report.add_sft_drops(check_examples(student.path, rationales, questions, cfg.lora.max_length))
            trained = fine_tune(cfg, student, rationales, questions, cfg.lora, storage_path=str(trial_dir / "train"),
                                name="lora")
    except NoTrainingData as e:
        if e.drops is not None and not any(s["step"] == "sft_examples" for s in report.steps):
            report.add_sft_drops(e.drops)
        print(f"trial {trial_dir.name}: no training data ({e})", file=sys.stderr)
        result.status = "no_data"
    else:
        after = evaluate_cached(student, {"dev": splits.dev}, cfg, adapter=trained.adapter_dir,
                                lora_rank=cfg.lora.rank)["dev"]
        stats = compare(*paired(rows_correct(baseline.rows_path), rows_correct(after.rows_path),
                                f"trial {trial_dir.name} on dev"))
        result.n_train_examples = trained.n_examples
        result.dev_accuracy = after.accuracy
        result.dev_delta, result.dev_delta_ci95 = stats["delta"], list(stats["ci95"])
        result.p_value, result.degrades, result.improves = stats["p_value"], stats["degrades"], stats["improves"]
        result.adapter_dir, result.epochs = trained.adapter_dir, trained.metrics_per_epoch
        result.train_tokens, result.train_seconds = trained.train_tokens, trained.seconds
    result.filter_report = report.to_dict()["steps"]
    result.seconds = time.perf_counter() - start
    (trial_dir / "trial.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def format_result(r: TrialResult) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    head = f"teacher {r.teacher}: "
    if r.status == "no_data":
        return head + "no training example survived the filters; nothing trained (status no_data)"
    lo, hi = r.dev_delta_ci95
    verdict = "DEGRADES the student" if r.degrades else "improves the student" if r.improves else "no clear change"
    return (f"{head}dev accuracy {pct(r.baseline_dev_accuracy)} -> {pct(r.dev_accuracy)}: delta "
            f"{100 * r.dev_delta:+.1f} points [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}], McNemar p={r.p_value:.3g}: "
            f"{verdict}. Cost: {r.n_train_examples} examples, {r.train_tokens} train tokens, "
            f"{r.train_seconds:.0f}s training, {r.seconds:.0f}s in all.")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cotgap_ray.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="experiment YAML (default: the embedded default)")
    parser.add_argument("--out", help="run directory (default: <out_dir>/<name>)")
    parser.add_argument("--json", action="store_true", help="print the trial result as JSON")
    parser.add_argument("overrides", nargs="*", help="teacher=NAME (required) and config overrides key=value")
    from cotgap_ray.config import add_help_config

    add_help_config(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    teacher = [o.partition("=")[2] for o in args.overrides if o.startswith("teacher=")]
    overrides = [o for o in args.overrides if not o.startswith("teacher=")]
    cfg = load_config(args.config, overrides)
    if len(teacher) != 1:
        raise ConfigError(f"name one teacher: teacher=NAME with NAME one of {', '.join(cfg.teachers)}")
    spec = pick_teacher(cfg, teacher[0])
    from cotgap_ray.preflight import preflight

    preflight(cfg, out=args.out, out_is_run_dir=True, work=("generation", "finetune"))
    run_dir = Path(args.out) if args.out else Path(cfg.out_dir) / cfg.name
    result = run_trial(cfg, spec, run_dir)
    print(json.dumps(asdict(result), indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
