"""The commands other than `run`: what they print on stdout and stderr, and their exit
statuses. (`run` is tested end to end in test_e2e_run.py.)"""

from __future__ import annotations

import json

import pytest

from cronlog import exits
from cronlog.cli import run_cli

KEY = "abcdefghijklmnopqrstuvwxyz"


def test_list_tasks_prints_aligned_columns_when_piped(capsys):
    status = run_cli(["list-tasks"])

    out = capsys.readouterr().out.splitlines()
    assert status == exits.OK
    assert out[0].split() == ["ID", "TITLE", "SCHEDULE", "TIMEZONE", "NEXT", "RUN"]
    assert any(line.startswith("tradein-auto-submit ") for line in out)
    assert "\x1b[" not in "".join(out)


def test_list_tasks_prints_a_rich_table_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")  # one line a task, as on a wide terminal

    status = run_cli(["list-tasks"])

    out = capsys.readouterr().out
    assert status == exits.OK
    assert "\x1b[1m" in out  # rich's bold header: a terminal table, not plain text
    for task_id in ("sync-price-grid", "tradein-auto-submit", "tradein-email-retry"):
        assert task_id in out


def test_list_tasks_json_has_every_field_scripts_need(capsys):
    run_cli(["list-tasks", "--json"])

    tasks = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in tasks][:5] == [
        "sync-price-grid",
        "refresh-woocommerce-catalog",
        "graphiti-sync",
        "tradein-auto-submit",
        "tradein-email-retry",
    ]
    first = tasks[0]
    assert first["schedule"] == "0 10 * * 0" and first["timezone"] == "Asia/Singapore"
    assert first["frequency"] == "Weekly (Sunday 10:00 AM SGT)"
    assert first["next_run"].endswith("+08:00")


def test_config_masks_the_key_and_names_its_source(capsys, monkeypatch):
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    monkeypatch.setenv("CRONLOG_URL", "https://dash.example/x")

    run_cli(["config"])

    out = capsys.readouterr().out
    assert KEY not in out and KEY[:5] not in out
    assert "abcd…" in out and "CRONLOG_API_KEY" in out
    assert "https://dash.example/x/api/scheduled-tasks/ingest" in out


def test_test_post_sends_the_guides_manual_test(ingest_server, capsys, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)

    status = run_cli(["test-post"])

    assert status == exits.OK
    [request] = ingest_server.received
    assert request.json == {
        "task_id": "test-task",
        "task_title": "Test Task",
        "status": "success",
        "duration_ms": 1234,
        "notes": "Manual test from CLI",
    }
    assert json.loads(capsys.readouterr().out)["success"] is True


def test_test_post_explains_a_refused_key_and_exits_1(
    ingest_server, capsys, monkeypatch
):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    ingest_server.answer(401, {"success": False, "error": "Unauthorized"})

    status = run_cli(["test-post"])

    captured = capsys.readouterr()
    assert status == exits.FAILURE
    assert captured.out == ""
    assert captured.err.startswith("cronlog: error: ") and captured.err.count("\n") == 1
    assert "CHATKIT_API_KEY" in captured.err and KEY not in captured.err


def test_test_post_names_the_url_it_could_not_reach(
    closed_port_url, capsys, monkeypatch
):
    monkeypatch.setenv("CRONLOG_URL", closed_port_url)

    status = run_cli(["test-post"])

    assert status == exits.FAILURE
    assert closed_port_url in capsys.readouterr().err


def test_test_post_without_a_dashboard_goes_to_the_local_store(capsys):
    run_cli(["test-post", "--status", "failed"])
    capsys.readouterr()

    run_cli(["history", "--json"])

    [run] = json.loads(capsys.readouterr().out)
    assert (run["task_id"], run["status"]) == ("test-task", "failed")


def test_history_on_an_empty_store_says_how_to_fill_it(capsys):
    status = run_cli(["history"])

    captured = capsys.readouterr()
    assert status == exits.OK
    assert "no runs recorded yet" in captured.err


def test_flush_without_a_dashboard_is_a_usage_error(capsys):
    assert run_cli(["flush"]) == exits.USAGE
    assert "CRONLOG_URL" in capsys.readouterr().err


