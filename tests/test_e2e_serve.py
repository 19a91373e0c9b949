"""`cronlog serve` end to end: the installed command as a real process on loopback,
taking runs from `cronlog run` and clients, serving them back, and stopping on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from e2e_support import CRONLOG, KEY, free_port_url, wait_for

INGEST = "/api/scheduled-tasks/ingest"
RUNS = "/api/scheduled-tasks/runs"
START_SECONDS = 20.0  # Python start-up and imports, on a loaded two-core machine
STOP_SECONDS = 10.0  # uvicorn's graceful shutdown is 5 s, with nothing in flight
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
REQUEST_LINE = re.compile(
    r"cronlog: 127\.0\.0\.1 (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) "
    r"\d+(\.\d+)?ms"
)
MANUAL_RUN = {"task_id": "test-task", "task_title": "Test Task", "status": "success"}


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log: Path  # the server's stderr

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@contextmanager
def serving(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """`cronlog serve ARGS` on a free loopback port, once it listens; stopped after."""
    url = free_port_url()
    port = url.rpartition(":")[2]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CRONLOG, "serve", "--host", "127.0.0.1", "--port", port, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ.copy() if env is None else env,
        )
    try:
        listening = f"cronlog: listening on {url}"
        started = wait_for(
            lambda: process.poll() is not None or listening in log.read_text(),
            START_SECONDS,
        )
        assert started and process.poll() is None, log.read_text()
        yield Served(process, url, log)
    finally:
        if process.poll() is None:
            process.kill()  # this test's own server, by its PID
        process.wait(timeout=STOP_SECONDS)


def stop(server: Served) -> int:
    """SIGTERM, as a service manager stops it; the exit status, within the bound."""
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=STOP_SECONDS)


def requests_logged(server: Served) -> list[tuple[str, str, int]]:
    lines = server.lines()
    assert lines[0] == f"cronlog: listening on {server.url}"
    logged = []
    for line in lines[1:]:
        match = REQUEST_LINE.fullmatch(line)
        assert match, f"not one request a line: {line!r}"
        logged.append((match["method"], match["path"], int(match["status"])))
    return logged


def write_key_file(tmp_path: Path) -> Path:
    key_file = tmp_path / "serve.key"
    key_file.write_text(f"  {KEY}\n")  # whitespace around it is trimmed
    key_file.chmod(0o600)
    return key_file


def serve_key_by(how: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment that give `cronlog serve` the key `how` says."""
    env = os.environ.copy()
    if how == "--api-key-file":
        return ["--api-key-file", str(write_key_file(tmp_path))], env
    env[how] = KEY
    return [], env


@pytest.mark.parametrize(
    "how", ["--api-key-file", "CRONLOG_API_KEY", "CHATKIT_API_KEY"]
)
def test_serve_takes_runs_only_with_its_key_and_serves_them_back(
    how, tmp_path, run_cronlog
):
    # The local store's own file, so that `cronlog history` reads what serve stored.
    db = tmp_path / "state" / "cronlog" / "runs.sqlite3"
    db.parent.mkdir(parents=True, mode=0o700)  # serve --db does not make directories
    args, env = serve_key_by(how, tmp_path)

    with serving(tmp_path, "--db", str(db), *args, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            unkeyed = http.post(INGEST, json=MANUAL_RUN)
            wrong = http.post(INGEST, json=MANUAL_RUN, headers={"X-API-Key": "nope"})
            keyed = http.post(INGEST, json=MANUAL_RUN, headers={"X-API-Key": KEY})

            job_env = {**os.environ, "CRONLOG_URL": server.url, "CRONLOG_API_KEY": KEY}
            job = run_cronlog("run", "--task-id", "sync-price-grid", "--",
                              "sh", "-c", "echo boom; exit 3", env=job_env)  # fmt: skip

            runs = http.get(RUNS)
            history = run_cronlog("history", "--json")
        status = stop(server)

    assert (unkeyed.status_code, wrong.status_code) == (401, 401)
    assert unkeyed.json() == wrong.json() == {"success": False, "error": "Unauthorized"}
    assert keyed.status_code == 200
    answer = keyed.json()
    assert set(answer) == {"success", "message", "data"}
    assert answer["success"] is True
    assert answer["message"] == "Task execution logged successfully"
    assert set(answer["data"]) == {"id", "task_id", "status", "started_at"}
    assert UUID.fullmatch(answer["data"]["id"])
    assert TIMESTAMP.fullmatch(answer["data"]["started_at"])
    assert (answer["data"]["task_id"], answer["data"]["status"]) == (
        "test-task",
        "success",
    )

    assert job.returncode == 3
    assert (job.stdout, job.stderr) == (b"boom\n", b"")  # the report was accepted

    assert runs.status_code == 200
    stored = runs.json()["data"]
    assert [(r["task_id"], r["status"]) for r in stored] == [
        ("sync-price-grid", "failed"),
        ("test-task", "success"),
    ]  # newest first, and nothing from the refused posts
    newest = stored[0]
    assert newest["task_title"] == "Sync price grid"
    assert newest["notes"] == "exit 3\nboom"
    assert (newest["environment"], newest["owner"]) == ("production", "Coolify Cron")
    assert isinstance(newest["duration_ms"], int) and newest["duration_ms"] >= 0
    assert stored[1]["id"] == answer["data"]["id"]

    assert history.returncode == 0, history.stderr
    listed = json.loads(history.stdout)
    assert [r["id"] for r in listed] == [r["id"] for r in stored]

    assert requests_logged(server) == [
        ("POST", INGEST, 401),
        ("POST", INGEST, 401),
        ("POST", INGEST, 200),
        ("POST", INGEST, 200),
        ("GET", RUNS, 200),
    ]
    assert KEY not in server.log.read_text()
    assert KEY[:8] not in server.log.read_text()
    # Stopped cleanly: uvicorn shuts down, then dies of the SIGTERM it caught, as a
    # service manager expects; a plain 0 would do as well.
    assert status in (0, -signal.SIGTERM), server.log.read_text()
    assert "Traceback" not in server.log.read_text()


def test_serve_refuses_a_public_address_without_a_key(run_cronlog, tmp_path):
    db = tmp_path / "runs.sqlite3"
    port = free_port_url().rpartition(":")[2]

    result = run_cronlog(
        "serve", "--host", "0.0.0.0", "--port", port, "--db", str(db), timeout=30
    )

    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith("cronlog: ") and stderr.count("\n") == 1, stderr
    assert "0.0.0.0" in stderr and "API key" in stderr
    assert not db.exists()
