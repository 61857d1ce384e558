"""Statistics for accuracies and deltas (pure functions over lists of booleans; no model, no Ray).

A delta compares the student before and after distillation on the SAME problems, so the tests are paired:

    before = [True, False, False, True]    (baseline, per problem)
    after  = [True, True,  False, False]   (with the adapter, same problems, same order)
    compare(before, after) -> {"delta": 0.0, "ci95": [lo, hi], "p_value": 1.0, "degrades": False, ...}
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np


def wilson_ci(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion: honest near 0 and 1, unlike the normal approximation.

    wilson_ci(0, 10) -> (0.0, 0.278); wilson_ci(5, 10) -> (0.237, 0.763)
    """
    if n <= 0:
        raise ValueError("wilson_ci needs n > 0")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} must lie in [0, n={n}]")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _paired(before, after) -> tuple[np.ndarray, np.ndarray]:
    if len(before) != len(after):
        raise ValueError(f"paired statistics need one before and one after per problem: "
                         f"got {len(before)} before vs {len(after)} after")
    if not len(before):
        raise ValueError("paired statistics need at least one problem")
    return np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)


def mcnemar_exact_p(before: list[bool], after: list[bool]) -> float:
    """Two-sided exact McNemar test: a binomial(b + c, 1/2) test on the discordant pairs.

    b = right before and wrong after, c = wrong before and right after; p = 2 * P(X <= min(b, c)), capped at 1.
    b=1, c=6 -> 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125. No discordant pair -> 1.0."""
    x, y = _paired(before, after)
    return mcnemar_counts_p(int(np.sum(x & ~y)), int(np.sum(~x & y)))


def mcnemar_counts_p(b: int, c: int) -> float:
    """mcnemar_exact_p from the two discordant counts (an exact two-sided sign test of b against c).
    b=2, c=12 -> 2 * (C(14,0) + C(14,1) + C(14,2)) / 2^14 = 0.0129."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; int / int is correctly rounded even for huge n


def mcnemar_greater_p(x: list[bool], y: list[bool]) -> float:
    """One-sided exact McNemar test that x is right on more problems than y: P(X >= b) for X ~ Binomial(b + c, 1/2),
    b = problems only x gets right, c = problems only y gets right. b=5, c=0 -> 1/32 = 0.03125; b=c -> >= 0.5;
    no discordant pair -> 1.0."""
    a, z = _paired(x, y)
    b, c = int(np.sum(a & ~z)), int(np.sum(~a & z))
    return _half_binomial_upper_tail(b + c, b)


@functools.lru_cache(maxsize=4096)
def _half_binomial_upper_tail(n: int, b: int) -> float:
    """P(X >= b) for X ~ Binomial(n, 1/2), from exact integers with one rounding (1.0 for n = 0). Cached: the
    proxy rule-out (search/allocation.py) tests every ordered pair of teachers, and its tests re-run it thousands
    of times on the same few (n, b)."""
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(b, n + 1)) / 2**n)

# ---------------------------------------------------------------- exact binomial intervals (no scipy in the venv)

def _binom_tail_at_least(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term in log space (no overflow for n in the thousands)."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    j = np.arange(k, n + 1)
    terms = _log_comb(n)[k:] + j * math.log(p) + (n - j) * math.log1p(-p)
    return float(min(1.0, np.exp(terms).sum()))


@functools.lru_cache(maxsize=64)
def _log_comb(n: int) -> np.ndarray:
    """log C(n, j) for j = 0..n (cached: a bisection evaluates the same n's tail ~60 times)."""
    return np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in range(n + 1)])


