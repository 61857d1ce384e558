"""report.py against literal run directories: the recommendation rule, teacher ordering, report.md, plots and the CLI.

No Ray, no model: each test writes the files a search would have written into tmp_path and renders them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cotgap_ray import report, report_cli

QWEN, GEMMA, SMOL = "qwen2.5-coder-0.5b-instruct", "gemma3-270m", "smollm2-135m-instruct"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _params(teacher: str, **over) -> dict:
    p = {"teacher": f"packaged:{teacher}", "filters": "correct", "lora.rank": 8, "lora.alpha_ratio": 2.0,
         "lora.learning_rate": 0.0003, "lora.epochs": 2}
    return {**p, **over}


def _trial(tid: str, teacher: str, status: str, dev_delta: float | None, finished_at: float, epochs_run: int = 2,
           train_seconds: float = 30.0, seconds: float = 40.0, **over) -> dict:
    epochs = [{"epoch": e, "train_loss": 1.0 / (e + 1), "dev_accuracy": 0.2, "dev_delta": dev_delta,
               "seconds": 10.0, "tokens": 1000} for e in range(epochs_run if status in ("ok", "stopped") else 0)]
    return {"trial_id": tid, "teacher": teacher, "params": _params(teacher, **over), "status": status,
            "error": "boom" if status == "failed" else None, "n_train_examples": 0 if status == "no_data" else 96,
            "epochs": epochs, "dev_accuracy": None if dev_delta is None else 0.2 + dev_delta, "dev_delta": dev_delta,
            "dev_delta_ci95": None if dev_delta is None else [dev_delta - 0.03, dev_delta + 0.03],
            "p_value": None if dev_delta is None else 0.2, "train_tokens": 5000,
            "train_seconds": train_seconds if status in ("ok", "stopped") else 0.0, "seconds": seconds,
            "adapter_dir": None, "finished_at": finished_at}


def _final(teacher: str, trial_id: str, delta: float, ci: list[float], best_dev: float) -> dict:
    return {"teacher": teacher, "spec": f"packaged:{teacher}", "trial_id": trial_id, "params": _params(teacher),
            "best_dev_delta": best_dev,
            "seeds": [{"seed": 0, "test_accuracy": 0.235 + delta, "train_seconds": 25.0, "adapter_dir": "a0"},
                      {"seed": 1, "test_accuracy": 0.235 + delta, "train_seconds": 25.0, "adapter_dir": "a1"}],
            "n": 200, "test_accuracy": 0.235 + delta, "delta": delta, "delta_ci95": ci, "p_value": 0.01,
            "degrades": ci[1] < 0, "improves": ci[0] > 0, "train_seconds": 50.0}


def _proxy(spec: str, acc: float, rank: int, gen_s: float) -> dict:
    return {"spec": spec, "teacher_accuracy": acc, "correct_yield": acc * 0.9, "solved_fraction": acc + 0.1,
            "mean_tokens": 120.0, "student_nll": 1.234, "n_rationales": 400, "generation_seconds": gen_s,
            "generation_tokens": 48000, "rank": rank}


def write_run(run: Path, finals: list[dict] | None, stage: str = "done", proxies: dict | None = None) -> Path:
    """A run directory: three teachers (config order SMOL, GEMMA, QWEN), six trials, baseline 23.5% on test.
    `proxies`: teacher -> fields that replace or extend that teacher's default proxies entry."""
    files = {
        "config.json": {"fingerprint": "cfg123", "config": {
            "name": "gsm-tiny", "student": "packaged:smollm2-135m-instruct",
            "teachers": [f"packaged:{t}" for t in (SMOL, GEMMA, QWEN)],
            "task": {"name": "gsm_symbolic", "n_train": 400, "n_dev": 100, "n_test": 200, "seed": 7},
            "confirm": {"seeds": 2}, "search": {"trials": 6}},
            "teachers": [{"spec": f"packaged:{t}", "name": t} for t in (SMOL, GEMMA, QWEN)]},
        "splits.json": {"fingerprint": "split42", "sizes": {"train": 400, "dev": 100, "test": 200}},
        "baseline.json": {s: {"model": SMOL, "adapter": None, "split": s, "n": n, "correct": c, "accuracy": a,
                              "ci95": ci, "tokens": 9000, "seconds": 12.0, "engine": "hf", "rows_path": f"{s}.parquet"}
                          for s, n, c, a, ci in (("dev", 100, 20, 0.2, [0.133, 0.289]),
                                                 ("test", 200, 47, 0.235, [0.182, 0.298]))},
        "proxies.json": {QWEN: _proxy(f"packaged:{QWEN}", 0.62, 1, 120.0),
                         GEMMA: _proxy(f"packaged:{GEMMA}", 0.15, 2, 80.0),
                         SMOL: _proxy(f"packaged:{SMOL}", 0.05, 3, 60.0)},
        "status.json": {"stage": stage, "notes": ["search budget: 6 trials"]},
        "noise.json": [{"split": s, "n": n, "aa_discordant": 0, "aa_texts_changed": 0, "floor": 0.0,
                        "cross_start_discordant": 1} for s, n in (("dev", 100), ("test", 200))],
    }
    trials = [_trial("t1", QWEN, "ok", 0.05, 1006.0), _trial("t2", QWEN, "stopped", 0.01, 1002.0, epochs_run=1,
                                                               train_seconds=10.0, seconds=15.0),
              _trial("t3", GEMMA, "ok", -0.02, 1003.0), _trial("t4", GEMMA, "failed", None, 1004.0),
              _trial("t5", SMOL, "no_data", None, 1001.0), _trial("t6", SMOL, "no_data", None, 1005.0)]
    for name, fields in (proxies or {}).items():
        files["proxies.json"][name] |= fields
    run.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (run / name).write_text(json.dumps(content))
    for t in trials:
        (run / "trials" / t["trial_id"]).mkdir(parents=True)
        (run / "trials" / t["trial_id"] / "trial.json").write_text(json.dumps(t))
    if finals is not None:
        (run / "final").mkdir()
        for f in finals:
            (run / "final" / f"{f['teacher']}.json").write_text(json.dumps(f))
    return run


