"""One Tune trial of the search: a sampled point -> filtered cached rationales -> LoRA fine-tune (Ray Train) ->
the adapter scored on dev by the evaluation actor after every epoch -> per-epoch dev delta reported to Tune (ASHA).

    tune_trial({"teacher": "packaged:qwen...", "filters": "correct", "lora.rank": 8, ...}, context)
    epoch reports -> {"epoch": 1, "dev_accuracy": 0.12, "dev_delta": 0.03, "dev_delta_lo": -0.01, ..., "status": "ok"}

Trials never generate: `TrialContext.tables` holds every teacher's cached rationales (through the object store, so
a trial on another node has them too). A chain that keeps nothing ends the trial with one report, status "no_data",
and dev_delta = -1 (the worst possible, so the sampler steers away; the report shows "no data", not a score).
A point already finished in an earlier (interrupted) run re-reports its recorded epochs instead of training again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial

NO_DATA_DELTA = -1.0  # Tune's objective for a point that yields no training data (see the module docstring)


@dataclass
class TrialContext:
    """Everything a trial needs besides its point; shipped once through the object store (tune.with_parameters)."""

    config: dict  # ExperimentConfig.to_dict()
    tables: dict  # teacher name -> rationale table (with student_nll when a chain needs it)
    teacher_names: dict  # teacher spec -> teacher name
    problems: dict  # train problem_id -> question
    baseline_dev: dict  # dev problem_id -> the baseline's correct (bool)
    storage: str  # root of the Ray Train runs (local dir or URI)
    student_spec: str
    done: dict = field(default_factory=dict)  # point key -> recorded epoch metrics of finished trials (resume)


def score_on_dev(adapter_dir: str, *, baseline_dev: dict, tag: str, static: dict) -> dict:
    """The eval_fn run on Train rank 0 after each epoch: the adapter on dev, paired against the baseline."""
    import ray

    from cotgap_ray.evaluation.evaluator import EVALUATOR_NAME, adapter_files
    from cotgap_ray.evaluation.paired import correct_by_id, paired
    from cotgap_ray.stats import compare

    evaluator = ray.get_actor(EVALUATOR_NAME)
    summary, rows = ray.get(evaluator.evaluate.remote("dev", adapter_files(adapter_dir), tag))
    stats = compare(*paired(baseline_dev, correct_by_id(rows), f"trial {tag} on dev"))
    # The worker group's placement group, so the driver can free it if Tune stops this trial mid-shutdown (see
    # tuning.release_placement_group).
    group = ray.util.get_current_placement_group()
    return {"dev_accuracy": summary["accuracy"], "dev_delta": stats["delta"], "dev_delta_lo": stats["ci95"][0],
            "dev_delta_hi": stats["ci95"][1], "p_value": stats["p_value"], "dev_discordance": stats["discordance"],
            "eval_seconds": summary["seconds"],
            "placement_group": group.id.hex() if group else None, **static}


def tune_trial(point: dict, context: TrialContext) -> None:
    """The Tune function trainable (see the module docstring)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from cotgap_ray.config import ExperimentConfig, build
    from cotgap_ray.filters import FilterContext, apply_filters
    from cotgap_ray.models import resolve_all
    from cotgap_ray.search.space import filter_chain, lora_settings, point_key, training_chain
    from cotgap_ray.training.examples import NoTrainingData, check_examples
    from cotgap_ray.training.step import fine_tune, rationale_file

    key = point_key(point)
    if key in context.done:  # finished before an interruption: replay, do not retrain
        for metrics in context.done[key]:
            tune.report({**metrics, "replayed": True})
        return
    cfg = build(ExperimentConfig, context.config, where="run config")
    teacher = context.teacher_names[point["teacher"]]
    chain = training_chain(filter_chain(point, cfg.search), cfg.generation.max_tokens)
    table, report = apply_filters(context.tables[teacher], chain, FilterContext(teacher_tables=context.tables))
    static = {"point_key": key, "teacher": teacher, "status": "ok", "rationales_kept": table.num_rows}
    settings = lora_settings(point, cfg.lora)
    (student,) = resolve_all([context.student_spec], cfg)  # on this node: packaged models convert here if needed
    with rationale_file(table) as rationales:
        try:
            # Rows the SFT step cannot use (a prompt that does not tokenize as a prefix, a rationale truncated at
            # lora.max_length) are dropped and counted in the filter report, never a crashed trial.
            drops = check_examples(student.path, rationales, context.problems, settings.max_length)
            report.add_sft_drops(drops)
            static.update(n_train_examples=drops.kept, filter_report=json.dumps(report.to_dict()["steps"]))
            fine_tune(cfg, student, rationales, context.problems, settings, storage_path=context.storage, name=key,
                      eval_fn=partial(score_on_dev, baseline_dev=context.baseline_dev, tag=key, static=static),
                      callbacks=[TuneReportCallback()])
        except NoTrainingData as e:
            if e.drops is not None and "filter_report" not in static:
                report.add_sft_drops(e.drops)
            static["filter_report"] = json.dumps(report.to_dict()["steps"])
            tune.report({"epoch": 0, "dev_delta": NO_DATA_DELTA, "dev_accuracy": None, **static,
                         "status": "no_data", "error": str(e), "n_train_examples": 0})
