"""cotgap search: which teacher should this student distill chain-of-thought from, on this task?

    cotgap search                                    # the embedded default (experiments/default.yaml) in runs/default
    cotgap search --config experiments/smoke.yaml --out runs/smoke search.trials=4
    cotgap search --config experiments/smoke.yaml --out runs/smoke --resume     # after a kill
    cotgap search --config experiments/smoke.yaml --plan   # what it would do on this cluster, loading nothing
    python -m cotgap_ray.search ...                  # the same command without the console script

The driver does no model work: it validates, plans, schedules and records. Every model is resolved and run in Ray
tasks and actors on nodes of the stage's type (models/remote.py); everything durable goes to the run directory and
caches, on the storage root when one is set (storage.py: <root>/runs/<name>, <root>/cache).

Stages, in order; each is cached or recorded in the run directory, so a re-run or --resume redoes nothing finished:
  1. validate   config, search space, task data, model specs, LoRA targets, resources (before any model loads;
                the command line's preflight, cotgap_ray/preflight.py, has checked what it can before Ray starts);
                with several nodes alive, that they all see the storage root; models resolved by tasks
  2. baseline   the student with no adapter on dev and test: same prompt, greedy decoding, same engine options as
                every adapter evaluation later (LoRA-enabled with the search's largest rank); a Ray task
  3. generation every teacher's rationales on train, once (Ray Data, content-addressed Parquet cache)
  4. proxies    per teacher, no training: accuracy, correct-rationale yield, student NLL (proxies.py)
  5. search     Ray Tune + OptunaSearch (study in run_dir/optuna.journal) + ASHA on the per-epoch dev delta; a pool
                of long-lived evaluation engines (evaluation/pool.py) scores every adapter, each paired with its own
                engine's baseline; test stays locked; a failed trial is retried (search.max_failures).
                A teacher that no filter chain leaves a rationale of gets no trial (search/usable.py, usable.json).
                With search.rule_out_alpha, teachers whose rationales solve significantly fewer train problems than
                another teacher's get no trial (search/allocation.py)
  6. confirm    each teacher's best dev config re-trained with confirm.seeds seeds, scored on TEST
  7. report     report.json / report.md / plots (report.py; `cotgap report RUN_DIR` re-renders; --json prints it)

Run directory: config.json, splits.json, status.json, baseline.json, proxies.json, trials/<key>/trial.json,
final/<teacher>.json, noise.json (each evaluation engine's A/A noise floor per split, search/noise.py), evals.json
(every evaluation: split, trial, stage, engine), evaluators/ (each engine's own log, merged into those two),
tune/ (Tune's experiment), optuna.journal,
train/ (Ray Train runs and adapters, unless train.storage_path / $COTGAP_STORAGE points elsewhere), report.*,
usable.json (rationales each filter chain keeps; not in a grid), allocation.json (with search.rule_out_alpha).
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
from cotgap_ray.training.threads import WHOLE_NODE
from cotgap_ray.search.noise import describe


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
    from cotgap_ray.storage import default_run_dir

    run_dir = Path(out) if out else default_run_dir(cfg)
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
    splits = load_splits(cfg.task)  # a bad row or an impossible split fails here
    from cotgap_ray.controls import check_controls
    from cotgap_ray.models import split_variant

    check_controls([split_variant(spec)[0] for spec in cfg.teachers], splits.train, cfg.task.name)
    return splits, refs


def baseline_task(cfg, spec: str, fingerprint: str | None, problem_sets: dict, lora_rank: int) -> dict:
    """The baseline's evaluation (scoring.evaluate_cached: cached by content under the storage root), run as a Ray
    task with the evaluation engine's resources, on the node it lands on. Returns {split: (EvalResult, problem_id ->
    correct)}: the rows' verdicts travel back as values, not as a path on that node."""
    from cotgap_ray.evaluation.paired import rows_correct
    from cotgap_ray.evaluation.scoring import evaluate_cached
    from cotgap_ray.models.remote import local_model, models_dir_setting

    model = local_model(spec, fingerprint, models_dir_setting(cfg))
    results = evaluate_cached(model, problem_sets, cfg, lora_rank=lora_rank)
    return {split: (r, rows_correct(r.rows_path)) for split, r in results.items()}


