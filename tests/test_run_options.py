"""The lean parser of `cronlog run` and the click command read a line the same way."""

from __future__ import annotations

import pytest

from cronlog import run_options
from cronlog.run_options import RUN_OPTIONS, RunOptions, parse


def parsed_by_click(argv: list[str]) -> RunOptions:
    from cronlog.cli import app

    captured: dict = {}
    command = app.commands["run"]
    context = command.make_context("run", argv[1:], parent=None)
    captured.update(context.params)
    command_args = captured.pop("command")
    captured["headers"] = tuple(captured["headers"])
    return RunOptions(command=command_args, **captured)


LINES = [
    ["run", "--task-id", "sync-price-grid", "--", "echo", "hi"],
    ["run", "--task-id=sync-price-grid", "echo", "-n", "hi"],
    [
        "run",
        "--task-id",
        "x",
        "--title",
        "X",
        "--timeout",
        "5m",
        "--kill-after",
        "3s",
        "--report-timeout",
        "2s",
        "--no-overlap",
        "--report-start",
        "--dry-run",
        "-v",
        "--notes",
        "n",
        "--log-url",
        "u",
        "--environment",
        "e",
        "--owner",
        "o",
        "--",
        "true",
    ],
    [
        "run",
        "--task-id",
        "x",
        "--request",
        "POST",
        "https://h/x",
        "-H",
        "A: b",
        "--header=C: ${D}",
        "--json",
        "{}",
        "--ok-status",
        "200,3xx",
        "--location",
        "--request-timeout",
        "10s",
    ],
    [
        "run",
        "--task-id",
        "x",
        "--url",
        "https://d",
        "--api-key-file",
        "/k",
        "--ca-bundle",
        "/ca",
        "--allow-http",
        "--",
        "curl",
        "-v",
        "--task-id",
        "inner",
    ],
]


@pytest.mark.parametrize("argv", LINES)
def test_both_parsers_agree(argv):
    assert parse(argv) == parsed_by_click(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--task-id", "x", "--help"],
        ["run", "--task-id", "x", "--no-such-option", "--", "true"],
        ["run", "--task-id", "x", "--timeout", "soon", "--", "true"],
        ["run", "--task-id", "x", "--timeout"],
        ["run", "--task-id", "x"],
        ["run", "--", "true"],
        ["run", "--task-id", "x", "-vv", "--", "true"],
        ["run", "--dry-run=yes", "--task-id", "x", "--", "true"],
        ["list-tasks"],
        [],
    ],
)
def test_anything_unusual_is_left_to_click(argv):
    assert parse(argv) is None


def test_every_option_feeds_a_field_of_run_options():
    fields = set(RunOptions.__slots__) - {"command"}

    assert {option.dest for option in RUN_OPTIONS} == fields


def test_the_lean_path_does_not_import_click():
    import subprocess
    import sys

    code = (
        "import sys; from cronlog import run_options; "
        "run_options.parse(['run', '--task-id', 'x', '--', 'true']); "
        "print('click' in sys.modules)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )

    assert result.stdout.strip() == "False"
    assert run_options.__name__ == "cronlog.run_options"


def test_reading_a_line_imports_nothing_costly():
    import subprocess
    import sys

    code = (
        "import sys; from cronlog import run_options; "
        "run_options.parse(['run', '--task-id', 'x', '--timeout', '5m', "
        "'--ok-status', '2xx', '--', 'true']); "
        "print(sorted({'dataclasses', 'typing', 're', 'inspect'} & set(sys.modules)))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )

    assert result.stdout.strip() == "[]"


def test_options_are_equal_when_every_field_is():
    one = RunOptions(command=("true",), task_id="x")

    assert one == RunOptions(command=("true",), task_id="x")
    assert one != RunOptions(command=("true",), task_id="x", verbose=1)
    assert "task_id='x'" in repr(one)
