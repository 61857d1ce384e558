"""`cotgap search --plan` (search/plan.py): the numbers of each stage from a literal config, split sizes and node
types; node-hours from the rates, "unknown" where a rate is; --rates files; and the command itself, which prints the
plan and exits 0 without starting Ray, loading a model, or writing a run directory or a model cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotgap_ray.config import load_config
from cotgap_ray.errors import InputError
from cotgap_ray.search.plan import (RATES, STAGES, load_rates, local_nll_work, make_plan, node_hours, render,
                                    stage_lines)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "experiments" / "smoke.yaml")
SIZES = {"train": 8, "dev": 8, "test": 8}
LAPTOP = [{"name": "laptop", "source": "alive", "count": 1, "resources": {"CPU": 2.0}}]
GPU_CLUSTER = [{"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 8.0}},
               {"name": "gpu", "source": "autoscaler", "count": 4,
                "resources": {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L4": 1.0}}]


def _row(plan: dict, stage: str, what: str | None = None) -> dict:
    (row,) = [r for r in plan["estimate"] if r["stage"] == stage and (what is None or r["what"] == what)]
    return row


# ------------------------------------------------------------------------------------------------- the numbers


def test_the_smoke_config_s_work_stage_by_stage():
    cfg = load_config(SMOKE)
    plan = make_plan(cfg, SIZES, LAPTOP, prompt_len=100, engine="hf")
    work = plan["work"]
    example = 100 + 24  # prompt + generation.max_tokens, below lora.max_length 256
    assert work["example_tokens"] == example
    assert [(t["name"], t["samples"], t["rationales"], t["tokens"], t["shards"]) for t in work["teachers"]] == [
        ("tiny-llama@1", 2, 16, 16 * 24, 1), ("tiny-llama@2", 2, 16, 16 * 24, 1)]
    assert work["generation"] == {"rationales": 32, "tokens": 32 * 24, "shards": 2}
    # student_local_nll: 24 completion tokens are 2 steps of 16, both read from the whole pass (window 1): no more
    local = {"rationales": 32, "steps_each": 2, "window_steps": 1, "step_tokens": 16, "sequences": 0, "tokens": 0,
             "estimate": True}
    assert work["proxies"] == {"rationales": 32, "tokens": 32 * example, "every_rationale": False,
                               "student_local_nll": local}
    search = work["search"]
    assert (search["trials"], search["epochs"], search["train_tokens"]) == (4, 4 * 2, 8 * 16 * example)
    confirm = work["confirm"]
    # 2 teachers x 2 seeds: the first seed scores each best trial's own adapter, the second trains
    assert (confirm["fine_tunes"], confirm["fine_tunes_if_adapters_lost"], confirm["epochs_each"],
            confirm["train_tokens"]) == (2, 4, 2, 2 * 1 * 2 * 16 * example)
    # baseline dev + test; the evaluation engine's own baseline and its A/A rescoring on dev and on test; every trial
    # epoch on dev; every teacher's seeds on test
    assert work["evaluations"] == {"baseline": 16, "engine_baseline_aa": 32, "search_dev": 64, "confirm_test": 32,
                                   "total": 144}


def test_on_a_laptop_every_stage_has_its_node_hours_from_the_cpu_rates():
    plan = make_plan(load_config(SMOKE), SIZES, LAPTOP, prompt_len=100, engine="hf")
    (laptop,) = plan["cluster"]["node_types"]
    assert laptop["generation_engines"] == {"tiny:llama@1": 1, "tiny:llama@2": 1}  # one engine takes the node
    assert (laptop["evaluation_engine"], laptop["finetune_workers"]) == (1, 2)
    assert plan["cluster"]["trials_at_once"] == 1  # the evaluation engine holds half a CPU: one worker slot is left
    gen = _row(plan, "generation", "tiny-llama@1")
    assert gen["rate"] == "generate.cpu.hf" and gen["node_hours"] == pytest.approx(16 * 24 / 134.0 / 3600)
    baseline = _row(plan, "baseline")
    assert baseline["node_type"] == "laptop" and baseline["node_hours"] == pytest.approx(16 / 0.52 / 3600)
    train = _row(plan, "search", "fine-tune workers")
    assert train["at_once"] == 1 and train["node_hours"] == pytest.approx(8 * 16 * 124 / 260.0 / 3600)
    (total,) = plan["totals"]
    assert total["node_hours"] == pytest.approx(sum(r["node_hours"] for r in plan["estimate"]))
    assert {r["stage"] for r in plan["estimate"]} == set(STAGES) - {"report"}
    vllm = make_plan(load_config(SMOKE), SIZES, LAPTOP, prompt_len=100, engine="vllm")
    assert _row(vllm, "generation", "tiny-llama@1")["rate"] == "generate.cpu.vllm"


def test_a_teacher_variant_s_samples_and_a_student_nll_chain_change_the_work():
    cfg = load_config(SMOKE, ['teachers=[tiny:llama@1, "tiny:llama@2#samples=5"]',
                              "search.filter_chains={nll: [{name: student_nll, q: 0.5}]}",
                              "search.proxy_rationales=10"])
    work = make_plan(cfg, SIZES, LAPTOP, prompt_len=100)["work"]
    assert [t["rationales"] for t in work["teachers"]] == [16, 40]
    assert work["generation"]["rationales"] == 56
    assert work["proxies"]["rationales"] == 56 and work["proxies"]["every_rationale"]  # the chain needs every row
    without = make_plan(load_config(SMOKE, ["search.proxy_rationales=10"]), SIZES, LAPTOP, prompt_len=100)["work"]
    assert without["proxies"]["rationales"] == 20  # 10 per teacher: the sample the proxy scores
    assert work["search"]["train_tokens"] == 8 * 40 * work["example_tokens"]  # a trial may pick the larger teacher


def test_the_local_naturalness_proxy_s_extra_passes_are_estimated_from_the_example_length():
    """student_local_nll scores K - 2 more sequences per rationale of K steps (window 1: sft._local_nlls), each the
    prompt + 2 steps, on the proxies' sample only, even when a student_nll chain scores every row."""
    # 96 completion tokens = 6 steps of 16: 4 sequences of 100 + 2 * 16 tokens, against 196 for the whole pass
    assert local_nll_work(10, prompt_len=100, example=196) == {
        "rationales": 10, "steps_each": 6, "window_steps": 1, "step_tokens": 16, "sequences": 40, "tokens": 5280,
        "estimate": True}
    assert local_nll_work(10, prompt_len=100, example=132)["tokens"] == 0  # 2 steps: both read from the whole pass
    assert local_nll_work(10, prompt_len=100, example=100)["steps_each"] == 0  # the prompt fills the example
    cfg = load_config(SMOKE, ["generation.max_tokens=96", "search.proxy_rationales=10",
                              "search.filter_chains={nll: [{name: student_nll, q: 0.5}]}"])
    plan = make_plan(cfg, SIZES, LAPTOP, prompt_len=100)
    proxies = plan["work"]["proxies"]
    assert (proxies["rationales"], proxies["tokens"]) == (32, 32 * 196)  # the chain: every rationale's NLL
    local = proxies["student_local_nll"]
    assert (local["rationales"], local["sequences"], local["tokens"]) == (20, 80, 80 * 132)  # 10 per teacher
    row = _row(plan, "proxies", "student_local_nll est.")
    assert row["rate"] == "train.cpu" and row["node_hours"] == pytest.approx(10560 / 260.0 / 3600)
    assert "student_local_nll adds ~80 shorter sequences, ~10,560 tokens over <= 20 rationales (an estimate" in (
        stage_lines(plan)[2])
    assert "student_local_nll est. is an estimate" in " ".join(render(plan).split())  # the table's note, unwrapped


