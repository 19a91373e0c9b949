"""The local store of runs: the `scheduled_task_runs` table, in SQLite or PostgreSQL.

`cronlog run` records here when no dashboard is configured, and `cronlog serve` keeps
what it receives here. It sits on the run path, so it imports only the standard library;
psycopg is imported when a `postgresql://` location is opened. Bodies given to `record`
are already validated (`TaskRun.to_body()`); the store applies the dashboard guide's
defaults, gives each run a UUID `id` and a `created_at`, and stores a run once per
Idempotency-Key.

A store that cannot be opened, read or written raises `StateError`. A new SQLite file
is made 0600: the notes are what jobs printed.

Timestamps leave the store as the guide writes them: UTC, milliseconds, a trailing `Z`.
In SQLite they are kept as such strings, which sort as time does.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cronlog.errors import StateError
from cronlog.payload import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_OWNER,
    FIELDS,
    as_utc,
    format_timestamp,
)

if TYPE_CHECKING:
    import psycopg

TABLE = "scheduled_task_runs"
BUSY_TIMEOUT_MS = 30_000  # many cron jobs finishing in the same second wait, not fail
POSTGRES_POOL_SIZE = 8
POSTGRES_CONNECT_TIMEOUT_S = 10

# The id, the guide's fields, then when it was stored: the order rows come back in.
COLUMNS = ("id", *FIELDS, "created_at")
TIMESTAMP_COLUMNS = ("started_at", "ended_at", "created_at")
_INSERTED = (*COLUMNS, "idempotency_key")

SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    task_title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('success', 'failed', 'running')),
    started_at TEXT NOT NULL,
    ended_at TEXT,
    duration_ms INTEGER CHECK (duration_ms >= 0),
    log_url TEXT,
    notes TEXT,
    environment TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at TEXT NOT NULL,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS {TABLE}_started_idx ON {TABLE} (started_at, created_at);
CREATE INDEX IF NOT EXISTS {TABLE}_task_started_idx
    ON {TABLE} (task_id, started_at, created_at);
"""