def evaluator_task_options(cfg) -> dict:
    """Ray options of a task that does the evaluation engine's work (baseline, student proxies): its declared
    resources, on a node of the fine-tune type, so the autoscaler sees the demand and the head does no model work."""
    from cotgap_ray.evaluation.evaluator import evaluator_request

    request = evaluator_request(cfg)
    options = {"num_cpus": request.pop("CPU", 0.0), "num_gpus": request.pop("GPU", 0.0), "max_retries": 2}
    if request:
        options["resources"] = request
    return options


def baseline_stage(run_dir: Path, cfg, student, splits, lora_rank: int) -> dict:
    """Stage 2: the student's own accuracy, cached by content (student: models.remote.ModelFacts). Returns {split:
    (EvalResult, problem_id -> correct)}; every delta is measured against an evaluation engine's own rows, and these
    are what its cross-start count compares with (search/noise.py)."""
    import ray

    task = ray.remote(baseline_task).options(name="cotgap-baseline", **evaluator_task_options(cfg))
    baseline = ray.get(task.remote(cfg, student.model.spec, student.model.fingerprint,
                                   {"dev": splits.dev, "test": splits.test}, lora_rank))
    write_json(run_dir / "baseline.json", {k: r.summary() for k, (r, _) in baseline.items()})
    print(f"\nbaseline of {student.model.name} (no adapter, greedy, shared prompt):")
    for split, (r, _) in baseline.items():
        lo, hi = r.ci95
        print(f"  {split:<5} n={r.n:<5} {100 * r.accuracy:5.1f}%  [{100 * lo:.1f}, {100 * hi:.1f}]")
    return baseline


def proxies_stage(run_dir: Path, cfg, student, splits, generations: dict, threads: int | str | None = WHOLE_NODE
                  ) -> tuple[dict, dict]:
    """Stage 4: proxies per teacher (cached in proxies.json) and the tables trials filter (with the student columns
    of sft.with_student_scores when a chain uses the student_nll filter). Returns (proxies by teacher name, rationale
    tables by teacher name). A cached entry without one of the student proxies (an older run's) is scored again."""
    import pyarrow.parquet as pq

    from cotgap_ray.proxies import base_proxies, needs_student_scoring, nll_sample, rank_teachers, student_proxies
    from cotgap_ray.proxies import describe as describe_proxies
    from cotgap_ray.proxies import truncation_warning

    needs_nll = any(s.get("name") == "student_nll" for chain in cfg.search.filter_chains.values() for s in chain)
    tables = {g.teacher: g.table() for g in generations.values()}
    saved = run_dir / "proxies.json"
    nll_dir = run_dir / "student_nll"
    proxies = json.loads(saved.read_text()) if saved.exists() else {}
    todo = [g for g in generations.values() if needs_student_scoring(proxies.get(g.teacher))
            or (needs_nll and not (nll_dir / f"{g.teacher}.parquet").exists())]
    if todo:
        questions = {p.id: p.question for p in splits.train}
        # One scoring of the student gives NLL, RSR and local NLL per row (never run it twice).
        inputs = {g.teacher: tables[g.teacher] if needs_nll else nll_sample(tables[g.teacher],
                                                                             cfg.search.proxy_rationales)
                  for g in todo}
        scored_by_teacher = _score_students(cfg, student, inputs, questions, threads)
        for g in todo:
            scored = scored_by_teacher[g.teacher]
            # Each proxy is the mean over the same hash sample of correct rationales whether or not a chain needed
            # every row scored (proxies.nll_sample), so it does not depend on the search space.
            entry = base_proxies(g.summary) | student_proxies(scored, cfg.search.proxy_rationales)
            proxies[g.teacher] = entry
            if needs_nll:
                nll_dir.mkdir(exist_ok=True)
                pq.write_table(scored, nll_dir / f"{g.teacher}.parquet")
    if needs_nll:
        tables = {name: pq.read_table(nll_dir / f"{name}.parquet") for name in tables}
    for g in generations.values():
        # An entry cached by an older run lacks the counts added since (the cut at max_tokens): the summary has them,
        # and never overrides what the entry holds. The warning is recomputed from the entry.
        proxies[g.teacher] = base_proxies(g.summary) | proxies[g.teacher]
        proxies[g.teacher]["truncation_warning"] = truncation_warning(g.teacher, proxies[g.teacher])
    rank_teachers(proxies)
    write_json(saved, proxies)
    print("\nteacher proxies (train rationales, no training):")
    for line in describe_proxies(proxies):
        print(line)
    return proxies, tables


