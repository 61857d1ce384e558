"""Control teachers (cotgap_ray/controls.py): specs, reference solutions, the rationales they write, the cache path
through generation, and the report's check of each control against its known effect. No Ray, no model."""

from __future__ import annotations

import pytest

from cotgap_ray import controls
from cotgap_ray.answers import extract_answer
from cotgap_ray.errors import InputError
from cotgap_ray.models import check_spec, check_student, resolve_model, spec_name, split_variant
from cotgap_ray.records import Problem


def _problem(i: int, expression: str, answer: str) -> Problem:
    return Problem(f"p{i}", f"Calculate {expression}.", answer, "train", controls.arithmetic_steps(expression))


PROBLEMS = [_problem(0, "-33 / 11 + -22", "-25"), _problem(1, "5 - 3", "2"), _problem(2, "-( 20 + 67 + -59 )", "-28")]


@pytest.mark.parametrize("expression, steps", [
    ("-33 / 11 + -22", "-33 / 11 = -3\n-3 + -22 = -25"),
    ("-( 20 + 67 + -59 )", "20 + 67 = 87\n87 + -59 = 28\n-(28) = -28"),
    ("( 2 + -8 ) + 4", "2 + -8 = -6\n-6 + 4 = -2"),
    ("2 - -1", "2 - -1 = 3"),
    ("1.5 * 3 - 0.25", "1.5 * 3 = 4.5\n4.5 - 0.25 = 4.25"),
    ("7 / 2", "7 / 2 = 3.5"),
    ("12", "12 = 12"),
])
def test_arithmetic_steps_are_exact(expression, steps):
    assert controls.arithmetic_steps(expression) == steps


@pytest.mark.parametrize("expression", ["2 ** 3", "abs(-3)", "x + 1", "1 / 0", "3 +"])
def test_arithmetic_steps_refuse_what_they_cannot_check(expression):
    with pytest.raises(ValueError):
        controls.arithmetic_steps(expression)


def test_worked_solution_drops_the_calculator_annotations():
    raw = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert controls.worked_solution(raw) == "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips."
    assert controls.worked_solution("72") == ""


def test_the_oracle_is_right_and_the_corrupted_and_shuffled_teachers_wrong_on_every_problem():
    for spec, right in (("control:oracle", 3), ("control:corrupt", 0), ("control:shuffled", 0)):
        table = controls.rationale_rows(spec, PROBLEMS, controls.name(spec), max_tokens=128)
        rows = table.to_pylist()
        assert [r["problem_id"] for r in rows] == ["p0", "p1", "p2"] and {r["sample_idx"] for r in rows} == {0}
        assert sum(r["correct"] for r in rows) == right, spec
        assert all(r["pred"] == extract_answer(r["text"], strict=True) for r in rows)
    corrupt = controls.rationale("corrupt", PROBLEMS[0])
    wrong = controls.wrong_answer("-25", "p0")
    assert wrong != "-25" and 1 <= abs(int(wrong) + 25) <= 9
    # the last step says the wrong value too: a consistent, confidently wrong rationale
    assert corrupt == f"-33 / 11 = -3\n-3 + -22 = {wrong}\nThe answer is {wrong}."
    assert controls.rationale("shuffled", PROBLEMS[2], PROBLEMS) == controls.rationale("oracle", PROBLEMS[0])


def test_a_shuffled_rationale_never_comes_from_a_problem_with_the_same_answer():
    """Two problems sharing an answer: the shuffled control skips the donor that would make its rationale correct (the
    default experiment's 160 arithmetic problems had one such neighbour); with every answer alike, the next one."""
    same = [_problem(0, "1 + 1", "2"), _problem(1, "5 - 3", "2"), _problem(2, "2 * 3", "6")]
    assert controls.rationale("shuffled", same[0], same) == controls.rationale("oracle", same[2])
    assert controls.rationale("shuffled", same[1], same) == controls.rationale("oracle", same[2])
    assert controls.rationale("shuffled", same[2], same) == controls.rationale("oracle", same[0])
    rows = controls.rationale_rows("control:shuffled", same, "control-shuffled", max_tokens=128).to_pylist()
    assert [r["correct"] for r in rows] == [False, False, False]
    alike = same[:2]
    assert controls.rationale("shuffled", alike[0], alike) == controls.rationale("oracle", alike[1])


def test_control_specs_resolve_without_a_model_and_refuse_typos_and_the_student_role():
    model = resolve_model("control:oracle")
    assert (model.name, model.path, model.fingerprint) == ("control-oracle", "", controls.fingerprint("control:oracle"))
    assert spec_name("control:corrupt#clone=2") == "control-corrupt-c2"
    with pytest.raises(InputError, match="Did you mean 'control:oracle'"):
        check_spec("control:orcale")
    with pytest.raises(InputError, match="control teacher"):
        check_student("control:oracle")


