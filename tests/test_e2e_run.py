"""`cronlog run` end to end: the installed command as a real process, reporting to a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cronlog import __version__

KEY = "k3y-for-the-tests-0123456789"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)
INGEST_PATH = "/api/scheduled-tasks/ingest"
RECENT = timedelta(minutes=2)  # a run's timestamps are this close to the test's now


@pytest.fixture
def dashboard(ingest_server, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    return ingest_server


def _utc(stamp: str) -> datetime:
    assert TIMESTAMP.match(stamp), stamp
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def assert_body(
    body: dict[str, Any],
    *,
    task_id: str,
    task_title: str,
    status: str,
    notes: str | None = None,
    **fields: str,
) -> None:
    """`body` is exactly the guide's JSON for a finished run, and nothing else.

    Timestamps are UTC (`...Z`, close to the real now whatever the TZ) and
    `duration_ms` agrees with them; `notes` and the optional `fields` (environment,
    owner, log_url) appear only when expected, never as null.
    """
    expected = {"task_id": task_id, "task_title": task_title, "status": status}
    if notes is not None:
        expected["notes"] = notes
    expected.update(fields)
    timing = {"started_at", "ended_at", "duration_ms"}
    assert set(body) == set(expected) | timing
    assert {name: body[name] for name in expected} == expected
    started, ended = _utc(body["started_at"]), _utc(body["ended_at"])
    now = datetime.now(UTC)
    assert now - RECENT < started <= ended <= now + timedelta(seconds=1)
    duration = body["duration_ms"]
    assert type(duration) is int and duration >= 0
    assert abs((ended - started) / timedelta(milliseconds=1) - duration) <= 250


def assert_report(
    request: Any,
    *,
    task_id: str = "sync-price-grid",
    task_title: str = "Sync price grid",
    status: str,
    notes: str | None = None,
    key: str = KEY,
    **fields: str,
) -> None:
    """`request` is one POST of a finished run: the guide's path, headers and body."""
    assert (request.method, request.path) == ("POST", INGEST_PATH)
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["x-api-key"] == key
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"cronlog/{__version__}"
    assert UUID4.fullmatch(headers["idempotency-key"]), headers["idempotency-key"]
    assert_body(
        request.json,
        task_id=task_id,
        task_title=task_title,
        status=status,
        notes=notes,
        **fields,
    )


def _outbox_records(state_home: Path) -> list[dict[str, Any]]:
    outbox = state_home / "cronlog" / "outbox"
    return [json.loads(path.read_bytes()) for path in sorted(outbox.glob("*.json"))]


def test_a_successful_job_is_reported_with_the_guides_fields(dashboard, run_cronlog):
    result = run_cronlog(
        "run", "--task-id", "tradein-auto-submit", "--", "echo", "hello"
    )

    assert result.returncode == 0
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    [request] = dashboard.received
    assert_report(
        request,
        task_id="tradein-auto-submit",
        task_title="Trade-in auto submit",
        status="success",
    )


def test_it_exits_with_the_childs_code_and_says_why(dashboard, run_cronlog):
    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", "sh", "-c", "echo partial; exit 3"
    )

    assert result.returncode == 3
    assert result.stdout == b"partial\n"
    [request] = dashboard.received
    assert_report(request, status="failed", notes="exit 3\npartial")


def test_a_child_killed_by_sigkill_exits_137(dashboard, run_cronlog):
    result = run_cronlog(
        "run", "--task-id", "graphiti-sync", "--", "sh", "-c", "kill -9 $$"
    )

    assert result.returncode == 137
    [request] = dashboard.received
    assert_report(
        request,
        task_id="graphiti-sync",
        task_title="Graphiti enrichment",
        status="failed",
        notes="killed by SIGKILL",
    )


def test_a_missing_command_exits_127(dashboard, run_cronlog):
    result = run_cronlog("run", "--task-id", "graphiti-sync", "--", "no-such-command-x")

    assert result.returncode == 127
    [request] = dashboard.received
    assert_report(
        request,
        task_id="graphiti-sync",
        task_title="Graphiti enrichment",
        status="failed",
        notes="command not found: no-such-command-x",
    )


