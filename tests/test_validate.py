"""validate.py (a search measured against a grid run) and the statistics behind it, on literal run directories.

No Ray, no model: each test writes the files two searches would have written into tmp_path, with per-problem test
results chosen so that regret, compute fractions and proxy correlations have known values. The regret cases of
issue 33 (two baselines, an interval that missed its own mean, seed means treated as fixed, "contains 0" as success)
are literal tests here.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest

from cotgap_ray import report, validate
from cotgap_ray.config import SearchConfig
from cotgap_ray.records import EpochRecord, FinalRecord, SeedRecord, TrialRecord, record_from_dict, write_json
from cotgap_ray.stats import compare_runs, kendall_tau, mcnemar_interval, spearman

A, B, C = "teacher-a", "teacher-b", "teacher-c"
IDS = [f"p{i}" for i in range(10)]
BASELINE = [i == 0 for i in range(10)]  # the student alone solves p0 only
TASK = {"name": "reasoning_gym:basic_arithmetic", "n_train": 40, "n_dev": 20, "n_test": 10, "seed": 3}


# ----------------------------------------------------------------------------------------------- statistics

def test_spearman_and_kendall_of_known_vectors():
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / 95**0.5)  # 0.8208, ties averaged
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-4 / 72**0.5)  # tau-b, ties in both
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # a perfect order with ties still reaches 1
    assert spearman([0.6, 0.4, 0.2], [0.3, 0.1, 0.5]) == pytest.approx(-0.5)
    assert kendall_tau([0.6, 0.4, 0.2], [0.3, 0.1, 0.5]) == pytest.approx(-1 / 3)


@pytest.mark.parametrize("x, y", [([1, 2], [2, 1]), ([], []), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4])])
def test_correlations_say_nothing_below_three_pairs_or_for_a_constant(x, y):
    assert spearman(x, y) is None and kendall_tau(x, y) is None


def test_correlations_reject_unpaired_vectors():
    with pytest.raises(ValueError, match="one y per x"):
        spearman([1, 2, 3], [1, 2])


# ------------------------------------------------------------------------------------------- run directories

def _trial(tid: str, teacher: str, dev_delta: float, epochs: int = 2, status: str = "ok") -> TrialRecord:
    return TrialRecord(trial_id=tid, teacher=teacher, params={"teacher": f"packaged:{teacher}", "lora.rank": 8},
                       status=status, dev_delta=dev_delta, train_tokens=1000,
                       epochs=[EpochRecord(epoch=e, seconds=10.0, eval_seconds=5.0, dev_delta=dev_delta)
                               for e in range(1, epochs + 1)])


def _solved(k: int) -> list[bool]:
    """After fine-tuning: p0..p(k-1) correct (p0 was already correct: delta (k - 1) / 10)."""
    return [i < k for i in range(10)]


def _final(teacher: str, trial_id: str, best_dev: float, by_seed: list[list[bool]], baseline: list[bool] = BASELINE,
           ids: list[str] = IDS, params: dict | None = None) -> FinalRecord:
    n = len(ids)
    accuracy, before = sum(map(sum, by_seed)) / (n * len(by_seed)), sum(baseline) / n
    return FinalRecord(teacher=teacher, spec=f"packaged:{teacher}", trial_id=trial_id, best_dev_delta=best_dev,
                       params=params or {}, seeds=[SeedRecord(seed=s) for s in range(len(by_seed))], n=n,
                       test_accuracy=accuracy, baseline_test_accuracy=before, delta=accuracy - before,
                       delta_ci95=[accuracy - before - 0.1, accuracy - before + 0.1], p_value=0.5,
                       test_problem_ids=ids, baseline_test_correct=baseline, test_correct_by_seed=by_seed)


def write_run(run: Path, trials: list[TrialRecord], finals: list[FinalRecord], proxies: dict | None = None,
              strategy: str | None = None, **config) -> Path:
    cfg = {"name": run.name, "student": "packaged:smollm2-135m-instruct",
           "teachers": [f"packaged:{t}" for t in (A, B, C)], "task": TASK, "confirm": {"seeds": 2}, **config}
    if strategy and "strategy" in {f.name for f in fields(SearchConfig)}:  # the key arrives with the grid strategy
        cfg["search"] = {"strategy": strategy}
    write_json(run / "config.json", {"fingerprint": run.name, "config": cfg,
                                     "teachers": [{"spec": f"packaged:{t}", "name": t} for t in (A, B, C)]})
    write_json(run / "proxies.json", proxies or {})
    write_json(run / "status.json", {"stage": "done"})
    for t in trials:
        write_json(run / "trials" / t.trial_id / "trial.json", t)
    for f in finals:
        write_json(run / "final" / f"{f.teacher}.json", f)
    return run


# Ordered like the grid's dev deltas (A > B > C); student_nll lower-is-better; correct_rows (higher-is-better)
# ordered against them; mean_tokens and the cut at max_tokens are descriptions, not proxies.
PROXIES = {A: {"spec": f"packaged:{A}", "teacher_accuracy": 0.6, "student_nll": 1.0, "mean_tokens": 100.0, "rank": 1,
               "correct_rows": 10, "student_rsr": 2.0, "generation_seconds": 9.0, "max_tokens": 256,
               "truncated_rows": 1, "truncated_fraction": 0.01},
           B: {"spec": f"packaged:{B}", "teacher_accuracy": 0.4, "student_nll": 2.0, "mean_tokens": 200.0, "rank": 2,
               "correct_rows": 20, "student_rsr": None, "generation_seconds": 5.0, "max_tokens": 256,
               "truncated_rows": 2, "truncated_fraction": 0.02},
           C: {"spec": f"packaged:{C}", "teacher_accuracy": 0.2, "student_nll": 3.0, "mean_tokens": 300.0, "rank": 3,
               "correct_rows": 30, "generation_seconds": 1.0}}


def grid_run(tmp_path: Path) -> Path:
    """Six trials, two epochs each (12 trial-epochs, 180 s). Dev: A 0.05 > B 0.03 > C 0.00, so the grid chooses A
    (test +0.3, seeds +0.4 / +0.2); on test C is best (+0.5): the oracle; B +0.1."""
    trials = [_trial("g1", A, 0.05), _trial("g2", A, 0.02), _trial("g3", B, 0.03), _trial("g4", B, 0.01),
              _trial("g5", C, 0.00), _trial("g6", C, -0.01)]
    finals = [_final(A, "g1", 0.05, [_solved(5), _solved(3)]), _final(B, "g3", 0.03, [_solved(2), _solved(2)]),
              _final(C, "g5", 0.00, [_solved(6), _solved(6)])]
    return write_run(tmp_path / "grid", trials, finals, PROXIES, strategy="grid")


def search_run(tmp_path: Path, picks: str, **config) -> Path:
    """Two trials, three trial-epochs (45 s): a quarter of the grid's. The teacher `picks` leads on dev; its test
    results equal the grid's for that teacher."""
    dev = {A: 0.04, B: 0.00} if picks == A else {A: 0.00, B: 0.04}
    trials = [_trial("s1", A, dev[A]), _trial("s2", B, dev[B], epochs=1, status="stopped")]
    by_seed = {A: [_solved(5), _solved(3)], B: [_solved(2), _solved(2)]}
    finals = [_final(t, f"s{i}", dev[t], by_seed[t]) for i, t in enumerate((A, B), start=1)]
    return write_run(tmp_path / "search", trials, finals, PROXIES, **config)


