"""Delivery of reports end to end: the installed `cronlog` as real processes against a
loopback dashboard that fails, stalls, refuses and comes back, as on a bad night."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_support import (
    CRONLOG,
    KEY,
    PROCESS_TIMEOUT,
    Answer,
    free_port_url,
    outbox_listing,
    wait_for,
)

TASK = "sync-price-grid"
BACKLOG_RUNS = 100
BACKLOG_WORKERS = 4  # two cores: more only adds contention to each run's start


def _outbox_files(state_home: Path) -> list[Path]:
    return sorted((state_home / "cronlog" / "outbox").glob("*.json"))


def _job_appending_to(marker: Path, line: str) -> list[str]:
    """A job that says it ran by appending `line` to `marker`."""
    return ["sh", "-c", 'echo "$1" >> "$2"', "sh", line, str(marker)]


def _runs_of(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def test_a_503_is_retried_with_the_identical_body_and_key(
    dashboard, run_cronlog, tmp_path
):
    dashboard.script = [Answer(503)]
    marker = tmp_path / "ran"

    result = run_cronlog(
        "run", "--task-id", TASK, "--", *_job_appending_to(marker, "1")
    )

    assert result.returncode == 0
    assert result.stderr == b""
    first, second = dashboard.arrivals
    assert first.body == second.body
    assert first.key == second.key
    assert second.json["status"] == "success"
    assert _runs_of(marker) == ["1"]


def test_a_429_waits_as_long_as_retry_after_says(dashboard, run_cronlog):
    dashboard.script = [Answer(429, headers={"Retry-After": "1"})]

    result = run_cronlog("run", "--task-id", TASK, "--", "true")

    assert result.returncode == 0
    first, second = dashboard.arrivals
    assert second.at - first.at >= 0.95
    assert first.body == second.body and first.key == second.key


def test_a_400_is_tried_once_and_explained_and_the_job_status_stands(
    dashboard, run_cronlog, tmp_path
):
    dashboard.answer = Answer(400)
    marker = tmp_path / "ran"

    result = run_cronlog("run", "--task-id", TASK, "--",
                         "sh", "-c", f"echo x >> {marker}; exit 3")  # fmt: skip

    assert result.returncode == 3
    assert len(dashboard.arrivals) == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cronlog: ")
    assert "HTTP 400" in lines[0] and "Missing required fields" in lines[0]
    assert _runs_of(marker) == ["x"]


def test_a_dashboard_slower_than_the_deadline_leaves_the_report_in_the_outbox(
    dashboard, run_cronlog, tmp_path
):
    dashboard.answer = Answer(delay=5.0)
    marker = tmp_path / "ran"

    started = time.monotonic()
    result = run_cronlog("run", "--task-id", TASK, "--report-timeout", "1s", "--",
                         "sh", "-c", f"echo x >> {marker}; exit 3")  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.returncode == 3
    assert elapsed < 4.0  # the 1 s deadline plus start-up, short of the server's 5 s
    assert "outbox" in result.stderr.decode()
    [waiting] = outbox_listing(run_cronlog)
    assert waiting["state"] == "waiting"
    assert waiting["run_id"] == dashboard.arrivals[0].key
    assert (waiting["task_id"], waiting["status"]) == (TASK, "failed")
    assert _runs_of(marker) == ["x"]


@dataclass(frozen=True)
class Backlog:
    state_home: Path  # an XDG_STATE_HOME whose outbox holds the reports
    marker: Path  # one line per job run


@pytest.fixture(scope="module")
def backlog(tmp_path_factory) -> Backlog:
    """A hundred runs made while the dashboard was down, queued once per module.

    Slow (about 50 s, the longest step of these tests): a hundred Python start-ups,
    each importing httpx and pydantic. They run a few at a time to keep the time down
    on two cores, so their queue order, not their counter, is the order to deliver in.
    """
    home = tmp_path_factory.mktemp("backlog")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CRONLOG_") and name != "CHATKIT_API_KEY"
    }
    env.update(
        XDG_STATE_HOME=str(home / "state"),
        XDG_CONFIG_HOME=str(home / "config"),
        HOME=str(home),
        CRONLOG_URL=free_port_url(),
        CRONLOG_API_KEY=KEY,
    )
    marker = home / "ran"

    def one_run(number: int) -> int:
        job = _job_appending_to(marker, str(number))
        command = [CRONLOG, "run", "--task-id", TASK, "--report-timeout", "200ms",
                   "--notes", f"run {number}", "--", *job]  # fmt: skip
        return subprocess.run(
            command, env=env, capture_output=True, timeout=PROCESS_TIMEOUT
        ).returncode

    with ThreadPoolExecutor(BACKLOG_WORKERS) as pool:
        codes = list(pool.map(one_run, range(BACKLOG_RUNS)))

    assert codes == [0] * BACKLOG_RUNS
    assert len(_outbox_files(home / "state")) == BACKLOG_RUNS
    return Backlog(home / "state", marker)


@pytest.fixture
def queued(backlog, tmp_path) -> list[str]:
    """This test's own copy of the backlog; its run IDs in outbox order."""
    state_home = tmp_path / "state"
    shutil.copytree(backlog.state_home, state_home)
    return [path.stem.partition("-")[2] for path in _outbox_files(state_home)]