def _bisect_increasing(f, target: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """The p in [lo, hi] where the increasing function f crosses target, by plain bisection (deterministic; 200
    halvings reach float resolution long before they run out: the loop stops when the midpoint stops moving)."""
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid <= lo or mid >= hi:
            break
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@functools.lru_cache(maxsize=4096)  # pure; compare_seeds and the property tests ask for the same counts again
def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided `level` interval of a binomial proportion: each tail holds at most
    (1 - level) / 2, so coverage is >= level for every true proportion (conservative, never below).

    The bounds are the beta quantiles Beta((1-level)/2; k, n-k+1) and Beta((1+level)/2; k+1, n-k), found here by
    bisection on the exact binomial tail they are defined by (lower: P(X >= k | p) = (1-level)/2; upper:
    P(X <= k | p) = (1-level)/2), since scipy is not a dependency.
    clopper_pearson(5, 10) -> (0.1871, 0.8129); clopper_pearson(0, 60) -> (0.0, 0.0596) = (0, 1 - 0.025^(1/60))."""
    if n <= 0:
        raise ValueError("clopper_pearson needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    tail = (1 - level) / 2
    lo = 0.0 if successes == 0 else _bisect_increasing(lambda p: _binom_tail_at_least(n, successes, p), tail)
    # P(X <= k | p) = 1 - P(X >= k + 1 | p) decreases in p: its crossing of `tail` is where P(X >= k+1) = 1 - tail.
    hi = 1.0 if successes == n else _bisect_increasing(
        lambda p: _binom_tail_at_least(n, successes + 1, p), 1 - tail)
    return lo, hi


# The level of the discordance-rate interval in compare(). See compare()'s docstring for the coverage argument.
DISCORDANCE_LEVEL = 0.95


def mcnemar_interval(b: int, c: int, n: int, alpha: float = 0.05,
                     discordance_level: float = DISCORDANCE_LEVEL) -> tuple[float, float]:
    """Interval for delta = P(fixed) - P(broken) from b broken and c fixed of n paired problems, built so that it
    excludes zero exactly when the two-sided exact McNemar test (mcnemar_exact_p) rejects at `alpha`.

    delta = pi * (2q - 1), with pi = P(a problem changes outcome) and q = P(fixed | changed). Given D = b + c,
    c ~ Binomial(D, q): the Clopper-Pearson interval of q at level 1 - alpha is exactly the inversion of the
    doubled-tail exact binomial test mcnemar_exact_p uses, so q = 1/2 (delta = 0) lies outside it iff p < alpha.
    pi gets a Clopper-Pearson interval of D out of n at `discordance_level`; the interval of delta is the range of
    pi * (2q - 1) over that box (a bilinear function: its extremes are at the corners). pi_lo > 0 whenever D > 0,
    so the sign of the interval is the sign of (2q - 1)'s, i.e. the test's. D = 0 gives [-pi_hi, +pi_hi]
    (n = 60: +-5.96 points): nothing changed in this sample, but a rate of change up to pi_hi is not ruled out.
    mcnemar_interval(0, 4, 60) -> (-0.0332, 0.1620) (p 0.125); mcnemar_interval(0, 10, 60) -> (0.0318, 0.2852)
    (p 0.002); mcnemar_interval(0, 0, 60) -> (-0.0596, 0.0596)."""
    if not (0 <= b and 0 <= c and b + c <= n):
        raise ValueError(f"need 0 <= b, c and b + c <= n: got b={b}, c={c}, n={n}")
    d = b + c
    q_lo, q_hi = (0.0, 1.0) if d == 0 else clopper_pearson(c, d, 1 - alpha)
    if d:
        # The exact integer test is the authority at the boundary. The bisection is accurate to ~1e-15, so the bound
        # and the test can only disagree if the tail at q = 1/2 lies within rounding of alpha / 2: then (and only
        # then: a real disagreement is left alone for the tests to catch) the bound is nudged to the test's side.
        tail = sum(math.comb(d, k) for k in range(min(b, c) + 1))
        rejects = 2 * tail / 2**d < alpha
        eps = 1e-12
        if rejects and c > b and 0.5 - eps < q_lo <= 0.5:
            q_lo = float(np.nextafter(0.5, 1.0))
        elif rejects and b > c and 0.5 <= q_hi < 0.5 + eps:
            q_hi = float(np.nextafter(0.5, 0.0))
        elif not rejects:
            q_lo = 0.5 if 0.5 < q_lo < 0.5 + eps else q_lo
            q_hi = 0.5 if 0.5 - eps < q_hi < 0.5 else q_hi
    pi_lo, pi_hi = clopper_pearson(d, n, discordance_level)
    corners = [(2 * q - 1) * pi for q in (q_lo, q_hi) for pi in (pi_lo, pi_hi)]
    return float(min(corners)), float(max(corners))


def compare(before: list[bool], after: list[bool], alpha: float = 0.05) -> dict:
    """Everything the report says about one delta (one fine-tune, one seed): accuracies, delta, an interval, the
    exact McNemar p and the verdict, all from exact tests so that the interval and the verdict cannot disagree.

    Test: two-sided exact McNemar (mcnemar_exact_p) at `alpha`. Interval ("ci95"): mcnemar_interval, the range of
    delta = pi * (2q - 1) over a box of two Clopper-Pearson intervals, q's at exactly 1 - alpha (so the interval
    excludes 0 iff the test rejects; a percentile bootstrap did not: it excluded 0 at 4 fixed / 0 broken of 60, p
    0.125, and collapsed to [0, 0] when nothing changed) and pi's at DISCORDANCE_LEVEL (95%).
    Coverage, stated honestly. Guaranteed: q's interval covers with probability >= 1 - alpha conditionally on every
    D, and pi's covers with probability >= 95% and depends on D only, so the box covers (pi, q) with probability
    >= 0.95 * 0.95 = 0.9025 (q's level cannot be raised without breaking "excludes 0 iff p < alpha"). delta itself
    is covered whenever the box is and often when it is not: its exact coverage (summing the binomial
    probabilities of every (b, c) outcome) over a grid of 400 pi x 107 q values is >= 95.6% at n = 30, 60 and 200
    and >= 97.3% at n = 10 (lowest at delta = 0, where it is exactly the exact test's 1 - size); tests/test_stats.py
    recomputes it on a coarser grid at n = 30. At delta = 0 coverage is >= 95% by exactness of the test.
    Width: conservative (at n = 1319, 10% discordance, about a third wider than a bootstrap interval), the price of
    never claiming more than the exact test does.

    improves = the interval lies above 0 (same as p < alpha with more fixed than broken); degrades = below 0.
    4 fixed, 0 broken of 60 -> delta +6.7 points, ci95 [-3.3, +16.2] points, p 0.125: neither improves nor degrades."""
    x, y = _paired(before, after)
    b, c, n = int(np.sum(x & ~y)), int(np.sum(~x & y)), len(x)
    lo, hi = mcnemar_interval(b, c, n, alpha)
    return {
        "n": n,
        "before_accuracy": float(x.mean()),
        "after_accuracy": float(y.mean()),
        "delta": (c - b) / n,
        "ci95": [lo, hi],
        "p_value": mcnemar_exact_p(x, y),
        "discordance": (b + c) / n,  # fraction of problems the adapter changed (sets the power)
        "degrades": bool(hi < 0),  # the whole interval is below zero: distillation made the student worse
        "improves": bool(lo > 0),
        "test": "exact McNemar",
        "interval": "exact McNemar box (Clopper-Pearson)",
        "seeds": 1,
        "training_variance": "not measured (one seed)",
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: several deltas tested at once (one per teacher, say)
    keep the chance of any false "improves" <= alpha when each adjusted p is compared with alpha. Step-down: sort
    ascending, the j-th smallest (0-based) gets (m - j) * p, a running maximum keeps the adjusted values in the
    same order as the raw ones (an adjusted p is never below a smaller raw p's), capped at 1. Uniformly more
    powerful than plain Bonferroni (m * p) and valid under any dependence between the tests.
    holm([0.01, 0.04, 0.03, 0.005]) -> [0.03, 0.06, 0.06, 0.02]  (sorted: 4 * 0.005, 3 * 0.01, 2 * 0.03, max(1 * 0.04,
    0.06)); holm([0.5, 0.9]) -> [1.0, 1.0]; holm([]) -> []."""
    ps = [float(p) for p in p_values]
    if any(not 0.0 <= p <= 1.0 for p in ps):  # also rejects NaN
        raise ValueError(f"p-values must lie in [0, 1]: got {ps}")
    m = len(ps)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: ps[k])):  # stable: ties keep their input order
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def _chunks(total: int, n: int):
    """Sizes of row blocks so a (rows x n) matrix stays near 2M cells (the whole 10000 x 1319 is ~100 MB)."""
    chunk = max(1, 2_000_000 // n)
    for start in range(0, total, chunk):
        yield min(chunk, total - start)


def _sign_flip_null(diff: np.ndarray, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For n_perm random sign vectors e: (mean(e * diff), mean(e)). Enough to test any shifted null delta0:
    mean(e * (diff - delta0)) = mean(e * diff) - delta0 * mean(e), so the inversion needs no second pass."""
    shifted, signs = [], []
    for size in _chunks(n_perm, len(diff)):
        e = rng.choice(np.array([-1.0, 1.0]), size=(size, len(diff)))
        shifted.append(e @ diff / len(diff))
        signs.append(e.mean(axis=1))
    return np.concatenate(shifted), np.concatenate(signs)


def _sign_flip_p(delta0: float, mean: float, shifted: np.ndarray, signs: np.ndarray) -> float:
    """Two-sided sign-flip p of H0: delta = delta0. +1 in numerator and denominator: the observed assignment is one
    of the sign vectors (never p = 0); the 1e-12 slack counts float-rounded ties as ties."""
    observed = abs(mean - delta0)
    extreme = np.sum(np.abs(shifted - delta0 * signs) >= observed - 1e-12)
    return float(min(1.0, (1 + extreme) / (len(shifted) + 1)))


def _sign_flip_interval(mean: float, shifted: np.ndarray, signs: np.ndarray, alpha: float) -> tuple[float, float]:
    """Hull of {delta0 : sign-flip p(delta0) >= alpha} (test inversion), each end found by bisection between the
    estimate (p = 1 there) and the bound of the scale, [-1, 1]."""
    def accepted(d0: float) -> bool:
        return _sign_flip_p(d0, mean, shifted, signs) >= alpha

    ends = []
    for far in (-1.0, 1.0):
        if accepted(far):
            ends.append(far)
            continue
        inside, outside = mean, far
        for _ in range(60):  # 2^-60 of a unit range: far below one problem's 1/n
            mid = (inside + outside) / 2
            if accepted(mid):
                inside = mid
            else:
                outside = mid
        ends.append(inside)
    lo, hi = ends
    if accepted(0.0):  # the acceptance set need not be convex: its hull must still contain 0 when 0 is accepted
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


# The test of compare_seeds / compare_runs with seeds: the hull interval's own (the largest of its parts' p-values).
HULL_TEST = "hull test (sign-flip, two-level bootstrap, exact per pair)"


def _exclusion_p(interval_at, sign: float) -> float:
    """A p-value for one part of a hull interval: the smallest level a at which interval_at(a) (an interval that
    widens as a falls) lies wholly on `sign`'s side of 0, found by bisection; 1.0 when no level puts it there (or
    sign is 0). So the part excludes 0 at level a exactly when this p is below a (up to the bisection's 2^-32)."""
    def excluded(a: float) -> bool:
        lo, hi = interval_at(a)
        return bool(lo > 0) if sign > 0 else bool(hi < 0)

    top = 1 - 1e-9
    if sign == 0 or not excluded(top):
        return 1.0
    inside, outside = top, 0.0  # excluded at `inside`, not at `outside` (level 0: an infinitely wide interval)
    for _ in range(32):  # 2^-32 of the level: far below the 3 digits a p is read to (the caller settles alpha)
        mid = (inside + outside) / 2
        if excluded(mid):
            inside = mid
        else:
            outside = mid
    return float(inside)


def compare_seeds(before: list[bool], afters: list[list[bool]], n_boot: int = 10000, seed: int = 0,
                  alpha: float = 0.05) -> dict:
    """compare() for several fine-tunes (seeds) of one config scored on the same problems.

    One seed: exactly compare() (exact McNemar test and interval), plus after_accuracy_per_seed.
    Two or more seeds: per problem, diff = mean over seeds of after - before (a fraction in [-1, 1]); delta = mean
    diff. The interval ("ci95") is the hull (union's span) of three intervals:
      1. a two-level percentile bootstrap: each replicate resamples problems AND, independently, seeds (a seed is a
         whole training run, so one seed draw applies to all problems of the replicate). Resampling problems only
         treats the seeds as fixed and leaves training variance out; this puts it in (slightly conservatively: the
         problem x seed noise is counted at both levels);
      2. the inversion of the sign-flip test (every delta0 it does not reject at alpha);
      3. the mean over seeds of each seed's exact one-seed interval (mcnemar_interval): 1 and 2 both condition on
         the problems that changed and collapse to [0, 0] when none did (false certainty); this does not.
    2 inverts a two-sided sign-flip permutation test of the per-problem diffs (n_boot random sign vectors, fixed RNG
    seed; valid for paired data: under no effect each diff is symmetric about 0), which holds the seeds fixed.
    The test ("p_value") is the hull's own: the largest of the three parts' p-values (an intersection-union test:
    it rejects only when every part does, and each part is a valid test), each part's p the level at which its
    interval stops containing 0 ("p_parts"; 2's is the sign-flip p). So p < alpha exactly when the hull excludes 0:
    improves (lo > 0) and degrades (hi < 0) are the test's rejections, and a p that the seed-to-seed spread (1) or
    the small-sample bound (3) does not support is not reported (one seed fixing 10 problems of 60 and another
    none: sign-flip p 0.002, but the hull [-1.4, +23.3] points and p >= 0.05).
    Coverage: the hull covers whenever any part does, so at least the largest part's (each a 95% interval; 3's
    covers the seed-mean delta when every seed's interval covers its own; the bootstrap's is approximate).
    Cost: 3 keeps the interval about as wide as one seed's exact interval (n = 1319: ~40% wider than 1 alone);
    more seeds buy a measured training variance, not a much narrower interval (problem sampling dominates).
    With 2 seeds the seed level of 1 can only pick {s1, s1}, {s1, s2} or {s2, s2}: crude, but it is what 2 seeds
    can say about training variance. Deterministic: same inputs and seed -> identical output (fixed RNG seeds).
    The computation is compare_runs(afters, [before]): the baseline is one run with nothing to resample.
    before=[F, F, T], afters=[[T, F, T], [T, T, T]] -> diffs [1, .5, 0], delta 0.5."""
    if not afters:
        raise ValueError("compare_seeds needs at least one seed's results")
    runs = [_paired(before, after)[1] for after in afters]
    b = np.asarray(before, dtype=bool)
    if len(runs) == 1:
        return {**compare(b, runs[0], alpha), "after_accuracy_per_seed": [float(runs[0].mean())]}

    r = compare_runs(runs, [b], n_boot, seed, alpha)
    return {
        "n": r["n"],
        "seeds": len(runs),
        "before_accuracy": float(b.mean()),
        "after_accuracy": float(np.mean([a.mean() for a in runs])),
        "after_accuracy_per_seed": [float(a.mean()) for a in runs],
        "delta": r["delta"],
        "ci95": r["ci95"],
        "ci95_parts": r["ci95_parts"],
        "p_value": r["p_value"],
        "p_parts": r["p_parts"],
        "discordance": r["discordance"],
        "degrades": r["degrades"],
        "improves": r["improves"],
        "test": r["test"],
        "interval": "hull: two-level bootstrap, sign-flip inversion, mean exact per-seed",
        "training_variance": f"measured ({len(runs)} seeds)",
    }


def compare_runs(x_runs: list[list[bool]], y_runs: list[list[bool]], n_boot: int = 10000, seed: int = 0,
                 alpha: float = 0.05) -> dict:
    """Accuracy of the runs x minus that of the runs y on the SAME problems (x_runs[j][i] and y_runs[k][i] answer
    problem i), each run one fine-tune's (one seed's) or the baseline's right/wrong answers: compare_seeds' test and
    interval for two sides that may both have seeds. validate.py's regret is compare_runs(grid's seeds, search's).

    delta = mean over problems of (mean over x's runs - mean over y's runs). One run each: compare(y, x), the exact
    McNemar test and interval of a paired difference of two proportions (b = problems only y gets right, c = only
    x). Several runs on either side: compare_seeds' machinery over the crossed pairs (j, k), whose changes x_j - y_k
    (each -1, 0 or +1 per problem) average to the per-problem diff: the hull of the two-level bootstrap (problems,
    and each side's runs resampled independently: the two sides are separate trainings), the inversion of the
    sign-flip test of the diffs and the mean over pairs of each pair's exact interval, and the hull's own test (the
    largest of the parts' p-values), so the interval excludes 0 exactly when the test rejects. The sign-flip part
    assumes each diff symmetric about 0 under no difference, exact when the two sides have as many runs (then they
    are exchangeable), approximate otherwise; the bootstrap part is approximate (a percentile bootstrap).
    x=[[T, T, F], [T, F, F]], y=[[F, F, F], [F, T, F]] -> diffs [1, 0, 0], delta 1/3."""
    if not x_runs or not y_runs:
        raise ValueError("compare_runs needs at least one run on each side")
    n = len(x_runs[0])
    if any(len(r) != n for r in [*x_runs, *y_runs]):
        raise ValueError(f"compare_runs needs every run on the same problems: got runs of "
                         f"{sorted({len(r) for r in [*x_runs, *y_runs]})} problems")
    if not n:
        raise ValueError("paired statistics need at least one problem")
    x, y = np.array(x_runs, dtype=bool), np.array(y_runs, dtype=bool)
    sx, sy = len(x), len(y)
    if sx == sy == 1:
        r = compare(y[0], x[0], alpha)
        return {k: r[k] for k in ("n", "delta", "ci95", "p_value", "discordance", "degrades", "improves", "test",
                                  "interval")} | {"runs": [1, 1]}

    # (pairs, problems), pair (j, k) at row j * sy + k: +1 where x_j is right and y_k wrong, -1 the reverse
    changes = (x.astype(np.int8)[:, None, :] - y.astype(np.int8)[None, :, :]).reshape(sx * sy, n)
    diff = changes.mean(axis=0)
    delta = float(diff.mean())
    # Two independent streams: the bootstrap's draws do not shift the permutation test's (or the reverse).
    boot_rng, flip_rng = (np.random.default_rng([seed, k]) for k in (0, 1))

    boot = []
    for size in _chunks(n_boot, n * sx * sy):
        idx = boot_rng.integers(0, n, size=(size, n))
        per_pair = changes[:, idx].mean(axis=2).T  # (size, pairs): each pair's delta on the resampled problems
        wx = boot_rng.multinomial(sx, np.full(sx, 1 / sx), size=size) / sx  # resampled runs, as counts
        # One run on y's side (compare_seeds' baseline) has nothing to resample: no draw, so the stream is unchanged
        wy = boot_rng.multinomial(sy, np.full(sy, 1 / sy), size=size) / sy if sy > 1 else np.ones((size, 1))
        boot.append((per_pair * (wx[:, :, None] * wy[:, None, :]).reshape(size, sx * sy)).sum(axis=1))

    boot = np.sort(np.concatenate(boot))
    boot_lo, boot_hi = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))

    shifted, signs = _sign_flip_null(diff, n_boot, flip_rng)
    p_flip = _sign_flip_p(0.0, delta, shifted, signs)
    inv_lo, inv_hi = _sign_flip_interval(delta, shifted, signs, alpha)

    counts = [(int(np.sum(ch < 0)), int(np.sum(ch > 0))) for ch in changes]  # (broken, fixed) of each pair

    def exact_at(level: float) -> tuple[float, float]:
        ends = [mcnemar_interval(b, c, n, level) for b, c in counts]
        return float(np.mean([e[0] for e in ends])), float(np.mean([e[1] for e in ends]))

    exact_lo, exact_hi = exact_at(alpha)
    lo, hi = min(boot_lo, inv_lo, exact_lo, delta), max(boot_hi, inv_hi, exact_hi, delta)

    # The test is the hull's own: its p is the largest of the parts' (an intersection-union test, valid as each part
    # is), each part's p the level at which its interval stops containing 0. So p < alpha exactly when the hull
    # excludes 0. The sign-flip p alone holds the runs fixed: two trainings of one teacher that differ by training
    # noise get p 0.003 beside a hull [-0.3, +12.1] (benchmarks/results/2026-12-known-answers.md), a test and an
    # interval that disagree.
    sign = float(np.sign(delta))
    # keyed as ci95_parts: p_parts[k] < alpha exactly when ci95_parts[k] excludes 0
    parts = {"two_level_bootstrap": _exclusion_p(lambda a: np.quantile(boot, [a / 2, 1 - a / 2]), sign),
             "sign_flip_inversion": p_flip if (inv_lo > 0 or inv_hi < 0) or p_flip >= alpha else alpha,
             "mean_exact_per_seed": _exclusion_p(exact_at, sign)}
    p = max(parts.values())
    excludes = lo > 0 or hi < 0
    if excludes != (p < alpha):  # only at the bisection's resolution: the hull at alpha is the authority
        p = float(np.nextafter(alpha, 0.0)) if excludes else max(p, alpha)
    return {
        "n": n,
        "runs": [sx, sy],
        "delta": delta,
        "ci95": [lo, hi],
        "ci95_parts": {"two_level_bootstrap": [boot_lo, boot_hi], "sign_flip_inversion": [inv_lo, inv_hi],
                       "mean_exact_per_seed": [exact_lo, exact_hi]},
        "p_value": p,
        "p_parts": parts,
        "discordance": float(np.mean([np.mean(ch != 0) for ch in changes])),  # per pair: fraction of problems changed
        "degrades": bool(hi < 0),
        "improves": bool(lo > 0),
        "test": HULL_TEST,
        "interval": "hull: two-level bootstrap (problems; each side's runs), sign-flip inversion, mean exact per pair "
                    "of runs",
    }


