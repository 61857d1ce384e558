"""cotgap validate SEARCH_RUN GRID_RUN: how good a search's answer is, measured against a grid run
(search.strategy=grid: every point of the same search space trained through the same code) of the same task, splits
and student. Reads the two run directories only; no Ray, no model.

    cotgap validate runs/smoke runs/smoke-grid                       # the table; --json > quality.json for the JSON
    regret +1.5 points [95% CI -0.5, +3.5]: the grid's choice (qwen) minus the search's (gemma), test accuracy
    non-inferiority within 3 points: met / not met / undecided (interval wider than the margin allows)
    compute: 6 of 24 trial-epochs (25.0%), ...; proxies: Spearman / Kendall with the grid's deltas, exact p, Holm p, CI

What it computes (fractions in JSON, points in text):
  grid_choice / search_choice  each run's teacher chosen on dev (report.chosen_on_dev) and its own test confirmation
  regret                       test accuracy of the grid choice's adapters minus the search choice's, paired by
                               problem on the test problems both confirmations scored (the adapters' own answers:
                               the two runs' baselines, separate engine starts, do not enter), with a 95% interval
                               and p-value from stats.compare_runs: exact McNemar with one seed each, else
                               compare_seeds' seed-aware hull; 0 by definition when both runs chose the same
                               configuration; `verdict`: non-inferiority at `margin` (REGRET_MARGIN, --margin): met
                               only when the interval's upper end is <= the margin
  oracle                       the grid's best teacher by TEST accuracy, and the search's regret against it: it looks at
                               test, so it is for information only, never a selection rule
  compute                      the search's trial-epochs and seconds as a fraction of the grid's
  proxies                      Spearman and Kendall tau-b of every numeric proxy with the grid's per-teacher best dev
                               delta and test delta (lower-is-better proxies negated: positive = predicts well), each
                               with its exact one-sided permutation p-value, Holm-adjusted over the proxies compared
                               with the same delta, and, for the test delta, a bootstrap interval over test problems
                               (the dev delta has none: trials keep no per-problem dev answers)
  allocation                   when the search ruled teachers out (search.rule_out_alpha): which, and whether the
                               grid's choice or the oracle was among them (the rule-out's mistake, if it made one)

It writes SEARCH_RUN/search_quality.json and re-renders SEARCH_RUN's report (report.json's `search_quality`, and a
"Search quality (against a grid)" section in report.md).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from cotgap_ray.cli import parse, verb_parser
from cotgap_ray.errors import InputError
from cotgap_ray.records import FinalRecord, TrialRecord, write_json

# Proxies where a LOWER value predicts a better teacher; every other proxy counts as higher-is-better. `rank` is the
# search's own ordering (1 = try first), so it is lower-is-better too.
LOWER_IS_BETTER = {"student_nll", "student_rsr", "student_local_nll", "rank"}
# Numbers in proxies.json that are what computing the proxies cost, how many samples they used, or a description of
# the rationales (their mean length, how many the token budget cut, that budget), not predictions of which teacher
# teaches best.
NOT_PROXIES = {"generation_seconds", "generation_tokens", "n_rationales", "mean_tokens", "max_tokens", "truncated_rows",
               "truncated_fraction"}
# Search-space settings a grid must share with the search for its choice to be the search's ground truth.
SPACE_KEYS = ("filter_chains", "lora_rank", "lora_alpha_ratio", "learning_rate", "epochs")
# Non-inferiority margin of the regret, as a fraction (3 points of test accuracy): the search's answer counts as good
# as the grid's only when its regret interval's upper end is at most this. 3 points is about the smallest gap a user
# would act on here: two engine starts' baselines of one student on the same 200 test problems differed by 2.5 points
# (6.5% vs 9.0%, issue 33), so a smaller gap is within what restarting the engine moves. It is far below what a
# test split of a few hundred problems resolves (minimum detectable effect 9.5 points at 200 problems and 20%
# discordance; identical answers on 200 problems still leave +-1.8): there "met" needs the two answers to agree on
# nearly every problem, and a wide interval says "undecided", never "met". cotgap validate --margin changes it.
REGRET_MARGIN = 0.03
SECONDS_ARE = ("seconds = sum over every trial epoch of its training seconds + its dev evaluation seconds (what the "
               "strategy spends; Ray start-up and queueing excluded); confirmations excluded: both runs confirm "
               "every teacher")


class ValidateError(InputError):
    """SEARCH_RUN or GRID_RUN cannot be compared: names the run file and the fix."""


def load(run_dir: str | Path, role: str) -> dict:
    """report.load_run of one run directory, checked for what a comparison needs: test confirmations."""
    from cotgap_ray.report import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValidateError(f"{role} {run_dir} does not exist: give the --out directory of a finished "
                            "python -m cotgap_ray.search run")
    run = load_run(run_dir)
    if not run["finals"]:
        raise ValidateError(f"{role} {run_dir}: no final/<teacher>.json: the run has not confirmed any teacher on "
                            f"test; finish it (python -m cotgap_ray.search --out {run_dir} --resume)")
    return run


def _differences(a, b, prefix: str) -> list[str]:
    """Dotted keys where two config values differ (dicts compared key by key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}.{k}")]
    return [] if a == b else [f"{prefix} ({a!r} vs {b!r})"]


