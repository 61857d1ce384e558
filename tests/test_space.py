"""The search space with a fixed trial (optuna.trial.FixedTrial), the point -> chain / LoRA translation, the seeded
first points, and the checks that run before any compute (budget, chains, run directory). No Ray, no models."""

import json

import optuna
import pytest

from cotgap_ray.config import ConfigError, LoraSettings, SearchConfig, load_config
from cotgap_ray.search.space import filter_chain, lora_settings, point_key, search_space, seed_points, validate_space

TEACHERS = ["packaged:qwen2.5-coder-0.5b-instruct", "packaged:gemma3-270m"]
SEARCH = SearchConfig(
    trials=4,
    filter_chains={"correct": [{"name": "correct_only"}],
                   "short": [{"name": "correct_only"}, {"name": "length", "max_pct": {"range": [50, 100]}},
                             {"name": "max_per_question", "m": {"choices": [1, 2]}}]},
    lora_rank=[8, 16], lora_alpha_ratio=[1.0, 2.0], learning_rate=[1e-4, 1e-3], epochs=[1, 2])

POINT = {"teacher": TEACHERS[1], "filters": "short", "filter.short.1.max_pct": 70, "filter.short.2.m": 2,
         "lora.rank": 16, "lora.alpha_ratio": 2.0, "lora.learning_rate": 3e-4, "lora.epochs": 1}


def test_fixed_trial_walks_the_space_and_translates():
    trial = optuna.trial.FixedTrial(POINT)
    search_space(trial, TEACHERS, SEARCH)  # computes nothing; raises if it asks for a name the point lacks
    assert set(trial.params) == set(POINT)
    assert filter_chain(POINT, SEARCH) == [{"name": "correct_only"}, {"name": "length", "max_pct": 70},
                                           {"name": "max_per_question", "m": 2}]
    s = lora_settings(POINT, LoraSettings(dropout=0.1, seed=3))
    assert (s.rank, s.alpha, s.learning_rate, s.epochs, s.dropout, s.seed) == (16, 32.0, 3e-4, 1, 0.1, 3)


def test_a_chain_without_searched_parameters_asks_for_nothing_more():
    point = {k: v for k, v in POINT.items() if not k.startswith("filter.")} | {"filters": "correct"}
    trial = optuna.trial.FixedTrial(point)
    search_space(trial, TEACHERS, SEARCH)
    assert "filter.short.1.max_pct" not in trial.params
    assert filter_chain(point, SEARCH) == [{"name": "correct_only"}]


def test_fixed_trial_outside_the_space_is_rejected():
    with pytest.raises(ValueError):
        search_space(optuna.trial.FixedTrial(POINT | {"lora.rank": 12}), TEACHERS, SEARCH)


def test_seed_points_try_every_teacher_in_proxy_order_cheaply():
    points = seed_points(list(reversed(TEACHERS)), SEARCH)
    assert [p["teacher"] for p in points] == list(reversed(TEACHERS))
    assert points[0]["filters"] == "correct" and points[0]["lora.epochs"] == 1
    assert points[0]["lora.learning_rate"] == pytest.approx(10 ** -3.5)
    search = SearchConfig(filter_chains={"short": SEARCH.filter_chains["short"]})
    p = seed_points(TEACHERS, search)[0]
    assert p["filter.short.1.max_pct"] == 75 and p["filter.short.2.m"] == 1
    search_space(optuna.trial.FixedTrial(p), TEACHERS, search)  # a seed point is a point of the space


def test_point_key_is_a_content_address():
    assert point_key(POINT) == point_key(dict(reversed(list(POINT.items()))))
    assert point_key(POINT) != point_key(POINT | {"lora.rank": 8})


def test_budget_smaller_than_the_teachers_is_refused_before_compute():
    with pytest.raises(ConfigError, match=r"search.trials=1 is smaller than the 2 teachers.*>= 2"):
        validate_space(SearchConfig(trials=1), TEACHERS)


def test_a_bad_chain_names_its_key():
    bad = SearchConfig(filter_chains={"typo": [{"name": "corect_only"}]})
    with pytest.raises(ConfigError, match=r"search.filter_chains.typo.*correct_only"):
        validate_space(bad, TEACHERS)
    out_of_range = SearchConfig(filter_chains={"q": [{"name": "student_nll", "q": {"range": [0.5, 1.5]}}]})
    with pytest.raises(ConfigError, match=r"search.filter_chains.q.*quantile"):
        validate_space(out_of_range, TEACHERS)


def test_search_section_typos_and_values_fail_in_the_config():
    with pytest.raises(ConfigError, match=r"search.trails.*Did you mean 'search.trials'"):
        load_config(None, ["search.trails=3"])
    with pytest.raises(ConfigError, match=r"learning_rate"):
        load_config(None, ["search.learning_rate=[0.01, 0.001]"])


