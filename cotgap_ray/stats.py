"""Statistics for accuracies and deltas (pure functions over lists of booleans; no model, no Ray).

A delta compares the student before and after distillation on the SAME problems, so the tests are paired:

    before = [True, False, False, True]    (baseline, per problem)
    after  = [True, True,  False, False]   (with the adapter, same problems, same order)
    compare(before, after) -> {"delta": 0.0, "ci95": [lo, hi], "p_value": 1.0, "degrades": False, ...}
"""

from __future__ import annotations

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


def paired_bootstrap_ci(before: list[bool], after: list[bool], n_boot: int = 10000, seed: int = 0,
                        alpha: float = 0.05) -> tuple[float, float, float]:
    """(delta, lo, hi): accuracy(after) - accuracy(before) and its percentile-bootstrap (1 - alpha) interval.

    Problems are resampled with replacement, each carrying its (before, after) pair, so the interval reflects the
    pairing (much narrower than two independent intervals when both models get the same problems right)."""
    b, a = _paired(before, after)
    diff = a.astype(np.int8) - b.astype(np.int8)  # per problem: +1 fixed, -1 broken, 0 unchanged
    rng = np.random.default_rng(seed)
    # Resample in chunks: a full (n_boot x n) index matrix is ~100 MB at n=1319 (GSM8K test).
    chunk = max(1, 2_000_000 // len(diff))
    means = np.concatenate([
        diff[rng.integers(0, len(diff), size=(min(chunk, n_boot - start), len(diff)))].mean(axis=1)
        for start in range(0, n_boot, chunk)
    ])
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(lo), float(hi)


def mcnemar_exact_p(before: list[bool], after: list[bool]) -> float:
    """Two-sided exact McNemar test: a binomial(b + c, 1/2) test on the discordant pairs.

    b = right before and wrong after, c = wrong before and right after; p = 2 * P(X <= min(b, c)), capped at 1.
    b=1, c=6 -> 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125. No discordant pair -> 1.0."""
    x, y = _paired(before, after)
    b, c = int(np.sum(x & ~y)), int(np.sum(~x & y))
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; int / int is correctly rounded even for huge n


def compare(before: list[bool], after: list[bool], n_boot: int = 10000, seed: int = 0) -> dict:
    """Everything the report says about one delta: accuracies, delta, 95% CI, McNemar p, degrades / improves."""
    b, a = _paired(before, after)
    delta, lo, hi = paired_bootstrap_ci(b, a, n_boot=n_boot, seed=seed)
    return {
        "n": len(b),
        "before_accuracy": float(b.mean()),
        "after_accuracy": float(a.mean()),
        "delta": delta,
        "ci95": [lo, hi],
        "p_value": mcnemar_exact_p(b, a),
        "discordance": float(np.mean(b != a)),  # fraction of problems the adapter changed (sets the power)
        "degrades": hi < 0,  # the whole interval is below zero: distillation made the student worse
        "improves": lo > 0,
    }


def compare_seeds(before: list[bool], afters: list[list[bool]], n_boot: int = 10000, seed: int = 0) -> dict:
    """compare() for several fine-tunes (seeds) of one config scored on the same problems.

    Per problem, diff = mean over seeds of after - before (a fraction in [-1, 1]). delta = mean diff; the 95% CI
    resamples problems (seed noise stays inside each problem's diff); p is a two-sided sign-flip permutation test of
    the per-problem diffs (exact in distribution for paired data; with one seed it tests the same thing as McNemar).
    before=[F, F, T], afters=[[T, F, T], [T, T, T]] -> diffs [1, .5, 0], delta 0.5."""
    if not afters:
        raise ValueError("compare_seeds needs at least one seed's results")
    b = np.asarray(before, dtype=float)
    runs = [_paired(before, after)[1].astype(float) for after in afters]
    diff = np.mean(runs, axis=0) - b
    rng = np.random.default_rng(seed)
    n = len(diff)
    chunk = max(1, 2_000_000 // n)
    boot, flips = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        boot.append(diff[rng.integers(0, n, size=(size, n))].mean(axis=1))
        flips.append((diff * rng.choice([-1.0, 1.0], size=(size, n))).mean(axis=1))
    lo, hi = np.quantile(np.concatenate(boot), [0.025, 0.975])
    observed = abs(diff.mean())
    # +1 in numerator and denominator: the observed assignment is one of the permutations (never p = 0).
    p = (1 + np.sum(np.abs(np.concatenate(flips)) >= observed - 1e-12)) / (n_boot + 1)
    return {
        "n": n,
        "seeds": len(afters),
        "before_accuracy": float(b.mean()),
        "after_accuracy": float(np.mean(runs)),
        "after_accuracy_per_seed": [float(r.mean()) for r in runs],
        "delta": float(diff.mean()),
        "ci95": [float(lo), float(hi)],
        "p_value": float(min(1.0, p)),
        "discordance": float(np.mean([np.mean(r != b) for r in runs])),
        "degrades": bool(hi < 0),
        "improves": bool(lo > 0),
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
