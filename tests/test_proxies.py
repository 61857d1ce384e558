"""Teacher proxies from literal rationale tables and summaries (pure; no model: where the search would score with the
student, a fake scorer stands in)."""

import pyarrow as pa

import cotgap_ray.proxies as proxies_mod
from cotgap_ray.proxies import (
    base_proxies,
    mean_nll,
    needs_student_scoring,
    nll_sample,
    nll_sample_rows,
    rank_teachers,
    student_proxies,
)
from cotgap_ray.records import RATIONALE_SCHEMA


def _table(correct: list[bool]) -> pa.Table:
    rows = [{"problem_id": f"p{i // 2}", "teacher": "t", "sample_idx": i % 2, "text": "x", "pred": "1",
             "correct": c, "n_tokens": 10} for i, c in enumerate(correct)]
    return pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA)


def _summary(correct_rows: int, pass_at_1: float) -> dict:
    return {"pass_at_1": pass_at_1, "yield_rows": pass_at_1, "yield_problems": pass_at_1, "correct_rows": correct_rows,
            "rows": 100, "mean_tokens": 50.0, "spec": "packaged:x", "tokens": 5000, "generation_wall_s": 12.0}


def test_nll_sample_keeps_only_correct_rows_stably():
    table = _table([True, False] * 10)
    sample = nll_sample(table, 4)
    assert sample.num_rows == 4 and all(sample["correct"].to_pylist())
    assert nll_sample(table, 4).equals(sample)  # the same rows every time
    assert nll_sample(table, 100).num_rows == 10
    rows = nll_sample_rows(table, 4)  # the same rows, as indices into the table (what the local NLL is computed on)
    assert len(rows) == 4 and rows == sorted(rows) and all(i % 2 == 0 for i in rows)
    assert table.take(rows).equals(sample) and nll_sample_rows(table, 100) == list(range(0, 20, 2))


def test_rank_prefers_more_correct_data_then_accuracy_then_lower_nll():
    proxies = {"big": base_proxies(_summary(80, 0.8)), "small": base_proxies(_summary(10, 0.1)),
               "tie_low_nll": base_proxies(_summary(80, 0.8)) | {"student_nll": 1.0}}
    proxies["big"]["student_nll"] = 2.0
    assert rank_teachers(proxies) == ["tie_low_nll", "big", "small"]
    assert proxies["small"]["rank"] == 3 and proxies["small"]["generation_seconds"] == 12.0


def test_mean_nll_ignores_nan_and_none():
    assert mean_nll([1.0, float("nan"), None, 3.0]) == 2.0
    assert mean_nll([float("nan")]) is None


def test_student_nll_is_averaged_over_the_same_sample_whether_every_row_or_only_the_sample_was_scored():
    """The search scores every row when a filter chain uses student_nll, else only proxies.nll_sample's rows; the
    proxy must be the mean over the same hash sample either way."""
    import pyarrow as pa

    from cotgap_ray.proxies import mean_nll, nll_sample

    n = 40
    table = pa.table({"problem_id": [f"p{i // 2}" for i in range(n)], "sample_idx": [i % 2 for i in range(n)],
                      "correct": [i % 4 != 0 for i in range(n)]})
    nll = {(p, s): float(i) for i, (p, s) in enumerate(zip(table["problem_id"].to_pylist(),
                                                          table["sample_idx"].to_pylist()))}

    def scored(t):
        return t.append_column("student_nll", pa.array([nll[(p, s)] for p, s in zip(t["problem_id"].to_pylist(),
                                                                                     t["sample_idx"].to_pylist())]))

    every_row = mean_nll(nll_sample(scored(table), 10)["student_nll"].to_pylist())
    sample_only = mean_nll(nll_sample(scored(nll_sample(table, 10)), 10)["student_nll"].to_pylist())
    first_rows = mean_nll(scored(table).filter(table["correct"])["student_nll"].to_pylist()[:10])
    assert every_row == sample_only and every_row != first_rows  # the old "first N rows" gave another number


