"""The exceptions cronlog raises on purpose, and the one boundary that turns them into
a message and an exit status.

    CronlogError                 any failure cronlog can explain to a person
    ├── UsageError          bad flag or value: nothing was started          (exit 2)
    │   └── ConfigError     bad config file or setting                      (exit 2)
    ├── ReportError         the dashboard refused or could not be reached   (exit 1)
    └── StateError          the state directory cannot be used              (exit 125)

Only `main` entry points call `run_with_boundary`; everything else raises.
"""

from __future__ import annotations

import sys

from cronlog import exits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class CronlogError(Exception):
    exit_code = exits.FAILURE


class UsageError(CronlogError):
    exit_code = exits.USAGE


class ConfigError(UsageError):
    pass


class ReportError(CronlogError):
    exit_code = exits.FAILURE


class StateError(CronlogError):
    exit_code = exits.INTERNAL


def print_error(message: str) -> None:
    sys.stderr.write(f"cronlog: error: {message}\n")
    sys.stderr.flush()


def run_with_boundary(action: Callable[[], int]) -> int:
    """Run `action`, turning cronlog's errors into one stderr line and an exit status.

    An unexpected exception still gets one line, not a traceback (cron mails tracebacks
    to people at 2 a.m.); `CRONLOG_DEBUG=1` shows the traceback for a bug report.
    """
    try:
        return action()
    except CronlogError as error:
        print_error(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        return exits.for_signal(2)
    except Exception as error:  # the boundary: anything unforeseen becomes one line
        import os

        if os.environ.get("CRONLOG_DEBUG"):
            raise
        print_error(
            f"internal error: {type(error).__name__}: {error} "
            "(CRONLOG_DEBUG=1 shows the traceback)"
        )
        return exits.INTERNAL
