"""report_pairs.py on report.json dicts that report.py itself rendered from literal run directories: the cells'
numbers, the answer, controls never the answer, absent cells, the "none" case, the proxies' rank correlations with the
confirmed deltas (across cells and per student; controls left out; too few cells), report.md's section and the map;
and the comparisons between students' finals, tested problem by problem on literal answers (p and interval against
scipy's numbers, Holm, a tie, other problems, render_pairs reading the files the search writes).

No Ray, no model: each student's run is written into a temporary directory (tests/test_report.py's helpers), rendered
by report.render, and its report.json read back, exactly what a multi-student run's students/<name>/ would hold.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from cotgap_ray import report
from cotgap_ray.report_pairs import ABSENT, build_pairs, plot_pairs_map, render_pairs_md
from cotgap_ray.report_pairs_compare import NOT_TESTED, student_answers
from cotgap_ray.stats import HULL_TEST
from tests.test_report import GEMMA, PNG_MAGIC, QWEN, SMOL, _final, _proxy, _trial, write_run

ORACLE, CORRUPT = "control-oracle", "control-corrupt"  # controls.name of control:oracle, control:corrupt


def _name(spec: str) -> str:
    return spec.removeprefix("packaged:").replace("control:", "control-")


def student_run(root: Path, name: str, student: str, base_test: float, teachers: list[tuple]) -> dict:
    """One student's report.json as report.render writes it. `teachers`: (spec, teacher accuracy, dev delta or None
    for a teacher whose trials had no data, (test delta, 95% CI, p) or None for no confirmation), in config order;
    each teacher's proxy rank is its position."""
    run = write_run(root / name, None)
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["student"] = student
    cfg["teachers"] = [{"spec": spec, "name": _name(spec)} for spec, *_ in teachers]
    (run / "config.json").write_text(json.dumps(cfg))
    base = json.loads((run / "baseline.json").read_text())
    base["test"] |= {"accuracy": base_test, "ci95": [base_test - 0.05, base_test + 0.06]}
    (run / "baseline.json").write_text(json.dumps(base))
    (run / "proxies.json").write_text(json.dumps({_name(spec): _proxy(spec, acc, i + 1, 60.0)
                                                  for i, (spec, acc, *_) in enumerate(teachers)}))
    shutil.rmtree(run / "trials")
    (run / "final").mkdir()
    for i, (spec, _, dev, final) in enumerate(teachers):
        trial = _trial(f"t{i}", _name(spec), "ok" if dev is not None else "no_data", dev, 1000.0 + i)
        (run / "trials" / f"t{i}").mkdir(parents=True)
        (run / "trials" / f"t{i}" / "trial.json").write_text(json.dumps(trial))
        if final:
            delta, ci, p = final
            f = _final(_name(spec), f"t{i}", delta, ci, dev) | {"spec": spec, "p_value": p,
                                                                "test_accuracy": base_test + delta,
                                                                "discordance": abs(delta) + 0.06}
            for seed in f["seeds"]:
                seed["test_accuracy"] = base_test + delta
            (run / "final" / f"{_name(spec)}.json").write_text(json.dumps(f))
    report.render(run)
    return json.loads((run / "report.json").read_text())


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """small: QWEN improves it (chosen on dev), GEMMA degrades, SMOL no data, the oracle control improves it most;
    large: QWEN (chosen on dev) does not improve it, GEMMA not confirmed, SMOL no data, no control."""
    root = tmp_path_factory.mktemp("students")
    small = student_run(root, "small", "packaged:smollm2-135m-instruct", 0.235, [
        (f"packaged:{SMOL}", 0.05, None, None), (f"packaged:{GEMMA}", 0.15, -0.02, (-0.05, [-0.09, -0.01], 0.01)),
        (f"packaged:{QWEN}", 0.62, 0.05, (0.041, [0.012, 0.070], 0.01)),
        ("control:oracle", 1.0, 0.30, (0.30, [0.20, 0.40], 0.001))])
    large = student_run(root, "large", "packaged:qwen2.5-0.5b-instruct", 0.25, [
        (f"packaged:{SMOL}", 0.05, None, None), (f"packaged:{GEMMA}", 0.15, 0.01, None),
        (f"packaged:{QWEN}", 0.62, 0.05, (-0.02, [-0.05, 0.01], 0.2))])
    return {"small": small, "large": large}