def test_complete_run(tmp_path):
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05),
                                       _final(GEMMA, "t3", -0.05, [-0.09, -0.01], -0.02)])
    r = report.render(run)

    rec = r["recommendation"]
    assert rec["teacher"] == QWEN and rec["clear"] is True and rec["delta"] == 0.041
    assert rec["config"] == _params(QWEN)
    assert rec["text"] == (f"Use {QWEN} (chosen on dev: +5.0 points): +4.1 points [+1.2, +7.0] over the student's "
                           f"23.5% on test; {GEMMA} degrades it; {SMOL} gave no usable data.")
    assert [t["name"] for t in r["teachers"]] == [QWEN, GEMMA, SMOL]
    assert [t["verdict"] for t in r["teachers"]] == ["improves", "degrades", "no usable data"]
    qwen, gemma, smol = r["teachers"]
    assert qwen["spec"] == f"packaged:{QWEN}" and qwen["teacher_accuracy"] == 0.62 and qwen["proxy_rank"] == 1
    assert qwen["trial_status_counts"] == {"ok": 1, "no_data": 0, "stopped": 1, "failed": 0}
    assert qwen["best_dev_delta"] == 0.05 and qwen["test_accuracy"] == pytest.approx(0.276)
    assert qwen["cost"] == {"generation_seconds": 120.0, "generation_tokens": 48000,
                            "train_seconds": 30.0 + 10.0 + 50.0, "trials_seconds": 40.0 + 15.0}
    assert gemma["degrades"] is True and gemma["delta_ci95"] == [-0.09, -0.01]
    assert smol["trial_status_counts"]["no_data"] == 2 and smol["best_config"] is None and smol["delta"] is None
    assert r["baseline"] == {"dev": {"accuracy": 0.2, "ci95": [0.133, 0.289], "n": 100},
                             "test": {"accuracy": 0.235, "ci95": [0.182, 0.298], "n": 200}}
    assert r["experiment"] == "gsm-tiny" and r["student"] == "packaged:smollm2-135m-instruct"
    assert r["task"] == {"name": "gsm_symbolic", "seed": 7}
    assert r["splits"] == {"sizes": {"train": 400, "dev": 100, "test": 200}, "fingerprint": "split42"}
    assert [t["trial_id"] for t in r["trials"]] == ["t5", "t2", "t3", "t4", "t6", "t1"]  # by finished_at
    assert r["complete"] is True and r["stage"] == "done" and r["notes"] == ["search budget: 6 trials"]

    assert json.loads((run / "report.json").read_text())["recommendation"]["text"] == rec["text"]
    assert r["plots"] == ["capacity_gap.png", "trials.png", "cost.png"]
    for name in r["plots"]:
        data = (run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    md = (run / "report.md").read_text()
    assert rec["text"] in md.split("## Baseline")[0]  # the answer comes first
    assert "| test | 200 | 23.5% | [18.2%, 29.8%] |" in md and "| dev | 100 | 20.0% | [13.3%, 28.9%] |" in md
    assert "n = 200 problems, seeds [0, 1]" in md and "(capacity_gap.png)" in md
    assert "selected on **dev**" in md and "Sizes train 400, dev 100, test 200" in md
    assert "| t2 | qwen2.5-coder-0.5b-instruct | correct | 8 | 2.0 | 0.0003 | 1/2 | stopped | 96 | +1.0 | 15 |" in md
    assert "test p (adj.)" in md  # the one test; dev's figures are the selection's (test_dev_figures_...)


def test_dev_figures_are_labelled_as_the_selection_not_as_evidence(tmp_path):
    """Issue 33 point 4: ASHA, TPE and the final pick all use dev, so a dev p-value is no test. report.md shows no
    dev p column, labels the trials' dev deltas as the selection's and says under the tables that test is the only
    evidence; report.json keeps the raw dev numbers."""
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05)])
    r = report.render(run)
    md = (run / "report.md").read_text()
    assert "dev p" not in md and "McNemar" not in md.split("## Trials")[1]
    trials = md.split("## Trials")[1].split("## Cost per teacher")[0]
    assert "| dev delta (selection) | seconds |" in trials
    sentence = ("Dev figures are selection figures, not evidence: ASHA stopped trials on them, TPE proposed "
                "configurations from them and the final pick is the highest of them, so they are biased upward; "
                "test is the only evidence.")
    assert sentence in trials and sentence in md.split("## Teachers, ranked")[1].split("## Engine noise")[0]
    assert next(t for t in r["trials"] if t["trial_id"] == "t1")["dev_p_mcnemar"] == 0.2  # raw, in JSON only


