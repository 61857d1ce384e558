"""The one distillation trial every caller runs: a teacher's rationales through a filter chain into a LoRA fine-tune
of the student, the adapter scored, paired with the baseline problem by problem, and compared.

    outcome = train_and_score(cfg, student, "qwen", tables, [{"name": "correct_only"}], settings, scorer,
                              baseline_dev, problems, storage_path="runs/x/train", name="t3f9c0a12b4")
    outcome.status -> "ok";  outcome.score.stats["delta"] -> 0.04;  outcome.record(trial_id=...) -> TrialRecord

    filter chain + the cut at the generation limit (space.training_chain) ─► rationale file (training/step.py)
    ─► SFT examples check (its drops join the filter report) ─► fine_tune (training/step.py)
    ─► score (the caller's scorer: evaluation/scorers.py) ─► paired with the baseline ─► stats.compare

The callers differ only around it: distill.py scores once on dev in process and caches the finished trial;
search/trial.py scores on dev after every epoch (on Train rank 0, so ASHA can stop the trial) and replays finished
points; search/confirm.py scores on test once per seed and lets seed 0 reuse the search trial's adapter (`adapter`).
A chain that leaves no SFT example returns status "no_data" with its filter report, never a fake score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cotgap_ray.config import ExperimentConfig, LoraSettings
from cotgap_ray.records import EpochRecord, TrialRecord

if TYPE_CHECKING:  # torch and the evaluation code load when a trial runs, not when a CLI imports this
    from cotgap_ray.evaluation.scorers import Scorer
    from cotgap_ray.training.loop import TrainResult


@dataclass
class Score:
    """An adapter against the baseline on one split: `before` / `after` in evaluation.paired's order (sorted problem
    ids), `stats` is stats.compare(before, after) (delta, ci95, p_value, discordance, degrades, improves, ...)."""

    split: str
    accuracy: float
    before: list[bool]
    after: list[bool]
    stats: dict
    seconds: float

    def epoch_metrics(self) -> dict:
        """The scoring keys of an epoch report (records.EpochRecord's): a trial is scored on dev."""
        s = self.stats
        return {"dev_accuracy": self.accuracy, "dev_delta": s["delta"], "dev_delta_lo": s["ci95"][0],
                "dev_delta_hi": s["ci95"][1], "p_value": s["p_value"], "dev_discordance": s["discordance"],
                "eval_seconds": self.seconds}


@dataclass
class TrialOutcome:
    """What one trial produced. `status`: "ok" | "no_data" (then `error` says why and nothing was trained or scored).
    `trained` is None for a reused adapter; `score` is None when the adapter was scored after every epoch instead
    (the epochs in trained.metrics_per_epoch carry those scores)."""

    status: str
    rationales_kept: int  # rows the filter chain kept
    filter_report: list[dict]  # FilterReport steps, "sft_examples" last once the examples were checked
    n_train_examples: int = 0
    error: str | None = None
    trained: TrainResult | None = None
    adapter_dir: str | None = None
    score: Score | None = None

    def record(self, **identity) -> TrialRecord:
        """This outcome as a records.TrialRecord (`identity`: trial_id, teacher, filters, lora, seconds, ...). An
        adapter scored once after training gives the last epoch its dev numbers."""
        metrics = list(self.trained.metrics_per_epoch) if self.trained else []
        if self.score is not None and metrics:
            metrics[-1] = {**metrics[-1], **self.score.epoch_metrics()}
        epochs = [EpochRecord.from_metrics(m) for m in metrics]
        record = TrialRecord(status=self.status, error=self.error, n_train_examples=self.n_train_examples,
                             rationales_kept=self.rationales_kept, filter_report=self.filter_report, epochs=epochs,
                             adapter_dir=self.adapter_dir, train_tokens=sum(e.tokens or 0 for e in epochs),
                             train_seconds=sum(e.seconds or 0 for e in epochs), **identity)
        if self.score is not None:
            s = self.score.stats
            record = replace(record, dev_accuracy=self.score.accuracy, dev_delta=s["delta"],
                             dev_delta_ci95=list(s["ci95"]), p_value=s["p_value"], dev_discordance=s["discordance"],
                             degrades=s["degrades"], improves=s["improves"])
        return record


def score_adapter(scorer: Scorer, adapter_dir: str, baseline: dict[str, bool], tag: str) -> Score:
    """Score `adapter_dir`, pair it with the baseline's correctness on the same split, compare (stats.compare)."""
    from cotgap_ray.evaluation.paired import paired
    from cotgap_ray.stats import compare

    scored = scorer(adapter_dir, tag)
    # An evaluation engine pairs the adapter with its own baseline rows (evaluation/evaluator.py): one engine's
    # numerics on both sides of every delta. A scorer without one (distill's, in process) uses the caller's.
    own = scored.baseline if scored.baseline is not None else baseline
    before, after = paired(own, scored.correct, f"trial {tag} on {scored.split}")
    return Score(scored.split, scored.accuracy, before, after, compare(before, after), scored.seconds)


def score_epoch(adapter_dir: str, *, scorer: Scorer, baseline: dict[str, bool], tag: str, fields: dict) -> dict:
    """The eval_fn of a trial scored after every epoch (run on Train rank 0): the epoch report's scores and verdict,
    the trial's `fields`, and the worker group's placement group, so the driver can free it if Tune stops this trial
    mid-shutdown (search.tuning.release_placement_group)."""
    import ray

    score = score_adapter(scorer, adapter_dir, baseline, tag)
    group = ray.util.get_current_placement_group()
    return {**score.epoch_metrics(), "baseline_dev_accuracy": score.stats["before_accuracy"],
            "degrades": score.stats["degrades"], "improves": score.stats["improves"],
            "placement_group": group.id.hex() if group else None, **fields}


def train_and_score(cfg: ExperimentConfig, student, teacher: str, tables: dict, chain: list[dict],
                    settings: LoraSettings, scorer: Scorer, baseline: dict[str, bool], problems: dict[str, str], *,
                    storage_path: str, name: str, tag: str | None = None, keep_rationales: Path | None = None,
                    score_every_epoch: bool = False, report_fields: dict | None = None, callbacks: list | None = None,
                    stop_after: int | None = None, adapter: str | None = None, at_once: int = 1) -> TrialOutcome:
    """One trial of `teacher`'s rationales (tables[teacher]; `tables` holds every candidate teacher's, the context of
    cross_teacher) through `chain` (the configured steps; the generation-limit cut is added here) into a fine-tune of
    `student` (a models.ResolvedModel) with `settings`, scored by `scorer` against `baseline` (problem_id -> correct
    on the scorer's split). `problems`: train problem_id -> question.

    The Ray Train run is storage_path/name; `tag` names the trial to the scorer (default `name`). `keep_rationales`: a
    directory that keeps the rationale file (what the trial trained on; default a temporary one).
    `score_every_epoch`: score on Train rank 0 after every epoch; each epoch report (forwarded by `callbacks`, e.g.
    Tune's) then carries the scores, the trial's facts (status, rationales_kept, n_train_examples, filter_report as
    JSON text: Tune results stay flat) and `report_fields`. Otherwise the finished adapter is scored once.
    `stop_after`: end after that many epochs of the planned schedule (a trial ASHA stopped). `adapter`: an adapter
    already trained on these rationales and settings: scored, not trained again. `at_once`: fine-tunes of this run
    that may train at the same time (step.fine_tune: how many threads each gets)."""
    from cotgap_ray.filters import FilterContext, apply_filters
    from cotgap_ray.search.space import training_chain
    from cotgap_ray.training.examples import NoTrainingData, check_examples
    from cotgap_ray.training.step import fine_tune, rationale_file

    if adapter is not None and score_every_epoch:
        raise ValueError("a reused adapter is scored once: score_every_epoch needs a fine-tune")
    tag = tag or name
    table, report = apply_filters(tables[teacher], training_chain(chain, cfg.generation.max_tokens),
                                  FilterContext(teacher_tables=tables))
    outcome = TrialOutcome(status="ok", rationales_kept=table.num_rows, filter_report=report.steps)
    try:
        with rationale_file(table, keep_rationales) as rationales:
            # Rows the SFT step cannot use (a prompt that does not tokenize as a prefix, a rationale truncated at
            # lora.max_length) are dropped and counted in the filter report, never a crashed trial.
            drops = check_examples(student.path, rationales, problems, settings.max_length)
            report.add_sft_drops(drops)
            outcome.n_train_examples = drops.kept
            if adapter is None:
                eval_fn = None
                if score_every_epoch:
                    fields = {**(report_fields or {}), "status": "ok", "rationales_kept": outcome.rationales_kept,
                              "n_train_examples": drops.kept, "filter_report": json.dumps(report.steps)}
                    eval_fn = partial(score_epoch, scorer=scorer, baseline=baseline, tag=tag, fields=fields)
                outcome.trained = fine_tune(cfg, student, rationales, problems, settings, storage_path=storage_path,
                                            name=name, eval_fn=eval_fn, callbacks=callbacks, stop_after=stop_after,
                                            at_once=at_once)
    except NoTrainingData as e:
        if e.drops is not None and outcome.n_train_examples == 0:  # the check itself found nothing usable
            report.add_sft_drops(e.drops)
        return replace(outcome, status="no_data", error=str(e), n_train_examples=0, trained=None)
    outcome.adapter_dir = adapter if adapter is not None else outcome.trained.adapter_dir
    if not score_every_epoch:
        outcome.score = score_adapter(scorer, outcome.adapter_dir, baseline, tag)
    return outcome
