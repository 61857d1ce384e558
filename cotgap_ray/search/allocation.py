"""Proxy-guided allocation (search.rule_out_alpha): which teachers the search spends trials on, decided before any
fine-tune from the rationales already generated.

The proxy is the amount of correct data: the train problems a teacher solved in at least one sample (the problems
correct_only can keep). arXiv 2604.08880 finds that teacher accuracy and the amount of correct data dominate the
outcome when candidate teachers differ a lot, and on benchmarks/search_vs_grid.py's setting A the proxies of that
family ranked teachers best (benchmarks/results/2026-12-search-vs-grid.md). It measures what correct_only can keep:
on setting C (trained on unfiltered rationales, 6 teachers) it ruled out the grid's choice, the student's own
rationales (2 of 64 problems solved against the leader's 24), where the student's NLL of the rationales ranked
teachers best.

A teacher is ruled out only with confidence that another teacher solves more of the same problems: every ordered
pair (i, j) of the K teachers gets a one-sided exact McNemar test of "j solves more than i" (paired by problem), and
Holm adjusts over all K(K-1) of them; i is ruled out when some j's adjusted p < alpha. No teacher is singled out from
the data before testing, so the chance that any teacher is ruled out wrongly stays <= alpha (docs/statistics.md,
"Proxy-guided allocation": testing against the teacher that solved the most, as this once did, ruled out one of 3
equal teachers 9.4% of the time and one of 6, 14.8%, at alpha 0.05). Every teacher is counted at the same number of
samples per problem, k_min, the fewest any sampled teacher has (sample_idx < k_min), so a variant drawing more
samples does not win by budget; a control's rationale is a function of the problem (controls.py), so its one sample
does not lower k_min. The teacher solving the most (at k_min) is never ruled out (alpha <= 1/2); `leader` names it,
for display. Ruled-out teachers get no trial; the search's budget (search.trials, seeded best proxy first) goes to
the rest, so the teachers the proxy cannot separate get all of it. A grid (ground truth) ignores this.

    allocate(tables, train_ids, alpha=0.05) ->
      {"alpha": 0.05, "proxy": "solved train problems", "k_min": 4, "n_tests": 6, "leader": "qwen",
       "kept": ["qwen", "qwen-t1.2"],
       "teachers": {"gemma": {"solved": 1, "n_problems": 64, "samples_per_problem": 4, "versus": "qwen",
                              "versus_solved": 24, "only_versus": 23, "only_this": 0, "p": 1.2e-07,
                              "p_holm": 7.2e-07, "ruled_out": True, "beaten_by": "qwen"}, ...}}

Each entry's comparison (versus, versus_solved, only_versus, only_this, p, p_holm) is with the teacher whose
"solves more than this one" test has the smallest adjusted p: the one that rules it out, or came closest to.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cotgap_ray.stats import holm, mcnemar_greater_p

PROXY = "solved train problems"
TEST = ("one-sided exact McNemar for every ordered pair of teachers (paired by problem, k_min samples per problem "
        "each), Holm over the K(K-1) pairs")


def samples_per_problem(table: pa.Table) -> int:
    """The samples a teacher drew per problem: its highest sample_idx + 1 (0 for a table without rows)."""
    return 0 if table.num_rows == 0 else 1 + pc.max(table["sample_idx"]).as_py()


def solved(table: pa.Table, train_ids: list[str], samples: int | None = None) -> list[bool]:
    """Per train problem (in train_ids' order): does at least one of the teacher's rationales with sample_idx <
    `samples` (None: every one) answer it correctly? A problem the teacher has no row for is unsolved."""
    counted = table["correct"] if samples is None else pc.and_(table["correct"], pc.less(table["sample_idx"], samples))
    hits = set(table["problem_id"].filter(counted).to_pylist())  # a null `correct` counts as not correct
    return [pid in hits for pid in train_ids]


def allocate(tables: dict[str, pa.Table], train_ids: list[str], alpha: float,
             controls: frozenset[str] = frozenset()) -> dict:
    """The teachers to search and why the others are not (module docstring). `controls`: names of teachers whose
    rationales are a function of the problem (controls.py), left out of k_min. Deterministic in its inputs, so a
    resumed search keeps the same teachers. Ties (for leader, for the comparison an entry shows): config order."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1): got {alpha}")
    if not train_ids:
        raise ValueError("proxy-guided allocation needs the train split's problems: got none")
    ks = {name: samples_per_problem(table) for name, table in tables.items()}
    # Not setting k_min: a teacher without rows (it solves nothing at any k) and a control; none left: every sample
    k_min = min((k for name, k in ks.items() if k and name not in controls), default=None)
    by_teacher = {name: np.array(solved(table, train_ids, k_min)) for name, table in tables.items()}
    names = list(by_teacher)
    # H(i, j): j solves no more problems than i. Every ordered pair is tested, none chosen from the data first.
    pairs = [(i, j) for i in names for j in names if i != j]
    raw = [mcnemar_greater_p(by_teacher[j], by_teacher[i]) for i, j in pairs]
    adjusted = holm(raw)
    strongest = {}  # i -> (p_holm, p, j): the test with the most evidence that some j solves more than i
    for (i, j), p, p_holm in zip(pairs, raw, adjusted):
        if i not in strongest or (p_holm, p) < strongest[i][:2]:  # strict: the first j in config order keeps a tie
            strongest[i] = (p_holm, p, j)
    entries = {}
    for name, hits in by_teacher.items():
        p_holm, p, other = strongest.get(name, (None, None, None))  # a lone teacher is compared with nobody
        them = by_teacher[other] if other else np.zeros_like(hits)
        ruled_out = p_holm is not None and p_holm < alpha
        entries[name] = {"solved": int(hits.sum()), "n_problems": len(train_ids), "samples_per_problem": ks[name],
                         "versus": other, "versus_solved": int(them.sum()) if other else None,
                         "only_versus": int((them & ~hits).sum()), "only_this": int((hits & ~them).sum()),
                         "p": p, "p_holm": p_holm, "ruled_out": ruled_out, "beaten_by": other if ruled_out else None}
    leader = max(names, key=lambda name: entries[name]["solved"])  # max keeps the first of equals; never ruled out
    return {"alpha": alpha, "proxy": PROXY, "test": TEST, "k_min": k_min, "n_tests": len(pairs), "leader": leader,
            "kept": [n for n in names if not entries[n]["ruled_out"]], "teachers": entries}


