"""Tests for cronlog.reporter: what goes on the wire, what is retried, what is said."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import socket
import ssl
import subprocess
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import respx

from cronlog import __version__
from cronlog.errors import ReportError
from cronlog.httpclient import USER_AGENT
from cronlog.models import TaskRun
from cronlog.reporter import (
    MAX_ATTEMPTS,
    DeliveryFailed,
    Receipt,
    Report,
    Reporter,
    Target,
)

URL = "https://dash.example.test/api/scheduled-tasks/ingest"
KEY = "sk-secret-key-0123456789"
ACCEPTED = {"success": True, "message": "Task execution logged successfully"}


class FakeClock:
    """A monotonic clock that moves only when the reporter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch):
    for name in ("SSL_CERT_FILE", "CRONLOG_API_KEY", "CRONLOG_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def reporter(clock):
    with Reporter(
        Target(URL, KEY), sleep=clock.sleep, clock=clock, rng=random.Random(7)
    ) as reporter:
        yield reporter


@pytest.fixture
def report():
    run = TaskRun(
        task_id="tradein-auto-submit",
        task_title="Trade-in auto submit",
        status="failed",
        started_at=datetime(2026, 1, 4, 10, 0, tzinfo=UTC),
        duration_ms=5000,
        notes="HTTP 502: Bad gateway — upstream",
    )
    return Report.new(run)


def test_a_new_report_carries_a_uuid4_run_id_and_the_models_body(report):
    assert len(report.run_id) == 36
    assert report.run_id[14] == "4"
    assert report.body == {
        "task_id": "tradein-auto-submit",
        "task_title": "Trade-in auto submit",
        "status": "failed",
        "started_at": "2026-01-04T10:00:00.000Z",
        "duration_ms": 5000,
        "notes": "HTTP 502: Bad gateway — upstream",
    }


@respx.mock
def test_it_sends_the_body_and_headers_exactly(reporter, report):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=ACCEPTED))

    receipt = reporter.send(report)

    assert receipt == Receipt(200, ACCEPTED, 1)
    request = route.calls.last.request
    assert request.content == json.dumps(
        report.body, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert request.headers["X-API-Key"] == KEY
    assert request.headers["Idempotency-Key"] == report.run_id
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"cronlog/{__version__}" == USER_AGENT


@respx.mock
def test_it_sends_no_api_key_header_without_a_key(clock, report):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=ACCEPTED))

    with Reporter(Target(URL, None), sleep=clock.sleep, clock=clock) as reporter:
        reporter.send(report)

    assert "X-API-Key" not in route.calls.last.request.headers


@respx.mock
def test_it_retries_a_503_with_the_identical_body(reporter, report, clock):
    route = respx.post(URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=ACCEPTED)]
    )

    receipt = reporter.send(report)

    assert receipt.attempts == 2
    first, second = (call.request for call in route.calls)
    assert first.content == second.content
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert len(clock.slept) == 1
    assert 0 <= clock.slept[0] <= 0.5


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
@respx.mock
def test_it_retries_the_transient_statuses(reporter, report, status):
    respx.post(URL).mock(
        side_effect=[httpx.Response(status), httpx.Response(201, json=ACCEPTED)]
    )

    assert reporter.send(report).status_code == 201


@respx.mock
def test_it_waits_as_long_as_retry_after_says(reporter, report, clock):
    respx.post(URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200, json=ACCEPTED),
        ]
    )

    reporter.send(report)

    assert clock.slept == [pytest.approx(2.0)]


@respx.mock
def test_it_understands_retry_after_as_an_http_date(reporter, report, clock):
    respx.post(URL).mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": _http_date_in(5)}),
            httpx.Response(200, json=ACCEPTED),
        ]
    )

    reporter.send(report)

    assert clock.slept == [pytest.approx(5.0, abs=1.5)]


@respx.mock
@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_retry_after_of_no_time_backs_off_instead(
    reporter, report, clock, retry_after
):
    respx.post(URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": retry_after}),
            httpx.Response(429, headers={"Retry-After": retry_after}),
            httpx.Response(200, json=ACCEPTED),
        ]
    )

    reporter.send(report)

    assert len(clock.slept) == 2 and all(pause > 0 for pause in clock.slept)


