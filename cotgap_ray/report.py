"""The report of a finished or interrupted run, rebuilt from its files alone (`cotgap report RUN_DIR`, report_cli.py).

It never trains or evaluates: it reads what the search wrote into RUN_DIR (config.json, splits.json, baseline.json,
proxies.json, trials/*/trial.json, final/*.json, status.json, and search_quality.json when
cotgap validate compared the run with a grid), renders what exists, says what is missing, and writes
report.json (the machine-readable answer), report.md and PNG plots back into RUN_DIR. No Ray, importable anywhere.

    render("runs/default") -> {"recommendation": {"teacher": "qwen2.5-coder-0.5b-instruct", "clear": True,
                               "text": "Use qwen2.5-coder-0.5b-instruct: +4.1 points [+1.2, +7.0] over ..."}, ...}

Every delta is test accuracy with the adapter minus the student's own test baseline (fractions in JSON, points in text).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from cotgap_ray import controls
from cotgap_ray.config import ExperimentConfig, build
from cotgap_ray.errors import InputError
from cotgap_ray.proxies import truncation_warning
from cotgap_ray.records import FinalRecord, RecordError, TeacherRef, TrialRecord, record_from_dict, write_json

STATUSES = ("ok", "no_data", "stopped", "failed")
NO_TRAINING_DATA = "no training data: no trial"  # the verdict of a teacher search/usable.py excluded
ALPHA = 0.05  # every verdict's level: "improves" / "degrades" only when a test rejects at this level
INPUTS = {"baseline.json": "the baseline stage did not finish", "proxies.json": "proxies were not computed",
          "splits.json": "split sizes unknown", "status.json": "stage unknown",
          "noise.json": "the evaluation engine's noise floor was not measured"}
# The selection rule (chosen_on_dev, selection_key, best_dev_trial), as report.json's selection.rule and report.md
# state it: two teachers with equal best dev deltas used to go to the better proxy rank in the recommendation and to
# config order in the primary hypothesis, while the stated rule named only the tie between trials (issue 33).
SELECTION_RULE = ("the teacher whose best trial has the highest dev delta; a teacher's best trial: the highest dev "
                  "delta among its trials that trained and were scored (finished, or stopped early by ASHA), ties: "
                  "fewer training tokens, then the first trial directory by name; ties between teachers: the better "
                  "proxy rank (the search's prior), then config order; control teachers are not candidates unless "
                  "every teacher is one")
# Said under the tables that show dev figures (report.md): why none of them is a test.
DEV_IS_SELECTION = ("Dev figures are selection figures, not evidence: ASHA stopped trials on them, TPE proposed "
                    "configurations from them and the final pick is the highest of them, so they are biased upward; "
                    "test is the only evidence.")
# What report.md's search-quality section reads from search_quality.json (python -m cotgap_ray.validate).
SEARCH_QUALITY_KEYS = {"grid_run", "grid_choice", "search_choice", "same_choice", "regret", "oracle", "compute",
                       "proxies"}

# Said under the proxies' table of the search-quality section: how to read its p-values and intervals.
PROXY_P_MEANS = ("p: exact one-sided permutation p-value of a positive rank correlation (every ordering of the "
                 "teachers equally likely under no relation: with 4 teachers even a perfect ranking has p = 1/24); "
                 "Holm p: adjusted over the proxies compared with the same delta, the one to judge a proxy by, since "
                 "the best of several proxies is itself a selection. 95% CI: percentile bootstrap over test problems "
                 "(n/a against the dev delta: trials keep no per-problem dev answers). Recorded before these columns "
                 "existed: n/a.")


class ReportError(InputError):
    """RUN_DIR is not a run directory, or its config.json cannot be read."""


def _read(path: Path, notes: list[str]):
    """A JSON file's content, or None (noted) when it is absent or unreadable: an interrupted run may leave either."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{path}: unreadable ({e}); ignored")
        return None


def _read_record(cls, path: Path, notes: list[str]):
    """A run record (records.TrialRecord / FinalRecord), or None (noted) when unreadable or off its schema."""
    raw = _read(path, notes)
    if raw is None:
        return None
    try:
        return record_from_dict(cls, raw, str(path))
    except RecordError as e:
        notes.append(f"{e}; ignored")
        return None


