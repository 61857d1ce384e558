"""cotgap validate SEARCH_RUN GRID_RUN: how good a search's answer is, measured against a grid run
(search.strategy=grid: every point of the same search space trained through the same code) of the same task, splits
and student. Reads the two run directories only; no Ray, no model.

    cotgap validate runs/smoke runs/smoke-grid                       # the table; --json > quality.json for the JSON
    regret +1.5 points [95% CI -0.5, +3.5]: the grid's choice (qwen) minus the search's (gemma), test deltas
    compute: 6 of 24 trial-epochs (25.0%), ...; proxies: Spearman / Kendall of each proxy with the grid's deltas

What it computes (fractions in JSON, points in text):
  grid_choice / search_choice  each run's teacher chosen on dev (report.chosen_on_dev) and its own test confirmation
  regret                       grid choice's test delta - search choice's, with a 95% interval over the test problems
                               both confirmations scored (per problem: mean over seeds of after-before): exact
                               (stats.mcnemar_interval) when each problem's regret is -1, 0 or +1 (one seed each),
                               else a paired bootstrap; never [0, 0] (exact_regret_interval)
  oracle                       the grid's best teacher by TEST delta, and the search's regret against it: it looks at
                               test, so it is for information only, never a selection rule
  compute                      the search's trial-epochs and seconds as a fraction of the grid's
  proxies                      Spearman and Kendall tau-b of every numeric proxy with the grid's per-teacher best dev
                               delta and test delta (lower-is-better proxies negated: positive = predicts well)
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
LOWER_IS_BETTER = {"student_nll", "student_rsr", "rank"}
# Numbers in proxies.json that are what computing the proxies cost, how many samples they used, or a description of
# the rationales (their mean length, how many the token budget cut, that budget), not predictions of which teacher
# teaches best.
NOT_PROXIES = {"generation_seconds", "generation_tokens", "n_rationales", "mean_tokens", "max_tokens", "truncated_rows",
               "truncated_fraction"}
# Search-space settings a grid must share with the search for its choice to be the search's ground truth.
SPACE_KEYS = ("filter_chains", "lora_rank", "lora_alpha_ratio", "learning_rate", "epochs")
N_BOOT = 2000
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
            "best_dev_delta": best_dev_delta, "test_delta": final.delta, "test_delta_ci95": final.delta_ci95}


def per_problem(final: FinalRecord) -> dict[str, float] | None:
    """problem id -> mean over seeds of (after - before) on test; None for a final without per-problem results (one
    written before FinalRecord kept them) or with lists of mismatched lengths."""
    from cotgap_ray.stats import per_problem_delta

    ids, before, by_seed = final.test_problem_ids, final.baseline_test_correct, final.test_correct_by_seed
    if not ids or not by_seed or len(before) != len(ids) or any(len(a) != len(ids) for a in by_seed):
        return None
    return dict(zip(ids, per_problem_delta(before, by_seed)))


def regret(better: FinalRecord, chosen: FinalRecord, notes: list[str], what: str) -> dict:
    """better.delta - chosen.delta (each run's own confirmation), with an interval over the test problems both
    scored (exact with one seed each, else a paired bootstrap). No interval when either final lacks per-problem
    results (noted)."""
    from cotgap_ray.stats import bootstrap_mean_difference

    value = None if better.delta is None or chosen.delta is None else better.delta - chosen.delta
    out = {"value": value, "ci95": None, "n_problems": 0, "interval": None}
    a, b = per_problem(better), per_problem(chosen)
    if a is None or b is None:
        lacking = [f.teacher for f, p in ((better, a), (chosen, b)) if p is None]
        notes.append(f"{what}: no interval: final/{lacking[0]}.json has no per-problem test results (written before "
                     "FinalRecord kept them; re-run that confirmation to get them)")
        return out
    common = sorted(set(a) & set(b))
    if not common:
        notes.append(f"{what}: no interval: the two confirmations share no test problem id")
        return out
    if len(common) < max(len(a), len(b)):
        notes.append(f"{what}: the interval pairs the {len(common)} test problems both confirmations scored "
                     f"(of {len(a)} and {len(b)})")
    diffs = [a[i] - b[i] for i in common]
    # Exact only with one seed each: with several, a per-problem mean of 0 or +-1 still hides seed-to-seed variation,
    # which the bootstrap keeps (unless every problem has the same value, where it collapses to a point).
    one_seed = len(better.test_correct_by_seed) == 1 == len(chosen.test_correct_by_seed)
    if one_seed or len(set(diffs)) == 1:
        return {**out, **exact_regret_interval(diffs)}
    boot = bootstrap_mean_difference([a[i] for i in common], [b[i] for i in common], n_boot=N_BOOT)
    return {**out, "ci95": boot["ci95"], "n_problems": boot["n"], "interval": boot["interval"]}


def exact_regret_interval(diffs: list[float]) -> dict:
    """An interval for mean(diffs) that is never [0, 0], for the cases a bootstrap gets wrong.

    With one confirmation seed per run (and the two runs' engines agreeing on the baseline) each test problem's
    regret is -1, 0 or +1: the difference of two paired right/wrong outcomes, whose exact interval is
    stats.mcnemar_interval (b = problems only the search's teacher got right, c = only the better one). A bootstrap
    over problems collapses to [0, 0] when the two agree on every problem (the same configuration trained twice with
    one seed: 2026-12-02, setting A), although a rate of disagreement up to about 3.6 points on 100 problems is not
    ruled out; the exact interval says so. Several seeds whose per-problem values are all equal are bounded the same
    way on signs, scaled by the largest |difference| (conservative)."""
    from cotgap_ray.stats import mcnemar_interval

    n = len(diffs)
    b, c = sum(d < 0 for d in diffs), sum(d > 0 for d in diffs)
    scale = max([1.0, *(abs(d) for d in diffs)])
    lo, hi = mcnemar_interval(b, c, n)
    return {"ci95": [scale * lo, scale * hi], "n_problems": n,
            "interval": "exact paired interval over problems (inverts the exact McNemar test; "
                        "stats.mcnemar_interval)" + (f", scaled by {scale:g}" if scale != 1.0 else "")}


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


def correlations(proxies: dict[str, dict[str, float]], source: str, truths: dict[str, dict[str, float]]) -> list[dict]:
    """Spearman and Kendall tau-b of each proxy (signed so higher = predicts a better teacher) with each truth
    (teacher -> measured delta); teachers missing either value are left out and `n` counts the rest."""
    from cotgap_ray.stats import kendall_tau, spearman

    names = list(dict.fromkeys(k for p in proxies.values() for k in p))  # first-seen order: stable output
    rows = []
    for proxy in names:
        sign = -1.0 if proxy in LOWER_IS_BETTER else 1.0
        for target, truth in truths.items():
            teachers = [t for t in proxies if proxy in proxies[t] and truth.get(t) is not None]
            x, y = [sign * proxies[t][proxy] for t in teachers], [truth[t] for t in teachers]
            rows.append({"proxy": proxy, "source": source, "direction": "lower" if sign < 0 else "higher",
                         "target": target, "spearman": spearman(x, y), "kendall_tau": kendall_tau(x, y),
                         "n": len(teachers)})
    return rows


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


def allocation_check(search: dict, grid_choice: str, oracle: str) -> dict | None:
    """Did the search's proxy-guided allocation (allocation.json) rule out the teacher the grid chose, or the one
    best on test? None when the search ruled nothing out by design (no allocation.json)."""
    allocation = search.get("allocation")
    if not isinstance(allocation, dict) or not isinstance(allocation.get("teachers"), dict):
        return None
    ruled_out = sorted(name for name, e in allocation["teachers"].items() if e.get("ruled_out"))
    return {"alpha": allocation.get("alpha"), "ruled_out": ruled_out, "grid_choice_ruled_out": grid_choice in ruled_out,
            "oracle_ruled_out": oracle in ruled_out}


def search_quality(search_dir: str | Path, grid_dir: str | Path) -> dict:
    """The comparison (see the module docstring); reads the two runs, writes nothing."""
    if Path(search_dir).resolve() == Path(grid_dir).resolve():
        raise ValidateError(f"SEARCH_RUN and GRID_RUN are the same directory ({search_dir}): give the search's run "
                            "and a grid run of the same config (search.strategy=grid)")
    search, grid = load(search_dir, "SEARCH_RUN"), load(grid_dir, "GRID_RUN")
    notes = check_comparable(search, grid)
    notes += [n for run in (search, grid) for n in run["notes"] if n.endswith("ignored")]  # unreadable run files
    grid_pick, search_pick = dev_choice(grid, "GRID_RUN"), dev_choice(search, "SEARCH_RUN")
    grid_final, search_final = grid["finals"][grid_pick["teacher"]], search["finals"][search_pick["teacher"]]
    scored = [f for f in grid["finals"].values() if f.delta is not None]
    # Ties on test go to the grid's own choice: the oracle names another teacher only when it really did better.
    oracle = max(scored, key=lambda f: (f.delta, f.teacher == grid_final.teacher), default=grid_final)
    truths = grid_truths(grid)
    grid_proxies, search_proxies = numeric_proxies(grid["proxies"]), numeric_proxies(search["proxies"])
    proxies = correlations(grid_proxies, "grid", truths)
    if search_proxies and search_proxies != grid_proxies:  # the search measured its own: judge those too
        proxies += correlations(search_proxies, "search", truths)
    return {
        "search_run": str(search["dir"]), "grid_run": str(grid["dir"]),
        "grid_strategy": getattr(grid["config"].search, "strategy", None),
        "grid_choice": grid_pick, "search_choice": search_pick,
        "same_choice": grid_pick["teacher"] == search_pick["teacher"],
        "regret": regret(grid_final, search_final, notes, "regret"),
        "oracle": {**_summary(oracle, oracle.best_dev_delta),
                   "label": "oracle: the grid's best teacher on TEST; for information only, never a selection rule",
                   "search_regret": regret(oracle, search_final, notes, "regret against the oracle"),
                   "grid_choice_regret": regret(oracle, grid_final, notes, "grid choice against the oracle")},
        "compute": compute_share(search, grid),
        "proxies": proxies,
        "allocation": allocation_check(search, grid_final.teacher, oracle.teacher),
        "notes": notes,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def validate(search_dir: str | Path, grid_dir: str | Path) -> dict:
    """search_quality, written to SEARCH_RUN/search_quality.json, with SEARCH_RUN's report re-rendered to show it."""
    from cotgap_ray.report import render

    sq = search_quality(search_dir, grid_dir)
    write_json(Path(search_dir) / "search_quality.json", sq)
    render(search_dir)
    return sq


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
    args = parse(parser, argv)
    sq = validate(args.search_run, args.grid_run)
    written = [Path(args.search_run) / name for name in ("search_quality.json", "report.json", "report.md")]
    if args.json:  # the file as written (records converted), not a second serialisation of `sq`
        print(written[0].read_text())
        return 0
    print("\n".join(search_quality_markdown(sq)))
    print("\n".join(f"wrote {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
