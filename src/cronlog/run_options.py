"""The options of `cronlog run`, defined once, and the lean parser of its hot path.

`cronlog run` sits in front of every cron job, and importing click costs more than
everything else cronlog does before the job starts. So the options live in one table:
cli.py turns it into the click command (help, errors, everything a person sees), and
`parse` reads an ordinary, well-formed `run` line with the same table without importing
click. Whatever `parse` is unsure of (`--help`, an unknown option, a bad value) it
leaves to click, so there is one behaviour and one set of error messages.
"""

from __future__ import annotations

from cronlog.durations import parse_duration
from cronlog.status_codes import parse_ok_statuses

# Plain classes and no runtime `typing`: `dataclasses` and `typing` would cost more to
# import than everything else `cronlog run` does before the job starts.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from cronlog.status_codes import OkStatuses


class Option:
    """One option of `cronlog run`: its flags, the field it fills, its help."""

    __slots__ = ("convert", "default", "dest", "flags", "help", "kind", "metavar")

    def __init__(
        self,
        flags: tuple[str, ...],
        dest: str,
        help: str,
        kind: str = "value",  # value | flag | count | multiple | pair
        metavar: str | None = None,
        convert: Callable[[str], Any] | None = None,
        default: Any = None,
    ) -> None:
        self.flags = flags
        self.dest = dest
        self.help = help
        self.kind = kind
        self.metavar = metavar
        self.convert = convert
        self.default = default

    @property
    def initial(self) -> Any:
        """The value before the command line is read."""
        if self.kind == "flag":
            return False
        return [] if self.kind == "multiple" else self.default


RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        ("--task-id",),
        "task_id",
        "The task ID (see `cronlog list-tasks`).",
        metavar="ID",
    ),
    Option(
        ("--title",),
        "title",
        "Task title; required for an ID that is not known.",
        metavar="TEXT",
    ),
    Option(
        ("--notes",),
        "notes",
        "Text put at the start of the report's notes.",
        metavar="TEXT",
    ),
    Option(
        ("--log-url",),
        "log_url",
        "Link to the full logs, sent as log_url.",
        metavar="URL",
    ),
    Option(
        ("--environment",),
        "environment",
        "Environment [dashboard default: production].",
        metavar="NAME",
    ),
    Option(
        ("--owner",),
        "owner",
        "Owner [dashboard default: Coolify Cron].",
        metavar="NAME",
    ),
    Option(
        ("--url",),
        "url",
        "Dashboard base URL [env CRONLOG_URL; config url].",
        metavar="URL",
    ),
    Option(
        ("--api-key-file",),
        "api_key_file",
        "Read the API key from this file [env CRONLOG_API_KEY, CHATKIT_API_KEY].",
        metavar="PATH",
    ),
    Option(
        ("--ca-bundle",),
        "ca_bundle",
        "CA certificates to trust [env SSL_CERT_FILE; default: system store].",
        metavar="PATH",
    ),
    Option(
        ("--allow-http",),
        "allow_http",
        "Allow plain http:// to a host other than loopback.",
        kind="flag",
    ),
    Option(
        ("--timeout",),
        "timeout",
        "Kill the job after this long (90s, 5m, 1h); exit 124. With --request it "
        "limits the request, as --request-timeout does (exit 28).",
        metavar="DURATION",
        convert=parse_duration,
    ),
    Option(
        ("--kill-after",),
        "kill_after",
        "After --timeout, wait this long between SIGTERM and SIGKILL [default 10s].",
        metavar="DURATION",
        convert=parse_duration,
        default=10.0,
    ),
    Option(
        ("--report-timeout",),
        "report_timeout",
        "Give up delivering the report after this long; it waits in the outbox "
        "[default 30s].",
        metavar="DURATION",
        convert=parse_duration,
    ),
    Option(
        ("--report-start",),
        "report_start",
        "Also report `running` as the job starts (waits at most 1s for it).",
        kind="flag",
    ),
    Option(
        ("--no-overlap",),
        "no_overlap",
        "Skip this run if the task's previous run is still going; exit 75.",
        kind="flag",
    ),
    Option(
        ("--ok-status",),
        "ok_status",
        "HTTP statuses that count as success for curl or --request "
        "[2xx], e.g. 200,204,3xx.",
        metavar="LIST",
        convert=parse_ok_statuses,
    ),
    Option(
        ("--request",),
        "request",
        "Make this HTTP request instead of running a command.",
        kind="pair",
        metavar="METHOD URL",
    ),
    Option(
        ("-H", "--header"),
        "headers",
        "Request header 'Name: value'; ${VAR} is read from the environment.",
        kind="multiple",
        metavar="HEADER",
    ),
    Option(("--data",), "data", "Request body, sent as is.", metavar="TEXT"),
    Option(
        ("--json",),
        "json_body",
        "JSON request body; sets Content-Type.",
        metavar="TEXT",
    ),
    Option(
        ("--request-timeout",),
        "request_timeout",
        "Time limit of --request [default 30s].",
        metavar="DURATION",
        convert=parse_duration,
        default=30.0,
    ),
    Option(
        ("--location",),
        "location",
        "Follow redirects of --request (never carrying headers to another origin).",
        kind="flag",
    ),
    Option(
        ("--dry-run",),
        "dry_run",
        "Run the job, print the report to stderr, send nothing.",
        kind="flag",
    ),
    Option(
        ("-v", "--verbose"),
        "verbose",
        "Say more on stderr; -vv for HTTP detail.",
        kind="count",
        default=0,
    ),
)


