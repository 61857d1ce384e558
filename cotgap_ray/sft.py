"""Rationales -> tokenized SFT examples with the loss on the completion only; batching, padding, and student NLL.

The prompt is exactly the evaluation prompt (prompts.render_prompt), so the student learns to answer the question the
way it will be asked after distillation; the completion is the teacher's rationale followed by EOS:

    rationale (problem "p1", text " 5 - 3 = 2. The answer is 2.")
      prompt      "<s>user: 5 - 3?\\n\\nSolve the problem ...\\nassistant:"     labels -100 ... -100
      completion  " 5 - 3 = 2. The answer is 2." + </s>                           labels = the completion's ids

Both the prompt alone and prompt + completion are tokenized with add_special_tokens=False (render_prompt already
wrote the BOS); the prompt's ids must be a prefix of the full ids, otherwise the tokenizer merged tokens across the
boundary and the -100 mask would cover part of the rationale (or leave part of the prompt trained): that is an error.
The collator only pads: masking is decided here, once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from cotgap_ray.prompts import render_prompt

log = logging.getLogger(__name__)

IGNORE = -100  # the label torch's cross-entropy ignores


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE over the prompt, the token ids over the completion
    problem_id: str


def check_prompt_prefix(prompt_ids: list[int], full_ids: list[int], problem_id: str) -> None:
    """Raise when the tokenized prompt is not a prefix of the tokenized prompt + completion."""
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return
    at = next((i for i, (a, b) in enumerate(zip(prompt_ids, full_ids)) if a != b), min(len(prompt_ids), len(full_ids)))
    raise ValueError(
        f"problem {problem_id!r}: the tokenized prompt is not a prefix of prompt + rationale (they differ at token "
        f"{at} of {len(prompt_ids)}): the tokenizer merges text across the prompt/rationale boundary, so the loss "
        f"mask would be misplaced. Check the rationale's first characters (e.g. a leading newline after a prompt that "
        f"ends in one) or the tokenizer."
    )


def tokenize_example(prompt: str, completion: str, tokenizer, problem_id: str, max_length: int) -> Example | None:
    """One Example, right-truncated to max_length; None when not a single completion token would survive."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    check_prompt_prefix(prompt_ids, full_ids, problem_id)
    # EOS is appended as an id, not as text: some tokenizers would split "</s>" written inside the text.
    full_ids = full_ids + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        return None
    labels = [IGNORE] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return Example(input_ids=full_ids[:max_length], labels=labels[:max_length], problem_id=problem_id)


def build_examples(rationales: pa.Table, problems: dict[str, str], tokenizer, max_length: int) -> list[Example]:
    """One Example per rationale row, in row order; rows whose completion would be fully truncated are dropped.

    `problems` maps problem_id -> question. Dropped rows = rationales.num_rows - len(result) (also logged)."""
    per_row = _examples_by_row(rationales, problems, tokenizer, max_length)
    examples = [e for e in per_row if e is not None]
    # An example that kept its whole completion ends with EOS; one cut by max_length does not.
    truncated = sum(e.input_ids[-1] != tokenizer.eos_token_id for e in examples)
    dropped = rationales.num_rows - len(examples)
    if dropped or truncated:
        log.warning("SFT examples: %d of %d rationales dropped (prompt alone fills max_length=%d), %d truncated",
                    dropped, rationales.num_rows, max_length, truncated)
    return examples


def _examples_by_row(rationales: pa.Table, problems: dict[str, str], tokenizer, max_length: int) -> list:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: the completion needs one to end the assistant turn")
    out = []
    for pid, text in zip(rationales["problem_id"].to_pylist(), rationales["text"].to_pylist()):
        if pid not in problems:
            raise ValueError(f"rationale of problem {pid!r}: no such problem among the {len(problems)} questions given")
        out.append(tokenize_example(render_prompt(problems[pid], tokenizer), text, tokenizer, pid, max_length))
    return out


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
def student_nll(model, tokenizer, rationales: pa.Table, problems: dict[str, str], batch_size: int = 8,
                max_length: int | None = None) -> list[float]:
    """Mean NLL (nats per completion token, EOS included) of each rationale under a causal LM, one per row.

    Same prompt and tokens as the SFT examples. NaN for a row whose prompt alone fills max_length (default: the
    model's max_position_embeddings). Any HF causal LM: only `model(input_ids, attention_mask).logits` is used."""
    max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_row = _examples_by_row(rationales, problems, tokenizer, max_length)
    rows = [r for r, e in enumerate(per_row) if e is not None]
    examples = [per_row[r] for r in rows]
    out = [math.nan] * rationales.num_rows
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout would make the NLL noisy
    try:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # little padding
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad_id).items()}
            for i, value in zip(idx, _mean_nll(model, batch)):
                out[rows[i]] = value
    finally:
        model.train(was_training)
    return out


def _mean_nll(model, batch: dict[str, torch.Tensor]) -> list[float]:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Position t predicts token t+1: shift, then average over the completion (label != IGNORE) tokens of each row.
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
    return (nll.sum(dim=1) / counts).tolist()


def with_student_nll(rationales: pa.Table, model, tokenizer, problems: dict[str, str], batch_size: int = 8,
                     max_length: int | None = None) -> pa.Table:
    """The rationales with a float `student_nll` column (replaced if present): the input of filters' student_nll."""
    values = pa.array(student_nll(model, tokenizer, rationales, problems, batch_size, max_length), type=pa.float64())
    if "student_nll" in rationales.column_names:
        rationales = rationales.drop_columns(["student_nll"])
    return rationales.append_column("student_nll", values)
