"""Statistics against hand-computed values: Wilson and Clopper-Pearson intervals, McNemar, compare(), compare_seeds(),
compare_runs() (validate.py's regret), Holm, and the rank correlations' exact permutation p-values and bootstrap
intervals (validate.py's proxies). The deltas' intervals must agree with their exact tests (an interval
excludes 0 only when the test rejects)."""

import math

import numpy as np
import pytest

from cotgap_ray.stats import (
    HULL_TEST,
    clopper_pearson,
    compare,
    compare_runs,
    compare_seeds,
    holm,
    mcnemar_counts_p,
    mcnemar_exact_p,
    mcnemar_interval,
    wilson_ci,
)


def test_wilson_hand_computed():
    lo, hi = wilson_ci(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_ci(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_ci(1, 0)
    with pytest.raises(ValueError):
        wilson_ci(11, 10)


def test_clopper_pearson_hand_computed():
    # Closed forms at the edges: 0 of n -> upper bound 1 - (alpha/2)^(1/n); n of n -> lower bound (alpha/2)^(1/n).
    assert clopper_pearson(0, 60) == (0.0, pytest.approx(1 - 0.025 ** (1 / 60), abs=1e-12))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10), abs=1e-12), 1.0)
    # R: binom.test(5, 10)$conf.int -> 0.1870860 0.8129140
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1870860, abs=1e-7) and hi == pytest.approx(0.8129140, abs=1e-7)
    # 99% for 0 of 60: 1 - 0.005^(1/60)
    assert clopper_pearson(0, 60, 0.99)[1] == pytest.approx(1 - 0.005 ** (1 / 60), abs=1e-12)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


# ---------------------------------------------------------------- paired statistics (before / after distillation)