def chains_beyond_the_proxy(filter_chains: dict) -> list[str]:
    """The filter chains (search.filter_chains) without a correct_only step: they train on rationales the proxy does
    not count (wrong ones too), so a teacher that solves few problems can still teach well through them; measured on
    benchmarks/search_vs_grid.py's setting C, where the rule-out removed the grid's choice."""
    return [name for name, steps in filter_chains.items()
            if not any(step.get("name") == "correct_only" for step in steps)]  # steps: dicts (validate_filters)


def _versus(entry: dict, leader: str) -> tuple[str, int, int]:
    """(the teacher an entry is compared with, its solved count, problems only it solves); an allocation.json from
    before the all-pairs test (#33 point 7) compared every teacher with the leader, under other keys."""
    if "versus" in entry:
        return entry["versus"], entry["versus_solved"], entry["only_versus"]
    return leader, entry["leader_solved"], entry["only_leader"]


def describe(allocation: dict) -> list[str]:
    """One line per ruled-out teacher, and one for the kept ones (printed by the search, written in report.md)."""
    lines = []
    lead, k_min = allocation["leader"], allocation.get("k_min")
    at = f" at {k_min} sample{'s' * (k_min != 1)} per problem each" if k_min else ""
    family = f"Holm over {allocation['n_tests']} ordered pairs" if "n_tests" in allocation else "Holm"
    for name, e in allocation["teachers"].items():
        if e["ruled_out"]:
            other, other_solved, only_other = _versus(e, lead)
            lines.append(f"{name}: ruled out before any fine-tune, no trial: solves {e['solved']} of "
                         f"{e['n_problems']} train problems against {other_solved} for {other}{at} "
                         f"({only_other} only {other}, {e['only_this']} only {name}; one-sided exact McNemar "
                         f"p = {e['p']:.2g}, {family} {e['p_holm']:.2g} < search.rule_out_alpha={allocation['alpha']})")
    kept = allocation["kept"]
    lines.append(f"searched: {', '.join(kept)} ({len(kept)} of {len(allocation['teachers'])} teachers; "
                 f"{PROXY}, leader {lead})")
    more = [n for n, e in allocation["teachers"].items() if k_min and e.get("samples_per_problem", 0) > k_min]
    if more:
        lines.append(f"counted at {k_min} sample{'s' * (k_min != 1)} per problem, the fewest of any sampled teacher: "
                     f"the later samples of {', '.join(more)} are not counted, so no teacher wins by sampling budget")
    if allocation.get("chains_beyond_the_proxy"):
        lines.append(f"caution: filter chain(s) {', '.join(allocation['chains_beyond_the_proxy'])} have no "
                     f"correct_only step: they train on rationales the proxy does not count, and on such chains a "
                     f"ruled-out teacher can teach best (benchmarks/results/2026-12-search-vs-grid.md, setting C); "
                     f"unset search.rule_out_alpha to search every teacher")
    return lines
