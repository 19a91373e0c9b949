"""Spawn the job's child process and watch it until it ends.

The runner is the only part of cronlog that touches the child: it starts argv in a
process group of its own, passes stdout and stderr through byte for byte while keeping
a bounded tail of both, forwards the signals cronlog receives, enforces the timeout and
stamps when the child started and ended. It knows nothing of reports or HTTP, and it
imports only the standard library because it sits on the start-up path of every job.

Three threads share the work. A waiter thread blocks in waitid(WNOWAIT) and stamps the
end the moment the kernel reports the exit; the leader stays a zombie until the main
thread reaps it, so its process group ID cannot be reused while cronlog may still
signal the group. A pump thread multiplexes both pipes with a selector and copies each
chunk to cronlog's own fd 1 or fd 2 and into the tail. The main thread only waits on an
Event, with the next deadline as its timeout, so the Python signal handlers (which run
in the main thread alone) forward signals at once; it sends SIGTERM and then SIGKILL at
the timeout, and after the exit gives the pipes a short grace before it stops the pump.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from cronlog import exits

OUTPUT_GRACE_SECONDS = (
    1.0  # how long a background process of the job may hold the pipes
)
PUMP_STOP_SECONDS = 1.0  # how long the pump may take to notice it must stop
READ_CHUNK = 1024 * 1024
PIPE_CAPACITY = 1024 * 1024  # Linux's default pipe-max-size for unprivileged users
SWITCH_INTERVAL = 0.001  # so an importing background thread cannot delay the end stamp
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
NOT_FOUND_PREFIX = "command not found: "


@dataclass(frozen=True)
class Command:
    """What to run, with which environment, and how long it may take."""

    argv: Sequence[str]
    env: Mapping[str, str]
    timeout: float | None = None  # seconds; None = no limit
    kill_after: float = 10.0  # seconds between SIGTERM and SIGKILL at the timeout
    tail_bytes: int = 64 * 1024  # how much of the end of the output to keep in memory


@dataclass(frozen=True)
class Outcome:
    """How one run of the child went, as the runner saw it."""

    started_at: datetime  # UTC wall clock when the child was spawned
    ended_at: datetime  # UTC wall clock when the child exited
    duration_ms: int  # from time.monotonic(), spawn to exit
    returncode: int | None  # exit status when it exited normally
    signal: int | None  # the signal that killed it, if one did
    spawn_error: str | None  # why it could not be started
    timed_out: bool  # the timeout deadline was hit
    forwarded_signal: int | None  # the first SIGTERM/SIGINT/SIGHUP cronlog received
    output_tail: bytes  # the end of stdout and stderr, interleaved in arrival order
    output_bytes: int  # everything the child wrote to stdout and stderr

    @property
    def exit_status(self) -> int:
        """What cronlog exits with: the child's status unless cronlog stopped it."""
        if self.spawn_error is not None:
            if self.spawn_error.startswith(NOT_FOUND_PREFIX):
                return exits.NOT_FOUND
            return exits.NOT_EXECUTABLE

        # Someone told cronlog to stop: report that, whatever the child made of it.
        if self.forwarded_signal is not None:
            return exits.for_signal(self.forwarded_signal)

        if self.timed_out:
            return exits.TIMED_OUT

        if self.signal is not None:
            return exits.for_signal(self.signal)

        return self.returncode if self.returncode is not None else exits.INTERNAL


def run(command: Command, on_started: Callable[[], None] | None = None) -> Outcome:
    """Run `command` to its end and say how it went; `on_started` runs after the spawn.

    The signal handlers and the thread switch interval are changed only for the run and
    restored when it returns. Signals already ignored on entry (nohup, `&` in a script)
    stay ignored, so the child sees what it would have seen without cronlog.
    """
    forwarder = _Forwarder()
    in_main_thread = threading.current_thread() is threading.main_thread()
    handled = [
        signum
        for signum in FORWARDED_SIGNALS
        if in_main_thread and signal.getsignal(signum) != signal.SIG_IGN
    ]
    previous_handlers = {
        signum: signal.signal(signum, forwarder.on_signal) for signum in handled
    }

    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        return _run(command, on_started, forwarder)
    finally:
        sys.setswitchinterval(previous_interval)
        for signum, handler in previous_handlers.items():
            # None means a handler not set from Python, which cannot be put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _run(
    command: Command, on_started: Callable[[], None] | None, forwarder: _Forwarder
) -> Outcome:
    out_read, out_write = _open_pipe()
    err_read, err_write = _open_pipe()

    started_at = datetime.now(UTC)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            command.argv,
            stdout=out_write,
            stderr=err_write,
            env=dict(command.env),
            process_group=0,
        )
    except OSError as error:
        os.close(out_read)
        os.close(err_read)
        return _spawn_failure(command, error, started_at, started)
    finally:
        os.close(out_write)
        os.close(err_write)

    pump = _Pump({out_read: 1, err_read: 2}, command.tail_bytes)
    pump.start()
    waiter = _Waiter(process.pid, started_at, started)
    waiter.start()
    forwarder.attach(process.pid)
    if on_started is not None:
        on_started()

    timed_out = _wait_for_exit(command, waiter.exited, process.pid, started)

    # The leader is gone but the rest of its group may not be: leave no process behind.
    if timed_out or forwarder.first is not None:
        _kill_group(process.pid, signal.SIGKILL)

    pump.finish(waiter.ended + OUTPUT_GRACE_SECONDS)
    forwarder.detach()
    status = process.wait()
    return Outcome(
        started_at=started_at,
        ended_at=waiter.ended_at,
        duration_ms=_milliseconds(waiter.ended - started),
        returncode=status if status >= 0 else None,
        signal=-status if status < 0 else None,
        spawn_error=None,
        timed_out=timed_out,
        forwarded_signal=forwarder.first,
        output_tail=pump.tail(),
        output_bytes=pump.total,
    )