def _binom_pmf(n: int, p: float) -> np.ndarray:
    """P(X = k), k = 0..n, of Binomial(n, p), computed in log space (no overflow for n in the thousands)."""
    k = np.arange(n + 1)
    if p <= 0 or p >= 1:
        out = np.zeros(n + 1)
        out[0 if p <= 0 else n] = 1.0
        return out
    log = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in k])
           + k * math.log(p) + (n - k) * math.log1p(-p))
    return np.exp(log)


def mcnemar_power(n: int, discordance: float, effect: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test (mcnemar_exact_p < alpha) on n paired problems when a fraction
    `discordance` of them change outcome and the changes favour the adapter by `effect` (fixed minus broken, as a
    fraction of n; |effect| <= discordance). Discordant count D ~ Binomial(n, discordance); given D, the fixed count
    ~ Binomial(D, (1 + effect / discordance) / 2)."""
    if not 0 < discordance <= 1 or abs(effect) > discordance:
        return 0.0
    q = (1 + effect / discordance) / 2
    power = 0.0
    p_d = _binom_pmf(n, discordance)
    for d in range(1, n + 1):
        if p_d[d] < 1e-12:
            continue
        # The exact test rejects when min(b, c) <= k_crit: 2 * P(Bin(d, 1/2) <= k) < alpha.
        tail = np.cumsum(_binom_pmf(d, 0.5))
        ok = np.nonzero(2 * tail < alpha)[0]
        if ok.size == 0:
            continue
        k_crit = int(ok[-1])
        fixed = _binom_pmf(d, q)
        reject = fixed[: k_crit + 1].sum() + fixed[d - k_crit:].sum()  # c <= k_crit or b <= k_crit
        power += p_d[d] * min(1.0, reject)
    return float(power)


def min_detectable_effect(n: int, discordance: float, power: float = 0.8, alpha: float = 0.05,
                          step: float = 0.005) -> float | None:
    """The smallest improvement (fraction of problems, on a `step` grid) that the exact McNemar test on n problems
    detects with `power` at `discordance` (the fraction of problems whose outcome an adapter changes, as measured).
    None when no effect up to the discordance itself reaches that power: the split is too small to answer.
    n=60, discordance 0.2 -> 0.165 (one problem is 1.7 points); n=200 -> 0.095."""
    if n < 1 or not 0 < discordance <= 1:
        return None
    effect = step
    while effect <= discordance + 1e-12:
        if mcnemar_power(n, discordance, effect, alpha) >= power:
            return round(effect, 6)
        effect += step
    return None


# ------------------------------------------------------------------ search quality (validate.py): rank agreement

def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span: [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # a handful of teachers: a loop over distinct values is clearer than a scan
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray] | None:
    """x, y as float arrays, or None when a correlation says nothing: fewer than 3 pairs or a constant vector."""
    if len(x) != len(y):
        raise ValueError(f"a correlation needs one y per x: got {len(x)} x vs {len(y)} y")
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return a, b


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation: Pearson's r of the (tie-averaged) ranks. None below 3 pairs or for a constant
    vector (no order to agree with). spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) -> 8 / sqrt(95) = 0.8208."""
    pair = _pairs(x, y)
    if pair is None:
        return None
    rx, ry = (_ranks(v) - (len(v) + 1) / 2 for v in pair)  # mean rank is (n + 1) / 2 with or without ties
    return float(rx @ ry / math.sqrt((rx @ rx) * (ry @ ry)))


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b: (concordant - discordant pairs) / sqrt(pairs untied in x * pairs untied in y), so ties in
    either vector neither count for nor against and a perfect order with ties still reaches +-1. O(n^2): meant for
    a few teachers. None below 3 pairs or for a constant vector.
    kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) -> -4 / sqrt(8 * 9) = -0.4714."""
    pair = _pairs(x, y)
    if pair is None:
        return None
    a, b = pair
    sx = np.sign(a[:, None] - a[None, :])[np.triu_indices(len(a), k=1)]
    sy = np.sign(b[:, None] - b[None, :])[np.triu_indices(len(b), k=1)]
    return float(sx @ sy / math.sqrt((sx @ sx) * (sy @ sy)))


# Permutation p-values of the rank correlations: every ordering of y enumerated up to this many pairs (8! = 40320),
# a seeded Monte Carlo sample of RANK_P_ORDERINGS orderings above it.
EXACT_ORDERINGS_UP_TO = 8
RANK_P_ORDERINGS = 20000
RANK_METHODS = ("spearman", "kendall")


@functools.lru_cache(maxsize=8)
def _all_orderings(n: int) -> np.ndarray:
    """Every permutation of range(n), one per row (n! rows; cached: validate asks for the same n per proxy)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def _rank_statistic(a: np.ndarray, b: np.ndarray, method: str):
    """stat(orders) -> the correlation of a with b[order] for each row of `orders`, vectorised. The denominators
    (spread of the ranks, untied pairs) do not change when b is reordered, so they are computed once."""
    if method == "spearman":
        rx, ry = (_ranks(v) - (len(v) + 1) / 2 for v in (a, b))
        scale = math.sqrt((rx @ rx) * (ry @ ry))
        return lambda orders: ry[orders] @ rx / scale
    iu, ju = np.triu_indices(len(a), k=1)
    sx = np.sign(a[iu] - a[ju])
    sy = np.sign(b[iu] - b[ju])
    scale = math.sqrt((sx @ sx) * (sy @ sy))

    def tau(orders: np.ndarray) -> np.ndarray:
        reordered = b[orders]
        return np.sign(reordered[:, iu] - reordered[:, ju]) @ sx / scale
    return tau


