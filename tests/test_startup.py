"""The start-up promise of `cronlog run`: the job starts before click, httpx, pydantic
or rich is imported, and the reporter's imports then happen while the job runs.

This checks the order of events, not their timing. A `sitecustomize.py` put on the
PYTHONPATH of the installed `cronlog` records, in one append-only trace file, the top
level name of every module cronlog imports. The job, a shell (so no Python reads that
sitecustomize a second time), appends its own marker line to the same file when it
starts. A heavy import recorded before that marker happened before the job started.

A heavy import made after the spawn could still reach the file before the shell has
written its marker, so the recorder holds it back until the marker is there (at most
HOLD_SECONDS): an import made before the spawn waits in vain, the job starts only
after it, and the trace shows the import first.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

HEAVY = ("click", "httpx", "pydantic", "rich")
MARKER = "job-started"
JOB = ["sh", "-c", f'echo {MARKER} >> "$CRONLOG_IMPORT_TRACE"']
HOLD_SECONDS = 3.0

SITECUSTOMIZE = textwrap.dedent(
    f"""
    import os
    import sys
    import time

    TRACE = os.environ["CRONLOG_IMPORT_TRACE"]
    HEAVY = {HEAVY!r}
    MARKER = {MARKER!r}
    HOLD_SECONDS = float(os.environ["CRONLOG_IMPORT_HOLD"])
    _fd = os.open(TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _seen = set()


    def _job_started():
        with open(TRACE) as trace:
            return any(line.strip() == MARKER for line in trace)


    class _Recorder:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top not in _seen:
                _seen.add(top)
                if top in HEAVY:
                    give_up = time.monotonic() + HOLD_SECONDS
                    while not _job_started() and time.monotonic() < give_up:
                        time.sleep(0.005)
                os.write(_fd, f"import {{top}}\\n".encode())
            return None


    sys.meta_path.insert(0, _Recorder())
    """
)


@pytest.fixture
def traced_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment that makes the installed cronlog record its imports."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    trace = tmp_path / "imports.trace"
    env = {
        **os.environ,
        "PYTHONPATH": str(hooks),
        "CRONLOG_IMPORT_TRACE": str(trace),
        "CRONLOG_IMPORT_HOLD": str(HOLD_SECONDS),
    }
    return env, trace


def _trace(path: Path) -> tuple[list[str], list[str]]:
    """The modules imported before the job's marker, and those imported after it."""
    lines = path.read_text().splitlines()
    assert lines.count(MARKER) == 1, lines
    split = lines.index(MARKER)
    before = [line.removeprefix("import ") for line in lines[:split]]
    after = [line.removeprefix("import ") for line in lines[split + 1 :]]
    return before, after


def test_the_recorder_sees_a_heavy_import_made_before_the_job(traced_env, run_cronlog):
    env, trace = traced_env

    # `--help` goes to click, imported with no job to wait for (so not held long).
    env["CRONLOG_IMPORT_HOLD"] = "0.2"
    result = run_cronlog("run", "--help", env=env)
    with trace.open("a") as file:
        file.write(f"{MARKER}\n")

    before, _ = _trace(trace)
    assert result.returncode == 0, result.stderr
    assert "click" in before
    assert "cronlog" in before


def test_it_starts_the_job_before_importing_click_httpx_pydantic_or_rich(
    traced_env, run_cronlog, ingest_server
):
    env, trace = traced_env
    env["CRONLOG_URL"] = ingest_server.url

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", *JOB, env=env)

    before, _ = _trace(trace)
    assert result.returncode == 0, result.stderr
    assert "cronlog" in before
    assert [name for name in before if name in HEAVY] == []


def test_it_imports_httpx_after_the_job_started_and_never_pydantic_click_or_rich(
    traced_env, run_cronlog, ingest_server
):
    env, trace = traced_env
    env["CRONLOG_URL"] = ingest_server.url

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", *JOB, env=env)

    _, after = _trace(trace)
    assert result.returncode == 0, result.stderr
    assert "httpx" in after
    assert [name for name in after if name in ("pydantic", "click", "rich")] == []
    assert [body["task_id"] for body in ingest_server.bodies] == ["sync-price-grid"]


def test_without_a_dashboard_it_still_imports_nothing_heavy_before_the_job(
    traced_env, run_cronlog
):
    env, trace = traced_env

    result = run_cronlog("run", "--task-id", "sync-price-grid", "--", *JOB, env=env)

    before, after = _trace(trace)
    assert result.returncode == 0, result.stderr
    assert [name for name in before if name in HEAVY] == []
    assert "httpx" not in after