def test_every_teacher_degrades(tmp_path):
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", -0.02, [-0.04, -0.005], 0.05),
                                       _final(GEMMA, "t3", -0.05, [-0.09, -0.01], -0.02)])
    rec = report.render(run)["recommendation"]
    assert rec["teacher"] is None and rec["clear"] is False and rec["delta"] is None
    assert rec["text"].startswith("none: every teacher degrades the student (qwen2.5-coder-0.5b-instruct, chosen on "
                                  "dev: +5.0 points: -2.0 points [-4.0, -0.5] over the student's 23.5% on test)")


def test_no_teacher_improves_without_all_degrading(tmp_path):
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", -0.01, [-0.04, 0.02], 0.05),
                                       _final(GEMMA, "t3", -0.05, [-0.09, -0.01], -0.02)])
    rec = report.render(run)["recommendation"]
    assert rec["teacher"] is None
    assert rec["text"].startswith("none: no teacher improves this student") and f"{GEMMA} degrades it" in rec["text"]


def test_positive_delta_with_interval_across_zero_is_not_clear(tmp_path):
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.01, [-0.02, 0.04], 0.05)])
    r = report.render(run)
    rec = r["recommendation"]
    assert rec["teacher"] == QWEN and rec["clear"] is False and rec["delta_ci95"] == [-0.02, 0.04]
    assert rec["text"].startswith(f"Best: {QWEN} (chosen on dev: +5.0 points): +1.0 points [-2.0, +4.0] over the "
                                  "student's 23.5% on test, but the test does not tell it from zero: no teacher "
                                  "clearly improves this student")
    assert r["teachers"][0]["verdict"] == "no clear change"
    assert "no final confirmation for teacher gemma3-270m" in r["notes"]


def test_interrupted_run_during_search(tmp_path):
    run = write_run(tmp_path / "run", finals=None, stage="search")
    r = report.render(run)
    assert r["complete"] is False and r["stage"] == "search"
    rec = r["recommendation"]
    assert rec["teacher"] is None and rec["config"] is None
    assert rec["text"] == (f"No recommendation yet: {QWEN} was chosen on dev: +5.0 points, and the run has not "
                           f"confirmed it on the test split; {SMOL} gave no usable data; {GEMMA} is not confirmed "
                           "(provisional: the run stopped at stage 'search').")
    # unconfirmed teachers keep the proxies' order; the best dev trial is still shown
    assert [(t["name"], t["verdict"]) for t in r["teachers"]] == [
        (QWEN, "not confirmed"), (GEMMA, "not confirmed"), (SMOL, "no usable data")]
    assert r["teachers"][0]["best_dev_delta"] == 0.05 and r["teachers"][0]["best_trial_id"] == "t1"
    assert any(n.startswith("no final/*.json") for n in r["notes"])
    assert r["plots"] == ["trials.png", "cost.png"]  # no confirmed delta: no capacity-gap plot
    assert not (run / "capacity_gap.png").exists()


