"""Tests for cronlog.delivery: where a finished run's report goes (dashboard, outbox,
local store or stderr), in which order, and how long --report-start may hold a job."""

from __future__ import annotations

import logging
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronlog import config, delivery
from cronlog.delivery import Delivery
from cronlog.outbox import Outbox
from cronlog.reporter import Report
from cronlog.store import open_store

KEY = "k3y-for-the-delivery-unit-tests"
FIELDS = {"task_id": "sync-price-grid", "task_title": "Sync price grid",
          "status": "success", "duration_ms": 1200}  # fmt: skip


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def settings_for(url: str | None, **flags) -> config.Settings:
    env = {"CRONLOG_API_KEY": KEY, **({"CRONLOG_URL": url} if url else {})}
    return config.resolve(flags, env)


def lost_run(notes: str) -> tuple[str, dict]:
    """(run id, body) of a run whose cronlog died before reporting it."""
    return str(uuid.uuid4()), {**FIELDS, "status": "failed", "notes": notes}


def outbox_of(state_dir: Path) -> Outbox:
    return Outbox(state_dir / delivery.OUTBOX_DIR)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_finish_sends_the_report_with_the_run_id_as_idempotency_key(
    ingest_server, state_dir
):
    sending = Delivery(settings_for(ingest_server.url), state_dir, dry_run=False)

    sending.finish(FIELDS)

    [request] = ingest_server.received
    assert request.headers["Idempotency-Key"] == sending.run_id
    assert uuid.UUID(sending.run_id).version == 4
    assert request.json == FIELDS


def test_finish_sends_its_own_report_then_the_lost_runs_then_the_backlog(
    ingest_server, state_dir
):
    waiting = [Report(str(uuid.uuid4()), {**FIELDS, "notes": f"queued {n}"})
               for n in range(3)]  # fmt: skip
    for report in waiting:
        outbox_of(state_dir).put(report)
    lost = [lost_run("lost 1"), lost_run("lost 2")]
    sending = Delivery(settings_for(ingest_server.url), state_dir, dry_run=False)

    sending.start()
    sending.finish(FIELDS, lost=lost)

    keys = [r.headers["Idempotency-Key"] for r in ingest_server.received]
    assert keys == [sending.run_id, *(run_id for run_id, _ in lost),
                    *(r.run_id for r in waiting)]  # fmt: skip
    assert len(outbox_of(state_dir)) == 0


def test_an_undelivered_report_and_the_lost_runs_wait_in_the_outbox_in_order(
    closed_port_url, state_dir, caplog
):
    lost = [lost_run("lost 1")]
    sending = Delivery(
        settings_for(closed_port_url, report_timeout="200ms"), state_dir, dry_run=False
    )

    with caplog.at_level(logging.WARNING, logger="cronlog"):
        sending.finish(FIELDS, lost=lost)

    entries = outbox_of(state_dir).pending()
    assert [e.run_id for e in entries] == [sending.run_id, lost[0][0]]
    assert entries[0].body == FIELDS
    assert "waits in the outbox" in caplog.text
    assert KEY not in caplog.text


def test_a_refused_report_is_not_kept_in_the_outbox(ingest_server, state_dir, caplog):
    ingest_server.answer(400, {"success": False, "error": "Missing required fields"})
    sending = Delivery(settings_for(ingest_server.url), state_dir, dry_run=False)

    with caplog.at_level(logging.WARNING, logger="cronlog"):
        sending.finish(FIELDS)

    assert len(ingest_server.received) == 1
    assert "Missing required fields" in caplog.text


def test_without_a_state_directory_an_undelivered_report_is_only_a_warning(
    closed_port_url, caplog
):
    sending = Delivery(
        settings_for(closed_port_url, report_timeout="200ms"), None, dry_run=False
    )

    with caplog.at_level(logging.WARNING, logger="cronlog"):
        sending.finish(FIELDS)

    assert "no state directory" in caplog.text


def test_the_backlog_is_delivered_only_within_its_budget(
    ingest_server, state_dir, monkeypatch
):
    monkeypatch.setattr(delivery, "BACKLOG_BUDGET", 0.0)
    outbox_of(state_dir).put(Report(str(uuid.uuid4()), FIELDS))
    sending = Delivery(settings_for(ingest_server.url), state_dir, dry_run=False)

    sending.finish(FIELDS)

    assert len(ingest_server.received) == 1
    assert len(outbox_of(state_dir)) == 1


def test_a_dry_run_prints_the_reports_and_sends_nothing(
    ingest_server, state_dir, capsys
):
    sending = Delivery(settings_for(ingest_server.url), state_dir, dry_run=True)

    sending.finish(FIELDS, lost=[lost_run("lost 1")])

    err = capsys.readouterr().err
    assert err.count("cronlog: dry run: would send to") == 2
    assert '"notes": "lost 1"' in err
    assert ingest_server.received == []
    assert len(outbox_of(state_dir)) == 0


