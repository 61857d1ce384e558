"""Known answers: does the search find the right teacher, and do the tests call the effects, when the truth is built
in? Per setting, --seeds whole runs of `python -m cotgap_ray.search` with teachers whose effect is known in advance
(cotgap_ray/controls.py), then one table.

    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --out-root runs/known_answers                 # 3 seeds each
    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --settings arithmetic --seeds 2 --set task.n_test=100
    HF_HUB_OFFLINE=1 python benchmarks/known_answers.py --smoke --out-root /tmp/ka_smoke      # plumbing, tiny models
    python benchmarks/known_answers.py --out-root runs/known_answers --table-only             # the table again

Settings (experiments/known_answers.yaml and variations of it; --settings picks some):
  arithmetic  reasoning_gym:basic_arithmetic (2-3 terms of 1-2 digits), SmolLM2-135M-Instruct student; teachers
              control:oracle (exact steps: should improve), control:corrupt (same steps, wrong final answer: should
              degrade), control:shuffled (other problems' steps: should degrade), SmolLM2 itself and its clone
              (another seed: must not be told apart)
  chain_sum   the same teachers on reasoning_gym:chain_sum (sums of 2-4 numbers of 1-2 digits)
Seed s of a setting sets task.seed, generation.seed and search.seed to s: other problems, other samples, another
search, the whole run repeated. Every teacher gets one trial with the same LoRA settings, so only rationales differ.

Per run the table gives the teacher the search chose on dev among all teachers (controls included: does it find the
oracle?), each control's test verdict, and the clone check (the clone's and its original's test answers compared
problem by problem, exact McNemar at alpha 0.05); per setting, over seeds:
  picks oracle        fraction of runs whose dev choice is control:oracle
  oracle improves     sensitivity: fraction of runs whose report says "improves" for the oracle
  corrupt degrades    sensitivity: fraction of runs whose report says "degrades" for the corrupted teacher
  shuffled degrades   the same for control:shuffled (other problems' steps)
  clone FP            false-positive rate: fraction of runs whose clone pair is called different (goal <= 5%)
  regret              the oracle's test delta minus the test delta of the teacher chosen on dev (points; 0 when the
                      oracle is chosen)
Runs go to --out-root/<setting>/s<seed>/ (logs in --out-root/logs/), sharing one cache (--cache-dir): a run with
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

CONFIG = "experiments/known_answers.yaml"
SETTINGS = {
    "arithmetic": [],
    "chain_sum": ["task.name=reasoning_gym:chain_sum",
                  "task.generator_args={min_terms: 2, max_terms: 4, min_digits: 1, max_digits: 2}"],
}
SMOKE = ["student=tiny:llama",
         "teachers=[control:oracle, control:corrupt, control:shuffled, tiny:llama@1, tiny:llama@1#clone=1]",
         "task.name=file", f"task.path={ROOT / 'tests/data/known_answers/fours.jsonl'}", "task.n_train=24",
         "task.n_dev=12", "task.n_test=20", "engine.kind=hf", "engine.batch_size=16", "engine.max_model_len=512",
         "generation.max_tokens=24", "generation.shard_size=24", "lora.batch_size=4", "lora.max_length=256",
         "search.learning_rate=[0.02, 0.02]", "search.epochs=[3]", "search.lora_rank=[4]"]


def run_overrides(setting: str, seed: int, extra: list[str], smoke: bool) -> list[str]:
    base = list(SETTINGS[setting]) + (SMOKE if smoke else [])
    if smoke and setting == "chain_sum":  # the tiny setting has one task: vary its seed only
        base = list(SMOKE)
    return [*base, f"task.seed={seed}", f"generation.seed={seed}", f"search.seed={seed}", *extra]


def chosen_on_dev_all(teachers: list[dict]) -> dict | None:
    """The teacher with the highest best dev delta among every teacher with a selectable trial, controls included
    (report.chosen_on_dev leaves controls out of the recommendation; here finding the oracle is the question)."""
    selectable = [t for t in teachers if t.get("selectable")]
    return max(selectable, key=lambda t: t["best_dev_delta"], default=None)


def summarize_run(report: dict) -> dict:
    """One run's row from its report.json."""
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
    return {"chosen": chosen["name"] if chosen else None,
            "picks_oracle": bool(chosen and chosen["spec"] == "control:oracle"),
            "baseline_test": (report.get("baseline") or {}).get("test", {}).get("accuracy"),
            "oracle": _verdict(oracle), "corrupt": _verdict(corrupt), "shuffled": _verdict(shuffled),
            "clone": {"verdict": clone and clone["verdict"], "p": clone and clone.get("p_value")},
            "regret": regret, "mde_test": ((report.get("power") or {}).get("test") or {}).get("mde"),
            "recommendation": (report.get("recommendation") or {}).get("text")}