def test_a_file_that_is_not_executable_exits_126(dashboard, run_cronlog, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)

    result = run_cronlog("run", "--task-id", "graphiti-sync", "--", str(script))

    assert result.returncode == 126
    assert result.stdout == b""
    [request] = dashboard.received
    assert_report(
        request,
        task_id="graphiti-sync",
        task_title="Graphiti enrichment",
        status="failed",
        notes=f"permission denied: {script}",
    )


NOTES_LIMIT = 4000
CUT_MARKER = re.compile(r"\[… ([\d,]+) bytes of earlier output cut\]\n")


def test_a_megabyte_of_output_passes_through_whole_and_the_notes_keep_its_end(
    dashboard, run_cronlog
):
    program = (
        "import sys\n"
        "for i in range(20000): sys.stdout.write(f'line {i:05d} ' + 'x' * 40 + '\\n')\n"
        "sys.stdout.write('the last words\\n'); sys.exit(1)\n"
    )

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", sys.executable, "-c", program
    )

    assert result.returncode == 1
    assert len(result.stdout) == 20000 * 52 + len("the last words\n")
    assert result.stdout.endswith(b"line 19999 " + b"x" * 40 + b"\nthe last words\n")
    [request] = dashboard.received
    notes = request.json["notes"]
    assert len(notes) <= NOTES_LIMIT
    reason, marker_and_tail = notes.split("\n", 1)
    assert reason == "exit 1"
    marker = CUT_MARKER.match(marker_and_tail)
    assert marker, notes[:200]
    tail = marker_and_tail[marker.end() :]
    # The tail kept is the output's own end, whole lines and all, less its last "\n".
    assert len(tail) > NOTES_LIMIT - 200
    assert result.stdout.decode().endswith(tail + "\n")
    # The marker counts exactly what came before the tail.
    before_tail = len(result.stdout) - len(tail) - 1
    assert int(marker.group(1).replace(",", "")) == before_tail
    assert_report(request, status="failed", notes=notes)


def test_invalid_utf8_output_passes_through_unchanged_and_notes_stay_valid(
    dashboard, run_cronlog
):
    raw = b"bad \xff\xfe bytes \x1b[31mred\x1b[0m\n"
    program = f"import sys; sys.stdout.buffer.write({raw!r}); sys.exit(2)"

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", sys.executable, "-c", program
    )

    assert result.returncode == 2
    assert result.stdout == raw
    [request] = dashboard.received
    request.body.decode("utf-8")  # the JSON sent is valid UTF-8 itself
    assert_report(request, status="failed", notes="exit 2\nbad \ufffd\ufffd bytes red")


def test_a_failure_with_no_output_has_just_the_reason(dashboard, run_cronlog):
    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "false")

    assert result.returncode == 1
    assert result.stdout == b""
    [request] = dashboard.received
    assert_report(request, status="failed", notes="exit 1")


def test_a_success_with_no_output_sends_no_notes(dashboard, run_cronlog):
    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")

    assert result.returncode == 0
    assert (result.stdout, result.stderr) == (b"", b"")
    [request] = dashboard.received
    assert_report(request, status="success")


def test_a_refused_key_is_explained_without_showing_it(dashboard, run_cronlog):
    dashboard.answer(401, {"success": False, "error": "Unauthorized"})

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")

    assert result.returncode == 0
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith("cronlog: ") and stderr.count("\n") == 1
    assert "CHATKIT_API_KEY" in stderr
    assert KEY not in stderr and KEY[:8] not in stderr
    [request] = dashboard.received  # a refused key is not retried
    assert_report(request, status="success")


def test_a_400_quotes_the_dashboards_error(dashboard, run_cronlog):
    dashboard.answer(400, {"success": False, "error": "Missing required fields"})

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", "sh", "-c", "exit 4"
    )

    assert result.returncode == 4
    stderr = result.stderr.decode()
    assert stderr.startswith("cronlog: ") and stderr.count("\n") == 1
    assert "Missing required fields" in stderr
    assert KEY not in stderr
    [request] = dashboard.received  # a 400 is not retried
    assert_report(request, status="failed", notes="exit 4")


