"""benchmarks/known_answers.py's bookkeeping: its size points are valid configs, each run's row and the rates are read
from what a search writes (report.json, final/<teacher>.json), and the projected sensitivity is the exact McNemar
power the report's own statistics give (issue 32, item 2). No run is started here."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import known_answers as bench  # noqa: E402  (benchmarks/known_answers.py, a script)

from cotgap_ray.config import load_config  # noqa: E402
from cotgap_ray.stats import mcnemar_power  # noqa: E402


def test_sizes_parse_and_a_typo_is_refused_with_the_format():
    assert bench.parse_sizes("96x2, 160x1") == [(96, 2), (160, 1)]
    assert bench.parse_sizes(None) == []
    for bad in ("96", "96x", "x2", "96x0", "ninety-sixx2"):
        with pytest.raises(SystemExit, match="TRAINxEPOCHS"):
            bench.parse_sizes(bad)


@pytest.mark.parametrize("setting", bench.DEFAULT_SETTINGS)
def test_a_size_point_is_a_valid_config_with_two_controls_and_its_train_size_and_epochs(setting):
    overrides = bench.run_overrides(setting, 2, [], smoke=False, size=(96, 3))
    cfg = load_config(ROOT / bench.CONFIG, overrides)
    assert list(cfg.teachers) == ["control:oracle", "control:shuffled"]
    assert (cfg.task.n_train, list(cfg.search.epochs), cfg.task.seed, cfg.search.seed) == (96, [3], 2, 2)
    assert cfg.search.trials == 2  # one trial per teacher, as in the whole setting: no second trial of one config
    whole = load_config(ROOT / bench.CONFIG, bench.run_overrides(setting, 2, [], smoke=False))
    assert len(whole.teachers) == whole.search.trials == 5 and whole.task.n_test == cfg.task.n_test  # the same test split, only training moves
    assert bench.run_name(setting, (96, 3)) == f"{setting}-n96e3" and bench.run_name(setting, None) == setting


def test_the_clone_null_setting_is_smollm2_and_its_clone_alone_with_three_seeds_a_side():
    cfg = load_config(ROOT / bench.CONFIG, bench.run_overrides("clone_null", 4, [], smoke=False))
    assert list(cfg.teachers) == [bench.SMOL, f"{bench.SMOL}#clone=1"] and cfg.search.trials == 2
    assert (cfg.confirm.seeds, cfg.task.n_train, list(cfg.search.epochs)) == (3, 64, [1])
    assert (cfg.task.name, cfg.task.seed, cfg.generation.seed) == ("reasoning_gym:chain_sum", 4, 4)
    with pytest.raises(SystemExit, match="clone_null has its size built in"):
        bench.run_overrides("clone_null", 0, [], smoke=False, size=(96, 2))
    assert "clone_null" not in bench.DEFAULT_SETTINGS  # asked for by name: a run of it answers one question


def _teacher(name, spec, verdict, delta, dev, hypothesis="control"):
    return {"name": name, "spec": spec, "verdict": verdict, "delta": delta, "delta_ci95": [delta - 0.05, delta + 0.05],
            "p_value": 0.01, "p_adjusted": 0.02, "best_dev_delta": dev, "selectable": True, "test_n": 200,
            "hypothesis": hypothesis}


def _write_run(run_dir: Path, teachers: list[dict], discordance: dict[str, float], clone: dict | None = None) -> None:
    """A finished run as the search leaves it, reduced to what the benchmark reads."""
    (run_dir / "final").mkdir(parents=True)
    checks = [clone] if clone else []
    report = {"teachers": teachers, "task": {"name": "reasoning_gym:basic_arithmetic", "seed": 0},
              "splits": {"sizes": {"train": 160, "dev": 60, "test": 200}},
              "baseline": {"test": {"accuracy": 0.085}}, "power": {"test": {"mde": 0.065}},
              "recommendation": {"text": "...", "controls": checks}}
    (run_dir / "report.json").write_text(json.dumps(report))
    for t in teachers:
        final = {"teacher": t["name"], "n": 200, "discordance": discordance[t["name"]],
                 "params": {"lora.epochs": 2}}
        (run_dir / "final" / f"{t['name']}.json").write_text(json.dumps(final))


def test_runs_are_read_from_their_directories_and_rated_with_exact_intervals(tmp_path):
    whole = [_teacher("control-oracle", "control:oracle", "improves", 0.09, 0.083),
             _teacher("control-corrupt", "control:corrupt", "no clear change", -0.005, 0.017),
             _teacher("control-shuffled", "control:shuffled", "degrades", -0.075, -0.067),
             _teacher("smollm2", "packaged:smollm2-135m-instruct", "no clear change", 0.025, 0.1, "primary")]
    _write_run(tmp_path / "arithmetic" / "s0", whole, {"control-oracle": 0.17, "control-corrupt": 0.1,
                                                       "control-shuffled": 0.095, "smollm2": 0.05},
               clone={"kind": "clone", "verdict": "same", "p_value": 0.34})
    # every teacher a control: the dev choice is the primary hypothesis (alpha alone), the other its own family
    sized = [_teacher("control-oracle", "control:oracle", "no clear change", 0.04, 0.05, "primary"),
             _teacher("control-shuffled", "control:shuffled", "degrades", -0.08, -0.07, "secondary")]
    _write_run(tmp_path / "arithmetic-n96e2" / "s1", sized, {"control-oracle": 0.12, "control-shuffled": 0.1})
    (tmp_path / "arithmetic" / "s7").mkdir()  # started, not finished: not a row

    runs = bench.collect(tmp_path, {str(tmp_path / "arithmetic" / "s0"): {"wall_s": 1995.0}})
    assert list(runs) == ["arithmetic", "arithmetic-n96e2"] and list(runs["arithmetic"]) == [0]
    row = runs["arithmetic"][0]
    assert row["chosen"] == "smollm2" and not row["picks_oracle"]  # the highest dev delta, controls included
    assert row["regret"] == pytest.approx(0.09 - 0.025) and row["wall_s"] == 1995.0
    assert row["n_controls"] == 3 and row["epochs"] == [2] and row["oracle"]["discordance"] == 0.17
    assert runs["arithmetic-n96e2"][1]["corrupt"] is None and runs["arithmetic-n96e2"][1]["picks_oracle"]
    assert row["oracle"]["family"] == row["shuffled"]["family"] == 3  # the controls' Holm family beside smollm2
    assert row["corrupt"]["hypothesis"] == "control"

    small = runs["arithmetic-n96e2"][1]
    assert small["oracle"]["family"] == small["shuffled"]["family"] == 1

    lines = bench.render({"date": "d", "cpu": "c", "command": "x", "settings": runs})
    at = next(i for i, line in enumerate(lines) if line.startswith("Per run setting"))
    rates = next(line for line in lines[at:] if line.startswith("| arithmetic-n96e2 "))
    # a size point has no corrupt teacher and no clone: n/a there, not a 0/1 that reads as a measured rate
    assert "0/1 [0%, 97%]" in rates and rates.count("n/a") >= 2
    assert any(line.startswith("| arithmetic ") and "1/1 [3%, 100%]" in line for line in lines[at:])
    pooled = next(line for line in lines[at:] if line.startswith("| all runs "))
    assert "| 2 " in pooled and "1/2 [1%, 99%]" in pooled  # picks oracle: the size point yes, the whole run no

    # a clone-null run has no oracle: it counts toward the clone rate only, never as a run that missed the oracle
    clones = [_teacher("smollm2", bench.SMOL, "no clear change", 0.01, 0.0, "primary"),
              _teacher("smollm2#clone=1", f"{bench.SMOL}#clone=1", "no clear change", 0.02, 0.0, "secondary")]
    _write_run(tmp_path / "clone_null" / "s0", clones, {"smollm2": 0.05, "smollm2#clone=1": 0.06},
               clone={"kind": "clone", "verdict": "same", "p_value": 0.6, "seeds": [3, 3]})
    lines = bench.render({"date": "d", "cpu": "c", "command": "x", "settings": bench.collect(tmp_path, {})})
    at = next(i for i, line in enumerate(lines) if line.startswith("Per run setting"))
    null = [c.strip() for c in next(line for line in lines[at:] if line.startswith("| clone_null ")).split("|")]
    assert null[2:4] == ["1", "n/a"] and null[7] == "0/1 [0%, 97%]"  # picks oracle: n/a; clone FP: 0 of 1
    assert any("same (p 0.6, 3+3 seeds)" in line for line in lines)


def test_a_rate_carries_its_clopper_pearson_interval():
    assert bench.rate([True, True, True]) == "3/3 [29%, 100%]"
    assert bench.rate([False] * 20) == "0/20 [0%, 17%]"
    assert bench.rate([]) == "n/a"


def test_the_projection_is_the_exact_mcnemar_power_at_holms_strictest_step():
    oracle = {"delta": 0.09, "discordance": 0.17, "n": 200}
    assert bench.projected_power(oracle, 3) == pytest.approx(mcnemar_power(200, 0.17, 0.09, 0.05 / 3))
    assert bench.projected_power(oracle, 1) > bench.projected_power(oracle, 3)  # fewer controls, looser step
    need = bench.smallest_test_n(oracle, 3)
    assert need is not None and need % 25 == 0
    assert bench.projected_power(oracle, 3, need) >= 0.8 > bench.projected_power(oracle, 3, need - 25)
    degrade = {"delta": -0.075, "discordance": 0.095, "n": 200}  # two-sided: a degradation is powered the same way
    assert bench.projected_power(degrade, 3) == pytest.approx(
        bench.projected_power({**degrade, "delta": 0.075}, 3))
    assert bench.projected_power({"delta": None, "discordance": 0.1, "n": 200}, 3) is None
    assert bench.smallest_test_n({"delta": 0.0, "discordance": 0.1, "n": 200}, 3) is None  # no effect: never 80%