def test_student_rsr_is_the_mean_over_the_same_sample_as_student_nll():
    n = 40
    table = _table([i % 4 != 0 for i in range(n)])
    # Row i has NLL i and RSR 100 + i; one sampled row has an undefined RSR (NaN), excluded from the mean only.
    sample_rows = set(nll_sample(table.append_column("i", pa.array(range(n))), 10)["i"].to_pylist())
    nan_row = min(sample_rows)
    scored = table.append_column("student_nll", pa.array([float(i) for i in range(n)])).append_column(
        "student_rsr", pa.array([float("nan") if i == nan_row else 100.0 + i for i in range(n)])).append_column(
        "student_local_nll", pa.array([0.5] * n))
    got = student_proxies(scored, 10)
    assert got["student_nll"] == sum(sample_rows) / 10
    assert got["student_rsr"] == sum(100.0 + i for i in sample_rows - {nan_row}) / 9
    no_correct = _table([False] * 4).append_column("student_nll", pa.array([1.0] * 4)).append_column(
        "student_rsr", pa.array([1.0] * 4)).append_column("student_local_nll", pa.array([1.0] * 4))
    assert student_proxies(no_correct, 10) == {"student_nll": None, "student_rsr": None, "student_local_nll": None}


def test_student_local_nll_is_the_mean_over_the_same_sample_and_does_not_change_the_rank():
    n = 40
    table = _table([i % 4 != 0 for i in range(n)])
    sample_rows = nll_sample_rows(table, 10)
    # Only the sample's rows were given a local NLL (sft.with_student_scores' local_rows): NaN elsewhere.
    local = [200.0 + i if i in sample_rows else float("nan") for i in range(n)]
    scored = (table.append_column("student_nll", pa.array([float(i) for i in range(n)]))
              .append_column("student_rsr", pa.array([1.0] * n)).append_column("student_local_nll", pa.array(local)))
    got = student_proxies(scored, 10)
    assert got["student_local_nll"] == sum(200.0 + i for i in sample_rows) / 10
    assert got["student_nll"] == sum(sample_rows) / 10 and got["student_rsr"] == 1.0
    entry = base_proxies(_summary(80, 0.8))
    assert entry["student_local_nll"] is None and not needs_student_scoring(entry)  # None: computed, undefined
    assert needs_student_scoring({k: v for k, v in entry.items() if k != "student_local_nll"})  # an older run's
    proxies = {"a": entry | {"student_nll": 1.0, "student_local_nll": 9.0},
               "b": base_proxies(_summary(80, 0.8)) | {"student_nll": 2.0, "student_local_nll": 1.0}}
    assert rank_teachers(proxies) == ["a", "b"]  # recorded beside the rank, not ranked on


def test_a_cached_entry_without_student_rsr_needs_scoring_and_rsr_does_not_change_the_rank():
    entry = base_proxies(_summary(80, 0.8))
    assert entry["student_rsr"] is None and not needs_student_scoring(entry)  # None: computed, undefined
    old = {k: v for k, v in entry.items() if k != "student_rsr"}  # a proxies.json written before RSR existed
    assert needs_student_scoring(old) and needs_student_scoring(None)
    proxies = {"a": entry | {"student_nll": 1.0, "student_rsr": 9.0},
               "b": base_proxies(_summary(80, 0.8)) | {"student_nll": 2.0, "student_rsr": 1.0}}
    assert rank_teachers(proxies) == ["a", "b"]  # the rank rule is unchanged: RSR is recorded, not yet ranked on


