"""Rationales -> tokenized SFT examples with the loss on the completion only; batching, padding, and student NLL.

The prompt is exactly the evaluation prompt (prompts.render_prompt), so the student learns to answer the question the
way it will be asked after distillation; the completion is the teacher's rationale followed by EOS:

    rationale (problem "p1", text " 5 - 3 = 2. The answer is 2.")
      prompt      "<s>user: 5 - 3?\\n\\nSolve the problem ...\\nassistant:"     labels -100 ... -100
      completion  " 5 - 3 = 2. The answer is 2." + </s>                           labels = the completion's ids

Both the prompt alone and prompt + completion are tokenized with add_special_tokens=False (render_prompt already
wrote the BOS); the prompt's ids must be a prefix of the full ids, otherwise the tokenizer merged tokens across the
boundary and the -100 mask would cover part of the rationale (or leave part of the prompt trained).
The collator only pads: masking is decided here, once.

A rationale row that cannot make a sound example is dropped, never raised on, and counted by reason (ExampleDrops,
from build_examples_and_drops; training.examples.check_examples gives it to a trial for its filter report):

    DROP_NOT_PREFIX   "prompt does not tokenize as a prefix"   the merge above: one odd rationale must not end a trial
    DROP_PROMPT_FILLS "prompt alone fills lora.max_length"     not one completion token would be trained
    DROP_TRUNCATED    "truncated at lora.max_length"           prompt + rationale + EOS is longer than max_length

Truncated rationales are dropped by default (keep_truncated=False). The choice: an example cut at max_length either
ends with EOS, which teaches the student to stop mid-thought, before the answer, or ends without one, which trains it
on a rationale that never reaches its answer, the part the evaluation reads, while looking like a normal example.
Neither is a demonstration of the task, and keeping them hides that lora.max_length is too small for the teacher; a
count under DROP_TRUNCATED says so instead (raise lora.max_length, or cut long rationales with the `length` filter).
keep_truncated=True keeps the prefix that fits, WITHOUT EOS (EOS is only ever the last token of a whole rationale);
student_nll uses it, so a long rationale is still scored on what fits rather than being NaN.

Scoring a rationale under the student (student_scores), per row, over the completion tokens only (the rationale and
its EOS, never the prompt); one forward pass per batch gives the first two, the third needs a short pass per step:

    student_nll        mean surprisal -log p(token) in nats             lower = closer to what the student writes
    student_rsr        Rank-Surprisal Ratio (arXiv 2601.14249): mean     lower = better suited to teach the student
                       rank of each token in the student's next-token
                       distribution (1 = its top choice, capped at
                       RSR_RANK_CAP) / mean NLL
    student_local_nll  local naturalness (arXiv 2510.03988; our reading  lower = each step is more natural to the
                       in naturalness.py): mean over reasoning steps of  student given only what just precedes it
                       the step's mean NLL, each step given the prompt
                       and only the LOCAL_WINDOW_STEPS steps before it
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from cotgap_ray.naturalness import LOCAL_WINDOW_STEPS, local_windows, mean_of_step_means, token_step_starts
from cotgap_ray.prompts import render_prompt

log = logging.getLogger(__name__)

IGNORE = -100  # the label torch's cross-entropy ignores
# Ranks above this count as this in the mean rank of student_rsr (our value: the paper's own cap was not checked
# against its text). Why a cap: past the top
# hundred or so the student does not "almost" write a token, and one token at rank 30,000 of a large vocabulary would
# otherwise outweigh every other token of the rationale, so the mean would measure outliers, not alignment.
RSR_RANK_CAP = 100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE over the prompt, the token ids over the completion
    problem_id: str


DROP_NOT_PREFIX = "prompt does not tokenize as a prefix"
DROP_PROMPT_FILLS = "prompt alone fills lora.max_length"
DROP_TRUNCATED = "truncated at lora.max_length"
DROP_REASONS = (DROP_NOT_PREFIX, DROP_PROMPT_FILLS, DROP_TRUNCATED)


@dataclass(frozen=True)
class ExampleDrops:
    """What became of a rationale table's rows: `kept` examples, and the rows dropped by reason (every reason of
    DROP_REASONS is a key, in that order, 0 when none). rows_in == kept + sum(dropped.values())."""

    rows_in: int
    kept: int
    problems_kept: int  # distinct problems among the kept examples
    dropped: dict[str, int]
    max_length: int
    keep_truncated: bool = False

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict:
        return {"rows_in": self.rows_in, "kept": self.kept, "problems_kept": self.problems_kept,
                "dropped": dict(self.dropped), "max_length": self.max_length, "keep_truncated": self.keep_truncated}

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items() if n)
        return (f"{self.kept} of {self.rows_in} rationale rows made SFT examples (max_length={self.max_length})"
                + (f"; dropped: {reasons}" if reasons else ""))


def prefix_mismatch(prompt_ids: list[int], full_ids: list[int]) -> int | None:
    """None when the tokenized prompt is a prefix of the tokenized prompt + completion, else the first position
    where they differ."""
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return None
    return next((i for i, (a, b) in enumerate(zip(prompt_ids, full_ids)) if a != b),
                min(len(prompt_ids), len(full_ids)))


def check_prompt_prefix(prompt_ids: list[int], full_ids: list[int], problem_id: str) -> None:
    """Raise when the tokenized prompt is not a prefix of the tokenized prompt + completion."""
    at = prefix_mismatch(prompt_ids, full_ids)
    if at is None:
        return
    raise ValueError(
        f"problem {problem_id!r}: the tokenized prompt is not a prefix of prompt + rationale (they differ at token "
        f"{at} of {len(prompt_ids)}): the tokenizer merges text across the prompt/rationale boundary, so the loss "
        f"mask would be misplaced. Check the rationale's first characters (e.g. a leading newline after a prompt that "
        f"ends in one) or the tokenizer."
    )


def tokenize_example(prompt: str, completion: str, tokenizer, problem_id: str, max_length: int,
                     keep_truncated: bool = False) -> tuple[Example | None, str | None]:
    """(Example, None), or (None, the DROP_* reason). A whole completion ends with EOS; with keep_truncated, one longer
    than max_length is right-truncated (no EOS), otherwise it is dropped (see the module docstring)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    if prefix_mismatch(prompt_ids, full_ids) is not None:
        return None, DROP_NOT_PREFIX
    if len(prompt_ids) >= max_length:
        return None, DROP_PROMPT_FILLS
    # EOS is appended as an id, not as text: some tokenizers would split "</s>" written inside the text.
    if len(full_ids) + 1 <= max_length:
        full_ids = full_ids + [tokenizer.eos_token_id]
    elif not keep_truncated:
        return None, DROP_TRUNCATED
    else:
        full_ids = full_ids[:max_length]  # the prefix that fits, and no EOS: the rationale did not end here
    labels = [IGNORE] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return Example(input_ids=full_ids, labels=labels, problem_id=problem_id), None


