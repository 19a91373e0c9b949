"""Where a finished run's report goes: the dashboard, else the outbox, else (with no
dashboard configured) the local store; or, with --dry-run, stderr.

`start` is called as soon as the job runs (or, with --report-start, just before): a
background thread imports the reporter and builds its HTTP client, TLS context
included, then imports what the end of the run needs, while the job works. `finish`
waits for it and delivers. Nothing here
raises for a report that could not be delivered: that is a warning, and the report
waits in the outbox.
"""

from __future__ import annotations

import os
import sys

from cronlog import logs
from cronlog.errors import CronlogError, StateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence
    from typing import Any

    from cronlog import config
    from cronlog.outbox import Outbox
    from cronlog.reporter import Report, Reporter

log = logs.logger(__name__)

STORE_FILE = "runs.sqlite3"
OUTBOX_DIR = "outbox"
REPORT_START_WAIT = 1.0  # the longest --report-start may hold back the job
REPORT_START_DEADLINE = 5.0  # the `running` report keeps trying this long (at most
# --report-timeout), while the job runs; the final report waits for it, to stay last
BACKLOG_BUDGET = 10.0  # how long one run may spend delivering older reports
BACKLOG_REPORT_DEADLINE = 5.0


def new_run_id() -> str:
    """A random (version 4) UUID, without importing uuid on the start-up path."""
    value = int.from_bytes(os.urandom(16), "big")
    value = (value & ~(0xF000 << 64) | (4 << 76)) & ~(0xC000 << 48) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Delivery:
    def __init__(
        self,
        settings: config.Settings,
        state_dir: str | None,
        *,
        dry_run: bool,
        preload: Sequence[str] = (),
    ) -> None:
        """`preload`: modules the caller needs once the job has ended, imported in
        the background while it runs."""
        self.settings = settings
        self.state_dir = state_dir
        self.dry_run = dry_run
        self.preload = preload
        self.run_id = new_run_id()
        self._reporter: Reporter | None = None
        self._thread: threading.Thread | None = None
        self._start_reported: threading.Event | None = None
        self._failure: BaseException | None = None
        self._cannot_send: str | None = None

    @property
    def to_dashboard(self) -> bool:
        return self.settings.ingest_url is not None and not self.dry_run

    def start(self, running: dict[str, Any] | None = None) -> None:
        """Prepare in the background; with `running`, also report the run as started."""
        import threading

        if self._thread is None:
            self._start_reported = threading.Event()
            self._thread = threading.Thread(
                target=self._prepare,
                args=(running,),
                name="cronlog-report",
                daemon=True,
            )
            self._thread.start()

    def wait_for_start_report(self) -> None:
        if self._start_reported is not None:
            self._start_reported.wait(REPORT_START_WAIT)

    def finish(
        self, body: dict[str, Any], lost: Sequence[tuple[str, dict[str, Any]]] = ()
    ) -> None:
        """Deliver this run's body, then the (run id, body) of lost runs, then the
        backlog of the outbox."""
        if self._thread is None:
            self._prepare(None)  # the job never started: there was nothing to overlap
        else:
            self._thread.join()
        if self._failure is not None:
            raise self._failure

        bodies = [(self.run_id, body), *lost]
        if self.dry_run:
            for _, each in bodies:
                self._print(each)
        elif self._reporter is not None:
            self._send(bodies, self._reporter)
        elif self.to_dashboard:
            self._keep_all(bodies, self._cannot_send or "the reporter could not start")
        else:
            self._record_locally(bodies)

    def _prepare(self, running: dict[str, Any] | None) -> None:
        try:
            if self.to_dashboard:
                self._reporter = self._start_reporter()
            if running is not None:
                self._report_start(running)
        except BaseException as error:  # handed to the main thread by finish()
            self._failure = error
        finally:
            if self._start_reported is not None:
                self._start_reported.set()
        self._import_ahead()

    def _import_ahead(self) -> None:
        """Import now what `finish` and the caller will, so that the time after the
        job is spent delivering, not importing (about 8 ms; 30 for the store)."""
        if self.dry_run:
            ahead: tuple[str, ...] = ()
        elif self.to_dashboard:
            # socket's name lookup encodes the host with the idna codec
            ahead = ("cronlog.outbox", "encodings.idna")
        else:
            ahead = ("cronlog.store",)
        for name in (*self.preload, *ahead):
            try:
                __import__(name)
            except ImportError:
                continue  # the import where it is needed will say what is wrong

    def _start_reporter(self) -> Reporter | None:
        from cronlog.reporter import Reporter, Target

        target = Target(
            url=str(self.settings.ingest_url),
            api_key=self.settings.api_key.value,
            ca_bundle=self.settings.ca_bundle.value,
        )
        reporter = Reporter(target, deadline=self.settings.report_timeout.value)
        try:
            reporter.warm_up()
        except CronlogError as error:  # e.g. a CA bundle removed while the job ran
            self._cannot_send = str(error)
            return None
        return reporter

    def _report_start(self, body: dict[str, Any]) -> None:
        run_id = f"{self.run_id}-start"
        if self.dry_run:
            self._print(body)
        elif self.to_dashboard and self._reporter is None:
            log.info("the start of the run was not reported: %s", self._cannot_send)
        elif self._reporter is None:
            self._record_locally([(run_id, body)])
        else:
            from cronlog.reporter import Report

            deadline = min(REPORT_START_DEADLINE, self.settings.report_timeout.value)
            # A dashboard that refused or failed the first try holds the job no longer;
            # the retries go on while it runs.
            started = self._start_reported
            try:
                self._reporter.send(
                    Report(run_id, body),
                    deadline=deadline,
                    after_first_try=started.set if started is not None else None,
                )
            except CronlogError as error:
                log.info("the start of the run was not reported: %s", error)

    def _print(self, body: dict[str, Any]) -> None:
        import json

        target = self.settings.ingest_url or "the local store"
        sys.stderr.write(f"cronlog: dry run: would send to {target}:\n")
        sys.stderr.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")

    def _send(
        self, bodies: list[tuple[str, dict[str, Any]]], reporter: Reporter
    ) -> None:
        from cronlog.outbox import flush
        from cronlog.reporter import Report

        outbox = self._outbox()
        reports = [Report(run_id, body) for run_id, body in bodies]
        with reporter:
            for position, report in enumerate(reports):
                try:
                    reporter.send(report)
                except CronlogError as error:
                    for waiting in reports[position:]:
                        self._keep(waiting, outbox, str(error))
                    return
            if outbox is not None:
                deadline = min(
                    BACKLOG_REPORT_DEADLINE, self.settings.report_timeout.value
                )
                flush(
                    reporter,
                    outbox,
                    budget=BACKLOG_BUDGET,
                    per_report_deadline=deadline,
                )

    def _keep_all(self, bodies: list[tuple[str, dict[str, Any]]], why: str) -> None:
        from cronlog.reporter import Report

        outbox = self._outbox()
        for run_id, body in bodies:
            self._keep(Report(run_id, body), outbox, why)

    def _keep(self, report: Report, outbox: Outbox | None, why: str) -> None:
        if outbox is None:
            log.warning(
                "report not delivered, and no state directory to keep it: %s", why
            )
            return
        try:
            outbox.put(report)
        except OSError as error:
            log.warning(
                "report not delivered (%s) and could not be kept: %s", why, error
            )
            return
        log.warning(
            "report not delivered: %s; it waits in the outbox (cronlog flush)", why
        )

    def _outbox(self) -> Outbox | None:
        from pathlib import Path

        from cronlog.outbox import Outbox

        return Outbox(Path(self.state_dir, OUTBOX_DIR)) if self.state_dir else None

    def _record_locally(self, bodies: list[tuple[str, dict[str, Any]]]) -> None:
        import sqlite3
        from pathlib import Path

        from cronlog.store import open_store

        if self.state_dir is None:
            log.warning("no state directory, so the run was not recorded")
            return
        try:
            store = open_store(Path(self.state_dir, STORE_FILE))
            try:
                for run_id, body in bodies:
                    store.record(body, idempotency_key=run_id)
            finally:
                store.close()
        except (StateError, sqlite3.Error, OSError) as error:
            log.warning("the run was not recorded in the local store: %s", error)
