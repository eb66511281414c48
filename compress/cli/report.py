"""`compress-report TARGET`: accuracy against a compression axis, over a sweep or an experiment.

TARGET is a sweep's parent run id or an experiment name; the report itself is
`compress.reporting.report.build_report`. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from compress.cli.exits import ArgumentParser, exit_code
from compress.errors import CompressError
from compress.reporting.report import AXES, DEFAULT_AXIS, build_report, default_uri


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="compress-report", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a sweep's parent run id, or an experiment name")
    parser.add_argument(
        "--axis",
        default=DEFAULT_AXIS,
        help=f"compression axis: {', '.join(AXES)} (default %(default)s)",
    )
    parser.add_argument("--uri", default=None, help="tracking URI (default: ./outputs/mlflow.db)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.uri or default_uri(), args.target, args.axis, args.out)
    except CompressError as error:
        print(f"compress-report: error: {error}", file=sys.stderr)
        return exit_code(error)
    print(report.paths[1].read_text())
    for path in report.paths:
        print(f"wrote {path}")
    if report.parent_run_id:
        print(f"logged to run {report.parent_run_id} under report/")
    return 0