def _pairs(b: int, c: int, both_right: int = 0, both_wrong: int = 0) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with b right->wrong, c wrong->right, and some concordant problems."""
    before = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    after = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return before, after


def _sixty(b: int, c: int) -> tuple[list[bool], list[bool]]:
    """n = 60 problems (the issue's dev split): b broken, c fixed, 20 right both times, the rest wrong both times."""
    return _pairs(b, c, both_right=20, both_wrong=40 - b - c)


def _points(interval) -> list[float]:
    return [round(100 * v, 2) for v in interval]


def test_mcnemar_hand_computed():
    # b=1, c=6: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
    assert mcnemar_exact_p(*_pairs(1, 6)) == pytest.approx(0.125)
    assert mcnemar_exact_p(*_pairs(6, 1)) == pytest.approx(0.125)  # two-sided: symmetric
    assert mcnemar_exact_p(*_pairs(0, 5)) == pytest.approx(2 / 32)
    # b=c=3: 2 * (1 + 6 + 15 + 20) / 64 > 1, capped
    assert mcnemar_exact_p(*_pairs(3, 3)) == 1.0


def test_mcnemar_from_counts_is_the_same_test():
    # b=2, c=12: 2 * (C(14,0) + C(14,1) + C(14,2)) / 2^14 = 2 * 106 / 16384 (issue 33 point 5's case)
    assert mcnemar_counts_p(2, 12) == 2 * 106 / 2**14 == mcnemar_exact_p(*_pairs(2, 12))
    assert mcnemar_counts_p(0, 9) == 2 / 2**9 and mcnemar_counts_p(0, 0) == 1.0 and mcnemar_counts_p(3, 3) == 1.0


def test_mcnemar_ignores_concordant_pairs_and_needs_discordant_ones():
    assert mcnemar_exact_p(*_pairs(1, 6, both_right=40, both_wrong=13)) == pytest.approx(0.125)
    assert mcnemar_exact_p(*_pairs(0, 0, both_right=5, both_wrong=5)) == 1.0


def test_issue_case_four_fixed_none_broken_is_not_an_improvement():
    # The old bootstrap interval excluded 0 here although the exact test gives 2 / 2^4 = 0.125.
    r = compare(*_sixty(0, 4))
    assert r["p_value"] == 0.125 and r["delta"] == pytest.approx(4 / 60)
    assert _points(r["ci95"]) == [-3.32, 16.2]
    assert r["ci95"][0] < 0 < r["ci95"][1] and not r["improves"] and not r["degrades"]


def test_issue_case_seven_fixed_one_broken_is_not_an_improvement():
    # 2 * (C(8,0) + C(8,1)) / 2^8 = 18 / 256 = 0.0703: the old bootstrap said "improves".
    r = compare(*_sixty(1, 7))
    assert r["p_value"] == pytest.approx(0.0703125, abs=1e-12)
    assert _points(r["ci95"]) == [-1.3, 24.44]
    assert r["ci95"][0] < 0 < r["ci95"][1] and not r["improves"]


def test_issue_case_nothing_changed_is_not_false_certainty():
    before = [True] * 20 + [False] * 40
    r = compare(before, list(before))
    lo, hi = r["ci95"]
    assert r["delta"] == 0 and r["p_value"] == 1.0 and r["discordance"] == 0
    assert (lo, hi) != (0.0, 0.0) and lo == -hi  # symmetric: no direction is favoured by zero changes
    # D = 0 of 60: pi_hi = 1 - 0.025^(1/60) = 5.96 points; (2q - 1) ranges over [-1, 1].
    assert hi == pytest.approx(1 - 0.025 ** (1 / 60), abs=1e-12) and _points(r["ci95"]) == [-5.96, 5.96]
    assert not r["improves"] and not r["degrades"]


def test_compare_rejects_and_improves_when_the_exact_test_does():
    r = compare(*_sixty(0, 10))
    assert r["p_value"] == pytest.approx(2 / 2**10)  # 0.00195
    assert _points(r["ci95"]) == [3.18, 28.52]
    assert r["ci95"][0] > 0 and r["improves"] and not r["degrades"]


def test_compare_degrades_when_the_exact_test_rejects_downwards():
    r = compare(*_sixty(10, 0))
    assert r["p_value"] == pytest.approx(2 / 2**10) and r["delta"] == pytest.approx(-10 / 60)
    assert _points(r["ci95"]) == [-28.52, -3.18]  # the mirror image of 10 fixed / 0 broken
    assert r["degrades"] and not r["improves"]


def test_compare_reports_its_methods():
    r = compare(*_sixty(1, 7))
    assert r["test"] == "exact McNemar" and r["seeds"] == 1
    assert r["interval"] == "exact McNemar box (Clopper-Pearson)"
    assert r["training_variance"] == "not measured (one seed)"


def test_interval_excludes_zero_iff_exact_mcnemar_rejects():
    """Every (b, c) with b + c <= 40 at n = 60, and a band around the boundary at D = 300 of n = 1319 (GSM8K)."""
    cases = [(b, c, 60) for b in range(41) for c in range(41 - b)]
    cases += [(300 - c, c, 1319) for c in range(120, 181)]
    rejections = 0
    for b, c, n in cases:
        before, after = _pairs(b, c, both_wrong=n - b - c)
        r = compare(before, after)
        lo, hi = r["ci95"]
        excludes = lo > 0 or hi < 0
        assert excludes == (r["p_value"] < 0.05), (b, c, n, r["ci95"], r["p_value"])
        assert r["improves"] == (excludes and c > b) and r["degrades"] == (excludes and b > c)
        assert lo <= r["delta"] <= hi and lo < hi  # contains the estimate, never a point
        rejections += excludes
    assert 0 < rejections < len(cases)  # both sides of the boundary were exercised


def test_interval_coverage_is_at_least_95_percent():
    """Exact coverage of delta = pi (2q - 1) at n = 30: the probability of every (b, c) outcome summed where the
    interval holds the true delta, over a grid of discordance rates pi and fixed-shares q (edges included)."""
    n = 30
    intervals = {(d, c): mcnemar_interval(d - c, c, n) for d in range(n + 1) for c in range(d + 1)}

    def pmf(m, p):  # Binomial(m, p); exact enough at m <= 30 (0 ** 0 == 1 handles p = 0 and p = 1)
        return [math.comb(m, k) * p**k * (1 - p) ** (m - k) for k in range(m + 1)]

    worst = 1.0
    for pi in np.linspace(0.02, 1.0, 25):
        p_d = pmf(n, pi)
        for q in np.linspace(0.0, 1.0, 21):
            delta = pi * (2 * q - 1)
            cover = sum(p_d[d] * sum(p_c for c, p_c in enumerate(pmf(d, q))
                                     if intervals[d, c][0] - 1e-12 <= delta <= intervals[d, c][1] + 1e-12)
                        for d in range(n + 1))
            worst = min(worst, cover)
    assert 0.95 <= worst < 0.99  # valid, and not vacuous


def test_compare_flags_degrading_and_improving_students():
    worse = compare(*_pairs(30, 2, both_right=10, both_wrong=8))
    assert worse["degrades"] and not worse["improves"]
    assert worse["n"] == 50 and worse["delta"] == pytest.approx(-28 / 50)
    assert worse["ci95"][0] <= worse["delta"] <= worse["ci95"][1] < 0
    assert worse["p_value"] < 1e-5
    assert worse["before_accuracy"] == pytest.approx(40 / 50) and worse["after_accuracy"] == pytest.approx(12 / 50)
    better = compare(*_pairs(2, 30, both_right=10, both_wrong=8))
    assert better["improves"] and not better["degrades"]
    # A negative delta whose interval still covers 0 is not "degrades": the flag needs the whole interval below 0.
    unsure = compare(*_pairs(4, 3, both_right=10, both_wrong=8))
    assert unsure["delta"] < 0 and not unsure["degrades"] and not unsure["improves"]
    assert unsure["ci95"][0] < 0 < unsure["ci95"][1]


def test_exact_interval_is_wider_than_the_normal_approximation():
    # 60 fixed, 20 broken, 120 unchanged of 200: diff mean 0.2, sd sqrt(0.4 - 0.04) = 0.6, normal half-width
    # 1.96 * 0.6 / sqrt(200) = 0.083. The exact box is conservative: it contains the normal interval.
    before, after = _pairs(20, 60, both_right=70, both_wrong=50)
    r = compare(before, after)
    half = 1.959964 * 0.6 / 200**0.5
    assert r["delta"] == pytest.approx(0.2)
    assert _points(r["ci95"]) == [9.33, 32.07]
    assert r["ci95"][0] < 0.2 - half and 0.2 + half < r["ci95"][1]


def test_paired_statistics_reject_unpaired_input():
    for fn in (mcnemar_exact_p, compare, lambda before, after: compare_seeds(before, [after, after])):
        with pytest.raises(ValueError, match="3 before vs 2 after"):
            fn([True, False, True], [True, False])
        with pytest.raises(ValueError, match="at least one"):
            fn([], [])


# ---------------------------------------------------------------- several seeds

def test_compare_seeds_with_one_seed_is_compare():
    for b, c in ((0, 4), (1, 7), (0, 0), (0, 10), (10, 0)):
        before, after = _sixty(b, c)
        one = compare_seeds(before, [after])
        assert {k: v for k, v in one.items() if k != "after_accuracy_per_seed"} == compare(before, after)
        assert one["seeds"] == 1 and one["training_variance"] == "not measured (one seed)"
        assert one["after_accuracy_per_seed"] == [pytest.approx(sum(after) / 60)]


def test_compare_seeds_averages_seeds_per_problem():
    r = compare_seeds([False, False, True], [[True, False, True], [True, True, True]], n_boot=2000)
    assert r["delta"] == pytest.approx(0.5) and r["seeds"] == 2
    assert r["after_accuracy_per_seed"] == pytest.approx([2 / 3, 1.0])
    lo, hi = r["ci95"]
    assert lo <= 0.5 <= hi and 0 < r["p_value"] <= 1
    assert r["test"] == HULL_TEST and r["training_variance"] == "measured (2 seeds)"


def test_compare_seeds_covers_seed_to_seed_variation():
    """One seed fixes 10 of 60 problems, the other none: the seeds disagree about the whole effect. A bootstrap of
    problems alone (seeds averaged per problem) would call it an improvement; the interval must not."""
    before = [False] * 60
    fixes, nothing = [True] * 10 + [False] * 50, [False] * 60
    r = compare_seeds(before, [fixes, nothing])
    assert r["delta"] == pytest.approx(5 / 60) and r["after_accuracy_per_seed"] == pytest.approx([1 / 6, 0.0])
    # The problem-level-only bootstrap the old code used, on the per-problem seed means.
    diff = np.array([0.5] * 10 + [0.0] * 50)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, 60, size=(4000, 60))].mean(axis=1)
    one_lo, one_hi = np.quantile(means, [0.025, 0.975])
    assert one_lo > 0  # it would have claimed "improves"
    lo, hi = r["ci95"]
    assert hi - lo > 2 * (one_hi - one_lo) and lo < 0 < hi
    assert not r["improves"] and not r["degrades"]
    # The two-level bootstrap alone reaches 0: half its replicates draw the seed that changed nothing twice or ...
    assert r["ci95_parts"]["two_level_bootstrap"][0] == 0.0
    # ... while the sign-flip test (conditional on these two runs) rejects; the p reported is the hull's, which
    # does not: the test and the interval agree.
    assert r["p_parts"]["sign_flip_inversion"] < 0.01 and r["p_value"] >= 0.05
    assert _points(r["ci95"]) == [-1.39, 23.33]


