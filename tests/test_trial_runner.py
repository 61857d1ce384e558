"""The one trial runner (training/trial_runner.py) and its three callers, without Ray: the real filter chain,
rationale file and SFT examples check (the tiny model's tokenizer), fakes only for the fine-tune (Ray Train) and
the scorers (engines). Distill, the search's trial and the confirmation all go through the runner and score through
their own scorer; a chain that leaves nothing is "no_data" with its report; distill's trial.json is a
records.TrialRecord written atomically; and no module but the runner calls the steps of the sequence."""

from __future__ import annotations

import ast
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from cotgap_ray.config import LoraSettings, load_config
from cotgap_ray.records import RATIONALE_SCHEMA, EpochRecord, TrialRecord, record_from_dict
from cotgap_ray.training.loop import TrainResult

PROBLEMS = {f"p{i}": f"What is {i} + {i}?" for i in range(8)}
DEV = [f"d{i}" for i in range(20)]
BASELINE = {d: i == 0 for i, d in enumerate(DEV)}  # the student alone solves d0 only
PACKAGE = Path(__file__).resolve().parent.parent / "cotgap_ray"


def rationales(teacher: str, correct: bool = True) -> pa.Table:
    return pa.Table.from_pylist(
        [{"problem_id": pid, "teacher": teacher, "sample_idx": 0, "text": f" The answer is {2 * i}.", "pred": None,
          "correct": correct, "n_tokens": 6} for i, pid in enumerate(PROBLEMS)], schema=RATIONALE_SCHEMA)


@dataclass
class FakeScorer:
    """An adapter solves the first `right` dev problems; no adapter (the baseline) solves d0 only."""

    split: str = "dev"
    right: int = 11
    calls: list = field(default_factory=list)

    def __call__(self, adapter_dir, tag):
        from cotgap_ray.evaluation.scorers import AdapterScore

        self.calls.append((adapter_dir, tag))
        correct = {d: (i < self.right if adapter_dir else i == 0) for i, d in enumerate(DEV)}
        return AdapterScore(self.split, sum(correct.values()) / len(DEV), correct, 1.5)


@pytest.fixture
def fine_tunes(monkeypatch, tmp_path):
    """Replaces Ray Train: records every fine-tune; an eval_fn is pickled (it ships to the Train worker) and run
    after every epoch, as rank 0 would."""
    calls = []

    def fake(cfg, student, rationales_path, problems, settings, *, storage_path, name, eval_fn=None, callbacks=None,
             stop_after=None, at_once=1):
        assert Path(rationales_path).is_file() and isinstance(settings, LoraSettings)
        calls.append(SimpleNamespace(settings=settings, name=name, stop_after=stop_after, eval_fn=eval_fn,
                                     storage_path=storage_path, callbacks=callbacks, at_once=at_once))
        adapter = tmp_path / "adapters" / name
        adapter.mkdir(parents=True, exist_ok=True)
        history = []
        for epoch in range(1, min(settings.epochs, stop_after or settings.epochs) + 1):
            metrics = {"epoch": epoch, "train_loss": 1.0 / epoch, "tokens": 100, "label_tokens": 40, "batches": 2,
                       "seconds": 2.0, "tokens_per_s": 50.0, "lr": 1e-3, "threads": 1}
            if eval_fn is not None:
                metrics.update(pickle.loads(pickle.dumps(eval_fn))(str(adapter)))
            history.append(metrics)
        return TrainResult(str(adapter), history, train_tokens=100 * len(history), seconds=30.0, n_examples=8)

    monkeypatch.setattr("cotgap_ray.training.step.fine_tune", fake)
    monkeypatch.setattr("ray.util.get_current_placement_group", lambda: None)  # would start Ray outside a worker
    return calls


@pytest.fixture
def cfg(tiny_llama_dir, tmp_path):
    return load_config(None, [
        f"student={tiny_llama_dir}", f"teachers=[{tiny_llama_dir}]", f"cache_dir={tmp_path / 'cache'}",
        "generation.max_tokens=64", "lora.max_length=256", "lora.epochs=2", "confirm.seeds=2",
        "search.filter_chains={keep: [{name: max_per_question, m: 1}], right: [{name: correct_only}]}"])