def load_run(run_dir: str | Path) -> dict:
    """Every input file of RUN_DIR, parsed and typed (config: ExperimentConfig; trials: TrialRecord; finals:
    FinalRecord; teachers: TeacherRef); absent ones are None / empty and named in `notes`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ReportError(f"{run_dir} is not a run directory: it holds no config.json "
                          "(give the --out directory of python -m cotgap_ray.search)")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        cfg = build(ExperimentConfig, saved.get("config", {}), where=str(run_dir / "config.json"))
        refs = [record_from_dict(TeacherRef, r, f"{run_dir / 'config.json'}: teachers")
                for r in saved.get("teachers", [])]
    except (ValueError, AttributeError) as e:  # invalid JSON, ConfigError, RecordError
        raise ReportError(f"{run_dir / 'config.json'} cannot be read ({e}); restore it from the run") from e
    notes: list[str] = []
    run = {"dir": str(run_dir), "config": cfg, "fingerprint": saved.get("fingerprint"), "notes": notes}
    for name, why in INPUTS.items():
        run[name.removesuffix(".json")] = _read(run_dir / name, notes)
        if not (run_dir / name).exists():
            notes.append(f"missing {name}: {why}")
    run["trials"] = [t for p in sorted(run_dir.glob("trials/*/trial.json"))
                     if (t := _read_record(TrialRecord, p, notes)) is not None]
    if not run["trials"]:
        notes.append("no trials/*/trial.json: the search has not run a trial yet")
    run["finals"] = {f.teacher or p.stem: f for p in sorted(run_dir.glob("final/*.json"))
                     if (f := _read_record(FinalRecord, p, notes)) is not None}
    if not run["finals"]:
        notes.append("no final/*.json: no teacher has been confirmed on the test split")
    # Written by python -m cotgap_ray.validate against a grid run; optional, so its absence is not a note.
    run["search_quality"] = _read(run_dir / "search_quality.json", notes)
    if run["search_quality"] is not None and not (isinstance(run["search_quality"], dict)
                                                  and SEARCH_QUALITY_KEYS <= set(run["search_quality"])):
        notes.append(f"{run_dir / 'search_quality.json'}: not what python -m cotgap_ray.validate writes; ignored")
        run["search_quality"] = None
    # Written by the search with search.rule_out_alpha (search/allocation.py); optional like search_quality.
    run["allocation"] = _read(run_dir / "allocation.json", notes)
    # Written by the search (not a grid): which teachers' rationales a filter chain keeps (search/usable.py).
    run["usable"] = _read(run_dir / "usable.json", notes)
    # A run written before config.json named its teachers: the names its proxies and confirmations recorded with
    # their specs, else the spec itself (the report never loads a model to find one).
    recorded = {v["spec"]: k for k, v in (run["proxies"] or {}).items() if isinstance(v, dict) and v.get("spec")}
    recorded.update({f.spec: f.teacher for f in run["finals"].values() if f.spec})
    run["teachers"] = refs or [TeacherRef(spec=s, name=recorded.get(s, s)) for s in cfg.teachers]
    return run


def _trial_summary(t: TrialRecord) -> dict:
    p = t.params
    return {"trial_id": t.trial_id, "teacher": t.teacher, "status": t.status,
            "filters": p.get("filters"), "lora_rank": p.get("lora.rank"), "alpha_ratio": p.get("lora.alpha_ratio"),
            "learning_rate": p.get("lora.learning_rate"), "epochs_planned": p.get("lora.epochs"),
            "epochs_run": len(t.epochs), "n_train_examples": t.n_train_examples,
            "dev_accuracy": t.dev_accuracy, "dev_delta": t.dev_delta, "dev_delta_ci95": t.dev_delta_ci95,
            "dev_p_mcnemar": t.p_value,  # raw, for the record: a selection figure, not a test (report.md omits it)
            "seconds": t.seconds, "train_seconds": t.train_seconds,
            "finished_at": t.finished_at, "error": t.error}


def best_dev_trial(trials: list[TrialRecord]) -> TrialRecord | None:
    """The trial the search selects for a teacher: highest dev delta among trials that trained and were scored,
    finished or stopped early by ASHA (ties: fewer training tokens, then the first trial directory by name, the
    order load_run reads them in), the rule of search.confirm.best_trial."""
    done = [t for t in trials if t.status in ("ok", "stopped") and t.dev_delta is not None and t.epochs]
    return max(done, key=lambda t: (t.dev_delta, -t.train_tokens), default=None)


def _teacher(ref: TeacherRef, proxy: dict | None, trials: list[TrialRecord], final: FinalRecord | None,
             allocated: dict | None = None, data: dict | None = None) -> dict:
    """One teacher's entry of report.json; `allocated`: its entry in allocation.json (search.rule_out_alpha);
    `data`: its entry in usable.json (how many rationales each filter chain keeps)."""
    counts = {s: sum(t.status == s for t in trials) for s in STATUSES}
    ruled_out = bool(allocated and allocated.get("ruled_out"))
    no_data = bool(data and data.get("usable") is False)
    best = best_dev_trial(trials)
    f = final
    return {
        "name": ref.name, "spec": ref.spec, "teacher_accuracy": (proxy or {}).get("teacher_accuracy"),
        # A control's effect is known in advance (controls.py): labelled, never recommended, checked (control_check)
        "control": controls.describe(ref.spec), "expected": controls.expected(ref.spec),
        # every confirmation seed's per-problem test answers, for the clone check only (build_report drops them)
        "test_correct_by_seed": [list(s) for s in f.test_correct_by_seed] if f and f.test_correct_by_seed else None,
        "proxies": proxy, "proxy_rank": (proxy or {}).get("rank"), "n_trials": len(trials),
        # share of its rationales cut at generation.max_tokens (None: a run from before it was counted)
        "truncated_fraction": (proxy or {}).get("truncated_fraction"),
        "truncation_warning": truncation_warning(ref.name, proxy or {}),
        "trial_status_counts": counts,
        "best_trial_id": f.trial_id if f else best.trial_id if best else None,
        "best_config": f.params if f else best.params if best else None,
        "best_dev_delta": f.best_dev_delta if f else best.dev_delta if best else None,
        "selectable": best is not None,  # a trial that trained and was scored on dev: the selection may choose it
        "test_accuracy": f.test_accuracy if f else None, "test_n": f.n if f else None,
        "test_seeds": [s.seed for s in f.seeds] if f else [], "delta": f.delta if f else None,
        "delta_ci95": f.delta_ci95 if f else None, "p_value": f.p_value if f else None,
        "hypothesis": None, "p_adjusted": None,  # judge(): primary (the dev choice, at alpha) or Holm in a family
        "test": f.test if f else None, "training_variance": f.training_variance if f else None,
        "discordance": f.discordance if f else None,  # fraction of test problems its adapter(s) changed: the power
        "degrades": None, "improves": None,
        "ruled_out": allocated if ruled_out else None,  # no trial by design: its rationales lost to another's (beaten_by)
        "no_training_data": data if no_data else None,  # no trial by design: no filter chain keeps a rationale of it
        "verdict": None if f else "no usable data" if trials and counts["no_data"] == len(trials) else
        NO_TRAINING_DATA if no_data and not trials else
        "ruled out before any fine-tune (proxy)" if ruled_out and not trials else "not confirmed",
        "cost": {"generation_seconds": (proxy or {}).get("generation_seconds", 0.0),
                 "generation_tokens": (proxy or {}).get("generation_tokens", 0),
                 "train_seconds": sum(t.train_seconds or 0.0 for t in trials) + (f.train_seconds if f else 0.0),
                 "trials_seconds": sum(t.seconds or 0.0 for t in trials)},
    }


def noise_floor(entries: list | None) -> dict:
    """Per split, the largest A/A noise floor any evaluation-engine start measured (search/noise.py): the fraction
    of problems whose correctness changed when the engine rescored the same student in another order. Information:
    no verdict depends on it (judge). `aa_only_first` / `aa_only_again`: the changed problems right only in the first
    / only in the second scoring (None in a run from before they were counted)."""
    out = {}
    for entry in entries or []:
        if not isinstance(entry, dict) or "split" not in entry:
            continue
        best = out.get(entry["split"])
        if best is None or entry.get("floor", 0.0) > best["floor"]:
            out[entry["split"]] = {k: entry.get(k) for k in ("n", "accuracy", "aa_discordant", "aa_only_first",
                                                             "aa_only_again", "aa_texts_changed", "floor",
                                                             "cross_start_discordant")}
    return out


def noise_warnings(noise: dict, alpha: float = ALPHA) -> list[str]:
    """A warning per split whose A/A flips lean one way (two-sided exact sign test at alpha). The McNemar tests
    treat engine noise as symmetric, which two scorings of one model in two orders are by design; a lean says the
    engine's scorings differ systematically (a warm-up, a cache), a bias the tests do not count. Information only:
    it changes no verdict."""
    from cotgap_ray.stats import mcnemar_counts_p

    out = []
    for split, e in noise.items():
        first, again = e.get("aa_only_first"), e.get("aa_only_again")
        if first is None or again is None or first + again == 0:
            continue
        p = mcnemar_counts_p(first, again)
        if p < alpha:
            out.append(f"engine noise on {split} is not symmetric: of the {first + again} problems whose outcome "
                       f"changed when the engine rescored the student without adapter, {first} were right only the "
                       f"first time and {again} only the second (exact sign test p = {p:.3g}); the McNemar tests "
                       "assume engine noise moves answers both ways alike, so read this split's verdicts with care")
    return out


def judge(teachers: list[dict], alpha: float = ALPHA) -> None:
    """Fill each confirmed teacher's `hypothesis`, `p_adjusted` and verdict (in place).

    The teacher chosen on dev (chosen_on_dev) is fixed before test is opened, so its test is the one **primary**
    hypothesis, tested at alpha on its own p-value: the answer's verdict does not depend on how many other teachers
    were confirmed. The other real teachers' rows are **secondary**, Holm-adjusted among themselves; control teachers
    (controls.py), checks of the protocol, are their own Holm family. A verdict needs both the (adjusted) test to
    reject and the teacher's own interval to exclude zero (compare_seeds' test rejects exactly when its interval
    excludes zero; before Holm), so a row never says "improves" beside an interval that includes zero. Engine noise (noise.json's A/A
    flips) is no threshold here: it adds discordant pairs in both directions alike, which the exact McNemar test
    already counts; it costs power, it does not bias the test (docs/statistics.md)."""
    from cotgap_ray.stats import holm

    chosen = chosen_on_dev(teachers)
    confirmed = [t for t in teachers if t["delta"] is not None and t["p_value"] is not None]
    known_answers = chosen is not None and controls.is_control(chosen["spec"])  # every teacher is a control
    families: dict[str, list[dict]] = {"primary": [], "secondary": [], "control": []}
    for t in confirmed:
        families["primary" if t is chosen else "control" if controls.is_control(t["spec"]) and not known_answers
                 else "secondary"].append(t)
    for role, members in families.items():
        for t, p in zip(members, holm([t["p_value"] for t in members])):
            lo, hi = t["delta_ci95"] or (None, None)
            t["hypothesis"], t["p_adjusted"] = role, p
            t["improves"] = bool(p < alpha and lo is not None and lo > 0)
            t["degrades"] = bool(p < alpha and hi is not None and hi < 0)
            t["verdict"] = "improves" if t["improves"] else "degrades" if t["degrades"] else "no clear change"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _ci(ci) -> str:
    return "n/a" if not ci else f"[{_pts(ci[0])}, {_pts(ci[1])}]"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def selection_key(t: dict) -> tuple:
    """The dev selection's order of teachers, best first (an ascending sort key): a teacher with a trial the selection
    may choose before one without; then the highest best dev delta; ties between teachers: the better proxy rank
    (rank 1 first: the search's own prior, the order its first trials were seeded in), a teacher without a rank
    last; what is still tied keeps config order (Python's sort and min are stable, and build_report lists the
    teachers in config order). SELECTION_RULE says it in words."""
    best = t["best_dev_delta"] if t["selectable"] and t["best_dev_delta"] is not None else -math.inf
    rank = t.get("proxy_rank")  # absent from a hand-built entry (tests, benchmarks): no rank
    return (not t["selectable"], -best, rank if rank is not None else math.inf)


def chosen_on_dev(teachers: list[dict]) -> dict | None:
    """The search's answer: the first teacher in selection_key's order, i.e. the one whose best finished trial has
    the highest dev delta, ties broken by proxy rank, then config order. Test never enters the choice; it only
    confirms it. Control teachers (controls.py: control:oracle, ...) are not candidates, unless every teacher is one
    (a known-answers setting: then the question is whether the search finds the oracle)."""
    real = [t for t in teachers if not controls.is_control(t["spec"])]
    selectable = [t for t in (real or teachers) if t["selectable"]]
    return min(selectable, key=selection_key, default=None)


def recommend(teachers: list[dict], baseline_test: float | None, stage: str | None) -> dict:
    """The answer: the teacher chosen on dev (chosen_on_dev), confirmed on test. Its row's verdict is the answer's,
    so the sentence and the table cannot disagree. `teacher` is the chosen one when its test delta is positive and it
    does not degrade the student; `clear` only when its confirmation says "improves"."""
    none = {"teacher": None, "config": None, "delta": None, "delta_ci95": None, "clear": False}
    checks = control_check(teachers)
    rec = _recommend(teachers, baseline_test, stage)
    if checks:
        rec["controls"] = checks
        rec["text"] += " " + controls_sentence(checks)
    return {**none, **rec}


def control_check(teachers: list[dict]) -> list[dict]:
    """Each control teacher's verdict against the one expected of it (controls.expected: control:oracle improves,
    control:corrupt and control:shuffled degrade), and each clone against the teacher it copies: the two confirmed
    adapters' test answers compared problem by problem; "differ" at alpha is a false positive, since the two are the
    same teacher. The comparison is stats.compare_runs over every confirmation seed of both, and "differ" means its
    interval excludes 0 (as the teachers' own verdicts): with one seed each, the exact McNemar test of two adapters,
    which holds each training fixed, so two trainings that differ (another sample of rationales, another seed) are
    called different although the teacher is the same (measured: benchmarks/results/2026-12-known-answers.md);
    with several, the interval's two-level bootstrap resamples each side's seeds, so the variation between trainings
    widens it."""
    out = []
    by_spec = {t["spec"]: t for t in teachers}
    for t in teachers:
        if t.get("expected"):
            out.append({"teacher": t["name"], "kind": "control", "expected": t["expected"], "verdict": t["verdict"],
                        "as_expected": t["verdict"] == t["expected"] if t["delta"] is not None else None})
        base = controls.clone_of(t["spec"])
        if base is not None and base in by_spec:
            other = by_spec[base]
            entry = {"teacher": t["name"], "kind": "clone", "clone_of": other["name"], "expected": "same",
                     "verdict": None, "p_value": None, "as_expected": None}
            a, b = t.get("test_correct_by_seed"), other.get("test_correct_by_seed")
            if a and b and len({len(r) for r in [*a, *b]}) == 1:
                from cotgap_ray.stats import compare_runs

                r = compare_runs(a, b, alpha=ALPHA)
                differ = bool(r["improves"] or r["degrades"])
                entry.update(p_value=r["p_value"], verdict="differ" if differ else "same", as_expected=not differ,
                             delta=r["delta"], ci95=r["ci95"], test=r["test"], seeds=[len(a), len(b)])
            out.append(entry)
    return out


def _one_seed_each(check: dict) -> str:
    """What a clone check on one confirmation seed each leaves out, said where it calls a difference."""
    if check.get("seeds") == [1, 1]:
        return (", one adapter each: the variation between two trainings is not in this test; confirm.seeds >= 2 "
                "puts it in")
    return ""


def controls_sentence(checks: list[dict]) -> str:
    """One sentence on the controls: did the protocol see the effects built in, and no effect between clones?"""
    parts = []
    for c in checks:
        if c["kind"] == "clone":
            seen = ("not compared (no confirmation)" if c["verdict"] is None else
                    f"called different from {c['clone_of']} (p = {c['p_value']:.3g}{_one_seed_each(c)}): a false "
                    "positive"
                    if c["verdict"] == "differ" else f"not told apart from {c['clone_of']}, as it should not be")
            parts.append(f"{c['teacher']} (a clone) {seen}")
        else:
            got = c["verdict"] or "not confirmed"
            mark = "as expected" if c["as_expected"] else "expected " + c["expected"]
            parts.append(f"{c['teacher']} {got} ({mark})")
    return "Controls (effects known in advance): " + "; ".join(parts) + "."


def _recommend(teachers: list[dict], baseline_test: float | None, stage: str | None) -> dict:
    """recommend's answer without the controls' sentence."""
    none = {"teacher": None, "config": None, "delta": None, "delta_ci95": None, "clear": False}
    chosen = chosen_on_dev(teachers)
    if chosen is None:
        return {**none, "text": f"No recommendation yet: no teacher has a finished search trial "
                                f"(stopped at stage '{stage or 'unknown'}')."}
    dev = f"chosen on dev: {_pts(chosen['best_dev_delta'])} points"
    others = []  # what the other teachers did, so the sentence never hides one that degrades or improves
    every_degrades = all(t["verdict"] == "degrades" for t in teachers if t["delta"] is not None
                         and (not t.get("expected") or chosen.get("expected"))) and \
        chosen["verdict"] == "degrades"
    for verdict, clause in (("improves", "also improve{s} it on test (not chosen: lower on dev)"),
                            ("degrades", "degrade{s} it"), ("no usable data", "gave no usable data"),
                            (NO_TRAINING_DATA, "{have} no training example under any filter chain (no trial)"),
                            ("not confirmed", "{are} not confirmed"),
                            ("ruled out before any fine-tune (proxy)",
                             "{are} ruled out before any fine-tune (search.rule_out_alpha: no trial)")):
        names = [t["name"] for t in teachers if t["verdict"] == verdict and t is not chosen
                 and not (verdict == "degrades" and every_degrades)  # already said by "every teacher degrades"
                 and not (t.get("expected") and chosen.get("expected") is None)]  # the controls' own sentence
        if names:
            many = len(names) > 1
            others.append(f"{_names(names)} " + clause.format(s="" if many else "s", are="are" if many else "is",
                                                              have="have" if many else "has"))
    tail = f"; {'; '.join(others)}" if others else ""
    if stage != "done":  # some confirmations may be missing: the answer can still change
        tail += f" (provisional: the run stopped at stage '{stage or 'unknown'}')"
    if chosen["delta"] is None:
        return {**none, "text": f"No recommendation yet: {chosen['name']} was {dev}, and the run has not "
                                f"confirmed it on the test split{tail}."}
    over = (f"{_pts(chosen['delta'])} points {_ci(chosen['delta_ci95'])} over the student's {_pct(baseline_test)} "
            f"on test")
    if chosen["verdict"] == "degrades":
        head = ("none: every teacher degrades the student" if every_degrades
                else "none: the teacher chosen on dev degrades the student")
        return {**none, "text": f"{head} ({chosen['name']}, {dev}: {over}){tail}."}
    if chosen["delta"] <= 0:  # not a teacher to recommend, whatever the test says
        return {**none, "text": f"none: no teacher improves this student ({chosen['name']}, {dev}: {over}, "
                                f"which the test does not tell from zero){tail}."}
    rec = {"teacher": chosen["name"], "config": chosen["best_config"], "delta": chosen["delta"],
           "delta_ci95": chosen["delta_ci95"], "clear": chosen["verdict"] == "improves"}
    if rec["clear"]:
        rec["text"] = f"Use {chosen['name']} ({dev}): {over}{tail}."
    else:
        rec["text"] = (f"Best: {chosen['name']} ({dev}): {over}, but the test does not tell it from zero: no "
                       f"teacher clearly improves this student{tail}.")
    return rec


def power(run: dict, sizes: dict | None) -> dict:
    """Per split: n, the discordance this run measured (the median fraction of problems an adapter changed: dev
    over the trials' last epochs, test over the confirmations; dev's stands in for test before confirmation), and
    the minimum detectable effect: the smallest improvement the exact McNemar test detects with 80% power at
    alpha 0.05 (stats.min_detectable_effect). None: the split cannot detect any effect that small a change allows."""
    import statistics

    from cotgap_ray.stats import min_detectable_effect

    dev = [t.dev_discordance for t in run["trials"] if t.dev_discordance is not None]
    test = [f.discordance for f in run["finals"].values() if f.discordance is not None]
    out = {}
    for split, measured, fallback in (("dev", dev, []), ("test", test, dev)):
        n = (sizes or {}).get(split)
        values = measured or fallback
        d = statistics.median(values) if values else None
        out[split] = {"n": n, "discordance": d, "discordance_from": split if measured else
                      ("dev" if values else None),
                      "mde": min_detectable_effect(n, d) if n and d else None}
    return out


def build_report(run: dict) -> dict:
    """report.json from load_run()'s dict (pure: `run` is left as it was)."""
    cfg, notes = run["config"], list(run["notes"])
    proxies, finals, status = run["proxies"] or {}, run["finals"], run["status"] or {}
    refs = list(run["teachers"])
    known = {r.name for r in refs}
    for extra in [*proxies, *finals, *(t.teacher for t in run["trials"])]:
        if extra and extra not in known:  # recorded by the run but absent from the config: shown, and said so
            known.add(extra)
            spec = (proxies.get(extra) or {}).get("spec") or (finals[extra].spec if extra in finals else extra)
            refs.append(TeacherRef(spec=spec, name=extra))
            notes.append(f"teacher {extra} has results but is not in config.json's teachers")
    allocation = run.get("allocation") if isinstance(run.get("allocation"), dict) else None
    allocated = (allocation or {}).get("teachers") or {}
    usable = run.get("usable") if isinstance(run.get("usable"), dict) else None
    data = (usable or {}).get("teachers") or {}
    teachers = [_teacher(r, proxies.get(r.name), [t for t in run["trials"] if t.teacher == r.name],
                         finals.get(r.name), allocated.get(r.name), data.get(r.name)) for r in refs]
    noise = noise_floor(run["noise"])
    judge(teachers)
    notes += noise_warnings(noise)
    for t in teachers:
        if t["verdict"] == "not confirmed" and finals:
            notes.append(f"no final confirmation for teacher {t['name']}")
        if t["truncation_warning"]:
            notes.append(t["truncation_warning"])
    # The dev selection's order (selection_key: best dev delta first, ties by proxy rank, then config order), then
    # teachers with nothing selectable by proxy rank (the search's own guess), then config order. Test deltas never
    # reorder the table.
    teachers.sort(key=selection_key)
    base = run["baseline"] or {}
    # Deltas pair the evaluation engine's own baseline rows (search/noise.py); its test accuracy is what each
    # confirmation recorded. baseline.json (the baseline stage, another engine start) stands in before confirmation.
    recorded = [f.baseline_test_accuracy for f in finals.values() if f.baseline_test_accuracy is not None]
    base_test = recorded[0] if recorded else base.get("test", {}).get("accuracy")
    stage = status.get("stage")
    seeds = sorted({len(f.seeds) for f in finals.values()})
    return {
        "experiment": cfg.name, "student": cfg.student,
        "task": {"name": cfg.task.name, "seed": cfg.task.seed},
        "splits": {k: (run["splits"] or {}).get(k) for k in ("sizes", "fingerprint")},
        "power": power(run, (run["splits"] or {}).get("sizes")),
        "noise_floor": noise,
        "config_fingerprint": run["fingerprint"],
        "baseline": {s: {k: base[s].get(k) for k in ("accuracy", "ci95", "n")} for s in ("dev", "test") if s in base},
        "engine_baseline": {s: e.get("accuracy") for s, e in noise.items()},  # the rows every delta pairs with
        "teachers": teachers,
        "recommendation": _without_rows(teachers, recommend(teachers, base_test, stage)),
        "selection": {"split": "dev", "rule": SELECTION_RULE,
                      "confirmation": "test, each teacher's best dev configuration; the teacher chosen on dev is the "
                                      "primary hypothesis at alpha, the others Holm-adjusted among themselves "
                                      "(controls apart)", "alpha": ALPHA,
                      "dev_figures": "selection figures (ASHA, TPE, the pick), biased upward: not evidence"},
        "training_variance": ("not measured (one seed per confirmation)" if seeds == [1] else
                              f"measured ({', '.join(map(str, seeds))} seeds per confirmation)" if seeds else None),
        "trials": sorted((_trial_summary(t) for t in run["trials"]), key=lambda t: t["finished_at"] or float("inf")),
        "complete": stage == "done", "stage": stage, "notes": list(status.get("notes", [])) + notes,
        "confirm_seeds": cfg.confirm.seeds,
        "allocation": allocation,  # search/allocation.py's record when search.rule_out_alpha was set
        "usable": usable,  # search/usable.py's record: rationales each filter chain keeps, teachers given no trial
        "search_quality": run.get("search_quality"),  # validate.py's comparison with a grid run, when one was made
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _without_rows(teachers: list[dict], value):
    """`value`, after dropping each teacher's per-problem test answers (used by control_check only) in place."""
    for t in teachers:
        t.pop("test_correct_by_seed", None)
    return value


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows])


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3f}"


