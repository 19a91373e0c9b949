"""`cronlog run --request METHOD URL`: the HTTP request is the job, made with httpx.

It replaces the guide's `curl -X POST ...` line, so it behaves like curl where a cron
job can tell: the response body goes to fd 1 as it arrives, and a failure exits
with curl's number for it (6 name not resolved, 7 no connection, 28 timed out, 35 TLS
handshake, 60 certificate not trusted, 22 a status `--ok-status` does not accept).
Header values may name environment variables as `${NAME}`; cronlog expands them from
the job's environment, so a key stays out of the crontab and the process list, and a
variable that is not set stops the run before anything is sent.

TLS is always verified, with the reporter's policy: SSL_CERT_FILE when set, else the
operating system's store. No proxy is used. Redirects are followed only with
`--location`, at most MAX_REDIRECTS of them, and the user's headers go only to the
origin (scheme, host, port) of the URL given: a hop to another origin carries none of
them. As browsers do, 303 (and 301 or 302 after a POST) turns the next request into a
GET without a body. `--data` is sent as is, with curl's form Content-Type unless a
header sets one; `--json` adds Content-Type and Accept `application/json` likewise.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cronlog import exits
from cronlog.curl import CURL_EXITS, judge_http
from cronlog.durations import format_duration
from cronlog.errors import UsageError
from cronlog.httpclient import (
    USER_AGENT,
    ConnectProblem,
    diagnose_connect_error,
    httpx,
    trust_context,
)
from cronlog.status_codes import DEFAULT_OK_STATUSES, OkStatuses

MAX_REDIRECTS = 50  # curl's default --max-redirs
DEFAULT_TIMEOUT = 30.0
DEFAULT_TAIL_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"  # what curl -d sends
JSON_TYPE = "application/json"


_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 header names, methods
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# curl's exit status for each way a connection fails, as diagnose_connect_error says.
_CONNECT_EXITS: dict[ConnectProblem, int] = {
    "untrusted": exits.CURL_CERTIFICATE_NOT_TRUSTED,
    "handshake": exits.CURL_TLS_HANDSHAKE,
    "unresolved": exits.CURL_NOT_RESOLVED,
    "refused": exits.CURL_NOT_CONNECTED,
    "unknown": exits.CURL_NOT_CONNECTED,
}


@dataclass(frozen=True)
class HttpRequest:
    """One `--request` as the command line gave it."""

    method: str
    url: str
    headers: tuple[str, ...] = ()  # 'Name: value', ${NAME} not yet expanded
    data: str | None = None
    json_body: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # seconds for the whole exchange
    follow_redirects: bool = False
    ok_statuses: OkStatuses = DEFAULT_OK_STATUSES
    tail_bytes: int = DEFAULT_TAIL_BYTES


@dataclass(frozen=True)
class HttpOutcome:
    """How the request went, as a runner.Outcome says how a child went."""

    started_at: datetime  # UTC wall clock when the request started
    ended_at: datetime  # UTC wall clock when the last byte arrived or it failed
    duration_ms: int  # from time.monotonic()
    http_status: int | None  # the final response's status, if one came
    exit_status: int  # 0, or curl's number for the failure
    reason: str | None  # the first line of a failure's notes; None on success
    body_tail: bytes  # the end of the final response's body
    body_bytes: int  # the whole body's size, as printed


class _TransferFailed(Exception):
    def __init__(self, exit_status: int, reason: str, http_status: int | None) -> None:
        super().__init__(reason)
        self.exit_status = exit_status
        self.reason = reason
        self.http_status = http_status


def expand_headers(
    headers: Iterable[str], env: Mapping[str, str], withheld: Collection[str] = ()
) -> list[tuple[str, str]]:
    """`Name: value` pairs, `${NAME}` in values read from `env`; raises UsageError.

    `withheld` names variables that are set but never given to a job. Messages name
    the header and the variable, never a value, which may be a key.
    """
    expanded = []
    for number, header in enumerate(headers, start=1):
        name, colon, value = header.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise UsageError(
                f"--header number {number} is not 'Name: value' "
                "(e.g. --header 'X-API-Key: ${CHATKIT_API_KEY}')"
            )

        value = _expand(value, name, env, withheld).strip()
        if any(character in value for character in "\r\n\0"):
            raise UsageError(f"--header {name}: the value holds a line break")
        expanded.append((name, value))
    return expanded


def referenced_values(headers: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """The values of the variables the headers name, to redact from the notes."""
    names = {match for header in headers for match in _VARIABLE.findall(header)}
    return [env[name] for name in sorted(names) if env.get(name)]


def perform(
    request: HttpRequest,
    env: Mapping[str, str],
    on_started: Callable[[], None] | None = None,
) -> HttpOutcome:
    """Make the request, print the body to fd 1 and say how it went.

    Every check that can refuse the request (headers, URL, method, CA bundle) raises
    UsageError before `on_started` is called and before anything is sent.
    """
    headers = expand_headers(request.headers, env)
    url = _checked_url(request.url)
    method = request.method.upper()
    if not _TOKEN.fullmatch(method):
        raise UsageError(f"--request: {request.method!r} is not an HTTP method")
    if request.data is not None and request.json_body is not None:
        raise UsageError("--data and --json cannot be used together; choose one")
    verify = _ssl_context(env)

    if on_started is not None:
        on_started()
    body = _Body(request.tail_bytes)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    status: int | None
    reason: str | None
    try:
        status = _exchange(
            request, method, url, headers, verify, body, started + request.timeout
        )
    except _TransferFailed as failure:
        exit_status, reason, status = (
            failure.exit_status,
            failure.reason,
            failure.http_status,
        )
    else:
        _, reason, exit_status = judge_http(0, status, request.ok_statuses, None)

    return HttpOutcome(
        started_at=started_at,
        ended_at=datetime.now(UTC),
        duration_ms=round((time.monotonic() - started) * 1000),
        http_status=status,
        exit_status=exit_status,
        reason=reason,
        body_tail=body.tail(),
        body_bytes=body.total,
    )


def _expand(
    value: str, header: str, env: Mapping[str, str], withheld: Collection[str]
) -> str:
    def lookup(match: re.Match[str]) -> str:
        variable = match.group(1)
        if not _VARIABLE_NAME.fullmatch(variable):
            raise UsageError(f"--header {header}: ${{{variable}}} is not a variable")
        if variable in withheld:
            raise UsageError(
                f"--header {header}: {variable} is cronlog's own dashboard key, "
                "which jobs never see; put the key this request needs in another "
                "variable"
            )
        if variable not in env:
            raise UsageError(
                f"--header {header}: the environment variable {variable} is not set"
            )
        return env[variable]

    return _VARIABLE.sub(lookup, value)


def _checked_url(text: str) -> httpx.URL:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as error:
        raise UsageError(f"--request: not a URL: {error}") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(
            f"--request: the URL must be http:// or https:// with a host, not {text!r}"
        )
    return url


def _ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """Verified TLS: SSL_CERT_FILE when set, else the operating system's store."""
    bundle = env.get("SSL_CERT_FILE")
    try:
        return trust_context(bundle)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(
            f"cannot load the CA bundle {bundle} (SSL_CERT_FILE): {error}"
        ) from error


