"""python -m cotgap_ray.report RUN_DIR: the report of a finished or interrupted run, rebuilt from its files alone.

It never trains or evaluates: it reads what the search wrote into RUN_DIR (config.json, splits.json, baseline.json,
proxies.json, trials/*/trial.json, final/*.json, status.json), renders what exists, says what is missing, and writes
report.json (the machine-readable answer), report.md and PNG plots back into RUN_DIR. No Ray, importable anywhere.

    render("runs/default") -> {"recommendation": {"teacher": "qwen2.5-coder-0.5b-instruct", "clear": True,
                               "text": "Use qwen2.5-coder-0.5b-instruct: +4.1 points [+1.2, +7.0] over ..."}, ...}

Every delta is test accuracy with the adapter minus the student's own test baseline (fractions in JSON, points in text).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from cotgap_ray.errors import InputError

STATUSES = ("ok", "no_data", "stopped", "failed")
INPUTS = {"baseline.json": "the baseline stage did not finish", "proxies.json": "proxies were not computed",
               "splits.json": "split sizes unknown", "status.json": "stage unknown"}


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


def load_run(run_dir: str | Path) -> dict:
    """Every input file of RUN_DIR, parsed; absent ones are None / empty and named in `notes`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ReportError(f"{run_dir} is not a run directory: it holds no config.json "
                          "(give the --out directory of python -m cotgap_ray.search)")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except ValueError as e:
        raise ReportError(f"{run_dir / 'config.json'} is not valid JSON ({e}); restore it from the run") from e
    notes: list[str] = []
    run = {"dir": str(run_dir), "config": config, "notes": notes}
    for name, why in INPUTS.items():
        run[name.removesuffix(".json")] = _read(run_dir / name, notes)
        if not (run_dir / name).exists():
            notes.append(f"missing {name}: {why}")
    run["trials"] = [t for p in sorted(run_dir.glob("trials/*/trial.json")) if (t := _read(p, notes)) is not None]
    if not run["trials"]:
        notes.append("no trials/*/trial.json: the search has not run a trial yet")
    run["finals"] = {f.get("teacher", p.stem): f for p in sorted(run_dir.glob("final/*.json"))
                     if (f := _read(p, notes)) is not None}
    if not run["finals"]:
        notes.append("no final/*.json: no teacher has been confirmed on the test split")
    return run


def _name_of(spec: str, known: dict[str, str]) -> str:
    """The teacher name for a config spec: as the search recorded it, else models.spec_name (no model is loaded)."""
    if spec in known:
        return known[spec]
    from cotgap_ray.models import spec_name

    try:
        return spec_name(spec)
    except ValueError:
        return spec


def _trial_summary(t: dict) -> dict:
    p = t.get("params") or {}
    return {"trial_id": t.get("trial_id"), "teacher": t.get("teacher"), "status": t.get("status"),
            "filters": p.get("filters"), "lora_rank": p.get("lora.rank"), "alpha_ratio": p.get("lora.alpha_ratio"),
            "learning_rate": p.get("lora.learning_rate"), "epochs_planned": p.get("lora.epochs"),
            "epochs_run": len(t.get("epochs") or []), "n_train_examples": t.get("n_train_examples"),
            "dev_accuracy": t.get("dev_accuracy"), "dev_delta": t.get("dev_delta"),
            "dev_delta_ci95": t.get("dev_delta_ci95"), "p_value": t.get("p_value"), "seconds": t.get("seconds"),
            "train_seconds": t.get("train_seconds"), "finished_at": t.get("finished_at"), "error": t.get("error")}


