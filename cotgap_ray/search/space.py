"""The search space: a define-by-run function over (teacher, filter chain and its parameters, LoRA settings), and
the translation of one sampled point back into a filter chain and LoraSettings. Computes nothing (testable with
optuna.trial.FixedTrial).

    search.filter_chains = {"correct": [{name: correct_only}],
                            "short": [{name: correct_only}, {name: length, max_pct: {range: [50, 100]}}]}
    one point  -> {"teacher": "packaged:qwen2.5-coder-0.5b-instruct", "filters": "short",
                   "filter.short.1.max_pct": 72.5, "lora.rank": 16, "lora.alpha_ratio": 2.0,
                   "lora.learning_rate": 3.1e-4, "lora.epochs": 2}
    chain(point)    -> [{"name": "correct_only"}, {"name": "length", "max_pct": 72.5}]
    settings(point) -> LoraSettings(rank=16, alpha=32.0, learning_rate=3.1e-4, epochs=2, <the rest from lora:>)

A filter parameter written {range: [lo, hi]} is sampled uniformly (integers when both ends are), {choices: [...]}
categorically; anything else is fixed. Keys use "." (Tune's unflatten splits on "/", so points stay flat).

search.strategy=grid enumerates the same space instead of sampling it (grid_points): every teacher x chain x value of
each searched parameter x rank x ratio x epochs, with the points (keys and value types) search_space yields for the
same values, so a grid trial and a search trial of one configuration have one point_key. It needs a finite space:
choices, integer ranges of at most GRID_RANGE_MAX values, and one learning rate ([v, v]).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math

from cotgap_ray.config import ConfigError, LoraSettings, SearchConfig

# An integer range a grid enumerates value by value; a wider one is most likely a range meant for sampling (max_pct
# [50, 100] would be 51 trials per everything else), so the grid asks for the values as choices instead.
GRID_RANGE_MAX = 16


def _searched(value) -> bool:
    return isinstance(value, dict) and set(value) in ({"range"}, {"choices"})


def _param_name(chain: str, index: int, param: str) -> str:
    return f"filter.{chain}.{index}.{param}"


def search_space(trial, teachers: list[str], search: SearchConfig) -> None:
    """Define-by-run: every name suggested here is one dimension; nothing is computed."""
    trial.suggest_categorical("teacher", list(teachers))
    chain = trial.suggest_categorical("filters", list(search.filter_chains))
    for i, step in enumerate(search.filter_chains[chain]):
        for param, value in step.items():
            if not _searched(value):
                continue
            name = _param_name(chain, i, param)
            if "choices" in value:
                trial.suggest_categorical(name, list(value["choices"]))
            elif all(isinstance(v, int) for v in value["range"]):
                trial.suggest_int(name, *value["range"])
            else:
                trial.suggest_float(name, *map(float, value["range"]))
    trial.suggest_categorical("lora.rank", list(search.lora_rank))
    trial.suggest_categorical("lora.alpha_ratio", list(search.lora_alpha_ratio))
    trial.suggest_float("lora.learning_rate", *search.learning_rate, log=True)
    trial.suggest_categorical("lora.epochs", list(search.epochs))


def filter_chain(point: dict, search: SearchConfig) -> list[dict]:
    """The concrete filter chain of a point: searched parameters replaced by their sampled values."""
    name = point["filters"]
    chain = []
    for i, step in enumerate(search.filter_chains[name]):
        chain.append({p: (point[_param_name(name, i, p)] if _searched(v) else v) for p, v in step.items()})
    return chain


def training_chain(chain: list[dict], generation_max_tokens: int) -> list[dict]:
    """The chain a fine-tune trains on: the configured one, then a `length` step that drops rationales cut at the
    generation token limit (n_tokens >= generation.max_tokens). Such a rationale never ended, and the SFT example
    appends EOS to it, which would teach the student to stop mid-thought; the step shows in the filter report with
    its count. (Strict answer scoring already marks them not correct: after correct_only it drops nothing.)"""
    return [*chain, {"name": "length", "max_tokens": generation_max_tokens - 1}]


def lora_settings(point: dict, base: LoraSettings) -> LoraSettings:
    """The `lora:` section with the point's rank, alpha (= rank x ratio), learning rate and epochs."""
    rank = int(point["lora.rank"])
    return dataclasses.replace(base, rank=rank, alpha=float(rank * point["lora.alpha_ratio"]),
                               learning_rate=float(point["lora.learning_rate"]), epochs=int(point["lora.epochs"]))


