"""reasoning_gym:<generator>: offline, seeded procedural problems from the `reasoning-gym` package.

    reasoning_gym:basic_arithmetic, seed 0 -> {"question": "Calculate 5 - 3 - 6.", "answer": "-4"} -> RawProblem(..., "-4")

Only generators with numeric answers fit cotgap_ray's answer checking; a non-numeric gold answer is an error naming the
generator and the item. Duplicate questions are dropped (small generators repeat themselves) so that no question can sit
in both train and test.
"""

from __future__ import annotations

import difflib

from cotgap_ray.answers import parse_gold
from cotgap_ray.errors import InputError
from cotgap_ray.tasks.splits import RawProblem

# Procedural generators repeat questions; generate this much more than asked, then drop duplicates.
_OVERSAMPLE = 1.5


def check_generator(name: str) -> None:
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"reasoning_gym has no generator {name!r}.{hint} (it has {len(DATASETS)}; see reasoning_gym.factory.DATASETS)")


def load_pools(cfg, generator: str) -> dict[str, list[RawProblem]]:
    import reasoning_gym

    check_generator(generator)
    if cfg.n_train is None:
        raise InputError(f"task reasoning_gym:{generator} is unbounded: set task.n_train to a number")
    wanted = cfg.n_train + cfg.n_dev + cfg.n_test
    try:
        dataset = reasoning_gym.create_dataset(
            generator, size=int(wanted * _OVERSAMPLE) + 10, seed=cfg.seed, **cfg.generator_args
        )
    except TypeError as e:
        raise InputError(f"task.generator_args for reasoning_gym:{generator}: {e}") from e
    seen, problems = set(), []
    for index, item in enumerate(dataset):
        if item["question"] in seen:
            continue
        seen.add(item["question"])
        try:
            gold = parse_gold(item["answer"])
        except ValueError as e:
            raise InputError(
                f"reasoning_gym:{generator} item {index}: {e}; choose a generator with numeric answers"
            ) from e
        problems.append(RawProblem(id=f"rg:{generator}:{cfg.seed}:{index}", question=item["question"], answer=gold))
    if len(problems) < wanted:
        raise InputError(
            f"reasoning_gym:{generator} produced only {len(problems)} distinct questions for {wanted} asked; "
            "lower task sizes or widen task.generator_args"
        )
    # Generation order is seeded and item i does not depend on the size asked for, so cutting test first, then dev,
    # keeps the test split fixed when n_train or n_dev change.
    return {
        "test": problems[: cfg.n_test],
        "dev": problems[cfg.n_test : cfg.n_test + cfg.n_dev],
        "train": problems[cfg.n_test + cfg.n_dev : wanted],
    }
