"""The Tune part of the search: resources per trial, the Tuner (OptunaSearch + ASHA), resume, and the trial records.
search.strategy=grid runs through the same Tuner, study, trial function and records: GridSearch hands every point
of the space (space.grid_points) to the study in turn, num_samples is their count (the sampler is never asked), and
FIFO replaces ASHA, so each point runs once to its planned epochs.

    records = run_search(run_dir, cfg, tables, teacher_names, problems, baseline_dev, proxies, resume=False)
    records["t3f9c0a12b4"] -> {"teacher": "qwen2.5-coder-0.5b-instruct", "status": "ok", "dev_delta": 0.04, ...}

Resume: the Optuna study lives in run_dir/optuna.journal and Tune's experiment in run_dir/tune; `--resume` restores the
Tuner (finished trials stay finished, the searcher continues) and hands trials the epochs of every point already
recorded as finished in run_dir/trials, so even a trial Tune had not yet checkpointed as done is replayed, not
retrained. Records are written by a Tune callback in the driver (trials may run on other nodes).
"""

from __future__ import annotations

import json
import math
from collections import Counter
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from cotgap_ray.private_api import optuna_space_of, optuna_study_of, optuna_told_trials_of, optuna_trials_of
from cotgap_ray.records import EpochRecord, TeacherRef, TrialRecord, record_from_dict, record_to_dict, write_json
from cotgap_ray.search.resources import max_concurrent, per_trial_request, trial_request
from cotgap_ray.search.trial import TrialContext, no_data_report, tune_trial
from cotgap_ray.training.threads import describe_threads

FINAL_STATUSES = ("ok", "no_data", "stopped")


# ---------------------------------------------------------------------------------------------- placement groups


def release_placement_group(group_hex: str | None) -> bool:
    """Remove a finished trial's Ray Train placement group if it is still held; True when it was.

    When Tune stops a trial (ASHA, or its last epoch reaching max_t) it kills the trial's actor at once, often
    before TorchTrainer.fit() has shut its worker group down. Ray Train's own cleaner then frees the group only if
    it can reach Ray's state API (the dashboard), which is not always up (Ray issue #54305); a group left behind
    holds its CPUs/GPUs and every later trial waits for them. The trial is over when this runs, so removing its
    group is safe."""
    if not group_hex:
        return False
    from ray import PlacementGroupID  # public (in ray.__all__): not ray._raylet's
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex)))
    if placement_group_table(group).get("state") not in ("CREATED", "PENDING", "RESCHEDULING"):
        return False
    try:
        remove_placement_group(group)
    except Exception:  # noqa: BLE001 - removed concurrently by Ray Train: nothing left to free
        return False
    return True


# ---------------------------------------------------------------------------------------------------- records


def load_records(run_dir: Path) -> dict[str, TrialRecord]:
    """Every trial record of the run directory, by point key (records.TrialRecord, schema-checked)."""
    records = {}
    for path in sorted((run_dir / "trials").glob("*/trial.json")):
        records[path.parent.name] = record_from_dict(TrialRecord, json.loads(path.read_text()), str(path))
    return records