def test_compare_seeds_improves_when_seeds_agree_and_the_test_rejects():
    before = [False] * 60
    fixes = [True] * 10 + [False] * 50
    r = compare_seeds(before, [fixes, list(fixes)])
    assert r["improves"] and r["p_value"] < 0.05 and r["ci95"][0] > 0
    assert r["ci95"] == pytest.approx(compare(before, fixes)["ci95"])  # agreeing seeds: the exact interval


def test_compare_seeds_interval_excludes_zero_only_when_the_test_rejects():
    rng = np.random.default_rng(7)
    rejected = 0
    for trial in range(30):
        n, seeds = 40, 2 + trial % 2
        before = rng.random(n) < 0.4
        fix, brk = rng.uniform(0, 0.4), rng.uniform(0, 0.15)
        afters = [list(np.where(before, rng.random(n) >= brk, rng.random(n) < fix)) for _ in range(seeds)]
        r = compare_seeds(list(before), afters, n_boot=2000)
        lo, hi = r["ci95"]
        assert lo <= r["delta"] <= hi and lo < hi
        assert (lo > 0 or hi < 0) == (r["p_value"] < 0.05) and r["p_value"] == max(r["p_parts"].values())
        rejected += lo > 0 or hi < 0
    assert rejected > 0  # the equivalence was tested on real rejections


