"""cotgap report RUN_DIR: the report of a finished or interrupted run, rebuilt from its files alone.

It never trains or evaluates: it reads what the search wrote into RUN_DIR and writes report.json (the machine-readable
answer), report.md and PNG plots back into it. One student's run: report.py. The parent of a multi-student run
(`students:`, search/pairs.py): the students x teachers matrix over its students' runs (report_pairs.py). A module of
its own because it chooses between the two, and report_pairs builds on report.

    cotgap report runs/default          # or python -m cotgap_ray.report_cli runs/default
"""

from __future__ import annotations

import sys
from pathlib import Path

from cotgap_ray.cli import parse, verb_parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    from cotgap_ray.errors import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = verb_parser("report", __doc__, config=False,
                         json_help="print report.json on stdout instead of the answer and the files written")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by cotgap search (its --out)")
    args = parse(parser, argv)
    from cotgap_ray.report import render
    from cotgap_ray.report_pairs import is_pairs_run, render_pairs

    pairs = is_pairs_run(args.run_dir)  # several students: the matrix over their runs
    report = render_pairs(args.run_dir) if pairs else render(args.run_dir)
    if args.json:  # the file as written (records converted), not a second serialisation of `report`
        print((Path(args.run_dir) / "report.json").read_text())
        return 0
    print(report["answer"]["text"] if pairs else report["recommendation"]["text"])
    for name in ["report.json", "report.md", *report["plots"]]:
        print(f"wrote {Path(args.run_dir) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
