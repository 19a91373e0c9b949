"""Delivers reports to the dashboard's ingest endpoint.

A `Report` pairs a body built elsewhere (by `payload.build` in `cronlog run`, or a
`TaskRun`'s in `Report.new`) with the run ID that makes re-sending it harmless. This
module owns the HTTP client and its policy: timeouts, which answers are retried, the
backoff between tries, the per-report deadline and the headers. Every try of one
report sends the same bytes with the same `Idempotency-Key`, so a report that arrives
twice (a timeout after the dashboard stored it, a re-send from the outbox) is still
one run. A failure is raised as `DeliveryFailed`, whose message says what to fix and
never contains the API key. It knows nothing of the job that produced the report.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from cronlog.config import INGEST_PATH
from cronlog.errors import ReportError
from cronlog.httpclient import USER_AGENT, diagnose_connect_error, httpx, trust_context

if TYPE_CHECKING:
    from cronlog.models import TaskRun

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
DEFAULT_DEADLINE = 30.0  # seconds for one report, every try and pause included
MAX_ATTEMPTS = 10  # a bound of its own, so a clock that stands still cannot loop
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
# Statuses that refuse the report itself: sending it again will not change the answer,
# unlike 401, 404 or a redirect, which a corrected configuration fixes.
REFUSED_STATUSES = frozenset({400, 409, 413, 422})
BACKOFF_BASE = 0.5  # the first pause is drawn from [0, BACKOFF_BASE] (full jitter)
BACKOFF_CAP = 8.0

QUOTE_LIMIT = 200
KEY_MASK = "***"


class DeliveryFailed(ReportError):
    """A report was not accepted.

    `retriable` means trying again later may succeed unchanged (the dashboard is down,
    busy or unreachable). `refused` means the dashboard refused this report itself
    (400, 422, ...), so sending it again will not help. When it is neither, the setup
    is wrong (bad key, URL or CA bundle): the report should be kept until that is
    fixed.
    """

    def __init__(
        self, message: str, *, retriable: bool, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.status_code = status_code

    @property
    def refused(self) -> bool:
        return self.status_code in REFUSED_STATUSES


@dataclass(frozen=True)
class Report:
    """One run's report: its JSON body and the run ID that makes re-sends harmless."""

    run_id: str
    body: dict[str, Any]

    @classmethod
    def new(cls, run: TaskRun) -> Report:
        return cls(run_id=str(uuid.uuid4()), body=run.to_body())

    def payload(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Target:
    """Where reports go: the ingest URL, already joined, and how to authenticate."""

    url: str
    api_key: str | None
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Receipt:
    """The dashboard's acceptance of a report."""

    status_code: int
    body: Any
    attempts: int


class Reporter:
    """Sends reports to one target over one keep-alive connection."""

    def __init__(
        self,
        target: Target,
        *,
        deadline: float = DEFAULT_DEADLINE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self.deadline = deadline
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def warm_up(self) -> None:
        """Build the client and its TLS context now, while the job runs."""
        self._get_client()

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def send(
        self,
        report: Report,
        *,
        deadline: float | None = None,
        after_first_try: Callable[[], None] | None = None,
    ) -> Receipt:
        """Deliver `report`, retrying transient failures for `deadline` seconds;
        `after_first_try` is called once the first attempt has its outcome."""
        client = self._get_client()
        payload = report.payload()
        headers = self._headers(report)
        give_up_at = self._clock() + (self.deadline if deadline is None else deadline)

        for attempt in range(1, MAX_ATTEMPTS + 1):
            remaining = give_up_at - self._clock()
            timeout = httpx.Timeout(
                max(0.001, min(READ_TIMEOUT, remaining)),
                connect=max(0.001, min(CONNECT_TIMEOUT, remaining)),
            )
            log.debug(
                "POST %s run %s attempt %d", self.target.url, report.run_id, attempt
            )

            try:
                response = client.post(
                    self.target.url, content=payload, headers=headers, timeout=timeout
                )
            except httpx.TransportError as error:
                log.debug("attempt %d failed: %s", attempt, type(error).__name__)
                failure = self._transport_failure(error, timeout)
                if not failure.retriable:
                    raise failure from error
                retry_after = None
            else:
                log.debug("attempt %d answered HTTP %d", attempt, response.status_code)
                if response.is_success and _accepted(response):
                    return Receipt(response.status_code, _answer(response), attempt)
                failure = self._failure_for(response)
                if not failure.retriable:
                    raise failure
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))

            if attempt == 1 and after_first_try is not None:
                after_first_try()
            pause = self._pause(attempt, retry_after)
            if attempt == MAX_ATTEMPTS or self._clock() + pause >= give_up_at:
                break
            self._sleep(pause)

        raise DeliveryFailed(
            f"{failure} (gave up after {attempt} attempt{'s' * (attempt > 1)})",
            retriable=True,
            status_code=failure.status_code,
        )

    def _get_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    verify=self._ssl_context(),
                    timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                    follow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                )
            return self._client

    def _ssl_context(self) -> ssl.SSLContext:
        """Verified TLS: --ca-bundle, else SSL_CERT_FILE, else the OS store."""
        bundle = self.target.ca_bundle or os.environ.get("SSL_CERT_FILE")
        try:
            return trust_context(bundle)
        except (OSError, ssl.SSLError) as error:
            source = "ca_bundle" if self.target.ca_bundle else "SSL_CERT_FILE"
            raise DeliveryFailed(
                f"cannot load the CA bundle {bundle} ({source}): {error}",
                retriable=False,
            ) from error

    def _headers(self, report: Report) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": report.run_id,
        }
        if self.target.api_key:
            headers["X-API-Key"] = self.target.api_key
        return headers

    def _pause(self, attempt: int, retry_after: float | None) -> float:
        # A Retry-After of 0 or a date gone by (a skewed clock) would mean no pause at
        # all: a burst of tries at a dashboard asking for time. Back off instead.
        if retry_after:
            return retry_after
        return self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))

    def _failure_for(self, response: httpx.Response) -> DeliveryFailed:
        status = response.status_code
        url = self.target.url
        said = self._mask(_quote(response))

        if response.is_success:
            answer = _answer(response)
            if isinstance(answer, dict) and answer.get("success") is False:
                message = f"the dashboard at {url} could not record the run: {said}"
                return DeliveryFailed(message, retriable=True, status_code=status)
            message = (
                f"{url} answered HTTP {status} but not as the dashboard does (no JSON "
                f'{{"success": true}}): is the URL right? It said: {said}'
            )
            return DeliveryFailed(message, retriable=False, status_code=status)

        if status in RETRY_STATUSES:
            message = f"the dashboard at {url} answered HTTP {status}: {said}"
            return DeliveryFailed(message, retriable=True, status_code=status)

        if response.is_redirect:
            location = self._mask(str(response.url.join(response.headers["Location"])))
            base = location.removesuffix(INGEST_PATH)
            message = (
                f"{url} redirects (HTTP {status}) to {location}; cronlog does not "
                f"follow redirects, so set the dashboard URL to {base}"
            )
            if location.startswith("http://") and url.startswith("https://"):
                message = (
                    f"{url} redirects (HTTP {status}) to plain http, {location}; "
                    "cronlog follows no redirect and sends no key without TLS: "
                    "ask what the dashboard's https address is"
                )
        elif status == 401 and self.target.api_key:
            message = (
                f"the dashboard at {url} refused the API key (HTTP 401): it must match "
                "the dashboard's CHATKIT_API_KEY; set CRONLOG_API_KEY or api_key_file"
            )
        elif status == 401:
            message = (
                f"the dashboard at {url} wants an API key (HTTP 401): give it the "
                "dashboard's CHATKIT_API_KEY with CRONLOG_API_KEY or api_key_file"
            )
        elif status == 404:
            message = (
                f"the dashboard has no ingest endpoint at {url} (HTTP 404); "
                "check the dashboard URL"
            )
        elif status in REFUSED_STATUSES:
            message = f"the dashboard refused the report (HTTP {status}): {said}"
        else:
            message = f"the dashboard at {url} answered HTTP {status}: {said}"
        return DeliveryFailed(message, retriable=False, status_code=status)

    def _transport_failure(
        self, error: httpx.TransportError, timeout: httpx.Timeout
    ) -> DeliveryFailed:
        url = self.target.url
        if isinstance(error, httpx.ConnectTimeout):
            what = f"no connection within {timeout.connect:.3g}s"
        elif isinstance(error, httpx.TimeoutException):
            message = f"no answer from {url} within {timeout.read:.3g}s"
            return DeliveryFailed(self._mask(message), retriable=True)
        elif isinstance(error, httpx.ConnectError):
            what = _connect_failure(error)
        else:
            message = f"lost the connection to {url}: {error or type(error).__name__}"
            return DeliveryFailed(self._mask(message), retriable=True)

        # A certificate that is not trusted now will not be trusted in a second.
        retriable = not what.startswith("TLS")
        return DeliveryFailed(
            self._mask(f"cannot connect to {url}: {what}"), retriable=retriable
        )

    def _mask(self, text: str) -> str:
        key = self.target.api_key
        return text.replace(key, KEY_MASK) if key else text


