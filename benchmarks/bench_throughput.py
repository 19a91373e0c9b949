"""What a job's output costs under `cronlog run`: 1 GiB on stdout, memory and wall time.

The job is `head -c 1073741824 /dev/zero`; cronlog's own stdout goes to /dev/null and
it reports to a loopback receiver. Beside it: the same output piped through `cat` (the
yardstick), written straight to /dev/null (the floor), and `cronlog run -- true`, whose
peak memory is what cronlog takes with no output at all. Peak RSS is ru_maxrss from
wait4 of the measured process: the largest of it and what it reaped. Linux also counts
the spawning process's own peak, which a child inherits until its exec, so a row at the
bench's own peak (printed) says only that the child stayed below it. Targets: cronlog's
peak RSS under 32 MB, wall time at most 2x the `cat` pipe.

    .venv/bin/python benchmarks/bench_throughput.py [--rounds 5] [--bytes N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import (
    Receiver,
    Sample,
    cronlog_run,
    interleave,
    isolated_env,
    machine_note,
    measure,
    median,
    require,
    row,
    verdict,
)

GIB = 1024**3
RSS_TARGET_MB = 32.0  # decimal megabytes: 32e6 bytes
WALL_TARGET_RATIO = 2.0
BUDGET_S = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bytes", type=int, default=GIB)
    options = parser.parse_args()
    require("head", "cat", "sh")

    head = ("head", "-c", str(options.bytes), "/dev/zero")
    with tempfile.TemporaryDirectory() as scratch, Receiver() as receiver:
        with_dashboard = isolated_env(Path(scratch) / "dashboard", receiver.url)
        local_only = isolated_env(Path(scratch) / "local", None)
        samples: dict[str, list[Sample]] = {}

        def timed(
            name: str, argv: list[str], env: dict[str, str]
        ) -> Callable[[], float]:
            samples[name] = []

            def once() -> float:
                sample = measure(argv, env)
                if sample.exit_status != 0:
                    raise SystemExit(f"{name} exited {sample.exit_status}")
                samples[name].append(sample)
                return sample.wall

            return once

        pipe = f"{' '.join(head)} | cat > /dev/null"
        variants = {
            "head > /dev/null": timed("head > /dev/null", list(head), local_only),
            "head | cat": timed("head | cat", ["sh", "-c", pipe], local_only),
            "cronlog run, dashboard": timed(
                "cronlog run, dashboard", cronlog_run(*head), with_dashboard
            ),
            "cronlog run, local store": timed(
                "cronlog run, local store", cronlog_run(*head), local_only
            ),
            "cronlog run -- true, dashboard": timed(
                "cronlog run -- true, dashboard", cronlog_run("true"), with_dashboard
            ),
        }
        title = f"bench_throughput: {options.bytes:,} bytes of stdout through cronlog"
        with machine_note(title):
            walls = interleave(variants, rounds=options.rounds, budget=BUDGET_S)

    kept = {name: runs[-len(walls[name]) :] for name, runs in samples.items()}
    print("wall time (median [min .. max])")
    for name, values in walls.items():
        print(row(name, values, "ms", 1000))
    print("peak RSS")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(row("(this bench itself: the floor)", [own], "MiB", 1 / 1024))
    for name, runs in kept.items():
        print(row(name, [run.max_rss_kib for run in runs], "MiB", 1 / 1024))
    print("CPU time, user + sys of the whole tree")
    for name, runs in kept.items():
        print(row(name, [run.cpu for run in runs], "ms", 1000))

    ratio = median(walls["cronlog run, dashboard"]) / median(walls["head | cat"])
    rss_bytes = max(run.max_rss_kib for run in kept["cronlog run, dashboard"]) * 1024
    print("ratios (medians)")
    print(f"  cronlog / cat pipe, wall        {ratio:6.2f} x")
    print(
        f"target: peak RSS under {RSS_TARGET_MB:.0f} MB: worst {rss_bytes / 1e6:.1f} "
        f"MB, {verdict(rss_bytes < RSS_TARGET_MB * 1e6)}; wall at most "
        f"{WALL_TARGET_RATIO:.0f}x the cat pipe: {ratio:.2f}x, "
        f"{verdict(ratio <= WALL_TARGET_RATIO)}"
    )


if __name__ == "__main__":
    main()
