"""`cronlog serve`: the dashboard's receiver on your own machine.

It takes the runs cronlog (or the guide's curl scripts) post, keeps them in the local
store (SQLite, or PostgreSQL for a `postgresql://` URL), and shows them on a Schedulers
page. Starlette serves the routes (`app.py`), uvicorn the HTTP.

By default it listens on loopback only; any other address needs an API key, since the
ingest endpoint would otherwise take runs from anyone who can reach it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from cronlog.errors import UsageError
from cronlog.server.app import create_app
from cronlog.server.overview import TaskInfo
from cronlog.store import open_store

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "TaskInfo", "create_app", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
# Host headers a loopback server answers; an IPv6 literal keeps its brackets there.
LOOPBACK_HOST_HEADERS = ("127.0.0.1", "localhost", "[::1]")
LISTEN_BACKLOG = 2048
GRACEFUL_SHUTDOWN_S = 5


def serve(
    *,
    db: str | Path,
    api_key: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tasks: Sequence[TaskInfo] = (),
) -> None:
    """Serve the ingest endpoint and the Schedulers page until interrupted.

    db       a SQLite file path, or a `postgresql://user:pass@host:5432/name` URL
    api_key  the key `X-API-Key` must carry; None accepts any client (loopback only)
    host     the address to listen on; anything but loopback needs `api_key`
    port     the TCP port; 0 picks a free one (the chosen port is logged)
    tasks    the known tasks (id, title, schedule, timezone), shown even before a run

    Raises UsageError for an address that needs a key or cannot be listened on, and
    StateError when the store cannot be opened. Request log lines go to the logger
    `cronlog.server.app` at INFO; the caller configures logging.
    """
    loopback = is_loopback(host)
    if not loopback and not api_key:
        raise UsageError(
            f"refusing to listen on {host} without an API key: anyone who can reach it "
            "could post runs. Set one with --api-key-file or CRONLOG_API_KEY, "
            f"or listen on {DEFAULT_HOST}"
        )

    store = open_store(db)
    try:
        listener = _listen(host, port)
        app = create_app(
            store,
            api_key=api_key or None,
            tasks=tasks,
            allowed_hosts=LOOPBACK_HOST_HEADERS if loopback else None,
        )
        config = uvicorn.Config(
            app,
            log_config=None,  # the CLI configures logging; one line a request is ours
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        bound_host, bound_port = listener.getsockname()[:2]
        logger.info("listening on http://%s:%d", bound_host, bound_port)
        with listener:
            uvicorn.Server(config).run(sockets=[listener])
    finally:
        store.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that name it,
    # and without it each response's body waits ~40 ms on the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except (OSError, OverflowError) as error:
        listener.close()
        reason = (error.strerror if isinstance(error, OSError) else None) or error
        raise UsageError(
            f"cannot listen on {host}:{port}: {reason}; choose another --host or --port"
        ) from error
    return listener
