"""The clone check's false positives, simulated: how often two sets of trainings of ONE teacher are called different,
by each test the report could use, when trainings vary as much as they were measured to vary here.

    python benchmarks/clone_simulation.py                     # seeded; 3 seeds a side, 200 problems (~10 min, 2 cores)
    python benchmarks/clone_simulation.py --runs 200 --taus 0,0.5 --effects 0,6 --n-boot 2000

Pure numpy and cotgap_ray.stats, no Ray, no model: the statistics of known_answers.py's clone_null setting (one null
comparison per 10-minute run there) at a thousand comparisons a few minutes. It measures the test, not the pipeline:
a pipeline that leaked a difference between clones (a cache key, an order) shows only in clone_null's real runs.

The model. A simulated run draws n test problems, each with a difficulty a_i ~ Normal(mu, sigma) on the logit scale.
A training (one confirmation seed of a teacher) draws a quality u ~ Normal(0, tau), the lucky or unlucky seed that
moves many problems at once, and the adapter it makes answers problem i right with probability sigmoid(a_i + u),
independently per problem and training (greedy decoding is deterministic given the adapter: what differs between
trainings is which problems each adapter gets right). Clones: both sides draw their k trainings from the same
distribution. --effects E adds E points to one side's expected accuracy (a logit shift), to show what each test pays
in power. mu and sigma are set so that a training's expected accuracy is --accuracy and two tau = 0 trainings disagree
on --discordance of the problems (defaults 11% and 9%, as measured on chain_sum: the clone_null runs' seeds scored
7-17.5%, and one pair of clone adapters disagreed on 18 of 200 test problems).

The tests, each at alpha 0.05, two-sided, "differ" as a clone check says it:
  exact McNemar, 1+1    stats.compare_runs with one seed a side (the check under confirm.seeds 1): it compares two
                        adapters, so it calls two trainings different whenever they are
  sign-flip alone, k+k  the sign-flip permutation test over problems (compare_runs' p_parts["sign_flip_inversion"]),
                        the p the report printed beside seed-aware verdicts before 2026-12-06: it holds the k + k
                        trainings fixed
  hull, k+k             stats.compare_runs' verdict: its interval excludes 0 exactly when its p is below alpha
Per row: tau and the effect, the SD of one training's accuracy around its run's mean (points: match tau to the spread
measured between seeds, about 2 points in the clone_null runs), then each test's rate of "differ" with its exact
(Clopper-Pearson) 95% interval. At effect 0 that is the false-positive rate (goal: at most 5%); above, the power.
tests/test_clone_simulation.py checks the calibration and the order of the rates on a small run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cotgap_ray.stats import clopper_pearson, compare_runs  # noqa: E402

ALPHA = 0.05
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E[f(Z)], Z ~ N(0, 1), as sum(w f(z)) / sqrt(2 pi)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _expect(f, mu: float, sigma: float) -> float:
    """E[f(mu + sigma Z)] for Z ~ N(0, 1), by Gauss-Hermite quadrature."""
    return float(np.sum(_WEIGHTS * f(mu + sigma * _NODES)))


def _bisect(f, target: float, lo: float, hi: float) -> float:
    """x in [lo, hi] where the increasing f crosses target."""
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


def calibrate(accuracy: float, discordance: float) -> tuple[float, float]:
    """(mu, sigma) of the problems' logit difficulties: a training's expected accuracy E[p] = accuracy and two
    independent trainings' expected discordance E[2 p (1 - p)] = discordance (tau = 0). sigma 0 gives the largest
    discordance, 2 a (1 - a); a wider spread of difficulties makes problems surer, so fewer change.
    calibrate(0.11, 0.09) -> mu about -5.10, sigma about 3.76."""
    if not 0 < accuracy < 1:
        raise ValueError(f"--accuracy {accuracy} must lie in (0, 1)")
    if not 0 < discordance < 2 * accuracy * (1 - accuracy):
        raise ValueError(f"--discordance {discordance} must lie in (0, {2 * accuracy * (1 - accuracy):.3f}): two "
                         f"trainings at accuracy {accuracy} disagree on at most 2 a (1 - a) of the problems")

    def mu_for(sigma: float) -> float:
        return _bisect(lambda m: _expect(_sigmoid, m, sigma), accuracy, -30.0, 30.0)

    def disc(sigma: float) -> float:
        return _expect(lambda x: 2 * _sigmoid(x) * (1 - _sigmoid(x)), mu_for(sigma), sigma)

    sigma = _bisect(lambda s: -disc(s), -discordance, 0.0, 20.0)  # discordance falls as sigma grows
    return mu_for(sigma), sigma


def logit_shift(mu: float, sigma: float, accuracy: float, effect: float) -> float:
    """The shift of every problem's logit that raises the expected accuracy by `effect` (a fraction)."""
    if effect == 0:
        return 0.0
    return _bisect(lambda d: _expect(_sigmoid, mu + d, sigma), accuracy + effect, -30.0, 30.0)


