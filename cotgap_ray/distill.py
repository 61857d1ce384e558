"""One distillation trial: (teacher, filter chain, LoRA settings) -> the student's accuracy change over its baseline.

    cotgap distill --teacher qwen2.5-coder-0.5b-instruct lora.epochs=1      # in runs/default-distill/trials/<id>/

Steps, each reusing the caches (a re-run of a finished trial computes nothing):
    baseline on dev (student, no adapter)  ─► the teacher's rationales on train (Ray Data, cache)
    ─► the trial runner (training/trial_runner.py, the search's too): filter chain ─► LoRA fine-tune on Ray Train
    ─► the adapter on dev with the baseline's prompt and decoding ─► paired delta, exact CI, McNemar p (stats.py)

The result is a records.TrialRecord, written atomically to run_dir/trials/<id>/trial.json. A chain that leaves no
training example ends the trial with status "no_data" (no fake score). The test split is never touched here: trials
select on dev; only the search's final confirmation reads test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from cotgap_ray.config import ConfigError, ExperimentConfig
from cotgap_ray.records import TrialRecord, record_from_dict, record_to_dict, write_json


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


def _with_student_nll(table, student, splits):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotgap_ray.sft import with_student_nll

    tokenizer = AutoTokenizer.from_pretrained(student.path)
    model = AutoModelForCausalLM.from_pretrained(student.path, dtype=torch.float32).eval()
    return with_student_nll(table, model, tokenizer, {p.id: p.question for p in splits.train})


def run_trial(cfg: ExperimentConfig, teacher: str, run_dir: Path) -> TrialRecord:
    """Run (or reload) one trial of `teacher` (a spec from cfg.teachers) in run_dir/trials/<id>: the trial runner
    (training/trial_runner.py) with the configured chain and settings, scored on dev in this process."""
    from cotgap_ray.evaluation.scorers import LocalScorer
    from cotgap_ray.generation.pipeline import generate_teachers
    from cotgap_ray.models import offline_unless_hub, resolve_all
    from cotgap_ray.models.remote import describe_local, models_dir_setting
    from cotgap_ray.tasks import load_splits
    from cotgap_ray.training.examples import check_target_modules, student_skeleton
    from cotgap_ray.training.trial_runner import train_and_score

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
    path = trial_dir / "trial.json"
    if path.exists():
        return record_from_dict(TrialRecord, json.loads(path.read_text()), str(path))

    scorer = LocalScorer(student, splits.dev, cfg, lora_rank=cfg.lora.rank)
    baseline = scorer(None, "baseline")
    # One trial runs here, its student in this process, so its teachers are described here too (not on a node).
    facts = [describe_local(t.spec, models_dir_setting(cfg)) for t in teachers]
    results = generate_teachers(facts, splits, cfg, split="train", task=cfg.task.name)
    # Rationale rows name their teacher by model name (GenerationResult.teacher), which is what filters key on.
    tables = {g.teacher: g.table() for g in results}
    name = results[teacher_specs.index(teacher)].teacher
    if _needs(cfg, "student_nll"):
        tables[name] = _with_student_nll(tables[name], student, splits)
    outcome = train_and_score(cfg, student, name, tables, cfg.filters, cfg.lora, scorer, baseline.correct,
                              {p.id: p.question for p in splits.train}, storage_path=str(trial_dir / "train"),
                              name="lora", tag=trial_dir.name,
                              keep_rationales=trial_dir)  # kept: what this trial trained on
    if outcome.status == "no_data":
        print(f"trial {trial_dir.name}: no training data ({outcome.error})", file=sys.stderr)
    record = outcome.record(trial_id=trial_dir.name, teacher=teacher, filters=cfg.filters, lora=cfg.lora,
                            baseline_dev_accuracy=baseline.accuracy, seconds=time.perf_counter() - start,
                            finished_at=time.time())
    write_json(path, record)  # atomic: a re-run must never read half a trial
    return record


def format_result(r: TrialRecord) -> str:
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from cotgap_ray.cli import parse, verb_parser

    parser = verb_parser("distill", __doc__, out="the trial's run directory: DIR/trials/<id>/ (default: "
                                                 "<out_dir>/<name>-distill, e.g. runs/default-distill: never the "
                                                 "search's run directory)",
                         json_help="print the trial result as JSON on stdout instead of the sentence")
    parser.add_argument("--teacher", action="append", metavar="NAME", default=[],
                        help="the teacher, exactly one: a spec of the config's teachers or its short name")
    return parse(parser, argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from cotgap_ray.cli import load, work_output

    args = _parse(argv)
    cfg = load(args)
    from cotgap_ray.search.pairs import one_student_only

    one_student_only(cfg, "distill")
    if len(args.teacher) != 1:
        raise ConfigError(f"name exactly one teacher: --teacher NAME with NAME one of {', '.join(cfg.teachers)}"
                          + (f" (got {len(args.teacher)})" if args.teacher else ""))
    spec = pick_teacher(cfg, args.teacher[0])
    from cotgap_ray.preflight import preflight

    preflight(cfg, out=args.out, out_is_run_dir=True, work=("generation", "finetune"))
    from cotgap_ray.storage import default_run_dir

    run_dir = Path(args.out) if args.out else default_run_dir(cfg).with_name(f"{cfg.name}-distill")
    with work_output(args.json):
        result = run_trial(cfg, spec, run_dir)
    print(json.dumps(record_to_dict(result), indent=2, default=str) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
