"""Where a finished run's report goes: the dashboard, else the outbox, else (with no
dashboard configured) the local store; or, with --dry-run, stderr.

`start` is called as soon as the job runs (or, with --report-start, just before): a
background thread imports pydantic and the reporter and builds the HTTP client, TLS
context included, while the job works. `finish` waits for it and delivers. Nothing
here raises for a report that could not be delivered: that is a warning, and the
report waits in the outbox.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronlog import config
from cronlog.errors import CronlogError, StateError

if TYPE_CHECKING:
    from cronlog.models import TaskRun
    from cronlog.outbox import Outbox
    from cronlog.reporter import Report, Reporter

log = logging.getLogger(__name__)

STORE_FILE = "runs.sqlite3"
OUTBOX_DIR = "outbox"
REPORT_START_WAIT = 1.0  # the longest --report-start may hold back the job
REPORT_START_DEADLINE = 5.0  # the `running` report keeps trying this long (at most
# --report-timeout), while the job runs; the final report waits for it, to stay last
BACKLOG_BUDGET = 10.0  # how long one run may spend delivering older reports
BACKLOG_REPORT_DEADLINE = 5.0


class Delivery:
    def __init__(
        self, settings: config.Settings, state_dir: Path | None, *, dry_run: bool
    ):
        self.settings = settings
        self.state_dir = state_dir
        self.dry_run = dry_run
        self.run_id = str(uuid.uuid4())
        self._reporter: Reporter | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._cannot_send: str | None = None
        self._start_reported = threading.Event()

    @property
    def to_dashboard(self) -> bool:
        return self.settings.ingest_url is not None and not self.dry_run

    def start(self, running: dict[str, Any] | None = None) -> None:
        """Prepare in the background; with `running`, also report the run as started."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._prepare,
                args=(running,),
                name="cronlog-report",
                daemon=True,
            )
            self._thread.start()

    def wait_for_start_report(self) -> None:
        self._start_reported.wait(REPORT_START_WAIT)

    def finish(
        self, fields: dict[str, Any], lost: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Deliver this run's report, then those of `lost` runs, then the backlog."""
        if self._thread is None:
            self._prepare(None)  # the job never started: there was nothing to overlap
        else:
            self._thread.join()
        if self._failure is not None:
            raise self._failure

        from cronlog.models import TaskRun

        runs = [(self.run_id, TaskRun(**fields))]
        runs += [(record["run_id"], TaskRun(**record["fields"])) for record in lost]
        if self.dry_run:
            for _, run in runs:
                self._print(run)
        elif self._reporter is not None:
            self._send(runs, self._reporter)
        elif self.to_dashboard:
            self._keep_all(runs, self._cannot_send or "the reporter could not start")
        else:
            self._record_locally(runs)

    def _prepare(self, running: dict[str, Any] | None) -> None:
        try:
            import cronlog.models  # noqa: F401  (importing it is the work overlapped)

            if self.to_dashboard:
                from cronlog.reporter import Reporter, Target

                target = Target(
                    url=str(self.settings.ingest_url),
                    api_key=self.settings.api_key.value,
                    ca_bundle=self.settings.ca_bundle.value,
                )
                reporter = Reporter(target, deadline=self.settings.report_timeout.value)
                try:
                    reporter.warm_up()
                except CronlogError as error:  # e.g. an unreadable CA bundle
                    self._cannot_send = str(error)
                else:
                    self._reporter = reporter
            if running is not None:
                self._report_start(running)
        except BaseException as error:  # handed to the main thread by finish()
            self._failure = error
        finally:
            self._start_reported.set()

    def _report_start(self, fields: dict[str, Any]) -> None:
        from cronlog.models import TaskRun

        run = TaskRun(**fields)
        if self.dry_run:
            self._print(run)
        elif self._reporter is None:
            self._record_locally([(f"{self.run_id}-start", run)])
        else:
            from cronlog.reporter import Report

            report = Report(run_id=f"{self.run_id}-start", body=run.to_body())
            deadline = min(REPORT_START_DEADLINE, self.settings.report_timeout.value)
            try:
                self._reporter.send(report, deadline=deadline)
            except CronlogError as error:
                log.info("the start of the run was not reported: %s", error)

    def _print(self, run: TaskRun) -> None:
        import json

        target = self.settings.ingest_url or "the local store"
        sys.stderr.write(f"cronlog: dry run: would send to {target}:\n")
        sys.stderr.write(json.dumps(run.to_body(), indent=2, ensure_ascii=False) + "\n")

    def _send(self, runs: list[tuple[str, TaskRun]], reporter: Reporter) -> None:
        from cronlog.outbox import Outbox, flush
        from cronlog.reporter import Report

        outbox = Outbox(self.state_dir / OUTBOX_DIR) if self.state_dir else None
        reports = [Report(run_id=run_id, body=run.to_body()) for run_id, run in runs]
        with reporter:
            for position, report in enumerate(reports):
                try:
                    reporter.send(report)
                except CronlogError as error:
                    for waiting in reports[position:]:
                        self._keep(waiting, outbox, str(error))
                    return
            if outbox is not None:
                flush(
                    reporter,
                    outbox,
                    budget=BACKLOG_BUDGET,
                    per_report_deadline=min(
                        BACKLOG_REPORT_DEADLINE, self.settings.report_timeout.value
                    ),
                )

    def _keep_all(self, runs: list[tuple[str, TaskRun]], why: str) -> None:
        from cronlog.outbox import Outbox
        from cronlog.reporter import Report

        outbox = Outbox(self.state_dir / OUTBOX_DIR) if self.state_dir else None
        for run_id, run in runs:
            self._keep(Report(run_id=run_id, body=run.to_body()), outbox, why)

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

    def _record_locally(self, runs: list[tuple[str, TaskRun]]) -> None:
        import sqlite3

        from cronlog.store import open_store

        if self.state_dir is None:
            log.warning("no state directory, so the run was not recorded")
            return
        try:
            store = open_store(self.state_dir / STORE_FILE)
            try:
                for run_id, run in runs:
                    store.record(run.to_body(), idempotency_key=run_id)
            finally:
                store.close()
        except (StateError, sqlite3.Error, OSError) as error:
            log.warning("the run was not recorded in the local store: %s", error)
