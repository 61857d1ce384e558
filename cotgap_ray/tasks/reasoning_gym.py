"""reasoning_gym:<generator>: offline, seeded procedural problems from the `reasoning-gym` package.

    reasoning_gym:basic_arithmetic, seed 0 -> {"question": "Calculate 5 - 3 - 6.", "answer": "-4"} -> RawProblem(..., "-4")

Only generators with numeric answers fit cotgap_ray's answer checking; a non-numeric gold answer is an error naming the
generator and the item. Duplicate problems are dropped while generating (small generators repeat themselves), so that no
problem can sit in both train and test. A duplicate is a repeat of the de-duplication key: for the arithmetic generators
whose question is a template around `metadata["expression"]` (EXPRESSION_KEYED), the expression without whitespace, so
"What is 5 - 3?" and "Solve 5-3." (format_style natural, whitespace random) are one problem; for every other generator
the normalised question (splits.normalize_question). The count of repeats met before the sizes asked for were reached
is Splits.duplicates_dropped.
"""

from __future__ import annotations

import difflib

from cotgap_ray.answers import parse_gold
from cotgap_ray.errors import InputError
from cotgap_ray.tasks.splits import RawProblem, normalize_question

# Procedural generators repeat questions; generate this much more than asked, then drop duplicates.
_OVERSAMPLE = 1.5

# reasoning_gym draws item i of a dataset seeded s from Random(s + i) (most generators), so seed s + 1 is seed s
# shifted by one item: task.seed 0 and 1 shared 199 of their 200 test problems, and "another seed" of a run was the
# same problems again. Each task seed gets a block of SEED_STRIDE items of its own instead; seed 0 keeps its problems
# (block 0), so every seed-0 split, and its fingerprint, is what it was.
SEED_STRIDE = 2**20


def generator_seed(task_seed: int) -> int:
    """The reasoning_gym seed of task.seed: the first item of its own block. generator_seed(1) -> 1048576."""
    return task_seed * SEED_STRIDE

# Generators whose whole problem is metadata["expression"] (the question is a fixed or random template around it, the
# answer its value): checked in reasoning_gym 0.1.x. Not every generator's "expression" is the problem (circuit_logic's
# is the circuit, its inputs are elsewhere), hence a list rather than any item that has one.
EXPRESSION_KEYED = frozenset({"basic_arithmetic", "chain_sum", "decimal_chain_sum", "products"})


def dedupe_key(generator: str, item: dict) -> str:
    """What makes two items of `generator` the same problem (see the module docstring)."""
    expression = (item.get("metadata") or {}).get("expression") if generator in EXPRESSION_KEYED else None
    if isinstance(expression, str) and expression.strip():
        return "expression:" + "".join(expression.split())
    return normalize_question(item["question"])


def solution(generator: str, item: dict) -> str:
    """The exact steps of an arithmetic generator's expression (controls.arithmetic_steps), checked against the gold
    answer; "" for other generators, and for an expression the steps cannot reproduce (then no control teacher)."""
    expression = (item.get("metadata") or {}).get("expression") if generator in EXPRESSION_KEYED else None
    if not isinstance(expression, str):
        return ""
    from cotgap_ray.answers import is_correct, normalize
    from cotgap_ray.controls import arithmetic_steps

    try:
        steps = arithmetic_steps(expression)
    except ValueError:
        return ""
    last = steps.rsplit("= ", 1)[-1]
    return steps if is_correct(normalize(last), parse_gold(item["answer"], latex=False)) else ""


def check_generator(name: str) -> None:
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"reasoning_gym has no generator {name!r}.{hint} (it has {len(DATASETS)}; see reasoning_gym.factory.DATASETS)")


def load_pools(cfg, generator: str) -> tuple[dict[str, list[RawProblem]], int]:
    """The test, dev and train pools, and the number of duplicate items dropped before they were filled."""
    import reasoning_gym

    check_generator(generator)
    if cfg.n_train is None:
        raise InputError(f"task reasoning_gym:{generator} is unbounded: set task.n_train to a number")
    wanted = cfg.n_train + cfg.n_dev + cfg.n_test
    size = int(wanted * _OVERSAMPLE) + 10
    if size > SEED_STRIDE:  # the items would run into the next task seed's block
        raise InputError(f"task reasoning_gym:{generator}: {wanted} problems need {size} generated items, more than "
                         f"one task seed's {SEED_STRIDE}; lower task.n_train, n_dev or n_test")
    try:
        dataset = reasoning_gym.create_dataset(generator, size=size, seed=generator_seed(cfg.seed),
                                               **cfg.generator_args)
    except TypeError as e:
        raise InputError(f"task.generator_args for reasoning_gym:{generator}: {e}") from e
    seen, problems, duplicates = set(), [], 0
    for index, item in enumerate(dataset):
        if len(problems) == wanted:
            break  # later items are never used: their repeats are not counted
        key = dedupe_key(generator, item)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        try:
            # Numbers only: reasoning_gym writes other answers in its own syntax ("3*x**2"), not LaTeX.
            gold = parse_gold(item["answer"], latex=False)
        except ValueError as e:
            raise InputError(
                f"reasoning_gym:{generator} item {index}: {e}; choose a generator with numeric answers"
            ) from e
        problems.append(RawProblem(id=f"rg:{generator}:{cfg.seed}:{index}", question=item["question"], answer=gold,
                                   key=key, solution=solution(generator, item)))
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
    }, duplicates
