"""The winner's curse in the teacher choice (issue 33 point 3): how often each rule picks each teacher, simulated.

    python benchmarks/choice_simulation.py                      # seeded, 20,000 runs a row, a few seconds
    python benchmarks/choice_simulation.py --discordance 0.052 --baseline-accuracy 0.083  # runs/default-c

Pure numpy, no Ray, no model. The search answers with the teacher whose best trial has the highest dev delta
(report.chosen_on_dev), so a teacher with more trials has more draws at the maximum and wins by chance. This script
simulates that choice and two fair alternatives at the default experiment's budget (search.trials = 4, dev n = 60)
and prints two tables: the chosen-teacher rates when no teacher is better (each should be 1/K) with the chosen
teacher's mean dev delta (the winner's curse: the truth is 0), and the power to choose a teacher that is truly
--effect points better.

The model. A run scores the student once on dev (the baseline: each problem right with probability
--baseline-accuracy) and every trial pairs its adapter's answers with those same rows, as the search does. A trial
of a teacher with true effect e flips each problem independently: a problem the baseline got wrong becomes right
with probability g, one it got right becomes wrong with probability l, where g and l give an expected discordance
--discordance (d) and an expected delta e (flip_probabilities). Each trial is a fresh draw: different
hyperparameters act like independent draws when the truth is equal. `--noise multinomial` instead draws each
trial's gains and losses as if it had a baseline of its own (the textbook McNemar model: gain (d + e)/2, loss
(d - e)/2 per problem); trials then differ more. Not modelled: ASHA (it stops trials on dev but a stopped trial
stays eligible with its last dev delta; here every trial runs out), TPE's proposals (Optuna's TPESampler samples at
random for its first 10 trials, n_startup_trials, so every sampled trial of the default's 4 is random search), real
differences between configurations of one teacher, and engine noise (it adds discordant pairs in both directions,
i.e. more d).

The rules (teachers A, B, C in config order; proxy ranks drawn at random per run: under equal truth a proxy
knows nothing, so the rates below do not favour the teacher the proxy happened to put first):

    before          the search before equal budgets (2026-12-05): one seeded trial per teacher, the other trials
                    to a teacher drawn uniformly (the sampler's startup), the teacher whose best trial has the
                    highest dev delta; ties between teachers: the better proxy rank (what report.selection_key
                    does, and what the recommendation did before the tie rule was written down; the primary
                    hypothesis then went to config order), then config order
    equal budgets   every teacher floor(trials / K) trials, the remainder unspent (spending it anywhere re-creates
                    the imbalance; whole rounds only), the same max rule and ties: what the search does now
                    (search/tuning.py, StudySearch)
    held-out        the budgets of before; each trial scored on half A of dev (n // 2), each teacher's best trial on A
                    re-scored on half B (the rest), the teacher with the highest half-B delta, same ties. No extra
                    training; but records.TrialRecord keeps only the dev totals (dev_accuracy, dev_delta,
                    dev_discordance), not per-problem dev answers, so this rule needs trials to record their
                    per-problem dev answers (as FinalRecord.test_correct_by_seed does for test) or each chosen
                    adapter (adapter_dir) to be scored again on half B, and ASHA/TPE to see half A only

Scenarios: (a) 3 teachers, 4 trials, no teacher better, the sampler's extra trial went to A (by symmetry, where it
goes does not matter); (b) 3 teachers, A truly --effect points better, the extra trial went to B (and: wherever the
sampler put it); (c) the default's actual situation: gemma gets no trial (search/usable.py), so 2 usable teachers
share 4 trials: both sampled trials go to one teacher in half the runs (3/1), one each otherwise (2/2).
`tests/test_choice_simulation.py` checks the rules' rates and reproduces the issue's numbers.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

NEG = -(10**9)  # the net count of a trial a teacher did not get: never the best
NAMES = "ABCDEFGH"


def flip_probabilities(effect: float, discordance: float, baseline_accuracy: float) -> tuple[float, float]:
    """(g, l): the chance a baseline-wrong problem turns right and a baseline-right one turns wrong, for an expected
    discordance d = (1 - b) g + b l and expected delta e = (1 - b) g - b l.

    flip_probabilities(0.03, 0.2, 0.1) -> (0.1278, 0.85)   # (0.2 + 0.03) / 2 / 0.9, (0.2 - 0.03) / 2 / 0.1
    """
    g = (discordance + effect) / (2 * (1 - baseline_accuracy))
    l = (discordance - effect) / (2 * baseline_accuracy)
    if not (0 <= g <= 1 and 0 <= l <= 1):
        raise ValueError(f"no flip probabilities give discordance {discordance} and effect {effect:+} at baseline "
                         f"accuracy {baseline_accuracy}: need |effect| <= discordance, discordance - effect <= 2 x "
                         "baseline accuracy and discordance + effect <= 2 x (1 - baseline accuracy): change "
                         "--discordance, --effect or --baseline-accuracy")
    return g, l


def trial_sd(n: int, discordance: float, baseline_accuracy: float, noise: str = "paired") -> float:
    """Points: the standard deviation of one trial's dev delta around what the trials of a run share, no true
    difference. trial_sd(60, 0.2, 0.1) -> 3.85 (only gains vary: l = 1); trial_sd(60, 0.2, 0.1, "multinomial") ->
    5.77 (sqrt(n d) / n)."""
    if noise == "multinomial":
        return 100 * math.sqrt(n * discordance) / n
    g, l = flip_probabilities(0.0, discordance, baseline_accuracy)
    return 100 * math.sqrt(n * ((1 - baseline_accuracy) * g * (1 - g) + baseline_accuracy * l * (1 - l))) / n


def todays_budgets(rng: np.random.Generator, reps: int, k: int, trials: int) -> np.ndarray:
    """(reps, k) trials per teacher as the search spends them: one seeded trial each, the rest to a uniform random
    teacher (TPE's startup samples the teacher at random)."""
    if trials < k:
        raise ValueError(f"{trials} trials cannot give each of {k} teachers its seeded trial")
    extra = rng.integers(0, k, size=(reps, trials - k))
    return 1 + np.stack([(extra == i).sum(axis=1) for i in range(k)], axis=1)


def equal_budgets(k: int, trials: int) -> list[int]:
    """floor(trials / k) trials per teacher; the remainder is not spent. equal_budgets(3, 4) -> [1, 1, 1]."""
    if trials < k:
        raise ValueError(f"{trials} trials cannot give each of {k} teachers one")
    return [trials // k] * k


def _nets(rng, truths, budgets, n, discordance, baseline_accuracy, noise) -> np.ndarray:
    """(reps, K, max budget) net counts (problems gained - lost) of every trial on n dev problems, NEG where a
    teacher got fewer trials. Paired noise: one baseline per run, shared by every trial."""
    reps, k = budgets.shape
    m = int(budgets.max())
    nets = np.full((reps, k, m), NEG, dtype=np.int64)
    right = rng.binomial(n, baseline_accuracy, size=(reps, 1))
    for i, effect in enumerate(truths):
        if noise == "multinomial":
            counts = rng.multinomial(n, [(discordance + effect) / 2, (discordance - effect) / 2,
                                         1 - discordance], size=(reps, m))
            net = counts[..., 0] - counts[..., 1]
        else:
            g, l = flip_probabilities(effect, discordance, baseline_accuracy)
            net = rng.binomial(np.broadcast_to(n - right, (reps, m)), g) - \
                rng.binomial(np.broadcast_to(right, (reps, m)), l)
        nets[:, i, :] = np.where(np.arange(m) < budgets[:, i:i + 1], net, NEG)
    return nets


def _choose(best: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chosen teacher, tie at the top) per run: the highest best net count, ties to the better proxy rank (0 first)."""
    k = best.shape[1]
    chosen = np.argmax(best * (k + 1) + (k - ranks), axis=1)  # lexicographic: net first, then rank
    tie = (best == best.max(axis=1, keepdims=True)).sum(axis=1) > 1
    return chosen, tie


def simulate(truths: list[float], budgets, rule: str = "max", *, reps: int = 20_000, seed: int = 0, n: int = 60,
             discordance: float = 0.2, baseline_accuracy: float = 0.1, noise: str = "paired",
             ranks: list[int] | None = None) -> dict:
    """Run the choice `reps` times. `truths`: each teacher's true effect (fractions); `budgets`: trials per teacher,
    a list (every run) or "today" (todays_budgets with sum = `trials`, given as ("today", trials)); `rule`: "max" (the
    highest best-trial dev delta) or "held_out"; `ranks`: proxy ranks (1 = best), default random per run.
    Returns numpy arrays per run: `chosen` (teacher index), `delta` (the chosen teacher's selection figure, a
    fraction: its best dev delta, or its half-B delta under held_out), `tie` (teachers tied at the top), `budgets`."""
    rng = np.random.default_rng(seed)
    k = len(truths)
    if isinstance(budgets, tuple) and budgets[0] == "today":
        budgets = todays_budgets(rng, reps, k, budgets[1])
    else:
        budgets = np.broadcast_to(np.asarray(budgets, dtype=np.int64), (reps, k))
    rank = (np.argsort(rng.random((reps, k)), axis=1) if ranks is None
            else np.broadcast_to(np.asarray(ranks) - 1, (reps, k)))
    if rule == "max":
        best = _nets(rng, truths, budgets, n, discordance, baseline_accuracy, noise).max(axis=2)
        chosen, tie = _choose(best, rank)
        return {"chosen": chosen, "delta": best[np.arange(reps), chosen] / n, "tie": tie, "budgets": budgets}
    if rule != "held_out":
        raise ValueError(f"unknown rule {rule!r}: max or held_out")
    half_a, half_b = n // 2, n - n // 2
    on_a = _nets(rng, truths, budgets, half_a, discordance, baseline_accuracy, noise)
    on_b = _nets(rng, truths, budgets, half_b, discordance, baseline_accuracy, noise)  # the same trials, half B
    picked = on_a.argmax(axis=2)[..., None]  # each teacher's best trial on A (first of equals)
    best_b = np.take_along_axis(on_b, picked, axis=2)[..., 0]
    chosen, tie = _choose(best_b, rank)
    return {"chosen": chosen, "delta": best_b[np.arange(reps), chosen] / half_b, "tie": tie, "budgets": budgets}


def rates(result: dict, k: int) -> list[float]:
    """The share of runs that chose each teacher."""
    return list(np.bincount(result["chosen"], minlength=k) / len(result["chosen"]))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _budget_label(budgets) -> str:
    if isinstance(budgets, tuple):
        return "sampler's draw"
    return "/".join(map(str, budgets))


def tables(args) -> str:
    """The two markdown tables (and the issue's setting) for the command line's settings."""
    common = {"reps": args.reps, "n": args.dev_n, "discordance": args.discordance,
              "baseline_accuracy": args.baseline_accuracy, "noise": args.noise}
    effect = args.effect / 100
    today = ("today", args.trials)
    row_seed = iter(range(args.seed * 1000, args.seed * 1000 + 1000))  # one stream per row: rows are independent
    out = [f"Dev n = {args.dev_n}, {args.trials} trials, discordance {_pct(args.discordance)}, baseline accuracy "
           f"{_pct(args.baseline_accuracy)}, {args.noise} noise: one trial's dev delta varies by "
           f"{trial_sd(args.dev_n, args.discordance, args.baseline_accuracy, args.noise):.2f} points (SD, no true "
           f"difference); {args.reps} runs a row, seed {args.seed} (a rate's Monte Carlo SE <= "
           f"{50 / math.sqrt(args.reps):.2f} points).", "",
           "**No teacher is better** (truth 0 for all): each teacher's chosen rate should be 1/K.", "",
           "| scenario | rule | trials A/B/C | A chosen | B chosen | C chosen | mean chosen dev delta | ties at the "
           "top |",
           "|---|---|---|---|---|---|---|---|"]
    for scenario, k, before in (("(a) 3 teachers", 3, [2, 1, 1]), ("(c) default: 2 usable", 2, [3, 1])):
        truths = [0.0] * k
        for rule, label, budgets in (("max", "before", before), ("max", "equal budgets", equal_budgets(k, args.trials)),
                                     ("held_out", "held-out re-score", before)):
            r = simulate(truths, budgets, rule, seed=next(row_seed), **common)
            shares = [_pct(x) for x in rates(r, k)] + ["n/a"] * (3 - k)
            out.append(f"| {scenario} | {label} | {_budget_label(budgets)} | {' | '.join(shares)} | "
                       f"{100 * r['delta'].mean():+.2f} | {_pct(r['tie'].mean())} |")
    out += ["", "(a): the sampler's 4th trial went to A. (c): 3/1 (or 1/3) in half the runs, when both sampled "
                "trials go to one teacher; 2/2 in the other half. Equal budgets in (a): 1 trial unspent.", "",
            f"**A is truly {args.effect:g} points better** (power: the share of runs choosing A).", "",
            "| scenario | rule | trials A/B/C | A chosen (power) | mean chosen dev delta | ties at the top |",
            "|---|---|---|---|---|---|"]
    for scenario, k, before in (("(b) 3 teachers, extra trial to B", 3, [1, 2, 1]),
                                ("(b) 3 teachers, any draw", 3, today),
                                ("(c) default: 2 usable, any draw", 2, today),
                                ("(c) default: 2 usable, both sampled to B", 2, [1, 3])):
        truths = [effect] + [0.0] * (k - 1)
        for rule, label, budgets in (("max", "before", before), ("max", "equal budgets", equal_budgets(k, args.trials)),
                                     ("held_out", "held-out re-score", before)):
            r = simulate(truths, budgets, rule, seed=next(row_seed), **common)
            out.append(f"| {scenario} | {label} | {_budget_label(budgets)} | {_pct(rates(r, k)[0])} | "
                       f"{100 * r['delta'].mean():+.2f} | {_pct(r['tie'].mean())} |")
    # Issue 33's own numbers came from this setting: independent (multinomial) trials at 15% discordance, proxy ranks
    # A > B > C, the extra trial on the worst-ranked teacher (it loses every tie) and the better teacher ranked first.
    issue = {**common, "noise": "multinomial", "discordance": 0.15}
    null = simulate([0.0, 0.0, 0.0], [1, 1, 2], seed=next(row_seed), ranks=[1, 2, 3], **issue)
    power = simulate([0.03, 0.0, 0.0], [1, 2, 1], seed=next(row_seed), ranks=[1, 2, 3], **issue)
    out += ["", f"Issue 33's setting (multinomial noise, discordance 15%, dev n = {args.dev_n}, proxy ranks A > B > C, "
                f"rule before): the extra trial on C: C chosen {_pct(rates(null, 3)[2])} (issue: 44.5%), mean "
                f"chosen dev delta {100 * null['delta'].mean():+.2f} points (+5.1), ties at the top "
                f"{_pct(null['tie'].mean())} (14%); A truly 3 points better, extra trial to B: A chosen "
                f"{_pct(rates(power, 3)[0])} (48%)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of every row's random stream")
    parser.add_argument("--reps", type=int, default=20_000, help="simulated runs per row")
    parser.add_argument("--dev-n", type=int, default=60, help="dev problems (the default experiment's n_dev)")
    parser.add_argument("--trials", type=int, default=4, help="search.trials (the default experiment's)")
    parser.add_argument("--discordance", type=float, default=0.2,
                        help="expected share of dev problems a trial's adapter changes")
    parser.add_argument("--baseline-accuracy", type=float, default=0.1, help="the student's dev accuracy")
    parser.add_argument("--effect", type=float, default=3.0, help="points: the better teacher's true effect")
    parser.add_argument("--noise", choices=("paired", "multinomial"), default="paired",
                        help="paired: one baseline shared by every trial (as the search does); multinomial: "
                             "independent gains and losses per trial")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.dev_n < 2 or args.trials < 3:
        parser.error("--reps must be >= 1, --dev-n >= 2 (held-out halves it) and --trials >= 3 (3 teachers)")
    try:  # before any simulation: both effects must be possible at this discordance
        for effect in (0.0, args.effect / 100):
            if args.noise == "paired":
                flip_probabilities(effect, args.discordance, args.baseline_accuracy)
            elif not abs(effect) <= args.discordance <= 1:
                raise ValueError(f"a {100 * effect:+g}-point effect needs discordance >= {abs(effect)} (<= 1)")
    except ValueError as e:
        parser.error(f"{e} (--discordance {args.discordance}, --effect {args.effect})")
    print(tables(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
