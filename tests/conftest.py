"""Fixtures shared by the tests: an isolated environment, a real ingest server on
loopback, a scripted dashboard, a subreaper for a job's orphans, and a way to run the
installed `cronlog` as a real process."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from e2e_support import (
    CRONLOG,
    KEY,
    PROCESS_TIMEOUT,
    Arrival,
    Dashboard,
    free_port_url,
)

PR_SET_CHILD_SUBREAPER = 36
# Keys, colour, and proxies: a proxy variable would send loopback traffic elsewhere.
ISOLATED_VARIABLES = (
    {"CHATKIT_API_KEY", "NO_COLOR", "SSL_CERT_FILE", "CURL_HOME"}
    | {f"{name}_proxy" for name in ("http", "https", "all", "no")}
    | {f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "NO")}
)

# Set by .ci/run, where curl, openssl, PostgreSQL and Chromium are installed: there a
# test skipped for want of one of them is a failure, not a quiet pass. Read at import,
# before the per-test isolation clears CRONLOG_* variables.
NO_SKIPS = os.environ.get("CRONLOG_TEST_NO_SKIPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        report.outcome = "failed"
        report.longrepr = f"skipped where CRONLOG_TEST_NO_SKIPS=1: {reason}"


@pytest.fixture(scope="session", autouse=True)
def _session_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Even module-scoped fixtures, which run before the per-test isolation, keep
    cronlog's state out of the machine's own (/var/lib/cronlog for root)."""
    saved = {
        name: os.environ.get(name) for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")
    }
    home = tmp_path_factory.mktemp("session-home")
    os.environ["XDG_STATE_HOME"] = str(home / "state")
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the machine's cronlog settings, keys or state."""
    for name in list(os.environ):
        if name.startswith("CRONLOG_") or name in ISOLATED_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@dataclass
class IngestServer:
    """A real HTTP server on 127.0.0.1 that records what it is sent.

    `answers` is a queue of (status, body, headers) tuples; when it is empty the
    server answers as the dashboard does on success.
    """

    url: str = ""
    received: list[Arrival] = field(default_factory=list)
    answers: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int, body: Any = None, **headers: str) -> None:
        self.answers.append((status, body, headers))

    @property
    def bodies(self) -> list[Any]:
        return [request.json for request in self.received]


def _handler_for(server: IngestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with server.lock:
                server.received.append(
                    Arrival("POST", self.path, dict(self.headers.items()), body)
                )
                status, answer, headers = (
                    server.answers.pop(0)
                    if server.answers
                    else (200, _dashboard_success(body), {})
                )
            payload = (
                answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _dashboard_success(body: bytes) -> dict[str, Any]:
    sent = json.loads(body or b"{}")
    return {
        "success": True,
        "message": "Task execution logged successfully",
        "data": {"id": "550e8400-e29b-41d4-a716-446655440000", **sent},
    }


@pytest.fixture
def ingest_server() -> Iterator[IngestServer]:
    recorder = IngestServer()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(recorder))
    recorder.url = f"http://127.0.0.1:{http_server.server_address[1]}"
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    http_server.shutdown()
    http_server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    return free_port_url()


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dashboard]:
    """A scripted loopback dashboard that `cronlog` reports to, with a key to send."""
    server = Dashboard()
    monkeypatch.setenv("CRONLOG_URL", server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    yield server
    server.stop()


@pytest.fixture
def reaper() -> Iterator[None]:
    """Make this process the parent of the job's orphans while the test runs.

    A killed grandchild is reparented, and until its new parent reaps it `os.kill(pid,
    0)` still finds the zombie; PID 1 here reaps late, in a container without an init
    never. As the subreaper the test reaps it itself, by PID (never waitpid(-1), which
    would steal Popen's statuses).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def run_cronlog() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run the installed `cronlog` as a real process; stdout and stderr kept apart."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = PROCESS_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CRONLOG, *args],
            capture_output=True,
            env=os.environ.copy() if env is None else env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run
