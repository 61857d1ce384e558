"""The fault battery: kill, starve or corrupt a real run, then run it again, and print what was survived.

    python tests/fault_battery.py                      # every fault, one table (about 20 minutes on 2 cores)
    python tests/fault_battery.py --only gen_actor,lock --keep /tmp/faults

Every fault runs real processes on tiny from-config models (no hub): `python -m cotgap_ray.generate` and
`python -m cotgap_ray.search --config experiments/smoke.yaml` with small overrides, each driver with its own local
Ray (RAY_ADDRESS=local). A fault is a SIGKILL of one process (found among the driver's descendants by its Ray
process title), a full filesystem (a size-limited tmpfs mounted in a user namespace: `unshare -rm`), a corrupted
run or cache file, a second search on the same directory, or a generation deadline far below a shard's time.
After each fault the run is started again (`--resume` for the search) and compared with an uninterrupted run:

    fault | what the run did | lost / duplicated | recovery (s) | survived

tests/test_faults.py runs the same scenarios (they are functions here: one source for the table and the tests).
A scenario returns an Outcome; `ok` is the verdict the tests assert, `behaviour` is what the table prints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"
FINAL = ("ok", "no_data", "stopped")
# The smoke search, smaller: two teachers, one trial each (the proxy-seeded points), one epoch, one seed.
SEARCH = ("search.trials=2", "search.epochs=[1]", "confirm.seeds=1", "search.filter_chains={all: []}")
# Generation with several shards, so a kill lands between shards.
GENERATE = ("--teacher", "tiny:llama@1", "--task", "reasoning_gym:basic_arithmetic", "--limit", "48",
            "--shard-size", "8", "--config", str(SMOKE))


@dataclass
class Outcome:
    fault: str
    behaviour: str = ""
    lost: str = "-"
    duplicated: str = "-"
    recover_s: float | None = None
    ok: bool = False
    details: list[str] = field(default_factory=list)

    def row(self) -> str:
        rec = f"{self.recover_s:.0f}" if self.recover_s is not None else "-"
        return f"| {self.fault} | {self.behaviour} | {self.lost} / {self.duplicated} | {rec} | " \
               f"{'yes' if self.ok else 'NO'} |"


# ------------------------------------------------------------------------------------------------ processes


def env() -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0", "RAY_ADDRESS": "local",
         "PYTHONFAULTHANDLER": "1"}
    return e


def search_cmd(tmp: Path, *extra: str, run: str = "run") -> list[str]:
    return [sys.executable, "-m", "cotgap_ray.search", "--config", str(SMOKE), "--out", str(tmp / run),
            f"cache_dir={tmp / 'cache'}", *SEARCH, *extra]


def generate_cmd(cache: Path, *options: str, overrides: tuple = ()) -> list[str]:
    """Options first, then config overrides (argparse takes the positional overrides in one run)."""
    return [sys.executable, "-m", "cotgap_ray.generate", *GENERATE, "--cache-dir", str(cache), *options,
            "task.n_train=48", *overrides]


def run(cmd: list[str], cwd: Path, log: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env(), cwd=cwd, timeout=timeout,
                              start_new_session=True)
    return subprocess.CompletedProcess(cmd, done.returncode, log.read_text(), "")


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env(), cwd=cwd,
                            start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended (rc {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout:.0f}s for {what}")


def descendant(proc: subprocess.Popen, title: str):
    """The driver's descendant process whose command line (Ray sets it to `ray::<Actor>...`) contains `title`."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            if title in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (its local Ray): a crash of the whole machine's run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def finish(proc: subprocess.Popen, timeout: float = 900) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return -9


# ------------------------------------------------------------------------------------------------ run files