class RunOptions:
    """What one `cronlog run` line asked for; every field is an option's `dest`."""

    __slots__ = (
        "allow_http",
        "api_key_file",
        "ca_bundle",
        "command",
        "data",
        "dry_run",
        "environment",
        "headers",
        "json_body",
        "kill_after",
        "location",
        "log_url",
        "no_overlap",
        "notes",
        "ok_status",
        "owner",
        "report_start",
        "report_timeout",
        "request",
        "request_timeout",
        "task_id",
        "timeout",
        "title",
        "url",
        "verbose",
    )

    def __init__(
        self,
        *,
        command: tuple[str, ...],
        task_id: str,
        title: str | None = None,
        notes: str | None = None,
        log_url: str | None = None,
        environment: str | None = None,
        owner: str | None = None,
        url: str | None = None,
        api_key_file: str | None = None,
        ca_bundle: str | None = None,
        allow_http: bool = False,
        timeout: float | None = None,
        kill_after: float = 10.0,
        report_timeout: float | None = None,
        report_start: bool = False,
        no_overlap: bool = False,
        ok_status: OkStatuses | None = None,
        request: tuple[str, str] | None = None,
        headers: tuple[str, ...] = (),
        data: str | None = None,
        json_body: str | None = None,
        request_timeout: float = 30.0,
        location: bool = False,
        dry_run: bool = False,
        verbose: int = 0,
    ) -> None:
        self.command = command
        self.task_id = task_id
        self.title = title
        self.notes = notes
        self.log_url = log_url
        self.environment = environment
        self.owner = owner
        self.url = url
        self.api_key_file = api_key_file
        self.ca_bundle = ca_bundle
        self.allow_http = allow_http
        self.timeout = timeout
        self.kill_after = kill_after
        self.report_timeout = report_timeout
        self.report_start = report_start
        self.no_overlap = no_overlap
        self.ok_status = ok_status
        self.request = request
        self.headers = headers
        self.data = data
        self.json_body = json_body
        self.request_timeout = request_timeout
        self.location = location
        self.dry_run = dry_run
        self.verbose = verbose

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunOptions):
            return NotImplemented
        return all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"RunOptions({given})"


def parse(argv: Sequence[str]) -> RunOptions | None:
    """Read `run [OPTIONS] [--] COMMAND...`, or None to let click read it instead."""
    if not argv or argv[0] != "run":
        return None
    by_flag = {flag: option for option in RUN_OPTIONS for flag in option.flags}
    values: dict[str, Any] = {option.dest: option.initial for option in RUN_OPTIONS}

    position = 1
    while position < len(argv):
        word = argv[position]
        if word == "--" or not word.startswith("-") or word == "-":
            break
        name, has_value, inline = word.partition("=")
        option = by_flag.get(name)
        if option is None:
            return None

        if option.kind in ("flag", "count"):
            if has_value:
                return None
            values[option.dest] = (
                values[option.dest] + 1 if option.kind == "count" else True
            )
            position += 1
            continue

        taken = 2 if option.kind == "pair" else 1
        given = (
            [inline] if has_value else list(argv[position + 1 : position + 1 + taken])
        )
        if (has_value and option.kind == "pair") or len(given) < taken:
            return None
        try:
            converted = [option.convert(v) if option.convert else v for v in given]
        except ValueError:
            return None

        if option.kind == "multiple":
            values[option.dest].append(converted[0])
        else:
            values[option.dest] = (
                tuple(converted) if option.kind == "pair" else converted[0]
            )
        position += (0 if has_value else taken) + 1

    command = tuple(
        argv[position + 1 :]
        if argv[position : position + 1] == ["--"]
        else argv[position:]
    )
    if not values["task_id"] or not (command or values["request"]):
        return None
    values["headers"] = tuple(values["headers"])
    return RunOptions(command=command, **values)