# Mirrors examples/supabase/migrations/20260104_scheduled_task_runs.sql; a test checks
# that both give the same table.
POSTGRES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id text NOT NULL,
    task_title text NOT NULL,
    status text NOT NULL CHECK (status IN ('success', 'failed', 'running')),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    duration_ms bigint CHECK (duration_ms >= 0),
    log_url text,
    notes text,
    environment text NOT NULL DEFAULT 'production',
    owner text NOT NULL DEFAULT 'Coolify Cron',
    created_at timestamptz NOT NULL DEFAULT now(),
    idempotency_key text UNIQUE
);
CREATE INDEX IF NOT EXISTS {TABLE}_started_idx
    ON {TABLE} (started_at DESC, created_at DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_task_started_idx
    ON {TABLE} (task_id, started_at DESC, created_at DESC);
"""


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with a timezone, in UTC; ValueError says what is wrong."""
    return as_utc(datetime.fromisoformat(text))


def build_row(body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The row to store for a validated body: the guide's defaults filled in."""
    started_at = parse_timestamp(body["started_at"]) if "started_at" in body else now
    ended_at = parse_timestamp(body["ended_at"]) if "ended_at" in body else None
    duration_ms = body.get("duration_ms")
    if ended_at is None and body["status"] != "running":
        ended_at = (
            _ended_at(started_at, duration_ms, now) if "started_at" in body else now
        )

    return {
        "id": str(uuid.uuid4()),
        "task_id": body["task_id"],
        "task_title": body["task_title"],
        "status": body["status"],
        "started_at": format_timestamp(started_at),
        "ended_at": format_timestamp(ended_at) if ended_at else None,
        "duration_ms": duration_ms,
        "log_url": body.get("log_url"),
        "notes": body.get("notes"),
        "environment": body.get("environment") or DEFAULT_ENVIRONMENT,
        "owner": body.get("owner") or DEFAULT_OWNER,
        "created_at": format_timestamp(now),
    }


def _ended_at(started_at: datetime, duration_ms: int | None, now: datetime) -> datetime:
    """The guide's "auto-set if not provided": from the duration when it is known."""
    if duration_ms is None:
        return now
    try:
        return started_at + timedelta(milliseconds=duration_ms)
    except OverflowError:
        return now


def _normalise(text: str) -> str:
    return format_timestamp(parse_timestamp(text))


class Store(Protocol):
    """Where runs are kept. Implementations are safe to share between threads."""

    def record(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Store one run; return the stored row and whether it is new.

        A key seen before returns the row first stored under it, and stores nothing.
        """
        ...

    def runs(
        self,
        *,
        task_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs newest first (by started_at, then created_at); `before` is exclusive."""
        ...

    def seen_tasks(self) -> dict[str, str]:
        """Every task ID in the store, with the title of its latest run."""
        ...

    def close(self) -> None: ...


def open_store(location: str | Path) -> Store:
    """SQLite for a path; PostgreSQL for a `postgresql://` or `postgres://` URL.

    The path's directory must exist, so a typo in `--db` is not silently created;
    cronlog makes its own state directory before it opens the local store there.
    """
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text)
    return SqliteStore(Path(location))


class SqliteStore:
    """One SQLite file in WAL mode: many processes may write to it at once.

    Each statement commits on its own, so a writer holds the lock only for one insert;
    the busy timeout makes the others wait their turn rather than fail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        if not path.parent.exists():
            raise StateError(
                f"cannot use the store {path}: the directory {path.parent} does not "
                "exist; create it first"
            )
        if path.is_dir():
            raise StateError(
                f"cannot use the store {path}: it is a directory, not a SQLite file"
            )

        with self._errors():
            _create_private(path)
            self._connection = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = NORMAL")  # durable in WAL
            self._connection.executescript(SQLITE_SCHEMA)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            raise StateError(f"cannot use the store {self.path}: {error}") from error

    def record(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        row = build_row(body, datetime.now(UTC))
        values = [row[name] for name in COLUMNS] + [idempotency_key]
        placeholders = ", ".join("?" for _ in _INSERTED)
        insert = (
            f"INSERT INTO {TABLE} ({', '.join(_INSERTED)}) VALUES ({placeholders}) "
            "ON CONFLICT (idempotency_key) DO NOTHING"
        )

        with self._lock, self._errors():
            created = self._connection.execute(insert, values).rowcount == 1
            if created:
                return row, True
            first = self._connection.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE idempotency_key = ?",
                (idempotency_key,),
            ).fetchone()
        return dict(first), False

    def runs(
        self,
        *,
        task_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        conditions, values = _conditions(task_id, status, before, "?")
        query = _newest_first(conditions, "?")

        with self._lock, self._errors():
            rows = self._connection.execute(query, [*values, limit]).fetchall()
        return [dict(row) for row in rows]

    def seen_tasks(self) -> dict[str, str]:
        # SQLite takes the bare column from the row holding the max().
        query = (
            f"SELECT task_id, task_title, max(started_at) FROM {TABLE} GROUP BY task_id"
        )
        with self._lock, self._errors():
            rows = self._connection.execute(query).fetchall()
        return {row[0]: row[1] for row in rows}

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _create_private(path: Path) -> None:
    """Create the database file 0600 if it is missing; an existing one is left as is.

    Notes hold what jobs printed, so other users must not read them. SQLite gives its
    -wal and -shm files the database file's mode. Setting the umask instead would
    race with the threads of `cronlog serve`, as it is process-wide.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


class PostgresStore:
    """The same table in PostgreSQL (Supabase included), through psycopg 3.

    A few connections are kept for reuse so that `cronlog serve` answers concurrent
    requests in parallel; each statement runs in autocommit.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self._idle: queue.LifoQueue[psycopg.Connection[tuple[Any, ...]]] = (
            queue.LifoQueue()
        )
        self._closed = False
        with self._connection() as connection:
            connection.execute(POSTGRES_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        # psycopg's messages name host, port and user, never the password.
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            try:
                connection = self._psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=POSTGRES_CONNECT_TIMEOUT_S,
                )
            except self._psycopg.Error as error:
                raise _postgres_error(error) from error

        try:
            yield connection
        except self._psycopg.Error as error:
            raise _postgres_error(error) from error
        finally:
            self._release(connection)

    def _release(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        # A connection the server dropped is not put back for the next request.
        spare = self._idle.qsize() < POSTGRES_POOL_SIZE
        if self._closed or connection.broken or connection.closed or not spare:
            connection.close()
        else:
            self._idle.put(connection)

    def record(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        row = build_row(body, datetime.now(UTC))
        values = [row[name] for name in COLUMNS] + [idempotency_key]
        insert = (
            f"INSERT INTO {TABLE} ({', '.join(_INSERTED)}) "
            f"VALUES ({', '.join('%s' for _ in _INSERTED)}) "
            f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        )

        with self._connection() as connection:
            if connection.execute(insert, values).fetchone() is not None:
                return row, True
            # Read committed: this statement sees the first insert once it committed.
            first = connection.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE idempotency_key = %s",
                (idempotency_key,),
            ).fetchone()
        assert first is not None  # the conflict means the row exists
        return _from_postgres(first), False

    def runs(
        self,
        *,
        task_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        conditions, values = _conditions(task_id, status, before, "%s")
        query = _newest_first(conditions, "%s")

        with self._connection() as connection:
            rows = connection.execute(query, [*values, limit]).fetchall()
        return [_from_postgres(row) for row in rows]

    def seen_tasks(self) -> dict[str, str]:
        query = (
            f"SELECT DISTINCT ON (task_id) task_id, task_title FROM {TABLE} "
            "ORDER BY task_id, started_at DESC"
        )
        with self._connection() as connection:
            rows = connection.execute(query).fetchall()
        return {row[0]: row[1] for row in rows}

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _postgres_error(error: Exception) -> StateError:
    # libpq adds hints on further lines; cronlog says one line per error.
    return StateError(
        f"cannot use the PostgreSQL store: {' '.join(str(error).split())}"
    )


def _newest_first(conditions: str, mark: str) -> str:
    """The runs query; `mark` is the driver's placeholder (? or %s)."""
    return (
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{conditions} "
        f"ORDER BY started_at DESC, created_at DESC LIMIT {mark}"
    )


def _conditions(
    task_id: str | None, status: str | None, before: str | None, marker: str
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    values: list[Any] = []
    if task_id is not None:
        clauses.append(f"task_id = {marker}")
        values.append(task_id)
    if status is not None:
        clauses.append(f"status = {marker}")
        values.append(status)
    if before is not None:
        clauses.append(f"started_at < {marker}")
        values.append(_normalise(before))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


def _from_postgres(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(COLUMNS, row, strict=True))
    record["id"] = str(record["id"])
    for name in TIMESTAMP_COLUMNS:
        if record[name] is not None:
            record[name] = format_timestamp(record[name])
    return record
