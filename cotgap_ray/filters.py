"""Rationale filters: a registry of named steps, chained from config (like lm-eval's `filter_list`). Pure functions.

Each step takes a `pyarrow.Table` of rationales (records.RATIONALE_SCHEMA) and returns the rows it keeps, in their
original order. A step is configured by a dict, `{"name": <step>, <param>: <value>, ...}`; a chain is a list of them:

    steps = [{"name": "correct_only"}, {"name": "length", "max_tokens": 200}, {"name": "max_per_question", "m": 1}]
    table, report = apply_filters(rationales, steps, FilterContext(teacher_tables={"qwen": rationales}))

One problem going through that chain (teacher "qwen", k = 3 samples):

    sample_idx  correct  n_tokens      correct_only   length(max 200)   max_per_question(m=1)
    0           False    120           dropped
    1           True     310           kept           dropped
    2           True     150           kept           kept              kept   <- the one SFT example of this problem

    report.steps -> [{"step": "correct_only", "rows_in": 3, "rows_kept": 2, "problems_kept": 1, ...}, ...]

Steps (parameters; all optional unless marked *):
  correct_only      rows whose extracted answer is correct
  length            min_tokens / max_tokens (absolute), min_pct / max_pct (percentiles of this table's n_tokens)
  dedupe            drop a rationale whose normalized text (normalize_text: lowercase, whitespace collapsed, quotes,
                    minus signs and thousands separators folded) repeats within its problem
  max_per_question  m*: at most m rationales per problem, lowest sample_idx first
  cross_teacher     only problems that EVERY candidate teacher answered correctly at least once (needs the context).
                    The setting 2604.08880 criticises (it hides where teachers differ); kept so users can compare.
  student_nll       q*: rationales whose length-normalized student NLL is at or below the q-quantile; needs a
                    `student_nll` column, added by cotgap_ray.sft.with_student_nll

A chain that leaves zero rows is not an error here: `report.empty` says so and the caller decides (a trial status).
The rows that survive the chain but cannot become SFT examples (cotgap_ray.sft drops them, by reason) join the report
as a last step, "sft_examples", with FilterReport.add_sft_drops(training.examples.check_examples(...)).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class FilterContext:
    """What some steps need beyond the table: every candidate teacher's raw (unfiltered) rationales, by teacher."""

    teacher_tables: Mapping[str, pa.Table] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterStep:
    fn: Callable[..., pa.Table]  # fn(table, context, **params)
    needs: tuple[str, ...]  # columns the step reads
    check: Callable[..., None] | None = None  # validates parameter values, raising ValueError

    @property
    def params(self) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(self.fn).parameters.values()
        return {p.name: p for p in sig if p.kind is inspect.Parameter.KEYWORD_ONLY}


FILTERS: dict[str, FilterStep] = {}

# Where a column that is not part of RATIONALE_SCHEMA comes from, for the missing-column error.
_COLUMN_SOURCES = {"student_nll": "add it with cotgap_ray.sft.with_student_nll(rationales, model, tokenizer, problems)"}


def register(name: str, needs: tuple[str, ...], check: Callable[..., None] | None = None):
    def wrap(fn):
        FILTERS[name] = FilterStep(fn, needs, check)
        return fn

    return wrap


# ---------------------------------------------------------------- parameter checks (no data needed)


def _check_length(min_tokens=None, max_tokens=None, min_pct=None, max_pct=None) -> None:
    bounds = {"min_tokens": min_tokens, "max_tokens": max_tokens, "min_pct": min_pct, "max_pct": max_pct}
    if all(v is None for v in bounds.values()):
        raise ValueError("filter 'length': give at least one of min_tokens, max_tokens, min_pct, max_pct")
    for key, value in bounds.items():
        top = 100 if key.endswith("_pct") else float("inf")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and 0 <= value <= top):
            raise ValueError(f"filter 'length': parameter '{key}' must be a number in [0, {top}], got {value!r}")
    for lo, hi in (("min_tokens", "max_tokens"), ("min_pct", "max_pct")):
        if bounds[lo] is not None and bounds[hi] is not None and bounds[lo] > bounds[hi]:
            raise ValueError(f"filter 'length': {lo}={bounds[lo]} is greater than {hi}={bounds[hi]}: nothing can pass")


def _check_max_per_question(m) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"filter 'max_per_question': parameter 'm' must be an integer >= 1, got {m!r}")


def _check_student_nll(q) -> None:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
        raise ValueError(f"filter 'student_nll': parameter 'q' must be a quantile in (0, 1], got {q!r}")