def test_compare_seeds_flags_degradation_and_no_change():
    before = [True] * 40 + [False] * 10
    worse = [[False] * 30 + [True] * 10 + [False] * 10] * 2
    r = compare_seeds(before, worse)
    assert r["degrades"] and not r["improves"] and r["p_value"] < 0.001
    same = compare_seeds(before, [before, before])
    assert same["delta"] == 0 and same["p_value"] == 1.0 and not same["degrades"]
    # Nothing changed in either seed: not [0, 0] (both the bootstrap and the permutation inversion collapse there).
    assert same["ci95"] == [pytest.approx(-(1 - 0.025 ** (1 / 50))), pytest.approx(1 - 0.025 ** (1 / 50))]
    assert _points(same["ci95"]) == [-7.11, 7.11]  # as compare() with one seed at n = 50
    with pytest.raises(ValueError):
        compare_seeds(before, [])


def test_compare_seeds_is_deterministic_and_chunks_large_splits():
    rng = np.random.default_rng(3)
    n = 1319  # GSM8K test: a full 10000 x n resampling matrix would be ~100 MB
    before = rng.random(n) < 0.3
    afters = [list(np.where(rng.random(n) < 0.1, ~before, before)) for _ in range(3)]
    first, second = compare_seeds(list(before), afters), compare_seeds(list(before), afters)
    assert first == second
    assert first["training_variance"] == "measured (3 seeds)"
    assert compare(list(before), afters[0]) == compare(list(before), afters[0])


