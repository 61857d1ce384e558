"""Local naturalness (arXiv 2510.03988, our reading in cotgap_ray/naturalness.py): steps cut from literal text, the
windows each step is scored in, the mean of step means; and the student_local_nll column of sft.student_scores on the
tiny random Llama from conftest.py, checked against a forward pass written out by hand."""

import math

import pyarrow as pa
import pytest
import torch

from cotgap_ray.naturalness import local_windows, mean_of_step_means, step_starts, token_step_starts
from cotgap_ray.prompts import render_prompt
from cotgap_ray.sft import build_examples, student_scores, with_student_scores
from tests.test_sft import PROBLEMS, model, tokenizer  # noqa: F401 - the tiny model's fixtures, shared
from tests.test_sft import TEXTS as SFT_TEXTS
from tests.test_sft import rationales as sft_rationales

# Steps of the last one: " 3 + 4 = 7." | " So 7 it is." | " Check: 7 - 4 = 3." | " The answer is 7."
FOUR_STEPS = " 3 + 4 = 7. So 7 it is. Check: 7 - 4 = 3. The answer is 7."
TEXTS = [*SFT_TEXTS, ("p1", FOUR_STEPS)]


def rationales(rows=TEXTS) -> pa.Table:
    return sft_rationales(rows)


# ------------------------------------------------------------------------------------------------ steps (pure)


@pytest.mark.parametrize("text, starts", [
    (" 5 - 3 = 2.\nThe answer is 2.", [11]),
    (" 3 + 4 = 7. The answer is 7.", [11]),
    (FOUR_STEPS, [11, 23, 41]),
    ("Is it? Yes! Done", [6, 11]),
    ("x = 2.5 so y = 5.0", []),  # decimal points are not followed by whitespace
    ("Add\nthen halve", [3]),  # a line break ends a step without punctuation
    ("1. Add.\n2. Done.", [7]),  # "1." and "2." open their steps, they are not steps
    ("\nOne step.\n", []),  # leading and trailing whitespace stay with the first and last step
    ("", []),
])
def test_steps_end_at_sentence_ends_and_line_breaks(text, starts):
    assert step_starts(text) == starts


def test_windows_reach_back_a_fixed_number_of_steps():
    assert local_windows([10, 14, 20], 25, window=1) == [(10, 10, 14), (10, 14, 20), (14, 20, 25)]
    assert local_windows([10, 14, 20], 25, window=0) == [(10, 10, 14), (14, 14, 20), (20, 20, 25)]
    assert local_windows([10, 14, 20], 25, window=2) == [(10, 10, 14), (10, 14, 20), (10, 20, 25)]  # all prefix
    assert local_windows([10], 25, window=1) == [(10, 10, 25)]
    with pytest.raises(ValueError, match="must be >= 0 steps, got -1"):
        local_windows([10], 25, window=-1)


def test_every_step_weighs_the_same_however_long():
    assert mean_of_step_means([[1.0, 3.0], [4.0]]) == 3.0  # step means 2 and 4; the token mean would be 8/3
    assert mean_of_step_means([[2.0]]) == 2.0
    assert math.isnan(mean_of_step_means([])) and math.isnan(mean_of_step_means([[]]))


def test_token_step_starts_map_text_offsets_to_the_examples_tokens(tokenizer):
    prompt = render_prompt(PROBLEMS["p1"], tokenizer)
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    (example, *_) = build_examples(rationales(), PROBLEMS, tokenizer, max_length=512)
    assert token_step_starts(tokenizer, prompt, TEXTS[0][1], example.input_ids, n) == [n, n + 11]  # one id a char
    # An example truncated at a step's start, or inside the first step, keeps only the steps that are in it.
    assert token_step_starts(tokenizer, prompt, TEXTS[0][1], example.input_ids[:n + 11], n) == [n]
    assert token_step_starts(tokenizer, prompt, TEXTS[0][1], example.input_ids[:n + 12], n) == [n, n + 11]


