"""Where each setting comes from: flags, then environment, then the config file, then
defaults.

Cron gives a job an almost empty environment, so the config file is the usual home of
the dashboard URL and key. Every resolved value remembers its source, which
`cronlog config` shows. A bad file or value raises `ConfigError` before any job starts.
The API key is never taken from the command line, where `ps` would show it.
"""

from __future__ import annotations

import os
import stat
import sys

from cronlog import toml_subset
from cronlog.durations import parse_duration
from cronlog.errors import ConfigError, UsageError
from cronlog.payload import NAME_LIMIT
from cronlog.tasks import check_task_id

# No runtime `typing`, `dataclasses`, `pathlib` or `urllib` (URLs are split by hand),
# and `tomllib` only for a file outside the usual subset (toml_subset.py): this runs
# before every job, where imports cost more than the rest of cronlog's work. Paths
# are plain strings for the same reason.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

INGEST_PATH = "/api/scheduled-tasks/ingest"
DEFAULT_REPORT_TIMEOUT = 30.0
SYSTEM_CONFIG = "/etc/cronlog/config.toml"
SYSTEM_STATE_DIR = "/var/lib/cronlog"
# Where zoneinfo finds the system's time zones when PYTHONTZPATH is not set.
TZ_DIRS = ("/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo",
           "/etc/zoneinfo")  # fmt: skip
CRON_NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                  "@hourly")  # fmt: skip

# The config file's keys, each with the environment variable that overrides it (the
# key's own variables, CRONLOG_API_KEY then CHATKIT_API_KEY, are resolved apart).
FILE_KEYS: dict[str, str | None] = {
    "url": "CRONLOG_URL",
    "api_key": None,
    "api_key_file": "CRONLOG_API_KEY_FILE",
    "environment": "CRONLOG_ENVIRONMENT",
    "owner": "CRONLOG_OWNER",
    "report_timeout": "CRONLOG_REPORT_TIMEOUT",
    "ca_bundle": "CRONLOG_CA_BUNDLE",
    "allow_http": "CRONLOG_ALLOW_HTTP",
    "state_dir": "CRONLOG_STATE_DIR",
    "tasks": None,
}
TASK_KEYS = ("title", "schedule", "timezone", "frequency")
API_KEY_VARIABLES = ("CRONLOG_API_KEY", "CHATKIT_API_KEY")
KEY_FILE_LIMIT = 4096
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # as split_url gives them
URL_EXAMPLE = "write e.g. https://trade.rezult.co"
PORT_LIMIT = 65535
HOST_NAME_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
)
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class Value:
    """A resolved setting and where it came from (`--url`, `CRONLOG_URL`, a file...)."""

    __slots__ = ("source", "value")

    def __init__(self, value: Any, source: str) -> None:
        self.value = value
        self.source = source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value):
            return NotImplemented
        return (self.value, self.source) == (other.value, other.source)

    def __hash__(self) -> int:
        return hash((self.value, self.source))

    def __repr__(self) -> str:
        return f"Value({self.value!r}, {self.source!r})"


