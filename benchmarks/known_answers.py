"""Known answers: does the search find the right teacher, and do the tests call the effects, when the truth is built
in? Per setting, --seeds whole runs of `python -m cotgap_ray.search` with teachers whose effect is known in advance
(cotgap_ray/controls.py), then one table of every run found under --out-root.

    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --out-root runs/known_answers                 # 3 seeds each
    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --settings arithmetic --seeds 2 --set task.n_test=100
    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --settings arithmetic --sizes 96x2,160x1 --seeds 1
    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --settings clone_null --seeds 10 --first-seed 0
    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --smoke --out-root /tmp/ka_smoke      # plumbing, tiny models
    python benchmarks/known_answers.py --out-root runs/known_answers --table-only             # the table again

Settings (experiments/known_answers.yaml and variations of it; --settings picks some):
  arithmetic  reasoning_gym:basic_arithmetic (2-3 terms of 1-2 digits), SmolLM2-135M-Instruct student; teachers
              control:oracle (exact steps: should improve), control:corrupt (same steps, wrong final answer: should
              degrade), control:shuffled (other problems' steps: should degrade), SmolLM2 itself and its clone
              (another seed: must not be told apart)
  chain_sum   the same teachers on reasoning_gym:chain_sum (sums of 2-4 numbers of 1-2 digits)
  clone_null  (only when named) SmolLM2 and its clone alone on chain_sum, 64 train x 1 epoch, 3 confirmation seeds
              a side: the clone false-positive rate, one null comparison a run (about 10-15 minutes on 2 cores)
Seed s of a setting sets task.seed, generation.seed and search.seed to s: other problems, other samples, another
search, the whole run repeated. Every teacher gets one trial with the same LoRA settings, so only rationales differ.

--sizes TRAINxEPOCHS,... runs each setting at other train sizes and epochs with the two controls whose effect the
whole setting calls (control:oracle and control:shuffled, nothing generated: about a third of a run's time), into
<setting>-n<TRAIN>e<EPOCHS>/s<seed>: the search for the smallest training at which the tests still call them. The
test split does not move with the train size (tasks/splits.py), so the student's baseline is the cached one.

The table covers every run under --out-root (earlier invocations' too). Per run: the teacher the search chose on dev
among all teachers (controls included: does it find the oracle?), each control's test verdict, and the clone check
(the clone's and its original's test answers compared problem by problem, exact McNemar at alpha 0.05); per setting
(and size), over seeds, as k/n with the exact (Clopper-Pearson) 95% interval of the rate:
  picks oracle        fraction of runs whose dev choice is control:oracle
  oracle improves     sensitivity: fraction of runs whose report says "improves" for the oracle
  corrupt degrades    sensitivity: fraction of runs whose report says "degrades" for the corrupted teacher
  shuffled degrades   the same for control:shuffled (other problems' steps)
  clone FP            false-positive rate: fraction of runs whose clone pair is called different (goal <= 5%)
  regret              the oracle's test delta minus the test delta of the teacher chosen on dev (points; 0 when the
                      oracle is chosen)
A few seeds measure a rate coarsely (3 of 3 has the interval [29%, 100%]), so a last table projects it: for each run's
oracle and shuffled control, the exact power of the exact McNemar test (stats.mcnemar_power) at that run's effect and
discordance on its test split, at alpha / (the size of its Holm family: Holm's strictest step; the report adjusts the
controls as one family beside real teachers, and in a controls-only size point tests the dev choice alone at alpha and
the other control in the family of the rest), and the smallest test split at which that power reaches 80%. A
projection from one measured effect, not a measured rate: the measured effect of a called control is biased upwards
(it was called).
Runs go to --out-root/<run>/s<seed>/ (logs in --out-root/logs/), sharing one cache (--cache-dir): a run with
report.json is reused, a killed one resumed (benchmarks/search_vs_grid.py's ensure_run). The table is printed and
written to --out-root/summary.md and summary.json with the CPU and each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_vs_grid import cpu_model, default_cache, ensure_run, table  # noqa: E402 - after the path is set

from cotgap_ray.stats import clopper_pearson, mcnemar_power  # noqa: E402

CONFIG = "experiments/known_answers.yaml"
CHAIN_SUM = ["task.name=reasoning_gym:chain_sum",
             "task.generator_args={min_terms: 2, max_terms: 4, min_digits: 1, max_digits: 2}"]
SMOL = "packaged:smollm2-135m-instruct"
SETTINGS = {
    "arithmetic": [],
    "chain_sum": CHAIN_SUM,
    # The clone false-positive rate alone: SmolLM2's rationales and a clone drawn with another seed, nothing else,
    # at chain_sum's smallest size that called the controls (64 x 1); three confirmation seeds a side, so the check
    # compares two teachers, not two trainings (report.control_check; a single seed's "differ" was one lucky seed).
    "clone_null": [*CHAIN_SUM, f"teachers=[{SMOL}, {SMOL}#clone=1]", "search.trials=2", "confirm.seeds=3",
                   "task.n_train=64", "search.epochs=[1]", "generation.shard_size=64"],
}
DEFAULT_SETTINGS = ["arithmetic", "chain_sum"]  # the five-teacher settings; clone_null is asked for by name
# --sizes: the controls the whole setting calls, and nothing to generate (a size point is a third of a run)
SIZE_TEACHERS = ["control:oracle", "control:shuffled"]
SMOKE = ["student=tiny:llama",
         "teachers=[control:oracle, control:corrupt, control:shuffled, tiny:llama@1, tiny:llama@1#clone=1]",
         "task.name=file", f"task.path={ROOT / 'tests/data/known_answers/fours.jsonl'}", "task.n_train=24",
         "task.n_dev=12", "task.n_test=20", "engine.kind=hf", "engine.batch_size=16", "engine.max_model_len=512",
         "generation.max_tokens=24", "generation.shard_size=24", "lora.batch_size=4", "lora.max_length=256",
         "search.learning_rate=[0.02, 0.02]", "search.epochs=[3]", "search.lora_rank=[4]"]
POWER_TARGET = 0.8
ALPHA = 0.05
MAX_TEST_N = 2000  # the projection's search for a test size stops here ("> 2000")


def parse_sizes(text: str | None) -> list[tuple[int, int]]:
    """'96x2,160x1' -> [(96, 2), (160, 1)]: train problems and epochs of each size point."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        train, sep, epochs = item.partition("x")
        if not sep or not train.isdigit() or not epochs.isdigit() or int(train) < 1 or int(epochs) < 1:
            raise SystemExit(f"--sizes: {item!r} is not TRAINxEPOCHS (e.g. 96x2: 96 train problems, 2 epochs)")
        out.append((int(train), int(epochs)))
    return out


