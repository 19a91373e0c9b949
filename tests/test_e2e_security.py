"""Secrets stay secret and hostile output changes nothing: through the installed
cronlog, against a real loopback server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from e2e_support import CRONLOG

KEY = "dashboard-key-9f8e7d6c5b4a"


@pytest.fixture
def dashboard(ingest_server, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    return ingest_server


def everything_cronlog_kept(tmp_path: Path) -> str:
    """Every file in the state directory, as text."""
    state = tmp_path / "state"
    return "".join(
        path.read_bytes().decode("utf-8", "replace")
        for path in state.rglob("*")
        if path.is_file()
    )


def test_a_job_that_prints_the_key_and_credentials_has_them_redacted(
    dashboard, run_cronlog
):
    job = (
        f"echo using {KEY}; echo 'Authorization: Bearer abc.def'; "
        "echo 'GET /x?token=t0k3n&api_key=k3y password=hunter2'; exit 1"
    )

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "-v", "--", "sh", "-c", job
    )

    notes = dashboard.bodies[0]["notes"]
    assert KEY not in notes and "abc.def" not in notes and "hunter2" not in notes
    assert notes == (
        "exit 1\nusing [redacted]\nAuthorization: [redacted]\n"
        "GET /x?token=[redacted]&api_key=[redacted] password=[redacted]"
    )
    assert KEY.encode() in result.stdout  # the job's own output is the job's business
    assert KEY.encode() not in result.stderr


def test_the_key_is_not_in_dry_run_output_config_or_any_log(dashboard, run_cronlog):
    dry = run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--dry-run",
        "-vv",
        "--",
        "sh",
        "-c",
        f"echo {KEY}; exit 2",
    )
    shown = run_cronlog("config")
    chatty = run_cronlog("run", "--task-id", "sync-price-grid", "-vv", "--", "true")

    for result in (dry, shown, chatty):
        assert KEY.encode() not in result.stderr
    assert KEY.encode() not in shown.stdout
    assert "dash…".encode() in shown.stdout


def test_the_key_is_not_in_the_outbox(
    run_cronlog, closed_port_url, monkeypatch, tmp_path
):
    monkeypatch.setenv("CRONLOG_URL", closed_port_url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)

    run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--report-timeout",
        "300ms",
        "--",
        "sh",
        "-c",
        f"echo {KEY}; exit 1",
    )

    kept = everything_cronlog_kept(tmp_path)
    assert "[redacted]" in kept
    assert KEY not in kept


def test_the_key_is_in_no_process_command_line(dashboard, tmp_path):
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            CRONLOG,
            "run",
            "--task-id",
            "sync-price-grid",
            "--",
            "sh",
            "-c",
            f"touch {ready}; sleep 2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        command_lines = [
            path.read_bytes()
            for path in Path("/proc").glob("[0-9]*/cmdline")
            if path.exists()
        ]
    finally:
        process.wait(timeout=15)

    assert ready.exists()
    assert not any(KEY.encode() in line for line in command_lines)


def test_a_world_readable_config_file_gets_a_chmod_warning(run_cronlog, tmp_path):
    config_file = tmp_path / "config" / "cronlog" / "config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text(f'api_key = "{KEY}"\n')
    config_file.chmod(0o644)

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")

    assert result.returncode == 0
    assert result.stderr.decode() == (
        f"cronlog: {config_file} can be read by other users; "
        f"fix with: chmod 600 {config_file}\n"
    )


def test_plain_http_to_another_host_is_refused_before_the_job(run_cronlog, tmp_path):
    marker = tmp_path / "ran"
    env = {
        **os.environ,
        "CRONLOG_URL": "http://dashboard.example.com",
        "CRONLOG_API_KEY": KEY,
    }

    result = run_cronlog(
        "run", "--task-id", "sync-price-grid", "--", "touch", str(marker), env=env
    )

    assert result.returncode == 2
    assert "--allow-http" in result.stderr.decode()
    assert not marker.exists()


def test_a_redirecting_dashboard_is_not_followed(dashboard, run_cronlog):
    dashboard.answer(301, {"moved": True}, Location="https://elsewhere.example/ingest")

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", "true")

    assert result.returncode == 0
    assert len(dashboard.received) == 1
    stderr = result.stderr.decode()
    assert "https://elsewhere.example/ingest" in stderr
    assert KEY not in stderr


def test_any_bytes_a_job_prints_give_valid_json_notes(dashboard, run_cronlog, tmp_path):
    hostile = tmp_path / "hostile.bin"
    hostile.write_bytes(
        bytes(range(256)) * 40 + b"<script>alert(1)</script>\xed\xa0\x80"
    )

    result = run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--",
        "sh",
        "-c",
        f"cat {hostile}; exit 1",
    )

    assert result.returncode == 1
    raw = dashboard.received[0].body
    notes = json.loads(raw)["notes"]
    assert len(notes) <= 4000
    assert notes.endswith("<script>alert(1)</script>\ufffd\ufffd\ufffd")
    raw.decode("utf-8")


def test_bytes_that_are_not_utf8_in_arguments_still_give_a_report(
    dashboard, run_cronlog, monkeypatch
):
    # How Python hands over argument bytes that are not UTF-8: as lone surrogates.
    monkeypatch.setenv("CRONLOG_ENVIRONMENT", "stag\udcffing")

    result = run_cronlog(
        "run",
        "--task-id",
        "sync-price-grid",
        "--title",
        "Sync \udcff grid",
        "--notes",
        "night \udcfe run",
        "--",
        "/nonexistent/\udcffcommand",
    )

    assert result.returncode == 127
    [body] = dashboard.bodies
    assert body["task_title"] == "Sync \ufffd grid"
    assert body["environment"] == "stag\ufffding"
    assert body["notes"] == (
        "night \ufffd run\ncommand not found: /nonexistent/\ufffdcommand"
    )


def test_a_command_naming_the_key_is_redacted_in_the_message_too(
    dashboard, run_cronlog
):
    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", f"./job-{KEY}")

    assert result.returncode == 127
    assert result.stderr == b"cronlog: command not found: ./job-[redacted]\n"
    assert dashboard.bodies[0]["notes"] == "command not found: ./job-[redacted]"
