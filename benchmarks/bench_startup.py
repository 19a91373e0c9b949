"""How long `cronlog run` takes to start the job: its exec to the command's exec.

The job is `date +%s%N`, which prints the wall clock as it starts; the bench reads
time.time_ns() just before it spawns cronlog, so the difference is the time to the
command's start, `date`'s own exec included. The same job spawned bare gives that
floor, a Python that prints the clock as its first line gives the interpreter's own
start-up, and the guide's bash wrapper gives the yardstick. cronlog runs with the
dashboard's URL and key in the environment, in a 0600 config file named by
CRONLOG_CONFIG (the recommended setup, read by toml_subset), and with neither (the
local store). Target: at most 60 ms.

    .venv/bin/python benchmarks/bench_startup.py [--rounds 25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import (
    Receiver,
    config_file_env,
    cronlog_run,
    guide_run,
    interleave,
    isolated_env,
    machine_note,
    measure,
    median,
    require,
    row,
    verdict,
)

TARGET_MS = 60.0
JOB = ("date", "+%s%N")
BUDGET_S = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    options = parser.parse_args()
    require("date", "curl", "bash")

    with tempfile.TemporaryDirectory() as scratch, Receiver() as receiver:
        base = Path(scratch)
        with_dashboard = isolated_env(base / "dashboard", receiver.url)
        local_only = isolated_env(base / "local", None)
        file_env = config_file_env(base / "file", receiver.url)
        clock_line = "import time; print(time.time_ns())"
        walls: dict[str, list[float]] = {}

        def started(
            name: str, argv: list[str], env: dict[str, str]
        ) -> Callable[[], float]:
            walls[name] = []
            output = base / f"{len(walls)}.out"

            def once() -> float:
                with output.open("wb") as sink:
                    spawned = time.time_ns()
                    sample = measure(argv, env, stdout=sink.fileno())
                walls[name].append(sample.wall)
                stamp = next(
                    line for line in output.read_text().split() if line.isdigit()
                )
                return (int(stamp) - spawned) / 1e9

            return once

        variants = {
            "bare date": started("bare date", list(JOB), local_only),
            "python -c (interpreter)": started(
                "python -c (interpreter)",
                [sys.executable, "-c", clock_line],
                local_only,
            ),
            "cronlog run, dashboard": started(
                "cronlog run, dashboard", cronlog_run(*JOB), with_dashboard
            ),
            "cronlog run, config file": started(
                "cronlog run, config file", cronlog_run(*JOB), file_env
            ),
            "cronlog run, local store": started(
                "cronlog run, local store", cronlog_run(*JOB), local_only
            ),
            "guide wrapper": started("guide wrapper", guide_run(*JOB), with_dashboard),
        }
        with machine_note("bench_startup: exec of the wrapper to exec of the command"):
            results = interleave(variants, rounds=options.rounds, budget=BUDGET_S)
        received = len(receiver.take())

    print("time to the command's start (median [min .. max])")
    for name, values in results.items():
        print(row(name, values, "ms", 1000))
    print("wall time of the whole run, `date` being the job")
    for name, values in walls.items():
        print(row(name, values[-len(results[name]) :], "ms", 1000))

    bare = median(results["bare date"])
    cronlog = median(results["cronlog run, dashboard"])
    from_file = median(results["cronlog run, config file"])
    guide = median(results["guide wrapper"])
    interpreter = median(results["python -c (interpreter)"])
    print("ratios and differences (medians)")
    print(f"  cronlog start - bare start       {(cronlog - bare) * 1000:9.1f} ms")
    print(
        f"  cronlog start - interpreter      {(cronlog - interpreter) * 1000:9.1f} ms"
    )
    print(f"  cronlog start / guide start      {cronlog / guide:9.2f} x")
    print(f"  config file - environment        {(from_file - cronlog) * 1000:9.1f} ms")
    print(f"  reports received                 {received:9d}")
    print(
        f"target: command started within {TARGET_MS:.0f} ms of `cronlog run`: "
        f"{cronlog * 1000:.1f} ms, {verdict(cronlog * 1000 <= TARGET_MS)}; "
        f"with the config file {from_file * 1000:.1f} ms, "
        f"{verdict(from_file * 1000 <= TARGET_MS)}"
    )


if __name__ == "__main__":
    main()