def rank_correlation_p(x: list[float], y: list[float], method: str = "spearman", n_orderings: int = RANK_P_ORDERINGS,
                       seed: int = 0, exact_up_to: int = EXACT_ORDERINGS_UP_TO) -> float | None:
    """One-sided permutation p-value of `method`'s correlation (spearman or kendall: tau-b) of x with y, against H1:
    positive association. Under H0 (no relation) every ordering of y against x is equally likely, so p = the share
    of orderings whose correlation is >= the observed one (ties in value count as as-extreme).

    One-sided because validate signs every proxy so that higher predicts a better teacher: a proxy that ranks the
    teachers backwards has failed, and must not count as evidence (docs/statistics.md). Exact (all n! orderings,
    ties in x or y included: the orderings of a tied y are counted as often as they occur) for n <= exact_up_to;
    above it a Monte Carlo sample of n_orderings random orderings with a fixed seed, p = (1 + as extreme) /
    (1 + n_orderings) (the observed ordering is one of them, so never 0). None where the correlation is None (fewer
    than 3 pairs, a constant vector). A perfect ranking of 4 teachers: p = 1/24 = 0.042 (Spearman and Kendall); of 5:
    1/120; Spearman 0.9 of 5 (one neighbour swap): 5/120."""
    if method not in RANK_METHODS:
        raise ValueError(f"rank_correlation_p: method {method!r} is not one of {', '.join(RANK_METHODS)}")
    pair = _pairs(x, y)
    if pair is None:
        return None
    a, b = pair
    n = len(a)
    stat = _rank_statistic(a, b, method)
    observed = stat(np.arange(n)[None, :])[0]
    slack = 1e-9  # the same value reached through another ordering may differ in its last bits: still as extreme
    if n <= exact_up_to:
        orders = _all_orderings(n)
        return float(np.sum(stat(orders) >= observed - slack) / len(orders))
    rng = np.random.default_rng(seed)
    extreme = 0
    for size in _chunks(n_orderings, n):
        orders = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)
        extreme += int(np.sum(stat(orders) >= observed - slack))
    return float((1 + extreme) / (1 + n_orderings))