def test_a_clone_is_the_same_teacher_under_another_name_and_seed():
    from cotgap_ray.config import load_config
    from cotgap_ray.generation.pipeline import sampling_params

    cfg = load_config(None)
    assert split_variant("packaged:gemma3-270m#clone=1") == ("packaged:gemma3-270m", {"clone": 1})
    assert spec_name("packaged:gemma3-270m#clone=1") == "gemma3-270m-c1"
    plain, clone1, clone2 = (sampling_params(cfg.generation, v) for v in ({}, {"clone": 1}, {"clone": 2}))
    assert plain.seed == cfg.generation.seed and len({plain.seed, clone1.seed, clone2.seed}) == 3
    assert (clone1.temperature, clone1.n, clone1.max_tokens) == (plain.temperature, plain.n, plain.max_tokens)
    with pytest.raises(InputError, match="clone='0'"):
        split_variant("packaged:gemma3-270m#clone=0")
    assert controls.clone_of("packaged:x#temperature=1.0,clone=1") == "packaged:x#temperature=1.0"
    assert controls.clone_of("packaged:x") is None
    assert controls.expected("control:oracle") == "improves" and controls.expected("control:shuffled") == "degrades"
    assert controls.expected("packaged:x#clone=1") is None and controls.expected("control:oracle#clone=1") is None


def test_a_task_without_reference_solutions_refuses_control_teachers_by_name():
    bare = [Problem("q1", "What is 2 + 2?", "4", "train")]
    controls.check_controls(["packaged:x"], bare, "file")  # no control: nothing to check
    with pytest.raises(InputError, match=r"control:oracle need the task's reference solutions.*1 of 1.*first: q1"):
        controls.check_controls(["control:oracle"], bare, "file")


def test_tasks_carry_reference_solutions(tmp_path):
    from cotgap_ray.config import load_config
    from cotgap_ray.tasks import load_splits

    cfg = load_config(None, ["task.n_train=20", "task.n_dev=5", "task.n_test=5"])
    splits = load_splits(cfg.task)  # reasoning_gym:basic_arithmetic: the steps of each expression
    for p in splits.train:
        assert controls.rationale("oracle", p).startswith(p.solution) and p.solution
        assert extract_answer(controls.rationale("oracle", p), strict=True) == p.answer
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "q?", "answer": "2 + 2 = <<2+2=4>>4 #### 4"}\n{"question": "r?", "answer": "5"}\n')
    from cotgap_ray.tasks.file import to_raw_problems

    assert [p.solution for p in to_raw_problems(path, "f", "question", "answer")] == ["2 + 2 = 4", ""]


def test_control_rationales_go_through_the_cache_without_ray(tmp_path):
    from cotgap_ray.config import load_config
    from cotgap_ray.generation.pipeline import generate_teachers
    from cotgap_ray.models.remote import describe_local

    cfg = load_config(None, ["generation.shard_size=2"])
    facts = [describe_local(s, None) for s in ("control:oracle", "control:corrupt")]
    first = generate_teachers(facts, PROBLEMS, cfg, tmp_path, task="t")
    assert [(r.teacher, r.summary["rows"], r.summary["correct_rows"], r.summary["generated_shards"]) for r in first] \
        == [("control-oracle", 3, 3, 2), ("control-corrupt", 3, 0, 2)]
    again = generate_teachers(facts, PROBLEMS, cfg, tmp_path, task="t")  # cached: nothing written again
    assert [r.summary["generated_shards"] for r in again] == [0, 0]
    assert again[0].table().equals(first[0].table())


def _teacher(name, spec, verdict, delta=0.1, correct=None):
    return {"name": name, "spec": spec, "verdict": verdict, "delta": delta, "control": controls.describe(spec),
            "expected": controls.expected(spec), "test_correct_by_seed": correct and [correct], "selectable": True,
            "best_dev_delta": 0.0, "delta_ci95": [0.01, 0.2], "best_config": {}}