def test_a_hundred_runs_with_the_dashboard_down_each_ran_once_and_wait_in_order(
    backlog, queued, run_cronlog
):
    listing = outbox_listing(run_cronlog)

    assert sorted(_runs_of(backlog.marker), key=int) == [
        str(n) for n in range(BACKLOG_RUNS)
    ]
    assert [entry["run_id"] for entry in listing] == queued
    assert [entry["queued_at"] for entry in listing] == sorted(
        entry["queued_at"] for entry in listing
    )


def test_flush_delivers_the_hundred_in_outbox_order_once_each(
    dashboard, queued, run_cronlog
):
    result = run_cronlog("flush")

    assert result.returncode == 0, result.stderr
    assert "delivered 100, waiting 0, rejected 0" in result.stderr.decode()
    assert dashboard.keys == queued
    assert len(set(dashboard.keys)) == BACKLOG_RUNS
    notes = sorted(int(body["notes"].removeprefix("run ")) for body in dashboard.bodies)
    assert notes == list(range(BACKLOG_RUNS))
    assert outbox_listing(run_cronlog) == []


def test_the_next_run_delivers_the_backlog_after_its_own_report(
    dashboard, queued, run_cronlog
):
    started = time.monotonic()
    result = run_cronlog("run", "--task-id", TASK, "--notes", "the next run", "--",
                         "true")  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.returncode == 0
    assert result.stderr == b""
    assert dashboard.bodies[0]["notes"] == "the next run"
    assert dashboard.keys[1:] == queued
    assert elapsed < 12  # within the run's 10 s backlog budget
    assert outbox_listing(run_cronlog) == []


