"""One `cronlog run`: check the line, start the job, judge it, report it.

This is the one module that knows both the runner (the child process) and the delivery
of reports. Its order is the promise cronlog makes: every check that can refuse a line
runs before the job starts; the job then runs exactly once whatever the dashboard does;
and the job's exit status is cronlog's, whatever happens to the report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronlog import config, curl, exits, locks, notes, runner, tasks
from cronlog.delivery import Delivery
from cronlog.errors import StateError
from cronlog.run_options import RunOptions
from cronlog.status_codes import DEFAULT_OK_STATUSES

log = logging.getLogger(__name__)

OUTPUT_TAIL_BYTES = (
    64 * 1024
)  # several times NOTES_LIMIT, so redaction sees whole lines
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

    base = {
        "task_id": options.task_id,
        "task_title": title,
        "log_url": options.log_url,
        "environment": settings.environment.value,
        "owner": settings.owner.value,
    }
    delivery = Delivery(settings, state_dir, dry_run=options.dry_run)

    secrets = [settings.api_key.value] if settings.api_key.value else []
    if options.request is not None:
        from cronlog import http_job

        http_job.expand_headers(options.headers, env)  # refuse a bad header up front
        secrets += http_job.referenced_values(options.headers, env)

    lock = None
    if options.no_overlap and state_dir is not None:
        lock = locks.TaskLock(state_dir, options.task_id)
        if not lock.acquire(_now_text()):
            return _skip(delivery, base, lock.holder())

    lost = _lost_runs(state_dir, base) if state_dir else []
    marker = _mark_in_flight(state_dir, delivery.run_id, base)
    try:
        if options.report_start:
            running = {**_given(base), "status": "running", "started_at": _now()}
            delivery.start(running=running)
            delivery.wait_for_start_report()

        if options.request is not None:
            finished = _perform_request(options, env, delivery)
        else:
            finished = _run_command(options, env, state_dir, delivery)

        fields = {
            **base,
            "status": finished.verdict.status,
            "started_at": finished.started_at,
            "ended_at": finished.ended_at,
            "duration_ms": finished.duration_ms,
            "notes": _notes_for(finished, options.notes, secrets),
        }
        try:
            delivery.finish(_given(fields), lost=[record for _, record in lost])
        except Exception as error:  # the job has run: its exit status stands
            log.warning("internal error while reporting: %r", error)
        else:
            for abandoned, _ in lost:
                abandoned.resolve()
        return finished.verdict.exit_status
    finally:
        if marker is not None:
            marker.remove()
        if lock is not None:
            lock.release()


@dataclass(frozen=True)
class Finished:
    """A job that has run, however it ran (a child process or an HTTP request)."""

    verdict: Verdict
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    output_tail: bytes
    output_bytes: int
    http: bool = False  # an HTTP job's notes read `HTTP 500: <body>`, as the guide's


def _run_command(
    options: RunOptions,
    env: Mapping[str, str],
    state_dir: Path | None,
    delivery: Delivery,
) -> Finished:
    """Run the command; a curl command is judged by the HTTP status it got, too."""
    probe = None
    if curl.is_curl(options.command):
        import tempfile

        workdir = state_dir or Path(tempfile.gettempdir())
        probe = curl.prepare(options.command, workdir, job_environment(env))

    command = runner.Command(
        argv=probe.argv if probe else options.command,
        env=job_environment(env),
        timeout=options.timeout,
        kill_after=options.kill_after,
        tail_bytes=OUTPUT_TAIL_BYTES,
    )
    try:
        outcome = runner.run(command, on_started=delivery.start)
    finally:
        http_status = curl.read_status(probe) if probe else None  # removes the file

    verdict = judge(outcome, options.timeout)
    ended_by_itself = outcome.returncode is not None and not (
        outcome.timed_out or outcome.forwarded_signal
    )
    if probe is not None and ended_by_itself:
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
        outcome.output_tail,
        outcome.output_bytes,
        http=http_status is not None,
    )


def _perform_request(
    options: RunOptions, env: Mapping[str, str], delivery: Delivery
) -> Finished:
    """--request: cronlog makes the HTTP request itself; the body goes to stdout."""
    from cronlog import http_job

    assert options.request is not None
    method, url = options.request
    request = http_job.HttpRequest(
        method=method,
        url=url,
        headers=options.headers,
        data=options.data,
        json_body=options.json_body,
        timeout=options.request_timeout,
        follow_redirects=options.location,
        ok_statuses=options.ok_status or DEFAULT_OK_STATUSES,
        tail_bytes=OUTPUT_TAIL_BYTES,
    )
    result = http_job.perform(request, job_environment(env), on_started=delivery.start)

    status = "failed" if result.reason else "success"
    return Finished(
        Verdict(status, result.reason, result.exit_status),
        result.started_at,
        result.ended_at,
        result.duration_ms,
        result.body_tail,
        result.body_bytes,
        http=result.http_status is not None,
    )


def judge(outcome: runner.Outcome, timeout: float | None = None) -> Verdict:
    """Success is exit 0; anything else is a failure with one line saying why."""
    exit_status = outcome.exit_status
    if outcome.spawn_error:
        return Verdict("failed", outcome.spawn_error, exit_status)
    if outcome.forwarded_signal:  # cronlog itself was told to stop: that comes first
        name = _signal_name(outcome.forwarded_signal)
        return Verdict("failed", f"terminated by {name}", exit_status)
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


def state_dir_or_fail(settings: config.Settings) -> Path:
    """For commands that are nothing without the state directory (flush, history)."""
    path = _prepare_state_dir(settings.state_dir.value)
    if path is None:
        raise StateError(f"cannot use state directory {settings.state_dir.value}")
    return path


def _skip(delivery: Delivery, base: dict[str, Any], holder: dict[str, Any]) -> int:
    """--no-overlap found the previous run still going: report that, start nothing."""
    since = holder.get("started_at", "an unknown time")
    pid = f" (pid {holder['pid']})" if "pid" in holder else ""
    reason = f"skipped: the previous run{pid} has been running since {since}"
    now = _now()
    delivery.finish(
        {
            **_given(base),
            "status": "failed",
            "started_at": now,
            "ended_at": now,
            "duration_ms": 0,
            "notes": reason,
        }
    )
    log.warning(reason)
    return exits.SKIPPED_OVERLAP


def _lost_runs(
    state_dir: Path, base: dict[str, Any]
) -> list[tuple[locks.AbandonedRun, dict[str, Any]]]:
    """Runs of this task whose cronlog died before reporting, as failed reports."""
    lost = []
    for abandoned in locks.abandoned_runs(state_dir, base["task_id"]):
        record = abandoned.record
        started = record.get("started_at")
        pid = record.get("pid", "?")
        fields = {
            **_given(base),
            "status": "failed",
            "notes": f"outcome unknown: cronlog (pid {pid}) was killed during this "
            "run, so whether the job finished is not known",
        }
        if started:
            fields["started_at"] = started
        run_id = record.get("run_id") or abandoned.path.stem
        lost.append((abandoned, {"run_id": run_id, "fields": fields}))
    return lost


def _mark_in_flight(
    state_dir: Path | None, run_id: str, base: dict[str, Any]
) -> locks.RunMarker | None:
    if state_dir is None:
        return None
    record = {
        "run_id": run_id,
        "task_id": base["task_id"],
        "started_at": _now_text(),
        "pid": os.getpid(),
    }
    try:
        return locks.RunMarker(state_dir, record)
    except OSError as error:
        log.warning("cannot mark the run in %s: %s", state_dir, error)
        return None


def _notes_for(finished: Finished, extra: str | None, secrets: list[str]) -> str | None:
    """A success says only what --notes says; a failure says why, then the output."""
    verdict = finished.verdict
    if verdict.status == "success":
        return notes.build(None, extra=extra, secrets=secrets)
    cut = finished.output_bytes - len(finished.output_tail)
    output = notes.clean(finished.output_tail, secrets, truncated=cut > 0)
    http_failure = finished.http and (verdict.reason or "").startswith("HTTP ")
    separator = ": " if http_failure else "\n"
    return notes.build(
        verdict.reason,
        output,
        extra=extra,
        earlier_bytes=cut,
        secrets=secrets,
        separator=separator,
    )


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


def _now() -> datetime:
    return datetime.now(UTC)


def _now_text() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
