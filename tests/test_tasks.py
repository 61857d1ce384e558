"""Tasks and splits: determinism, disjointness, stability, and errors that name the file, line or key."""

import json
from pathlib import Path

import pytest

from cotgap_ray.config import TaskConfig
from cotgap_ray.tasks import check_task_name, load_splits, make_splits
from cotgap_ray.tasks.splits import RawProblem

# CI lays shared/ beside the clone; the project itself never needs it.
GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ids(problems):
    return [p.id for p in problems]


def test_reasoning_gym_splits_are_deterministic_and_disjoint():
    cfg = TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=40, n_dev=20, n_test=20, seed=3)
    a, b = load_splits(cfg), load_splits(cfg)
    assert a.sizes() == {"train": 40, "dev": 20, "test": 20}
    assert a.fingerprint() == b.fingerprint() and _ids(a.test) == _ids(b.test)
    questions = [set(p.question for p in a[s]) for s in ("train", "dev", "test")]
    assert not (questions[0] & questions[1]) and not (questions[0] & questions[2]) and not (questions[1] & questions[2])
    assert all(p.split == "test" for p in a.test)


def test_test_split_does_not_move_when_train_or_dev_size_changes():
    small = load_splits(TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=10, n_dev=10, n_test=15))
    large = load_splits(TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=60, n_dev=30, n_test=15))
    assert small.fingerprint("test") == large.fingerprint("test")
    assert small.fingerprint() != large.fingerprint()


def test_seed_changes_the_split():
    a = load_splits(TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=10, n_dev=10, n_test=10, seed=0))
    b = load_splits(TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=10, n_dev=10, n_test=10, seed=1))
    assert a.fingerprint("test") != b.fingerprint("test")


def test_unknown_generator_suggests():
    with pytest.raises(ValueError, match="basic_arithmetic"):
        check_task_name("reasoning_gym:basic_arithmetc")
    with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
        check_task_name("gsm9k")


def test_non_numeric_generator_is_rejected():
    with pytest.raises(ValueError, match="numeric"):
        load_splits(TaskConfig(name="reasoning_gym:spell_backward", n_train=5, n_dev=5, n_test=5))


def test_bad_generator_args_name_the_key():
    with pytest.raises(ValueError, match="generator_args"):
        load_splits(TaskConfig(name="reasoning_gym:basic_arithmetic", generator_args={"bogus": 1}))


@pytest.mark.skipif(not GSM8K_DIR.is_dir(), reason="shared GSM8K copy not present")
def test_gsm8k_local_official_splits():
    splits = load_splits(TaskConfig(name="gsm8k", path=str(GSM8K_DIR), n_train=None, n_dev=50, n_test=30))
    assert splits.sizes() == {"train": 7473 - 50, "dev": 50, "test": 30}
    assert all(p.id.startswith("gsm8k:test:") for p in splits.test)
    assert all(p.id.startswith("gsm8k:train:") for p in splits.dev + splits.train)
    first = next(p for p in splits.test)
    assert first.answer.lstrip("-").replace(".", "").isdigit()


def test_file_task_fields_and_split(tmp_path):
    rows = [{"q": f"What is {i} + 1?", "a": f"work #### {i + 1}", "key": f"k{i}"} for i in range(30)]
    path = _write_jsonl(tmp_path / "add.jsonl", rows)
    cfg = TaskConfig(name="file", path=str(path), question_field="q", answer_field="a", id_field="key",
                     n_train=None, n_dev=5, n_test=5)
    splits = load_splits(cfg)
    assert splits.sizes() == {"train": 20, "dev": 5, "test": 5}
    by_id = {p.id: p for p in splits.train + splits.dev + splits.test}
    assert by_id["file:add:k7"].answer == "8"


def test_file_task_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": [f"q{i}" for i in range(12)], "answer": [str(i) for i in range(12)]}),
                   tmp_path / "t.parquet")
    splits = load_splits(TaskConfig(name="file", path=str(tmp_path / "t.parquet"), n_train=None, n_dev=2, n_test=2))
    assert splits.sizes()["train"] == 8


def test_missing_answer_field_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: row has no 'answer' field"):
        load_splits(TaskConfig(name="file", path=str(path), n_dev=1, n_test=1))


def test_non_numeric_gold_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "colour?", "answer": "blue"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: .*not a number"):
        load_splits(TaskConfig(name="file", path=str(path), n_dev=1, n_test=1))


def test_malformed_json_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_splits(TaskConfig(name="file", path=str(path), n_dev=1, n_test=1))


def test_empty_split_and_oversized_requests_are_errors():
    pools = {"rest": [RawProblem(f"p{i}", f"q{i}", str(i)) for i in range(10)]}
    with pytest.raises(ValueError, match="dev split is empty"):
        make_splits("t", pools, n_train=None, n_dev=0, n_test=2, seed=0)
    with pytest.raises(ValueError, match="only 10 are available; lower task.n_test"):
        make_splits("t", pools, n_train=None, n_dev=1, n_test=11, seed=0)
    with pytest.raises(ValueError, match="train split is empty"):
        make_splits("t", pools, n_train=None, n_dev=5, n_test=5, seed=0)


def test_split_membership_does_not_depend_on_input_order():
    items = [RawProblem(f"p{i}", f"q{i}", str(i)) for i in range(50)]
    a = make_splits("t", {"rest": items}, None, 10, 10, seed=7)
    b = make_splits("t", {"rest": list(reversed(items))}, None, 10, 10, seed=7)
    assert set(_ids(a.test)) == set(_ids(b.test)) and a.fingerprint() == b.fingerprint()


def test_duplicate_ids_rejected():
    items = [RawProblem("same", "q", "1"), RawProblem("same", "q2", "2")]
    with pytest.raises(ValueError, match="not unique"):
        make_splits("t", {"rest": items}, None, 1, 1, seed=0)
