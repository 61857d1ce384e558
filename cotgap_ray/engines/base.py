"""The generation-engine interface: formatted prompts + sampling parameters -> texts and token counts.

Every engine (vLLM, HF transformers) takes prompts that are already rendered to text by cotgap_ray.prompts, so the
exact same string reaches the model whichever engine runs it. Engines never apply chat templates themselves and never
add special tokens beyond what the rendered prompt already holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from cotgap_ray.records import Generation, SamplingParams  # the vocabulary engines speak (defined with the records)

__all__ = ["Engine", "Generation", "SamplingParams", "model_context_limit"]


class Engine(Protocol):
    """A loaded model that generates. One engine owns one model (and, on GPU, its devices) until close()."""

    name: str  # "vllm" | "hf" | "hf-loop"

    def generate(
        self, prompts: list[str], params: SamplingParams, adapter: str | None = None
    ) -> list[list[Generation]]:
        """Return, for each prompt, `params.n` generations. `adapter` is a peft adapter directory or None."""
        ...

    def close(self) -> None:
        """Release the model and its memory (and devices)."""
        ...


def model_context_limit(model_dir: str) -> int | None:
    """The longest context the model's config declares (max_position_embeddings, also under text_config), if any."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    for section in (config, config.get("text_config") or {}):
        if isinstance(section.get("max_position_embeddings"), int):
            return section["max_position_embeddings"]
    return None
