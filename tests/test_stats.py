"""Statistics against hand-computed values: Wilson intervals, McNemar, the paired bootstrap, compare()."""

import pytest

from cotgap_ray.stats import compare, compare_seeds, mcnemar_exact_p, paired_bootstrap_ci, wilson_ci


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


# ---------------------------------------------------------------- paired statistics (before / after distillation)

def _pairs(b: int, c: int, both_right: int = 0, both_wrong: int = 0) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with b right->wrong, c wrong->right, and some concordant problems."""
    before = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    after = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return before, after


def test_mcnemar_hand_computed():
    # b=1, c=6: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
    assert mcnemar_exact_p(*_pairs(1, 6)) == pytest.approx(0.125)
    assert mcnemar_exact_p(*_pairs(6, 1)) == pytest.approx(0.125)  # two-sided: symmetric
    assert mcnemar_exact_p(*_pairs(0, 5)) == pytest.approx(2 / 32)
    # b=c=3: 2 * (1 + 6 + 15 + 20) / 64 > 1, capped
    assert mcnemar_exact_p(*_pairs(3, 3)) == 1.0


def test_mcnemar_ignores_concordant_pairs_and_needs_discordant_ones():
    assert mcnemar_exact_p(*_pairs(1, 6, both_right=40, both_wrong=13)) == pytest.approx(0.125)
    assert mcnemar_exact_p(*_pairs(0, 0, both_right=5, both_wrong=5)) == 1.0


def test_bootstrap_degenerate_when_nothing_changes():
    before = [True, False, True, True, False]
    assert paired_bootstrap_ci(before, list(before)) == (0.0, 0.0, 0.0)


def test_bootstrap_hand_computed_small_cases():
    # One problem, fixed: every resample has delta 1.
    assert paired_bootstrap_ci([False], [True], n_boot=200) == (1.0, 1.0, 1.0)
    # diff = [1, 0]: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> the 95% interval is [0, 1].
    delta, lo, hi = paired_bootstrap_ci([False, False], [True, False], n_boot=4000)
    assert (delta, lo, hi) == (0.5, 0.0, 1.0)


def test_bootstrap_width_matches_the_normal_approximation():
    # 60 fixed, 20 broken, 120 unchanged of 200: diff mean 0.2, sd sqrt(0.4 - 0.04) = 0.6, se 0.6 / sqrt(200)
    before, after = _pairs(20, 60, both_right=70, both_wrong=50)
    delta, lo, hi = paired_bootstrap_ci(before, after, n_boot=10000, seed=3)
    assert delta == pytest.approx(0.2)
    half = 1.959964 * 0.6 / 200**0.5
    assert lo == pytest.approx(0.2 - half, abs=0.01) and hi == pytest.approx(0.2 + half, abs=0.01)
    assert paired_bootstrap_ci(before, after, seed=3) == (delta, lo, hi)  # seeded: reproducible


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


def test_paired_statistics_reject_unpaired_input():
    for fn in (paired_bootstrap_ci, mcnemar_exact_p, compare):
        with pytest.raises(ValueError, match="3 before vs 2 after"):
            fn([True, False, True], [True, False])
        with pytest.raises(ValueError, match="at least one"):
            fn([], [])


def test_compare_seeds_averages_seeds_per_problem():
    from cotgap_ray.stats import compare_seeds

    r = compare_seeds([False, False, True], [[True, False, True], [True, True, True]], n_boot=2000)
    assert r["delta"] == pytest.approx(0.5) and r["seeds"] == 2
    assert r["after_accuracy_per_seed"] == pytest.approx([2 / 3, 1.0])
    lo, hi = r["ci95"]
    assert lo <= 0.5 <= hi and 0 < r["p_value"] <= 1


def test_compare_seeds_flags_degradation_and_no_change():
    from cotgap_ray.stats import compare_seeds

    before = [True] * 40 + [False] * 10
    worse = [[False] * 30 + [True] * 10 + [False] * 10] * 2
    r = compare_seeds(before, worse)
    assert r["degrades"] and not r["improves"] and r["p_value"] < 0.001
    same = compare_seeds(before, [before, before])
    assert same["delta"] == 0 and same["p_value"] == 1.0 and not same["degrades"]
    with pytest.raises(ValueError):
        compare_seeds(before, [])


def test_discordance_is_the_fraction_of_changed_problems():
    assert compare([True, False, False, True], [True, True, False, False])["discordance"] == 0.5
    assert compare_seeds([False, False, True], [[True, False, True], [True, True, True]])["discordance"] == 0.5


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
