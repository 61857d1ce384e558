"""Proxy-guided allocation (search.rule_out_alpha): which teachers the search spends trials on, decided before any
fine-tune from the rationales already generated.

The proxy is the amount of correct data: the train problems a teacher solved in at least one sample (the problems
correct_only can keep). arXiv 2604.08880 finds that teacher accuracy and the amount of correct data dominate the
outcome when candidate teachers differ a lot, and on benchmarks/search_vs_grid.py's setting A the proxies of that
family ranked teachers best (benchmarks/results/2026-12-search-vs-grid.md). It measures what correct_only can keep:
on setting C (trained on unfiltered rationales, 6 teachers) it ruled out the grid's choice, the student's own
rationales (2 of 64 problems solved against the leader's 24), where the student's NLL of the rationales ranked
teachers best. A teacher is ruled out only with confidence: the leader (the teacher solving the most problems)
solves more of the same problems than it does by a one-sided exact McNemar test (paired by problem), Holm-adjusted
over the teachers compared, p < alpha. Ruled-out teachers get no trial; the search's budget (search.trials, seeded
best proxy first) goes to the rest, so the teachers the proxy cannot separate get all of it. The leader is never
ruled out, and a grid (ground truth) ignores this.

    allocate(tables, train_ids, alpha=0.05) ->
      {"alpha": 0.05, "proxy": "solved train problems", "leader": "qwen", "kept": ["qwen", "qwen-t1.2"],
       "teachers": {"gemma": {"solved": 1, "leader_solved": 24, "only_leader": 23, "only_this": 0,
                              "p": 1.2e-07, "p_holm": 3.6e-07, "ruled_out": True}, ...}}
"""

from __future__ import annotations

import pyarrow as pa

from cotgap_ray.stats import holm, mcnemar_greater_p

PROXY = "solved train problems"


def solved(table: pa.Table, train_ids: list[str]) -> list[bool]:
    """Per train problem (in train_ids' order): does at least one of the teacher's rationales answer it correctly?
    A problem the teacher has no row for is unsolved."""
    hits = {pid for pid, ok in zip(table["problem_id"].to_pylist(), table["correct"].to_pylist()) if ok}
    return [pid in hits for pid in train_ids]


def allocate(tables: dict[str, pa.Table], train_ids: list[str], alpha: float) -> dict:
    """The teachers to search and why the others are not (module docstring). Deterministic in its inputs, so a
    resumed search keeps the same teachers. Ties for leader: the first teacher in `tables`' order (the config's)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1): got {alpha}")
    if not train_ids:
        raise ValueError("proxy-guided allocation needs the train split's problems: got none")
    by_teacher = {name: solved(table, train_ids) for name, table in tables.items()}
    leader = max(by_teacher, key=lambda name: sum(by_teacher[name]))  # max keeps the first of equals
    others = [name for name in by_teacher if name != leader]
    lead = by_teacher[leader]
    raw = {name: mcnemar_greater_p(lead, by_teacher[name]) for name in others}
    adjusted = dict(zip(others, holm(list(raw.values()))))
    entries = {}
    for name, hits in by_teacher.items():
        entry = {"solved": sum(hits), "n_problems": len(train_ids), "leader_solved": sum(lead),
                 "only_leader": sum(a and not b for a, b in zip(lead, hits)),
                 "only_this": sum(b and not a for a, b in zip(lead, hits)),
                 "p": None, "p_holm": None, "ruled_out": False}
        if name != leader:
            entry["p"] = raw[name]
            entry["p_holm"] = adjusted[name]
            entry["ruled_out"] = adjusted[name] < alpha
        entries[name] = entry
    return {"alpha": alpha, "proxy": PROXY, "test": "one-sided exact McNemar against the leader, Holm over teachers",
            "leader": leader, "kept": [n for n in by_teacher if not entries[n]["ruled_out"]], "teachers": entries}


def chains_beyond_the_proxy(filter_chains: dict) -> list[str]:
    """The filter chains (search.filter_chains) without a correct_only step: they train on rationales the proxy does
    not count (wrong ones too), so a teacher that solves few problems can still teach well through them; measured on
    benchmarks/search_vs_grid.py's setting C, where the rule-out removed the grid's choice."""
    return [name for name, steps in filter_chains.items()
            if not any(step.get("name") == "correct_only" for step in steps)]  # steps: dicts (validate_filters)


def describe(allocation: dict) -> list[str]:
    """One line per ruled-out teacher, and one for the kept ones (printed by the search, written in report.md)."""
    lines = []
    lead = allocation["leader"]
    for name, e in allocation["teachers"].items():
        if e["ruled_out"]:
            lines.append(f"{name}: ruled out before any fine-tune, no trial: solves {e['solved']} of "
                         f"{e['n_problems']} train problems against {e['leader_solved']} for {lead} "
                         f"({e['only_leader']} only {lead}, {e['only_this']} only {name}; one-sided exact McNemar "
                         f"p = {e['p']:.2g}, Holm {e['p_holm']:.2g} < search.rule_out_alpha={allocation['alpha']})")
    kept = allocation["kept"]
    lines.append(f"searched: {', '.join(kept)} ({len(kept)} of {len(allocation['teachers'])} teachers; "
                 f"{PROXY}, leader {lead})")
    if allocation.get("chains_beyond_the_proxy"):
        lines.append(f"caution: filter chain(s) {', '.join(allocation['chains_beyond_the_proxy'])} have no "
                     f"correct_only step: they train on rationales the proxy does not count, and on such chains a "
                     f"ruled-out teacher can teach best (benchmarks/results/2026-12-search-vs-grid.md, setting C); "
                     f"unset search.rule_out_alpha to search every teacher")
    return lines