def _proxy(sq: dict, proxy: str, target: str, source: str = "grid") -> dict:
    (row,) = [p for p in sq["proxies"] if p["proxy"] == proxy and p["target"] == target and p["source"] == source]
    return row


# -------------------------------------------------------------------------------------------------- validate

def test_search_that_picks_the_grids_teacher_has_no_regret(tmp_path):
    """The same configuration (teacher, point, settings) in both runs: regret 0 by definition and the verdict met;
    what the two confirmations measured is kept apart as re-training noise."""
    sq = validate.search_quality(search_run(tmp_path, A), grid_run(tmp_path))
    assert sq["same_choice"] is True
    assert sq["grid_choice"]["teacher"] == sq["search_choice"]["teacher"] == A
    assert sq["grid_choice"]["test_delta"] == pytest.approx(0.3) and sq["grid_choice"]["trial_id"] == "g1"
    assert sq["grid_choice"]["test_accuracy"] == pytest.approx(0.4)
    r = sq["regret"]
    assert r["same_configuration"] is True and r["value"] == 0.0 and r["ci95"] == [0.0, 0.0]
    assert r["verdict"] == "met" and "by definition" in r["interval"]
    assert r["measured"]["value"] == 0.0 and r["measured"]["n_problems"] == 10
    assert sq["compute"]["trial_epochs"] == {"search": 3, "grid": 12, "fraction": 0.25}
    assert sq["compute"]["seconds"] == {"search": 45.0, "grid": 180.0, "fraction": 0.25}


