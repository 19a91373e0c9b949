"""`cronlog outbox` lists every report that waits, wherever it waits, and changes
nothing; `cronlog serve` takes a --db it cannot open as bad input. Run as the installed
`cronlog`, in the scratch state directory the autouse fixture gives each test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cronlog import exits, locks
from cronlog.cli import run_cli
from e2e_support import CRONLOG, WAIT_SECONDS, outbox_listing, stop, wait_for

TASK = "deliv"
BODY = {"task_id": TASK, "task_title": "Deliv", "status": "failed"}


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """Where cronlog keeps its state under the autouse fixture's XDG_STATE_HOME."""
    path = tmp_path / "state" / "cronlog"
    path.mkdir(mode=0o700, parents=True)
    return path


def _stopped_while_reporting(state_dir: Path, url: str) -> subprocess.Popen[bytes]:
    """A real `cronlog run` stopped by SIGTERM once its report is kept in its marker."""
    env = {**os.environ, "CRONLOG_URL": url, "CRONLOG_API_KEY": "abcdefghijkl"}
    cronlog = subprocess.Popen(
        [CRONLOG, "run", "--task-id", TASK, "--title", "Deliv",
         "--report-timeout", "10s", "--", "sh", "-c", "exit 3"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env,
    )  # fmt: skip
    markers = state_dir / locks.INFLIGHT_DIR / TASK

    def report_kept() -> bool:
        texts = (path.read_text() for path in markers.glob("*.json"))
        return any('"report"' in text for text in texts)

    try:
        assert wait_for(report_kept), "the run never kept its report in its marker"
        cronlog.send_signal(signal.SIGTERM)
        cronlog.communicate(timeout=WAIT_SECONDS)
    finally:
        stop(cronlog)
    return cronlog


def test_a_report_kept_by_a_stopped_cronlog_is_listed_until_flush_sends_it(
    state_dir, closed_port_url, ingest_server, run_cronlog, monkeypatch
):
    stopped = _stopped_while_reporting(state_dir, closed_port_url)
    [marker] = (state_dir / locks.INFLIGHT_DIR / TASK).glob("*.json")

    [kept] = outbox_listing(run_cronlog)

    assert stopped.returncode == 3
    assert kept["state"] == "kept"
    assert kept["run_id"] == marker.stem
    assert (kept["task_id"], kept["status"]) == (TASK, "failed")
    assert kept["path"] == str(marker)
    assert kept["queued_at"].endswith("Z")
    assert marker.exists()

    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    flushed = run_cronlog("flush")

    assert flushed.returncode == 0, flushed.stderr
    assert [
        arrival.headers["Idempotency-Key"] for arrival in ingest_server.received
    ] == [marker.stem]
    assert outbox_listing(run_cronlog) == []


def test_the_table_marks_a_kept_report_and_the_summary_counts_it(
    state_dir, closed_port_url, run_cronlog
):
    _stopped_while_reporting(state_dir, closed_port_url)

    listed = run_cronlog("outbox")

    header, row = listed.stdout.decode().splitlines()
    assert listed.returncode == 0
    assert header.split() == [
        "STATE",
        "QUEUED",
        "TASK",
        "STATUS",
        "RUN",
        "ID",
        "REASON",
    ]
    assert row.split()[0] == "kept" and "kept by a cronlog stopped" in row
    assert listed.stderr == (
        b"cronlog: 1 report waiting (1 kept by a stopped cronlog), 0 rejected\n"
    )


def test_a_report_whose_cronlog_is_alive_is_not_listed(state_dir, run_cronlog):
    live = locks.RunMarker(str(state_dir), TASK, "run-1", "2026-01-04T02:00:00Z")
    live.keep_report(BODY)
    try:
        listed = run_cronlog("outbox")
        as_json = outbox_listing(run_cronlog)
    finally:
        live.remove()

    assert as_json == []
    assert listed.stdout.decode().split() == [
        "STATE", "QUEUED", "TASK", "STATUS", "RUN", "ID", "REASON"
    ]  # fmt: skip
    assert listed.stderr == b"cronlog: 0 reports waiting, 0 rejected\n"


def test_an_unreadable_file_is_listed_with_its_reason_and_left_in_place(
    state_dir, run_cronlog
):
    outbox = state_dir / "outbox"
    outbox.mkdir(parents=True)
    name = "00000000000000000001-dddddddd-dddd-4ddd-8ddd-dddddddddddd.json"
    (outbox / name).write_bytes(b'{"ru')

    listed = run_cronlog("outbox")
    [unreadable] = outbox_listing(run_cronlog)

    assert listed.returncode == 0
    assert listed.stdout.decode().splitlines()[1].startswith("unreadable ")
    stderr = listed.stderr.decode().splitlines()
    assert stderr == ["cronlog: 0 reports waiting, 0 rejected, 1 unreadable"]
    assert unreadable["state"] == "unreadable"
    assert unreadable["run_id"] == "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
    assert unreadable["reason"].startswith("unreadable: Unterminated string")
    assert unreadable["path"] == str(outbox / name)
    assert os.listdir(outbox) == [name]
    assert (outbox / name).read_bytes() == b'{"ru'


def test_waiting_and_rejected_reports_are_counted_apart(state_dir, run_cronlog):
    from cronlog.outbox import Outbox
    from cronlog.reporter import Report

    outbox = Outbox(state_dir / "outbox")
    for run_id in ("run-1", "run-2", "run-3"):
        outbox.put(Report(run_id, BODY))
    outbox.reject(outbox.pending()[0], "the dashboard refused the report (HTTP 422)")

    listed = run_cronlog("outbox")
    rows = outbox_listing(run_cronlog)

    assert [(row["state"], row["run_id"]) for row in rows] == [
        ("waiting", "run-2"),
        ("waiting", "run-3"),
        ("rejected", "run-1"),
    ]
    assert rows[2]["reason"] == "the dashboard refused the report (HTTP 422)"
    assert listed.stderr == b"cronlog: 2 reports waiting, 1 rejected\n"


def test_listing_an_empty_state_directory_creates_nothing(state_dir, run_cronlog):
    listed = run_cronlog("outbox", "--json")

    assert listed.returncode == 0
    assert json.loads(listed.stdout) == []
    assert listed.stderr == b""
    assert not (state_dir / "outbox").exists()


@pytest.mark.parametrize("kind", ["a directory", "not a database"])
def test_serve_with_a_db_it_cannot_open_is_bad_input(kind, tmp_path, capsys):
    location = tmp_path / "runs.db"
    if kind == "a directory":
        location.mkdir()
    else:
        location.write_bytes(b"not SQLite " * 100)

    started = time.monotonic()
    status = run_cli(["serve", "--port", "0", "--db", str(location)])

    err = capsys.readouterr().err
    assert status == exits.USAGE
    assert err.startswith("cronlog: error: Invalid value for '--db': ")
    assert err.count("\n") == 1
    assert str(location) in err
    assert time.monotonic() - started < WAIT_SECONDS


def test_serve_names_a_db_in_a_missing_directory(tmp_path, capsys):
    location = tmp_path / "absent" / "runs.db"

    status = run_cli(["serve", "--port", "0", "--db", str(location)])

    err = capsys.readouterr().err
    assert status == exits.USAGE
    assert f"cannot use the store {location}: the directory" in err
    assert not location.parent.exists()