class TrialRecorder(tune.Callback):
    """Writes run_dir/trials/<key>/trial.json as results arrive, prints the live trial table, updates metrics."""

    def __init__(self, run_dir: Path, budget: int, experiment: str = "default"):
        self.run_dir, self.budget, self.experiment = Path(run_dir), budget, experiment
        self.records: dict[str, TrialRecord] = {}  # Tune trial id -> record
        self.groups: dict[str, str] = {}  # Tune trial id -> its Ray Train placement group (hex id)
        self.started = time.perf_counter()

    def _record(self, trial) -> TrialRecord:
        from cotgap_ray.search.space import point_key

        if trial.trial_id not in self.records:
            point = dict(trial.config)
            self.records[trial.trial_id] = TrialRecord(trial_id=point_key(point), tune_trial_id=trial.trial_id,
                                                       params=point)
        return self.records[trial.trial_id]

    def _save(self, rec: TrialRecord) -> None:
        write_json(self.run_dir / "trials" / rec.trial_id / "trial.json", rec)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self._record(trial)
        if result.get("placement_group"):
            self.groups[trial.trial_id] = result["placement_group"]
        rec.teacher = result.get("teacher", rec.teacher)
        # A result's "status" is what the trial says of itself ("ok": training, "no_data": ended); the record stays
        # "running" until Tune ends the trial (_finish), so a reader never mistakes epoch 1 for a finished trial.
        rec.outcome = result.get("status", "ok")
        rec.status = "running"
        rec.error = result.get("error")
        rec.replayed = bool(result.get("replayed", False))
        rec.n_train_examples = result.get("n_train_examples") or rec.n_train_examples
        rec.rationales_kept = result.get("rationales_kept") or rec.rationales_kept
        if result.get("filter_report"):
            rec.filter_report = json.loads(result["filter_report"])
        rec.seconds = result.get("time_total_s", rec.seconds)
        if rec.outcome == "ok":
            epoch = EpochRecord.from_metrics(result)
            rec.epochs = [e for e in rec.epochs if e.epoch != epoch.epoch] + [epoch]
            rec.dev_accuracy, rec.dev_delta = epoch.dev_accuracy, epoch.dev_delta
            rec.dev_delta_ci95 = [epoch.dev_delta_lo, epoch.dev_delta_hi]
            rec.p_value, rec.dev_discordance = epoch.p_value, epoch.dev_discordance
            # the verdict of the last epoch (trial_runner.score_epoch); absent from a replay of an older record
            rec.baseline_dev_accuracy = result.get("baseline_dev_accuracy", rec.baseline_dev_accuracy)
            rec.degrades, rec.improves = result.get("degrades", rec.degrades), result.get("improves", rec.improves)
            rec.train_tokens = sum(e.tokens or 0 for e in rec.epochs)
            rec.train_seconds = sum(e.seconds or 0 for e in rec.epochs)
            rec.adapter_dir = epoch.checkpoint_path
        self._save(rec)
        delta = f"{100 * rec.dev_delta:+.1f}" if rec.dev_delta is not None else "  - "
        print(f"  trial {rec.trial_id} [{rec.teacher}] epoch {result.get('epoch')}: {rec.outcome}, "
              f"dev delta {delta} points")

    def _finish(self, trial, status: str | None = None, error: str | None = None) -> None:
        from cotgap_ray.cluster import metrics

        rec = self._record(trial)
        if status:
            rec.status = status
        elif rec.outcome == "no_data":
            rec.status = "no_data"
        elif rec.epochs:
            # Fewer epochs than planned: ASHA ended it early; its last epoch is what it reached.
            rec.status = "ok" if len(rec.epochs) >= int(rec.params["lora.epochs"]) else "stopped"
        else:
            rec.status = "failed"
        rec.error = error or rec.error
        rec.finished_at = time.time()
        self._save(rec)
        if release_placement_group(self.groups.pop(trial.trial_id, None)):
            print(f"  freed the placement group trial {rec.trial_id} left behind when Tune stopped it")
        metrics.trial_finished(rec.teacher or rec.params.get("teacher"), rec.status, rec.dev_delta,
                               experiment=self.experiment)
        self._print_table()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed attempt Tune retries (search.max_failures): the epochs start again; why it failed is kept."""
        rec = self._record(trial)
        why = trial_error(trial)
        rec.retries.append(why)
        rec.epochs, rec.status = [], "running"
        self._save(rec)
        print(f"  trial {rec.trial_id} failed ({why[:200]}); Tune retries it (attempt {len(rec.retries) + 1})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, status="failed", error=trial_error(trial))

    def _print_table(self) -> None:
        recs = sorted(load_records(self.run_dir).values(), key=lambda r: r.finished_at or math.inf)
        done = sum(r.status in (*FINAL_STATUSES, "failed") for r in recs)
        print(f"\ntrials: {done} finished of {self.budget} ({time.perf_counter() - self.started:.0f}s in this run)")
        print(f"  {'trial':<12} {'teacher':<30} {'filters':<22} {'r':>3} {'lr':>8} {'ep':>2} {'status':<8} "
              f"{'n':>5} {'dev delta':>10}")
        for r in recs:
            p = r.params
            delta = f"{100 * r.dev_delta:+.1f}" if r.dev_delta is not None else "-"
            print(f"  {r.trial_id:<12} {str(r.teacher)[:30]:<30} {str(p.get('filters'))[:22]:<22} "
                  f"{p.get('lora.rank', ''):>3} {p.get('lora.learning_rate', 0):8.1e} {p.get('lora.epochs', ''):>2} "
                  f"{r.status:<8} {r.n_train_examples or 0:>5} {delta:>10}")


# ------------------------------------------------------------------------------------------------------ search


# How often the sampler may propose an already-tried point for one trial before the search takes the first untried
# point of a finite space (or ends, when none is left).
MAX_REPEATS = 32


class StudySearch(OptunaSearch):
    """OptunaSearch whose SQLite study may be ahead of Tune's experiment checkpoint, which never hands out the same
    point twice, and which gives every searched teacher the same number of trials.

    Equal budgets (issue 33 point 3): the answer is the teacher with the highest best-trial dev delta, so a teacher
    with more trials has more draws at the maximum and wins by chance (benchmarks/choice_simulation.py: 49.6% instead
    of 1/3 for the teacher with the extra trial of 4, no teacher better). So the teacher of each trial is not sampled:
    `first_points` (the proxy-seeded first look, space.seed_points) go out first, then each trial goes to the teacher
    with the fewest trials so far, ties to the earlier one in `teachers` (proxy order), and TPE samples the rest of
    the point with that teacher fixed (an enqueued study trial with partial params). run_search sets the budget to a
    multiple of the number of teachers. A searcher pickled before this (an older run's --resume) has neither list and
    samples the teacher as it did.

    A driver killed after Optuna recorded a trial as finished but before Tune checkpointed it restores that trial as
    unfinished; its (replayed) results then reach a study trial that is already complete, and plain OptunaSearch
    crashes with UpdateFinishedTrialError. The study already holds exactly that outcome, so it is skipped. The points
    still to hand out are searcher state, enqueued in the study only when Tune asks for a trial (not up front, as
    OptunaSearch's points_to_evaluate would): Tune pickles them with its experiment checkpoint, so after --resume
    they agree with the trials Tune knows about.

    TPE proposes points it has tried before, most of all in a small finite space (a proxy-guided search over one
    teacher, 4 points, proposed 2 of its 5 points twice on 2026-12-02 and trained them again). A repeat costs a
    fine-tune and measures nothing new: its study trial is closed with the earlier trial's value (or as failed while
    that one runs) and the sampler is asked again (same teacher); after MAX_REPEATS repeats the first untried point
    of that teacher in a finite space is taken, and when it has none the search ends (Searcher.FINISHED) with its
    budget unspent. Module level, not nested: Tune pickles the searcher into its experiment checkpoint."""

    def __init__(self, *args, teachers: list[str] | None = None, first_points: list[dict] | None = None, **kwargs):
        self._given: dict[str, str] = {}  # point key -> the Tune trial it was handed to
        self._teachers = list(teachers or [])  # the round-robin order; empty: the sampler picks the teacher
        self._todo = list(first_points or [])  # whole points handed out first, in order
        self._planned: dict[str, str] = {}  # Tune trial id -> the teacher it was given
        super().__init__(*args, **kwargs)

    def _fixed_params(self, trial_id: str, attempt: int):
        """The params fixed in the study trial about to be asked for `trial_id` (None: all sampled; FINISHED: none
        left). Attempt 0 takes the next first point when there is one; later attempts (after a repeat) keep the
        trial's teacher."""
        state = self.__dict__  # setdefault/get: a searcher pickled before these existed (an older run's --resume)
        planned = state.setdefault("_planned", {})
        if attempt == 0 and state.get("_todo"):
            point = self._todo.pop(0)
            planned[trial_id] = point["teacher"]
            return point
        teachers = state.get("_teachers")
        if not teachers:
            return None
        if trial_id not in planned:
            counts = Counter(planned.values())
            planned[trial_id] = min(teachers, key=lambda t: (counts[t], teachers.index(t)))
        return {"teacher": planned[trial_id]}

    def suggest(self, trial_id: str):
        from cotgap_ray.search.space import point_key

        for attempt in range(MAX_REPEATS):
            if trial_id not in optuna_trials_of(self):  # asked again for a trial it holds: the same point
                fixed = self._fixed_params(trial_id, attempt)
                if fixed == Searcher.FINISHED:
                    return fixed
                if fixed:
                    optuna_study_of(self).enqueue_trial(fixed)  # the next ask() takes it (define-by-run)
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            # setdefault on __dict__: a searcher pickled before _given existed (an older run's --resume) has none
            owner = self.__dict__.setdefault("_given", {}).setdefault(point_key(config), trial_id)
            if owner == trial_id:
                return config
            self._close_repeat(trial_id, owner)
        teacher = self.__dict__.get("_planned", {}).get(trial_id)
        untried = self._untried_point(teacher)
        if untried is None:
            print(f"search: every point of the space has been tried{f' for {teacher}' if teacher else ''}; the "
                  f"search ends after {len(self._given)} trials")
            return Searcher.FINISHED
        optuna_study_of(self).enqueue_trial(untried)  # the next ask() takes it
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self._given.setdefault(point_key(config), trial_id)
        return config

    def _close_repeat(self, trial_id: str, owner: str) -> None:
        """Close the study trial that repeated `owner`'s point: with owner's value when it has one, else failed."""
        repeat = optuna_trials_of(self).pop(trial_id)
        earlier = optuna_trials_of(self).get(owner)
        frozen = next((t for t in optuna_study_of(self).get_trials(deepcopy=False)
                       if earlier is not None and t.number == earlier.number), None)
        if frozen is not None and frozen.state == optuna.trial.TrialState.COMPLETE:
            optuna_study_of(self).tell(repeat, frozen.value)
        else:
            optuna_study_of(self).tell(repeat, state=optuna.trial.TrialState.FAIL)

    def _untried_point(self, teacher: str | None = None) -> dict | None:
        """The first point of the space (grid order) no trial has had, of `teacher` when given; None when the space is
        infinite (a searched continuous range) or exhausted."""
        from cotgap_ray.config import ConfigError
        from cotgap_ray.search.space import grid_points, point_key

        given = optuna_space_of(self)
        space = given.keywords if isinstance(given, partial) else {}
        try:
            points = grid_points(space["teachers"], space["search"])
        except (ConfigError, KeyError):
            return None
        return next((p for p in points if point_key(p) not in self._given and teacher in (None, p["teacher"])),
                    None)

    def on_trial_result(self, trial_id, result):
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id, result=None, error=False):
        ot_trial = optuna_trials_of(self).get(trial_id)
        planned = (ot_trial.params if ot_trial is not None else {}).get("lora.epochs")
        if (result and not error and planned and trial_id not in optuna_told_trials_of(self)
                and result.get("status") == "ok" and int(result.get("epoch") or 0) < int(planned)):
            # ASHA stopped it before its planned epochs: its last value is a mid-schedule number, not the result of
            # the configuration it stands for. Optuna records it as pruned (TPE ranks pruned trials by their last
            # reported epoch, below completed ones) instead of complete with that value.
            try:
                optuna_study_of(self).tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            except UpdateFinishedTrialError:
                pass
            optuna_told_trials_of(self).add(trial_id)
            return
        try:
            super().on_trial_complete(trial_id, result, error)
        except UpdateFinishedTrialError:
            optuna_told_trials_of(self).add(trial_id)