def test_a_search_that_ruled_teachers_out_says_whether_the_grids_answer_was_one(tmp_path):
    search = search_run(tmp_path, A)
    assert validate.search_quality(search, grid_run(tmp_path))["allocation"] is None  # nothing ruled out by design
    entry = {"solved": 1, "n_problems": 40, "leader_solved": 20, "only_leader": 19, "only_this": 0, "p": 1e-6,
             "p_holm": 2e-6}
    write_json(search / "allocation.json", {"alpha": 0.05, "leader": A, "kept": [A, B], "teachers": {
        A: {**entry, "ruled_out": False}, B: {**entry, "ruled_out": False}, C: {**entry, "ruled_out": True}}})
    sq = validate.validate(search, tmp_path / "grid")
    # C, ruled out, is the oracle (best on test) in this grid; the grid's choice A was kept
    assert sq["allocation"] == {"alpha": 0.05, "ruled_out": [C], "grid_choice_ruled_out": False,
                                "oracle_ruled_out": True}
    md = (search / "report.md").read_text()
    assert f"ruled out {C}; the grid's choice was not among them, the oracle WAS" in md


def test_one_seed_and_identical_answers_give_an_exact_interval_never_zero_width(tmp_path):
    """One confirmation seed each: each problem's regret is -1, 0 or +1 and the interval is the exact one
    (stats.mcnemar_interval). The same configuration trained twice answers identically, where a bootstrap over
    problems gave [0, 0] (setting A, 2026-12-02): its regret is 0 by definition now, and what was measured keeps an
    interval that still allows a disagreement rate it cannot rule out on 10 problems (Clopper-Pearson upper bound of
    0 of 10: 30.85%)."""
    same = [_final(A, "g1", 0.05, [_solved(4)])]
    grid = write_run(tmp_path / "grid", [_trial("g1", A, 0.05)], same, PROXIES, strategy="grid")
    search = write_run(tmp_path / "search", [_trial("g1", A, 0.05)], same, PROXIES)
    r = validate.search_quality(search, grid)["regret"]
    assert r["value"] == 0.0 and r["same_configuration"] and r["measured"]["value"] == 0.0
    assert r["measured"]["ci95"] == pytest.approx([-0.3085, 0.3085], abs=1e-4)
    assert "exact" in r["measured"]["test"]
    # Another configuration of the same teacher (lora.rank 16): measured. One problem only the grid's adapter
    # solves: b = 0, c = 1 of 10, the exact McNemar interval of the adapters' answers.
    other = write_run(tmp_path / "search2", [_trial("s1", A, 0.05)],
                      [_final(A, "s1", 0.05, [_solved(3)], params={"lora.rank": 16})], PROXIES)
    r = validate.search_quality(other, grid)["regret"]
    assert not r["same_configuration"] and r["value"] == pytest.approx(0.1)
    assert r["ci95"] == pytest.approx(list(mcnemar_interval(0, 1, 10))) and r["test"] == "exact McNemar"
    assert r["verdict"] == "undecided (interval wider than the margin allows)"


def test_several_seeds_use_the_seed_aware_interval_even_when_every_problem_is_whole(tmp_path):
    """Two seeds that agree per problem give regrets of -1, 0 or +1 too, but the exact single-seed interval would
    ignore seed-to-seed variation: compare_seeds' hull (stats.compare_runs) is used."""
    grid = write_run(tmp_path / "grid", [_trial("g1", A, 0.05)], [_final(A, "g1", 0.05, [_solved(4), _solved(4)])],
                     PROXIES, strategy="grid")
    search = write_run(tmp_path / "search", [_trial("s1", A, 0.05)],
                       [_final(A, "s1", 0.05, [_solved(2)] * 2, params={"lora.rank": 16})], PROXIES)
    r = validate.search_quality(search, grid)["regret"]
    assert r["value"] == pytest.approx(0.2) and "hull" in r["interval"] and r["seeds"] == [2, 2]
    assert r["ci95"] == compare_runs([_solved(4)] * 2, [_solved(2)] * 2)["ci95"]


