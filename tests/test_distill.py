"""One distillation trial end to end on the tiny model: real Ray Data generation, real Ray Train LoRA, real
evaluation against the baseline; a filter chain that leaves nothing ends as status no_data; a finished trial is
reloaded, not re-run."""

import json

import pytest

from cotgap_ray import distill
from cotgap_ray.config import ConfigError, load_config

pytestmark = pytest.mark.ray  # starts a local Ray cluster (Ray Data / Ray Train / metrics)


@pytest.fixture(scope="module", autouse=True)
def _ray():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(tmp_path, model_dir, *extra):
    return load_config(None, [
        f"student={model_dir}", f"teachers=[{model_dir}]", f"cache_dir={tmp_path / 'cache'}", "engine.kind=hf",
        "task.n_train=8", "task.n_dev=6", "task.n_test=4", "generation.samples=2", "generation.max_tokens=24",
        "lora.epochs=2", "lora.batch_size=4", "lora.learning_rate=0.02", "lora.max_length=256", *extra])


@pytest.fixture(scope="module")
def trial(tiny_llama_dir, tmp_path_factory):
    import os
    from pathlib import Path

    tmp = tmp_path_factory.mktemp("distill")
    cfg = _cfg(tmp, tiny_llama_dir, "filters=[{name: max_per_question, m: 1}]")
    cwd = os.getcwd()
    os.chdir(tmp)  # a relative --out, as users type it: Ray Train workers must still find the files
    try:
        return cfg, tmp, distill.run_trial(cfg, tiny_llama_dir, Path("run"))
    finally:
        os.chdir(cwd)


def test_trial_reports_delta_over_its_own_baseline(trial):
    _, _, r = trial
    assert r.status == "ok"
    # 8 train problems x 2 samples, at most 1 per question; then rationales cut at the generation token limit are
    # dropped (the tiny model's gibberish often runs to it), then what SFT makes of the rest
    assert r.filter_report[0]["rows_in"] == 16 and r.filter_report[0]["rows_kept"] == 8
    cut, sft = r.filter_report[-2], r.filter_report[-1]
    assert cut["step"] == "length" and cut["rows_in"] == 8 and cut["params"]["max_tokens"] == 23  # generation.max_tokens 24 - 1
    assert sft["step"] == "sft_examples" and sft["rows_in"] == cut["rows_kept"]
    assert r.n_train_examples == sft["rows_kept"] >= 1
    assert r.dev_delta == pytest.approx(r.dev_accuracy - r.baseline_dev_accuracy)
    lo, hi = r.dev_delta_ci95
    assert lo <= r.dev_delta <= hi and 0.0 <= r.p_value <= 1.0
    assert r.degrades == (hi < 0) and r.improves == (lo > 0)
    assert [e.epoch for e in r.epochs] == [1, 2] and r.train_tokens > 0
    assert r.epochs[-1].dev_delta == r.dev_delta and r.lora.rank == 8  # the record types its epochs and settings
    assert (r.adapter_dir and json.loads(open(f"{r.adapter_dir}/adapter_config.json").read())["r"] == 8)


def test_finished_trial_is_reloaded_not_rerun(trial, tiny_llama_dir, monkeypatch):
    cfg, tmp, first = trial
    from cotgap_ray.training import ray_train

    monkeypatch.setattr(ray_train, "train_student", lambda *a, **k: pytest.fail("trial re-trained"))
    again = distill.run_trial(cfg, tiny_llama_dir, tmp / "run")
    assert again == first


def test_chain_that_leaves_nothing_is_status_no_data(tiny_llama_dir, tmp_path, trial):
    # The random tiny model never solves arithmetic, so correct_only keeps nothing. Same cache as `trial`: the
    # rationales are reused, only the filter differs.
    _, tmp, _ = trial
    cfg = _cfg(tmp, tiny_llama_dir, "filters=[{name: correct_only}]")
    r = distill.run_trial(cfg, tiny_llama_dir, tmp / "run")
    assert r.status == "no_data" and r.dev_delta is None and r.adapter_dir is None
    assert r.filter_report[0]["rows_kept"] == 0
    assert "no training example survived" in distill.format_result(r)


def test_teacher_must_come_from_the_config(tiny_llama_dir, tmp_path):
    cfg = _cfg(tmp_path, tiny_llama_dir)
    assert distill.pick_teacher(cfg, tiny_llama_dir) == tiny_llama_dir
    with pytest.raises(ConfigError, match="not in the config's teachers"):
        distill.pick_teacher(cfg, "gpt-9")


def test_unknown_lora_target_fails_before_generation(tiny_llama_dir, tmp_path, monkeypatch):
    from cotgap_ray.generation import pipeline as generate

    monkeypatch.setattr(generate, "generate_teachers", lambda *a, **k: pytest.fail("generated before the check"))
    cfg = _cfg(tmp_path, tiny_llama_dir, "lora.target_modules=[qkv_proj]")
    with pytest.raises(ValueError, match="q_proj"):
        distill.run_trial(cfg, tiny_llama_dir, tmp_path / "run")


def test_cli_needs_one_teacher(capsys):
    assert distill.main([]) == 2
    assert "name exactly one teacher: --teacher NAME with NAME one of" in capsys.readouterr().err
    assert distill.main(["--teacher", "a", "--teacher", "b"]) == 2
    assert "(got 2)" in capsys.readouterr().err
