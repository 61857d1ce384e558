"""The teacher-student pairs matrix: several students' report.json dicts -> one answer to "which pair?".

A multi-student run (search/pairs.py) keeps one complete single-student run per student
(runs/<name>/students/<student>/, each with its report.json from report.py); build_pairs reads only those dicts (no
files, no Ray) and builds the top-level matrix; render_pairs reads them from the parent directory and writes its
report.json, report.md and map (search/pairs.py and `cotgap report PARENT` call it). The matrix: per student its
baseline, the teacher chosen on dev and its final test accuracy; per student x teacher the confirmed test delta over
THAT student's baseline; the pair with the best final test accuracy; and how well each proxy ranked the deltas.
Named report_pairs.py (not pairs_report.py) so it sorts beside report.py, whose rules it reuses and never restates:
chosen_on_dev, the verdicts and adjusted p-values judge() wrote, the formatting and plot helpers.

    build_pairs({"smollm2-135m": report_a, "qwen2.5-0.5b": report_b})
      -> {"students": [...], "matrix": {"teachers": [...], "cells": {student: {teacher: cell}}},
          "answer": {"student": "smollm2-135m", "teacher": "qwen2.5-coder-0.5b-instruct", "text": "Best pair: ..."},
          "proxies": {"across_cells": [{"proxy": "teacher_accuracy", "spearman": 0.6, ...}], "per_student": {...}}}

What each number is (fractions in JSON, points in text):
- baseline: report.json's baseline.test (the baseline stage: accuracy, its 95% interval, n).
- final test accuracy: with a teacher, that teacher's confirmed test_accuracy, the adapter's mean test accuracy over
  seeds, which compare_seeds makes exactly the baseline its delta pairs with (the evaluation engine's own) + delta;
  that baseline may differ from baseline.test by the engine's A/A noise (report.md's baseline table shows both).
  Without one, the student's own baseline.test accuracy: the student is used as it is.
- the teacher a student uses: report.json's recommendation.teacher (chosen on dev, a positive confirmed delta, not
  degrading; `clear` when its test tells it from zero), never a control: a control (control:..., controls.py) is a
  check of the protocol, so unlike report.py, which recommends one when every teacher is a control, here it is never
  the answer.
- teacher-student gap: the teacher's accuracy on its train rationales (proxies' teacher_accuracy, pass@1, the one
  per-teacher accuracy report.json holds) minus the student's baseline test accuracy: two splits and two decodings,
  so it places a pair on the capacity-gap axis, it is not a difference measured on one set of problems.
- comparisons between students: every two students' finals, paired by problem id and tested (report_pairs_compare.py).
- proxies: each proxy of the report.json teacher entries (validate.numeric_proxies: the ones `cotgap validate` judges)
  against the confirmed test deltas of the real teachers (controls left out: their effect is built in), computed by
  validate.correlations (signed by validate.LOWER_IS_BETTER so positive = ranks as the deltas do; Spearman and
  Kendall tau-b, one-sided permutation p, exact up to 8 cells; Holm over the proxies of one family), once across all
  cells (one family; plus a percentile bootstrap interval over cells, stats.spearman_pairs_bootstrap) and once
  within each student (its teachers; a family per student). Below 3 cells with both values: "too few cells". The
  cells are more than a run's few teachers but are not independent: cells of one student share its baseline, which
  moves all its deltas together (CELLS_SHARE), so the across-cells p and interval overstate the evidence (the report
  claims no more than "across cells, n = ..."); within a student that shift leaves the ranking as it is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cotgap_ray import controls
from cotgap_ray.report import _ci, _names, _p, _pct, _pts, _rank_ci, _table, chosen_on_dev, delta_point, save_figure
from cotgap_ray.report_pairs_compare import (SELECTION, compare_students, comparisons_md, judge_comparisons, runner_up,
                                             student_answers)

ABSENT = "absent: not a teacher of this student's run"
GAP_IS = ("teacher-student gap: the teacher's accuracy on its train rationales (pass@1) minus the student's baseline "
          "accuracy on test")

# The proxies' truth: a real teacher's confirmed test delta over its own student's baseline (report.json's `delta`).
TRUTH = "confirmed_test_delta"
# Resamples of the across-cells interval (stats.spearman_pairs_bootstrap over cells, seed 0).
PAIRS_BOOTSTRAP = 2000
TOO_FEW = "too few cells"  # fewer than 3 cells with both values: no correlation to give
CELLS_SHARE = ("cells of one student share its baseline (each of its deltas is over it), so they are not independent: "
               "the across-cells p-value and interval treat them as if they were, and overstate the evidence; within "
               "a student the shared baseline shifts every delta alike and leaves the ranking as it is")


def _baseline(r: dict) -> dict | None:
    test = (r.get("baseline") or {}).get("test")
    return {k: test.get(k) for k in ("accuracy", "ci95", "n")} if test else None


def _cell(t: dict | None, chosen: dict | None, base: float | None) -> dict:
    """One student x teacher cell from that student's report.json teacher entry (None: not in its run)."""
    if t is None:
        return {"present": False, "control": None, "chosen_on_dev": False, "test_accuracy": None, "delta": None,
                "delta_ci95": None, "p_adjusted": None, "hypothesis": None, "verdict": ABSENT,
                "teacher_accuracy": None, "gap": None, "discordance": None, "mde": None}
    acc = t.get("teacher_accuracy")
    return {"present": True, "control": t.get("control"), "chosen_on_dev": t is chosen,
            "test_accuracy": t.get("test_accuracy"), "delta": t.get("delta"), "delta_ci95": t.get("delta_ci95"),
            "p_adjusted": t.get("p_adjusted"), "hypothesis": t.get("hypothesis"),
            # judge()'s verdict when confirmed, else why not (not confirmed, no usable data, ruled out, ...)
            "verdict": t.get("verdict"), "teacher_accuracy": acc,
            "gap": None if acc is None or base is None else acc - base,
            "discordance": t.get("discordance"), "mde": _mde(t)}