def _teacher(name: str, spec: str, proxy: dict | None, trials: list[dict], final: dict | None) -> dict:
    counts = {s: sum(t.get("status") == s for t in trials) for s in STATUSES}
    # Without a confirmation, the best dev trial among those that produced a dev number (ASHA-stopped ones included).
    scored = [t for t in trials if t.get("dev_delta") is not None and t.get("status") in ("ok", "stopped")]
    best = max(scored, key=lambda t: t["dev_delta"], default=None)
    if final:
        verdict = "improves" if final.get("improves") else "degrades" if final.get("degrades") else "no clear change"
    elif trials and counts["no_data"] == len(trials):
        verdict = "no usable data"
    else:
        verdict = "not confirmed"
    f = final or {}
    return {
        "name": name, "spec": spec, "teacher_accuracy": (proxy or {}).get("teacher_accuracy"), "proxies": proxy,
        "proxy_rank": (proxy or {}).get("rank"), "n_trials": len(trials), "trial_status_counts": counts,
        "best_trial_id": f.get("trial_id") or (best or {}).get("trial_id"),
        "best_config": f.get("params") or (best or {}).get("params"),
        "best_dev_delta": f.get("best_dev_delta", (best or {}).get("dev_delta")),
        "test_accuracy": f.get("test_accuracy"), "test_n": f.get("n"),
        "test_seeds": [s.get("seed") for s in f.get("seeds", [])], "delta": f.get("delta"),
        "delta_ci95": f.get("delta_ci95"), "p_value": f.get("p_value"), "degrades": f.get("degrades"),
        "improves": f.get("improves"), "verdict": verdict,
        "cost": {"generation_seconds": (proxy or {}).get("generation_seconds", 0.0),
                 "generation_tokens": (proxy or {}).get("generation_tokens", 0),
                 "train_seconds": sum(t.get("train_seconds") or 0.0 for t in trials) + (f.get("train_seconds") or 0.0),
                 "trials_seconds": sum(t.get("seconds") or 0.0 for t in trials)},
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _ci(ci) -> str:
    return "n/a" if not ci else f"[{_pts(ci[0])}, {_pts(ci[1])}]"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def recommend(teachers: list[dict], baseline_test: float | None, stage: str | None) -> dict:
    """The answer, from confirmed teachers only (test split): the largest positive delta, and how sure it is."""
    confirmed = sorted((t for t in teachers if t["delta"] is not None), key=lambda t: -t["delta"])
    if not confirmed:
        return {"teacher": None, "config": None, "delta": None, "delta_ci95": None, "clear": False,
                "text": f"No recommendation yet: the run has not reached confirmation on the test split "
                        f"(stopped at stage '{stage or 'unknown'}')."}
    best = confirmed[0]
    over = f"{_pts(best['delta'])} points {_ci(best['delta_ci95'])} over the student's {_pct(baseline_test)}"
    every_degrades = all(t["degrades"] for t in confirmed)
    others = []  # why the other teachers lost, so the sentence never hides a degrading teacher
    for verdict, clause in (("degrades", "degrade{s} it"), ("no usable data", "gave no usable data"),
                            ("not confirmed", "{are} not confirmed")):
        names = [t["name"] for t in teachers if t["verdict"] == verdict and t is not best
                 and not (verdict == "degrades" and every_degrades)]  # already said by "every teacher degrades"
        if names:
            many = len(names) > 1
            others.append(f"{_names(names)} " + clause.format(s="" if many else "s", are="are" if many else "is"))
    tail = f"; {'; '.join(others)}" if others else ""
    if stage != "done":  # some confirmations may be missing: the answer can still change
        tail += f" (provisional: the run stopped at stage '{stage or 'unknown'}')"
    if best["delta"] > 0:
        rec = {"teacher": best["name"], "config": best["best_config"], "delta": best["delta"],
               "delta_ci95": best["delta_ci95"], "clear": bool(best["improves"])}
        rec["text"] = (f"Use {best['name']}: {over} on test{tail}." if rec["clear"] else
                       f"Best: {best['name']}, {over}, but the interval includes zero: "
                       f"no teacher clearly improves this student{tail}.")
        return rec
    head = ("none: every teacher degrades the student" if every_degrades
            else "none: no teacher improves this student")
    return {"teacher": None, "config": None, "delta": None, "delta_ci95": None, "clear": False,
            "text": f"{head} (best: {best['name']}, {over} on test){tail}."}


def power(run: dict, sizes: dict | None) -> dict:
    """Per split: n, the discordance this run measured (the median fraction of problems an adapter changed: dev
    over the trials' last epochs, test over the confirmations; dev's stands in for test before confirmation), and
    the minimum detectable effect: the smallest improvement the exact McNemar test detects with 80% power at
    alpha 0.05 (stats.min_detectable_effect). None: the split cannot detect any effect that small a change allows."""
    import statistics

    from cotgap_ray.stats import min_detectable_effect

    dev = [t["dev_discordance"] for t in run["trials"] if t.get("dev_discordance") is not None]
    test = [f["discordance"] for f in run["finals"].values() if f.get("discordance") is not None]
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
    cfg, notes = run["config"].get("config", {}), list(run["notes"])
    proxies, finals, status = run["proxies"] or {}, run["finals"], run["status"] or {}
    known = {v.get("spec"): k for k, v in {**proxies, **finals}.items() if v.get("spec")}
    known.update({t["params"]["teacher"]: t["teacher"] for t in run["trials"]
                  if (t.get("params") or {}).get("teacher") and t.get("teacher")})
    names = {_name_of(s, known): s for s in cfg.get("teachers", [])}
    for extra in [*proxies, *finals, *(t.get("teacher") for t in run["trials"])]:
        if extra and extra not in names:  # recorded by the run but absent from the config: shown, and said so
            names[extra] = (proxies.get(extra) or finals.get(extra) or {}).get("spec", extra)
            notes.append(f"teacher {extra} has results but is not in config.json's teachers")
    teachers = [_teacher(n, s, proxies.get(n), [t for t in run["trials"] if t.get("teacher") == n], finals.get(n))
                for n, s in names.items()]
    for t in teachers:
        if t["verdict"] == "not confirmed" and finals:
            notes.append(f"no final confirmation for teacher {t['name']}")
    # Confirmed first, best test delta first; then the rest by proxy rank (the search's own guess), then config order.
    teachers.sort(key=lambda t: (t["delta"] is None, -(t["delta"] or 0.0), t["proxy_rank"] or 1e9))
    base = run["baseline"] or {}
    base_test = base.get("test", {}).get("accuracy")
    if base_test is None and finals:  # baseline.json lost: each confirmation still implies it
        f = next(iter(finals.values()))
        base_test = f["test_accuracy"] - f["delta"]
    stage = status.get("stage")
    task = cfg.get("task", {})
    return {
        "experiment": cfg.get("name"), "student": cfg.get("student"),
        "task": {"name": task.get("name"), "seed": task.get("seed")},
        "splits": {k: (run["splits"] or {}).get(k) for k in ("sizes", "fingerprint")},
        "power": power(run, (run["splits"] or {}).get("sizes")),
        "config_fingerprint": run["config"].get("fingerprint"),
        "baseline": {s: {k: base[s].get(k) for k in ("accuracy", "ci95", "n")} for s in ("dev", "test") if s in base},
        "teachers": teachers,
        "recommendation": recommend(teachers, base_test, stage),
        "trials": sorted((_trial_summary(t) for t in run["trials"]), key=lambda t: t["finished_at"] or float("inf")),
        "complete": stage == "done", "stage": stage, "notes": list(status.get("notes", [])) + notes,
        "confirm_seeds": (cfg.get("confirm") or {}).get("seeds"),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows])


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def render_markdown(r: dict, plots: list[str]) -> str:
    """report.md: the answer first, then the evidence behind it."""
    out = [f"# {r['experiment']}: which teacher for {r['student']} on {r['task']['name']}?", "",
           f"**{r['recommendation']['text']}**", "", "## Baseline (student, no adapter)", "",
           _table(["split", "n", "accuracy", "95% CI"],
                  [[s, b["n"], _pct(b["accuracy"]), f"[{_pct(b['ci95'][0])}, {_pct(b['ci95'][1])}]" if b["ci95"]
                    else "n/a"] for s, b in r["baseline"].items()]), "", "## Teachers, ranked", "",
           _table(["teacher", "teacher acc.", "correct yield", "student NLL", "proxy rank", "trials", "best dev delta",
                   "test acc.", "delta [95% CI]", "p", "verdict"],
                  [[t["name"], _pct(t["teacher_accuracy"]), _pct((t["proxies"] or {}).get("correct_yield")),
                    _num((t["proxies"] or {}).get("student_nll"), ".3f"), t["proxy_rank"], t["n_trials"],
                    _pts(t["best_dev_delta"]), _pct(t["test_accuracy"]),
                    "n/a" if t["delta"] is None else f"{_pts(t['delta'])} {_ci(t['delta_ci95'])}",
                    _num(t["p_value"], ".3g"), t["verdict"]] for t in r["teachers"]])]
    tested = [t for t in r["teachers"] if t["test_n"]]
    if tested:
        out += ["", f"Test: n = {tested[0]['test_n']} problems, seeds {tested[0]['test_seeds']} "
                    "(delta = mean test accuracy over seeds - baseline test accuracy)."]
    out += ["", "## What these splits can detect", "",
            _table(["split", "n", "discordance (measured)", "minimum detectable effect (80% power, alpha 0.05)"],
                   [[s, p["n"], "n/a" if p["discordance"] is None else
                     f"{_pct(p['discordance'])}" + (f" (from {p['discordance_from']})"
                                                    if p["discordance_from"] != s else ""),
                     "n/a" if p["mde"] is None and p["discordance"] is None else
                     ("larger than any change seen: split too small" if p["mde"] is None else
                      f"{100 * p['mde']:.1f} points")] for s, p in r.get("power", {}).items()])]
    out += ["", "## Trials", "",
            _table(["trial", "teacher", "filters", "rank", "alpha ratio", "lr", "epochs", "status", "examples",
                    "dev delta", "seconds"],
                   [[t["trial_id"], t["teacher"], t["filters"], t["lora_rank"], t["alpha_ratio"],
                     _num(t["learning_rate"], ".2g"), f"{t['epochs_run']}/{t['epochs_planned']}", t["status"],
                     t["n_train_examples"], _pts(t["dev_delta"]), _num(t["seconds"], ".0f")] for t in r["trials"]]),
            "", "## Cost per teacher", "",
            _table(["teacher", "generation s", "generation tokens", "training s", "trials wall s"],
                   [[t["name"], f"{t['cost']['generation_seconds']:.0f}", t["cost"]["generation_tokens"],
                     f"{t['cost']['train_seconds']:.0f}", f"{t['cost']['trials_seconds']:.0f}"]
                    for t in r["teachers"]]),
            "", "## Notes", ""] + [f"- {n}" for n in r["notes"] or ["none"]]
    out += ["", "## Plots", ""] + ([f"- [{p}]({p})" for p in plots] or ["- none (no data to plot)"])
    sizes = ", ".join(f"{k} {v}" for k, v in (r["splits"]["sizes"] or {}).items()) or "unknown"
    out += ["", "Splits: trials were selected on **dev**; **test** was used only to confirm each teacher's best dev "
                f"config. Sizes {sizes}, split fingerprint {r['splits']['fingerprint']}; "
                f"stage {r['stage']} ({'complete' if r['complete'] else 'incomplete'}); "
                f"generated {r['generated_at']}.", ""]
    return "\n".join(out)


