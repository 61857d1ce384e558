"""The final confirmation: each teacher's best dev configuration, re-trained with `confirm.seeds` LoRA seeds and
scored on the TEST split, which no trial saw. Writes run_dir/final/<teacher>.json (one per teacher with data).

    best dev trial of qwen (dev delta +5.0) -> seeds 0, 1 -> test 14.0%, 16.0% vs baseline 12.0%
    -> delta +3.0 points [95% CI -1.5, +7.5], p = 0.21 (stats.compare_seeds): not "improves", not "degrades"

Seed `lora.seed` is the search trial's own configuration: its adapter is reused when it finished every epoch and
its checkpoint is readable here; the other seeds are trained now. A finished teacher is not redone on --resume.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path


def best_trial(records: dict[str, dict], teacher: str) -> dict | None:
    """The teacher's trial with the highest dev delta among those that ran all their epochs (ties: fewer tokens)."""
    done = [r for r in records.values() if r["teacher"] == teacher and r["status"] == "ok" and r["dev_delta"] is
            not None]
    if not done:
        return None
    return max(done, key=lambda r: (r["dev_delta"], -r["train_tokens"]))


def confirm_all(run_dir: Path, cfg, records: dict, tables: dict, problems: dict, baseline_test: dict,
                generations: dict, evaluator) -> dict[str, dict]:
    """Stage 6 for every teacher; returns {teacher name: final record}."""
    finals = {}
    for spec, g in generations.items():
        path = run_dir / "final" / f"{g.teacher}.json"
        if path.exists():
            finals[g.teacher] = json.loads(path.read_text())
            continue
        best = best_trial(records, g.teacher)
        if best is None:
            print(f"confirm: {g.teacher} has no finished trial with training data; nothing to confirm")
            continue
        final = confirm_teacher(run_dir, cfg, spec, g.teacher, best, tables, problems, baseline_test, evaluator)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(final, indent=2))
        finals[g.teacher] = final
    return finals


def confirm_teacher(run_dir: Path, cfg, spec: str, teacher: str, best: dict, tables: dict, problems: dict,
                    baseline_test: dict, evaluator) -> dict:
    import pyarrow.parquet as pq
    import ray

    from cotgap_ray.cluster import join_storage, storage_root
    from cotgap_ray.evaluation.evaluator import adapter_files
    from cotgap_ray.filters import FilterContext, apply_filters
    from cotgap_ray.models import cache_root, resolve_all
    from cotgap_ray.search.space import filter_chain, lora_settings
    from cotgap_ray.stats import compare_seeds
    from cotgap_ray.training.finetune import train_student

    point = best["params"]
    table, _ = apply_filters(tables[teacher], filter_chain(point, cfg.search), FilterContext(teacher_tables=tables))
    (student,) = resolve_all([cfg.student], cfg)
    storage = join_storage(storage_root(cfg.train.storage_path, run_dir), "train")
    ids = sorted(baseline_test)
    seeds, afters = [], []
    with tempfile.TemporaryDirectory(prefix="cotgap-confirm-") as workdir:
        rationales = Path(workdir) / "rationales.parquet"
        pq.write_table(table, rationales)
        for i in range(cfg.confirm.seeds):
            seed = cfg.lora.seed + i
            reuse = best.get("adapter_dir") if i == 0 and best.get("adapter_dir") else None
            if reuse and Path(reuse).is_dir():
                adapter, train_seconds, how = reuse, 0.0, "search trial's adapter"
            else:
                settings = lora_settings(point, replace(cfg.lora, seed=seed))
                trained = train_student(student.path, str(rationales), problems, settings, storage_path=storage,
                                        name=f"final-{best['trial_id']}-seed{seed}",
                                        num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                        cpus_per_worker=cfg.train.cpus_per_worker,
                                        accelerator_type=cfg.train.accelerator_type, resources=cfg.train.resources,
                                        student_spec=cfg.student, models_dir=str(cache_root(cfg) / "models"),
                                        dtype=cfg.train.dtype)
                adapter, train_seconds, how = trained.adapter_dir, trained.seconds, "trained now"
            summary, rows = ray.get(evaluator.evaluate.remote(
                "test", adapter_files(adapter), f"final:{teacher}:seed{seed}", "confirm"))
            correct = dict(zip(rows.column("problem_id").to_pylist(), rows.column("correct").to_pylist()))
            afters.append([correct[i] for i in ids])
            seeds.append({"seed": seed, "test_accuracy": summary["accuracy"], "train_seconds": train_seconds,
                          "adapter_dir": adapter, "adapter_from": how})
            print(f"confirm: {teacher} seed {seed} ({how}): test {100 * summary['accuracy']:.1f}%")
    stats = compare_seeds([baseline_test[i] for i in ids], afters)
    return {"teacher": teacher, "spec": spec, "trial_id": best["trial_id"], "params": point,
            "best_dev_delta": best["dev_delta"], "seeds": seeds, "n": stats["n"],
            "test_accuracy": stats["after_accuracy"], "baseline_test_accuracy": stats["before_accuracy"],
            "delta": stats["delta"], "delta_ci95": stats["ci95"], "p_value": stats["p_value"],
            "discordance": stats["discordance"],
            "degrades": stats["degrades"], "improves": stats["improves"],
            "train_seconds": sum(s["train_seconds"] for s in seeds), "n_train_examples": best["n_train_examples"]}
