"""httpx, imported without its command-line module, and what both of cronlog's HTTP
clients (the reporter and `run --request`) share: the User-Agent, the TLS trust, and
what a failed connection says about its cause.

`import httpx` also imports `httpx._main`, which loads click and rich when they are
installed, as they are beside cronlog: about 80 ms and 6 MB spent on every run for a
command-line client cronlog never uses. A None entry in sys.modules makes that one
import fail, which httpx handles by design. Modules import httpx from here.
"""

import os
import socket
import ssl
import sys
from typing import Literal

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

from cronlog import __version__  # noqa: E402

__all__ = [
    "USER_AGENT",
    "ConnectProblem",
    "diagnose_connect_error",
    "httpx",
    "trust_context",
]

USER_AGENT = f"cronlog/{__version__}"

ConnectProblem = Literal["untrusted", "handshake", "unresolved", "refused", "unknown"]


def trust_context(bundle: str | None) -> ssl.SSLContext:
    """A verifying TLS context: `bundle` when given, else the system's trust store.

    The system store is what lets a company CA that IT installed on the host work
    without telling cronlog about it. A bundle that cannot be loaded raises OSError
    or ssl.SSLError.
    """
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    if sys.platform == "linux" and _openssl_defaults_hold_certificates():
        # What truststore does on Linux at every handshake (about 50 ms of CPU, after
        # the job), done once here, while the job runs.
        return ssl.create_default_context()

    import truststore  # the macOS and Windows stores, and Linux's other CA paths

    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _openssl_defaults_hold_certificates() -> bool:
    """Whether OpenSSL's default CA file exists, or its CA directory holds hashed
    certificate names (`1a2b3c4d.0`), SSL_CERT_FILE and SSL_CERT_DIR included."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return True  # get_default_verify_paths gives only a file that exists
    if not paths.capath or not os.path.isdir(paths.capath):
        return False
    return any(
        len(name) == 10 and name[8] == "." and name[9].isdigit()
        for name in os.listdir(paths.capath)
    )


def diagnose_connect_error(error: httpx.ConnectError) -> tuple[ConnectProblem, str]:
    """What stopped a connection, and its detail, for the caller to put in words.

    The OS or TLS error is found under httpx's and httpcore's wrappers; a chain that
    holds none leaves the words of `error` itself to go by.
    """
    cause: BaseException | None = error
    for _ in range(8):  # the chain is short; a loop in it must not hang a job
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "untrusted", str(cause.verify_message or cause)
        if isinstance(cause, ssl.SSLError):
            return "handshake", str(cause.reason or cause)
        if isinstance(cause, socket.gaierror):
            return "unresolved", str(cause.strerror or cause)
        if isinstance(cause, ConnectionRefusedError):
            return "refused", "connection refused"
        cause = cause.__cause__ or cause.__context__

    text = str(error)
    if "certificate verify failed" in text.lower():
        return "untrusted", text
    if "SSL" in text or "TLS" in text:
        return "handshake", text
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unresolved", text
    if "refused" in text.lower():
        return "refused", text
    return "unknown", text or type(error).__name__
