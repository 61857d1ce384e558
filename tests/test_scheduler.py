"""LikeWithLikeASHA on literal trials (no Ray cluster: the scheduler is driven directly, as Tune would)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cotgap_ray.search.scheduler import LikeWithLikeASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)


def _result(epoch: int, dev_delta: float, status: str = "ok") -> dict:
    return {"training_iteration": max(epoch, 1), "epoch": epoch, "dev_delta": dev_delta, "status": status}


def _drive(scheduler) -> str:
    """Four 1-epoch trials finish at +0.10..+0.40 (schedule done), then a 3-epoch trial reports its epoch 1 at 0.0
    (mid-schedule). Returns the scheduler's decision for that epoch-1 result."""
    for i, delta in enumerate((0.1, 0.2, 0.3, 0.4)):
        trial = FakeTrial(f"one{i}", {"lora.epochs": 1})
        scheduler.on_trial_add(None, trial)
        scheduler.on_trial_result(None, trial, _result(1, delta))
        scheduler.on_trial_complete(None, trial, _result(1, delta))
    long = FakeTrial("three", {"lora.epochs": 3})
    scheduler.on_trial_add(None, long)
    return scheduler.on_trial_result(None, long, _result(1, 0.0))


def test_a_trial_is_judged_only_against_trials_of_its_own_schedule():
    # One ASHA over everything stops the 3-epoch trial at epoch 1 against finished 1-epoch trials...
    plain = ASHAScheduler(time_attr="training_iteration", metric="dev_delta", mode="max", max_t=3, grace_period=1,
                          reduction_factor=2)
    assert _drive(plain) == STOP
    # ...like with like it is the first 3-epoch trial at epoch 1: nothing to compare with yet, it goes on.
    assert _drive(LikeWithLikeASHA("dev_delta", "max", grace_period=1, reduction_factor=2)) == CONTINUE


def test_same_schedule_trials_are_still_cut():
    scheduler = LikeWithLikeASHA("dev_delta", "max", grace_period=1, reduction_factor=2)
    decisions = []
    for i, delta in enumerate((0.4, 0.3, 0.2, 0.1, 0.0)):
        trial = FakeTrial(f"t{i}", {"lora.epochs": 2})
        scheduler.on_trial_add(None, trial)
        decisions.append(scheduler.on_trial_result(None, trial, _result(1, delta)))
    assert decisions[0] == CONTINUE and decisions[-1] == STOP  # the worst 2-epoch trial at epoch 1 is stopped


def test_no_data_trials_never_enter_a_rung():
    scheduler = LikeWithLikeASHA("dev_delta", "max", grace_period=1, reduction_factor=2)
    for i in range(6):  # six trials whose filters kept nothing report Tune's objective of -1
        trial = FakeTrial(f"empty{i}", {"lora.epochs": 2})
        scheduler.on_trial_add(None, trial)
        assert scheduler.on_trial_result(None, trial, _result(0, -1.0, "no_data")) == CONTINUE
        scheduler.on_trial_complete(None, trial, _result(0, -1.0, "no_data"))
    (rung,) = [r for r in scheduler.groups[2]._brackets[0]._rungs if r[0] == 1]
    assert rung[1] == {}  # nothing recorded at epoch 1: the -1s did not lower the cut
    real = FakeTrial("real", {"lora.epochs": 2})
    scheduler.on_trial_add(None, real)
    assert scheduler.on_trial_result(None, real, _result(1, -0.5)) == CONTINUE  # judged on real results only
