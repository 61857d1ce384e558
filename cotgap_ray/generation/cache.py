"""The content-addressed rationale cache: one directory per (teacher, key), Parquet shards, a JSON manifest.

    <cache_root>/rationales/<teacher>-<key12>/
        manifest.json          key material in full, the shard plan, one entry per finished shard, the runs
        shard-00000.parquet    rationale rows (records.RATIONALE_SCHEMA) of problems [0, shard_size), k rows each
        shard-00001.parquet    ...

The key hashes everything that changes the rows: teacher weights fingerprint, task + problems fingerprint, prompt
template, sampling parameters, engine kind + dtype (+ batch size) and the shard size (shard seeds derive from shard
ids). A shard counts as done only when the manifest lists it AND its file has the recorded sha256 and row count;
anything else (absent, truncated, edited, or written but not yet recorded when the process died) is regenerated.
Both shards and the manifest are written atomically (temporary file + rename), so a killed run leaves either the
old state or the new one, never a half-written file under a final name.

No Ray, no model here: pipeline.py drives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgap_ray.records import RATIONALE_SCHEMA, Problem

FORMAT = 1
MANIFEST = "manifest.json"


class CacheError(RuntimeError):
    """A rationale cache that is incomplete or does not verify; the message names the directory and the shard."""


def problems_fingerprint(task: str, problems: list[Problem]) -> str:
    """sha256 over the task name and (id, question, answer) of each problem, in order."""
    h = hashlib.sha256(task.encode())
    for p in problems:
        h.update(f"\x1f{p.id}\x1f{p.question}\x1f{p.answer}".encode())
    return h.hexdigest()[:16]


def cache_key(material: dict) -> str:
    """The full hex key of a key-material dict (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cache_dir(root: str | Path, teacher: str, key: str) -> Path:
    safe = re.sub(r"[^\w.-]+", "_", teacher).strip("_") or "teacher"
    return Path(root) / "rationales" / f"{safe}-{key[:12]}"


def shard_bounds(n_problems: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) problem positions of each shard: fixed by position, so a shard id always means the same rows."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(start, min(start + shard_size, n_problems)) for start in range(0, n_problems, shard_size)]


def shard_file(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.parquet"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def table_to_parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync, rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        # A full disk: give the space back (the half file is never read: it has no final name) and name the
        # file, which a bare write error does not.
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------- manifest


def new_manifest(key: str, material: dict, teacher: str, n_problems: int, samples: int, shard_size: int) -> dict:
    return {
        "format": FORMAT,
        "key": key,
        "material": material,
        "teacher": teacher,
        "n_problems": n_problems,
        "samples": samples,
        "shard_size": shard_size,
        "n_shards": len(shard_bounds(n_problems, shard_size)),
        "shards": {},  # str(shard id) -> {file, rows, sha256, n_tokens, seconds, node_id, hostname, written_at}
        "runs": [],  # one entry per run that generated something
    }


def read_manifest(path: Path) -> dict | None:
    """The manifest of a cache directory, or None when absent or unreadable (then everything is regenerated)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (FileNotFoundError, OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def write_manifest(path: Path, manifest: dict) -> None:
    write_atomic(Path(path) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def open_manifest(path: Path, key: str, **fields) -> dict:
    """The existing manifest of `path` when it belongs to `key` and the same plan, else a fresh one."""
    manifest = read_manifest(path)
    fresh = new_manifest(key, **fields)
    same_plan = manifest is not None and all(manifest.get(f) == fresh[f] for f in ("key", "n_problems", "samples",
                                                                                     "shard_size", "n_shards"))
    return manifest if same_plan else fresh


def record_shard(path: Path, manifest: dict, shard_id: int, data: bytes, meta: dict) -> None:
    """Write one shard's Parquet bytes atomically, check them against the worker's checksum, then record the shard
    in the manifest (also atomically). Shard first, manifest second: a crash in between leaves an unrecorded file,
    which the next run regenerates."""
    digest = sha256_bytes(data)
    if digest != meta["sha256"]:
        raise CacheError(f"shard {shard_id} of {path}: bytes changed in transit (sha256 {digest} != {meta['sha256']})")
    write_atomic(Path(path) / shard_file(shard_id), data)
    manifest["shards"][str(shard_id)] = {**meta, "file": shard_file(shard_id), "written_at": time.time()}
    write_manifest(path, manifest)


def expected_rows(manifest: dict, shard_id: int) -> int:
    start, stop = shard_bounds(manifest["n_problems"], manifest["shard_size"])[shard_id]
    return (stop - start) * manifest["samples"]


def shard_problem(path: Path, manifest: dict, shard_id: int) -> str | None:
    """Why shard `shard_id` cannot be used (None when it verifies): not recorded, missing, checksum, row count."""
    entry = manifest["shards"].get(str(shard_id))
    if entry is None:
        return "not recorded"
    file = Path(path) / entry["file"]
    try:
        data = file.read_bytes()
    except OSError:
        return f"{entry['file']} is missing"
    if sha256_bytes(data) != entry["sha256"]:
        return f"{entry['file']} fails its sha256 check"
    if entry["rows"] != expected_rows(manifest, shard_id):
        return f"{entry['file']} has {entry['rows']} rows, expected {expected_rows(manifest, shard_id)}"
    return None


def pending_shards(path: Path, manifest: dict) -> dict[int, str]:
    """Shard id -> reason, for every shard that must be (re)generated."""
    reasons = {i: shard_problem(path, manifest, i) for i in range(manifest["n_shards"])}
    return {i: why for i, why in reasons.items() if why is not None}


def drop_shards(manifest: dict, shard_ids) -> None:
    for i in shard_ids:
        manifest["shards"].pop(str(i), None)


def load_rationales(path: str | Path) -> pa.Table:
    """All rationale rows of a complete cache directory, in shard order; every shard is checked (sha256, rows)."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise CacheError(f"{path}: no readable {MANIFEST}; run cotgap_ray.generate for this teacher first")
    pending = pending_shards(path, manifest)
    if pending:
        listed = ", ".join(f"{i} ({why})" for i, why in sorted(pending.items())[:5])
        raise CacheError(f"{path}: {len(pending)} of {manifest['n_shards']} shards unusable: {listed}; "
                         f"re-run generation to regenerate them")
    tables = []
    for i in range(manifest["n_shards"]):
        table = pq.read_table(path / shard_file(i))
        if not table.schema.equals(RATIONALE_SCHEMA, check_metadata=False):
            raise CacheError(f"{path / shard_file(i)}: schema {table.schema} is not the rationale schema")
        tables.append(table)
    return pa.concat_tables(tables) if tables else RATIONALE_SCHEMA.empty_table()