def _run(cfg, student, table, scorer, **kw):
    from cotgap_ray.training.trial_runner import train_and_score

    return train_and_score(cfg, student, "tiny", {"tiny": table}, [{"name": "correct_only"}], cfg.lora, scorer,
                           BASELINE, PROBLEMS, storage_path="store", name="t1", **kw)


# --------------------------------------------------------------------------------------------------- the runner


def test_the_runner_filters_trains_scores_and_compares(cfg, tiny_llama_dir, fine_tunes):
    scorer = FakeScorer()
    outcome = _run(cfg, SimpleNamespace(path=tiny_llama_dir), rationales("tiny"), scorer)
    assert outcome.status == "ok" and outcome.rationales_kept == 8 and outcome.n_train_examples == 8
    assert [s["step"] for s in outcome.filter_report] == ["correct_only", "length", "sft_examples"]
    assert outcome.filter_report[1]["params"] == {"max_tokens": 63}  # the generation-limit cut, added once, here
    (call,) = fine_tunes
    assert call.settings is cfg.lora and call.eval_fn is None
    assert scorer.calls == [(outcome.adapter_dir, "t1")]  # the finished adapter, scored once
    assert outcome.score.stats["delta"] == pytest.approx(0.5)  # 11 right of 20 against the baseline's 1
    record = outcome.record(trial_id="t1", teacher="tiny")
    assert record.dev_delta == pytest.approx(0.5) and record.dev_accuracy == pytest.approx(0.55)
    assert record.improves is True and record.degrades is False and record.p_value < 0.05
    assert [e.epoch for e in record.epochs] == [1, 2] and record.train_tokens == 200
    assert record.epochs[-1].dev_delta == pytest.approx(0.5) and record.epochs[0].dev_delta is None


def test_a_chain_that_keeps_nothing_is_no_data_with_its_report(cfg, tiny_llama_dir, fine_tunes):
    scorer = FakeScorer()
    outcome = _run(cfg, SimpleNamespace(path=tiny_llama_dir), rationales("tiny", correct=False), scorer)
    assert outcome.status == "no_data" and "the filters kept no rationale" in outcome.error
    assert outcome.filter_report[0]["rows_kept"] == 0 and outcome.filter_report[-1]["step"] == "sft_examples"
    assert not fine_tunes and not scorer.calls  # nothing trained, nothing scored: no fake score
    record = outcome.record(trial_id="t1")
    assert record.status == "no_data" and record.dev_delta is None and record.adapter_dir is None


def test_rows_the_sft_builder_drops_are_no_data_too(cfg, tiny_llama_dir, fine_tunes):
    from dataclasses import replace

    short = replace(cfg, lora=replace(cfg.lora, max_length=16))  # every prompt is longer than 16 tokens
    outcome = _run(short, SimpleNamespace(path=tiny_llama_dir), rationales("tiny"), FakeScorer())
    assert outcome.status == "no_data" and not fine_tunes
    sft = outcome.filter_report[-1]
    assert sft["step"] == "sft_examples" and sft["rows_in"] == 8 and sft["rows_kept"] == 0


