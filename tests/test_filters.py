"""Rationale filters on literal tables: each step, the chain and its report, and config errors before any data."""

import pyarrow as pa
import pytest

from cotgap_ray.filters import FILTERS, FilterContext, apply_filters, normalize_text, validate_filters
from cotgap_ray.records import RATIONALE_SCHEMA


def rationales(rows, teacher="qwen", nll=None) -> pa.Table:
    """rows: (problem_id, sample_idx, text, correct, n_tokens)."""
    table = pa.Table.from_pylist(
        [{"problem_id": p, "teacher": teacher, "sample_idx": i, "text": t, "pred": None, "correct": c, "n_tokens": n}
         for p, i, t, c, n in rows],
        schema=RATIONALE_SCHEMA,
    )
    return table if nll is None else table.append_column("student_nll", pa.array(nll, type=pa.float64()))


def keys(table) -> list[tuple[str, int]]:
    return list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))


def run(table, *steps, context=None):
    return apply_filters(table, list(steps), context)[0]


ROWS = [
    ("p1", 0, "3 + 4 = 7. The answer is 7.", True, 10),
    ("p1", 1, "3+4 is 8. The answer is 8.", False, 20),
    ("p1", 2, "3 + 4 =  7.\nThe Answer is 7.", True, 30),  # same text as sample 0 after normalization
    ("p2", 0, "It is 5.", False, 40),
    ("p2", 1, "5 - 2 = 3. The answer is 3.", True, 50),
    ("p3", 0, "I do not know.", False, 60),
]


def test_correct_only():
    assert keys(run(rationales(ROWS), {"name": "correct_only"})) == [("p1", 0), ("p1", 2), ("p2", 1)]


def test_length_absolute_bounds_are_inclusive():
    table = rationales(ROWS)
    assert keys(run(table, {"name": "length", "min_tokens": 20, "max_tokens": 40})) == [("p1", 1), ("p1", 2), ("p2", 0)]
    assert run(table, {"name": "length", "max_tokens": 9}).num_rows == 0


def test_length_percentiles_of_the_table():
    # n_tokens 10..60: 20th percentile 20, 80th 50 (linear interpolation)
    table = rationales(ROWS)
    kept = run(table, {"name": "length", "min_pct": 20, "max_pct": 80})
    assert kept["n_tokens"].to_pylist() == [20, 30, 40, 50]
    # Percentiles are over the table this step receives: after correct_only, n_tokens are 10, 30, 50.
    kept = run(table, {"name": "correct_only"}, {"name": "length", "max_pct": 50})
    assert kept["n_tokens"].to_pylist() == [10, 30]


def test_dedupe_keeps_the_lowest_sample_idx_within_a_problem_only():
    assert normalize_text("  3 + 4 =  7.\nThe Answer is 7.") == "3 + 4 = 7. the answer is 7."
    rows = [
        ("p1", 2, "3 + 4 =  7.\nThe Answer is 7.", True, 10),
        ("p1", 0, "3 + 4 = 7. the answer is 7.", True, 10),
        ("p1", 1, "3 + 4 = 8. the answer is 8.", True, 10),  # digits differ: not a duplicate
        ("p2", 0, "3 + 4 = 7. the answer is 7.", True, 10),  # another problem: not a duplicate
    ]
    assert keys(run(rationales(rows), {"name": "dedupe"})) == [("p1", 0), ("p1", 1), ("p2", 0)]


@pytest.mark.parametrize(
    "a, b",
    [
        ("He said “twelve” and ‘x’.", "He said \"twelve\" and 'x'."),  # typographic quotes
        ("The answer is −3.", "The answer is -3."),  # unicode minus U+2212
        ("She pays $1,000 in total.", "She pays $1000 in total."),  # thousands separators
        ("She pays $1 000 in total.", "She pays $1000 in total."),
        ("She pays $1\u202f000 in total.", "She pays $1,000 in total."),  # narrow no-break space
        ("1,234,567 grains", "1234567 grains"),
    ],
)
def test_dedupe_folds_typography_and_thousands_separators(a, b):
    assert normalize_text(a) == normalize_text(b)
    rows = [("p1", 0, a, True, 10), ("p1", 1, b, True, 10)]
    assert keys(run(rationales(rows), {"name": "dedupe"})) == [("p1", 0)]


