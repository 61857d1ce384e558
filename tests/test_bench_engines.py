"""benchmarks/engines.py's arithmetic: the prefill/decode split of a timed pass, and a bound from the fastest GEMM.

The engine here is a test double with a fake clock (every generate() call advances it by a set number of seconds), so
the rates it yields are exact; the GEMM rates are measured for real on a tiny shape."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import engines as bench  # noqa: E402  (benchmarks/engines.py, a script)

from cotgap_ray.engines import SamplingParams, vllm_available  # noqa: E402
from cotgap_ray.records import Generation  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeLLM:
    def __init__(self, log: list, accept: bool = True):
        self.log, self.accept = log, accept

    def reset_prefix_cache(self) -> bool:
        self.log.append("reset")
        return self.accept


class FakeEngine:
    """n completions per prompt of min(max_tokens, 10) tokens; a call costs 2 s if max_tokens == 1, else 10 s."""

    def __init__(self, clock: Clock, log: list, accept_reset: bool = True):
        self.clock, self.log, self.llm = clock, log, FakeLLM(log, accept_reset)

    def generate(self, prompts, params):
        self.log.append(("generate", len(prompts), params.max_tokens, params.n, params.seed))
        self.clock.now += 2.0 if params.max_tokens == 1 else 10.0
        tokens = min(params.max_tokens, 10)
        return [[Generation(text=f"{p}:{i}", n_tokens=tokens) for i in range(params.n)] for p in prompts]

    def close(self):
        self.log.append("close")


@pytest.fixture
def fake(monkeypatch):
    clock, log = Clock(), []
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    holder = {}

    def load(model_dir, kind, **options):
        holder["engine"] = FakeEngine(clock, log, **holder.get("kwargs", {}))
        return holder["engine"]

    monkeypatch.setattr(bench, "load_engine", load)
    return log, holder


def test_run_engine_times_prefill_apart_and_counts_every_sample(fake):
    log, _ = fake
    params = SamplingParams(max_tokens=64, temperature=0.7, n=2, seed=3)
    row = bench.run_engine("vllm", "float32", "/m", ["a", "b", "c"], params, {}, prompt_tokens=30)
    # warm-up, then the prefill-only pass, the prefix cache dropped, then the full pass, then close
    assert log == [("generate", 1, 4, 1, 0), ("generate", 3, 1, 2, 3), "reset", ("generate", 3, 64, 2, 3), "close"]
    assert row["tokens"] == 3 * 2 * 10  # every sample counted, not the first of each prompt
    assert row["gen_s"] == 10.0 and row["prefill_s"] == 2.0
    assert row["tok_s"] == 6.0 and row["all_tok_s"] == 9.0
    assert row["decode_tok_s"] == (60 - 6) / (10.0 - 2.0)  # one token per sequence belongs to the prefill pass
    assert row["texts"] == ["a:0", "b:0", "c:0"]


def test_run_engine_calls_the_engine_once_per_shard_with_the_shards_seed(fake):
    from cotgap_ray.generation.pipeline import shard_seed

    log, _ = fake
    params = SamplingParams(max_tokens=64, temperature=0.7, n=2, seed=3)
    row = bench.run_engine("vllm", "float32", "/m", ["a", "b", "c"], params, {}, prompt_tokens=30, shard_size=2)
    s0, s1 = shard_seed(3, 0), shard_seed(3, 1)  # the pipeline's seeds of shards 0 and 1
    assert log[1:] == [("generate", 2, 1, 2, s0), ("generate", 1, 1, 2, s1), "reset",
                       ("generate", 2, 64, 2, s0), ("generate", 1, 64, 2, s1), "close"]
    assert row["tokens"] == 60 and row["texts"] == ["a:0", "b:0", "c:0"]  # results in prompt order
    assert row["gen_s"] == 20.0 and row["prefill_s"] == 4.0  # two calls per pass on the fake clock


def test_run_engine_refuses_a_prefix_cache_it_could_not_reset(fake):
    log, holder = fake
    holder["kwargs"] = {"accept_reset": False}
    with pytest.raises(RuntimeError, match="prefix cache"):
        bench.run_engine("vllm", "float32", "/m", ["a"], SamplingParams(max_tokens=8), {}, prompt_tokens=5)
    assert log[-1] == "close"  # the engine is closed even so


def tiny_model_dir(tmp_path: Path) -> Path:
    import json

    import torch
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(10, 4), "model.layers.0.mlp.up_proj.weight": torch.zeros(8, 4)},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 4, "intermediate_size": 8}))
    return tmp_path


def test_bound_is_the_fastest_gemm_over_the_flops_per_token(tmp_path, monkeypatch):
    model = tiny_model_dir(tmp_path)
    flops, config = bench.flops_per_token(str(model))
    assert flops == 2 * (8 * 4 + 10 * 4)  # up_proj, and the tied head (the embedding) counted once
    seen = {}

    def rates(dtype, m, k, n):
        seen.update(dtype=dtype, shape=(m, k, n))
        return {"torch": 1.0, "oneDNN": 3.0}

    monkeypatch.setattr(bench, "gemm_gflops", rates)
    assert bench.bound_tok_s(str(model), "float32", batch=320) == pytest.approx(3.0e9 / flops)
    assert seen == {"dtype": "float32", "shape": (320, 4, 8)}


def test_gemm_rates_measure_every_gemm_at_hand():
    rates = bench.gemm_gflops("float32", m=16, k=32, n=64, seconds=0.05)
    assert set(rates) == ({"torch", "oneDNN"} if vllm_available() else {"torch"})
    assert all(rate > 0 for rate in rates.values())
