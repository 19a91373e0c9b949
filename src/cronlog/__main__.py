"""The `cronlog` entry point: logging, the fast path of `run`, the error boundary.

A well-formed `cronlog run` line is read by the lean parser in run_options.py and the
job starts before click is imported. Everything else, including any `run` line that
parser leaves alone, goes to the click app in cli.py. Both paths end in the same
boundary, `errors.run_with_boundary`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence


class _StderrHandler(logging.Handler):
    """cronlog's own words: one `cronlog:` line each on stderr, never on stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"cronlog: {record.getMessage()}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr is gone (closed by the caller): nothing left to tell


def configure_logging(verbose: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    root = logging.getLogger("cronlog")
    root.handlers[:] = [_StderrHandler()]
    root.setLevel(level)
    root.propagate = False
    if verbose >= 2:
        logging.getLogger("httpx").addHandler(root.handlers[0])
        logging.getLogger("httpx").setLevel(logging.INFO)


def _reopen_closed_standard_fds() -> None:
    """Give a closed fd 0, 1 or 2 to /dev/null, so no pipe cronlog opens takes its
    number and reaches the job as its stdin or stdout by mistake."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one


def main(argv: Sequence[str] | None = None) -> None:
    _reopen_closed_standard_fds()
    from cronlog.errors import run_with_boundary
    from cronlog.run_options import parse

    args = list(sys.argv[1:] if argv is None else argv)
    options = parse(args)
    if options is None:
        from cronlog.cli import run_cli

        sys.exit(run_cli(args))

    from cronlog.jobs import run_job

    configure_logging(options.verbose)
    sys.exit(run_with_boundary(lambda: run_job(options, os.environ)))


if __name__ == "__main__":
    main()
