"""Files in the state directory that outlive one cronlog process, held with flock.

- `TaskLock` (`--no-overlap`): one lock file per task ID. Its holder writes when it
  started, so a skipped run can say since when the other one has been going.
- `RunMarker`: one file per run in flight. cronlog holds its lock for the whole run and
  removes it once the report is delivered or queued. A marker whose lock nobody holds
  belonged to a cronlog that was killed (SIGKILL, power loss) before it could report:
  the next run of that task reports that run as failed, outcome unknown.

The kernel drops a flock when its process dies, however it dies, so neither can go
stale. Descriptors are opened close-on-exec: the job never inherits a lock.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

LOCKS_DIR = "locks"
INFLIGHT_DIR = "inflight"


def _file_name(task_id: str) -> str:
    """A task ID as one safe path component (IDs may hold any character)."""
    return quote(task_id, safe="-_.") or "_"


class TaskLock:
    """Held while a `--no-overlap` run works; released when the process ends."""

    def __init__(self, state_dir: Path, task_id: str) -> None:
        directory = state_dir / LOCKS_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{_file_name(task_id)}.lock"
        self._fd: int | None = None

    def acquire(self, started_at: str) -> bool:
        """Take the lock, or return False when another run holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False

        os.ftruncate(fd, 0)
        os.write(
            fd, json.dumps({"started_at": started_at, "pid": os.getpid()}).encode()
        )
        self._fd = fd
        return True

    def holder(self) -> dict[str, Any]:
        """What the holder wrote: when it started and its pid (empty if unreadable)."""
        try:
            held: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return held

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RunMarker:
    """Says "this run is in flight" for as long as this process holds its lock."""

    def __init__(self, state_dir: Path, record: dict[str, Any]) -> None:
        directory = state_dir / INFLIGHT_DIR / _file_name(record["task_id"])
        directory.parent.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{record['run_id']}.json"

        # Locked and written under a hidden name first, so that no other cronlog can
        # ever see this marker unlocked and take it for a dead run.
        hidden = directory / f".{record['run_id']}.new"
        self._fd = os.open(
            hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, json.dumps(record).encode())
        os.rename(hidden, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


class AbandonedRun:
    """A dead run's marker, locked by this process until `resolve` deletes it."""

    def __init__(self, path: Path, fd: int, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record
        self._fd = fd

    def resolve(self) -> None:
        """The run has been reported (or queued): forget it."""
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


def abandoned_runs(state_dir: Path, task_id: str) -> list[AbandonedRun]:
    """Markers of this task whose cronlog died, oldest first, each locked for us.

    Holding the lock until `resolve` means two cronlogs starting at once never both
    report the same dead run.
    """
    directory = state_dir / INFLIGHT_DIR / _file_name(task_id)
    try:
        paths = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return []

    claimed = (_claim(path) for path in paths)
    return [run for run in claimed if run is not None]


def _claim(path: Path) -> AbandonedRun | None:
    """Lock a marker that no live process holds; None while its run goes on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError  # resolved by another cronlog after we opened it
        record: dict[str, Any] = json.loads(os.read(fd, 1 << 16) or b"{}")
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None  # still running, or another cronlog is reporting it
    except ValueError:
        record = {}
    return AbandonedRun(path, fd, record)
