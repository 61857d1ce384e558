"""GSM8K: grade-school math word problems (MIT). Official train (7,473) and test (1,319) sets; gold after '####'.

Loaded from a local directory holding train.jsonl and test.jsonl in the official format (task.path), or from the hub
dataset `openai/gsm8k` (its Parquet files, no `datasets` dependency) when no path is given and the hub is reachable.
Dev is carved out of the official train set; test comes from the official test set only. A train question that repeats
a test question (normalised, tasks.splits) is dropped from train; the official files hold none.
"""

from __future__ import annotations

from pathlib import Path

from cotgap_ray.errors import InputError
from cotgap_ray.tasks.file import to_raw_problems
from cotgap_ray.tasks.splits import RawProblem

HUB_ID = "openai/gsm8k"
HUB_FILES = {"train": "main/train-00000-of-00001.parquet", "test": "main/test-00000-of-00001.parquet"}


def _hub_file(split: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(HUB_ID, HUB_FILES[split], repo_type="dataset"))
    except Exception as e:  # offline, no cache, hub error: all mean "give me a local path"
        raise InputError(
            f"gsm8k: could not get {HUB_ID} ({type(e).__name__}: {e}). Offline? Set task.path to a directory "
            "with train.jsonl and test.jsonl in the official format."
        ) from e


def load_pools(cfg) -> dict[str, list[RawProblem]]:
    paths = {}
    for split in ("train", "test"):
        paths[split] = Path(cfg.path).expanduser() / f"{split}.jsonl" if cfg.path else _hub_file(split)
    # The official test set is the test pool; dev and train are cut from the official train set.
    return {
        "test": to_raw_problems(paths["test"], "gsm8k:test", "question", "answer"),
        "rest": to_raw_problems(paths["train"], "gsm8k:train", "question", "answer"),
    }
