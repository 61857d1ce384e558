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
