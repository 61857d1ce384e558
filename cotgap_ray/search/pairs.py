"""Teacher-student pairs (issue 34): one run answers for several students (`students: [spec, ...]`).

    cotgap search --config experiments/smoke.yaml students='[tiny:llama@1, tiny:llama@3]' search.trials=8

Each student gets a complete single-student run of its own (search/run.py, unchanged), under the parent run
directory, and the parent holds the matrix:

    runs/<name>/config.json                  the whole config, students and all (a directory holds one experiment)
    runs/<name>/students/<student name>/     one student's run: baseline, proxies, search, confirmation, report
    runs/<name>/report.json, report.md, ...  the students x teachers matrix (pairs report), when every student is done

Rationales are generated once: the rationale cache is content-addressed by teacher, task, problems and decoding,
never by the student, so every student after the first finds each teacher's shards cached (the proxies that need the
student, its NLL of the rationales, are the student's own). The budget is the run's: search.trials is split equally
among the students, a remainder unspent, and each student's share equally among its searched teachers
(search/tuning.py, equal budgets), so no cell of the matrix wins by having more trials; a teacher the proxies rule
out for a student (search/usable.py, search/allocation.py) gets no trial in that student's row. Students run side by
side as the cluster holds them, each on its share (search/side_by_side.py, search/student_process.py: every teacher's
rationales generated first, then a driver process per student), else one after another in one driver (a laptop);
search/run.py, run_students. `--resume` continues each student where it stopped; a finished student redoes nothing.
This module decides and checks (no Ray); run.py runs.
"""

from __future__ import annotations

from dataclasses import replace

from cotgap_ray.config import ConfigError, ExperimentConfig


def student_names(cfg: ExperimentConfig) -> list[str]:
    """Each student's short name (its directory under students/ and its row in the matrix), in config order."""
    from cotgap_ray.models import spec_name

    return [spec_name(spec) for spec in cfg.students]


def check_students(cfg: ExperimentConfig) -> None:
    """Refuse a students list that cannot run, naming where it was set, before anything starts: an empty or repeated
    spec, two specs with one name (their runs would share a directory), a `student` the list leaves out (it would be
    ignored), and a budget that cannot give every student each teacher once."""
    if not cfg.students:
        return
    where = cfg.source("students")
    if not all(isinstance(spec, str) and spec.strip() for spec in cfg.students):
        raise ConfigError(f"{where}: students must be a list of model specs (strings), got {cfg.students!r}")
    if len(set(cfg.students)) != len(cfg.students):
        raise ConfigError(f"{where}: a student is listed twice: {cfg.students}")
    if (given := cfg.given("student")) and cfg.student not in cfg.students:
        # students replaces student; one set to a model the list leaves out would be silently ignored
        raise ConfigError(f"{given}: student {cfg.student!r} is set, but students ({where}) does not list it; a run "
                          f"has either one student or a list of them: add it to students, or drop `student`")
    try:
        names = student_names(cfg)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
    for name in names:
        if names.count(name) > 1:
            same = [s for s, n in zip(cfg.students, names) if n == name]
            raise ConfigError(f"{where}: {' and '.join(same)} share the name {name!r}, which names their run "
                              f"directory and matrix row; keep one of them")
    if cfg.search.strategy != "grid" and cfg.search.trials // len(cfg.students) < len(cfg.teachers):
        need = len(cfg.students) * len(cfg.teachers)
        raise ConfigError(f"{cfg.source('search.trials')}: search.trials={cfg.search.trials} is split equally among "
                          f"the {len(cfg.students)} students ({cfg.search.trials // len(cfg.students)} each), fewer "
                          f"than the {len(cfg.teachers)} teachers every student must try once; raise search.trials "
                          f"to >= {need}")


def one_student_only(cfg: ExperimentConfig, verb: str, flag: str | None = None) -> None:
    """A command that works on one student refuses a config with `students` (it would silently use `student`)."""
    if cfg.students:
        fix = f"give {flag}, or " if flag else ""
        raise ConfigError(f"{cfg.source('students')}: students lists {len(cfg.students)} students, and `cotgap "
                          f"{verb}` works on one: {fix}override students=[] student=<one of them>")


def student_configs(cfg: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """(name, that student's single-student config) per student, in order: the same experiment with `student` set,
    `students` empty and its share of search.trials (the whole budget divided equally, the remainder unspent; a grid
    runs its every point per student). Its fingerprint is that of the same single-student run."""
    share = cfg.search.trials // len(cfg.students)
    out = []
    for name, spec in zip(student_names(cfg), cfg.students):
        one = replace(cfg, student=spec, students=[], search=replace(cfg.search, trials=max(1, share)))
        if "_sources" in cfg.__dict__:  # where each value was set: errors inside a student's run still name it
            one.__dict__["_sources"] = cfg.__dict__["_sources"]
        out.append((name, one))
    return out
