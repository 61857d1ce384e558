"""The record schemas of cotgap_ray, defined once (pyarrow), and the small dataclasses that carry them.

| record    | one row is                                             |
|-----------|--------------------------------------------------------|
| problem   | one question of a task split, with its normalized gold |
| rationale | one teacher sample for one problem                      |
| eval row  | one model (+ adapter) answer to one problem              |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa

PROBLEM_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),  # normalized gold, see answers.normalize
        pa.field("split", pa.string(), nullable=False),
    ]
)

RATIONALE_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("sample_idx", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("pred", pa.string()),  # normalized extracted answer; null when none was found
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
    ]
)

EVAL_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("adapter", pa.string()),  # null for the baseline (no adapter)
        pa.field("text", pa.string(), nullable=False),
        pa.field("pred", pa.string()),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Problem:
    """One question. `answer` is the normalized gold answer (answers.normalize)."""

    id: str
    question: str
    answer: str
    split: str


def problems_to_table(problems: list[Problem]) -> pa.Table:
    return pa.Table.from_pylist([asdict(p) for p in problems], schema=PROBLEM_SCHEMA)


def table_to_problems(table: pa.Table) -> list[Problem]:
    return [Problem(**row) for row in table.select(PROBLEM_SCHEMA.names).to_pylist()]
