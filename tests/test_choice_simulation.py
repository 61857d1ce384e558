"""benchmarks/choice_simulation.py: the winner's curse of the teacher choice (issue 33 point 3), shown as a test.

Today's rule gives the teacher with the extra trial more than its 1/K share when no teacher is better; equal budgets
and the held-out re-score give each 1/K; the chosen teacher's dev delta is biased upward; the issue's own numbers come
back from its setting. Seeded, pure numpy, a second or two.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import choice_simulation as sim  # noqa: E402  (benchmarks/choice_simulation.py, a script)

REPS = 20_000
SE = math.sqrt(0.25 / REPS)  # the largest Monte Carlo standard error of a rate: 0.35 points


def test_flip_probabilities_give_the_discordance_and_the_effect():
    g, l = sim.flip_probabilities(0.03, 0.2, 0.1)
    assert (g, l) == (pytest.approx(0.115 / 0.9), pytest.approx(0.85))
    assert 0.9 * g + 0.1 * l == pytest.approx(0.2) and 0.9 * g - 0.1 * l == pytest.approx(0.03)
    assert sim.flip_probabilities(0.0, 0.2, 0.1) == (pytest.approx(1 / 9), pytest.approx(1.0))
    with pytest.raises(ValueError, match="--baseline-accuracy"):  # 3 points need at least 3% discordance
        sim.flip_probabilities(0.03, 0.017, 0.083)
    assert sim.trial_sd(60, 0.2, 0.1) == pytest.approx(100 * math.sqrt(54 * (1 / 9) * (8 / 9)) / 60)  # 3.85
    assert sim.trial_sd(60, 0.2, 0.1, "multinomial") == pytest.approx(100 * math.sqrt(12) / 60)  # 5.77


def test_budgets_today_and_equal():
    today = sim.todays_budgets(np.random.default_rng(0), REPS, 3, 4)
    assert today.shape == (REPS, 3) and (today.sum(axis=1) == 4).all() and (today >= 1).all()
    extra = (today == 2).mean(axis=0)  # the sampler's one extra trial, to each teacher alike
    assert extra == pytest.approx([1 / 3] * 3, abs=4 * SE)
    two = sim.todays_budgets(np.random.default_rng(0), REPS, 2, 4)
    assert (two[:, 0] == 2).mean() == pytest.approx(0.5, abs=4 * SE)  # 2/2 in half the runs, 3/1 or 1/3 otherwise
    assert sim.equal_budgets(3, 4) == [1, 1, 1] and sim.equal_budgets(2, 4) == [2, 2]
    with pytest.raises(ValueError):
        sim.equal_budgets(3, 2)


def test_ties_go_to_the_better_proxy_rank():
    chosen, tie = sim._choose(np.array([[2, 2, 1], [3, 2, 1]]), np.array([[1, 0, 2], [2, 1, 0]]))
    assert list(chosen) == [1, 0] and list(tie) == [True, False]


def test_today_the_extra_trial_wins_by_chance_equal_budgets_and_held_out_are_fair():
    """No teacher is better; A has the sampler's extra trial (2/1/1). Before: A chosen about half the time, far above
    1/3. Equal budgets (1/1/1) and the held-out re-score (2/1/1 kept) give every teacher 1/3."""
    truths = [0.0, 0.0, 0.0]
    before = sim.rates(sim.simulate(truths, [2, 1, 1], reps=REPS, seed=1), 3)
    assert before[0] > 1 / 3 + 20 * SE and before[0] == pytest.approx(0.5, abs=0.02)
    for budgets, rule in (([1, 1, 1], "max"), ([2, 1, 1], "held_out")):
        shares = sim.rates(sim.simulate(truths, budgets, rule, reps=REPS, seed=2), 3)
        assert shares == pytest.approx([1 / 3] * 3, abs=4 * SE), (budgets, rule)
    # The default's situation: 2 usable teachers, both sampled trials to A (3/1) in a quarter of the runs.
    assert sim.rates(sim.simulate([0.0, 0.0], [3, 1], reps=REPS, seed=3), 2)[0] > 0.7
    assert sim.rates(sim.simulate([0.0, 0.0], [2, 2], reps=REPS, seed=3), 2)[0] == pytest.approx(0.5, abs=4 * SE)


def test_the_chosen_teachers_dev_delta_is_biased_upward():
    """Truth 0 for every teacher, yet the chosen teacher's dev delta averages several points: the maximum of the
    draws. More draws, more bias: today's 4 trials above equal budgets' 3."""
    before = sim.simulate([0.0] * 3, [2, 1, 1], reps=REPS, seed=4)["delta"]
    equal = sim.simulate([0.0] * 3, [1, 1, 1], reps=REPS, seed=5)["delta"]
    assert before.mean() > 0.03 and equal.mean() > 0.02 and before.mean() > equal.mean() + 0.005
    assert abs(sim.simulate([0.0], [1], reps=REPS, seed=6)["delta"].mean()) < 4 * 0.04 / math.sqrt(REPS)  # 1 draw


def test_power_for_a_truly_better_teacher():
    """A is 3 points better, the extra trial went to B: today's rule chooses A less often than equal budgets do."""
    truths = [0.03, 0.0, 0.0]
    power = {label: sim.rates(sim.simulate(truths, budgets, rule, reps=REPS, seed=7), 3)[0]
             for label, budgets, rule in (("before", [1, 2, 1], "max"), ("equal", [1, 1, 1], "max"),
                                          ("held_out", [1, 2, 1], "held_out"))}
    assert all(1 / 3 < p < 1 for p in power.values()), power
    assert power["equal"] > power["before"] + 0.05, power
    assert sim.rates(sim.simulate(truths, ("today", 4), reps=REPS, seed=8), 3)[0] > 1 / 3


def test_the_issues_numbers_come_back_from_its_setting():
    """Issue 33: independent (multinomial) trials at 15% discordance, dev n = 60, proxy ranks A > B > C. The extra
    trial on C (it loses every tie): C chosen 44.5%, chosen dev delta +5.1 points, ties 14%; A 3 points better with
    the extra trial on B: A chosen 48%."""
    issue = {"noise": "multinomial", "discordance": 0.15, "ranks": [1, 2, 3], "reps": REPS}
    null = sim.simulate([0.0, 0.0, 0.0], [1, 1, 2], seed=9, **issue)
    assert sim.rates(null, 3)[2] == pytest.approx(0.445, abs=0.015)
    assert null["delta"].mean() == pytest.approx(0.051, abs=0.002)
    assert null["tie"].mean() == pytest.approx(0.14, abs=0.01)
    power = sim.simulate([0.03, 0.0, 0.0], [1, 2, 1], seed=10, **issue)
    assert sim.rates(power, 3)[0] == pytest.approx(0.48, abs=0.015)


def test_the_script_prints_both_tables(capsys):
    assert sim.main(["--reps", "500", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "| (a) 3 teachers | before | 2/1/1 |" in out and "| (a) 3 teachers | equal budgets | 1/1/1 |" in out
    assert "| (c) default: 2 usable, any draw | held-out re-score | sampler's draw |" in out
    assert "Issue 33's setting" in out
    for bad in (["--discordance", "0.01"], ["--discordance", "0.01", "--noise", "multinomial"]):
        with pytest.raises(SystemExit) as exit_:  # a 3-point effect needs 3% discordance: said before any work
            sim.main(["--reps", "10", *bad])
        assert exit_.value.code == 2 and "--discordance 0.01" in capsys.readouterr().err
