"""Tasks and splits: determinism, disjointness, stability, and errors that name the file, line or key."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cotgap_ray.config import TaskConfig
from cotgap_ray.tasks import check_task_name, load_splits, make_splits, normalize_question
from cotgap_ray.tasks.splits import RawProblem

# A sample of the official files (400 train, 200 test rows; MIT), shipped with the tests: tests/data/gsm8k/README.md.
GSM8K_DIR = Path(__file__).resolve().parent / "data" / "gsm8k"


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


def test_another_task_seed_draws_other_problems_not_the_same_ones_shifted():
    """reasoning_gym seeds item i with seed + i: passing task.seed through, seed 1's 30 test problems were 29 of
    seed 0's (measured before the fix; the known-answers runs' seeds shared 199 of 200). Each seed has a block of
    its own now; chain_sum's sums rarely repeat by chance."""
    from cotgap_ray.tasks.reasoning_gym import SEED_STRIDE, generator_seed

    splits = [load_splits(TaskConfig(name="reasoning_gym:chain_sum", n_train=10, n_dev=10, n_test=30, seed=s))
              for s in (0, 1, 2)]
    questions = [{p.question for p in sp.train + sp.dev + sp.test} for sp in splits]
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert len(questions[i] & questions[j]) <= 3, (i, j)
    assert (generator_seed(0), generator_seed(1), SEED_STRIDE) == (0, 2**20, 2**20)
    with pytest.raises(ValueError, match="more than one task seed's 1048576; lower task.n_train"):
        load_splits(TaskConfig(name="reasoning_gym:chain_sum", n_train=SEED_STRIDE, n_dev=10, n_test=10))


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


def test_gsm8k_local_official_splits():
    splits = load_splits(TaskConfig(name="gsm8k", path=str(GSM8K_DIR), n_train=None, n_dev=50, n_test=30))
    assert splits.sizes() == {"train": 400 - 50, "dev": 50, "test": 30}
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


def test_file_task_accepts_latex_gold():
    """A competition-math style file (tests/data/competition_math/latex.jsonl): LaTeX gold answers load; a fraction of
    numbers becomes a number, the rest stays LaTeX for math-verify (answers.parse_gold)."""
    path = Path(__file__).parent / "data" / "competition_math" / "latex.jsonl"
    splits = load_splits(TaskConfig(name="file", path=str(path), id_field="id", n_train=None, n_dev=2, n_test=2))
    answers = {p.id: p.answer for p in splits.train + splits.dev + splits.test}
    assert answers["file:latex:half"] == "0.5" and answers["file:latex:interval"] == "(1, 3]"
    assert answers["file:latex:sin60"] == r"\frac{\sqrt{3}}{2}"  # the last box of a worked solution


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


# ---------------------------------------------------------------- de-duplication on a normalised question


def _normalised(splits):
    """split -> the normalised questions in it."""
    return {s: [normalize_question(p.question) for p in splits[s]] for s in ("train", "dev", "test")}


def _no_key_in_two_splits(keys_by_split):
    everything = [k for keys in keys_by_split.values() for k in keys]
    return len(everything) == len(set(everything))  # also: no repeat inside a split


def test_normalize_question_literals():
    for variant in ("What is 3+4?", "what is 3 + 4", "WHAT  IS 3 +4 ?", " What is\t3 + 4 ? "):
        assert normalize_question(variant) == "what is 3+4"
    assert normalize_question("What is 3 4?") == "what is 3 4"  # a space between two words stays
    assert normalize_question("Tom's  apples, ( 5 - -3 ).") == "tom's apples,(5--3)"


def test_file_task_drops_whitespace_and_case_variants_before_splitting(tmp_path):
    rows = [{"q": f"What is {i} + 1?", "a": str(i + 1), "key": f"k{i}"} for i in range(30)]
    rows += [{"q": f"  WHAT is {i}+1 ", "a": str(i + 1), "key": f"v{i}"} for i in range(10)]  # 10 variants
    path = _write_jsonl(tmp_path / "add.jsonl", rows)
    cfg = TaskConfig(name="file", path=str(path), question_field="q", answer_field="a", id_field="key",
                     n_train=None, n_dev=5, n_test=5)
    splits = load_splits(cfg)
    assert splits.duplicates_dropped == 10
    assert splits.sizes() == {"train": 20, "dev": 5, "test": 5}  # 40 rows, 30 problems
    assert _no_key_in_two_splits(_normalised(splits))
    # Which copy survives depends on the seeded id hash, not on file order.
    (tmp_path / "reversed").mkdir()
    again = load_splits(replace(cfg, path=str(_write_jsonl(tmp_path / "reversed" / "add.jsonl", rows[::-1]))))
    assert again.fingerprint() == splits.fingerprint() and again.duplicates_dropped == 10


def test_file_task_without_duplicates_keeps_its_fingerprint(tmp_path):
    # The splits (and fingerprint) from before de-duplication existed: nothing to drop, nothing moves.
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(30)]
    splits = make_splits("t", {"rest": [RawProblem(f"p{i}", r["question"], r["answer"]) for i, r in enumerate(rows)]},
                         None, 5, 5, seed=0)
    assert splits.duplicates_dropped == 0
    assert _ids(splits.test) == ["p1", "p7", "p19", "p26", "p16"]
    assert splits.fingerprint() == "caa30051f8008fdd"