def point_key(point: dict) -> str:
    """Content address of a point (which trial directory it owns): equal points are one trial."""
    return "t" + hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:10]


def seed_points(teachers_in_order: list[str], search: SearchConfig,
                filters: dict[str, dict] | None = None) -> list[dict]:
    """First trials: every teacher once, in proxy order, with the first listed filter chain / rank / ratio, the
    geometric middle of the learning-rate range and the fewest epochs: a cheap first look at every teacher, after
    which the sampler (and ASHA) spend the rest of the budget where it looks promising. `filters`: teacher -> the
    filter part of its seed ({"filters": chain, <its searched parameters>: value}, one of chain_variants), for a
    teacher whose rationales the first chain's seed values would leave empty (search/usable.py); others get the
    first chain with its first choices / range middles."""
    lo, hi = search.learning_rate
    first = chain_variants(next(iter(search.filter_chains)), search)[0]
    fixed = {"lora.rank": search.lora_rank[0], "lora.alpha_ratio": search.lora_alpha_ratio[0],
             "lora.learning_rate": math.sqrt(lo * hi), "lora.epochs": min(search.epochs)}
    return [{"teacher": t, **((filters or {}).get(t) or first), **fixed} for t in teachers_in_order]


def chain_variants(name: str, search: SearchConfig) -> list[dict]:
    """The filter parts of points chain `name` can take, for checks on data (search/usable.py): every combination of
    each searched parameter's choices, or of a range's middle and two ends (each filter parameter keeps monotonically
    more or fewer rows, so a range keeps the most at one of its ends). The first is the seed's: first choices, range
    middles. filter_chain(variant, search) is its concrete chain."""
    dims = {}
    for i, step in enumerate(search.filter_chains[name]):
        for param, value in step.items():
            if not _searched(value):
                continue
            if "choices" in value:
                values = list(value["choices"])
            else:
                floats = not all(isinstance(v, int) for v in value["range"])  # suggest_float's points hold floats
                values = [_middle(value["range"]), *value["range"]]
                values = [float(v) for v in values] if floats else values
            dims[_param_name(name, i, param)] = list(dict.fromkeys(values))  # a value listed twice: once
    return [{"filters": name, **dict(zip(dims, combo))} for combo in itertools.product(*dims.values())]


def _middle(bounds: list):
    lo, hi = bounds
    return (lo + hi) // 2 if all(isinstance(v, int) for v in bounds) else (lo + hi) / 2


def grid_points(teachers: list[str], search: SearchConfig, where: str = "config") -> list[dict]:
    """search.strategy=grid: every point of the declared space, once each (see the module docstring). Teachers vary
    fastest, so a grid cut short has tried every teacher on the same settings. A value listed twice gives one point
    (one point_key: one trial directory). A space that is not finite is a ConfigError naming the key and the fix."""
    lo, hi = search.learning_rate
    if lo != hi:
        middle = f"{math.sqrt(lo * hi):.1e}"  # written with a "." and a signed exponent: YAML reads it as a number
        raise ConfigError(
            f"{where}: search.strategy=grid needs a finite space: search.learning_rate [{lo}, {hi}] is a continuous "
            f"range; set one value [v, v], e.g. \"search.learning_rate=[{middle}, {middle}]\" (one grid run per "
            f"learning rate to compare), or use search.strategy=optuna to sample the range")
    chains = []  # {"filters": name, <its searched parameters>: value, ...}, one per combination of their values
    for name, chain in search.filter_chains.items():
        dims = {_param_name(name, i, param): _grid_values(value, f"search.filter_chains.{name}[{i}].{param}", where)
                for i, step in enumerate(chain) for param, value in step.items() if _searched(value)}
        for values in itertools.product(*dims.values()):
            chains.append({"filters": name, **dict(zip(dims, values))})
    points, keys = [], set()
    for chain, rank, ratio, epochs in itertools.product(chains, search.lora_rank, search.lora_alpha_ratio,
                                                        search.epochs):
        for teacher in teachers:
            # float(): search_space's suggest_float yields a float even for [1, 1], and point_key tells 1 from 1.0
            point = {"teacher": teacher, **chain, "lora.rank": rank, "lora.alpha_ratio": ratio,
                     "lora.learning_rate": float(lo), "lora.epochs": epochs}
            if point_key(point) not in keys:
                keys.add(point_key(point))
                points.append(point)
    return points


