"""Generic file task: a JSONL or Parquet file with a question column and a gold-answer column.

    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "7"}   -> RawProblem("file:apples:0", ..., "7")
    {"question": "Simplify $\\sqrt{8}$.", "answer": "2\\sqrt{2}"}            -> RawProblem(..., "2\\sqrt{2}")

A gold answer is a number or a math answer in LaTeX (competition math: "\\frac{1}{2}", "(1, 3]", "$\\pi$", or a
solution ending in "\\boxed{...}"), read by answers.parse_gold; tests/data/competition_math/latex.jsonl is an example.

Gold answers may use GSM8K's "... #### 7" form; the text before '####' is then the problem's reference solution
(records.Problem.solution, what control teachers write: cotgap_ray/controls.py). Every row is checked before any model
is loaded: a missing field or a gold answer that is neither a number nor a math answer ("blue") is an error naming the
file and line (1-based, as an editor shows it). Rows whose questions differ only in case, whitespace or a trailing "?"
are one problem: tasks.splits keeps one of them (Splits.duplicates_dropped counts the others), so a problem cannot be
in train and in test.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotgap_ray.answers import parse_gold
from cotgap_ray.controls import worked_solution
from cotgap_ray.errors import InputError, MissingFile
from cotgap_ray.tasks.splits import RawProblem


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a .jsonl / .json-lines or .parquet file."""
    if path.is_dir():
        raise InputError(f"task file {path} is a directory; give a .jsonl or .parquet file")
    if not path.is_file():
        raise MissingFile(f"task file {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(enumerate(pq.read_table(path).to_pylist(), start=1))
        except pa.ArrowException as e:
            raise InputError(f"{path}: not a readable Parquet file ({e}); give a .parquet or a .jsonl file") from e
    rows = []
    with path.open("rb") as fh:  # bytes: a line that is not UTF-8 is named by its number
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start} of the line); a "
                                 f"file task needs JSON lines (UTF-8) or a .parquet file") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows


def to_raw_problems(
    path: Path, prefix: str, question_field: str, answer_field: str, id_field: str | None = None
) -> list[RawProblem]:
    problems = []
    for lineno, row in read_rows(path):
        for name in (question_field, answer_field) + ((id_field,) if id_field else ()):
            if row.get(name) in (None, ""):
                raise InputError(
                    f"{path}:{lineno}: row has no '{name}' field (fields: {', '.join(row) or 'none'}); "
                    f"fix the row or set task.question_field / task.answer_field / task.id_field"
                )
        try:
            gold = parse_gold(row[answer_field])
        except ValueError as e:
            raise InputError(f"{path}:{lineno}: {e}; fix the row's '{answer_field}' field or set task.answer_field"
                             ) from e
        pid = f"{prefix}:{row[id_field]}" if id_field else f"{prefix}:{lineno}"
        problems.append(RawProblem(id=pid, question=str(row[question_field]), answer=gold,
                                   solution=worked_solution(row[answer_field])))
    return problems


def load_pools(cfg) -> dict[str, list[RawProblem]]:
    if not cfg.path:
        raise InputError("task 'file' needs task.path: a .jsonl or .parquet file")
    path = Path(cfg.path).expanduser()
    return {"rest": to_raw_problems(path, f"file:{path.stem}", cfg.question_field, cfg.answer_field, cfg.id_field)}