def test_each_cell_is_that_students_confirmed_delta_over_its_own_baseline(reports):
    pairs = build_pairs(reports)
    # real teachers strongest first (teacher accuracy), controls last
    assert [c["name"] for c in pairs["matrix"]["teachers"]] == [QWEN, GEMMA, SMOL, ORACLE]
    small, large = pairs["matrix"]["cells"]["small"], pairs["matrix"]["cells"]["large"]
    q = small[QWEN]
    assert (q["delta"], q["delta_ci95"], q["p_adjusted"], q["hypothesis"]) == (0.041, [0.012, 0.070], 0.01, "primary")
    assert q["verdict"] == "improves" and q["chosen_on_dev"] is True and q["control"] is None
    assert q["teacher_accuracy"] == 0.62 and q["gap"] == pytest.approx(0.62 - 0.235)
    assert q["test_accuracy"] == pytest.approx(0.276)
    assert (small[GEMMA]["verdict"], small[GEMMA]["hypothesis"], small[GEMMA]["chosen_on_dev"]) == \
        ("degrades", "secondary", False)
    assert small[SMOL]["verdict"] == "no usable data" and small[SMOL]["delta"] is None
    assert small[SMOL]["gap"] == pytest.approx(0.05 - 0.235)  # the gap needs no confirmation
    assert (large[QWEN]["delta"], large[QWEN]["p_adjusted"], large[QWEN]["verdict"]) == \
        (-0.02, 0.2, "no clear change")
    assert large[QWEN]["gap"] == pytest.approx(0.62 - 0.25)  # over THIS student's baseline
    assert large[GEMMA]["verdict"] == "not confirmed" and large[GEMMA]["present"] is True
    assert small[ORACLE]["verdict"] == "improves" and small[ORACLE]["hypothesis"] == "control"
    assert small[ORACLE]["control"].startswith("reference solutions")


def test_each_confirmed_cell_says_what_its_test_can_detect(reports):
    from cotgap_ray.stats import mcnemar_power, min_detectable_effect

    cells = build_pairs(reports)["matrix"]["cells"]
    q = cells["small"][QWEN]  # 200 test problems, its adapter changed 10.1% of them
    assert q["discordance"] == pytest.approx(0.101) and q["mde"] == min_detectable_effect(200, 0.101)
    assert mcnemar_power(200, 0.101, q["mde"]) >= 0.8 > mcnemar_power(200, 0.101, q["mde"] - 0.01)
    assert cells["small"][SMOL]["mde"] is None and cells["large"][GEMMA]["mde"] is None  # nothing confirmed
    md = render_pairs_md(build_pairs(reports))
    assert f"| small (23.5%) | {100 * q['mde']:.1f} | " in md and "| large (25.0%) | " in md


def test_a_teacher_missing_from_a_students_run_is_an_absent_cell(reports):
    cell = build_pairs(reports)["matrix"]["cells"]["large"][ORACLE]
    assert cell["present"] is False and cell["verdict"] == ABSENT
    assert cell["delta"] is None and cell["gap"] is None and cell["teacher_accuracy"] is None


def test_each_student_row_has_its_baseline_dev_choice_and_final(reports):
    small, large = build_pairs(reports)["students"]
    assert small["name"] == "small" and small["spec"] == "packaged:smollm2-135m-instruct"
    assert small["baseline_test"] == {"accuracy": 0.235, "ci95": [pytest.approx(0.185), 0.295], "n": 200}
    assert small["chosen_on_dev"] == {"teacher": QWEN, "verdict": "improves", "control": None}
    assert small["teacher"] == QWEN and small["clear"] is True and small["delta"] == 0.041
    assert small["final_test_accuracy"] == pytest.approx(0.235 + 0.041) and small["no_teacher"] is None
    assert small["complete"] is True and small["recommendation"].startswith(f"Use {QWEN}")


def test_a_student_no_teacher_improves_keeps_its_own_baseline(reports):
    large = build_pairs(reports)["students"][1]
    assert large["chosen_on_dev"] == {"teacher": QWEN, "verdict": "no clear change", "control": None}
    assert large["teacher"] is None and large["clear"] is False and large["delta"] is None
    assert large["final_test_accuracy"] == 0.25  # the baseline itself, not 0.25 - 0.02
    assert large["no_teacher"] == f"{QWEN}, chosen on dev, does not improve it on test"
    assert large["final_is"] == f"its own baseline ({QWEN}, chosen on dev, does not improve it on test)"


def test_the_answer_is_the_best_final_pair_and_never_a_control(reports):
    answer = build_pairs(reports)["answer"]
    # small with the oracle reaches 53.5% on test, far above any pair: a control is still never the answer
    assert (answer["student"], answer["teacher"], answer["clear"]) == ("small", QWEN, True)
    assert answer["final_test_accuracy"] == pytest.approx(0.276)
    assert answer["per_student"] == {"small": QWEN, "large": None} and answer["tied_with"] == []
    assert answer["text"] == (f"Best pair: small with {QWEN}: 27.6% on test, +4.1 points [+1.2, +7.0] over its "
                              "baseline; the students are compared by point estimates, not tested.")