def plot(r: dict, run_dir: Path) -> list[str]:
    """The PNGs that have data: capacity_gap.png, trials.png, cost.png. Returns their file names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg on its own canvas: no pyplot global state
    from matplotlib.figure import Figure

    def save(fig, name):
        FigureCanvasAgg(fig)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=100)
        written.append(name)

    written: list[str] = []
    gap = [t for t in r["teachers"] if t["delta"] is not None and t["teacher_accuracy"] is not None]
    if gap:  # the capacity-gap picture: does a stronger teacher help this student more?
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for t in gap:
            lo, hi = t["delta_ci95"] or (t["delta"], t["delta"])
            ax.errorbar(100 * t["teacher_accuracy"], 100 * t["delta"], capsize=4, fmt="o",
                        yerr=[[100 * (t["delta"] - lo)], [100 * (hi - t["delta"])]])
            ax.annotate(t["name"], (100 * t["teacher_accuracy"], 100 * t["delta"]), xytext=(5, 5),
                        textcoords="offset points", fontsize=8)
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
        ax.set(ylabel="dev delta (points)", title="Trials: dev delta per teacher")
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
    tmp = run_dir / "report.json.tmp"  # renamed into place: a reader never sees half a report.json
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, run_dir / "report.json")
    return report


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cotgap_ray.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory written by python -m cotgap_ray.search (its --out)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = render(args.run_dir)
    print(report["recommendation"]["text"])
    for name in ["report.json", "report.md", *report["plots"]]:
        print(f"wrote {Path(args.run_dir) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