def test_search_that_picks_a_worse_teacher_has_the_difference_as_regret(tmp_path):
    sq = validate.search_quality(search_run(tmp_path, B), grid_run(tmp_path))
    assert sq["same_choice"] is False and sq["search_choice"]["teacher"] == B
    # grid's A: test accuracy 0.4 (seeds solve 5 and 3 of 10); search's B: 0.2 (2 and 2); on p2, p3, p4 their
    # per-problem means differ by 1, 0.5, 0.5.
    assert sq["regret"]["value"] == pytest.approx(0.4 - 0.2)
    lo, hi = sq["regret"]["ci95"]
    assert lo <= 0.2 <= hi and "hull" in sq["regret"]["interval"] and sq["regret"]["p_value"] > 0
    oracle = sq["oracle"]
    assert oracle["teacher"] == C and oracle["test_accuracy"] == pytest.approx(0.6)
    assert "information only" in oracle["label"]
    assert oracle["search_regret"]["value"] == pytest.approx(0.4)
    assert oracle["grid_choice_regret"]["value"] == pytest.approx(0.2)


def test_the_same_teacher_cut_at_another_epoch_is_another_configuration(tmp_path):
    """ASHA stopped the search's trial after 1 of 2 epochs: its confirmation re-trains that cut (search/confirm.py),
    so it is not the grid's configuration although teacher and point agree: measured, not 0 by definition."""
    grid = grid_run(tmp_path)
    search = write_run(tmp_path / "search", [_trial("s1", A, 0.05, epochs=1, status="stopped")],
                       [_final(A, "s1", 0.05, [_solved(5), _solved(3)])], PROXIES)
    r = validate.search_quality(search, grid)["regret"]
    assert r["same_configuration"] is False and r["value"] == 0.0 and r["ci95"][0] < 0 < r["ci95"][1]
    assert "measured" not in r


# ---------------------------------------------------------------------------- regret: issue 33's literal cases

P200 = [f"q{i:03d}" for i in range(200)]


def _runs(tmp_path: Path, grid_final: FinalRecord, search_final: FinalRecord) -> tuple[Path, Path]:
    """A search and a grid of one trial each, whose confirmations are the given finals."""
    grid = write_run(tmp_path / "grid", [_trial(grid_final.trial_id, grid_final.teacher, 0.05)], [grid_final],
                     PROXIES, strategy="grid")
    search = write_run(tmp_path / "search", [_trial(search_final.trial_id, search_final.teacher, 0.05)],
                       [search_final], PROXIES)
    return search, grid


def _only(*ranges: range, n: int = 200) -> list[bool]:
    return [any(i in r for r in ranges) for i in range(n)]


def test_regret_pairs_the_adapters_answers_so_different_baselines_cancel(tmp_path):
    """Both adapters right on the same 20 of 200 problems; the grid's baseline (its own engine start) right on 6
    problems the search's is not. The old difference of deltas said -3.0 [-6.4, -0.1]: the search 'better' by
    what its baseline lacked. The adapters' answers are identical: regret 0, and the interval contains 0."""
    right = _only(range(100, 120))
    grid_final = _final(A, "g1", 0.05, [right], baseline=_only(range(6)), ids=P200)
    search_final = _final(B, "s1", 0.05, [right], baseline=_only(), ids=P200)
    assert grid_final.delta - search_final.delta == pytest.approx(-0.03)  # what the old code reported
    sq = validate.search_quality(*_runs(tmp_path, grid_final, search_final))
    r = sq["regret"]
    assert r["value"] == 0.0 and r["ci95"][0] < 0 < r["ci95"][1]  # old: -0.03, [-0.064, -0.001]
    assert r["ci95"] == pytest.approx(list(mcnemar_interval(0, 0, 200))) and r["n_problems"] == 200
    assert not r["same_configuration"]
    assert any("baselines answer 6 of the 200 test problems differently" in n for n in sq["notes"])