class Settings:
    """Every setting `cronlog run` needs, resolved. Paths are strings."""

    __slots__ = (
        "allow_http",
        "api_key",
        "ca_bundle",
        "config_file",
        "environment",
        "owner",
        "report_timeout",
        "state_dir",
        "tasks",
        "url",
    )

    def __init__(
        self,
        *,
        url: Value,
        api_key: Value,
        environment: Value,
        owner: Value,
        report_timeout: Value,
        ca_bundle: Value,
        allow_http: Value,
        state_dir: Value,
        config_file: str | None,
        tasks: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.environment = environment
        self.owner = owner
        self.report_timeout = report_timeout
        self.ca_bundle = ca_bundle
        self.allow_http = allow_http
        self.state_dir = state_dir
        self.config_file = config_file
        self.tasks = {} if tasks is None else tasks

    @property
    def ingest_url(self) -> str | None:
        return ingest_url(self.url.value) if self.url.value else None

    @property
    def warnings(self) -> list[str]:
        return list(_warnings_for(self))


def resolve(flags: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Resolve every setting. `flags` holds only the flags that were given."""
    config_file = find_config_file(env)
    document = load_config_file(config_file) if config_file else {}
    where = f"config file {config_file}"

    def pick(name: str, flag: str | None = None, default: Any = None) -> Value:
        variable = FILE_KEYS[name]
        if flag and flags.get(name) is not None:
            return Value(flags[name], flag)
        if variable and env.get(variable):
            return Value(env[variable], variable)
        if name in document:
            return Value(document[name], where)
        return Value(default, "default")

    url = pick("url", "--url")
    allow_http = pick("allow_http", "--allow-http", False)
    allow_http = Value(_as_bool(allow_http), allow_http.source)
    if url.value:
        url = Value(validate_url(url.value, url.source, allow_http.value), url.source)

    report_timeout = pick("report_timeout", "--report-timeout", DEFAULT_REPORT_TIMEOUT)
    seconds = _duration(str(report_timeout.value), report_timeout.source)
    if seconds <= 0:
        raise ConfigError(f"{report_timeout.source}: the report timeout must be over 0")
    report_timeout = Value(seconds, report_timeout.source)

    state_dir = pick("state_dir", None, None)
    state_dir = (
        Value(os.path.expanduser(state_dir.value), state_dir.source)
        if state_dir.value
        else Value(default_state_dir(env), "default")
    )

    ca_bundle = pick("ca_bundle", "--ca-bundle")
    if ca_bundle.value:
        ca_bundle = Value(os.path.expanduser(ca_bundle.value), ca_bundle.source)
        if not os.access(ca_bundle.value, os.R_OK):
            raise ConfigError(
                f"{ca_bundle.source}: cannot read CA bundle {ca_bundle.value}"
            )

    return Settings(
        url=url,
        api_key=_resolve_api_key(flags, env, document, where),
        environment=_check_name(pick("environment", "--environment"), "environment"),
        owner=_check_name(pick("owner", "--owner"), "owner"),
        report_timeout=report_timeout,
        ca_bundle=ca_bundle,
        allow_http=allow_http,
        state_dir=state_dir,
        config_file=config_file,
        tasks=document.get("tasks", {}),
    )


def find_config_file(env: Mapping[str, str]) -> str | None:
    """`$CRONLOG_CONFIG` (which must exist), else the user's file, else the system's."""
    if env.get("CRONLOG_CONFIG"):
        path = os.path.expanduser(env["CRONLOG_CONFIG"])
        if not os.path.isfile(path):
            raise ConfigError(f"CRONLOG_CONFIG names {path}, which is not a file")
        return path

    config_home = env.get("XDG_CONFIG_HOME") or _home_path(env, ".config")
    if config_home:
        user_file = os.path.join(config_home, "cronlog", "config.toml")
        if os.path.isfile(user_file):
            return user_file
    return SYSTEM_CONFIG if os.path.isfile(SYSTEM_CONFIG) else None


def load_config_file(path: str) -> dict[str, Any]:
    """Parse and check the TOML file; every problem names the file and the key."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    if text.startswith("\ufeff"):
        # Windows editors save one; TOML forbids it, and tomllib would not say so.
        raise ConfigError(
            f"config file {path} starts with a byte-order mark; save it as UTF-8 "
            "without BOM"
        )

    # The usual file is read without tomllib's imports; tomllib judges anything else.
    document = toml_subset.loads(text)
    if document is None:
        import tomllib

        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(
                f"config file {path} is not valid TOML: {error}"
            ) from None

    for key, value in document.items():
        if key not in FILE_KEYS:
            known = ", ".join(FILE_KEYS)
            raise ConfigError(
                f"config file {path}: unknown key {key!r} (known: {known})"
            )
        expected = _expected_type(key)
        if not isinstance(value, expected):
            kind = " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"config file {path}: {key!r} must be a {kind}")

    if "api_key" in document and "api_key_file" in document:
        raise ConfigError(f"config file {path}: set api_key or api_key_file, not both")
    document["tasks"] = _check_tasks(path, document.get("tasks", {}))
    return document


def validate_url(url: str, source: str, allow_http: bool) -> str:
    """A dashboard base URL: scheme, host, optional port and path, nothing else.

    Plain http only to loopback or with --allow-http. The URL appears in messages and
    logs, so credentials in it are refused rather than printed.
    """
    url = url.strip()
    scheme, host, _port, _path = split_url(url, source)

    if scheme == "http" and not allow_http and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{source}: {url} is plain http to another host, which would send the API "
            "key unencrypted; use https, or pass --allow-http (CRONLOG_ALLOW_HTTP=1)"
        )
    return url


def split_url(url: str, source: str) -> tuple[str, str, int | None, str]:
    """Scheme, host, port and path of a dashboard URL; ConfigError says what is wrong.

    Written for exactly the URLs cronlog takes, because importing `urllib.parse` (with
    `re`, `enum` and `ipaddress`) costs more before each job than all the rest of
    resolving. Scheme and host come back lowercased, and an IPv6 host without its
    brackets, as `urllib.parse.urlsplit` gives them; a test holds the two to agree.
    """
    authority = url.partition("://")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    if "@" in authority:
        host = authority.rpartition("@")[2]
        raise ConfigError(
            f"{source}: the dashboard URL holds a user name or password (...@{host}), "
            "which cronlog would show in its messages; put the credentials in a "
            "reverse proxy in front of the dashboard, or use the API key"
        )
    if any(character.isspace() or not character.isprintable() for character in url):
        raise ConfigError(
            f"{source}: the dashboard URL {url!r} holds a space or a control "
            f"character ({URL_EXAMPLE})"
        )
    if "?" in url or "#" in url:
        base = url.partition("?")[0].partition("#")[0]
        raise ConfigError(
            f"{source}: the dashboard URL has a query or fragment after {base}; "
            "give only the base URL, without ? or #"
        )

    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    authority, slash, path = rest.partition("/")
    if scheme not in ("http", "https") or not separator or not authority:
        raise ConfigError(f"{source}: {url!r} is not a dashboard URL ({URL_EXAMPLE})")

    try:
        host, port = _host_and_port(authority)
    except ValueError as error:
        raise ConfigError(f"{source}: {url!r} is not a valid URL: {error}") from None
    if not host:
        raise ConfigError(f"{source}: {url!r} is not a dashboard URL ({URL_EXAMPLE})")
    if port == 0:
        raise ConfigError(f"{source}: {url!r} has port 0 (ports are 1 to 65535)")
    return scheme, host.lower(), port, slash + path


def _host_and_port(authority: str) -> tuple[str, int | None]:
    """`host[:port]`, an IPv6 host unbracketed; ValueError says what is malformed."""
    if authority.startswith("["):
        host, closed, after = authority[1:].partition("]")
        if not closed or "[" in host + after or "]" in after:
            raise ValueError("Invalid IPv6 URL")
        if after[:1] not in ("", ":"):
            raise ValueError("Invalid IPv6 URL")
        if not _is_ipv6(host):
            raise ValueError(f"{host!r} is not an IPv6 address")
        return host, _port(after[1:])

    if "[" in authority or "]" in authority:
        raise ValueError("Invalid IPv6 URL")
    host, _, port_text = authority.partition(":")
    labels = host.removesuffix(".").split(".")
    if labels[-1].isascii() and labels[-1].isdigit():  # as in WHATWG's URL standard
        if not _is_ipv4(host):
            raise ValueError(f"{host!r} is not an IPv4 address")
    elif host and not all(
        label and set(label) <= HOST_NAME_CHARACTERS for label in labels
    ):
        raise ValueError(
            f"{host!r} is not a host name (ASCII letters, digits, - and _ between "
            "dots; an international name in its xn-- form)"
        )
    return host, _port(port_text)


def _port(text: str) -> int | None:
    """The port, None when not given; ValueError with urllib's words when malformed."""
    if not text:
        return None
    if not (text.isdigit() and text.isascii()):
        raise ValueError(f"Port could not be cast to integer value as {text!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(PORT_LIMIT)) or int(digits) > PORT_LIMIT:
        raise ValueError(f"Port out of range 0-{PORT_LIMIT}")
    return int(digits)


def _is_ipv4(text: str) -> bool:
    """Four decimal octets, without the leading zeros some parsers read as octal."""
    octets = text.split(".")
    return len(octets) == 4 and all(
        octet.isascii()
        and octet.isdigit()
        and len(octet) <= 3
        and (octet == "0" or not octet.startswith("0"))
        and int(octet) <= 255
        for octet in octets
    )


def _is_ipv6(text: str) -> bool:
    """Eight hex groups, `::` once for a run of zeros, maybe an IPv4 tail (RFC 4291).

    No zone index: `ipaddress` takes one, but in a URL it would need `%25`.
    """
    head, double, tail = text.partition("::")
    if "::" in tail:
        return False
    groups = (head.split(":") if head else []) + (tail.split(":") if tail else [])
    if groups and "." in groups[-1] and (tail or not double):
        if not _is_ipv4(groups[-1]):
            return False
        groups[-1:] = ["0", "0"]
    if not all(1 <= len(group) <= 4 and set(group) <= HEX_DIGITS for group in groups):
        return False
    return len(groups) < 8 if double else len(groups) == 8


def ingest_url(base: str) -> str:
    """Join the ingest path onto the path of a base URL, which may have a prefix.

    `base` is a URL `validate_url` took, so it has no query, fragment or user.
    """
    scheme, _, rest = base.partition("://")
    authority, slash, path = rest.partition("/")
    path = (slash + path).rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return f"{scheme.lower()}://{authority}{path}"


def default_state_dir(env: Mapping[str, str]) -> str:
    if env.get("XDG_STATE_HOME"):
        return os.path.join(env["XDG_STATE_HOME"], "cronlog")
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    home = _home_path(env, ".local/state")
    if home is None:
        raise ConfigError(
            "no HOME or XDG_STATE_HOME to keep state in; set CRONLOG_STATE_DIR"
        )
    return os.path.join(home, "cronlog")


def mask(secret: str | None) -> str:
    """Enough of a key to tell two apart, never enough to use it."""
    if not secret:
        return "(not set)"
    return secret[:4] + "…" if len(secret) >= 12 else "…"


def _resolve_api_key(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    document: Mapping[str, Any],
    where: str,
) -> Value:
    if flags.get("api_key_file"):
        return _key_from_file(flags["api_key_file"], "--api-key-file")
    for variable in API_KEY_VARIABLES:
        if env.get(variable):
            return _checked_key(env[variable].strip(), variable)
    if env.get("CRONLOG_API_KEY_FILE"):
        return _key_from_file(env["CRONLOG_API_KEY_FILE"], "CRONLOG_API_KEY_FILE")
    if "api_key_file" in document:
        return _key_from_file(document["api_key_file"], f"api_key_file in {where}")
    if "api_key" in document:
        return _checked_key(document["api_key"].strip(), where)
    return Value(None, "default")


def _key_from_file(name: str, source: str) -> Value:
    path = os.path.expanduser(name)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            # A FIFO would block the job's start until something writes to it.
            raise ConfigError(f"{source}: key file {path} is not a regular file")
        with open(path, encoding="utf-8") as file:
            # A bounded read: a wrong path (/dev/zero, a log) must not eat memory.
            key = file.read(KEY_FILE_LIMIT + 1)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read key file {path}: {error}") from None
    if len(key) > KEY_FILE_LIMIT:
        raise ConfigError(
            f"{source}: key file {path} is over {KEY_FILE_LIMIT} characters; "
            "it should hold only the key"
        )
    return _checked_key(key.strip(), f"{source} ({path})")


def _checked_key(key: str, source: str) -> Value:
    """The key as a Value, or ConfigError saying what is wrong with it (never the key).

    It travels in an HTTP header, which holds one line of visible ASCII; anything else
    would fail at the first report, and the HTTP library's error would quote the key.
    """
    if not key:
        raise ConfigError(f"{source}: the API key is empty")
    for character in key:
        if "!" <= character <= "~":
            continue
        if character in "\r\n":
            problem = "is more than one line"
        elif character == " ":
            problem = "holds a space"
        elif character < " " or character == "\x7f":
            problem = "holds a control character"
        else:
            problem = "holds a character that is not ASCII"
        raise ConfigError(
            f"{source}: the API key {problem}; it must be one line of visible ASCII "
            "characters, as an HTTP header carries it"
        )
    return Value(key, source)


def _check_name(value: Value, name: str) -> Value:
    """environment and owner: given or not, but never blank nor over the limit."""
    if value.value is None:
        return value
    if not value.value.strip():
        raise ConfigError(
            f"{value.source}: {name} is empty; give a name, or leave it out for the "
            "dashboard's default"
        )
    if len(value.value) > NAME_LIMIT:
        raise ConfigError(
            f"{value.source}: {name} is {len(value.value)} characters; the dashboard "
            f"takes at most {NAME_LIMIT}"
        )
    return value


def _warnings_for(settings: Settings) -> list[str]:
    """Files holding the key that others can read: one line each, with the fix."""
    candidates = [settings.config_file]
    source = settings.api_key.source
    if source.endswith(")") and "(" in source:
        candidates.append(source[source.rindex("(") + 1 : -1])

    found = []
    for path in candidates:
        try:
            mode = os.stat(path).st_mode if path else 0
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(
                f"{path} can be read by other users; fix with: chmod 600 {path}"
            )
    return found


def _check_tasks(path: str, tasks: Any) -> dict[str, dict[str, str]]:
    checked = {}
    for task_id, entry in tasks.items():
        try:
            check_task_id(task_id)
        except UsageError as error:
            raise ConfigError(f"config file {path}: [tasks]: {error}") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"config file {path}: [tasks.{task_id}] must be a table")
        for key, value in entry.items():
            if key not in TASK_KEYS:
                known = ", ".join(TASK_KEYS)
                raise ConfigError(
                    f"config file {path}: [tasks.{task_id}] unknown key {key!r} "
                    f"(known: {known})"
                )
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"config file {path}: [tasks.{task_id}] {key!r} must be a text"
                )
        title = entry.get("title", "").strip()
        if len(title) > NAME_LIMIT:
            raise ConfigError(
                f"config file {path}: [tasks.{task_id}] the title is {len(title)} "
                f"characters; the dashboard takes at most {NAME_LIMIT}"
            )
        problem = _schedule_problem(entry.get("schedule", "").strip()) or (
            _timezone_problem(entry.get("timezone", "").strip())
        )
        if problem:
            raise ConfigError(f"config file {path}: [tasks.{task_id}] {problem}")
        checked[task_id] = {key: value.strip() for key, value in entry.items()}
    return checked


