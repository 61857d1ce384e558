"""One search per run directory: an exclusive lock on run_dir/.lock, held for the life of the process.

    lock = hold_run_dir(run_dir)    # a second search on the same --out: ConfigError naming the holder (pid, host)

Two searches writing one run directory would interleave trial records, the study and the confirmation. The lock is a
POSIX advisory lock (fcntl.flock) on an open file, so the kernel releases it when the holder dies in any way
(SIGKILL included): a killed search never leaves a stale lock for `--resume` to clear. flock is per machine: a run
directory on a network filesystem shared by two machines is not protected across them (hence the host in the file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from cotgap_ray.config import ConfigError

_HELD: dict[str, int] = {}  # run dir -> open descriptor holding its lock (kept open: closing it would release it)


def hold_run_dir(run_dir: Path) -> None:
    """Take run_dir's lock for this process (again: no-op), or raise ConfigError when another process holds it."""
    key = str(Path(run_dir).resolve())
    if key in _HELD:
        return
    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise ConfigError(
            f"{run_dir} is in use by another search ({holder}); wait for it to end, or choose another --out. "
            f"(The lock is {path}; it is released when that process ends, killed or not.)") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
    _HELD[key] = fd


def release_run_dir(run_dir: Path) -> None:
    """Give the lock back before the process ends (tests run several searches in one process)."""
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"])) if "since" in info else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {since}"
