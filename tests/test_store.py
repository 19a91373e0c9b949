"""The local store: the guide's defaults, ordering, idempotency, concurrent writers.

Tests marked `postgres` use CRONLOG_TEST_POSTGRES_URL (read at import, before the
autouse fixture clears CRONLOG_*); they drop and recreate `scheduled_task_runs` there.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cronlog.errors import StateError
from cronlog.store import COLUMNS, Store, open_store

POSTGRES_URL = os.environ.get("CRONLOG_TEST_POSTGRES_URL")
MIGRATION = (
    Path(__file__).parent.parent
    / "examples/supabase/migrations/20260104_scheduled_task_runs.sql"
)
WRITERS = 20
RUNS_PER_WRITER = 50
RETRIED_PER_WRITER = 5
PROCESS_TIMEOUT = 120


def needs_postgres() -> str:
    if POSTGRES_URL is None:
        pytest.skip("CRONLOG_TEST_POSTGRES_URL is not set: no PostgreSQL server to use")
    return POSTGRES_URL


def drop_table(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS scheduled_task_runs")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        location = str(tmp_path / "runs.db")
    else:
        location = needs_postgres()
        drop_table(location)
    opened = open_store(location)
    yield opened
    opened.close()


def body(**fields: Any) -> dict[str, Any]:
    defaults = {"task_id": "sync-price-grid", "task_title": "Sync price grid"}
    return {**defaults, "status": "success", **fields}


def test_it_applies_the_guides_defaults(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)

    row, created = store.record(body())

    assert created
    assert row["environment"] == "production"
    assert row["owner"] == "Coolify Cron"
    assert uuid.UUID(row["id"]).version == 4
    started = datetime.fromisoformat(row["started_at"])
    assert before <= started <= datetime.now(UTC)
    assert row["ended_at"] == row["started_at"]
    assert row["created_at"].endswith("Z")
    assert store.runs() == [row]


def test_it_keeps_the_fields_it_was_given(store: Store) -> None:
    given = body(
        status="failed",
        started_at="2026-01-04T10:00:00+08:00",
        ended_at="2026-01-04T10:00:05.250+08:00",
        duration_ms=5250,
        log_url="https://logs.example.com/1",
        notes="HTTP 500: boom",
        environment="staging",
        owner="ops",
    )

    row, _ = store.record(given)

    assert row["started_at"] == "2026-01-04T02:00:00.000Z"
    assert row["ended_at"] == "2026-01-04T02:00:05.250Z"
    assert {name: row[name] for name in ("duration_ms", "notes", "owner")} == {
        "duration_ms": 5250,
        "notes": "HTTP 500: boom",
        "owner": "ops",
    }
    assert store.runs()[0] == row
    assert list(row) == list(COLUMNS)


def test_ended_at_follows_from_the_start_and_duration(store: Store) -> None:
    row, _ = store.record(body(started_at="2026-01-04T02:00:00Z", duration_ms=1500))

    assert row["ended_at"] == "2026-01-04T02:00:01.500Z"


def test_a_running_run_has_no_end(store: Store) -> None:
    row, _ = store.record(body(status="running"))

    assert row["ended_at"] is None


def test_a_repeated_idempotency_key_returns_the_first_row(store: Store) -> None:
    first, first_created = store.record(body(), idempotency_key="run-1")

    again, again_created = store.record(body(status="failed"), idempotency_key="run-1")

    assert (first_created, again_created) == (True, False)
    assert again == first
    assert len(store.runs()) == 1


def test_runs_come_newest_first_and_filter(store: Store) -> None:
    store.record(body(started_at="2026-01-04T10:00:00Z"))
    store.record(body(started_at="2026-01-04T10:02:00Z", status="failed"))
    store.record(body(started_at="2026-01-04T10:01:00Z", task_id="graphiti-sync"))

    everything = store.runs()
    failed = store.runs(status="failed")
    graphiti = store.runs(task_id="graphiti-sync")
    older = store.runs(before="2026-01-04T18:01:00+08:00")
    newest = store.runs(limit=1)

    assert [run["started_at"][11:16] for run in everything] == [
        "10:02",
        "10:01",
        "10:00",
    ]
    assert [run["status"] for run in failed] == ["failed"]
    assert [run["task_id"] for run in graphiti] == ["graphiti-sync"]
    assert [run["started_at"][11:16] for run in older] == ["10:00"]
    assert newest == everything[:1]


def test_runs_started_together_come_in_the_order_they_arrived(store: Store) -> None:
    for number in range(3):
        store.record(body(started_at="2026-01-04T10:00:00Z", notes=str(number)))
        time.sleep(0.002)  # created_at has millisecond precision

    assert [run["notes"] for run in store.runs()] == ["2", "1", "0"]


def test_it_names_every_task_seen_with_its_latest_title(store: Store) -> None:
    store.record(body(started_at="2026-01-04T10:00:00Z", task_title="Old title"))
    store.record(body(started_at="2026-01-04T11:00:00Z", task_title="New title"))
    store.record(body(task_id="test-task", task_title="Test Task"))

    assert store.seen_tasks() == {
        "sync-price-grid": "New title",
        "test-task": "Test Task",
    }


def test_an_unusable_sqlite_location_raises_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(StateError, match="cannot use the store"):
        open_store(blocker / "runs.db")


def test_a_missing_directory_is_an_error_naming_the_path_and_is_not_made(
    tmp_path: Path,
) -> None:
    location = tmp_path / "absent" / "dir" / "runs.db"

    with pytest.raises(StateError, match="does not exist") as raised:
        open_store(location)

    assert str(location) in str(raised.value)
    assert not (tmp_path / "absent").exists()


def test_a_directory_as_the_sqlite_location_is_an_error_saying_so(
    tmp_path: Path,
) -> None:
    with pytest.raises(StateError) as raised:
        open_store(tmp_path)

    assert str(raised.value) == (
        f"cannot use the store {tmp_path}: it is a directory, not a SQLite file"
    )


def test_the_sqlite_file_and_its_companions_are_private(tmp_path: Path) -> None:
    location = tmp_path / "runs.db"
    previous = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        store = open_store(location)
        store.record(body())
        modes = {
            name: stat.S_IMODE((tmp_path / name).stat().st_mode)
            for name in ("runs.db", "runs.db-wal", "runs.db-shm")
        }
        store.close()
    finally:
        os.umask(previous)

    assert modes == {"runs.db": 0o600, "runs.db-wal": 0o600, "runs.db-shm": 0o600}


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    location = tmp_path / "runs.db"
    location.touch(mode=0o640)
    location.chmod(0o640)

    open_store(location).close()

    assert stat.S_IMODE(location.stat().st_mode) == 0o640


def test_an_unreachable_postgres_server_raises_state_error() -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://nobody:s3cret-pw@127.0.0.1:1/none?connect_timeout=2"

    with pytest.raises(StateError, match="PostgreSQL store") as raised:
        open_store(url)

    assert "s3cret-pw" not in str(raised.value)
    assert "\n" not in str(raised.value)  # libpq's hint lines joined into one


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cronlog.store import open_store

    location, writer, runs, retried, go = sys.argv[1:]
    deadline = time.monotonic() + 30
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    store = open_store(location)
    keys = [f"{writer}-{number}" for number in range(int(runs))]
    for key in keys + keys[: int(retried)]:
        body = {"task_id": f"task-{writer}", "task_title": "T", "status": "success"}
        store.record(body, idempotency_key=key)
    store.close()
    """
)