def test_a_token_across_a_step_boundary_merges_the_two_steps():
    """A tokenizer that writes ". " as one token: the text before the boundary ends in "." alone, which is not a
    prefix of the whole rationale's ids, so that boundary is skipped; the line break still cuts."""
    def merging(text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            if text.startswith(". ", i):
                ids, i = ids + [1000], i + 2
            else:
                ids, i = ids + [ord(text[i])], i + 1
        return {"input_ids": ids}

    completion = "a. b.\nc"
    full = merging("Q:" + completion)["input_ids"] + [0]  # + EOS
    assert step_starts(completion) == [2, 5]
    assert token_step_starts(merging, "Q:", completion, full, 2) == [2, 6]  # "a. b." is one step, "\nc" the next


# ------------------------------------------------------------------------------------- the student's local NLL


def completion_nlls(model, ids: list[int], n_context: int) -> list[float]:
    """-log p of each of ids[n_context:] given everything before it, one forward pass, no batching."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    return [-logp[t - 1, ids[t]].item() for t in range(n_context, len(ids))]


def test_local_nll_is_written_out_by_hand_a_pass_per_step(model, tokenizer):
    """FOUR_STEPS with window 1: steps 0 and 1 are read from the whole-rationale pass (their window is the whole
    prefix); step 2 is scored on prompt + step 1 + step 2, step 3 on prompt + step 2 + step 3."""
    table = rationales([("p1", FOUR_STEPS)])
    (example, *_) = build_examples(table, PROBLEMS, tokenizer, max_length=512)
    ids = example.input_ids
    n = len(tokenizer(render_prompt(PROBLEMS["p1"], tokenizer), add_special_tokens=False)["input_ids"])
    b = [n, n + 11, n + 23, n + 41, len(ids)]  # step starts (one id a character; EOS in the last step)
    whole = completion_nlls(model, ids, n)
    steps = [whole[b[0] - n:b[1] - n], whole[b[1] - n:b[2] - n]]
    for k in (2, 3):
        local = ids[:n] + ids[b[k - 1]:b[k + 1]]
        steps.append(completion_nlls(model, local, n + b[k] - b[k - 1]))
    expected = sum(sum(s) / len(s) for s in steps) / 4
    nll, _, local_nll = student_scores(model, tokenizer, table, PROBLEMS, local_window=1)
    assert local_nll[0] == pytest.approx(expected, abs=1e-5)
    assert nll[0] == pytest.approx(sum(whole) / len(whole), abs=1e-5)
    # Window 0: every step given the prompt alone.
    steps0 = [completion_nlls(model, ids[:n] + ids[b[k]:b[k + 1]], n) for k in range(4)]
    assert student_scores(model, tokenizer, table, PROBLEMS, local_window=0)[2][0] == pytest.approx(
        sum(sum(s) / len(s) for s in steps0) / 4, abs=1e-5)


def test_a_window_over_every_step_is_the_whole_prefix_and_a_short_one_is_not(model, tokenizer):
    table = rationales()
    nll, _, wide = student_scores(model, tokenizer, table, PROBLEMS, local_window=10)
    examples = build_examples(table, PROBLEMS, tokenizer, max_length=512)
    for row, (pid, text) in enumerate(TEXTS):
        n = len(tokenizer(render_prompt(PROBLEMS[pid], tokenizer), add_special_tokens=False)["input_ids"])
        whole = completion_nlls(model, examples[row].input_ids, n)
        bounds = [0] + step_starts(text) + [len(whole)]  # completion offsets: one id a character
        assert wide[row] == pytest.approx(mean_of_step_means([whole[a:z] for a, z in zip(bounds, bounds[1:])]),
                                          abs=1e-5)
    assert wide[2] == pytest.approx(nll[2], abs=1e-6)  # " 7": one step, so exactly student_nll
    short = student_scores(model, tokenizer, table, PROBLEMS, local_window=1)[2]
    assert short[:3] == pytest.approx(wide[:3], abs=1e-6)  # at most two steps: a window of 1 is the whole prefix
    assert abs(short[3] - wide[3]) > 1e-3  # four steps: steps 2 and 3 lose the context before the step before


def test_local_nll_is_the_same_in_batches_of_one_and_of_three(model, tokenizer):
    table = rationales()
    one = student_scores(model, tokenizer, table, PROBLEMS, batch_size=1)
    three = student_scores(model, tokenizer, table, PROBLEMS, batch_size=3)
    assert one[2] == pytest.approx(three[2], abs=1e-4)  # right padding with a mask changes nothing
    assert all(math.isfinite(v) and v > 0 for v in three[2])


def test_local_rows_and_no_window_leave_nan_and_keep_the_other_scores(model, tokenizer):
    table = rationales()
    full = student_scores(model, tokenizer, table, PROBLEMS)
    some = student_scores(model, tokenizer, table, PROBLEMS, local_rows=[1, 3])
    assert math.isnan(some[2][0]) and math.isnan(some[2][2])
    assert some[2][1] == pytest.approx(full[2][1]) and some[2][3] == pytest.approx(full[2][3])
    assert some[:2] == full[:2]
    none = student_scores(model, tokenizer, table, PROBLEMS, local_window=None)
    assert all(math.isnan(v) for v in none[2]) and none[:2] == full[:2]


def test_local_nll_follows_truncation_and_is_nan_where_the_prompt_fills_the_context(model, tokenizer):
    n1 = len(tokenizer(render_prompt(PROBLEMS["p1"], tokenizer), add_special_tokens=False)["input_ids"])
    table = rationales([("p1", FOUR_STEPS)])
    # Cut after 30 completion tokens: steps 0 and 1 whole, step 2 its first 7 tokens, step 3 gone.
    nll, _, local = student_scores(model, tokenizer, table, PROBLEMS, max_length=n1 + 30)
    cut = build_examples(table, PROBLEMS, tokenizer, max_length=n1 + 30, keep_truncated=True)[0].input_ids
    whole = completion_nlls(model, cut, n1)
    step2 = completion_nlls(model, cut[:n1] + cut[n1 + 11:], n1 + 12)
    assert local[0] == pytest.approx((sum(whole[:11]) / 11 + sum(whole[11:23]) / 12 + sum(step2) / 7) / 3, abs=1e-5)
    n2 = len(tokenizer(render_prompt(PROBLEMS["p2"], tokenizer), add_special_tokens=False)["input_ids"])
    assert n2 > n1
    local = student_scores(model, tokenizer, rationales(TEXTS[:2]), PROBLEMS, max_length=n1 + 1)[2]
    assert math.isfinite(local[0]) and math.isnan(local[1])  # p2's prompt alone fills the context


def test_with_student_scores_adds_the_local_column_once(model, tokenizer):
    table = rationales()
    scored = with_student_scores(table, model, tokenizer, PROBLEMS, batch_size=2, local_rows=[0, 3])
    assert scored.column_names[-3:] == ["student_nll", "student_rsr", "student_local_nll"]
    local = scored["student_local_nll"].to_pylist()
    assert local[0] == pytest.approx(student_scores(model, tokenizer, table, PROBLEMS)[2][0], abs=1e-4)
    assert math.isnan(local[1]) and math.isnan(local[2]) and math.isfinite(local[3])
    again = with_student_scores(scored, model, tokenizer, PROBLEMS)  # replaces the columns, never duplicates them
    assert again.column_names == scored.column_names