def test_interrupted_during_confirmation_is_provisional(tmp_path):
    run = write_run(tmp_path / "run", [_final(GEMMA, "t3", -0.05, [-0.09, -0.01], -0.02)], stage="confirm")
    r = report.render(run)
    assert r["complete"] is False and r["recommendation"]["teacher"] is None
    # The teacher chosen on dev (QWEN, +5.0) is not confirmed yet: no answer, and GEMMA's confirmed harm is said.
    assert r["recommendation"]["text"] == (
        f"No recommendation yet: {QWEN} was chosen on dev: +5.0 points, and the run has not confirmed it on the test "
        f"split; {GEMMA} degrades it; {SMOL} gave no usable data (provisional: the run stopped at stage 'confirm').")


def test_run_with_only_a_config(tmp_path):
    run = write_run(tmp_path / "run", finals=None)
    for name in ("splits.json", "baseline.json", "proxies.json", "status.json"):
        (run / name).unlink()
    for trial in run.glob("trials/*/trial.json"):
        trial.unlink()
    r = report.render(run)
    assert r["baseline"] == {} and r["plots"] == [] and r["stage"] is None
    assert [t["name"] for t in r["teachers"]] == [SMOL, GEMMA, QWEN]  # config order when nothing ranks them
    assert "missing baseline.json: the baseline stage did not finish" in r["notes"]
    assert "none (no data to plot)" in (run / "report.md").read_text()


def test_cli_prints_recommendation_and_paths(tmp_path, capsys):
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05)])
    assert report_cli.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Use {QWEN} (chosen on dev: +5.0 points): +4.1 points")
    assert f"wrote {run / 'report.json'}" in out and f"wrote {run / 'capacity_gap.png'}" in out
    assert report_cli.main([str(run), "--json"]) == 0  # --json: report.json alone, on stdout
    printed = json.loads(capsys.readouterr().out)
    assert printed["recommendation"]["teacher"] == QWEN and printed == json.loads((run / "report.json").read_text())


