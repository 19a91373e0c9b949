"""Spawn the job's child process and watch it until it ends.

The runner is the only part of cronlog that touches the child: it starts argv in a
process group of its own, passes stdout and stderr through byte for byte while keeping
a bounded tail of both, forwards the signals cronlog receives, enforces the timeout and
stamps when the child started and ended. It knows nothing of reports or HTTP.

It sits on the start-up path of every job, so until the child is spawned it uses only
modules built into the interpreter (and cronlog.exits); threading, selectors,
collections and datetime are imported once the job runs. The child is
started with posix_spawn, which costs less than subprocess to import and to call.

Three threads share the work. A waiter thread blocks in waitid(WNOWAIT) and stamps the
end the moment the kernel reports the exit; the leader stays a zombie until the main
thread reaps it, so its process group ID cannot be reused while cronlog may still
signal the group. A pump thread multiplexes both pipes with a selector and copies each
chunk to cronlog's own fd 1 or fd 2 and into the tail; when writing to one of those
fails, it closes that pipe, so the child's next write to it fails as it would have
without cronlog. The main thread only waits on an Event, with the next deadline as its
timeout, so the Python signal handlers (which run in the main thread alone) forward
signals at once; it sends SIGTERM and then SIGKILL at the timeout, and after the exit
gives the pipes a short grace before it stops the pump.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time

from cronlog import exits

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    import threading
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime
    from types import FrameType
    from typing import Any, TypeAlias

    _Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | None
else:
    # The C module itself: `signal` wraps it in enums, and importing enum costs 8 ms.
    import _signal as signal

# How long a background process of the job may hold the pipes after it exits.
OUTPUT_GRACE_SECONDS = 1.0
PUMP_STOP_SECONDS = 1.0  # how long the pump may take to notice it must stop
READ_CHUNK = 64 * 1024  # 1 MiB reads cost more memory and more CPU for no speed
PIPE_CAPACITY = 1024 * 1024  # Linux's default pipe-max-size for unprivileged users
SWITCH_INTERVAL = 0.001  # so an importing background thread cannot delay the end stamp
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Python ignores these for itself; the job gets them at their defaults, as subprocess
# gives them, so `job | head -1` ends the job with SIGPIPE.
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
NOT_FOUND_PREFIX = "command not found: "
SHELL = "/bin/sh"  # what runs an executable file that has no #! line
NO_INTERPRETER_SUFFIX = ": its interpreter (the #! line) was not found"


class Command:
    """What to run, with which environment, and how long it may take.

    argv[0] is looked up on cronlog's own PATH when it has no slash. The fds in
    `inherit_fds` stay open in the child, so a lock held on one lasts as long as the
    job, even if cronlog itself is killed. Read-only by convention.
    """

    __slots__ = ("argv", "env", "inherit_fds", "kill_after", "tail_bytes", "timeout")

    argv: Sequence[str]
    env: Mapping[str, str]
    timeout: float | None  # seconds; None = no limit
    kill_after: float  # seconds between SIGTERM and SIGKILL at the timeout
    tail_bytes: int  # how much of the end of the output to keep in memory
    inherit_fds: tuple[int, ...]  # cronlog's fds the child keeps, at the same numbers

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float | None = None,
        kill_after: float = 10.0,
        tail_bytes: int = 64 * 1024,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.argv = argv
        self.env = env
        self.timeout = timeout
        self.kill_after = kill_after
        self.tail_bytes = tail_bytes
        self.inherit_fds = inherit_fds


class Outcome:
    """How one run of the child went, as the runner saw it. Read-only by convention."""

    __slots__ = (
        "duration_ms",
        "ended_at",
        "forwarded_signal",
        "output_bytes",
        "output_tail",
        "returncode",
        "signal",
        "spawn_error",
        "started_at",
        "timed_out",
    )

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

    def __init__(
        self,
        started_at: datetime,
        ended_at: datetime,
        duration_ms: int,
        returncode: int | None,
        signal: int | None,
        spawn_error: str | None,
        timed_out: bool,
        forwarded_signal: int | None,
        output_tail: bytes,
        output_bytes: int,
    ) -> None:
        self.started_at = started_at
        self.ended_at = ended_at
        self.duration_ms = duration_ms
        self.returncode = returncode
        self.signal = signal
        self.spawn_error = spawn_error
        self.timed_out = timed_out
        self.forwarded_signal = forwarded_signal
        self.output_tail = output_tail
        self.output_bytes = output_bytes

    @property
    def exit_status(self) -> int:
        """What cronlog exits with: the child's status unless cronlog stopped it."""
        if self.spawn_error is not None:
            if self.spawn_error.startswith(
                NOT_FOUND_PREFIX
            ) or self.spawn_error.endswith(NO_INTERPRETER_SUFFIX):
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
    stay ignored, so the child sees what it would have seen without cronlog; all but
    SIGCHLD, which must have its default action for the child's status to be kept.
    """
    forwarder = _Forwarder()
    previous_handlers = catch_stop_signals(forwarder.on_signal)
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        # Ignored, the kernel reaps the child at once and its exit status is lost.
        ignored = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        previous_handlers[signal.SIGCHLD] = ignored

    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        return _run(command, on_started, forwarder, tuple(previous_handlers))
    finally:
        sys.setswitchinterval(previous_interval)
        restore_signals(previous_handlers)


def catch_stop_signals(handler: _Handler) -> dict[int, _Handler]:
    """Catch SIGTERM, SIGINT and SIGHUP where not ignored on entry; return their old
    handlers, for `restore_signals`."""
    previous: dict[int, _Handler] = {}
    for signum in FORWARDED_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue

        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread, the only one Python runs handlers in
            break
    return previous


def restore_signals(previous: dict[int, _Handler]) -> None:
    for signum, handler in previous.items():
        # None means a handler not set from Python, which cannot be put back.
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _run(
    command: Command,
    on_started: Callable[[], None] | None,
    forwarder: _Forwarder,
    caught: tuple[int, ...],
) -> Outcome:
    out_read, out_write = _open_pipe()
    err_read, err_write = _open_pipe()

    wall_started = time.time()
    started = time.monotonic()
    try:
        pid = _spawn(command, out_write, err_write, caught)
    except OSError as error:
        os.close(out_read)
        os.close(err_read)
        return _spawn_failure(command, error, wall_started, started)
    finally:
        os.close(out_write)
        os.close(err_write)

    forwarder.attach(pid)
    waiter = _Waiter(pid, started, wall_started)
    pump = _Pump({out_read: 1, err_read: 2}, command.tail_bytes)
    if on_started is not None:
        on_started()

    timed_out = _wait_for_exit(command, waiter.exited, pid, started)

    # The leader is gone but the rest of its group may not be: leave no process behind.
    if timed_out or forwarder.first is not None:
        _kill_group(pid, signal.SIGKILL)

    pump.finish(waiter.ended + OUTPUT_GRACE_SECONDS)
    forwarder.detach()
    status = _reap(pid)
    return Outcome(
        started_at=_utc(wall_started),
        ended_at=_utc(waiter.ended_wall),
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
        try:  # noqa: SIM105 - contextlib (and collections) would cost 5 ms here
            fcntl.fcntl(read_end, set_size, PIPE_CAPACITY)
        except OSError:
            pass  # a lowered pipe-max-size only costs speed

    return read_end, write_end


def _spawn(command: Command, stdout: int, stderr: int, caught: tuple[int, ...]) -> int:
    """Start the child in a group of its own with the pipes as its stdout and stderr.

    Every fd Python opens is close-on-exec, the pipes' ends included, so the child
    keeps only its stdin, the two copies made here and `inherit_fds`: a dup2 onto
    itself clears close-on-exec (glibc 2.29 and later, musl). Signals caught for the
    run are reset; signals ignored on entry stay ignored; none is blocked.
    """
    argv = tuple(command.argv)
    if not argv[0]:  # e.g. `-- "$UNSET" arg`; posix_spawnp would raise ValueError
        raise FileNotFoundError(errno.ENOENT, "an empty command name")
    options: dict[str, Any] = {
        "file_actions": [
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
            *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in command.inherit_fds),
        ],
        "setpgroup": 0,
        "setsigmask": (),
        "setsigdef": (*RESTORED_SIGNALS, *caught),
    }
    try:
        return os.posix_spawnp(argv[0], argv, command.env, **options)
    except OSError as error:
        if error.errno != errno.ENOEXEC:
            raise
        script = _script_without_interpreter(argv[0])
        if script is None:
            raise

    # No #! line: run it with sh, as execvp and the shells do, and so cron did.
    return os.posix_spawn(SHELL, (SHELL, script, *argv[1:]), command.env, **options)


def _script_without_interpreter(name: str) -> str | None:
    """The path of `name` when it is text the kernel would not run (no #! line), or
    None for a binary it cannot run (a NUL early on, as bash judges it)."""
    import shutil

    path = name if "/" in name else shutil.which(name)
    try:
        with open(path or name, "rb") as file:
            start = file.read(512)
    except OSError:
        return None
    return None if b"\0" in start else path


def _spawn_failure(
    command: Command, error: OSError, wall_started: float, started: float
) -> Outcome:
    name = command.argv[0]
    if not name:
        reason = f"{NOT_FOUND_PREFIX}'' (an empty word: an unset variable?)"
    elif error.errno == errno.ENOENT:
        reason = _not_found(name)
    elif isinstance(error, PermissionError) and os.path.isdir(name):
        reason = f"cannot run {name}: it is a directory"
    elif isinstance(error, PermissionError):
        reason = f"permission denied: {name}"
    else:
        reason = f"cannot run {name}: {error.strerror}"

    return Outcome(
        started_at=_utc(wall_started),
        ended_at=_utc(time.time()),
        duration_ms=_milliseconds(time.monotonic() - started),
        returncode=None,
        signal=None,
        spawn_error=reason,
        timed_out=False,
        forwarded_signal=None,
        output_tail=b"",
        output_bytes=0,
    )


def _not_found(name: str) -> str:
    """Why exec said ENOENT: no such command, or a script without its interpreter."""
    import shutil

    path = name if "/" in name else shutil.which(name)
    if path is not None and os.path.exists(path):
        return f"cannot run {path}{NO_INTERPRETER_SUFFIX}"
    return f"{NOT_FOUND_PREFIX}{name}"


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
    try:  # noqa: SIM105 - as in _open_pipe: no contextlib before the spawn
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the whole group is already gone


def _reap(pid: int) -> int:
    """The child's status as subprocess gives it: its exit code, or minus the signal."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _utc(timestamp: float) -> datetime:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


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


class _Waiter:
    """Stamps the child's exit the moment it happens, without reaping it."""

    def __init__(self, pid: int, started: float, wall_started: float) -> None:
        import threading

        self.exited = threading.Event()
        self.ended = started
        self.ended_wall = wall_started
        self._pid = pid
        threading.Thread(target=self._wait, name="cronlog-waiter", daemon=True).start()

    def _wait(self) -> None:
        try:
            os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # SIGCHLD is ignored and the kernel reaped it, so it has exited too
        finally:
            self.ended = time.monotonic()
            self.ended_wall = time.time()
            self.exited.set()


class _Pump:
    """Copies the child's pipes to cronlog's own fds and keeps the end of the output."""

    def __init__(self, targets: dict[int, int], tail_bytes: int) -> None:
        import threading
        from collections import deque

        self.total = 0
        self._targets = targets  # pipe read end -> cronlog's fd it is passed to
        self._open = set(targets)  # the read ends still to close
        self._tail_bytes = max(tail_bytes, 0)
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._tail_lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(
            target=self._pump, name="cronlog-pump", daemon=True
        )
        self._thread.start()

    def finish(self, deadline: float) -> None:
        """Wait for both pipes to end until `deadline`, then stop pumping."""
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            os.write(self._wake_write, b"\0")
            self._thread.join(PUMP_STOP_SECONDS)

        # A pump still blocked writing to cronlog's own stdout keeps its fds: closing
        # them under it could hand the numbers to files opened later.
        if not self._thread.is_alive():
            for fd in (*self._open, self._wake_read, self._wake_write):
                os.close(fd)

    def tail(self) -> bytes:
        with self._tail_lock:
            return (
                b"".join(self._tail)[-self._tail_bytes :] if self._tail_bytes else b""
            )

    def _pump(self) -> None:
        import selectors

        with selectors.DefaultSelector() as selector:
            for fd in self._targets:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)

            reading = len(self._targets)
            while reading:
                for key, _ in selector.select():
                    if key.fd == self._wake_read:
                        return

                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fd)
                        reading -= 1
                        continue

                    self.total += len(chunk)
                    self._keep(chunk)
                    if self._pass_through(self._targets[key.fd], chunk):
                        continue

                    # EPIPE (`| head -1`), a full disk, a closed fd: the child's next
                    # write to this stream fails as it would have without cronlog.
                    selector.unregister(key.fd)
                    reading -= 1
                    self._open.remove(key.fd)
                    os.close(key.fd)

    def _pass_through(self, target: int, chunk: bytes) -> bool:
        """Write all of `chunk` to cronlog's fd `target`; False when that fails."""
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(target, view) :]
            except BlockingIOError:
                # Someone made the fd we share with our parent non-blocking: wait for
                # room, as a blocking write would.
                import select

                select.select((), (target,), ())
            except OSError:
                return False
        return True

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
