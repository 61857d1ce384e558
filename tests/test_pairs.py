"""Teacher-student pairs (search/pairs.py): `students: [...]` checked before anything starts (each error naming its
key), the budget split equally among students (a remainder unspent), each student's config the same experiment as a
single-student run, one-student commands refusing a students list, and `--plan` per student (no Ray). End to end
(marked ray + search): the smoke experiment with two students in one run, every teacher's rationales generated once
for both, a baseline per student and the matrix report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotgap_ray.config import ConfigError, load_config
from cotgap_ray.search.pairs import check_students, one_student_only, student_configs, student_names

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"
TWO = ["students=[tiny:llama, tiny:llama@3]"]


def test_the_budget_is_split_equally_among_students_and_each_is_a_single_student_run():
    cfg = load_config(SMOKE, [*TWO, "search.trials=9"])
    check_students(cfg)
    configs = student_configs(cfg)
    assert [name for name, _ in configs] == student_names(cfg) == ["tiny-llama@1234", "tiny-llama@3"]
    assert [one.student for _, one in configs] == ["tiny:llama", "tiny:llama@3"]
    assert all(one.students == [] and one.search.trials == 4 for _, one in configs)  # 9 // 2, one unspent
    # the same experiment as a single-student run of that student with that budget: one fingerprint
    alone = load_config(SMOKE, ["student=tiny:llama@3", "search.trials=4"])
    assert configs[1][1].fingerprint() == alone.fingerprint()
    assert load_config(SMOKE).fingerprint() == load_config(SMOKE, ["students=[]"]).fingerprint()  # old runs resume


def test_the_pairs_experiment_is_two_packaged_students_and_three_teachers_one_trial_a_cell():
    from cotgap_ray.models import PACKAGED

    cfg = load_config(ROOT / "experiments" / "pairs.yaml")
    check_students(cfg)
    assert all(s.removeprefix("packaged:") in PACKAGED for s in cfg.students) and len(cfg.students) == 2
    assert len(cfg.teachers) == 3 and "control:oracle" in cfg.teachers
    assert all(one.search.trials == len(cfg.teachers) for _, one in student_configs(cfg))  # one trial per cell


@pytest.mark.parametrize("overrides, words", [
    (["students=[tiny:llama, tiny:llama]"], ["listed twice"]),
    (["students=[tiny:llama, 3]"], ["list of model specs"]),
    (["students=[tiny:llama@1, tiny:llama@3]"], ["student 'tiny:llama'", "smoke.yaml:", "add it to students"]),
    ([*TWO, "search.trials=3"], ["search.trials=3", "2 students (1 each)", "2 teachers", ">= 4"]),
])
def test_a_students_list_that_cannot_run_is_refused_by_name(overrides, words):
    cfg = load_config(SMOKE, overrides)
    with pytest.raises(ConfigError) as e:
        check_students(cfg)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_one_student_commands_refuse_a_students_list():
    cfg = load_config(SMOKE, TWO)
    with pytest.raises(ConfigError, match="override students=\\[\\] student=<one of them>"):
        one_student_only(cfg, "distill")
    with pytest.raises(ConfigError, match="give --model"):
        one_student_only(cfg, "evaluate", flag="--model")
    one_student_only(load_config(SMOKE), "distill")  # one student: nothing to refuse


def test_a_multi_student_run_checks_the_list_once_and_each_student_s_stage_1_once(tmp_path, monkeypatch):
    """`cotgap search` with students: the list checked once (before preflight), every student validated once before
    the first starts, and that result handed to the student's run (which would otherwise validate again). No Ray:
    preflight, each student's run and the matrix are stubs."""
    from cotgap_ray import preflight, report_pairs
    from cotgap_ray.search import pairs
    from cotgap_ray.search import run as search
    from cotgap_ray.search.lock import release_run_dir

    calls, results = [], {}
    check, validate = pairs.check_students, search.validate

    def validating(one):
        results[one.student] = validate(one)
        calls.append(("validate", one.student))
        return results[one.student]

    def student_run(one, out, resume=False, validated=None):
        calls.append(("run", one.student, validated is results[one.student]))
        return Path(out)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # validate may set it: restored after the test
    monkeypatch.setattr(pairs, "check_students", lambda cfg: calls.append("check") or check(cfg))
    monkeypatch.setattr(preflight, "preflight", lambda *a, **k: calls.append("preflight"))
    monkeypatch.setattr(search, "validate", validating)
    monkeypatch.setattr(search, "run", student_run)
    monkeypatch.setattr(search, "students_share", lambda one, n: calls.append(("share", n)))  # one after another
    monkeypatch.setattr(report_pairs, "render_pairs", lambda run_dir: {"answer": {"text": "the matrix"}})
    try:
        assert search.main(["--config", str(SMOKE), "--out", str(tmp_path / "run"), *TWO]) == 0
    finally:
        release_run_dir(tmp_path / "run")
    assert calls == ["check", "preflight", ("validate", "tiny:llama"), ("validate", "tiny:llama@3"), ("share", 2),
                     ("run", "tiny:llama", True), ("run", "tiny:llama@3", True)]