def test_a_run_whose_teachers_are_all_controls_gives_no_teacher(tmp_path):
    known = student_run(tmp_path, "known", "packaged:smollm2-135m-instruct", 0.20, [
        ("control:oracle", 1.0, 0.30, (0.30, [0.20, 0.40], 0.001)),
        ("control:corrupt", 0.0, -0.10, (-0.10, [-0.15, -0.05], 0.01))])
    assert known["recommendation"]["teacher"] == ORACLE  # report.py answers a known-answers run with its oracle
    pairs = build_pairs({"known": known})
    s = pairs["students"][0]
    assert s["chosen_on_dev"]["teacher"] == ORACLE and s["teacher"] is None
    assert s["final_test_accuracy"] == 0.20 and s["no_teacher"] == "the teacher chosen on dev is a control"
    assert pairs["answer"]["text"] == ("Best: known alone, no teacher (the teacher chosen on dev is a control): "
                                       "20.0% on test, its own baseline.")


def test_a_weaker_student_reaching_a_stronger_ones_final_is_said_and_not_tested(reports):
    pairs = build_pairs(reports)
    [c] = pairs["answer"]["comparisons"]
    assert (c["lower_baseline"], c["higher_baseline"], c["reaches"], c["same_test_problems"]) == \
        ("small", "large", True, True)
    assert c["difference"] == pytest.approx(0.276 - 0.25) and c["test"] == NOT_TESTED
    md = render_pairs_md(pairs)
    assert (f"- small with {QWEN} reaches 27.6% on test, more than large alone (25.0%), from a lower baseline "
            "(23.5% against 25.0%): +2.6 points, not tested.") in md
    assert f"Between students, final test accuracies are point estimates, {NOT_TESTED}; the best pair is" in md
    other = copy.deepcopy(reports)
    other["large"]["splits"]["fingerprint"] = "another-split"
    [c] = build_pairs(other)["answer"]["comparisons"]
    assert c["same_test_problems"] is False and c["test"].startswith("not comparable")


def test_a_weaker_student_below_the_stronger_one_gets_no_sentence(reports):
    other = copy.deepcopy(reports)
    other["large"]["baseline"]["test"]["accuracy"] = 0.30
    pairs = build_pairs(other)
    [c] = pairs["answer"]["comparisons"]
    assert c["reaches"] is False and c["difference"] == pytest.approx(0.276 - 0.30)
    assert "reaches" not in render_pairs_md(pairs)
    assert pairs["answer"]["student"] == "large" and pairs["answer"]["teacher"] is None
    assert pairs["answer"]["text"].startswith(f"Best: large alone, no teacher ({QWEN}, chosen on dev, does not "
                                              "improve it on test): 30.0% on test, its own baseline")


def test_ties_go_to_configured_order_and_are_named(reports):
    pairs = build_pairs({"a": reports["small"], "b": copy.deepcopy(reports["small"])})
    assert pairs["answer"]["student"] == "a" and pairs["answer"]["tied_with"] == ["b"]
    assert "(tied with b)" in pairs["answer"]["text"] and pairs["answer"]["comparisons"] == []


def test_no_pair_without_baselines_or_teachers_and_an_unfinished_run_is_provisional(reports):
    bare = copy.deepcopy(reports["large"])
    bare["baseline"] = {}
    pairs = build_pairs({"large": bare})
    assert pairs["students"][0]["baseline_test"] is None and pairs["students"][0]["final_test_accuracy"] is None
    assert pairs["matrix"]["cells"]["large"][QWEN]["gap"] is None
    assert pairs["answer"]["student"] is None
    assert pairs["answer"]["text"] == "No pair yet: no student has a baseline on test or a confirmed teacher."
    partial = copy.deepcopy(reports)
    partial["large"]["complete"] = False
    assert build_pairs(partial)["answer"]["text"].endswith(" Provisional: the run of large has not finished.")


def test_the_pairs_are_json_as_they_are(reports):
    pairs = build_pairs(reports)
    assert json.loads(json.dumps(pairs)) == pairs


def test_markdown_gives_the_answer_then_the_matrix_then_each_students_best(reports):
    pairs = build_pairs(reports)
    md = render_pairs_md(pairs)
    assert md.startswith(f"## Which pair: students x teachers\n\n**{pairs['answer']['text']}**\n")
    assert (f"| student (baseline on test) | {QWEN} | {GEMMA} | {SMOL} | {ORACLE} (control) |") in md
    assert ("| small (23.5%) | +4.1 [+1.2, +7.0] improves * | -5.0 [-9.0, -1.0] degrades | no usable data "
            "| +30.0 [+20.0, +40.0] improves |") in md
    assert "| large (25.0%) | -2.0 [-5.0, +1.0] no clear change * | not confirmed | no usable data | absent |" in md
    assert "| small (23.5%) | +38.5 | -8.5 | -18.5 | +76.5 |" in md  # the gaps, points
    assert (f"| small | packaged:smollm2-135m-instruct | 23.5% [18.5%, 29.5%] | {QWEN} (improves) | {QWEN} | 27.6% "
            f"| {QWEN}'s adapter (the baseline its delta pairs with + delta) |") in md
    assert "| large | packaged:qwen2.5-0.5b-instruct | 25.0% [20.0%, 31.0%] |" in md
    assert md.index("| small (23.5%) | +4.1") < md.index("### Each student's best")
    assert f"- {ORACLE}: reference solutions" in md


