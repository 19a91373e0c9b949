"""How long `cronlog flush` takes to deliver a day of missed minutely runs (1,440).

Each round fills the outbox with 1,440 reports through `cronlog.outbox.Outbox.put`
(untimed: that is what 1,440 runs against a dead dashboard leave behind), then times
`cronlog flush` to a loopback receiver. The floor beside it is the same 1,440 bodies
posted by this process over one keep-alive httpx connection, with no files at all.
Target: under 5 s.

    .venv/bin/python benchmarks/bench_flush.py [--rounds 3] [--reports 1440]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from harness import (
    API_KEY,
    CRONLOG,
    Receiver,
    isolated_env,
    machine_note,
    measure,
    median,
    row,
    verdict,
)

from cronlog.outbox import Outbox
from cronlog.reporter import Report

TARGET_S = 5.0
BUDGET_S = 150.0
INGEST = "/api/scheduled-tasks/ingest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reports", type=int, default=1440)
    options = parser.parse_args()

    results: dict[str, list[float]] = {"cronlog flush": [], "one httpx client": []}
    cpu: list[float] = []
    fills: list[float] = []
    with tempfile.TemporaryDirectory() as scratch, Receiver() as receiver:
        env = isolated_env(Path(scratch), receiver.url)
        outbox = Outbox(Path(scratch) / "state" / "cronlog" / "outbox")
        bodies = [_body(minute) for minute in range(options.reports)]
        stop_at = time.monotonic() + BUDGET_S

        measure([CRONLOG, "flush"], env)  # untimed: compiles the bytecode once

        with machine_note(f"bench_flush: {options.reports:,} waiting reports"):
            for number in range(options.rounds):
                if time.monotonic() > stop_at:
                    print(f"(stopped after {number} rounds: time budget)")
                    break

                started = time.perf_counter()
                for body in bodies:
                    outbox.put(Report(run_id=str(uuid.uuid4()), body=body))
                fills.append(time.perf_counter() - started)
                receiver.take()

                sample = measure([CRONLOG, "flush"], env, timeout=120)
                delivered = len(receiver.take())
                if sample.exit_status != 0 or delivered != options.reports:
                    raise SystemExit(
                        f"flush exited {sample.exit_status}, delivered {delivered}"
                    )
                results["cronlog flush"].append(sample.wall)
                cpu.append(sample.cpu)

                results["one httpx client"].append(_post_all(receiver.url, bodies))
                receiver.take()

    print("time to deliver them all (median [min .. max])")
    for name, values in results.items():
        print(row(name, values, "s"))
    print(row("cronlog flush, CPU user + sys", cpu, "s"))
    print(row("filling the outbox (untimed setup)", fills, "s"))
    flush = median(results["cronlog flush"])
    floor = median(results["one httpx client"])
    print("ratios (medians)")
    print(f"  cronlog flush / one httpx client   {flush / floor:6.2f} x")
    print(
        f"  per report                         {flush / options.reports * 1000:6.2f} ms"
    )
    print(f"target: under {TARGET_S:.0f} s: {flush:.2f} s, {verdict(flush < TARGET_S)}")


def _body(minute: int) -> dict[str, Any]:
    clock = f"2026-01-04T{minute // 60:02d}:{minute % 60:02d}"
    body: dict[str, Any] = {
        "task_id": "tradein-auto-submit",
        "task_title": "Trade-in auto submit",
        "status": "success",
        "started_at": f"{clock}:00.000Z",
        "ended_at": f"{clock}:01.250Z",
        "duration_ms": 1250,
    }
    if minute % 10 == 0:
        body |= {"status": "failed", "notes": "exit 1"}
    return body


def _post_all(url: str, bodies: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}) as client:
        for body in bodies:
            client.post(INGEST, json=body).raise_for_status()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
