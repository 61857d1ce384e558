"""cotgap: one command line for every verb, and the one parser helper each verb's module builds its parser with.

    cotgap search --config experiments/smoke.yaml --out runs/smoke search.trials=4
    cotgap list models
    python -m cotgap_ray search ...        # the same, without the console script
    python -m cotgap_ray.search ...        # the same: each verb's module keeps its own main(argv)

`cotgap VERB ARGS` calls VERBS[VERB]'s main(ARGS), so it behaves exactly like `python -m cotgap_ray.VERB ARGS` (list:
`python -m cotgap_ray.catalog`). Every flag has one meaning, whichever verb takes it:
  --config FILE    an experiment YAML (default: the embedded default, cotgap_ray/experiments/default.yaml)
  key=value ...    config overrides; only real config keys (--help-config lists them)
  --help-config    every config key with its type, help and the value in force for this command line: after --config,
                   the verb's own options and the overrides (it acts after parsing, so it shows what would run)
  --out DIR        the directory this command writes its results into (search and distill: the run directory;
                   evaluate: rows.parquet and summary.json). generate writes into the content-addressed cache instead:
                   --cache-dir DIR
  --json           print the command's result as JSON on stdout instead of the table or sentence
  --teacher NAME   a teacher (generate: repeatable; distill: exactly one)
  --address ADDR   the Ray cluster to connect to (generate, cluster)
Bad command lines get one `error:` line and exit status 2 like every other bad input (errors.run_cli), not argparse's
usage dump.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import importlib
import json
import os
import shutil
import sys
import textwrap
import types
import typing
from collections.abc import Sequence

from cotgap_ray.errors import InputError, run_cli

# verb -> the module whose main(argv) runs it (and which `python -m` runs: cotgap_ray.search runs search.run's main).
VERBS = {
    "search": "cotgap_ray.search.run",
    "report": "cotgap_ray.report_cli",
    "validate": "cotgap_ray.validate",
    "evaluate": "cotgap_ray.evaluate",
    "generate": "cotgap_ray.generate",
    "distill": "cotgap_ray.distill",
    "cluster": "cotgap_ray.cluster.show",
    "list": "cotgap_ray.catalog",
}
# The `python -m` module of each verb whose main lives in a package's submodule (the rest: VERBS' module).
PYTHON_M = {"search": "cotgap_ray.search", "cluster": "cotgap_ray.cluster"}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as InputError: run_cli prints one `error:` line and returns 2."""

    def error(self, message: str):
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Docstring paragraphs as written; options in up to 120 columns (argparse's default follows the terminal)."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=28, width=min(120, shutil.get_terminal_size().columns))


def _summary(doc: str) -> str:
    """A module docstring's first paragraph: a verb's description."""
    return doc.strip().split("\n\n")[0]


def verb_parser(verb: str, doc: str, *, config: bool = True, out: str | None = None,
                json_help: str = "print the result as JSON on stdout") -> Parser:
    """The parser of `cotgap VERB`, with the common arguments in their fixed meanings. `config`: the verb runs an
    experiment config (--config, --help-config, key=value overrides); `out`: the help of its --out DIR (None: the
    verb has no --out). The verb adds its own options, then parses with `parse`."""
    python_m = PYTHON_M.get(verb, VERBS[verb])
    parser = Parser(prog=f"cotgap {verb}", description=_summary(doc), formatter_class=_Formatter,
                    epilog=f"The same command: python -m {python_m} ...  Exit status: 0 done, 2 bad input (one "
                           f"`error:` line), 1 a bug.")
    if config:
        parser.add_argument("--config", metavar="FILE",
                            help="experiment YAML (default: the embedded default; cotgap list experiments)")
        parser.add_argument("--help-config", action="store_true",
                            help="print every config key with its type, help and the value in force for this "
                                 "command line (after --config, the options and the overrides), then exit; with "
                                 "--json as a JSON list")
    if out is not None:
        parser.add_argument("--out", metavar="DIR", help=out)
    parser.add_argument("--json", action="store_true", help=json_help)
    if config:
        parser.add_argument("overrides", nargs="*", metavar="key=value",
                            help=f"config overrides, e.g. task.n_dev=50 (cotgap {verb} --help-config lists the keys)")
    return parser


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (--limit 0 would leave nothing to run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count (at least 1)")
    return value


def add_task_arguments(parser: Parser, split: str) -> None:
    """--task, --task-path, --split, --limit: the problems a verb that runs one model on one split reads (evaluate,
    generate). `load(args, task_overrides(args.task_path, ...), task=args.task)` applies the first two."""
    parser.add_argument("--task", metavar="NAME",
                        help="task name, e.g. gsm8k, reasoning_gym:basic_arithmetic, file (cotgap list tasks); "
                             "another task than the config's starts from its defaults (keeping task.n_dev, n_test, "
                             "seed)")
    parser.add_argument("--task-path", metavar="PATH", help="gsm8k directory or file task path (= task.path=PATH)")
    parser.add_argument("--split", default=split, choices=["train", "dev", "test"], help=f"default: {split}")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N problems of the split")


def parse(parser: Parser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv (None: sys.argv[1:]); options and key=value overrides may come in any order."""
    return parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)


def load(args: argparse.Namespace, flags: Sequence[str] = (), task: str | None = None):
    """The config this command runs: --config (or the embedded default), then `flags` (the overrides the verb's own
    options stand for, e.g. generate's --samples K), then the key=value overrides, validated (config.load_config;
    `task`: its task reset). With --help-config it prints that config and exits 0, before any work."""
    from cotgap_ray.config import load_config

    for item in args.overrides:
        if item.partition("=")[0].strip() == "teacher":  # the old distill spelling; not a config key
            raise InputError(f"command-line override `{item}`: teacher is not a config key; generate and distill "
                             f"name a teacher with --teacher NAME (the config's candidates are the list "
                             f"teachers=[...])")
    cfg = load_config(args.config, [*flags, *args.overrides], task=task)
    if args.help_config:
        from cotgap_ray.config import DEFAULT_CONFIG

        given = [*flags, *args.overrides]
        source = (args.config or f"the embedded default ({DEFAULT_CONFIG})") + (
            f" + {' '.join(given)}" if given else "") + (f", task reset to {task}" if task else "")
        print_config(cfg, as_json=args.json, source=source)
        raise SystemExit(0)
    return cfg


@contextlib.contextmanager
def work_output(as_json: bool):
    """Around a verb's work: with --json, stdout must carry the result alone, so everything else written to it while
    the work runs (progress prints, Ray's forwarded worker logs, an engine subprocess's or a C library's output) goes
    to stderr, at the file-descriptor level. Without --json, nothing changes."""
    if not as_json:
        yield
        return
    original = sys.stdout
    original.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:  # what a handler holding the original stdout buffered belongs on stderr too: flush it there first
        original.flush()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _type_name(hint) -> str:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " | ".join("None" if t is type(None) else getattr(t, "__name__", str(t)) for t in options)


def config_rows(cfg, prefix: str = "") -> list[dict]:
    """Every config key of `cfg` (dotted, as overrides spell it): its type, value in force, default and help."""
    rows = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += config_rows(value, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({"key": prefix + f.name, "type": _type_name(hints[f.name]), "value": value, "default": default,
                     "help": f.metadata.get("help", "")})
    return rows


def _shown(value) -> str:
    """A value as a key=value override writes it (YAML flow: null, true, [1, 2], {a: 1})."""
    return value if isinstance(value, str) else json.dumps(value)


def print_config(cfg, as_json: bool = False, source: str = "") -> None:
    """--help-config: each key, `type = value in force`, and its help below (as_json: config_rows as a JSON list)."""
    rows = config_rows(cfg)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["key"]) for r in rows)
    indent = " " * (width + 2)
    print(f"config in force: {source}" if source else "config in force:")
    for r in rows:
        changed = "" if r["value"] == r["default"] else f"  (field default {_shown(r['default'])})"
        print(f"{r['key']:<{width}}  {r['type']} = {_shown(r['value'])}{changed}")
        print(textwrap.fill(r["help"], 118, initial_indent=indent, subsequent_indent=indent))


# ------------------------------------------------------------------------------------------------------ dispatch


def _verb_summaries() -> str:
    lines = []
    for verb, module in VERBS.items():
        doc = _summary(importlib.import_module(module).__doc__)
        if doc.startswith("cotgap "):  # "cotgap report RUN_DIR: the report of ..." -> "the report of ..."
            doc = doc.partition(": ")[2]
        first = " ".join(doc.split()).split(". ")[0]  # the first sentence
        lines.append(textwrap.fill(first, 118, initial_indent=f"  {verb:<10}", subsequent_indent=" " * 12))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`cotgap VERB ARGS`: VERBS[VERB]'s main(ARGS). Exit status: the verb's (0 done, 2 bad input, 1 a bug)."""
    return run_cli(_main, sys.argv[1:] if argv is None else list(argv))


def _main(argv: list[str]) -> int:
    if not argv:
        raise InputError(f"name a verb: cotgap VERB ..., VERB one of {', '.join(VERBS)} (cotgap --help says what each "
                         f"does)")
    verb, rest = argv[0], argv[1:]
    if verb in ("-h", "--help"):
        print(f"usage: cotgap VERB [--help] ...\n\n{_summary(importlib.import_module('cotgap_ray').__doc__)}\n\n"
              f"verbs:\n{_verb_summaries()}\n\n`cotgap VERB --help` for a verb's options; `python -m cotgap_ray VERB` "
              f"is the same command.")
        return 0
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, VERBS, n=1)
        raise InputError(f"cotgap has no verb {verb!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" (verbs: {', '.join(VERBS)})")
    return importlib.import_module(VERBS[verb]).main(rest)