def test_run_dir_holding_another_experiment_is_refused(tmp_path):
    from cotgap_ray.search.run import prepare_run_dir

    cfg = load_config(None, [])
    prepare_run_dir(cfg, str(tmp_path / "run"), resume=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["fingerprint"] == cfg.fingerprint()
    other = load_config(None, ["task.n_dev=37"])
    with pytest.raises(ConfigError, match=r"holds a different experiment"):
        prepare_run_dir(other, str(tmp_path / "run"), resume=True)
    with pytest.raises(ConfigError, match=r"no run to resume"):
        prepare_run_dir(cfg, str(tmp_path / "fresh"), resume=True)
    assert prepare_run_dir(cfg, str(tmp_path / "run"), resume=True) == tmp_path / "run"


def test_a_run_dir_begun_on_other_problems_does_not_continue_on_new_ones(tmp_path):
    """Same config, other problems (here: task.seed 1's before each reasoning_gym seed drew its own): resuming would
    put trials scored on the old dev split beside confirmations on the new test split. Refused, naming both."""
    from cotgap_ray.search.run import check_same_problems
    from cotgap_ray.tasks import load_splits

    splits = load_splits(load_config(None, ["task.seed=1"]).task)
    run = tmp_path / "run"
    run.mkdir()
    check_same_problems(run, splits)  # nothing recorded yet: a new run
    (run / "splits.json").write_text(json.dumps({"fingerprint": splits.fingerprint()}))
    check_same_problems(run, splits)  # the same problems: continues
    (run / "splits.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match=rf"began on other problems .*split 0123456789abcdef, now "
                                          rf"{splits.fingerprint()}.*choose another --out"):
        check_same_problems(run, splits)
    (run / "splits.json").write_text("{not json")
    check_same_problems(run, splits)  # damaged: integrity.check_run_dir's to handle, the run rewrites it


def test_concurrency_comes_from_the_node_types_and_the_per_trial_request():
    from cotgap_ray.evaluation.evaluator import evaluator_request
    from cotgap_ray.search.resources import max_concurrent

    laptop = [{"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 2.0}}]
    assert max_concurrent(load_config(None, []), laptop) == 1  # evaluator 0.5 CPU + one 1.01-CPU trial
    cluster = laptop + [{"name": "gpu_finetune", "source": "autoscaler", "count": 8,
                         "resources": {"CPU": 4.0, "GPU": 1.0, "accelerator_type:L40S": 1.0}}]
    gpu = load_config(None, ["train.use_gpu=true", "train.accelerator_type=L40S", "search.eval_gpus=1",
                             "search.trials=12"])
    assert max_concurrent(gpu, cluster) == 7  # 8 GPU nodes, one shared with the evaluation engine's GPU
    assert max_concurrent(gpu, cluster, evaluators=3) == 5  # three nodes each hold an engine's GPU
    from cotgap_ray.search.resources import concurrency

    assert concurrency(gpu, cluster) == (6, 2)  # one engine per 4 trials at once: 7 -> 2 engines -> 6 trials
    assert concurrency(load_config(None, []), laptop) == (1, 1)  # a laptop: one engine, as before
    assert evaluator_request(gpu) == {"CPU": 0.5, "GPU": 1.0, "accelerator_type:L40S": 0.001}  # a fine-tune node
    assert max_concurrent(load_config(None, ["search.max_concurrent_trials=3"]), cluster) == 3
    assert max_concurrent(load_config(None, ["search.trials=4"]), laptop * 1 + [
        {"name": "big", "source": "alive", "count": 1, "resources": {"CPU": 64.0}}]) == 4  # capped by the budget


def test_every_fine_tune_drops_rationales_cut_at_the_generation_limit():
    """A rationale that reached generation.max_tokens never ended; the chain a fine-tune trains on drops it (and the
    filter report counts it), whatever the configured chain is."""
    import pyarrow as pa

    from cotgap_ray.filters import FilterContext, apply_filters
    from cotgap_ray.search.space import training_chain

    table = pa.table({"problem_id": ["p1", "p1", "p2"], "teacher": ["t"] * 3, "sample_idx": [0, 1, 0],
                      "text": ["a", "b", "c"], "pred": ["1", None, "2"], "correct": [True, False, True],
                      "n_tokens": [40, 256, 255]})
    chain = training_chain([{"name": "dedupe"}], generation_max_tokens=256)
    kept, report = apply_filters(table, chain, FilterContext(teacher_tables={"t": table}))
    assert kept["n_tokens"].to_pylist() == [40, 255]
    assert report.to_dict()["steps"][-1]["step"] == "length" and report.to_dict()["steps"][-1]["rows_kept"] == 2
