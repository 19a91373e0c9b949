"""The body `cronlog run` builds without pydantic is the one the contract describes:
for any fields, payload.build and models.TaskRun agree, or both refuse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cronlog import payload
from cronlog.models import TaskRun


def test_it_leaves_out_what_was_not_given_and_writes_utc_with_z():
    started = datetime(
        2026, 1, 4, 18, 0, 0, 250000, tzinfo=timezone(timedelta(hours=8))
    )

    body = payload.build(
        {
            "task_id": "sync-price-grid",
            "task_title": "Sync price grid",
            "status": "success",
            "started_at": started,
            "notes": None,
        }
    )

    assert body == {
        "task_id": "sync-price-grid",
        "task_title": "Sync price grid",
        "status": "success",
        "started_at": "2026-01-04T10:00:00.250Z",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "done"}, "status must be one of"),
        ({"task_id": ""}, "task_id must not be empty"),
        ({"owner": "x" * 201}, "owner is 201 characters"),
        ({"log_url": "u" * 2001}, "log_url is 2001 characters"),
        ({"duration_ms": -1}, "duration_ms"),
        ({"started_at": datetime(2026, 1, 4)}, "needs a timezone"),
        ({"colour": "red"}, "not ingest fields: colour"),
    ],
)
def test_what_the_dashboard_would_refuse_is_refused(change, message):
    fields = {"task_id": "a", "task_title": "A", "status": "failed", **change}

    with pytest.raises(ValueError, match=message):
        payload.build(fields)


names = st.text(max_size=210)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2999, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
)


@given(
    task_id=names,
    title=names,
    status=st.sampled_from([*payload.STATUSES, "done"]),
    started=st.one_of(st.none(), moments),
    duration=st.one_of(st.none(), st.integers()),
    notes=st.one_of(st.none(), st.text(max_size=100)),
    owner=st.one_of(st.none(), names),
    log_url=st.one_of(st.none(), st.text(max_size=2010)),
)
def test_build_and_the_model_agree_on_any_fields(
    task_id, title, status, started, duration, notes, owner, log_url
):
    fields = {
        "task_id": task_id,
        "task_title": title,
        "status": status,
        "started_at": started,
        "duration_ms": duration,
        "notes": notes,
        "owner": owner,
        "log_url": log_url,
    }
    given_fields = {k: v for k, v in fields.items() if v is not None}

    try:
        expected = TaskRun(**given_fields).to_body()
    except ValidationError:
        with pytest.raises(ValueError):
            payload.build(fields)
        return
    assert payload.build(fields) == expected


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("bad\udcffbyte", "bad\ufffdbyte"),  # a byte that was not UTF-8, escaped
        ("lone \ud800 half", "lone \ufffd\ufffd\ufffd half"),  # no byte made it
        ("café", "café"),
    ],
)
def test_text_that_utf8_cannot_carry_is_replaced_not_refused(given, sent):
    body = payload.build(
        {"task_id": "t", "task_title": given, "status": "failed", "notes": given}
    )

    assert (body["task_title"], body["notes"]) == (sent, sent)
    json.dumps(body, ensure_ascii=False).encode("utf-8")