def _schedule_problem(schedule: str) -> str | None:
    """What is plainly wrong with a cron expression, judged without croniter (100 ms
    to import, on every run): its shape. list-tasks checks the rest with croniter."""
    if not schedule or schedule in CRON_NICKNAMES:
        return None
    fields = schedule.split()
    shaped = all(char.isalnum() or char in "*,/-?#" for char in "".join(fields))
    if len(fields) in (5, 6) and shaped:
        return None
    return f"schedule {schedule!r} is not a cron expression (write e.g. '*/5 * * * *')"


def _timezone_problem(name: str) -> str | None:
    """Whether the IANA name exists where zoneinfo looks (the system's database,
    PYTHONTZPATH, the tzdata package), found without importing zoneinfo. Like
    zoneinfo, it reads PYTHONTZPATH from this process's own environment."""
    if not name or name == "UTC":
        return None
    parts = name.split("/")
    if all(part and part not in (".", "..") for part in parts):
        system = [*os.environ.get("PYTHONTZPATH", "").split(os.pathsep), *TZ_DIRS]
        packaged = [os.path.join(entry, "tzdata", "zoneinfo") for entry in sys.path]
        for directory in filter(None, (*system, *packaged)):
            if os.path.isfile(os.path.join(directory, *parts)):
                return None
    return f"unknown timezone {name!r} (write e.g. Asia/Singapore)"


def _expected_type(key: str) -> tuple[type, ...]:
    if key == "tasks":
        return (dict,)
    if key == "allow_http":
        return (bool,)
    if key == "report_timeout":
        return (int, float, str)
    return (str,)


def _as_bool(value: Value) -> bool:
    if isinstance(value.value, bool):
        return value.value
    text = str(value.value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{value.source}: {value.value!r} is not true or false")


def _duration(text: str, source: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


def _home_path(env: Mapping[str, str], relative: str) -> str | None:
    home = env.get("HOME")
    return os.path.join(home, relative) if home else None
