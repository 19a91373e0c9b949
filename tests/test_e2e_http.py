"""HTTP jobs end to end: a real server on 127.0.0.1, the real curl, and --request.

Each case runs the same answers through curl (curl.prepare, a real child process and
curl.judge_http, also through cronlog.runner) and through http_job.perform, checking
the verdict, the exit status, the reason and that stdout carries exactly the body.
"""

from __future__ import annotations

import faulthandler
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from cronlog import curl
from cronlog.http_job import HttpRequest, perform
from cronlog.status_codes import DEFAULT_OK_STATUSES

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
TEST_SECONDS = 30  # no test may hang the suite
CHILD_SECONDS = 15
SLOW_SECONDS = 5.0  # how long /slow keeps its answer; the clients give up after 1s
ERROR_BODY = b'{"error":"price grid locked"}\n'
ANSWERS = {
    "/200": (200, b"synced 42 prices\n", {}),
    "/201": (201, b'{"id":7}', {}),
    "/204": (204, b"", {}),
    "/301": (301, b"moved\n", {"Location": "/200"}),
    "/404": (404, b"no such task\n", {}),
    "/500": (500, ERROR_BODY, {}),
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, 100-continue, as real servers do
    release: threading.Event

    def do_GET(self):
        self._answer()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self._answer()

    def _answer(self):
        if self.path == "/slow":
            self.release.wait(SLOW_SECONDS)
        status, body, headers = ANSWERS.get(self.path, (200, b"late\n", {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def date_time_string(self, timestamp=None):
        return "Thu, 01 Jan 2026 00:00:00 GMT"  # so two runs print the same bytes

    def log_message(self, format, *args):
        pass


def serve(context=None):
    release = threading.Event()
    handler = type("BoundHandler", (Handler,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, release, thread


def stop(server, release, thread):
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def _bounded():
    faulthandler.dump_traceback_later(TEST_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _no_curlrc(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    for name in ("CURL_HOME", "XDG_CONFIG_HOME", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture(scope="module")
def base():
    server, release, thread = serve()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop(server, release, thread)


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_curl(args, workdir):
    """The whole curl path: prepare, run with fd 1 and 2 inherited, judge."""
    probe = curl.prepare([CURL, *args], workdir, os.environ)
    completed = subprocess.run(probe.argv, timeout=CHILD_SECONDS, check=False)
    status = curl.read_status(probe)
    return (
        probe,
        status,
        curl.judge_http(
            completed.returncode, status, DEFAULT_OK_STATUSES, probe.unprobed_reason
        ),
    )


CASES = [
    # path, extra curl args, (http status, verdict, reason, exit status), stdout
    ("/200", [], (200, "success", None, 0), b"synced 42 prices\n"),
    ("/201", [], (201, "success", None, 0), b'{"id":7}'),
    ("/204", [], (204, "success", None, 0), b""),
    ("/301", [], (301, "failed", "HTTP 301", 22), b"moved\n"),
    ("/404", [], (404, "failed", "HTTP 404", 22), b"no such task\n"),
    ("/500", [], (500, "failed", "HTTP 500", 22), ERROR_BODY),
]


@needs_curl
@pytest.mark.parametrize(("path", "args", "expected", "stdout"), CASES)
def test_curl_is_judged_by_its_http_status(
    base, tmp_path, capfd, path, args, expected, stdout
):
    probe, status, (verdict, reason, exit_status) = run_curl(
        ["-sS", "-X", "POST", *args, base + path], tmp_path
    )

    assert (status, verdict, reason, exit_status) == expected
    assert capfd.readouterr() == (stdout.decode(), "")
    assert not Path(probe.header_file).exists()


@pytest.mark.parametrize(("path", "args", "expected", "stdout"), CASES)
def test_request_is_judged_by_its_http_status(
    base, capfd, path, args, expected, stdout
):
    outcome = perform(HttpRequest("POST", base + path, timeout=5), os.environ)

    status, _, reason, exit_status = expected
    assert (outcome.http_status, outcome.reason, outcome.exit_status) == (
        status,
        reason,
        exit_status,
    )
    assert capfd.readouterr() == (stdout.decode(), "")
    assert outcome.body_tail == stdout
    assert outcome.body_bytes == len(stdout)


@needs_curl
def test_curl_with_location_is_judged_by_the_final_response(base, tmp_path, capfd):
    _, status, verdict = run_curl(["-sSL", base + "/301"], tmp_path)

    assert (status, verdict) == (200, ("success", None, 0))
    assert capfd.readouterr().out == "synced 42 prices\n"


def test_request_with_location_prints_only_the_final_body(base, capfd):
    outcome = perform(
        HttpRequest("GET", base + "/301", follow_redirects=True), os.environ
    )

    assert (outcome.http_status, outcome.exit_status) == (200, 0)
    assert capfd.readouterr().out == "synced 42 prices\n"


@needs_curl
def test_curl_slower_than_its_max_time_exits_28(base, tmp_path, capfd):
    _, status, verdict = run_curl(["-sS", "--max-time", "1", base + "/slow"], tmp_path)

    assert (status, verdict) == (None, ("failed", "curl exit 28: timed out", 28))
    assert capfd.readouterr().out == ""


def test_request_slower_than_its_timeout_exits_28(base, capfd):
    outcome = perform(HttpRequest("GET", base + "/slow", timeout=1), os.environ)

    assert (outcome.http_status, outcome.exit_status) == (None, 28)
    assert outcome.reason == f"timed out: no complete answer within 1s ({base})"
    assert 900 <= outcome.duration_ms < 1000 * SLOW_SECONDS
    assert capfd.readouterr().out == ""


@needs_curl
def test_curl_to_a_closed_port_exits_7(tmp_path, capfd, closed_port):
    _, status, verdict = run_curl(["-sS", f"http://127.0.0.1:{closed_port}/"], tmp_path)

    assert (status, verdict) == (
        None,
        ("failed", "curl exit 7: could not connect to host", 7),
    )
    assert capfd.readouterr().out == ""


def test_request_to_a_closed_port_exits_7(capfd, closed_port):
    outcome = perform(HttpRequest("GET", f"http://127.0.0.1:{closed_port}/"), {})

    assert outcome.exit_status == 7
    assert outcome.reason == (
        "could not connect to host: connection refused "
        f"(http://127.0.0.1:{closed_port})"
    )
    assert capfd.readouterr().out == ""


@needs_curl
@pytest.mark.parametrize(
    "args",
    [
        ["-sS"],
        ["-sSL"],
        ["-s", "-v"],
        ["-sSi"],
        ["-sS", "-w", "\n%{http_code} %{size_download}\n"],
        ["-sS", "-f"],
        ["-sS", "--fail-with-body"],
    ],
)
@pytest.mark.parametrize("path", ["/200", "/301", "/500"])
def test_the_probe_changes_nothing_curl_prints(base, tmp_path, args, path):
    argv = [CURL, *args, base + path]
    plain = subprocess.run(argv, capture_output=True, timeout=CHILD_SECONDS)
    probe = curl.prepare(argv, tmp_path, os.environ)

    probed = subprocess.run(probe.argv, capture_output=True, timeout=CHILD_SECONDS)

    assert probe.header_file is not None
    assert (probed.returncode, probed.stdout, probed.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    followed = path == "/301" and "L" in args[0]
    assert curl.read_status(probe) == (200 if followed else int(path[1:]))


@needs_curl
def test_the_users_write_out_stays_theirs(base, tmp_path, capfd):
    _, status, verdict = run_curl(
        ["-sS", "-w", "code=%{http_code}", base + "/500"], tmp_path
    )

    assert (status, verdict[1]) == (500, "HTTP 500")
    assert capfd.readouterr().out == ERROR_BODY.decode() + "code=500"


@needs_curl
def test_output_to_a_file_still_gives_the_status(base, tmp_path, capfd):
    target = tmp_path / "body.json"

    _, status, verdict = run_curl(["-sS", "-o", str(target), base + "/500"], tmp_path)

    assert (status, verdict[2]) == (500, 22)
    assert target.read_bytes() == ERROR_BODY
    assert capfd.readouterr().out == ""


@needs_curl
def test_fail_keeps_curls_own_exit_and_still_gives_the_status(base, tmp_path):
    _, status, verdict = run_curl(["-sSf", base + "/500"], tmp_path)

    assert (status, verdict) == (
        500,
        ("failed", "curl exit 22: HTTP error (with -f)", 22),
    )


@needs_curl
def test_several_urls_are_judged_by_the_last(base, tmp_path, capfd):
    _, status, verdict = run_curl(["-sS", base + "/200", base + "/500"], tmp_path)

    assert (status, verdict[1]) == (500, "HTTP 500")
    assert capfd.readouterr().out == "synced 42 prices\n" + ERROR_BODY.decode()


@needs_curl
def test_100_continue_is_not_taken_for_the_answer(base, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 100_000)

    base += "/201"
    _, status, verdict = run_curl(
        ["-sS", "-H", "Expect: 100-continue", "--data-binary", f"@{upload}", base],
        tmp_path,
    )

    assert (status, verdict[0]) == (201, "success")


@needs_curl
@pytest.mark.parametrize("flags", [["-sSD"], ["-sS", "-D"], ["-sS", "--dump-header"]])
def test_a_users_own_dump_header_is_read_and_left_in_place(
    base, tmp_path, capfd, flags
):
    theirs = tmp_path / "theirs.txt"

    probe, status, verdict = run_curl([*flags, str(theirs), base + "/500"], tmp_path)

    assert probe.header_file == str(theirs)
    assert (status, verdict) == (500, ("failed", "HTTP 500", 22))
    assert theirs.read_bytes().startswith(b"HTTP/1.1 500")
    assert capfd.readouterr().out == ERROR_BODY.decode()


@needs_curl
def test_curl_through_the_runner_passes_the_body_and_gives_the_status(
    base, tmp_path, capfd
):
    runner = pytest.importorskip("cronlog.runner")
    probe = curl.prepare([CURL, "-sS", base + "/500"], tmp_path, os.environ)

    outcome = runner.run(
        runner.Command(argv=probe.argv, env=dict(os.environ), timeout=10)
    )

    status = curl.read_status(probe)
    verdict = curl.judge_http(outcome.returncode, status, DEFAULT_OK_STATUSES, None)
    assert verdict == ("failed", "HTTP 500", 22)
    assert outcome.output_tail == ERROR_BODY
    assert capfd.readouterr().out == ERROR_BODY.decode()


@pytest.fixture(scope="module")
def tls_base(tmp_path_factory):
    """An HTTPS server whose certificate no store trusts, and that certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=CHILD_SECONDS,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, release, thread = serve(context)
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    stop(server, release, thread)


def test_request_to_an_untrusted_certificate_exits_60(tls_base):
    url, _ = tls_base

    outcome = perform(HttpRequest("GET", url + "/200"), {})

    assert outcome.exit_status == 60
    assert outcome.reason.startswith("TLS certificate not trusted: ")


def test_request_trusts_the_bundle_in_ssl_cert_file(tls_base, capfd):
    url, cert = tls_base

    outcome = perform(HttpRequest("GET", url + "/200"), {"SSL_CERT_FILE": str(cert)})

    assert (outcome.http_status, outcome.exit_status) == (200, 0)
    assert capfd.readouterr().out == "synced 42 prices\n"


def test_request_speaking_tls_to_plain_http_exits_35(base):
    outcome = perform(HttpRequest("GET", base.replace("http:", "https:")), {})

    assert outcome.exit_status == 35
    assert outcome.reason.startswith("TLS handshake failed: ")


@needs_curl
def test_curl_to_an_untrusted_certificate_exits_60(tls_base, tmp_path):
    url, _ = tls_base

    _, _, verdict = run_curl(["-sS", url + "/200"], tmp_path)

    assert verdict == ("failed", "curl exit 60: TLS certificate not trusted", 60)


@needs_curl
def test_curl_speaking_tls_to_plain_http_exits_35(base, tmp_path):
    _, _, verdict = run_curl(["-sS", base.replace("http:", "https:")], tmp_path)

    assert verdict == ("failed", "curl exit 35: TLS handshake failed", 35)


def test_the_header_file_lives_where_it_was_told(tmp_path):
    probe = curl.prepare(["curl", "http://127.0.0.1/"], tmp_path, os.environ)

    assert Path(probe.header_file).parent == Path(tmp_path)
    curl.read_status(probe)
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]


# Through the installed `cronlog`: the report the dashboard receives, the exit status
# and stdout, for curl and for --request alike.

BINARY_CASES = [
    # path, exit status, status reported, notes, body on stdout
    ("/200", 0, "success", None, b"synced 42 prices\n"),
    ("/201", 0, "success", None, b'{"id":7}'),
    ("/204", 0, "success", None, b""),
    ("/301", 22, "failed", "HTTP 301: moved", b"moved\n"),
    ("/404", 22, "failed", "HTTP 404: no such task", b"no such task\n"),
    ("/500", 22, "failed", 'HTTP 500: {"error":"price grid locked"}', ERROR_BODY),
]


@pytest.fixture
def dashboard(ingest_server, monkeypatch):
    monkeypatch.setenv("CRONLOG_URL", ingest_server.url)
    monkeypatch.setenv("CRONLOG_API_KEY", "dashboard-key-0123456789")
    return ingest_server


@needs_curl
@pytest.mark.parametrize(
    ("path", "exit_status", "status", "notes", "body"), BINARY_CASES
)
def test_a_curl_job_is_judged_by_its_http_status(
    dashboard, run_cronlog, base, path, exit_status, status, notes, body
):
    result = run_cronlog(
        "run",
        "--task-id",
        "tradein-auto-submit",
        "--",
        "curl",
        "-sS",
        "-X",
        "POST",
        base + path,
    )

    assert (result.returncode, result.stdout) == (exit_status, body)
    assert result.stderr == b""
    [report] = dashboard.bodies
    assert report["status"] == status
    assert report.get("notes") == notes


@pytest.mark.parametrize(
    ("path", "exit_status", "status", "notes", "body"), BINARY_CASES
)
def test_a_request_job_is_judged_by_its_http_status(
    dashboard, run_cronlog, base, path, exit_status, status, notes, body
):
    result = run_cronlog(
        "run", "--task-id", "tradein-auto-submit", "--request", "POST", base + path
    )

    assert (result.returncode, result.stdout) == (exit_status, body)
    [report] = dashboard.bodies
    assert report["status"] == status
    assert report.get("notes") == notes


@needs_curl
def test_a_slow_answer_is_a_curl_timeout(dashboard, run_cronlog, base):
    result = run_cronlog(
        "run",
        "--task-id",
        "tradein-auto-submit",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "1",
        base + "/slow",
    )

    assert result.returncode == 28
    assert result.stdout == b""
    assert dashboard.bodies[0]["notes"].startswith("curl exit 28: timed out")


@pytest.mark.parametrize("limit", ["--request-timeout", "--timeout"])
def test_a_slow_answer_is_a_request_timeout(dashboard, run_cronlog, base, limit):
    result = run_cronlog(
        "run", "--task-id", "tradein-auto-submit", limit, "1s",
        "--request", "GET", base + "/slow",
    )  # fmt: skip

    assert result.returncode == 28
    assert result.stdout == b""
    assert dashboard.bodies[0]["status"] == "failed"
    assert dashboard.bodies[0]["notes"] == (
        f"timed out: no complete answer within 1s ({base})"
    )


@needs_curl
def test_a_closed_port_is_curl_exit_7(dashboard, run_cronlog, closed_port):
    url = f"http://127.0.0.1:{closed_port}/"

    result = run_cronlog(
        "run", "--task-id", "tradein-auto-submit", "--", "curl", "-sS", url
    )

    assert result.returncode == 7
    assert result.stdout == b""
    assert dashboard.bodies[0]["notes"].startswith("curl exit 7: could not connect")


def test_a_closed_port_is_request_exit_7(dashboard, run_cronlog, closed_port):
    url = f"http://127.0.0.1:{closed_port}/"

    result = run_cronlog(
        "run", "--task-id", "tradein-auto-submit", "--request", "GET", url
    )

    assert result.returncode == 7
    assert result.stdout == b""
    assert (
        result.stderr
        == (
            "cronlog: request failed: could not connect to host: connection refused "
            f"(http://127.0.0.1:{closed_port})\n"
        ).encode()
    )
    assert dashboard.bodies[0]["notes"] == (
        f"could not connect to host: connection refused (http://127.0.0.1:{closed_port})"
    )


def test_a_request_header_reads_the_environment_and_is_redacted(
    dashboard, run_cronlog, base, monkeypatch
):
    monkeypatch.setenv("JOB_KEY", "job-secret-value-42")

    result = run_cronlog(
        "run",
        "--task-id",
        "tradein-auto-submit",
        "--request",
        "GET",
        base + "/404",
        "-H",
        "X-API-Key: ${JOB_KEY}",
    )

    assert result.returncode == 22
    assert "job-secret-value-42" not in dashboard.received[0].body.decode()


def test_an_unset_header_variable_is_refused_before_anything_is_sent(
    dashboard, run_cronlog, base
):
    result = run_cronlog(
        "run",
        "--task-id",
        "tradein-auto-submit",
        "--request",
        "GET",
        base + "/200",
        "-H",
        "X-API-Key: ${NOT_SET_ANYWHERE}",
    )

    assert result.returncode == 2
    assert "NOT_SET_ANYWHERE" in result.stderr.decode()
    assert dashboard.received == []


@needs_curl
def test_ok_status_and_the_users_own_write_out_are_respected(
    dashboard, run_cronlog, base
):
    accepted = run_cronlog(
        "run",
        "--task-id",
        "tradein-auto-submit",
        "--ok-status",
        "404",
        "--",
        "curl",
        "-sS",
        base + "/404",
    )
    own_format = run_cronlog(
        "run",
        "--task-id",
        "tradein-auto-submit",
        "--",
        "curl",
        "-sS",
        "-w",
        "%{http_code}",
        base + "/500",
    )

    assert accepted.returncode == 0
    assert own_format.stdout == ERROR_BODY + b"500"
    assert own_format.returncode == 22
    assert [b["status"] for b in dashboard.bodies] == ["success", "failed"]


@pytest.mark.parametrize(
    "request_args",
    [["GET", "ftp://dashboard.example.invalid/"], ["POST", "http://127.0.0.1:9/",
     "--data", "a", "--json", "{}"]],
)  # fmt: skip
def test_a_refused_request_line_reports_nothing_even_with_report_start(
    dashboard, run_cronlog, request_args
):
    method, url, *more = request_args
    result = run_cronlog(
        "run", "--task-id", "graphiti-sync", "--report-start",
        "--request", method, url, *more,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert dashboard.received == []
