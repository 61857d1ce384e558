"""Teacher proxies from literal rationale tables and summaries (pure; no model: where the search would score with the
student, a fake scorer stands in)."""

import pyarrow as pa

from cotgap_ray.proxies import (
    base_proxies,
    mean_nll,
    needs_student_scoring,
    nll_sample,
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
        "student_rsr", pa.array([float("nan") if i == nan_row else 100.0 + i for i in range(n)]))
    got = student_proxies(scored, 10)
    assert got["student_nll"] == sum(sample_rows) / 10
    assert got["student_rsr"] == sum(100.0 + i for i in sample_rows - {nan_row}) / 9
    no_correct = _table([False] * 4).append_column("student_nll", pa.array([1.0] * 4)).append_column(
        "student_rsr", pa.array([1.0] * 4))
    assert student_proxies(no_correct, 10) == {"student_nll": None, "student_rsr": None}


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
                .append_column("student_rsr", pa.array([5.0] * table.num_rows)))

    def fake_task(cfg, student, tables, questions):  # the Ray task's body, in process, with the fake scorer
        return {teacher: sft.with_student_scores(table, None, None, questions) for teacher, table in tables.items()}

    monkeypatch.setattr(run, "_score_students", fake_task)
    monkeypatch.setattr(sft, "with_student_scores", fake_scores)
    summary = _summary(10, 0.5)

    def generation(name):
        table = _table([True, False] * 10)
        table = table.set_column(table.column_names.index("teacher"), "teacher", pa.array([name] * table.num_rows))
        return SimpleNamespace(teacher=name, summary=summary, table=lambda: table)

    new_entry = base_proxies(summary) | {"student_nll": 7.0, "student_rsr": 3.0}
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
    assert json.loads((tmp_path / "proxies.json").read_text())["old"]["student_rsr"] == 5.0
    header = next(line for line in capsys.readouterr().out.splitlines() if "teacher" in line and "RSR" in line)
    assert header.split().index("RSR") == header.split().index("NLL") + 1
