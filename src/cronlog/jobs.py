"""One `cronlog run`: check the line, start the job, judge it, report it.

This is the one module that knows both the runner (the child process) and the delivery
of reports. Its order is the promise cronlog makes: every check that can refuse a line
runs before the job starts; the job then runs exactly once whatever the dashboard does;
and the job's exit status is cronlog's, whatever happens to the report.

It runs before the job starts, so it imports only what the start needs; the rest
(notes, payload, delivery's HTTP client) is imported once the job is running.
"""

from __future__ import annotations

import os
import sys
import time

from cronlog import config, exits, logs, runner, tasks
from cronlog.delivery import Delivery
from cronlog.errors import StateError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from typing import Any

    from cronlog import locks
    from cronlog.curl import CurlProbe
    from cronlog.run_options import RunOptions

log = logs.logger(__name__)

# Several times NOTES_LIMIT, so that redaction sees the lines whole.
OUTPUT_TAIL_BYTES = 64 * 1024
HIDDEN_VARIABLES = ("CRONLOG_API_KEY",)  # cronlog's own key; the job's keys stay
# What the end of a run imports (signal names, the notes), imported while it runs.
END_OF_RUN_MODULES = ("signal", "cronlog.notes")


class Verdict:
    """success or failed, the first line of a failure's notes, and the exit status."""

    __slots__ = ("exit_status", "reason", "status")

    def __init__(self, status: str, reason: str | None, exit_status: int) -> None:
        self.status = status
        self.reason = reason
        self.exit_status = exit_status


class Finished:
    """A job that has run, however it ran (a child process or an HTTP request)."""

    __slots__ = ("duration_ms", "ended_at", "http", "output", "started_at", "verdict")

    def __init__(
        self,
        verdict: Verdict,
        started_at: datetime,
        ended_at: datetime,
        duration_ms: int,
        output: tuple[bytes, int],  # the tail kept, and how many bytes there were
        http: bool = False,  # HTTP job notes read `HTTP 500: <body>`, like the guide
    ) -> None:
        self.verdict = verdict
        self.started_at = started_at
        self.ended_at = ended_at
        self.duration_ms = duration_ms
        self.output = output
        self.http = http


def run_job(options: RunOptions, env: Mapping[str, str]) -> int:
    """Run the job `options` describe and report it; return cronlog's exit status."""
    settings = config.resolve(_config_flags(options), env)
    for warning in settings.warnings:
        log.warning(warning)
    tasks.check_task_id(options.task_id)
    title = tasks.title_for(
        options.task_id, options.title, tasks.registry(settings.tasks)
    )
    _check_line(options, title)
    state_dir = _prepare_state_dir(os.fspath(settings.state_dir.value))

    secrets = [settings.api_key.value] if settings.api_key.value else []
    if options.request is not None:
        from cronlog import http_job

        # Refuse a bad header before the job, as the request itself would.
        http_job.expand_headers(options.headers, env, withheld=HIDDEN_VARIABLES)
        secrets += http_job.referenced_values(options.headers, env)

    base = {
        "task_id": options.task_id,
        "task_title": title,
        "log_url": options.log_url,
        "environment": settings.environment.value,
        "owner": settings.owner.value,
    }
    delivery = Delivery(
        settings, state_dir, dry_run=options.dry_run, preload=END_OF_RUN_MODULES
    )
    book = _Bookkeeping(state_dir, delivery, base)

    if options.no_overlap and state_dir is not None:
        from cronlog.locks import TaskLock

        book.lock = TaskLock(state_dir, options.task_id)
        if not book.lock.acquire(_now_text()):
            return _skip(delivery, base, book.lock.holder())

    book.mark()
    try:
        try:
            if options.request is not None:
                # The request's own checks come first: a line they refuse reports
                # nothing.
                def on_started() -> None:
                    if options.report_start:
                        _report_start(delivery, base)
                    book.on_started()

                finished = _perform_request(options, env, on_started)
            else:
                if options.report_start:
                    _report_start(delivery, base)
                finished = _run_command(options, env, state_dir, book, secrets)
        except _StoppedBeforeStart as stopped:
            finished = stopped.finished()

        _exit_on_stop_signals(finished.verdict.exit_status)
        book.finish(finished, options.notes, secrets)
        return finished.verdict.exit_status
    finally:
        book.close()