def test_an_empty_outbox_lists_nothing(capsys):
    run_cli(["outbox", "--json"])

    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--task-id", "x", "--timeout", "soon", "--", "true"], "Invalid value"),
        (["run", "--bogus"], "No such option"),
        (["run", "--task-id", "sync-price-grid"], "nothing to run"),
        (["history", "--limit", "0"], "Invalid value for '--limit'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    status = run_cli(args)

    err = capsys.readouterr().err
    assert status == exits.USAGE
    assert err.startswith("cronlog: error: ") and err.count("\n") == 1
    assert message in err


def test_version_and_help_exit_0(capsys):
    assert run_cli(["--version"]) == exits.OK
    assert "cronlog" in capsys.readouterr().out
    assert run_cli(["run", "--help"]) == exits.OK
    assert "crontab" in capsys.readouterr().out


def _queue(state_dir, *bodies):
    from cronlog.outbox import Outbox
    from cronlog.reporter import Report

    outbox = Outbox(state_dir / "outbox")
    for number, body in enumerate(bodies):
        outbox.put(Report(f"run-{number}", body))
    return outbox


BODY = {
    "task_id": "sync-price-grid",
    "task_title": "Sync price grid",
    "status": "success",
}


def test_flush_exits_1_when_the_dashboard_refuses_and_retry_rejected_resends(
    ingest_server, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    outbox = _queue(tmp_path / "state" / "cronlog", BODY, BODY)
    ingest_server.answer(400, {"success": False, "error": "Missing required fields"})
    ingest_server.answer(400, {"success": False, "error": "Missing required fields"})

    refused = run_cli(["flush"])
    err = capsys.readouterr().err
    again = run_cli(["flush", "--retry-rejected"])

    assert refused == exits.FAILURE
    assert "refused 2 reports" in err and "--retry-rejected" in err
    assert again == exits.OK
    assert [r.headers["Idempotency-Key"] for r in ingest_server.received] == [
        "run-0",
        "run-1",
        "run-0",
        "run-1",
    ]
    assert len(outbox) == 0 and outbox.rejected() == []


def test_flush_sends_the_report_a_stopped_cronlog_kept_in_its_marker(
    ingest_server, monkeypatch, tmp_path
):
    import subprocess
    import sys

    state_dir = tmp_path / "state" / "cronlog"
    state_dir.mkdir(parents=True)
    kept = (
        "from cronlog import locks\n"
        f"m = locks.RunMarker({str(state_dir)!r}, 'graphiti-sync', 'run-9', 'x')\n"
        f"m.keep_report({BODY!r})\n"
    )
    subprocess.run([sys.executable, "-c", kept], check=True, timeout=30)
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)

    status = run_cli(["flush"])

    assert status == exits.OK
    [request] = ingest_server.received
    assert request.headers["Idempotency-Key"] == "run-9"
    assert request.json == BODY
    assert list((state_dir / "inflight" / "graphiti-sync").iterdir()) == []


def test_test_post_sends_what_its_flags_say(ingest_server, capsys, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)

    status = run_cli(["test-post", "--task-id", "nightly-backup",
                      "--title", "Nightly backup", "--status", "failed",
                      "--duration-ms", "42", "--notes", "from the flags"])  # fmt: skip

    captured = capsys.readouterr()
    assert status == exits.OK
    [request] = ingest_server.received
    assert request.path == "/api/scheduled-tasks/ingest"
    assert request.headers["X-API-Key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "task_id": "nightly-backup",
        "task_title": "Nightly backup",
        "status": "failed",
        "duration_ms": 42,
        "notes": "from the flags",
    }
    answer = json.loads(captured.out)  # the dashboard's own answer, printed
    assert answer["success"] is True
    assert answer["data"]["task_id"] == "nightly-backup"
    assert KEY not in captured.out + captured.err


@pytest.mark.parametrize("run_status", ["success", "failed", "running"])
def test_test_post_sends_each_status(ingest_server, capsys, monkeypatch, run_status):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)

    assert run_cli(["test-post", "--status", run_status]) == exits.OK

    assert [body["status"] for body in ingest_server.bodies] == [run_status]


def test_test_post_rejects_a_status_the_dashboard_does_not_know(
    ingest_server, capsys, monkeypatch
):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)

    status = run_cli(["test-post", "--status", "ok"])

    err = capsys.readouterr().err
    assert status == exits.USAGE
    assert err.startswith("cronlog: error: ") and err.count("\n") == 1
    assert ingest_server.received == []


