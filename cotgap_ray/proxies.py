"""Teacher-ranking signals computed without training: what a teacher's rationales look like before paying for a
fine-tune. The search seeds its first trials in this order and the report prints them beside the measured deltas.

One teacher's proxies (from its cached train-split rationales, k samples per problem):

    teacher_accuracy  0.55   pass@1: mean over problems of the fraction of correct samples
    correct_yield     0.55   fraction of rationale rows whose answer is correct
    solved_fraction   0.71   problems with at least one correct rationale (the data correct_only can keep)
    correct_rows      220    rationales correct_only keeps: "the amount of correct data" of 2604.08880
    mean_tokens       96.3   mean rationale length
    truncated_rows    12     rationales that stopped at max_tokens (the generation.max_tokens they were generated
                             under; truncated_fraction: their share): strict scoring counts each as not correct, so
                             when the share is large every proxy here measures the budget (truncation_warning, also
                             stored in the entry)
    student_nll       1.84   mean per-token NLL of the student on (up to N of) the correct rationales: lower means
                             closer to what the student already writes; null when no rationale is correct
    student_rsr       4.10   mean Rank-Surprisal Ratio over the same rationales (arXiv 2601.14249, "Which Reasoning
                             Trajectories Teach Students to Reason Better?"): per rationale, the mean rank of its
                             tokens under the student (1 = the student's top choice, capped at sft.RSR_RANK_CAP) over
                             their mean NLL. LOWER = better suited: informative (surprising, high NLL) yet aligned
                             (tokens the student ranks high). Null when no rationale is correct (or none has NLL > 0)
    student_local_nll 1.62   local naturalness over the same rationales (arXiv 2510.03988, "Distilling Reasoning
                             into Student LLMs: Local Naturalness for Selecting Teacher Data"; our reading in
                             naturalness.py): per rationale, the mean over its reasoning steps of the step's mean NLL,
                             each step given the question and only the LOCAL_WINDOW_STEPS steps before it, not the
                             whole prefix. LOWER = more natural to the student. Null when no rationale is correct

The student proxies come from one scoring of the sample by the student (sft.with_student_scores: one forward pass
gives NLL and RSR, short passes over each rationale's later steps the local NLL); a cached entry lacking any of them
is recomputed (needs_student_scoring).

Ranking (rank 1 = try first): more correct rationales first, then higher accuracy, then lower student NLL. 2604.08880
finds teacher accuracy and the amount of correct data dominate when teachers differ a lot; NLL breaks ties.
student_rsr and student_local_nll do not enter the rank yet: they are recorded and printed beside it, so runs can
compare the orders (cotgap validate correlates each with a grid's deltas).
"""

from __future__ import annotations

import hashlib
import math

import pyarrow as pa


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
        # .get: a summary from before the cut was counted (None: unknown, rendered n/a)
        "max_tokens": summary.get("max_tokens"),
        "truncated_rows": summary.get("truncated_rows"),
        "truncated_fraction": summary.get("truncated_fraction"),
        "generation_seconds": summary.get("generation_wall_s", 0.0),
        "generation_tokens": summary.get("tokens", 0),
        "student_nll": None,
        "student_rsr": None,
        "student_local_nll": None,
    }


# A warning when at least this share of a teacher's rationales stopped at generation.max_tokens. Strict scoring counts
# a cut rationale as not correct (answers.score_rationale), so a share s caps teacher accuracy at 1 - s and removes
# correct rationales (the first key of rank_teachers) with it. A budget sized from the teacher's own lengths (a high
# percentile of them) cuts a few percent, the tail; at one rationale in five the limit sits inside the bulk of the
# lengths, and the accuracy, the rank and what the student trains on depend on the budget as much as on the teacher.
TRUNCATED_WARN_SHARE = 0.2


def suggest_max_tokens(max_tokens: int, truncated_fraction: float) -> int:
    """A budget to try: a power of two at least twice `max_tokens`, four times when more than half the rationales were
    cut. A cut rationale's length is only known to be >= max_tokens (censored), so the observed mean cannot size the
    budget; when most are cut, even the median length lies beyond the limit, by an unknown amount."""
    want = max_tokens * (4 if truncated_fraction > 0.5 else 2)
    return 1 << max(want - 1, 1).bit_length()


