"""The dtype rule (hardware.py) on both kinds of CPU, faked: with native bf16 and without it (no Ray, no model)."""

from __future__ import annotations

import pytest
import torch

from cotgap_ray import hardware
from cotgap_ray.hardware import DtypeChoice, native_bf16, resolve_dtype

# Flags as /proc/cpuinfo shows them on the two machines the issue was measured on.
SAPPHIRE_RAPIDS = frozenset("fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile".split())
ZEN3 = frozenset("fpu sse2 avx avx2 fma bmi2 sha_ni vaes".split())
GRAVITON3 = frozenset("fp asimd sve bf16 i8mm".split())


def test_native_bf16_from_flags():
    assert native_bf16(SAPPHIRE_RAPIDS) and native_bf16(GRAVITON3)
    assert not native_bf16(ZEN3) and not native_bf16(frozenset())


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, "bfloat16"), (GRAVITON3, "bfloat16"),
                                             (ZEN3, "float32"), (frozenset(), "float32")])
def test_auto_on_cpu_follows_the_flags(flags, expected):
    choice = resolve_dtype("auto", "cpu", flags)
    assert choice.name == expected
    if expected == "float32":
        assert "no native bf16" in choice.reason


def test_auto_on_cuda_follows_the_card():
    assert resolve_dtype("auto", "cuda", ZEN3, cuda_bf16=True).name == "bfloat16"
    assert resolve_dtype("auto", "cuda", ZEN3, cuda_bf16=False).name == "float16"


def test_explicit_bf16_without_native_support_is_kept_with_its_measured_cost(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_cost", lambda: "measured now: bf16 matmul 1.3 GFLOP/s vs float32 75.0")
    choice = resolve_dtype("bfloat16", "cpu", ZEN3)
    assert choice.name == "bfloat16"
    assert "emulated" in choice.reason and "1.3 GFLOP/s" in choice.reason and "engine.dtype=auto" in choice.reason
    assert resolve_dtype("bfloat16", "cpu", SAPPHIRE_RAPIDS).reason == "set in the config"
    assert resolve_dtype("float32", "cpu", SAPPHIRE_RAPIDS).name == "float32"


def test_unknown_dtype_names_the_keys():
    with pytest.raises(ValueError, match="engine.dtype / train.dtype"):
        resolve_dtype("fp8", "cpu", ZEN3)


def test_bf16_cost_measures_both_dtypes():
    text = hardware.bf16_cost()
    assert "bf16 matmul" in text and "float32" in text and "x slower" in text


def test_cpu_flags_of_this_machine_are_read():
    # Whatever this machine is, on Linux its flags are readable (an empty set would silently mean "no bf16").
    if hardware.Path("/proc/cpuinfo").exists():
        assert hardware.cpu_flags()


def test_the_choice_is_logged_once(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "_said", set())
    choice = DtypeChoice("float32", "this CPU has no native bf16 (test)")
    hardware.log_choice("engine", choice, "auto")
    hardware.log_choice("engine", choice, "auto")
    err = capsys.readouterr().err
    assert err.count("engine dtype float32: this CPU has no native bf16") == 1


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, torch.bfloat16), (ZEN3, torch.float32)])
def test_hf_engine_and_training_take_the_rule(monkeypatch, flags, expected):
    """Both capabilities, through the functions the HF engine and the fine-tune call (hardware.dtype_for)."""
    from cotgap_ray.engines.hf import resolve_dtype as hf_dtype

    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hf_dtype("auto", torch.device("cpu")) == expected
    assert hardware.dtype_for("training", "auto", "cpu").torch == expected


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, torch.bfloat16), (ZEN3, torch.float32)])
def test_load_student_uses_the_rule(monkeypatch, tiny_llama_dir, flags, expected):
    from cotgap_ray.config import LoraSettings
    from cotgap_ray.training.loop import load_student

    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    model = load_student(tiny_llama_dir, LoraSettings(rank=4), torch.device("cpu"))
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert {p.dtype for p in frozen} == {expected}
    assert {p.dtype for p in lora} == {torch.float32}  # the trained weights stay float32 either way


def test_cache_keys_tell_the_two_cpus_apart(monkeypatch):
    from cotgap_ray.hardware import dtype_key

    monkeypatch.setattr(hardware, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    with_bf16 = dtype_key("auto")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ZEN3)
    assert dtype_key("auto") != with_bf16
    assert dtype_key("float32") == "float32"
