"""http_job.py against respx: headers and ${VAR}, redirects and origins, failures."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import respx

from cronlog import http_job
from cronlog.errors import UsageError
from cronlog.http_job import HttpRequest, expand_headers, perform
from cronlog.httpclient import USER_AGENT
from cronlog.status_codes import parse_ok_statuses

URL = "https://tradezone.sg/api/tradein/auto-submit"
ENV = {"CHATKIT_API_KEY": "k-123456", "EMPTY": ""}


def post(url=URL, **fields):
    return HttpRequest("POST", url, **fields)


def test_it_expands_variables_from_the_environment_it_is_given():
    headers = ["X-API-Key: ${CHATKIT_API_KEY}", "X-Note:  a ${EMPTY}b $HOME  "]

    assert expand_headers(headers, ENV) == [
        ("X-API-Key", "k-123456"),
        ("X-Note", "a b $HOME"),
    ]


def test_the_values_headers_reference_are_given_for_redaction():
    headers = ["X-API-Key: ${CHATKIT_API_KEY}", "X-Empty: ${EMPTY}", "Accept: */*"]

    assert http_job.referenced_values(headers, ENV) == ["k-123456"]


def test_an_unset_variable_is_named_and_nothing_is_sent():
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(URL)
        with pytest.raises(UsageError, match="variable MISSING_KEY is not set"):
            perform(post(headers=("X-API-Key: ${MISSING_KEY}",)), ENV)

    assert not route.called


@pytest.mark.parametrize(
    "header", ["X-API-Key k-123456", ": value", "Bad Name: v", "X:${1X}"]
)
def test_a_malformed_header_is_refused_without_quoting_it(header):
    with pytest.raises(UsageError) as refused:
        expand_headers(["Accept: */*", header], ENV)

    assert "k-123456" not in str(refused.value)


def test_a_variable_cannot_smuggle_a_second_header():
    with pytest.raises(UsageError, match="line break") as refused:
        expand_headers(["X-API-Key: ${KEY}"], {"KEY": "k\r\nX-Evil: 1"})

    assert "Evil" not in str(refused.value)


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (HttpRequest("GET", "ftp://example.test/"), "http:// or https://"),
        (HttpRequest("GET", "/relative"), "http:// or https://"),
        (HttpRequest("G ET", URL), "not an HTTP method"),
        (post(data="a", json_body="{}"), "cannot be used together"),
    ],
)
def test_a_request_that_cannot_be_made_is_refused_before_it_starts(request_, words):
    started = []

    with pytest.raises(UsageError, match=words):
        perform(request_, ENV, on_started=lambda: started.append(True))

    assert not started


def test_a_ca_bundle_that_cannot_be_loaded_names_ssl_cert_file(tmp_path):
    with pytest.raises(UsageError, match="SSL_CERT_FILE"):
        perform(post(), {"SSL_CERT_FILE": str(tmp_path / "missing.pem")})


@respx.mock
def test_headers_and_data_go_out_as_the_bytes_given(capfd):
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    env = {"NOTE": "caf\u00e9 a\udcffb"}  # UTF-8, then a byte that is not

    perform(post(headers=("X-Note: ${NOTE}",), data="n=\udcfe"), env)

    sent = route.calls.last.request
    assert (b"X-Note", b"caf\xc3\xa9 a\xffb") in sent.headers.raw
    assert sent.content == b"n=\xfe"


@respx.mock
def test_it_sends_the_headers_and_prints_the_body(capfd):
    route = respx.post(URL).mock(return_value=httpx.Response(200, text="queued 3\n"))

    outcome = perform(post(headers=("X-API-Key: ${CHATKIT_API_KEY}",)), ENV)

    sent = route.calls.last.request
    assert sent.headers["X-API-Key"] == "k-123456"
    assert sent.headers["User-Agent"] == USER_AGENT
    assert capfd.readouterr().out == "queued 3\n"
    assert (outcome.http_status, outcome.exit_status, outcome.reason) == (200, 0, None)
    assert (outcome.body_tail, outcome.body_bytes) == (b"queued 3\n", 9)


@respx.mock
def test_json_sets_content_type_and_accept_unless_given():
    route = respx.post(URL).mock(return_value=httpx.Response(201))

    perform(post(json_body='{"a": 1}'), ENV)
    perform(post(json_body="{}", headers=("content-type: application/x-ndjson",)), ENV)

    first, second = (call.request for call in route.calls)
    assert first.content == b'{"a": 1}'
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Accept"] == "application/json"
    assert second.headers.get_list("Content-Type") == ["application/x-ndjson"]


@respx.mock
def test_data_is_sent_as_is_with_curls_form_type():
    route = respx.post(URL).mock(return_value=httpx.Response(204))

    perform(post(data="a=1&b= 2@x"), ENV)

    sent = route.calls.last.request
    assert sent.content == b"a=1&b= 2@x"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"


@respx.mock
def test_a_status_not_accepted_fails_with_exit_22_and_keeps_the_body(capfd):
    body = json.dumps({"error": "db down"})
    respx.post(URL).mock(return_value=httpx.Response(500, text=body))

    outcome = perform(post(), ENV)

    assert (outcome.http_status, outcome.exit_status) == (500, 22)
    assert outcome.reason == "HTTP 500"
    assert outcome.body_tail == body.encode()
    assert capfd.readouterr().out == body


@respx.mock
def test_ok_status_decides_what_is_accepted():
    respx.post(URL).mock(return_value=httpx.Response(404))

    outcome = perform(post(ok_statuses=parse_ok_statuses("2xx,404")), ENV)

    assert (outcome.exit_status, outcome.reason) == (0, None)


@respx.mock
def test_the_tail_keeps_the_end_of_a_long_body(capfd):
    body = b"x" * 5000 + b"the end"
    respx.post(URL).mock(return_value=httpx.Response(200, content=body))

    outcome = perform(post(tail_bytes=100), ENV)

    assert outcome.body_tail == body[-100:]
    assert outcome.body_bytes == len(body)
    assert capfd.readouterr().out.encode() == body


@respx.mock
def test_a_redirect_is_not_followed_without_location(capfd):
    respx.post(URL).mock(
        return_value=httpx.Response(301, headers={"Location": "/v2"}, text="moved")
    )

    outcome = perform(post(), ENV)

    assert (outcome.http_status, outcome.exit_status) == (301, 22)
    assert capfd.readouterr().out == "moved"


@respx.mock
def test_location_carries_headers_within_the_origin():
    respx.post(URL).mock(
        return_value=httpx.Response(307, headers={"Location": "/api/v2/submit"})
    )
    final = respx.post("https://tradezone.sg/api/v2/submit").mock(
        return_value=httpx.Response(200)
    )

    outcome = perform(
        post(headers=("X-API-Key: ${CHATKIT_API_KEY}",), follow_redirects=True), ENV
    )

    assert outcome.http_status == 200
    assert final.calls.last.request.headers["X-API-Key"] == "k-123456"


@pytest.mark.parametrize(
    "target",
    [
        "https://cdn.example.test/submit",  # another host
        "http://tradezone.sg/api/v2/submit",  # another scheme
        "https://tradezone.sg:8443/api/v2/submit",  # another port
    ],
)
@respx.mock
def test_location_strips_the_users_headers_on_another_origin(target):
    respx.post(URL).mock(return_value=httpx.Response(308, headers={"Location": target}))
    final = respx.post(target).mock(return_value=httpx.Response(200))

    perform(
        post(
            headers=("X-API-Key: ${CHATKIT_API_KEY}", "Authorization: Bearer t"),
            json_body="{}",
            follow_redirects=True,
        ),
        ENV,
    )

    sent = final.calls.last.request
    assert "X-API-Key" not in sent.headers
    assert "Authorization" not in sent.headers
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.content == b"{}"


@respx.mock
def test_headers_come_back_when_a_redirect_returns_to_the_origin():
    other = "https://sso.example.test/bounce"
    respx.post(URL).mock(return_value=httpx.Response(307, headers={"Location": other}))
    done = "https://tradezone.sg/api/tradein/done"
    respx.post(other).mock(return_value=httpx.Response(307, headers={"Location": done}))
    back = respx.post(done).mock(return_value=httpx.Response(200))

    perform(post(headers=("X-API-Key: a-key",), follow_redirects=True), ENV)

    assert back.calls.last.request.headers["X-API-Key"] == "a-key"


@respx.mock
def test_a_303_turns_a_post_into_a_get_without_a_body(capfd):
    respx.post(URL).mock(return_value=httpx.Response(303, headers={"Location": "/r"}))
    result = respx.get("https://tradezone.sg/r").mock(
        return_value=httpx.Response(200, text="result")
    )

    outcome = perform(post(data="a=1", follow_redirects=True), ENV)

    assert outcome.http_status == 200
    assert result.calls.last.request.content == b""
    assert "Content-Type" not in result.calls.last.request.headers
    assert capfd.readouterr().out == "result"


@respx.mock
def test_endless_redirects_stop_with_curls_47():
    respx.get(URL).mock(return_value=httpx.Response(302, headers={"Location": URL}))

    outcome = perform(HttpRequest("GET", URL, follow_redirects=True), ENV)

    assert outcome.exit_status == 47
    assert "too many redirects" in outcome.reason


@respx.mock
def test_a_redirect_to_another_protocol_is_not_followed():
    respx.get(URL).mock(
        return_value=httpx.Response(302, headers={"Location": "ftp://files/x"})
    )

    outcome = perform(HttpRequest("GET", URL, follow_redirects=True), ENV)

    assert outcome.exit_status == 1


def raising(error):
    def effect(request):
        raise error

    return effect


@pytest.mark.parametrize(
    ("error", "exit_status", "words"),
    [
        (httpx.ReadTimeout("slow"), 28, "timed out: no complete answer within 30s"),
        (httpx.ConnectTimeout("slow"), 28, "timed out"),
        (httpx.RemoteProtocolError("Server disconnected"), 52, "empty reply"),
        (httpx.ReadError("reset by peer"), 56, "connection reset: reset by peer"),
        (httpx.WriteError("broken pipe"), 55, "failed sending data"),
    ],
)
@respx.mock
def test_transport_failures_exit_with_curls_numbers(error, exit_status, words):
    respx.post(URL + "?token=s3cret").mock(side_effect=raising(error))

    outcome = perform(post(URL + "?token=s3cret"), ENV)

    assert outcome.exit_status == exit_status
    assert outcome.http_status is None
    assert outcome.reason.startswith(words)
    assert outcome.reason.endswith("(https://tradezone.sg:443)")
    assert "s3cret" not in outcome.reason


def test_a_name_that_does_not_resolve_exits_6(monkeypatch):
    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)

    outcome = perform(HttpRequest("GET", "http://no-such-host.test/"), ENV)

    assert outcome.exit_status == 6
    assert outcome.reason == (
        "could not resolve host: Name or service not known (http://no-such-host.test:80)"
    )


@respx.mock
def test_it_stamps_the_request_in_utc():
    respx.post(URL).mock(return_value=httpx.Response(200))

    outcome = perform(post(), ENV)

    assert outcome.started_at.utcoffset().total_seconds() == 0
    assert outcome.started_at <= outcome.ended_at
    assert outcome.duration_ms >= 0


@respx.mock
def test_on_started_runs_once_before_the_request():
    seen = []
    route = respx.post(URL).mock(
        side_effect=lambda request: seen.append("sent") or httpx.Response(200)
    )

    perform(post(), ENV, on_started=lambda: seen.append("started"))

    assert seen == ["started", "sent"]
    assert route.call_count == 1


def test_cronlogs_own_key_is_named_as_withheld_not_as_unset():
    with pytest.raises(UsageError, match="CRONLOG_API_KEY is cronlog's own") as refused:
        expand_headers(
            ["X-API-Key: ${CRONLOG_API_KEY}"],
            {"CRONLOG_API_KEY": "k-dashboard-0001"},
            withheld=("CRONLOG_API_KEY",),
        )

    assert "k-dashboard-0001" not in str(refused.value)
