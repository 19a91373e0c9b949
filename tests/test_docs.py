"""The documents that quote cronlog's behaviour stay true to it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_cli_reference_is_what_help_prints():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-cli-docs"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr


def test_the_readme_lists_every_exit_status_cronlog_chooses():
    from cronlog import exits

    readme = (ROOT / "README.md").read_text()
    chosen = {v for k, v in vars(exits).items() if k.isupper() and k != "SIGNAL_BASE"}
    first_column = re.findall(r"^\| ([\d, ]+) \|", readme, flags=re.MULTILINE)
    listed = {int(n) for cell in first_column for n in cell.split(",")}

    assert chosen - {exits.OK} <= listed


def test_the_readme_names_every_config_key_and_variable():
    from cronlog import config

    readme = (ROOT / "README.md").read_text()

    for key, variable in config.FILE_KEYS.items():
        if key != "tasks":
            assert f"`{key}`" in readme
        if variable:
            assert f"`{variable}`" in readme
