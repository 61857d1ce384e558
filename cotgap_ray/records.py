"""The record schemas of cotgap_ray, defined once (pyarrow), and the small dataclasses that carry them.

| record    | one row is                                             |
|-----------|--------------------------------------------------------|
| problem   | one question of a task split, with its normalized gold |
| rationale | one teacher sample for one problem                      |
| eval row  | one model (+ adapter) answer to one problem              |

and the JSON records of a run directory (TeacherRef, TrialRecord, FinalRecord: see "run records" below).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass

import pyarrow as pa

from cotgap_ray.config import LoraSettings
from cotgap_ray.errors import InputError

PROBLEM_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),  # normalized gold, see answers.parse_gold
        pa.field("split", pa.string(), nullable=False),
        pa.field("solution", pa.string()),  # the task's reference solution, "" when it has none (controls.py)
    ]
)

RATIONALE_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("sample_idx", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("pred", pa.string()),  # extracted answer (answers.extract_answer); null when none was found
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
    ]
)

EVAL_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("adapter", pa.string()),  # null for the baseline (no adapter)
        pa.field("text", pa.string(), nullable=False),
        pa.field("pred", pa.string()),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. temperature 0 means greedy; n samples per prompt; seed makes sampling repeatable."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Generation:
    """One sampled completion: the text after the prompt (stop strings excluded) and its token count."""

    text: str
    n_tokens: int


@dataclass(frozen=True)
class Problem:
    """One question. `answer` is the normalized gold answer (answers.normalize)."""

    id: str
    question: str
    answer: str
    split: str
    # The task's worked solution without the final answer line ("" when the task has none): what control teachers
    # (controls.py) write. Not in any fingerprint: the problem is its id, question and answer.
    solution: str = ""


def problems_to_table(problems: list[Problem]) -> pa.Table:
    return pa.Table.from_pylist([asdict(p) for p in problems], schema=PROBLEM_SCHEMA)


def table_to_problems(table: pa.Table) -> list[Problem]:
    return [Problem(**row) for row in table.select(PROBLEM_SCHEMA.names).to_pylist()]


# ------------------------------------------------------------------------------------- run records (JSON files)
#
# What a search writes into its run directory and the report reads back, one schema each:
#
#   config.json              {"fingerprint", "config", "teachers": [TeacherRef, ...]}
#   trials/<key>/trial.json  TrialRecord (its epochs: EpochRecord); a distill run writes the same record
#   final/<teacher>.json     FinalRecord (its seeds: SeedRecord)
#
# Every field has a default so a record of a trial still running (or of an older run) loads; a key the schema does
# not know, or a value of the wrong type, is a RecordError naming the file and the key.


class RecordError(InputError):
    """A run file that does not match its schema: names the file and the key."""


@dataclass(frozen=True)
class TeacherRef:
    """A teacher's two identities, resolved once at validation: the config's spec (what to load) and the short name
    (models.spec_name: what rationale rows, file names and reports use). Written to config.json."""

    spec: str
    name: str


@dataclass
class EpochRecord:
    """One epoch of a trial, as Ray Train / Tune reported it (training.loop.epoch_metrics, then the dev numbers of
    the scorer: after every epoch in a search, after the last one in distill)."""

    epoch: int = 0
    train_loss: float | None = None
    tokens: int | None = None
    label_tokens: int | None = None
    batches: int | None = None
    seconds: float | None = None
    tokens_per_s: float | None = None
    lr: float | None = None
    threads: int | None = None
    dev_accuracy: float | None = None
    dev_delta: float | None = None
    dev_delta_lo: float | None = None
    dev_delta_hi: float | None = None
    p_value: float | None = None
    dev_discordance: float | None = None
    eval_seconds: float | None = None
    checkpoint_path: str | None = None

    @classmethod
    def from_metrics(cls, metrics: dict) -> EpochRecord:
        """The record of one epoch report (a Tune result or a TrainResult epoch): the keys it knows, the rest left
        out (a Tune result also carries Tune's own bookkeeping)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in metrics.items() if k in known})


@dataclass
class TrialRecord:
    """One trial (run_dir/trials/<trial_id>/trial.json): a search trial or a `python -m cotgap_ray.distill` run.
    `status`: running | ok (every planned epoch) | stopped (ASHA ended it early) | no_data (its filters kept
    nothing) | failed; `outcome` is what a search trial last said of itself while running. Deltas are fractions
    (0.05 = +5 points) against the student's dev baseline; the dev numbers are those of the last epoch reached.
    What it trained with: a search trial's sampled point is `params` (space.filter_chain / lora_settings turn it into
    a chain and settings); a distill run has no point and records its configured chain and settings in `filters`
    and `lora` instead."""

    trial_id: str = ""
    tune_trial_id: str | None = None
    teacher: str | None = None
    params: dict = field(default_factory=dict)
    filters: list = field(default_factory=list)
    lora: LoraSettings | None = None
    status: str = "running"
    outcome: str | None = None
    error: str | None = None
    n_train_examples: int = 0
    rationales_kept: int = 0
    filter_report: list = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)
    baseline_dev_accuracy: float | None = None
    dev_accuracy: float | None = None
    dev_delta: float | None = None
    dev_delta_ci95: list | None = None
    p_value: float | None = None
    dev_discordance: float | None = None
    degrades: bool | None = None  # stats.compare's verdict on dev (no adjustment across trials)
    improves: bool | None = None
    train_tokens: int = 0
    train_seconds: float = 0.0
    seconds: float = 0.0
    adapter_dir: str | None = None
    replayed: bool = False
    retries: list = field(default_factory=list)  # why each failed attempt Tune retried ended (search.max_failures)
    finished_at: float | None = None