def _verdict(t: dict | None) -> dict | None:
    if t is None:
        return None
    return {"verdict": t.get("verdict"), "delta": t.get("delta"), "ci95": t.get("delta_ci95"),
            "best_dev_delta": t.get("best_dev_delta")}


def _rate(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "n/a"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _ci(c) -> str:
    return "" if not c else f" [{_pts(c[0])}, {_pts(c[1])}]"


def render(summary: dict) -> list[str]:
    out = [f"Known answers ({summary['date']}, {summary['cpu']}; command: {summary['command']})", ""]
    rows = []
    for setting, runs in summary["settings"].items():
        for seed, r in runs.items():
            o, c, sh = r["oracle"] or {}, r["corrupt"] or {}, r.get("shuffled") or {}
            rows.append([setting, seed, f"{r['wall_s']:.0f}" if r.get("wall_s") else "n/a",
                         "n/a" if r["baseline_test"] is None else f"{100 * r['baseline_test']:.1f}%", r["chosen"],
                         f"{o.get('verdict')} {_pts(o.get('delta'))}{_ci(o.get('ci95'))}",
                         f"{c.get('verdict')} {_pts(c.get('delta'))}{_ci(c.get('ci95'))}",
                         f"{sh.get('verdict')} {_pts(sh.get('delta'))}{_ci(sh.get('ci95'))}",
                         f"{r['clone']['verdict']} (p {r['clone']['p']:.2g})" if r["clone"]["p"] is not None
                         else str(r["clone"]["verdict"]), _pts(r["regret"]), _pts(r["mde_test"])])
    out += table(["setting", "seed", "wall s", "baseline (test)", "chosen on dev", "oracle: verdict, test delta",
                  "corrupt: verdict, test delta", "shuffled: verdict, test delta", "clone vs original", "regret",
                  "test MDE"], rows)
    out += ["", "Per setting, over seeds:", ""]
    agg = []
    for setting, runs in summary["settings"].items():
        rs = list(runs.values())
        regrets = [r["regret"] for r in rs if r["regret"] is not None]
        agg.append([setting, len(rs), _rate([r["picks_oracle"] for r in rs]),
                    _rate([(r["oracle"] or {}).get("verdict") == "improves" for r in rs]),
                    _rate([(r["corrupt"] or {}).get("verdict") == "degrades" for r in rs]),
                    _rate([(r.get("shuffled") or {}).get("verdict") == "degrades" for r in rs]),
                    _rate([r["clone"]["verdict"] == "differ" for r in rs if r["clone"]["verdict"] is not None]),
                    _pts(sum(regrets) / len(regrets)) if regrets else "n/a"])
    out += table(["setting", "runs", "picks oracle", "oracle improves", "corrupt degrades", "shuffled degrades",
                  "clone FP (goal <= 5%)",
                  "mean regret"], agg)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-root", default="runs/known_answers")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"some of {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
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
    root = Path(args.out_root).resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or default_cache()
    timings_path = root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    summary = {"date": datetime.now(UTC).date().isoformat(), "cpu": cpu_model(),
               "command": "python benchmarks/known_answers.py " + " ".join(sys.argv[1:]), "settings": {}}
    start = time.monotonic()
    for setting in settings:
        summary["settings"][setting] = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run_dir = root / setting / f"s{seed}"
            overrides = [*run_overrides(setting, seed, args.set, args.smoke), f"cache_dir={cache}"]
            if not args.table_only:
                ensure_run(f"{setting}/s{seed}", run_dir, CONFIG, overrides, logs, timings, args.progress_s)
                timings_path.write_text(json.dumps(timings, indent=1))
            report = run_dir / "report.json"
            if not report.exists():
                continue
            row = summarize_run(json.loads(report.read_text()))
            row["wall_s"] = timings.get(str(run_dir), {}).get("wall_s")
            summary["settings"][setting][seed] = row
    summary["wall_s"] = time.monotonic() - start
    lines = render(summary)
    print("\n".join(lines))
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
