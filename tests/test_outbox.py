"""Tests for cronlog.outbox: nothing queued is lost, corrupted or sent out of turn."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import cronlog
from cronlog import locks
from cronlog.outbox import KEPT_REASON, Outbox, flush, kept_by_stopped_runs
from cronlog.reporter import Report, Reporter, Target

KEY = "outbox-test-key"
SRC = Path(cronlog.__file__).resolve().parents[1]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A flusher killed mid-request leaves a broken pipe: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class IngestServer:
    """A loopback ingest endpoint that records what it got and answers as told."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.answer = lambda number, body: 200
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the dashboard offers
            # Headers and body go out in two writes; with Nagle on, the second waits
            # for the client's delayed ACK (40 ms), which no real server makes us wait.
            disable_nagle_algorithm = True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.received.append((self.headers["Idempotency-Key"], body))
                    number = len(server.received)
                status = server.answer(number, body)
                reply = b'{"success":true}' if status == 200 else b'{"error":"no"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}/api/scheduled-tasks/ingest"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.received]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    server = IngestServer()
    yield server
    server.stop()


@pytest.fixture
def outbox(tmp_path):
    return Outbox(tmp_path / "state" / "outbox")


@pytest.fixture
def reporter(server):
    with Reporter(Target(server.url, KEY)) as reporter:
        yield reporter


def queue_corrupt(outbox: Outbox, content: bytes) -> Path:
    """An outbox file named as the outbox names them, holding `content`."""
    corrupt = outbox.directory / f"{time.time_ns():020d}-{uuid.uuid4()}.json"
    corrupt.write_bytes(content)
    return corrupt


def queue(outbox: Outbox, count: int) -> list[str]:
    """Put `count` reports; return their run IDs in the order they were queued."""
    run_ids = []
    for number in range(count):
        report = _report(number)
        outbox.put(report)
        run_ids.append(report.run_id)
    return run_ids


def test_pending_lists_reports_oldest_first(outbox):
    run_ids = queue(outbox, 5)

    entries = outbox.pending()

    assert [entry.run_id for entry in entries] == run_ids
    assert entries[2].body["notes"] == "run 2"
    assert entries[2].report == Report(run_ids[2], entries[2].body)
    assert entries[0].queued_at.endswith("Z")


def test_a_report_file_is_0600_in_a_0700_directory(outbox):
    path = outbox.put(_report(0))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.directory.stat().st_mode) == 0o700
    assert path.name.endswith(f"-{json.loads(path.read_text())['run_id']}.json")


def test_a_tmp_file_left_by_a_killed_writer_is_ignored(outbox):
    run_ids = queue(outbox, 2)
    half = outbox.directory / f".{time.time_ns():020d}-x.json.123.tmp"
    half.write_bytes(b'{"run_id": "x", "bo')

    entries = outbox.pending()

    assert [entry.run_id for entry in entries] == run_ids
    assert half.exists()
    assert len(outbox) == 2


def test_a_tmp_file_older_than_an_hour_is_removed_by_the_next_listing(outbox):
    queue(outbox, 1)
    stale = outbox.directory / ".00000000000000000001-x.json.9.tmp"
    stale.write_bytes(b"{")
    os.utime(stale, (time.time() - 3700, time.time() - 3700))

    outbox.pending()

    assert not stale.exists()


def test_a_corrupt_file_is_moved_to_rejected_with_a_warning(outbox, caplog):
    good = queue(outbox, 1)
    corrupt = queue_corrupt(outbox, b"\x00\x00not json")

    with caplog.at_level(logging.WARNING, logger="cronlog.outbox"):
        entries = outbox.pending()

    assert [entry.run_id for entry in entries] == good
    assert not corrupt.exists()
    kept = outbox.rejected_directory / corrupt.name
    assert kept.read_bytes() == b"\x00\x00not json"
    assert corrupt.name in caplog.text
    assert [entry.path for entry in outbox.rejected()] == [kept]
    assert outbox.rejected()[0].reason.startswith("unreadable")


