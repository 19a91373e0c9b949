"""How fast `cronlog serve` takes runs: ingests per second and latency percentiles.

Starts `serve()` in its own process on 127.0.0.1 (a free port, a fresh SQLite file or
the PostgreSQL URL given), then N client threads each post M runs with their own
keep-alive connection. Bounded: clients stop at the deadline (default 50 s).

    .venv/bin/python benchmarks/bench_serve.py --clients 50 --runs 100
    .venv/bin/python benchmarks/bench_serve.py --db postgresql://cronlog@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SRC = Path(__file__).parent.parent / "src"
KEY = "bench-key"
START_TIMEOUT_S = 20
SERVER = textwrap.dedent(
    """
    import logging, os, sys
    from cronlog.server import serve

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    serve(db=sys.argv[1], api_key=os.environ["BENCH_KEY"], port=0)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=100, help="runs each client posts")
    parser.add_argument("--db", help="SQLite path or postgresql:// URL [a temp file]")
    parser.add_argument("--deadline", type=float, default=50.0, help="seconds, at most")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        db = options.db or str(Path(scratch) / "bench.db")
        log = Path(scratch) / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen(
                [sys.executable, "-c", SERVER, db],
                env=os.environ | {"PYTHONPATH": str(SRC), "BENCH_KEY": KEY},
                stderr=sink,
            )
        try:
            url = wait_for_address(log, server)
            latencies, failures, elapsed = load(url, options)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)

    report(latencies, failures, elapsed, options, db if options.db else "sqlite (temp)")


def wait_for_address(log: Path, server: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        for line in log.read_text().splitlines():
            if "listening on " in line:
                return line.split("listening on ")[1].strip()
        time.sleep(0.05)
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def load(url: str, options: argparse.Namespace) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + options.deadline

    def client(number: int) -> None:
        nonlocal failures
        mine: list[float] = []
        errors = 0
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as http:
            for run in range(options.runs):
                if time.monotonic() > stop_at:
                    break
                body = {
                    "task_id": f"bench-{number % 5}",
                    "task_title": "Benchmark",
                    "status": "success" if run % 10 else "failed",
                    "duration_ms": run,
                    "notes": "x" * 200,
                }
                started = time.perf_counter()
                response = http.post(
                    "/api/scheduled-tasks/ingest",
                    json=body,
                    headers={"Idempotency-Key": f"bench-{number}-{run}"},
                )
                mine.append(time.perf_counter() - started)
                errors += response.status_code != 200
        with lock:
            latencies.extend(mine)
            failures += errors

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=options.clients) as pool:
        for future in [pool.submit(client, n) for n in range(options.clients)]:
            future.result(timeout=options.deadline + 60)
    return latencies, failures, time.perf_counter() - started


def report(
    latencies: list[float],
    failures: int,
    elapsed: float,
    options: argparse.Namespace,
    store: str,
) -> None:
    cuts = statistics.quantiles(latencies, n=100)
    print(f"store        {store}")
    print(f"clients      {options.clients} x {options.runs} runs")
    print(f"ingests      {len(latencies)} in {elapsed:.2f} s ({failures} not 200)")
    print(f"ingests/s    {len(latencies) / elapsed:.0f}")
    print(f"latency p50  {cuts[49] * 1000:.1f} ms")
    print(f"latency p99  {cuts[98] * 1000:.1f} ms")
    print(f"latency max  {max(latencies) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