def test_regret_interval_is_exact_for_what_it_computes(tmp_path):
    """The old per-problem values (differences of deltas) 20 x (+2), 40 x (-1), 140 x 0 had mean 0 and the interval
    [-41.8, -3.1] (signs counted, then scaled by 2): it missed its own mean. From the adapters' answers the same runs
    give 20 problems only the grid's adapter solves and 20 only the search's: regret 0, and the exact McNemar
    interval of b = c = 20 of 200, which contains it."""
    grid_after = _only(range(0, 20), range(40, 60))
    search_after = _only(range(20, 40), range(40, 60))
    grid_base, search_base = _only(range(40, 60)), _only(range(0, 20))
    grid_final = _final(A, "g1", 0.05, [grid_after], baseline=grid_base, ids=P200)
    search_final = _final(B, "s1", 0.05, [search_after], baseline=search_base, ids=P200)
    old = [(g - gb) - (s - sb) for g, gb, s, sb in zip(grid_after, grid_base, search_after, search_base)]
    assert old.count(2) == 20 and old.count(-1) == 40 and old.count(0) == 140 and sum(old) == 0
    r = validate.search_quality(*_runs(tmp_path, grid_final, search_final))["regret"]
    assert r["value"] == 0.0 and r["ci95"][0] <= r["value"] <= r["ci95"][1]
    assert r["ci95"] == pytest.approx(list(mcnemar_interval(20, 20, 200)))
    assert r["p_value"] == pytest.approx(1.0)  # b = c: the exact McNemar test cannot reject


def test_multi_seed_regret_interval_agrees_with_the_exact_sign_test(tmp_path):
    """Two seeds each; one of the grid's seeds solves 4 of 100 problems nothing else does: per-problem regret +0.5
    on 4 problems. The old bootstrap over problems treated the seed means as fixed: [0.005, 0.04], excluding 0,
    while the exact sign test of 4 positive of 4 gives p = 2 / 2^4 = 0.125. The seed-aware interval contains 0, its
    sign-flip part's p agrees with the exact one, and the p reported is the hull's (not below 0.05: they agree)."""
    ids = P200[:100]
    none = [False] * 100
    grid_final = _final(A, "g1", 0.05, [_only(range(4), n=100), none], baseline=none, ids=ids)
    search_final = _final(B, "s1", 0.05, [none, none], baseline=none, ids=ids)
    r = validate.search_quality(*_runs(tmp_path, grid_final, search_final))["regret"]
    assert r["value"] == pytest.approx(0.02) and r["ci95"][0] < 0 < r["ci95"][1]  # old: [0.005, 0.04]
    assert r["seeds"] == [2, 2]
    exact_sign_test = 2 * math.comb(4, 0) / 2**4
    assert exact_sign_test == 0.125 and abs(r["p_parts"]["sign_flip_inversion"] - exact_sign_test) < 0.01
    assert r["p_value"] >= 0.05 and r["p_value"] == max(r["p_parts"].values())
    assert r["verdict"] == "undecided (interval wider than the margin allows)"


@pytest.mark.parametrize("ci95, verdict", [([-0.096, 0.096], "undecided (interval wider than the margin allows)"),
                                           ([-0.01, 0.02], "met"), ([-0.05, 0.03], "met"), ([-0.2, -0.1], "met"),
                                           ([0.04, 0.10], "not met"), (None, "undecided (no interval)")])
def test_non_inferiority_needs_the_upper_end_within_the_margin(ci95, verdict):
    """'The regret CI contains 0' counted [-9.6, +9.6] points as success: noise. Now met only when the interval's
    upper end is at most the margin (3 points): [-1, +2] is met, [-9.6, +9.6] is undecided."""
    assert validate.REGRET_MARGIN == 0.03
    assert validate.non_inferiority(ci95, validate.REGRET_MARGIN) == verdict


def test_the_margin_is_reported_and_set_on_the_command_line(tmp_path, capsys):
    search, grid = search_run(tmp_path, B), grid_run(tmp_path)
    assert validate.main([str(search), str(grid)]) == 0
    assert "(non-inferiority: the regret interval's upper end at most 3 points): undecided" in capsys.readouterr().out
    assert validate.main([str(search), str(grid), "--margin", "60", "--json"]) == 0  # 60 points: anything is met
    r = json.loads(capsys.readouterr().out)["regret"]
    assert r["margin"] == pytest.approx(0.6) and r["verdict"] == "met"
    assert validate.main([str(search), str(grid), "--margin", "-1"]) == 2
    assert "--margin" in capsys.readouterr().err