def test_cli_on_a_non_run_directory_exits_2(tmp_path):
    not_a_run = tmp_path / "somewhere"
    not_a_run.mkdir()
    proc = subprocess.run([sys.executable, "-m", "cotgap_ray.report_cli", str(not_a_run)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{not_a_run} is not a run directory: it holds no config.json" in proc.stderr
    assert not (not_a_run / "report.json").exists()


def test_power_section_uses_the_discordance_the_run_measured(tmp_path):
    """MDE per split from the run's own discordance: dev from the trials, test from the confirmations (dev's until
    then); literal values from stats.min_detectable_effect (n=200 at 20% discordance: 9.5 points)."""
    run = write_run(tmp_path / "run", None, stage="search")
    for i, path in enumerate(sorted(run.glob("trials/*/trial.json"))):
        t = json.loads(path.read_text())
        t["dev_discordance"] = [0.1, 0.2, 0.3][i % 3] if t["status"] in ("ok", "stopped") else None
        path.write_text(json.dumps(t))
    r = report.render(run)
    assert r["power"]["dev"] == {"n": 100, "discordance": 0.2, "discordance_from": "dev", "mde": 0.13}
    assert r["power"]["test"] == {"n": 200, "discordance": 0.2, "discordance_from": "dev", "mde": 0.095}
    md = (run / "report.md").read_text()
    assert "What these splits can detect" in md and "9.5 points" in md and "20.0% (from dev)" in md


def _with_p(final: dict, p: float) -> dict:
    return {**final, "p_value": p}


def test_the_answer_is_chosen_on_dev_and_only_confirmed_on_test(tmp_path):
    """The issue's case: A = +5.0 [-1, +11] on test but -3 on dev; B = +4.0 [+1, +7] on test and +10 on dev. The
    search chose B on dev: B is the answer, A's larger test delta does not promote it, and the table agrees."""
    run = write_run(tmp_path / "run", None)
    for tid, delta in (("t1", 0.10), ("t3", -0.03)):  # QWEN (B) best dev +10, GEMMA (A) best dev -3
        path = run / "trials" / tid / "trial.json"
        trial = json.loads(path.read_text())
        path.write_text(json.dumps({**trial, "dev_delta": delta}))
    (run / "final").mkdir()
    for f in (_with_p(_final(QWEN, "t1", 0.04, [0.01, 0.07], 0.10), 0.004),
              _with_p(_final(GEMMA, "t3", 0.05, [-0.01, 0.11], -0.03), 0.2)):
        (run / "final" / f"{f['teacher']}.json").write_text(json.dumps(f))
    r = report.render(run)
    rec = r["recommendation"]
    assert rec["teacher"] == QWEN and rec["clear"] is True
    assert rec["text"].startswith(f"Use {QWEN} (chosen on dev: +10.0 points): +4.0 points [+1.0, +7.0]")
    assert [(t["name"], t["verdict"]) for t in r["teachers"]][:2] == [(QWEN, "improves"), (GEMMA, "no clear change")]
    assert r["teachers"][0]["p_adjusted"] == pytest.approx(0.004)  # the primary hypothesis: its own p, at alpha
    assert r["teachers"][1]["p_adjusted"] == pytest.approx(0.2)  # a secondary family of one
    assert [t["hypothesis"] for t in r["teachers"][:2]] == ["primary", "secondary"]
    assert r["selection"]["split"] == "dev"


@pytest.mark.parametrize("ranks, chosen", [({QWEN: 1, GEMMA: 2}, QWEN), ({QWEN: 2, GEMMA: 1}, GEMMA),
                                            ({QWEN: None, GEMMA: None}, GEMMA)])
def test_a_tie_on_dev_goes_to_the_better_proxy_rank_then_config_order(tmp_path, ranks, chosen):
    """Issue 33's fresh `make run`: both teachers' best trials scored +0.0 on dev, the stated rule was "ties: fewer
    training tokens", yet the teacher with 90 training examples was chosen over the one with 6 (by proxy rank in the
    recommendation, by config order in the primary hypothesis). Here QWEN trained on 15 times GEMMA's tokens and
    comes after it in config order (SMOL, GEMMA, QWEN): the better proxy rank wins the tie, config order only
    without ranks, and the recommendation, the primary hypothesis, the table and the stated rule all agree."""
    run = write_run(tmp_path / "run", None, proxies={name: {"rank": rank} for name, rank in ranks.items()})
    for tid, delta, tokens in (("t1", 0.0, 90_000), ("t2", -0.01, 90_000), ("t3", 0.0, 6_000)):
        path = run / "trials" / tid / "trial.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "dev_delta": delta, "train_tokens": tokens}))
    (run / "final").mkdir()
    for f in (_final(QWEN, "t1", 0.04, [0.01, 0.07], 0.0), _final(GEMMA, "t3", 0.04, [0.01, 0.07], 0.0)):
        (run / "final" / f"{f['teacher']}.json").write_text(json.dumps(_with_p(f, 0.004)))
    r = report.render(run)
    rows = {t["name"]: t for t in r["teachers"]}
    assert rows[QWEN]["best_dev_delta"] == rows[GEMMA]["best_dev_delta"] == 0.0
    assert r["recommendation"]["teacher"] == chosen and r["teachers"][0]["name"] == chosen
    assert [t["name"] for t in r["teachers"] if t["hypothesis"] == "primary"] == [chosen]
    assert r["selection"]["rule"] == report.SELECTION_RULE
    assert ("ties: fewer training tokens, then the first trial directory by name; ties between teachers: the better "
            "proxy rank (the search's prior), then config order") in r["selection"]["rule"]
    md = (run / "report.md").read_text()
    assert ("ties between teachers: the better proxy rank, then config order. The first row that is not a control "
            "is the teacher chosen") in md


def test_the_other_teachers_are_holm_adjusted_among_themselves(tmp_path):
    """QWEN is chosen on dev (+5) and is the primary hypothesis: raw p 0.03 with an interval above zero "improves".
    GEMMA and SMOL are the secondary family: raw p 0.03 and 0.04 become 0.06 and 0.06 under Holm, no verdict."""
    smol = {**_with_p(_final(SMOL, "t5", 0.02, [0.001, 0.04], -0.03), 0.03)}
    run = write_run(tmp_path / "run", [_with_p(_final(QWEN, "t1", 0.03, [0.001, 0.06], 0.05), 0.03),
                                       _with_p(_final(GEMMA, "t3", 0.02, [0.001, 0.04], -0.02), 0.04), smol])
    r = report.render(run)
    rows = {t["name"]: t for t in r["teachers"]}
    assert rows[QWEN]["hypothesis"] == "primary" and rows[QWEN]["p_adjusted"] == pytest.approx(0.03)
    assert rows[QWEN]["verdict"] == "improves" and r["recommendation"]["clear"] is True
    assert (rows[GEMMA]["p_adjusted"], rows[SMOL]["p_adjusted"]) == (pytest.approx(0.06), pytest.approx(0.06))
    assert rows[GEMMA]["verdict"] == rows[SMOL]["verdict"] == "no clear change"
    assert {rows[GEMMA]["hypothesis"], rows[SMOL]["hypothesis"]} == {"secondary"}


def _mcnemar(b: int, c: int, n: int) -> tuple[float, float, float]:
    """(exact McNemar p, interval low, high) of an adapter right on c problems the baseline missed and wrong on b it
    got, of n: what the confirmation computes (stats)."""
    from cotgap_ray import stats

    rest = [False] * (n - b - c)
    p = stats.mcnemar_exact_p([True] * b + [False] * c + rest, [False] * b + [True] * c + rest)
    return (p, *stats.mcnemar_interval(b, c, n))


@pytest.mark.parametrize("n_teachers", [1, 2, 3])
def test_the_answers_verdict_does_not_depend_on_how_many_teachers_were_confirmed(tmp_path, n_teachers):
    """Issue 33 point 6: b = 2, c = 11 of 200 (exact McNemar p = 0.0225, interval above zero) for the teacher chosen
    on dev. Under Holm across all confirmed teachers it was "improves" with one teacher confirmed and "no clear
    change" with three; as the primary hypothesis it is "improves" however many others were confirmed."""
    b, c, n = 2, 11, 200
    p, lo, hi = _mcnemar(b, c, n)
    assert p == pytest.approx(2 * (1 + 13 + 78) / 2**13)  # 2 P(X <= 2), X ~ binomial(13, 1/2): 0.0225
    assert lo > 0
    others = [_with_p(_final(t, tid, 0.0, [-0.03, 0.03], -0.01), 1.0) for t, tid in ((GEMMA, "t3"), (SMOL, "t5"))]
    chosen = _with_p(_final(QWEN, "t1", (c - b) / n, [lo, hi], 0.05), p)
    run = write_run(tmp_path / "run", [chosen, *others[:n_teachers - 1]])
    row = report.render(run)["teachers"][0]
    assert row["name"] == QWEN and row["verdict"] == "improves" and row["p_adjusted"] == pytest.approx(p)


def test_one_seed_says_training_variance_was_not_measured(tmp_path):
    final = _final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05)
    final = {**final, "seeds": final["seeds"][:1], "test": "exact McNemar",
             "training_variance": "not measured (one seed)"}
    r = report.render(write_run(tmp_path / "run", [final]))
    assert r["training_variance"] == "not measured (one seed per confirmation)"
    assert "Training-seed variance: not measured (one seed per confirmation)" in (tmp_path / "run" / "report.md").read_text()


def test_a_trial_record_off_its_schema_is_named_not_used(tmp_path):
    run = write_run(tmp_path / "run", None, stage="search")
    path = run / "trials" / "t1" / "trial.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "dev_delta": "high"}))
    r = report.render(run)
    assert "t1" not in [t["trial_id"] for t in r["trials"]]
    assert any(str(path) in n and "dev_delta must be float" in n for n in r["notes"])


def _noise(test: dict, dev: dict | None = None) -> list[dict]:
    """noise.json's entries: one engine's A/A record per split (fields as search/noise.py writes them)."""
    base = {"n": 100, "aa_discordant": 0, "aa_texts_changed": 0, "floor": 0.0, "cross_start_discordant": None}
    return [{**base, "split": "dev", **(dev or {})}, {**base, "split": "test", "n": 200, **test}]


def test_a_significant_delta_is_not_discarded_by_the_engine_noise(tmp_path):
    """Issue 33 point 5: b = 2, c = 12 of 200 (exact McNemar p = 0.013, interval above zero) beside an A/A floor of
    10 flips of 200 (5.0%). The old rule gave "within engine noise" because |delta| = 5.0 points <= the floor, yet 10
    symmetric random flips move the net by 10 with chance 2/1024, and McNemar already counts symmetric flips: the
    verdict is the test's, "improves"."""
    b, c, n = 2, 12, 200
    p, lo, hi = _mcnemar(b, c, n)
    assert p == pytest.approx(2 * (1 + 14 + 91) / 2**14)  # 2 P(X <= 2), X ~ binomial(14, 1/2): 0.0129
    assert lo > 0
    run = write_run(tmp_path / "run", [_with_p(_final(QWEN, "t1", (c - b) / n, [lo, hi], 0.05), p)])
    (run / "noise.json").write_text(json.dumps(_noise({"aa_discordant": 10, "aa_only_first": 5, "aa_only_again": 5,
                                                        "aa_texts_changed": 14, "floor": 0.05})))
    r = report.render(run)
    assert r["teachers"][0]["verdict"] == "improves" and r["teachers"][0]["improves"] is True
    assert r["recommendation"]["clear"] is True
    assert r["recommendation"]["text"].startswith(f"Use {QWEN} (chosen on dev: +5.0 points): +5.0 points [+0.6, +11.1]")
    md = (run / "report.md").read_text()
    assert "within engine noise" not in md and "| test | 200 | 10 (5 / 5) | 14 | 5.0% |" in md


def test_the_engine_noise_is_still_shown_as_information(tmp_path):
    """noise.json's A/A counts, the largest floor when several engines measured one, stay in report.json and
    report.md; a run from before the flips were split by direction renders as before. GEMMA's -5.0 [-9.0, -1.0]
    degrades whatever the floor (4.5%) says."""
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05),
                                       _final(GEMMA, "t3", -0.05, [-0.09, -0.01], -0.02)])
    noise = [{"split": "dev", "n": 100, "aa_discordant": 1, "aa_texts_changed": 3, "floor": 0.01,
              "cross_start_discordant": 4},
             {"split": "test", "n": 200, "aa_discordant": 9, "aa_texts_changed": 20, "floor": 0.045,
              "cross_start_discordant": 11},
             {"split": "test", "n": 200, "aa_discordant": 2, "aa_texts_changed": 5, "floor": 0.01,
              "cross_start_discordant": None}]  # a resumed run's second engine start: the larger floor is shown
    (run / "noise.json").write_text(json.dumps(noise))
    r = report.render(run)
    assert r["noise_floor"]["test"]["floor"] == 0.045 and r["noise_floor"]["dev"]["aa_discordant"] == 1
    assert r["noise_floor"]["test"]["aa_only_first"] is None  # not counted by that run
    assert {t["name"]: t["verdict"] for t in r["teachers"]} == {QWEN: "improves", GEMMA: "degrades",
                                                                SMOL: "no usable data"}
    md = (run / "report.md").read_text()
    assert "## Engine noise (A/A)" in md and "| test | 200 | 9 | 20 | 4.5% | 11 differ |" in md
    assert "Information, not a threshold" in md and not [n for n in r["notes"] if "engine noise" in n]