# ---------------------------------------------------------------- the steps


@register("correct_only", needs=("correct",))
def correct_only(table: pa.Table, context: FilterContext) -> pa.Table:
    return table.filter(np.asarray(table["correct"].to_pylist(), dtype=bool))


@register("length", needs=("n_tokens",), check=_check_length)
def length(table, context, *, min_tokens=None, max_tokens=None, min_pct=None, max_pct=None) -> pa.Table:
    n = np.asarray(table["n_tokens"].to_pylist(), dtype=float)
    keep = np.ones(len(n), dtype=bool)
    # Percentiles are taken over the table as it arrives at this step (after earlier steps), before any cut.
    lo_pct = np.percentile(n, min_pct) if min_pct is not None and len(n) else None
    hi_pct = np.percentile(n, max_pct) if max_pct is not None and len(n) else None
    for bound in (min_tokens, lo_pct):
        if bound is not None:
            keep &= n >= bound
    for bound in (max_tokens, hi_pct):
        if bound is not None:
            keep &= n <= bound
    return table.filter(keep)


# Typographic quotes and the unicode minus (U+2212) as their ASCII forms: one model writes “x”, another "x".
_TYPOGRAPHY = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "‚": "'", "−": "-"})
# Thousands separators between groups of exactly three digits ("1,000", "1 000" once whitespace is collapsed).
_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:[, ]\d{3})+(?![\d])")


def normalize_text(text: str) -> str:
    """Lowercase, collapse whitespace (no-break and thin spaces included), fold typographic quotes and the unicode
    minus to ASCII and drop thousands separators ("1,000" and "1 000" -> "1000"); other digits and punctuation stay
    (a different number is a different rationale)."""
    text = " ".join(text.lower().translate(_TYPOGRAPHY).split())
    return _THOUSANDS_RE.sub(lambda m: re.sub(r"[, ]", "", m.group()), text)


@register("dedupe", needs=("problem_id", "sample_idx", "text"))
def dedupe(table: pa.Table, context: FilterContext) -> pa.Table:
    # Visit rows by (problem, sample_idx) so the copy kept is always the lowest sample_idx, whatever the row order.
    rows = _rows(table, "problem_id", "sample_idx", "text")
    seen, keep = set(), np.zeros(table.num_rows, dtype=bool)
    for i in sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1], i)):
        key = (rows[i][0], normalize_text(rows[i][2]))
        if key not in seen:
            seen.add(key)
            keep[i] = True
    return table.filter(keep)


@register("max_per_question", needs=("problem_id", "sample_idx"), check=_check_max_per_question)
def max_per_question(table: pa.Table, context: FilterContext, *, m: int) -> pa.Table:
    rows = _rows(table, "problem_id", "sample_idx")
    taken, keep = defaultdict(int), np.zeros(table.num_rows, dtype=bool)
    for i in sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1], i)):
        if taken[rows[i][0]] < m:
            taken[rows[i][0]] += 1
            keep[i] = True
    return table.filter(keep)


@register("cross_teacher", needs=("problem_id", "teacher"))
def cross_teacher(table: pa.Table, context: FilterContext) -> pa.Table:
    tables = dict(context.teacher_tables)
    if not tables:
        raise ValueError("filter 'cross_teacher' needs every candidate teacher's rationales: "
                         "pass FilterContext(teacher_tables={teacher: table, ...})")
    missing = sorted(set(table["teacher"].to_pylist()) - set(tables))
    if missing:
        raise ValueError(f"filter 'cross_teacher': the context lacks the rationales of teacher(s) {missing}; "
                         f"it has {sorted(tables)}. Pass every candidate teacher, this one included.")
    solved_by_all = None
    for other in tables.values():
        solved = {pid for pid, ok in _rows(other, "problem_id", "correct") if ok}
        solved_by_all = solved if solved_by_all is None else solved_by_all & solved
    return table.filter(np.asarray([pid in solved_by_all for pid in table["problem_id"].to_pylist()], dtype=bool))


@register("student_nll", needs=("student_nll",), check=_check_student_nll)
def student_nll(table: pa.Table, context: FilterContext, *, q: float) -> pa.Table:
    nll = np.asarray(table["student_nll"].to_pylist(), dtype=float)  # None -> nan
    finite = np.isfinite(nll)  # NaN marks a rationale the student could not score (too long): never kept
    if not finite.any():
        return table.filter(finite)
    return table.filter(finite & (nll <= np.quantile(nll[finite], q)))


def _rows(table: pa.Table, *columns: str) -> list[tuple]:
    return list(zip(*(table[c].to_pylist() for c in columns)))