def test_a_control_teacher_generates_nothing_but_its_rationales_are_scored():
    """control:... is written from the task by the driver: no engine, no generation row (not even an unknown GPU
    rate), one rationale a problem, scored by the student proxies like any teacher's."""
    cfg = load_config(SMOKE, ["teachers=[tiny:llama@1, control:oracle]", "train.use_gpu=true",
                              "generation.max_tokens=96"])
    plan = make_plan(cfg, SIZES, GPU_CLUSTER, prompt_len=100, engine="vllm")
    work = plan["work"]
    assert [(t["name"], t["control"], t["rationales"], t["tokens"]) for t in work["teachers"]] == [
        ("tiny-llama@1", False, 16, 16 * 96), ("control-oracle", True, 8, 0)]
    assert work["generation"]["tokens"] == 16 * 96
    assert work["proxies"]["rationales"] == 24 and work["proxies"]["student_local_nll"]["rationales"] == 24
    assert [r["what"] for r in plan["estimate"] if r["stage"] == "generation"] == ["tiny-llama@1"]
    assert plan["cluster"]["generation_engines_at_once"] == {"tiny:llama@1": 1}
    assert all(set(t["generation_engines"]) == {"tiny:llama@1"} for t in plan["cluster"]["node_types"])
    assert "(control-oracle: control, written from the task, no engine, no tokens)" in stage_lines(plan)[1]
    assert "generation engines tiny-llama@1 1 (" in " ".join(render(plan).split())
    # only controls: no generation work anywhere, so no unknown generation rate in any total
    only = make_plan(load_config(SMOKE, ["teachers=[control:oracle, control:corrupt]", "train.use_gpu=true"]),
                     SIZES, GPU_CLUSTER, engine="vllm")
    assert not any(r["stage"] == "generation" for r in only["estimate"])
    assert not any(u.startswith("generation") for t in only["totals"] for u in t["unknown"])
    assert "generation engines none (" in " ".join(render(only).split())