@respx.mock
def test_it_gives_up_at_once_when_retry_after_passes_the_deadline(reporter, report):
    route = respx.post(URL).mock(
        return_value=httpx.Response(503, headers={"Retry-After": "120"})
    )

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report, deadline=30)

    assert route.call_count == 1
    assert caught.value.retriable
    assert "HTTP 503" in str(caught.value)


@respx.mock
def test_it_never_sleeps_past_the_deadline(reporter, report, clock):
    route = respx.post(URL).mock(return_value=httpx.Response(502, text="Bad Gateway"))

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report, deadline=10)

    assert route.call_count > 2
    assert sum(clock.slept) < 10
    assert caught.value.retriable
    assert f"gave up after {route.call_count} attempts" in str(caught.value)


@respx.mock
def test_a_clock_that_stands_still_still_ends_the_retries(report):
    route = respx.post(URL).mock(return_value=httpx.Response(500))
    reporter = Reporter(Target(URL, KEY), sleep=lambda seconds: None, clock=lambda: 0.0)

    with pytest.raises(DeliveryFailed):
        reporter.send(report)

    assert route.call_count == MAX_ATTEMPTS


@respx.mock
def test_it_tries_a_400_once_and_quotes_the_dashboards_error(reporter, report):
    route = respx.post(URL).mock(
        return_value=httpx.Response(400, json={"error": "Missing required fields"})
    )

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report)

    assert route.call_count == 1
    assert not caught.value.retriable
    assert caught.value.refused
    assert "Missing required fields" in str(caught.value)
    assert "HTTP 400" in str(caught.value)


@respx.mock
def test_it_cuts_a_long_error_body(reporter, report):
    respx.post(URL).mock(return_value=httpx.Response(422, text="x" * 5000))

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report)

    assert "x" * 199 + "…" in str(caught.value)
    assert "x" * 201 not in str(caught.value)


@respx.mock
def test_a_401_names_chatkit_api_key_and_not_the_key(reporter, report):
    route = respx.post(URL).mock(
        return_value=httpx.Response(401, json={"error": "Unauthorized"})
    )

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report)

    message = str(caught.value)
    assert route.call_count == 1
    assert "CHATKIT_API_KEY" in message
    assert "CRONLOG_API_KEY" in message
    assert KEY not in message
    assert not caught.value.retriable
    assert not caught.value.refused


@respx.mock
def test_a_redirect_to_plain_http_is_not_offered_as_the_fix(reporter, report):
    downgrade = "http://dash.example.test/api/scheduled-tasks/ingest"
    respx.post(URL).mock(
        return_value=httpx.Response(301, headers={"Location": downgrade})
    )

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report)

    assert str(caught.value) == (
        f"{URL} redirects (HTTP 301) to plain http, {downgrade}; cronlog follows no "
        "redirect and sends no key without TLS: ask what the dashboard's https "
        "address is"
    )


@respx.mock
def test_it_does_not_follow_a_redirect_and_names_the_location(reporter, report):
    new_url = "https://trade.example.test/api/scheduled-tasks/ingest"
    respx.post(URL).mock(
        return_value=httpx.Response(308, headers={"Location": new_url})
    )
    elsewhere = respx.post(new_url).mock(return_value=httpx.Response(200))

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report)

    assert not elsewhere.called
    assert not caught.value.retriable
    assert new_url in str(caught.value)
    assert "set the dashboard URL to https://trade.example.test" in str(caught.value)


@respx.mock
def test_a_connect_error_names_the_url_and_what_failed(reporter, report):
    respx.post(URL).mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused")
    )

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report, deadline=5)

    assert str(caught.value).startswith(f"cannot connect to {URL}: connection refused")
    assert caught.value.retriable


def test_a_dns_failure_says_the_host_was_not_found(reporter, report, monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report, deadline=1)

    assert str(caught.value).startswith(
        f"cannot connect to {URL}: host name not found (Name or service not known)"
    )
    assert caught.value.retriable


def test_an_untrusted_certificate_is_not_retried(tls_server, report):
    with (
        Reporter(Target(tls_server.url, KEY)) as reporter,
        pytest.raises(DeliveryFailed) as caught,
    ):
        reporter.send(report, deadline=5)

    assert str(caught.value).startswith(
        f"cannot connect to {tls_server.url}: TLS certificate not trusted"
    )
    assert not caught.value.retriable
    assert tls_server.requests == []