def write_from_many_processes(location: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    environment = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    arguments = [str(RUNS_PER_WRITER), str(RETRIED_PER_WRITER), str(go)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, location, str(writer), *arguments],
            env=environment,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in range(WRITERS)
    ]
    go.touch()

    failures = []
    for writer in writers:
        try:
            _, stderr = writer.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            writer.kill()
            _, stderr = writer.communicate(timeout=10)
        if writer.returncode != 0:
            failures.append(stderr)
    assert failures == []


def assert_each_run_stored_once(store: Store) -> None:
    rows = store.runs(limit=WRITERS * RUNS_PER_WRITER * 2)
    per_task = {f"task-{writer}": 0 for writer in range(WRITERS)}
    for row in rows:
        per_task[row["task_id"]] += 1

    assert len(rows) == WRITERS * RUNS_PER_WRITER
    assert len({row["id"] for row in rows}) == len(rows)
    assert set(per_task.values()) == {RUNS_PER_WRITER}


def test_twenty_processes_writing_one_sqlite_file_lose_nothing(tmp_path: Path) -> None:
    location = str(tmp_path / "runs.db")

    write_from_many_processes(location, tmp_path)

    store = open_store(location)
    assert_each_run_stored_once(store)
    store.close()


@pytest.mark.postgres
def test_twenty_processes_writing_to_postgres_lose_nothing(tmp_path: Path) -> None:
    url = needs_postgres()
    drop_table(url)
    open_store(url).close()

    write_from_many_processes(url, tmp_path)

    store = open_store(url)
    assert_each_run_stored_once(store)
    store.close()


def postgres_columns(url: str) -> list[tuple[Any, ...]]:
    import psycopg

    query = (
        "SELECT column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_name = 'scheduled_task_runs' "
        "ORDER BY ordinal_position"
    )
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(query).fetchall()


@pytest.mark.postgres
def test_the_shipped_migration_makes_the_table_the_store_makes() -> None:
    import psycopg

    url = needs_postgres()
    drop_table(url)
    open_store(url).close()
    made_by_store = postgres_columns(url)
    drop_table(url)

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(MIGRATION.read_text())
        connection.execute(MIGRATION.read_text())  # applying it twice is harmless
    store = open_store(url)
    row, _ = store.record(body(), idempotency_key="after-migration")
    store.close()

    assert postgres_columns(url) == made_by_store
    assert [column[0] for column in made_by_store] == [*COLUMNS, "idempotency_key"]
    assert row["environment"] == "production"