def test_a_dashboard_that_is_not_listening_changes_nothing_for_the_job(
    run_cronlog, closed_port_url, monkeypatch, tmp_path
):
    monkeypatch.setenv("CRONLOG_URL", closed_port_url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)

    result = run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--report-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "echo done; exit 5",
    )

    assert result.returncode == 5
    assert result.stdout == b"done\n"
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1 and stderr.startswith("cronlog: ")
    assert closed_port_url in stderr
    assert "outbox" in stderr
    assert KEY not in stderr
    [record] = _outbox_records(tmp_path / "state")
    assert UUID4.fullmatch(record["run_id"])
    assert_body(record["body"], task_id="sync-price-grid",
                task_title="Sync price grid", status="failed",
                notes="exit 5\ndone")  # fmt: skip
    assert KEY not in json.dumps(record)


def test_a_task_id_typo_is_refused_before_the_job_runs(
    dashboard, run_cronlog, tmp_path
):
    marker = tmp_path / "ran"

    result = run_cronlog(
        "run", "--task-id", "tradein-auto-submt", "--", "touch", str(marker)
    )

    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith("cronlog: ")
    assert "did you mean 'tradein-auto-submit'" in stderr
    assert not marker.exists()
    assert dashboard.received == []
    assert _outbox_records(tmp_path / "state") == []


def test_a_new_task_with_a_title_is_accepted(dashboard, run_cronlog):
    result = run_cronlog(
        "run", "--task-id", "nightly-backup", "--title", "Nightly backup", "--", "true"
    )

    assert result.returncode == 0
    [request] = dashboard.received
    assert_report(
        request,
        task_id="nightly-backup",
        task_title="Nightly backup",
        status="success",
    )


def test_a_malformed_config_file_stops_before_the_job(dashboard, run_cronlog, tmp_path):
    config_file = tmp_path / "config" / "cronlog" / "config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text('url = "https://example.invalid\n')
    marker = tmp_path / "ran"

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", "touch", str(marker)
    )

    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith("cronlog: ")
    assert str(config_file) in stderr and "not valid TOML" in stderr
    assert stderr.count("\n") == 1
    assert not marker.exists()
    assert dashboard.received == []
    assert _outbox_records(tmp_path / "state") == []


def test_an_unknown_config_key_names_the_file_and_the_key(run_cronlog, tmp_path):
    config_file = tmp_path / "cronlog.toml"
    config_file.write_text('urll = "https://example.invalid"\n')
    env = {**os.environ, "CRONLOG_CONFIG": str(config_file)}

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "true", env=env)

    assert result.returncode == 2
    assert f"config file {config_file}: unknown key 'urll'" in result.stderr.decode()


def test_it_works_under_crons_empty_environment(ingest_server, run_cronlog, tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'url = "{ingest_server.url}"\napi_key = "{KEY}"\n')
    config_file.chmod(0o600)
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C",
        "CRONLOG_CONFIG": str(config_file),
        "CRONLOG_STATE_DIR": str(tmp_path / "state"),
    }

    job = "printf 'caf\\303\\251\\n'; exit 1"
    result = run_cronlog(
        "run", "--task-id", "tradein-email-retry", "--", "sh", "-c", job, env=env
    )

    assert result.returncode == 1
    assert result.stdout == "café\n".encode()
    assert result.stderr == b""
    [request] = ingest_server.received
    assert_report(
        request,
        task_id="tradein-email-retry",
        task_title="Trade-in email retry",
        status="failed",
        notes="exit 1\ncafé",
    )


def test_timestamps_are_utc_whatever_the_hosts_timezone(dashboard, run_cronlog):
    env = {**os.environ, "TZ": "Asia/Singapore"}

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "true", env=env)

    assert result.returncode == 0
    [request] = dashboard.received
    assert_report(request, status="success")  # within RECENT of the real UTC now