def test_a_flush_killed_midway_loses_nothing(dashboard, queued, run_cronlog):
    dashboard.answer = Answer(delay=0.1)  # slow enough that the kill lands mid-flush
    flusher = subprocess.Popen(
        [CRONLOG, "flush"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while len(dashboard.arrivals) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(flusher.pid, signal.SIGKILL)
        flusher.wait(timeout=10)
    finally:
        if flusher.poll() is None:
            flusher.kill()
            flusher.wait(timeout=10)

    assert 20 <= len(dashboard.arrivals) < BACKLOG_RUNS
    assert len(outbox_listing(run_cronlog)) > 0

    dashboard.answer = Answer()
    second = run_cronlog("flush")

    assert second.returncode == 0, second.stderr
    assert set(dashboard.keys) == set(queued)
    assert len(dashboard.keys) - len(set(dashboard.keys)) <= 1  # the one in flight
    assert outbox_listing(run_cronlog) == []


def test_fifty_concurrent_runs_with_the_dashboard_down_leave_fifty_intact_entries(
    closed_port_url, monkeypatch, tmp_path
):
    # Slow (about 20 s): fifty Python start-ups on two cores, and they must overlap.
    monkeypatch.setenv("CRONLOG_URL", closed_port_url)
    marker = tmp_path / "ran"
    command = [CRONLOG, "run", "--task-id", TASK, "--report-timeout", "1s"]

    processes = [
        subprocess.Popen(
            [*command, "--notes", f"run {n}", "--", *_job_appending_to(marker, str(n))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(50)
    ]
    try:
        codes = [process.wait(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    assert codes == [0] * 50
    outbox = tmp_path / "state" / "cronlog" / "outbox"
    files = _outbox_files(tmp_path / "state")
    assert len(files) == 50
    assert not [name for name in os.listdir(outbox) if name.startswith(".")]
    records = [json.loads(path.read_bytes()) for path in files]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    assert sorted(r["body"]["notes"] for r in records) == sorted(
        f"run {n}" for n in range(50)
    )
    assert len({r["run_id"] for r in records}) == 50
    assert sorted(_runs_of(marker), key=int) == [str(n) for n in range(50)]


def test_report_start_sends_running_before_the_final_report(dashboard, run_cronlog):
    result = run_cronlog("run", "--task-id", TASK, "--report-start", "--", "true")

    assert result.returncode == 0
    running, final = dashboard.arrivals
    assert running.json["status"] == "running"
    assert "started_at" in running.json and "ended_at" not in running.json
    assert final.json["status"] == "success"
    assert running.key != final.key  # a receiver dropping duplicates keeps both


def _seconds_until_the_job_starts(extra: list[str], tmp_path: Path) -> float:
    stamp = tmp_path / "job-started"
    stamp.unlink(missing_ok=True)
    program = f"import time; open({str(stamp)!r}, 'w').write(repr(time.time()))"

    launched = time.time()
    subprocess.run(
        [CRONLOG, "run", "--task-id", TASK, "--report-timeout", "200ms", *extra,
         "--", sys.executable, "-c", program],
        capture_output=True, timeout=PROCESS_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return float(stamp.read_text()) - launched


def test_report_start_with_the_dashboard_down_holds_the_job_back_at_most_a_second(
    closed_port_url, monkeypatch, tmp_path
):
    monkeypatch.setenv("CRONLOG_URL", closed_port_url)

    plain = _seconds_until_the_job_starts([], tmp_path)
    with_start = _seconds_until_the_job_starts(["--report-start"], tmp_path)

    assert with_start - plain < 1.5  # at most the documented 1 s wait, and slack


class SilentServer:
    """A loopback socket that listens and accepts but never answers a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted = 0
        self._connections: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)  # held open, never read or answered
            self.accepted += 1

    def stop(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        for connection in self._connections:
            connection.close()
        self._listener.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


def test_report_start_to_a_silent_dashboard_holds_the_job_back_at_most_a_second(
    silent_server, monkeypatch, tmp_path
):
    # A closed port refuses at once; a dashboard that accepts and never answers is the
    # case where only the documented 1 s bound keeps the job on time.
    monkeypatch.setenv("CRONLOG_URL", silent_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    runs = tmp_path / "runs"
    stamp = tmp_path / "job-started"
    program = (
        "import sys, time\n"
        f"open({str(runs)!r}, 'a').write('x\\n')\n"
        f"open({str(stamp)!r}, 'w').write(repr(time.time()))\n"
    )

    launched = time.time()
    result = subprocess.run(
        [CRONLOG, "run", "--task-id", TASK, "--report-start",
         "--report-timeout", "200ms", "--", sys.executable, "-c", program],
        capture_output=True, timeout=PROCESS_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert silent_server.accepted >= 1  # the running report was really attempted
    assert _runs_of(runs) == ["x"]
    # From launch to the job's own first statement: start-up, at most the 1 s wait.
    assert float(stamp.read_text()) - launched < 2.5


def test_a_stop_signal_while_report_start_waits_is_reported_and_starts_nothing(
    silent_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("CRONLOG_URL", silent_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    monkeypatch.setenv("CRONLOG_STATE_DIR", str(tmp_path / "state"))
    ran = tmp_path / "ran"

    cronlog = subprocess.Popen(
        [CRONLOG, "run", "--task-id", TASK, "--report-start", "--report-timeout",
         "1s", "--", "touch", str(ran)],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # The running report is on the wire, never to be answered: cronlog waits.
        assert wait_for(lambda: silent_server.accepted >= 1)
        cronlog.send_signal(signal.SIGTERM)
        _, stderr = cronlog.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if cronlog.poll() is None:
            cronlog.kill()
            cronlog.wait()

    assert cronlog.returncode == 128 + signal.SIGTERM
    assert not ran.exists()
    [kept] = (tmp_path / "state" / "outbox").glob("*.json")
    body = json.loads(kept.read_text())["body"]
    assert (body["status"], body["notes"]) == (
        "failed",
        "terminated by SIGTERM before the job started",
    )
    assert b"Traceback" not in stderr


BEHAVIOURS = {
    "accepts": Answer(200),
    "fails with 503": Answer(503),
    "refuses with 400": Answer(400),
    "refuses the key": Answer(401),
    "answers after 3 s": Answer(200, delay=3.0),
}


@pytest.mark.parametrize("behaviour", [*BEHAVIOURS, "is not listening"])
def test_the_job_runs_exactly_once_whatever_the_dashboard_does(
    behaviour, dashboard, closed_port_url, monkeypatch, run_cronlog, tmp_path
):
    if behaviour in BEHAVIOURS:
        dashboard.answer = BEHAVIOURS[behaviour]
    else:
        monkeypatch.setenv("CRONLOG_URL", closed_port_url)
    marker = tmp_path / "ran"

    job = f"echo x >> {marker}; exit 7"
    result = run_cronlog("run", "--task-id", TASK, "--report-start",
                         "--report-timeout", "1s", "--", "sh", "-c", job)  # fmt: skip

    assert result.returncode == 7
    assert _runs_of(marker) == ["x"]


def test_a_missing_ca_bundle_is_refused_before_the_job_runs(
    dashboard, run_cronlog, tmp_path
):
    marker = tmp_path / "ran"

    result = run_cronlog(
        "run",
        "--task-id",
        TASK,
        "--ca-bundle",
        str(tmp_path / "missing.pem"),
        "--",
        "touch",
        str(marker),
    )

    assert result.returncode == 2
    assert "--ca-bundle: cannot read CA bundle" in result.stderr.decode()
    assert "missing.pem" in result.stderr.decode()
    assert not marker.exists()
    assert dashboard.arrivals == []


def test_report_start_with_the_dashboard_down_returns_in_about_the_deadline(
    closed_port_url, monkeypatch, run_cronlog
):
    monkeypatch.setenv("CRONLOG_URL", closed_port_url)

    started = time.monotonic()
    result = run_cronlog("run", "--task-id", TASK, "--report-start",
                         "--report-timeout", "1s", "--", "true")  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.returncode == 0
    assert elapsed < 3.0  # as without --report-start: the 1 s deadline and start-up
