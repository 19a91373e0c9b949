"""Files in the state directory that outlive one cronlog process, held with flock.

- `TaskLock` (`--no-overlap`): one lock file per task ID. Its holder writes when it
  started, so a skipped run can say since when the other one has been going. The job
  inherits the lock, as with flock(1): it stays held while the job runs, even if
  cronlog itself is killed.
- `RunMarker`: one file per run in flight. cronlog holds its lock for the whole run,
  writes the finished run's report into it before delivering, and removes it once the
  report is delivered or queued. A marker whose lock nobody holds belonged to a cronlog
  that died: the next run of that task delivers the report it holds or, if the job had
  not finished, reports the run as failed, outcome unknown.

The kernel drops a flock when its last holder dies, however it dies, so neither can go
stale. `TaskLock` is imported before the job starts, so this module imports only
builtins at the top.
"""

from __future__ import annotations

import fcntl
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LOCKS_DIR = "locks"
INFLIGHT_DIR = "inflight"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def file_name(task_id: str) -> str:
    """A task ID as one safe path component: `..`, `/` and the rest escaped as %XX."""
    escaped = (
        c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in task_id
    )
    return "".join(escaped)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return  # already gone: that is what was wanted


def _private_directory(state_dir: str, *parts: str) -> str:
    """A directory under the state directory, each level made 0700."""
    path = state_dir
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
    return path


class TaskLock:
    """Held while a `--no-overlap` run works; released when its last holder ends."""

    def __init__(self, state_dir: str, task_id: str) -> None:
        directory = _private_directory(state_dir, LOCKS_DIR)
        self.path = os.path.join(directory, f"{file_name(task_id)}.lock")
        self.fd: int | None = None

    def acquire(self, started_at: str) -> bool:
        """Take the lock, or return False when another run holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False

        os.ftruncate(fd, 0)
        os.write(fd, f'{{"started_at": "{started_at}", "pid": {os.getpid()}}}'.encode())
        self.fd = fd
        return True

    def holder(self) -> dict[str, Any]:
        """What the holder wrote: when it started and its pid (empty if unreadable)."""
        import json

        try:
            with open(self.path, encoding="utf-8") as file:
                held: dict[str, Any] = json.load(file)
        except (OSError, ValueError):
            return {}
        return held

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RunMarker:
    """Says "this run is in flight" for as long as this process holds its lock.

    Made before the job starts, so it is written without the json module (every
    value in it is plain ASCII); it holds the task ID only as its directory's name.
    """

    def __init__(
        self, state_dir: str, task_id: str, run_id: str, started_at: str
    ) -> None:
        directory = _private_directory(state_dir, INFLIGHT_DIR, file_name(task_id))
        self.path = os.path.join(directory, f"{run_id}.json")
        self.record: dict[str, Any] = {
            "run_id": run_id,
            "started_at": started_at,
            "pid": os.getpid(),
        }

        # Locked and written under a hidden name first, so that no other cronlog can
        # ever see this marker unlocked and take it for a dead run.
        hidden = os.path.join(directory, f".{run_id}.new")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self._fd = os.open(hidden, flags, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        record = (
            f'"run_id": "{run_id}", "started_at": "{started_at}", "pid": {os.getpid()}'
        )
        os.write(self._fd, f"{{{record}}}".encode())
        os.rename(hidden, self.path)

    def keep_report(self, body: dict[str, Any]) -> None:
        """Store the finished run's report, for the next run to deliver if we die."""
        import json

        data = json.dumps({**self.record, "report": body}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def remove(self) -> None:
        _remove(self.path)
        os.close(self._fd)

    def leave(self) -> None:
        """Let go of the marker but leave it, with its report, for the next run or
        `cronlog flush` to deliver, as if this cronlog had been stopped."""
        os.close(self._fd)


class AbandonedRun:
    """A dead run's marker, locked by this process until `resolve` deletes it."""

    def __init__(self, path: str, fd: int, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record
        self._fd = fd

    @property
    def run_id(self) -> str:
        return str(
            self.record.get("run_id") or os.path.basename(self.path)[: -len(".json")]
        )

    def resolve(self) -> None:
        """The run has been reported (or queued): forget it."""
        _remove(self.path)
        os.close(self._fd)

    def release(self) -> None:
        """Leave the marker for another to report."""
        os.close(self._fd)


def abandoned_runs(state_dir: str, task_id: str) -> list[AbandonedRun]:
    """Markers of this task whose cronlog died, oldest first, each locked for us.

    Holding the lock until `resolve` means two cronlogs starting at once never both
    report the same dead run.
    """
    return _abandoned_in(os.path.join(state_dir, INFLIGHT_DIR, file_name(task_id)))


def finished_reports(state_dir: str) -> list[AbandonedRun]:
    """Dead runs of every task whose marker holds the finished report: their cronlog
    was stopped while delivering it. Markers without one are left to the next run
    of their task, which knows its title."""
    root = os.path.join(state_dir, INFLIGHT_DIR)
    try:
        directories = sorted(os.listdir(root))
    except OSError:
        return []

    found = []
    for name in directories:
        for run in _abandoned_in(os.path.join(root, name)):
            if isinstance(run.record.get("report"), dict):
                found.append(run)
            else:
                run.release()
    return found


def _abandoned_in(directory: str) -> list[AbandonedRun]:
    try:
        names = [name for name in os.listdir(directory) if name.endswith(".json")]
        paths = sorted(
            (os.path.join(directory, n) for n in names), key=os.path.getmtime
        )
    except OSError:
        return []

    claimed = (_claim(path) for path in paths)
    return [run for run in claimed if run is not None]


def _claim(path: str) -> AbandonedRun | None:
    """Lock a marker that no live process holds; None while its run goes on."""
    import json

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError  # resolved by another cronlog after we opened it
        record = json.loads(os.pread(fd, 1 << 20, 0) or b"{}")
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None  # still running, or another cronlog is reporting it
    except ValueError:
        record = {}
    # Damaged or not ours: still a run whose cronlog died, with nothing more known.
    return AbandonedRun(path, fd, record if isinstance(record, dict) else {})
