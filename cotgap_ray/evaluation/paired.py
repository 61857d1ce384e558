"""Pairing an adapter's per-problem results with the baseline's, problem by problem: the input of every delta.

    baseline = rows_correct("baseline/dev.parquet")     {"p1": True, "p2": False, ...}
    before, after = paired(baseline, correct_by_id(rows), "trial t3f9 on dev")
    stats.compare(before, after)

A delta is only meaningful on the same problems in the same order; a missing or extra problem is an error that
names the evaluation, never a silently shorter comparison.
"""

from __future__ import annotations


def correct_by_id(rows) -> dict[str, bool]:
    """problem_id -> correct, from evaluation rows (records.EVAL_SCHEMA)."""
    return dict(zip(rows.column("problem_id").to_pylist(), rows.column("correct").to_pylist()))


def rows_correct(path: str) -> dict[str, bool]:
    """correct_by_id of an evaluation rows Parquet file."""
    import pyarrow.parquet as pq

    return correct_by_id(pq.read_table(path, columns=["problem_id", "correct"]))


def paired(baseline: dict[str, bool], after: dict[str, bool], what: str) -> tuple[list[bool], list[bool]]:
    """(before, after) on the baseline's problems, sorted by id. Raises ValueError when `after` lacks a problem of
    the baseline or holds one the baseline does not."""
    if set(after) != set(baseline):
        missing, extra = sorted(set(baseline) - set(after)), sorted(set(after) - set(baseline))
        raise ValueError(f"{what}: scored {len(after)} problems, the baseline {len(baseline)}; missing "
                         f"{missing[:3]}, extra {extra[:3]}: a delta needs the same problems")
    ids = sorted(baseline)
    return [baseline[i] for i in ids], [after[i] for i in ids]
