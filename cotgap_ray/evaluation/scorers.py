"""How a trial's adapter is scored: a scorer takes an adapter directory and says, problem by problem, whether the
student with it answers correctly on one split. The trial runner (training/trial_runner.py) pairs that with the
baseline and compares.

    EvaluatorScorer("dev", engines=names)         the search: an evaluation engine of the pool, on Train rank 0 after
                                                  every epoch (routed by a hash of the trial's tag)
    EvaluatorScorer("test", "confirm", names, route="qwen")  the confirmation: one engine per teacher, test opened
    LocalScorer(student, splits.dev, cfg, 8)      distill: an engine in this process, cached (scoring.evaluate_cached)

    scorer("runs/x/train/lora/checkpoint_000001", "t3f9c0a12b4")
    -> AdapterScore(split="dev", accuracy=0.25, correct={"p1": True, "p2": False, ...}, seconds=3.1,
                    baseline={"p1": False, ...})    # the scoring engine's own baseline (None: the caller's applies)
    scorer(None, "baseline")   -> the student without an adapter, scored the same way

An EvaluatorScorer pickles (it names the engines), so a Train worker on any node can run it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cotgap_ray.evaluation.evaluator import evaluator_name

if TYPE_CHECKING:
    from cotgap_ray.config import ExperimentConfig
    from cotgap_ray.models import ResolvedModel
    from cotgap_ray.records import Problem


@dataclass
class AdapterScore:
    """One (student + adapter) scored on one split: accuracy, every problem's correctness, the evaluation's seconds."""

    split: str
    accuracy: float
    correct: dict[str, bool]  # problem_id -> correct
    seconds: float
    baseline: dict[str, bool] | None = None  # the scoring engine's no-adapter rows: what this score pairs with


class Scorer(Protocol):
    split: str

    def __call__(self, adapter_dir: str | None, tag: str) -> AdapterScore: ...


@dataclass
class EvaluatorScorer:
    """Scores through an engine of the evaluation pool (evaluation/pool.py): the adapter's files travel to it, so the
    caller may run on another node, and the score carries that engine's own baseline. `engines`: the pool's actor
    names, looked up where the scorer is called (a Train worker); the engine is picked by a stable hash of `route`
    (default: the tag), so one teacher's confirmation seeds share one engine and its baseline. `stage` is what the
    engine's call log records (search | confirm)."""

    split: str
    stage: str = "search"
    engines: list = field(default_factory=lambda: [evaluator_name(0)])
    route: str | None = None

    def engine_for(self, tag: str) -> str:
        return self.engines[zlib.crc32((self.route or tag).encode()) % len(self.engines)]

    def __call__(self, adapter_dir: str | None, tag: str) -> AdapterScore:
        import ray

        from cotgap_ray.evaluation.evaluator import adapter_files
        from cotgap_ray.evaluation.paired import correct_by_id

        actor = ray.get_actor(self.engine_for(tag))
        files = adapter_files(adapter_dir) if adapter_dir is not None else None
        summary, rows, baseline = ray.get(actor.score.remote(self.split, files, tag, self.stage))
        return AdapterScore(self.split, summary["accuracy"], correct_by_id(rows), summary["seconds"], baseline)


@dataclass
class LocalScorer:
    """Scores in this process with the cached evaluation (scoring.evaluate_cached: a finished adapter is not scored
    twice). `lora_rank` opens a LoRA-capable engine for the baseline too, so both are measured alike."""

    student: ResolvedModel
    problems: list[Problem]  # the split's
    cfg: ExperimentConfig
    lora_rank: int
    split: str = "dev"

    def __call__(self, adapter_dir: str | None, tag: str) -> AdapterScore:
        from cotgap_ray.evaluation.paired import rows_correct
        from cotgap_ray.evaluation.scoring import evaluate_cached

        result = evaluate_cached(self.student, {self.split: self.problems}, self.cfg, adapter=adapter_dir,
                                 lora_rank=self.lora_rank)[self.split]
        return AdapterScore(self.split, result.accuracy, rows_correct(result.rows_path), result.seconds)