def test_a_pool_of_its_own_wins_over_rest():
    test = [RawProblem("t0", "What is 1 + 1?", "2"), RawProblem("t1", "What is 2 + 2?", "4")]
    rest = [RawProblem("r0", "what is 1+1", "2"), RawProblem("r1", "What is 5 + 5?", "10"),
            RawProblem("r2", "What is 6 + 6?", "12"), RawProblem("r3", "WHAT IS 6 + 6?", "12")]
    splits = make_splits("t", {"test": test, "rest": rest}, None, 1, 2, seed=0)
    assert splits.duplicates_dropped == 2  # r0 (a test question) and one of r2 / r3
    assert sorted(_ids(splits.test)) == ["t0", "t1"]
    assert len(splits.train) + len(splits.dev) == 2 and "r0" not in _ids(splits.train + splits.dev)
    assert _no_key_in_two_splits(_normalised(splits))


RG_ARGS = {"min_terms": 2, "max_terms": 2, "max_digits": 1, "operators": ["+"], "allow_parentheses": False,
           "allow_negation": False, "format_style": "natural", "whitespace": "random"}


def test_reasoning_gym_dedupes_on_the_expression_in_its_metadata():
    import reasoning_gym

    cfg = TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=20, n_dev=10, n_test=10, seed=0,
                     generator_args=RG_ARGS)
    splits = load_splits(cfg)
    assert splits.sizes() == {"train": 20, "dev": 10, "test": 10}
    # Item 12 "Solve 10 + 8." is item 5 "Evaluate: 10 + 8." in other words: exact-text de-duplication kept both.
    dataset = reasoning_gym.create_dataset("basic_arithmetic", size=70, seed=0, **RG_ARGS)
    assert (dataset[5]["question"], dataset[12]["question"]) == ("Evaluate: 10 + 8.", "Solve 10 + 8.")
    ids = _ids(splits.train + splits.dev + splits.test)
    assert "rg:basic_arithmetic:0:5" in ids and "rg:basic_arithmetic:0:12" not in ids
    assert splits.duplicates_dropped == 11
    expressions = {s: ["".join(dataset[int(p.id.rsplit(":", 1)[1])]["metadata"]["expression"].split())
                       for p in splits[s]] for s in ("train", "dev", "test")}
    assert _no_key_in_two_splits(expressions) and _no_key_in_two_splits(_normalised(splits))


def test_reasoning_gym_default_format_keeps_its_fingerprint():
    # Exact-text de-duplication and expression de-duplication agree on the default format: the split is unchanged.
    # Seed 0: its problems did not move when each task seed got a block of its own (tasks/reasoning_gym.py).
    cfg = TaskConfig(name="reasoning_gym:basic_arithmetic", n_train=40, n_dev=20, n_test=20, seed=0)
    splits = load_splits(cfg)
    assert splits.fingerprint() == "298e11796e5f0fe4" and splits.duplicates_dropped == 0


def test_duplicates_are_announced(tmp_path, capsys):
    rows = [{"question": q, "answer": "2"} for q in ("What is 1 + 1?", "what is 1+1", "A?", "B?", "C?")]
    load_splits(TaskConfig(name="file", path=str(_write_jsonl(tmp_path / "d.jsonl", rows)), n_train=None,
                           n_dev=1, n_test=1))
    assert "task file: 1 duplicate problem(s) dropped" in capsys.readouterr().err


def _write_gsm8k(directory, train, test):
    directory.mkdir()
    for name, questions in (("train", train), ("test", test)):
        _write_jsonl(directory / f"{name}.jsonl", [{"question": q, "answer": f"work #### {i}"}
                                                   for i, q in enumerate(questions)])
    return directory


def test_gsm8k_train_copy_of_a_test_question_is_dropped(tmp_path):
    test = [f"Tom has {i} apples. How many?" for i in range(5)]
    train = [f"Ann has {i} pears. How many?" for i in range(10)] + ["tom has 3 apples.  how many"]
    directory = _write_gsm8k(tmp_path / "gsm8k", train, test)
    splits = load_splits(TaskConfig(name="gsm8k", path=str(directory), n_train=None, n_dev=2, n_test=5))
    assert splits.duplicates_dropped == 1
    assert splits.sizes() == {"train": 8, "dev": 2, "test": 5}
    assert "Tom has 3 apples. How many?" in [p.question for p in splits.test]
    assert _no_key_in_two_splits(_normalised(splits))


def test_gsm8k_local_copy_has_no_problem_in_two_splits():
    splits = load_splits(TaskConfig(name="gsm8k", path=str(GSM8K_DIR), n_train=None, n_dev=50, n_test=30))
    assert splits.duplicates_dropped == 0 and _no_key_in_two_splits(_normalised(splits))
    assert splits.fingerprint() == "6e8bf69e8bd09c4a"  # pinned: the sample and the split recipe are stable
