"""What the end-to-end tests share: a loopback dashboard whose answers a test scripts,
and helpers that start, wait for, stop and reap the real processes of a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CRONLOG = shutil.which("cronlog", path=str(Path(sys.executable).parent)) or "cronlog"
PROCESS_TIMEOUT = 60
KEY = "k3y-for-the-e2e-tests-0123"
WAIT_SECONDS = 10.0  # how long any one thing may take to happen in these tests
ACCEPTED = b'{"success":true,"message":"Task execution logged successfully"}'
REFUSED = b'{"success":false,"error":"Missing required fields"}'


@dataclass(frozen=True)
class Arrival:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # time.monotonic() when the request arrived, before any scripted delay
    at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]


@dataclass(frozen=True)
class Answer:
    """One scripted answer; without a body, the dashboard's own for the status."""

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    body: bytes | None = None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A cronlog that gave up on, or was killed during, a slow answer leaves a
        # broken pipe: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Dashboard:
    """A loopback ingest endpoint whose answers a test scripts, each maybe slow.

    `script` holds the answers to the next requests, in order; after it, every
    request gets `answer`, by default accepted at once as the dashboard does.
    """

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.script: list[Answer] = []
        self.answer = Answer()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def received(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    @property
    def keys(self) -> list[str]:
        return [arrival.key for arrival in self.received]

    @property
    def bodies(self) -> list[Any]:
        return [arrival.json for arrival in self.received]

    def stop(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=WAIT_SECONDS)

    def _answer_for(self, arrival: Arrival) -> Answer:
        with self._lock:
            self.arrivals.append(arrival)
            return self.script.pop(0) if self.script else self.answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrival = Arrival(
                    self.command, self.path, dict(self.headers.items()), body
                )
                answer = dashboard._answer_for(arrival)
                dashboard.closing.wait(answer.delay)

                reply = answer.body
                if reply is None:
                    reply = ACCEPTED if answer.status < 300 else REFUSED
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(reply)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with suppress(ConnectionError):
                    self.wfile.write(reply)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def free_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def outbox_listing(run_cronlog, env=None) -> list[dict[str, Any]]:
    result = run_cronlog("outbox", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], object], seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def pids_in(path: Path, count: int) -> list[int]:
    """The PIDs a job wrote to `path`, one a line, once it has written `count`."""

    def written() -> bool:
        return path.exists() and len(path.read_text().split()) >= count

    assert wait_for(written), f"the job did not write {count} PIDs to {path}"
    return [int(word) for word in path.read_text().split()]


def is_gone(pid: int) -> bool:
    with suppress(ChildProcessError):  # not ours: someone else reaps it
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_members(pgid: int) -> list[int]:
    """Live processes of group `pgid` (zombies have exited and do not count)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_group(pgid: int) -> None:
    """SIGKILL a job's group that outlived the test, then reap its leader."""
    if group_members(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: is_gone(pgid))


def start(*args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CRONLOG, *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen[bytes], *groups: int) -> None:
    """Kill what a test started, if it is still there: cronlog and the job's groups."""
    if process.poll() is None:
        process.kill()
    for pgid in groups:
        kill_group(pgid)
    with suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=WAIT_SECONDS)