# ---------------------------------------------------------------- two sides with seeds (validate.py's regret)

def test_compare_runs_with_one_run_each_is_the_exact_mcnemar_of_the_two():
    """x's answers against y's: b = only y right, c = only x right; the exact test and interval of compare(y, x)."""
    for b, c in ((0, 4), (1, 7), (0, 0), (10, 0)):
        y, x = _sixty(b, c)
        r, ref = compare_runs([x], [y]), compare(y, x)
        assert r["runs"] == [1, 1] and r["test"] == "exact McNemar"
        assert (r["delta"], r["ci95"], r["p_value"]) == (ref["delta"], ref["ci95"], ref["p_value"])
        assert r["delta"] == pytest.approx((c - b) / 60)


def test_compare_seeds_is_compare_runs_against_the_baseline():
    """The refactor's reference: compare_seeds(before, afters) computes compare_runs(afters, [before])."""
    rng = np.random.default_rng(11)
    before = rng.random(80) < 0.3
    afters = [list(np.where(rng.random(80) < 0.15, ~before, before)) for _ in range(3)]
    seeds, runs = compare_seeds(list(before), afters, n_boot=2000), compare_runs(afters, [list(before)], n_boot=2000)
    for key in ("delta", "ci95", "ci95_parts", "p_value", "discordance", "improves", "degrades", "test"):
        assert seeds[key] == runs[key], key


@pytest.mark.parametrize("k", [4, 6])
def test_compare_runs_p_agrees_with_the_exact_sign_test(k):
    """Two seeds a side; one grid seed alone solves k of 100 problems: per-problem diff +0.5 on k, 0 elsewhere. The
    exact sign test of k positive of k is 2 / 2^k (math.comb: 2 * C(k, 0) / 2^k): 0.125 for 4, 0.03125 for 6; the
    sign-flip test's 10000 random sign vectors estimate it (Monte Carlo error ~0.003), and the interval excludes 0
    only when it rejects (at k = 4 it does not: the interval contains 0)."""
    none = [False] * 100
    x = [[i < k for i in range(100)], none]
    r = compare_runs(x, [none, none])
    exact = 2 * math.comb(k, 0) / 2**k
    assert r["delta"] == pytest.approx(k * 0.5 / 100) and r["runs"] == [2, 2]
    assert abs(r["p_parts"]["sign_flip_inversion"] - exact) < 0.012
    assert r["ci95"][0] <= r["delta"] <= r["ci95"][1] and (r["ci95"][0] > 0) == (r["p_value"] < 0.05)
    assert k != 4 or r["ci95"][0] < 0 < r["ci95"][1]
    # the problem-only bootstrap the old regret used would exclude 0 even at k = 4 (p 0.125)
    diff = np.array([0.5] * k + [0.0] * (100 - k))
    means = diff[np.random.default_rng(0).integers(0, 100, size=(2000, 100))].mean(axis=1)
    assert np.quantile(means, 0.025) > 0


def test_two_trainings_of_one_teacher_are_not_called_different_by_a_p_the_interval_denies():
    """The clone control's case (benchmarks/results/2026-12-known-answers.md, clone_null seed 1): 3 seeds a side of
    the same teacher, one seed of x lucky on 12 problems. Holding the runs fixed, the sign-flip test rejects (the
    12 problems all move one way); the hull, whose bootstrap resamples each side's runs, contains 0. The p reported
    is the hull's, so the two agree: "same", not p 0.003 beside an interval through 0."""
    n = 200
    base = [i < 20 for i in range(n)]
    lucky = [i < 20 or 100 <= i < 112 for i in range(n)]
    r = compare_runs([lucky, base, base], [base, base, base])
    assert r["p_parts"]["sign_flip_inversion"] < 0.01
    assert r["ci95"][0] < 0 < r["ci95"][1] and not (r["improves"] or r["degrades"])
    assert r["p_value"] >= 0.05 and r["p_value"] == max(r["p_parts"].values())