def test_students_side_by_side_get_the_rationales_generated_first_then_a_process_each(tmp_path, monkeypatch):
    """When the cluster holds two students at once (students_share returns a Share), every teacher's rationales are
    generated once in the parent, then both students' runs are handed to the process runner with their own
    directories, stage-1 results and the share. No Ray: the share, the generation and the runner are stubs."""
    from cotgap_ray import preflight, report_pairs
    from cotgap_ray.search import run as search
    from cotgap_ray.search import student_process
    from cotgap_ray.search.lock import release_run_dir
    from cotgap_ray.search.side_by_side import Share

    calls, part = [], Share(students=2, trials=1, engines=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(preflight, "preflight", lambda *a, **k: None)
    monkeypatch.setattr(search, "students_share", lambda one, n: part)
    monkeypatch.setattr(search, "shared_generation",
                        lambda one, validated, run_dir: calls.append(("generate", one.student)))
    monkeypatch.setattr(search, "run", lambda *a, **k: calls.append("run in this process"))
    monkeypatch.setattr(student_process, "run_side_by_side",
                        lambda jobs, share, run_dir, target: calls.append(("side by side", [(j.name, j.config.student,
                                                                    j.run_dir.name, j.resume) for j in jobs], share)))
    monkeypatch.setattr(report_pairs, "render_pairs", lambda run_dir: {"answer": {"text": "the matrix"}})
    try:
        assert search.main(["--config", str(SMOKE), "--out", str(tmp_path / "run"), *TWO]) == 0
    finally:
        release_run_dir(tmp_path / "run")
    assert calls == [("generate", "tiny:llama"),
                     ("side by side", [("tiny-llama@1234", "tiny:llama", "tiny-llama@1234", False),
                                       ("tiny-llama@3", "tiny:llama@3", "tiny-llama@3", False)], part)]


def _cli(*args: str, cwd: Path, timeout: float = 300, **env_vars: str) -> subprocess.CompletedProcess:
    # RAY_ADDRESS=local: --plan sizes this machine instead of joining a cluster someone left running
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0", "PYTHONFAULTHANDLER": "1",
           "RAY_ADDRESS": "local", **env_vars}
    return subprocess.run([sys.executable, "-m", "cotgap_ray.search", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def test_plan_prints_one_plan_per_student_and_a_bad_list_exits_2(tmp_path):
    """--plan loads no model and starts no Ray: one plan per student, each with its share of search.trials."""
    done = _cli("--config", str(SMOKE), "--plan", "--json", *TWO, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    plans = json.loads(done.stdout)["students"]
    assert list(plans) == ["tiny-llama@1234", "tiny-llama@3"]
    # this machine sized as 2 CPUs (RAY_OVERRIDE_RESOURCES, which a local Ray honours): one student after another;
    # as 8: side by side, each plan sized on its student's share (2 trials: search.trials 4 over 2 students)
    laptop = _cli("--config", str(SMOKE), "--plan", "--json", *TWO, cwd=tmp_path,
                  RAY_OVERRIDE_RESOURCES='{"CPU": 2}')
    assert laptop.returncode == 0, laptop.stderr[-3000:]
    assert "students one after another" in laptop.stderr
    assert [p["side_by_side"] for p in json.loads(laptop.stdout)["students"].values()] == [None, None]
    eight = _cli("--config", str(SMOKE), "--plan", "--json", *TWO, cwd=tmp_path, RAY_OVERRIDE_RESOURCES='{"CPU": 8}')
    assert eight.returncode == 0, eight.stderr[-3000:]
    assert "students side by side: 2 of 2 at once" in eight.stderr
    for plan in json.loads(eight.stdout)["students"].values():
        assert plan["side_by_side"] == {"students": 2, "trials": 2, "engines": 1}
        assert (plan["cluster"]["trials_at_once"], plan["cluster"]["evaluation_engines"]) == (2, 1)
    bad = _cli("--config", str(SMOKE), "--plan", "students=[tiny:llama, control:oracle]", cwd=tmp_path)
    assert bad.returncode == 2 and "students[1]" in bad.stderr and "control teacher" in bad.stderr, bad.stderr


def test_the_parent_report_is_the_matrix_over_finished_students_and_cotgap_report_renders_it(tmp_path):
    """render_pairs on a parent directory whose students/ hold report.py-rendered runs (tests/test_report_pairs.py's
    helper): report.json with the matrix, the answer and the proxies, report.md linking each student's report, the
    map; a student not finished is named and `cotgap report PARENT` re-renders the matrix (no Ray)."""
    from cotgap_ray.report_cli import main as report_main
    from cotgap_ray.report_pairs import is_pairs_run, render_pairs
    from tests.test_report import QWEN, SMOL
    from tests.test_report_pairs import student_run

    parent = tmp_path / "run"
    students = ["packaged:smollm2-135m-instruct", "packaged:qwen2.5-0.5b-instruct", "tiny:llama@9"]
    (parent / "students").mkdir(parents=True)
    (parent / "config.json").write_text(json.dumps({"fingerprint": "x", "config": {"name": "pairs",
                                                                                   "students": students}}))
    student_run(parent / "students", "smollm2-135m-instruct", students[0], 0.10,
                [(QWEN, 0.30, 0.05, (0.08, [0.02, 0.14], 0.01)), (SMOL, 0.05, 0.0, (0.0, [-0.03, 0.03], 1.0))])
    student_run(parent / "students", "qwen2.5-0.5b-instruct", students[1], 0.20,
                [(QWEN, 0.30, 0.0, (-0.01, [-0.05, 0.03], 0.6)), (SMOL, 0.05, -0.02, (-0.06, [-0.1, -0.02], 0.01))])
    assert is_pairs_run(parent) and not is_pairs_run(parent / "students" / "smollm2-135m-instruct")
    report = render_pairs(parent)
    assert report["missing"] == ["tiny:llama@9"] and "Not finished yet: tiny:llama@9" in report["answer"]["text"]
    cells = report["pairs"]["matrix"]["cells"]
    assert set(cells) == {"smollm2-135m-instruct", "qwen2.5-0.5b-instruct"}
    assert cells["qwen2.5-0.5b-instruct"]["smollm2-135m-instruct"]["verdict"] == "degrades"
    md = (parent / "report.md").read_text()
    assert "students/smollm2-135m-instruct/report.md" in md and "capacity_gap.png" in md
    # the proxies against the 4 confirmed real cells, in report.json as written and in report.md
    assert json.loads((parent / "report.json").read_text())["pairs"]["proxies"]["n_cells"] == 4
    assert "### Proxies against the confirmed deltas" in md and "Across cells, n = 4 cells of 2 students" in md
    assert (parent / "capacity_gap.png").read_bytes()[:4] == b"\x89PNG"
    (parent / "report.md").unlink()
    assert report_main([str(parent)]) == 0 and (parent / "report.md").is_file()


# ------------------------------------------------------------------------------------------ end to end (Ray)


@pytest.mark.ray
@pytest.mark.search
def test_two_students_in_one_run_share_the_rationales_and_get_a_matrix(tmp_path):
    """Two tiny students x the smoke's two teachers, one trial per cell: each student's own run directory (baseline,
    trials, confirmation, report), every teacher's rationales generated once in all (the cache manifest's runs
    generated each shard once), and the parent's matrix report."""
    done = _cli("--config", str(SMOKE), "--out", str(tmp_path / "run"), f"cache_dir={tmp_path / 'cache'}", *TWO,
                "search.trials=4", "search.epochs=[1]", "search.filter_chains={all: []}", "confirm.seeds=1",
                cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    run = tmp_path / "run"
    baselines = {}
    for name, spec in (("tiny-llama@1234", "tiny:llama"), ("tiny-llama@3", "tiny:llama@3")):
        sub = run / "students" / name
        assert json.loads((sub / "report.json").read_text())["student"] == spec
        trials = [json.loads(p.read_text()) for p in (sub / "trials").glob("*/trial.json")]
        assert sorted(t["teacher"] for t in trials) == ["tiny-llama@1", "tiny-llama@2"]  # one trial per cell
        baselines[name] = json.loads((sub / "baseline.json").read_text())
    assert baselines["tiny-llama@1234"] != baselines["tiny-llama@3"]  # each student measured on its own
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    rationale_manifests = [m for m in manifests if json.loads(m.read_text()).get("runs") is not None]
    assert len(rationale_manifests) == 2, manifests  # one cache per teacher, shared by both students
    for path in rationale_manifests:
        manifest = json.loads(path.read_text())
        assert sum(r.get("generated_shards", 0) for r in manifest["runs"]) == manifest["n_shards"], manifest["runs"]
    top = json.loads((run / "report.json").read_text())
    assert (run / "report.md").is_file() and top["pairs"]["students"]