def _mde(t: dict) -> float | None:
    """The cell's minimum detectable effect on test: the smallest change the exact McNemar test detects with 80%
    power at alpha 0.05 on the cell's test size and its own discordance (stats.min_detectable_effect; None: not
    confirmed, or no effect up to that discordance is detectable, or a report from before discordance was kept)."""
    from cotgap_ray.stats import min_detectable_effect

    n, d = t.get("test_n"), t.get("discordance")
    return min_detectable_effect(n, d) if n and d else None


def _student(name: str, r: dict, chosen: dict | None) -> dict:
    """A student's row: baseline, the dev choice, the teacher it uses (or none) and its final test accuracy."""
    base = _baseline(r)
    rec = r.get("recommendation") or {}
    by_name = {t["name"]: t for t in r.get("teachers", [])}
    used = by_name.get(rec.get("teacher"))
    if used is not None and controls.is_control(used["spec"]):  # every teacher a control: a check, not an answer
        used = None
    no_teacher = None if used is not None else (  # why the student is used as it is
        "no teacher chosen yet" if chosen is None else
        "the teacher chosen on dev is a control" if controls.is_control(chosen["spec"]) else
        f"{chosen['name']}, chosen on dev, is not confirmed on test yet" if chosen.get("delta") is None else
        f"{chosen['name']}, chosen on dev, degrades it" if chosen.get("verdict") == "degrades" else
        f"{chosen['name']}, chosen on dev, does not improve it on test")
    final = used["test_accuracy"] if used else base["accuracy"] if base else None
    return {"name": name, "spec": r.get("student"), "baseline_test": base,
            "chosen_on_dev": None if chosen is None else {"teacher": chosen["name"], "verdict": chosen["verdict"],
                                                          "control": chosen.get("control")},
            "teacher": used["name"] if used else None, "clear": bool(used and rec.get("clear")),
            "delta": used["delta"] if used else None, "delta_ci95": used["delta_ci95"] if used else None,
            "final_test_accuracy": final, "no_teacher": no_teacher,
            "final_is": f"{used['name']}'s adapter (the baseline its delta pairs with + delta)" if used else
            f"its own baseline ({no_teacher})", "recommendation": rec.get("text"),
            "complete": r.get("complete"), "stage": r.get("stage"),
            "splits_fingerprint": (r.get("splits") or {}).get("fingerprint")}