def test_a_grid_runs_every_point_to_its_own_epochs():
    from cotgap_ray.search.space import grid_points

    cfg = load_config(SMOKE, ["search.strategy=grid", "search.learning_rate=[0.01, 0.01]"])
    points = grid_points(list(cfg.teachers), cfg.search)
    search = make_plan(cfg, SIZES, LAPTOP)["work"]["search"]
    assert search["trials"] == len(points) == 2 * 4 * 2 * 2  # teachers x chains (m in 1, 2) x ranks x epochs
    assert search["epochs"] == sum(p["lora.epochs"] for p in points) == 16 * 1 + 16 * 2
    assert search["trials_from"] == "the grid's points"


def test_a_gpu_cluster_places_the_work_and_says_unknown_without_gpu_rates():
    cfg = load_config(SMOKE, ["train.use_gpu=true", "search.max_concurrent_trials=3"])
    plan = make_plan(cfg, SIZES, GPU_CLUSTER, engine="vllm")
    head, gpu = plan["cluster"]["node_types"]
    assert head["generation_engines"] == {"tiny:llama@1": 0, "tiny:llama@2": 0}  # engines want a GPU on this cluster
    assert gpu["generation_engines"]["tiny:llama@1"] == 1 and gpu["finetune_workers"] == 1
    assert plan["cluster"]["trials_at_once"] == 3
    gen = _row(plan, "generation", "tiny-llama@1")
    assert gen["node_type"] == "gpu" and gen["rate"] == "generate.gpu.vllm" and gen["node_hours"] is None
    # A Ray task with the evaluation engine's request (no GPU, no marker here): any node type that holds it
    baseline = [r for r in plan["estimate"] if r["stage"] == "baseline"]
    assert {r["node_type"] for r in baseline} == {"head", "gpu"}
    assert {r["rate"] for r in baseline} == {"evaluate.cpu.vllm"}
    totals = {t["node_type"]: t for t in plan["totals"]}
    assert totals["head"]["node_hours"] is not None and totals["gpu"]["node_hours"] is None
    assert "generation (generate.gpu.vllm)" in totals["gpu"]["unknown"]
    text = render(plan)
    assert "unknown" in text and "benchmarks/gpu_check.py" in text
    # given a GPU rate, that row gets its node-hours: one engine per teacher (one shard each)
    rates = {**RATES, "generate.gpu.vllm": RATES["generate.cpu.vllm"].__class__(5000.0, "tokens/s", "test")}
    priced = make_plan(cfg, SIZES, GPU_CLUSTER, engine="vllm", rates=rates)
    assert _row(priced, "generation", "tiny-llama@1")["node_hours"] == pytest.approx(16 * 24 / 5000.0 / 3600)


def test_node_hours_is_wall_time_times_the_nodes_held():
    assert node_hours(36000, 10.0, parallel=4, per_node=2, count=None) == pytest.approx(0.5)  # 900 s on 2 nodes
    assert node_hours(36000, 10.0, parallel=4, per_node=2, count=1) == pytest.approx(0.5)  # 1800 s on the one node
    assert node_hours(36000, 10.0, parallel=1, per_node=8, count=3) == pytest.approx(1.0)  # one unit, one node
    assert node_hours(36000, None, parallel=1, per_node=1, count=1) is None
    assert node_hours(0, None, parallel=1, per_node=1, count=1) == 0.0  # no work (confirm.seeds 1): known, free


