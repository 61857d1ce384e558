"""The run directory's own defences, without Ray or models: the lock that keeps a second search out of a run
directory (search/lock.py), the check that sets damaged derived files aside and refuses a damaged trial record by
name (search/integrity.py), and writes that fail on a full disk leave no half file and name the file."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from cotgap_ray.config import ConfigError
from cotgap_ray.errors import no_space_message, run_cli
from cotgap_ray.records import FinalRecord, RecordError, TrialRecord, record_to_dict, write_json
from cotgap_ray.search.integrity import check_run_dir, study_ok
from cotgap_ray.search.lock import hold_run_dir, release_run_dir

HOLD = """
import sys, time
from cotgap_ray.search.lock import hold_run_dir
hold_run_dir(sys.argv[1]); print("held", flush=True); time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_holder_and_the_lock_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by another search \(pid {holder.pid} on "):
            hold_run_dir(tmp_path)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock, no stale lock is left
        holder.wait()
    hold_run_dir(tmp_path)  # free again
    hold_run_dir(tmp_path)  # the same process again: a no-op
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    release_run_dir(tmp_path)


def _run_dir(tmp_path):
    run = tmp_path / "run"
    write_json(run / "trials" / "t1" / "trial.json", TrialRecord(trial_id="t1", teacher="a", status="ok"))
    write_json(run / "final" / "a.json", FinalRecord(teacher="a", spec="tiny:llama@1"))
    for name in ("proxies.json", "noise.json", "evals.json", "baseline.json", "status.json"):
        write_json(run / name, {} if name != "noise.json" else [])
    with sqlite3.connect(run / "optuna.db") as con:
        con.execute("create table t (x int)")
    (run / "tune").mkdir()
    return run


def test_an_intact_run_directory_passes_untouched(tmp_path):
    run = _run_dir(tmp_path)
    before = sorted(p.name for p in run.iterdir())
    assert check_run_dir(run) == [] and sorted(p.name for p in run.iterdir()) == before
    assert study_ok(run / "optuna.db")


def test_damaged_derived_files_and_study_are_set_aside_never_deleted(tmp_path, capsys):
    run = _run_dir(tmp_path)
    (run / "baseline.json").write_text('{"dev": {"accuracy": 0.')
    (run / "final" / "a.json").write_text("{")
    (run / "optuna.db").write_bytes(b"not a database" * 100)
    notes = check_run_dir(run)
    assert len(notes) == 3 and "warning:" in capsys.readouterr().out
    assert not (run / "baseline.json").exists() and len(list(run.glob("baseline.json.corrupt-*"))) == 1
    assert not (run / "final" / "a.json").exists() and list((run / "final").glob("a.json.corrupt-*"))
    assert not (run / "optuna.db").exists() and list(run.glob("optuna.db.corrupt-*"))
    assert not (run / "tune").exists() and list(run.glob("tune.corrupt-*"))  # its searcher points at that study
    assert (run / "trials" / "t1" / "trial.json").exists()


def test_a_damaged_trial_record_is_refused_by_name(tmp_path):
    run = _run_dir(tmp_path)
    trial = run / "trials" / "t1" / "trial.json"
    trial.write_text(json.dumps(record_to_dict(TrialRecord(trial_id="t1")))[:30])
    with pytest.raises(RecordError, match=str(trial)):
        check_run_dir(run)
    assert trial.exists()  # refused, not moved: it is the only record of that trial


def test_a_full_disk_leaves_no_half_file_and_names_the_file(tmp_path, monkeypatch):
    import pathlib

    target = tmp_path / "run" / "trial.json"

    def full(self, *args, **kwargs):
        pathlib.Path.__dict__["touch"](self)  # the file exists, half written, when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        write_json(target, {"a": 1})
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list((tmp_path / "run").iterdir()) == []
    assert str(target) in no_space_message(caught.value)


def test_cli_answers_a_full_disk_with_one_line_and_status_3(capsys):
    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "/cache/rationales/x/shard-00001.parquet")

    assert run_cli(main) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the device writing /cache/rationales/x/shard-00001.parquet")
    assert err.count("\n") == 1


def test_cache_write_atomic_on_a_full_disk(tmp_path, monkeypatch):
    from cotgap_ray.generation import cache

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        cache.write_atomic(tmp_path / "shard-00000.parquet", b"x" * 100)
    assert caught.value.filename == str(tmp_path / "shard-00000.parquet") and list(tmp_path.iterdir()) == []


def test_a_failed_trials_record_says_why_in_one_line(tmp_path):
    """Tune's error file ends with the exception Ray Train raised and, on the next line, its cause; the trial record
    and the warning the search prints carry both (the full disk case: the directory and ENOSPC), not Tune's
    generic "see the error file"."""
    from cotgap_ray.search.tuning import trial_error

    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Failure # 1 (occurred at 2026-12-02_02-22-35)\n"
        "ray.exceptions.RayTaskError(TrainingFailed): ray::ImplicitFunc.train() (pid=1, ip=192.0.2.2)\n"
        '  File "cotgap_ray/training/ray_train.py", line 100, in train_ray\n'
        "cotgap_ray.training.ray_train.TrainingFailed: LoRA training of /m on /r failed (run directory "
        "/full/train/t2a942aa748): Training failed due to controller error:\n"
        "[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device\n")

    class Trial:
        error_message = None

        def __init__(self, path):
            self.error_file = path

        def get_error(self):
            return None

    line = trial_error(Trial(str(error_file)))
    assert line.startswith("cotgap_ray.training.ray_train.TrainingFailed: LoRA training")
    assert "/full/train/t2a942aa748" in line and "No space left on device" in line and "\n" not in line
    assert trial_error(Trial(str(tmp_path / "missing.txt"))).startswith("no error text")


def test_a_retried_trial_starts_from_an_empty_training_directory(tmp_path, capsys):
    """A trial that failed (full disk, killed worker) and runs again under its name must not inherit the earlier
    attempt's Ray Train state: cut short, it made the TrainController fail in __init__ (found by the fault battery)."""
    from cotgap_ray.training.ray_train import clear_previous_attempt

    run_dir = tmp_path / "train" / "t2a942aa748"
    (run_dir / "checkpoint_manager_snapshot.json").parent.mkdir(parents=True)
    (run_dir / "checkpoint_manager_snapshot.json").write_text('{"chec')
    clear_previous_attempt(str(run_dir))
    assert not run_dir.exists() and "earlier attempt" in capsys.readouterr().out
    clear_previous_attempt(str(run_dir))  # nothing there: nothing to do
    assert capsys.readouterr().out == ""


def test_a_damaged_config_json_is_refused_by_name(tmp_path):
    """config.json binds the run directory to one experiment: unreadable, it cannot be matched, so it is refused
    (not overwritten) with the file named."""
    from cotgap_ray.config import load_config
    from cotgap_ray.search.run import prepare_run_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"fingerprint": "ab')
    with pytest.raises(ConfigError, match=str(run / "config.json")):
        prepare_run_dir(load_config(None, []), str(run), resume=True, teachers=[])
    assert (run / "config.json").read_text() == '{"fingerprint": "ab'
