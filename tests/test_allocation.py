"""Proxy-guided allocation (search/allocation.py, search.rule_out_alpha): which teachers get trials, from literal
rationale tables; the search's glue (run.allocation_stage) and the report's account of a ruled-out teacher.

No Ray, no model: tables are built here, and the report reads a run directory test_report.py's helper writes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from cotgap_ray import report
from cotgap_ray.config import ConfigError, load_config
from cotgap_ray.records import TeacherRef
from cotgap_ray.search.allocation import allocate, describe, samples_per_problem, solved
from cotgap_ray.search.run import allocation_stage
from cotgap_ray.stats import holm, mcnemar_greater_p
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


def test_solved_counts_only_the_first_samples_when_asked():
    t = table({"p0", "p1"}, samples=4)  # correct at sample_idx 3 only
    assert samples_per_problem(t) == 4 and samples_per_problem(t.slice(0, 0)) == 0
    assert solved(t, ["p0", "p1", "p2"]) == solved(t, ["p0", "p1", "p2"], 4) == [True, True, False]
    assert solved(t, ["p0", "p1", "p2"], 3) == [False, False, False]


def test_every_ordered_pair_is_tested_and_holm_runs_over_all_of_them():
    # close: 4 problems only strong solves, 1 only close solves -> p = P(X >= 4 | n=5) = 6/32
    tables = {"weak": table({"p0"}), "strong": table(set(IDS[:24])), "close": table(set(IDS[4:24]) | {"p30"})}
    a = allocate(tables, IDS, alpha=0.05)
    assert a["leader"] == "strong" and a["kept"] == ["strong", "close"] and a["n_tests"] == 6 and a["k_min"] == 2
    weak, close, strong = a["teachers"]["weak"], a["teachers"]["close"], a["teachers"]["strong"]
    assert weak["ruled_out"] and weak["beaten_by"] == weak["versus"] == "strong"
    assert (weak["solved"], weak["versus_solved"], weak["only_versus"], weak["only_this"]) == (1, 24, 23, 0)
    # the smallest of 6 p-values: Holm multiplies it by 6 (the old rule tested 2, against the leader only)
    assert weak["p"] == pytest.approx(2.0**-23) and weak["p_holm"] == pytest.approx(6 * 2.0**-23)
    # third smallest (after weak < strong, and weak < close: 21 vs 1 discordant, 23 / 2^22): 4 * 6/32
    assert not close["ruled_out"] and close["beaten_by"] is None and close["versus"] == "strong"
    assert close["p"] == pytest.approx(6 / 32) and close["p_holm"] == pytest.approx(4 * 6 / 32)
    assert (close["only_versus"], close["only_this"]) == (4, 1)
    # the teacher solving the most: its closest rival (close, 1 vs 4 discordant) is far from beating it
    assert not strong["ruled_out"] and strong["versus"] == "close" and strong["p"] == pytest.approx(31 / 32)
    lines = describe(a)
    assert lines[0] == ("weak: ruled out before any fine-tune, no trial: solves 1 of 40 train problems against 24 "
                        "for strong at 2 samples per problem each (23 only strong, 0 only weak; one-sided exact "
                        "McNemar p = 1.2e-07, Holm over 6 ordered pairs 7.2e-07 < search.rule_out_alpha=0.05)")
    assert lines[-1] == "searched: strong, close (2 of 3 teachers; solved train problems, leader strong)"


def test_a_teacher_can_be_ruled_out_by_one_that_is_not_the_leader():
    # lead solves the most (22) but none of low's problems: 22 vs 10 discordant, p = 0.025, not after Holm;
    # wide solves low's 10 and 11 more: 11 vs 0 discordant, p = 2^-11, Holm 6 * 2^-11 < 0.05
    tables = {"low": table(set(IDS[:10])), "lead": table(set(IDS[10:32])), "wide": table(set(IDS[:21]))}
    a = allocate(tables, IDS, alpha=0.05)
    low = a["teachers"]["low"]
    assert a["leader"] == "lead" and a["kept"] == ["lead", "wide"]
    assert low["beaten_by"] == "wide" and low["p_holm"] == pytest.approx(6 * 2.0**-11)
    assert describe(a)[0].startswith("low: ruled out before any fine-tune, no trial: solves 10 of 40 train "
                                     "problems against 21 for wide at 2 samples per problem each (11 only wide")


def test_a_small_gap_is_not_confidence():
    # 3 vs 0 solved: p = 1/8, not < 0.05 whatever the proxy says; a stricter alpha keeps even a larger gap
    a = allocate({"a": table({"p0", "p1", "p2"}), "b": table(set())}, IDS, alpha=0.05)
    assert a["kept"] == ["a", "b"] and a["teachers"]["b"]["p"] == pytest.approx(1 / 8)
    assert a["teachers"]["b"]["p_holm"] == pytest.approx(2 / 8)  # two ordered pairs
    a = allocate({"a": table(set(IDS[:6])), "b": table(set())}, IDS, alpha=0.01)
    assert a["kept"] == ["a", "b"]  # 2/64 > 0.01
    assert allocate({"a": table(set(IDS[:6])), "b": table(set())}, IDS, alpha=0.05)["kept"] == ["a"]


def test_ties_for_leader_go_to_the_first_teacher_and_no_tie_is_ruled_out():
    a = allocate({"x": table(set(IDS[:10])), "y": table(set(IDS[10:20]))}, IDS, alpha=0.05)
    assert a["leader"] == "x" and a["kept"] == ["x", "y"]  # 10 vs 10 disjoint: one-sided p >= 0.5


def test_a_lone_teacher_is_kept_and_compared_with_nobody():
    a = allocate({"x": table(set(IDS[:10]))}, IDS, alpha=0.05)
    assert a["kept"] == ["x"] and a["n_tests"] == 0
    assert a["teachers"]["x"]["versus"] is None and a["teachers"]["x"]["p"] is None


# ---------------------------------------------------------------- simulated: equal teachers, sampling budget, power

SIM_IDS = [f"p{i}" for i in range(200)]
SIM_ROWS = {k: {"problem_id": pa.array(np.repeat(SIM_IDS, k)), "sample_idx": pa.array(np.tile(np.arange(k), 200))}
            for k in (1, 4)}  # built once: the simulations below build thousands of tables


def sampled_table(rng: np.random.Generator, p_correct: float, samples: int = 1) -> pa.Table:
    """`samples` rationales per problem of SIM_IDS, each correct independently with probability p_correct."""
    return pa.table({**SIM_ROWS[samples], "correct": pa.array(rng.random(200 * samples) < p_correct)})


def leader_rule_rules_out(hits: list[np.ndarray], alpha: float) -> bool:
    """The rule before #33 point 7, on per-problem solved vectors: the teacher solving the most is the leader, each
    other is tested against it (one-sided exact McNemar), Holm over the K - 1: the leader is chosen from the data it
    is then tested on."""
    leader = max(range(len(hits)), key=lambda i: hits[i].sum())
    return any(p < alpha for p in holm([mcnemar_greater_p(hits[leader], h) for i, h in enumerate(hits) if i != leader]))


@pytest.mark.parametrize("k, reps", [(3, 2000), (6, 1000)])
def test_equal_teachers_are_ruled_out_at_most_alpha_of_the_time(k, reps):
    # Each problem solved independently with probability 0.3 by each of k equal teachers: any rule-out is wrong.
    # Measured with seed 0: the leader rule 9.7% (k=3) and 13.6% (k=6); all ordered pairs with Holm 3.7% and 3.1%.
    rng = np.random.default_rng(0)
    alpha, new, old = 0.05, 0, 0
    for _ in range(reps):
        hits = [rng.random(200) < 0.3 for _ in range(k)]  # one sample per problem: solved = correct
        tables = {f"t{i}": pa.table({**SIM_ROWS[1], "correct": pa.array(h)}) for i, h in enumerate(hits)}
        new += len(allocate(tables, SIM_IDS, alpha)["kept"]) < k
        old += leader_rule_rules_out(hits, alpha)
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)  # Monte Carlo tolerance: 3 standard errors
    assert new / reps <= bound, f"equal teachers: some ruled out {new / reps:.1%} of the time, alpha {alpha}"
    assert old / reps > bound  # the simulation can see the error it guards against


def test_a_variant_with_more_samples_does_not_win_by_sampling_budget():
    # Same per-sample solve rate 0.3; "many" draws 4 samples per problem: solved in any of 4 is ~76% against 30%
    rng = np.random.default_rng(0)
    tables = {"one": sampled_table(rng, 0.3), "many": sampled_table(rng, 0.3, samples=4)}
    by_budget = mcnemar_greater_p(solved(tables["many"], SIM_IDS), solved(tables["one"], SIM_IDS))
    assert by_budget < 1e-15  # every sample counted: "one" would be ruled out by budget alone
    a = allocate(tables, SIM_IDS, alpha=0.05)
    assert a["kept"] == ["one", "many"] and a["k_min"] == 1  # counted at 1 sample each: equal teachers
    assert a["teachers"]["many"]["samples_per_problem"] == 4
    assert describe(a)[-1] == ("counted at 1 sample per problem, the fewest of any sampled teacher: the later "
                               "samples of many are not counted, so no teacher wins by sampling budget")


def test_a_control_does_not_lower_k_min():
    # A control's one rationale per problem is a function of the problem (controls.py): more samples would repeat it
    tables = {"control": table(set(IDS[:5]), samples=1), "a": table(set(IDS[:30]), samples=4),
              "b": table(set(IDS[:10]), samples=4)}  # a and b: correct at sample_idx 3 only
    a = allocate(tables, IDS, alpha=0.05, controls=frozenset({"control"}))
    assert a["k_min"] == 4 and a["kept"] == ["a"]
    assert allocate(tables, IDS, alpha=0.05)["k_min"] == 1  # not marked a control: it sets k_min like any teacher
    assert allocate(tables, IDS, alpha=0.05)["kept"] == ["control", "a", "b"]  # nothing solved at sample 0


@pytest.mark.parametrize("k", [2, 6])
def test_a_clearly_worse_teacher_is_still_ruled_out(k):
    rng = np.random.default_rng(1)
    tables = {"weak": sampled_table(rng, 0.1), **{f"t{i}": sampled_table(rng, 0.4) for i in range(1, k)}}
    a = allocate(tables, SIM_IDS, alpha=0.05)
    assert a["teachers"]["weak"]["ruled_out"] and a["kept"] == [f"t{i}" for i in range(1, k)]


def test_describe_reads_an_allocation_json_from_before_the_all_pairs_test():
    old = {"alpha": 0.05, "leader": "strong", "kept": ["strong"], "teachers": {
        "strong": {"solved": 24, "n_problems": 40, "ruled_out": False},
        "weak": {"solved": 1, "n_problems": 40, "leader_solved": 24, "only_leader": 23, "only_this": 0,
                 "p": 1.2e-7, "p_holm": 2.4e-7, "ruled_out": True}}}
    assert describe(old)[0] == ("weak: ruled out before any fine-tune, no trial: solves 1 of 40 train problems "
                                "against 24 for strong (23 only strong, 0 only weak; one-sided exact McNemar "
                                "p = 1.2e-07, Holm 2.4e-07 < search.rule_out_alpha=0.05)")


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
    assert smol["ruled_out"]["solved"] == 1 and smol["ruled_out"]["versus_solved"] == 30
    assert smol["ruled_out"]["beaten_by"] == QWEN
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
