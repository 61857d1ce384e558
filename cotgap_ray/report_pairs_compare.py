"""Comparisons between students' finals, for the pairs matrix (report_pairs.py): is one told apart from another?

student_answers reads from a student's run directory the per-problem test answers its final may be; build_pairs
(report_pairs.py) pairs every two students' finals with compare_students (by problem id, tested by
stats.compare_runs), gives them Holm and a verdict with judge_comparisons, and says the best pair against the
runner-up with runner_up; comparisons_md writes report.md's lines on them. Only student_answers reads files; no Ray.

    compare_students(small, large, answers)
      -> {"lower_baseline": "small", "higher_baseline": "large", "difference": 0.275, "ci95": [0.052, 0.489],
          "p_value": 0.0034, "test": "exact McNemar", "n": 40, ...}; judge_comparisons adds "p_adjusted", "verdict"

The method: every two students whose finals both exist are compared, each pair once, the one with the lower baseline
test accuracy first (report.json holds no model size, so the "weaker" is the lower baseline; config order when
equal): the difference of their final test accuracies (first minus second). render_pairs gives build_pairs
each student's per-problem answers behind its final (student_answers: with a teacher, final/<teacher>.json's
test_correct_by_seed; alone, its baseline stage's test rows, which baseline.json's rows_path names), and the two
finals are paired by problem id and tested as every delta of the report is: stats.compare_runs, compare_seeds'
test and interval (exact McNemar test and interval for one run a side; with seeds, the hull interval and its own
test), so the interval excludes zero exactly when the test rejects. Holm over the tested comparisons of
the run, and a verdict of the first against the second at ALPHA as judge() gives one (the Holm p below alpha and
the interval off zero): "higher", "lower" or "not told apart" (never "reaches": an untold difference is no
equality). Holm over every pair holds whichever pair is then read, so the best pair against the runner-up (the
answer says whether they are told apart) is a claim at alpha although both were picked on test. Not tested, with
the reason: a student whose answers were not read or are not its final's (another accuracy), or two students with
other test problems (split fingerprints or problem ids differ: "not comparable"). Without the answers (build_pairs
alone on report.json dicts, which drop them: report._without_rows) only students whose baselines differ are
compared, each "not tested" (NOT_TESTED), by point estimates only. The best pair is picked on the test point
estimates: a selection across students, so its accuracy is optimistic (within a student the teacher was chosen on
dev and confirmed on test).
"""

from __future__ import annotations

import json
from pathlib import Path

from cotgap_ray.report import ALPHA, _ci, _p, _pct, _pts

NOT_TESTED = ("not tested: report.json keeps no per-problem test answers, so two students' finals cannot be paired "
              "problem by problem")
SELECTION = ("the best pair is a selection on test across students, so its accuracy is optimistic; within a student "
             "the teacher was chosen on dev and only confirmed on test")


