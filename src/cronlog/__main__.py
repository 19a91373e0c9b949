"""The `cronlog` entry point: the fast path of `run`, and the error boundary.

A well-formed `cronlog run` line is read by the lean parser in run_options.py and the
job starts before click is imported. Everything else, including any `run` line that
parser leaves alone, goes to the click app in cli.py. Both paths end in the same
boundary, `errors.run_with_boundary`.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def _reopen_closed_standard_fds() -> None:
    """Give a closed fd 0, 1 or 2 to /dev/null, so no pipe cronlog opens takes its
    number and reaches the job as its stdin or stdout by mistake.

    Python found no file there and set that sys stream to None; it gets one again,
    so that cronlog's own messages and flushes need no case of their own.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
        if getattr(sys, name) is None:
            stream = open(fd, mode, closefd=False, errors="backslashreplace")  # noqa: SIM115
            setattr(sys, name, stream)


def _undo_locale_coercion() -> None:
    """Give LC_CTYPE back the value cronlog was started with.

    Started under the C locale, as cron often starts it, Python sets LC_CTYPE=C.UTF-8
    in its own environment (PEP 538), which the job would inherit. /proc/self/environ
    still holds the environment as it was at exec.
    """
    if os.environ.get("LC_CTYPE") not in ("C.UTF-8", "C.utf8", "UTF-8"):
        return
    try:
        with open("/proc/self/environ", "rb") as file:
            launched = file.read().split(b"\0")
    except OSError:
        return  # not Linux: leave it
    for entry in launched:
        if entry.startswith(b"LC_CTYPE="):
            os.environ["LC_CTYPE"] = os.fsdecode(entry[len(b"LC_CTYPE=") :])
            return
    del os.environ["LC_CTYPE"]


def main(argv: Sequence[str] | None = None) -> None:
    _reopen_closed_standard_fds()
    _undo_locale_coercion()
    from cronlog.errors import run_with_boundary
    from cronlog.run_options import parse

    args = list(sys.argv[1:] if argv is None else argv)
    options = parse(args)
    if options is None:
        from cronlog.cli import run_cli

        sys.exit(run_cli(args))

    from cronlog import logs
    from cronlog.jobs import run_job

    logs.set_verbosity(options.verbose)
    status = run_with_boundary(lambda: run_job(options, os.environ))
    _exit_now(status)


def _exit_now(status: int) -> None:
    """Exit without tearing the interpreter down: with every file already closed and
    the streams flushed, unloading hundreds of modules only delays cron's next job."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue  # the stream is gone: nothing left to flush
    os._exit(status)


if __name__ == "__main__":
    main()