def test_the_capacity_gap_map_is_written(reports, tmp_path):
    pairs = build_pairs(reports)
    path = plot_pairs_map(pairs, tmp_path / "pairs_map.png")
    data = (tmp_path / "pairs_map.png").read_bytes()
    assert path == tmp_path / "pairs_map.png" and data.startswith(PNG_MAGIC) and len(data) > 1000
    empty = build_pairs({"large": {**reports["large"], "teachers": []}})
    assert plot_pairs_map(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def _ordered(root: Path, name: str, student: str, cells: list[tuple[str, float, float]],
             control: tuple | None = None) -> dict:
    """A student run whose real teachers (spec, teacher accuracy, confirmed test delta) are listed best first, so
    each one's proxy rank is its position; student_nll set to 2 - accuracy (lower is better: it orders the teachers
    like the accuracy does); `control`: a (spec, accuracy, delta) control whose cell would break every order."""
    teachers = [(spec, acc, delta, (delta, [delta - 0.02, delta + 0.02], 0.04)) for spec, acc, delta in cells]
    if control:
        spec, acc, delta = control
        teachers.append((spec, acc, delta, (delta, [delta - 0.02, delta + 0.02], 0.01)))
    r = student_run(root, name, student, 0.20, teachers)
    for t in r["teachers"]:
        t["proxies"]["student_nll"] = 2.0 - t["proxies"]["teacher_accuracy"]
    return r


@pytest.fixture(scope="module")
def ordered(tmp_path_factory) -> dict[str, dict]:
    """Two students x three real teachers: teacher accuracy (and every proxy derived from it) orders the six
    confirmed deltas perfectly, across cells and within each student; a's run also has a control off that order."""
    root = tmp_path_factory.mktemp("ordered")
    a = _ordered(root, "a", "packaged:smollm2-135m-instruct",
                 [("packaged:t3", 0.3, 0.03), ("packaged:t2", 0.2, 0.02), ("packaged:t1", 0.1, 0.01)],
                 control=("control:corrupt", 0.9, -0.10))
    b = _ordered(root, "b", "packaged:qwen2.5-0.5b-instruct",
                 [("packaged:t6", 0.6, 0.06), ("packaged:t5", 0.5, 0.05), ("packaged:t4", 0.4, 0.04)])
    return {"a": a, "b": b}


def test_a_proxy_ordered_with_the_deltas_over_six_cells_has_rho_1_and_exact_p_1_in_720(ordered):
    proxies = build_pairs(ordered)["proxies"]
    assert (proxies["n_cells"], proxies["n_students"], proxies["truth"]) == (6, 2, "confirmed_test_delta")
    across = {r["proxy"]: r for r in proxies["across_cells"]}
    # validate.numeric_proxies' proxies of tests/test_report.py's _proxy; its bookkeeping numbers left out
    assert list(across) == ["teacher_accuracy", "correct_yield", "solved_fraction", "student_nll", "rank"]
    acc = across["teacher_accuracy"]
    assert (acc["spearman"], acc["n"], acc["direction"], acc["source"]) == (1.0, 6, "higher", "all cells")
    assert acc["spearman_p"] == pytest.approx(1 / 720, abs=1e-15)  # one-sided: only the identity is as extreme
    # Holm over the 5 proxies with a p-value: four perfect ones (1/720 each) and rank (p 0.2)
    assert acc["spearman_p_holm"] == pytest.approx(5 / 720) and acc["holm_family"] == 5
    assert acc["spearman_ci95"] == [1.0, 1.0]  # every resample of a perfect order is perfect
    assert acc["ci95_from"].startswith("Spearman: percentile bootstrap over the 6 cells (2000 resamples, seed 0)")
    # lower is better: student_nll = 2 - accuracy is negated, so it ranks the cells as well as the accuracy
    nll = across["student_nll"]
    assert (nll["direction"], nll["spearman"], nll["spearman_p"]) == ("lower", 1.0, pytest.approx(1 / 720))


def test_the_rank_across_cells_matches_scipy_and_each_student_is_its_own_family(ordered):
    proxies = build_pairs(ordered)["proxies"]
    rank = {r["proxy"]: r for r in proxies["across_cells"]}["rank"]
    # negated ranks [-1, -2, -3, -1, -2, -3] against deltas [.03, .02, .01, .06, .05, .04]: tie-averaged ranks,
    # 8 / sqrt(16 * 17.5); scipy.stats.spearmanr gives 0.4780914437337575 (scipy 1.17.1, not a dependency)
    assert rank["direction"] == "lower" and rank["spearman"] == pytest.approx(0.4780914437337575, abs=1e-12)
    assert rank["spearman_p"] == pytest.approx(144 / 720)  # 144 of the 720 orderings reach it (enumerated)
    assert rank["spearman_p_holm"] == pytest.approx(0.2)  # the largest of 5: Holm multiplies it by 1
    for name in ("a", "b"):  # within a student every proxy ranks its 3 teachers perfectly: p 1/6, Holm 5/6
        rows = proxies["per_student"][name]
        assert [(r["proxy"], r["n"], r["spearman"]) for r in rows] == [
            (p, 3, 1.0) for p in ("teacher_accuracy", "correct_yield", "solved_fraction", "student_nll", "rank")]
        assert all(r["spearman_p"] == pytest.approx(1 / 6) and r["spearman_p_holm"] == pytest.approx(5 / 6)
                   for r in rows)
        assert rows[0]["ci95_from"] == "n/a: report.json keeps no per-problem test answers"


def test_a_control_is_left_out_of_the_proxies(ordered):
    proxies = build_pairs(ordered)["proxies"]
    assert build_pairs(ordered)["matrix"]["cells"]["a"][CORRUPT]["delta"] == -0.10  # in the matrix, confirmed
    # with it (accuracy 0.9, delta -0.10) the accuracy would no longer order the cells: n 7 and rho < 1
    assert {r["proxy"]: r["n"] for r in proxies["across_cells"]}["teacher_accuracy"] == 6
    assert [r["n"] for r in proxies["per_student"]["a"]] == [3] * 5


def test_too_few_cells_gives_no_number(reports):
    proxies = build_pairs(reports)["proxies"]
    # small: GEMMA and QWEN confirmed (the oracle is a control); large: QWEN only; SMOL nowhere confirmed
    assert proxies["n_cells"] == 3
    small = {r["proxy"]: r for r in proxies["per_student"]["small"]}["teacher_accuracy"]
    assert (small["n"], small["spearman"], small["spearman_p"], small["spearman_p_holm"]) == (2, None, None, None)
    [only] = [r for r in build_pairs({"large": reports["large"]})["proxies"]["across_cells"]
              if r["proxy"] == "teacher_accuracy"]
    assert (only["n"], only["spearman"], only["spearman_ci95"]) == (1, None, None)
    md = render_pairs_md(build_pairs({"large": reports["large"]}))
    assert "| teacher_accuracy | higher | too few cells (1) | n/a | 1 | too few cells (1) | n/a |" in md


def test_markdown_has_the_proxies_table(ordered):
    md = render_pairs_md(build_pairs(ordered))
    assert "### Proxies against the confirmed deltas" in md
    assert "Across cells, n = 6 cells of 2 students: cells of one student share its baseline" in md
    assert ("| proxy | better | Spearman, all cells [95% CI] | p (Holm p) | cells | a: Spearman (teachers) "
            "| a: p (Holm p) | b: Spearman (teachers) | b: p (Holm p) |") in md
    assert "| teacher_accuracy | higher | +1.00 [+1.00, +1.00] | 0.001 (0.007) | 6 | +1.00 (3) | 0.167 (0.833) |" in md
    assert "| rank | lower | +0.48 [" in md


# ------------------------------------------------------------ comparisons between students, tested problem by problem

IDS = [f"p{i:02d}" for i in range(40)]
# Per-problem test answers, "1" right: SMALL right on 21 of 40, LARGE on 10 (= large's baseline, 25.0%), MID on 12.
# SMALL against LARGE: 12 problems only SMALL gets right, 1 only LARGE; against MID: 9 and 0; LARGE against MID: 1, 3.
SMALL = "1" * 9 + "1" * 12 + "0" + "0" * 18
LARGE = "1" * 9 + "0" * 12 + "1" + "0" * 18
MID = "1" * 12 + "0" * 28


def _bits(s: str) -> list[bool]:
    return [c == "1" for c in s]


def _runs(*vectors: str, ids: list[str] = IDS) -> dict:
    return {"problem_ids": list(ids), "runs": [_bits(v) for v in vectors]}


def _literal(reports: dict, small_final: float, mid: bool = False) -> dict:
    """The fixture's reports with small's QWEN final at `small_final` (large stays alone at its 25.0% baseline);
    `mid`: a third student, large's run with a 30.0% baseline (12 of 40), also alone."""
    out = copy.deepcopy(reports)
    next(t for t in out["small"]["teachers"] if t["name"] == QWEN)["test_accuracy"] = small_final
    if mid:
        out["mid"] = copy.deepcopy(reports["large"])
        out["mid"]["baseline"]["test"]["accuracy"] = 12 / 40
    return out


def test_a_clearly_better_final_is_told_apart_by_the_exact_mcnemar_test_holm_over_the_pairs(reports):
    answers = {"small": {"baseline": {"missing": "not needed"}, "teachers": {QWEN: _runs(SMALL)}},
               # large's rows in another order: the finals are paired by problem id, not by position
               "large": {"baseline": _runs(LARGE[::-1], ids=IDS[::-1]), "teachers": {}},
               "mid": {"baseline": _runs(MID), "teachers": {}}}
    pairs = build_pairs(_literal(reports, 21 / 40, mid=True), answers)
    sl, sm, lm = pairs["answer"]["comparisons"]
    assert (sl["lower_baseline"], sl["higher_baseline"], sl["same_test_problems"]) == ("small", "large", True)
    assert sl["difference"] == pytest.approx(11 / 40) and sl["n"] == 40 and sl["test"] == "exact McNemar"
    # Computed apart with scipy 1.17.1 (not a dependency): binomtest(12, 13).pvalue, and the interval's corners
    # (2q - 1) * pi over binomtest(12, 13) and binomtest(13, 40)'s proportion_ci(0.95, method="exact")
    assert sl["p_value"] == pytest.approx(0.00341796875, abs=1e-15)  # 2 * (1 + 13) / 2^13
    assert sl["ci95"] == [pytest.approx(0.05189362600366343, abs=1e-9), pytest.approx(0.48938312085778596, abs=1e-9)]
    assert (sm["p_value"], sm["ci95"]) == (pytest.approx(0.00390625, abs=1e-15),  # 2 / 2^9
                                          [pytest.approx(0.03549618844276523, abs=1e-9),
                                           pytest.approx(0.3845116773034228, abs=1e-9)])
    assert (lm["lower_baseline"], lm["higher_baseline"], lm["difference"]) == ("large", "mid", pytest.approx(-0.05))
    assert (lm["p_value"], lm["ci95"]) == (pytest.approx(0.625), [pytest.approx(-0.2336512899388308, abs=1e-9),
                                                                 pytest.approx(0.1447650829243631, abs=1e-9)])
    # Holm over the 3 comparisons: 3 * 0.0034, max(2 * 0.0039, that), 1 * 0.625
    assert [c["p_adjusted"] for c in (sl, sm, lm)] == [pytest.approx(3 * 0.00341796875)] * 2 + [pytest.approx(0.625)]
    assert [c["verdict"] for c in (sl, sm, lm)] == ["higher", "higher", "not told apart"]
    answer = pairs["answer"]
    assert (answer["student"], answer["runner_up"], answer["told_apart"], answer["comparisons_tested"]) == \
        ("small", "mid", True, True)
    assert answer["text"] == (f"Best pair: small with {QWEN}: 52.5% on test, +4.1 points [+1.2, +7.0] over its "
                              "baseline; told apart from the runner-up, mid alone (30.0%): +22.5 points [+3.5, "
                              "+38.5], Holm p = 0.010.")
    md = render_pairs_md(pairs)
    assert (f"- small with {QWEN} (52.5%) against large alone (25.0%): +27.5 points [+5.2, +48.9], p = 0.003 "
            "(Holm 0.010; exact McNemar, n = 40): small's final is higher.") in md
    assert "- large alone (25.0%) against mid alone (30.0%): -5.0 points [-23.4, +14.5], p = 0.625 (Holm 0.625; " \
           "exact McNemar, n = 40): not told apart." in md
    assert "Holm over the 3 tested comparisons" in md and "the best pair is a selection on test" in md
    assert "reaches" not in md and NOT_TESTED not in md
    assert json.loads(json.dumps(pairs)) == pairs


def test_a_final_with_seeds_is_tested_as_a_multi_seed_delta_is(reports):
    second = "1" * 9 + "1" * 11 + "0" * 20  # a second seed: 20 of 40
    answers = {"small": {"baseline": None, "teachers": {QWEN: _runs(SMALL, second)}},
               "large": {"baseline": _runs(LARGE), "teachers": {}}}
    [c] = build_pairs(_literal(reports, 41 / 80), answers)["answer"]["comparisons"]
    assert (c["test"], c["runs"], c["difference"]) == (HULL_TEST, [2, 1], pytest.approx(41 / 80 - 0.25))
    assert c["interval"].startswith("hull: two-level bootstrap") and c["ci95"][0] > 0 and c["p_value"] < 0.01
    assert c["verdict"] == "higher"


def test_two_finals_with_as_many_problems_each_way_are_not_told_apart(reports):
    tie_small, tie_large = "1" * 7 + "111" + "000" + "0" * 27, "1" * 7 + "000" + "111" + "0" * 27  # 3 and 3
    answers = {"small": {"baseline": None, "teachers": {QWEN: _runs(tie_small)}},
               "large": {"baseline": _runs(tie_large), "teachers": {}}}
    pairs = build_pairs(_literal(reports, 10 / 40), answers)
    [c] = pairs["answer"]["comparisons"]
    # scipy 1.17.1: binomtest(3, 6).pvalue = 1.0; corners over binomtest(3, 6) and binomtest(6, 40)'s exact CIs
    assert (c["difference"], c["p_value"], c["p_adjusted"], c["verdict"]) == (0.0, 1.0, 1.0, "not told apart")
    assert c["ci95"] == [pytest.approx(-0.22787147450675221, abs=1e-9), pytest.approx(0.22787147450675221, abs=1e-9)]
    assert c["reaches"] is True  # the point estimate, kept in report.json; the text says what the test says
    answer = pairs["answer"]
    assert (answer["student"], answer["tied_with"], answer["told_apart"]) == ("small", ["large"], False)
    assert answer["text"].endswith("(tied with large); not told apart from the runner-up, large alone (25.0%): "
                                   "+0.0 points [-22.8, +22.8], Holm p = 1.000.")


def test_finals_on_other_problems_or_without_answers_are_not_tested_and_say_why(reports):
    literal = _literal(reports, 21 / 40)
    small = {"baseline": None, "teachers": {QWEN: _runs(SMALL)}}
    other = {"small": small, "large": {"baseline": _runs(LARGE, ids=[*IDS[:-1], "q99"]), "teachers": {}}}
    pairs = build_pairs(literal, other)
    [c] = pairs["answer"]["comparisons"]
    assert (c["same_test_problems"], c["p_value"], c["verdict"], c["ci95"]) == (False, None, None, None)
    assert c["test"] == "not comparable: the finals answer other test problems (39 shared of 40 and 40)"
    assert pairs["answer"]["told_apart"] is None and pairs["answer"]["text"].endswith(
        "; against the runner-up, large alone (25.0%): not comparable: the finals answer other test problems (39 "
        "shared of 40 and 40).")
    assert "- small with " + QWEN + " (52.5%) against large alone (25.0%): +27.5 points, not comparable" in \
        render_pairs_md(pairs)
    [c] = build_pairs(literal, {"small": small})["answer"]["comparisons"]
    assert c["test"] == "not tested: large: its baseline's test rows not read" and c["p_value"] is None
    wrong = {"small": {"baseline": None, "teachers": {QWEN: _runs(LARGE)}}, "large": other["large"]}
    [c] = build_pairs(literal, wrong)["answer"]["comparisons"]
    assert c["test"] == (f"not tested: small: final/{QWEN}.json scores 25.0%, not its final 52.5%: render the "
                         "student's report again")
    moved = copy.deepcopy(literal)
    moved["large"]["splits"]["fingerprint"] = "another-split"
    [c] = build_pairs(moved, {"small": small, "large": {"baseline": _runs(LARGE), "teachers": {}}})[
        "answer"]["comparisons"]
    assert c["test"].startswith("not comparable: the students' split fingerprints differ") and c["p_value"] is None


def _rewrite(sub: Path, base: str, finals: dict[str, list[str]]) -> None:
    """A student run's baseline test rows and confirmations as the search writes them: the rows (eval_rows,
    write_rows) and baseline.json's test entry (EvalResult.summary) of `base`; final/<teacher>.json (a FinalRecord
    with stats.compare_seeds' numbers, as confirm.py builds it) of each teacher's seeds; then report.json again."""
    from cotgap_ray.engines.base import Generation
    from cotgap_ray.evaluation.scoring import eval_rows, result_from_rows, write_rows
    from cotgap_ray.records import FinalRecord, Problem, SeedRecord, write_json
    from cotgap_ray.stats import compare_seeds

    problems = [Problem(pid, f"question {pid}", "1", "test") for pid in IDS]
    rows = eval_rows(problems, [[Generation(f"The answer is {'1' if c == '1' else '2'}.", 5)] for c in base],
                     "student", None)
    write_rows(rows, sub / "cache" / "rows.parquet")
    result = result_from_rows(rows, "student", None, "test", "hf", 1.0)
    result.rows_path = str(sub / "cache" / "rows.parquet")
    saved = json.loads((sub / "baseline.json").read_text())
    write_json(sub / "baseline.json", saved | {"test": result.summary()})
    for teacher, seeds in finals.items():
        before, afters = _bits(base), [_bits(s) for s in seeds]
        st = compare_seeds(before, afters)
        write_json(sub / "final" / f"{teacher}.json", FinalRecord(
            teacher=teacher, spec=f"packaged:{teacher}", trial_id="t0", best_dev_delta=0.05,
            seeds=[SeedRecord(seed=i, test_accuracy=sum(a) / len(a)) for i, a in enumerate(afters)], n=st["n"],
            test_accuracy=st["after_accuracy"], baseline_test_accuracy=st["before_accuracy"], delta=st["delta"],
            delta_ci95=st["ci95"], p_value=st["p_value"], discordance=st["discordance"], degrades=st["degrades"],
            improves=st["improves"], test=st["test"], interval=st["interval"],
            training_variance=st["training_variance"], test_problem_ids=IDS, baseline_test_correct=before,
            test_correct_by_seed=afters))
    report.render(sub)


def _pairs_parent(tmp_path):
    """A two-student run's parent directory (its config.json and students/), and the two student specs."""
    parent = tmp_path / "run"
    specs = ["packaged:smollm2-135m-instruct", "packaged:qwen2.5-0.5b-instruct"]
    (parent / "students").mkdir(parents=True)
    (parent / "config.json").write_text(json.dumps({"fingerprint": "x", "config": {"name": "pairs",
                                                                                   "students": specs}}))
    return parent, specs


def test_render_pairs_tests_the_finals_from_the_students_files(tmp_path):
    from cotgap_ray.report_pairs import render_pairs

    parent, specs = _pairs_parent(tmp_path)
    cell = [(f"packaged:{QWEN}", 0.62, 0.05, (0.0, [-0.05, 0.05], 0.5))]  # replaced by _rewrite's confirmation
    student_run(parent / "students", "small", specs[0], 0.225, cell)
    student_run(parent / "students", "large", specs[1], 0.25, cell)
    _rewrite(parent / "students" / "small", "1" * 9 + "0" * 31, {QWEN: [SMALL]})  # 9 -> 21 of 40: improves
    _rewrite(parent / "students" / "large", LARGE, {QWEN: ["0" * 40]})  # 10 -> 0: degrades, so large is alone
    r = render_pairs(parent)
    small, large = r["pairs"]["students"]
    assert (small["teacher"], small["final_test_accuracy"], large["teacher"], large["final_test_accuracy"]) == \
        (QWEN, 21 / 40, None, 10 / 40)
    [c] = json.loads((parent / "report.json").read_text())["answer"]["comparisons"]
    assert (c["lower_baseline"], c["test"], c["verdict"]) == ("small", "exact McNemar", "higher")
    assert c["p_value"] == pytest.approx(0.00341796875, abs=1e-15)  # the literal test above: the same 12 and 1
    md = (parent / "report.md").read_text()
    assert (f"- small with {QWEN} (52.5%) against large alone (25.0%): +27.5 points [+5.2, +48.9], p = 0.003 "
            "(Holm 0.003; exact McNemar, n = 40): small's final is higher.") in md
    assert "told apart from the runner-up, large alone (25.0%): +27.5 points [+5.2, +48.9], Holm p = 0.003." in md
    (parent / "students" / "large" / "cache" / "rows.parquet").unlink()  # the evaluation cache cleared since
    [c] = render_pairs(parent)["answer"]["comparisons"]
    assert c["test"].startswith("not tested: large: its baseline's test rows, named by ") and c["p_value"] is None
    assert "rows.parquet" in c["test"]  # the error names the file that is gone


def test_render_pairs_on_runs_that_kept_no_per_problem_answers_gives_point_estimates(tmp_path):
    from cotgap_ray.report_pairs import render_pairs

    parent, specs = _pairs_parent(tmp_path)
    # finals written before test_correct_by_seed existed; baseline.json's rows_path names no file
    student_run(parent / "students", "small", specs[0], 0.20, [(f"packaged:{QWEN}", 0.62, 0.05,
                                                                (0.08, [0.02, 0.14], 0.01))])
    student_run(parent / "students", "large", specs[1], 0.25, [(f"packaged:{QWEN}", 0.62, 0.0,
                                                                (-0.01, [-0.05, 0.03], 0.6))])
    own = student_answers(parent / "students" / "small")
    assert own["teachers"] == {QWEN: {"missing": f"{QWEN}.json keeps no per-problem answers (written before they "
                                                 "were kept)"}}
    assert own["baseline"]["missing"].startswith("its baseline's test rows, named by ")
    r = render_pairs(parent)
    [c] = r["answer"]["comparisons"]
    assert (c["test"], r["answer"]["comparisons_tested"]) == (NOT_TESTED, False)
    assert r["answer"]["text"].endswith("; the students are compared by point estimates, not tested.")