def test_proxy_correlations_respect_the_proxys_direction(tmp_path):
    sq = validate.search_quality(search_run(tmp_path, A), grid_run(tmp_path))
    dev, test = "grid_best_dev_delta", "grid_test_delta"
    for proxy in ("teacher_accuracy", "student_nll", "rank"):  # lower NLL / rank negated: all predict dev perfectly
        row = _proxy(sq, proxy, dev)
        assert row["spearman"] == pytest.approx(1.0) and row["kendall_tau"] == pytest.approx(1.0) and row["n"] == 3
    assert _proxy(sq, "student_nll", dev)["direction"] == "lower"
    correct_rows = _proxy(sq, "correct_rows", dev)  # higher-is-better; here more correct data, worse teacher
    assert correct_rows["direction"] == "higher" and correct_rows["spearman"] == pytest.approx(-1.0)
    acc_test = _proxy(sq, "teacher_accuracy", test)  # test deltas A 0.3, B 0.1, C 0.5
    assert acc_test["spearman"] == pytest.approx(-0.5) and acc_test["kendall_tau"] == pytest.approx(-1 / 3)
    rsr = _proxy(sq, "student_rsr", dev)  # only A has a value (B's is null, C has none): n = 1, no correlation
    assert rsr["n"] == 1 and rsr["spearman"] is None and rsr["kendall_tau"] is None
    for name in ("generation_seconds", "mean_tokens", "max_tokens", "truncated_rows", "truncated_fraction"):
        # a cost and descriptions of the rationales, not proxies
        assert not [p for p in sq["proxies"] if p["proxy"] == name]
    assert {p["source"] for p in sq["proxies"]} == {"grid"}  # the search's proxies.json is the same


def test_the_student_proxies_are_lower_is_better_local_naturalness_included():
    """student_local_nll (arXiv 2510.03988: lower = more natural to the student) is measured like student_nll: a
    teacher with a lower value predicted better, so an order matching the truth correlates +1, not -1."""
    truth = {"grid_best_dev_delta": {"a": 0.05, "b": 0.03, "c": 0.00}}
    proxies = {"a": {"student_local_nll": 1.0, "student_nll": 1.0}, "b": {"student_local_nll": 2.0, "student_nll": 2.0},
               "c": {"student_local_nll": 3.0, "student_nll": 3.0}}
    rows = {r["proxy"]: r for r in validate.correlations(proxies, "grid", truth)}
    assert rows["student_local_nll"]["direction"] == "lower" and rows["student_local_nll"]["spearman"] == 1.0
    assert rows["student_local_nll"]["holm_family"] == 2  # it counts in the Holm family beside student_nll


def test_a_search_with_its_own_proxies_is_judged_too(tmp_path):
    search = search_run(tmp_path, A)
    write_json(search / "proxies.json", {**PROXIES, C: {**PROXIES[C], "teacher_accuracy": 0.9}})
    sq = validate.search_quality(search, grid_run(tmp_path))
    assert _proxy(sq, "teacher_accuracy", "grid_best_dev_delta", "search")["spearman"] == pytest.approx(-0.5)