def truncation_warning(teacher: str, proxy: dict) -> str | None:
    """The warning for one teacher's proxies entry (base_proxies) when at least TRUNCATED_WARN_SHARE of its rationales
    stopped at generation.max_tokens; None below that, and for an entry from before the cut was counted."""
    cut, rows, limit = proxy.get("truncated_rows"), proxy.get("n_rationales"), proxy.get("max_tokens")
    if cut is None or not rows or limit is None or cut / rows < TRUNCATED_WARN_SHARE:
        return None
    accuracy, suggested = proxy.get("teacher_accuracy"), suggest_max_tokens(limit, cut / rows)
    acc = "" if accuracy is None else f" ({100 * accuracy:.1f}%)"
    return (f"teacher {teacher}: {cut} of {rows} rationales stopped at generation.max_tokens={limit} (mean length "
            f"{proxy.get('mean_tokens') or 0:.0f} tokens); a cut rationale counts as not correct, so its teacher "
            f"accuracy{acc}, proxies and verdicts measure the token budget, not the teacher. Raise it on the command "
            f"line, e.g. generation.max_tokens={suggested} (a search then needs another --out: its config and the "
            f"rationale cache are keyed on it; each teacher's context is checked before any compute, and "
            f"lora.max_length bounds the training examples), or size it from a pilot of the teacher's own lengths: "
            f"cotgap generate [--config FILE] --teacher {proxy.get('spec') or teacher} --limit 32 "
            f"generation.max_tokens={2 * suggested} prints their mean and the share cut")


# The proxies scored by the student (sft.with_student_scores adds their columns), each a mean over nll_sample's rows.
STUDENT_PROXIES = ("student_nll", "student_rsr", "student_local_nll")


def student_proxies(scored: pa.Table, limit: int) -> dict[str, float | None]:
    """Each student proxy: the mean over nll_sample(scored, limit) of its column, NaN/None rows excluded (None when no
    row has a value). The same hash sample whether `scored` holds every row or only that sample's."""
    sample = nll_sample(scored, limit)
    return {name: mean_nll(sample[name].to_pylist()) for name in STUDENT_PROXIES}


def needs_student_scoring(entry: dict | None) -> bool:
    """Whether a teacher's cached proxies entry must be (re)computed: absent, or written before one of the student
    proxies existed (a proxies.json of an older run has no student_rsr or student_local_nll; a None value is a
    computed "undefined")."""
    return entry is None or any(name not in entry for name in STUDENT_PROXIES)


def nll_sample(table: pa.Table, limit: int) -> pa.Table:
    """Up to `limit` correct rationales, picked by a hash of (problem, sample): stable across runs and teachers."""
    return table.take(pa.array(nll_sample_rows(table, limit), type=pa.int64()))  # typed: [] has no type of its own


def nll_sample_rows(table: pa.Table, limit: int) -> list[int]:
    """The row indices of nll_sample(table, limit), in table order."""
    correct = [i for i, c in enumerate(table["correct"].to_pylist()) if c is True]
    if len(correct) <= limit:
        return correct
    pids, samples = table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()
    keys = {i: hashlib.sha256(f"{pids[i]}:{samples[i]}".encode()).hexdigest() for i in correct}
    return sorted(sorted(correct, key=keys.__getitem__)[:limit])


def mean_nll(values: list[float]) -> float | None:
    """The mean of the finite values (any per-row proxy, not only NLL); None when there is none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def rank_teachers(proxies: dict[str, dict]) -> list[str]:
    """Teacher names, most promising first (see the module docstring); writes `rank` into each proxies dict.

    student_rsr (lower = better suited, 2601.14249) and student_local_nll (lower = more natural, 2510.03988) are
    deliberately not part of the key: how the student proxies should steer the search is decided elsewhere; until
    then the order is the one above."""
    def key(name: str):
        p = proxies[name]
        nll = p["student_nll"] if p["student_nll"] is not None else math.inf
        return (-p["correct_rows"], -p["teacher_accuracy"], nll, name)

    order = sorted(proxies, key=key)
    for rank, name in enumerate(order, start=1):
        proxies[name]["rank"] = rank
    return order


def describe(proxies: dict[str, dict]) -> list[str]:
    """The search's printout of the proxies: one line per teacher in rank order (rank_teachers has run), then a
    `warning:` line per teacher whose rationales the token budget cut (truncation_warning), where the numbers it puts
    in doubt were just read."""
    order = sorted(proxies, key=lambda name: (proxies[name].get("rank") or math.inf, name))
    lines = [f"  {'rank':>4}  {'teacher':<32} {'accuracy':>8} {'yield':>6} {'correct':>7} {'NLL':>6} {'RSR':>6}"
             f" {'local':>6} {'tokens':>6} {'cut':>6}   (RSR: lower = better suited, arXiv 2601.14249; local: NLL "
             f"of each step given only the steps just before it, lower = more natural, arXiv 2510.03988; cut: share of "
             f"rationales that stopped at generation.max_tokens)"]
    for name in order:
        p = proxies[name]
        nll, rsr, local = (f"{p[k]:.2f}" if p.get(k) is not None else "-" for k in STUDENT_PROXIES)
        cut = "-" if p.get("truncated_fraction") is None else f"{100 * p['truncated_fraction']:5.1f}%"
        lines.append(f"  {p.get('rank', '-'):>4}  {name:<32} {100 * p['teacher_accuracy']:7.1f}%"
                     f" {100 * p['correct_yield']:5.1f}% {p['correct_rows']:>7} {nll:>6} {rsr:>6} {local:>6}"
                     f" {p['mean_tokens']:6.0f} {cut:>6}")
    return lines + [f"warning: {w}" for name in order if (w := truncation_warning(name, proxies[name]))]
