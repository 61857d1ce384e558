"""Task registry: a task config -> deterministic train/dev/test splits of numeric-answer problems.

| task name                    | source                                   | file            |
|------------------------------|------------------------------------------|-----------------|
| `gsm8k`                      | local official JSONL, or hub openai/gsm8k | tasks/gsm8k.py  |
| `reasoning_gym:<generator>`  | the reasoning-gym package, seeded, offline | tasks/reasoning_gym.py |
| `file`                       | any JSONL/Parquet with configurable fields | tasks/file.py   |

Prompting and answer checking are shared by all tasks (cotgap_ray.prompts, cotgap_ray.answers). Every task's problems
are de-duplicated on a normalised question before they are split (tasks.splits), so no problem is in two splits;
Splits.duplicates_dropped counts the rows dropped.
"""

from __future__ import annotations

from cotgap_ray.errors import InputError
from cotgap_ray.tasks import file, gsm8k, reasoning_gym
from cotgap_ray.tasks.splits import SPLITS, RawProblem, Splits, make_splits, normalize_question

TASK_NAMES = ("gsm8k", "reasoning_gym:<generator>", "file")


def check_task_name(name: str) -> None:
    """Fail fast on a task name that no family handles (before any data is read)."""
    family, _, arg = name.partition(":")
    if family == "reasoning_gym" and arg:
        reasoning_gym.check_generator(arg)
    elif family not in ("gsm8k", "file") or arg:
        raise InputError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES)}")


def load_splits(cfg) -> Splits:
    """The splits of the task described by `cfg` (a config.TaskConfig); raises ValueError on bad data or sizes."""
    check_task_name(cfg.name)
    family, _, arg = cfg.name.partition(":")
    duplicates = 0  # dropped by the family itself, before the pools
    if family == "gsm8k":
        pools = gsm8k.load_pools(cfg)
    elif family == "file":
        pools = file.load_pools(cfg)
    else:
        pools, duplicates = reasoning_gym.load_pools(cfg, arg)
    return make_splits(cfg.name, pools, cfg.n_train, cfg.n_dev, cfg.n_test, cfg.seed, duplicates_dropped=duplicates)


__all__ = ["SPLITS", "RawProblem", "Splits", "check_task_name", "load_splits", "make_splits", "normalize_question"]