def rank_correlation_bootstrap(proxy: list[float], per_problem: list[list[float]], method: str = "spearman",
                               n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval, over problems, of the rank correlation of a fixed proxy with a truth measured on
    problems: per_problem[i][k] is teacher i's contribution on problem k (its truth is the mean over k; validate
    passes each test problem's mean-over-seeds correctness minus the baseline's, so the mean is the test delta).
    Each resample draws the problems with replacement (the same draw for every teacher: they were scored on the
    same problems), recomputes every teacher's truth and the correlation with the proxy, which stays fixed (it was
    measured on other data: train rationales). A resample where every teacher ties has no order to agree with and
    counts as 0. Deterministic (seeded). None where the correlation itself is None.
    What it measures: how much the truth's ranking moves with the sample of test problems, nothing about which
    teachers were chosen. proxy [3, 2, 1] with per-problem truths constant per teacher -> (1.0, 1.0)."""
    if method not in RANK_METHODS:
        raise ValueError(f"rank_correlation_bootstrap: method {method!r} is not one of {', '.join(RANK_METHODS)}")
    table = np.asarray(per_problem, dtype=float)
    if table.ndim != 2 or len(table) != len(proxy) or table.shape[1] == 0:
        raise ValueError(f"rank_correlation_bootstrap needs one row of per-problem values per proxy value, each with "
                         f"the same problems: got {len(proxy)} proxy values and an array of shape {table.shape}")
    corr = spearman if method == "spearman" else kendall_tau
    if corr(proxy, table.mean(axis=1)) is None:
        return None
    rng = np.random.default_rng(seed)
    n_problems = table.shape[1]
    values = []
    for size in _chunks(n_boot, n_problems * len(table)):
        idx = rng.integers(0, n_problems, size=(size, n_problems))
        # (teachers, resamples); rounded so that equal means reached by different sums tie, as they should
        truths = np.round(table[:, idx].mean(axis=2), 12)
        values.append(_columnwise_correlation(np.asarray(proxy, dtype=float), truths, method))
    lo, hi = np.quantile(np.concatenate(values), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def spearman_pairs_bootstrap(x: list[float], y: list[float], n_boot: int = 2000, seed: int = 0,
                             level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of spearman(x, y) over the pairs themselves: each resample draws len(x) (x, y)
    pairs with replacement (both sides move together, unlike rank_correlation_bootstrap, whose proxy stays fixed) and
    recomputes the correlation; a resample where x or y is constant has no order to agree with and counts as 0 (as
    there). Deterministic (seeded; the n_boot x n draws are one rng.integers call). None where spearman(x, y) is
    None. It assumes the pairs are independent draws: where they share something (report_pairs' cells of one
    student share its baseline) the interval is too narrow. x = y = [1, 2, 3, 4, 5, 6] -> (1.0, 1.0)."""
    if spearman(x, y) is None:
        return None
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(a)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    values, start = [], 0
    for size in _chunks(n_boot, n * n):  # the rank comparisons are (rows, n, n)
        block = idx[start:start + size]
        rx, ry = _row_ranks(a[block]), _row_ranks(b[block])
        num, spread = (rx * ry).sum(axis=1), (rx * rx).sum(axis=1) * (ry * ry).sum(axis=1)
        values.append(np.divide(num, np.sqrt(spread), out=np.zeros(size), where=spread > 0))
        start += size
    lo, hi = np.quantile(np.concatenate(values), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _row_ranks(rows: np.ndarray) -> np.ndarray:
    """Each row's tie-averaged ranks minus their mean (n + 1) / 2: (values below) + (values equal, itself included,
    + 1) / 2, as in _columnwise_correlation. [[10, 20, 20, 30]] -> [[-1.5, 0, 0, 1.5]]."""
    below = (rows[:, None, :] < rows[:, :, None]).sum(axis=2)
    equal = (rows[:, None, :] == rows[:, :, None]).sum(axis=2)
    return below + (equal + 1) / 2 - (rows.shape[1] + 1) / 2


def _columnwise_correlation(x: np.ndarray, ys: np.ndarray, method: str) -> np.ndarray:
    """spearman(x, ys[:, j]) or kendall_tau(x, ys[:, j]) for every column j at once, 0.0 for a constant column (no
    order to agree with). x is not constant. Tie-averaged rank of a value: (values below it) + (values equal to it,
    itself included, + 1) / 2."""
    if method == "spearman":
        rx = _ranks(x) - (len(x) + 1) / 2
        below = (ys[None, :, :] < ys[:, None, :]).sum(axis=1)
        equal = (ys[None, :, :] == ys[:, None, :]).sum(axis=1)
        ry = below + (equal + 1) / 2 - (len(x) + 1) / 2
        num, spread = rx @ ry, (ry * ry).sum(axis=0)
        return np.divide(num, np.sqrt((rx @ rx) * spread), out=np.zeros(ys.shape[1]), where=spread > 0)
    iu, ju = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[iu] - x[ju]), np.sign(ys[iu] - ys[ju])
    untied = (sy * sy).sum(axis=0)
    return np.divide(sx @ sy, np.sqrt((sx @ sx) * untied), out=np.zeros(ys.shape[1]), where=untied > 0)
