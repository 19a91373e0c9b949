"""Process control end to end: signals sent to the installed `cronlog`, timeouts,
background processes, `--no-overlap` and a cronlog killed mid-run, each checked on the
real processes and on the report a loopback dashboard receives."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from e2e_support import (
    CRONLOG,
    PROCESS_TIMEOUT,
    WAIT_SECONDS,
    group_members,
    is_gone,
    kill_group,
    pids_in,
    start,
    stop,
    wait_for,
)

TASK = "graphiti-sync"


def _start_a_shell_and_its_sleeper(
    pids: Path, setup: str = ""
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Run a shell job that starts a background sleeper and waits for it; return
    cronlog, the shell's PID (its group's too) and the sleeper's, once both are known.
    """
    job = f"{setup}echo $$ > {pids}; sleep 60 & echo $! >> {pids}; wait"
    cronlog = start("run", "--task-id", TASK, "--", "sh", "-c", job)
    try:
        shell, sleeper = pids_in(pids, 2)
    except BaseException:
        stop(cronlog)
        raise
    return cronlog, shell, sleeper


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_is_forwarded_to_a_shell_and_its_child(
    signum, dashboard, reaper, tmp_path
):
    cronlog, shell, sleeper = _start_a_shell_and_its_sleeper(tmp_path / "pids")
    try:
        cronlog.send_signal(signum)
        cronlog.communicate(timeout=WAIT_SECONDS)

        assert cronlog.returncode == 128 + signum
        assert wait_for(lambda: is_gone(shell) and is_gone(sleeper))
    finally:
        stop(cronlog, shell)

    [body] = dashboard.bodies
    assert body["status"] == "failed"
    assert body["notes"].startswith(f"terminated by {signal.Signals(signum).name}")


def test_a_second_sigterm_kills_a_job_that_ignores_the_first(
    dashboard, reaper, tmp_path
):
    cronlog, shell, sleeper = _start_a_shell_and_its_sleeper(
        tmp_path / "pids", "trap '' TERM; "
    )
    try:
        cronlog.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ignored = cronlog.poll() is None and not is_gone(sleeper)
        cronlog.send_signal(signal.SIGTERM)
        cronlog.communicate(timeout=WAIT_SECONDS)

        assert ignored, "the job was meant to survive the first SIGTERM"
        assert cronlog.returncode == 143
        assert wait_for(lambda: is_gone(shell) and is_gone(sleeper))
    finally:
        stop(cronlog, shell)

    assert dashboard.bodies[0]["notes"].startswith("terminated by SIGTERM")


def test_a_timeout_kills_a_job_that_ignores_sigterm_and_its_whole_group(
    dashboard, reaper, tmp_path
):
    pids = tmp_path / "pids"
    job = f"trap '' TERM; echo $$ > {pids}; sleep 30"
    cronlog = start("run", "--task-id", TASK, "--timeout", "1s", "--kill-after",
                     "1s", "--", "sh", "-c", job)  # fmt: skip
    shell = None
    try:
        [shell] = pids_in(pids, 1)

        started = time.monotonic()
        cronlog.communicate(timeout=WAIT_SECONDS)
        elapsed = time.monotonic() - started

        assert cronlog.returncode == 124
        assert elapsed < 4  # 1 s to SIGTERM, 1 s more to SIGKILL
        assert wait_for(lambda: group_members(shell) == [])
    finally:
        stop(cronlog, *([shell] if shell else []))

    [body] = dashboard.bodies
    assert body["status"] == "failed"
    assert body["notes"].startswith("timed out after 1s")


def test_a_background_process_holding_stdout_does_not_hang_the_run(
    dashboard, reaper, tmp_path
):
    pids = tmp_path / "pids"
    job = f"sleep 30 & echo $! > {pids}; echo started"
    started = time.monotonic()
    cronlog = start("run", "--task-id", TASK, "--", "sh", "-c", job)
    sleeper = None
    try:
        stdout, _ = cronlog.communicate(timeout=WAIT_SECONDS)
        elapsed = time.monotonic() - started
        [sleeper] = pids_in(pids, 1)

        assert elapsed < 5
        assert cronlog.returncode == 0
        assert stdout == b"started\n"
    finally:
        stop(cronlog)
        if sleeper is not None:
            with suppress(ProcessLookupError):
                os.kill(sleeper, signal.SIGKILL)
            wait_for(lambda: is_gone(sleeper))

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
    first = start("run", "--task-id", TASK, "--no-overlap", "--",
                   "sh", "-c", first_job)  # fmt: skip
    try:
        assert wait_for(started.exists)

        second = run_cronlog("run", "--task-id", TASK, "--no-overlap", "--",
                             "touch", str(marker))  # fmt: skip
        release.touch()
        first.communicate(timeout=WAIT_SECONDS)
    finally:
        stop(first)

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
    cronlog = start("run", "--task-id", TASK, "--", "sh", "-c",
                     f"echo $$ > {pids}; sleep 30")  # fmt: skip
    [job] = pids_in(pids, 1)
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
            kill_group(job)

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

        runs = [start("run", "--task-id", TASK, "--", "true") for _ in range(2)]
        codes = [run.wait(timeout=PROCESS_TIMEOUT) for run in runs]
    finally:
        for run in runs:
            stop(run)
        if job is not None:
            kill_group(job)

    assert codes == [0, 0]
    statuses = sorted(body["status"] for body in dashboard.bodies)
    assert statuses == ["failed", "success", "success"]
    [lost] = [b for b in dashboard.bodies if b["status"] == "failed"]
    assert lost["notes"].startswith("outcome unknown")


@pytest.mark.parametrize("closing", [">&-", "2>&-", ">&- 2>&-", "<&- >&- 2>&-"])
def test_closed_standard_streams_change_neither_the_status_nor_the_report(
    dashboard, closing
):
    # As a crontab line that ends in `>&- 2>&-` starts cronlog.
    started = subprocess.run(
        ["sh", "-c", f'exec "$@" {closing}', "sh", CRONLOG, "run", "--task-id",
         "sync-price-grid", "--", "sh", "-c", "echo printed; echo said >&2; exit 4"],
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
    )  # fmt: skip

    assert started.returncode == 4
    assert b"Traceback" not in started.stderr
    [body] = dashboard.bodies
    assert (body["status"], body["notes"]) == ("failed", "exit 4\nprinted\nsaid")
