"""ASHA that compares like with like: one ASHA per planned epoch count, and trials without data kept out of rungs.

Why: `lora.epochs` is both a search dimension and ASHA's time attribute, and the learning-rate schedule decays over
the *planned* epochs. One ASHA over every trial would judge a 2-epoch trial at epoch 1 (mid-schedule, learning rate
still high) against finished 1-epoch trials (schedule done): unequal things. Here a trial is compared only with
trials of the same planned epoch count, at the same epoch, i.e. at the same point of the same schedule:

    epochs 1 -> its own ASHA (max_t 1: nothing to stop early)
    epochs 3 -> its own ASHA (rungs at epoch 1, 2: a 3-epoch trial is stopped only by other 3-epoch trials)

A trial whose filters kept nothing (status "no_data") reports Tune's objective of -1 so the searcher steers away;
that number is not a dev result and never enters a rung (it would lower every cut). Module level: Tune pickles the
scheduler into its experiment checkpoint (--resume).
"""

from __future__ import annotations

import pickle

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from cotgap_ray.private_api import asha_trial_ids


class LikeWithLikeASHA(FIFOScheduler):
    """See the module docstring. `metric` / `mode` as ASHAScheduler's; each group's max_t is its epoch count."""

    def __init__(self, metric: str, mode: str, grace_period: int = 1, reduction_factor: float = 2):
        super().__init__()
        super().set_search_properties(metric, mode)  # Tune reads it back through the `metric` property
        self._mode = mode
        self.grace_period, self.reduction_factor = grace_period, reduction_factor
        self.groups: dict[int, ASHAScheduler] = {}  # planned epochs -> its ASHA
        self.group_of: dict[str, int] = {}  # Tune trial id -> planned epochs

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return not (metric and metric != self.metric) and not (mode and mode != self._mode)

    def _group(self, trial) -> ASHAScheduler:
        epochs = int(trial.config["lora.epochs"])
        self.group_of[trial.trial_id] = epochs
        if epochs not in self.groups:
            self.groups[epochs] = ASHAScheduler(time_attr="training_iteration", metric=self.metric, mode=self._mode,
                                                max_t=epochs, grace_period=min(self.grace_period, epochs),
                                                reduction_factor=self.reduction_factor)
        return self.groups[epochs]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._group(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("status") == "no_data":
            return TrialScheduler.CONTINUE  # the trial ends by itself; its -1 is not a dev result
        return self.groups[self.group_of[trial.trial_id]].on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        group = self.groups[self.group_of.pop(trial.trial_id)]
        if result and result.get("status") == "no_data":
            group.on_trial_remove(tune_controller, trial)
            return
        group.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._forget(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._forget(tune_controller, trial)

    def _forget(self, tune_controller, trial) -> None:
        epochs = self.group_of.pop(trial.trial_id, None)
        if epochs is not None and trial.trial_id in asha_trial_ids(self.groups[epochs]):
            self.groups[epochs].on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{e} epochs: {g.debug_string()}" for e, g in sorted(self.groups.items())) or "no trials"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