def check_comparable(search: dict, grid: dict) -> list[str]:
    """Raise when the runs measure different things (task, splits, student); return notes for differences that
    weaken the grid as ground truth without making the comparison meaningless (teachers, sampling, space)."""
    s, g = search["config"], grid["config"]
    where = f"{Path(search['dir']) / 'config.json'} and {Path(grid['dir']) / 'config.json'}"
    hard = _differences(s.student, g.student, "student") + _differences(asdict(s.task), asdict(g.task), "task")
    split_s, split_g = ((r["splits"] or {}).get("fingerprint") for r in (search, grid))
    if split_s and split_g and split_s != split_g:
        hard.append(f"splits.json fingerprint ({split_s!r} vs {split_g!r})")
    if hard:
        raise ValidateError(f"{where} differ in {'; '.join(hard)}: a grid validates a search only on the same task, "
                            "splits and student; run the grid with the search's config (search.strategy=grid)")
    notes = []
    names = [sorted(r.name for r in run["teachers"]) for run in (search, grid)]
    if names[0] != names[1]:
        notes.append(f"the runs' teachers differ (search {names[0]}, grid {names[1]}): proxies and the oracle use "
                     "the grid's")
    soft = _differences(asdict(s.generation), asdict(g.generation), "generation") + [
        d for k in SPACE_KEYS for d in _differences(getattr(s.search, k), getattr(g.search, k), f"search.{k}")]
    if soft:
        notes.append(f"{where} differ in {'; '.join(soft)}: the grid is not exactly the search's space")
    strategy = getattr(g.search, "strategy", None)
    if strategy != "grid":
        notes.append(f"{Path(grid['dir']) / 'config.json'}: search.strategy is {strategy!r}, not 'grid': its choice "
                     "is the best of the trials it ran, not of the whole space")
    return notes


def dev_choice(run: dict, role: str) -> dict:
    """The run's answer (report.chosen_on_dev: highest best dev delta) and that teacher's own test confirmation."""
    from cotgap_ray.report import build_report, chosen_on_dev

    chosen = chosen_on_dev(build_report(run)["teachers"])
    if chosen is None:
        raise ValidateError(f"{role} {run['dir']}: no trials/*/trial.json trained and was scored on dev: nothing was "
                            "chosen; finish the run (python -m cotgap_ray.search --resume)")
    final = run["finals"].get(chosen["name"])
    if final is None:
        raise ValidateError(f"{role} {run['dir']}: final/{chosen['name']}.json is missing: the teacher chosen on dev "
                            f"was not confirmed on test; finish the run (python -m cotgap_ray.search --out "
                            f"{run['dir']} --resume)")
    return _summary(final, chosen["best_dev_delta"])