def _columns(reports: dict[str, dict]) -> list[dict]:
    """The teachers of every student's run, one column each (by name): real teachers by their highest accuracy
    (the capacity axis, strongest first; none last), then controls; ties keep first appearance. report.json lists
    teachers in each student's dev order, so no one config order is left to follow."""
    cols: dict[str, dict] = {}
    for r in reports.values():
        for t in r.get("teachers", []):
            col = cols.setdefault(t["name"], {"name": t["name"], "spec": t["spec"], "control": t.get("control"),
                                              "teacher_accuracy": None})
            if t.get("teacher_accuracy") is not None:
                col["teacher_accuracy"] = max(col["teacher_accuracy"] or -math.inf, t["teacher_accuracy"])
    return sorted(cols.values(), key=lambda c: (controls.is_control(c["spec"]),
                                                -(c["teacher_accuracy"] if c["teacher_accuracy"] is not None
                                                  else -math.inf)))


def _answer(students: list[dict], comparisons: list[dict], tested: bool = False) -> dict:
    scored = [s for s in students if s["final_test_accuracy"] is not None]
    out = {"student": None, "teacher": None, "final_test_accuracy": None, "clear": False, "tied_with": [],
           "per_student": {s["name"]: s["teacher"] for s in students}, "comparisons": comparisons,
           "selection": SELECTION, "comparisons_tested": tested}
    if tested:
        out |= {"runner_up": None, "told_apart": None}
    if not scored:
        return {**out, "text": "No pair yet: no student has a baseline on test or a confirmed teacher."}
    best = max(scored, key=lambda s: s["final_test_accuracy"])  # max is stable: ties go to configured order
    tied = [s["name"] for s in scored if s is not best and s["final_test_accuracy"] == best["final_test_accuracy"]]
    if best["teacher"]:
        text = (f"Best pair: {best['name']} with {best['teacher']}: {_pct(best['final_test_accuracy'])} on test, "
                f"{_pts(best['delta'])} points {_ci(best['delta_ci95'])} over its baseline"
                + ("" if best["clear"] else ", which the test does not tell from zero"))
    else:
        text = (f"Best: {best['name']} alone, no teacher ({best['no_teacher']}): "
                f"{_pct(best['final_test_accuracy'])} on test, its own baseline")
    text += f" (tied with {_names(tied)})" if tied else ""
    if len(scored) > 1 and tested:
        clause, fields = runner_up(best, scored, comparisons)
        text += clause + "."
        out |= fields
    else:
        text += "; the students are compared by point estimates, not tested." if len(scored) > 1 else "."
    partial = [s["name"] for s in students if not s["complete"]]
    if partial:
        text += f" Provisional: the run of {_names(partial)} has not finished."
    return {**out, "student": best["name"], "teacher": best["teacher"], "clear": best["clear"], "tied_with": tied,
            "final_test_accuracy": best["final_test_accuracy"], "text": text}


def _student_proxies(r: dict) -> tuple[dict, dict]:
    """A student's real teachers with a confirmed test delta: ({teacher: {proxy: value}}, {teacher: delta}). The
    proxies are validate.numeric_proxies of the report.json entry's proxies.json fields, the ones `cotgap validate`
    judges. Controls are left out: their effect is built in (controls.py), so they would rank by construction."""
    from cotgap_ray.validate import numeric_proxies

    real = [t for t in r.get("teachers", []) if not controls.is_control(t["spec"]) and t.get("delta") is not None]
    return numeric_proxies({t["name"]: t.get("proxies") for t in real}), {t["name"]: t["delta"] for t in real}