def test_engine_noise_that_leans_one_way_is_warned_of_not_acted_on(tmp_path):
    """The McNemar test counts engine noise as symmetric, which two scorings of one model are by design. 9 A/A flips
    all one way (0 right only the first time, 9 only the second: sign test p = 2/512 = 0.0039) say the engine's
    scorings differ systematically: a warning in the notes and beside the table, the verdict unchanged. 4 / 5 is no
    lean. The engine's flips (4.5%) against the adapters' median test discordance (9.0%) are said too."""
    finals = [{**_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05), "discordance": 0.09}]
    run = write_run(tmp_path / "run", finals)
    (run / "noise.json").write_text(json.dumps(_noise({"aa_discordant": 9, "aa_only_first": 0, "aa_only_again": 9,
                                                        "aa_texts_changed": 20, "floor": 0.045},
                                                       {"aa_discordant": 9, "aa_only_first": 4, "aa_only_again": 5,
                                                        "floor": 0.09})))
    r = report.render(run)
    assert r["teachers"][0]["verdict"] == "improves"
    warned = [n for n in r["notes"] if n.startswith("engine noise on")]
    assert warned == report.noise_warnings(r["noise_floor"]) and len(warned) == 1  # dev's 4 / 5: no warning
    assert warned[0].startswith("engine noise on test is not symmetric")
    assert "0 were right only the first time and 9 only the second (exact sign test p = 0.00391)" in warned[0]
    md = (run / "report.md").read_text()
    section = md.split("## Engine noise (A/A)")[1].split("## What these splits can detect")[0]
    assert "| test | 200 | 9 (0 / 9) | 20 | 4.5% | n/a |" in section and "| dev | 100 | 9 (4 / 5) |" in section
    assert f"- **{warned[0]}**" in section
    assert ("On test the engine alone changed 4.5% of problems and an adapter 9.0% (median): engine noise alone would "
            "account for about 50% of an adapter's discordant pairs.") in section


