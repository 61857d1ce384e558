"""Does the search find the grid's teacher at a fraction of the grid's compute? Per setting, one grid run (every point
of a finite space, search.strategy=grid) and --seeds Optuna searches of the same space, each scored against the grid
by python -m cotgap_ray.validate.

    HF_HUB_OFFLINE=1 python benchmarks/search_vs_grid.py --out-root runs/search_vs_grid            # ~1 h on 2 cores
    HF_HUB_OFFLINE=1 python benchmarks/search_vs_grid.py --smoke --out-root /tmp/svg_smoke        # plumbing, tiny
    python benchmarks/search_vs_grid.py --settings A --seeds 3 --trials 6 --set task.n_dev=60      # variations

Settings (--settings picks some): A = experiments/grid_small.yaml (the default student, teachers Qwen, Gemma, SmolLM2
itself and Qwen#temperature=1.2, a 16-point grid: correct-only rationales, with or without dedupe, 1 or 2 epochs); B =
the same teachers, problems and rationales (A's cache serves them) trained without the correctness filter (filter chain
"unfiltered": every rationale that ended within generation.max_tokens, wrong ones too; a rationale cut by that cap is
always dropped), LoRA rank 8 or 16, 1 or 2 epochs (16 points); C = B's space (learning rate 0.002) over 6 teacher
configurations (Qwen, Qwen#samples=4, Qwen#temperature=1.2, Gemma, SmolLM2, SmolLM2#temperature=0.3: 24 points) with
dev / test of 100 / 200 problems. With correct-only filtering a weak teacher leaves one or
two rows and every fine-tune lands within noise of the baseline; unfiltered, a teacher's wrong rationales can move the
student, so teachers can differ by more than noise and the proxies' correlations can mean something. --smoke swaps in
experiments/smoke.yaml with tiny random models (tiny:llama@1/@2/@3 and tiny:llama@1#temperature=1.5), one filter chain,
one learning rate, 1 epoch, 2 seeds, and a second setting with 3-term sums: a few minutes, numbers meaningless.

Every run is a subprocess (`python -m cotgap_ray.search --config CFG --out DIR overrides...`) in its own directory
under --out-root/<setting>/ (grid, search-s<seed>), logging to --out-root/logs/<setting>-<run>.log; all share one
cache_dir (--cache-dir; rationales, models and baselines are content-addressed, so the teachers generate once per
setting). A run directory with report.json is reused; one without (killed) is continued with --resume, so running the
script again resumes it. Each search gets search.seed=<seed> and search.trials=--trials (default: 25% of the grid's
points rounded up, then down to a multiple of the teachers, at least one per teacher: the search gives every
teacher the same number of trials and leaves a remainder unspent). Ray: RAY_ADDRESS=local unless RAY_ADDRESS is
set (each run its own local Ray, never a cluster left running by someone else).

--allocations plain,proxy adds, per seed, a search with proxy-guided allocation (search.rule_out_alpha=0.05,
search/allocation.py: teachers whose rationales solve significantly fewer train problems than the best teacher's get
no trial) in <setting>/search-proxy-s<seed>, beside the plain search-s<seed>, same budget: the measurement of
allocation against the plain order.

Printed (and written to --out-root/summary.md and summary.json): the CPU and each run's wall time, then

    setting | allocation | seed | search's teacher | grid's teacher | regret [95% CI] | non-inferior | same choice |
      ruled out | compute (trial-epochs, seconds)
    setting | proxy | Spearman vs grid best dev delta | p | Holm p | Kendall | n | Spearman vs grid test delta |
      its 95% CI over test problems

(regret: the grid's choice's test accuracy minus the search's, points, the adapters' answers paired by problem, with
validate's 95% CI and non-inferiority verdict; compute:
the search's share of the grid's trial-epochs and fine-tune+dev-eval seconds; proxies: those of the grid's run), then
per setting the mean regret and compute share over seeds and the stated goals, met or not met:
  1. regret: every seed's search is non-inferior to the grid (validate's verdict "met": the regret CI's upper end at
     most validate.REGRET_MARGIN, 3 points; a CI that merely contains 0, [-9.6, +9.6] say, rules nothing out) at
     <= 25% of the grid's compute (trial-epochs, the unit the search budgets; seconds are shown, they move with
     machine load);
  2. proxies: the best proxy's Spearman with the grid's per-teacher best dev delta is >= 0.86 AND its exact one-sided
     permutation p-value, Holm-adjusted over the proxies (validate.correlations), is < 0.05. A correlation alone is
     no evidence at a few teachers: with 4, a perfect ranking (Spearman 1) happens by chance once in 24 orderings,
     and the best of 8 independent unrelated proxies reaches 0.86 in 29% of runs (13% with 6 teachers); Holm over
     8 proxies needs at least 6 teachers (8 / 6! = 0.011) before any proxy can pass (docs/statistics.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours its actors' prefixes: kept in the log, not the progress line
GOAL_COMPUTE = 0.25  # the search may spend at most this share of the grid's trial-epochs
# Goal 2: the best proxy's Spearman with the grid's per-teacher best dev delta must reach GOAL_SPEARMAN (a size) and
# its exact permutation p-value, Holm-adjusted over the proxies, must be below GOAL_PROXY_ALPHA (the evidence).
GOAL_SPEARMAN = 0.86
GOAL_PROXY_ALPHA = 0.05
RULE_OUT_ALPHA = 0.05  # --allocations proxy: search.rule_out_alpha of those searches (search/allocation.py)
# allocation -> (run directory prefix, extra overrides): plain = every teacher searched; proxy = proxy-guided
ALLOCATIONS = {"plain": ("search", []), "proxy": ("search-proxy", [f"search.rule_out_alpha={RULE_OUT_ALPHA}"])}

# name -> (base config, overrides): the real settings, then the --smoke ones.
SETTINGS = {
    "A": ("experiments/grid_small.yaml", []),
    "B": ("experiments/grid_small.yaml",
          ["search.filter_chains={unfiltered: []}", "search.lora_rank=[8, 16]"]),
    # B's space over 6 teacher configurations (more data, colder and hotter sampling) and 2.5x / 2x the dev / test
    # problems, so that dev differences can exceed a problem or two and a Spearman over 6 teachers means more.
    "C": ("experiments/grid_small.yaml",
          ["teachers=[packaged:qwen2.5-coder-0.5b-instruct, packaged:qwen2.5-coder-0.5b-instruct#samples=4, "
           "packaged:qwen2.5-coder-0.5b-instruct#temperature=1.2, packaged:gemma3-270m, "
           "packaged:smollm2-135m-instruct, packaged:smollm2-135m-instruct#temperature=0.3]",
           "task.n_dev=100", "task.n_test=200", "search.filter_chains={unfiltered: []}", "search.lora_rank=[8, 16]",
           "search.learning_rate=[0.002, 0.002]"]),
}
SMOKE_COMMON = ["teachers=[tiny:llama@1, tiny:llama@2, tiny:llama@3, tiny:llama@1#temperature=1.5]",
                "search.learning_rate=[0.01, 0.01]", "search.filter_chains={all: []}", "search.epochs=[1]",
                "confirm.seeds=1"]
SMOKE_SETTINGS = {
    "A": ("experiments/smoke.yaml", SMOKE_COMMON),
    "B": ("experiments/smoke.yaml",
          [*SMOKE_COMMON, "task.generator_args={min_terms: 3, max_terms: 3, min_digits: 1, max_digits: 1}"]),
}


# ------------------------------------------------------------------------------------------------ machine, runs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.partition(':')[2].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def child_env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"}
    env.setdefault("RAY_ADDRESS", "local")
    return env


def default_cache() -> str:
    return str(Path(os.environ.get("COTGAP_CACHE") or Path.home() / ".cache" / "cotgap_ray").expanduser())


def plan_setting(name: str, config: str, overrides: list[str], trials: int | None) -> dict:
    """The setting's grid size and the search budget, from the config the runs will load (nothing is computed)."""
    from cotgap_ray.config import load_config
    from cotgap_ray.search.space import grid_points

    cfg = load_config(ROOT / config, [*overrides, "search.strategy=grid"])
    points = grid_points(list(cfg.teachers), cfg.search, where=config)
    k = len(cfg.teachers)  # the search spends a multiple of the teachers (equal budgets, search/tuning.py)
    budget = trials if trials is not None else max(math.ceil(0.25 * len(points)) // k * k, k)
    return {"name": name, "config": config, "overrides": overrides, "teachers": list(cfg.teachers),
            "grid_points": len(points), "trials": budget,
            "seed_points_only": cfg.search.seed_from_proxies and budget <= len(cfg.teachers)}


def fingerprint(config: str, overrides: list[str]) -> str:
    from cotgap_ray.config import load_config

    return load_config(ROOT / config, overrides).fingerprint()


def run_one(label: str, cmd: list[str], log: Path, progress_s: float, append: bool = False) -> tuple[int, float]:
    """Run cmd, its output to `log` (appended to it when `append`: a resume keeps the killed run's output); one
    progress line (rewritten in place on a terminal, else every progress_s seconds) with the elapsed time and the
    run's latest output line. Returns (exit status, wall seconds)."""
    tty = sys.stdout.isatty()
    start = last_print = time.monotonic()
    latest = ""
    with open(log, "a" if append else "w") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if line.strip():
                latest = " ".join(ANSI.sub("", line).split())
            now = time.monotonic()
            if tty:
                text = f"  {label}: {now - start:5.0f} s  {latest}"
                print(f"\r\033[K{text[:shutil_width() - 1]}", end="", flush=True)
            elif now - last_print >= progress_s:
                print(f"  {label}: {now - start:5.0f} s  {latest[:100]}", flush=True)
                last_print = now
        rc = proc.wait()
    wall = time.monotonic() - start
    if tty:
        print("\r\033[K", end="")
    return rc, wall


def shutil_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


def tail(path: Path, n: int = 30) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def ensure_run(label: str, run_dir: Path, config: str, overrides: list[str], logs: Path, timings: dict,
               progress_s: float) -> dict:
    """The run in run_dir, finished: reused when report.json is there, continued (--resume) when started, else run.
    A directory holding another config is refused (the search would refuse it too, after starting Ray)."""
    want = fingerprint(config, overrides)
    saved = run_dir / "config.json"
    if saved.exists():
        have = json.loads(saved.read_text()).get("fingerprint")
        if have != want:
            raise SystemExit(f"{run_dir} holds another config ({have}, this one {want}): use another --out-root, or "
                             f"remove that directory to run it again")
    key = str(run_dir)
    if (run_dir / "report.json").exists() and saved.exists():
        known = timings.get(key, {})
        print(f"  {label}: reused {run_dir} (report.json exists; wall {_secs(known.get('wall_s'))})", flush=True)
        return {"dir": key, "status": "reused", "wall_s": known.get("wall_s")}
    resume = saved.exists()
    cmd = [sys.executable, "-m", "cotgap_ray.search", "--config", str(ROOT / config), "--out", str(run_dir),
           *(["--resume"] if resume else []), *overrides]
    log = logs / f"{label.replace('/', '-')}.log"
    print(f"  {label}: {'resuming' if resume else 'running'} -> {run_dir} (log {log})", flush=True)
    rc, wall = run_one(label, cmd, log, progress_s, append=resume)
    if rc != 0:
        print(tail(log), file=sys.stderr)
        raise SystemExit(f"{label} failed (exit {rc}) after {wall:.0f} s; full output in {log}. Run this script "
                         "again to resume it.")
    earlier = timings.get(key, {}).get("wall_s") if resume else None
    total = wall + (earlier or 0.0)
    print(f"  {label}: done in {wall:.0f} s" + (f" (+{earlier:.0f} s before the resume)" if earlier else ""),
          flush=True)
    timings[key] = {"wall_s": total, "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    return {"dir": key, "status": "resumed" if resume else "ran", "wall_s": total, "this_wall_s": wall}


def validate_one(label: str, search_dir: Path, grid_dir: Path, out_json: Path, logs: Path) -> dict:
    log = logs / f"{label.replace('/', '-')}-validate.log"
    cmd = [sys.executable, "-m", "cotgap_ray.validate", str(search_dir), str(grid_dir), "--json"]
    with open(log, "w") as errors, open(out_json, "w") as out:  # --json: the comparison is stdout
        rc = subprocess.run(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=errors, check=False).returncode
    if rc != 0:
        print(tail(log), file=sys.stderr)
        raise SystemExit(f"validate {label} failed (exit {rc}); full output in {log}")
    return json.loads(out_json.read_text())


# ------------------------------------------------------------------------------------------------ tables


def _secs(x) -> str:
    return "n/a" if x is None else f"{x:.0f} s"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _num(x, fmt: str = "+.2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _p(x) -> str:
    return _num(x, ".3f")


def _rank_ci(ci) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "n/a"


def table(header: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in cells)]


def _ruled_out(alloc: dict | None) -> str:
    """validate's allocation check in a cell: the teachers ruled out, and whether the grid's choice or the oracle
    (best on test) was one of them."""
    if not alloc:
        return "-"
    flags = [what for what, key in (("grid's choice", "grid_choice_ruled_out"), ("oracle", "oracle_ruled_out"))
             if alloc.get(key)]
    return f"{', '.join(alloc['ruled_out']) or 'none'} ({' and '.join(flags) + ' ruled out' if flags else 'neither'})"


def regret_ok(sq: dict) -> bool | None:
    """Goal 1's regret half: validate's non-inferiority verdict is "met" (the regret CI's upper end within its margin);
    None when validate gave no interval."""
    r = sq["regret"]
    return None if not r.get("ci95") else r.get("verdict") == "met"


def summarize(setting: dict, allocation: str = "plain") -> dict:
    """Means over seeds and the goals' verdicts for one setting's searches of one allocation."""
    sqs = [v["quality"] for v in setting["validations"] if v.get("allocation", "plain") == allocation]
    regrets = [sq["regret"]["value"] for sq in sqs if sq["regret"]["value"] is not None]
    epochs = [sq["compute"]["trial_epochs"]["fraction"] for sq in sqs
              if sq["compute"]["trial_epochs"]["fraction"] is not None]
    seconds = [sq["compute"]["seconds"]["fraction"] for sq in sqs if sq["compute"]["seconds"]["fraction"] is not None]
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    oks = [regret_ok(sq) for sq in sqs]
    compute_ok = bool(epochs) and max(epochs) <= GOAL_COMPUTE
    regret_goal = bool(oks) and all(ok is True for ok in oks) and compute_ok
    best = best_proxy(setting["proxies"])
    return {"mean_regret": mean(regrets), "mean_trial_epochs_fraction": mean(epochs),
            "mean_seconds_fraction": mean(seconds), "same_choice": sum(sq["same_choice"] for sq in sqs),
            "n_searches": len(sqs),
            "goal_regret": {"met": regret_goal, "regret_non_inferior": oks, "max_trial_epochs_fraction":
                            max(epochs) if epochs else None, "threshold": GOAL_COMPUTE},
            "goal_proxy": proxy_goal(best)}


def best_proxy(proxies: list[dict]) -> dict | None:
    """The grid's proxy with the highest Spearman against its per-teacher best dev delta (ties: the smallest
    Holm-adjusted p), or None when no proxy has a correlation."""
    dev_rows = [p for p in proxies if p["target"] == "grid_best_dev_delta" and p["spearman"] is not None
                and not (isinstance(p["spearman"], float) and math.isnan(p["spearman"]))]
    return max(dev_rows, key=lambda p: (p["spearman"], -_holm_p(p)), default=None)


def _holm_p(p: dict) -> float:
    """The row's Holm-adjusted Spearman p-value; 1.0 where it has none (recorded before validate computed one)."""
    v = p.get("spearman_p_holm")
    return 1.0 if v is None else v


def proxy_goal(best: dict | None) -> dict:
    """Goal 2: met only when the best proxy's Spearman is >= GOAL_SPEARMAN and its Holm-adjusted exact permutation
    p-value < GOAL_PROXY_ALPHA. Without a p-value (a summary from before validate computed them) it is not met."""
    p, p_holm = (None, None) if best is None else (best.get("spearman_p"), best.get("spearman_p_holm"))
    met = best is not None and best["spearman"] >= GOAL_SPEARMAN and p_holm is not None and p_holm < GOAL_PROXY_ALPHA
    return {"met": met, "best_proxy": best and best["proxy"], "spearman": best and best["spearman"],
            "p": p, "p_holm": p_holm, "n": best and best["n"], "holm_family": best and best.get("holm_family"),
            "threshold": GOAL_SPEARMAN, "alpha": GOAL_PROXY_ALPHA}


def proxy_goal_text(goal: dict) -> str:
    """Goal 2's cell: the verdict, the best proxy, its Spearman and (Holm) p, and why it failed."""
    if goal["best_proxy"] is None:
        return "not met (no proxy has a correlation)"
    said = (f"{goal['best_proxy']} {_num(goal['spearman'])}, p {_p(goal['p'])}, Holm p {_p(goal['p_holm'])} "
            f"over {goal.get('holm_family') or 'n/a'} proxies, {goal.get('n') or 'n/a'} teachers")
    if goal["met"]:
        return f"met ({said})"
    why = []
    if goal["spearman"] < goal["threshold"]:
        why.append(f"Spearman < {goal['threshold']}")
    if goal["p_holm"] is None:
        why.append("no p-value (recorded before validate computed one)")
    elif goal["p_holm"] >= goal.get("alpha", GOAL_PROXY_ALPHA):
        why.append(f"Holm p >= {goal.get('alpha', GOAL_PROXY_ALPHA)}")
    return f"not met ({said}: {'; '.join(why)})"


def goal_text(goal: dict) -> str:
    """Goal 1's verdict with what failed: the regret CI of some seed, the compute share, or both."""
    if goal["met"]:
        return "met"
    why = []
    if not all(ok is True for ok in goal["regret_non_inferior"]) or not goal["regret_non_inferior"]:
        why.append("a regret CI's upper end is above the margin or missing")
    share = goal["max_trial_epochs_fraction"]
    if share is None or share > goal["threshold"]:
        why.append(f"compute {_pct(share)} > {goal['threshold']:.0%}")
    return f"not met ({'; '.join(why)})"


def render(summary: dict) -> list[str]:
    out = [f"# Search vs grid{' (smoke: tiny random models, numbers meaningless)' if summary['smoke'] else ''}", "",
           (f"CPU: {summary['cpu']}; started {summary['started']}; out-root {summary['out_root']}; "
           f"cache_dir {summary['cache_dir']}"), ""]
    runs = [[s["name"], r["label"], r["status"], _secs(r["wall_s"]), r["dir"]]
            for s in summary["settings"] for r in s["runs"]]
    out += ["## Runs", "", *table(["setting", "run", "status", "wall", "directory"], runs), ""]
    for s in summary["settings"]:
        out.append(f"- setting {s['name']}: {s['config']} {' '.join(s['overrides']) or '(no overrides)'}; "
                   f"{len(s['teachers'])} teacher configurations, grid {s['grid_points']} points, search.trials "
                   f"{s['trials']}" + ("; every plain search trial is a proxy-seeded point (search.trials <= teachers, "
                                       "seed_from_proxies): plain searches do not depend on search.seed"
                                       if s["seed_points_only"] else ""))
    rows = []
    for s in summary["settings"]:
        for v in s["validations"]:
            sq = v["quality"]
            r, c = sq["regret"], sq["compute"]
            ci = r.get("ci95")
            rows.append([s["name"], v.get("allocation", "plain"), v["seed"], sq["search_choice"]["teacher"],
                         sq["grid_choice"]["teacher"],
                         f"{_pts(r['value'])} [{_pts(ci[0])}, {_pts(ci[1])}]" if ci else f"{_pts(r['value'])} [n/a]",
                         r.get("verdict") or "n/a", "yes" if sq["same_choice"] else "no",
                         _ruled_out(sq.get("allocation")),
                         (f"{_pct(c['trial_epochs']['fraction'])} ({c['trial_epochs']['search']:.0f}/"
                         f"{c['trial_epochs']['grid']:.0f}), {_pct(c['seconds']['fraction'])}")])
    out += ["", "## Regret (points of test accuracy: grid's choice minus the search's) and compute", "",
            *table(["setting", "allocation", "seed", "search's teacher", "grid's teacher", "regret [95% CI]",
                    "non-inferior (validate)", "same choice", "ruled out (grid's choice / oracle among them)",
                    "compute (trial-epochs, seconds)"], rows)]
    rows = []
    for s in summary["settings"]:
        test = {p["proxy"]: p for p in s["proxies"] if p["target"] == "grid_test_delta"}
        for p in s["proxies"]:
            if p["target"] == "grid_best_dev_delta":
                t = test.get(p["proxy"], {})
                rows.append([s["name"], f"{p['proxy']} ({p['direction']} better)", _num(p["spearman"]),
                             _p(p.get("spearman_p")), _p(p.get("spearman_p_holm")), _num(p["kendall_tau"]), p["n"],
                             _num(t.get("spearman")), _rank_ci(t.get("spearman_ci95"))])
    out += ["", "## Proxies (the grid run's) against the grid's per-teacher deltas", "",
            *table(["setting", "proxy", "Spearman vs grid best dev delta", "p (exact, one-sided)",
                    "Holm p (over the proxies)", "Kendall", "n", "Spearman vs grid test delta",
                    "its 95% CI (bootstrap over test problems)"], rows)]
    rows = []
    for s in summary["settings"]:
        for allocation, m in s["summaries"].items():
            g1, g2 = m["goal_regret"], m["goal_proxy"]
            rows.append([s["name"], allocation, f"{_pts(m['mean_regret'])}", f"{m['same_choice']}/{m['n_searches']}",
                         f"{_pct(m['mean_trial_epochs_fraction'])}, {_pct(m['mean_seconds_fraction'])}",
                         goal_text(g1), proxy_goal_text(g2)])
    out += ["", "## Per setting, over seeds, and the goals", "",
            *table(["setting", "allocation", "mean regret", "same choice", "mean compute (trial-epochs, seconds)",
                    f"goal: regret non-inferior (CI upper end <= margin) at <= {GOAL_COMPUTE:.0%} compute",
                    f"goal: best proxy Spearman >= {GOAL_SPEARMAN} with Holm p < {GOAL_PROXY_ALPHA}"], rows),
            "", (f"Goal 1 needs every seed's regret CI to end at most validate's margin above 0 (non-inferiority, "
                f"verdict met) and every search's trial-epochs "
                f"share <= {GOAL_COMPUTE:.0%}; seconds (fine-tune + dev evaluation per trial epoch) are shown, not "
                "judged. Goal 2 takes the best of the grid run's proxies against its per-teacher best dev delta and "
                f"needs its Spearman >= {GOAL_SPEARMAN} and its exact one-sided permutation p-value, Holm-adjusted "
                f"over the proxies, < {GOAL_PROXY_ALPHA}: with 4 teachers even a perfect ranking has p = 1/24, "
                "so with 8 proxies it cannot be met below 6 teachers.")]
    notes = sorted({n for s in summary["settings"] for v in s["validations"] for n in v["quality"].get("notes", [])})
    return out + (["", "Notes from validate:", *(f"- {n}" for n in notes)] if notes else [])


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-root", help="where runs, logs and the summary go (default runs/search_vs_grid, "
                                           "runs/search_vs_grid_smoke with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny random models on experiments/smoke.yaml")
    parser.add_argument("--settings", help="comma-separated setting names (default: all): " + ", ".join(SETTINGS))
    parser.add_argument("--seeds", type=int, default=None, help="searches per setting, search.seed 0..K-1 "
                                                                "(default 3, 2 with --smoke)")
    parser.add_argument("--trials", type=int, default=None, help="search.trials of each search (default: 25%% of "
                                                                 "the grid rounded up, then down to a multiple of "
                                                                 "the teachers, at least the teachers)")
    parser.add_argument("--cache-dir", help="cache_dir every run shares (default: $COTGAP_CACHE or "
                                            "~/.cache/cotgap_ray; <out-root>/cache with --smoke)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run of every setting (repeatable)")
    parser.add_argument("--allocations", default="plain",
                        help="comma-separated: plain (every teacher searched) and/or proxy (search.rule_out_alpha="
                             f"{RULE_OUT_ALPHA}: teachers the proxy rules out get no trial); default plain")
    parser.add_argument("--progress-s", type=float, default=60.0,
                        help="seconds between progress lines when stdout is not a terminal")
    args = parser.parse_args()

    out_root = Path(args.out_root or ("runs/search_vs_grid_smoke" if args.smoke else "runs/search_vs_grid"))
    out_root = (out_root if out_root.is_absolute() else Path.cwd() / out_root).resolve()
    logs = out_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cache = str(Path(args.cache_dir).resolve()) if args.cache_dir else (
        str(out_root / "cache") if args.smoke else default_cache())
    seeds = args.seeds if args.seeds is not None else (2 if args.smoke else 3)
    catalog = SMOKE_SETTINGS if args.smoke else SETTINGS
    names = args.settings.split(",") if args.settings else list(catalog)
    allocations = args.allocations.split(",")
    if bad := [a for a in allocations if a not in ALLOCATIONS]:
        parser.error(f"--allocations: unknown {', '.join(bad)}; known: {', '.join(ALLOCATIONS)}")
    unknown = [n for n in names if n not in catalog]
    if unknown:
        parser.error(f"--settings: unknown {', '.join(unknown)}; known: {', '.join(catalog)}")

    timings_path = out_root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    started = time.monotonic()
    summary = {"cpu": cpu_model(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
               "out_root": str(out_root), "cache_dir": cache, "smoke": args.smoke, "seeds": seeds,
               "goals": {"compute_fraction": GOAL_COMPUTE, "spearman": GOAL_SPEARMAN,
                         "proxy_alpha": GOAL_PROXY_ALPHA}, "settings": []}
    print(f"CPU: {summary['cpu']}\nout-root {out_root}, cache_dir {cache}, seeds {seeds}", flush=True)

    for name in names:
        config, overrides = catalog[name]
        base = [*overrides, *args.set, f"cache_dir={cache}"]
        plan = plan_setting(name, config, base, args.trials)
        print(f"\nsetting {name}: {config} {' '.join(overrides)}\n  {len(plan['teachers'])} teachers, grid "
              f"{plan['grid_points']} points, {seeds} searches of {plan['trials']} trials", flush=True)
        if plan["seed_points_only"]:
            print("  note: search.trials <= teachers with seed_from_proxies: every plain search trial is a "
                  "proxy-seeded point, so plain searches do not depend on search.seed", flush=True)
        setting = {**plan, "runs": [], "validations": []}
        grid_dir = out_root / name / "grid"
        setting["runs"].append({"label": "grid", **ensure_run(
            f"{name}/grid", grid_dir, config, [*base, "search.strategy=grid"], logs, timings, args.progress_s)})
        write_json(timings_path, timings)
        for allocation in allocations:
            prefix, extra = ALLOCATIONS[allocation]
            for seed in range(seeds):
                label = f"{prefix}-s{seed}"
                run_dir = out_root / name / label
                setting["runs"].append({"label": label, **ensure_run(
                    f"{name}/{label}", run_dir, config,
                    [*base, "search.strategy=optuna", f"search.seed={seed}", f"search.trials={plan['trials']}",
                     *extra], logs, timings, args.progress_s)})
                write_json(timings_path, timings)
                quality = validate_one(f"{name}-{label}", run_dir, grid_dir,
                                       out_root / name / f"validate-{label.removeprefix('search-')}.json", logs)
                setting["validations"].append({"allocation": allocation, "seed": seed, "search_run": str(run_dir),
                                               "quality": quality})
        first = setting["validations"][0]["quality"] if setting["validations"] else {"proxies": []}
        setting["proxies"] = [p for p in first["proxies"] if p["source"] == "grid"]
        setting["summaries"] = {a: summarize(setting, a) for a in allocations}
        summary["settings"].append(setting)

    summary["wall_s"] = time.monotonic() - started
    lines = render(summary) + ["", f"Wall time of this invocation: {summary['wall_s']:.0f} s."]
    write_json(out_root / "summary.json", summary)
    (out_root / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    print(f"\nwrote {out_root / 'summary.md'} and {out_root / 'summary.json'}")


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry point must be guarded
    main()