def student_answers(sub: Path) -> dict:
    """The per-problem test answers a student's final may be, from its run directory SUB (build_pairs' `answers`):
    {"baseline": its baseline stage's test rows (baseline.json's test rows_path: evaluation rows, records.EVAL_SCHEMA,
    in the evaluation cache), "teachers": {teacher: its confirmation's seeds (final/<teacher>.json)}}, each
    {"problem_ids": [...], "runs": [[correct per problem], ...]} or {"missing": why it could not be read}."""
    from cotgap_ray.evaluation.paired import rows_correct
    from cotgap_ray.records import FinalRecord, record_from_dict

    try:
        rows = json.loads((sub / "baseline.json").read_text())["test"]["rows_path"]
        correct = rows_correct(str(sub / rows))  # an absolute path (the cache) stays as it is
        ids = sorted(correct)
        baseline = {"problem_ids": ids, "runs": [[correct[i] for i in ids]]}
    except (OSError, ValueError, KeyError, TypeError) as e:  # absent, unreadable, off its schema, no rows_path
        baseline = {"missing": f"its baseline's test rows, named by {sub / 'baseline.json'}, cannot be read ({e})"}
    teachers = {}
    for path in sorted((sub / "final").glob("*.json")):
        try:
            f = record_from_dict(FinalRecord, json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as e:  # RecordError is a ValueError
            teachers[path.stem] = {"missing": f"{path} cannot be read ({e})"}
            continue
        teachers[f.teacher or path.stem] = (
            {"problem_ids": list(f.test_problem_ids), "runs": [list(r) for r in f.test_correct_by_seed]}
            if f.test_correct_by_seed else
            {"missing": f"{path.name} keeps no per-problem answers (written before they were kept)"})
    return {"baseline": baseline, "teachers": teachers}


def compare_students(a: dict, b: dict, answers: dict | None = None) -> dict | None:
    """Two students' finals, the lower baseline first. Without `answers` (build_pairs'): only students whose baselines
    differ, point estimates only (NOT_TESTED); with them, every two students with a final, tested on their shared
    test problems (_tested). None when a final (or, without answers, a baseline) is missing."""
    if answers is None and None in (a["baseline_test"], b["baseline_test"]):
        return None
    if a["final_test_accuracy"] is None or b["final_test_accuracy"] is None:
        return None
    if answers is None and a["baseline_test"]["accuracy"] == b["baseline_test"]["accuracy"]:
        return None
    both = a["baseline_test"] and b["baseline_test"]  # sorted is stable: equal baselines keep config order
    low, high = sorted((a, b), key=lambda s: s["baseline_test"]["accuracy"]) if both else (a, b)
    same = low["splits_fingerprint"] == high["splits_fingerprint"] and low["splits_fingerprint"] is not None
    diff = low["final_test_accuracy"] - high["final_test_accuracy"]
    out = {"lower_baseline": low["name"], "higher_baseline": high["name"], "difference": diff,
           "reaches": diff >= 0, "same_test_problems": same,
           "test": NOT_TESTED if same else "not comparable: the students' split fingerprints differ (other test "
                                           "problems)"}
    if answers is None:
        return out
    out |= {"ci95": None, "p_value": None, "p_adjusted": None, "verdict": None, "n": None, "interval": None}
    return _tested(out, low, high, answers) if same else out


def _final_runs(s: dict, own: dict | None) -> tuple[dict | None, str | None]:
    """The per-problem test answers behind student s's final (({"problem_ids", "runs"}, None)), or (None, why not):
    its teacher's confirmation seeds, or its baseline when it is used alone; refused when their accuracy is not the
    final's (a report.json rendered from other files), so the test is about the very finals the table shows."""
    source = f"final/{s['teacher']}.json" if s["teacher"] else "its baseline's test rows"
    got = None if own is None else own["teachers"].get(s["teacher"]) if s["teacher"] else own["baseline"]
    if not got or "missing" in got:
        return None, f"{s['name']}: {(got or {}).get('missing') or source + ' not read'}"
    ids, runs = got["problem_ids"], got["runs"]
    if not runs or not ids or any(len(r) != len(ids) for r in runs) or len(set(ids)) != len(ids):
        return None, f"{s['name']}: {source} holds no per-problem answers one per test problem"
    acc = sum(sum(r) / len(r) for r in runs) / len(runs)
    if abs(acc - s["final_test_accuracy"]) > 1e-9:
        return None, (f"{s['name']}: {source} scores {_pct(acc)}, not its final {_pct(s['final_test_accuracy'])}: "
                      "render the student's report again")
    return got, None


def _tested(out: dict, low: dict, high: dict, answers: dict) -> dict:
    """`out` with the paired test of low's final against high's on their shared test problems, paired by problem id:
    stats.compare_runs, the test and interval of every delta in the report (compare_seeds is compare_runs against
    one baseline run). Refused, with the reason in `test`, when either side's answers are missing or the problem ids
    differ."""
    from cotgap_ray.stats import compare_runs

    (x, why_x), (y, why_y) = (_final_runs(s, answers.get(s["name"])) for s in (low, high))
    if why_x or why_y:
        return out | {"test": f"not tested: {'; '.join(w for w in (why_x, why_y) if w)}"}
    if sorted(x["problem_ids"]) != sorted(y["problem_ids"]):
        shared = len(set(x["problem_ids"]) & set(y["problem_ids"]))
        return out | {"same_test_problems": False,
                      "test": f"not comparable: the finals answer other test problems ({shared} shared of "
                              f"{len(x['problem_ids'])} and {len(y['problem_ids'])})"}
    at = {pid: i for i, pid in enumerate(y["problem_ids"])}
    order = [at[pid] for pid in x["problem_ids"]]
    r = compare_runs(x["runs"], [[run[i] for i in order] for run in y["runs"]], alpha=ALPHA)
    return out | {"difference": r["delta"], "ci95": r["ci95"], "p_value": r["p_value"], "n": r["n"],
                  "runs": r["runs"], "test": r["test"], "interval": r["interval"]}


def judge_comparisons(comparisons: list[dict]) -> None:
    """Holm over the tested comparisons of the run, and each one's verdict (in place), the first student's final
    against the second's as judge() decides a delta: "higher" / "lower" when the Holm p is below ALPHA and the
    interval lies off zero on that side, else "not told apart"."""
    from cotgap_ray.stats import holm

    tested = [c for c in comparisons if c.get("p_value") is not None]
    for c, p in zip(tested, holm([c["p_value"] for c in tested])):
        lo, hi = c["ci95"]
        c["p_adjusted"] = p
        c["verdict"] = "higher" if p < ALPHA and lo > 0 else "lower" if p < ALPHA and hi < 0 else "not told apart"


def _with(s: dict) -> str:
    return f"{s['name']} with {s['teacher']}" if s["teacher"] else f"{s['name']} alone"


def _comparison_sentence(c: dict, by_name: dict) -> str:
    low, high = by_name[c["lower_baseline"]], by_name[c["higher_baseline"]]
    verb = "more than" if c["difference"] > 0 else "as much as"
    return (f"{_with(low)} reaches {_pct(low['final_test_accuracy'])} on test, {verb} {_with(high)} "
            f"({_pct(high['final_test_accuracy'])}), from a lower baseline ({_pct(low['baseline_test']['accuracy'])} "
            f"against {_pct(high['baseline_test']['accuracy'])}): {_pts(c['difference'])} points, "
            f"{c['test'].partition(':')[0]}.")


def _tested_sentence(c: dict, by_name: dict) -> str:
    """One comparison with the answers given: its test, or why there is none."""
    low, high = by_name[c["lower_baseline"]], by_name[c["higher_baseline"]]
    head = (f"{_with(low)} ({_pct(low['final_test_accuracy'])}) against {_with(high)} "
            f"({_pct(high['final_test_accuracy'])}): {_pts(c['difference'])} points")
    if c["p_value"] is None:
        return f"{head}, {c['test']}."
    verdict = "not told apart" if c["verdict"] == "not told apart" else f"{low['name']}'s final is {c['verdict']}"
    return (f"{head} {_ci(c['ci95'])}, p = {_p(c['p_value'])} (Holm {_p(c['p_adjusted'])}; {c['test']}, n = "
            f"{c['n']}): {verdict}.")


def runner_up(best: dict, scored: list[dict], comparisons: list[dict]) -> tuple[str, dict]:
    """The answer's clause on the best pair against the runner-up (the next final; ties: config order), and the
    answer's fields for it: the difference best - runner-up, its interval and Holm p as the comparison tested it."""
    ru = max((s for s in scored if s is not best), key=lambda s: s["final_test_accuracy"])
    c = next((c for c in comparisons if {c["lower_baseline"], c["higher_baseline"]} == {best["name"], ru["name"]}),
             None)
    who = f"the runner-up, {_with(ru)} ({_pct(ru['final_test_accuracy'])})"
    if c is None or c.get("p_value") is None:
        return f"; against {who}: {c['test'] if c else 'not compared'}", {"runner_up": ru["name"], "told_apart": None}
    first = c["lower_baseline"] == best["name"]  # the comparison's sign is first - second
    d = c["difference"] if first else -c["difference"]
    ci = c["ci95"] if first else [-c["ci95"][1], -c["ci95"][0]]
    told = c["verdict"] != "not told apart"
    return (f"; {'told apart from' if told else 'not told apart from'} {who}: {_pts(d)} points {_ci(ci)}, "
            f"Holm p = {_p(c['p_adjusted'])}", {"runner_up": ru["name"], "told_apart": told})


def comparisons_md(answer: dict, students: list[dict]) -> list[str]:
    """The lines on the comparisons between students: tested (the answers were read), or point estimates only."""
    by_name, comparisons = {s["name"]: s for s in students}, answer["comparisons"]
    if not answer.get("comparisons_tested"):  # build_pairs without the answers: point estimates only
        reached = [_comparison_sentence(c, by_name) for c in comparisons if c["reaches"]]
        return [f"Between students, final test accuracies are point estimates, {NOT_TESTED}; {SELECTION}.",
                *(["", *(f"- {line}" for line in reached)] if reached else [])]
    m = sum(c["p_value"] is not None for c in comparisons)
    return [f"Between students: each two students' finals on their shared test problems, paired by problem id, "
            "the first (lower baseline) minus the second, points [95% CI], tested as every delta of this report "
            "(exact McNemar, one run a side; the seed-aware hull interval and its own test when a side has seeds), "
            f"Holm over the {m} tested comparison{'' if m == 1 else 's'}; a verdict needs the Holm p below "
            f"{ALPHA} and the interval off zero, else \"not told apart\"; {SELECTION}.",
            *(["", *(f"- {_tested_sentence(c, by_name)}" for c in comparisons)] if comparisons else [])]
