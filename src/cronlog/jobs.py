"""One `cronlog run`: check the line, start the job, judge it, report it.

This is the one module that knows both the runner (the child process) and the reporter
(the dashboard). Its order is the promise cronlog makes: every check that can refuse a
line runs before the job starts; the job then runs exactly once whatever the dashboard
does; and the job's exit status is cronlog's, whatever happens to the report.

The reporter, pydantic and httpx are imported by a background thread once the child is
running, so their cost overlaps the job rather than delaying its start.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronlog import config, exits, notes, runner, tasks
from cronlog.errors import CronlogError, StateError
from cronlog.run_options import RunOptions

if TYPE_CHECKING:
    from cronlog.models import TaskRun
    from cronlog.outbox import Outbox
    from cronlog.reporter import Report, Reporter

log = logging.getLogger(__name__)

OUTPUT_TAIL_BYTES = (
    64 * 1024
)  # several times NOTES_LIMIT, so redaction sees whole lines
BACKLOG_BUDGET_SECONDS = 10.0  # how long a run may spend delivering older reports
STORE_FILE = "runs.sqlite3"
HIDDEN_VARIABLES = ("CRONLOG_API_KEY",)  # cronlog's own key; the job's keys stay


@dataclass(frozen=True)
class Verdict:
    status: str  # success | failed
    reason: str | None  # the first line of a failure's notes
    exit_status: int


def run_job(options: RunOptions, env: Mapping[str, str]) -> int:
    """Run the job `options` describe and report it; return cronlog's exit status."""
    settings = config.resolve(_config_flags(options), env)
    for warning in settings.warnings:
        log.warning(warning)
    known = tasks.registry(settings.tasks)
    title = tasks.title_for(options.task_id, options.title, known)
    state_dir = _prepare_state_dir(settings.state_dir.value)

    command = runner.Command(
        argv=options.command,
        env=job_environment(env),
        timeout=options.timeout,
        kill_after=options.kill_after,
        tail_bytes=OUTPUT_TAIL_BYTES,
    )
    delivery = Delivery(settings, state_dir, dry_run=options.dry_run)
    outcome = runner.run(command, on_started=delivery.prepare_in_background)

    verdict = judge(outcome, options.timeout)
    secrets = [settings.api_key.value] if settings.api_key.value else []
    report_notes = _notes_for(verdict, outcome, options.notes, secrets)
    fields: dict[str, Any] = {
        "task_id": options.task_id,
        "task_title": title,
        "status": verdict.status,
        "started_at": outcome.started_at,
        "ended_at": outcome.ended_at,
        "duration_ms": outcome.duration_ms,
        "notes": report_notes,
        "log_url": options.log_url,
        "environment": settings.environment.value,
        "owner": settings.owner.value,
    }
    delivery.send({key: value for key, value in fields.items() if value is not None})
    return verdict.exit_status


def judge(outcome: runner.Outcome, timeout: float | None = None) -> Verdict:
    """Success is exit 0; anything else is a failure with one line saying why."""
    exit_status = outcome.exit_status
    if outcome.spawn_error:
        return Verdict("failed", outcome.spawn_error, exit_status)
    if outcome.timed_out:
        from cronlog.durations import format_duration

        limit = format_duration(timeout or 0)
        return Verdict("failed", f"timed out after {limit}", exit_status)
    if outcome.forwarded_signal:
        return Verdict(
            "failed",
            f"terminated by {_signal_name(outcome.forwarded_signal)}",
            exit_status,
        )
    if outcome.signal:
        return Verdict(
            "failed", f"killed by {_signal_name(outcome.signal)}", exit_status
        )
    if outcome.returncode:
        return Verdict("failed", f"exit {outcome.returncode}", exit_status)
    return Verdict("success", None, exits.OK)


def job_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: cronlog's own key removed, everything else as it was."""
    return {name: value for name, value in env.items() if name not in HIDDEN_VARIABLES}