class _Bookkeeping:
    """What a run keeps in the state directory while it works, and its delivery.

    Once the job has started: a marker saying the run is in flight, and a claim on the
    runs of the same task whose cronlog died before reporting. Once it has finished:
    the report, written into the marker before it is delivered, so a cronlog killed
    while delivering loses nothing; then the marker is removed.
    """

    def __init__(self, state_dir: str | None, delivery: Delivery, base: dict[str, Any]):
        self.state_dir = state_dir
        self.delivery = delivery
        self.base = base
        self.lock: locks.TaskLock | None = None
        self.marker: locks.RunMarker | None = None
        self.lost: list[locks.AbandonedRun] = []

    def mark(self) -> None:
        """Mark the run as in flight, just before the job starts."""
        if self.state_dir is None:
            return
        from cronlog.locks import RunMarker

        task_id, run_id = self.base["task_id"], self.delivery.run_id
        try:
            self.marker = RunMarker(self.state_dir, task_id, run_id, _now_text())
        except OSError as error:
            log.warning("cannot mark the run in %s: %s", self.state_dir, error)

    def on_started(self) -> None:
        """Called as soon as the job runs: from here on, overlapped with the job."""
        logs.configure()
        self.delivery.start()
        if self.state_dir is not None:
            from cronlog import locks

            # Our own marker is locked by us, so it is never among them.
            self.lost = locks.abandoned_runs(self.state_dir, self.base["task_id"])

    def finish(self, finished: Finished, extra: str | None, secrets: list[str]) -> None:
        from cronlog import payload

        fields = {
            **self.base,
            "status": finished.verdict.status,
            "started_at": finished.started_at,
            "ended_at": finished.ended_at,
            "duration_ms": finished.duration_ms,
            "notes": _notes_for(finished, extra, secrets),
        }
        body = payload.build(_given(fields))
        if self.marker is not None:
            try:
                self.marker.keep_report(body)
            except OSError as error:  # a full disk: the report may still be delivered
                log.warning("cannot keep the report in %s: %s", self.marker.path, error)

        lost = [(run.run_id, self._report_of_lost_run(run.record)) for run in self.lost]
        try:
            self.delivery.finish(body, lost=lost)
        except Exception as error:  # the job has run: its exit status stands
            if self.marker is None:
                log.warning("internal error while reporting: %r", error)
                return
            log.warning(
                "internal error while reporting: %r; the report stays in the run's "
                "marker, for the next run or `cronlog flush` to send",
                error,
            )
            self.marker.leave()
            self.marker = None
            return
        for run in self.lost:
            run.resolve()
        if self.marker is not None:
            self.marker.remove()
            self.marker = None

    def close(self) -> None:
        """Release what is held; a marker still here means the run was not reported."""
        if self.marker is not None:
            self.marker.remove()
        if self.lock is not None:
            self.lock.release()

    def _report_of_lost_run(self, record: dict[str, Any]) -> dict[str, Any]:
        """The report a dead cronlog kept, or a failure: outcome unknown.

        The marker may be damaged: what cannot be read from it is left out, and a
        kept report that is not a valid one gives way to the failure.
        """
        from cronlog import payload

        kept = record.get("report")
        if isinstance(kept, dict):
            try:
                return payload.build(kept)
            except (ValueError, TypeError, AttributeError):  # wrong values or types
                log.warning("a lost run's kept report is damaged; reporting it unknown")

        pid = record.get("pid")
        if not isinstance(pid, int):
            pid = "?"
        fields = {
            **_given(self.base),
            "status": "failed",
            "started_at": _timestamp_or_none(record.get("started_at")),
            "notes": f"outcome unknown: cronlog (pid {pid}) was killed during this "
            "run, so whether the job finished is not known",
        }
        return payload.build(_given(fields))


def judge(outcome: runner.Outcome, timeout: float | None = None) -> Verdict:
    """Success is exit 0; anything else is a failure with one line saying why."""
    exit_status = outcome.exit_status
    if outcome.spawn_error:
        return Verdict("failed", outcome.spawn_error, exit_status)
    if outcome.forwarded_signal:  # cronlog itself was told to stop: that comes first
        return Verdict(
            "failed",
            f"terminated by {_signal_name(outcome.forwarded_signal)}",
            exit_status,
        )
    if outcome.timed_out:
        from cronlog.durations import format_duration

        limit = format_duration(timeout or 0)
        return Verdict("failed", f"timed out after {limit}", exit_status)
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