def test_proxies_stage_rescores_a_cached_teacher_that_lacks_student_rsr(tmp_path, monkeypatch, capsys):
    """proxies.json of an older run: teacher "old" has no student_rsr and is scored again; "new" is cached whole."""
    import json
    from types import SimpleNamespace

    import cotgap_ray.sft as sft
    from cotgap_ray.search import run

    scored_teachers = []

    def fake_scores(table, model, tokenizer, questions, batch_size=8, max_length=None):
        scored_teachers.append(table["teacher"][0].as_py())
        return (table.append_column("student_nll", pa.array([2.0] * table.num_rows))
                .append_column("student_rsr", pa.array([5.0] * table.num_rows))
                .append_column("student_local_nll", pa.array([1.5] * table.num_rows)))

    def fake_task(cfg, student, tables, questions, threads):  # the Ray task's body, in process, the fake scorer
        assert threads == "node"  # a single-student run waits for its proxies: the task takes the whole node
        return {teacher: sft.with_student_scores(table, None, None, questions) for teacher, table in tables.items()}

    monkeypatch.setattr(run, "_score_students", fake_task)
    monkeypatch.setattr(sft, "with_student_scores", fake_scores)
    summary = _summary(10, 0.5)

    def generation(name):
        table = _table([True, False] * 10)
        table = table.set_column(table.column_names.index("teacher"), "teacher", pa.array([name] * table.num_rows))
        return SimpleNamespace(teacher=name, summary=summary, table=lambda: table)

    new_entry = base_proxies(summary) | {"student_nll": 7.0, "student_rsr": 3.0, "student_local_nll": 6.0}
    old_entry = {k: v for k, v in base_proxies(summary).items() if k != "student_rsr"} | {"student_nll": 7.0}
    (tmp_path / "proxies.json").write_text(json.dumps({"old": old_entry, "new": new_entry}))
    cfg = SimpleNamespace(search=SimpleNamespace(filter_chains={}, proxy_rationales=4),
                          lora=SimpleNamespace(max_length=64))
    splits = SimpleNamespace(train=[SimpleNamespace(id=f"p{i}", question="q") for i in range(10)])
    proxies, _ = run.proxies_stage(tmp_path, cfg, SimpleNamespace(path="unused"), splits,
                                   {name: generation(name) for name in ("old", "new")})
    assert scored_teachers == ["old"]
    assert proxies["old"]["student_rsr"] == 5.0 and proxies["old"]["student_nll"] == 2.0
    assert proxies["new"]["student_rsr"] == 3.0 and proxies["new"]["student_nll"] == 7.0  # cached, untouched
    assert proxies["old"]["student_local_nll"] == 1.5 and proxies["new"]["student_local_nll"] == 6.0
    assert json.loads((tmp_path / "proxies.json").read_text())["old"]["student_rsr"] == 5.0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if "teacher" in line and "RSR" in line).split()
    assert header.index("RSR") == header.index("NLL") + 1 and header.index("local") == header.index("RSR") + 1
    old_row = next(line for line in out if " old " in line).split()
    assert old_row[header.index("NLL"):header.index("local") + 1] == ["2.00", "5.00", "1.50"]


# ------------------------------------------------------------- the token budget (issue 33 point 12)

QWEN = "qwen2.5-0.5b-instruct"


def _cut_table(n_tokens: list[int], correct: list[bool]) -> pa.Table:
    rows = [{"problem_id": f"p{i}", "teacher": "t", "sample_idx": 0, "text": "x", "pred": "1", "correct": c,
             "n_tokens": n} for i, (n, c) in enumerate(zip(n_tokens, correct))]
    return pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA)


def _issue_summary() -> dict:
    """The issue's case: 320 train rationales, 283 of them at generation.max_tokens=128, mean 124 tokens, accuracy
    3.8% (12 correct rationales, all among the 37 that ended)."""
    from cotgap_ray.generation.pipeline import summarize

    n_tokens = [128] * 283 + [94] * 37  # (283 * 128 + 37 * 94) / 320 = 124.07
    table = _cut_table(n_tokens, [False] * 283 + [True] * 12 + [False] * 25)
    return summarize(table, 320, max_tokens=128) | {"spec": "hf:Qwen/Qwen2.5-0.5B-Instruct"}


def test_summarize_counts_the_rationales_cut_at_the_limit_they_were_generated_under():
    from cotgap_ray.generation.pipeline import summarize

    table = _cut_table([10, 127, 128, 128, 130], [True, True, False, False, False])  # 130: a limit past its budget
    s = summarize(table, 5, max_tokens=128)
    assert s["max_tokens"] == 128 and s["truncated_rows"] == 3 and s["truncated_fraction"] == 3 / 5
    s = summarize(table, 5, max_tokens=256)  # the same rows under a larger budget: none cut
    assert s["truncated_rows"] == 0 and s["truncated_fraction"] == 0.0
    empty = summarize(table.slice(0, 0), 5, max_tokens=128)
    assert empty["truncated_rows"] == 0 and empty["truncated_fraction"] == 0.0


def test_the_issue_case_warns_naming_the_teacher_the_key_and_a_budget():
    s = _issue_summary()
    assert (s["rows"], s["truncated_rows"], round(s["mean_tokens"]), s["pass_at_1"]) == (320, 283, 124, 12 / 320)
    entry = base_proxies(s)
    assert entry["truncated_rows"] == 283 and entry["truncated_fraction"] == 283 / 320 and entry["max_tokens"] == 128
    warning = proxies_mod.truncation_warning(QWEN, entry)
    assert warning.startswith(f"teacher {QWEN}: 283 of 320 rationales stopped at generation.max_tokens=128 "
                              f"(mean length 124 tokens)")
    assert "teacher accuracy (3.8%), proxies and verdicts measure the token budget, not the teacher" in warning
    # the fix as the command line takes it (a key=value override), at 4x: most were cut, so the median is past 128
    assert "generation.max_tokens=512 (a search then needs another --out" in warning
    assert "--teacher hf:Qwen/Qwen2.5-0.5B-Instruct --limit 32 generation.max_tokens=1024" in warning


