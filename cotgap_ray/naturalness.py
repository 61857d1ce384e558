"""Local naturalness of a rationale under the student: its reasoning steps, and the short window each is scored in.

arXiv 2510.03988 (Just, Ko, Jia, "Distilling Reasoning into Student LLMs: Local Naturalness for Selecting Teacher
Data"; later titled "The Signal is in the Steps: Local Scoring for Reasoning Data Selection") finds that the student's
log-probability of a whole rationale, each token conditioned on everything before it, stops tracking which teacher
teaches best once rationales come from several teachers, while the same log-probability measured locally does:
each short reasoning step (e.g. a sentence) conditioned on the question and only a small window of the steps before
it, token log-probabilities averaged within a step, step scores averaged with equal weight (their Local Average Log
Probability), and teachers compared by the mean over their rationales. The paper's own text was not available to us:
that much is from its abstracts and from a third-party specification written to follow its implementation.

Our reading, as computed here (sft.student_scores fills it; proxies.py averages it over the sample):

    steps     the rationale's text cut after sentence-ending punctuation followed by whitespace, and at line breaks
              (step_starts); an enumeration marker ("2.") stays with the step it opens
    window    LOCAL_WINDOW_STEPS whole steps before the step scored, after the prompt (the question as the student is
              asked it); tokens before that are dropped from the input, the step's own earlier tokens are kept
    score     student_local_nll = mean over steps of (mean over the step's tokens of -log p), in nats; lower = more
              natural. Same tokens as student_nll (the SFT example's, EOS in the last step), so with a window that
              covers every step each token's NLL is student_nll's, and a one-step rationale scores exactly student_nll

    rationale " 3 + 4 = 7. The answer is 7." + EOS, window 1 step
      step 0  " 3 + 4 = 7."                 given the prompt
      step 1  " The answer is 7." + EOS     given the prompt + step 0 (a window of 1 covers it all: as student_nll)
    and a third step would be given the prompt + step 1 only.
"""

from __future__ import annotations

import math
import re

# Steps of context before the step scored. The paper's window is "small"; a later version of it reportedly finds
# that a window of 5-25% of the preceding steps ranks teachers right and one of 50-75% behaves like whole-rationale
# scoring (second-hand: not checked against its text). Rationales here are short (a GSM8K-style rationale is 4-10
# sentences), so one step is 10-25% of them; two would already be near half of a short rationale.
LOCAL_WINDOW_STEPS = 1

_BREAK = re.compile(r"\s+")
# A step that is only a list number ("2.", "10)") is not a reasoning step: it opens the one after it.
_MARKER = re.compile(r"\s*\d+[.)]")


def step_starts(text: str) -> list[int]:
    """Character offsets where the steps after the first begin: at the whitespace after ".", "!" or "?", and at each
    run of whitespace holding a line break. The whitespace opens the next step (tokenizers attach a leading space to
    the word after it). A decimal point ("2.5") is not followed by whitespace, so it never ends a step.

    step_starts(" 5 - 3 = 2.\\nThe answer is 2.") -> [11]      (steps " 5 - 3 = 2." and "\\nThe answer is 2.")
    """
    starts, last = [], 0
    for m in _BREAK.finditer(text):
        if m.start() == 0 or m.end() == len(text):
            continue  # leading or trailing whitespace belongs to the first or the last step
        if text[m.start() - 1] in ".!?" or "\n" in m.group():
            if _MARKER.fullmatch(text[last:m.start()]):
                continue
            starts.append(m.start())
            last = m.start()
    return starts


def token_step_starts(tokenizer, prompt: str, completion: str, input_ids: list[int], n_prompt: int) -> list[int]:
    """Where each step begins in `input_ids` (the SFT example of prompt + completion): n_prompt, then the token index
    of each step_starts offset. An offset whose text does not tokenize as a prefix of input_ids (a token straddles it)
    is skipped, merging its two steps; one at or past the end of input_ids (an example truncated at max_length) ends
    the list. One tokenizer call per step: cheap beside the model's forward passes."""
    out = [n_prompt]
    for offset in step_starts(completion):
        ids = tokenizer(prompt + completion[:offset], add_special_tokens=False)["input_ids"]
        if len(ids) >= len(input_ids):
            break
        if len(ids) > out[-1] and ids == input_ids[:len(ids)]:
            out.append(len(ids))
    return out


def local_windows(starts: list[int], end: int, window: int) -> list[tuple[int, int, int]]:
    """(context start, step start, step end) of each step, as indices into the example's input_ids: the step's tokens
    are [step start, step end) and it is conditioned on the prompt plus [context start, step start), the `window`
    steps before it (fewer at the start: then context start is the prompt's end and the context is the whole prefix).

    local_windows([10, 14, 20], 25, window=1) -> [(10, 10, 14), (10, 14, 20), (14, 20, 25)]
    """
    if window < 0:
        raise ValueError(f"the local window must be >= 0 steps, got {window}")
    bounds = list(starts) + [end]
    return [(starts[max(0, k - window)], bounds[k], bounds[k + 1]) for k in range(len(starts))]


def mean_of_step_means(step_nlls: list[list[float]]) -> float:
    """The rationale's local score: the mean over steps of each step's mean token NLL (every step weighs the same,
    however long); NaN when there is no token."""
    means = [sum(nlls) / len(nlls) for nlls in step_nlls if nlls]
    return sum(means) / len(means) if means else math.nan
