"""What `POST /api/scheduled-tasks/ingest` accepts: key, headers, body, run.

Each check turns hostile or broken input into a `Rejection` (a 4xx status and a reason
that never echoes the input back), so that nothing but a valid run reaches the store.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from pydantic import ValidationError
from starlette.requests import Request

from cronlog.models import TaskRun

MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_DURATION_MS = 2**63 - 1  # what SQLite's INTEGER and PostgreSQL's bigint hold
FUTURE_TOLERANCE = timedelta(days=1)  # clock skew between hosts, not time travel
JSON_MEDIA_TYPES = ("application/json",)


class Rejection(Exception):
    """A request refused with a 4xx status and a reason fit to send back."""

    def __init__(
        self, status: int, error: str, details: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": False, "error": self.error}
        if self.details:
            body["details"] = self.details
        return body


def check_api_key(request: Request, api_key: str | None) -> None:
    """Constant-time comparison; no key configured means loopback use, open to all."""
    if api_key is None:
        return

    # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent.
    given = request.headers.get("x-api-key", "").encode("latin-1")
    if not hmac.compare_digest(given, api_key.encode()):
        raise Rejection(401, "Unauthorized")


def read_idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None

    printable = all("!" <= char <= "~" for char in key)
    if not key or not printable or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise Rejection(
            400,
            "Idempotency-Key must be 1 to "
            f"{MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters",
        )
    return key


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large.

    A declared Content-Length is checked before reading; the streamed size is checked
    too, for chunked bodies and for clients whose header lies.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_MEDIA_TYPES:
        # Also keeps a web page from posting here: a JSON body needs a CORS preflight.
        raise Rejection(415, "Content-Type must be application/json")

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejection(400, "Content-Length must be a number of bytes")
        if int(declared) > MAX_BODY_BYTES:
            _too_large()

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> NoReturn:
    raise Rejection(413, f"Body too large: the limit is {MAX_BODY_BYTES} bytes")


def parse_run(raw: bytes, now: datetime) -> dict[str, Any]:
    """The validated body (`TaskRun.to_body()`), or a Rejection saying why not."""
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise Rejection(400, "Body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Rejection(400, "Body must be a JSON object")

    try:
        run = TaskRun.model_validate_json(raw, strict=True)
    except ValidationError as error:
        raise _rejection_for(error) from None
    except OverflowError:
        # A timestamp whose offset pushes it past year 1 or 9999.
        detail = _detail("timestamp", "out of range")
        raise Rejection(422, "Invalid fields", [detail]) from None
    _check_plausible(run, now)
    return run.to_body()


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _rejection_for(error: ValidationError) -> Rejection:
    problems = error.errors(include_input=False, include_url=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return Rejection(400, "Body is not valid JSON")

    missing = [
        _field(problem["loc"]) for problem in problems if problem["type"] == "missing"
    ]
    details = [_detail(_field(problem["loc"]), problem["msg"]) for problem in problems]
    if missing:
        return Rejection(400, f"Missing required fields: {', '.join(missing)}", details)
    return Rejection(422, "Invalid fields", details)


def _check_plausible(run: TaskRun, now: datetime) -> None:
    details: list[dict[str, str]] = []
    if run.started_at and run.ended_at and run.ended_at < run.started_at:
        details.append(_detail("ended_at", "is before started_at"))
    for name in ("started_at", "ended_at"):
        moment: datetime | None = getattr(run, name)
        if moment is not None and moment > now.astimezone(UTC) + FUTURE_TOLERANCE:
            details.append(_detail(name, "is more than a day in the future"))
    if run.duration_ms is not None and run.duration_ms > MAX_DURATION_MS:
        details.append(_detail("duration_ms", f"is over {MAX_DURATION_MS}"))
    for name, value in run.to_body().items():
        if isinstance(value, str) and "\x00" in value:
            details.append(_detail(name, "contains a NUL character"))

    if details:
        raise Rejection(422, "Invalid fields", details)


def _field(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "body"


def _detail(field: str, reason: str) -> dict[str, str]:
    return {"field": field, "reason": reason}