def run_overrides(setting: str, seed: int, extra: list[str], smoke: bool,
                  size: tuple[int, int] | None = None) -> list[str]:
    base = list(SETTINGS[setting]) + (SMOKE if smoke else [])
    if smoke and setting == "chain_sum":  # the tiny setting has one task: vary its seed only
        base = list(SMOKE)
    if size is not None:
        if setting == "clone_null":
            raise SystemExit("--sizes: clone_null has its size built in (64 train x 1 epoch); leave --sizes out")
        # one trial per teacher, as in the whole setting (its search.trials is one per its five teachers)
        base += [f"teachers=[{', '.join(SIZE_TEACHERS)}]", f"search.trials={len(SIZE_TEACHERS)}",
                 f"task.n_train={size[0]}", f"search.epochs=[{size[1]}]", f"generation.shard_size={size[0]}"]
    return [*base, f"task.seed={seed}", f"generation.seed={seed}", f"search.seed={seed}", *extra]


def run_name(setting: str, size: tuple[int, int] | None) -> str:
    return setting if size is None else f"{setting}-n{size[0]}e{size[1]}"


def chosen_on_dev_all(teachers: list[dict]) -> dict | None:
    """The teacher with the highest best dev delta among every teacher with a selectable trial, controls included
    (report.chosen_on_dev leaves controls out of the recommendation; here finding the oracle is the question)."""
    selectable = [t for t in teachers if t.get("selectable")]
    return max(selectable, key=lambda t: t["best_dev_delta"], default=None)