def state_dir_or_fail(settings: config.Settings) -> str:
    """For commands that are nothing without the state directory (flush, history)."""
    path = _prepare_state_dir(os.fspath(settings.state_dir.value))
    if path is None:
        raise StateError(f"cannot use state directory {settings.state_dir.value}")
    return path


def _run_command(
    options: RunOptions,
    env: Mapping[str, str],
    state_dir: str | None,
    book: _Bookkeeping,
    secrets: list[str],
) -> Finished:
    """Run the command; a curl command is judged by the HTTP status it got, too."""
    probe = _curl_probe(options.command, state_dir, env)
    command = runner.Command(
        argv=probe.argv if probe else options.command,
        env=job_environment(env),
        timeout=options.timeout or None,  # 0 means no limit, as with timeout(1)
        kill_after=options.kill_after,
        tail_bytes=OUTPUT_TAIL_BYTES,
        inherit_fds=(book.lock.fd,) if book.lock and book.lock.fd is not None else (),
    )
    try:
        outcome = runner.run(command, on_started=book.on_started)
    finally:
        http_status = _read_status(probe)

    verdict = judge(outcome, options.timeout)
    if outcome.spawn_error:
        from cronlog.notes import redact

        # As a shell says it, so cron mail shows it; the command may name the key.
        log.warning(redact(outcome.spawn_error, secrets))
    ended_by_itself = outcome.returncode is not None and not (
        outcome.timed_out or outcome.forwarded_signal
    )
    if probe is not None and ended_by_itself:
        from cronlog import curl
        from cronlog.status_codes import DEFAULT_OK_STATUSES

        ok = options.ok_status or DEFAULT_OK_STATUSES
        verdict = Verdict(
            *curl.judge_http(
                outcome.exit_status, http_status, ok, probe.unprobed_reason
            )
        )
    return Finished(
        verdict,
        outcome.started_at,
        outcome.ended_at,
        outcome.duration_ms,
        (outcome.output_tail, outcome.output_bytes),
        http=http_status is not None,
    )


def _curl_probe(
    command: tuple[str, ...], state_dir: str | None, env: Mapping[str, str]
) -> CurlProbe | None:
    # curl.is_curl's test, made here so that no other job imports the curl module.
    if not command or os.path.basename(command[0]) != "curl":
        return None
    import tempfile

    from cronlog import curl

    probe = curl.prepare(
        command, state_dir or tempfile.gettempdir(), job_environment(env)
    )
    if probe.unprobed_reason:
        log.info("the HTTP status will not be checked: %s", probe.unprobed_reason)
    return probe


def _read_status(probe: CurlProbe | None) -> int | None:
    if probe is None:
        return None
    from cronlog import curl

    return curl.read_status(probe)  # removes cronlog's own header file


def _perform_request(
    options: RunOptions, env: Mapping[str, str], on_started: Any
) -> Finished:
    """--request: cronlog makes the HTTP request itself; the body goes to stdout."""
    from cronlog import http_job
    from cronlog.durations import MAX_SECONDS
    from cronlog.status_codes import DEFAULT_OK_STATUSES

    assert options.request is not None
    method, url = options.request
    # --timeout bounds the whole job, and here the request is the job.
    limit = options.request_timeout or MAX_SECONDS  # 0: no limit, as with curl
    if options.timeout:
        limit = min(limit, options.timeout)
    request = http_job.HttpRequest(
        method=method,
        url=url,
        headers=options.headers,
        data=options.data,
        json_body=options.json_body,
        timeout=limit,
        follow_redirects=options.location,
        ok_statuses=options.ok_status or DEFAULT_OK_STATUSES,
        tail_bytes=OUTPUT_TAIL_BYTES,
    )
    result = http_job.perform(request, job_environment(env), on_started=on_started)
    if result.reason and result.http_status is None:
        # No answer at all: say so on stderr, as `curl -sS` does, for cron's mail.
        log.warning("request failed: %s", result.reason)

    status = "failed" if result.reason else "success"
    return Finished(
        Verdict(status, result.reason, result.exit_status),
        result.started_at,
        result.ended_at,
        result.duration_ms,
        (result.body_tail, result.body_bytes),
        http=result.http_status is not None,
    )


