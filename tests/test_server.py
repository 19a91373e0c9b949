"""`cronlog serve`: the ingest contract, the read API, the Schedulers page, hostile
input, and a real uvicorn server on loopback under 200 concurrent clients.

The contract runs against SQLite and, when CRONLOG_TEST_POSTGRES_URL is set (read at
import, before the autouse fixture clears CRONLOG_*), against PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from cronlog.errors import UsageError
from cronlog.server import LOOPBACK_HOST_HEADERS, create_app, is_loopback, serve
from cronlog.server.ingest import MAX_BODY_BYTES
from cronlog.store import Store, open_store

POSTGRES_URL = os.environ.get("CRONLOG_TEST_POSTGRES_URL")
KEY = "test-key-0123456789"
NOW = datetime(2026, 1, 4, 3, 0, tzinfo=UTC)  # Sunday 11:00 SGT
INGEST = "/api/scheduled-tasks/ingest"
RUNS = "/api/scheduled-tasks/runs"
TASKS = "/api/scheduled-tasks"
SRC = Path(__file__).parent.parent / "src"
CLIENTS = 200
RUNS_PER_CLIENT = 20
SERVER_START_TIMEOUT = 20
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    schedule: str | None
    timezone: str | None


KNOWN = (
    Task("sync-price-grid", "Sync price grid", "0 10 * * 0", "Asia/Singapore"),
    Task("tradein-auto-submit", "Trade-in auto submit", "* * * * *", "Asia/Singapore"),
    Task("tradein-email-retry", "Trade-in email retry", "*/5 * * * *", None),
)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def fresh_location(backend: str, tmp_path: Path) -> str:
    """An empty store: a new SQLite file, or the test database with no table."""
    if backend == "sqlite":
        return str(tmp_path / "runs.db")
    if POSTGRES_URL is None:
        pytest.skip("CRONLOG_TEST_POSTGRES_URL is not set: no PostgreSQL server")
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS scheduled_task_runs")
    return POSTGRES_URL


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(fresh_location(request.param, tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    app = create_app(store, api_key=KEY, tasks=KNOWN, clock=lambda: NOW)
    with TestClient(app, headers={"X-API-Key": KEY}) as test_client:
        yield test_client


def run(**fields: Any) -> dict[str, Any]:
    base = {"task_id": "tradein-auto-submit", "task_title": "Trade-in auto submit"}
    return {**base, "status": "success", **fields}


def post_raw(client: TestClient, content: bytes, **headers: str) -> httpx.Response:
    headers = {"content-type": "application/json", **headers}
    return client.post(INGEST, content=content, headers=headers)


# The ingest contract


def test_a_run_is_logged_with_the_guides_answer(
    client: TestClient, store: Store
) -> None:
    response = client.post(INGEST, json=run(started_at="2026-01-04T10:00:00Z"))

    assert response.status_code == 200
    answer = response.json()
    assert answer["success"] is True
    assert answer["message"] == "Task execution logged successfully"
    stored = store.runs()
    assert answer["data"] == {
        "id": stored[0]["id"],
        "task_id": "tradein-auto-submit",
        "status": "success",
        "started_at": "2026-01-04T10:00:00.000Z",
    }
    assert stored[0]["environment"] == "production"
    assert stored[0]["owner"] == "Coolify Cron"


def test_the_guides_simplified_script_body_is_accepted(client: TestClient) -> None:
    body = b'{"task_id":"tradein-auto-submit","task_title":"Trade-in auto submit",'
    body += b'"status":"failed","duration_ms":3000}'

    response = post_raw(
        client, body, **{"content-type": "application/json; charset=utf-8"}
    )

    assert response.status_code == 200
    assert response.json()["data"]["status"] == "failed"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"X-API-Key": KEY.upper()}, {"X-API-Key": KEY + "x"}],
    ids=["absent", "empty", "other-case", "longer"],
)
def test_a_wrong_key_is_unauthorized_and_nothing_is_stored(
    store: Store, headers: dict[str, str]
) -> None:
    app = create_app(store, api_key=KEY, tasks=KNOWN, clock=lambda: NOW)

    response = TestClient(app).post(INGEST, json=run(), headers=headers)

    assert response.status_code == 401
    assert response.json() == {"success": False, "error": "Unauthorized"}
    assert store.runs() == []


def test_a_key_with_bytes_beyond_ascii_is_unauthorized(client: TestClient) -> None:
    response = client.post(INGEST, json=run(), headers={"X-API-Key": "clé".encode()})

    assert response.status_code == 401


def test_without_a_configured_key_any_loopback_client_may_post(store: Store) -> None:
    app = create_app(store, api_key=None, clock=lambda: NOW)

    response = TestClient(app).post(INGEST, json=run())

    assert response.status_code == 200


def test_missing_required_fields_are_named(client: TestClient, store: Store) -> None:
    response = client.post(INGEST, json={"task_id": "x"})

    assert response.status_code == 400
    assert response.json()["error"] == "Missing required fields: task_title, status"
    assert store.runs() == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": "ok"}, "status"),
        ({"duration_ms": "5000"}, "duration_ms"),
        ({"duration_ms": True}, "duration_ms"),
        ({"duration_ms": -1}, "duration_ms"),
        ({"duration_ms": 2**64}, "duration_ms"),
        ({"task_id": ""}, "task_id"),
        ({"task_id": 12}, "task_id"),
        ({"started_at": "2026-02-30T10:00:00Z"}, "started_at"),
        ({"started_at": "2026-01-04T10:00:00"}, "started_at"),
        ({"started_at": 1767520800}, "started_at"),
        ({"started_at": "0001-01-01T00:00:00+01:00"}, "timestamp"),
        (
            {"started_at": "2026-01-04T10:00:05Z", "ended_at": "2026-01-04T10:00Z"},
            "ended_at",
        ),
        ({"started_at": "2027-01-01T00:00:00Z"}, "started_at"),
        ({"notes": "a\u0000b"}, "notes"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_a_wrong_value_is_refused_with_its_reason(
    client: TestClient, store: Store, fields: dict[str, Any], field: str
) -> None:
    response = client.post(INGEST, json=run(**fields))

    assert response.status_code == 422
    assert field in [detail["field"] for detail in response.json()["details"]]
    assert store.runs() == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b'{"task_id": NaN}',
        b'{"task_id": "a\\ud800", "task_title": "b", "status": "success"}',
        b"\xff\xfe{}",
        b"[" * 100_000,
        b'{"task_id": "x", "task_id": ',
    ],
    ids=[
        "empty",
        "text",
        "array",
        "string",
        "nan",
        "surrogate",
        "bad-utf8",
        "deep",
        "cut",
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(
    client: TestClient, store: Store, content: bytes
) -> None:
    response = post_raw(client, content[:MAX_BODY_BYTES])

    assert response.status_code == 400
    assert response.json()["success"] is False
    assert store.runs() == []


def test_a_body_that_is_not_declared_json_is_refused(client: TestClient) -> None:
    content = json.dumps(run()).encode()

    response = post_raw(client, content, **{"content-type": "text/plain"})

    assert response.status_code == 415


def test_a_declared_oversized_body_is_refused_unread(
    client: TestClient, store: Store
) -> None:
    notes = "x" * MAX_BODY_BYTES

    response = client.post(INGEST, json=run(notes=notes))

    assert response.status_code == 413
    assert store.runs() == []


def test_a_streamed_oversized_body_is_refused(client: TestClient, store: Store) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"task_id": "x", "task_title": "x", "status": "success", "notes": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    response = client.post(
        INGEST, content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert store.runs() == []


def test_a_body_just_under_the_limit_is_accepted(client: TestClient) -> None:
    empty = len(json.dumps(run(notes="")).encode())

    response = client.post(INGEST, json=run(notes="n" * (MAX_BODY_BYTES - empty)))

    assert response.status_code == 200


def test_a_bad_content_length_is_refused(client: TestClient) -> None:
    response = post_raw(client, b"{}", **{"content-length": "two"})

    assert response.status_code == 400


def test_a_repeated_idempotency_key_gets_the_first_answer(
    client: TestClient, store: Store
) -> None:
    headers = {"Idempotency-Key": "run-8f14e45f"}
    first = client.post(INGEST, json=run(), headers=headers)

    again = client.post(INGEST, json=run(status="failed"), headers=headers)

    assert again.status_code == first.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(store.runs()) == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\there"])
def test_a_malformed_idempotency_key_is_refused(
    client: TestClient, store: Store, key: str
) -> None:
    response = client.post(INGEST, json=run(), headers={"Idempotency-Key": key})

    assert response.status_code == 400
    assert store.runs() == []


# Reading runs and tasks


def test_runs_come_newest_first_and_filter(client: TestClient) -> None:
    for minute, status in ((0, "success"), (2, "failed"), (1, "success")):
        started = f"2026-01-04T02:5{minute}:00Z"
        client.post(INGEST, json=run(started_at=started, status=status))

    everything = client.get(RUNS).json()["data"]
    failed = client.get(RUNS, params={"status": "failed"}).json()["data"]
    older = client.get(RUNS, params={"before": "2026-01-04T02:51:00Z", "limit": 5})

    assert [row["started_at"][14:16] for row in everything] == ["52", "51", "50"]
    assert [row["status"] for row in failed] == ["failed"]
    assert [row["started_at"][14:16] for row in older.json()["data"]] == ["50"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"status": "done"},
        {"before": "yesterday"},
        {"before": "2026-01-04T10:00:00"},
        {"task_id": ""},
    ],
)
def test_bad_runs_parameters_are_refused(
    client: TestClient, params: dict[str, str]
) -> None:
    response = client.get(RUNS, params=params)

    assert response.status_code == 400
    assert response.json()["success"] is False


def test_tasks_lists_known_and_seen_tasks_with_their_figures(
    client: TestClient,
) -> None:
    for second, status, duration in (
        (10, "success", 100),
        (20, "failed", 300),
        (30, "success", 200),
    ):
        started = f"2026-01-04T02:59:{second}Z"
        client.post(
            INGEST, json=run(started_at=started, status=status, duration_ms=duration)
        )
    client.post(INGEST, json=run(task_id="test-task", task_title="Test Task"))

    tasks = {task["task_id"]: task for task in client.get(TASKS).json()["data"]}

    assert list(tasks) == [*(task.id for task in KNOWN), "test-task"]
    auto_submit = tasks["tradein-auto-submit"]
    assert auto_submit["last_run"]["started_at"] == "2026-01-04T02:59:30.000Z"
    assert auto_submit["success_rate"] == pytest.approx(2 / 3)
    assert auto_submit["median_duration_ms"] == 200
    assert auto_submit["recent_runs"] == 3
    assert tasks["sync-price-grid"]["last_run"] is None
    assert tasks["test-task"]["task_title"] == "Test Task"


def test_a_task_whose_schedule_fired_since_its_last_run_is_overdue(
    client: TestClient,
) -> None:
    # The weekly job fired at 10:00 SGT (02:00Z) today; its last run was last week.
    client.post(
        INGEST,
        json=run(
            task_id="sync-price-grid", task_title="S", started_at="2025-12-28T02:00:00Z"
        ),
    )
    # The every-minute job ran 30 s ago: on time.
    client.post(INGEST, json=run(started_at="2026-01-04T02:59:30Z"))
    # The five-minute job last ran 20 minutes ago.
    client.post(
        INGEST,
        json=run(
            task_id="tradein-email-retry",
            task_title="R",
            started_at="2026-01-04T02:40:00Z",
        ),
    )

    overdue = {
        task["task_id"]: task["overdue"] for task in client.get(TASKS).json()["data"]
    }

    assert overdue == {
        "sync-price-grid": True,
        "tradein-auto-submit": False,
        "tradein-email-retry": True,
    }


def test_a_run_that_started_on_schedule_is_not_overdue(client: TestClient) -> None:
    client.post(
        INGEST,
        json=run(
            task_id="sync-price-grid", task_title="S", started_at="2026-01-04T02:00:01Z"
        ),
    )

    tasks = client.get(TASKS).json()["data"]

    assert tasks[0]["overdue"] is False


# The Schedulers page

HOSTILE_NOTES = (
    "HTTP 500: <script>document.title='pwned'</script><img src=x onerror=alert(1)>"
)


def test_the_page_shows_a_failed_task_and_its_notes_as_text(client: TestClient) -> None:
    client.post(
        INGEST,
        json=run(
            status="failed", notes=HOSTILE_NOTES, started_at="2026-01-04T02:59:00Z"
        ),
    )

    page = client.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "Trade-in auto submit" in page.text
    assert "1 min ago" in page.text
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page.text
    assert "<script" not in page.text
    assert "<img" not in page.text


def test_every_failed_run_in_the_strip_opens_its_own_notes(client: TestClient) -> None:
    ids = {}
    for minute, status, notes in [
        (1, "failed", "exit 3\nfirst failure"),
        (2, "success", None),
        (3, "failed", "exit 7\n<b>second</b> failure"),
    ]:
        started_at = f"2026-01-04T02:5{minute}:00Z"
        body = run(status=status, notes=notes, started_at=started_at)
        ids[notes] = client.post(INGEST, json=body).json()["data"]["id"]

    page = client.get("/").text

    for notes, escaped in [
        ("exit 3\nfirst failure", "exit 3\nfirst failure"),
        ("exit 7\n<b>second</b> failure", "exit 7\n&lt;b&gt;second&lt;/b&gt; failure"),
    ]:
        run_id = ids[notes]
        assert f'<a class="mark mark-failed" href="#run-{run_id}"' in page
        target = page.split(f'<div class="run-notes" id="run-{run_id}">')[1]
        assert target.split("</div>")[0].count(escaped) == 1
    assert f'href="#run-{ids[None]}"' not in page
    assert ".run-notes:target { display: block; }" in page


def test_the_page_links_only_web_log_urls(client: TestClient) -> None:
    client.post(INGEST, json=run(status="failed", log_url="javascript:alert(1)"))

    page = client.get("/")

    assert 'href="javascript' not in page.text
    assert "javascript:alert(1)" in page.text


def test_the_page_marks_an_overdue_task(client: TestClient) -> None:
    client.post(
        INGEST,
        json=run(
            task_id="sync-price-grid", task_title="S", started_at="2025-12-28T02:00:00Z"
        ),
    )

    page = client.get("/")

    assert page.text.count(">overdue<") == 1


def test_a_foreign_host_header_is_refused_on_loopback(store: Store) -> None:
    app = create_app(store, api_key=None, allowed_hosts=LOOPBACK_HOST_HEADERS)

    rebound = TestClient(app, base_url="http://evil.example").get("/")
    local = [
        TestClient(app, base_url=f"http://{host}:8787").get("/").status_code
        for host in ("127.0.0.1", "localhost", "[::1]")
    ]

    assert rebound.status_code == 400
    assert local == [200, 200, 200]


def test_each_request_is_logged_once_without_the_key(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cronlog.server.app")

    client.post(INGEST, json=run())
    client.get("/%0aforged line")

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert " POST /api/scheduled-tasks/ingest 200 " in lines[0]
    assert "\\nforged line 404" in lines[1]
    assert all(KEY not in line for line in lines)


# serve()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_serve_refuses_a_public_address_without_a_key(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(UsageError, match="without an API key"):
        serve(db=tmp_path / "runs.db", host=host, port=0)

    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.1", False), ("host.local", False)],
)  # fmt: skip
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_says_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(db=tmp_path / "runs.db", port=port)


# A real server on loopback

SERVER = textwrap.dedent(
    """
    import logging, os, sys
    from cronlog.server import serve

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    serve(db=sys.argv[1], api_key=os.environ.get("TEST_SERVE_KEY"), port=0)
    """
)


@dataclass
class RunningServer:
    url: str
    db: str


@contextmanager
def running_server(db: str, log: Path) -> Iterator[RunningServer]:
    """`serve()` in its own process on 127.0.0.1, port 0; the key via environment."""
    environment = os.environ | {"PYTHONPATH": str(SRC), "TEST_SERVE_KEY": KEY}
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, db], env=environment, stderr=sink
        )
    try:
        yield RunningServer(wait_for_address(log, process), db)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def real_server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(str(tmp_path / "runs.db"), tmp_path / "serve.log") as server:
        yield server


@pytest.fixture(params=BACKENDS)
def real_server_on_each_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RunningServer]:
    db = fresh_location(request.param, tmp_path)
    with running_server(db, tmp_path / "serve.log") as server:
        yield server


def wait_for_address(log: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text().splitlines():
            if "listening on " in line:
                return line.split("listening on ")[1].strip()
        time.sleep(0.05)
    raise AssertionError(f"the server did not start:\n{log.read_text()}")


def post_runs(url: str, client_number: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as http:
        for number in range(RUNS_PER_CLIENT):
            key = f"client-{client_number}-run-{number}"
            body = run(task_id=f"task-{client_number % 10}", notes=key)
            response = http.post(INGEST, json=body, headers={"Idempotency-Key": key})
            response.raise_for_status()
            ids.append(response.json()["data"]["id"])
    return ids


def test_two_hundred_concurrent_clients_lose_and_duplicate_nothing(
    real_server_on_each_store: RunningServer,
) -> None:
    url = real_server_on_each_store.url
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(post_runs, url, number) for number in range(CLIENTS)]
        answered = [
            run_id for future in futures for run_id in future.result(timeout=300)
        ]

    store = open_store(real_server_on_each_store.db)
    rows = store.runs(limit=CLIENTS * RUNS_PER_CLIENT + 1)
    store.close()
    assert len(answered) == len(set(answered)) == CLIENTS * RUNS_PER_CLIENT
    assert len(rows) == CLIENTS * RUNS_PER_CLIENT
    assert {row["id"] for row in rows} == set(answered)
    assert len({row["notes"] for row in rows}) == len(rows)


def test_the_real_server_turns_hostile_requests_away(
    real_server: RunningServer, tmp_path: Path
) -> None:
    host, port = real_server.url.removeprefix("http://").split(":")
    requests = [
        b"POST /api/scheduled-tasks/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-API-Key: " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"10001\r\n" + b"x" * 0x10001 + b"\r\n",
        b"POST /api/scheduled-tasks/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /api/scheduled-tasks/ingest HTTP/1.1\r\nHost: evil.example\r\n"
        b"X-API-Key: " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"GARBAGE\r\n\r\n",
    ]

    statuses = []
    for raw in requests:
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(raw)
            statuses.append(int(connection.recv(4096).split(b" ")[1]))
    after = httpx.get(real_server.url + RUNS, timeout=10)

    assert statuses[0] == 413
    assert all(400 <= status < 500 for status in statuses)
    assert after.json()["data"] == []


# The page in a real browser


@pytest.mark.chromium
def test_chromium_shows_the_failed_task_and_its_notes_as_inert_text(
    real_server: RunningServer, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    notes = "HTTP 502: upstream down <script>document.title='pwned'</script>"
    body = run(status="failed", notes=notes, duration_ms=2500)
    httpx.post(
        real_server.url + INGEST, json=body, headers={"X-API-Key": KEY}, timeout=10
    )

    browser = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
         "--dump-dom", real_server.url + "/"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip

    dom = browser.stdout
    assert "<title>Schedulers · cronlog</title>" in dom, browser.stderr[-2000:]
    assert "Trade-in auto submit" in dom
    assert 'class="status status-failed">failed<' in dom
    assert "HTTP 502: upstream down &lt;script&gt;" in dom
    assert "<script" not in dom
    assert "pwned" not in dom.split("<body>")[0]
