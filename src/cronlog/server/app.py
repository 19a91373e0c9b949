"""The ASGI application of `cronlog serve`: routes, request log, security headers.

    POST /api/scheduled-tasks/ingest   record one run (the dashboard guide's contract)
    GET  /api/scheduled-tasks/runs     runs newest first, for scripts
    GET  /api/scheduled-tasks          each task with its last run and its figures
    GET  /                             the Schedulers page

Store calls block, so they run in Starlette's thread pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cronlog.errors import StateError
from cronlog.payload import NAME_LIMIT, STATUSES
from cronlog.server import ingest
from cronlog.server.ingest import Rejection
from cronlog.server.overview import TaskInfo, TaskSummary, summarise
from cronlog.store import Store, parse_timestamp

logger = logging.getLogger(__name__)

DEFAULT_RUNS_LIMIT = 50
MAX_RUNS_LIMIT = 500
PAGE_REFRESH_S = 60
WEB_SCHEMES = ("https://", "http://")
# The page has no script of its own, so none may run: job output stays inert text.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def create_app(
    store: Store,
    *,
    api_key: str | None,
    tasks: Sequence[TaskInfo] = (),
    allowed_hosts: Sequence[str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    """The app over `store`. `allowed_hosts` restricts the Host header (None: any)."""
    receiver = _Receiver(store, api_key, tasks, clock)
    routes = [
        Route("/api/scheduled-tasks/ingest", receiver.ingest, methods=["POST"]),
        Route("/api/scheduled-tasks/runs", receiver.runs, methods=["GET"]),
        Route("/api/scheduled-tasks", receiver.tasks, methods=["GET"]),
        Route("/", receiver.page, methods=["GET"]),
    ]
    middleware = [Middleware(_RequestLog), Middleware(_SecurityHeaders)]
    if allowed_hosts is not None:
        # Keeps a DNS-rebinding page from reading a loopback server's notes.
        middleware.append(
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
        )
    return Starlette(routes=routes, middleware=middleware)


class _Receiver:
    def __init__(
        self,
        store: Store,
        api_key: str | None,
        tasks: Sequence[TaskInfo],
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.known_tasks = tuple(tasks)
        self.clock = clock
        self.templates = _templates(clock)

    async def ingest(self, request: Request) -> Response:
        try:
            ingest.check_api_key(request, self.api_key)
            key = ingest.read_idempotency_key(request)
            body = ingest.parse_run(await ingest.read_body(request), self.clock())
        except Rejection as rejection:
            return JSONResponse(rejection.body(), status_code=rejection.status)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it

        try:
            row, created = await run_in_threadpool(
                self.store.record, body, idempotency_key=key
            )
        except StateError as error:
            logger.error("cannot store a run: %s", error)
            return _store_unavailable()

        data = {name: row[name] for name in ("id", "task_id", "status", "started_at")}
        answer = {
            "success": True,
            "message": "Task execution logged successfully",
            "data": data,
        }
        headers = {} if created else {"idempotent-replayed": "true"}
        return JSONResponse(answer, headers=headers)

    async def runs(self, request: Request) -> Response:
        try:
            query = _runs_query(request)
        except Rejection as rejection:
            return JSONResponse(rejection.body(), status_code=rejection.status)

        try:
            rows = await run_in_threadpool(lambda: self.store.runs(**query))
        except StateError as error:
            logger.error("cannot read runs: %s", error)
            return _store_unavailable()
        return JSONResponse({"success": True, "data": rows})

    async def tasks(self, request: Request) -> Response:
        try:
            summaries = await self._summaries()
        except StateError as error:
            logger.error("cannot read runs: %s", error)
            return _store_unavailable()
        return JSONResponse(
            {"success": True, "data": [summary.to_json() for summary in summaries]}
        )

    async def page(self, request: Request) -> Response:
        try:
            summaries = await self._summaries()
        except StateError as error:
            logger.error("cannot read runs: %s", error)
            return _store_unavailable()

        html = self.templates.get_template("schedulers.html").render(
            summaries=summaries, now=self.clock(), refresh_s=PAGE_REFRESH_S
        )
        return HTMLResponse(html)

    async def _summaries(self) -> list[TaskSummary]:
        now = self.clock()
        return await run_in_threadpool(summarise, self.store, self.known_tasks, now)


def _runs_query(request: Request) -> dict[str, Any]:
    params = request.query_params
    query: dict[str, Any] = {"limit": DEFAULT_RUNS_LIMIT}

    task_id = params.get("task_id")
    if task_id is not None:
        if not 0 < len(task_id) <= NAME_LIMIT:
            raise Rejection(400, f"task_id must be 1 to {NAME_LIMIT} characters")
        query["task_id"] = task_id

    status = params.get("status")
    if status is not None:
        if status not in STATUSES:
            raise Rejection(400, f"status must be one of {', '.join(STATUSES)}")
        query["status"] = status

    limit = params.get("limit")
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_RUNS_LIMIT:
            raise Rejection(
                400, f"limit must be a whole number from 1 to {MAX_RUNS_LIMIT}"
            )
        query["limit"] = int(limit)

    before = params.get("before")
    if before is not None:
        try:
            parse_timestamp(before)
        except (ValueError, OverflowError):
            raise Rejection(
                400, "before must be an ISO 8601 timestamp with a timezone"
            ) from None
        query["before"] = before
    return query


def _store_unavailable() -> Response:
    return JSONResponse(
        {"success": False, "error": "Store unavailable"}, status_code=503
    )


def _templates(clock: Callable[[], datetime]) -> Environment:
    environment = Environment(
        loader=PackageLoader("cronlog.server", "templates"), autoescape=True
    )
    environment.filters["ago"] = lambda stamp: _ago(parse_timestamp(stamp), clock())
    environment.filters["duration"] = _duration
    environment.filters["percent"] = lambda rate: f"{rate:.0%}"
    # Only http(s) becomes a link: a `javascript:` log_url stays text.
    environment.tests["web_url"] = lambda url: str(url).startswith(WEB_SCHEMES)
    return environment


def _ago(moment: datetime, now: datetime) -> str:
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _duration(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "-"
    if milliseconds < 1_000:
        return f"{milliseconds} ms"
    if milliseconds < 60_000:
        return f"{milliseconds / 1000:.1f} s"
    return str(timedelta(seconds=milliseconds // 1000))


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _RequestLog:
    """One line a request: client, method, path, status, time taken."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            client = scope.get("client") or ("-", 0)
            logger.info(
                "%s %s %s %d %.1fms",
                client[0],
                scope["method"],
                _printable(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
            )


def _printable(text: str) -> str:
    """A path as one log line: control characters escaped, not interpreted."""
    return text.encode("unicode_escape").decode("ascii")[:500]
