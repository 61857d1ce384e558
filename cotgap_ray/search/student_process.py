"""Students side by side: each student of a pairs run searches in a driver process of its own, several at once on
one Ray cluster (search/side_by_side.py decides how many and each one's share).

    run_side_by_side([StudentJob(name, cfg, sub_dir, resume, validated), ...], share, run_dir, run)

Why processes: a student's run is a whole single-student search (search/run.py: Tune, its evaluation engines, the
confirmation), and Tune drives one experiment per driver. Each child joins the parent's cluster as a Ray job of its
own (the dashboard shows one job per student) in its own Ray namespace, so the named evaluation engines of two
students (evaluation/pool.py: cotgap-evaluator-<i>) never meet. Under `ray job submit` the child inherits the
submitted job's runtime environment from the driver's process environment (Ray merges it into the child's
ray.init: its working dir reaches the child's workers; passing it again is refused as a conflict). Every line a
child prints, its workers' forwarded logs included, starts with [student name]. A student that fails does not stop
the others; the parent then names it, and `--resume` continues it where it stopped (each student's run directory
resumes like a single run).
"""

from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from cotgap_ray.errors import RunFailure


@dataclass
class StudentJob:
    """One student's run, as run_students hands it over."""

    name: str
    config: object  # its single-student ExperimentConfig (search/pairs.student_configs)
    run_dir: Path
    resume: bool
    validated: tuple  # what run.validate returned for it: (splits, teacher refs)


class Prefixed(io.TextIOBase):
    """A text stream that starts every line written to it with `prefix` (several students share one terminal)."""

    def __init__(self, stream, prefix: str):
        self._stream, self._prefix, self._at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start:
                out.append(self._prefix)
            out.append(piece)
            self._at_line_start = piece.endswith(("\n", "\r"))
        self._stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self):
        return self._stream.encoding


def namespace(run_dir: Path, name: str) -> str:
    """The Ray namespace of one student's driver: its run and its name (two pairs runs on one cluster never share)."""
    return f"cotgap-{hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]}-{name}"


def student_main(address: str, ray_namespace: str, job: StudentJob, share, run) -> None:
    """A child process: join the cluster at `address`, run the student's search on its share with `run`
    (search/run.run, handed over by its caller, which this module does not import: no import cycle)."""
    sys.stdout, sys.stderr = Prefixed(sys.stdout, f"[{job.name}] "), Prefixed(sys.stderr, f"[{job.name}] ")
    import ray

    ray.init(address=address, namespace=ray_namespace)
    try:
        run(job.config, str(job.run_dir), resume=job.resume, validated=job.validated, share=share)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_side_by_side(jobs: list[StudentJob], share, run_dir: Path, run) -> None:
    """Run every job, share.students at a time, each in its own process calling `run` (search/run.run: a module-level
    function, which the spawned child imports by name); wait for all; RunFailure naming the students that failed
    (their errors are above, under their names). Needs a connected Ray (the children join it)."""
    import multiprocessing
    from multiprocessing.connection import wait

    import ray

    address = ray.get_runtime_context().gcs_address
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the parent's Ray state
    pending, running, failed = list(jobs), {}, []
    try:
        while pending or running:
            while pending and len(running) < share.students:
                job = pending.pop(0)
                process = spawn.Process(target=student_main, name=f"cotgap-student-{job.name}",
                                        args=(address, namespace(run_dir, job.name), job, share, run))
                process.start()
                print(f"student {job.name}: started (process {process.pid}, {job.run_dir})")
                running[process.sentinel] = (job, process)
            for sentinel in wait(list(running)):
                job, process = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    failed.append(job)
                print(f"student {job.name}: " + ("done" if process.exitcode == 0 else
                                                 f"failed (exit code {process.exitcode})"))
    finally:  # an interrupted parent (Ctrl-C, an error) takes its students with it: each resumes with --resume
        for _, process in running.values():
            process.terminate()
            process.join()
    if failed:
        raise RunFailure(f"{len(failed)} of {len(jobs)} students failed: "
                         + "; ".join(f"{job.name} ({job.run_dir})" for job in failed)
                         + "; each one's error is above, its lines marked [name]; the other students' results are "
                           "kept: run again with --resume to continue them")