def test_proxy_correlations_carry_exact_p_holm_and_a_bootstrap_interval_over_test_problems(tmp_path):
    """Issue 33 point 8: a rank correlation of 3 teachers is reported with its uncertainty. A perfect ranking of 3 is
    a 1-in-6 event (exact one-sided permutation p), Holm over the 4 proxies of the family (teacher_accuracy,
    student_nll, rank: p 1/6; correct_rows: p 1) makes it 4/6; the test delta's interval is a bootstrap over the 10
    test problems, the dev delta's is n/a (trials keep no per-problem dev answers)."""
    sq = validate.search_quality(search_run(tmp_path, A), grid_run(tmp_path))
    dev, test = "grid_best_dev_delta", "grid_test_delta"
    for proxy in ("teacher_accuracy", "student_nll", "rank"):
        row = _proxy(sq, proxy, dev)
        assert row["spearman_p"] == pytest.approx(1 / 6) and row["kendall_p"] == pytest.approx(1 / 6)
        assert row["spearman_p_holm"] == pytest.approx(4 / 6) and row["kendall_p_holm"] == pytest.approx(4 / 6)
        assert row["holm_family"] == 4 and row["p_test"] == "one-sided permutation, exact (all n! orderings)"
        assert row["spearman_ci95"] is None and "trials keep no per-problem dev answers" in row["ci95_from"]
    correct_rows = _proxy(sq, "correct_rows", dev)  # ranks them backwards: p 1, one-sided
    assert correct_rows["spearman_p"] == pytest.approx(1.0) and correct_rows["spearman_p_holm"] == pytest.approx(1.0)
    rsr = _proxy(sq, "student_rsr", dev)  # one teacher: no p, outside the family
    assert rsr["spearman_p"] is None and rsr["spearman_p_holm"] is None
    acc_test = _proxy(sq, "teacher_accuracy", test)  # test deltas A 0.3, B 0.1, C 0.5: Spearman -0.5
    assert acc_test["spearman_p"] == pytest.approx(5 / 6)  # rho of the 6 orderings: 1, .5, .5, -.5, -.5, -1
    lo, hi = acc_test["spearman_ci95"]
    assert -1.0 <= lo <= -0.5 <= hi <= 1.0 and lo < hi
    assert acc_test["ci95_from"].startswith("percentile bootstrap over the 10 test problems")
    md = "\n".join(report.search_quality_markdown(sq))
    assert "| Spearman | p | Holm p | 95% CI (test problems) | Kendall tau-b | p | Holm p |" in md
    assert "| teacher_accuracy | higher | grid | grid_best_dev_delta | +1.00 | 0.167 | 0.667 | n/a | +1.00 |" in md
    interval = f"[{lo:+.2f}, {hi:+.2f}]"
    assert f"| teacher_accuracy | higher | grid | grid_test_delta | -0.50 | 0.833 | 1.000 | {interval} |" in md


def test_grid_problems_average_to_the_test_deltas(tmp_path):
    grid = report.load_run(grid_run(tmp_path))
    per_problem = validate.grid_problems(grid)["grid_test_delta"]
    truths = validate.grid_truths(grid)["grid_test_delta"]
    assert set(per_problem) == {A, B, C}
    for teacher, values in per_problem.items():
        assert sum(values.values()) / len(values) == pytest.approx(truths[teacher])
    assert per_problem[A]["p3"] == pytest.approx(0.5)  # seeds solve p0..p4 and p0..p2: p3 is right in one of two


def test_best_of_8_proxies_at_4_teachers_is_not_evidence():
    """Issue 33 point 8: at n = 4 a Spearman of 1 is a 1-in-24 event; the best of 8 proxies reaching it is no
    evidence, and Holm over the 8 says so (adjusted p 8/24)."""
    teachers = ["t1", "t2", "t3", "t4"]
    truth = {"grid_best_dev_delta": dict(zip(teachers, [0.05, 0.03, 0.02, -0.01]))}
    orders = [[4, 3, 2, 1], [1, 2, 3, 4], [2, 1, 4, 3], [3, 4, 1, 2], [1, 3, 2, 4], [4, 1, 3, 2], [2, 4, 1, 3],
              [3, 1, 4, 2]]  # proxy k's value per teacher: only the first ranks them like the truth
    proxies = {t: {f"proxy{k}": float(o[i]) for k, o in enumerate(orders)} for i, t in enumerate(teachers)}
    rows = validate.correlations(proxies, "grid", truth)
    best = max(rows, key=lambda r: r["spearman"])
    assert best["proxy"] == "proxy0" and best["spearman"] == pytest.approx(1.0) and best["n"] == 4
    assert best["spearman_p"] == pytest.approx(1 / 24) and best["holm_family"] == 8
    assert best["spearman_p_holm"] == pytest.approx(8 / 24) and best["spearman_p_holm"] >= 0.05


def test_finals_without_per_problem_results_give_accuracies_difference_without_interval(tmp_path):
    """A final written before FinalRecord kept per-problem answers: no interval and no verdict, and the value is the
    difference of the two test accuracies, never of the deltas (each over its own run's baseline)."""
    search = search_run(tmp_path, B)
    old = json.loads((search / "final" / f"{B}.json").read_text())
    for key in ("test_problem_ids", "baseline_test_correct", "test_correct_by_seed"):
        del old[key]
    old["delta"] = 0.5  # over another baseline: must not enter
    (search / "final" / f"{B}.json").write_text(json.dumps(old))  # a final written before the fields existed
    assert record_from_dict(FinalRecord, old, "old").test_correct_by_seed == []
    sq = validate.search_quality(search, grid_run(tmp_path))
    assert sq["regret"]["value"] == pytest.approx(0.4 - 0.2) and sq["regret"]["ci95"] is None
    assert sq["regret"]["verdict"] == "undecided (no interval)"
    assert any(f"final/{B}.json has no per-problem test answers" in n and "never that of the deltas" in n
               for n in sq["notes"])


