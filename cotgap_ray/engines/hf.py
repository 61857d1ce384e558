"""HF transformers generation engines: `HFEngine` ("hf", batched, left padding) and `HFLoopEngine` ("hf-loop").

The fallback when vLLM is absent, and the reference the vLLM engine is checked against. Prompts arrive already
rendered by cotgap_ray.prompts and are tokenized with add_special_tokens=False, exactly as the vLLM engine does.

    engine = HFEngine("/models/smollm2", batch_size=8)
    engine.generate(["<s>user: 2+2?\\nassistant:"], SamplingParams(max_tokens=32))
      -> [[Generation(text="4</s> ...", n_tokens=5)]]      (text without special tokens)

Decoding follows vLLM's conventions so the two engines are comparable: only the SamplingParams fields are applied
(the checkpoint's generation_config sampling defaults such as top_k=50 or a repetition penalty are overridden, as
vLLM ignores them when explicit parameters are given), `n_tokens` counts generated tokens up to and including the
first EOS, and a stop string ends the text (the stop string itself excluded).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch

from cotgap_ray.engines.base import Generation, SamplingParams

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The one rule (hardware.resolve_dtype), logged once: "auto" is bfloat16 on CUDA (float16 without bf16 support)
    and on CPUs with native bf16, float32 on CPUs without it (emulated bf16 is ~60x slower there)."""
    from cotgap_ray.hardware import dtype_for

    return _DTYPES[dtype_for("engine", dtype, device.type).name]