def records(run_dir: Path) -> dict[str, dict]:
    out = {}
    for p in (run_dir / "trials").glob("*/trial.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())
        except ValueError:
            continue  # being written by the run under test
    return out


def finished(run_dir: Path) -> dict[str, dict]:
    return {k: r for k, r in records(run_dir).items() if r["status"] in FINAL}


def resumed(done_before: dict[str, dict], after: dict[str, dict], trials: int = 2) -> tuple[list[str], bool]:
    """(trials finished before the fault that were trained again, whether every trial is now final). A finished
    trial kept means: Tune kept it finished (record untouched) or the trial replayed its recorded epochs."""
    rerun = [k for k, r in done_before.items()
             if not (after.get(k, {}).get("finished_at") == r["finished_at"] or after.get(k, {}).get("replayed"))]
    return rerun, len(after) == trials and all(r["status"] in FINAL for r in after.values())


def rationale_rows(cache: Path) -> list[tuple]:
    """(problem, sample, text) of every shard the manifests list, in file order: what a re-run would read."""
    import pyarrow.parquet as pq

    rows = []
    for manifest in sorted(cache.glob("rationales/*/manifest.json")):
        shards = json.loads(manifest.read_text())["shards"]
        for sid in sorted(shards, key=int):
            table = pq.read_table(manifest.parent / shards[sid]["file"])
            rows += list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist(),
                             table["text"].to_pylist()))
    return rows


def shard_files(cache: Path) -> dict[str, tuple]:
    """Every shard file with its inode and mtime: a shard written twice gets a new inode (atomic rename)."""
    return {str(p.relative_to(cache)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in cache.glob("rationales/*/shard-*.parquet")}


def manifest_shards(cache: Path) -> int:
    total = 0
    for manifest in cache.glob("rationales/*/manifest.json"):
        try:
            total += len(json.loads(manifest.read_text())["shards"])
        except (ValueError, KeyError):
            continue
    return total


def cache_valid(cache: Path) -> tuple[bool, str]:
    """Every shard a manifest lists exists with the sha256 the manifest records; no half-written shard under a
    final name."""
    for manifest in cache.glob("rationales/*/manifest.json"):
        try:
            shards = json.loads(manifest.read_text())["shards"]
        except (ValueError, KeyError) as e:
            return False, f"{manifest}: unreadable ({e})"
        for sid, entry in shards.items():
            path = manifest.parent / entry["file"]
            if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                return False, f"{path}: missing or not the manifest's sha256"
    return True, "valid"


def compare_rows(got: list[tuple], want: list[tuple]) -> tuple[str, str, bool]:
    """(lost, duplicated, equal) of rationale rows against an uninterrupted run."""
    keys = [(p, s) for p, s, _ in got]
    dup = len(keys) - len(set(keys))
    lost = len({(p, s) for p, s, _ in want} - set(keys))
    return f"{lost} rows", f"{dup} rows", sorted(got) == sorted(want) and dup == 0


def report_shape(path: Path):
    """The key structure of report.json (values dropped): what "identical in structure" compares."""
    def shape(value):
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k not in ("generated_at",)}
        if isinstance(value, list):
            return [shape(value[0])] if value else []
        return type(value).__name__ if value is not None else "null"
    return shape(json.loads(path.read_text()))


def tail(text: str, n: int = 1500) -> str:
    return text[-n:]


# ------------------------------------------------------------------------------------------------ scenarios


