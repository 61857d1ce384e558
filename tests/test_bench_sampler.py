"""benchmarks/sampler_ceiling.py: the ceiling arithmetic, and that every sampler it times picks valid tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sampler_ceiling as bench  # noqa: E402  (benchmarks/sampler_ceiling.py, a script)


def test_ceiling_adds_the_sampler_to_a_step_at_the_bound():
    # 320 sequences at a bound of 3200 tok/s: 100 ms of matmuls a step; a 100 ms sampler halves the rate.
    assert bench.ceiling(3200.0, 320, 0.1) == pytest.approx((1600.0, 50.0))
    assert bench.ceiling(3200.0, 320, 0.0) == pytest.approx((3200.0, 100.0))
    # 300 ms of sampling on a 100 ms step: a quarter of the bound
    assert bench.ceiling(3200.0, 320, 0.3)[1] == pytest.approx(25.0)


def test_every_sampler_picks_one_valid_token_a_row():
    import torch

    calls = bench.samplers(bench.random_logits(4, 1000, seed=3), temperature=0.7, seed=3)
    assert {"inverse-cdf", "greedy"} <= set(calls)
    for name, call in calls.items():
        tokens = call().reshape(-1)
        assert tokens.shape == (4,), name
        assert tokens.dtype == torch.long and int(tokens.min()) >= 0 and int(tokens.max()) < 1000, name


def test_samplers_follow_the_distribution():
    """Row r puts a logit of 9 on token 10 * r + 1 over unit-normal others (1000 tokens): at temperature 1 that token
    holds ~83% of the probability, at 0.5 all but ~1e-4 of it. Over 64 fresh seeds (512 draws) every sampler must
    pick it at least 70% / 99% of the time (6 standard errors of slack at temperature 1); a sampler that ignores the
    logits (a cdf searched on the wrong side, noise that swamps them) picks it ~0.1% of the time."""
    import torch

    batch, vocab = 8, 1000
    logits = bench.random_logits(batch, vocab, seed=5).float()
    hot = torch.arange(batch) * 10 + 1
    logits[torch.arange(batch), hot] = 9.0
    logits = logits.to(torch.bfloat16)
    for temperature, at_least in ((1.0, 0.7), (0.5, 0.99)):
        picks = {}
        for seed in range(64):
            for name, call in bench.samplers(logits, temperature, seed=1000 * seed).items():
                picks.setdefault(name, []).append(call().reshape(-1))
        for name, rows in picks.items():
            share = (torch.stack(rows) == hot).float().mean().item()
            expect = 1.0 if name == "greedy" else at_least
            assert share >= expect, (name, temperature, share)


def test_time_it_is_the_median_of_the_repeats(monkeypatch):
    ticks = iter([0.0, 1.0, 10.0, 12.0, 20.0, 25.0])  # call times 1, 2, 5 s after the warm-up
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    calls = []
    assert bench.time_it(lambda: calls.append(1), repeats=3) == 2.0
    assert len(calls) == 4  # the warm-up and 3 timed calls