class GridSearch(StudySearch):
    """StudySearch that hands out exactly `points`, each once, in order, then says the search is finished
    (search.strategy=grid; num_samples = len(points)).

    Each point is enqueued in the study only when Tune asks for a trial, and asked for at once, instead of all of
    them up front (OptunaSearch's points_to_evaluate): the points still to hand out are then searcher state, which
    Tune pickles with its experiment checkpoint, so after --resume they agree with the trials Tune knows about even
    when the driver died after the study had recorded a trial Tune had not checkpointed (a queue in the study would
    be one point ahead: that point lost, the sampler asked for the last trial). A fresh run in a directory holding
    the study likewise starts from the full grid (points that finished earlier replay their records)."""

    def __init__(self, *args, points: list[dict], **kwargs):
        self._grid_todo = list(points)
        super().__init__(*args, **kwargs)

    def _fixed_params(self, trial_id: str, attempt: int):
        if attempt:  # a grid point is never a repeat; kept for the protocol
            return None
        return self._grid_todo.pop(0) if self._grid_todo else Searcher.FINISHED


def equal_budget(trials: int, teachers: int) -> int:
    """The trials an Optuna search runs: search.trials rounded down to a multiple of the teachers searched, so each
    gets the same number (StudySearch); at least one each (space.validate_space refuses fewer trials than teachers
    in the config, and the usable / allocation stages only remove teachers)."""
    return max(1, trials // max(1, teachers)) * max(1, teachers)


STUDY_FILE = "optuna.journal"


def study_storage(run_dir: Path):
    """The study's storage: Optuna's journal file in the run directory, with an O_EXCL lock file. The run directory
    lives on the storage root, often NFS, where SQLite's fcntl locks are unreliable (SQLite's FAQ says so); the
    journal is an append-only log whose lock is an exclusive create, which Optuna documents as safe on NFSv3+, and a
    lock left by a killed driver expires after its grace period. (A run started before this change keeps its
    optuna.db: Tune's experiment checkpoint pickles the searcher with the storage it was created with.)"""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    path = str(run_dir / STUDY_FILE)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def run_search(run_dir: Path, cfg, tables: dict, teachers: list[TeacherRef], problems: dict, baseline_dev: dict,
               proxies: dict, resume: bool, searched: list[str] | None = None, engines: list[str] | None = None,
               student_fingerprint: str | None = None, share=None) -> dict[str, TrialRecord]:
    """Stage 5: the Tune search; returns the trial records by point key (finished ones from earlier runs too).
    `searched`: the teacher specs the search may choose (run.allocation_stage; default every teacher); a grid
    always runs every teacher. `share`: this student's part of the cluster beside other students
    (search/side_by_side.Share; None: the whole cluster)."""
    from ray.tune.schedulers import FIFOScheduler

    from cotgap_ray.cluster import join_storage, offered_node_types, storage_root
    from cotgap_ray.search.scheduler import LikeWithLikeASHA
    from cotgap_ray.search.space import grid_points, search_space, seed_points

    grid = grid_points(list(cfg.teachers), cfg.search) if cfg.search.strategy == "grid" else None
    searched = list(cfg.teachers) if grid is not None or searched is None else searched
    # Equal budgets (StudySearch): every searched teacher the same number of trials, the remainder unspent
    budget = len(grid) if grid is not None else equal_budget(cfg.search.trials, len(searched))
    previous = load_records(run_dir)
    done = {key: [_epoch_result(rec, e) for e in rec.epochs]
                 or [no_data_report(rec.trial_id, rec.teacher, rec.rationales_kept, rec.filter_report, rec.error)]
            for key, rec in previous.items() if rec.status in FINAL_STATUSES and rec.finished_at}
    teacher_names = {ref.spec: ref.name for ref in teachers}
    # The grid's budget is its size: max_concurrent caps trials at once by the budget (search.trials otherwise).
    if share is not None:  # beside other students: its own part, and every student's trials count for threads
        concurrent, at_once = min(share.trials, budget), min(share.trials, budget) * share.students
    else:
        concurrent = max_concurrent(replace(cfg, search=replace(cfg.search, trials=budget)), offered_node_types(),
                                    evaluators=max(1, len(engines or [])))  # beside the engines the pool took
        at_once = concurrent
    context = TrialContext(config=cfg, tables=tables, teacher_names=teacher_names, problems=problems,
                           baseline_dev=baseline_dev,
                           storage=join_storage(storage_root(cfg.train.storage_path, run_dir), "train"),
                           student_spec=cfg.student, student_fingerprint=student_fingerprint,
                           engines=list(engines or []), done=done, at_once=at_once)
    trainable = tune.with_resources(tune.with_parameters(tune_trial, context=context), trial_request(cfg))
    tune_dir = run_dir / "tune"
    if grid is not None:
        print(f"\ngrid: {len(grid)} points, every one to its planned epochs, up to {concurrent} at once, per trial "
              f"{per_trial_request(cfg)}{describe_threads(cfg.train, at_once)} (search.trials, asha, "
              f"seed_from_proxies and rule_out_alpha do not apply to a grid)"
              + (f"; {len(done)} finished earlier" if done else ""))
    else:
        print(f"\nsearch: {budget} trials, {budget // len(searched)} per teacher, up to {concurrent} at once, per "
              f"trial {per_trial_request(cfg)}{describe_threads(cfg.train, at_once)}"
              + (f"; {len(searched)} of {len(cfg.teachers)} teachers" if len(searched) < len(cfg.teachers) else "")
              + (f"; {len(done)} finished earlier" if done else ""))
        if budget < cfg.search.trials:
            print(f"  note: search.trials={cfg.search.trials} is not a multiple of the {len(searched)} teachers "
                  f"searched: {cfg.search.trials - budget} trial(s) unspent, so that no teacher gets more draws at "
                  f"the best dev delta than another (docs/statistics.md, \"Winner's curse\"); set search.trials to "
                  f"a multiple of {len(searched)} to spend them")
    if resume and tune.Tuner.can_restore(str(tune_dir / "search")):
        tuner = tune.Tuner.restore(str(tune_dir / "search"), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        # The round-robin order: best proxy first (config order where a teacher has no proxy rank)
        order = {spec: i for i, spec in enumerate(searched)}
        teachers_by_rank = sorted(searched, key=lambda s: (proxies.get(teacher_names[s], {}).get("rank", math.inf),
                                                          order[s]))
        points = []
        if grid is None and cfg.search.seed_from_proxies:
            from cotgap_ray.search.usable import decide

            # Each teacher's first trial on a chain that keeps some of its rationales (the first chain's when it does)
            usable = decide(tables, cfg.search, cfg.generation.max_tokens, [teacher_names[s] for s in searched])
            points = seed_points(teachers_by_rank, cfg.search,
                                 {s: usable["teachers"][teacher_names[s]]["seed"] for s in searched})
        searcher = (partial(GridSearch, points=grid) if grid is not None
                    else partial(StudySearch, teachers=teachers_by_rank, first_points=points))(
            # a partial, not a lambda: Tune pickles the searcher into its experiment checkpoint (resume)
            space=partial(search_space, teachers=list(searched), search=cfg.search), metric="dev_delta",
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=cfg.search.seed),
            storage=study_storage(run_dir),
            study_name=f"cotgap-{cfg.fingerprint()}")
        max_t = max(cfg.search.epochs)
        # metric and mode go to the searcher and the scheduler, not TuneConfig: a define-by-run OptunaSearch ignores
        # the TuneConfig values (Ray 2.60) and then refuses to sample.
        # A grid is ground truth: no trial is stopped early (FIFO), whatever search.asha says.
        scheduler = (LikeWithLikeASHA(metric="dev_delta", mode="max", grace_period=cfg.search.grace_period,
                                      reduction_factor=cfg.search.reduction_factor)
                     if cfg.search.asha and max_t > 1 and grid is None else FIFOScheduler())
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=budget,
                                        max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name="search", storage_path=str(tune_dir), verbose=0,
                                      callbacks=[TrialRecorder(run_dir, budget, cfg.name)],
                                      # A failed trial (its node lost, a worker killed) is retried from the
                                      # start on any node: on an autoscaling cloud a lost node is routine.
                                      failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures,
                                                                        fail_fast=False)),
        )
    tuner.fit()
    records = load_records(run_dir)
    failed = {k: r for k, r in records.items() if r.status == "failed"}
    for key, rec in failed.items():  # a failed trial is a recorded outcome, but the reason must not hide in a log
        print(f"warning: trial {key} ({rec.params.get('teacher')}) failed: {rec.error}")
    if failed:
        print(f"warning: {len(failed)} of {len(records)} trials failed; `--resume` runs failed trials again")
    return records