def _rank_ci(ci: list | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _regret(r: dict | None) -> str:
    """One regret of validate.py: its value and interval, or 0 by definition for the same configuration."""
    if not r or r.get("value") is None:
        return "n/a"
    if r.get("same_configuration"):
        m = r.get("measured") or {}
        again = "" if m.get("value") is None else (f"; its two confirmations differ by {_pts(m['value'])} points "
                                                   f"{_ci(m.get('ci95'))} (re-training noise, not regret)")
        return "0 by definition (the same configuration in both runs)" + again
    how = (f" ({r.get('test') or 'paired'} over {r['n_problems']} test problems)" if r.get("ci95")
           else " (no per-problem test answers: no interval)")
    return f"{_pts(r['value'])} points {_ci(r.get('ci95'))}{how}"


def search_quality_markdown(sq: dict) -> list[str]:
    """The "Search quality (against a grid)" section: validate.py's search_quality dict as markdown lines."""
    def row(label: str, c: dict) -> list:
        return [label, c["teacher"], _pts(c.get("best_dev_delta")), _pct(c.get("test_accuracy")),
                f"{_pts(c.get('test_delta'))} {_ci(c.get('test_delta_ci95'))}"]

    oracle, compute, r = sq["oracle"], sq["compute"], sq["regret"]
    out = ["## Search quality (against a grid)", "",
           f"The grid run {sq['grid_run']} trained every point of the search space (strategy "
           f"{sq.get('grid_strategy') or 'unknown'}). Regret = the test accuracy of the grid's choice minus that of "
           "this search's choice, their adapters' answers paired by problem (points; positive: the search's answer "
           "is worse); each run's test delta is over its own baseline, so deltas are not subtracted.",
           "", _table(["", "teacher", "best dev delta", "test acc.", "test delta [95% CI] (own baseline)"],
                      [row("grid's choice (on dev)", sq["grid_choice"]),
                       row("this search's choice (on dev)", sq["search_choice"]),
                       row("oracle: grid's best on TEST (information only)", oracle)]),
           "", f"- regret: {_regret(r)}; same teacher: {'yes' if sq['same_choice'] else 'no'}"]
    if r.get("verdict"):
        out.append(f"- as good as the grid's answer (non-inferiority: the regret interval's upper end at most "
                   f"{100 * r['margin']:g} points): {r['verdict']}")
    out.append(f"- regret against the oracle (chosen on test, so for information only): "
               f"{_regret(oracle['search_regret'])}")
    alloc = sq.get("allocation")
    if alloc:  # the search ruled teachers out from their rationales: was the grid's answer among them?
        out.append(f"- proxy-guided allocation (alpha {alloc['alpha']}): ruled out "
                   f"{', '.join(alloc['ruled_out']) or 'none'}; the grid's choice "
                   f"{'WAS' if alloc['grid_choice_ruled_out'] else 'was not'} among them, the oracle "
                   f"{'WAS' if alloc['oracle_ruled_out'] else 'was not'}")
    for key, what in (("trial_epochs", "trial-epochs"), ("seconds", "seconds")):
        c = compute[key]
        share = "n/a" if c["fraction"] is None else f"{100 * c['fraction']:.1f}%"
        out.append(f"- compute, {what}: {_num(c['search'], '.0f')} of the grid's {_num(c['grid'], '.0f')} ({share})")
    out += [f"  ({compute['seconds_are']})", "",
            "Proxies against the grid's measured deltas (a lower-is-better proxy is negated first, so a positive "
            "correlation always means the proxy ranks teachers the way training did):", "",
            _table(["proxy", "better", "proxies of", "vs", "Spearman", "p", "Holm p", "95% CI (test problems)",
                    "Kendall tau-b", "p", "Holm p", "teachers"],
                   [[p["proxy"], p["direction"], p["source"], p["target"], _num(p["spearman"], "+.2f"),
                     _p(p.get("spearman_p")), _p(p.get("spearman_p_holm")), _rank_ci(p.get("spearman_ci95")),
                     _num(p["kendall_tau"], "+.2f"), _p(p.get("kendall_p")), _p(p.get("kendall_p_holm")), p["n"]]
                    for p in sq["proxies"]]),
            "", PROXY_P_MEANS]
    return out + (["", *(f"- {n}" for n in sq["notes"])] if sq.get("notes") else [])


def noise_markdown(noise: dict, power: dict) -> list[str]:
    """The "Engine noise (A/A)" section: noise_floor()'s dict as markdown lines, information beside the verdicts."""
    out = ["## Engine noise (A/A)", "",
           "The evaluation engine scores the student without adapter twice, the second time with the problems in "
           "another order (A/A); every delta pairs rows of that one engine. Information, not a threshold: the problems "
           "that flip with nothing changed are part of the discordant pairs the exact McNemar test already counts, "
           "in both directions alike, so engine noise costs power (the detectable effects below are at the measured "
           "discordance), not validity, and no verdict depends on it."]
    if not noise:
        return out + ["", "not measured (noise.json absent)"]
    out += ["", _table(["split", "n", "A/A: outcomes changed (right first only / second only)", "A/A: texts changed",
                        "share of problems", "vs the baseline stage's engine start"],
                       [[s, e["n"], f"{e['aa_discordant']}" + ("" if e.get("aa_only_first") is None else
                                                              f" ({e['aa_only_first']} / {e['aa_only_again']})"),
                         e["aa_texts_changed"], _pct(e["floor"]),
                         "n/a" if e["cross_start_discordant"] is None else f"{e['cross_start_discordant']} differ"]
                        for s, e in noise.items()])]
    for s, e in noise.items():  # how much of what an adapter changes the engine alone may change
        d = (power.get(s) or {}).get("discordance")
        if d and e.get("floor") is not None and (power[s].get("discordance_from") == s):
            out += ["", f"On {s} the engine alone changed {_pct(e['floor'])} of problems and an adapter {_pct(d)} "
                        f"(median): engine noise alone would account for about {min(1.0, e['floor'] / d):.0%} of an "
                        "adapter's discordant pairs."]
    warned = noise_warnings(noise)
    return out + (["", *(f"- **{w}**" for w in warned)] if warned else [])


def render_markdown(r: dict, plots: list[str]) -> str:
    """report.md: the answer first, then the evidence behind it."""
    out = [f"# {r['experiment']}: which teacher for {r['student']} on {r['task']['name']}?", "",
           f"**{r['recommendation']['text']}**", "", "## Baseline (student, no adapter)", "",
           _table(["split", "n", "accuracy", "95% CI", "evaluation engine's own (deltas pair with it)"],
                  [[s, b["n"], _pct(b["accuracy"]), f"[{_pct(b['ci95'][0])}, {_pct(b['ci95'][1])}]" if b["ci95"]
                    else "n/a", _pct((r.get("engine_baseline") or {}).get(s))] for s, b in r["baseline"].items()]),
           "", "## Teachers, ranked", "",
           _table(["teacher", "teacher acc.", "cut at max_tokens", "correct yield", "student NLL", "student RSR",
                   "student local NLL", "proxy rank", "trials", "best dev delta", "test acc.", "test delta [95% CI]",
                   "test p (adj.)", "verdict"],
                  [[t["name"] + (" (control)" if t.get("control") else ""), _pct(t["teacher_accuracy"]),
                    _pct(t.get("truncated_fraction")), _pct((t["proxies"] or {}).get("correct_yield")),
                    _num((t["proxies"] or {}).get("student_nll"), ".3f"),
                    _num((t["proxies"] or {}).get("student_rsr"), ".3f"),
                    _num((t["proxies"] or {}).get("student_local_nll"), ".3f"), t["proxy_rank"], t["n_trials"],
                    _pts(t["best_dev_delta"]), _pct(t["test_accuracy"]),
                    "n/a" if t["delta"] is None else f"{_pts(t['delta'])} {_ci(t['delta_ci95'])}",
                    _num(t["p_adjusted"], ".3g"), t["verdict"]] for t in r["teachers"]])]
    out += ["", "Ranked by the search's selection on **dev**: the highest best dev delta first (a teacher's best "
                "trial: its highest dev delta, ties: fewer training tokens); ties between teachers: the better proxy "
                "rank, then config order. The first row that is not a control is the teacher chosen (the first row, "
                "when every teacher is one). Test only confirms: each teacher's best dev configuration re-trained "
                "and scored on test. The teacher chosen on dev is the one primary hypothesis, tested at alpha on its "
                "own p-value; the other teachers' p-values are Holm-adjusted among themselves (controls in a family "
                f"of their own); a verdict needs the (adjusted) test to reject at alpha {ALPHA} and the interval to "
                "exclude zero. Student NLL, RSR and local NLL are proxies measured before any training: lower NLL = "
                "closer to what the student already writes; lower RSR (Rank-Surprisal Ratio, arXiv 2601.14249: mean "
                "token rank under the student / mean NLL) = better suited to teach it; lower local NLL (local "
                "naturalness, arXiv 2510.03988: each reasoning step's NLL given the question and only the steps just "
                "before it, averaged over steps) = each step more natural to it. Cut at max_tokens: the share of the "
                "teacher's train rationales that stopped at generation.max_tokens, each counted as not correct. "
                + DEV_IS_SELECTION]
    cut = [t["truncation_warning"] for t in r["teachers"] if t.get("truncation_warning")]
    if cut:  # the numbers in the table above measure the budget for these teachers: said next to them
        out += ["", "**Token budget:**", "", *(f"- {w}" for w in cut)]
    labelled = [t for t in r["teachers"] if t.get("control")]
    if labelled:
        out += ["", "Controls, whose effect is known before the run (cotgap_ray/controls.py); never recommended:", ""]
        out += [f"- {t['name']}: {t['control']}" for t in labelled]
    if r.get("allocation"):
        from cotgap_ray.search.allocation import describe

        out += ["", f"Proxy-guided allocation (search.rule_out_alpha = {r['allocation']['alpha']}): decided from the "
                    "rationales before any fine-tune; a ruled-out teacher got no trial, so it has no delta here.", "",
                *(f"- {line}" for line in describe(r["allocation"]))]
    if (r.get("usable") or {}).get("excluded"):
        from cotgap_ray.search.usable import describe as describe_usable

        out += ["", "No training data (usable.json): decided from the cached rationales before any fine-tune; a "
                    "teacher that no filter chain of search.filter_chains leaves a rationale of got no trial (each "
                    "would have ended at once with status no_data), so it has no delta here.", "",
                *(f"- {line}" for line in describe_usable(r["usable"]))]
    tested = [t for t in r["teachers"] if t["test_n"]]
    if tested:
        out += ["", f"Test: n = {tested[0]['test_n']} problems, seeds {tested[0]['test_seeds']} "
                    f"(delta = mean test accuracy over seeds - baseline test accuracy; test: "
                    f"{tested[0]['test'] or 'n/a'}). Training-seed variance: {r['training_variance'] or 'n/a'}."]
    out += ["", *noise_markdown(r.get("noise_floor") or {}, r.get("power") or {})]
    out += ["", "## What these splits can detect", "",
            _table(["split", "n", "discordance (measured)", "minimum detectable effect (80% power, alpha 0.05: the primary test)"],
                   [[s, p["n"], "n/a" if p["discordance"] is None else
                     f"{_pct(p['discordance'])}" + (f" (from {p['discordance_from']})"
                                                    if p["discordance_from"] != s else ""),
                     "n/a" if p["mde"] is None and p["discordance"] is None else
                     ("larger than any change seen: split too small" if p["mde"] is None else
                      f"{100 * p['mde']:.1f} points")] for s, p in r.get("power", {}).items()])]
    out += ["", "## Trials", "",
            _table(["trial", "teacher", "filters", "rank", "alpha ratio", "lr", "epochs", "status", "examples",
                    "dev delta (selection)", "seconds"],
                   [[t["trial_id"], t["teacher"], t["filters"], t["lora_rank"], t["alpha_ratio"],
                     _num(t["learning_rate"], ".2g"), f"{t['epochs_run']}/{t['epochs_planned']}", t["status"],
                     t["n_train_examples"], _pts(t["dev_delta"]), _num(t["seconds"], ".0f")] for t in r["trials"]]),
            "", DEV_IS_SELECTION,
            "", "## Cost per teacher", "",
            _table(["teacher", "generation s", "generation tokens", "training s", "trials wall s"],
                   [[t["name"], f"{t['cost']['generation_seconds']:.0f}", t["cost"]["generation_tokens"],
                     f"{t['cost']['train_seconds']:.0f}", f"{t['cost']['trials_seconds']:.0f}"]
                    for t in r["teachers"]])]
    if r.get("search_quality"):  # python -m cotgap_ray.validate measured this search against a grid run
        out += ["", *search_quality_markdown(r["search_quality"])]
    out += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"] or ["none"]]
    out += ["", "## Plots", ""] + ([f"- [{p}]({p})" for p in plots] or ["- none (no data to plot)"])
    sizes = ", ".join(f"{k} {v}" for k, v in (r["splits"]["sizes"] or {}).items()) or "unknown"
    out += ["", "Splits: trials were selected on **dev**; **test** was used only to confirm each teacher's best dev "
                f"config. Sizes {sizes}, split fingerprint {r['splits']['fingerprint']}; "
                f"stage {r['stage']} ({'complete' if r['complete'] else 'incomplete'}); "
                f"generated {r['generated_at']}.", ""]
    return "\n".join(out)


def save_figure(fig, path) -> None:
    """Write a matplotlib Figure as PNG on its own Agg canvas: no pyplot global state, safe in any thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def delta_point(ax, x: float, delta: float, ci95: list | None, name: str, **style) -> None:
    """One delta on a capacity-gap plot: at x (a fraction, drawn in %/points), the delta in points with its 95%
    interval as error bars (none when there is no interval), annotated with `name`; `style` goes to errorbar
    (fmt, color, label for a legend...) over the defaults."""
    lo, hi = ci95 or (delta, delta)
    ax.errorbar(100 * x, 100 * delta, yerr=[[100 * (delta - lo)], [100 * (hi - delta)]],
                **{"capsize": 4, "fmt": "o", **style})
    ax.annotate(name, (100 * x, 100 * delta), xytext=(5, 5), textcoords="offset points", fontsize=8)


def plot(r: dict, run_dir: Path) -> list[str]:
    """The PNGs that have data: capacity_gap.png, trials.png, cost.png. Returns their file names."""
    from matplotlib.figure import Figure

    def save(fig, name):
        save_figure(fig, run_dir / name)
        written.append(name)

    written: list[str] = []
    gap = [t for t in r["teachers"] if t["delta"] is not None and t["teacher_accuracy"] is not None]
    if gap:  # the capacity-gap picture: does a stronger teacher help this student more?
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for t in gap:
            delta_point(ax, t["teacher_accuracy"], t["delta"], t["delta_ci95"], t["name"])
        ax.axhline(0, color="grey", lw=1)
        ax.margins(x=0.3)  # room for the labels
        ax.set(xlabel="teacher accuracy on train (%)", ylabel="student test delta (points, 95% CI)",
               title="Capacity gap: teacher strength vs student gain")
        save(fig, "capacity_gap.png")
    scored = [t for t in r["trials"] if t["dev_delta"] is not None]
    if scored:  # every teacher gets a column, so one whose trials gave no dev number shows as an empty, labelled one
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        order = [t["name"] for t in r["teachers"]]
        for status, marker in zip(STATUSES, "os^x"):
            pts = [(order.index(t["teacher"]) + 0.08 * (i % 5 - 2), 100 * t["dev_delta"])
                   for i, t in enumerate(scored) if t["status"] == status and t["teacher"] in order]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=status)
        ax.axhline(0, color="grey", lw=1)
        blank = {n: sum(t["teacher"] == n and t["dev_delta"] is None for t in r["trials"]) for n in order}
        ax.set_xticks(range(len(order)), [f"{n}\n({blank[n]} without dev delta)" if blank[n] else n for n in order],
                      rotation=10, fontsize=7)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set(ylabel="dev delta (points)", title="Trials: dev delta per teacher (the selection, not evidence)")
        ax.legend(fontsize=8)
        save(fig, "trials.png")
    costly = [t for t in r["teachers"] if t["cost"]["generation_seconds"] or t["cost"]["train_seconds"]]
    if costly:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        x, gen = range(len(costly)), [t["cost"]["generation_seconds"] for t in costly]
        ax.bar(x, gen, label="generation")
        ax.bar(x, [t["cost"]["train_seconds"] for t in costly], bottom=gen, label="training (trials + confirmation)")
        ax.set_xticks(x, [t["name"] for t in costly], rotation=15, fontsize=8)
        ax.set(ylabel="seconds", title="Cost per teacher")
        ax.legend(fontsize=8)
        save(fig, "cost.png")
    return written


def render(run_dir: str | Path) -> dict:
    """Read RUN_DIR, write report.json, report.md and the plots into it; return the report.json dict."""
    run_dir = Path(run_dir)
    report = build_report(load_run(run_dir))
    report["plots"] = plot(report, run_dir)
    (run_dir / "report.md").write_text(render_markdown(report, report["plots"]))
    write_json(run_dir / "report.json", report)  # renamed into place: a reader never sees half a report.json
    return report
