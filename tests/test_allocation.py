"""Proxy-guided allocation (search/allocation.py, search.rule_out_alpha): which teachers get trials, from literal
rationale tables; the search's glue (run.allocation_stage) and the report's account of a ruled-out teacher.

No Ray, no model: tables are built here, and the report reads a run directory test_report.py's helper writes.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cotgap_ray import report
from cotgap_ray.config import ConfigError, load_config
from cotgap_ray.records import TeacherRef
from cotgap_ray.search.allocation import allocate, describe, solved
from cotgap_ray.search.run import allocation_stage
from cotgap_ray.stats import mcnemar_greater_p
from tests.test_report import GEMMA, QWEN, SMOL, write_run

IDS = [f"p{i}" for i in range(40)]


def table(solved_ids: set[str], samples: int = 2) -> pa.Table:
    """Rationales for every problem of IDS, `samples` each; a problem in solved_ids has its last sample correct."""
    # text and n_tokens: allocation_stage also counts the rows each filter chain keeps (search/usable.py)
    rows = [{"problem_id": pid, "sample_idx": k, "correct": pid in solved_ids and k == samples - 1,
             "text": f"{pid} {k}", "n_tokens": 10} for pid in IDS for k in range(samples)]
    return pa.Table.from_pylist(rows)


def test_one_sided_mcnemar_is_exact():
    x = [True] * 5 + [False] * 5
    assert mcnemar_greater_p(x, [False] * 10) == 1 / 32  # b=5, c=0
    assert mcnemar_greater_p([False] * 10, x) == 1.0  # the other direction: nothing in its favour
    assert mcnemar_greater_p(x, x) == 1.0  # no discordant pair
    # b=3, c=1: P(X >= 3 | n=4) = (4 + 1) / 16
    assert mcnemar_greater_p([True, True, True, False, True], [False, False, False, True, True]) == 5 / 16


def test_solved_counts_a_problem_once_and_missing_rows_as_unsolved():
    t = table({"p0", "p1"}).filter(pa.array([r != "p1" for r in table(set())["problem_id"].to_pylist()]))
    assert solved(t, ["p0", "p1", "p2"]) == [True, False, False]  # p1 has no row at all: unsolved


def test_a_teacher_far_behind_the_leader_is_ruled_out_the_close_one_is_kept():
    # close: 4 problems only the leader solves, 1 only close solves -> p = P(X >= 4 | n=5) = 6/32
    tables = {"weak": table({"p0"}), "strong": table(set(IDS[:24])), "close": table(set(IDS[4:24]) | {"p30"})}
    a = allocate(tables, IDS, alpha=0.05)
    assert a["leader"] == "strong" and a["kept"] == ["strong", "close"]
    weak, close = a["teachers"]["weak"], a["teachers"]["close"]
    assert weak["ruled_out"] and weak["solved"] == 1 and weak["only_leader"] == 23 and weak["only_this"] == 0
    assert weak["p"] == pytest.approx(2.0**-23) and weak["p_holm"] == pytest.approx(2 * 2.0**-23)  # Holm over two
    assert not close["ruled_out"] and close["p"] == pytest.approx(6 / 32) and close["p_holm"] == pytest.approx(6 / 32)
    assert (close["only_leader"], close["only_this"]) == (4, 1)
    assert a["teachers"]["strong"]["p"] is None and not a["teachers"]["strong"]["ruled_out"]
    lines = describe(a)
    assert lines[0].startswith("weak: ruled out before any fine-tune, no trial: solves 1 of 40 train problems "
                               "against 24 for strong")
    assert lines[-1] == "searched: strong, close (2 of 3 teachers; solved train problems, leader strong)"


def test_a_small_gap_is_not_confidence():
    # 3 vs 0 solved: p = 1/8, not < 0.05 whatever the proxy says; a stricter alpha keeps even a larger gap
    a = allocate({"a": table({"p0", "p1", "p2"}), "b": table(set())}, IDS, alpha=0.05)
    assert a["kept"] == ["a", "b"] and a["teachers"]["b"]["p"] == pytest.approx(1 / 8)
    a = allocate({"a": table(set(IDS[:6])), "b": table(set())}, IDS, alpha=0.01)
    assert a["kept"] == ["a", "b"]  # 1/64 > 0.01
    assert allocate({"a": table(set(IDS[:6])), "b": table(set())}, IDS, alpha=0.05)["kept"] == ["a"]


def test_ties_for_leader_go_to_the_first_teacher_and_no_tie_is_ruled_out():
    a = allocate({"x": table(set(IDS[:10])), "y": table(set(IDS[10:20]))}, IDS, alpha=0.05)
    assert a["leader"] == "x" and a["kept"] == ["x", "y"]  # 10 vs 10 disjoint: one-sided p >= 0.5


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        allocate({"a": table(set())}, IDS, alpha=0.0)
    with pytest.raises(ValueError, match="train split"):
        allocate({"a": table(set())}, [], alpha=0.05)


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "true"])
def test_config_refuses_an_alpha_outside_0_1(value):
    with pytest.raises(ConfigError, match="rule_out_alpha"):
        load_config("experiments/smoke.yaml", [f"search.rule_out_alpha={value}"])


def test_the_search_glue_keeps_specs_in_config_order_and_a_grid_ignores_it(tmp_path, capsys):
    cfg = load_config("experiments/smoke.yaml", ["teachers=[tiny:llama@1, tiny:llama@2, tiny:llama@3]",
                                                 "search.rule_out_alpha=0.05"])
    refs = [TeacherRef(spec=s, name=f"n{i}") for i, s in enumerate(cfg.teachers)]
    tables = {"n0": table(set(IDS[:20])), "n1": table({"p0"}), "n2": table(set(IDS[:18]))}
    assert allocation_stage(tmp_path, cfg, tables, refs, IDS) == ["tiny:llama@1", "tiny:llama@3"]
    saved = json.loads((tmp_path / "allocation.json").read_text())
    assert saved["kept"] == ["n0", "n2"] and saved["teachers"]["n1"]["ruled_out"]
    # smoke.yaml's chains 'all' and 'one_per_question' train on wrong rationales too: the proxy does not cover them
    assert saved["chains_beyond_the_proxy"] == ["all", "one_per_question"]
    out = capsys.readouterr().out
    assert "caution: filter chain(s) all, one_per_question have no correct_only step" in out
    correct_only = load_config("experiments/smoke.yaml", ["teachers=[tiny:llama@1, tiny:llama@2, tiny:llama@3]",
                                                          "search.rule_out_alpha=0.05",
                                                          "search.filter_chains={c: [{name: correct_only}], "
                                                          "cd: [{name: correct_only}, {name: dedupe}]}"])
    allocation_stage(tmp_path, correct_only, tables, refs, IDS)
    assert json.loads((tmp_path / "allocation.json").read_text())["chains_beyond_the_proxy"] == []
    assert "caution" not in capsys.readouterr().out
    grid = load_config("experiments/smoke.yaml", ["teachers=[tiny:llama@1, tiny:llama@2, tiny:llama@3]",
                                                  "search.rule_out_alpha=0.05", "search.strategy=grid",
                                                  "search.learning_rate=[0.01, 0.01]"])
    assert allocation_stage(tmp_path, grid, tables, refs, IDS) == list(grid.teachers)
    assert not (tmp_path / "allocation.json").exists()  # the grid's run directory says nothing of an allocation


def test_the_report_says_a_ruled_out_teacher_got_no_trial(tmp_path):
    run = write_run(tmp_path / "run", finals=None, stage="search")
    for path in run.glob("trials/*/trial.json"):  # SMOL was ruled out: it has no trial
        if json.loads(path.read_text())["teacher"] == SMOL:
            path.unlink()
    tables = {QWEN: table(set(IDS[:30])), GEMMA: table(set(IDS[3:28]) | {"p35", "p36"}), SMOL: table({"p0"})}
    allocation = allocate(tables, IDS, alpha=0.05)
    (run / "allocation.json").write_text(json.dumps(allocation))
    r = report.render(run)
    smol = next(t for t in r["teachers"] if t["name"] == SMOL)
    assert smol["verdict"] == "ruled out before any fine-tune (proxy)" and smol["n_trials"] == 0
    assert smol["ruled_out"]["solved"] == 1 and smol["ruled_out"]["leader_solved"] == 30
    assert next(t for t in r["teachers"] if t["name"] == QWEN)["ruled_out"] is None
    assert r["allocation"]["kept"] == [QWEN, GEMMA]
    md = (run / "report.md").read_text()
    assert "Proxy-guided allocation (search.rule_out_alpha = 0.05)" in md
    assert f"- {SMOL}: ruled out before any fine-tune, no trial: solves 1 of 40" in md
    assert f"{SMOL} is ruled out before any fine-tune (search.rule_out_alpha: no trial)" in r["recommendation"]["text"]


def test_a_report_without_allocation_says_nothing_of_it(tmp_path):
    r = report.render(write_run(tmp_path / "run", finals=None, stage="search"))
    assert r["allocation"] is None and all(t["ruled_out"] is None for t in r["teachers"])
    assert "Proxy-guided allocation" not in (tmp_path / "run" / "report.md").read_text()