def proxy_correlations(reports: dict[str, dict]) -> dict:
    """Each proxy's rank correlation with the confirmed test deltas, as validate.correlations computes it against a
    grid (signed by validate.LOWER_IS_BETTER, one-sided permutation p, Holm across the proxies of one family):
    across all cells (every student x real teacher with both values; one family), and within each student (its
    teachers only; one family per student). The across-cells Spearman also gets a percentile bootstrap interval over
    cells (PAIRS_BOOTSTRAP resamples, seed 0). Cells of one student are not independent (CELLS_SHARE)."""
    from cotgap_ray.stats import spearman_pairs_bootstrap
    from cotgap_ray.validate import correlations

    per_student, values, deltas = {}, {}, {}
    for name, r in reports.items():
        proxies, truth = _student_proxies(r)
        per_student[name] = correlations(proxies, name, {TRUTH: truth})
        for row in per_student[name]:
            if row["spearman_p"] is not None:  # validate's wording is about a grid's per-problem answers
                row["ci95_from"] = "n/a: report.json keeps no per-problem test answers"
        values |= {(name, t): v for t, v in proxies.items()}  # (student, teacher): one cell
        deltas |= {(name, t): d for t, d in truth.items()}
    across = correlations(values, "all cells", {TRUTH: deltas})
    for row in across:
        cells = [c for c in values if row["proxy"] in values[c]]  # correlations kept the same ones (all have a delta)
        sign = -1.0 if row["direction"] == "lower" else 1.0
        ci = spearman_pairs_bootstrap([sign * values[c][row["proxy"]] for c in cells], [deltas[c] for c in cells],
                                      n_boot=PAIRS_BOOTSTRAP)
        row["spearman_ci95"] = None if ci is None else list(ci)
        row["ci95_from"] = ("n/a: fewer than 3 cells or a constant proxy or delta" if ci is None else
                            f"Spearman: percentile bootstrap over the {len(cells)} cells ({PAIRS_BOOTSTRAP} resamples, "
                            "seed 0), as if they were independent; Kendall: none")
    return {"truth": TRUTH, "n_cells": len(deltas), "n_students": len({s for s, _ in deltas}),
            "cells_are": CELLS_SHARE, "across_cells": across, "per_student": per_student}


def build_pairs(reports: dict[str, dict], answers: dict[str, dict] | None = None) -> dict:
    """The pairs matrix from {student name: its report.json dict}, in configured student order (json-serialisable).
    `answers`: {student name: student_answers' dict}, the per-problem test answers its final may be; with them, the
    comparisons between students are tested (report_pairs_compare.compare_students), without them point estimates
    only (report_pairs_compare.NOT_TESTED)."""
    columns = _columns(reports)
    students, cells = [], {}
    for name, r in reports.items():
        teachers = r.get("teachers", [])
        chosen = chosen_on_dev(teachers)  # report.json keeps every field the dev selection reads
        s = _student(name, r, chosen)
        students.append(s)
        base = (s["baseline_test"] or {}).get("accuracy")
        by_name = {t["name"]: t for t in teachers}
        cells[name] = {c["name"]: _cell(by_name.get(c["name"]), chosen, base) for c in columns}
    comparisons = [c for i, a in enumerate(students) for b in students[i + 1:]
                   if (c := compare_students(a, b, answers))]
    judge_comparisons(comparisons)
    return {"students": students, "matrix": {"teachers": columns, "cells": cells, "gap": GAP_IS},
            "answer": _answer(students, comparisons, tested=answers is not None),
            "proxies": proxy_correlations(reports)}


def _mde_text(c: dict) -> str:
    if c["mde"] is not None:
        return f"{100 * c['mde']:.1f}"
    # no discordance: not confirmed (or an older report); with one, no effect it allows reaches 80% power
    return "n/a" if c["discordance"] is None else "none at this n"


def _cell_text(c: dict) -> str:
    if c["delta"] is None:
        return "absent" if not c["present"] else c["verdict"]
    return f"{_pts(c['delta'])} {_ci(c['delta_ci95'])} {c['verdict']}" + (" *" if c["chosen_on_dev"] else "")


def _rho(row: dict | None, ci: bool = False) -> str:
    """A Spearman for the table: TOO_FEW below 3 cells with both values, "constant" where one side does not vary."""
    n = row["n"] if row else 0
    if n < 3:
        return f"{TOO_FEW} ({n})"
    if row["spearman"] is None:
        return f"n/a: constant ({n})"
    return f"{row['spearman']:+.2f}" + (f" {_rank_ci(row['spearman_ci95'])}" if ci else f" ({n})")


def _p_holm(row: dict | None) -> str:
    if not row or row["spearman_p"] is None:
        return "n/a"
    return f"{_p(row['spearman_p'])} ({_p(row['spearman_p_holm'])})"