class Delivery:
    """Gets a finished run to the dashboard, or to the local store when there is none.

    `prepare_in_background` is called as soon as the child runs: it imports the model
    and the reporter and builds the HTTP client while the job works. `send` waits for
    that, then delivers; a report that cannot be delivered waits in the outbox and is
    only ever a warning, never a change of the job's exit status.
    """

    def __init__(
        self, settings: config.Settings, state_dir: Path | None, *, dry_run: bool
    ):
        self.settings = settings
        self.state_dir = state_dir
        self.dry_run = dry_run
        self.run_id = str(uuid.uuid4())
        self._reporter: Reporter | None = None
        self._ready = threading.Thread(target=self._prepare, name="cronlog-prepare")
        self._prepare_error: BaseException | None = None

    def prepare_in_background(self) -> None:
        self._ready.daemon = True
        self._ready.start()

    def _prepare(self) -> None:
        try:
            import cronlog.models  # noqa: F401  (the import is the work being overlapped)

            if self.settings.ingest_url and not self.dry_run:
                from cronlog.reporter import Reporter, Target

                target = Target(
                    url=self.settings.ingest_url,
                    api_key=self.settings.api_key.value,
                    ca_bundle=self.settings.ca_bundle.value,
                )
                self._reporter = Reporter(
                    target, deadline=self.settings.report_timeout.value
                )
                self._reporter.warm_up()
        except BaseException as error:  # re-raised in send(), in the main thread
            self._prepare_error = error

    def send(self, fields: dict[str, Any]) -> None:
        if self._ready.ident is None:
            self._prepare()  # the job could not start, so nothing was overlapped
        else:
            self._ready.join()
        if self._prepare_error:
            raise self._prepare_error

        from cronlog.models import TaskRun

        run = TaskRun(**fields)
        if self.dry_run:
            self._print_dry_run(run)
        elif self._reporter is not None:
            self._send_to_dashboard(run, self._reporter)
        else:
            self._record_locally(run)

    def _print_dry_run(self, run: TaskRun) -> None:
        import json

        target = self.settings.ingest_url or "the local store"
        sys.stderr.write(f"cronlog: dry run: would send to {target}:\n")
        sys.stderr.write(json.dumps(run.to_body(), indent=2, ensure_ascii=False) + "\n")

    def _send_to_dashboard(self, run: TaskRun, reporter: Reporter) -> None:
        from cronlog.outbox import Outbox, flush
        from cronlog.reporter import Report

        report = Report(run_id=self.run_id, body=run.to_body())
        outbox = Outbox(self.state_dir / "outbox") if self.state_dir else None
        try:
            with reporter:
                reporter.send(report)
                if outbox is not None:
                    flush(
                        reporter,
                        outbox,
                        budget=BACKLOG_BUDGET_SECONDS,
                        per_report_deadline=min(
                            5.0, self.settings.report_timeout.value
                        ),
                    )
        except CronlogError as error:
            self._keep(report, outbox, str(error))

    def _keep(self, report: Report, outbox: Outbox | None, why: str) -> None:
        if outbox is None:
            log.warning(
                "report not delivered and no state directory to keep it: %s", why
            )
            return
        try:
            outbox.put(report)
        except OSError as error:
            log.warning("report not delivered (%s) and not kept: %s", why, error)
            return
        log.warning(
            "report not delivered: %s; it waits in the outbox (`cronlog flush`)", why
        )

    def _record_locally(self, run: TaskRun) -> None:
        from cronlog.store import open_store

        if self.state_dir is None:
            log.warning("no state directory: the run was not recorded")
            return
        import sqlite3

        try:
            store = open_store(self.state_dir / STORE_FILE)
            try:
                store.record(run.to_body(), idempotency_key=self.run_id)
            finally:
                store.close()
        except (sqlite3.Error, OSError) as error:
            log.warning("the run was not recorded in the local store: %s", error)


def _prepare_state_dir(path: Path) -> Path | None:
    """The state directory, created 0700; a job still runs when it cannot be had."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        log.warning(
            "cannot use state directory %s (%s); set CRONLOG_STATE_DIR", path, error
        )
        return None
    return path


def state_dir_or_fail(settings: config.Settings) -> Path:
    """For commands that are nothing without the state directory (flush, history)."""
    path = _prepare_state_dir(settings.state_dir.value)
    if path is None:
        raise StateError(f"cannot use state directory {settings.state_dir.value}")
    return path


def _config_flags(options: RunOptions) -> dict[str, Any]:
    return {
        "url": options.url,
        "api_key_file": options.api_key_file,
        "environment": options.environment,
        "owner": options.owner,
        "report_timeout": options.report_timeout,
        "ca_bundle": options.ca_bundle,
        "allow_http": options.allow_http or None,
    }


def _notes_for(
    verdict: Verdict, outcome: runner.Outcome, extra: str | None, secrets: list[str]
) -> str | None:
    """A success says only what --notes says; a failure says why, then the output."""
    if verdict.status == "success":
        return notes.build(None, extra=extra, secrets=secrets)
    cut = outcome.output_bytes - len(outcome.output_tail)
    output = notes.clean(outcome.output_tail, secrets, truncated=cut > 0)
    return notes.build(
        verdict.reason, output, extra=extra, earlier_bytes=cut, secrets=secrets
    )


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
