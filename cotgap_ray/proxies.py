"""Teacher-ranking signals computed without training: what a teacher's rationales look like before paying for a
fine-tune. The search seeds its first trials in this order and the report prints them beside the measured deltas.

One teacher's proxies (from its cached train-split rationales, k samples per problem):

    teacher_accuracy  0.55   pass@1: mean over problems of the fraction of correct samples
    correct_yield     0.55   fraction of rationale rows whose answer is correct
    solved_fraction   0.71   problems with at least one correct rationale (the data correct_only can keep)
    correct_rows      220    rationales correct_only keeps: "the amount of correct data" of 2604.08880
    mean_tokens       96.3   mean rationale length
    student_nll       1.84   mean per-token NLL of the student on (up to N of) the correct rationales: lower means
                             closer to what the student already writes; null when no rationale is correct

Ranking (rank 1 = try first): more correct rationales first, then higher accuracy, then lower student NLL. 2604.08880
finds teacher accuracy and the amount of correct data dominate when teachers differ a lot; NLL breaks ties.
"""

from __future__ import annotations

import hashlib
import math

import pyarrow as pa
import pyarrow.compute as pc


def base_proxies(summary: dict) -> dict:
    """The proxies that come straight from a generation summary (generate.summarize + run statistics)."""
    return {
        "spec": summary.get("spec"),
        "teacher_accuracy": summary["pass_at_1"],
        "majority_accuracy": summary.get("majority_accuracy"),
        "correct_yield": summary["yield_rows"],
        "solved_fraction": summary["yield_problems"],
        "correct_rows": summary["correct_rows"],
        "n_rationales": summary["rows"],
        "mean_tokens": summary["mean_tokens"],
        "generation_seconds": summary.get("generation_wall_s", 0.0),
        "generation_tokens": summary.get("tokens", 0),
        "student_nll": None,
    }


def nll_sample(table: pa.Table, limit: int) -> pa.Table:
    """Up to `limit` correct rationales, picked by a hash of (problem, sample): stable across runs and teachers."""
    correct = table.filter(pc.equal(table["correct"], True))
    if correct.num_rows <= limit:
        return correct
    keys = [hashlib.sha256(f"{p}:{s}".encode()).hexdigest() for p, s in
            zip(correct["problem_id"].to_pylist(), correct["sample_idx"].to_pylist())]
    order = sorted(range(correct.num_rows), key=keys.__getitem__)[:limit]
    return correct.take(sorted(order))


def mean_nll(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def rank_teachers(proxies: dict[str, dict]) -> list[str]:
    """Teacher names, most promising first (see the module docstring); writes `rank` into each proxies dict."""
    def key(name: str):
        p = proxies[name]
        nll = p["student_nll"] if p["student_nll"] is not None else math.inf
        return (-p["correct_rows"], -p["teacher_accuracy"], nll, name)

    order = sorted(proxies, key=key)
    for rank, name in enumerate(order, start=1):
        proxies[name]["rank"] = rank
    return order