class Battery:
    """The scenarios, sharing two uninterrupted reference runs (generation, search) made on first use."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._gen_ref: list[tuple] | None = None
        self._search_ref: Path | None = None

    def dir(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # -- references
    def generation_reference(self) -> list[tuple]:
        if self._gen_ref is None:
            tmp = self.dir("gen_reference")
            done = run(generate_cmd(tmp / "cache"), tmp, tmp / "log")
            if done.returncode != 0:
                raise RuntimeError(f"reference generation failed:\n{tail(done.stdout)}")
            self._gen_ref = rationale_rows(tmp / "cache")
        return self._gen_ref

    def search_reference(self) -> Path:
        """An uninterrupted search (its run dir); the corruption scenarios work on copies of its cache."""
        if self._search_ref is None:
            tmp = self.dir("search_reference")
            done = run(search_cmd(tmp), tmp, tmp / "log")
            if done.returncode != 0:
                raise RuntimeError(f"reference search failed:\n{tail(done.stdout)}")
            self._search_ref = tmp
        return self._search_ref

    # -- 1. generation
    def _generation_kill(self, name: str, fault: str, kill) -> Outcome:
        want = self.generation_reference()
        tmp = self.dir(name)
        cache = tmp / "cache"
        out = Outcome(fault)
        proc = start(generate_cmd(cache), tmp, tmp / "log1")
        wait_for(lambda: manifest_shards(cache) >= 1, proc, 300, "the first shard")
        before = shard_files(cache)
        what = kill(proc)
        rc = finish(proc, 600)
        first = (tmp / "log1").read_text()
        t0 = time.time()
        again = run(generate_cmd(cache), tmp, tmp / "log2")
        out.recover_s = time.time() - t0
        got = rationale_rows(cache)
        out.lost, out.duplicated, equal = compare_rows(got, want)
        after = shard_files(cache)
        rewritten = [f for f, stat in before.items() if after.get(f) != stat]
        regenerated = len(after) - len(before)
        out.behaviour = (f"{what}: first run exit {rc}; re-run exit {again.returncode} generated "
                         f"{regenerated} missing shard(s), reused {len(before)}")
        out.ok = again.returncode == 0 and equal and not rewritten
        if rewritten:
            out.details.append(f"shards written twice: {rewritten}")
        out.details += [tail(first), tail(again.stdout)]
        return out

    def gen_actor(self) -> Outcome:
        def kill(proc):
            wait_for(lambda: descendant(proc, "ShardWorker") is not None, proc, 120, "the ShardWorker actor")
            descendant(proc, "ShardWorker").kill()
            return "ShardWorker actor SIGKILLed"
        return self._generation_kill("gen_actor", "SIGKILL generation actor mid-run", kill)

    def gen_driver(self) -> Outcome:
        def kill(proc):
            kill_group(proc)
            return "driver + its Ray SIGKILLed"
        return self._generation_kill("gen_driver", "SIGKILL driver mid-generation", kill)

    # -- 2, 3. search
    def _search_kill(self, name: str, fault: str, when, kill, expect_error: str | None = None,
                     check=None) -> Outcome:
        """`expect_error`: the first run must end with status 3 and an `error:` line holding these words. `check`:
        (first run's exit status, its log, the run dir) -> what is wrong with how the first run ended, or None."""
        ref = self.search_reference()
        tmp = self.dir(name)
        shutil.copytree(ref / "cache", tmp / "cache")  # generation and baseline cached: the fault hits the search
        run_dir = tmp / "run"
        out = Outcome(fault)
        proc = start(search_cmd(tmp), tmp, tmp / "log1")
        wait_for(lambda: when(run_dir, proc), proc, 600, f"the moment to inject: {fault}")
        done_before = finished(run_dir)
        finals_before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "final").glob("*.json")}
        what = kill(proc)
        rc = finish(proc, 600)
        first = (tmp / "log1").read_text()
        t0 = time.time()
        again = run(search_cmd(tmp, "--resume"), tmp, tmp / "log2")
        out.recover_s = time.time() - t0
        after = records(run_dir)
        rerun, all_final = resumed(done_before, after)
        redone = [n for n, m in finals_before.items() if (run_dir / "final" / n).stat().st_mtime_ns != m]
        same_shape = (run_dir / "report.json").exists() and \
            report_shape(run_dir / "report.json") == report_shape(ref / "run" / "report.json")
        out.lost = f"{0 if all_final else 2 - sum(r['status'] in FINAL for r in after.values())} trials"
        out.duplicated = f"{len(rerun)} trials re-run" + (f", {len(redone)} confirmations redone" if finals_before
                                                          else "")
        out.behaviour = (f"{what}: first run exit {rc}; --resume exit {again.returncode}, {len(done_before)} "
                         f"finished trial(s) kept, {len(finals_before)} confirmation(s) kept")
        out.ok = again.returncode == 0 and not rerun and all_final and not redone and same_shape
        if expect_error is not None and not (rc == 3 and _error_names(first, expect_error)):
            out.ok = False
            out.details.append(f"the first run did not end with status 3 and an error naming {expect_error!r}")
        if check is not None and (problem := check(rc, first, run_dir)):
            out.ok = False
            out.details.append(problem)
        if not same_shape:
            out.details.append("report.json differs in structure from the uninterrupted run's (or is missing)")
        out.details += [tail(first), tail(again.stdout)]
        return out

    def eval_actor(self) -> Outcome:
        def when(run_dir, proc):
            return bool(finished(run_dir)) and descendant(proc, "Evaluator") is not None

        def kill(proc):
            descendant(proc, "Evaluator").kill()
            return "evaluation actor SIGKILLed after the first trial"

        def restarted(rc, log, run_dir):
            """Ray restarts the engine (evaluation/pool.RESTARTS): the first run finishes by itself, and the engine's
            second start measured its own baseline again (two logs under evaluators/)."""
            starts = len(list((run_dir / "evaluators").glob("*.json")))
            if rc != 0 or starts < 2:
                return f"the search did not recover by itself: exit {rc}, {starts} engine start(s) logged"
            return None
        return self._search_kill("eval_actor", "SIGKILL evaluation actor mid-search", when, kill, check=restarted)

    def train_worker(self) -> Outcome:
        def when(run_dir, proc):
            return descendant(proc, "RayTrainWorker") is not None

        def kill(proc):
            worker = descendant(proc, "RayTrainWorker")
            if worker is not None:
                worker.kill()
            return "Ray Train worker SIGKILLed during a trial"
        return self._search_kill("train_worker", "SIGKILL Ray Train worker mid-trial", when, kill)

    def driver_trial(self) -> Outcome:
        def when(run_dir, proc):
            return bool(finished(run_dir))

        def kill(proc):
            kill_group(proc)
            return "driver + its Ray SIGKILLed after the first trial"
        return self._search_kill("driver_trial", "SIGKILL driver mid-search", when, kill)

    def confirmation(self) -> Outcome:
        def when(run_dir, proc):
            return any((run_dir / "final").glob("*.json"))

        def kill(proc):
            kill_group(proc)
            return "driver + its Ray SIGKILLed after the first confirmation"
        return self._search_kill("confirmation", "SIGKILL during confirmation", when, kill)

    # -- 4. full disk
    def _in_namespace(self, tmp: Path, script: str) -> subprocess.CompletedProcess:
        """Run a shell script as root of a new user + mount namespace, where it may mount a small tmpfs."""
        path = tmp / "ns.sh"
        path.write_text("set -u\n" + script)
        return run(["unshare", "--user", "--map-root-user", "--mount", "bash", str(path)], tmp, tmp / "log",
                   timeout=1200)

    @staticmethod
    def namespaces_available() -> bool:
        try:
            done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                   "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"],
                                  capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def full_disk_generation(self) -> Outcome:
        tmp = self.dir("full_disk_generation")
        cache = tmp / "cache"
        (cache / "rationales").mkdir(parents=True)
        cmd = " ".join(map(_q, generate_cmd(cache)))
        script = (f"mount -t tmpfs -o size=24k tmpfs {cache / 'rationales'}\n"
                  f"{cmd} > {tmp / 'log1'} 2>&1; echo \"first=$?\" > {tmp / 'rc'}\n"
                  f"{sys.executable} {Path(__file__).resolve()} --check-cache {cache} > {tmp / 'valid'} 2>&1\n"
                  f"mount -o remount,size=64m {cache / 'rationales'}\n"
                  f"start=$(date +%s.%N); {cmd} > {tmp / 'log2'} 2>&1; echo \"second=$?\" >> {tmp / 'rc'}\n"
                  f"end=$(date +%s.%N); echo \"seconds=$(echo \"$end - $start\" | bc)\" >> {tmp / 'rc'}\n"
                  f"{sys.executable} -c 'import json,sys; sys.path.insert(0, \"{ROOT / 'tests'}\"); "
                  f"import fault_battery; print(json.dumps(fault_battery.rationale_rows(__import__(\"pathlib\").Path(\"{cache}\"))))'"
                  f" > {tmp / 'rows.json'}\n")
        self._in_namespace(tmp, script)
        rc = dict(line.split("=", 1) for line in (tmp / "rc").read_text().split())
        first = (tmp / "log1").read_text()
        out = Outcome("full disk during generation (24 KiB tmpfs)")
        named = _error_names(first, str(cache / "rationales"), "No space left")
        valid = (tmp / "valid").read_text().strip()
        got = [tuple(r) for r in json.loads((tmp / "rows.json").read_text())]
        out.lost, out.duplicated, equal = compare_rows(got, self.generation_reference())
        out.recover_s = float(rc.get("seconds", "nan"))
        said = "names the directory and ENOSPC" if named else "error does not name the directory"
        out.behaviour = (f"first run exit {rc['first']} ({said}); "
                         f"cache after the failure: {valid}; re-run with space exit {rc['second']}")
        out.ok = rc["first"] == "3" and named and valid == "valid" and rc["second"] == "0" and equal
        out.details += [tail(first), tail((tmp / "log2").read_text())]
        return out

    def full_disk_trial(self) -> Outcome:
        ref = self.search_reference()
        tmp = self.dir("full_disk_trial")
        shutil.copytree(ref / "cache", tmp / "cache")
        storage = tmp / "storage"
        storage.mkdir()
        # No retry (search.max_failures=0): a retried attempt meets the same full disk, and what this fault checks
        # (the failed trial named with its directory and ENOSPC, then --resume with space) does not depend on the
        # retries; each one cost about 35 s of Ray Train start-up on a 2-core machine.
        first_cmd = " ".join(map(_q, search_cmd(tmp, f"train.storage_path={storage}", "search.max_failures=0")))
        resume_cmd = " ".join(map(_q, search_cmd(tmp, f"train.storage_path={storage}", "--resume")))
        script = (f"mount -t tmpfs -o size=32k tmpfs {storage}\n"
                  f"{first_cmd} > {tmp / 'log1'} 2>&1; echo \"first=$?\" > {tmp / 'rc'}\n"
                  f"mount -o remount,size=256m {storage}\n"
                  f"start=$(date +%s.%N); {resume_cmd} > {tmp / 'log2'} 2>&1; echo \"second=$?\" >> {tmp / 'rc'}\n"
                  f"end=$(date +%s.%N); echo \"seconds=$(echo \"$end - $start\" | bc)\" >> {tmp / 'rc'}\n")
        self._in_namespace(tmp, script)
        rc = dict(line.split("=", 1) for line in (tmp / "rc").read_text().split())
        first = (tmp / "log1").read_text()
        after = records(tmp / "run")
        out = Outcome("full disk during a trial (32 KiB tmpfs as train storage)")
        # A trial that fails is a recorded outcome (the search goes on with the others): its reason is printed as
        # a warning naming the trial's training directory, and --resume runs it again.
        named = any(line.startswith("warning: trial") and str(storage) in line and "No space left" in line
                    for line in first.splitlines())
        all_final = len(after) == 2 and all(r["status"] in FINAL for r in after.values())
        out.recover_s = float(rc.get("seconds", "nan"))
        out.lost = f"{0 if all_final else 2} trials"
        out.behaviour = (f"first run exit {rc['first']}, its failed trials "
                         f"{'named with their directory and ENOSPC' if named else 'NOT named with the directory'}; "
                         f"--resume with space exit {rc['second']}, trials {[r['status'] for r in after.values()]}")
        out.ok = named and rc["second"] == "0" and all_final and (tmp / "run" / "report.json").exists()
        out.details += [tail(first, 3000), tail((tmp / "log2").read_text())]
        return out

    # -- 5. corrupted files
    def corrupt_derived(self) -> Outcome:
        """baseline.json, a rationale shard, a model manifest and an evaluation cache entry damaged at once: each
        is derived data, rebuilt by the re-run; the answer must not change.

        Damaged in the shared reference search itself, not in a copy: a copy needs a search of its own (its config
        names its cache_dir), about 2.5 minutes on 2 cores. The re-run rebuilds what was damaged, so when this
        fault is survived the reference is whole again; it is the last search scenario (SCENARIOS) all the same."""
        tmp = self.search_reference()
        want = json.loads((tmp / "run" / "report.json").read_text())["recommendation"]
        damaged = []
        (tmp / "run" / "baseline.json").write_text('{"dev": {"accuracy": 0.')  # truncated
        damaged.append("baseline.json")
        shard = sorted((tmp / "cache").glob("rationales/*/shard-*.parquet"))[0]
        shard.write_bytes(shard.read_bytes()[: len(shard.read_bytes()) // 2])
        damaged.append("a rationale shard")
        manifest = sorted((tmp / "cache").glob("models/*/manifest.json"))[0]
        manifest.write_text("{not json")
        damaged.append("a model manifest")
        summary = sorted((tmp / "cache").glob("evals/*/summary.json"))[0]
        summary.unlink()  # a kill between the rows and their summary leaves exactly this
        damaged.append("an evaluation summary")
        t0 = time.time()
        again = run(search_cmd(tmp, "--resume"), tmp, tmp / "corrupt_derived.log")
        out = Outcome("corrupted derived files: " + ", ".join(damaged))
        out.recover_s = time.time() - t0
        valid, why = cache_valid(tmp / "cache")
        got = json.loads((tmp / "run" / "report.json").read_text())["recommendation"] \
            if again.returncode == 0 else None
        baseline_ok = again.returncode == 0 and json.loads((tmp / "run" / "baseline.json").read_text())
        out.behaviour = f"--resume exit {again.returncode}: rebuilt; cache {why}; same answer: {got == want}"
        out.lost, out.duplicated = "0", "-"
        out.ok = again.returncode == 0 and valid and got == want and bool(baseline_ok)
        out.details += [tail(again.stdout)]
        return out

    def corrupt_study(self) -> Outcome:
        ref = self.search_reference()
        tmp = self.dir("corrupt_study")
        shutil.copytree(ref / "cache", tmp / "cache")
        proc = start(search_cmd(tmp), tmp, tmp / "log0")
        run_dir = tmp / "run"
        wait_for(lambda: bool(finished(run_dir)), proc, 600, "the first finished trial")
        kill_group(proc)
        done_before = finished(run_dir)
        db = run_dir / "optuna.journal"
        db.write_bytes(b"this is not a journal" + os.urandom(512))
        t0 = time.time()
        again = run(search_cmd(tmp, "--resume"), tmp, tmp / "log1")
        out = Outcome("corrupted optuna.journal (driver killed mid-search, then the study file damaged)")
        out.recover_s = time.time() - t0
        after = records(run_dir)
        rerun, all_final = resumed(done_before, after)
        aside = list(run_dir.glob("optuna.journal.corrupt-*"))
        moved = f"set aside as {aside[0].name}" if aside else "not set aside"
        out.behaviour = (f"--resume exit {again.returncode}: study file {moved}, "
                         f"the study rebuilt by replaying {len(done_before)} finished trial(s)")
        out.lost, out.duplicated = f"{0 if all_final else '?'} trials", f"{len(rerun)} trials re-run"
        out.ok = again.returncode == 0 and all_final and not rerun and bool(aside)
        out.details += [tail(again.stdout)]
        return out

    def corrupt_record(self) -> Outcome:
        ref = self.search_reference()
        tmp = self.dir("corrupt_record")
        shutil.copytree(ref / "run", tmp / "run", symlinks=True)
        trial = sorted((tmp / "run" / "trials").glob("*/trial.json"))[0]
        trial.write_text(trial.read_text()[:40])
        t0 = time.time()
        # The copy's config names the reference's cache_dir (part of the experiment's fingerprint): keep it.
        again = run(search_cmd(ref, "--resume", run=str(tmp / "run")), tmp, tmp / "log1", timeout=300)
        out = Outcome("truncated trials/<key>/trial.json")
        out.recover_s = time.time() - t0
        named = str(trial) in again.stdout
        out.behaviour = (f"--resume exit {again.returncode}: refused before any work, "
                         f"{'naming the file' if named else 'NOT naming the file'}")
        out.lost, out.duplicated = "0 (nothing ran)", "-"
        out.ok = again.returncode == 2 and named
        out.details += [tail(again.stdout)]
        return out

    # -- 6. two searches on one directory
    def lock(self) -> Outcome:
        ref = self.search_reference()
        tmp = self.dir("lock")
        shutil.copytree(ref / "cache", tmp / "cache")
        first = start(search_cmd(tmp), tmp, tmp / "log1")
        try:
            wait_for(lambda: (tmp / "run" / ".lock").exists() and (tmp / "run" / "config.json").exists(), first,
                     300, "the first search's lock")
            before = {p.name: p.stat().st_mtime_ns for p in (tmp / "run").iterdir() if p.is_file()}
            t0 = time.time()
            second = run(search_cmd(tmp), tmp, tmp / "log2", timeout=300)
            seconds = time.time() - t0
            refused = second.returncode == 2 and "in use by another search" in second.stdout
            touched = [p.name for p in (tmp / "run").iterdir() if p.is_file() and p.name in before
                       and p.stat().st_mtime_ns != before[p.name] and p.name not in ("status.json",)]
        finally:
            kill_group(first)
        out = Outcome("two searches on one --out")
        out.behaviour = (f"second search exit {second.returncode} after {seconds:.1f}s: "
                         f"{'refused (lock), naming the holder' if refused else 'NOT refused'}")
        out.lost, out.duplicated = "-", "0 (nothing interleaved)" if refused else "?"
        out.ok = refused and "pid" in second.stdout
        out.details += [tail(second.stdout), f"files the first search wrote meanwhile: {touched}"]
        return out

    # -- 7. an engine that hangs
    def engine_hang(self) -> Outcome:
        tmp = self.dir("engine_hang")
        cache = tmp / "cache"
        # 256 sequences of up to 200 tokens per shard (the tiny model stops after ~60 on average): ~5 s on 2 cores at
        # the ~3,400 tok/s measured 2026-12-04, far past a 1.5 s deadline (64 sequences took 1-2 s: too close to it);
        # the tiny engine itself starts in well under a second.
        samples = "32"
        first = run(generate_cmd(cache, "--samples", samples, overrides=("generation.max_tokens=200",
                                                                          "generation.timeout_s=1.5")),
                    tmp, tmp / "log1", timeout=600)
        named = "of teacher tiny-llama@1 unfinished" in first.stdout and "generation.timeout_s=1.5" in first.stdout
        t0 = time.time()
        again = run(generate_cmd(cache, "--samples", samples, overrides=("generation.max_tokens=200",)), tmp,
                    tmp / "log2")
        out = Outcome("engine hang (generation.timeout_s=1.5 below a shard's time)")
        out.recover_s = time.time() - t0
        rows = rationale_rows(cache)
        keys = [(p, s) for p, s, _ in rows]
        want = len({p for p, _, _ in self.generation_reference()}) * int(samples)  # the same problems, each sampled
        out.lost = f"{want - len(set(keys))} rows"
        out.duplicated = f"{len(keys) - len(set(keys))} rows"
        out.behaviour = (f"first run exit {first.returncode} "
                         f"({'names teacher, shard and the limit' if named else 'message lacks teacher/shard'}); "
                         f"re-run exit {again.returncode}")
        out.ok = first.returncode == 3 and named and again.returncode == 0 and len(set(keys)) == want == len(keys)
        out.details += [tail(first.stdout), tail(again.stdout)]
        return out


def _error_names(log: str, *words: str) -> bool:
    """The run's own `error:` line (run_cli) holds every word."""
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    return bool(errors) and all(w in errors[-1] for w in words)


def _q(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# corrupt_derived damages the shared reference search (and its re-run rebuilds it): it comes after every other
# scenario that reads the reference.
SCENARIOS = ("gen_actor", "gen_driver", "eval_actor", "train_worker", "driver_trial", "confirmation",
             "full_disk_generation", "full_disk_trial", "corrupt_study", "corrupt_record", "lock", "engine_hang",
             "corrupt_derived")
NEEDS_NAMESPACES = ("full_disk_generation", "full_disk_trial")


def table(rows: list[Outcome]) -> str:
    return "\n".join(["| fault | what the run did | lost / duplicated | recovery (s) | survived |",
                      "|---|---|---|---|---|", *(r.row() for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenarios (default: all): " + ", ".join(SCENARIOS))
    parser.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    parser.add_argument("--check-cache", help=argparse.SUPPRESS)  # used inside the full-disk namespace
    parser.add_argument("-v", "--verbose", action="store_true", help="print each scenario's log tails")
    args = parser.parse_args(argv)
    if args.check_cache:
        print(cache_valid(Path(args.check_cache))[1])
        return 0
    names = args.only.split(",") if args.only else list(SCENARIOS)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cotgap-faults-"))
    battery = Battery(root)
    rows = []
    for name in names:
        if name in NEEDS_NAMESPACES and not Battery.namespaces_available():
            rows.append(Outcome(name, "not run: this machine allows no user namespace to mount a small tmpfs"))
            continue
        t0 = time.time()
        try:
            outcome = getattr(battery, name)()
        except Exception as e:  # noqa: BLE001 - a scenario that breaks is a row of the table, not the end of it
            outcome = Outcome(name, f"scenario error: {type(e).__name__}: {e}")
        print(f"{name}: {'survived' if outcome.ok else 'NOT survived'} ({time.time() - t0:.0f}s)", flush=True)
        if args.verbose or not outcome.ok:
            for d in outcome.details:
                print("    " + d.replace("\n", "\n    "))
        rows.append(outcome)
    print("\n" + table(rows))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