def _summary(final: FinalRecord, best_dev_delta: float | None) -> dict:
    return {"teacher": final.teacher, "trial_id": final.trial_id, "params": final.params,
            "best_dev_delta": best_dev_delta, "test_accuracy": final.test_accuracy, "test_delta": final.delta,
            "test_delta_ci95": final.delta_ci95}


def answers(final: FinalRecord) -> dict[str, tuple[bool, ...]] | None:
    """problem id -> the adapter's right/wrong test answer per seed; None for a final without per-problem results
    (one written before FinalRecord kept them) or with lists of mismatched lengths."""
    ids, by_seed = final.test_problem_ids, final.test_correct_by_seed
    if not ids or not by_seed or any(len(a) != len(ids) for a in by_seed):
        return None
    return {pid: tuple(bool(a[i]) for a in by_seed) for i, pid in enumerate(ids)}


def configuration(run: dict, final: FinalRecord) -> dict:
    """Everything that trains a confirmation's adapters: the teacher, its search-space point, the epochs an
    ASHA-stopped trial reached (the confirmation re-trains that cut, search/confirm.py), and the run's LoRA and
    generation settings (what lies outside the space). Two equal ones are the same configuration."""
    trial = next((t for t in run["trials"] if t.trial_id == final.trial_id), None)
    return {"spec": final.spec, "params": final.params,
            "stopped_after": len(trial.epochs) if trial is not None and trial.status == "stopped" else None,
            "lora": asdict(run["config"].lora), "generation": asdict(run["config"].generation)}


def non_inferiority(ci95: list | None, margin: float) -> str:
    """The verdict on "the search's answer is at most `margin` worse than the grid's": met only when the regret
    interval's upper end is <= margin (the search's answer is worse by more than the margin is ruled out); not met
    when its lower end is above the margin (worse by more than the margin); undecided in between, where an interval
    that merely contains 0 would have counted noise as success ([-9.6, +9.6] points contains 0 and rules out
    nothing). ci95 in fractions, like the margin."""
    if not ci95:
        return "undecided (no interval)"
    if ci95[1] <= margin:
        return "met"
    if ci95[0] > margin:
        return "not met"
    return "undecided (interval wider than the margin allows)"