def test_test_post_quotes_a_400_and_exits_1(ingest_server, capsys, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)
    error = "Missing required fields: task_title"
    ingest_server.answer(400, {"success": False, "error": error})

    status = run_cli(["test-post"])

    captured = capsys.readouterr()
    assert status == exits.FAILURE
    assert captured.out == ""
    assert captured.err.startswith("cronlog: error: ") and captured.err.count("\n") == 1
    assert "HTTP 400" in captured.err and error in captured.err
    assert KEY not in captured.err
    assert len(ingest_server.received) == 1  # a refused report is not retried


def _history(capsys, *args):
    """`cronlog history ARGS --json`'s runs as (task_id, notes), newest first."""
    assert run_cli(["history", *args, "--json"]) == exits.OK
    return [(r["task_id"], r["notes"]) for r in json.loads(capsys.readouterr().out)]


def test_history_filters_by_task_and_limits(run_cronlog, capsys):
    # Recorded in the local store: no dashboard is configured.
    recorded = [("sync-price-grid", "exit 0"), ("graphiti-sync", "exit 1"),
                ("sync-price-grid", "exit 2"), ("sync-price-grid", "exit 3"),
                ("graphiti-sync", "exit 4")]  # fmt: skip
    for task_id, job in recorded:
        result = run_cronlog("run", "--task-id", task_id, "--", "sh", "-c", job)
        assert result.returncode == int(job.split()[1]), result.stderr

    assert _history(capsys, "--task-id", "sync-price-grid", "--limit", "2") == [
        ("sync-price-grid", "exit 3"),
        ("sync-price-grid", "exit 2"),
    ]
    assert _history(capsys, "--task-id", "sync-price-grid") == [
        ("sync-price-grid", "exit 3"),
        ("sync-price-grid", "exit 2"),
        ("sync-price-grid", None),  # the success: no notes
    ]
    assert _history(capsys, "--limit", "3") == [
        ("graphiti-sync", "exit 4"),
        ("sync-price-grid", "exit 3"),
        ("sync-price-grid", "exit 2"),
    ]
    assert _history(capsys, "--task-id", "no-such-task") == []

    assert run_cli(["history", "--task-id", "graphiti-sync", "--limit", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len([line for line in table if "graphiti-sync" in line]) == 1
    assert not [line for line in table if "sync-price-grid" in line]


def test_history_of_a_mistyped_task_suggests_the_known_one(capsys):
    assert run_cli(["history", "--task-id", "sync-price-grd"]) == exits.OK

    assert capsys.readouterr().err == (
        "cronlog: no runs of 'sync-price-grd' in the local store "
        "(did you mean 'sync-price-grid'?)\n"
    )


def test_test_post_of_a_known_task_takes_its_title(ingest_server, capsys, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)

    assert run_cli(["test-post", "--task-id", "sync-price-grid"]) == exits.OK

    [request] = ingest_server.received
    assert request.json["task_title"] == "Sync price grid"


def test_test_post_refuses_a_mistyped_task_before_sending(
    ingest_server, capsys, monkeypatch
):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", KEY)

    assert run_cli(["test-post", "--task-id", "sync-price-grd"]) == exits.USAGE

    assert "did you mean 'sync-price-grid'?" in capsys.readouterr().err
    assert ingest_server.received == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--title", ""], "--title: String should have at least 1 character"),
        (["--title", "x" * 201], "--title: String should have at most 200 characters"),
        (["--task-id", "a b", "--title", "X"], "holds a space or an invisible"),
    ],
)
def test_test_post_refuses_what_the_dashboard_would_in_one_line(
    ingest_server, capsys, monkeypatch, args, message
):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)

    assert run_cli(["test-post", *args]) == exits.USAGE

    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert ingest_server.received == []


def test_flush_warns_of_a_key_file_others_can_read(ingest_server, capsys, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)

    status = run_cli(
        ["flush", "--url", ingest_server.url, "--api-key-file", str(key_file)]
    )

    assert status == exits.OK
    assert f"fix with: chmod 600 {key_file}" in capsys.readouterr().err