@pytest.mark.parametrize("a, b", [("1, 000 apples", "1000 apples"), ("12,3456", "123456"),
                                  ("take 1, 2 and 3", "take 12 and 3")])
def test_dedupe_keeps_lists_and_odd_groups_apart(a, b):
    assert normalize_text(a) != normalize_text(b)


def test_max_per_question_keeps_lowest_sample_idx_in_row_order():
    rows = [("p1", 3, "d", True, 1), ("p1", 1, "b", True, 1), ("p2", 0, "x", True, 1), ("p1", 0, "a", True, 1)]
    assert keys(run(rationales(rows), {"name": "max_per_question", "m": 2})) == [("p1", 1), ("p2", 0), ("p1", 0)]
    assert keys(run(rationales(rows), {"name": "max_per_question", "m": 1})) == [("p2", 0), ("p1", 0)]


def test_cross_teacher_keeps_problems_every_teacher_solved():
    qwen = rationales(ROWS)  # solves p1, p2
    gemma = rationales([("p1", 0, "7", False, 1), ("p1", 1, "7", True, 1), ("p2", 0, "1", False, 1)], teacher="gemma")
    context = FilterContext(teacher_tables={"qwen": qwen, "gemma": gemma})
    assert keys(run(qwen, {"name": "cross_teacher"}, context=context)) == [("p1", 0), ("p1", 1), ("p1", 2)]


def test_cross_teacher_needs_every_teacher_in_the_context():
    qwen = rationales(ROWS)
    with pytest.raises(ValueError, match="teacher_tables"):
        run(qwen, {"name": "cross_teacher"})
    with pytest.raises(ValueError, match=r"lacks the rationales of teacher\(s\) \['qwen'\]"):
        run(qwen, {"name": "cross_teacher"}, context=FilterContext(teacher_tables={"gemma": qwen}))


def test_student_nll_keeps_the_lowest_quantile_and_never_nan():
    table = rationales(ROWS, nll=[0.5, 3.0, 1.0, float("nan"), 2.0, 4.0])
    # finite values 0.5, 1, 2, 3, 4: median 2 -> keep <= 2
    assert keys(run(table, {"name": "student_nll", "q": 0.5})) == [("p1", 0), ("p1", 2), ("p2", 1)]
    assert run(table, {"name": "student_nll", "q": 1.0}).num_rows == 5


def test_student_nll_without_the_column_says_which_function_adds_it():
    with pytest.raises(ValueError, match=r"needs column\(s\) \['student_nll'\].*sft.with_student_nll"):
        run(rationales(ROWS), {"name": "student_nll", "q": 0.5})


def test_chain_and_report():
    steps = [{"name": "correct_only"}, {"name": "dedupe"}, {"name": "max_per_question", "m": 1}]
    table, report = apply_filters(rationales(ROWS), steps)
    assert keys(table) == [("p1", 0), ("p2", 1)]
    assert [(s["step"], s["rows_in"], s["rows_kept"], s["problems_kept"]) for s in report.steps] == [
        ("correct_only", 6, 3, 2), ("dedupe", 3, 2, 2), ("max_per_question", 2, 2, 2)]
    assert report.steps[2]["params"] == {"m": 1}
    assert (report.rows_in, report.problems_in, report.rows_out, report.empty) == (6, 3, 2, False)
    assert report.to_dict()["emptied_by"] is None
    assert "max_per_question" in str(report)


def test_a_chain_that_leaves_nothing_is_reported_not_raised():
    steps = [{"name": "length", "max_tokens": 5}, {"name": "correct_only"}, {"name": "student_nll", "q": 0.5}]
    table, report = apply_filters(rationales(ROWS, nll=[1.0] * 6), steps)
    assert table.num_rows == 0 and table.schema == rationales(ROWS, nll=[1.0] * 6).schema
    assert report.empty and report.emptied_by == "length"
    assert [s["rows_in"] for s in report.steps] == [6, 0, 0]
    assert "emptied by 'length'" in str(report)


def test_empty_chain_keeps_everything():
    table, report = apply_filters(rationales(ROWS), [])
    assert table.num_rows == 6 and report.steps == [] and report.rows_out == 6


