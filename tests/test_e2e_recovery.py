"""Recovery end to end: the installed `cronlog` stopped or killed while it delivers or
while its job works, a dashboard that answers 200 without taking the report, commands
that cannot start, a closed stdout, and command lines refused before the job runs."""

from __future__ import annotations

import select
import signal
import subprocess
import time

import pytest

from e2e_support import (
    KEY,
    WAIT_SECONDS,
    Answer,
    Arrival,
    Dashboard,
    is_gone,
    kill_group,
    outbox_listing,
    pids_in,
    start,
    stop,
    wait_for,
)

TASK = "sync-price-grid"
SLOW_ANSWER = 5.0  # how long the dashboard takes when a test wants it slow


def _stop_cronlog_while_it_delivers(
    dashboard: Dashboard, signum: int, job: str = "true"
) -> tuple[subprocess.Popen[bytes], float, Arrival]:
    """Run `job`, signal cronlog once the slow dashboard has the report; return the
    stopped cronlog, how long it took to go, and the report as first sent."""
    dashboard.script = [Answer(200, delay=SLOW_ANSWER)]
    cronlog = start("run", "--task-id", TASK, "--", "sh", "-c", job)
    try:
        assert wait_for(lambda: len(dashboard.received) == 1)

        signalled = time.monotonic()
        cronlog.send_signal(signum)
        cronlog.communicate(timeout=WAIT_SECONDS)
        elapsed = time.monotonic() - signalled
    finally:
        stop(cronlog)

    return cronlog, elapsed, dashboard.received[0]


def _assert_the_next_run_sends_the_report_as_it_was(
    dashboard: Dashboard, first: Arrival, run_cronlog
) -> None:
    result = run_cronlog("run", "--task-id", TASK, "--", "true")

    assert result.returncode == 0
    later = dashboard.received[1:]
    again = [arrival for arrival in later if arrival.key == first.key]
    assert len(again) == 1, [arrival.json for arrival in later]
    assert again[0].body == first.body
    notes = [arrival.json.get("notes") or "" for arrival in later]
    assert not [note for note in notes if note.startswith("outcome unknown")]
    assert outbox_listing(run_cronlog) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_while_delivering_exits_at_once_with_the_jobs_status(
    signum, dashboard, run_cronlog
):
    cronlog, elapsed, first = _stop_cronlog_while_it_delivers(dashboard, signum)

    assert cronlog.returncode == 0
    assert elapsed < 1.5  # well short of the dashboard's 5 s
    assert first.json["status"] == "success"
    _assert_the_next_run_sends_the_report_as_it_was(dashboard, first, run_cronlog)


def test_a_failed_job_stopped_while_delivering_keeps_its_status_and_report(
    dashboard, run_cronlog
):
    cronlog, elapsed, first = _stop_cronlog_while_it_delivers(
        dashboard, signal.SIGTERM, "echo oops; exit 3"
    )

    assert cronlog.returncode == 3
    assert elapsed < 1.5
    assert first.json["status"] == "failed"
    assert first.json["notes"] == "exit 3\noops"
    _assert_the_next_run_sends_the_report_as_it_was(dashboard, first, run_cronlog)


def test_a_report_cut_off_by_sigkill_is_sent_by_the_next_run_as_it_was(
    dashboard, run_cronlog
):
    cronlog, _, first = _stop_cronlog_while_it_delivers(dashboard, signal.SIGKILL)

    assert cronlog.returncode == -signal.SIGKILL
    assert first.json["status"] == "success"
    _assert_the_next_run_sends_the_report_as_it_was(dashboard, first, run_cronlog)


def test_an_orphaned_job_keeps_the_no_overlap_lock_until_it_ends(
    dashboard, reaper, run_cronlog, tmp_path
):
    pid_file, second_ran, third_ran = (tmp_path / n for n in ("job", "two", "three"))
    first = start("run", "--task-id", TASK, "--no-overlap", "--",
                   "sh", "-c", f"echo $$ > {pid_file}; sleep 30")  # fmt: skip
    job = None
    try:
        [job] = pids_in(pid_file, 1)
        first.kill()
        first.communicate(timeout=WAIT_SECONDS)

        second = run_cronlog("run", "--task-id", TASK, "--no-overlap", "--",
                             "touch", str(second_ran))  # fmt: skip
        orphan_lived = not is_gone(job)
        while_it_lived = [arrival.json for arrival in dashboard.received]
        kill_group(job)
        gone = is_gone(job)
        third = run_cronlog("run", "--task-id", TASK, "--no-overlap", "--",
                            "touch", str(third_ran))  # fmt: skip
    finally:
        stop(first)
        if job is not None:
            kill_group(job)

    assert orphan_lived and gone
    assert second.returncode == 75
    assert not second_ran.exists()
    assert "skipped" in second.stderr.decode()
    [skipped] = while_it_lived  # the orphan still works: its outcome is not given up
    assert skipped["notes"].startswith("skipped: the previous run")
    assert third.returncode == 0, third.stderr
    assert third_ran.exists()
    own, lost = [arrival.json for arrival in dashboard.received[1:]]
    assert own["status"] == "success"
    assert lost["notes"].startswith(f"outcome unknown: cronlog (pid {first.pid})")