def test_the_hull_tests_parts_each_agree_with_their_own_interval():
    """Each part's p is the level at which its interval stops containing 0: below alpha exactly when the part's
    interval at alpha excludes 0, at any alpha; and with every seed alike the exact part is the exact McNemar p."""
    rng = np.random.default_rng(5)
    for trial in range(12):
        n, sx, sy = 60, 1 + trial % 3, 2 + trial % 2
        base = rng.random(n) < 0.3
        x = [list(np.where(rng.random(n) < rng.uniform(0, 0.3), True, base)) for _ in range(sx)]
        y = [list(np.where(rng.random(n) < 0.05, ~base, base)) for _ in range(sy)]
        for alpha in (0.05, 0.2):
            r = compare_runs(x, y, n_boot=1000, alpha=alpha)
            for part in ("two_level_bootstrap", "sign_flip_inversion", "mean_exact_per_seed"):
                lo, hi = r["ci95_parts"][part]
                assert (lo > 0 or hi < 0) == (r["p_parts"][part] < alpha), (trial, alpha, part)
            assert (r["improves"] or r["degrades"]) == (r["p_value"] < alpha)
    # Identical seeds: every pair is one McNemar table (b 0, c 10 of 60); scipy 1.17.1 (not a dependency):
    # binomtest(10, 10).pvalue = 0.001953125, the exact test the part's interval inverts.
    before, fixes = [False] * 60, [True] * 10 + [False] * 50
    r = compare_seeds(before, [fixes, list(fixes)])
    assert r["p_parts"]["mean_exact_per_seed"] == pytest.approx(0.001953125, rel=1e-6)
    assert mcnemar_exact_p(before, fixes) == pytest.approx(0.001953125)


def test_compare_runs_with_unequal_seed_counts_averages_each_side():
    """Crossed pairs (x_j - y_k) average to mean(x) - mean(y) per problem whatever the counts."""
    x = [[True, True, False, False], [True, False, False, False]]
    y = [[False, True, False, True], [False, False, False, True], [True, True, False, True]]
    r = compare_runs(x, y, n_boot=500)
    per_problem = [1 - 1 / 3, 0.5 - 2 / 3, 0.0, -1.0]
    assert r["delta"] == pytest.approx(sum(per_problem) / 4) and r["runs"] == [2, 3]
    assert r["ci95"][0] <= r["delta"] <= r["ci95"][1] and r == compare_runs(x, y, n_boot=500)  # deterministic
    with pytest.raises(ValueError, match="same problems"):
        compare_runs(x, [[True, False]])
    with pytest.raises(ValueError, match="each side"):
        compare_runs(x, [])


def test_discordance_is_the_fraction_of_changed_problems():
    assert compare([True, False, False, True], [True, True, False, False])["discordance"] == 0.5
    assert compare_seeds([False, False, True], [[True, False, True], [True, True, True]])["discordance"] == 0.5


# ---------------------------------------------------------------- several comparisons at once

def test_holm_hand_computed():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> 4 * 0.005, 3 * 0.01, 2 * 0.03, max(1 * 0.04, 0.06); back in input order.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
    assert holm([0.01, 0.01]) == [0.02, 0.02]  # ties
    adjusted = holm([0.2, 0.001, 0.04, 0.03])
    order = sorted(range(4), key=[0.2, 0.001, 0.04, 0.03].__getitem__)
    assert [adjusted[i] for i in order] == sorted(adjusted)  # monotone in the raw p
    with pytest.raises(ValueError):
        holm([0.5, 1.5])


def test_mcnemar_power_is_alpha_bounded_at_no_effect_and_grows_with_n():
    from cotgap_ray.stats import mcnemar_power

    assert mcnemar_power(100, 0.2, 0.0) <= 0.05  # exact test: never more than alpha under the null
    assert mcnemar_power(60, 0.2, 0.1) < mcnemar_power(200, 0.2, 0.1) < mcnemar_power(400, 0.2, 0.1)
    assert mcnemar_power(100, 0.2, 0.3) == 0.0  # an effect larger than the discordance is impossible


