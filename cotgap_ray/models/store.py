"""The model cache: build a model directory once, atomically, and verify it on every reuse.

Each kind of built model (``packaged.convert_once``, ``tiny.build_once``) hands ``build_once`` its target directory,
a function that writes the model files and a function that composes its ``manifest.json``; the rest is done here:

* reuse -- the manifest must carry the expected identity fields (what the directory was built from) and, under
  ``files_key``, the sha256 of each file, which must match the file; no unlisted ``*.safetensors`` may sit beside
  them. The check is memoized per process while the stat (size, mtime, inode) of those files and of the manifest is
  unchanged, so repeated resolves do not re-hash the weights. Any mismatch, or an unreadable manifest, rebuilds.
* build -- under a file lock ``<root>/.<target name>.lock``, so concurrent Ray workers build once; into a temporary
  directory ``<root>/.tmp-<target name>-*`` renamed into place only once the manifest is written, so a killed build
  leaves nothing that gets reused (the next build removes its leftovers).

Also the helpers the kinds share: the cache's default root, a file's sha256, the fingerprint over a table of file
sha256s, and the stat-keyed memo (local model directories use it too).

Standard library only, and it imports no other part of cotgap_ray.models (they import it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
T = TypeVar("T")

_memo: dict[str, tuple] = {}  # key -> (stat signature, value): a repeated resolve skips re-hashing unchanged files


def root(cache_dir: str | Path | None) -> Path:
    """The model cache directory of this node, created: ``cache_dir``, else ``$COTGAP_MODELS``, else
    ``$COTGAP_CACHE/models``, else ``~/.cache/cotgap_ray/models``. Never the storage root ($COTGAP_STORAGE):
    weights stay on the node that runs them (models/remote.py)."""
    if cache_dir is None:
        env = os.environ.get("COTGAP_CACHE")
        cache_dir = (os.environ.get("COTGAP_MODELS")
                     or (Path(env) / "models" if env else Path.home() / ".cache" / "cotgap_ray" / "models"))
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(shas: dict[str, str]) -> str:
    """One sha256 over a ``{file name: sha256}`` table, in name order."""
    digest = hashlib.sha256()
    for name in sorted(shas):
        digest.update(f"{name}:{shas[name]}\n".encode())
    return digest.hexdigest()


def stat_signature(files: list[Path]) -> tuple:
    return tuple((f.name, st.st_size, st.st_mtime_ns, st.st_ino) for f in files for st in [f.stat()])


def memoized(key: str, files: list[Path], compute: Callable[[], T]) -> T:
    """``compute()``, remembered for this process under ``key`` while the stat of ``files`` is unchanged."""
    sig = stat_signature(files)
    hit = _memo.get(key)
    if hit and hit[0] == sig:
        return hit[1]
    value = compute()
    _memo[key] = (sig, value)
    return value


def build_once(
    target: Path,
    build: Callable[[Path, Path], None],
    manifest: Callable[[dict[str, str], float], dict[str, Any]],
    *,
    identity: dict[str, Any],
    files_key: str,
    hashed: str,
    what: str,
) -> dict[str, str]:
    """Make sure ``target`` holds a verified build; returns its ``{file name: sha256}`` table.

    build(out, scratch): writes the model files into ``out`` (not yet existing); ``scratch`` is a directory on the same
        filesystem for intermediates, deleted afterwards.
    manifest(shas, seconds): the manifest to write; must hold ``identity`` and ``shas`` under ``files_key``.
    identity: the manifest fields a reused directory must carry unchanged.
    hashed: which of the built files get a sha256 (an fnmatch pattern over their names).
    what: the model, for log lines.
    """
    shas = _verified(target, identity, files_key, what)
    if shas is None:
        with _locked(target.parent / f".{target.name}.lock"):
            shas = _verified(target, identity, files_key, what)  # another process may have built it while we waited
            if shas is None:
                shas = _build(target, build, manifest, hashed, what)
    return shas


def _verified(target: Path, identity: dict[str, Any], files_key: str, what: str) -> dict[str, str] | None:
    """The file table of a cached build that matches its manifest; None when it must be (re)built."""
    manifest_path = target / MANIFEST
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = dict(manifest[files_key])
        sig = stat_signature([target / f for f in sorted(listed)] + [manifest_path])
        hit = _memo.get(f"build:{target}")
        if hit and hit[0] == sig:
            return hit[1]
        problems = [key.replace("_", " ") for key, value in identity.items() if manifest.get(key) != value]
        problems += [f for f in sorted(listed) if sha256_file(target / f) != listed[f]]
        problems += sorted(p.name for p in target.glob("*.safetensors") if p.name not in listed)  # unlisted weights
        problems += [] if any(f.endswith(".safetensors") for f in listed) else ["no safetensors files listed"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cached %s (%s) is unreadable (%s): rebuilding", what, target, e)
        return None
    if problems:
        log.warning("cached %s (%s) does not match its manifest (%s): rebuilding", what, target, ", ".join(problems))
        return None
    _memo[f"build:{target}"] = (sig, listed)
    return listed


@contextmanager
def _locked(lock_path: Path):
    import fcntl

    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(target: Path, build: Callable[[Path, Path], None],
           manifest: Callable[[dict[str, str], float], dict[str, Any]], hashed: str, what: str) -> dict[str, str]:
    """Build into a temporary directory, hash, write the manifest last, rename into place (we hold the lock)."""
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by killed builds
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        t0 = time.time()
        out = tmp / "model"
        build(out, tmp)
        for f in out.iterdir():
            f.chmod(0o644)  # the safetensors writer leaves 0600: other users/workers must read the shared cache
        shas = {f.name: sha256_file(f) for f in sorted(out.iterdir()) if fnmatch.fnmatch(f.name, hashed)}
        (out / MANIFEST).write_text(json.dumps(manifest(shas, time.time() - t0), indent=2) + "\n")
        if target.exists():  # a stale or corrupted build: move it aside, then swap the new one in
            target.rename(tmp / "old")
        out.rename(target)
        files = [target / f for f in sorted(shas)] + [target / MANIFEST]
        _memo[f"build:{target}"] = (stat_signature(files), shas)  # just hashed: the next resolve needs no re-check
        log.info("built %s into %s in %.1f s", what, target, time.time() - t0)
        return shas
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
