"""The checks a fine-tune runs before any expensive work, and the examples it would train on.

    check_target_modules(student_skeleton(student_dir), ["q_proj", "v_proj"])   # a meta-device skeleton: no weights
    drops = check_examples(student_dir, "rationales.parquet", {"p1": "What is 3 + 4?"}, max_length=512)
    drops.kept, drops.dropped -> 96, {"truncated at lora.max_length": 3, ...}

check_examples builds the SFT examples with the student's tokenizer only (no model): the rows sft drops, by reason
(sft.ExampleDrops, for a trial's filter report); zero usable rationales raise NoTrainingData (a trial's "no data"),
which carries the same drops. Every path into training (Ray Train or plain) runs checks_before_training first.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pyarrow.parquet as pq
import torch

from cotgap_ray.config import LoraSettings
from cotgap_ray.errors import InputError
from cotgap_ray.sft import Example, ExampleDrops, build_examples_and_drops

log = logging.getLogger(__name__)


class NoTrainingData(ValueError):
    """No usable SFT example: raised before any training starts. A search turns it into a "no data" trial result
    (n_train_examples=0, no adapter, no dev score) rather than a failed trial. `drops`: what sft did with the rows
    (sft.ExampleDrops) when the examples were built, else None (e.g. fewer batches than workers: the drops are then
    those check_examples returned)."""

    def __init__(self, message: str, drops: ExampleDrops | None = None):
        super().__init__(message)
        self.drops = drops

    def __reduce__(self):  # keep `drops` when Ray or Tune pickle the exception
        return type(self), (str(self), self.drops)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct leaf names of the model's nn.Linear layers (e.g. q_proj, ..., down_proj, lm_head)."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def check_target_modules(model: torch.nn.Module, target_modules: list[str]) -> None:
    """Raise ValueError when a LoRA target is not the name of a linear layer of `model`.

    Works on a meta-device skeleton (student_skeleton), so a typo fails before any weights load. `model` may also be
    the list of names itself (models.remote.ModelFacts.linear_modules, read on the node that resolved the student)."""
    available = list(model) if isinstance(model, (list, tuple)) else linear_module_names(model)
    missing = [t for t in target_modules if t not in available]
    if missing:
        raise InputError(
            f"LoRA target module(s) {', '.join(map(repr, missing))} not found in {type(model).__name__}; "
            f"its linear modules are: {', '.join(available)}. Set lora.target_modules to some of these."
        )


def student_skeleton(student_path: str) -> torch.nn.Module:
    """The student's architecture on the meta device: module names without loading (or allocating) weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(student_path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def load_examples_and_drops(student_path: str, rationales, problems: dict[str, str],
                            max_length: int) -> tuple[object, list[Example], ExampleDrops]:
    """The student's tokenizer, one SFT example per usable rationale row, and the rows dropped by reason
    (sft.build_examples_and_drops). `rationales`: a Parquet path, or the Parquet file's bytes (how a worker on
    another node gets them)."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student_path)
    table = pq.read_table(pa.BufferReader(rationales) if isinstance(rationales, bytes) else rationales)
    examples, drops = build_examples_and_drops(table, problems, tokenizer, max_length)
    return tokenizer, examples, drops


def load_examples(student_path: str, rationales, problems: dict[str, str],
                  max_length: int) -> tuple[object, list[Example]]:
    """load_examples_and_drops without the drops (sft logs them)."""
    tokenizer, examples, _ = load_examples_and_drops(student_path, rationales, problems, max_length)
    return tokenizer, examples


# What to do about each drop reason, for the NoTrainingData message.
_DROP_HINTS = {
    "prompt does not tokenize as a prefix": "check the rationales' first characters or the student's tokenizer",
    "prompt alone fills lora.max_length": "raise lora.max_length",
    "truncated at lora.max_length": "raise lora.max_length or cut long rationales with the 'length' filter",
}


def check_examples(student_path: str, rationales_path: str, problems: dict[str, str],
                   max_length: int) -> ExampleDrops:
    """What the SFT example builder makes of the rationales (tokenizer only, no model): `kept` examples and the rows
    dropped by reason (sft.ExampleDrops; `.to_dict()` for a report, FilterReport.add_sft_drops for a filter
    report). Drops are logged. Raises NoTrainingData, carrying the drops, when no example is left."""
    _, _, drops = load_examples_and_drops(student_path, rationales_path, problems, max_length)
    if drops.kept == 0:
        if drops.rows_in == 0:
            why = " (the filters kept no rationale)"
        else:
            why = "; ".join(f"{n} {reason}: {_DROP_HINTS[reason]}" for reason, n in drops.dropped.items() if n)
            why = f" (dropped: {why})"
        raise NoTrainingData(f"no SFT examples from {rationales_path}: {drops.rows_in} rationale rows, none usable "
                             f"at max_length={max_length}{why}", drops)
    return drops


def count_examples(student_path: str, rationales_path: str, problems: dict[str, str], max_length: int) -> int:
    """Usable examples (tokenizer only, no model); NoTrainingData when there are none. check_examples also says which
    rows were dropped and why."""
    return check_examples(student_path, rationales_path, problems, max_length).kept


def checks_before_training(student_path: str, rationales_path: str, problems: dict[str, str],
                            settings: LoraSettings, num_workers: int) -> int:
    """Everything that can fail cheaply, before Ray or the weights: paths, target modules, examples, batches."""
    for what, path in (("student", student_path), ("rationales", rationales_path)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} path {path} does not exist")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    check_target_modules(student_skeleton(student_path), settings.target_modules)
    n_examples = count_examples(student_path, rationales_path, problems, settings.max_length)
    n_batches = math.ceil(n_examples / settings.batch_size)
    if n_batches < num_workers:
        raise NoTrainingData(f"{n_examples} examples make {n_batches} batch(es) of {settings.batch_size}: fewer "
                             f"than the {num_workers} workers (lower num_workers or lora.batch_size)")
    return n_examples