@pytest.mark.parametrize("n, discordance, mde", [(60, 0.2, 0.165), (200, 0.2, 0.095), (150, 0.15, 0.095),
                                                 (30, 0.1, None), (100, 0.1, 0.09)])
def test_min_detectable_effect_literal(n, discordance, mde):
    """The README's sizing rests on these: at 20% discordance 60 test problems detect 16.5 points, 200 detect 9.5."""
    from cotgap_ray.stats import min_detectable_effect

    assert min_detectable_effect(n, discordance) == mde


# ------------------------------------------------------------- rank correlations: permutation p and bootstrap (#33.8)
# Reached through the module so that, where these functions are missing, only these tests fail.
from cotgap_ray import stats  # noqa: E402


def _brute_ranks(v: list[float]) -> list[float]:
    """Tie-averaged ranks in plain Python: 1 + values below + (values equal - 1) / 2."""
    return [1 + sum(w < u for w in v) + (sum(w == u for w in v) - 1) / 2 for u in v]


def _brute_spearman(x, y) -> float:
    rx, ry = _brute_ranks(x), _brute_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return num / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def _brute_kendall(x, y) -> float:
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    sign = lambda d: (d > 0) - (d < 0)
    s = sum(sign(x[i] - x[j]) * sign(y[i] - y[j]) for i, j in pairs)
    return s / math.sqrt(sum(x[i] != x[j] for i, j in pairs) * sum(y[i] != y[j] for i, j in pairs))


def _brute_p(x, y, corr) -> float:
    """Share of all orderings of y whose correlation with x is >= the observed one (a separate, plain loop)."""
    import itertools

    observed = corr(x, y)
    orderings = list(itertools.permutations(y))
    return sum(corr(x, list(o)) >= observed - 1e-9 for o in orderings) / len(orderings)


def test_a_perfect_ranking_of_4_teachers_is_a_1_in_24_event():
    """Issue 33 point 8: Spearman 1 at n = 4 happens under no relation once in 4! orderings."""
    x, y = [0.6, 0.4, 0.3, 0.1], [0.05, 0.03, 0.02, -0.01]
    assert stats.spearman(x, y) == 1.0 and stats.kendall_tau(x, y) == 1.0
    assert stats.rank_correlation_p(x, y, "spearman") == pytest.approx(1 / 24, abs=1e-15)
    assert stats.rank_correlation_p(x, y, "kendall") == pytest.approx(1 / 24, abs=1e-15)
    # Holm over 8 proxies that all rank the 4 teachers perfectly: every adjusted p is 8/24 = 0.33, nowhere near 0.05
    assert holm([1 / 24] * 8) == pytest.approx([1 / 3] * 8)


@pytest.mark.parametrize("x, y, method, p", [
    ([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], "spearman", 5 / 120),  # rho 0.9: identity and the 4 neighbour swaps
    ([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], "kendall", 5 / 120),  # tau 0.8: at most one inversion, 1 + 4 orderings
    ([1, 2, 3, 4], [1, 2, 4, 3], "kendall", 4 / 24),  # tau 2/3 at n = 4: 1 + 3 orderings
    ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], "spearman", 1.0),  # a reversed ranking: every ordering is as extreme
    ([1, 2, 3], [1, 2, 3], "spearman", 1 / 6),
])
def test_exact_rank_p_literal(x, y, method, p):
    assert stats.rank_correlation_p(x, y, method) == pytest.approx(p, abs=1e-15)


@pytest.mark.parametrize("x, y", [([0.3, 0.1, 0.4, 0.2, 0.5], [2, 1, 5, 3, 4]),
                                  ([1, 2, 2, 3, 4], [0.1, 0.1, 0.3, 0.2, 0.5]),  # ties in both
                                  ([4, 3, 2, 1, 0], [1, 3, 2, 5, 4]),
                                  ([1, 1, 2, 3, 3, 4], [2, 1, 1, 4, 3, 3])])
