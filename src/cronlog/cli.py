"""The click app: every command's options, help and output. It parses and prints;
the work is done by jobs, reporter, outbox, store and server.

Each command's docstring is its `--help`. Errors reach `run_cli`, which prints one
`cronlog: error:` line and returns the exit status (see exits.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from cronlog import __version__, config, delivery, exits, jobs, tasks
from cronlog.errors import CronlogError, StateError, UsageError, run_with_boundary
from cronlog.run_options import RUN_OPTIONS, RunOptions

TEST_TASK_ID, TEST_TASK_TITLE = "test-task", "Test Task"  # the guide's manual test
WRAPPING_COLUMNS = {"TITLE", "NOTES", "VALUE", "SOURCE"}
UNBROKEN_COLUMNS = {"ID", "TASK", "SCHEDULE", "STATUS", "RUN ID"}
STATUS_STYLES = {
    "success": "[green]success[/]",
    "failed": "[bold red]failed[/]",
    "running": "[yellow]running[/]",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="cronlog")
def app() -> None:
    """Run scheduled jobs and report every run to the Schedulers dashboard.

    \b
    A crontab line with cronlog:
      */5 * * * * cronlog run --task-id tradein-email-retry -- /opt/jobs/email-retry.sh

    With no dashboard configured, runs are kept in a local store: `cronlog history`.
    """


class _Converted(click.ParamType[Any]):
    """A click type around one of cronlog's own parsers (durations, status lists)."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _with_run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Attach RUN_OPTIONS, the table the lean parser also reads, as click options."""
    for option in reversed(RUN_OPTIONS):
        settings: dict[str, Any] = {"help": option.help}
        if option.kind == "flag":
            settings["is_flag"] = True
        elif option.kind == "count":
            settings["count"] = True
        else:
            settings["metavar"] = option.metavar
            if option.convert:
                settings["type"] = _Converted(option.metavar or "VALUE", option.convert)
            settings["default"] = option.default
            settings["multiple"] = option.kind == "multiple"
            settings["nargs"] = 2 if option.kind == "pair" else 1
        function = click.option(*option.flags, option.dest, **settings)(function)
    return function


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    epilog=f"Exit status: the job's own; {exits.HTTP_ERROR} an HTTP status --ok-status "
    f"does not accept; {exits.CURL_NOT_RESOLVED}, {exits.CURL_NOT_CONNECTED}, "
    f"{exits.CURL_TIMED_OUT}, {exits.CURL_TLS_HANDSHAKE}, "
    f"{exits.CURL_CERTIFICATE_NOT_TRUSTED} curl's numbers for a --request that "
    f"failed; {exits.TIMED_OUT} timed out; {exits.NOT_EXECUTABLE} not executable; "
    f"{exits.NOT_FOUND} not found; {exits.SIGNAL_BASE}+N killed by signal N; "
    f"{exits.SKIPPED_OVERLAP} skipped (--no-overlap); {exits.USAGE} bad line or "
    f"config; {exits.INTERNAL} cronlog itself failed.",
)
@_with_run_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_command(command: tuple[str, ...], **values: Any) -> None:
    """Run COMMAND, time it, judge it and report the run.

    \b
    In a crontab (no shell unless you ask for one: -- sh -c '...'):
      */5 * * * * cronlog run --task-id tradein-email-retry -- /opt/jobs/email-retry.sh

    The job's output passes through unchanged; cronlog's own messages go to stderr,
    prefixed `cronlog:`. A failed run's notes say why and end with the job's last
    output. If the dashboard cannot be reached, the report waits in the outbox and
    the next run (or `cronlog flush`) delivers it; the job's exit status never changes.
    """
    if not values["task_id"]:
        raise UsageError(
            "missing --task-id (see `cronlog list-tasks` for the known IDs)"
        )
    if not command and not values["request"]:
        raise UsageError(
            "nothing to run: give a command after `--`, or --request METHOD URL"
        )

    values["headers"] = tuple(values["headers"])
    options = RunOptions(command=command, **values)
    _configure(options.verbose)
    raise click.exceptions.Exit(jobs.run_job(options, os.environ))