def summarize_run(report: dict, finals: dict[str, dict] | None = None) -> dict:
    """One run's row from its report.json (and its final/<teacher>.json files, for each control's discordance)."""
    teachers = report["teachers"]
    by_spec = {t["spec"]: t for t in teachers}
    oracle, corrupt = by_spec.get("control:oracle"), by_spec.get("control:corrupt")
    shuffled = by_spec.get("control:shuffled")
    chosen = chosen_on_dev_all(teachers)
    checks = (report.get("recommendation") or {}).get("controls") or []
    clone = next((c for c in checks if c["kind"] == "clone"), None)
    regret = None
    if chosen is not None and oracle is not None and oracle.get("delta") is not None \
            and chosen.get("delta") is not None:
        regret = oracle["delta"] - chosen["delta"]
    finals = finals or {}
    sizes = (report.get("splits") or {}).get("sizes") or {}
    epochs = sorted({(t.get("params") or {}).get("lora.epochs") for t in finals.values()} - {None})
    return {"chosen": chosen["name"] if chosen else None,
            "picks_oracle": bool(chosen and chosen["spec"] == "control:oracle"),
            "baseline_test": (report.get("baseline") or {}).get("test", {}).get("accuracy"),
            "task": (report.get("task") or {}).get("name"), "sizes": sizes, "epochs": epochs,
            "n_controls": sum(1 for t in teachers if t.get("hypothesis") == "control"),  # the run's control family
            "oracle": _verdict(oracle, finals, teachers), "corrupt": _verdict(corrupt, finals, teachers),
            "shuffled": _verdict(shuffled, finals, teachers),
            "clone": {"verdict": clone and clone["verdict"], "p": clone and clone.get("p_value"),
                      "seeds": clone and clone.get("seeds")},
            "regret": regret, "mde_test": ((report.get("power") or {}).get("test") or {}).get("mde"),
            "recommendation": (report.get("recommendation") or {}).get("text")}


def _verdict(t: dict | None, finals: dict[str, dict], teachers: list[dict]) -> dict | None:
    if t is None:
        return None
    final = finals.get(t["name"]) or {}
    return {"verdict": t.get("verdict"), "delta": t.get("delta"), "ci95": t.get("delta_ci95"),
            "p": t.get("p_value"), "p_adjusted": t.get("p_adjusted"), "best_dev_delta": t.get("best_dev_delta"),
            "discordance": final.get("discordance"), "n": t.get("test_n") or final.get("n"),
            "hypothesis": t.get("hypothesis"), "family": _family(t, teachers)}


def _family(t: dict, teachers: list[dict]) -> int:
    """How many hypotheses the report's Holm adjustment of t's p-value runs over (report.judge): 1 for the primary
    one (the dev choice, at alpha), else the confirmed teachers that share its family (controls among themselves
    when real teachers are in the run; every other teacher when all are controls)."""
    if t.get("hypothesis") in (None, "primary"):
        return 1
    return max(1, sum(1 for u in teachers if u.get("hypothesis") == t["hypothesis"]))


def read_run(run_dir: Path) -> dict | None:
    """summarize_run of a finished run directory, None when it has no report.json yet."""
    report = run_dir / "report.json"
    if not report.exists():
        return None
    finals = {}
    for path in sorted((run_dir / "final").glob("*.json")):
        data = json.loads(path.read_text())
        finals[data.get("teacher", path.stem)] = data
    return summarize_run(json.loads(report.read_text()), finals)


