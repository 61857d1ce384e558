"""cotgap search: which teacher should this student distill chain-of-thought from, on this task?

    cotgap search                                    # the embedded default (experiments/default.yaml) in runs/default
    cotgap search --config experiments/smoke.yaml --out runs/smoke search.trials=4
    cotgap search --config experiments/smoke.yaml --out runs/smoke --resume     # after a kill
    python -m cotgap_ray.search ...                  # the same command without the console script

Stages, in order; each is cached or recorded in the run directory, so a re-run or --resume redoes nothing finished:
  1. validate   config, search space, task data, model specs, LoRA targets, resources (before any model loads;
                the command line's preflight, cotgap_ray/preflight.py, has checked what it can before Ray starts)
  2. baseline   the student with no adapter on dev and test: same prompt, greedy decoding, same engine options as
                every adapter evaluation later (LoRA-enabled with the search's largest rank)
  3. generation every teacher's rationales on train, once (Ray Data, content-addressed Parquet cache)
  4. proxies    per teacher, no training: accuracy, correct-rationale yield, student NLL (proxies.py)
  5. search     Ray Tune + OptunaSearch (study in run_dir/optuna.db) + ASHA on the per-epoch dev delta; one
                long-lived evaluation engine scores every adapter (evaluation/evaluator.py); test stays locked.
                With search.rule_out_alpha, teachers whose rationales solve significantly fewer train problems than
                the best teacher's get no trial (search/allocation.py)
  6. confirm    each teacher's best dev config re-trained with confirm.seeds seeds, scored on TEST
  7. report     report.json / report.md / plots (report.py; `cotgap report RUN_DIR` re-renders; --json prints it)

Run directory: config.json, splits.json, status.json, baseline.json, proxies.json, trials/<key>/trial.json,
final/<teacher>.json, noise.json (the evaluation engine's A/A noise floor per split, search/noise.py), evals.json
(every evaluation: split, trial, stage), tune/ (Tune's experiment), optuna.db,
train/ (Ray Train runs and adapters, unless train.storage_path / $COTGAP_STORAGE points elsewhere), report.*,
allocation.json (with search.rule_out_alpha).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cotgap_ray.cli import load, parse, verb_parser, work_output
from cotgap_ray.config import ConfigError, ExperimentConfig
from cotgap_ray.errors import RunFailure, run_cli
from cotgap_ray.records import TeacherRef, record_to_dict, write_json
from cotgap_ray.search.noise import describe, engine_baseline


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = verb_parser("search", __doc__, out="the run directory (default: <out_dir>/<name>, e.g. runs/default)",
                         json_help="print report.json on stdout when done (the progress goes to stderr); with "
                                   "--plan, the plan")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (config must match)")
    parser.add_argument("--plan", action="store_true",
                        help="print what the run would do here (stages and their sizes, where each runs, node-hours "
                             "from search/plan.py's rates), then exit; loads no model and runs nothing")
    parser.add_argument("--rates", metavar="FILE",
                        help="with --plan: a JSON file of throughputs replacing the plan's own, e.g. {\"train.gpu\": "
                             "5200}")
    return parse(parser, argv)


# ------------------------------------------------------------------------------------------------ run directory


def prepare_run_dir(cfg: ExperimentConfig, out: str | None, resume: bool,
                    teachers: list[TeacherRef] | None = None) -> Path:
    """The run directory, bound to one config: a directory holding a different experiment is refused. config.json
    also records each teacher's spec and name (`teachers`), so the report never re-derives one from the other."""
    run_dir = Path(out) if out else Path(cfg.out_dir) / cfg.name
    saved = run_dir / "config.json"
    if saved.exists():
        try:
            previous = json.loads(saved.read_text())
        except ValueError as e:  # which experiment the directory holds is unknown: never guess, never overwrite
            raise ConfigError(f"{saved}: unreadable ({e}); it says which experiment {run_dir} holds, so the run "
                              f"cannot be matched to this config: restore it, or choose another --out") from None
        if previous.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(
                f"{run_dir} holds a different experiment (config {previous.get('fingerprint')}, this one "
                f"{cfg.fingerprint()}); choose another --out, or restore that config to --resume it"
            )
    elif resume:
        raise ConfigError(f"--resume: {run_dir} holds no run to resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    from cotgap_ray.search.lock import hold_run_dir

    hold_run_dir(run_dir)  # a second search on this directory is refused here, before it writes anything
    refs = teachers if teachers is not None else teacher_refs(cfg)
    write_json(saved, {"fingerprint": cfg.fingerprint(), "config": cfg.to_dict(),
                        "teachers": [record_to_dict(r) for r in refs]})
    return run_dir


def _status(run_dir: Path, cfg, stage: str, notes: list[str]) -> None:
    """status.json (what the report reads) and the dashboard's cotgap_stage gauge."""
    write_json(run_dir / "status.json", {"stage": stage, "notes": notes, "updated": time.time()})
    from cotgap_ray.cluster import metrics

    metrics.stage(stage, experiment=cfg.name)


# ----------------------------------------------------------------------------------------------------- stages


def teacher_refs(cfg: ExperimentConfig) -> list[TeacherRef]:
    """Each teacher's spec and short name, resolved once (no model is loaded). Two specs with one name would mix
    their rationales and files: refused."""
    from cotgap_ray.models import spec_name

    refs = []
    for spec in cfg.teachers:
        try:
            refs.append(TeacherRef(spec=spec, name=spec_name(spec)))
        except ValueError as e:
            raise ConfigError(f"teachers: {spec!r}: {e}") from e
    names = [r.name for r in refs]
    for ref in refs:
        if names.count(ref.name) > 1:
            same = [r.spec for r in refs if r.name == ref.name]
            raise ConfigError(f"teachers: {' and '.join(same)} share the name {ref.name!r}, which names their "
                              f"rationales, trials and report rows; keep one of them (or copy one to a directory "
                              f"with another name)")
    return refs


def validate(cfg: ExperimentConfig):
    """Stage 1: everything that can fail cheaply, before any model loads. Returns (splits, teacher refs)."""
    from cotgap_ray.models import offline_unless_hub
    from cotgap_ray.search.space import validate_space
    from cotgap_ray.tasks import load_splits

    if not cfg.teachers:
        raise ConfigError("teachers: the list is empty; name at least one teacher model spec")
    if len(set(cfg.teachers)) != len(cfg.teachers):
        raise ConfigError(f"teachers: a teacher is listed twice: {cfg.teachers}")
    validate_space(cfg.search, cfg.teachers)
    refs = teacher_refs(cfg)
    offline_unless_hub([cfg.student, *cfg.teachers])
    return load_splits(cfg.task), refs  # a bad row or an impossible split fails here


def baseline_stage(run_dir: Path, cfg, student, splits, lora_rank: int) -> dict:
    """Stage 2: the student's own accuracy, cached by content; every delta is measured against these rows."""
    from cotgap_ray.evaluation.scoring import evaluate_cached

    baseline = evaluate_cached(student, {"dev": splits.dev, "test": splits.test}, cfg, lora_rank=lora_rank)
    write_json(run_dir / "baseline.json", {k: v.summary() for k, v in baseline.items()})
    print(f"\nbaseline of {student.name} (no adapter, greedy, shared prompt):")
    for split, r in baseline.items():
        lo, hi = r.ci95
        print(f"  {split:<5} n={r.n:<5} {100 * r.accuracy:5.1f}%  [{100 * lo:.1f}, {100 * hi:.1f}]")
    return baseline


def proxies_stage(run_dir: Path, cfg, student, splits, generations: dict) -> tuple[dict, dict]:
    """Stage 4: proxies per teacher (cached in proxies.json) and the tables trials filter (with student_nll and
    student_rsr when a chain uses the student_nll filter). Returns (proxies by teacher name, rationale tables by
    teacher name). A cached entry without one of the student proxies (an older run's) is scored again."""
    import pyarrow.parquet as pq

    from cotgap_ray.proxies import base_proxies, needs_student_scoring, nll_sample, rank_teachers, student_proxies

    needs_nll = any(s.get("name") == "student_nll" for chain in cfg.search.filter_chains.values() for s in chain)
    tables = {g.teacher: g.table() for g in generations.values()}
    saved = run_dir / "proxies.json"
    nll_dir = run_dir / "student_nll"
    proxies = json.loads(saved.read_text()) if saved.exists() else {}
    todo = [g for g in generations.values() if needs_student_scoring(proxies.get(g.teacher))
            or (needs_nll and not (nll_dir / f"{g.teacher}.parquet").exists())]
    if todo:
        model, tokenizer = _load_student_for_nll(student.path)
        questions = {p.id: p.question for p in splits.train}
        from cotgap_ray.sft import with_student_scores

        for g in todo:
            table = tables[g.teacher]
            # One forward pass of the student gives both NLL and RSR per row (never run it twice).
            scored = with_student_scores(table if needs_nll else nll_sample(table, cfg.search.proxy_rationales),
                                         model, tokenizer, questions, max_length=cfg.lora.max_length)
            # Each proxy is the mean over the same hash sample of correct rationales whether or not a chain needed
            # every row scored (proxies.nll_sample), so it does not depend on the search space.
            entry = base_proxies(g.summary) | student_proxies(scored, cfg.search.proxy_rationales)
            proxies[g.teacher] = entry
            if needs_nll:
                nll_dir.mkdir(exist_ok=True)
                pq.write_table(scored, nll_dir / f"{g.teacher}.parquet")
        del model
    if needs_nll:
        tables = {name: pq.read_table(nll_dir / f"{name}.parquet") for name in tables}
    order = rank_teachers(proxies)
    write_json(saved, proxies)
    print("\nteacher proxies (train rationales, no training):")
    print(f"  {'rank':>4}  {'teacher':<32} {'accuracy':>8} {'yield':>6} {'correct':>7} {'NLL':>6} {'RSR':>6}"
          f" {'tokens':>6}   (RSR: lower = better suited, arXiv 2601.14249)")
    for name in order:
        p = proxies[name]
        nll, rsr = (f"{p[k]:.2f}" if p.get(k) is not None else "-" for k in ("student_nll", "student_rsr"))
        print(f"  {p['rank']:>4}  {name:<32} {100 * p['teacher_accuracy']:7.1f}% {100 * p['correct_yield']:5.1f}%"
              f" {p['correct_rows']:>7} {nll:>6} {rsr:>6} {p['mean_tokens']:6.0f}")
    return proxies, tables


def allocation_stage(run_dir: Path, cfg: ExperimentConfig, tables: dict, refs: list[TeacherRef],
                     train_ids: list[str]) -> list[str]:
    """The teacher specs the search spends trials on: all of them, unless search.rule_out_alpha rules some out from
    their rationales (search/allocation.py; written to allocation.json for the report). A grid searches all."""
    path = run_dir / "allocation.json"
    if cfg.search.rule_out_alpha is None or cfg.search.strategy == "grid":
        path.unlink(missing_ok=True)  # a record of this run's allocation only: a grid ignores the setting
        return list(cfg.teachers)
    from cotgap_ray.search.allocation import allocate, chains_beyond_the_proxy
    from cotgap_ray.search.allocation import describe as describe_allocation

    # Recomputed on every (re)start from the cached rationales: the same inputs give the same teachers.
    allocation = allocate({ref.name: tables[ref.name] for ref in refs}, train_ids, cfg.search.rule_out_alpha)
    allocation["chains_beyond_the_proxy"] = chains_beyond_the_proxy(cfg.search.filter_chains)
    write_json(path, allocation)
    print("\nproxy-guided allocation (search.rule_out_alpha):")
    for line in describe_allocation(allocation):
        print(f"  {line}")
    return [ref.spec for ref in refs if ref.name in allocation["kept"]]


def _load_student_for_nll(path: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(path))


def _record_noise(run_dir: Path, noise: dict) -> None:
    """Append one split's noise record to noise.json (one entry per evaluation-engine start and split: a resumed
    run starts another engine, and each start's floor is kept; the report uses the largest)."""
    path = run_dir / "noise.json"
    earlier = json.loads(path.read_text()) if path.exists() else []
    write_json(path, earlier + [{**noise, "time": time.time()}])
    print(describe(noise))


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _evaluator_alive(evaluator, run_dir: Path, stage: str) -> None:
    """RunFailure when the evaluation engine's actor is gone (killed, its node lost): every later evaluation would
    fail, and trials it failed are recorded `failed`, which --resume runs again."""
    import ray

    try:
        ray.get(evaluator.ready.remote(), timeout=120)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
        raise RunFailure(f"the evaluation engine (Ray actor cotgap-evaluator) died during the {stage} stage "
                         f"({_first_line(e)}); trials that "
                         f"finished are kept in {run_dir / 'trials'} and trials it failed are marked failed: run "
                         f"again with --resume to continue") from e


def _save_evals(run_dir: Path, evaluator) -> None:
    """Append this session's evaluations (split, trial tag, stage) to evals.json: the record that the search
    stage never scored the test split."""
    import ray

    path = run_dir / "evals.json"
    earlier = json.loads(path.read_text()) if path.exists() else []
    try:
        calls = ray.get(evaluator.calls.remote(), timeout=60)
    except Exception as e:  # noqa: BLE001 - a dead evaluator must not hide the error that killed the run
        print(f"warning: could not read the evaluator's call log: {e}", file=sys.stderr)
        return
    write_json(path, earlier + calls)


# -------------------------------------------------------------------------------------------------------- run


def run(cfg: ExperimentConfig, out: str | None = None, resume: bool = False) -> Path:
    """All stages (see the module docstring); returns the run directory."""
    splits, refs = validate(cfg)
    run_dir = prepare_run_dir(cfg, out, resume, refs).resolve()
    from cotgap_ray.search.integrity import check_run_dir

    notes = check_run_dir(run_dir)  # damaged files: set aside and rebuilt, or refused by name, before any compute
    if len(cfg.teachers) == 1:
        notes.append(f"one teacher ({cfg.teachers[0]}): nothing to select between; the search tunes its filters "
                     f"and LoRA settings and the report says whether it helps the student at all")
        print(f"note: {notes[-1]}")
    write_json(run_dir / "splits.json", {"fingerprint": splits.fingerprint(), "sizes": splits.sizes(),
                                          "duplicates_dropped": splits.duplicates_dropped})
    print(f"run {run_dir}: task {cfg.task.name} {splits.sizes()} (split {splits.fingerprint()})")

    import ray

    from cotgap_ray.search import tuning
    from cotgap_ray.search.resources import check_resources

    if not ray.is_initialized():
        from cotgap_ray.cluster.local import second_cluster_warning

        if warning := second_cluster_warning():  # two local clusters on one machine break Ray Train's cleanup
            print(warning, file=sys.stderr)
        ray.init()  # joins a running cluster (ray up / ray start) when there is one, else starts a local one
    # Every stage's request (generation engines, the evaluation engine, fine-tune workers) is checked here, before
    # the first model is resolved (a packaged model is converted on first use) and before the baseline.
    check_resources(cfg)

    from cotgap_ray.engines.options import check_context_lengths
    from cotgap_ray.models import resolve_all
    from cotgap_ray.training.examples import check_target_modules, student_skeleton

    student, *teachers = resolve_all([cfg.student, *cfg.teachers], cfg)
    check_context_lengths([student, *teachers], cfg)
    for ref, model in zip(refs, teachers):  # the name rows and files use must be the one config.json records
        if model.name != ref.name:
            raise RuntimeError(f"teacher {ref.spec}: resolved as {model.name!r} but validated as {ref.name!r} "
                               f"(models.spec_name and resolve_model disagree: a bug)")
    check_target_modules(student_skeleton(student.path), cfg.lora.target_modules)
    lora_rank = max(cfg.search.lora_rank)  # one engine configuration for the baseline and every adapter

    _status(run_dir, cfg, "baseline", notes)
    baseline = baseline_stage(run_dir, cfg, student, splits, lora_rank)

    _status(run_dir, cfg, "generation", notes)
    from cotgap_ray.generation.pipeline import generate_teachers

    generations = dict(zip(cfg.teachers, generate_teachers(teachers, splits, cfg, split="train",
                                                           task=cfg.task.name)))
    _status(run_dir, cfg, "proxies", notes)
    proxies, tables = proxies_stage(run_dir, cfg, student, splits, generations)

    _status(run_dir, cfg, "search", notes)
    from cotgap_ray.evaluation.evaluator import start_evaluator

    evaluator = start_evaluator(student, {"dev": splits.dev, "test": splits.test}, cfg, lora_rank)
    try:
        # Every delta pairs rows of this one engine: its own baseline, with its A/A noise floor (search/noise.py).
        baseline_dev, noise_dev = engine_baseline(evaluator, "dev", baseline["dev"].rows_path)
        _record_noise(run_dir, noise_dev)
        searched = allocation_stage(run_dir, cfg, tables, refs, [p.id for p in splits.train])
        records = tuning.run_search(run_dir, cfg, tables, refs, {p.id: p.question for p in splits.train},
                                    baseline_dev, proxies, resume, searched=searched)
        _status(run_dir, cfg, "confirm", notes)
        _evaluator_alive(evaluator, run_dir, "search")  # a dead evaluator fails trials, which Tune only records
        ray.get(evaluator.open_test.remote())
        from cotgap_ray.search import confirm

        baseline_test, noise_test = engine_baseline(evaluator, "test", baseline["test"].rows_path, "confirm")
        _record_noise(run_dir, noise_test)
        try:
            confirm.confirm_all(run_dir, cfg, records, tables, {p.id: p.question for p in splits.train},
                                baseline_test, refs, evaluator)
        except ray.exceptions.RayActorError as e:
            _evaluator_alive(evaluator, run_dir, "confirmation")
            raise RunFailure(f"a Ray actor of the confirmation died ({_first_line(e)}); the confirmations "
                             f"finished so far are kept in {run_dir / 'final'}: run again with --resume") from e
    finally:
        _save_evals(run_dir, evaluator)
        try:  # close the engine before the actor goes: its engine process and shared memory end cleanly
            ray.get(evaluator.close.remote(), timeout=60)
        except Exception as e:  # noqa: BLE001 - a dead or stuck evaluator is killed below all the same
            print(f"warning: the evaluation engine did not close cleanly ({type(e).__name__}); killing it",
                  file=sys.stderr)
        ray.kill(evaluator)
    _status(run_dir, cfg, "done", notes)
    from cotgap_ray.report import render

    report = render(run_dir)
    print(f"\n{report['recommendation']['text']}\nreport: {run_dir / 'report.md'}")
    return run_dir


# Keys the search decides per trial (search.* spaces them): an override of one would change nothing.
SEARCHED = {"lora.rank": "search.lora_rank", "lora.alpha": "search.lora_alpha_ratio",
            "lora.learning_rate": "search.learning_rate", "lora.epochs": "search.epochs",
            "filters": "search.filter_chains"}


def check_overrides(overrides: list[str]) -> None:
    """An override the search would ignore is an error that names the key to set instead."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in SEARCHED:
            raise ConfigError(f"override {item!r}: the search chooses {key} for every trial, so it would change "
                              f"nothing; set {SEARCHED[key]} (the values the search tries) instead. {key} is used by "
                              f"python -m cotgap_ray.distill, which runs one configuration")


def _main(argv: list[str] | None) -> int:
    args = _parse(argv)
    check_overrides(args.overrides)
    if args.rates and not args.plan:
        from cotgap_ray.errors import InputError

        raise InputError(f"--rates {args.rates}: only --plan uses rates; add --plan, or drop --rates")
    cfg = load(args)
    from cotgap_ray.preflight import preflight

    preflight(cfg, out=args.out, out_is_run_dir=True, work=("generation", "evaluator", "finetune"))
    if args.plan:  # stage 1's cheap checks and the splits, then the plan: no model, no Ray started, no run directory
        from cotgap_ray.search.plan import print_plan

        with work_output(args.json):
            splits, _ = validate(cfg)
        print_plan(cfg, splits, rates_file=args.rates, as_json=args.json)
        return 0
    with work_output(args.json):
        run_dir = run(cfg, args.out, args.resume)
    if args.json:
        print((run_dir / "report.json").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