NOT_TAKEN = {
    "a login page": ("text/html", b"<html>login</html>"),
    "success false": ("application/json", b'{"success": false, "error": "db down"}'),
}


@pytest.mark.parametrize("answer", NOT_TAKEN)
def test_a_200_that_does_not_take_the_report_leaves_it_in_the_outbox(
    answer, dashboard, run_cronlog
):
    content_type, body = NOT_TAKEN[answer]
    dashboard.answer = Answer(200, content_type=content_type, body=body)

    result = run_cronlog("run", "--task-id", TASK, "--report-timeout", "2s", "--",
                         "sh", "-c", "echo working; exit 3")  # fmt: skip

    assert result.returncode == 3
    assert result.stdout == b"working\n"
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cronlog: "), lines
    assert "outbox" in lines[0]
    keys = {arrival.key for arrival in dashboard.received}
    [waiting] = outbox_listing(run_cronlog)
    assert [waiting["run_id"]] == list(keys)
    assert (waiting["state"], waiting["task_id"]) == ("waiting", TASK)
    assert waiting["status"] == "failed"


@pytest.mark.parametrize("answer", NOT_TAKEN)
def test_test_post_fails_on_a_200_that_does_not_take_the_report(
    answer, dashboard, run_cronlog
):
    content_type, body = NOT_TAKEN[answer]
    dashboard.answer = Answer(200, content_type=content_type, body=body)

    result = run_cronlog("test-post")

    assert result.returncode == 1
    assert len(dashboard.received) >= 1


def test_a_command_that_is_not_found_says_so_once_and_exits_127(dashboard, run_cronlog):
    result = run_cronlog("run", "--task-id", TASK, "--", "no-such-cmd-xyz")

    assert result.returncode == 127
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        "cronlog: command not found: no-such-cmd-xyz"
    ]
    [arrival] = dashboard.received
    assert arrival.json["status"] == "failed"
    assert arrival.json["notes"].startswith("command not found: no-such-cmd-xyz")


def test_a_script_whose_interpreter_is_missing_exits_127_and_names_it(
    dashboard, run_cronlog, tmp_path
):
    script = tmp_path / "job"
    script.write_text("#!/nonexistent/interpreter-xyz\necho never\n")
    script.chmod(0o755)

    result = run_cronlog("run", "--task-id", TASK, "--", str(script))

    assert result.returncode == 127
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cronlog: "), lines
    assert "its interpreter" in lines[0]
    assert str(script) in lines[0]
    [arrival] = dashboard.received
    assert arrival.json["status"] == "failed"
    assert "its interpreter" in arrival.json["notes"]


def test_a_reader_that_closes_stdout_ends_the_job_with_sigpipe(dashboard):
    cronlog = start("run", "--task-id", TASK, "--", "seq", "1", "1000000")
    try:
        assert cronlog.stdout is not None
        readable, _, _ = select.select([cronlog.stdout], [], [], WAIT_SECONDS)
        assert readable, "the job printed nothing"
        line = cronlog.stdout.readline()
        cronlog.stdout.close()
        _, stderr = cronlog.communicate(timeout=WAIT_SECONDS)
    finally:
        stop(cronlog)

    assert line == b"1\n"
    assert cronlog.returncode == 141
    assert stderr == b""  # as quiet as seq alone: a closed pipe is no error to say
    [arrival] = dashboard.received
    assert arrival.json["status"] == "failed"
    assert arrival.json["notes"].startswith("killed by SIGPIPE")