def proxies_md(proxies: dict) -> list[str]:
    """The "Proxies against the confirmed deltas" section: one row per proxy, across cells then per student."""
    names = list(proxies["per_student"])
    own = {s: {r["proxy"]: r for r in rows} for s, rows in proxies["per_student"].items()}
    heads = ["proxy", "better", "Spearman, all cells [95% CI]", "p (Holm p)", "cells",
             *(h for s in names for h in (f"{s}: Spearman (teachers)", f"{s}: p (Holm p)"))]
    rows = [[r["proxy"], r["direction"], _rho(r, ci=True), _p_holm(r), r["n"],
             *(c for s in names for c in (_rho(own[s].get(r["proxy"])), _p_holm(own[s].get(r["proxy"]))))]
            for r in proxies["across_cells"]]
    return ["### Proxies against the confirmed deltas", "",
            "Spearman of each proxy with the real teachers' confirmed test deltas (controls left out: their effect "
            "is built in; a lower-is-better proxy negated, so positive means it ranks as the deltas do), across all "
            f"cells and within each student (its teachers only). Across cells, n = {proxies['n_cells']} cells of "
            f"{proxies['n_students']} students: {CELLS_SHARE}. p: one-sided permutation (exact up to 8 cells); Holm "
            "p: over the proxies within each family (all cells; each student). 95% CI: percentile bootstrap over "
            "cells, as if independent.", "",
            _table(heads, rows) if rows else "No proxy values: no real teacher is confirmed on test yet."]


def render_pairs_md(pairs: dict) -> str:
    """The top-level report.md's section: the answer, the matrix, each student's best, the comparisons, the
    proxies against the confirmed deltas."""
    cols, cells, students = pairs["matrix"]["teachers"], pairs["matrix"]["cells"], pairs["students"]
    heads = ["student (baseline on test)", *(c["name"] + (" (control)" if c["control"] else "") for c in cols)]

    def row_head(s: dict) -> str:
        b = s["baseline_test"]
        return f"{s['name']} ({'n/a' if not b else _pct(b['accuracy'])})"

    out = ["## Which pair: students x teachers", "", f"**{pairs['answer']['text']}**", "",
           "Test delta over each student's own baseline, points [95% CI], verdict (report.py's: the dev choice, "
           "marked *, tested at alpha; the others Holm-adjusted within the student's run):", "",
           _table(heads, [[row_head(s), *(_cell_text(cells[s["name"]][c["name"]]) for c in cols)]
                          for s in students]),
           "", f"{GAP_IS[0].upper()}{GAP_IS[1:]} (points):", "",
           _table(heads, [[row_head(s), *(_pts(cells[s["name"]][c["name"]]["gap"]) for c in cols)]
                          for s in students]),
           "", "What each cell's test can detect (points; 80% power, exact McNemar at alpha 0.05 on the cell's "
           "test size and the share of problems its adapter changed; a Holm-adjusted cell needs more):", "",
           _table(heads, [[row_head(s), *(_mde_text(cells[s["name"]][c["name"]]) for c in cols)]
                          for s in students]),
           "", "### Each student's best", "",
           _table(["student", "spec", "baseline on test [95% CI]", "chosen on dev (verdict)", "teacher used",
                   "final test accuracy", "final is"],
                  [[s["name"], s["spec"], "n/a" if not s["baseline_test"] else
                    f"{_pct(s['baseline_test']['accuracy'])} " + ("" if not s["baseline_test"]["ci95"] else
                                                                  f"[{_pct(s['baseline_test']['ci95'][0])}, "
                                                                  f"{_pct(s['baseline_test']['ci95'][1])}]"),
                    "none" if not s["chosen_on_dev"] else
                    f"{s['chosen_on_dev']['teacher']} ({s['chosen_on_dev']['verdict']})",
                    s["teacher"] or "none", _pct(s["final_test_accuracy"]), s["final_is"]] for s in students])]
    out += ["", *comparisons_md(pairs["answer"], students)]
    out += ["", *proxies_md(pairs["proxies"])]
    labelled = [c for c in cols if c["control"]]
    if labelled:
        out += ["", "Controls, whose effect is known before the run (cotgap_ray/controls.py); never the answer:", "",
                *(f"- {c['name']}: {c['control']}" for c in labelled)]
    return "\n".join(out + [""])