def projected_power(control: dict | None, family: int, n: int | None = None) -> float | None:
    """Exact power of the control's test at its measured effect and discordance on n problems (its own test size by
    default), at alpha / family: Holm's strictest step over the hypotheses its p-value was adjusted with."""
    if not control or control.get("delta") is None or not control.get("discordance"):
        return None
    n = n or control.get("n")
    if not n:
        return None
    return mcnemar_power(n, control["discordance"], control["delta"], ALPHA / max(1, family))


def smallest_test_n(control: dict | None, family: int, target: float = POWER_TARGET, step: int = 25,
                    max_n: int = MAX_TEST_N) -> int | None:
    """The smallest test size (on a `step` grid) at which projected_power reaches `target`; None past max_n or
    when the control has no measured effect. The exact test's power saw-tooths in n, so this is the first grid
    point that reaches it, not a guarantee for every larger n."""
    if projected_power(control, family) is None:
        return None
    for n in range(step, max_n + 1, step):
        if projected_power(control, family, n) >= target:
            return n
    return None


def rate(values: list[bool]) -> str:
    """'k/n [lo%, hi%]': a rate with its exact 95% interval; 'n/a' when nothing was counted."""
    if not values:
        return "n/a"
    k, n = sum(values), len(values)
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} [{100 * lo:.0f}%, {100 * hi:.0f}%]"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _ci(c) -> str:
    return "" if not c else f" [{_pts(c[0])}, {_pts(c[1])}]"


def _cell(v: dict | None) -> str:
    if not v:
        return "-"
    return f"{v.get('verdict')} {_pts(v.get('delta'))}{_ci(v.get('ci95'))}"


def _clone_cell(c: dict) -> str:
    """'differ (p 0.0075)', with the seeds on each side when a check had more than one."""
    if c.get("p") is None:
        return str(c.get("verdict") or "-")
    seeds = c.get("seeds")
    many = f", {seeds[0]}+{seeds[1]} seeds" if seeds and max(seeds) > 1 else ""
    return f"{c['verdict']} (p {c['p']:.2g}{many})"


def _size(r: dict) -> str:
    s = r.get("sizes") or {}
    ep = "/".join(str(e) for e in r.get("epochs") or []) or "?"
    return f"{s.get('train', '?')}/{s.get('dev', '?')}/{s.get('test', '?')}, {ep} ep"


def render(summary: dict) -> list[str]:
    out = [f"Known answers ({summary['date']}, {summary['cpu']}; command: {summary['command']})", ""]
    rows = []
    for name, runs in summary["settings"].items():
        for seed, r in runs.items():
            rows.append([name, seed, _size(r), f"{r['wall_s']:.0f}" if r.get("wall_s") else "n/a",
                         "n/a" if r["baseline_test"] is None else f"{100 * r['baseline_test']:.1f}%", r["chosen"],
                         _cell(r["oracle"]), _cell(r["corrupt"]), _cell(r.get("shuffled")),
                         _clone_cell(r["clone"]), _pts(r["regret"]), _pts(r["mde_test"])])
    out += table(["run", "seed", "train/dev/test, epochs", "wall s", "baseline (test)", "chosen on dev",
                  "oracle: verdict, test delta", "corrupt: verdict, test delta", "shuffled: verdict, test delta",
                  "clone vs original", "regret", "test MDE"], rows)
    out += ["", "Per run setting, over seeds (k/n [exact 95% interval]):", ""]
    agg = []
    groups = [(name, list(runs.values())) for name, runs in summary["settings"].items()]
    if len(groups) > 1:  # every run pooled: a control's sensitivity over tasks and sizes
        groups.append(("all runs", [r for _, rs in groups for r in rs]))
    for name, rs in groups:
        if not rs:
            continue
        has = lambda key: [r for r in rs if r.get(key)]  # noqa: E731 - a size point has no corrupt or clone
        regrets = [r["regret"] for r in rs if r["regret"] is not None]
        agg.append([name, len(rs), rate([r["picks_oracle"] for r in has("oracle")]),
                    rate([r["oracle"]["verdict"] == "improves" for r in has("oracle")]),
                    rate([r["corrupt"]["verdict"] == "degrades" for r in has("corrupt")]),
                    rate([r["shuffled"]["verdict"] == "degrades" for r in has("shuffled")]),
                    rate([r["clone"]["verdict"] == "differ" for r in rs if r["clone"]["verdict"] is not None]),
                    _pts(sum(regrets) / len(regrets)) if regrets else "n/a"])
    out += table(["run setting", "runs", "picks oracle", "oracle improves", "corrupt degrades", "shuffled degrades",
                  "clone FP (goal <= 5%)", "mean regret"], agg)
    out += ["", f"Projected sensitivity: exact McNemar power at each run's measured effect and discordance, alpha "
                f"{ALPHA} / (its Holm family); smallest test split reaching {POWER_TARGET:.0%} (grid of 25):", ""]
    proj = []
    for name, runs in summary["settings"].items():
        for seed, r in runs.items():
            for key in ("oracle", "shuffled"):
                c = r.get(key)
                if not c or c.get("delta") is None:
                    continue
                family = c.get("family") or r["n_controls"]  # a summary from before families were read
                power = projected_power(c, family)
                need = smallest_test_n(c, family)
                proj.append([name, seed, key, _pts(c["delta"]),
                             "n/a" if c.get("discordance") is None else f"{100 * c['discordance']:.1f}%",
                             c.get("n"), family, "n/a" if power is None else f"{power:.0%}",
                             "n/a" if power is None else (need if need is not None else f"> {MAX_TEST_N}")])
    out += table(["run setting", "seed", "control", "test delta", "discordance", "test n", "Holm family",
                  "power at test n", f"test n for {POWER_TARGET:.0%}"], proj)
    return out


