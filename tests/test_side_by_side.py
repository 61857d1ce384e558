"""Students side by side (search/side_by_side.py, search/student_process.py): how many students of a pairs run search
at once on literal clusters (a laptop runs them one after another; a cluster that holds two students' engines and a
trial each runs two), each one's share, the override, the threads that follow from it, and the line prefix that tells
students' output apart. No Ray: the side-by-side run itself is tests/test_cluster_namespaces.py's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cotgap_ray.config import ConfigError, load_config
from cotgap_ray.search.side_by_side import Share, describe, share, students_at_once, trials_beside
from cotgap_ray.search.student_process import Prefixed, namespace
from cotgap_ray.training.threads import worker_threads

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"
LAPTOP = [{"name": "this machine", "source": "alive", "count": 1, "resources": {"CPU": 2.0}}]
WORKERS = [{"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 1.0}},
           {"name": "worker", "source": "alive", "count": 2, "resources": {"CPU": 3.0, "finetune_node": 1.0}}]
PINNED = ["train.resources={finetune_node: 0.01}"]


def _cfg(*overrides: str):
    return load_config(SMOKE, ["search.trials=8", *overrides])


def test_a_laptop_runs_students_one_after_another():
    cfg = _cfg()  # engine 0.5 CPU, a trial's worker 1.01: two engines leave 1 CPU, no trial fits beside them
    assert trials_beside(cfg, LAPTOP, engines=1) == 1
    assert trials_beside(cfg, LAPTOP, engines=2) == 0
    assert students_at_once(cfg, 2, LAPTOP) == 1
    assert share(cfg, 2, LAPTOP) is None
    assert "one after another" in describe(None, 2)


def test_two_fine_tune_workers_run_two_students_each_with_its_engine_and_an_equal_part_of_the_trials():
    cfg = _cfg(*PINNED)  # the head holds no engine nor trial (no finetune_node); each worker: engine + 2 trials
    assert trials_beside(cfg, WORKERS, engines=2) == 4
    assert trials_beside(cfg, WORKERS, engines=3) == 3  # a third engine stacks on a worker: one trial less there
    assert students_at_once(cfg, 2, WORKERS) == 2
    assert students_at_once(cfg, 3, WORKERS) == 3  # 3 engines, 3 trials beside them: one each
    assert trials_beside(cfg, WORKERS, engines=4) == 2  # two engines a worker leave one trial each: not 4
    assert students_at_once(cfg, 5, WORKERS) == 3
    assert share(cfg, 2, WORKERS) == Share(students=2, trials=2, engines=1)
    assert share(cfg, 2, WORKERS).fine_tunes_at_once == 4
    assert "side by side: 2 of 2 at once" in describe(share(cfg, 2, WORKERS), 2)


def test_a_node_type_nobody_offers_fits_nothing_and_the_head_never_holds_an_engine():
    cfg = _cfg("train.resources={other_node: 0.01}")
    assert trials_beside(cfg, WORKERS, engines=1) == 0
    assert students_at_once(cfg, 2, WORKERS) == 1


def test_an_autoscaler_type_without_bound_holds_what_is_asked():
    cfg = _cfg(*PINNED)
    unbounded = [{"name": "gpu", "source": "autoscaler", "count": None,
                  "resources": {"CPU": 2.0, "finetune_node": 1.0}}]
    assert students_at_once(cfg, 3, unbounded) == 3
    assert share(cfg, 3, unbounded).trials >= 1


def test_the_share_is_capped_by_the_student_s_budget_and_max_concurrent_trials():
    big = [{"name": "big", "source": "alive", "count": 1, "resources": {"CPU": 64.0}}]
    assert share(_cfg("search.trials=3"), 2, big).trials == 3
    assert share(_cfg("search.max_concurrent_trials=2"), 2, big).trials == 2
    assert share(_cfg("search.trials=3", "search.strategy=grid"), 2, big).trials == 31  # (64 - 1) // 1.01 // 2


def test_students_at_once_overrides_the_rule_and_is_not_part_of_the_fingerprint():
    assert students_at_once(_cfg("search.students_at_once=1"), 2, WORKERS) == 1
    assert students_at_once(_cfg("search.students_at_once=2"), 2, LAPTOP) == 2  # the user's call...
    with pytest.raises(ConfigError, match="search.students_at_once=2 asks for 2 students' evaluation engines"):
        share(_cfg("search.students_at_once=2"), 2, LAPTOP)  # ...refused where no trial would fit beside them
    big = [{"name": "big", "source": "alive", "count": 1, "resources": {"CPU": 4.0}}]
    assert share(_cfg("search.students_at_once=5"), 2, big) == Share(students=2, trials=1, engines=1)
    assert _cfg("search.students_at_once=2").fingerprint() == _cfg().fingerprint()
    with pytest.raises(Exception, match="students_at_once"):
        _cfg("search.students_at_once=0")


def test_students_side_by_side_train_on_ray_s_threads_not_a_whole_node_each():
    cfg = _cfg()
    assert worker_threads(cfg.train, Share(students=2, trials=1, engines=1).fine_tunes_at_once) is None
    assert worker_threads(cfg.train, 1) == "node"


def test_every_line_a_student_prints_starts_with_its_name():
    out = io.StringIO()
    stream = Prefixed(out, "[a] ")
    stream.write("one\ntw")
    stream.write("o\n\nthree")
    stream.write("\n")
    assert out.getvalue() == "[a] one\n[a] two\n[a] \n[a] three\n"


def test_each_student_of_each_run_has_its_own_ray_namespace(tmp_path):
    assert namespace(tmp_path / "r", "a") != namespace(tmp_path / "r", "b")
    assert namespace(tmp_path / "r", "a") != namespace(tmp_path / "s", "a")
    assert namespace(tmp_path / "r", "a") == namespace(tmp_path / "r" / ".." / "r", "a")
