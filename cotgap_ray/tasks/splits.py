"""Deterministic train/dev/test splits with fingerprints.

A task family yields *pools* of raw problems keyed by split name, plus "rest": a split with a pool of its own draws
from it (an official test set, say); the others are cut from "rest", test first, then dev, then train. Every pool is
ordered by a seeded hash of the problem id, so a problem's split does not depend on file order, and test does not
move when n_train or n_dev change:

    pools {"rest": [p0..p999]}, n_test=100, n_dev=100, n_train=None
      -> test = first 100 in hash order, dev = next 100, train = the remaining 800
    pools {"test": [...1319], "rest": [...7473]}          (GSM8K)
      -> test from the official test set; dev, then train, from the official train set

Before any cut, problems are de-duplicated on a normalised question (`RawProblem.key`: the family's own key when it
has one, e.g. reasoning_gym's arithmetic expression, else `normalize_question(question)`), so no problem can sit in
two splits in two spellings. Pools are visited in the order test, dev, train, rest, each in its seeded hash order;
the first copy of a key is kept and every later one dropped. A pool of its own therefore wins over "rest" (GSM8K's
official test question stays in test; its copy in the train file goes), and which copy survives inside a pool does
not depend on file order. `Splits.duplicates_dropped` counts the dropped rows (a note is printed when it is not 0).
When nothing is dropped the splits, and so their fingerprints, are exactly what they were without the step.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from dataclasses import dataclass

from cotgap_ray.errors import InputError
from cotgap_ray.records import Problem

SPLITS = ("train", "dev", "test")


def normalize_question(question: str) -> str:
    """The de-duplication key of a question: NFKC, casefolded, whitespace collapsed, no space next to punctuation or
    an operator, no trailing . ? ! -- so spelling variants of one problem share a key:

        "What is 3+4?"  "what is 3 + 4"  "WHAT  IS 3 +4 ?"   -> "what is 3+4"
        "What is 3 4?"                                      -> "what is 3 4"   (a space between two words stays)
    """
    text = " ".join(unicodedata.normalize("NFKC", question).casefold().split())
    text = re.sub(r" ?([^\w\s]) ?", r"\1", text)
    return text.rstrip(".?!")


@dataclass(frozen=True)
class RawProblem:
    id: str
    question: str
    answer: str  # normalized gold
    key: str = ""  # de-duplication key; "" means normalize_question(question)
    solution: str = ""  # the reference solution without its answer line, "" when the task has none (controls.py)

    @property
    def dedupe_key(self) -> str:
        return self.key or normalize_question(self.question)


@dataclass(frozen=True)
class Splits:
    task: str
    train: list[Problem]
    dev: list[Problem]
    test: list[Problem]
    duplicates_dropped: int = 0  # rows dropped because their normalised question was already taken (not hashed)

    def __getitem__(self, split: str) -> list[Problem]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return getattr(self, split)

    def fingerprint(self, split: str | None = None) -> str:
        """sha256 over the task name and the (id, question, answer) of each problem of one split, or of all three."""
        h = hashlib.sha256(self.task.encode())
        for name in [split] if split else SPLITS:
            h.update(f"\x1e{name}".encode())
            for p in self[name]:
                h.update(f"\x1f{p.id}\x1f{p.question}\x1f{p.answer}".encode())
        return h.hexdigest()[:16]

    def sizes(self) -> dict[str, int]:
        return {name: len(self[name]) for name in SPLITS}


def _order(items: list[RawProblem], seed: int) -> list[RawProblem]:
    return sorted(items, key=lambda p: hashlib.sha256(f"{seed}\x1f{p.id}".encode()).digest())


def _take(pool: list[RawProblem], n: int | None, what: str, task: str) -> tuple[list[RawProblem], list[RawProblem]]:
    if n is None:
        return pool, []
    if n > len(pool):
        raise InputError(
            f"task {task}: asked for {n} {what} problems but only {len(pool)} are available; lower task.n_{what}"
        )
    return pool[:n], pool[n:]


def dedupe_pools(pools: dict[str, list[RawProblem]], seed: int) -> tuple[dict[str, list[RawProblem]], int]:
    """Each pool in seeded hash order, without the rows whose dedupe_key an earlier row took (pools visited test,
    dev, train, rest, then any other), and the number of rows dropped."""
    order = [n for n in (*SPLITS[::-1], "rest") if n in pools] + [n for n in pools if n not in (*SPLITS, "rest")]
    seen, out, dropped = set(), {}, 0
    for name in order:
        out[name] = []
        for p in _order(pools[name], seed):
            if p.dedupe_key in seen:
                dropped += 1
            else:
                seen.add(p.dedupe_key)
                out[name].append(p)
    return out, dropped


def make_splits(
    task: str, pools: dict[str, list[RawProblem]], n_train: int | None, n_dev: int, n_test: int, seed: int,
    duplicates_dropped: int = 0,
) -> Splits:
    """`duplicates_dropped`: rows the task family already dropped as duplicates (reasoning_gym, while generating);
    added to what de-duplicating the pools drops here, in Splits.duplicates_dropped."""
    ids = [p.id for pool in pools.values() for p in pool]
    if len(ids) != len(set(ids)):
        raise InputError(f"task {task}: problem ids are not unique; set task.id_field to a unique column")
    pools, dropped = dedupe_pools(pools, seed)
    dropped += duplicates_dropped
    if dropped:
        print(f"note: task {task}: {dropped} duplicate problem(s) dropped (same normalised question as a problem "
              f"kept), so no problem sits in two splits", file=sys.stderr)
    rest = pools.get("rest", [])
    out = {}
    for name, n in (("test", n_test), ("dev", n_dev), ("train", n_train)):
        if name in pools:
            items, _ = _take(pools[name], n, name, task)
        else:
            items, rest = _take(rest, n, name, task)
        if not items:
            raise InputError(f"task {task}: the {name} split is empty; check task.n_{name} and the data source")
        out[name] = [Problem(id=p.id, question=p.question, answer=p.answer, split=name, solution=p.solution) for p in items]
    return Splits(task=task, **out, duplicates_dropped=dropped)
