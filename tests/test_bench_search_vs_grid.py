"""benchmarks/search_vs_grid.py's goal 1: a search meets it only when validate calls its regret non-inferior (the
interval's upper end within the margin, validate.non_inferiority), never because the interval merely contains 0
(issue 33, point 9)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import search_vs_grid as bench  # noqa: E402  (benchmarks/search_vs_grid.py, a script)

WIDE, TIGHT = [-0.096, 0.096], [-0.01, 0.02]  # points: [-9.6, +9.6] contains 0 and rules nothing out; [-1, +2]
UNDECIDED = "undecided (interval wider than the margin allows)"


def _quality(ci95, verdict: str, fraction: float = 0.2) -> dict:
    """What validate --json writes (verdict as validate.non_inferiority gives it at 3 points), reduced to what
    summarize reads."""
    return {"regret": {"value": 0.0 if ci95 else None, "ci95": ci95, "verdict": verdict},
            "compute": {"trial_epochs": {"fraction": fraction}, "seconds": {"fraction": fraction}},
            "same_choice": False}


@pytest.mark.parametrize("ci95, verdict, ok", [(WIDE, UNDECIDED, False), (TIGHT, "met", True),
                                               ([0.04, 0.1], "not met", False),
                                               (None, "undecided (no interval)", None)])
def test_goal_needs_non_inferiority_not_a_ci_containing_zero(ci95, verdict, ok):
    assert bench.regret_ok(_quality(ci95, verdict)) is ok


def test_the_verdicts_here_are_validates():
    from cotgap_ray.validate import REGRET_MARGIN, non_inferiority

    assert non_inferiority(WIDE, REGRET_MARGIN) == UNDECIDED and non_inferiority(TIGHT, REGRET_MARGIN) == "met"


def test_a_wide_interval_fails_the_goal_and_says_why():
    setting = {"validations": [{"quality": _quality(WIDE, UNDECIDED), "seed": 0}], "proxies": []}
    goal = bench.summarize(setting)["goal_regret"]
    assert goal["met"] is False and goal["regret_non_inferior"] == [False]
    assert "upper end is above the margin" in bench.goal_text(goal)
    setting["validations"] = [{"quality": _quality(TIGHT, "met"), "seed": 0}]
    assert bench.summarize(setting)["goal_regret"]["met"] is True


# ------------------------------------------------------------------ goal 2: a rank correlation needs its p-value

ORDERS = [[4, 3, 2, 1], [1, 2, 3, 4], [2, 1, 4, 3], [3, 4, 1, 2], [1, 3, 2, 4], [4, 1, 3, 2], [2, 4, 1, 3],
          [3, 1, 4, 2]]  # 8 proxies' values for 4 teachers: only the first ranks them like the dev deltas


def _proxies(orders: list[list[float]], dev: list[float]) -> list[dict]:
    """validate.correlations' rows (what validate --json writes) for literal proxies and dev deltas."""
    from cotgap_ray.validate import correlations

    teachers = [f"t{i}" for i in range(len(dev))]
    proxies = {t: {f"proxy{k}": float(o[i]) for k, o in enumerate(orders)} for i, t in enumerate(teachers)}
    return correlations(proxies, "grid", {"grid_best_dev_delta": dict(zip(teachers, dev))})


def test_best_of_8_proxies_ranking_4_teachers_perfectly_is_not_met():
    """Issue 33 point 8: Spearman 1 >= 0.86 was "met"; at 4 teachers it is a 1-in-24 event, and the best of 8 proxies
    reaching it is no evidence: Holm p 8/24 = 0.33, not met."""
    setting = {"validations": [], "proxies": _proxies(ORDERS, [0.05, 0.03, 0.02, -0.01])}
    goal = bench.summarize(setting)["goal_proxy"]
    assert goal["best_proxy"] == "proxy0" and goal["spearman"] == pytest.approx(1.0)
    assert goal["p"] == pytest.approx(1 / 24) and goal["p_holm"] == pytest.approx(8 / 24)
    assert goal["met"] is False
    assert "Holm p >= 0.05" in bench.proxy_goal_text(goal) and "0.042" in bench.proxy_goal_text(goal)


def test_six_teachers_ranked_perfectly_by_one_of_8_proxies_is_met():
    """The rule can be met: at 6 teachers a perfect ranking is 1 in 720, Holm over 8 proxies 8/720 = 0.011."""
    orders = [[6, 5, 4, 3, 2, 1], [2, 3, 4, 5, 6, 1], [1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5], [3, 1, 2, 6, 4, 5],
              [1, 6, 2, 5, 3, 4], [5, 3, 1, 2, 4, 6], [4, 6, 5, 1, 3, 2]]  # only the first ranks them like dev
    goal = bench.summarize({"validations": [], "proxies": _proxies(orders, [0.06, 0.05, 0.03, 0.02, 0.0, -0.01])})[
        "goal_proxy"]
    assert goal["p"] == pytest.approx(1 / 720) and goal["p_holm"] == pytest.approx(8 / 720) and goal["met"] is True


def test_a_proxy_row_without_p_value_is_not_met_and_the_table_shows_p():
    """A summary recorded before validate computed p-values: Spearman 0.88 alone no longer meets the goal."""
    old = [{"proxy": "student_nll", "direction": "lower", "source": "grid", "target": "grid_best_dev_delta",
            "spearman": 0.8857, "kendall_tau": 0.73, "n": 6}]
    goal = bench.summarize({"validations": [], "proxies": old})["goal_proxy"]
    assert goal["met"] is False and "no p-value" in bench.proxy_goal_text(goal)
    setting = {"name": "A", "config": "c.yaml", "overrides": [], "teachers": ["t0"] * 4, "grid_points": 4,
               "trials": 1, "seed_points_only": False, "runs": [], "validations": [],
               "proxies": _proxies(ORDERS, [0.05, 0.03, 0.02, -0.01])}
    setting["summaries"] = {"plain": bench.summarize(setting)}
    lines = bench.render({"smoke": False, "cpu": "cpu", "started": "now", "out_root": "r", "cache_dir": "c",
                          "settings": [setting]})
    header = next(line for line in lines if "Spearman vs grid best dev delta" in line)
    assert "p (exact, one-sided)" in header and "Holm p (over the proxies)" in header
    assert any(line.startswith("| A       | proxy0 (higher better) | +1.00") and "| 0.042 " in line
               and "| 0.333 " in line for line in lines)
    assert any("not met (proxy0 +1.00, p 0.042, Holm p 0.333 over 8 proxies, 4 teachers" in line for line in lines)
