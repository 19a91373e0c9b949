"""Tests for cronlog.httpclient: the TLS trust and what a failed connection says."""

from __future__ import annotations

import socket
import ssl

import pytest

from cronlog.httpclient import diagnose_connect_error, httpx, trust_context


def connect_error(cause: BaseException | None, text: str = "") -> httpx.ConnectError:
    """A ConnectError as httpx raises it: its OS or TLS error chained beneath."""
    error = httpx.ConnectError(text or str(cause))
    error.__cause__ = cause
    return error


def wrong_version_number() -> ssl.SSLError:
    """The real error of a TLS hello answered in plain http, made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(
        incoming, outgoing, server_hostname="dash.example.test"
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    incoming.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with pytest.raises(ssl.SSLError) as caught:
        tls.do_handshake()
    return caught.value


def test_an_untrusted_certificate_gives_the_verify_message():
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"

    assert diagnose_connect_error(connect_error(untrusted)) == (
        "untrusted",
        "self-signed certificate",
    )


def test_a_failed_handshake_gives_openssls_reason():
    error = connect_error(wrong_version_number())

    assert diagnose_connect_error(error) == ("handshake", "WRONG_VERSION_NUMBER")


def test_a_name_not_found_gives_the_resolvers_words():
    missing = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert diagnose_connect_error(connect_error(missing)) == (
        "unresolved",
        "Name or service not known",
    )


def test_a_closed_loopback_port_is_refused():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        client.get(f"http://127.0.0.1:{port}/", timeout=5)

    assert diagnose_connect_error(caught.value) == ("refused", "connection refused")


def test_the_cause_is_found_under_several_wrappers():
    inner = connect_error(ConnectionRefusedError(111, "Connection refused"))
    outer = httpx.ConnectError("wrapped")
    outer.__context__ = inner

    assert diagnose_connect_error(outer)[0] == "refused"


def test_a_chain_that_loops_still_ends():
    error = httpx.ConnectError("odd")
    error.__cause__ = error

    assert diagnose_connect_error(error) == ("unknown", "odd")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "untrusted"),
        ("TLS/SSL connection has been closed", "handshake"),
        ("[Errno -2] Name or service not known", "unresolved"),
        ("[Errno 111] Connection refused", "refused"),
        ("[Errno 101] Network is unreachable", "unknown"),
    ],
)
def test_without_a_cause_the_words_of_the_error_decide(text, problem):
    assert diagnose_connect_error(connect_error(None, text)) == (problem, text)


def test_an_error_without_words_is_named_by_its_type():
    assert diagnose_connect_error(httpx.ConnectError("")) == ("unknown", "ConnectError")


def test_a_bundle_that_cannot_be_loaded_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        trust_context(str(tmp_path / "missing.pem"))


def test_the_system_store_is_openssls_when_its_defaults_hold_certificates(
    monkeypatch, tmp_path
):
    bundle = tmp_path / "ca.pem"
    bundle.touch()
    found = ssl.DefaultVerifyPaths(str(bundle), None, "", "", "", "")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: found)
    monkeypatch.setattr("sys.platform", "linux")

    context = trust_context(None)

    assert type(context) is ssl.SSLContext
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_the_system_store_falls_back_to_truststore_without_openssl_defaults(
    monkeypatch, tmp_path
):
    truststore = pytest.importorskip("truststore")
    nothing = ssl.DefaultVerifyPaths(None, str(tmp_path), "", "", "", "")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: nothing)

    assert isinstance(trust_context(None), truststore.SSLContext)