def test_the_report_checks_each_control_against_its_known_effect_and_never_recommends_one():
    from cotgap_ray.report import control_check, recommend

    same = [True] * 10 + [False] * 190
    moved = [True] * 30 + [False] * 170  # 20 more problems right: McNemar p < 0.05 against `same`
    teachers = [_teacher("control-oracle", "control:oracle", "improves"),
                _teacher("control-corrupt", "control:corrupt", "no clear change", -0.02),
                _teacher("qwen", "packaged:qwen", "no clear change", 0.01, same),
                _teacher("qwen-c1", "packaged:qwen#clone=1", "no clear change", 0.01, moved)]
    teachers[0]["best_dev_delta"] = 0.5  # the best on dev, but a control: never the answer
    checks = control_check(teachers)
    assert [(c["teacher"], c["as_expected"]) for c in checks] == [
        ("control-oracle", True), ("control-corrupt", False), ("qwen-c1", False)]
    assert checks[2]["verdict"] == "differ" and checks[2]["p_value"] < 0.05
    rec = recommend(teachers, 0.05, "done")
    assert rec["teacher"] != "control-oracle" and "control-oracle improves (as expected)" in rec["text"]
    assert "control-corrupt no clear change (expected degrades)" in rec["text"]
    assert "called different from qwen" in rec["text"] and "a false positive" in rec["text"]
    assert "one adapter each" in rec["text"]  # the reason a single-seed check can call two trainings different
    teachers[3]["test_correct_by_seed"] = [list(same)]
    assert control_check(teachers)[2]["as_expected"] is True


def test_a_clone_check_on_several_seeds_puts_the_variation_between_trainings_in_its_interval():
    """Two seeds each: the clone's first seed is 20 problems better than the original's, its second is not. On seed
    0 alone the exact McNemar calls them different; over both seeds the interval (compare_runs: problems and each
    side's seeds resampled) spans 0, as the same teacher trained twice should."""
    from cotgap_ray.report import control_check
    from cotgap_ray.stats import compare_runs

    base = [True] * 10 + [False] * 190
    lucky = [True] * 30 + [False] * 170
    teachers = [_teacher("qwen", "packaged:qwen", "no clear change", 0.0, base),
                _teacher("qwen-c1", "packaged:qwen#clone=1", "no clear change", 0.1, lucky)]
    (one,) = control_check(teachers)
    assert (one["verdict"], one["seeds"], one["test"]) == ("differ", [1, 1], "exact McNemar")
    teachers[0]["test_correct_by_seed"] = [base, base]
    teachers[1]["test_correct_by_seed"] = [lucky, base]
    (two,) = control_check(teachers)
    r = compare_runs([lucky, base], [base, base])
    assert two["seeds"] == [2, 2] and two["ci95"] == r["ci95"] and two["delta"] == pytest.approx(0.05)
    assert (two["verdict"], two["as_expected"]) == ("same", True) and r["ci95"][0] <= 0


@pytest.mark.search
@pytest.mark.ray
def test_a_tiny_known_answer_search_finds_the_oracle_and_ranks_it_above_the_corrupted_teacher(tmp_path):
    """The whole search on a setting whose answer is known: a tiny random student, a file task whose every answer is
    4 (tests/data/known_answers/fours.jsonl), the oracle (which teaches "The answer is 4.") against the corrupted
    teacher (which teaches 4 +- 1..9). About 2 minutes on 2 cores."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    overrides = ["student=tiny:llama", "teachers=[control:oracle, control:corrupt]", "task.name=file",
                 f"task.path={root / 'tests/data/known_answers/fours.jsonl'}", "task.n_train=24", "task.n_dev=12",
                 "task.n_test=20", "engine.kind=hf", "engine.batch_size=16", "engine.max_model_len=512",
                 "generation.max_tokens=24", "generation.shard_size=24", "lora.batch_size=4", "lora.max_length=256",
                 "search.trials=2", "search.learning_rate=[0.02, 0.02]", "search.epochs=[3]", "search.lora_rank=[4]",
                 f"cache_dir={tmp_path / 'cache'}"]
    command = [sys.executable, "-m", "cotgap_ray.search", "--config", str(root / "experiments/known_answers.yaml"),
               "--out", str(tmp_path / "run"), *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = {t["spec"]: t for t in report["teachers"]}
    oracle, corrupt = rows["control:oracle"], rows["control:corrupt"]
    assert oracle["control"] and corrupt["control"]  # labelled
    assert oracle["delta"] > corrupt["delta"] and oracle["verdict"] == "improves", (oracle, corrupt)
    assert oracle["best_dev_delta"] > corrupt["best_dev_delta"]  # the search's dev choice is the oracle
    checks = {c["teacher"]: c for c in report["recommendation"]["controls"]}
    assert checks["control-oracle"]["as_expected"] is True
    assert "Controls (effects known in advance): control-oracle improves (as expected)" in report["recommendation"][
        "text"]
    assert "(control)" in (tmp_path / "run" / "report.md").read_text()