def test_https_to_a_plain_http_server_suggests_an_http_url(ingest_server, report):
    url = ingest_server.url.replace("http://", "https://")

    with (
        Reporter(Target(url, KEY)) as reporter,
        pytest.raises(DeliveryFailed) as caught,
    ):
        reporter.send(report, deadline=5)

    assert str(caught.value).startswith(
        f"cannot connect to {url}: TLS handshake failed (WRONG_VERSION_NUMBER); the "
        "server may speak plain http: if so, use an http:// URL"
    )
    assert not caught.value.retriable


def test_a_ca_bundle_makes_a_private_certificate_trusted(tls_server, report):
    target = Target(tls_server.url, KEY, ca_bundle=str(tls_server.certificate))

    with Reporter(target) as reporter:
        receipt = reporter.send(report, deadline=5)

    assert receipt.status_code == 200
    assert tls_server.requests == [report.payload()]


@respx.mock
def test_a_timeout_names_the_url(reporter, report):
    respx.post(URL).mock(side_effect=httpx.ReadTimeout("timed out"))

    with pytest.raises(DeliveryFailed) as caught:
        reporter.send(report, deadline=3)

    assert f"no answer from {URL} within" in str(caught.value)
    assert caught.value.retriable


def test_a_closed_loopback_port_is_connection_refused(report):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/scheduled-tasks/ingest"

    with (
        Reporter(Target(url, KEY), deadline=0.5) as reporter,
        pytest.raises(DeliveryFailed) as caught,
    ):
        reporter.send(report)

    assert str(caught.value).startswith(f"cannot connect to {url}: connection refused")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, json={"error": f"bad key {KEY}"}),
        httpx.Response(401, text=f"Unauthorized: {KEY}"),
        httpx.Response(403, text=f"forbidden for {KEY}"),
        httpx.Response(404, text=KEY),
        httpx.Response(422, json={"message": KEY}),
        httpx.Response(503, text=f"down, your key was {KEY}"),
        httpx.Response(302, headers={"Location": f"https://x.test/?key={KEY}"}),
    ],
    ids=lambda response: str(response.status_code),
)
@respx.mock
def test_the_key_is_never_in_a_message(reporter, report, response, caplog):
    respx.post(URL).mock(return_value=response)
    caplog.set_level("DEBUG", logger="cronlog")

    with pytest.raises(ReportError) as caught:
        reporter.send(report, deadline=1)

    assert KEY not in str(caught.value)
    assert KEY not in caplog.text


def test_a_missing_ca_bundle_is_named(report, tmp_path):
    bundle = tmp_path / "missing.pem"

    with (
        Reporter(Target(URL, KEY, ca_bundle=str(bundle))) as reporter,
        pytest.raises(DeliveryFailed) as caught,
    ):
        reporter.warm_up()

    assert str(bundle) in str(caught.value)
    assert "ca_bundle" in str(caught.value)


def test_a_ca_installed_in_the_hosts_store_is_trusted(
    tls_server, report, monkeypatch, tmp_path
):
    """As IT installs a company CA: a hashed name in OpenSSL's CA directory, which
    SSL_CERT_DIR points at here; no bundle is given to cronlog."""
    store = tmp_path / "host-store"
    store.mkdir()
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(tls_server.certificate)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    shutil.copy(tls_server.certificate, store / f"{subject_hash}.0")
    monkeypatch.setenv("SSL_CERT_DIR", str(store))

    with Reporter(Target(tls_server.url, KEY)) as reporter:
        reporter.send(report, deadline=5)

    assert tls_server.requests == [report.payload()]


def test_ssl_cert_file_is_used_when_no_bundle_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "company.pem"))

    with (
        Reporter(Target(URL, KEY)) as reporter,
        pytest.raises(DeliveryFailed) as caught,
    ):
        reporter.warm_up()

    assert "company.pem (SSL_CERT_FILE)" in str(caught.value)


def test_warm_up_builds_one_client_for_every_send(reporter):
    reporter.warm_up()
    client = reporter._client

    reporter.warm_up()

    assert client is not None
    assert reporter._client is client


class TLSServer:
    def __init__(self, directory):
        self.certificate = directory / "cert.pem"
        key = directory / "key.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", str(key), "-out", str(self.certificate), "-days", "1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        self.requests: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.requests.append(
                    self.rfile.read(int(self.headers["Content-Length"]))
                )
                answer = json.dumps(ACCEPTED).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{port}/api/scheduled-tasks/ingest"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    server = TLSServer(tmp_path)
    yield server
    server.stop()