def plot_pairs_map(pairs: dict, path) -> Path | None:
    """The capacity-gap map: x the teacher-student gap, y the test delta with its 95% interval, one marker per
    student, a line at zero. Writes `path` and returns it; None (nothing written) when no cell has both numbers."""
    from matplotlib.figure import Figure

    points = [(i, s["name"], t, c) for i, s in enumerate(pairs["students"])
              for t, c in pairs["matrix"]["cells"][s["name"]].items()
              if c["delta"] is not None and c["gap"] is not None]
    if not points:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    seen: set[str] = set()
    for i, student, teacher, c in points:
        style = {"fmt": "osD^vP*X"[i % 8], "color": f"C{i % 10}",
                 "label": None if student in seen else student}
        if c["control"]:
            style["mfc"] = "none"  # hollow: a control, a check of the protocol, never the answer
        delta_point(ax, c["gap"], c["delta"], c["delta_ci95"], teacher + (" (control)" if c["control"] else ""),
                    **style)
        seen.add(student)
    ax.axhline(0, color="grey", lw=1)
    ax.margins(x=0.3)  # room for the labels
    ax.set(xlabel="teacher accuracy on train - student baseline on test (points)",
           ylabel="student test delta (points, 95% CI)", title="Capacity gap: every student x teacher pair")
    ax.legend(fontsize=8, title="student")
    save_figure(fig, path)
    return Path(path)


STUDENTS_DIR = "students"  # the parent's subdirectory holding one run directory per student


def student_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / STUDENTS_DIR / name


def is_pairs_run(run_dir: Path) -> bool:
    """Whether RUN_DIR is a multi-student run's parent (its config.json lists students)."""
    try:
        return bool(json.loads((Path(run_dir) / "config.json").read_text()).get("config", {}).get("students"))
    except (OSError, ValueError):
        return False  # not a run directory, or an unreadable one: report.load_run names the problem


def student_reports(run_dir: Path, students: list[str]) -> dict[str, dict]:
    """{student name: its report.json} of every student run under RUN_DIR/students/ that has rendered one, in the
    order of `students` (the configured specs; each report.json names its student's spec)."""
    found = {}
    for path in sorted((Path(run_dir) / STUDENTS_DIR).glob("*/report.json")):
        found[path.parent.name] = json.loads(path.read_text())
    order = {spec: i for i, spec in enumerate(students)}
    return dict(sorted(found.items(), key=lambda kv: order.get(kv[1].get("student"), len(order))))


def render_pairs(run_dir: Path) -> dict:
    """The parent's report.json, report.md and capacity_gap.png (the map) from every finished student's report.json
    and the per-problem test answers behind its final (student_answers: the comparisons between students are tested;
    point estimates only, as build_pairs without them, when no student's run kept any); a student not finished yet is
    named as missing, and the answer says so."""
    from cotgap_ray.records import write_json

    run_dir = Path(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    reports = student_reports(run_dir, saved["students"])
    answers = {name: student_answers(student_dir(run_dir, name)) for name in reports}
    kept = any("runs" in a for own in answers.values() for a in (own["baseline"], *own["teachers"].values()))
    pairs = build_pairs(reports, answers if kept else None)  # none kept (a run from before): point estimates
    done = {r.get("student") for r in reports.values()}
    missing = [spec for spec in saved["students"] if spec not in done]
    if missing:
        pairs["answer"]["text"] += f" Not finished yet: {', '.join(missing)} (run again with --resume)."
    plot = plot_pairs_map(pairs, run_dir / "capacity_gap.png")
    report = {"experiment": saved.get("name"), "kind": "pairs", "answer": pairs["answer"], "missing": missing,
              "student_runs": {name: f"{STUDENTS_DIR}/{name}" for name in reports},
              "pairs": pairs, "plots": [plot.name] if plot else []}
    lines = [f"# {saved.get('name')}: which teacher-student pair", "", render_pairs_md(pairs)]
    if plot:
        lines += [f"![Every student x teacher pair: test delta against the teacher-student gap]({plot.name})", ""]
    lines += ["Each student's own report (baseline, proxies, trials, confirmation):", "",
              *(f"- {name}: [{rel}/report.md]({rel}/report.md)" for name, rel in report["student_runs"].items()), ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    write_json(run_dir / "report.json", report)
    return report