def regret(better: FinalRecord, chosen: FinalRecord, notes: list[str], what: str, same_configuration: bool,
           margin: float = REGRET_MARGIN) -> dict:
    """Test accuracy of better's adapters minus chosen's, paired by problem on the test problems both scored, with
    the 95% interval and p-value of stats.compare_runs (one seed each: exact McNemar; else the seed-aware hull of
    compare_seeds) and the non-inferiority verdict at `margin`.

    The adapters' own answers are compared, never the two runs' deltas: each delta is over its own run's baseline
    (another engine start: 6.5% and 9.0% on the same 200 test problems, issue 33), so a difference of deltas
    moves with the baselines; the adapters' answers on the same problems do not. The same configuration in both runs
    (`configuration`) has regret 0 by definition (the search found the grid's answer): the value is 0 with the
    interval [0, 0], and `measured` keeps the two confirmations' difference, which is re-training noise, not regret.
    Without per-problem answers the value is the difference of the two test accuracies (the same test problems:
    check_comparable) with no interval, and the verdict is undecided."""
    from cotgap_ray.stats import compare_runs

    out = {"value": None, "ci95": None, "p_value": None, "n_problems": 0,
           "seeds": [len(better.test_correct_by_seed), len(chosen.test_correct_by_seed)], "test": None,
           "interval": None, "same_configuration": same_configuration, "margin": margin}
    a, b = answers(better), answers(chosen)
    common = sorted(set(a) & set(b)) if a is not None and b is not None else []
    measured = None
    if a is None or b is None:
        lacking = [f"final/{f.teacher}.json" for f, p in ((better, a), (chosen, b)) if p is None]
        notes.append(f"{what}: no interval: {' and '.join(dict.fromkeys(lacking))} has no per-problem test answers "
                     "(written before FinalRecord kept them; to get them, move the file away and resume that run "
                     "with python -m cotgap_ray.search --out RUN --resume, which confirms the teacher again); the "
                     "value, where both test accuracies are known, is their difference, never that of the deltas "
                     "(each over its own run's baseline)")
    elif not common:
        notes.append(f"{what}: no interval: the two confirmations share no test problem id")
    else:
        if len(common) < max(len(a), len(b)):
            notes.append(f"{what}: compares the {len(common)} test problems both confirmations scored "
                         f"(of {len(a)} and {len(b)})")
        if len(set(out["seeds"])) > 1:
            notes.append(f"{what}: the confirmations have {out['seeds'][0]} and {out['seeds'][1]} seeds: the "
                         "interval's sign-flip part is approximate (exact for equal counts)")
        r = compare_runs([[a[i][s] for i in common] for s in range(out["seeds"][0])],
                         [[b[i][s] for i in common] for s in range(out["seeds"][1])])
        measured = {"value": r["delta"], "ci95": r["ci95"], "p_value": r["p_value"], "n_problems": r["n"],
                    "test": r["test"], "interval": r["interval"], "p_parts": r.get("p_parts")}
    if measured is None and None not in (better.test_accuracy, chosen.test_accuracy) and better.n == chosen.n:
        measured = {"value": better.test_accuracy - chosen.test_accuracy, "n_problems": better.n}
    if same_configuration:
        out.update(value=0.0, ci95=[0.0, 0.0], interval="none needed: the same configuration in both runs, regret 0 "
                   "by definition (`measured`: its two confirmations' difference, re-training noise)",
                   measured=measured)
    elif measured is not None:
        out.update(measured)
    return {**out, "verdict": non_inferiority(out["ci95"], margin)}


def baseline_notes(grid_final: FinalRecord, search_final: FinalRecord) -> list[str]:
    """A note when the two runs' baselines answered differently (each run scores the student on its own engine
    start): said, because the runs' deltas then differ by that much, and why the regret is untouched by it."""
    ids = dict(zip(grid_final.test_problem_ids, grid_final.baseline_test_correct))
    pairs = [(ids[i], b) for i, b in zip(search_final.test_problem_ids, search_final.baseline_test_correct) if i in ids]
    differ = sum(g != s for g, s in pairs)
    if not differ:
        return []
    return [f"the two runs' baselines answer {differ} of the {len(pairs)} test problems differently (each run scores "
            "the student on its own engine start), so their test deltas are over different baselines; the regret "
            "compares the adapters' own answers, paired by problem, where the baselines do not enter"]


def _epoch_seconds(trials: list[TrialRecord]) -> float:
    return sum((e.seconds or 0.0) + (e.eval_seconds or 0.0) for t in trials for e in t.epochs)


def compute_share(search: dict, grid: dict) -> dict:
    """The search's fine-tune compute as a fraction of the grid's: trial-epochs and seconds (SECONDS_ARE)."""
    def share(s: float, g: float) -> dict:
        return {"search": s, "grid": g, "fraction": s / g if g else None}

    return {"trial_epochs": share(sum(len(t.epochs) for t in search["trials"]),
                                  sum(len(t.epochs) for t in grid["trials"])),
            "seconds": share(_epoch_seconds(search["trials"]), _epoch_seconds(grid["trials"])),
            "seconds_are": SECONDS_ARE}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def numeric_proxies(proxies: dict | None) -> dict[str, dict[str, float]]:
    """teacher -> {proxy: value} for the numeric proxies of a proxies.json (bookkeeping numbers left out)."""
    return {name: {k: float(v) for k, v in p.items() if _number(v) and k not in NOT_PROXIES}
            for name, p in (proxies or {}).items() if isinstance(p, dict)}


