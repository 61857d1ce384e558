"""Usable training data (search/usable.py): which teachers some filter chain leaves a rationale of, from literal
tables; the search's glue (run.allocation_stage), the seed points, and the report's row of a teacher given no trial.

No Ray, no model: tables are built here, and the report reads a run directory test_report.py's helper writes.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cotgap_ray import report
from cotgap_ray.config import SearchConfig, load_config
from cotgap_ray.errors import InputError
from cotgap_ray.records import RATIONALE_SCHEMA, TeacherRef
from cotgap_ray.search.run import allocation_stage
from cotgap_ray.search.space import chain_variants, search_space, seed_points
from cotgap_ray.search.usable import GENERATION_CUT, check_some_kept, decide, describe
from tests.test_report import GEMMA, QWEN, SMOL, write_run

IDS = [f"p{i}" for i in range(8)]
MAX_TOKENS = 256  # generation.max_tokens: a rationale of 256 tokens or more was cut there
CORRECT_ONLY = {"correct": [{"name": "correct_only"}],
                "correct_dedupe": [{"name": "correct_only"}, {"name": "dedupe"},
                                   {"name": "max_per_question", "m": {"choices": [1, 2]}}]}


def table(teacher: str, correct: set[str], samples: int = 2, n_tokens: int = 10) -> pa.Table:
    """`samples` rationales for every problem of IDS, all correct on the problems in `correct`, each with its own
    text (dedupe keeps them all)."""
    return pa.Table.from_pylist([
        {"problem_id": pid, "teacher": teacher, "sample_idx": k, "text": f"{pid} way {k}", "pred": "1",
         "correct": pid in correct, "n_tokens": n_tokens} for pid in IDS for k in range(samples)],
        schema=RATIONALE_SCHEMA)


def search(chains: dict) -> SearchConfig:
    return SearchConfig(trials=4, filter_chains=chains)


def test_a_teacher_no_chain_keeps_a_row_of_is_excluded_with_per_chain_counts():
    tables = {"weak": table("weak", set()), "strong": table("strong", set(IDS[:3]), samples=3)}
    d = decide(tables, search(CORRECT_ONLY), MAX_TOKENS)
    assert d["kept"] == ["strong"] and d["excluded"] == ["weak"]
    weak, strong = d["teachers"]["weak"], d["teachers"]["strong"]
    assert weak["rationales"] == 16 and not weak["usable"] and weak["seed"] is None
    assert weak["chains"]["correct"] == {"kept": 0, "usable": False, "values": {}, "emptied_by": "correct_only",
                                         "rows_in": 16}
    assert weak["chains"]["correct_dedupe"]["emptied_by"] == "correct_only"
    assert strong["chains"]["correct"]["kept"] == 9  # 3 problems x 3 correct samples
    # max_per_question keeps at most m per problem: m=2 (the chain's best value) keeps 6, m=1 would keep 3
    assert strong["chains"]["correct_dedupe"] == {"kept": 6, "usable": True, "values": {"filter.correct_dedupe.2.m": 2},
                                                  "emptied_by": None, "rows_in": None}
    assert strong["seed"] == {"filters": "correct"} == d["first_seed"]
    assert describe(d) == ["weak: no trial: no training example under any filter chain (correct_only kept 0 of 16 "
                           "rationales on chains correct, correct_dedupe)"]
    json.dumps(d)  # usable.json: JSON as it is


def test_an_unfiltered_chain_keeps_the_teacher_and_seeds_its_first_trial_there():
    chains = {**CORRECT_ONLY, "all": []}
    tables = {"weak": table("weak", set()), "strong": table("strong", set(IDS[:3]))}
    d = decide(tables, search(chains), MAX_TOKENS)
    assert d["kept"] == ["weak", "strong"] and d["excluded"] == []
    weak = d["teachers"]["weak"]
    assert weak["usable"] and [c["kept"] for c in weak["chains"].values()] == [0, 0, 16]
    assert weak["seed"] == {"filters": "all"} and d["teachers"]["strong"]["seed"] == {"filters": "correct"}
    assert describe(d) == ["weak: its first trial uses filter chain all: the first chain, with the values a first "
                           "trial gets, keeps none of its rationales"]
    specs = {"weak": "packaged:weak", "strong": "packaged:strong"}
    points = seed_points(["packaged:strong", "packaged:weak"], search(chains),
                         {specs[n]: e["seed"] for n, e in d["teachers"].items()})
    assert [(p["teacher"], p["filters"]) for p in points] == [("packaged:strong", "correct"), ("packaged:weak", "all")]
    assert {k: v for k, v in points[1].items() if k not in ("teacher", "filters")} == \
        {k: v for k, v in points[0].items() if k not in ("teacher", "filters")}  # only the chain differs
    check_some_kept(d)  # someone is left: no error


def test_a_searched_parameter_counts_when_any_of_its_values_keeps_a_row():
    # every rationale has 10 tokens: max_tokens 5 keeps none, 100 keeps all; the seed (first choice) keeps none
    chains = {"capped": [{"name": "length", "max_tokens": {"choices": [5, 100]}}],
              "pct": [{"name": "length", "max_pct": {"range": [50, 100]}}]}
    d = decide({"t": table("t", set())}, search(chains), MAX_TOKENS)
    capped = d["teachers"]["t"]["chains"]["capped"]
    assert capped["kept"] == 16 and capped["values"] == {"filter.capped.0.max_tokens": 100}
    assert d["teachers"]["t"]["seed"] == {"filters": "capped", "filter.capped.0.max_tokens": 100}
    assert d["first_seed"] == {"filters": "capped", "filter.capped.0.max_tokens": 5}
    assert describe(d) == ["t: its first trial uses filter chain capped filter.capped.0.max_tokens=100: the first "
                           "chain, with the values a first trial gets, keeps none of its rationales"]
    assert chain_variants("pct", search(chains)) == [{"filters": "pct", "filter.pct.0.max_pct": v} for v in (75, 50, 100)]


def test_the_generation_limit_cut_is_counted_like_a_trial_does():
    # every rationale ran into generation.max_tokens: a trial's training chain drops them all, even with `all: []`
    d = decide({"t": table("t", set(IDS), n_tokens=MAX_TOKENS)}, search({"all": []}), MAX_TOKENS)
    assert d["excluded"] == ["t"]
    assert d["teachers"]["t"]["chains"]["all"]["emptied_by"] == GENERATION_CUT
    assert "the cut at generation.max_tokens kept 0 of 16 rationales on chain all" in describe(d)[0]
    d = decide({"t": table("t", set(), samples=0)}, search({"all": []}), MAX_TOKENS)
    assert describe(d) == ["t: no trial: no training example under any filter chain (it has no cached rationale at "
                           "all)"]


def test_no_teacher_left_fails_naming_every_teacher_and_the_fix():
    tables = {"a": table("a", set()), "b": table("b", set())}
    with pytest.raises(InputError, match=r"no teacher has a training example .*a: correct_only kept 0 of 16 "
                                         r"rationales on chains correct, correct_dedupe; b: .*all=\[\]"):
        check_some_kept(decide(tables, search(CORRECT_ONLY), MAX_TOKENS))


def test_seed_points_without_filters_are_the_first_chains_as_before():
    s = SearchConfig(filter_chains={"short": [{"name": "length", "max_pct": {"range": [50, 100]}},
                                              {"name": "max_per_question", "m": {"choices": [1, 2]}}]})
    (p,) = seed_points(["x"], s)
    assert p["filters"] == "short" and p["filter.short.0.max_pct"] == 75 and p["filter.short.1.m"] == 1
    assert chain_variants("short", s)[0] == {k: v for k, v in p.items() if k.startswith("filter")}
    float_range = SearchConfig(filter_chains={"q": [{"name": "length", "max_pct": {"range": [50.0, 100]}}]})
    assert [v["filter.q.0.max_pct"] for v in chain_variants("q", float_range)] == [75.0, 50.0, 100.0]
    import optuna

    search_space(optuna.trial.FixedTrial(seed_points(["x"], float_range, {"x": chain_variants("q", float_range)[2]})[0]),
                 ["x"], float_range)  # a seed on another value is still a point of the space


def _config(*overrides: str):
    return load_config("experiments/smoke.yaml", ["teachers=[tiny:llama@1, tiny:llama@2, tiny:llama@3]",
                                                  "search.filter_chains={c: [{name: correct_only}], "
                                                  "cd: [{name: correct_only}, {name: dedupe}]}", *overrides])


def _refs(cfg) -> list[TeacherRef]:
    return [TeacherRef(spec=s, name=f"n{i}") for i, s in enumerate(cfg.teachers)]


def test_the_search_glue_gives_no_trial_to_a_teacher_without_data(tmp_path, capsys):
    cfg = _config()
    tables = {"n0": table("n0", set(IDS[:4])), "n1": table("n1", set()), "n2": table("n2", {"p0"})}
    assert allocation_stage(tmp_path, cfg, tables, _refs(cfg), IDS) == ["tiny:llama@1", "tiny:llama@3"]
    saved = json.loads((tmp_path / "usable.json").read_text())
    assert saved["excluded"] == ["n1"] and saved["teachers"]["n2"]["chains"]["c"]["kept"] == 2
    assert not (tmp_path / "allocation.json").exists()  # no rule_out_alpha: allocation.json keeps its meaning
    out = capsys.readouterr().out
    assert "  n1: no trial: no training example under any filter chain (correct_only kept 0 of 16 rationales on " \
           "chains c, cd)" in out
    # with rule_out_alpha both decide: n2 (1 problem against 4) is not significantly behind; n1 has no data
    both = _config("search.rule_out_alpha=0.05")
    assert allocation_stage(tmp_path, both, tables, _refs(both), IDS) == ["tiny:llama@1", "tiny:llama@3"]
    assert json.loads((tmp_path / "allocation.json").read_text())["kept"] == ["n0", "n1", "n2"]
    # a grid is ground truth: every teacher, and no record of a decision it did not make
    grid = _config("search.strategy=grid", "search.learning_rate=[0.01, 0.01]")
    assert allocation_stage(tmp_path, grid, tables, _refs(grid), IDS) == list(grid.teachers)
    assert not (tmp_path / "usable.json").exists()


def test_the_search_fails_before_any_fine_tune_when_no_teacher_has_data(tmp_path):
    cfg = _config()
    tables = {f"n{i}": table(f"n{i}", set()) for i in range(3)}
    with pytest.raises(InputError, match=r"n0: correct_only kept 0 of 16 rationales on chains c, cd; n1: .*n2: .*"
                                         r"search.filter_chains.all=\[\]"):
        allocation_stage(tmp_path, cfg, tables, _refs(cfg), IDS)
    assert json.loads((tmp_path / "usable.json").read_text())["kept"] == []


def test_the_report_shows_a_teacher_given_no_trial(tmp_path):
    run = write_run(tmp_path / "run", finals=None, stage="search")
    for path in run.glob("trials/*/trial.json"):  # SMOL had no training data: it got no trial
        if json.loads(path.read_text())["teacher"] == SMOL:
            path.unlink()
    tables = {QWEN: table(QWEN, set(IDS[:5])), GEMMA: table(GEMMA, {"p1"}), SMOL: table(SMOL, set())}
    (run / "usable.json").write_text(json.dumps(decide(tables, search(CORRECT_ONLY), MAX_TOKENS)))
    r = report.render(run)
    smol = next(t for t in r["teachers"] if t["name"] == SMOL)
    assert smol["verdict"] == "no training data: no trial" and smol["n_trials"] == 0
    assert smol["no_training_data"]["chains"]["correct"]["emptied_by"] == "correct_only"
    assert smol["ruled_out"] is None
    assert next(t for t in r["teachers"] if t["name"] == QWEN)["no_training_data"] is None
    assert r["usable"]["excluded"] == [SMOL]
    assert f"{SMOL} has no training example under any filter chain (no trial)" in r["recommendation"]["text"]
    md = (run / "report.md").read_text()
    assert "No training data (usable.json)" in md
    assert f"- {SMOL}: no trial: no training example under any filter chain (correct_only kept 0 of 16" in md
    assert f"| {SMOL} |" in md and "| 0 |" in md and "| no training data: no trial |" in md


def test_a_report_where_every_teacher_had_data_says_nothing_of_it(tmp_path):
    run = write_run(tmp_path / "run", finals=None, stage="search")
    tables = {n: table(n, set(IDS[:2])) for n in (QWEN, GEMMA, SMOL)}
    (run / "usable.json").write_text(json.dumps(decide(tables, search(CORRECT_ONLY), MAX_TOKENS)))
    r = report.render(run)
    assert all(t["no_training_data"] is None for t in r["teachers"])
    assert "No training data" not in (run / "report.md").read_text()
    # SMOL's trials all ended no_data: that verdict stays (it had trials)
    assert next(t for t in r["teachers"] if t["name"] == SMOL)["verdict"] == "no usable data"