def _open_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()

    # A larger pipe means fewer, larger reads: throughput close to `cat`.
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # a lowered pipe-max-size only costs speed
            fcntl.fcntl(read_end, set_size, PIPE_CAPACITY)

    return read_end, write_end


def _spawn_failure(
    command: Command, error: OSError, started_at: datetime, started: float
) -> Outcome:
    name = command.argv[0]
    if isinstance(error, FileNotFoundError):
        reason = f"{NOT_FOUND_PREFIX}{name}"
    elif isinstance(error, PermissionError):
        reason = f"permission denied: {name}"
    else:
        reason = f"cannot run {name}: {error.strerror}"

    return Outcome(
        started_at=started_at,
        ended_at=datetime.now(UTC),
        duration_ms=_milliseconds(time.monotonic() - started),
        returncode=None,
        signal=None,
        spawn_error=reason,
        timed_out=False,
        forwarded_signal=None,
        output_tail=b"",
        output_bytes=0,
    )


def _wait_for_exit(
    command: Command, exited: threading.Event, pgid: int, started: float
) -> bool:
    """Wait until the child exits, enforcing the timeout; True when it was hit."""
    if command.timeout is None:
        exited.wait()
        return False

    if exited.wait(started + command.timeout - time.monotonic()):
        return False

    _kill_group(pgid, signal.SIGTERM)
    if not exited.wait(command.kill_after):
        _kill_group(pgid, signal.SIGKILL)
        exited.wait()
    return True


def _kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, signum)


def _milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


class _Forwarder:
    """Passes the signals cronlog receives on to the child's process group."""

    def __init__(self) -> None:
        self.first: int | None = None
        self._received = 0
        self._pgid: int | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._received += 1
        if self.first is None:
            self.first = signum
        self._forward()

    def attach(self, pgid: int) -> None:
        # A signal that came during the spawn is forwarded now.
        self._pgid = pgid
        if self._received:
            self._forward()

    def detach(self) -> None:
        # Called before the leader is reaped: after that its ID may belong to another.
        self._pgid = None

    def _forward(self) -> None:
        if self._pgid is None or self.first is None:
            return

        # The first signal asks the job to stop; a second one insists.
        _kill_group(self._pgid, self.first if self._received == 1 else signal.SIGKILL)


class _Waiter(threading.Thread):
    """Stamps the child's exit the moment it happens, without reaping it."""

    def __init__(self, pid: int, started_at: datetime, started: float) -> None:
        super().__init__(name="cronlog-waiter", daemon=True)
        self.exited = threading.Event()
        self.ended_at = started_at
        self.ended = started
        self._pid = pid

    def run(self) -> None:
        try:
            # ECHILD: SIGCHLD is ignored and the kernel reaped it, so it has exited too.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOWAIT)
        finally:
            self.ended = time.monotonic()
            self.ended_at = datetime.now(UTC)
            self.exited.set()


class _Pump(threading.Thread):
    """Copies the child's pipes to cronlog's own fds and keeps the end of the output."""

    def __init__(self, targets: dict[int, int], tail_bytes: int) -> None:
        super().__init__(name="cronlog-pump", daemon=True)
        self.total = 0
        self._targets = targets  # pipe read end -> cronlog's fd it is passed to
        self._silenced: set[int] = set()
        self._tail_bytes = max(tail_bytes, 0)
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._tail_lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()

    def run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for fd in self._targets:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)

            open_pipes = len(self._targets)
            while open_pipes:
                for key, _ in selector.select():
                    if key.fd == self._wake_read:
                        return

                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fd)
                        open_pipes -= 1
                        continue

                    self.total += len(chunk)
                    self._pass_through(self._targets[key.fd], chunk)
                    self._keep(chunk)

    def finish(self, deadline: float) -> None:
        """Wait for both pipes to end until `deadline`, then stop pumping."""
        self.join(max(deadline - time.monotonic(), 0.0))
        if self.is_alive():
            os.write(self._wake_write, b"\0")
            self.join(PUMP_STOP_SECONDS)

        # A pump still blocked writing to cronlog's own stdout keeps its fds: closing
        # them under it could hand the numbers to files opened later.
        if not self.is_alive():
            for fd in (*self._targets, self._wake_read, self._wake_write):
                os.close(fd)

    def tail(self) -> bytes:
        with self._tail_lock:
            return (
                b"".join(self._tail)[-self._tail_bytes :] if self._tail_bytes else b""
            )

    def _pass_through(self, target: int, chunk: bytes) -> None:
        if target in self._silenced:
            return

        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(target, view) :]
        except OSError:
            # EPIPE (`| head -1`), EBADF (closed fd), a full disk: cronlog's own output
            # failing must neither block nor kill the job, so keep draining the pipe.
            self._silenced.add(target)

    def _keep(self, chunk: bytes) -> None:
        if not self._tail_bytes:
            return

        if len(chunk) > self._tail_bytes:
            chunk = chunk[-self._tail_bytes :]
        with self._tail_lock:
            self._tail.append(chunk)
            self._tail_size += len(chunk)
            while self._tail_size - len(self._tail[0]) >= self._tail_bytes:
                self._tail_size -= len(self._tail.popleft())
