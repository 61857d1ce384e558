"""One Tune trial of the search: a sampled point -> the trial runner (training/trial_runner.py: filtered cached
rationales -> LoRA fine-tune on Ray Train -> the adapter scored on dev by the evaluation actor after every epoch,
paired with the baseline) -> per-epoch dev delta reported to Tune (ASHA).

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

from cotgap_ray.config import ExperimentConfig

NO_DATA_DELTA = -1.0  # Tune's objective for a point that yields no training data (see the module docstring)


@dataclass
class TrialContext:
    """Everything a trial needs besides its point; shipped once through the object store (tune.with_parameters)."""

    config: ExperimentConfig
    tables: dict  # teacher name -> rationale table (with student_nll when a chain needs it)
    teacher_names: dict  # teacher spec -> teacher name
    problems: dict  # train problem_id -> question
    baseline_dev: dict  # dev problem_id -> the baseline's correct (bool)
    storage: str  # root of the Ray Train runs (local dir or URI)
    student_spec: str
    student_fingerprint: str | None = None  # what the spec resolved to where the run first resolved it
    engines: list = field(default_factory=list)  # the evaluation pool's actor names (evaluation/pool.py)
    done: dict = field(default_factory=dict)  # point key -> recorded epoch metrics of finished trials (resume)
    at_once: int = 1  # trials that may train at the same time (resources.max_concurrent): threads per worker


def tune_trial(point: dict, context: TrialContext) -> None:
    """The Tune function trainable (see the module docstring): the point's trial through the trial runner, scored on
    dev by the evaluation actor after every epoch."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from cotgap_ray.evaluation.scorers import EvaluatorScorer
    from cotgap_ray.models.remote import local_model, models_dir_setting
    from cotgap_ray.search.space import filter_chain, lora_settings, point_key
    from cotgap_ray.training.trial_runner import train_and_score

    key = point_key(point)
    if key in context.done:  # finished before an interruption: replay, do not retrain
        for metrics in context.done[key]:
            tune.report({**metrics, "replayed": True})
        return
    cfg = context.config
    teacher = context.teacher_names[point["teacher"]]
    # On this trial's node (a fine-tune node: tuning.trial_request): built, converted or downloaded here once.
    student = local_model(context.student_spec, context.student_fingerprint, models_dir_setting(cfg))
    scorer = EvaluatorScorer("dev", engines=context.engines) if context.engines else EvaluatorScorer("dev")
    outcome = train_and_score(cfg, student, teacher, context.tables, filter_chain(point, cfg.search),
                              lora_settings(point, cfg.lora), scorer, context.baseline_dev,
                              context.problems, storage_path=context.storage, name=key, score_every_epoch=True,
                              report_fields={"point_key": key, "teacher": teacher},
                              callbacks=[TuneReportCallback()], at_once=context.at_once)
    if outcome.status == "no_data":
        tune.report(no_data_report(key, teacher, outcome.rationales_kept, outcome.filter_report, outcome.error))


def no_data_report(key: str, teacher: str | None, rationales_kept: int, filter_report: list, error: str | None) -> dict:
    """The one report of a trial whose chain left no training example (and its replay on --resume)."""
    return {"epoch": 0, "dev_delta": NO_DATA_DELTA, "dev_accuracy": None, "point_key": key, "teacher": teacher,
            "status": "no_data", "error": error, "n_train_examples": 0, "rationales_kept": rationales_kept,
            "filter_report": json.dumps(filter_report)}