def test_a_reused_adapter_is_scored_not_trained(cfg, tiny_llama_dir, fine_tunes, tmp_path):
    scorer = FakeScorer()
    outcome = _run(cfg, SimpleNamespace(path=tiny_llama_dir), rationales("tiny"), scorer, adapter=str(tmp_path))
    assert not fine_tunes and outcome.trained is None and scorer.calls == [(str(tmp_path), "t1")]
    assert outcome.n_train_examples == 8 and outcome.score.stats["delta"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------- the callers


def test_distill_runs_the_runner_and_writes_its_record_atomically(cfg, tiny_llama_dir, fine_tunes, monkeypatch):
    from cotgap_ray import distill
    from cotgap_ray.evaluation.scorers import LocalScorer

    run_dir = Path(cfg.cache_dir).parent / "run"
    scored = []

    def local_score(self, adapter_dir, tag):  # distill's in-process scorer, without an engine
        scored.append(tag)
        return _dev_score(self.problems, adapter_dir)

    def generate(teachers, splits, cfg, split, task):
        rows = [{"problem_id": p.id, "teacher": "tiny", "sample_idx": 0, "text": " The answer is 2.", "pred": "2",
                 "correct": True, "n_tokens": 5} for p in splits.train]
        return [SimpleNamespace(teacher="tiny", table=lambda: pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA))]

    monkeypatch.setattr(LocalScorer, "__call__", local_score)
    monkeypatch.setattr("cotgap_ray.generation.pipeline.generate_teachers", generate)

    real_write_text = Path.write_text

    def killed_mid_write(self, text, *a, **k):
        real_write_text(self, text[: len(text) // 2], *a, **k)
        raise KeyboardInterrupt  # the process dies with half of the file written

    monkeypatch.setattr(Path, "write_text", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        distill.run_trial(cfg, tiny_llama_dir, run_dir)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    (trial_dir,) = (run_dir / "trials").iterdir()
    assert (trial_dir / "trial.tmp").read_text() and not (trial_dir / "trial.json").exists()  # half, not under
    # the name a re-run reads: the re-run trains again instead of tripping on (or trusting) half a record

    record = distill.run_trial(cfg, tiny_llama_dir, run_dir)  # runs again (the first never finished)
    assert len(fine_tunes) == 2 and fine_tunes[-1].settings == cfg.lora and fine_tunes[-1].eval_fn is None
    assert scored == ["baseline", trial_dir.name] * 2  # the baseline and the adapter, through distill's scorer
    assert isinstance(record, TrialRecord) and record.status == "ok" and record.lora == cfg.lora
    assert record.filters == cfg.filters and record.trial_id == trial_dir.name and record.teacher == tiny_llama_dir
    assert record.baseline_dev_accuracy == pytest.approx(BASE_SHARE) and record.dev_delta == pytest.approx(0.5)
    path = trial_dir / "trial.json"
    assert record_from_dict(TrialRecord, json.loads(path.read_text()), str(path)) == record
    assert (trial_dir / "rationales.parquet").is_file()  # what it trained on, kept
    assert "dev accuracy" in distill.format_result(record) and "delta" in distill.format_result(record)

    monkeypatch.setattr("cotgap_ray.training.step.fine_tune", lambda *a, **k: pytest.fail("trial re-trained"))
    assert distill.run_trial(cfg, tiny_llama_dir, run_dir) == record  # reloaded, typed, not re-run


BASE_SHARE = 0.25  # _dev_score: the baseline solves the first quarter of dev, an adapter three quarters


def _dev_score(problems, adapter_dir):
    from cotgap_ray.evaluation.scorers import AdapterScore

    share = 0.75 if adapter_dir else BASE_SHARE
    correct = {p.id: i < share * len(problems) for i, p in enumerate(problems)}
    return AdapterScore("dev", sum(correct.values()) / len(problems), correct, 1.0)


def test_the_search_trial_runs_the_runner_scored_every_epoch(cfg, tiny_llama_dir, fine_tunes, monkeypatch, tmp_path):
    from cotgap_ray.evaluation.scorers import EvaluatorScorer
    from cotgap_ray.search.space import point_key
    from cotgap_ray.search.trial import NO_DATA_DELTA, TrialContext, tune_trial

    reports, scored = [], []
    monkeypatch.setattr("ray.tune.report", reports.append)
    monkeypatch.setattr("ray.tune.integration.ray_train.TuneReportCallback", lambda: "tune-callback")
    monkeypatch.setattr(EvaluatorScorer, "__call__",
                        lambda self, adapter, tag: scored.append((self.split, self.stage, tag)) or
                        FakeScorer(split=self.split)(adapter, tag))
    context = TrialContext(config=cfg, tables={"tiny": rationales("tiny")}, teacher_names={tiny_llama_dir: "tiny"},
                           problems=PROBLEMS, baseline_dev=BASELINE, storage=str(tmp_path / "train"),
                           student_spec=tiny_llama_dir, at_once=3)
    point = {"teacher": tiny_llama_dir, "filters": "keep", "lora.rank": 4, "lora.alpha_ratio": 2.0,
             "lora.learning_rate": 1e-3, "lora.epochs": 2}
    tune_trial(point, context)
    (call,) = fine_tunes
    assert call.settings.rank == 4 and call.settings.alpha == 8.0 and call.name == point_key(point)
    assert call.at_once == 3  # the search's trials at once: how many threads the trial's worker takes
    assert call.callbacks == ["tune-callback"] and call.eval_fn is not None
    assert scored == [("dev", "search", point_key(point))] * 2  # after every epoch, on dev
    # What each epoch report carries to the TrialRecorder (reports go through the callback, faked away here).
    metrics = call.eval_fn(str(tmp_path))
    assert metrics["dev_delta"] == pytest.approx(0.5) and metrics["point_key"] == point_key(point)
    assert metrics["status"] == "ok" and metrics["n_train_examples"] == 8 and metrics["teacher"] == "tiny"
    assert [s["step"] for s in json.loads(metrics["filter_report"])][-1] == "sft_examples"
    assert EpochRecord.from_metrics(metrics).dev_delta == pytest.approx(0.5)

    tune_trial({**point, "filters": "right"}, TrialContext(**{**context.__dict__,
                                                               "tables": {"tiny": rationales("tiny", False)}}))
    (report,) = reports
    assert report["status"] == "no_data" and report["dev_delta"] == NO_DATA_DELTA and report["n_train_examples"] == 0
    assert json.loads(report["filter_report"])[0]["rows_kept"] == 0 and len(fine_tunes) == 1

    reports.clear()
    tune_trial(point, TrialContext(**{**context.__dict__, "done": {point_key(point): [{"epoch": 1}, {"epoch": 2}]}}))
    assert [r["epoch"] for r in reports] == [1, 2] and all(r["replayed"] for r in reports) and len(fine_tunes) == 1


def test_the_confirmation_runs_the_runner_per_seed_on_test(cfg, tiny_llama_dir, fine_tunes, monkeypatch, tmp_path):
    from cotgap_ray.evaluation.scorers import EvaluatorScorer
    from cotgap_ray.records import TeacherRef
    from cotgap_ray.search.confirm import confirm_teacher

    from cotgap_ray.search import confirm

    scored = []
    monkeypatch.setattr(EvaluatorScorer, "__call__",
                        lambda self, adapter, tag: scored.append((self.split, self.stage, self.route, tag)) or
                        FakeScorer(split=self.split)(adapter, tag))
    monkeypatch.setattr(confirm, "run_seed", confirm.seed_run)  # the Ray task's body, in this process
    point = {"teacher": tiny_llama_dir, "filters": "keep", "lora.rank": 4, "lora.alpha_ratio": 2.0,
             "lora.learning_rate": 1e-3, "lora.epochs": 2}
    searched = tmp_path / "search-adapter"
    searched.mkdir()
    best = TrialRecord(trial_id="t1", teacher="tiny", params=point, status="stopped", dev_delta=0.1,
                       epochs=[EpochRecord(epoch=1)], adapter_dir=str(searched), n_train_examples=8)
    final = confirm_teacher(tmp_path / "run", cfg, TeacherRef(tiny_llama_dir, "tiny"), best,
                            {"tiny": rationales("tiny")}, PROBLEMS, BASELINE, engines=["the-engine"])
    # seed 0 reuses the search trial's adapter; seed 1 re-trains the stopped trial's schedule cut at its epoch 1
    (call,) = fine_tunes
    assert call.settings.seed == cfg.lora.seed + 1 and call.settings.rank == 4 and call.stop_after == 1
    assert call.at_once == 1  # seeds train one after another: each may take its whole node
    assert [s.adapter_from for s in final.seeds] == ["search trial's adapter", "trained now"]
    assert final.seeds[0].adapter_dir == str(searched)
    # every seed of one teacher is scored by one engine (routed by the teacher's name): one baseline for all seeds
    assert scored == [("test", "confirm", "tiny", f"final:tiny:seed{cfg.lora.seed + i}") for i in range(2)]
    assert final.delta == pytest.approx(0.5) and final.baseline_test_correct == [BASELINE[d] for d in sorted(DEV)]


# ------------------------------------------------------------------------------------------------- one path


def _calls(path: Path, names: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in names:
                found.add(name)
    return found


def test_only_the_runner_runs_the_steps_of_a_trial():
    """The sequence exists once: outside the modules that define them, only training/trial_runner.py calls the
    fine-tune, the rationale file, the SFT examples check and the pairing with the baseline."""
    steps = {"fine_tune", "rationale_file", "check_examples", "paired"}
    defining = {"training/step.py", "training/examples.py", "evaluation/paired.py"}
    callers = {str(p.relative_to(PACKAGE)): _calls(p, steps) for p in PACKAGE.rglob("*.py")
               if str(p.relative_to(PACKAGE)) not in defining}
    assert {p: c for p, c in callers.items() if c} == {"training/trial_runner.py": steps}
