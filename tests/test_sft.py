"""SFT examples on the tiny char tokenizer (loss mask, EOS, truncation, the prefix check), length-bucketed batching,
the pad-only collator, and student NLL and Rank-Surprisal Ratio on the tiny random Llama from conftest.py (the local
NLL: test_naturalness.py)."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from cotgap_ray.filters import apply_filters
from cotgap_ray.prompts import render_prompt
from cotgap_ray.records import RATIONALE_SCHEMA
from cotgap_ray.sft import (
    DROP_NOT_PREFIX,
    DROP_PROMPT_FILLS,
    DROP_TRUNCATED,
    IGNORE,
    Example,
    build_examples,
    build_examples_and_drops,
    check_prompt_prefix,
    collate,
    length_bucketed_batches,
    padding_waste,
    rank_surprisal_ratio,
    student_nll,
    student_scores,
    with_student_nll,
    with_student_scores,
)

PROBLEMS = {"p1": "What is 3 + 4?", "p2": "Calculate 5 - 2."}
TEXTS = [("p1", " 3 + 4 = 7. The answer is 7."), ("p2", " 5 - 2 = 3.\nThe answer is 3."), ("p1", " 7")]


def rationales(rows=TEXTS) -> pa.Table:
    return pa.Table.from_pylist(
        [{"problem_id": p, "teacher": "t", "sample_idx": i, "text": text, "pred": None, "correct": True,
          "n_tokens": len(text)} for i, (p, text) in enumerate(rows)],
        schema=RATIONALE_SCHEMA,
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def prompt_ids(pid, tokenizer) -> list[int]:
    return tokenizer(render_prompt(PROBLEMS[pid], tokenizer), add_special_tokens=False)["input_ids"]


def test_loss_is_on_the_completion_only(tokenizer):
    examples = build_examples(rationales(), PROBLEMS, tokenizer, max_length=512)
    assert [e.problem_id for e in examples] == ["p1", "p2", "p1"]
    for example, (pid, text) in zip(examples, TEXTS):
        n_prompt = len(prompt_ids(pid, tokenizer))
        assert example.input_ids[:n_prompt] == prompt_ids(pid, tokenizer)
        assert example.labels[:n_prompt] == [IGNORE] * n_prompt
        assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
        assert tokenizer.decode(example.input_ids[n_prompt:]) == text + tokenizer.eos_token
        assert len(example.input_ids) == n_prompt + len(text) + 1  # char tokenizer: one id per character, + EOS
    # render_prompt wrote the one BOS; add_special_tokens=False must not add a second.
    assert examples[0].input_ids[:2] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("u")]


def test_truncation_from_the_right_and_dropping(tokenizer):
    n_prompt = len(prompt_ids("p1", tokenizer))
    table = rationales([("p1", " 3 + 4 = 7.")])
    # keep_truncated=True: the prefix that fits, without EOS (by default such a row is dropped: see below).
    (example,) = build_examples(table, PROBLEMS, tokenizer, max_length=n_prompt + 3, keep_truncated=True)
    assert len(example.input_ids) == n_prompt + 3
    assert tokenizer.decode(example.input_ids[n_prompt:]) == " 3 "  # the start of the rationale survives, no EOS
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    # The prompt alone fills max_length: no completion token would be trained, so the row is dropped.
    assert build_examples(table, PROBLEMS, tokenizer, max_length=n_prompt) == []
    assert build_examples(table, PROBLEMS, tokenizer, max_length=n_prompt, keep_truncated=True) == []
    assert len(build_examples(table, PROBLEMS, tokenizer, max_length=n_prompt + 1, keep_truncated=True)) == 1
    # The default drops a truncated rationale.
    assert build_examples(table, PROBLEMS, tokenizer, max_length=n_prompt + 3) == []
    assert build_examples(table, PROBLEMS, tokenizer, max_length=n_prompt + 1) == []


# The tiny char tokenizer: <pad> 0, <s> 1, </s> 2, <unk> 3, then printable ASCII from " " = 4 ("7" = 27, "3" = 23).
SPACE, SEVEN, EOS = 4, 27, 2


def test_truncated_rationales_are_dropped_by_default_on_literal_ids(tokenizer):
    assert tokenizer(" 7", add_special_tokens=False)["input_ids"] == [SPACE, SEVEN] and tokenizer.eos_token_id == EOS
    n_prompt = len(prompt_ids("p1", tokenizer))
    table = rationales([("p1", " 7")])
    # prompt + " 7" + EOS fits exactly: the whole rationale, then EOS, all trained.
    (example,), drops = build_examples_and_drops(table, PROBLEMS, tokenizer, max_length=n_prompt + 3)
    assert example.input_ids[n_prompt:] == [SPACE, SEVEN, EOS] and example.labels[n_prompt:] == [SPACE, SEVEN, EOS]
    assert example.labels[:n_prompt] == [IGNORE] * n_prompt
    assert drops.dropped == {DROP_NOT_PREFIX: 0, DROP_PROMPT_FILLS: 0, DROP_TRUNCATED: 0}
    # One token short: the rationale fits but its EOS does not. Default: dropped, and counted under its reason.
    examples, drops = build_examples_and_drops(table, PROBLEMS, tokenizer, max_length=n_prompt + 2)
    assert examples == []
    assert drops.dropped == {DROP_NOT_PREFIX: 0, DROP_PROMPT_FILLS: 0, DROP_TRUNCATED: 1}
    assert (drops.rows_in, drops.kept, drops.problems_kept, drops.n_dropped) == (1, 0, 0, 1)
    assert DROP_TRUNCATED == "truncated at lora.max_length"
    # keep_truncated: the prefix that fits and never EOS after a cut rationale.
    (kept,), drops = build_examples_and_drops(table, PROBLEMS, tokenizer, max_length=n_prompt + 2,
                                              keep_truncated=True)
    assert kept.input_ids[n_prompt:] == [SPACE, SEVEN] and kept.labels[n_prompt:] == [SPACE, SEVEN]
    assert EOS not in kept.input_ids and drops.dropped[DROP_TRUNCATED] == 0 and drops.keep_truncated
    (kept,), _ = build_examples_and_drops(table, PROBLEMS, tokenizer, max_length=n_prompt + 1, keep_truncated=True)
    assert kept.input_ids[n_prompt:] == [SPACE] and kept.labels[n_prompt:] == [SPACE]


def test_drops_are_counted_by_reason(tokenizer):
    problems = {**PROBLEMS, "p3": "Calculate 5 - 2, then add 10 to the result."}  # a longer prompt than p1's
    n_p1 = len(prompt_ids("p1", tokenizer))
    assert len(tokenizer(render_prompt(problems["p3"], tokenizer), add_special_tokens=False)["input_ids"]) > n_p1 + 3
    rows = [("p1", " 7"), ("p3", " 3"), ("p1", " 3 + 4 = 7."), ("p1", " 7")]
    examples, drops = build_examples_and_drops(rationales(rows), problems, tokenizer, max_length=n_p1 + 3)
    assert [e.input_ids[n_p1:] for e in examples] == [[SPACE, SEVEN, EOS], [SPACE, SEVEN, EOS]]
    assert drops.to_dict() == {"rows_in": 4, "kept": 2, "problems_kept": 1, "max_length": n_p1 + 3,
                               "keep_truncated": False,
                               "dropped": {DROP_NOT_PREFIX: 0, DROP_PROMPT_FILLS: 1, DROP_TRUNCATED: 1}}
    assert str(drops) == (f"2 of 4 rationale rows made SFT examples (max_length={n_p1 + 3}); dropped: "
                          "1 prompt alone fills lora.max_length, 1 truncated at lora.max_length")


def test_unknown_problem_is_named(tokenizer):
    with pytest.raises(ValueError, match="problem 'p9'"):
        build_examples(rationales([("p9", " x")]), PROBLEMS, tokenizer, max_length=64)


class MergingTokenizer:
    """A base-model tokenizer (no chat template, no BOS) that merges ': ' into one token, as BPE vocabularies do."""

    chat_template = None
    bos_token = None
    eos_token, eos_token_id = "</s>", 0

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            if text.startswith(": ", i):
                ids.append(1000)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}


def test_prefix_check_catches_a_merge_across_the_boundary(caplog):
    # The plain prompt ends with "Answer:", the rationale starts with " ": the full text has ": " as one token.
    # The row is dropped and counted (one odd rationale must not end a trial), not raised on.
    tok = MergingTokenizer()
    examples, drops = build_examples_and_drops(rationales([("p1", "7"), ("p2", " 3")]), PROBLEMS, tok, max_length=512)
    (example,) = examples
    n_prompt = len(tok(render_prompt(PROBLEMS["p1"], tok))["input_ids"])
    assert example.problem_id == "p1" and example.input_ids[n_prompt:] == [ord("7"), 0]  # "7", then EOS (id 0)
    assert example.labels[n_prompt:] == [ord("7"), 0]
    assert drops.dropped == {DROP_NOT_PREFIX: 1, DROP_PROMPT_FILLS: 0, DROP_TRUNCATED: 0}
    assert DROP_NOT_PREFIX == "prompt does not tokenize as a prefix"
    assert (drops.rows_in, drops.kept, drops.problems_kept) == (2, 1, 1)
    assert "1 prompt does not tokenize as a prefix" in caplog.text and "problem 'p2'" in caplog.text


def test_every_row_dropped_is_an_empty_list_not_an_error():
    table = rationales([("p2", " 3"), ("p2", " 5")])
    assert build_examples(table, PROBLEMS, MergingTokenizer(), max_length=512) == []
    _, drops = build_examples_and_drops(table, PROBLEMS, MergingTokenizer(), max_length=512)
    assert (drops.kept, drops.dropped[DROP_NOT_PREFIX]) == (0, 2)


def test_check_prompt_prefix_directly():
    check_prompt_prefix([1, 2], [1, 2, 3], "ok")
    with pytest.raises(ValueError, match=r"problem 'x'.*differ at token 1 of 2"):
        check_prompt_prefix([1, 2], [1, 5, 3], "x")
    with pytest.raises(ValueError, match="differ at token 2 of 3"):
        check_prompt_prefix([1, 2, 3], [1, 2], "x")


def fake_examples(lengths) -> list[Example]:
    return [Example([5] * n, [IGNORE] + [5] * (n - 1), f"p{i}") for i, n in enumerate(lengths)]


def test_padding_waste_hand_computed():
    examples = fake_examples([2, 4, 3, 3])
    assert padding_waste([[0, 1]], examples) == pytest.approx(2 / 8)
    assert padding_waste([[0, 1], [2, 3]], examples) == pytest.approx(2 / 14)
    assert padding_waste([], examples) == 0.0


def test_length_bucketing_covers_every_example_and_cuts_padding():
    lengths = np.random.default_rng(0).integers(5, 500, size=1000).tolist()
    examples = fake_examples(lengths)
    batches = length_bucketed_batches(examples, batch_size=8, seed=1, mega_batch=25)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) == 8 for b in batches)
    random_batches = np.random.default_rng(1).permutation(1000).reshape(-1, 8).tolist()
    assert padding_waste(random_batches, examples) > 0.4
    assert padding_waste(batches, examples) < 0.1
    assert batches == length_bucketed_batches(examples, batch_size=8, seed=1, mega_batch=25)  # seeded
    assert batches != length_bucketed_batches(examples, batch_size=8, seed=2, mega_batch=25)
    # One mega-batch holds everything: batches are sorted inside, but their order is shuffled (not short-to-long).
    one_chunk = length_bucketed_batches(examples, batch_size=8, seed=1, mega_batch=1000)
    longest = [max(lengths[i] for i in b) for b in one_chunk]
    assert padding_waste(one_chunk, examples) < 0.01 and longest != sorted(longest)


def test_length_bucketing_without_shuffle_sorts_each_mega_batch():
    examples = fake_examples([9, 1, 5, 3, 7])
    assert length_bucketed_batches(examples, batch_size=2, seed=0, shuffle=False) == [[1, 3], [2, 4], [0]]
    assert length_bucketed_batches(examples, batch_size=2, seed=0, shuffle=False, mega_batch=1) == [[1, 0], [3, 2], [4]]


def test_collate_only_pads_on_the_right():
    examples = [Example([7, 8, 9], [IGNORE, 8, 9], "a"), Example([4], [4], "b")]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[7, 8, 9], [4, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 8, 9], [4, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_student_nll_is_the_mean_completion_loss_whatever_the_batch(model, tokenizer):
    table = rationales()
    batched = student_nll(model, tokenizer, table, PROBLEMS, batch_size=3)
    single = student_nll(model, tokenizer, table, PROBLEMS, batch_size=1)
    assert len(batched) == 3 and all(math.isfinite(v) and v > 0 for v in batched)
    assert batched == pytest.approx(single, abs=1e-4)  # right padding with a mask changes nothing
    # HF's own loss with labels -100 over the prompt is the same mean over completion tokens.
    (example, *_) = build_examples(table, PROBLEMS, tokenizer, max_length=512)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
    assert batched[0] == pytest.approx(loss.item(), abs=1e-4)
    # A random model is near-uniform over ~100 tokens: a per-token NLL near log(vocab), whatever the length.
    assert all(1.0 < v < 3 * math.log(len(tokenizer)) for v in batched)


def test_student_nll_is_nan_when_the_prompt_fills_the_context(model, tokenizer):
    n_prompt = len(prompt_ids("p1", tokenizer))
    values = student_nll(model, tokenizer, rationales(), PROBLEMS, batch_size=2, max_length=n_prompt + 1)
    assert math.isfinite(values[0]) and math.isnan(values[1]) and math.isfinite(values[2])  # p2's prompt is longer


def test_with_student_nll_feeds_the_student_nll_filter(model, tokenizer):
    table = with_student_nll(rationales(), model, tokenizer, PROBLEMS, batch_size=2)
    assert table.column_names[-1] == "student_nll" and table.num_rows == 3
    again = with_student_nll(table, model, tokenizer, PROBLEMS)  # replaces the column, never duplicates it
    assert again.column_names.count("student_nll") == 1
    kept, report = apply_filters(table, [{"name": "student_nll", "q": 0.5}])
    best = min(table["student_nll"].to_pylist())
    assert best in kept["student_nll"].to_pylist() and report.steps[0]["rows_kept"] == 2


def brute_force_mean_rank(model, example: Example, cap: float = math.inf) -> float:
    """The mean over the completion tokens of 1 + #(vocabulary entries with a higher logit), one token at a time."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0]
    ranks = []
    for t in range(1, len(example.input_ids)):
        if example.labels[t] == IGNORE:
            continue  # a prompt token: never scored
        row = logits[t - 1].tolist()
        target = row[example.labels[t]]
        ranks.append(min(1 + sum(v > target for v in row), cap))
    return sum(ranks) / len(ranks)


