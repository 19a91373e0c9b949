"""Whether the `duration_ms` cronlog reports is the job's own time.

Each round times a bare `sleep 0.2` from the bench (spawn to exit), then runs it under
`cronlog run` and reads the `duration_ms` the loopback receiver got. The warm-up thread
imports httpx and pydantic while the job runs, so this also shows whether that work
delays the end stamp. Target: the median within 5 ms of the bare time, the worst
within 20 ms. A `sleep 0.05`, shorter than the warm-up, is shown beside it.

    .venv/bin/python benchmarks/bench_duration.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import (
    Receiver,
    cronlog_run,
    interleave,
    isolated_env,
    machine_note,
    measure,
    median,
    row,
    verdict,
)

MEDIAN_TARGET_MS = 5.0
WORST_TARGET_MS = 20.0
BUDGET_S = 120.0
SECONDS = ("0.2", "0.05")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch, Receiver() as receiver:
        env = isolated_env(Path(scratch), receiver.url)

        def bare(seconds: str) -> Callable[[], float]:
            def once() -> float:
                started = time.perf_counter()
                measure(["sleep", seconds], env)
                return time.perf_counter() - started

            return once

        def reported(seconds: str) -> Callable[[], float]:
            def once() -> float:
                receiver.take()
                sample = measure(cronlog_run("sleep", seconds), env)
                bodies = receiver.take()
                if sample.exit_status != 0 or len(bodies) != 1:
                    raise SystemExit(f"cronlog exited {sample.exit_status}: {bodies}")
                return float(bodies[0]["duration_ms"]) / 1000

            return once

        variants = {}
        for seconds in SECONDS:
            variants[f"bare sleep {seconds}"] = bare(seconds)
            variants[f"reported, sleep {seconds}"] = reported(seconds)
        with machine_note("bench_duration: duration_ms against the bare command"):
            results = interleave(variants, rounds=options.rounds, budget=BUDGET_S)

    print("duration (median [min .. max])")
    for name, values in results.items():
        print(row(name, values, "ms", 1000))
    print("reported duration_ms minus the bare median")
    errors = {}
    for seconds in SECONDS:
        floor = median(results[f"bare sleep {seconds}"])
        errors[seconds] = [
            value - floor for value in results[f"reported, sleep {seconds}"]
        ]
        print(row(f"sleep {seconds}", errors[seconds], "ms", 1000))

    middle = abs(median(errors["0.2"])) * 1000
    worst = max(abs(error) for error in errors["0.2"]) * 1000
    print(
        f"target: median within {MEDIAN_TARGET_MS:.0f} ms: {middle:.1f} ms, "
        f"{verdict(middle <= MEDIAN_TARGET_MS)}; worst within {WORST_TARGET_MS:.0f} "
        f"ms: {worst:.1f} ms, {verdict(worst <= WORST_TARGET_MS)}"
    )


if __name__ == "__main__":
    main()
