"""training/threads.py: how many torch threads a fine-tune's workers get (pure; the Ray path is in test_finetune)."""

import pytest

from cotgap_ray.config import TrainConfig, load_config
from cotgap_ray.training.threads import WHOLE_NODE, apply_threads, describe_threads, worker_threads


def test_a_cpu_worker_training_alone_takes_its_node():
    assert worker_threads(TrainConfig(), at_once=1) == WHOLE_NODE


@pytest.mark.parametrize("train, at_once", [
    (TrainConfig(), 2),                # several trials at once: each keeps the CPUs Ray gave it
    (TrainConfig(num_workers=2), 1),   # DDP workers share a node's CPUs by Ray's count
    (TrainConfig(use_gpu=True), 1),    # a GPU worker's compute is the GPU's
])
def test_ray_keeps_its_count_where_work_shares_the_cpus(train, at_once):
    assert worker_threads(train, at_once) is None
    assert describe_threads(train, at_once) == ""


def test_a_set_thread_count_is_pinned_everywhere():
    assert worker_threads(TrainConfig(threads=3), at_once=8) == 3
    assert worker_threads(TrainConfig(threads=3, use_gpu=True), at_once=1) == 3
    assert describe_threads(TrainConfig(threads=3), 8) == ", 3 torch threads per worker (train.threads)"
    assert "every CPU of its node" in describe_threads(TrainConfig(), 1)


def test_threads_must_be_positive_and_name_the_key():
    with pytest.raises(ValueError, match="train settings: threads=0"):
        TrainConfig(threads=0)


def test_threads_leave_the_experiment_fingerprint_alone():
    # how many threads train a model is how fast, not what: a run resumes under another setting
    base, pinned = load_config(None), load_config(None, ["train.threads=2"])
    assert pinned.train.threads == 2 and pinned.fingerprint() == base.fingerprint()


def test_apply_threads_sets_torch_and_none_leaves_it():
    import torch

    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 == torch.get_num_threads()
        assert apply_threads(None) == 1  # Ray's OMP_NUM_THREADS stands
    finally:
        torch.set_num_threads(before)