def collect(root: Path, timings: dict) -> dict[str, dict]:
    """Every finished run under root, {run setting: {seed: row}}, in name and seed order."""
    found: dict[str, dict] = {}
    for run_dir in sorted(root.glob("*/s*"), key=lambda d: (d.parent.name, int(d.name[1:]) if d.name[1:].isdigit()
                                                              else 0)):
        if not run_dir.name[1:].isdigit():
            continue
        row = read_run(run_dir)
        if row is None:
            continue
        row["wall_s"] = timings.get(str(run_dir), {}).get("wall_s")
        found.setdefault(run_dir.parent.name, {})[int(run_dir.name[1:])] = row
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-root", default="runs/known_answers")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"some of {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--sizes", default=None, metavar="TRAINxEPOCHS,...",
                        help="size points run with control:oracle and control:shuffled only (e.g. 96x2,160x1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--cache-dir", default=None,
                        help="shared cache (default: $COTGAP_CACHE or ~/.cache/cotgap_ray)")
    parser.add_argument("--smoke", action="store_true", help="tiny random models on a file task: the plumbing")
    parser.add_argument("--table-only", action="store_true", help="summarize the runs already in --out-root")
    parser.add_argument("--progress-s", type=float, default=60.0)
    args = parser.parse_args()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {', '.join(unknown)}; valid: {', '.join(SETTINGS)}")
    sizes = parse_sizes(args.sizes) or [None]
    root = Path(args.out_root).resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or default_cache()
    timings_path = root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    start = time.monotonic()
    if not args.table_only:
        for setting in settings:
            for size in sizes:
                name = run_name(setting, size)
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    overrides = [*run_overrides(setting, seed, args.set, args.smoke, size), f"cache_dir={cache}"]
                    ensure_run(f"{name}/s{seed}", root / name / f"s{seed}", CONFIG, overrides, logs, timings,
                               args.progress_s)
                    timings_path.write_text(json.dumps(timings, indent=1))
    summary = {"date": datetime.now(UTC).date().isoformat(), "cpu": cpu_model(),
               "command": "python benchmarks/known_answers.py " + " ".join(sys.argv[1:]),
               "settings": collect(root, timings), "wall_s": time.monotonic() - start}
    lines = render(summary)
    print("\n".join(lines))
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