def test_unknown_step_name_suggests_and_lists():
    with pytest.raises(ValueError, match=r"unknown filter 'corect_only'\. Did you mean 'correct_only'\?") as err:
        validate_filters([{"name": "corect_only"}])
    assert all(name in str(err.value) for name in FILTERS)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"name": "length", "max_token": 10}], r"filter 'length': unknown parameter 'max_token'.*max_tokens"),
        ([{"name": "dedupe", "m": 1}], r"filter 'dedupe': unknown parameter 'm'\. Its parameters: none"),
        ([{"name": "max_per_question"}], r"filter 'max_per_question': missing required parameter 'm'"),
        ([{"name": "student_nll"}], r"filter 'student_nll': missing required parameter 'q'"),
        ([{"name": "length"}], r"filter 'length': give at least one"),
        ([{"name": "length", "min_tokens": 50, "max_tokens": 10}], r"min_tokens=50 is greater than max_tokens=10"),
        ([{"name": "length", "max_pct": 120}], r"'max_pct' must be a number in \[0, 100\]"),
        ([{"name": "max_per_question", "m": 0}], r"'m' must be an integer >= 1"),
        ([{"name": "max_per_question", "m": 1.5}], r"'m' must be an integer >= 1"),
        ([{"name": "student_nll", "q": 0}], r"'q' must be a quantile in \(0, 1\]"),
        ([{"max_tokens": 10}], r"filter #0 must be a dict with a 'name' key"),
        ({"name": "correct_only"}, r"filters must be a list"),
    ],
)
def test_validate_filters_rejects_bad_steps_without_data(steps, message):
    with pytest.raises(ValueError, match=message):
        validate_filters(steps)


def test_validate_filters_accepts_every_step():
    steps = [{"name": "correct_only"}, {"name": "length", "min_pct": 5, "max_tokens": 300}, {"name": "dedupe"},
             {"name": "max_per_question", "m": 4}, {"name": "cross_teacher"}, {"name": "student_nll", "q": 0.8}]
    assert [spec["name"] for _, spec in validate_filters(steps)] == [s["name"] for s in steps]


def test_apply_filters_validates_before_running_any_step():
    with pytest.raises(ValueError, match="unknown filter"):
        apply_filters(rationales(ROWS), [{"name": "cross_teacher"}, {"name": "nope"}])  # cross_teacher would raise


def test_sft_drops_join_the_report_as_a_last_step():
    from cotgap_ray.sft import DROP_NOT_PREFIX, DROP_PROMPT_FILLS, DROP_TRUNCATED, ExampleDrops

    table, report = apply_filters(rationales(ROWS), [{"name": "correct_only"}])  # 3 rows of p1, p2
    drops = ExampleDrops(rows_in=3, kept=1, problems_kept=1, max_length=256,
                         dropped={DROP_NOT_PREFIX: 1, DROP_PROMPT_FILLS: 0, DROP_TRUNCATED: 1})
    report.add_sft_drops(drops)
    assert report.steps[-1] == {"step": "sft_examples", "params": {"max_length": 256, "keep_truncated": False},
                                "rows_in": 3, "rows_kept": 1, "problems_kept": 1,
                                "dropped": {"prompt does not tokenize as a prefix": 1,
                                            "prompt alone fills lora.max_length": 0,
                                            "truncated at lora.max_length": 1}}
    assert (report.rows_out, report.empty) == (1, False)
    assert report.to_dict()["steps"][-1]["dropped"]["truncated at lora.max_length"] == 1
    text = str(report)
    assert "dropped: 1 prompt does not tokenize as a prefix" in text and "dropped: 1 truncated at" in text
    assert "prompt alone fills" not in text  # reasons with no row are not printed


def test_every_row_dropped_by_sft_empties_the_report():
    from cotgap_ray.sft import DROP_REASONS, DROP_TRUNCATED, ExampleDrops

    _, report = apply_filters(rationales(ROWS), [])
    report.add_sft_drops(ExampleDrops(rows_in=6, kept=0, problems_kept=0, max_length=64,
                                      dropped={**dict.fromkeys(DROP_REASONS, 0), DROP_TRUNCATED: 6}))
    assert report.empty and report.emptied_by == "sft_examples" and report.rows_out == 0
    assert "emptied by 'sft_examples'" in str(report)
