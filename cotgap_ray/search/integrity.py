"""A run directory checked before a search (re)uses it: damaged files are set aside and rebuilt, or refused by name.

    notes = check_run_dir(run_dir)     # before any model loads; RecordError names a file that cannot be rebuilt

What each file is, and what a damaged copy gets:
  trials/<key>/trial.json  the only record of what a finished trial measured -> refused, naming the file (restore it,
                           or move the run's trials aside and start a new --out: the caches keep the rest cheap)
  final/<teacher>.json     derived (a confirmation) -> set aside, the confirmation runs again
  optuna.journal           the study (optuna.db in runs from before it); every finished trial is also in trials/ ->
                           the study file and Tune's experiment
                           (tune/, whose searcher points at that study) are set aside; the search then starts a new
                           study and each finished point is replayed from its record, not retrained (search/trial.py)
  proxies.json, noise.json, evals.json, baseline.json, status.json
                           derived or append-only logs -> set aside and recomputed (noise/evals start a new log)
Set aside means renamed to `<name>.corrupt-<unix time>` beside the original, never deleted: a person can inspect it.
Caches outside the run directory check themselves (rationale shards: sha256 in the manifest; models: sha256 in
theirs; evaluation rows: schema and row count).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from cotgap_ray.records import FinalRecord, RecordError, TrialRecord, record_from_dict

DERIVED = ("proxies.json", "noise.json", "evals.json", "baseline.json", "status.json")


def set_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(target)
    return target


def _json(path: Path):
    return json.loads(path.read_text())


def study_ok(db: Path) -> bool:
    """An SQLite file that opens and passes quick_check (a truncated or overwritten file fails one or the other)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


def journal_ok(path: Path) -> bool:
    """An Optuna journal whose every line is a JSON operation (a truncated or overwritten file fails)."""
    try:
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    json.loads(line)
        return True
    except (OSError, ValueError):
        return False


def check_run_dir(run_dir: Path) -> list[str]:
    """Check every file a resumed search would read; returns what was set aside (one line each, printed too)."""
    notes = []
    for path in sorted((run_dir / "trials").glob("*/trial.json")):
        try:
            record_from_dict(TrialRecord, _json(path), str(path))
        except (ValueError, RecordError) as e:
            raise RecordError(
                f"{path}: unreadable trial record ({str(e)[:200]}). It is the only record of what this trial "
                f"measured, so it is not rebuilt: restore it from a copy, or start the search in a new --out "
                f"(the rationale, model and baseline caches make everything but the trials free)") from None
    for path in sorted((run_dir / "final").glob("*.json")):
        try:
            record_from_dict(FinalRecord, _json(path), str(path))
        except (ValueError, RecordError):
            notes.append(f"{path} was unreadable: set aside as {set_aside(path).name}; that teacher is confirmed again")
    for name in DERIVED:
        path = run_dir / name
        if path.exists():
            try:
                _json(path)
            except ValueError:
                notes.append(f"{path} was unreadable: set aside as {set_aside(path).name}; recomputed by this run")
    for name, ok, what in (("optuna.db", study_ok, "SQLite study"), ("optuna.journal", journal_ok, "Optuna journal")):
        db = run_dir / name
        if db.exists() and not ok(db):
            aside = set_aside(db)
            tune = run_dir / "tune"
            moved = f" and {set_aside(tune).name}" if tune.exists() else ""
            notes.append(f"{db} is not a readable {what}: set aside as {aside.name}{moved}; a new study replays "
                         f"the finished trials from trials/*/trial.json without retraining them")
    for note in notes:
        print(f"warning: {note}")
    return notes
