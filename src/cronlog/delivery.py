"""Where a finished run's report goes: the dashboard, else the outbox, else (with no
dashboard configured) the local store; or, with --dry-run, stderr. Also the one-off
deliveries of `cronlog test-post` and `cronlog flush`.

Nothing here raises for a report that could not be delivered: that is a warning, and
the report waits in the outbox.
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
    from cronlog.outbox import FlushResult, Outbox
    from cronlog.reporter import Report, Reporter, Target

log = logs.logger(__name__)

STORE_FILE = "runs.sqlite3"
OUTBOX_DIR = "outbox"
REPORT_START_WAIT = 1.0  # the longest --report-start may hold back the job
REPORT_START_DEADLINE = 5.0  # the `running` report keeps trying this long (at most
# --report-timeout), while the job runs; the final report waits for it, to stay last
BACKLOG_BUDGET = 10.0  # how long one run may spend delivering older reports
BACKLOG_REPORT_DEADLINE = 5.0
SEND_NOW_DEADLINE = 10.0  # cronlog test-post: a person is waiting for the answer


def outbox_in(state_dir: str) -> Outbox:
    from pathlib import Path

    from cronlog.outbox import Outbox

    return Outbox(Path(state_dir, OUTBOX_DIR))


def store_in(state_dir: str) -> str:
    """The local store's file in the state directory."""
    return os.path.join(state_dir, STORE_FILE)


def send_now(
    settings: config.Settings, report: Report, state_dir: str | None
) -> dict[str, Any] | str:
    """Deliver one report at once, as `cronlog test-post` does, and give the answer:
    the dashboard's, or with no dashboard configured, the row the local store made."""
    if settings.ingest_url is None:
        from cronlog.store import open_store

        assert state_dir is not None, "the local store needs the state directory"
        store = open_store(store_in(state_dir))
        try:
            row, _created = store.record(report.body, idempotency_key=report.run_id)
        finally:
            store.close()
        return {"success": True, "stored_in": state_dir, "data": row}

    from cronlog.reporter import Reporter

    deadline = min(SEND_NOW_DEADLINE, settings.report_timeout.value)
    with Reporter(_target(settings), deadline=deadline) as reporter:
        answer: dict[str, Any] | str = reporter.send(report).body
    return answer


def flush_outbox(
    settings: config.Settings, state_dir: str, *, retry_rejected: bool
) -> tuple[int, FlushResult]:
    """`cronlog flush`: the reports stopped cronlogs kept, then with `retry_rejected`
    those the dashboard refused, join the outbox, and all of it is delivered in order.
    Returns how many refused reports were queued again, and the flush's result."""
    from cronlog.outbox import adopt_stopped_runs, flush
    from cronlog.reporter import Reporter

    outbox = outbox_in(state_dir)
    adopt_stopped_runs(state_dir, outbox)
    requeued = outbox.retry_rejected() if retry_rejected else 0

    timeout = settings.report_timeout.value
    with Reporter(_target(settings), deadline=timeout) as reporter:
        result = flush(reporter, outbox, budget=None, per_report_deadline=timeout)
    return requeued, result


def _target(settings: config.Settings) -> Target:
    """Where reports go, and with what key and trust, as the settings say."""
    from cronlog.reporter import Target

    assert settings.ingest_url is not None, "reports need a dashboard"
    return Target(
        url=settings.ingest_url,
        api_key=settings.api_key.value,
        ca_bundle=settings.ca_bundle.value,
    )


def new_run_id() -> str:
    """A random (version 4) UUID, without importing uuid on the start-up path."""
    value = int.from_bytes(os.urandom(16), "big")
    value = (value & ~(0xF000 << 64) | (4 << 76)) & ~(0xC000 << 48) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Delivery:
    """The delivery of one run's report.

    `start` is called as soon as the job runs (or, with --report-start, just before): a
    background thread imports the reporter and builds its HTTP client, TLS context
    included, then imports what the end of the run needs, while the job works.
    `finish` waits for it and delivers this run's report, then those of lost runs,
    then the outbox's backlog.
    """

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
        from cronlog.reporter import Reporter

        target = _target(self.settings)
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
        return outbox_in(self.state_dir) if self.state_dir else None

    def _record_locally(self, bodies: list[tuple[str, dict[str, Any]]]) -> None:
        import sqlite3

        from cronlog.store import open_store

        if self.state_dir is None:
            log.warning("no state directory, so the run was not recorded")
            return
        try:
            store = open_store(store_in(self.state_dir))
            try:
                for run_id, body in bodies:
                    store.record(body, idempotency_key=run_id)
            finally:
                store.close()
        except (StateError, sqlite3.Error, OSError) as error:
            log.warning("the run was not recorded in the local store: %s", error)