def simulate(*, runs: int, n: int, seeds: int, tau: float, effect: float, accuracy: float, discordance: float,
             n_boot: int, seed: int) -> dict:
    """One row: `runs` simulated clone comparisons (or, with effect > 0, comparisons of a better teacher with a
    worse one); each test's count of "differ" and the SD of a training's accuracy."""
    mu, sigma = calibrate(accuracy, discordance)
    shift = logit_shift(mu, sigma, accuracy, effect)
    rng = np.random.default_rng([seed, int(round(tau * 1000)), int(round(effect * 1000)), n, seeds])
    counts = {"mcnemar": 0, "sign_flip": 0, "hull": 0}
    spreads = []
    for _ in range(runs):
        a = rng.normal(mu, sigma, size=n)
        u = rng.normal(0.0, tau, size=(2, seeds))
        p = _sigmoid(a[None, None, :] + u[:, :, None] + np.array([shift, 0.0])[:, None, None])
        answers = rng.random(p.shape) < p  # (side, training, problem)
        x, y = [list(r) for r in answers[0]], [list(r) for r in answers[1]]
        spreads.append(answers.mean(axis=2).std(axis=1, ddof=1).mean() if seeds > 1 else np.nan)
        one = compare_runs([x[0]], [y[0]], alpha=ALPHA)
        counts["mcnemar"] += bool(one["improves"] or one["degrades"])
        if seeds > 1:
            r = compare_runs(x, y, n_boot=n_boot, seed=int(rng.integers(2**31)), alpha=ALPHA)
            counts["sign_flip"] += bool(r["p_parts"]["sign_flip_inversion"] < ALPHA)
            counts["hull"] += bool(r["improves"] or r["degrades"])
    return {"tau": tau, "effect": effect, "runs": runs, "counts": counts,
            "training_sd": float(100 * np.nanmean(spreads)) if seeds > 1 else None}


def _rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def table(rows: list[dict], seeds: int) -> str:
    head = (f"| tau | effect (points) | training SD (points) | exact McNemar, 1+1 | sign-flip alone, {seeds}+{seeds} "
            f"| hull, {seeds}+{seeds} |")
    lines = [head, "|" + "---|" * 6]
    for r in rows:
        c, n = r["counts"], r["runs"]
        sd = "n/a" if r["training_sd"] is None else f"{r['training_sd']:.1f}"
        lines.append(f"| {r['tau']:g} | {100 * r['effect']:+.0f} | {sd} | {_rate(c['mcnemar'], n)} | "
                     f"{_rate(c['sign_flip'], n)} | {_rate(c['hull'], n)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="simulated comparisons per row")
    parser.add_argument("--n", type=int, default=200, help="test problems (clone_null: 200)")
    parser.add_argument("--seeds", type=int, default=3, help="confirmation seeds a side (clone_null: 3)")
    parser.add_argument("--taus", default="0,0.3,0.6", help="SDs of a training's logit quality, comma-separated")
    parser.add_argument("--effects", default="0,6", help="points added to one side, comma-separated (0: clones)")
    parser.add_argument("--accuracy", type=float, default=0.11, help="a training's expected test accuracy")
    parser.add_argument("--discordance", type=float, default=0.09, help="two tau-0 trainings' disagreement")
    parser.add_argument("--n-boot", type=int, default=10000, help="compare_runs' resamples (the product's: 10000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.n < 1 or args.seeds < 2:
        parser.error("--runs and --n must be at least 1 and --seeds at least 2 (one seed a side has no hull test)")
    try:
        taus = [float(t) for t in args.taus.split(",")]
        effects = [float(e) / 100 for e in args.effects.split(",")]
        mu, sigma = calibrate(args.accuracy, args.discordance)
    except ValueError as e:
        parser.error(str(e))
    print(f"clone simulation: {args.runs} runs a row, n {args.n}, {args.seeds}+{args.seeds} seeds, accuracy "
          f"{args.accuracy:g}, discordance {args.discordance:g} (difficulty logits ~ N({mu:.2f}, {sigma:.2f})), "
          f"alpha {ALPHA}, n_boot {args.n_boot}, seed {args.seed}")
    rows = [simulate(runs=args.runs, n=args.n, seeds=args.seeds, tau=tau, effect=effect, accuracy=args.accuracy,
                     discordance=args.discordance, n_boot=args.n_boot, seed=args.seed)
            for effect in effects for tau in taus]
    print(table(rows, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