@dataclass
class SeedRecord:
    """One confirmation fine-tune (one LoRA seed) of a teacher's chosen configuration, scored on test."""

    seed: int = 0
    test_accuracy: float | None = None
    train_seconds: float = 0.0
    adapter_dir: str | None = None
    adapter_from: str | None = None


@dataclass
class FinalRecord:
    """A teacher's confirmation on the test split (run_dir/final/<teacher>.json): its best dev configuration
    re-trained with confirm.seeds seeds; delta = mean test accuracy over seeds - the baseline's, with the interval,
    p-value and verdict of stats.compare_seeds."""

    teacher: str = ""
    spec: str = ""
    trial_id: str | None = None
    params: dict = field(default_factory=dict)
    best_dev_delta: float | None = None
    seeds: list[SeedRecord] = field(default_factory=list)
    n: int = 0
    test_accuracy: float | None = None
    baseline_test_accuracy: float | None = None
    delta: float | None = None
    delta_ci95: list | None = None
    p_value: float | None = None
    discordance: float | None = None
    degrades: bool | None = None  # this teacher's own test (before the report's adjustment across teachers)
    improves: bool | None = None
    test: str | None = None  # the test behind p_value: "exact McNemar" (one seed) or stats.HULL_TEST
    interval: str | None = None  # how delta_ci95 was built (stats.compare / compare_seeds)
    training_variance: str | None = None  # "not measured (one seed)" or "measured (N seeds)"
    train_seconds: float = 0.0
    n_train_examples: int = 0
    # Per-problem test correctness behind `delta`, in one order (evaluation.paired's: sorted problem ids), so two
    # teachers' or two runs' adapters can be compared problem by problem (validate.py's regret pairs their answers,
    # whatever each run's baseline). Empty in a final written before these fields existed.
    test_problem_ids: list[str] = field(default_factory=list)
    baseline_test_correct: list[bool] = field(default_factory=list)
    test_correct_by_seed: list[list[bool]] = field(default_factory=list)  # one list per entry of `seeds`


def record_from_dict(cls, raw, where: str):
    """Build record dataclass `cls` from parsed JSON, checking every key and type (nested records included)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: expected a JSON object for {cls.__name__}, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecordError(f"{where}: unknown key {unknown[0]!r} for {cls.__name__} (known: {', '.join(sorted(known))})")
    values = {}
    for key, value in raw.items():
        values[key] = _typed(value, hints[key], f"{where}: {key}")
    return cls(**values)


def _typed(value, hint, where: str):
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if is_dataclass(origin):
            return record_from_dict(origin, value, where)
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(option) or (None,)
            if item is not None and is_dataclass(item):
                return [record_from_dict(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict) and isinstance(value, origin):
            return value
    name = " | ".join(getattr(o, "__name__", str(o)) for o in options)
    raise RecordError(f"{where} must be {name}, got {value!r}")


def record_to_dict(record) -> dict:
    return asdict(record)


def write_json(path, data) -> None:
    """Write a run file atomically (a temporary file renamed into place): an interrupted run never leaves half a
    trial.json, final/<teacher>.json or report.json for --resume or the report to trip on. Records are converted."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(record_to_dict(data) if is_dataclass(data) else data, indent=2, default=str))
    except OSError as e:  # a full disk: no half file left behind, and the error names the file
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    tmp.replace(path)