def _exchange(
    request: HttpRequest,
    method: str,
    url: httpx.URL,
    headers: Sequence[tuple[str, str]],
    verify: ssl.SSLContext,
    body: _Body,
    deadline: float,
) -> int:
    """Send, follow redirects if asked, print the final body; the final status."""
    origin = _origin(url)
    content = _content(request)
    with httpx.Client(verify=verify, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            hop_headers = _hop_headers(
                request, headers if _origin(url) == origin else (), content
            )
            remaining = _remaining(deadline, request.timeout, url, None)
            try:
                response = client.send(
                    client.build_request(
                        method,
                        url,
                        headers=hop_headers,
                        content=content,
                        timeout=remaining,
                    ),
                    stream=True,
                )
            except httpx.TransportError as error:
                raise _failure(error, url, None, request.timeout) from error

            try:
                if not (request.follow_redirects and _is_redirect(response)):
                    _print_body(response, body, deadline, request.timeout)
                    return response.status_code
            finally:
                response.close()

            # A redirect's own body is not printed, as with curl -L.
            url = _redirect_target(response)
            status = response.status_code
            if (status == 303 and method != "HEAD") or (
                status in (301, 302) and method == "POST"
            ):
                method, content = "GET", None

    raise _TransferFailed(
        exits.CURL_TOO_MANY_REDIRECTS,
        f"{CURL_EXITS[exits.CURL_TOO_MANY_REDIRECTS]}: more than {MAX_REDIRECTS} "
        f"({_show_origin(url)})",
        response.status_code,
    )


def _content(request: HttpRequest) -> bytes | None:
    if request.json_body is not None:
        return _as_given(request.json_body)
    return None if request.data is None else _as_given(request.data)


def _as_given(text: str) -> bytes:
    """The bytes of an argument or variable as they were given, as curl sends them:
    bytes that are not UTF-8 came in as lone surrogates and go out as they came."""
    return text.encode("utf-8", "surrogateescape")


def _hop_headers(
    request: HttpRequest, user: Sequence[tuple[str, str]], content: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The user's headers (none on another origin) and cronlog's defaults."""
    given = {name.lower() for name, _ in user}
    defaults = [("User-Agent", USER_AGENT)]
    if content is not None:
        defaults.append(
            ("Content-Type", JSON_TYPE if request.json_body is not None else FORM_TYPE)
        )
    if request.json_body is not None:
        defaults.append(("Accept", JSON_TYPE))

    # Bytes as given, as curl sends them: a UTF-8 value is not refused.
    chosen = [*user, *((n, v) for n, v in defaults if n.lower() not in given)]
    return [(name.encode(), _as_given(value)) for name, value in chosen]


def _is_redirect(response: httpx.Response) -> bool:
    return response.status_code in _REDIRECTS and "Location" in response.headers


def _redirect_target(response: httpx.Response) -> httpx.URL:
    location = response.headers["Location"]
    try:
        target = response.url.join(location)
    except httpx.InvalidURL as error:
        raise _TransferFailed(
            exits.CURL_UNSUPPORTED_PROTOCOL,
            f"the redirect to an invalid URL cannot be followed ({error})",
            response.status_code,
        ) from error
    if target.scheme not in ("http", "https"):
        raise _TransferFailed(
            exits.CURL_UNSUPPORTED_PROTOCOL,
            f"{CURL_EXITS[exits.CURL_UNSUPPORTED_PROTOCOL]}: "
            f"a redirect to {target.scheme}:",
            response.status_code,
        )
    return target


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    default_port = 443 if url.scheme == "https" else 80
    return url.scheme, url.host, url.port or default_port


def _show_origin(url: httpx.URL) -> str:
    """Scheme, host and port only: a path or query may carry a token."""
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _remaining(
    deadline: float, timeout: float, url: httpx.URL, status: int | None
) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _TransferFailed(exits.CURL_TIMED_OUT, _timed_out(timeout, url), status)
    return remaining


def _timed_out(timeout: float, url: httpx.URL) -> str:
    return (
        f"{CURL_EXITS[exits.CURL_TIMED_OUT]}: no complete answer within "
        f"{format_duration(timeout)} ({_show_origin(url)})"
    )


def _print_body(
    response: httpx.Response, body: _Body, deadline: float, timeout: float
) -> None:
    sys.stdout.flush()  # whatever Python buffered must not land after the body
    try:
        for chunk in response.iter_bytes():
            body.write(chunk)
            _remaining(deadline, timeout, response.url, response.status_code)
    except httpx.TransportError as error:
        raise _failure(error, response.url, response.status_code, timeout) from error


def _failure(
    error: httpx.TransportError, url: httpx.URL, status: int | None, timeout: float
) -> _TransferFailed:
    """curl's exit status and a person's words for a transport error."""
    where = _show_origin(url)
    if isinstance(error, httpx.TimeoutException):
        return _TransferFailed(exits.CURL_TIMED_OUT, _timed_out(timeout, url), status)
    if isinstance(error, httpx.UnsupportedProtocol):
        code = exits.CURL_UNSUPPORTED_PROTOCOL
        return _TransferFailed(code, f"{CURL_EXITS[code]} ({where})", status)

    if isinstance(error, httpx.ConnectError):
        problem, detail = diagnose_connect_error(error)
        code = _CONNECT_EXITS[problem]
    elif isinstance(error, httpx.RemoteProtocolError):
        code = exits.CURL_EMPTY_REPLY if status is None else exits.CURL_PARTIAL_BODY
        detail = str(error) or "the server closed the connection"
    elif isinstance(error, httpx.WriteError):
        code, detail = exits.CURL_SEND_FAILED, str(error) or type(error).__name__
    else:
        code, detail = exits.CURL_RECEIVE_FAILED, str(error) or type(error).__name__
    return _TransferFailed(code, f"{CURL_EXITS[code]}: {detail} ({where})", status)


class _Body:
    """Passes the body to fd 1 as it arrives and keeps its end for the notes."""

    def __init__(self, tail_bytes: int) -> None:
        self.total = 0
        self._tail_bytes = max(tail_bytes, 0)
        self._tail = bytearray()
        self._silenced = False

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._pass_through(chunk)
        if self._tail_bytes:
            self._tail += chunk
            del self._tail[: -self._tail_bytes]

    def tail(self) -> bytes:
        return bytes(self._tail)

    def _pass_through(self, chunk: bytes) -> None:
        if self._silenced:
            return

        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(1, view) :]
        except OSError:
            # EPIPE (`| head -1`), a closed fd, a full disk: the request still
            # completes and is judged; only the printing stops.
            self._silenced = True
