"""The final confirmation: each teacher's best dev configuration, re-trained with `confirm.seeds` LoRA seeds and
scored on the TEST split, which no trial saw. Writes run_dir/final/<teacher>.json (records.FinalRecord) per teacher
with data, keeping every test problem's baseline and per-seed correctness so deltas can be compared problem by
problem later (python -m cotgap_ray.validate).

    best dev trial of qwen (dev delta +5.0) -> seeds 0, 1 -> test 14.0%, 16.0% vs baseline 12.0%
    -> delta +3.0 points [95% CI -1.5, +7.5], p = 0.21 (stats.compare_seeds): not "improves", not "degrades"

Seed `lora.seed` is the search trial's own configuration: its adapter is reused when it finished every epoch and
its checkpoint is readable here; the other seeds are trained now. A finished teacher is not redone on --resume.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from cotgap_ray.records import FinalRecord, SeedRecord, TeacherRef, TrialRecord, record_from_dict, write_json


def best_trial(records: dict[str, TrialRecord], teacher: str) -> TrialRecord | None:
    """The teacher's trial with the highest dev delta (ties: fewer tokens) among those that trained and were scored:
    finished ones and ones ASHA stopped early. A stopped trial stands for what dev measured: its planned schedule,
    stopped after the epochs it reached (so a teacher whose trials were all stopped is still confirmed)."""
    done = [r for r in records.values()
            if r.teacher == teacher and r.status in ("ok", "stopped") and r.dev_delta is not None and r.epochs]
    if not done:
        return None
    return max(done, key=lambda r: (r.dev_delta, -r.train_tokens))


def confirm_all(run_dir: Path, cfg, records: dict[str, TrialRecord], tables: dict, problems: dict,
                baseline_test: dict, teachers: list[TeacherRef], evaluator) -> dict[str, FinalRecord]:
    """Stage 6 for every teacher; returns {teacher name: final record}."""
    finals = {}
    for ref in teachers:
        path = run_dir / "final" / f"{ref.name}.json"
        if path.exists():
            finals[ref.name] = record_from_dict(FinalRecord, json.loads(path.read_text()), str(path))
            continue
        best = best_trial(records, ref.name)
        if best is None:
            print(f"confirm: {ref.name} has no finished trial with training data; nothing to confirm")
            continue
        final = confirm_teacher(run_dir, cfg, ref, best, tables, problems, baseline_test, evaluator)
        write_json(path, final)  # atomic: --resume must never read half a confirmation
        finals[ref.name] = final
    return finals


def confirm_teacher(run_dir: Path, cfg, ref: TeacherRef, best: TrialRecord, tables: dict, problems: dict,
                    baseline_test: dict, evaluator) -> FinalRecord:
    import ray

    from cotgap_ray.cluster import join_storage, storage_root
    from cotgap_ray.evaluation.evaluator import adapter_files
    from cotgap_ray.evaluation.paired import correct_by_id, paired
    from cotgap_ray.filters import FilterContext, apply_filters
    from cotgap_ray.models import resolve_all
    from cotgap_ray.search.space import filter_chain, lora_settings, training_chain
    from cotgap_ray.stats import compare_seeds
    from cotgap_ray.training.step import fine_tune, rationale_file

    point = best.params
    chain = training_chain(filter_chain(point, cfg.search), cfg.generation.max_tokens)
    table, _ = apply_filters(tables[ref.name], chain, FilterContext(teacher_tables=tables))
    (student,) = resolve_all([cfg.student], cfg)
    storage = join_storage(storage_root(cfg.train.storage_path, run_dir), "train")
    seeds, afters, before = [], [], None
    with rationale_file(table) as rationales:
        for i in range(cfg.confirm.seeds):
            seed = cfg.lora.seed + i
            reuse = best.adapter_dir if i == 0 else None
            if reuse and Path(reuse).is_dir():
                adapter, train_seconds, how = reuse, 0.0, "search trial's adapter"
            else:
                # A trial ASHA stopped stands for its schedule cut at the epochs it reached: re-train exactly that.
                trained = fine_tune(cfg, student, rationales, problems,
                                    lora_settings(point, replace(cfg.lora, seed=seed)), storage_path=storage,
                                    name=f"final-{best.trial_id}-seed{seed}",
                                    stop_after=len(best.epochs) if best.status == "stopped" else None)
                adapter, train_seconds, how = trained.adapter_dir, trained.seconds, "trained now"
            summary, rows = ray.get(evaluator.evaluate.remote(
                "test", adapter_files(adapter), f"final:{ref.name}:seed{seed}", "confirm"))
            before, after = paired(baseline_test, correct_by_id(rows), f"confirmation of {ref.name}, seed {seed}")
            afters.append(after)
            seeds.append(SeedRecord(seed=seed, test_accuracy=summary["accuracy"], train_seconds=train_seconds,
                                    adapter_dir=adapter, adapter_from=how))
            print(f"confirm: {ref.name} seed {seed} ({how}): test {100 * summary['accuracy']:.1f}%")
    stats = compare_seeds(before, afters)
    return FinalRecord(teacher=ref.name, spec=ref.spec, trial_id=best.trial_id, params=point,
                       best_dev_delta=best.dev_delta, seeds=seeds, n=stats["n"],
                       test_accuracy=stats["after_accuracy"], baseline_test_accuracy=stats["before_accuracy"],
                       delta=stats["delta"], delta_ci95=stats["ci95"], p_value=stats["p_value"],
                       discordance=stats["discordance"], degrades=stats["degrades"], improves=stats["improves"],
                       test=stats["test"], interval=stats["interval"], training_variance=stats["training_variance"],
                       train_seconds=sum(s.train_seconds for s in seeds), n_train_examples=best.n_train_examples,
                       # paired() lists problems in sorted-id order: the ids, in that order, name each position
                       test_problem_ids=sorted(baseline_test), baseline_test_correct=list(before),
                       test_correct_by_seed=[list(a) for a in afters])