def test_the_noise_record_counts_each_direction_of_the_a_a_flips():
    """search/noise.py's record, which the report reads: of 4 problems, p1 is right only the first time, p2 and p3
    only the second, p4 never changes."""
    import pyarrow as pa

    from cotgap_ray.search.noise import noise_record

    def rows(correct):
        return pa.table({"problem_id": ["p1", "p2", "p3", "p4"], "text": ["a", "b", "c", "d"], "correct": correct})

    rec = noise_record("test", rows([True, False, False, True]), rows([False, True, True, True]), None)
    assert (rec["aa_discordant"], rec["aa_only_first"], rec["aa_only_again"], rec["floor"]) == (3, 1, 2, 0.75)
    assert report.noise_floor([rec])["test"]["aa_only_again"] == 2


def test_a_teacher_whose_trials_asha_stopped_is_still_selected(tmp_path):
    """GEMMA's only scored trial was stopped by ASHA at epoch 1 with dev +8.0, above QWEN's finished +5.0: the stopped
    trial keeps its last dev result and stays eligible, so GEMMA is the teacher chosen on dev."""
    run = write_run(tmp_path / "run", None, stage="confirm")
    path = run / "trials" / "t3" / "trial.json"
    trial = json.loads(path.read_text())
    trial["epochs"] = trial["epochs"][:1]
    path.write_text(json.dumps({**trial, "status": "stopped", "dev_delta": 0.08}))
    r = report.render(run)
    assert r["teachers"][0]["name"] == GEMMA and r["teachers"][0]["best_trial_id"] == "t3"
    assert r["recommendation"]["text"].startswith(f"No recommendation yet: {GEMMA} was chosen on dev: +8.0 points")