def test_waiting_lists_a_corrupt_file_with_its_reason_and_leaves_it(outbox, caplog):
    good = queue(outbox, 1)
    corrupt = queue_corrupt(outbox, b'{"ru')

    with caplog.at_level(logging.DEBUG, logger="cronlog"):
        entries = outbox.waiting()

    assert [entry.run_id for entry in entries] == [*good, corrupt.stem.split("-", 1)[1]]
    assert [entry.readable for entry in entries] == [True, False]
    assert entries[1].path == corrupt
    assert entries[1].reason.startswith("unreadable: Unterminated string")
    assert corrupt.read_bytes() == b'{"ru'
    assert not outbox.rejected_directory.exists()
    assert caplog.text == ""


def test_listing_leaves_a_stale_tmp_file_for_flush_to_remove(outbox):
    queue(outbox, 1)
    stale = outbox.directory / ".00000000000000000001-x.json.9.tmp"
    stale.write_bytes(b"{")
    os.utime(stale, (time.time() - 3700, time.time() - 3700))

    outbox.waiting()
    outbox.rejected()
    len(outbox)

    assert stale.exists()


def test_an_unreadable_rejected_file_is_not_queued_again(outbox):
    outbox.rejected_directory.mkdir(parents=True)
    unreadable = outbox.rejected_directory / f"{time.time_ns():020d}-x.json"
    unreadable.write_bytes(b"[]")

    assert outbox.retry_rejected() == 0
    assert unreadable.exists() and len(outbox) == 0


def test_a_report_kept_by_a_stopped_cronlog_is_listed_and_left_for_flush(tmp_path):
    body = _report(7).body
    marker = _dead_marker(tmp_path, "tradein-auto-submit", "run-7", {"report": body})
    kept_at = datetime(2026, 1, 4, 2, 0, 5, tzinfo=UTC).timestamp()
    os.utime(marker, (kept_at, kept_at))

    [entry] = kept_by_stopped_runs(tmp_path)

    assert (entry.path, entry.run_id, entry.body) == (marker, "run-7", body)
    assert entry.reason == KEPT_REASON
    assert entry.queued_at == "2026-01-04T02:00:05.000Z"
    [again] = locks.finished_reports(str(tmp_path))  # still there, and not held
    again.release()


def test_kept_reports_come_oldest_first_across_tasks(tmp_path):
    now = time.time()
    for age, task_id in ((10, "a-newer"), (20, "b-older")):
        marker = _dead_marker(tmp_path, task_id, task_id, {"report": {}})
        os.utime(marker, (now - age, now - age))

    entries = kept_by_stopped_runs(tmp_path)

    assert [entry.run_id for entry in entries] == ["b-older", "a-newer"]


def test_a_marker_without_a_report_is_not_listed_as_kept(tmp_path):
    _dead_marker(tmp_path, "tradein-auto-submit", "run-1", {})

    assert kept_by_stopped_runs(tmp_path) == []


def test_a_report_whose_cronlog_is_alive_is_not_listed_as_kept(tmp_path):
    # flock locks belong to the open file, so this process's marker is held against
    # the listing's own open of it, as another live cronlog's would be.
    live = locks.RunMarker(str(tmp_path), "tradein-auto-submit", "run-1", "x")
    live.keep_report(_report(1).body)
    try:
        assert kept_by_stopped_runs(tmp_path) == []
    finally:
        live.remove()


def test_no_inflight_directory_means_nothing_kept(tmp_path):
    assert kept_by_stopped_runs(tmp_path / "never-used") == []


def test_a_rejected_report_is_kept_with_its_reason(outbox):
    queue(outbox, 2)
    first, second = outbox.pending()

    outbox.reject(first, "the dashboard refused the report (HTTP 422): bad status")

    assert [entry.run_id for entry in outbox.pending()] == [second.run_id]
    (rejected,) = outbox.rejected()
    assert rejected.run_id == first.run_id
    assert rejected.body == first.body
    assert rejected.reason == "the dashboard refused the report (HTTP 422): bad status"
    assert stat.S_IMODE(rejected.path.stat().st_mode) == 0o600


def test_fifty_writer_processes_at_once_leave_fifty_intact_entries(outbox):
    context = multiprocessing.get_context("fork")
    start = context.Barrier(50)
    writers = [
        context.Process(target=_put_one, args=(outbox.directory, number, start))
        for number in range(50)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)

    assert [writer.exitcode for writer in writers] == [0] * 50
    entries = outbox.pending()
    assert sorted(entry.body["notes"] for entry in entries) == sorted(
        f"run {number}" for number in range(50)
    )
    assert outbox.rejected() == []
    assert [p for p in outbox.directory.iterdir() if p.name.startswith(".")] == []