def test_the_job_does_not_see_cronlogs_own_key_but_keeps_the_dashboards(
    dashboard, run_cronlog, monkeypatch
):
    monkeypatch.setenv("CHATKIT_API_KEY", "job-uses-this")

    job = 'echo "${CRONLOG_API_KEY:-unset} $CHATKIT_API_KEY"'
    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "sh", "-c", job)

    assert result.stdout == b"unset job-uses-this\n"


def test_dry_run_prints_the_payload_and_sends_nothing(dashboard, run_cronlog):
    result = run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--dry-run",
        "--notes",
        "rehearsal",
        "--",
        "true",
    )

    assert result.returncode == 0
    assert dashboard.received == []
    stderr = result.stderr.decode()
    payload = json.loads(stderr[stderr.index("{") :])
    assert payload["status"] == "success" and payload["notes"] == "rehearsal"
    assert KEY not in stderr


def test_without_a_dashboard_runs_go_to_the_local_store(run_cronlog):
    run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")
    run_cronlog("run", "--task-id", "graphiti-sync", "--", "sh", "-c", "exit 9")

    listing = run_cronlog("history", "--json")

    runs = json.loads(listing.stdout)
    assert [(r["task_id"], r["status"]) for r in runs] == [
        ("graphiti-sync", "failed"),
        ("sync-price-grid", "success"),
    ]
    assert runs[0]["notes"] == "exit 9"


def test_options_and_notes_fields_are_sent_as_given(dashboard, run_cronlog):
    run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--notes",
        "weekly",
        "--log-url",
        "https://logs.example.com/1",
        "--environment",
        "staging",
        "--owner",
        "ops",
        "--",
        "sh",
        "-c",
        "echo boom; exit 1",
    )

    [request] = dashboard.received
    assert_report(
        request,
        status="failed",
        notes="weekly\nexit 1\nboom",
        log_url="https://logs.example.com/1",
        environment="staging",
        owner="ops",
    )


def test_a_url_with_a_path_prefix_is_joined_with_or_without_a_slash(
    ingest_server, run_cronlog, monkeypatch
):
    for base in (f"{ingest_server.url}/dash", f"{ingest_server.url}/dash/"):
        monkeypatch.setenv("CRONLOG_URL", base)
        run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")

    assert [r.path for r in ingest_server.received] == [
        "/dash/api/scheduled-tasks/ingest"
    ] * 2


def test_python_dash_m_cronlog_works(run_cronlog):
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "cronlog", "--version"], capture_output=True, timeout=30
    )

    assert result.returncode == 0
    assert result.stdout.decode().strip().endswith(__version__)


def test_the_state_directory_is_private(run_cronlog, tmp_path):
    run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")

    state = Path(tmp_path / "state" / "cronlog")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


@pytest.mark.parametrize("given", [{}, {"LC_CTYPE": "C"}, {"LC_CTYPE": "C.UTF-8"}])
def test_the_job_gets_the_locale_variables_cron_gave(run_cronlog, tmp_path, given):
    # Under the C locale Python sets LC_CTYPE=C.UTF-8 for itself (PEP 538).
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", **given}
    env["CRONLOG_STATE_DIR"] = str(tmp_path / "state")

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "env", env=env)

    assert result.returncode == 0
    job_sees = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert job_sees.get("LC_CTYPE") == given.get("LC_CTYPE")


@pytest.mark.parametrize(
    "options",
    [["-vv"], ["--verbose", "-v"], ["--task-id=sync-price-grid"], ["--timeout=1h"]],
)
def test_every_spelling_of_the_options_keeps_the_jobs_exit_status(
    dashboard, run_cronlog, options
):
    # Some spellings go past the lean parser to click: the status must survive both.
    named = options[0].startswith("--task-id")
    task = [] if named else ["--task-id", "sync-price-grid"]

    failed = run_cronlog("run", *options, *task, "--", "sh", "-c", "exit 3")
    missing = run_cronlog("run", *options, *task, "--", "no-such-command-x")

    assert (failed.returncode, missing.returncode) == (3, 127)
    assert [body["status"] for body in dashboard.bodies] == ["failed", "failed"]
