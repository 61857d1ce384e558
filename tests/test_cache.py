"""Unit tests of the rationale cache (cotgap_ray.generation.cache): shard plan, manifest, checksums, the states a killed run can
leave behind. No Ray, no model: shards are literal tables."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cotgap_ray.generation import cache
from cotgap_ray.records import RATIONALE_SCHEMA, Problem

K = 2
PROBLEMS = [Problem(f"p{i}", f"q{i}", str(i), "train") for i in range(5)]


def shard_table(shard_id: int, shard_size: int = 2) -> pa.Table:
    start, stop = cache.shard_bounds(len(PROBLEMS), shard_size)[shard_id]
    rows = [{"problem_id": p.id, "teacher": "t", "sample_idx": s, "text": f"The answer is {p.answer}.",
             "pred": p.answer, "correct": True, "n_tokens": 5} for p in PROBLEMS[start:stop] for s in range(K)]
    return pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA)


def write_shard(path, manifest, shard_id: int) -> bytes:
    data = cache.table_to_parquet(shard_table(shard_id))
    meta = {"shard_id": shard_id, "rows": shard_table(shard_id).num_rows, "sha256": cache.sha256_bytes(data),
            "n_tokens": 5, "seconds": 0.1, "node_id": "n", "hostname": "h", "engine_calls": 1}
    cache.record_shard(path, manifest, shard_id, data, meta)
    return data


@pytest.fixture
def full(tmp_path):
    """A complete cache directory of 3 shards (2 + 2 + 1 problems, k=2)."""
    path = tmp_path / "t-abc"
    path.mkdir()
    manifest = cache.new_manifest("k" * 64, {"m": 1}, "t", n_problems=len(PROBLEMS), samples=K, shard_size=2)
    for i in range(3):
        write_shard(path, manifest, i)
    return path, manifest


def test_shard_bounds_cut_by_position():
    assert cache.shard_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert cache.shard_bounds(4, 2) == [(0, 2), (2, 4)]
    assert cache.shard_bounds(0, 2) == []
    with pytest.raises(ValueError, match="shard_size"):
        cache.shard_bounds(5, 0)


def test_cache_dir_names_teacher_and_key(tmp_path):
    assert cache.cache_dir(tmp_path, "org/model v2", "0123456789abcdef").name == "org_model_v2-0123456789ab"


def test_key_changes_with_any_material_field():
    base = {"teacher": "fp1", "sampling": {"temperature": 0.7}}
    assert cache.cache_key(base) == cache.cache_key(dict(reversed(base.items())))  # order-free
    assert cache.cache_key(base) != cache.cache_key({**base, "teacher": "fp2"})
    assert cache.cache_key(base) != cache.cache_key({**base, "sampling": {"temperature": 0.8}})


def test_problems_fingerprint_depends_on_content_and_order():
    fp = cache.problems_fingerprint("t", PROBLEMS)
    assert fp == cache.problems_fingerprint("t", list(PROBLEMS))
    assert fp != cache.problems_fingerprint("t", PROBLEMS[::-1])
    assert fp != cache.problems_fingerprint("other", PROBLEMS)
    changed = [Problem("p0", "q0", "99", "train"), *PROBLEMS[1:]]
    assert fp != cache.problems_fingerprint("t", changed)


def test_complete_cache_loads_in_shard_order(full):
    path, manifest = full
    assert cache.pending_shards(path, manifest) == {}
    table = cache.load_rationales(path)
    assert table.num_rows == len(PROBLEMS) * K
    assert table.column("problem_id").to_pylist() == [p.id for p in PROBLEMS for _ in range(K)]
    assert not list(path.glob(".*tmp*")), "atomic writes left temporary files behind"


def test_corrupted_shard_is_detected_and_not_loaded(full):
    path, manifest = full
    raw = bytearray((path / cache.shard_file(1)).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (path / cache.shard_file(1)).write_bytes(bytes(raw))
    assert cache.pending_shards(path, cache.read_manifest(path)) == {1: "shard-00001.parquet fails its sha256 check"}
    with pytest.raises(cache.CacheError, match="shard-00001.parquet fails its sha256"):
        cache.load_rationales(path)


def test_missing_shard_file_is_pending(full):
    path, manifest = full
    (path / cache.shard_file(2)).unlink()
    assert cache.pending_shards(path, manifest) == {2: "shard-00002.parquet is missing"}


def test_shard_written_but_not_recorded_is_regenerated(full):
    """A run killed between the shard rename and the manifest write leaves a file the manifest does not list."""
    path, manifest = full
    cache.drop_shards(manifest, [0])
    cache.write_manifest(path, manifest)
    (path / ".shard-00001.parquet.tmp-123").write_bytes(b"half a file")  # killed mid-write: ignored
    assert cache.pending_shards(path, cache.read_manifest(path)) == {0: "not recorded"}


def test_row_count_mismatch_is_pending(full):
    path, manifest = full
    manifest["shards"]["0"]["rows"] = 3
    assert cache.pending_shards(path, manifest) == {0: "shard-00000.parquet has 3 rows, expected 4"}


def test_record_shard_rejects_bytes_that_do_not_match_the_worker_checksum(tmp_path):
    manifest = cache.new_manifest("k", {}, "t", n_problems=5, samples=K, shard_size=2)
    with pytest.raises(cache.CacheError, match="changed in transit"):
        cache.record_shard(tmp_path, manifest, 0, b"abc", {"sha256": "0" * 64, "rows": 4})
    assert not (tmp_path / cache.shard_file(0)).exists()


def test_unreadable_or_foreign_manifest_starts_fresh(full):
    path, manifest = full
    fields = dict(material={"m": 1}, teacher="t", n_problems=len(PROBLEMS), samples=K, shard_size=2)
    assert cache.open_manifest(path, manifest["key"], **fields)["shards"].keys() == {"0", "1", "2"}
    assert cache.open_manifest(path, manifest["key"], **{**fields, "shard_size": 3})["shards"] == {}
    (path / cache.MANIFEST).write_text("{not json")
    assert cache.read_manifest(path) is None
    assert cache.open_manifest(path, manifest["key"], **fields)["shards"] == {}
    with pytest.raises(cache.CacheError, match="no readable manifest.json"):
        cache.load_rationales(path)


def test_manifest_holds_key_material_and_checksums(full):
    path, _ = full
    saved = json.loads((path / cache.MANIFEST).read_text())
    assert saved["material"] == {"m": 1} and saved["n_shards"] == 3
    assert saved["shards"]["1"]["sha256"] == cache.sha256_bytes((path / cache.shard_file(1)).read_bytes())
