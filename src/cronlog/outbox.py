"""Reports waiting for the dashboard: one file each, delivered later, oldest first.

A report that could not be delivered is written to the outbox directory (the state
dir's `outbox/`) as one 0600 JSON file named by the time it was queued. Files appear
only by an atomic rename of a fsynced temporary file, so many cronlog processes writing
at once, or one killed mid-write, leave no half-written report. `flush` claims each file
with an exclusive `flock` while sending it and removes it only once the dashboard has
accepted it: a flusher killed at any point loses nothing, and the re-send carries the
same Idempotency-Key. Reports the dashboard refuses for good go to `rejected/`, kept
for a person to read. Listing (`waiting`, `rejected`, `kept_by_stopped_runs`) changes
nothing, so `cronlog outbox` can be run at any time; only `flush` tidies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronlog import locks
from cronlog.reporter import DeliveryFailed, Report, Reporter

log = logging.getLogger(__name__)

REJECTED_DIR = "rejected"
KEPT_REASON = "kept by a cronlog stopped while delivering it"
STALE_TMP_AGE = 3600.0  # seconds; a younger tmp file may belong to a live writer
_RUN_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True)
class Entry:
    """One queued (or rejected) report and the file that holds it.

    A file that cannot be read is an entry too, not `readable`, with the error as its
    `reason`, so a listing can show it where it lies.
    """

    path: Path
    run_id: str
    body: dict[str, Any]
    queued_at: str
    attempts: int = 0
    reason: str | None = None
    readable: bool = True

    @property
    def report(self) -> Report:
        return Report(run_id=self.run_id, body=self.body)


@dataclass(frozen=True)
class FlushResult:
    delivered: int
    remaining: int
    rejected: int
    error: str | None


class Outbox:
    """The directory of reports waiting to be delivered."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected_directory = directory / REJECTED_DIR

    def put(self, report: Report) -> Path:
        """Queue `report`; the file appears whole or not at all.

        Raises OSError when the directory cannot be written: whether that matters more
        than a warning is the caller's choice (a job's run must not fail over it).
        """
        if not _RUN_ID.fullmatch(report.run_id):
            raise ValueError(f"run ID {report.run_id!r} cannot name a file")

        record = {
            "run_id": report.run_id,
            "body": report.body,
            "queued_at": _now(),
            "attempts": 0,
        }
        path = self.directory / f"{time.time_ns():020d}-{report.run_id}.json"
        self._make_directory(self.directory)
        _write_atomically(path, record)
        return path

    def pending(self) -> list[Entry]:
        """Queued reports to deliver, oldest first; unreadable files are moved to
        `rejected/` and stale tmp files removed."""
        entries = []
        for path in self._listing(self.directory, tidy=True):
            try:
                entries.append(_read_entry(path))
            except FileNotFoundError:
                continue  # delivered by another flusher since the listing
            except (OSError, ValueError) as error:
                log.warning(
                    "moving unreadable outbox file %s to %s/: %s",
                    path.name,
                    REJECTED_DIR,
                    error,
                )
                self._move_aside(path)
        return entries

    def __len__(self) -> int:
        """How many reports wait, counted by name without reading them."""
        return len(self._listing(self.directory))

    def remove(self, entry: Entry) -> None:
        entry.path.unlink(missing_ok=True)

    def reject(self, entry: Entry, reason: str) -> None:
        """Keep a report the dashboard refuses for good where a person can read why."""
        record = {
            "run_id": entry.run_id,
            "body": entry.body,
            "queued_at": entry.queued_at,
            "attempts": entry.attempts + 1,
            "rejected_at": _now(),
            "reason": reason,
        }
        self._make_directory(self.rejected_directory)
        _write_atomically(self.rejected_directory / entry.path.name, record)
        self.remove(entry)

    def retry_rejected(self) -> int:
        """Queue the rejected reports again (after the dashboard or cronlog was fixed),
        in their original order; returns how many."""
        requeued = 0
        for entry in self.rejected():
            if not entry.readable:
                continue  # left where a person can look at it
            record = {
                "run_id": entry.run_id,
                "body": entry.body,
                "queued_at": entry.queued_at,
                "attempts": entry.attempts,
            }
            _write_atomically(self.directory / entry.path.name, record)
            entry.path.unlink(missing_ok=True)
            requeued += 1
        return requeued

    def waiting(self) -> list[Entry]:
        """Queued reports, oldest first, as they are: an unreadable file is listed, not
        moved (`flush` moves it to `rejected/`)."""
        return _entries_as_found(self._listing(self.directory))

    def rejected(self) -> list[Entry]:
        """Rejected reports, oldest first; a file kept as found reads as its error."""
        return _entries_as_found(self._listing(self.rejected_directory))

    def note_attempt(self, entry: Entry) -> None:
        """Count a failed delivery in the file, so a person sees how long it waited."""
        record = {
            "run_id": entry.run_id,
            "body": entry.body,
            "queued_at": entry.queued_at,
            "attempts": entry.attempts + 1,
        }
        try:
            _write_atomically(entry.path, record)
        except OSError as error:
            log.warning("cannot count the attempt in %s: %s", entry.path.name, error)

    @contextmanager
    def claim(self, entry: Entry) -> Iterator[bool]:
        """Lock the entry's file exclusively; yields False if another process has it.

        The lock is on the open file, so after locking, the path must still name that
        same file: otherwise another flusher delivered and removed it in between.
        """
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except FileNotFoundError:
            yield False
            return

        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield _still_named(fd, entry.path)
        finally:
            os.close(fd)

    def _listing(self, directory: Path, *, tidy: bool = False) -> list[Path]:
        """The report files in `directory` by name (time order); with `tidy`, tmp files
        left by killed writers go too."""
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []

        paths = []
        for name in names:
            path = directory / name
            if name.startswith("."):
                if tidy:
                    _remove_if_stale(path)
            elif name.endswith(".json"):
                paths.append(path)
        return paths

    def _move_aside(self, path: Path) -> None:
        self._make_directory(self.rejected_directory)
        with suppress(FileNotFoundError):
            os.rename(path, self.rejected_directory / path.name)

    @staticmethod
    def _make_directory(directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def kept_by_stopped_runs(state_dir: str) -> list[Entry]:
    """Finished reports still in the run markers (`inflight/`) of cronlogs stopped while
    delivering them, oldest first; `flush`, or the task's next run, sends them.

    Read in place: the markers are locked only while they are read, and one whose
    cronlog is alive (its lock held) is not listed.
    """
    runs = locks.finished_reports(state_dir)
    try:
        entries = [
            Entry(
                Path(run.path),
                run.run_id,
                run.record["report"],
                queued_at=_iso(os.path.getmtime(run.path)),  # when it was kept
                reason=KEPT_REASON,
            )
            for run in runs
        ]
    finally:
        for run in runs:
            run.release()
    return sorted(entries, key=lambda entry: entry.queued_at)


def adopt_stopped_runs(state_dir: str, outbox: Outbox) -> int:
    """Move the finished reports that stopped cronlogs kept in their run markers into
    the outbox, so that a flush sends them in turn; returns how many."""
    stopped = locks.finished_reports(state_dir)
    for run in stopped:
        outbox.put(Report(run.run_id, run.record["report"]))
        run.resolve()
    return len(stopped)


def listing(state_dir: str, outbox: Outbox) -> list[tuple[str, Entry]]:
    """Everything waiting, as (state, entry): `waiting` or `unreadable` in the
    outbox, `kept` in a stopped run's marker, then `rejected`. Changes nothing."""
    entries = [("waiting" if e.readable else "unreadable", e) for e in outbox.waiting()]
    entries += [("kept", e) for e in kept_by_stopped_runs(state_dir)]
    entries += [("rejected", e) for e in outbox.rejected()]
    return entries


def flush(
    reporter: Reporter,
    outbox: Outbox,
    *,
    budget: float | None,
    per_report_deadline: float,
) -> FlushResult:
    """Deliver queued reports oldest first until done, out of `budget` or one fails.

    A transient failure, or one a fixed configuration would cure (wrong key, wrong URL),
    stops the flush and keeps every report in order. A report the dashboard refuses
    itself is rejected and the flush goes on. An outbox that cannot be written is an
    `error` in the result, not an exception, so a job's run never fails over it.
    """
    started = time.monotonic()
    delivered = rejected = 0
    error = None
    entries: list[Entry] = []

    try:
        entries = outbox.pending()
        for entry in entries:
            deadline = per_report_deadline
            if budget is not None:
                left = budget - (time.monotonic() - started)
                if left <= 0:
                    break
                deadline = min(deadline, left)

            with outbox.claim(entry) as claimed:
                if not claimed:
                    continue
                try:
                    reporter.send(entry.report, deadline=deadline)
                except DeliveryFailed as failure:
                    if budget is not None and time.monotonic() - started >= budget:
                        break  # cut short by the budget, not the dashboard's verdict
                    if not failure.refused:
                        error = str(failure)
                        outbox.note_attempt(entry)
                        break
                    outbox.reject(entry, str(failure))
                    rejected += 1
                    continue
                outbox.remove(entry)
                delivered += 1
    except OSError as failure:
        error = f"cannot use the outbox {outbox.directory}: {failure}"

    try:
        remaining = len(outbox)
    except OSError:
        remaining = len(entries) - delivered - rejected
    return FlushResult(delivered, remaining, rejected, error)


def _now() -> str:
    return _iso(time.time())


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_atomically(path: Path, record: dict[str, Any]) -> None:
    """Write a dot-tmp file beside `path`, fsync it, rename it over `path`."""
    data = json.dumps(record, ensure_ascii=False).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, path)

    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_entry(path: Path) -> Entry:
    record = json.loads(path.read_bytes())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    run_id, body = record.get("run_id"), record.get("body")
    if not isinstance(run_id, str) or not isinstance(body, dict):
        raise ValueError("no run_id or body")
    attempts = record.get("attempts", 0)
    return Entry(
        path=path,
        run_id=run_id,
        body=body,
        queued_at=str(record.get("queued_at", "")),
        attempts=attempts if isinstance(attempts, int) else 0,
        reason=record.get("reason"),
    )


def _entries_as_found(paths: list[Path]) -> list[Entry]:
    entries = []
    for path in paths:
        try:
            entries.append(_read_entry(path))
        except FileNotFoundError:
            continue  # delivered, or moved aside, since the listing
        except (OSError, ValueError) as error:
            run_id = path.stem.partition("-")[2]
            reason = f"unreadable: {error}"
            entries.append(Entry(path, run_id, {}, "", reason=reason, readable=False))
    return entries


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _remove_if_stale(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > STALE_TMP_AGE:
            path.unlink()
    except FileNotFoundError:
        pass
