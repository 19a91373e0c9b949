"""The ingest contract: the body of `POST /api/scheduled-tasks/ingest`.

Field names are the dashboard's, as its integration guide gives them. Optional fields
that were not given are left out of the JSON rather than sent as null, so the dashboard
applies its own defaults. The receiver validates with this model; `cronlog run` sends
bodies built by `payload.build`, which shares its limits and is tested against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
)

from cronlog.payload import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_OWNER,
    NAME_LIMIT,
    URL_LIMIT,
    as_utc,
    format_timestamp,
)

Status = Literal["success", "failed", "running"]


Timestamp = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(format_timestamp, return_type=str),
]
NonEmpty = Annotated[str, Field(min_length=1, max_length=NAME_LIMIT)]


class TaskRun(BaseModel):
    """One execution of a scheduled task, as the dashboard records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: NonEmpty
    task_title: NonEmpty
    status: Status
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    duration_ms: Annotated[int, Field(ge=0)] | None = None
    log_url: Annotated[str, Field(max_length=URL_LIMIT)] | None = None
    notes: str | None = None
    environment: NonEmpty = DEFAULT_ENVIRONMENT
    owner: NonEmpty = DEFAULT_OWNER

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send: only the fields that were given."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