def test_without_a_dashboard_the_runs_go_to_the_local_store(state_dir):
    lost = [lost_run("lost 1")]
    sending = Delivery(settings_for(None), state_dir, dry_run=False)

    sending.finish(FIELDS, lost=lost)

    store = open_store(state_dir / delivery.STORE_FILE)
    try:
        runs = store.runs()
    finally:
        store.close()
    assert sorted(run["status"] for run in runs) == ["failed", "success"]


def test_report_start_sends_running_first_under_a_key_of_its_own(
    ingest_server, state_dir
):
    sending = Delivery(settings_for(ingest_server.url), state_dir, dry_run=False)

    sending.start(running={**FIELDS, "status": "running"})
    sending.wait_for_start_report()
    sent_before_the_job = len(ingest_server.received)
    sending.finish(FIELDS)

    assert sent_before_the_job == 1
    running, final = ingest_server.received
    assert running.json["status"] == "running"
    assert running.headers["Idempotency-Key"] == f"{sending.run_id}-start"
    assert final.headers["Idempotency-Key"] == sending.run_id


def test_a_dashboard_that_never_answers_holds_the_job_back_at_most_a_second(
    silent_server, state_dir, monkeypatch
):
    monkeypatch.setattr(delivery, "REPORT_START_DEADLINE", 1.5)  # to end it sooner
    sending = Delivery(
        settings_for(silent_server, report_timeout="2s"), state_dir, dry_run=False
    )

    started = time.monotonic()
    sending.start(running={**FIELDS, "status": "running"})
    sending.wait_for_start_report()
    held = time.monotonic() - started

    sending.finish(FIELDS)

    assert held + 0.05 >= delivery.REPORT_START_WAIT
    assert held < delivery.REPORT_START_WAIT + 0.5
    assert [e.run_id for e in outbox_of(state_dir).pending()] == [sending.run_id]


def test_a_dashboard_that_refuses_releases_the_job_after_the_first_try(
    closed_port_url, state_dir, monkeypatch
):
    monkeypatch.setattr(delivery, "REPORT_START_DEADLINE", 1.5)  # to end it sooner
    sending = Delivery(
        settings_for(closed_port_url, report_timeout="2s"), state_dir, dry_run=False
    )

    sending.start(running={**FIELDS, "status": "running"})
    sending.wait_for_start_report()

    # Released by the refused first try, not by the one-second cap: the retries of
    # the start report are still going.
    assert sending._start_reported is not None and sending._start_reported.is_set()
    assert sending._thread is not None and sending._thread.is_alive()
    sending.finish(FIELDS)
    assert [e.run_id for e in outbox_of(state_dir).pending()] == [sending.run_id]


@pytest.fixture
def unpreparable(ingest_server, tmp_path) -> config.Settings:
    """Settings whose CA bundle passed the check, then vanished: no reporter starts."""
    bundle = tmp_path / "removed-after-the-check.pem"
    bundle.write_text("not a certificate\n")
    settings = settings_for(ingest_server.url, ca_bundle=str(bundle))
    bundle.unlink()
    return settings


def test_a_report_that_cannot_be_prepared_waits_in_the_outbox(unpreparable, state_dir):
    sending = Delivery(unpreparable, state_dir, dry_run=False)

    sending.start()
    try:
        sending.finish(FIELDS)
    finally:
        waiting = [entry.run_id for entry in outbox_of(state_dir).pending()]

    assert waiting == [sending.run_id]


def test_a_start_report_that_cannot_be_sent_is_not_put_in_the_local_store(
    unpreparable, state_dir
):
    sending = Delivery(unpreparable, state_dir, dry_run=False)

    sending.start(running={**FIELDS, "status": "running"})
    sending.finish(FIELDS)

    assert not (state_dir / delivery.STORE_FILE).exists()
    assert [entry.run_id for entry in outbox_of(state_dir).pending()] == [
        sending.run_id
    ]


def test_start_imports_what_the_caller_names_while_the_job_runs(
    ingest_server, state_dir, tmp_path, monkeypatch
):
    (tmp_path / "end_of_run_helper.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "end_of_run_helper", raising=False)
    sending = Delivery(
        settings_for(ingest_server.url),
        state_dir,
        dry_run=False,
        preload=("end_of_run_helper", "no_such_module_for_cronlog"),
    )

    sending.start()
    sending.finish(FIELDS)

    assert "end_of_run_helper" in sys.modules
    [request] = ingest_server.received  # a module that is not there changes nothing
    assert request.json == FIELDS