def test_no_warning_below_a_fifth_cut_nor_without_the_counts():
    entry = base_proxies(_issue_summary())
    assert proxies_mod.truncation_warning(QWEN, entry | {"truncated_rows": 63}) is None  # 19.7% of 320
    assert proxies_mod.truncation_warning(QWEN, entry | {"truncated_rows": 64}) is not None  # 20%
    old = {k: v for k, v in entry.items() if k not in ("truncated_rows", "truncated_fraction", "max_tokens")}
    assert proxies_mod.truncation_warning(QWEN, old) is None  # a proxies.json from before the cut was counted
    assert base_proxies(_summary(80, 0.8))["truncated_fraction"] is None  # nor a summary without it


def test_suggested_budget_is_a_power_of_two_past_the_censored_lengths():
    suggest = proxies_mod.suggest_max_tokens
    assert [suggest(128, 0.3), suggest(128, 0.9), suggest(200, 0.3)] == [256, 512, 512]


def test_control_rows_are_never_cut():
    """Control teachers write their rationales below the limit (controls.py), so none is ever counted as cut."""
    from cotgap_ray.controls import rationale_rows
    from cotgap_ray.generation.pipeline import summarize
    from cotgap_ray.records import Problem

    problems = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i), "train") for i in range(4)]
    table = rationale_rows("control:oracle", problems, "control-oracle", 3)
    assert summarize(table, 4, max_tokens=3)["truncated_rows"] == 0


def test_the_printout_has_a_cut_column_and_the_warning_after_the_table():
    proxies = {QWEN: base_proxies(_issue_summary()), "other": base_proxies(_summary(80, 0.8))}
    rank_teachers(proxies)
    lines = proxies_mod.describe(proxies)
    assert lines[0].split()[:10] == ["rank", "teacher", "accuracy", "yield", "correct", "NLL", "RSR", "local",
                                     "tokens", "cut"]
    qwen_row = next(line for line in lines if QWEN in line and not line.startswith("warning"))
    assert qwen_row.split()[-1] == "88.4%"
    assert next(line for line in lines if "other" in line).split()[-1] == "-"  # not counted: shown as unknown
    assert lines[-1] == f"warning: {proxies_mod.truncation_warning(QWEN, proxies[QWEN])}" and len(lines) == 4


def test_proxies_stage_prints_and_stores_the_warning_also_for_an_older_cached_entry(tmp_path, capsys):
    """A proxies.json cached before the cut was counted gains the counts and the warning from the generation summary
    (cheap: no rescoring); the search prints the warning after the proxies table."""
    import json
    from types import SimpleNamespace

    from cotgap_ray.search import run

    summary = _issue_summary()
    cached = {k: v for k, v in base_proxies(summary).items()
              if k not in ("truncated_rows", "truncated_fraction", "max_tokens")} | {"student_nll": 2.0,
                                                                                      "student_rsr": 4.0,
                                                                                      "student_local_nll": 1.0}
    (tmp_path / "proxies.json").write_text(json.dumps({QWEN: cached}))
    cfg = SimpleNamespace(search=SimpleNamespace(filter_chains={}, proxy_rationales=4))
    generation = SimpleNamespace(teacher=QWEN, summary=summary, table=lambda: _cut_table([1], [True]))
    proxies, _ = run.proxies_stage(tmp_path, cfg, None, None, {QWEN: generation})
    saved = json.loads((tmp_path / "proxies.json").read_text())[QWEN]
    assert saved["truncated_rows"] == 283 and saved["student_nll"] == 2.0  # filled in; the cached values stay
    assert saved["truncation_warning"] == proxies_mod.truncation_warning(QWEN, saved)
    assert "283 of 320" in saved["truncation_warning"]
    out = capsys.readouterr().out
    assert f"warning: teacher {QWEN}: 283 of 320 rationales stopped at generation.max_tokens=128" in out
