"""Deterministic train/dev/test splits with fingerprints.

A task family yields *pools* of raw problems keyed by split name, plus "rest": a split with a pool of its own draws
from it (an official test set, say); the others are cut from "rest", test first, then dev, then train. Every pool is
ordered by a seeded hash of the problem id, so a problem's split does not depend on file order, and test does not
move when n_train or n_dev change:

    pools {"rest": [p0..p999]}, n_test=100, n_dev=100, n_train=None
      -> test = first 100 in hash order, dev = next 100, train = the remaining 800
    pools {"test": [...1319], "rest": [...7473]}          (GSM8K)
      -> test from the official test set; dev, then train, from the official train set
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cotgap_ray.errors import InputError
from cotgap_ray.records import Problem

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class RawProblem:
    id: str
    question: str
    answer: str  # normalized gold


@dataclass(frozen=True)
class Splits:
    task: str
    train: list[Problem]
    dev: list[Problem]
    test: list[Problem]

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


def make_splits(
    task: str, pools: dict[str, list[RawProblem]], n_train: int | None, n_dev: int, n_test: int, seed: int
) -> Splits:
    ids = [p.id for pool in pools.values() for p in pool]
    if len(ids) != len(set(ids)):
        raise InputError(f"task {task}: problem ids are not unique; set task.id_field to a unique column")
    rest = _order(pools.get("rest", []), seed)
    out = {}
    for name, n in (("test", n_test), ("dev", n_dev), ("train", n_train)):
        if name in pools:
            items, _ = _take(_order(pools[name], seed), n, name, task)
        else:
            items, rest = _take(rest, n, name, task)
        if not items:
            raise InputError(f"task {task}: the {name} split is empty; check task.n_{name} and the data source")
        out[name] = [Problem(id=p.id, question=p.question, answer=p.answer, split=name) for p in items]
    return Splits(task=task, **out)
