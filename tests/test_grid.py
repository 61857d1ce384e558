"""search.strategy=grid: the grid's points (size, contents, and point keys equal to the define-by-run space's for the
same values, via optuna.trial.FixedTrial), the refusals of a space that is not finite, named before any compute, and
one real grid run end to end (`python -m cotgap_ray.search` in a subprocess, marked ray + search)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from cotgap_ray.config import ConfigError, SearchConfig, describe, load_config
from cotgap_ray.search.space import GRID_RANGE_MAX, filter_chain, grid_points, point_key, search_space, validate_space

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = ["tiny:llama@1", "tiny:llama@2"]
GRID = SearchConfig(
    strategy="grid", trials=1,  # trials does not bound a grid
    filter_chains={"all": [],
                   "short": [{"name": "correct_only"}, {"name": "max_per_question", "m": {"choices": [1, 2]}},
                             {"name": "length", "max_tokens": {"range": [20, 22]}}]},
    lora_rank=[4, 8], lora_alpha_ratio=[2.0], learning_rate=[0.01, 0.01], epochs=[1, 2])


def test_grid_is_the_cartesian_product_of_the_declared_space():
    points = grid_points(TEACHERS, GRID)
    # chains: "all" (1) + "short" (m: 2 choices x max_tokens: 3 integers) = 7; x 2 teachers x 2 ranks x 2 epochs
    assert len(points) == 7 * 2 * 2 * 2 == 56
    assert len({point_key(p) for p in points}) == len(points)
    assert points[0]["teacher"] == TEACHERS[0] and points[1]["teacher"] == TEACHERS[1]  # teachers vary fastest
    short = [p for p in points if p["filters"] == "short"]
    assert {(p["filter.short.1.m"], p["filter.short.2.max_tokens"]) for p in short} == set(
        itertools.product([1, 2], [20, 21, 22]))
    assert all(type(p["filter.short.2.max_tokens"]) is int for p in short)
    assert all("filter.short.1.m" not in p for p in points if p["filters"] == "all")
    assert {(p["lora.rank"], p["lora.epochs"]) for p in points} == set(itertools.product([4, 8], [1, 2]))
    assert {p["lora.learning_rate"] for p in points} == {0.01} and {p["lora.alpha_ratio"] for p in points} == {2.0}
    assert filter_chain(short[0], GRID) == [{"name": "correct_only"}, {"name": "max_per_question", "m": 1},
                                            {"name": "length", "max_tokens": 20}]
    validate_space(GRID, TEACHERS)  # trials=1 < 2 teachers is fine for a grid: its budget is its size


def test_grid_points_have_the_point_keys_of_the_define_by_run_space():
    """The same configuration is one point_key in a grid and in an Optuna search, so records compare one to one."""
    search = SearchConfig(**{**GRID.__dict__, "learning_rate": [1, 1]})  # an int learning rate: still 1.0 in both
    for point in grid_points(TEACHERS, search):
        trial = optuna.trial.FixedTrial(point)
        search_space(trial, TEACHERS, search)
        assert trial.params == point and point_key(trial.params) == point_key(point)
        assert type(point["lora.learning_rate"]) is float


def test_a_value_listed_twice_is_one_point():
    twice = SearchConfig(strategy="grid", filter_chains={"m": [{"name": "max_per_question", "m": {"choices": [1, 1]}}]},
                         lora_rank=[8, 8], lora_alpha_ratio=[1.0], learning_rate=[1e-3, 1e-3], epochs=[1])
    points = grid_points(TEACHERS, twice)
    assert len(points) == 2 and len({point_key(p) for p in points}) == 2


def test_identical_chains_under_two_names_are_two_points():
    chain = [{"name": "correct_only"}]
    same = SearchConfig(strategy="grid", filter_chains={"a": chain, "b": list(chain)}, lora_rank=[8],
                        lora_alpha_ratio=[1.0], learning_rate=[1e-3, 1e-3], epochs=[1])
    assert len({point_key(p) for p in grid_points(TEACHERS, same)}) == 4


@pytest.mark.parametrize("change, message", [
    ({"learning_rate": [2e-4, 2e-3]},
     r"search.strategy=grid needs a finite space: search.learning_rate \[0.0002, 0.002\] is a continuous range; "
     r"set one value \[v, v\], e.g. \"search.learning_rate=\[6.3e-04, 6.3e-04\]\""),
    ({"filter_chains": {"q": [{"name": "student_nll", "q": {"range": [0.5, 0.9]}}]}},
     r"search.filter_chains.q\[0\].q \{range: \[0.5, 0.9\]\} is a continuous range; .*\{choices: \[0.5, 0.7"),
    ({"filter_chains": {"p": [{"name": "length", "max_pct": {"range": [50, 100]}}]}},
     rf"search.filter_chains.p\[0\].max_pct \{{range: \[50, 100\]\}} has 51 values .*at most {GRID_RANGE_MAX}"
     r".*\{choices: \[50, 75, 100\]\}"),
])
def test_a_space_that_is_not_finite_is_refused_naming_the_key(change, message):
    search = SearchConfig(**{**GRID.__dict__, **change})
    with pytest.raises(ConfigError, match=message):
        validate_space(search, TEACHERS)
    SearchConfig(**{**search.__dict__, "strategy": "optuna", "trials": 2})  # the same space is fine to sample


def test_every_choice_of_a_grid_is_checked_not_only_the_ends():
    bad_middle = {"q": [{"name": "student_nll", "q": {"choices": [0.5, 1.5, 0.9]}}]}
    validate_space(SearchConfig(filter_chains=bad_middle), TEACHERS)  # Optuna: the ends are checked
    with pytest.raises(ConfigError, match=r"search.filter_chains.q as the grid runs it.*quantile"):
        validate_space(SearchConfig(**{**GRID.__dict__, "filter_chains": bad_middle}), TEACHERS)


def test_strategy_is_validated_in_the_config():
    assert load_config(None, []).search.strategy == "optuna"
    assert load_config(None, ["search.strategy=grid"]).search.strategy == "grid"
    with pytest.raises(ConfigError, match=r"search: strategy='gird' is not one of optuna, grid; did you mean 'grid'"):
        load_config(None, ["search.strategy=gird"])
    help_text = dict((k, h) for k, _, h in describe())["search.strategy"]
    assert f"at most {GRID_RANGE_MAX} values" in help_text and "search.trials" in help_text


def test_the_grid_searcher_hands_out_every_point_once_then_finishes(tmp_path):
    """GridSearch (tuning.py) asks the study for exactly its points, in order, through the define-by-run space, then
    says the search is finished; a fresh run on the same study starts from the whole grid again (no Ray started)."""
    from functools import partial

    from ray.tune.search import Searcher

    from cotgap_ray.search.tuning import GridSearch

    points = grid_points(TEACHERS, GRID)[:5]

    def searcher():
        return GridSearch(space=partial(search_space, teachers=TEACHERS, search=GRID), metric="dev_delta", mode="max",
                          points=points, sampler=optuna.samplers.TPESampler(seed=0),
                          storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"), study_name="s")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = searcher()
    assert first.suggest("a") == points[0] and first.suggest("a") == points[0]  # asked again: the same trial
    again = searcher()  # the first run was interrupted here
    assert [again.suggest(f"b{i}") for i in range(len(points))] == points
    assert again.suggest("b5") == Searcher.FINISHED
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_the_search_never_hands_out_a_point_twice_and_ends_when_the_space_is_spent():
    """StudySearch (the Optuna search): TPE repeats points in a small space; a repeat is closed in the study with the
    earlier trial's value and the sampler asked again, so every trial gets a new point, and once every point of a
    finite space was handed out the search says it is finished instead of training a point again (no Ray started)."""
    from functools import partial

    from ray.tune.search import Searcher

    from cotgap_ray.search.tuning import StudySearch

    teachers = TEACHERS[:1]
    search = SearchConfig(strategy="optuna", filter_chains={"all": []}, lora_rank=[4, 8], lora_alpha_ratio=[2.0],
                          learning_rate=[0.01, 0.01], epochs=[1, 2])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = StudySearch(space=partial(search_space, teachers=teachers, search=search), metric="dev_delta",
                           mode="max", sampler=optuna.samplers.TPESampler(seed=0))
    handed = []
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            break
        handed.append(point_key(config))
        searcher.on_trial_complete(f"t{i}", {"dev_delta": 0.01 * i, "epoch": config["lora.epochs"], "status": "ok"})
    space = {point_key(p) for p in grid_points(teachers, search)}
    assert len(handed) == len(set(handed)) == len(space) == 4 and set(handed) == space
    closed = searcher._ot_study.get_trials(deepcopy=False)
    repeats = [t for t in closed if t.number not in {searcher._ot_trials[f"t{i}"].number for i in range(4)}]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for t in repeats)


def test_the_search_gives_every_teacher_the_same_number_of_trials():
    """Equal budgets (#33 point 3): the first points go out first, then each trial to the teacher with the fewest
    trials (ties: the order given, proxy order), TPE sampling the rest of the point; a repeat keeps its teacher. A
    teacher with more trials would have more draws at the best dev delta (benchmarks/choice_simulation.py). The
    budget is search.trials rounded down to a multiple of the teachers (no Ray started)."""
    from functools import partial

    from cotgap_ray.search.space import seed_points
    from cotgap_ray.search.tuning import StudySearch, equal_budget

    teachers = ["tiny:llama@1", "tiny:llama@2", "tiny:llama@3"]
    search = SearchConfig(strategy="optuna", filter_chains={"all": []}, lora_rank=[4, 8], lora_alpha_ratio=[2.0],
                          learning_rate=[0.001, 0.01], epochs=[1, 2])
    by_rank = [teachers[2], teachers[0], teachers[1]]
    seeds = seed_points(by_rank, search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(3):  # the teacher never depends on what the sampler draws
        searcher = StudySearch(space=partial(search_space, teachers=teachers, search=search), metric="dev_delta",
                               mode="max", sampler=optuna.samplers.TPESampler(seed=seed), teachers=by_rank,
                               first_points=seeds)
        given = []
        for i in range(9):
            config = searcher.suggest(f"t{i}")
            given.append(config["teacher"])
            # the first teacher looks best: a sampled teacher would go to it; the round-robin does not
            searcher.on_trial_complete(f"t{i}", {"dev_delta": 0.1 if config["teacher"] == teachers[2] else 0.0,
                                                 "epoch": config["lora.epochs"], "status": "ok"})
            if i < 3:
                assert config == seeds[i]  # the proxy-seeded first look, whole
        assert given == by_rank * 3
        assert searcher.suggest("t8") == searcher.suggest("t8")  # asked again for a trial it holds: the same point
    assert [equal_budget(t, 3) for t in (3, 4, 5, 6, 8)] == [3, 3, 3, 6, 6] and equal_budget(4, 2) == 4


def test_a_repeated_point_keeps_its_teacher_and_a_spent_teacher_ends_the_search():
    """A finite space of 2 points per teacher: every trial gets a new point of its round-robin teacher, and when that
    teacher has none left the search ends instead of giving another teacher an extra draw (no Ray started)."""
    from functools import partial

    from ray.tune.search import Searcher

    from cotgap_ray.search.tuning import StudySearch

    search = SearchConfig(strategy="optuna", filter_chains={"all": []}, lora_rank=[4, 8], lora_alpha_ratio=[2.0],
                          learning_rate=[0.01, 0.01], epochs=[1])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = StudySearch(space=partial(search_space, teachers=TEACHERS, search=search), metric="dev_delta",
                           mode="max", sampler=optuna.samplers.TPESampler(seed=0), teachers=TEACHERS)
    handed = []
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            break
        handed.append((config["teacher"], point_key(config)))
        searcher.on_trial_complete(f"t{i}", {"dev_delta": 0.0, "epoch": 1, "status": "ok"})
    assert [t for t, _ in handed] == TEACHERS * 2 and len({k for _, k in handed}) == 4


# ------------------------------------------------------------------------------------------ end to end (Ray)

GRID_OVERRIDES = ["search.strategy=grid", "search.filter_chains={all: []}", "search.lora_rank=[4]",
                  "search.learning_rate=[0.01, 0.01]", "search.epochs=[2]", "confirm.seeds=1"]


@pytest.mark.ray
@pytest.mark.search
def test_a_grid_run_trains_every_point_once_to_its_planned_epochs(tmp_path):
    """The smoke experiment as a 2-point grid (2 teachers x one chain, rank, ratio, learning rate and 2 epochs): each
    point has a finished record of both epochs (no ASHA), the report is written."""
    cfg = load_config(ROOT / "experiments" / "smoke.yaml", GRID_OVERRIDES)
    points = grid_points(list(cfg.teachers), cfg.search)
    assert len(points) == 2
    command = [sys.executable, "-m", "cotgap_ray.search", "--config", str(ROOT / "experiments" / "smoke.yaml"),
               "--out", str(tmp_path / "run"), f"cache_dir={tmp_path / 'cache'}", *GRID_OVERRIDES]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "grid: 2 points" in done.stdout and "trials: 2 finished of 2" in done.stdout
    run = tmp_path / "run"
    records = {p.parent.name: json.loads(p.read_text()) for p in (run / "trials").glob("*/trial.json")}
    assert set(records) == {point_key(p) for p in points}
    for rec in records.values():
        assert rec["status"] in ("ok", "no_data"), rec  # never "stopped": nothing ends a grid trial early
        if rec["status"] == "ok":
            assert [e["epoch"] for e in sorted(rec["epochs"], key=lambda e: e["epoch"])] == [1, 2]
    assert json.loads((run / "config.json").read_text())["config"]["search"]["strategy"] == "grid"
    report = json.loads((run / "report.json").read_text())
    assert report["complete"] and report["stage"] == "done"
