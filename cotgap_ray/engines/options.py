"""How the experiment config opens an engine: the concrete kind `auto` stands for, constructor options, the
context length a model can take, and vLLM's allowed LoRA ranks. One place, so every CLI and stage opens engines
the same way (the baseline and every adapter evaluation must share decoding and engine options).

Importing it stays cheap: torch, transformers and vLLM load only inside the functions that open an engine.
"""

from __future__ import annotations

import sys

from cotgap_ray.engines import resolve_kind
from cotgap_ray.engines.base import model_context_limit
from cotgap_ray.private_api import vllm_lora_ranks


def engine_kind(engine_cfg) -> str:
    """The concrete engine `auto` stands for here: part of every cache key, since engines differ in numerics."""
    return resolve_kind(engine_cfg.kind)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that fits adapters of `rank`."""
    for allowed in vllm_lora_ranks():
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {vllm_lora_ranks()[-1]}")


_clamped: set[tuple[str, int]] = set()


def max_model_len_for(engine_cfg, model_dir: str | None, name: str | None = None,
                      context_limit: int | None = None) -> int:
    """engine.max_model_len, clamped to what the model can take (vLLM refuses a longer one and the engine dies at
    start), with a notice once per model. The limit is `context_limit` when given (ModelFacts.context_limit: read
    on the node that resolved the model, so a driver without the model's files needs none), else model_dir's."""
    limit = context_limit if context_limit is not None else model_context_limit(model_dir) if model_dir else None
    if limit is None or engine_cfg.max_model_len <= limit:
        return engine_cfg.max_model_len
    if (str(name or model_dir), limit) not in _clamped:
        _clamped.add((str(name or model_dir), limit))
        print(f"note: {name or model_dir} takes at most {limit} tokens of context (max_position_embeddings); its "
              f"engine runs with max_model_len {limit} instead of engine.max_model_len={engine_cfg.max_model_len}",
              file=sys.stderr, flush=True)
    return limit


def check_context_lengths(models: list, cfg) -> None:
    """Before any compute: every model must hold a prompt plus the longest generation (generation.max_tokens for
    teachers, the evaluation's max_tokens for the student). Raises ConfigError naming the model, its limit and
    the keys to change. `models`: ResolvedModels (their config read here) or models.remote.ModelFacts (the limit
    read on the node that resolved them: the search's driver opens no model directory)."""
    from cotgap_ray.config import ConfigError
    from cotgap_ray.prompts import EVAL_SAMPLING

    need = max(cfg.generation.max_tokens, EVAL_SAMPLING.max_tokens)
    for item in models:
        model = getattr(item, "model", item)
        limit = item.context_limit if hasattr(item, "context_limit") else model_context_limit(model.path)
        usable = min(cfg.engine.max_model_len, limit or cfg.engine.max_model_len)
        if usable <= need:
            raise ConfigError(
                f"{model.name} ({model.spec}) can hold {usable} tokens of context (max_position_embeddings "
                f"{limit}, engine.max_model_len {cfg.engine.max_model_len}), not a prompt plus {need} generated "
                f"tokens: lower generation.max_tokens, or choose a model with a longer context")


def engine_options(engine_cfg, lora_rank: int | None = None, model_dir: str | None = None,
                   context_limit: int | None = None, name: str | None = None) -> dict:
    """Constructor options of the configured engine; `lora_rank` (the largest adapter rank) enables adapters on vLLM;
    `context_limit` (the model's, from ModelFacts; `name` names the model in the notice) or else `model_dir` clamps
    max_model_len to the model's own limit."""
    kind = engine_kind(engine_cfg)
    if kind == "vllm":
        options = {"dtype": engine_cfg.dtype,
                   "max_model_len": max_model_len_for(engine_cfg, model_dir, name, context_limit),
                   "kv_cache_gib": engine_cfg.kv_cache_gib, "max_num_seqs": engine_cfg.max_num_seqs,
                   "step_timeout_s": engine_cfg.step_timeout_s}
        if lora_rank is not None:
            options.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(lora_rank),
                           adapter_mode=engine_cfg.adapter_scoring)
        return options
    options = {"dtype": engine_cfg.dtype}
    if kind == "hf":
        options["batch_size"] = engine_cfg.batch_size
    return options


def for_evaluation(engine_cfg):
    """The engine section an evaluation runs with: engine.eval_dtype instead of engine.dtype (`same`: unchanged).
    Every evaluation (the baseline stage, the evaluation actor, python -m cotgap_ray.evaluate) goes through here, so
    the baseline and every adapter are scored in one dtype."""
    from dataclasses import replace

    if engine_cfg.eval_dtype == "same":
        return engine_cfg
    return replace(engine_cfg, dtype=engine_cfg.eval_dtype)


def open_engine(model_dir: str, engine_cfg, lora_rank: int | None = None):
    from cotgap_ray.engines import load_engine

    return load_engine(model_dir, engine_kind(engine_cfg), **engine_options(engine_cfg, lora_rank, model_dir))