def test_unknown_node_types_give_the_work_and_no_estimate():
    plan = make_plan(load_config(SMOKE), SIZES, None)
    assert plan["cluster"] is None and plan["estimate"] == [] and plan["work"]["evaluations"]["total"] == 144
    assert "node types unknown" in render(plan)


def test_render_lists_the_stages_in_order():
    text = render(make_plan(load_config(SMOKE), SIZES, LAPTOP))
    at = [text.index(f"{i}. {stage}") for i, stage in enumerate(STAGES, 1)]
    assert at == sorted(at)
    assert "train.cpu" in text and "2-core" in text  # each rate says where it was measured
    assert max(len(line) for line in text.splitlines()) <= 120


# ------------------------------------------------------------------------------------------------------ --rates


def test_a_rates_file_replaces_the_rates_it_names(tmp_path):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"train.gpu": 5200, "generate.gpu.vllm": {"value": 9000, "source": "gpu_check.py"},
                                "train.cpu": None}))
    rates = load_rates(path)
    assert rates["train.gpu"].value == 5200.0 and str(path) in rates["train.gpu"].source
    assert rates["generate.gpu.vllm"].value == 9000.0 and rates["generate.gpu.vllm"].source.startswith("gpu_check")
    assert rates["train.cpu"].value is None  # made unknown on purpose
    assert rates["generate.cpu.hf"] == RATES["generate.cpu.hf"]  # the rest stay


@pytest.mark.parametrize(("text", "match"), [
    ('{"train.gpuu": 1}', r"unknown rate 'train.gpuu'.*train.gpu"),
    ('{"train.gpu": 0}', r"train.gpu: 0 is not a rate"),
    ('{"train.gpu": "fast"}', r"'fast' is not a rate"),
    ("[1]", r"must be a JSON object"),
    ("{train", r"not valid JSON"),
])
def test_a_bad_rates_file_is_refused_with_its_name(tmp_path, text, match):
    path = tmp_path / "rates.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as refused:
        load_rates(path)
    assert str(refused.value).startswith(f"--rates {path}")
    with pytest.raises(InputError, match="cannot read it"):
        load_rates(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------- the command


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COTGAP_CACHE": str(tmp_path / "cache"),
            "HOME": str(tmp_path / "home"), "RAY_ADDRESS": "local", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _model_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p.suffix in (".safetensors", ".gguf", ".bin")
                                                           or p.name in ("config.json", "manifest.json"))]


def test_the_command_prints_the_plan_and_writes_nothing(tmp_path):
    (tmp_path / "home").mkdir()
    rates = tmp_path / "rates.json"
    rates.write_text('{"train.cpu": 1000}')
    done = subprocess.run([sys.executable, "-m", "cotgap_ray.search", "--config", SMOKE, "--plan"],
                          capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    at = [out.index(f"{i}. {stage}") for i, stage in enumerate(STAGES, 1)]
    assert at == sorted(at) and "nothing was loaded or run" in out and "node-hours" in out
    assert "this machine" in out and "Traceback" not in done.stderr
    as_json = subprocess.run([sys.executable, "-m", "cotgap_ray", "search", "--config", SMOKE, "--plan", "--json",
                              "--rates", str(rates)],
                             capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    plan = json.loads(as_json.stdout)  # stdout holds the plan alone
    assert plan["sizes"] == SIZES and plan["rates"]["train.cpu"]["value"] == 1000.0
    assert plan["work"]["evaluations"]["total"] == 144
    assert not (tmp_path / "runs").exists()  # out_dir/name: no run directory
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))
    assert _model_files(tmp_path / "home") == []


def test_rates_without_plan_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    import ray

    from cotgap_ray.search.run import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    monkeypatch.chdir(tmp_path)
    assert main(["--config", SMOKE, "--rates", "rates.json"]) == 2
    err = capsys.readouterr().err
    assert "error: --rates rates.json: only --plan uses rates" in err and not (tmp_path / "runs").exists()


def test_cotgap_search_plan_in_process_never_starts_ray(tmp_path, monkeypatch, capsys):
    import ray

    from cotgap_ray import cli

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("COTGAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["search", "--config", SMOKE, "--plan", "search.trials=6"]) == 0
    out = capsys.readouterr().out
    assert "6 trials (optuna, search.trials)" in out and not (tmp_path / "runs").exists()
    assert not ray.is_initialized()