def correlations(proxies: dict[str, dict[str, float]], source: str, truths: dict[str, dict[str, float]],
                 problems: dict[str, dict[str, dict[str, float]]] | None = None) -> list[dict]:
    """Spearman and Kendall tau-b of each proxy (signed so higher = predicts a better teacher) with each truth
    (teacher -> measured delta), with their uncertainty; teachers missing either value are left out and `n` counts
    the rest. Per row:
      spearman_p, kendall_p            one-sided permutation p-value of "the proxy ranks teachers the way the truth
                                       does" (stats.rank_correlation_p: exact over all n! orderings for n <= 8)
      spearman_p_holm, kendall_p_holm  Holm-adjusted over the proxies of this source compared with the same truth
                                       (`holm_family` of them): the best of several proxies is a selection, and a
                                       perfect ranking of 4 teachers alone is a 1-in-24 event
      spearman_ci95, kendall_ci95      percentile bootstrap over problems of the truth side
                                       (stats.rank_correlation_bootstrap), where `problems[target]` has each teacher's
                                       per-problem contributions (teacher -> problem id -> value); None otherwise, and
                                       `ci95_from` says which (the grid's dev deltas: n/a, trials keep no per-problem
                                       dev answers)."""
    from cotgap_ray.stats import holm, kendall_tau, spearman

    problems = problems or {}
    names = list(dict.fromkeys(k for p in proxies.values() for k in p))  # first-seen order: stable output
    rows = []
    for proxy in names:
        sign = -1.0 if proxy in LOWER_IS_BETTER else 1.0
        for target, truth in truths.items():
            teachers = [t for t in proxies if proxy in proxies[t] and truth.get(t) is not None]
            x, y = [sign * proxies[t][proxy] for t in teachers], [truth[t] for t in teachers]
            rows.append({"proxy": proxy, "source": source, "direction": "lower" if sign < 0 else "higher",
                         "target": target, "spearman": spearman(x, y), "kendall_tau": kendall_tau(x, y),
                         "n": len(teachers), **_uncertainty(x, y, teachers, problems.get(target), target)})
    for target in truths:  # one Holm family per truth: this source's proxies that have a p-value
        same = [r for r in rows if r["target"] == target]
        for method in ("spearman", "kendall"):
            family = [r for r in same if r[f"{method}_p"] is not None]
            for r in same:
                r[f"{method}_p_holm"] = None
            for r, adjusted in zip(family, holm([r[f"{method}_p"] for r in family])):
                r[f"{method}_p_holm"] = adjusted
        for r in same:
            r["holm_family"] = sum(o["spearman_p"] is not None for o in same)
    return rows


# Resamples of the proxies' bootstrap intervals over test problems (stats.rank_correlation_bootstrap, seed 0).
PROXY_BOOTSTRAP = 2000


def _uncertainty(x: list[float], y: list[float], teachers: list[str], by_teacher: dict[str, dict[str, float]] | None,
                 target: str) -> dict:
    """The permutation p-values of one proxy's correlations and their bootstrap intervals over problems."""
    from cotgap_ray.stats import (EXACT_ORDERINGS_UP_TO, RANK_P_ORDERINGS, rank_correlation_bootstrap,
                                  rank_correlation_p)

    out = {"spearman_p": rank_correlation_p(x, y, "spearman"), "kendall_p": rank_correlation_p(x, y, "kendall"),
           "p_test": "one-sided permutation, " + ("exact (all n! orderings)" if len(x) <= EXACT_ORDERINGS_UP_TO else
                                                  f"Monte Carlo ({RANK_P_ORDERINGS} orderings, seed 0)"),
           "spearman_ci95": None, "kendall_ci95": None}
    if out["spearman_p"] is None:
        return {**out, "ci95_from": "n/a: fewer than 3 teachers or a constant proxy or truth"}
    if by_teacher is None:
        why = " (trials keep no per-problem dev answers)" if target == "grid_best_dev_delta" else ""
        return {**out, "ci95_from": f"n/a: no per-problem values for {target}{why}"}
    if lacking := [t for t in teachers if t not in by_teacher]:
        return {**out, "ci95_from": f"n/a: no per-problem test answers for {', '.join(lacking)}"}
    common = sorted(set.intersection(*(set(by_teacher[t]) for t in teachers)))
    if not common:
        return {**out, "ci95_from": "n/a: no test problem every teacher's confirmation scored"}
    table = [[by_teacher[t][pid] for pid in common] for t in teachers]
    for method in ("spearman", "kendall"):
        ci = rank_correlation_bootstrap(x, table, method, n_boot=PROXY_BOOTSTRAP)
        out[f"{method}_ci95"] = None if ci is None else list(ci)
    return {**out, "ci95_from": f"percentile bootstrap over the {len(common)} test problems every teacher's "
                                f"confirmation scored ({PROXY_BOOTSTRAP} resamples, seed 0; proxies fixed)"}


