"""What `cronlog run` adds to a job that reports to the dashboard: wall time and CPU.

Each round runs `sleep 0.5` bare, under `cronlog run` and under the guide's bash
wrapper, both posting to a loopback receiver, then the same three with `true`, whose
cost is all start-up and reporting with nothing to overlap; then `sleep 0.5` under
both posting to an https receiver whose certificate is in the system's trust store.
Overhead is a run's wall time minus the bare command's median. CPU is user + sys of
the whole process tree (wait4). Target: cronlog's overhead around `sleep 0.5` at most
3 times the wrapper's.

    .venv/bin/python benchmarks/bench_overhead.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import (
    Receiver,
    Sample,
    cronlog_run,
    guide_run,
    interleave,
    isolated_env,
    machine_note,
    measure,
    median,
    require,
    row,
    trusting_env,
    verdict,
)

TARGET_RATIO = 3.0
BUDGET_S = 150.0
JOBS = {"sleep 0.5": ("sleep", "0.5"), "true": ("true",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    require("sleep", "true", "curl", "bash", "openssl")

    with (
        tempfile.TemporaryDirectory() as scratch,
        Receiver() as receiver,
        Receiver(tls_dir=Path(scratch) / "tls") as secure,
    ):
        plain_env = isolated_env(Path(scratch), receiver.url)
        secure_env = trusting_env(isolated_env(Path(scratch), secure.url), secure)
        samples: dict[str, list[Sample]] = {}

        def timed(
            name: str, argv: list[str], env: dict[str, str] = plain_env
        ) -> Callable[[], float]:
            samples[name] = []

            def once() -> float:
                sample = measure(argv, env)
                if sample.exit_status != 0:
                    raise SystemExit(f"{name} exited {sample.exit_status}")
                samples[name].append(sample)
                return sample.wall

            return once

        variants = {}
        for label, job in JOBS.items():
            variants[f"bare {label}"] = timed(f"bare {label}", list(job))
            variants[f"cronlog {label}"] = timed(f"cronlog {label}", cronlog_run(*job))
            variants[f"guide {label}"] = timed(f"guide {label}", guide_run(*job))
        for wrapper, argv in (("cronlog", cronlog_run), ("guide", guide_run)):
            name = f"{wrapper} sleep 0.5, https"
            variants[name] = timed(name, argv(*JOBS["sleep 0.5"]), secure_env)

        with machine_note("bench_overhead: cronlog run vs the guide's wrapper"):
            walls = interleave(variants, rounds=options.rounds, budget=BUDGET_S)
        received = len(receiver.take()) + len(secure.take())

    kept = {name: runs[-len(walls[name]) :] for name, runs in samples.items()}
    print("wall time (median [min .. max])")
    for name, values in walls.items():
        print(row(name, values, "ms", 1000))
    print("overhead: wall time minus the bare command's median")
    overheads = {}
    for label in (*JOBS, "sleep 0.5, https"):
        bare = median(walls[f"bare {label.removesuffix(', https')}"])
        for wrapper in ("cronlog", "guide"):
            name = f"{wrapper} {label}"
            overheads[name] = [wall - bare for wall in walls[name]]
            print(row(name, overheads[name], "ms", 1000))
    print("CPU time per run, user + sys of the whole tree")
    for name, runs in kept.items():
        print(row(name, [run.cpu for run in runs], "ms", 1000))
    print("ratios (medians)")
    for label in (*JOBS, "sleep 0.5, https"):
        ratio = median(overheads[f"cronlog {label}"]) / median(
            overheads[f"guide {label}"]
        )
        cpu = median([run.cpu for run in kept[f"cronlog {label}"]]) / median(
            [run.cpu for run in kept[f"guide {label}"]]
        )
        print(
            f"  cronlog / guide, {label:<16} overhead {ratio:6.2f} x   CPU {cpu:6.2f} x"
        )
    print(f"  reports received {received}")

    ratio = median(overheads["cronlog sleep 0.5"]) / median(
        overheads["guide sleep 0.5"]
    )
    print(
        f"target: overhead around sleep 0.5 at most {TARGET_RATIO:.0f}x the wrapper's: "
        f"{ratio:.2f}x, {verdict(ratio <= TARGET_RATIO)}"
    )


if __name__ == "__main__":
    main()