def _http_date_in(seconds: float) -> str:
    from email.utils import format_datetime

    moment = datetime.now(UTC).timestamp() + seconds
    return format_datetime(datetime.fromtimestamp(moment, UTC), usegmt=True)


@respx.mock
def test_a_2xx_that_is_not_the_dashboards_success_is_not_delivered(report):
    login_page = httpx.Response(200, text="<html>login</html>")
    respx.post(URL).mock(return_value=login_page)

    with (
        Reporter(Target(URL, KEY)) as reporter,
        pytest.raises(DeliveryFailed) as raised,
    ):
        reporter.send(report)

    assert not raised.value.retriable
    assert "not as the dashboard does" in str(raised.value)


@respx.mock
def test_success_false_is_a_failure_worth_retrying(report):
    route = respx.post(URL).mock(
        side_effect=[httpx.Response(200, json={"success": False, "error": "db down"}),
                     httpx.Response(200, json=ACCEPTED)]
    )  # fmt: skip
    reporter = Reporter(Target(URL, KEY), sleep=lambda seconds: None)

    receipt = reporter.send(report)

    assert receipt.attempts == 2
    assert route.call_count == 2


def _sleeps_between_503s(reporter: Reporter, report: Report, clock: FakeClock):
    """The pauses of one send that the dashboard answers 503 every time."""
    clock.slept.clear()
    with pytest.raises(DeliveryFailed):
        reporter.send(report, deadline=10_000)  # only MAX_ATTEMPTS ends it
    return list(clock.slept)


@respx.mock
def test_the_backoff_grows_exponentially_up_to_its_cap_with_full_jitter(report):
    respx.post(URL).mock(return_value=httpx.Response(503))
    clock = FakeClock()
    sends = 100

    with Reporter(
        Target(URL, KEY), sleep=clock.sleep, clock=clock, rng=random.Random(1)
    ) as reporter:
        runs = [_sleeps_between_503s(reporter, report, clock) for _ in range(sends)]

    assert all(len(sleeps) == MAX_ATTEMPTS - 1 for sleeps in runs)
    by_attempt = list(zip(*runs, strict=True))
    bounds = [min(8.0, 0.5 * 2**n) for n in range(MAX_ATTEMPTS - 1)]
    means = [sum(pauses) / sends for pauses in by_attempt]
    for pauses, bound, mean in zip(by_attempt, bounds, means, strict=True):
        assert all(0 <= pause <= bound for pause in pauses)
        assert len(set(pauses)) == sends  # jittered: no two sends pause alike
        assert 0.35 * bound < mean < 0.65 * bound  # drawn from all of [0, bound]
        assert max(pauses) > 0.8 * bound
    # Each pause's window doubles (0.5, 1, 2, 4, 8 s) until the 8 s cap, then stays.
    for earlier, later in itertools.pairwise(means[:5]):
        assert 1.5 < later / earlier < 2.7
    for earlier, later in itertools.pairwise(means[4:]):
        assert 0.7 < later / earlier < 1.4


@respx.mock
def test_two_random_seeds_give_different_backoffs(report):
    respx.post(URL).mock(return_value=httpx.Response(503))

    def sleeps_with_seed(seed: int) -> list[float]:
        clock = FakeClock()
        with Reporter(
            Target(URL, KEY), sleep=clock.sleep, clock=clock, rng=random.Random(seed)
        ) as reporter:
            return _sleeps_between_503s(reporter, report, clock)

    first, second, first_again = (
        sleeps_with_seed(1),
        sleeps_with_seed(2),
        sleeps_with_seed(1),
    )

    assert first == first_again  # the pauses come from the rng, nothing else
    assert all(a != b for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.ReadTimeout("timed out"),
    ],
    ids=type,
)
@respx.mock
def test_a_connection_failure_is_retried_and_delivered_on_the_second_try(
    reporter, report, clock, error
):
    route = respx.post(URL).mock(
        side_effect=[error, httpx.Response(200, json=ACCEPTED)]
    )

    receipt = reporter.send(report)

    assert receipt == Receipt(200, ACCEPTED, 2)
    first, second = (call.request for call in route.calls)
    assert first.content == second.content == report.payload()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.headers["X-API-Key"] == second.headers["X-API-Key"] == KEY
    assert len(clock.slept) == 1
    assert 0 <= clock.slept[0] <= 0.5
