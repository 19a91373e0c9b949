"""Process control end to end: signals sent to the installed `cronlog`, timeouts,
background processes, `--no-overlap` and a cronlog killed mid-run, each checked on the
real processes and on the report a loopback dashboard receives."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import CRONLOG, PROCESS_TIMEOUT

KEY = "k3y-for-the-process-tests-0123"
TASK = "graphiti-sync"
PR_SET_CHILD_SUBREAPER = 36
WAIT_SECONDS = 10.0  # how long any one thing may take to happen here


@pytest.fixture
def dashboard(ingest_server, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    return ingest_server


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


def _wait_for(predicate, seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _pids_in(path: Path, count: int) -> list[int]:
    """The PIDs a job wrote to `path`, one a line, once it has written `count`."""

    def written() -> bool:
        return path.exists() and len(path.read_text().split()) >= count

    assert _wait_for(written), f"the job did not write {count} PIDs to {path}"
    return [int(word) for word in path.read_text().split()]


def _is_gone(pid: int) -> bool:
    with suppress(ChildProcessError):  # not ours: someone else reaps it
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _group_members(pgid: int) -> list[int]:
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


def _kill_group(pgid: int) -> None:
    """SIGKILL a job's group that outlived the test, then reap its leader."""
    if _group_members(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    _wait_for(lambda: _is_gone(pgid))


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CRONLOG, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop(process: subprocess.Popen[bytes], *groups: int) -> None:
    """Kill what a test started, if it is still there: cronlog and the job's groups."""
    if process.poll() is None:
        process.kill()
    for pgid in groups:
        _kill_group(pgid)
    with suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=WAIT_SECONDS)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_is_forwarded_to_a_shell_and_its_child(
    signum, dashboard, reaper, tmp_path
):
    pids = tmp_path / "pids"
    job = f"echo $$ > {pids}; sleep 60 & echo $! >> {pids}; wait"
    cronlog = _start("run", "--task-id", TASK, "--", "sh", "-c", job)
    shell = None
    try:
        shell, sleeper = _pids_in(pids, 2)

        cronlog.send_signal(signum)
        cronlog.communicate(timeout=WAIT_SECONDS)

        assert cronlog.returncode == 128 + signum
        assert _wait_for(lambda: _is_gone(shell) and _is_gone(sleeper))
    finally:
        _stop(cronlog, *([shell] if shell else []))

    [body] = dashboard.bodies
    assert body["status"] == "failed"
    assert body["notes"].startswith(f"terminated by {signal.Signals(signum).name}")


def test_a_second_sigterm_kills_a_job_that_ignores_the_first(
    dashboard, reaper, tmp_path
):
    pids = tmp_path / "pids"
    job = f"trap '' TERM; echo $$ > {pids}; sleep 60 & echo $! >> {pids}; wait"
    cronlog = _start("run", "--task-id", TASK, "--", "sh", "-c", job)
    shell = None
    try:
        shell, sleeper = _pids_in(pids, 2)

        cronlog.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ignored = cronlog.poll() is None and not _is_gone(sleeper)
        cronlog.send_signal(signal.SIGTERM)
        cronlog.communicate(timeout=WAIT_SECONDS)

        assert ignored, "the job was meant to survive the first SIGTERM"
        assert cronlog.returncode == 143
        assert _wait_for(lambda: _is_gone(shell) and _is_gone(sleeper))
    finally:
        _stop(cronlog, *([shell] if shell else []))

    assert dashboard.bodies[0]["notes"].startswith("terminated by SIGTERM")


def test_a_timeout_kills_a_job_that_ignores_sigterm_and_its_whole_group(
    dashboard, reaper, tmp_path
):
    pids = tmp_path / "pids"
    job = f"trap '' TERM; echo $$ > {pids}; sleep 30"
    cronlog = _start("run", "--task-id", TASK, "--timeout", "1s", "--kill-after",
                     "1s", "--", "sh", "-c", job)  # fmt: skip
    shell = None
    try:
        [shell] = _pids_in(pids, 1)

        started = time.monotonic()
        cronlog.communicate(timeout=WAIT_SECONDS)
        elapsed = time.monotonic() - started

        assert cronlog.returncode == 124
        assert elapsed < 4  # 1 s to SIGTERM, 1 s more to SIGKILL
        assert _wait_for(lambda: _group_members(shell) == [])
    finally:
        _stop(cronlog, *([shell] if shell else []))

    [body] = dashboard.bodies
    assert body["status"] == "failed"
    assert body["notes"].startswith("timed out after 1s")


