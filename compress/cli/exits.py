"""One exit-code policy for every command: how an error reaches the shell.

- 0: the job (or report, search, rerun) did what was asked;
- 1: a job ran and failed (its loss diverged), or a rerun's figures differ;
- 2: bad input: a config value, an argument, a missing file or run; nothing was run.

Errors reach the user as one line, `<command>: error: <message>`, without a traceback:
ours (`fail`), Hydra's (`compress.cli.hydra_entry`) and argparse's (`ArgumentParser`).
The commands: compress, compress-search (Hydra), compress-report, compress-rerun (argparse).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from compress.errors import CompressError, JobFailedError

OK = 0
FAILED = 1
USAGE = 2


def exit_code(error: CompressError) -> int:
    return FAILED if isinstance(error, JobFailedError) else USAGE


def fail(command: str, error: CompressError, quiet: bool = False) -> NoReturn:
    """Print `error` as one line (unless `quiet`: another process said it) and exit with
    its code."""
    if not quiet:
        print(f"{command}: error: {error}", file=sys.stderr)
    sys.exit(exit_code(error))


def usage_error(command: str, message: str) -> NoReturn:
    """Print a usage or config error as one line and exit 2."""
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(USAGE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like every error of ours (exit code 2;
    `--help` still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)
