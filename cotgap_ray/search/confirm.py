"""The final confirmation: each teacher's best dev configuration, re-trained with `confirm.seeds` LoRA seeds and
scored on the TEST split, which no trial saw. Writes run_dir/final/<teacher>.json (records.FinalRecord) per teacher
with data, keeping every test problem's baseline and per-seed correctness so deltas can be compared problem by
problem later (python -m cotgap_ray.validate).

    best dev trial of qwen (dev delta +5.0) -> seeds 0, 1 -> test 14.0%, 16.0% vs baseline 12.0%
    -> delta +3.0 points [95% CI -1.5, +7.5], p = 0.21 (stats.compare_seeds): not "improves", not "degrades"

Each seed is one run of the trial runner (training/trial_runner.py) scored on test. Seed `lora.seed` is the search
trial's own configuration: its adapter is reused when its checkpoint is readable here; the other seeds are trained
now. A finished teacher is not redone on --resume.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from cotgap_ray.records import FinalRecord, SeedRecord, TeacherRef, TrialRecord, record_from_dict, write_json


def best_trial(records: dict[str, TrialRecord], teacher: str) -> TrialRecord | None:
    """The teacher's trial with the highest dev delta (ties: fewer training tokens, then the first trial directory by
    name: `records` is in that order, load_records, and max keeps the first) among those that trained and were scored:
    finished ones and ones ASHA stopped early. A stopped trial stands for what dev measured: its planned schedule,
    stopped after the epochs it reached (so a teacher whose trials were all stopped is still confirmed)."""
    done = [r for r in records.values()
            if r.teacher == teacher and r.status in ("ok", "stopped") and r.dev_delta is not None and r.epochs]
    if not done:
        return None
    return max(done, key=lambda r: (r.dev_delta, -r.train_tokens))


def confirm_all(run_dir: Path, cfg, records: dict[str, TrialRecord], tables: dict, problems: dict,
                baseline_test: dict, teachers: list[TeacherRef], engines: list[str],
                student_fingerprint: str | None = None, at_once: int = 1) -> dict[str, FinalRecord]:
    """Stage 6 for every teacher; returns {teacher name: final record}. `at_once`: fine-tunes of the whole run
    that may train at the same time (1; a pairs run's students side by side: each may confirm at once)."""
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
        final = confirm_teacher(run_dir, cfg, ref, best, tables, problems, baseline_test, engines,
                                student_fingerprint, at_once=at_once)
        write_json(path, final)  # atomic: --resume must never read half a confirmation
        finals[ref.name] = final
    return finals


def seed_run(cfg, student_fingerprint: str | None, **kwargs):
    """One confirmation seed through the trial runner, as a Ray task on a fine-tune node (resources.trial_request):
    it resolves the student there, like a search trial, never in the driver."""
    from cotgap_ray.models.remote import local_model, models_dir_setting
    from cotgap_ray.training.trial_runner import train_and_score

    student = local_model(cfg.student, student_fingerprint, models_dir_setting(cfg))
    return train_and_score(cfg, student, **kwargs)


def run_seed(cfg, student_fingerprint: str | None, **kwargs):
    """seed_run as a Ray task on a fine-tune node; a seed lost with its node (a system failure, not an exception it
    raised) runs again elsewhere (search.max_failures)."""
    import ray

    from cotgap_ray.search.resources import trial_request

    request = trial_request(cfg)
    task = ray.remote(seed_run).options(num_cpus=request.pop("CPU"), resources=request or None,
                                        max_retries=cfg.search.max_failures, name="cotgap-confirm-seed")
    return ray.get(task.remote(cfg, student_fingerprint, **kwargs))


def confirm_teacher(run_dir: Path, cfg, ref: TeacherRef, best: TrialRecord, tables: dict, problems: dict,
                    baseline_test: dict, engines: list[str], student_fingerprint: str | None = None,
                    at_once: int = 1) -> FinalRecord:
    """One teacher's confirmation: its best trial's point through the trial runner once per seed, scored on test by
    one engine of the pool (routed by the teacher's name: every seed pairs with that engine's baseline)."""
    from cotgap_ray.cluster import join_storage, storage_root
    from cotgap_ray.evaluation.scorers import EvaluatorScorer
    from cotgap_ray.search.space import filter_chain, lora_settings
    from cotgap_ray.stats import compare_seeds

    point = best.params
    storage = join_storage(storage_root(cfg.train.storage_path, run_dir), "train")
    scorer = EvaluatorScorer("test", "confirm", list(engines), route=ref.name)
    seeds, afters, before = [], [], None
    for i in range(cfg.confirm.seeds):
        seed = cfg.lora.seed + i
        # Seed lora.seed is the search trial's own configuration: its adapter, when still readable here, is scored
        # as it is; the other seeds are trained now.
        reuse = best.adapter_dir if i == 0 and best.adapter_dir and Path(best.adapter_dir).is_dir() else None
        outcome = run_seed(
            cfg, student_fingerprint, teacher=ref.name, tables=tables, chain=filter_chain(point, cfg.search),
            settings=lora_settings(point, replace(cfg.lora, seed=seed)), scorer=scorer, baseline=baseline_test,
            problems=problems, storage_path=storage, name=f"final-{best.trial_id}-seed{seed}",
            tag=f"final:{ref.name}:seed{seed}",
            # A trial ASHA stopped stands for its schedule cut at the epochs it reached: re-train exactly that.
            stop_after=len(best.epochs) if best.status == "stopped" else None, adapter=reuse, at_once=at_once)
        if outcome.status == "no_data":  # the search trained on these very rationales: something changed under it
            raise RuntimeError(f"confirm: {ref.name}'s best trial {best.trial_id} no longer has training data: "
                               f"{outcome.error}")
        how = "search trial's adapter" if reuse else "trained now"
        train_seconds = outcome.trained.seconds if outcome.trained else 0.0
        before = outcome.score.before
        afters.append(outcome.score.after)
        seeds.append(SeedRecord(seed=seed, test_accuracy=outcome.score.accuracy, train_seconds=train_seconds,
                                adapter_dir=outcome.adapter_dir, adapter_from=how))
        print(f"confirm: {ref.name} seed {seed} ({how}): test {100 * outcome.score.accuracy:.1f}%")
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
