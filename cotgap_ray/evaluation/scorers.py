"""How a trial's adapter is scored: a scorer takes an adapter directory and says, problem by problem, whether the
student with it answers correctly on one split. The trial runner (training/trial_runner.py) pairs that with the
baseline and compares.

    EvaluatorScorer("dev")                        the search: the evaluation actor, on Train rank 0 after every epoch
    EvaluatorScorer("test", "confirm", actor)     the confirmation: the same actor, with the test split opened
    LocalScorer(student, splits.dev, cfg, 8)      distill: an engine in this process, cached (scoring.evaluate_cached)

    scorer("runs/x/train/lora/checkpoint_000001", "t3f9c0a12b4")
    -> AdapterScore(split="dev", accuracy=0.25, correct={"p1": True, "p2": False, ...}, seconds=3.1)
    scorer(None, "baseline")   -> the student without an adapter, scored the same way

An EvaluatorScorer pickles (it names the actor, or carries its handle), so a Train worker can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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


class Scorer(Protocol):
    split: str

    def __call__(self, adapter_dir: str | None, tag: str) -> AdapterScore: ...


@dataclass
class EvaluatorScorer:
    """Scores through the long-lived evaluation actor (evaluation/evaluator.py): the adapter's files travel to it, so
    the caller may run on another node. `evaluator`: the actor handle; None looks it up by name where it is called
    (a Train worker). `stage` is what the actor's call log records (search | confirm)."""

    split: str
    stage: str = "search"
    evaluator: object | None = None  # a ray.actor.ActorHandle

    def __call__(self, adapter_dir: str | None, tag: str) -> AdapterScore:
        import ray

        from cotgap_ray.evaluation.evaluator import EVALUATOR_NAME, adapter_files
        from cotgap_ray.evaluation.paired import correct_by_id

        actor = self.evaluator if self.evaluator is not None else ray.get_actor(EVALUATOR_NAME)
        files = adapter_files(adapter_dir) if adapter_dir is not None else None
        summary, rows = ray.get(actor.evaluate.remote(self.split, files, tag, self.stage))
        return AdapterScore(self.split, summary["accuracy"], correct_by_id(rows), summary["seconds"])


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
