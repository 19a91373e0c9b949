"""cronlog's own words: one `cronlog:` line each on stderr, never on stdout.

The modules on the start-up path of `cronlog run` log through `logger(__name__)`, which
imports the standard logging module only when the first message is logged: importing
logging costs more here than everything else cronlog does before the job starts.
`configure` is the one place handlers are set up: the entry points call it, and on
the run path it runs once the job has started (or at the first message).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

_verbosity = 0
_configured = False


def set_verbosity(level: int) -> None:
    """0 warnings only, 1 (-v) adds what cronlog does, 2 (-vv) adds HTTP detail."""
    global _verbosity
    _verbosity = level
    if _configured:
        configure()


def configure() -> None:
    """Send cronlog's loggers (with -vv, httpx's too) to stderr as `cronlog:` lines."""
    import logging

    global _configured
    _configured = True

    level = {0: logging.WARNING, 1: logging.INFO}.get(_verbosity, logging.DEBUG)
    root = logging.getLogger("cronlog")
    root.handlers[:] = [_stderr_handler()]
    root.setLevel(level)

    httpx_logger = logging.getLogger("httpx")
    httpx_logger.handlers[:] = [_stderr_handler()] if _verbosity >= 2 else []
    httpx_logger.setLevel(logging.INFO if _verbosity >= 2 else logging.WARNING)


class Logger:
    """The part of logging.Logger cronlog uses, importing logging on first use."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self) -> logging.Logger:
        if self._logger is None:
            import logging

            if not _configured:
                configure()
            self._logger = logging.getLogger(self.name)
        return self._logger

    def debug(self, message: str, *args: object) -> None:
        self._real().debug(message, *args)

    def info(self, message: str, *args: object) -> None:
        self._real().info(message, *args)

    def warning(self, message: str, *args: object) -> None:
        self._real().warning(message, *args)


def logger(name: str) -> Logger:
    return Logger(name)


def _stderr_handler() -> logging.Handler:
    import logging

    class StderrHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                sys.stderr.write(f"cronlog: {record.getMessage()}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # stderr is gone (closed by the caller): nothing left to tell

    return StderrHandler()
