"""Tests for cronlog.jobs: what a run keeps in the state directory when reporting
breaks in a way nothing foresaw."""

from __future__ import annotations

import errno
from datetime import UTC, datetime

from cronlog import jobs, locks

TASK = {"task_id": "sync-price-grid", "task_title": "Sync price grid"}


class BrokenDelivery:
    """A delivery whose finish raises what it never should."""

    run_id = "6f1c1f5e-0000-4000-8000-000000000001"

    def start(self) -> None:
        pass

    def finish(self, body, lost=()):
        raise RuntimeError("a bug in delivery")


def test_an_internal_error_while_reporting_leaves_the_report_for_the_next_run(
    tmp_path, caplog
):
    state_dir = str(tmp_path)
    book = jobs._Bookkeeping(state_dir, BrokenDelivery(), TASK)
    book.mark()
    now = datetime.now(UTC)
    verdict = jobs.Verdict("failed", "exit 3", 3)
    finished = jobs.Finished(verdict, now, now, 12, output=(b"", 0))

    book.finish(finished, None, secrets=[])
    book.close()

    assert "internal error while reporting: RuntimeError('a bug in delivery')" in (
        caplog.text
    )
    [left] = locks.abandoned_runs(state_dir, TASK["task_id"])
    assert left.run_id == BrokenDelivery.run_id
    assert left.record["report"]["status"] == "failed"
    assert left.record["report"]["notes"] == "exit 3"


class RecordingDelivery(BrokenDelivery):
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def finish(self, body, lost=()):
        self.bodies.append(body)


def test_a_marker_that_cannot_be_written_does_not_stop_the_report(
    tmp_path, caplog, monkeypatch
):
    sending = RecordingDelivery()
    book = jobs._Bookkeeping(str(tmp_path), sending, TASK)
    book.mark()

    def full_disk(body):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(book.marker, "keep_report", full_disk)
    now = datetime.now(UTC)
    verdict = jobs.Verdict("failed", "exit 3", 3)

    book.finish(jobs.Finished(verdict, now, now, 12, output=(b"", 0)), None, [])
    book.close()

    assert [body["notes"] for body in sending.bodies] == ["exit 3"]
    assert "cannot keep the report in" in caplog.text
    assert locks.abandoned_runs(str(tmp_path), TASK["task_id"]) == []