def trial_error(trial) -> str:
    """What ended a failed trial, in one line: the last exception Tune stored for it (its type and message, plus
    the line after, where Ray Train puts the cause), not Tune's generic text."""
    import re

    text = ""
    try:  # Tune writes the error on the driver (trial.error_file) before callbacks run; storage gets it later
        if trial.error_file and Path(trial.error_file).exists():
            text = Path(trial.error_file).read_text()
        text = text or trial.get_error() or ""
    except Exception:  # noqa: BLE001 - the error file is gone (storage lost): fall back on Tune's summary
        pass
    text = str(text or getattr(trial, "error_message", None) or "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception|Failed|Interrupt)\b.*:", line)]
    summary = " ".join(lines[starts[-1]:starts[-1] + 2]) if starts else " ".join(lines[-2:])
    return summary[:1000] or "no error text: see the trial's error file under run_dir/tune"


def _epoch_result(rec: TrialRecord, epoch: EpochRecord) -> dict:
    return {**record_to_dict(epoch), "teacher": rec.teacher, "status": "ok", "point_key": rec.trial_id,
            "n_train_examples": rec.n_train_examples, "rationales_kept": rec.rationales_kept,
            "filter_report": json.dumps(rec.filter_report), "baseline_dev_accuracy": rec.baseline_dev_accuracy,
            "degrades": rec.degrades, "improves": rec.improves}