def test_the_sentence_names_the_baseline_the_delta_was_measured_against(tmp_path):
    """Deltas pair the evaluation engine's own baseline rows; when its accuracy (22.0%) differs from the baseline
    stage's (23.5%, another engine start), the sentence must name the one the delta is over."""
    finals = [{**_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05), "baseline_test_accuracy": 0.22}]
    run = write_run(tmp_path / "run", finals)
    noise = json.loads((run / "noise.json").read_text())
    (run / "noise.json").write_text(json.dumps([{**e, "accuracy": 0.22 if e["split"] == "test" else 0.2}
                                                for e in noise]))
    r = report.render(run)
    assert "over the student's 22.0% on test" in r["recommendation"]["text"]
    assert r["engine_baseline"] == {"dev": 0.2, "test": 0.22}
    assert "| test | 200 | 23.5% | [18.2%, 29.8%] | 22.0% |" in (run / "report.md").read_text()


def test_a_teacher_cut_by_its_token_budget_is_said_next_to_its_numbers(tmp_path):
    """Issue 33 point 12: 283 of QWEN's 320 rationales stopped at generation.max_tokens=128; the report gives every
    teacher's cut share in the teachers table and the warning beside it and in the notes."""
    from cotgap_ray.proxies import truncation_warning

    cut = {"n_rationales": 320, "max_tokens": 128, "mean_tokens": 124.1}
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05)], proxies={
        QWEN: cut | {"truncated_rows": 283, "truncated_fraction": 283 / 320, "teacher_accuracy": 0.038},
        GEMMA: cut | {"truncated_rows": 8, "truncated_fraction": 8 / 320}})  # SMOL: an entry without the counts
    r = report.render(run)
    qwen = next(t for t in r["teachers"] if t["name"] == QWEN)
    warning = truncation_warning(QWEN, qwen["proxies"])
    assert warning.startswith(f"teacher {QWEN}: 283 of 320 rationales stopped at generation.max_tokens=128")
    assert qwen["truncated_fraction"] == 283 / 320 and qwen["truncation_warning"] == warning
    assert [n for n in r["notes"] if "generation.max_tokens" in n] == [warning]  # only QWEN's share is large
    assert json.loads((run / "report.json").read_text())["notes"] == r["notes"]
    md = (run / "report.md").read_text()
    assert "| teacher | teacher acc. | cut at max_tokens | correct yield |" in md
    assert f"| {QWEN} | 3.8% | 88.4% |" in md and f"| {GEMMA} | 15.0% | 2.5% |" in md
    assert f"| {SMOL} | 5.0% | n/a |" in md
    teachers = md.split("## Teachers, ranked")[1].split("## Engine noise (A/A)")[0]
    assert f"- {warning}" in teachers  # next to the table, not only in the notes at the end
    assert f"- {warning}" in md.split("## Notes")[1]


def test_proxies_from_before_the_cut_was_counted_render_n_a(tmp_path):
    r = report.render(write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05)]))
    assert [t["truncated_fraction"] for t in r["teachers"]] == [None, None, None]
    assert not any(t["truncation_warning"] for t in r["teachers"])
    assert not [n for n in r["notes"] if "max_tokens" in n]
    md = (tmp_path / "run" / "report.md").read_text()
    assert f"| {QWEN} | 62.0% | n/a | 55.8% |" in md and "Token budget" not in md


def test_the_teachers_table_shows_the_local_naturalness_beside_nll_and_rsr(tmp_path):
    run = write_run(tmp_path / "run", [_final(QWEN, "t1", 0.041, [0.012, 0.070], 0.05)],
                    proxies={QWEN: {"student_rsr": 4.5, "student_local_nll": 0.987}})
    report.render(run)
    md = (run / "report.md").read_text()
    assert "| student NLL | student RSR | student local NLL | proxy rank |" in md
    row = next(line for line in md.splitlines() if line.startswith(f"| {QWEN} |"))
    assert "| 1.234 | 4.500 | 0.987 |" in row
    assert "| 1.234 | n/a | n/a |" in next(line for line in md.splitlines() if line.startswith(f"| {SMOL} |"))
    assert "lower local NLL (local naturalness, arXiv 2510.03988" in md