def _connect_failure(error: httpx.ConnectError) -> str:
    """What failed, in the words of a report's warning."""
    problem, detail = diagnose_connect_error(error)
    if problem == "untrusted":
        return f"TLS certificate not trusted ({detail})"
    if problem == "handshake" and detail == "WRONG_VERSION_NUMBER":
        # What a plain-http server answering a TLS hello looks like from here.
        return (
            "TLS handshake failed (WRONG_VERSION_NUMBER); the server may speak "
            "plain http: if so, use an http:// URL"
        )
    if problem == "handshake":
        return f"TLS handshake failed ({detail})"
    if problem == "unresolved":
        return f"host name not found ({detail})"
    if problem == "refused":
        return "connection refused"
    return detail


def _accepted(response: httpx.Response) -> bool:
    """The dashboard's own word that it recorded the run: `{"success": true}`.

    Anything else answered with a 2xx (a login page of a proxy, `success: false`) has
    not recorded it, and the report must not be dropped as delivered.
    """
    answer = _answer(response)
    return isinstance(answer, dict) and answer.get("success") is True


def _answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _quote(response: httpx.Response) -> str:
    """The dashboard's own words: its JSON `error` or `message`, else the body, cut."""
    answer = _answer(response)
    text = None
    if isinstance(answer, dict):
        text = next(
            (answer[k] for k in ("error", "message") if isinstance(answer.get(k), str)),
            None,
        )
    if text is None:
        text = answer if isinstance(answer, str) else json.dumps(answer)
    text = re.sub(r"\s+", " ", text).strip() or response.reason_phrase or "(no body)"
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1] + "…"


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from `Retry-After: 2` or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
