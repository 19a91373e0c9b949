"""Tests for cronlog.locks: a task lock holds off overlapping runs, and a run marker
tells a dead cronlog's run from a live one, claimed by exactly one later run."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cronlog import locks
from cronlog.locks import RunMarker, TaskLock, abandoned_runs

TASK = "tradein-auto-submit"
EARLIER, LATER = "2026-01-04T02:00:00Z", "2026-01-04T02:01:00Z"
HOLDER_TIMEOUT = 10


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


STARTED = "2026-01-04T02:00:00Z"


def record(run_id: str, pid: int | None = None) -> dict:
    """What a marker made by this process (or `pid`) holds."""
    return {"run_id": run_id, "started_at": STARTED, "pid": pid or os.getpid()}


def marker_code(run_id: str, task_id: str = TASK) -> str:
    """The statement that makes a marker, for another process to run."""
    return f"m = locks.RunMarker(state_dir, {task_id!r}, {run_id!r}, {STARTED!r})"


def _holder(state_dir: Path, code: str) -> subprocess.Popen[str]:
    """Another process that runs `code` (with state_dir bound), says ready, and waits.

    It stands for another cronlog: flock is what must keep the two apart.
    """
    program = (
        "import sys, time\nfrom pathlib import Path\nfrom cronlog import locks\n"
        f"state_dir = Path({str(state_dir)!r})\n{code}\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=HOLDER_TIMEOUT)


def test_a_task_lock_is_refused_while_another_process_holds_it(state_dir):
    holder = _holder(
        state_dir,
        f"locks.TaskLock(state_dir, {TASK!r}).acquire('2026-01-04T02:00:00Z')",
    )
    try:
        lock = TaskLock(state_dir, TASK)

        assert lock.acquire("2026-01-04T02:01:00Z") is False
        assert lock.holder() == {
            "started_at": "2026-01-04T02:00:00Z",
            "pid": holder.pid,
        }
    finally:
        _kill(holder)


def test_a_task_lock_is_free_again_once_its_holder_is_killed(state_dir):
    holder = _holder(
        state_dir, f"lock = locks.TaskLock(state_dir, {TASK!r}); lock.acquire('x')"
    )
    _kill(holder)

    lock = TaskLock(state_dir, TASK)

    assert lock.acquire("2026-01-04T02:01:00Z") is True
    assert lock.holder()["pid"] == os.getpid()
    lock.release()


def test_a_released_task_lock_can_be_taken_again(state_dir):
    first = TaskLock(state_dir, TASK)
    assert first.acquire("2026-01-04T02:00:00Z")

    second = TaskLock(state_dir, TASK)
    refused = second.acquire("2026-01-04T02:01:00Z")
    first.release()

    assert refused is False
    assert second.acquire("2026-01-04T02:02:00Z") is True
    assert second.holder()["started_at"] == "2026-01-04T02:02:00Z"
    second.release()


def test_locks_of_different_tasks_do_not_meet(state_dir):
    one, other = TaskLock(state_dir, TASK), TaskLock(state_dir, "graphiti-sync")

    assert one.acquire("a") and other.acquire("b")
    one.release()
    other.release()


def test_a_task_id_with_a_slash_stays_inside_the_locks_directory(state_dir):
    lock = TaskLock(state_dir, "../../etc/passwd")

    assert Path(lock.path).parent == state_dir / locks.LOCKS_DIR
    assert lock.acquire("x")
    lock.release()


def test_a_holder_that_cannot_be_read_is_empty(state_dir):
    lock = TaskLock(state_dir, TASK)
    Path(lock.path).write_text("not json")

    assert lock.holder() == {}


def test_no_lock_is_inherited_unless_passed_on_to_the_job(state_dir):
    lock = TaskLock(state_dir, TASK)
    lock.acquire("x")
    marker = RunMarker(state_dir, TASK, "run-1", STARTED)

    flags = [fcntl.fcntl(fd, fcntl.F_GETFD) for fd in (lock.fd, marker._fd)]

    assert all(flag & fcntl.FD_CLOEXEC for flag in flags)
    lock.release()
    marker.remove()


def test_a_run_marker_holds_its_record_in_a_private_file(state_dir):
    marker = RunMarker(state_dir, TASK, "run-1", STARTED)

    assert json.loads(Path(marker.path).read_text()) == record("run-1")
    assert stat.S_IMODE(Path(marker.path).stat().st_mode) == 0o600
    assert Path(marker.path).parent == state_dir / locks.INFLIGHT_DIR / TASK
    assert os.listdir(Path(marker.path).parent) == ["run-1.json"]

    marker.remove()

    assert not Path(marker.path).exists()


def test_a_marker_locked_by_a_live_process_is_not_abandoned(state_dir):
    holder = _holder(state_dir, marker_code("run-1"))
    try:
        found = abandoned_runs(state_dir, TASK)
    finally:
        _kill(holder)

    assert found == []


def test_a_marker_whose_process_was_killed_is_abandoned_with_its_record(state_dir):
    holder = _holder(state_dir, marker_code("run-1"))
    _kill(holder)

    [run] = abandoned_runs(state_dir, TASK)

    assert run.record == record("run-1", pid=holder.pid)
    assert Path(run.path).name == "run-1.json"
    run.resolve()
    assert not Path(run.path).exists()
    assert abandoned_runs(state_dir, TASK) == []


def test_a_claimed_marker_is_not_claimed_twice(state_dir):
    holder = _holder(state_dir, marker_code("run-1"))
    _kill(holder)

    [first] = abandoned_runs(state_dir, TASK)
    second = abandoned_runs(state_dir, TASK)
    first.resolve()
    third = abandoned_runs(state_dir, TASK)

    assert second == [] and third == []


def test_a_claimed_marker_is_not_claimed_by_another_process_either(state_dir):
    dead = _holder(state_dir, marker_code("run-1"))
    _kill(dead)
    claimer = _holder(
        state_dir, f"claimed = locks.abandoned_runs(state_dir, {TASK!r}); "
        "assert len(claimed) == 1",
    )  # fmt: skip
    try:
        found = abandoned_runs(state_dir, TASK)
    finally:
        _kill(claimer)

    assert found == []
    [run] = abandoned_runs(state_dir, TASK)  # the claimer died before resolving it
    run.resolve()


def test_abandoned_runs_come_oldest_first(state_dir):
    directory = state_dir / locks.INFLIGHT_DIR / TASK
    directory.mkdir(parents=True)
    now = time.time()
    for age, run_id in ((10, "b-middle"), (20, "c-oldest"), (0, "a-newest")):
        path = directory / f"{run_id}.json"
        path.write_text(json.dumps(record(run_id)))
        os.utime(path, (now - age, now - age))

    runs = abandoned_runs(state_dir, TASK)

    assert [run.record["run_id"] for run in runs] == [
        "c-oldest",
        "b-middle",
        "a-newest",
    ]
    for run in runs:
        run.resolve()


def test_a_corrupt_marker_is_still_reported_as_a_lost_run(state_dir):
    directory = state_dir / locks.INFLIGHT_DIR / TASK
    directory.mkdir(parents=True)
    (directory / "run-1.json").write_text("{half a rec")

    [run] = abandoned_runs(state_dir, TASK)

    assert run.record == {}
    assert Path(run.path).stem == "run-1"
    run.resolve()


def test_a_marker_being_written_is_never_taken_for_a_dead_run(state_dir):
    directory = state_dir / locks.INFLIGHT_DIR / TASK
    directory.mkdir(parents=True)
    (directory / ".run-1.new").write_text("")

    assert abandoned_runs(state_dir, TASK) == []


def test_markers_of_other_tasks_are_not_touched(state_dir):
    holder = _holder(state_dir, marker_code("run-1", "other"))
    _kill(holder)

    assert abandoned_runs(state_dir, TASK) == []
    [run] = abandoned_runs(state_dir, "other")
    run.resolve()


def test_a_task_with_no_markers_has_no_abandoned_runs(state_dir):
    assert abandoned_runs(state_dir, "never-ran") == []


def test_every_directory_a_marker_needs_is_private(state_dir):
    marker = RunMarker(state_dir, TASK, "run-1", STARTED)

    for directory in (state_dir / locks.INFLIGHT_DIR, Path(marker.path).parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    marker.remove()