LOG_URL = ("https://logs.example/" + "x" * 2001)[:2001]
# Each refused command line, and the words that say why; {job} marks the job.
REFUSED = {
    "--request with a command": (
        ["--request", "GET", "{url}/job", "--", "{job}"], "not both"),
    "--header without --request": (
        ["--header", "A: b", "--", "{job}"], "--header"),
    "invalid --json": (
        ["--request", "POST", "{url}/job", "--json", "{bad"], "not valid JSON"),
    "a task ID with a space": (
        ["--task-id", "a b", "--title", "T", "--", "{job}"], "'a b'"),
    "a 300-character task ID": (
        ["--task-id", "a" * 300, "--title", "T", "--", "{job}"], "300 characters"),
    "an empty title": (["--title", "", "--", "{job}"], "--title"),
    "a blank title": (["--title", "  ", "--", "{job}"], "--title"),
    "a 2001-character log URL": (
        ["--log-url", LOG_URL, "--", "{job}"], "2001 characters"),
    "a dashboard URL with a query": (
        ["--url", "{url}/?x=1", "--", "{job}"], "query"),
    "a dashboard URL with credentials": (
        ["--url", "http://u:p@127.0.0.1:9", "--", "{job}"], "user name or password"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_command_line_is_refused_before_the_job(
    case, dashboard, run_cronlog, tmp_path
):
    marker = tmp_path / "ran"
    template, why = REFUSED[case]
    args = [arg.replace("{url}", dashboard.url) for arg in template]
    if "{job}" in args:
        at = args.index("{job}")
        args[at : at + 1] = ["touch", str(marker)]
    if "--task-id" not in args:
        args = ["--task-id", TASK, *args]

    result = run_cronlog("run", *args)

    assert result.returncode == 2, result.stderr
    assert not marker.exists()
    assert dashboard.received == []
    stderr = result.stderr.decode()
    assert stderr.startswith("cronlog: error: ") and why in stderr, stderr
    assert "p@" not in stderr


def test_dashboard_credentials_from_the_environment_are_refused_unshown(
    dashboard, monkeypatch, run_cronlog, tmp_path
):
    monkeypatch.setenv("CRONLOG_URL", "http://u:p@127.0.0.1:9")
    marker = tmp_path / "ran"

    result = run_cronlog("run", "--task-id", TASK, "--", "touch", str(marker))

    assert result.returncode == 2
    assert not marker.exists()
    assert "CRONLOG_URL" in result.stderr.decode()
    assert "p@" not in result.stderr.decode()


def test_a_two_line_api_key_file_is_refused_before_the_job(
    dashboard, monkeypatch, run_cronlog, tmp_path
):
    monkeypatch.delenv("CRONLOG_API_KEY")
    key_file = tmp_path / "api-key"
    key_file.write_text(f"{KEY}\nsecond-line\n")
    key_file.chmod(0o600)
    marker = tmp_path / "ran"

    result = run_cronlog("run", "--task-id", TASK, "--api-key-file", str(key_file),
                         "--", "touch", str(marker))  # fmt: skip

    assert result.returncode == 2
    assert not marker.exists()
    assert dashboard.received == []
    assert "more than one line" in result.stderr.decode()
    assert KEY not in result.stderr.decode()


def test_a_timeout_of_zero_sets_no_limit(dashboard, run_cronlog):
    started = time.monotonic()
    result = run_cronlog("run", "--task-id", TASK, "--timeout", "0", "--",
                         "sleep", "1")  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert elapsed >= 1.0
    [arrival] = dashboard.received
    assert arrival.json["status"] == "success"


@pytest.mark.parametrize(
    "marker",
    [
        b'{"run_id": "r", "started_at": "not-a-time", "pid": 999999}',
        b'{"run_id": "r", "started_at": 12345, "pid": "abc"}',
        b"[1, 2]",
        b"garbage",
        b'{"run_id": "r", "report": {"task_id": "sync-price-grid", "colour": "red"}}',
        b'{"run_id": "r", "report": {"task_id": "sync-price-grid", "task_title": "S",'
        b' "status": "failed", "started_at": 12345}}',
    ],
)
def test_a_damaged_run_marker_is_reported_unknown_and_stops_nothing(
    dashboard, run_cronlog, tmp_path, monkeypatch, marker
):
    state = tmp_path / "state"
    monkeypatch.setenv("CRONLOG_STATE_DIR", str(state))
    inflight = state / "inflight" / "sync-price-grid"
    inflight.mkdir(parents=True)
    (inflight / "11111111-2222-4333-8444-555555555555.json").write_bytes(marker)

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", "sh", "-c", "exit 3"
    )

    assert result.returncode == 3, result.stderr
    this_run, lost = dashboard.bodies
    assert (this_run["status"], this_run["notes"]) == ("failed", "exit 3")
    assert lost["status"] == "failed"
    assert lost["notes"].startswith("outcome unknown: cronlog (pid ")
    assert list(inflight.iterdir()) == []
