"""The one fine-tune step of the product: a typed experiment config, a filtered rationale table and LoRA settings in,
a trained adapter out. The trial runner (training/trial_runner.py) calls it for the search's trials, its
confirmation and `python -m cotgap_ray.distill`, so every one of them gets the same workers, placement
(train.accelerator_type / train.resources), dtype and model resolution on remote nodes.

    with rationale_file(table) as rationales:
        result = fine_tune(cfg, student, rationales, problems, settings, storage_path=..., name="t3f9c0a12b4")
    result.adapter_dir, result.metrics_per_epoch, result.n_examples

Scoring is the runner's: after every epoch (`eval_fn`, on Train rank 0) for a search trial, the finished adapter
for the confirmation and distill; both paired with the baseline and compared there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cotgap_ray.config import ExperimentConfig, LoraSettings


@contextmanager
def rationale_file(table, directory: str | Path | None = None) -> Iterator[str]:
    """`table` as a Parquet file the Train workers read: in `directory` when given (kept, e.g. a distill run's
    record of what it trained on), else in a temporary directory removed afterwards."""
    import pyarrow.parquet as pq

    if directory is not None:
        path = Path(directory) / "rationales.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="cotgap-rationales-") as workdir:
        path = Path(workdir) / "rationales.parquet"
        pq.write_table(table, path)
        yield str(path)


def fine_tune(cfg: ExperimentConfig, student, rationales_path: str, problems: dict[str, str],
              settings: LoraSettings, *, storage_path: str, name: str, eval_fn=None, callbacks=None,
              stop_after: int | None = None, at_once: int = 1):
    """LoRA fine-tune of `student` (a models.ResolvedModel) with the config's train section; returns
    training.loop.TrainResult. Raises NoTrainingData before Ray starts when no rationale makes an example.
    `stop_after`: end after that many epochs of the schedule planned for settings.epochs (a trial ASHA stopped).
    `at_once`: the fine-tunes of this run that may train at the same time (the search's trials at once; 1 for a
    confirmation seed or distill): with one, a CPU worker trains on every CPU of its node (training/threads.py)."""
    from cotgap_ray.models.remote import models_dir_setting
    from cotgap_ray.training.ray_train import train_student
    from cotgap_ray.training.threads import worker_threads

    train = cfg.train
    return train_student(student.path, rationales_path, problems, settings, storage_path=storage_path, name=name,
                         num_workers=train.num_workers, use_gpu=train.use_gpu, cpus_per_worker=train.cpus_per_worker,
                         accelerator_type=train.accelerator_type, resources=train.resources,
                         student_spec=student.spec, models_dir=models_dir_setting(cfg), dtype=train.dtype,
                         eval_fn=eval_fn, callbacks=callbacks, stop_after=stop_after,
                         threads=worker_threads(train, at_once))