def build_examples_and_drops(rationales: pa.Table, problems: dict[str, str], tokenizer, max_length: int,
                             keep_truncated: bool = False) -> tuple[list[Example], ExampleDrops]:
    """One Example per usable rationale row, in row order, and what was dropped by reason (also logged).

    `problems` maps problem_id -> question; a row of a problem not in it is a ValueError (a caller's bug)."""
    per_row, reasons, drops = _examples_by_row(rationales, problems, tokenizer, max_length, keep_truncated)
    if drops.n_dropped:
        pids = rationales["problem_id"].to_pylist()
        first = {}
        for pid, reason in zip(pids, reasons):
            if reason:
                first.setdefault(reason, pid)
        log.warning("SFT examples: %s (first of each: %s)", drops,
                    ", ".join(f"{reason}: problem {pid!r}" for reason, pid in first.items()))
    return [e for e in per_row if e is not None], drops


def build_examples(rationales: pa.Table, problems: dict[str, str], tokenizer, max_length: int,
                   keep_truncated: bool = False) -> list[Example]:
    """build_examples_and_drops without the drop counts (they are logged)."""
    return build_examples_and_drops(rationales, problems, tokenizer, max_length, keep_truncated)[0]


def _examples_by_row(rationales: pa.Table, problems: dict[str, str], tokenizer, max_length: int,
                     keep_truncated: bool) -> tuple[list, list, ExampleDrops]:
    """Per row, its Example or None and its drop reason or None; and the drop counts."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: the completion needs one to end the assistant turn")
    out, reasons = [], []
    for pid, text in zip(rationales["problem_id"].to_pylist(), rationales["text"].to_pylist()):
        if pid not in problems:
            raise ValueError(f"rationale of problem {pid!r}: no such problem among the {len(problems)} questions given")
        example, reason = tokenize_example(render_prompt(problems[pid], tokenizer), text, tokenizer, pid, max_length,
                                           keep_truncated)
        out.append(example)
        reasons.append(reason)
    dropped = {reason: reasons.count(reason) for reason in DROP_REASONS}
    kept = [e for e in out if e is not None]
    drops = ExampleDrops(rows_in=len(out), kept=len(kept), problems_kept=len({e.problem_id for e in kept}),
                         dropped=dropped, max_length=max_length, keep_truncated=keep_truncated)
    return out, reasons, drops


def length_bucketed_batches(examples: list[Example], batch_size: int, seed: int, shuffle: bool = True,
                            mega_batch: int = 50) -> list[list[int]]:
    """Batches of example indices of similar length, so little of each batch is padding.

    Shuffle, cut into mega-batches of mega_batch x batch_size, sort each by length, cut into batches, shuffle the
    batch order: similar lengths share a batch while the epoch order stays random (seeded)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples)).tolist() if shuffle else list(range(len(examples)))
    chunk = mega_batch * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start:start + chunk], key=lambda i: len(examples[i].input_ids))
        batches += [group[j:j + batch_size] for j in range(0, len(group), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids with pad_id, labels with IGNORE, attention_mask 1/0."""
    width = max(len(e.input_ids) for e in examples)
    pad = [width - len(e.input_ids) for e in examples]
    return {
        "input_ids": torch.tensor([e.input_ids + [pad_id] * p for e, p in zip(examples, pad)], dtype=torch.long),
        "labels": torch.tensor([e.labels + [IGNORE] * p for e, p in zip(examples, pad)], dtype=torch.long),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(examples, pad)],
                                       dtype=torch.long),
    }


def padding_waste(batches: list[list[int]], examples: list[Example]) -> float:
    """Fraction of the positions in right-padded batches that are padding (0.0 when there are none)."""
    total = real = 0
    for batch in batches:
        lengths = [len(examples[i].input_ids) for i in batch]
        total += max(lengths, default=0) * len(lengths)
        real += sum(lengths)
    return (total - real) / total if total else 0.0


@torch.no_grad()
def student_scores(model, tokenizer, rationales: pa.Table, problems: dict[str, str], batch_size: int = 8,
                   max_length: int | None = None, local_window: int | None = LOCAL_WINDOW_STEPS,
                   local_rows=None) -> tuple[list[float], list[float], list[float]]:
    """(mean NLL, mean capped rank, local NLL) of each rationale under a causal LM, one of each per row.

    NLL and rank come from one forward pass, both means over the completion tokens (EOS included), never the
    prompt's: NLL in nats per token, rank of the token in the model's next-token distribution (1 = its argmax, ties
    counted in the token's favour; capped at RSR_RANK_CAP). The local NLL (naturalness.py) is the mean over the
    rationale's steps of each step's mean NLL, each step conditioned on the prompt and only the `local_window` steps
    before it; it needs a pass per step beyond the first local_window + 1 (see _local_nlls for the cost), so it is
    computed only for `local_rows` (row indices; None: every row) and not at all when local_window is None (NaN).
    Same prompt and tokens as the SFT examples, except that a rationale longer than max_length (default: the model's
    max_position_embeddings) is scored on the prefix that fits (keep_truncated; no EOS then). NaN for a row SFT would
    drop for another reason: its prompt alone fills max_length, or it does not tokenize as a prefix (the student_nll
    filter never keeps NaN). Any HF causal LM: only `model(input_ids, attention_mask).logits` is used."""
    max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_row, _, _ = _examples_by_row(rationales, problems, tokenizer, max_length, keep_truncated=True)
    rows = [r for r, e in enumerate(per_row) if e is not None]
    examples = [per_row[r] for r in rows]
    n = rationales.num_rows
    nll_out, rank_out, local_out = [math.nan] * n, [math.nan] * n, [math.nan] * n
    wanted = set() if local_window is None else set(range(n) if local_rows is None else local_rows)
    local = [i for i, r in enumerate(rows) if r in wanted]  # the examples that get a local NLL
    # Each of those examples' completion-token NLLs, in order (kept only for them: every row may be scored).
    token_nlls: list[list[float]] = [[] for _ in examples]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout would make the NLL noisy
    try:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # little padding
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad_id).items()}
            for i, nll, rank, tokens in zip(idx, *_score_batch(model, batch)):
                nll_out[rows[i]], rank_out[rows[i]] = nll, rank
                if rows[i] in wanted:
                    token_nlls[i] = tokens
        if local:
            pids, texts = rationales["problem_id"].to_pylist(), rationales["text"].to_pylist()
            windows = {}
            for i in local:
                e, prompt = examples[i], render_prompt(problems[pids[rows[i]]], tokenizer)
                starts = token_step_starts(tokenizer, prompt, texts[rows[i]], e.input_ids, _prompt_length(e))
                windows[i] = local_windows(starts, len(e.input_ids), local_window)
            for i, value in _local_nlls(model, examples, windows, token_nlls, batch_size, pad_id, device).items():
                local_out[rows[i]] = value
    finally:
        model.train(was_training)
    return nll_out, rank_out, local_out


def student_nll(model, tokenizer, rationales: pa.Table, problems: dict[str, str], batch_size: int = 8,
                max_length: int | None = None) -> list[float]:
    """Mean NLL (nats per completion token, EOS included) of each rationale under a causal LM, one per row: the NLL
    of student_scores (see there for truncation and NaN rows), without the local passes."""
    return student_scores(model, tokenizer, rationales, problems, batch_size, max_length, local_window=None)[0]


def rank_surprisal_ratio(mean_rank: float, mean_nll: float) -> float:
    """RSR of one rationale (arXiv 2601.14249): mean capped rank / mean NLL over the same tokens; lower = better.
    NaN when undefined: a NaN input (a dropped row), or a mean NLL that is not > 0 (the student predicts every token
    with probability 1, so there is nothing to learn and the ratio would divide by zero)."""
    if not (math.isfinite(mean_rank) and math.isfinite(mean_nll)) or mean_nll <= 0:
        return math.nan
    return mean_rank / mean_nll


def _prompt_length(example: Example) -> int:
    """The number of prompt tokens: the labels' leading IGNOREs (there is always a completion token after them)."""
    return next(t for t, label in enumerate(example.labels) if label != IGNORE)


def _token_nlls(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """(logits, labels, per-token NLL, mask) of a collated batch, shifted so that position t scores token t+1; the
    mask is True over the completion (label != IGNORE) tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return logits, labels, nll, labels != IGNORE


def _score_batch(model, batch: dict[str, torch.Tensor]) -> tuple[list[float], list[float], list[list[float]]]:
    """Per row of a collated batch: mean NLL and mean capped rank over its completion (label != IGNORE) tokens, and
    the NLL of each of those tokens in order (what the first steps' local scores are read from)."""
    logits, labels, nll, mask = _token_nlls(model, batch)
    counts = mask.sum(dim=1).clamp(min=1)
    # Rank = 1 + the number of vocabulary entries with a strictly higher logit (same order as the probabilities).
    # One row at a time: the comparison is a (length x vocab) tensor, which for a whole batch of a 150k-token
    # vocabulary would cost as much memory again as the logits.
    target = logits.gather(2, labels.clamp(min=0).unsqueeze(2))  # IGNORE positions read token 0, masked out below
    ranks = torch.stack([(row > tgt).sum(dim=1) for row, tgt in zip(logits, target)]) + 1
    ranks = ranks.clamp(max=RSR_RANK_CAP).float() * mask
    tokens = [row[m].tolist() for row, m in zip(nll, mask)]
    return (nll.sum(dim=1) / counts).tolist(), (ranks.sum(dim=1) / counts).tolist(), tokens


def _local_nlls(model, examples: list[Example], windows: dict[int, list[tuple[int, int, int]]],
                token_nlls: list[list[float]], batch_size: int, pad_id: int, device) -> dict[int, float]:
    """Each example's local NLL (naturalness.mean_of_step_means) from its windows (naturalness.local_windows).

    A step whose window reaches back to the prompt is conditioned on the whole prefix, so its token NLLs are read from
    the whole-rationale pass (token_nlls); every later step is one more sequence, prompt + window + step, scored on
    the step's tokens. Cost: per rationale of K steps of about L tokens after a prompt of P tokens, with window W,
    K - W - 1 extra sequences of about P + (W + 1) * L tokens, against P + K * L for the whole-rationale pass; for a
    GSM8K-style rationale (P ~ 100, K ~ 6, L ~ 16, W = 1) about 3x the tokens of that pass, in shorter sequences
    (attention is cheaper per token). It adds no rank computation (the costly per-row vocabulary comparison)."""
    steps = {i: [None] * len(spans) for i, spans in windows.items()}
    jobs = []  # (example, step number, the step's sequence)
    for i, spans in windows.items():
        e, n_prompt = examples[i], _prompt_length(examples[i])
        for k, (context, start, end) in enumerate(spans):
            if context == n_prompt:
                steps[i][k] = token_nlls[i][start - n_prompt:end - n_prompt]
            else:
                ids = e.input_ids[:n_prompt] + e.input_ids[context:end]
                jobs.append((i, k, Example(ids, [IGNORE] * (n_prompt + start - context) + e.input_ids[start:end],
                                           e.problem_id)))
    if jobs:
        whole = sum(len(examples[i].input_ids) for i in windows)
        log.info("local naturalness: %d step windows of %d rationales, %d tokens (the whole-rationale pass: %d)",
                 len(jobs), len(windows), sum(len(j[2].input_ids) for j in jobs), whole)
    jobs.sort(key=lambda job: len(job[2].input_ids))  # little padding
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([job[2] for job in chunk], pad_id).items()}
        _, _, nll, mask = _token_nlls(model, batch)
        for (i, k, _), row, m in zip(chunk, nll, mask):
            steps[i][k] = row[m].tolist()
    return {i: mean_of_step_means(step_nlls) for i, step_nlls in steps.items()}


def with_student_nll(rationales: pa.Table, model, tokenizer, problems: dict[str, str], batch_size: int = 8,
                     max_length: int | None = None) -> pa.Table:
    """The rationales with a float `student_nll` column (replaced if present): the input of filters' student_nll."""
    values = pa.array(student_nll(model, tokenizer, rationales, problems, batch_size, max_length), type=pa.float64())
    if "student_nll" in rationales.column_names:
        rationales = rationales.drop_columns(["student_nll"])
    return rationales.append_column("student_nll", values)


def with_student_scores(rationales: pa.Table, model, tokenizer, problems: dict[str, str], batch_size: int = 8,
                        max_length: int | None = None, local_rows=None) -> pa.Table:
    """The rationales with float `student_nll`, `student_rsr` and `student_local_nll` columns (replaced if present):
    what with_student_nll adds, the per-row Rank-Surprisal Ratio (NaN where undefined), and the local naturalness
    (naturalness.py), NaN outside `local_rows` (row indices; None: every row). The search scores every row for a
    student_nll filter but needs the local one only on the proxies' sample (proxies.nll_sample_rows)."""
    nll, rank, local = student_scores(model, tokenizer, rationales, problems, batch_size, max_length,
                                      local_rows=local_rows)
    columns = {"student_nll": nll, "student_rsr": [rank_surprisal_ratio(r, n) for r, n in zip(rank, nll)],
               "student_local_nll": local}
    rationales = rationales.drop_columns([c for c in columns if c in rationales.column_names])
    for name, values in columns.items():
        rationales = rationales.append_column(name, pa.array(values, type=pa.float64()))
    return rationales
