"""The ingest contract: the guide's request body, and nothing sent as null."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cronlog.models import TaskRun, format_timestamp


def test_only_the_fields_given_are_sent():
    run = TaskRun(
        task_id="tradein-auto-submit",
        task_title="Trade-in auto submit",
        status="success",
        duration_ms=5000,
    )

    assert run.to_body() == {
        "task_id": "tradein-auto-submit",
        "task_title": "Trade-in auto submit",
        "status": "success",
        "duration_ms": 5000,
    }


def test_timestamps_are_utc_with_z_whatever_zone_they_came_in():
    singapore = timezone(timedelta(hours=8))
    run = TaskRun(
        task_id="a",
        task_title="A",
        status="failed",
        started_at=datetime(2026, 1, 4, 18, 0, 0, 123456, tzinfo=singapore),
    )

    assert run.to_body()["started_at"] == "2026-01-04T10:00:00.123Z"


def test_the_guides_example_body_is_valid():
    example = {
        "task_id": "tradein-auto-submit",
        "task_title": "Trade-in auto submit",
        "status": "success",
        "started_at": "2026-01-04T10:00:00Z",
        "ended_at": "2026-01-04T10:00:05Z",
        "duration_ms": 5000,
        "log_url": "https://logs.example.com/...",
        "notes": "Optional error message",
    }

    body = TaskRun.model_validate(example).to_body()

    assert body["started_at"] == "2026-01-04T10:00:00.000Z"
    assert set(body) == set(example)


@pytest.mark.parametrize(
    "change",
    [
        {"status": "done"},
        {"task_id": ""},
        {"duration_ms": -1},
        {"started_at": "2026-01-04T10:00:00"},
        {"started_at": "2026-02-30T10:00:00Z"},
        {"extra": 1},
    ],
)
def test_what_the_dashboard_would_refuse_is_refused(change):
    with pytest.raises(ValidationError):
        TaskRun.model_validate(
            {"task_id": "a", "task_title": "A", "status": "success", **change}
        )


def test_format_timestamp_keeps_milliseconds():
    moment = datetime(2026, 1, 4, 10, 0, 5, 999999, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-01-04T10:00:05.999Z"


@given(
    task_id=st.text(max_size=250),
    title=st.text(max_size=250),
    status=st.text(max_size=10),
    notes=st.text(max_size=500),
    started=st.text(max_size=40),
)
def test_any_strings_give_a_valid_body_or_a_validation_error(
    task_id, title, status, notes, started
):
    try:
        run = TaskRun.model_validate(
            {
                "task_id": task_id,
                "task_title": title,
                "status": status,
                "notes": notes,
                "started_at": started,
            }
        )
    except ValidationError:
        return
    body = run.to_body()
    assert json.loads(json.dumps(body)) == body
    assert body["status"] in ("success", "failed", "running")
    assert body["started_at"].endswith("Z")
