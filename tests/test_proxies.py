"""Teacher proxies from literal rationale tables and summaries (pure; no model)."""

import pyarrow as pa

from cotgap_ray.proxies import base_proxies, mean_nll, nll_sample, rank_teachers
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