def test_exact_rank_p_matches_brute_force(x, y):
    for method, corr in (("spearman", _brute_spearman), ("kendall", _brute_kendall)):
        assert stats.rank_correlation_p(x, y, method) == pytest.approx(_brute_p(x, y, corr), abs=1e-12), method
    assert stats.spearman(x, y) == pytest.approx(_brute_spearman(x, y))
    assert stats.kendall_tau(x, y) == pytest.approx(_brute_kendall(x, y))


def test_rank_p_above_8_is_a_seeded_monte_carlo_close_to_the_exact_value():
    x, y = list(range(9)), [1, 0, 3, 2, 4, 6, 5, 8, 7]
    exact = stats.rank_correlation_p(x, y, "spearman", exact_up_to=9)  # all 362,880 orderings
    mc = stats.rank_correlation_p(x, y, "spearman")
    assert mc == stats.rank_correlation_p(x, y, "spearman")  # deterministic
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / stats.RANK_P_ORDERINGS)
    assert stats.rank_correlation_p(list(range(12)), list(range(12)), "kendall") == 1 / (stats.RANK_P_ORDERINGS + 1)


def test_rank_p_is_none_where_the_correlation_is_and_refuses_unknown_methods():
    assert stats.rank_correlation_p([1, 2], [2, 1]) is None
    assert stats.rank_correlation_p([1, 1, 1], [1, 2, 3], "kendall") is None
    with pytest.raises(ValueError, match="pearson"):
        stats.rank_correlation_p([1, 2, 3], [1, 2, 3], "pearson")


def test_bootstrap_over_problems_of_the_truth():
    # Each teacher's per-problem truth is the same on every problem: no resample moves the ranking.
    assert stats.rank_correlation_bootstrap([3, 2, 1], [[1] * 5, [0.5] * 5, [0] * 5]) == (1.0, 1.0)
    # Three teachers 1 problem apart on 10 problems (3, 2 and 1 solved): the ranking is not settled by the problems,
    # so the interval of a proxy that ranks them perfectly reaches far below its point value of 1.
    table = [[float(i < 3) for i in range(10)], [float(i < 2) for i in range(10)], [float(i < 1) for i in range(10)]]
    assert stats.spearman([3, 2, 1], [sum(r) / 10 for r in table]) == 1.0
    for method in ("spearman", "kendall"):
        lo, hi = stats.rank_correlation_bootstrap([3, 2, 1], table, method)
        assert hi == 1.0 and lo < 0.5
        assert (lo, hi) == stats.rank_correlation_bootstrap([3, 2, 1], table, method)  # seeded
    assert stats.rank_correlation_bootstrap([1, 2, 3], [[1, 0]] * 3) is None  # constant truth: no correlation
    with pytest.raises(ValueError, match="one row of per-problem values per proxy value"):
        stats.rank_correlation_bootstrap([1, 2, 3], [[1, 0]] * 2)


def test_bootstrap_over_pairs_is_spearman_of_each_resample():
    # The same draws as the function (one rng.integers call), each resample's correlation by the plain-Python
    # Spearman (a constant resample counts as 0): the vectorised ranks must agree to the last bits.
    x, y = [3, 1, 4, 1, 5, 9, 2, 6], [2.7, 1.8, 2.8, 1.8, 2.8, 4.5, 0.9, 4.5]
    idx = np.random.default_rng(3).integers(0, len(x), size=(500, len(x)))
    brute = []
    for row in idx:
        xs, ys = [x[i] for i in row], [y[i] for i in row]
        brute.append(0.0 if len(set(xs)) < 2 or len(set(ys)) < 2 else _brute_spearman(xs, ys))
    expected = np.quantile(brute, [0.05, 0.95])
    got = stats.spearman_pairs_bootstrap(x, y, n_boot=500, seed=3, level=0.9)
    assert got == pytest.approx(tuple(expected), abs=1e-12)
    assert got[0] < stats.spearman(x, y) < got[1]
    assert stats.spearman_pairs_bootstrap([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]) == (1.0, 1.0)
    assert stats.spearman_pairs_bootstrap([1, 2], [1, 2]) is None  # fewer than 3 pairs: no correlation
    assert stats.spearman_pairs_bootstrap([1, 1, 1], [1, 2, 3]) is None
