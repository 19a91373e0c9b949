"""The ingest body as `cronlog run` sends it, built without pydantic.

`models.TaskRun` is the contract: the receiver validates with it, and the tests hold
`build` to it (same fields, limits and timestamp format, for any input). The run path
uses this module instead because importing pydantic and building the model's schema
costs more CPU than the rest of a run; the limits live here so that both share them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from typing import Any

STATUSES = ("success", "failed", "running")
DEFAULT_ENVIRONMENT = "production"
DEFAULT_OWNER = "Coolify Cron"
NAME_LIMIT = 200  # task_id, task_title, environment, owner
URL_LIMIT = 2000  # log_url
FIELDS = (
    "task_id",
    "task_title",
    "status",
    "started_at",
    "ended_at",
    "duration_ms",
    "log_url",
    "notes",
    "environment",
    "owner",
)
NAMES = ("task_id", "task_title", "environment", "owner")
TIMESTAMPS = ("started_at", "ended_at")


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; ValueError when it has no timezone to convert from."""
    from datetime import UTC

    if moment.tzinfo is None:
        raise ValueError("timestamp needs a timezone, e.g. 2026-01-04T10:00:00Z")
    return moment.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """UTC, millisecond precision, with the `Z` the guide's examples use."""
    utc = as_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def name_problem(field: str, value: str) -> str | None:
    """Why `value` cannot be sent as `field`, or None."""
    if not value:
        return f"{field} must not be empty"
    if len(value) > NAME_LIMIT:
        return f"{field} is {len(value)} characters; the dashboard takes {NAME_LIMIT}"
    return None


def url_problem(value: str) -> str | None:
    if len(value) > URL_LIMIT:
        return f"log_url is {len(value)} characters; the dashboard takes {URL_LIMIT}"
    return None


def build(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body: the given fields, None left out, timestamps in UTC with Z.

    Raises ValueError saying which field is wrong.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not ingest fields: {', '.join(sorted(unknown))}")
    body = {
        name: valid_text(value) if isinstance(value, str) else value
        for name in FIELDS
        if (value := fields.get(name)) is not None
    }

    for name in ("task_id", "task_title", "status"):
        if name not in body:
            raise ValueError(f"{name} is required")
    if body["status"] not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    for name in NAMES:
        problem = name_problem(name, body[name]) if name in body else None
        if problem:
            raise ValueError(problem)
    if "log_url" in body and (problem := url_problem(body["log_url"])):
        raise ValueError(problem)

    duration = body.get("duration_ms")
    if duration is not None and (not isinstance(duration, int) or duration < 0):
        raise ValueError("duration_ms must be a whole number of milliseconds, >= 0")
    for name in TIMESTAMPS:
        if name in body:
            body[name] = format_timestamp(_as_datetime(body[name]))
    return body


def valid_text(text: str) -> str:
    """`text` as UTF-8 can carry it: bytes that were not UTF-8 in an argument or a
    variable (which Python keeps as lone surrogates) become U+FFFD, as in notes."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no byte produced
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def _as_datetime(value: datetime | str) -> datetime:
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) else value