def test_a_grid_that_is_not_a_grid_is_noted(tmp_path):
    sq = validate.search_quality(search_run(tmp_path, A), search_run(tmp_path / "other", B))
    assert any("not 'grid'" in n for n in sq["notes"])


def test_cli_prints_the_table_writes_json_and_the_report_shows_it(tmp_path, capsys):
    search, grid = search_run(tmp_path, B), grid_run(tmp_path)
    assert validate.main([str(search), str(grid)]) == 0
    printed = capsys.readouterr().out
    assert "## Search quality (against a grid)" in printed and "+20.0 points" in printed
    assert f"wrote {search / 'search_quality.json'}" in printed
    assert validate.main([str(search), str(grid), "--json"]) == 0  # --json: the comparison alone, on stdout
    printed = json.loads(capsys.readouterr().out)
    assert printed["regret"]["value"] == pytest.approx(0.2) and printed["same_choice"] is False
    assert printed == json.loads((search / "search_quality.json").read_text())
    assert json.loads((search / "report.json").read_text())["search_quality"]["search_choice"]["teacher"] == B
    md = (search / "report.md").read_text()
    assert "## Search quality (against a grid)" in md and md.index("Search quality") < md.index("## Notes")
    assert "compute, trial-epochs: 3 of the grid's 12 (25.0%)" in md


def test_report_renders_search_quality_only_when_present(tmp_path):
    search = search_run(tmp_path, A)
    r = report.render(search)
    assert r["search_quality"] is None and "Search quality" not in (search / "report.md").read_text()
    sq = validate.search_quality(search, grid_run(tmp_path))
    write_json(search / "search_quality.json", sq)
    r = report.render(search)
    assert r["search_quality"]["same_choice"] is True
    md = (search / "report.md").read_text()
    assert "| this search's choice (on dev) | teacher-a |" in md
    assert "- regret: 0 by definition (the same configuration in both runs); its two confirmations differ by +0.0" in md
    assert "upper end at most 3 points): met" in md
    (search / "search_quality.json").write_text(json.dumps({"regret": 1}))  # not validate's: ignored, and said so
    r = report.render(search)
    assert r["search_quality"] is None and any("search_quality.json: not what" in n for n in r["notes"])


# ---------------------------------------------------------------------------------------------------- errors

def _error(capsys, *argv) -> str:
    assert validate.main([str(a) for a in argv]) == 2
    return capsys.readouterr().err


def test_a_missing_run_directory_is_named(tmp_path, capsys):
    err = _error(capsys, tmp_path / "nope", grid_run(tmp_path))
    assert err.startswith("error: SEARCH_RUN") and str(tmp_path / "nope") in err and "does not exist" in err


def test_a_run_without_final_records_is_named(tmp_path, capsys):
    search = write_run(tmp_path / "search", [_trial("s1", A, 0.04)], [])
    err = _error(capsys, search, grid_run(tmp_path))
    assert "final/<teacher>.json" in err and "--resume" in err and str(search) in err


def test_a_chosen_teacher_without_confirmation_is_named(tmp_path, capsys):
    search = search_run(tmp_path, B)
    (search / "final" / f"{B}.json").unlink()
    err = _error(capsys, search, grid_run(tmp_path))
    assert f"final/{B}.json is missing" in err and "--resume" in err


@pytest.mark.parametrize("config, key", [({"task": {**TASK, "n_test": 20}}, "task.n_test"),
                                         ({"student": "packaged:gemma3-270m"}, "student")])
def test_runs_of_different_tasks_or_students_are_refused(tmp_path, capsys, config, key):
    err = _error(capsys, search_run(tmp_path, A, **config), grid_run(tmp_path))
    assert key in err and "search/config.json" in err and "grid/config.json" in err and "search.strategy=grid" in err


def test_the_same_directory_twice_is_refused(tmp_path, capsys):
    grid = grid_run(tmp_path)
    assert "same directory" in _error(capsys, grid, grid)