class _StoppedBeforeStart(Exception):
    """A stop signal came while --report-start held the job back: it never ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def finished(self) -> Finished:
        name = _signal_name(self.signum)
        reason = f"terminated by {name} before the job started"
        now = _now()
        verdict = Verdict("failed", reason, exits.for_signal(self.signum))
        return Finished(verdict, now, now, 0, output=(b"", 0))


def _report_start(delivery: Delivery, base: dict[str, Any]) -> None:
    """--report-start: the run as `running`, held back at most REPORT_START_WAIT.

    Until the runner takes the stop signals over, one of them here would kill cronlog
    outright and leave the run as lost; it ends the wait instead, and is reported.
    """
    from cronlog import payload

    def stop(signum: int, frame: object) -> None:
        raise _StoppedBeforeStart(signum)

    previous = runner.catch_stop_signals(stop)
    try:
        running = {**_given(base), "status": "running", "started_at": _now()}
        delivery.start(running=payload.build(running))
        delivery.wait_for_start_report()
    finally:
        runner.restore_signals(previous)


def _check_line(options: RunOptions, title: str) -> None:
    """What the dashboard would refuse is refused now, before the job runs."""
    from cronlog import payload

    # A title of only spaces is as empty to the dashboard as no title at all.
    problem = payload.name_problem("--title", title if title.strip() else "")
    if options.log_url is not None:
        problem = problem or payload.url_problem(options.log_url)
    if problem:
        raise UsageError(problem)
    if options.request is not None and options.command:
        raise UsageError("give a command after `--` or --request METHOD URL, not both")
    if options.request is None and (
        options.headers or options.data or options.json_body
    ):
        raise UsageError("--header, --data and --json go with --request")
    if options.json_body is not None:
        import json

        try:
            json.loads(options.json_body)
        except ValueError as error:
            raise UsageError(f"--json is not valid JSON: {error}") from None


def _skip(delivery: Delivery, base: dict[str, Any], holder: dict[str, Any]) -> int:
    """--no-overlap found the previous run still going: report that, start nothing."""
    from cronlog import payload

    since = holder.get("started_at", "an unknown time")
    pid = f" (pid {holder['pid']})" if "pid" in holder else ""
    reason = f"skipped: the previous run{pid} has been running since {since}"
    now = _now()
    fields = {"status": "failed", "started_at": now, "ended_at": now, "duration_ms": 0}
    delivery.finish(payload.build({**_given(base), **fields, "notes": reason}))
    log.warning(reason)
    return exits.SKIPPED_OVERLAP


def _exit_on_stop_signals(exit_status: int) -> None:
    """Once the job has ended, a stop signal ends cronlog at once with the job's status.

    The finished run's report is already in its marker, so the next run delivers it.
    """

    def stop(signum: int, frame: object) -> None:
        name = _signal_name(signum)
        sys.stderr.write(
            f"cronlog: {name} while reporting; the next run sends the report\n"
        )
        _flush_standard_streams()
        os._exit(exit_status)

    runner.catch_stop_signals(stop)


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue  # the stream is gone: nothing left to flush


def _notes_for(finished: Finished, extra: str | None, secrets: list[str]) -> str | None:
    """A success says only what --notes says; a failure says why, then the output."""
    from cronlog import notes

    verdict = finished.verdict
    if verdict.status == "success":
        return notes.build(None, extra=extra, secrets=secrets)
    tail, total = finished.output
    cut = total - len(tail)
    output = notes.clean(tail, secrets, truncated=cut > 0)
    http_failure = finished.http and (verdict.reason or "").startswith("HTTP ")
    return notes.build(
        verdict.reason,
        output,
        extra=extra,
        earlier_bytes=cut,
        secrets=secrets,
        separator=": " if http_failure else "\n",
    )


def _prepare_state_dir(path: str) -> str | None:
    """The state directory, created 0700; a job still runs when it cannot be had."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as error:
        log.warning(
            "cannot use state directory %s (%s); set CRONLOG_STATE_DIR", path, error
        )
        return None
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


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields not given are left out of the report, never sent as null."""
    return {key: value for key, value in fields.items() if value is not None}


def _timestamp_or_none(value: object) -> datetime | None:
    """A marker's timestamp, or None where it holds anything else."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _now_text() -> str:
    """Now in UTC, to the millisecond, as markers and locks record it."""
    now = time.time()
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1000):03d}Z"
    )


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