def test_a_greedy_continuation_ranks_first_at_every_token(model, tokenizer):
    """Score the model's own argmax continuation: every token is its top choice, so the mean rank is exactly 1."""
    from cotgap_ray.sft import _score_batch

    ids = prompt_ids("p1", tokenizer)
    n_prompt = len(ids)
    with torch.no_grad():
        for _ in range(12):
            ids = ids + [int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
    greedy = Example(ids, [IGNORE] * n_prompt + ids[n_prompt:], "p1")
    longer = build_examples(rationales(), PROBLEMS, tokenizer, max_length=512)[1]  # padding beside it changes nothing
    with torch.no_grad():
        nll, rank, tokens = _score_batch(model, collate([greedy, longer], tokenizer.pad_token_id))
    assert rank[0] == 1.0 and rank[1] > 1.0
    assert [sum(t) / len(t) for t in tokens] == pytest.approx(nll)  # the per-token NLLs behind the mean
    assert rank[1] == pytest.approx(brute_force_mean_rank(model, longer, cap=100))


def test_student_ranks_match_a_brute_force_count_over_the_logits(model, tokenizer):
    table = rationales()
    nll, rank, _ = student_scores(model, tokenizer, table, PROBLEMS, batch_size=3)
    examples = build_examples(table, PROBLEMS, tokenizer, max_length=512)
    assert rank == pytest.approx([brute_force_mean_rank(model, e, cap=100) for e in examples])
    assert student_scores(model, tokenizer, table, PROBLEMS, batch_size=1)[1] == pytest.approx(rank)
    assert all(1.0 <= r <= 100 for r in rank)


def test_the_rank_cap_applies_per_token(model, tokenizer, monkeypatch):
    import cotgap_ray.sft as sft

    table = rationales()
    examples = build_examples(table, PROBLEMS, tokenizer, max_length=512)
    uncapped = [brute_force_mean_rank(model, e) for e in examples]
    monkeypatch.setattr(sft, "RSR_RANK_CAP", 3)
    _, capped, _ = student_scores(model, tokenizer, table, PROBLEMS, batch_size=3)
    assert capped == pytest.approx([brute_force_mean_rank(model, e, cap=3) for e in examples])
    assert all(r <= 3 for r in capped) and any(c < u for c, u in zip(capped, uncapped))  # the cap did bind
    monkeypatch.setattr(sft, "RSR_RANK_CAP", 1)
    assert student_scores(model, tokenizer, table, PROBLEMS)[1] == [1.0, 1.0, 1.0]


def test_student_scores_keep_the_nll_numbers_and_rsr_is_mean_rank_over_mean_nll(model, tokenizer):
    table = rationales()
    nll, rank, _ = student_scores(model, tokenizer, table, PROBLEMS, batch_size=2)
    assert nll == student_nll(model, tokenizer, table, PROBLEMS, batch_size=2)
    scored = with_student_scores(table, model, tokenizer, PROBLEMS, batch_size=2)
    assert scored.column_names[-3:] == ["student_nll", "student_rsr", "student_local_nll"] and scored.num_rows == 3
    assert scored["student_nll"].to_pylist() == with_student_nll(table, model, tokenizer, PROBLEMS,
                                                                 batch_size=2)["student_nll"].to_pylist()
    # The same number HF's own loss gives (as test_student_nll_is_the_mean_completion_loss_whatever_the_batch).
    (example, *_) = build_examples(table, PROBLEMS, tokenizer, max_length=512)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
    assert nll[0] == pytest.approx(loss.item(), abs=1e-4)
    assert scored["student_rsr"].to_pylist() == pytest.approx([r / n for r, n in zip(rank, nll)])
    again = with_student_scores(scored, model, tokenizer, PROBLEMS)  # replaces the columns, never duplicates them
    assert again.column_names == scored.column_names


def test_rsr_is_nan_where_undefined(model, tokenizer):
    assert math.isnan(rank_surprisal_ratio(2.0, 0.0)) and math.isnan(rank_surprisal_ratio(1.0, -1e-9))
    assert math.isnan(rank_surprisal_ratio(math.nan, 1.0)) and math.isnan(rank_surprisal_ratio(1.0, math.nan))
    assert rank_surprisal_ratio(3.0, 1.5) == 2.0
    n_prompt = len(prompt_ids("p1", tokenizer))
    scored = with_student_scores(rationales(), model, tokenizer, PROBLEMS, max_length=n_prompt + 1)
    rsr = scored["student_rsr"].to_pylist()
    assert math.isfinite(rsr[0]) and math.isnan(rsr[1]) and math.isfinite(rsr[2])  # p2's prompt fills the context