@app.command("list-tasks")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_tasks(as_json: bool) -> None:
    """List the known task IDs with their schedule and next run time.

    \b
      cronlog list-tasks
      cronlog list-tasks --json | jq -r '.[].id'
    """
    settings = config.resolve({}, os.environ)
    known = tasks.registry(settings.tasks)
    now = datetime.now(UTC)

    rows = []
    for task in known.values():
        tasks.check_schedule(task)
        upcoming = tasks.next_run(task, now)
        rows.append(
            {
                "id": task.id,
                "title": task.title,
                "schedule": task.schedule,
                "timezone": task.timezone,
                "frequency": task.frequency,
                "next_run": upcoming.isoformat() if upcoming else None,
            }
        )

    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["ID", "TITLE", "SCHEDULE", "TIMEZONE", "NEXT RUN"]
    table = [
        [
            r["id"],
            r["title"],
            r["schedule"] or "-",
            r["timezone"],
            _local_time(r["next_run"]),
        ]
        for r in rows
    ]
    _print_table(headers, table)


@app.command("test-post")
@click.option("--url", help="Dashboard base URL [env CRONLOG_URL; config url].")
@click.option("--api-key-file", help="Read the API key from this file.", metavar="PATH")
@click.option("--ca-bundle", help="CA certificates to trust.", metavar="PATH")
@click.option("--allow-http", is_flag=True, help="Allow plain http:// to another host.")
@click.option("--task-id", default=TEST_TASK_ID, show_default=True)
@click.option(
    "--title",
    help="[default: the known task's title; Test Task for test-task]",
)
@click.option(
    "--status",
    type=click.Choice(["success", "failed", "running"]),
    default="success",
    show_default=True,
)
@click.option(
    "--duration-ms", type=click.IntRange(min=0), default=1234, show_default=True
)
@click.option("--notes", default="Manual test from CLI", show_default=True)
@click.option("-v", "--verbose", count=True, help="Say more; -vv for HTTP detail.")
def test_post(**values: Any) -> None:
    """Send one test run, as the guide's manual test does, and print the answer.

    \b
      export CRONLOG_URL=https://trade.rezult.co
      cronlog test-post --api-key-file /etc/cronlog/api-key

    Exits 1 with what to fix when the dashboard refuses the report or cannot be
    reached. With no dashboard configured, the run goes to the local store.
    """
    _configure(values["verbose"])
    settings = config.resolve(_flags(values), os.environ)
    for warning in settings.warnings:
        _warn(warning)
    tasks.check_task_id(values["task_id"])
    title = values["title"]
    if title is None and values["task_id"] == TEST_TASK_ID:
        title = TEST_TASK_TITLE
    known = tasks.registry(settings.tasks)
    fields = {
        "task_id": values["task_id"],
        "task_title": tasks.title_for(values["task_id"], title, known),
        "status": values["status"],
        "duration_ms": values["duration_ms"],
        "notes": values["notes"],
    }

    from pydantic import ValidationError

    from cronlog.models import TaskRun
    from cronlog.reporter import Report

    try:
        run = TaskRun(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        option = "--title" if name == "task_title" else "--" + name.replace("_", "-")
        raise UsageError(f"{option}: {first['msg']}") from None
    state_dir = None if settings.ingest_url else jobs.state_dir_or_fail(settings)
    answer = delivery.send_now(settings, Report.new(run), state_dir)
    click.echo(answer if isinstance(answer, str) else json.dumps(answer))


@app.command("history")
@click.option("--task-id", help="Only this task's runs.")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def history(task_id: str | None, limit: int, as_json: bool) -> None:
    """List runs kept in the local store, newest first.

    \b
      cronlog history --task-id tradein-auto-submit --limit 5
    """
    from cronlog.store import open_store

    settings = config.resolve({}, os.environ)
    store = open_store(delivery.store_in(jobs.state_dir_or_fail(settings)))
    try:
        runs = store.runs(task_id=task_id, limit=limit)
    finally:
        store.close()

    if as_json:
        click.echo(json.dumps(runs, indent=2, ensure_ascii=False))
        return
    headers = ["STARTED", "TASK", "STATUS", "DURATION", "NOTES"]
    table = [
        [
            _short_time(run.get("started_at")),
            run["task_id"],
            run["status"],
            _milliseconds(run.get("duration_ms")),
            (run.get("notes") or "").split("\n", 1)[0][:60],
        ]
        for run in runs
    ]
    _print_table(headers, table)
    if runs:
        return
    if settings.ingest_url:
        _warn(f"no runs in the local store: runs are reported to {settings.ingest_url}")
    elif task_id:
        known = tasks.registry(settings.tasks)
        close = None if task_id in known else tasks.suggest(task_id, known)
        hint = f" (did you mean {close!r}?)" if close else ""
        _warn(f"no runs of {task_id!r} in the local store{hint}")
    else:
        _warn(
            "no runs recorded yet; try: cronlog run --task-id sync-price-grid -- true"
        )


@app.command("flush")
@click.option("--url", help="Dashboard base URL [env CRONLOG_URL; config url].")
@click.option("--api-key-file", help="Read the API key from this file.", metavar="PATH")
@click.option("--ca-bundle", help="CA certificates to trust.", metavar="PATH")
@click.option("--allow-http", is_flag=True, help="Allow plain http:// to another host.")
@click.option(
    "--retry-rejected",
    is_flag=True,
    help="First queue again the reports the dashboard refused (see cronlog outbox).",
)
@click.option("-v", "--verbose", count=True, help="Say more; -vv for HTTP detail.")
def flush_command(**values: Any) -> None:
    """Deliver every report waiting in the outbox, oldest first.

    \b
      cronlog flush && cronlog outbox

    Reports whose cronlog was stopped while delivering them are sent too. Exits 1
    when reports are still waiting (the dashboard is still down) or the dashboard
    refused some for good (400, 413, 422): those are kept, listed by `cronlog
    outbox`, and sent again by `cronlog flush --retry-rejected`.
    """
    _configure(values["verbose"])
    settings = config.resolve(_flags(values), os.environ)
    for warning in settings.warnings:
        _warn(warning)
    if settings.ingest_url is None:
        raise UsageError("no dashboard URL to deliver to: set --url or CRONLOG_URL")

    requeued, result = delivery.flush_outbox(
        settings,
        jobs.state_dir_or_fail(settings),
        retry_rejected=values["retry_rejected"],
    )

    if values["retry_rejected"]:
        _warn(f"queued again: {_reports(requeued)}")
    _warn(
        f"delivered {result.delivered}, waiting {result.remaining}, "
        f"rejected {result.rejected}"
    )
    if result.remaining:
        why = result.error or "another cronlog is delivering them"
        raise CronlogError(f"{_reports(result.remaining)} still waiting: {why}")
    if result.rejected:
        kept = "it is" if result.rejected == 1 else "they are"
        raise CronlogError(
            f"the dashboard refused {_reports(result.rejected)}; {kept} kept "
            "(cronlog outbox shows why) and cronlog flush --retry-rejected resends them"
        )


@app.command("outbox")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def outbox_command(as_json: bool) -> None:
    """List the reports waiting for the dashboard, and those it refused for good.

    \b
      cronlog outbox --json | jq '.[] | select(.state == "rejected") | .reason'

    A report kept by a cronlog stopped while delivering it is listed as kept, in its
    run marker; `cronlog flush`, or the task's next run, sends it. Listing changes
    nothing: an unreadable file is shown with the reason, and flush moves it aside.
    """
    from collections import Counter

    from cronlog.outbox import listing

    _configure(0)
    settings = config.resolve({}, os.environ)
    state_dir = jobs.state_dir_or_fail(settings)
    entries = listing(state_dir, delivery.outbox_in(state_dir))

    rows = [
        {
            "state": state,
            "run_id": entry.run_id,
            "queued_at": entry.queued_at,
            "task_id": entry.body.get("task_id"),
            "status": entry.body.get("status"),
            "reason": entry.reason,
            "path": str(entry.path),
        }
        for state, entry in entries
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["STATE", "QUEUED", "TASK", "STATUS", "RUN ID", "REASON"]
    table = [
        [
            r["state"],
            _short_time(r["queued_at"]),
            r["task_id"],
            r["status"],
            r["run_id"],
            r["reason"],
        ]
        for r in rows
    ]
    _print_table(headers, table)

    count = Counter(state for state, _entry in entries)
    kept = f" ({count['kept']} kept by a stopped cronlog)" if count["kept"] else ""
    unreadable = f", {count['unreadable']} unreadable" if count["unreadable"] else ""
    waiting = _reports(count["waiting"] + count["kept"])
    _warn(f"{waiting} waiting{kept}, {count['rejected']} rejected{unreadable}")


@app.command("config")
def config_command() -> None:
    """Show each setting, its value and where it came from (the key masked)."""
    settings = config.resolve({}, os.environ)
    rows = [
        ["config file", str(settings.config_file or "(none)"), ""],
        [
            "url",
            settings.url.value or "(none: runs go to the local store)",
            settings.url.source,
        ],
        ["ingest url", settings.ingest_url or "-", ""],
        ["api key", config.mask(settings.api_key.value), settings.api_key.source],
        [
            "environment",
            settings.environment.value or "(dashboard default)",
            settings.environment.source,
        ],
        ["owner", settings.owner.value or "(dashboard default)", settings.owner.source],
        [
            "report timeout",
            f"{settings.report_timeout.value:g}s",
            settings.report_timeout.source,
        ],
        [
            "ca bundle",
            settings.ca_bundle.value or "(system store)",
            settings.ca_bundle.source,
        ],
        [
            "allow http",
            str(settings.allow_http.value).lower(),
            settings.allow_http.source,
        ],
        ["state dir", str(settings.state_dir.value), settings.state_dir.source],
    ]
    _print_table(["SETTING", "VALUE", "SOURCE"], rows)
    for warning in settings.warnings:
        _warn(warning)


@app.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True)
@click.option(
    "--db", help="SQLite file or postgresql:// URL [default: the local store]."
)
@click.option("--api-key-file", help="Read the API key from this file.", metavar="PATH")
def serve_command(
    host: str, port: int, db: str | None, api_key_file: str | None
) -> None:
    """Serve the ingest endpoint and the Schedulers page on this machine.

    \b
      cronlog serve --port 8787 &
      export CRONLOG_URL=http://127.0.0.1:8787
      cronlog run --task-id tradein-auto-submit -- true
      open http://127.0.0.1:8787/
    """
    _configure(1)  # one INFO line a request
    settings = config.resolve({"api_key_file": api_key_file}, os.environ)
    for warning in settings.warnings:
        _warn(warning)
    location = db or delivery.store_in(jobs.state_dir_or_fail(settings))
    known = tasks.registry(settings.tasks)

    from cronlog.server import serve

    try:
        serve(
            host=host,
            port=port,
            db=location,
            api_key=settings.api_key.value,
            tasks=list(known.values()),
        )
    except StateError as error:  # raised only while the store is opened
        if db is None:
            raise  # the state directory's own store: exit 125, as for other commands
        raise UsageError(f"Invalid value for '--db': {error}") from None


def _flags(values: dict[str, Any]) -> dict[str, Any]:
    names = ("url", "api_key_file", "ca_bundle", "allow_http")
    return {name: values.get(name) or None for name in names}


def _reports(count: int) -> str:
    return "1 report" if count == 1 else f"{count} reports"


def _print_table(headers: list[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; plain aligned columns in a pipe or with NO_COLOR."""
    cells = [[str(cell) if cell is not None else "-" for cell in row] for row in rows]
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        from rich.console import Console
        from rich.table import Table

        # IDs never break; free text wraps at words; times and zones may fold.
        table = Table(box=None, header_style="bold")
        for header in headers:
            if header in WRAPPING_COLUMNS:
                table.add_column(header, min_width=14)
            else:
                table.add_column(
                    header, no_wrap=header in UNBROKEN_COLUMNS, overflow="fold"
                )
        for row in cells:
            table.add_row(*(STATUS_STYLES.get(cell, cell) for cell in row))
        Console().print(table)
        return

    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _local_time(value: str | None) -> str:
    """A time in the zone it was given in (the TIMEZONE column names it)."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")


def _milliseconds(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def _warn(message: str) -> None:
    click.echo(f"cronlog: {message}", err=True)


def _configure(verbose: int) -> None:
    from cronlog import logs

    logs.set_verbosity(verbose)
    logs.configure()


def run_cli(args: Sequence[str]) -> int:
    """Run the click app; every error becomes one line and an exit status."""

    def invoke() -> int:
        try:
            # Bare `cronlog` is a question: answer it with the help, exit 0.
            status = app.main(
                list(args) or ["--help"], prog_name="cronlog", standalone_mode=False
            )
            # Outside standalone mode click returns an Exit's code (run's job status).
            return status if isinstance(status, int) else exits.OK
        except click.exceptions.Exit as done:
            return done.exit_code
        except click.UsageError as error:
            command = error.ctx.command_path if error.ctx else "cronlog"
            raise UsageError(
                f"{error.format_message()} (see `{command} --help`)"
            ) from None
        except click.ClickException as error:
            raise CronlogError(error.format_message()) from None
        except click.Abort:
            return exits.for_signal(2)

    return run_with_boundary(invoke)