def grid_truths(grid: dict) -> dict[str, dict[str, float]]:
    """What the grid measured per teacher: its best dev delta (max over trained and scored trials) and the test
    delta of its confirmation."""
    from cotgap_ray.report import best_dev_trial

    dev = {}
    for name in {t.teacher for t in grid["trials"] if t.teacher}:
        best = best_dev_trial([t for t in grid["trials"] if t.teacher == name])
        if best is not None:
            dev[name] = best.dev_delta
    test = {name: f.delta for name, f in grid["finals"].items() if f.delta is not None}
    return {"grid_best_dev_delta": dev, "grid_test_delta": test}


def grid_problems(grid: dict) -> dict[str, dict[str, dict[str, float]]]:
    """Per-problem truths where the run kept them: grid_test_delta -> teacher -> problem id -> the adapters'
    mean-over-seeds correctness minus the baseline's on that problem (their mean over problems is the test delta).
    Finals without per-problem answers are left out; the dev deltas have none (TrialRecord keeps aggregates only)."""
    test = {}
    for name, final in grid["finals"].items():
        adapters = answers(final)
        if adapters is None or len(final.baseline_test_correct) != len(final.test_problem_ids):
            continue
        baseline = dict(zip(final.test_problem_ids, final.baseline_test_correct))
        test[name] = {pid: sum(a) / len(a) - float(baseline[pid]) for pid, a in adapters.items()}
    return {"grid_test_delta": test}


def allocation_check(search: dict, grid_choice: str, oracle: str) -> dict | None:
    """Did the search's proxy-guided allocation (allocation.json) rule out the teacher the grid chose, or the one
    best on test? None when the search ruled nothing out by design (no allocation.json)."""
    allocation = search.get("allocation")
    if not isinstance(allocation, dict) or not isinstance(allocation.get("teachers"), dict):
        return None
    ruled_out = sorted(name for name, e in allocation["teachers"].items() if e.get("ruled_out"))
    return {"alpha": allocation.get("alpha"), "ruled_out": ruled_out, "grid_choice_ruled_out": grid_choice in ruled_out,
            "oracle_ruled_out": oracle in ruled_out}