def allocation_stage(run_dir: Path, cfg: ExperimentConfig, tables: dict, refs: list[TeacherRef],
                     train_ids: list[str]) -> list[str]:
    """The teacher specs the search spends trials on, in config order: every teacher that some filter chain leaves a
    training example of (search/usable.py, written to usable.json), less those search.rule_out_alpha rules out from
    their rationales (search/allocation.py, written to allocation.json); both for the report. A grid searches all.
    InputError, before any fine-tune, when no teacher is left."""
    from cotgap_ray.search import usable

    path, usable_path = run_dir / "allocation.json", run_dir / usable.FILE
    if cfg.search.strategy == "grid":  # ground truth: every teacher, even one whose every trial ends no_data
        path.unlink(missing_ok=True)  # a record of this run's allocation only: a grid ignores the setting
        usable_path.unlink(missing_ok=True)
        return list(cfg.teachers)
    # Recomputed on every (re)start from the cached rationales: the same inputs give the same teachers.
    decided = usable.decide({ref.name: tables[ref.name] for ref in refs}, cfg.search, cfg.generation.max_tokens)
    write_json(usable_path, decided)
    if lines := usable.describe(decided):
        print("\ntraining data (search.filter_chains over the cached rationales):")
        for line in lines:
            print(f"  {line}")
    usable.check_some_kept(decided)
    kept = set(decided["kept"])
    if cfg.search.rule_out_alpha is None:
        path.unlink(missing_ok=True)
        return [ref.spec for ref in refs if ref.name in kept]
    from cotgap_ray.controls import is_control
    from cotgap_ray.search.allocation import allocate, chains_beyond_the_proxy
    from cotgap_ray.search.allocation import describe as describe_allocation

    allocation = allocate({ref.name: tables[ref.name] for ref in refs}, train_ids, cfg.search.rule_out_alpha,
                          controls=frozenset(ref.name for ref in refs if is_control(ref.spec)))
    allocation["chains_beyond_the_proxy"] = chains_beyond_the_proxy(cfg.search.filter_chains)
    write_json(path, allocation)
    print("\nproxy-guided allocation (search.rule_out_alpha):")
    for line in describe_allocation(allocation):
        print(f"  {line}")
    if not kept & set(allocation["kept"]):  # the leader solves most problems, yet a chain can still empty it
        from cotgap_ray.errors import InputError

        them = "it" if len(allocation["kept"]) == 1 else "them"
        raise InputError(f"no teacher is left to search: search.rule_out_alpha kept {', '.join(allocation['kept'])}, "
                         f"and no filter chain leaves a training example of {them} (usable.json); "
                         f"unset search.rule_out_alpha, or add a chain without correct_only, e.g. "
                         f"search.filter_chains.all=[]")
    return [ref.spec for ref in refs if ref.name in kept and ref.name in allocation["kept"]]


def _score_students(cfg, student, tables: dict, questions: dict, threads: int | str | None = WHOLE_NODE) -> dict:
    """student_scores_task on a node of the evaluation engine's type; {teacher: scored table}."""
    import ray

    task = ray.remote(student_scores_task).options(name="cotgap-student-proxies", **evaluator_task_options(cfg))
    return ray.get(task.remote(cfg, student.model.spec, student.model.fingerprint, tables, questions, threads))


