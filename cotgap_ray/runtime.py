"""Glue between the experiment config and the heavy parts: cache locations, model resolution, engine options.

Kept apart so that CLIs (evaluate, generate, search) open engines and resolve models the same way, and so importing
it stays cheap (torch, transformers and vLLM load only inside the functions that need them).
"""

from __future__ import annotations

import os
from pathlib import Path

from cotgap_ray.engines import resolve_kind



def cache_root(cfg) -> Path:
    """Where models, rationales and evaluations are cached: config, then $COTGAP_CACHE, then ~/.cache/cotgap_ray."""
    root = cfg.cache_dir or os.environ.get("COTGAP_CACHE") or Path.home() / ".cache" / "cotgap_ray"
    return Path(root).expanduser()


def apply_task_args(cfg, task: str | None, task_path: str | None) -> None:
    """The CLIs' --task/--task-path: another task starts from that task's defaults (sizes and seed kept)."""
    from cotgap_ray.config import TaskConfig

    if task and task != cfg.task.name:
        cfg.task = TaskConfig(name=task, n_dev=cfg.task.n_dev, n_test=cfg.task.n_test, seed=cfg.task.seed)
    if task_path:
        cfg.task.path = task_path


def offline_unless_hub(specs: list[str]) -> None:
    """Keep transformers and vLLM off the network unless a model must come from the hub.

    Must run before huggingface_hub is imported (it reads the variable once). A user's explicit setting wins.
    """
    from cotgap_ray.models import is_hub_id

    if not any(is_hub_id(s) for s in specs):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def resolve_all(specs: list[str], cfg) -> list:
    """Resolve model specs (converting packaged GGUFs once into the cache) to local HF directories."""
    from cotgap_ray.models import resolve_model

    return [resolve_model(spec, cache_root(cfg) / "models") for spec in specs]


def engine_kind(engine_cfg) -> str:
    """The concrete engine `auto` stands for here: part of every cache key, since engines differ in numerics."""
    return resolve_kind(engine_cfg.kind)


# vLLM 0.32 accepts only these max_lora_rank values (vllm.config.lora.MaxLoRARanks).
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that fits adapters of `rank`."""
    for allowed in _VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {_VLLM_LORA_RANKS[-1]}")


def engine_options(engine_cfg, lora_rank: int | None = None) -> dict:
    """Constructor options of the configured engine; `lora_rank` (the largest adapter rank) enables LoRA on vLLM."""
    kind = engine_kind(engine_cfg)
    if kind == "vllm":
        options = {"dtype": engine_cfg.dtype, "max_model_len": engine_cfg.max_model_len,
                   "kv_cache_gib": engine_cfg.kv_cache_gib}
        if lora_rank is not None:
            options.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(lora_rank))
        return options
    options = {"dtype": engine_cfg.dtype}
    if kind == "hf":
        options["batch_size"] = engine_cfg.batch_size
    return options


def open_engine(model_dir: str, engine_cfg, lora_rank: int | None = None):
    from cotgap_ray.engines import load_engine

    return load_engine(model_dir, engine_kind(engine_cfg), **engine_options(engine_cfg, lora_rank))