def test_a_background_process_holding_stdout_does_not_hang_the_run(
    dashboard, reaper, tmp_path
):
    pids = tmp_path / "pids"
    job = f"sleep 30 & echo $! > {pids}; echo started"
    started = time.monotonic()
    cronlog = _start("run", "--task-id", TASK, "--", "sh", "-c", job)
    sleeper = None
    try:
        stdout, _ = cronlog.communicate(timeout=WAIT_SECONDS)
        elapsed = time.monotonic() - started
        [sleeper] = _pids_in(pids, 1)

        assert elapsed < 5
        assert cronlog.returncode == 0
        assert stdout == b"started\n"
    finally:
        _stop(cronlog)
        if sleeper is not None:
            with suppress(ProcessLookupError):
                os.kill(sleeper, signal.SIGKILL)
            _wait_for(lambda: _is_gone(sleeper))

    [body] = dashboard.bodies
    assert body["status"] == "success"


def test_no_overlap_skips_the_second_run_and_says_since_when(
    dashboard, run_cronlog, tmp_path
):
    started, release, marker = (tmp_path / n for n in ("started", "release", "ran"))
    first_job = (
        f"touch {started}; i=0; "
        f"while [ ! -e {release} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
    )
    first = _start("run", "--task-id", TASK, "--no-overlap", "--",
                   "sh", "-c", first_job)  # fmt: skip
    try:
        assert _wait_for(started.exists)

        second = run_cronlog("run", "--task-id", TASK, "--no-overlap", "--",
                             "touch", str(marker))  # fmt: skip
        release.touch()
        first.communicate(timeout=WAIT_SECONDS)
    finally:
        _stop(first)

    assert second.returncode == 75
    assert not marker.exists()
    assert first.returncode == 0
    skipped, finished = dashboard.bodies
    assert skipped["status"] == "failed"
    prefix = f"skipped: the previous run (pid {first.pid}) has been running since "
    assert skipped["notes"].startswith(prefix)
    since = datetime.fromisoformat(skipped["notes"].removeprefix(prefix))
    assert abs((datetime.now(UTC) - since).total_seconds()) < 30
    assert finished["status"] == "success"
    assert "skipped" in second.stderr.decode()


def _kill_cronlog_mid_run(tmp_path: Path) -> tuple[int, int]:
    """Start a run, SIGKILL its cronlog while the job works; return (cronlog, job) PIDs.

    The job itself survives its cronlog: the caller kills its group.
    """
    pids = tmp_path / "lost-job"
    cronlog = _start("run", "--task-id", TASK, "--", "sh", "-c",
                     f"echo $$ > {pids}; sleep 30")  # fmt: skip
    [job] = _pids_in(pids, 1)
    cronlog.kill()
    cronlog.communicate(timeout=WAIT_SECONDS)
    return cronlog.pid, job


def test_a_run_whose_cronlog_was_sigkilled_is_reported_by_the_next_run(
    dashboard, reaper, run_cronlog, tmp_path
):
    job = None
    try:
        lost_pid, job = _kill_cronlog_mid_run(tmp_path)
        assert dashboard.received == []

        result = run_cronlog("run", "--task-id", TASK, "--", "true")
    finally:
        if job is not None:
            _kill_group(job)

    assert result.returncode == 0
    own, lost = dashboard.bodies
    assert own["status"] == "success"
    assert lost["status"] == "failed"
    assert lost["task_id"] == TASK
    assert lost["notes"].startswith(f"outcome unknown: cronlog (pid {lost_pid})")
    assert "started_at" in lost

    again = run_cronlog("run", "--task-id", TASK, "--", "true")

    assert again.returncode == 0
    assert [body["status"] for body in dashboard.bodies] == ["success", "failed",
                                                              "success"]  # fmt: skip


def test_two_next_runs_starting_at_once_report_a_lost_run_only_once(
    dashboard, reaper, tmp_path
):
    job = None
    runs: list[subprocess.Popen[bytes]] = []
    try:
        _, job = _kill_cronlog_mid_run(tmp_path)

        runs = [_start("run", "--task-id", TASK, "--", "true") for _ in range(2)]
        codes = [run.wait(timeout=PROCESS_TIMEOUT) for run in runs]
    finally:
        for run in runs:
            _stop(run)
        if job is not None:
            _kill_group(job)

    assert codes == [0, 0]
    statuses = sorted(body["status"] for body in dashboard.bodies)
    assert statuses == ["failed", "success", "success"]
    [lost] = [b for b in dashboard.bodies if b["status"] == "failed"]
    assert lost["notes"].startswith("outcome unknown")