def adapter_key(path: str) -> tuple[str, int]:
    """Cache key of an adapter directory: its real path plus the weights' mtime, so an adapter rewritten in place
    (a re-run trial) is reloaded instead of silently reusing the old weights."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise FileNotFoundError(f"adapter directory not found: {path}")
    weights = [os.path.join(real, f) for f in os.listdir(real) if f.startswith("adapter_model.")]
    mtime = max((os.stat(w).st_mtime_ns for w in weights), default=0)
    return real, mtime


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest occurrence of any stop string (vLLM's behaviour, stop string excluded)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for one generate call without disturbing the caller's RNG state.

    HF `generate` samples with torch.multinomial on the global generator (it takes no `generator=` argument), so a
    forked, seeded global RNG is how sampling is made to repeat."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class HFEngine:
    """Batched HF transformers generation: sub-batches of `batch_size` prompts (each decoding its `n` samples
    together), left padding, optional LoRA."""

    name = "hf"

    def __init__(self, model_dir: str, *, batch_size: int = 8, dtype: str = "auto", device: str = "auto"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer, self.model = self._load(model_dir)
        self.eos_ids = self._eos_ids()
        self._peft = None  # the PeftModel wrapping self.model, created on the first adapter
        self._adapters: dict[tuple[str, int], str] = {}  # adapter_key -> peft adapter name

    def _load(self, model_dir: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype)
        except Exception as e:  # noqa: BLE001 - re-raised with the model dir and engine named
            raise RuntimeError(f"{self.name} engine could not load the model in {model_dir}: {e}") from e
        # Left padding: every row's last prompt token sits at the same position, where generation continues.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, model.to(self.device).eval()

    def _eos_ids(self) -> list[int]:
        """Every id that ends a generation: the generation config's EOS id(s) (as vLLM uses) plus the tokenizer's."""
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise RuntimeError(f"{self.name} engine: the model in {self.model_dir} defines no EOS token")
        return ids

    # -- adapters ---------------------------------------------------------------------------------------------------

    def _model_for(self, adapter: str | None):
        """The module to generate with and the context to run it in: base model with adapters disabled, or the
        requested adapter, loaded once per path (see adapter_key) and then only switched to."""
        if adapter is None:
            return (self.model, nullcontext()) if self._peft is None else (self._peft, self._peft.disable_adapter())
        key = adapter_key(adapter)
        if key not in self._adapters:
            self._load_adapter(key)
        self._peft.set_adapter(self._adapters[key])
        return self._peft, nullcontext()

    def _load_adapter(self, key: tuple[str, int]) -> None:
        from peft import PeftModel

        name = f"adapter{len(self._adapters)}"  # peft adapter names must be plain identifiers, not paths
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, key[0], adapter_name=name)
            else:
                self._peft.load_adapter(key[0], adapter_name=name)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"{self.name} engine could not load the LoRA adapter in {key[0]}: {e}") from e
        self._peft.to(self.device).eval()
        self._adapters[key] = name

    # -- generation -------------------------------------------------------------------------------------------------

    def generate(
        self, prompts: list[str], params: SamplingParams, adapter: str | None = None
    ) -> list[list[Generation]]:
        """For each prompt, `params.n` generations. Sampling repeats for the same prompts, params and batch_size.

        Prompts are batched in a canonical order (by length, then text), not in the order given: a prompt's batch
        mates and padding, and so its numerics, do not depend on the caller's order. Scoring the same problems in
        another order gives the same rows, which the search relies on (the baseline and every adapter are paired
        problem by problem). Sorting by length also cuts padding."""
        model, context = self._model_for(adapter)
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), prompts[i]))
        ordered = [prompts[i] for i in order]
        results: list[list[Generation]] = []
        with context, torch.inference_mode():
            for start in range(0, len(ordered), self.batch_size):
                chunk = ordered[start : start + self.batch_size]
                with seeded(params.seed + start, self.device):
                    results.extend(self._generate_chunk(model, chunk, params))
        restored: list[list[Generation]] = [[] for _ in prompts]
        for position, index in enumerate(order):
            restored[index] = results[position]
        return restored

    @staticmethod
    def _copies(params: SamplingParams) -> int:
        """Sequences decoded per prompt: greedy samples are all identical, so decode once and repeat."""
        return 1 if params.temperature == 0 else params.n

    def _generate_chunk(self, model, prompts: list[str], params: SamplingParams) -> list[list[Generation]]:
        batch = self.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
        copies = self._copies(params)
        output = model.generate(
            **batch, **self._generate_kwargs(params, copies), pad_token_id=self.tokenizer.pad_token_id
        )
        generated = output[:, batch["input_ids"].shape[1] :].tolist()
        texts = [self._finish(row, params.stop) for row in generated]
        # generate returns the copies of one prompt next to each other.
        per_prompt = [texts[i * copies : (i + 1) * copies] for i in range(len(prompts))]
        return [gens * (params.n // copies) for gens in per_prompt]

    def _generate_kwargs(self, params: SamplingParams, copies: int) -> dict:
        kwargs = dict(
            max_new_tokens=params.max_tokens,
            num_return_sequences=copies,
            eos_token_id=self.eos_ids,
            # Neutralize a checkpoint's generation_config default that vLLM would not apply either.
            repetition_penalty=1.0,
        )
        if params.temperature == 0:
            kwargs.update(do_sample=False, temperature=1.0, top_p=1.0)  # 1.0 = "unset": no greedy warnings
        else:
            # top_k=0 disables HF's default top-k of 50, which vLLM does not apply.
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            # Stops a row as soon as a stop string appears; the text is cut at it afterwards in _finish.
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def _finish(self, row: list[int], stop: Sequence[str]) -> Generation:
        """Trim one generated row to what the model really produced and decode it."""
        n_tokens = next((i + 1 for i, t in enumerate(row) if t in self.eos_ids), len(row))
        if stop:
            n_tokens = min(n_tokens, self._tokens_until_stop(row[:n_tokens], stop))
        text = self.tokenizer.decode(row[:n_tokens], skip_special_tokens=True)
        return Generation(text=truncate_at_stop(text, stop), n_tokens=n_tokens)

    def _tokens_until_stop(self, row: list[int], stop: Sequence[str]) -> int:
        """The fewest leading tokens of `row` whose text contains a stop string (len(row) when none does).

        Needed because a row stopped by a stop string is then padded with pad tokens, which are often the EOS token:
        the tokens after the stop are padding, not output. Containing a stop string is monotone in the prefix
        length, so a binary search needs only ~log2(max_tokens) decodes."""

        def has_stop(k: int) -> bool:
            text = self.tokenizer.decode(row[:k], skip_special_tokens=True)
            return any(s and s in text for s in stop)

        if not has_stop(len(row)):
            return len(row)
        lo, hi = 1, len(row)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
        return lo

    def close(self) -> None:
        """Drop the model (and adapters) so their memory can be reused by the next engine."""
        on_cuda = self.device.type == "cuda"
        self.model = self._peft = self.tokenizer = None
        self._adapters.clear()
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()


class HFLoopEngine(HFEngine):
    """The naive baseline for benchmarks: HFEngine one prompt at a time, so no padding and no batching across
    prompts (the `n` samples of one prompt still decode together). batch_size=1 makes every sub-batch one prompt."""

    name = "hf-loop"

    def __init__(self, model_dir: str, *, dtype: str = "auto", device: str = "auto"):
        super().__init__(model_dir, batch_size=1, dtype=dtype, device=device)