def test_flush_delivers_200_reports_in_order_once_each(server, reporter, outbox):
    run_ids = queue(outbox, 200)

    result = flush(reporter, outbox, budget=60, per_report_deadline=5)

    assert (result.delivered, result.remaining, result.rejected) == (200, 0, 0)
    assert result.error is None
    assert server.keys == run_ids
    assert [body["notes"] for _, body in server.received] == [
        f"run {number}" for number in range(200)
    ]
    assert outbox.pending() == []


def test_two_concurrent_flushers_never_send_one_report_twice(server, outbox):
    run_ids = queue(outbox, 300)
    server.answer = lambda number, body: time.sleep(0.001) or 200
    results = []

    def flusher():
        with Reporter(Target(server.url, KEY)) as reporter:
            results.append(flush(reporter, outbox, budget=60, per_report_deadline=5))

    threads = [threading.Thread(target=flusher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(server.keys) == sorted(run_ids)
    assert len(server.keys) == len(set(server.keys))
    assert sum(result.delivered for result in results) == 300
    assert all(result.delivered > 0 for result in results)


def test_a_report_locked_by_another_flusher_is_skipped(server, reporter, outbox):
    run_ids = queue(outbox, 3)
    held = outbox.pending()[1]
    fd = os.open(held.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)

    try:
        result = flush(reporter, outbox, budget=10, per_report_deadline=5)
    finally:
        os.close(fd)

    assert server.keys == [run_ids[0], run_ids[2]]
    assert (result.delivered, result.remaining) == (2, 1)
    assert [entry.run_id for entry in outbox.pending()] == [run_ids[1]]


def test_flush_stops_on_a_retriable_failure_and_keeps_the_order(
    server, reporter, outbox
):
    run_ids = queue(outbox, 10)
    server.answer = lambda number, body: 200 if number <= 3 else 503

    result = flush(reporter, outbox, budget=10, per_report_deadline=0.2)

    assert (result.delivered, result.remaining, result.rejected) == (3, 7, 0)
    assert "HTTP 503" in result.error
    assert set(server.keys[3:]) == {run_ids[3]}
    pending = outbox.pending()
    assert [entry.run_id for entry in pending] == run_ids[3:]
    assert pending[0].attempts == 1


def test_flush_rejects_a_refused_report_and_goes_on(server, reporter, outbox):
    run_ids = queue(outbox, 4)
    server.answer = lambda number, body: 422 if body["notes"] == "run 1" else 200

    result = flush(reporter, outbox, budget=10, per_report_deadline=5)

    assert (result.delivered, result.remaining, result.rejected) == (3, 0, 1)
    assert result.error is None
    (rejected,) = outbox.rejected()
    assert rejected.run_id == run_ids[1]
    assert "HTTP 422" in rejected.reason


def test_flush_keeps_everything_when_the_key_is_refused(server, reporter, outbox):
    run_ids = queue(outbox, 4)
    server.answer = lambda number, body: 401

    result = flush(reporter, outbox, budget=10, per_report_deadline=5)

    assert (result.delivered, result.remaining, result.rejected) == (0, 4, 0)
    assert "CHATKIT_API_KEY" in result.error
    assert KEY not in result.error
    assert [entry.run_id for entry in outbox.pending()] == run_ids
    assert len(server.keys) == 1


def test_an_outbox_that_cannot_be_written_is_an_error_not_a_crash(
    server, reporter, outbox
):
    run_ids = queue(outbox, 2)
    outbox.rejected_directory.write_text("a file where the directory should be")
    server.answer = lambda number, body: 422

    result = flush(reporter, outbox, budget=10, per_report_deadline=5)

    assert result.error.startswith(f"cannot use the outbox {outbox.directory}: ")
    assert (result.delivered, result.remaining, result.rejected) == (0, 2, 0)
    assert [entry.run_id for entry in outbox.pending()] == run_ids


def test_put_into_an_unusable_directory_raises_os_error(tmp_path):
    (tmp_path / "state").write_text("not a directory")

    with pytest.raises(OSError):
        Outbox(tmp_path / "state" / "outbox").put(_report(0))


def test_flush_stops_when_its_budget_is_used(server, reporter, outbox):
    queue(outbox, 50)
    server.answer = lambda number, body: time.sleep(0.05) or 200

    started = time.monotonic()
    result = flush(reporter, outbox, budget=0.5, per_report_deadline=5)
    elapsed = time.monotonic() - started

    assert 0 < result.delivered < 50
    assert result.delivered + result.remaining == 50
    assert result.error is None
    assert elapsed < 1.5


def test_a_killed_flusher_loses_nothing_and_resends_with_the_same_key(server, outbox):
    run_ids = queue(outbox, 100)
    by_notes = {f"run {number}": run_id for number, run_id in enumerate(run_ids)}
    reached = threading.Event()
    release = threading.Event()

    def answer(number, body):
        if number == 40:
            reached.set()
            release.wait(timeout=10)  # the flusher dies while this send is in flight
        return 200

    server.answer = answer
    flusher = _start_flusher(server.url, outbox.directory)
    try:
        assert reached.wait(timeout=30)
        os.kill(flusher.pid, signal.SIGKILL)
        flusher.wait(timeout=10)
    finally:
        release.set()
        if flusher.poll() is None:
            flusher.kill()

    sent_before = set(server.keys)
    left = {entry.run_id for entry in outbox.pending()}
    assert sent_before | left == set(run_ids)
    assert len(left) >= 60

    with Reporter(Target(server.url, KEY)) as reporter:
        result = flush(reporter, outbox, budget=30, per_report_deadline=5)

    assert result.remaining == 0
    assert set(server.keys) == set(run_ids)
    assert all(key == by_notes[body["notes"]] for key, body in server.received)
    assert len(server.keys) - len(set(server.keys)) <= 1


def test_a_days_1440_reports_all_flush_to_a_loopback_server_in_order(outbox):
    """How long that takes is benchmarks/bench_flush.py's question, not this test's."""
    run_ids = queue(outbox, 1440)

    # The server runs in its own process: in this one it would fight the flusher for
    # the GIL.
    with _server_in_child() as (url, received), Reporter(Target(url, KEY)) as reporter:
        result = flush(reporter, outbox, budget=None, per_report_deadline=5)

    assert (result.delivered, result.remaining) == (1440, 0)
    assert received == run_ids


def _report(number: int) -> Report:
    body = {
        "task_id": "tradein-auto-submit",
        "task_title": "Trade-in auto submit",
        "status": "success",
        "duration_ms": number,
        "notes": f"run {number}",
    }
    return Report(str(uuid.uuid4()), body)


def _dead_marker(state_dir: Path, task_id: str, run_id: str, extra: dict) -> Path:
    """A run marker as a killed cronlog leaves it: written, and locked by nobody."""
    directory = state_dir / locks.INFLIGHT_DIR / task_id
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f"{run_id}.json"
    marker.write_text(json.dumps({"run_id": run_id, "started_at": "x", **extra}))
    return marker


def _put_one(directory: Path, number: int, start) -> None:
    start.wait(timeout=30)
    Outbox(directory).put(_report(number))


@contextmanager
def _server_in_child():
    """An IngestServer in a forked process; yields its URL and, after, what it got."""
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_serve_until_asked, args=(theirs,), daemon=True
    )
    child.start()
    received: list[str] = []
    try:
        assert ours.poll(timeout=30)
        yield ours.recv(), received
        ours.send("stop")
        assert ours.poll(timeout=30)
        received.extend(ours.recv())
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


def _serve_until_asked(conn) -> None:
    server = IngestServer()
    conn.send(server.url)
    conn.poll(timeout=120)
    conn.send(server.keys)
    server.stop()


def _start_flusher(url: str, directory: Path) -> subprocess.Popen:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from cronlog.outbox import Outbox, flush\n"
        "from cronlog.reporter import Reporter, Target\n"
        f"with Reporter(Target(sys.argv[1], {KEY!r})) as reporter:\n"
        "    flush(reporter, Outbox(Path(sys.argv[2])), budget=60,"
        " per_report_deadline=20)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, "-c", script, url, str(directory)], env=env
    )
