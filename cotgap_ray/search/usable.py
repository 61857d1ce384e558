"""Usable training data, decided before any trial: how many of each teacher's cached train rationales each filter
chain of search.filter_chains keeps. A teacher that no chain leaves a row of gets no trial: every trial of it would
end at once with status no_data and spend a slot of search.trials (gemma3-270m in the default experiment: 0 of 320
rationales correct, and every chain starts with correct_only). Pure: tables in, a JSON-able record out.

    decide({"gemma3-270m": table, "qwen2.5-coder-0.5b-instruct": table}, cfg.search, cfg.generation.max_tokens)
    -> {"kept": ["qwen2.5-coder-0.5b-instruct"], "excluded": ["gemma3-270m"], "teachers": {"gemma3-270m": {
          "rationales": 320, "usable": False, "seed": None, "chains": {"correct": {"kept": 0, "usable": False,
          "emptied_by": "correct_only", "rows_in": 320}, ...}}, ...}}

A chain counts what a trial's filter keeps: the chain, then the cut at the generation limit (space.training_chain),
with every teacher's table as the cross_teacher context. A chain whose step parameters are searched is usable when
ANY of its values keeps a row (space.chain_variants: every choice, a range's middle and ends); `kept` is the most any
value keeps. Not counted: the SFT step's own drops (a prompt that does not tokenize as a prefix, a rationale longer
than lora.max_length), which need the student's tokenizer; a kept teacher's trial can still end no_data there.

`seed`: the filter part of the teacher's first trial (space.seed_points): the first chain's seed values when they
keep a row, else the first chain and values, in config order, that do.
"""

from __future__ import annotations

from cotgap_ray.errors import InputError

FILE = "usable.json"
GENERATION_CUT = "the cut at generation.max_tokens"  # how a reason names space.training_chain's added step


def decide(tables: dict, search, generation_max_tokens: int, names: list[str] | None = None) -> dict:
    """The record above for the teachers `names` (default: every table's), in that order. `tables`: teacher name ->
    rationale table (run.proxies_stage's, with student_nll when a chain filters on it), the context of every chain."""
    from cotgap_ray.filters import FilterContext, apply_filters
    from cotgap_ray.search.space import chain_variants, filter_chain, training_chain

    context = FilterContext(teacher_tables=tables)
    variants = {chain: chain_variants(chain, search) for chain in search.filter_chains}
    teachers = {}
    for name in (names if names is not None else list(tables)):
        chains, seed = {}, None
        for chain, parts in variants.items():
            best = None  # (rows kept, variant, its configured chain, FilterReport): the variant keeping the most
            for part in parts:
                configured = filter_chain(part, search)
                kept, report = apply_filters(tables[name], training_chain(configured, generation_max_tokens),
                                             context)
                if kept.num_rows and seed is None:
                    seed = part
                if best is None or kept.num_rows > best[0]:
                    best = (kept.num_rows, part, configured, report)
            chains[chain] = _chain_entry(*best)
        teachers[name] = {"rationales": tables[name].num_rows, "usable": any(c["usable"] for c in chains.values()),
                          "seed": seed, "chains": chains}
    first = next(iter(variants.values()), [None])[0]  # the seed every teacher gets unless its data says otherwise
    return {"generation_max_tokens": generation_max_tokens, "first_seed": first,
            "kept": [n for n, e in teachers.items() if e["usable"]],
            "excluded": [n for n, e in teachers.items() if not e["usable"]], "teachers": teachers}


def _chain_entry(kept: int, part: dict, configured: list[dict], report) -> dict:
    """One chain's record: rows kept (at its best values, `values`) and, when none, the step that emptied it and the
    rows that step received."""
    index = next((i for i, s in enumerate(report.steps) if s["rows_kept"] == 0), None)
    return {"kept": kept, "usable": kept > 0, "values": {k: v for k, v in part.items() if k != "filters"},
            "emptied_by": None if index is None else GENERATION_CUT if index == len(configured) else
            report.steps[index]["step"], "rows_in": None if index is None else report.steps[index]["rows_in"]}


def why(entry: dict) -> str:
    """Why a teacher has no training example, e.g. "correct_only kept 0 of 320 rationales on chains correct,
    correct_dedupe": one clause per (step, rows in) shared by its chains."""
    if not entry["rationales"]:
        return "it has no cached rationale at all"
    groups: dict[tuple, list[str]] = {}
    for chain, c in entry["chains"].items():
        groups.setdefault((c.get("emptied_by"), c.get("rows_in")), []).append(chain)
    return "; ".join(f"{step} kept 0 of {rows} rationales on chain{'s' if len(chains) > 1 else ''} "
                     f"{', '.join(chains)}" for (step, rows), chains in groups.items())


def describe(decided: dict) -> list[str]:
    """One line per excluded teacher (printed by the search, written in report.md), and one per kept teacher whose
    first trial cannot use the first chain's seed values."""
    lines = []
    for name, e in decided["teachers"].items():
        if not e["usable"]:
            lines.append(f"{name}: no trial: no training example under any filter chain ({why(e)})")
    for name, e in decided["teachers"].items():
        if e["usable"] and e["seed"] != decided["first_seed"]:
            chosen = " ".join([e["seed"]["filters"], *(f"{k}={v}" for k, v in e["seed"].items() if k != "filters")])
            lines.append(f"{name}: its first trial uses filter chain {chosen}: the first chain, with the values a "
                         f"first trial gets, keeps none of its rationales")
    return lines


def check_some_kept(decided: dict) -> None:
    """InputError, before any fine-tune, when no teacher has a training example under any chain: the search would
    spend every trial on status no_data."""
    if decided["kept"]:
        return
    reasons = "; ".join(f"{n}: {why(decided['teachers'][n])}" for n in decided["excluded"])
    raise InputError(f"no teacher has a training example under any filter chain of search.filter_chains ({reasons}); "
                     f"every trial would end at once with status no_data. Add a chain without correct_only that "
                     f"trains on every rationale, e.g. search.filter_chains.all=[] (\"all: []\" in the config), or "
                     f"choose teachers that solve some train problems; the cached rationales are reused")