def _grid_values(value: dict, key: str, where: str) -> list:
    """The values a grid tries for one searched filter parameter: its choices, or every integer of its range."""
    if "choices" in value:
        return list(value["choices"])
    lo, hi = value["range"]
    if not all(isinstance(v, int) for v in (lo, hi)):
        raise ConfigError(
            f"{where}: search.strategy=grid needs a finite space: {key} {{range: [{lo}, {hi}]}} is a continuous "
            f"range; list the values the grid should try, e.g. {{choices: [{lo}, {_middle([lo, hi])}, {hi}]}}")
    if not lo <= hi or hi - lo + 1 > GRID_RANGE_MAX:
        why = "is empty (low > high)" if lo > hi else (f"has {hi - lo + 1} values (a grid enumerates at most "
                                                      f"{GRID_RANGE_MAX} per range)")
        raise ConfigError(f"{where}: search.strategy=grid: {key} {{range: [{lo}, {hi}]}} {why}; list the values the "
                          f"grid should try, e.g. {{choices: [{min(lo, hi)}, {_middle([lo, hi])}, {max(lo, hi)}]}}")
    return list(range(lo, hi + 1))


def validate_space(search: SearchConfig, teachers: list[str], where: str = "config") -> None:
    """Before any compute: every chain is valid with its searched parameters at both ends of their ranges, and
    the budget gives each teacher at least one trial (an Optuna search), or the space is finite (a grid: every
    concrete chain it will run is checked)."""
    from cotgap_ray.filters import validate_filters

    grid = search.strategy == "grid"
    if not grid and search.trials < len(teachers):  # a grid's budget is its size: every teacher is in every row
        raise ConfigError(
            f"{where}: search.trials={search.trials} is smaller than the {len(teachers)} teachers: every teacher "
            f"needs at least one trial to be compared. Raise search.trials to >= {len(teachers)} or drop teachers.")
    for name, chain in search.filter_chains.items():
        if not isinstance(chain, list) or not all(isinstance(s, dict) for s in chain):
            raise ConfigError(f"{where}: search.filter_chains.{name} must be a list of steps like "
                              f"[{{name: correct_only}}]")
        for end in (0, -1):
            concrete = [{p: (_end(v, end, f"search.filter_chains.{name}.{p}", where) if _searched(v) else v)
                         for p, v in step.items()} for step in chain]
            try:
                validate_filters(concrete)
            except ValueError as e:
                raise ConfigError(f"{where}: search.filter_chains.{name}: {e}") from e
    if grid:
        # A grid runs every listed choice, not only the ends checked above: each distinct chain it runs, checked.
        checked = set()
        for point in grid_points(teachers, search, where):
            concrete = filter_chain(point, search)
            tag = json.dumps(concrete, sort_keys=True, default=str)
            if tag in checked:
                continue
            checked.add(tag)
            try:
                validate_filters(concrete)
            except ValueError as e:
                raise ConfigError(f"{where}: search.filter_chains.{point['filters']} as the grid runs it, "
                                  f"{concrete}: {e}") from e


def _end(value: dict, end: int, key: str, where: str):
    items = value.get("range", value.get("choices"))
    if not isinstance(items, list) or not items or ("range" in value and len(items) != 2):
        raise ConfigError(f"{where}: {key} must be {{range: [low, high]}} or {{choices: [a, b, ...]}}")
    return items[end]