def student_scores_task(cfg, spec: str, fingerprint: str | None, tables: dict, questions: dict,
                        threads: int | str | None = None) -> dict:
    """The student's per-row NLL, RSR and local NLL of each teacher's rationales (sft.with_student_scores), as a Ray
    task with the evaluation engine's resources: the student is resolved and loaded on that node, never in the
    driver. The local NLL costs a pass per later step, so only the proxies' sample gets it (proxies.nll_sample_rows:
    every row when only the sample was sent, that sample's rows when a student_nll filter sent every row).
    threads: training/threads.apply_threads' setting; WHOLE_NODE where nothing else of the run computes meanwhile (the
    run waits for this task), None (Ray's: the task's CPUs) where another student may train on the node."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotgap_ray.models.remote import local_model, models_dir_setting
    from cotgap_ray.proxies import nll_sample_rows
    from cotgap_ray.sft import with_student_scores
    from cotgap_ray.training.threads import apply_threads

    print(f"student proxies: {apply_threads(threads)} torch thread(s)")
    student = local_model(spec, fingerprint, models_dir_setting(cfg))
    model = AutoModelForCausalLM.from_pretrained(student.path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(student.path)
    return {teacher: with_student_scores(table, model, tokenizer, questions, max_length=cfg.lora.max_length,
                                         local_rows=nll_sample_rows(table, cfg.search.proxy_rationales))
            for teacher, table in tables.items()}


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _engines_alive(names: list[str], run_dir: Path, stage: str) -> None:
    """RunFailure when no evaluation engine answers (each is restarted by Ray on another node when its node is lost,
    up to evaluation.pool.RESTARTS times): every later evaluation would fail; trials it failed are recorded `failed`,
    which --resume runs again."""
    import ray

    errors = []
    for name in names:
        try:
            ray.get(ray.get_actor(name).ready.remote(), timeout=300)
            return
        except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
            errors.append(f"{name}: {_first_line(e)}")
    raise RunFailure(f"the evaluation engines died during the {stage} stage ({'; '.join(errors)}); trials that "
                     f"finished are kept in {run_dir / 'trials'} and trials they failed are marked failed: run "
                     f"again with --resume to continue")


# -------------------------------------------------------------------------------------------------------- run


def check_same_problems(run_dir: Path, splits) -> None:
    """A run directory continues only on the problems it began with: the config's fingerprint cannot tell when the
    same config yields other problems (a new reasoning_gym, an edited data file, the task seeds' blocks of
    tasks/reasoning_gym.py), and trials scored on the old dev split beside confirmations on a new test split would
    be one report of two samples. Refused, naming both fingerprints, before any compute."""
    saved = run_dir / "splits.json"
    if not saved.exists():
        return
    try:
        before = json.loads(saved.read_text()).get("fingerprint")
    except (ValueError, AttributeError):
        before = None  # unreadable: integrity.check_run_dir owns damaged files; the run rewrites it below
    if before and before != splits.fingerprint():
        raise ConfigError(f"{run_dir} began on other problems than this config now yields (split {before}, now "
                          f"{splits.fingerprint()}): the task's data or its generator changed (since 2026-12-06 a "
                          f"reasoning_gym task.seed other than 0 draws problems of its own); its records are kept: "
                          f"choose another --out to run this config on today's problems")


def run(cfg: ExperimentConfig, out: str | None = None, resume: bool = False, validated=None, share=None) -> Path:
    """All stages (see the module docstring); returns the run directory. The driver does no model work: it validates,
    plans, schedules and records; every model is resolved and run in Ray tasks and actors that declare their
    resources (models/remote.py), and everything durable goes to the run directory and caches on the storage root.
    validated: what validate(cfg) returned, when the caller has just run it (run_students, for every student before
    the first starts); None: stage 1 runs here. share: this student's part of the cluster when students of a pairs
    run search side by side (search/side_by_side.Share); None: the run sizes itself on the whole cluster."""
    from dataclasses import replace

    from cotgap_ray.storage import storage_root

    root = storage_root(cfg)
    if root is not None:  # tasks and trials read the root from the config they are handed, whatever their env says
        cfg = replace(cfg, storage_path=str(root))
    splits, refs = validated or validate(cfg)  # validate reads nothing of the storage root set just above
    run_dir = prepare_run_dir(cfg, out, resume, refs).resolve()
    from cotgap_ray.search.integrity import check_run_dir

    notes = check_run_dir(run_dir)  # damaged files: set aside and rebuilt, or refused by name, before any compute
    check_same_problems(run_dir, splits)
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

    _ray_init()
    # Every stage's request (generation engines, the evaluation engine, fine-tune workers) is checked here, before
    # the first model is resolved (a packaged model is converted on first use) and before the baseline.
    check_resources(cfg)
    from cotgap_ray.cluster import alive_node_ids
    from cotgap_ray.storage import check_shared

    if len(alive_node_ids()) > 1:  # every node writes records, adapters and evaluations where the driver reads them
        check_shared(root or run_dir)

    student, teachers = resolve_stage(cfg, refs)
    lora_rank = max(cfg.search.lora_rank)  # one engine configuration for the baseline and every adapter

    _status(run_dir, cfg, "baseline", notes)
    baseline = baseline_stage(run_dir, cfg, student, splits, lora_rank)

    _status(run_dir, cfg, "generation", notes)
    from cotgap_ray.generation.pipeline import generate_teachers

    generations = dict(zip(cfg.teachers, generate_teachers(teachers, splits, cfg, split="train",
                                                           task=cfg.task.name)))
    _status(run_dir, cfg, "proxies", notes)
    # the whole node while the run waits for the proxies, unless another student may train there
    proxies, tables = proxies_stage(run_dir, cfg, student, splits, generations, threads=None if share else WHOLE_NODE)

    _status(run_dir, cfg, "search", notes)
    from cotgap_ray.cluster import offered_node_types
    from cotgap_ray.evaluation.pool import close_pool, merge_logs, start_pool
    from cotgap_ray.search.resources import concurrency

    # trials at once and the engines that score them, together (a student beside others: its share of them)
    size = share.engines if share else concurrency(cfg, offered_node_types())[1]
    engines = start_pool(student, {"dev": splits.dev, "test": splits.test}, cfg, lora_rank, run_dir, size,
                         {split: correct for split, (_, correct) in baseline.items()})
    try:
        # Every delta pairs rows of one engine: its own baseline, with its A/A noise floor (search/noise.py), which
        # each engine measures now, before any trial (and again after a restart on another node).
        _engine_baselines(engines, "dev", "search")
        searched = allocation_stage(run_dir, cfg, tables, refs, [p.id for p in splits.train])
        baseline_dev = _any_baseline(engines, "dev")
        records = tuning.run_search(run_dir, cfg, tables, refs, {p.id: p.question for p in splits.train},
                                    baseline_dev, proxies, resume, searched=searched, engines=engines,
                                    student_fingerprint=student.model.fingerprint, share=share)
        _status(run_dir, cfg, "confirm", notes)
        _engines_alive(engines, run_dir, "search")  # dead engines fail trials, which Tune only records
        ray.get([ray.get_actor(name).open_test.remote() for name in engines])
        from cotgap_ray.search import confirm

        _engine_baselines(engines, "test", "confirm")
        baseline_test = _any_baseline(engines, "test")
        try:
            confirm.confirm_all(run_dir, cfg, records, tables, {p.id: p.question for p in splits.train},
                                baseline_test, refs, engines, student.model.fingerprint,
                                at_once=share.students if share else 1)
        except ray.exceptions.RayActorError as e:
            _engines_alive(engines, run_dir, "confirmation")
            raise RunFailure(f"a Ray actor of the confirmation died ({_first_line(e)}); the confirmations "
                             f"finished so far are kept in {run_dir / 'final'}: run again with --resume") from e
    finally:
        close_pool(engines)
        merge_logs(run_dir)
    _status(run_dir, cfg, "done", notes)
    from cotgap_ray.report import render

    report = render(run_dir)
    print(f"\n{report['recommendation']['text']}\nreport: {run_dir / 'report.md'}")
    return run_dir


def run_students(cfg: ExperimentConfig, out: str | None = None, resume: bool = False) -> Path:
    """Several students (search/pairs.py): every student's run, each a whole single-student run under
    RUN_DIR/students/<name>/, side by side as the cluster holds them (search/side_by_side.py; each in a driver
    process of its own, search/student_process.py, after every teacher's rationales are generated once here) or one
    after another in this process, then the matrix (report_pairs.py); returns the parent run directory. The students
    list must have passed pairs.check_students: _main, its only caller, checks it before preflight and Ray."""
    from cotgap_ray.report_pairs import render_pairs, student_dir
    from cotgap_ray.search.pairs import student_configs
    from cotgap_ray.search.side_by_side import describe

    # No check_students here: _main ran it on this very config before preflight (and --plan), the one way in.
    configs = student_configs(cfg)
    # Every student's stage 1 (config, space, task, controls) before any student starts; its result is handed to
    # that student's run, which would otherwise load the task and check it all again.
    validated = {name: validate(one) for name, one in configs}
    run_dir = prepare_run_dir(cfg, out, resume, teacher_refs(cfg)).resolve()
    share = configs[0][1].search.trials
    unspent = cfg.search.trials - share * len(configs)
    print(f"pairs: {len(configs)} students x {len(cfg.teachers)} teachers in {run_dir}"
          + ("" if cfg.search.strategy == "grid" else
             f"; search.trials={cfg.search.trials}: {share} per student"
             + (f", {unspent} unspent (not a multiple of the students)" if unspent else "")))
    part = students_share(configs[0][1], len(configs))
    print(describe(part, len(configs)))
    jobs = [(name, one, student_dir(run_dir, name)) for name, one in configs]
    if part is None:
        for i, (name, one, sub) in enumerate(jobs, 1):
            print(f"\n=== student {i} of {len(configs)}: {one.student} ({sub}) ===")
            run(one, str(sub), resume=resume and (sub / "config.json").exists(),  # a student not begun starts fresh
                validated=validated[name])
    else:
        from cotgap_ray.search.student_process import StudentJob, run_side_by_side

        shared_generation(configs[0][1], validated[configs[0][0]], run_dir)  # before students all generate
        run_side_by_side([StudentJob(name, one, sub, resume and (sub / "config.json").exists(), validated[name])
                          for name, one, sub in jobs], part, run_dir, run)
    report = render_pairs(run_dir)
    print(f"\n{report['answer']['text']}\nreport: {run_dir / 'report.md'}")
    return run_dir


def students_share(one: ExperimentConfig, students: int):
    """Connect to Ray (start a local cluster when none runs) and decide how `students` students run: their share of
    the cluster side by side (search/side_by_side.Share), or None (one after another). `one`: a student's config."""
    from cotgap_ray.cluster import offered_node_types
    from cotgap_ray.search.resources import check_resources
    from cotgap_ray.search.side_by_side import share

    _ray_init()
    check_resources(one)  # an impossible request is refused before any student starts
    return share(one, students, offered_node_types())


def shared_generation(one: ExperimentConfig, validated, run_dir: Path) -> None:
    """Every teacher's train rationales, generated once before students run side by side (each student's
    generation stage then finds every shard cached; the cache is never keyed by the student). `one`: the first
    student's config (its student is resolved too: the context lengths are checked against it)."""
    from dataclasses import replace

    from cotgap_ray.cluster import alive_node_ids
    from cotgap_ray.generation.pipeline import generate_teachers
    from cotgap_ray.storage import check_shared, storage_root

    root = storage_root(one)
    if root is not None:
        one = replace(one, storage_path=str(root))
    if len(alive_node_ids()) > 1:  # generation nodes write the shards where every student's driver reads them
        check_shared(root or run_dir)
    splits, refs = validated
    print(f"\n=== rationales: {len(one.teachers)} teachers, generated once for every student ===")
    _, teachers = resolve_stage(one, refs)
    generate_teachers(teachers, splits, one, split="train", task=one.task.name)


def _ray_init() -> None:
    """Join the running cluster (ray up / ray start), else start a local one; nothing when Ray is up."""
    import ray

    if not ray.is_initialized():
        from cotgap_ray.cluster.local import second_cluster_warning

        if warning := second_cluster_warning():  # two local clusters on one machine break Ray Train's cleanup
            print(warning, file=sys.stderr)
        ray.init()  # joins a running cluster (ray up / ray start) when there is one, else starts a local one


def resolve_stage(cfg: ExperimentConfig, refs: list[TeacherRef]):
    """Each model resolved by a Ray task on a node of the stage that runs it (models/remote.py): the student where
    evaluation runs, each teacher where generation runs; the driver checks what they report (names, context
    lengths, LoRA targets) and loads nothing. Returns (student facts, teacher facts)."""
    from cotgap_ray.engines.options import check_context_lengths
    from cotgap_ray.models import check_student
    from cotgap_ray.models.remote import describe_remote
    from cotgap_ray.training.examples import check_target_modules

    check_student(cfg.student)
    (student,) = describe_remote([cfg.student], cfg, "evaluator")
    teachers = describe_remote(list(cfg.teachers), cfg, "generation")
    check_context_lengths([student, *teachers], cfg)
    for ref, facts in zip(refs, teachers):  # the name rows and files use must be the one config.json records
        if facts.model.name != ref.name:
            raise RuntimeError(f"teacher {ref.spec}: resolved as {facts.model.name!r} but validated as {ref.name!r} "
                               f"(models.spec_name and resolve_model disagree: a bug)")
    check_target_modules(student.linear_modules, cfg.lora.target_modules)
    return student, teachers


def _engine_baselines(engines: list[str], split: str, stage: str) -> None:
    """Each engine's own baseline and A/A noise floor on `split`, measured in parallel; printed."""
    import ray

    for noise in ray.get([ray.get_actor(name).baseline.remote(split, stage) for name in engines]):
        print(describe(noise))


def _any_baseline(engines: list[str], split: str) -> dict:
    """Engine 0's baseline correctness (problem ids and a fallback; each score pairs with its own engine's)."""
    import ray

    return ray.get(ray.get_actor(engines[0]).correct.remote(split))


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
    from cotgap_ray.search import pairs

    pairs.check_students(cfg)
    preflight(cfg, out=args.out, out_is_run_dir=True, work=("generation", "evaluator", "finetune"))
    if args.plan:  # stage 1's cheap checks and the splits, then the plan: no model, no Ray started, no run directory
        from cotgap_ray.search.plan import print_plan

        if not cfg.students:
            with work_output(args.json):
                splits, _ = validate(cfg)
            print_plan(cfg, splits, rates_file=args.rates, as_json=args.json)
            return 0
        plans = {}
        for name, one in pairs.student_configs(cfg):  # one plan per student (the teachers' generation is shared)
            with work_output(args.json):  # with --json the tables go to stderr, one JSON object to stdout
                splits, _ = validate(one)
                print(f"\n=== student {one.student} (search.trials {one.search.trials} of {cfg.search.trials}; "
                      f"rationales shared with the other students) ===")
                plans[name] = print_plan(one, splits, rates_file=args.rates, students=len(cfg.students))
        if args.json:
            print(json.dumps({"students": plans}, indent=2))
        return 0
    with work_output(args.json):
        run_dir = (run_students if cfg.students else run)(cfg, args.out, args.resume)
    if args.json:
        print((run_dir / "report.json").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
