"""What the cost benchmarks of `cronlog run` share: a loopback receiver answering as the
dashboard does, an isolated environment, one measured child process, interleaved rounds
and the printed summary.

Every benchmark runs its variants in interleaved rounds (A B C, B C A, C A B, ...), so
a burst of load from elsewhere on the machine hits all of them alike, and prints the
median with the spread (min and max) beside the machine's load average.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CRONLOG = str(Path(sys.executable).parent / "cronlog")
GUIDE_WRAPPER = str(ROOT / "benchmarks" / "guide_wrapper.sh")
API_KEY = "bench-key"
TASK_ID = "sync-price-grid"
PROCESS_TIMEOUT = 60.0


@dataclass(frozen=True)
class Sample:
    """One finished child: wall seconds, CPU seconds (user + sys), peak RSS in KiB.

    CPU and RSS come from wait4 and so cover the child and every descendant it reaped
    (the job included); ru_maxrss is the largest of them, not their sum.
    """

    wall: float
    cpu: float
    max_rss_kib: int
    exit_status: int


class Receiver:
    """The ingest endpoint on 127.0.0.1: keeps each body, answers as the guide says.

    With `tls_dir`, it speaks https with a self-signed certificate made there
    (`self.certificate`), as a dashboard behind TLS does.
    """

    def __init__(self, tls_dir: Path | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        scheme = "http"
        if tls_dir is not None:
            self.certificate, key = _self_signed_certificate(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certificate, key)
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True
            )
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[dict[str, Any]]:
        """The bodies received since the last call."""
        with self._lock:
            taken, self.bodies = self.bodies, []
        return taken

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the dashboard's host does
            # Headers and body leave in one write, without Nagle: otherwise each answer
            # on a kept-alive connection waits out the client's 40 ms delayed ACK.
            wbufsize = -1
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.bodies.append(body)
                answer = json.dumps(
                    {
                        "success": True,
                        "message": "Task execution logged successfully",
                        "data": {"id": "550e8400-e29b-41d4-a716-446655440000", **body},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def isolated_env(scratch: Path, url: str | None) -> dict[str, str]:
    """This machine's environment without cronlog settings; state kept in `scratch`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CRONLOG_")
        and name not in ("CHATKIT_API_KEY", "PYTHONDONTWRITEBYTECODE")
    }
    env |= {
        # Bytecode compiled once (the warm-up round), as an installed cronlog has it,
        # even where the checkout's own __pycache__ is stale or may not be written.
        "PYTHONPYCACHEPREFIX": str(scratch / "pycache"),
        "XDG_CONFIG_HOME": str(scratch / "config"),
        "XDG_STATE_HOME": str(scratch / "state"),
        "HOME": str(scratch / "home"),
        "CRONLOG_API_KEY": API_KEY,
        "API_KEY": API_KEY,
    }
    if url is not None:
        env["CRONLOG_URL"] = url
        env["DASHBOARD_URL"] = url
    return env


def trusting_env(env: Mapping[str, str], receiver: Receiver) -> dict[str, str]:
    """`env` for an https receiver, its certificate installed as IT installs a
    company CA. cronlog, with no SSL_CERT_FILE, takes the system store: OpenSSL's
    default CA file, and SSL_CERT_DIR holding the certificate under its hashed name.
    curl takes the system bundle with the certificate appended (CURL_CA_BUNDLE), so
    both load the whole store, as on a real host."""
    store = receiver.certificate.parent / "store"
    store.mkdir(exist_ok=True)
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(receiver.certificate)],
        check=True,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    ).stdout.strip()
    shutil.copy(receiver.certificate, store / f"{subject_hash}.0")

    system_bundle = Path(ssl.get_default_verify_paths().openssl_cafile)
    bundle = store.parent / "bundle.pem"
    system_certificates = system_bundle.read_bytes() if system_bundle.is_file() else b""
    bundle.write_bytes(system_certificates + receiver.certificate.read_bytes())

    trusting = {name: value for name, value in env.items() if name != "SSL_CERT_FILE"}
    return trusting | {"SSL_CERT_DIR": str(store), "CURL_CA_BUNDLE": str(bundle)}


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
    )  # fmt: skip
    return certificate, key


def config_file_env(scratch: Path, url: str) -> dict[str, str]:
    """As `isolated_env`, but the URL and key in a 0600 TOML file named by
    CRONLOG_CONFIG, the setup the README recommends (read without tomllib)."""
    env = isolated_env(scratch, None)
    del env["CRONLOG_API_KEY"], env["API_KEY"]
    scratch.mkdir(parents=True, exist_ok=True)
    config = scratch / "config.toml"
    descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f'url = "{url}"\napi_key = "{API_KEY}"\n')
    env["CRONLOG_CONFIG"] = str(config)
    return env


def cronlog_run(*command: str) -> list[str]:
    return [CRONLOG, "run", "--task-id", TASK_ID, "--", *command]


def guide_run(*command: str) -> list[str]:
    return [GUIDE_WRAPPER, *command]


def measure(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdout: int | None = subprocess.DEVNULL,
    timeout: float = PROCESS_TIMEOUT,
) -> Sample:
    """Run `argv` to its end; killed (and reported as such) after `timeout`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=dict(env), stdout=stdout, stdin=subprocess.DEVNULL
    )
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Sample(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_kib=usage.ru_maxrss,
        exit_status=process.returncode,
    )


def interleave(
    variants: Mapping[str, Callable[[], float]],
    *,
    rounds: int,
    budget: float,
    warm_up: int = 1,
) -> dict[str, list[float]]:
    """Run each variant once per round, rotating the order; stop early at `budget` s.

    The first `warm_up` rounds fill the page cache and are not kept.
    """
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    stop_at = time.monotonic() + budget
    for number in range(warm_up + rounds):
        if time.monotonic() > stop_at:
            print(f"(stopped after {number - warm_up} rounds: time budget)", flush=True)
            break
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            value = variants[name]()
            if number >= warm_up:
                results[name].append(value)
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def row(name: str, values: Sequence[float], unit: str, scale: float = 1.0) -> str:
    """`name  median  [min .. max]  n=`, the values multiplied by `scale`."""
    scaled = [value * scale for value in values]
    return (
        f"  {name:<34} {median(scaled):9.1f} {unit}"
        f"   [{min(scaled):.1f} .. {max(scaled):.1f}]  n={len(scaled)}"
    )


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


@contextmanager
def machine_note(title: str) -> Iterator[None]:
    """Print what ran where, and the load average before and after."""
    print(f"{title}")
    print(
        f"  {time.strftime('%Y-%m-%d %H:%M:%S %z')}, {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, cronlog at {CRONLOG}"
    )
    if _script_imports_re():
        print(
            "  note: this cronlog script imports re (written by an old pip), about"
            " 12 ms more a run; reinstall with a current pip"
        )
    print(f"  load average before: {_load()}")
    started = time.monotonic()
    yield
    print(
        f"  load average after:  {_load()}  ({time.monotonic() - started:.0f} s)",
        flush=True,
    )


def _script_imports_re() -> bool:
    """Whether the console script pip wrote imports re before cronlog's own code."""
    try:
        head = Path(CRONLOG).read_text(errors="replace")[:1000]
    except OSError:
        return False
    return "\nimport re\n" in head


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"these benchmarks need {', '.join(missing)} on PATH")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