# ---------------------------------------------------------------- the chain


SFT_STEP = "sft_examples"  # the report step FilterReport.add_sft_drops appends (not a filter of the chain)


@dataclass
class FilterReport:
    """What each step did. `steps[i]`: step, params, rows_in, rows_kept, problems_kept."""

    steps: list[dict]
    rows_in: int
    problems_in: int

    @property
    def rows_out(self) -> int:
        return self.steps[-1]["rows_kept"] if self.steps else self.rows_in

    @property
    def empty(self) -> bool:
        return self.rows_out == 0

    @property
    def emptied_by(self) -> str | None:
        """The first step that left no rows (None when rows remain)."""
        return next((s["step"] for s in self.steps if s["rows_kept"] == 0), None)

    def to_dict(self) -> dict:
        return {"rows_in": self.rows_in, "problems_in": self.problems_in, "rows_out": self.rows_out,
                "empty": self.empty, "emptied_by": self.emptied_by, "steps": self.steps}

    def add_sft_drops(self, drops) -> None:
        """Append what the SFT example builder did with the rows this chain kept (an sft.ExampleDrops, from
        training.examples.check_examples or NoTrainingData.drops) as the step "sft_examples", whose `dropped` maps
        each reason to its rows: rows_out becomes the rows that made examples, and a chain whose every row was
        dropped there is `empty`, emptied by "sft_examples"."""
        self.steps.append({"step": SFT_STEP, "params": {"max_length": drops.max_length,
                                                        "keep_truncated": drops.keep_truncated},
                           "rows_in": drops.rows_in, "rows_kept": drops.kept, "problems_kept": drops.problems_kept,
                           "dropped": dict(drops.dropped)})

    def __str__(self) -> str:
        lines = [f"{'step':<18}{'rows in':>9}{'kept':>9}{'problems':>10}"]
        for s in self.steps:
            lines.append(f"{s['step']:<18}{s['rows_in']:>9}{s['rows_kept']:>9}{s['problems_kept']:>10}")
            lines += [f"  dropped: {n} {reason}" for reason, n in s.get("dropped", {}).items() if n]
        if self.empty:
            lines.append(f"no rationale left (emptied by '{self.emptied_by}')")
        return "\n".join(lines)


def validate_filters(steps: list[dict]) -> list[tuple[FilterStep, dict]]:
    """Check step names, parameter names and values without any data (config validation, before compute)."""
    if not isinstance(steps, list):
        raise ValueError(f"filters must be a list of step dicts like {{'name': 'correct_only'}}, got {steps!r}")
    resolved = []
    for pos, spec in enumerate(steps):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"filter #{pos} must be a dict with a 'name' key, got {spec!r}")
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        if name not in FILTERS:
            close = difflib.get_close_matches(str(name), FILTERS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown filter '{name}'.{hint} Filters: {', '.join(FILTERS)}.")
        step = FILTERS[name]
        allowed = step.params
        for key in params:
            if key not in allowed:
                valid = ", ".join(allowed) or "none"
                raise ValueError(f"filter '{name}': unknown parameter '{key}'. Its parameters: {valid}.")
        for key, p in allowed.items():
            if p.default is inspect.Parameter.empty and key not in params:
                raise ValueError(f"filter '{name}': missing required parameter '{key}'")
        if step.check:
            step.check(**params)
        resolved.append((step, spec))
    return resolved


def apply_filters(table: pa.Table, steps: list[dict], context: FilterContext | None = None):
    """Run a chain of steps over one teacher's rationales -> (kept table, FilterReport)."""
    context = context or FilterContext()
    report = FilterReport(steps=[], rows_in=table.num_rows, problems_in=_n_problems(table))
    for step, spec in validate_filters(steps):
        missing = [c for c in step.needs if c not in table.column_names]
        if missing:
            how = "; ".join(_COLUMN_SOURCES[c] for c in missing if c in _COLUMN_SOURCES)
            raise ValueError(f"filter '{spec['name']}' needs column(s) {missing}, absent from the rationale table"
                             + (f": {how}" if how else ""))
        rows_in = table.num_rows
        params = {k: v for k, v in spec.items() if k != "name"}
        table = step.fn(table, context, **params)
        report.steps.append({"step": spec["name"], "params": params, "rows_in": rows_in,
                             "rows_kept": table.num_rows, "problems_kept": _n_problems(table)})
    return table, report


def _n_problems(table: pa.Table) -> int:
    return len(set(table["problem_id"].to_pylist())) if "problem_id" in table.column_names else 0