def search_quality(search_dir: str | Path, grid_dir: str | Path, margin: float = REGRET_MARGIN) -> dict:
    """The comparison (see the module docstring); reads the two runs, writes nothing. `margin`: the regret's
    non-inferiority margin (a fraction)."""
    if Path(search_dir).resolve() == Path(grid_dir).resolve():
        raise ValidateError(f"SEARCH_RUN and GRID_RUN are the same directory ({search_dir}): give the search's run "
                            "and a grid run of the same config (search.strategy=grid)")
    search, grid = load(search_dir, "SEARCH_RUN"), load(grid_dir, "GRID_RUN")
    notes = check_comparable(search, grid)
    notes += [n for run in (search, grid) for n in run["notes"] if n.endswith("ignored")]  # unreadable run files
    grid_pick, search_pick = dev_choice(grid, "GRID_RUN"), dev_choice(search, "SEARCH_RUN")
    grid_final, search_final = grid["finals"][grid_pick["teacher"]], search["finals"][search_pick["teacher"]]
    scored = [f for f in grid["finals"].values() if f.test_accuracy is not None]
    # Best by test ACCURACY, the regret's own measure: each teacher's delta is over the baseline of the evaluation
    # engine that scored it (search/confirm.py routes teachers over the pool), so deltas can rank differently. Ties
    # go to the grid's own choice: the oracle names another teacher only when it really did better.
    oracle = max(scored, key=lambda f: (f.test_accuracy, f.teacher == grid_final.teacher), default=grid_final)
    truths = grid_truths(grid)
    grid_proxies, search_proxies = numeric_proxies(grid["proxies"]), numeric_proxies(search["proxies"])
    per_problem = grid_problems(grid)
    proxies = correlations(grid_proxies, "grid", truths, per_problem)
    if search_proxies and search_proxies != grid_proxies:  # the search measured its own: judge those too
        proxies += correlations(search_proxies, "search", truths, per_problem)
    notes += baseline_notes(grid_final, search_final)
    found = configuration(search, search_final)  # the search's answer, compared with the grid's and the oracle's
    return {
        "search_run": str(search["dir"]), "grid_run": str(grid["dir"]),
        "grid_strategy": getattr(grid["config"].search, "strategy", None),
        "grid_choice": grid_pick, "search_choice": search_pick,
        "same_choice": grid_pick["teacher"] == search_pick["teacher"],
        "regret": regret(grid_final, search_final, notes, "regret", configuration(grid, grid_final) == found,
                         margin),
        "oracle": {**_summary(oracle, oracle.best_dev_delta),
                   "label": "oracle: the grid's best teacher on TEST; for information only, never a selection rule",
                   "search_regret": regret(oracle, search_final, notes, "regret against the oracle",
                                           configuration(grid, oracle) == found, margin),
                   "grid_choice_regret": regret(oracle, grid_final, notes, "grid choice against the oracle",
                                                oracle is grid_final, margin)},
        "compute": compute_share(search, grid),
        "proxies": proxies,
        "allocation": allocation_check(search, grid_final.teacher, oracle.teacher),
        "notes": notes,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def validate(search_dir: str | Path, grid_dir: str | Path, margin: float = REGRET_MARGIN) -> dict:
    """search_quality, written to SEARCH_RUN/search_quality.json, with SEARCH_RUN's report re-rendered to show it."""
    from cotgap_ray.report import render

    sq = search_quality(search_dir, grid_dir, margin)
    write_json(Path(search_dir) / "search_quality.json", sq)
    render(search_dir)
    return sq


def margin_points(text: str) -> float:
    """--margin's type: a number of points >= 0."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of points >= 0 (e.g. 3)")
    return value


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from cotgap_ray.report import search_quality_markdown

    parser = verb_parser("validate", __doc__, config=False,
                         json_help="print the comparison (search_quality.json) on stdout instead of the table")
    parser.add_argument("search_run", metavar="SEARCH_RUN", help="the search's run directory (cotgap search --out)")
    parser.add_argument("grid_run", metavar="GRID_RUN", help="a grid run of the same config (search.strategy=grid)")
    parser.add_argument("--margin", metavar="POINTS", type=margin_points, default=100 * REGRET_MARGIN,
                        help="non-inferiority margin of the regret, in points of test accuracy: the search's answer "
                             "is as good as the grid's when the regret interval's upper end is at most this "
                             f"(default {100 * REGRET_MARGIN:g})")
    args = parse(parser, argv)
    sq = validate(args.search_run, args.grid_run, args.margin / 100)
    written = [Path(args.search_run) / name for name in ("search_quality.json", "report.json", "report.md")]
    if args.json:  # the file as written (records converted), not a second serialisation of `sq`
        print(written[0].read_text())
        return 0
    print("\n".join(search_quality_markdown(sq)))
    print("\n".join(f"wrote {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
