"""Model specs -> ``ResolvedModel``: parsing every spec form, local directories, hub ids, and the config's models.

``resolve_model`` dispatches on the spec: ``packaged:`` and ``tiny:`` are checked here (so that every error lists the
valid forms, ``_forms``) and built by packaged.py and tiny.py; local directories and hub ids are resolved here, as
they are only found and checked, never built. ``spec_name`` gives the short name without resolving.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cotgap_ray.errors import InputError, ModelUnavailable
from cotgap_ray.models import packaged, store, tiny
from cotgap_ray.models.packaged import PACKAGED

HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # as given
    name: str  # short display name
    path: str  # local HF directory: config.json, tokenizer files, *.safetensors
    fingerprint: str  # identifies the weights (see cotgap_ray.models)
    chat: bool  # the tokenizer has a chat template


def is_hub_id(spec: str) -> bool:
    """True for an `org/name` spec that is neither packaged, nor tiny, nor an existing local path."""
    if spec.startswith(("packaged:", "tiny:", ".", "~")) or Path(spec).expanduser().exists():
        return False
    return bool(_HUB_ID.match(spec))


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Resolve ``packaged:<name>`` | ``tiny:<name>[@<seed>]`` | local directory | hub ``org/name`` to a local HF
    directory (see cotgap_ray.models)."""
    if spec.startswith("packaged:"):
        name = _packaged_name(spec)  # an unknown name fails before the cache directory is created
        target, fingerprint = packaged.convert_once(name, store.root(cache_dir))
        return ResolvedModel(spec, name, str(target), fingerprint, _has_chat_template(target))
    if spec.startswith("tiny:"):
        name, seed = _parse_tiny(spec)  # a malformed spec fails before the cache directory is created
        target, fingerprint = tiny.build_once(name, seed, store.root(cache_dir))
        return ResolvedModel(spec, tiny.display_name(name, seed), str(target), fingerprint, _has_chat_template(target))
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"model spec {spec!r} is a file, not a model directory. {_forms()}")
        path = path.resolve()
        _check_hf_dir(path, spec)
        return ResolvedModel(spec, path.name, str(path), _dir_fingerprint(path), _has_chat_template(path))
    if is_hub_id(spec):
        return _resolve_hub(spec)
    raise InputError(f"model spec {spec!r}: no such directory, and not a hub id 'org/name'. {_forms()}")


def spec_name(spec: str) -> str:
    """The short name ``resolve_model(spec).name`` gives, found without resolving (no build, no hashing, no hub):
    for reports and for picking a model by short name. A malformed ``tiny:`` spec raises resolve_model's ValueError.

    packaged:gemma3-270m -> gemma3-270m; tiny:llama -> tiny-llama@1234 (the seed is always named, so
    ``tiny:llama`` and ``tiny:llama@1234`` share one name); ./models/foo/ -> foo; Qwen/Qwen2.5-0.5B -> qwen2.5-0.5b."""
    if spec.startswith("packaged:"):
        return spec.removeprefix("packaged:")
    if spec.startswith("tiny:"):
        return tiny.display_name(*_parse_tiny(spec))
    if is_hub_id(spec):
        return spec.split("/")[1].lower()
    return Path(spec).expanduser().resolve().name


def _forms() -> str:
    return ("Valid forms: 'packaged:<name>' with <name> one of " + ", ".join(sorted(PACKAGED))
            + "; 'tiny:<name>' or 'tiny:<name>@<seed>' (a random test model, default seed " + str(tiny.TINY_SEED)
            + ") with <name> one of " + ", ".join(tiny.TINY_MODELS)
            + "; a local directory holding config.json; or a Hugging Face hub id 'org/name'.")


# ---- packaged and tiny specs ------------------------------------------------------------------------------------


def _packaged_name(spec: str) -> str:
    """``packaged:<name>`` -> name, or a ValueError that suggests the closest name and lists the valid forms."""
    name = spec.removeprefix("packaged:")
    if name not in PACKAGED:
        close = difflib.get_close_matches(name, PACKAGED, n=1)
        hint = f" Did you mean 'packaged:{close[0]}'?" if close else ""
        raise InputError(f"unknown packaged model {name!r}.{hint} {_forms()}")
    return name


def _parse_tiny(spec: str) -> tuple[str, int]:
    """``tiny:<name>[@<seed>]`` -> (name, seed), or a ValueError that lists the valid forms."""
    name, at, seed_text = spec.removeprefix("tiny:").partition("@")
    if name not in tiny.TINY_MODELS:
        close = difflib.get_close_matches(name, tiny.TINY_MODELS, n=1)
        hint = f" Did you mean 'tiny:{close[0]}'?" if close else ""
        raise InputError(f"unknown tiny model {name!r} in spec {spec!r}.{hint} {_forms()}")
    if at and not (seed_text.isascii() and seed_text.isdigit() and int(seed_text) < 2**64):
        raise InputError(f"model spec {spec!r}: the seed after '@' must be a non-negative integer below 2**64, "
                         f"as in 'tiny:{name}@7'. {_forms()}")
    return name, int(seed_text) if at else tiny.TINY_SEED


# ---- local directories and hub ids ------------------------------------------------------------------------------


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists():
        return True
    cfg = path / "tokenizer_config.json"
    return cfg.exists() and bool(json.loads(cfg.read_text()).get("chat_template"))


def _check_hf_dir(path: Path, spec: str) -> None:
    missing = [] if (path / "config.json").exists() else ["config.json"]
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        missing.append("*.safetensors weights" + (f" (found only pickled {pickles}: not loaded)" if pickles else ""))
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        missing.append("tokenizer files (tokenizer.json or tokenizer_config.json)")
    if missing:
        raise InputError(f"model directory {spec!r} ({path}) is missing: " + "; ".join(missing) + f". {_forms()}")


def _dir_fingerprint(path: Path) -> str:
    """sha256 over the safetensors files' sha256s; memoized while their stat is unchanged (weights are large)."""
    files = sorted(path.glob("*.safetensors"))
    return store.memoized(f"dir:{path}", files,
                          lambda: store.files_fingerprint({f.name: store.sha256_file(f) for f in files}))


def _resolve_hub(spec: str) -> ResolvedModel:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(spec, allow_patterns=HUB_PATTERNS))
    except LocalEntryNotFoundError as e:
        why = "offline mode (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the hub is unreachable"
        raise ModelUnavailable(f"model {spec!r} is not (completely) in the local Hugging Face cache and cannot be "
                      f"downloaded: {why} ({type(e).__name__}). "
                      f"Download it where the hub is reachable, or pass a local directory. {_forms()}") from e
    _check_hf_dir(path, spec)
    return ResolvedModel(spec, spec_name(spec), str(path), path.name, _has_chat_template(path))


# ---- the config's models ----------------------------------------------------------------------------------------


def cache_root(cfg) -> Path:
    """Where models, rationales and evaluations are cached: config, then $COTGAP_CACHE, then ~/.cache/cotgap_ray."""
    root = cfg.cache_dir or os.environ.get("COTGAP_CACHE") or Path.home() / ".cache" / "cotgap_ray"
    return Path(root).expanduser()


def offline_unless_hub(specs: list[str]) -> None:
    """Keep transformers and vLLM off the network unless a model must come from the hub.

    Must run before huggingface_hub is imported (it reads the variable once). A user's explicit setting wins.
    """
    if not any(is_hub_id(s) for s in specs):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def resolve_all(specs: list[str], cfg) -> list:
    """Resolve model specs (converting packaged GGUFs once into the cache) to local HF directories."""
    return [resolve_model(spec, cache_root(cfg) / "models") for spec in specs]
