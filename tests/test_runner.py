"""The runner with real child processes: exit, output, spawn errors, signals, time."""

from __future__ import annotations

import array
import faulthandler
import fcntl
import json
import os
import random
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronlog import exits
from cronlog.runner import OUTPUT_GRACE_SECONDS, Command, run

ENV = {"PATH": os.environ["PATH"]}
DRIVER = Path(__file__).parent / "helpers_runner" / "driver.py"
DRIVER_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
TEST_SECONDS = 20  # no test may hang the suite: past this the whole run is stopped
WAIT_SECONDS = 5.0

# The grandchild ignores SIGTERM, so only a SIGKILL of the whole group ends it.
STUBBORN_GRANDCHILD = """
sh -c 'trap "" TERM; echo $$ > "$0"; exec sleep 30' "$1" &
wait
"""


@pytest.fixture(autouse=True)
def _bounded():
    faulthandler.dump_traceback_later(TEST_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def sh(script, *args, **options):
    return Command(argv=["sh", "-c", script, "sh", *args], env=ENV, **options)


def read_pid(path):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return int(path.read_text())
        time.sleep(0.01)
    raise AssertionError(f"no pid in {path}")


def is_running(pid):
    # A zombie is gone for our purpose: PID 1 of a container may never reap it.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid):
    deadline = time.monotonic() + WAIT_SECONDS
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not is_running(pid)


def driver_command(tmp_path, *argv):
    return [sys.executable, str(DRIVER), str(tmp_path / "outcome.json"), *argv]


@pytest.fixture
def start_driver(tmp_path):
    drivers = []

    def start(*argv, **options):
        options.setdefault("stdout", subprocess.DEVNULL)
        command = driver_command(tmp_path, *argv)
        drivers.append(subprocess.Popen(command, env=DRIVER_ENV, **options))
        return drivers[-1]

    yield start

    # A failed test may leave its driver running: two signals end it and its group.
    for driver in drivers:
        if driver.poll() is None:
            driver.send_signal(signal.SIGTERM)
            driver.send_signal(signal.SIGTERM)
            driver.wait(WAIT_SECONDS)


def driver_outcome(tmp_path):
    return json.loads((tmp_path / "outcome.json").read_text())


def test_it_passes_stdout_and_stderr_through_separately_and_exits_zero(capfdbinary):
    outcome = run(sh("echo out; echo err >&2"))

    captured = capfdbinary.readouterr()
    assert captured.out == b"out\n"
    assert captured.err == b"err\n"
    assert outcome.returncode == 0
    assert outcome.signal is None
    assert outcome.exit_status == exits.OK


def test_it_exits_with_the_childs_code():
    outcome = run(sh("exit 3"))

    assert outcome.returncode == 3
    assert outcome.exit_status == 3


def test_it_reports_the_signal_that_killed_the_child():
    outcome = run(sh("kill -9 $$"))

    assert outcome.returncode is None
    assert outcome.signal == signal.SIGKILL
    assert outcome.exit_status == 137


def test_it_reports_a_command_that_is_not_found():
    outcome = run(Command(argv=["cronlog-no-such-command"], env=ENV))

    assert outcome.spawn_error == "command not found: cronlog-no-such-command"
    assert outcome.exit_status == exits.NOT_FOUND
    assert outcome.returncode is None
    assert outcome.duration_ms < 100
    assert outcome.started_at <= outcome.ended_at


def test_it_reports_a_file_that_is_not_executable(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("echo never\n")
    script.chmod(0o644)

    outcome = run(Command(argv=[str(script)], env=ENV))

    assert outcome.spawn_error == f"permission denied: {script}"
    assert outcome.exit_status == exits.NOT_EXECUTABLE


def test_it_says_a_directory_is_a_directory(tmp_path):
    outcome = run(Command(argv=[str(tmp_path)], env=ENV))

    assert outcome.spawn_error == f"cannot run {tmp_path}: it is a directory"
    assert outcome.exit_status == exits.NOT_EXECUTABLE


def test_it_reports_a_file_the_kernel_cannot_run(tmp_path):
    binary = tmp_path / "job"
    binary.write_bytes(b"\x7fELF\x00garbage")
    binary.chmod(0o755)

    outcome = run(Command(argv=[str(binary)], env=ENV))

    assert outcome.spawn_error == f"cannot run {binary}: Exec format error"
    assert outcome.exit_status == exits.NOT_EXECUTABLE


def test_an_executable_script_without_a_shebang_runs_with_sh(
    tmp_path, capfdbinary, monkeypatch
):
    script = tmp_path / "job"
    script.write_text('echo "ran with $# arguments: $*"\n')
    script.chmod(0o755)

    by_path = run(Command(argv=[str(script), "a", "b"], env=ENV))
    monkeypatch.setenv("PATH", f"{tmp_path}:{ENV['PATH']}")  # where names are found
    by_name = run(Command(argv=["job", "c"], env=ENV))

    assert (by_path.exit_status, by_name.exit_status) == (0, 0)
    assert capfdbinary.readouterr().out == (
        b"ran with 2 arguments: a b\nran with 1 arguments: c\n"
    )


def test_an_empty_command_name_is_not_found():
    outcome = run(Command(argv=["", "arg"], env=ENV))

    assert (
        outcome.spawn_error
        == "command not found: '' (an empty word: an unset variable?)"
    )
    assert outcome.exit_status == exits.NOT_FOUND


def test_it_does_not_call_on_started_when_the_spawn_fails():
    calls = []

    run(Command(argv=["cronlog-no-such-command"], env=ENV), lambda: calls.append(1))

    assert calls == []


def test_it_passes_a_megabyte_through_exactly_and_keeps_only_its_end(
    tmp_path, capfdbinary
):
    data = random.Random(0).randbytes(1_000_000)
    (tmp_path / "data").write_bytes(data)

    outcome = run(Command(["cat", str(tmp_path / "data")], ENV, tail_bytes=10_000))

    assert capfdbinary.readouterr().out == data
    assert outcome.output_bytes == len(data)
    assert outcome.output_tail == data[-10_000:]


def test_its_memory_does_not_grow_with_the_output(tmp_path, start_driver):
    driver = start_driver("head", "-c", "1G", "/dev/zero")

    assert driver.wait(WAIT_SECONDS * 2) == 0
    outcome = driver_outcome(tmp_path)
    assert outcome["output_bytes"] == 1024**3
    assert outcome["output_tail"] == "\0" * 64 * 1024
    # Python and the read buffers take about 16 MiB; keeping even 64 KiB of each
    # 1 MiB chunk would take 64 MiB more.
    assert outcome["peak_rss_kib"] < 48 * 1024


def test_it_keeps_no_tail_when_asked_for_none(capfdbinary):
    outcome = run(Command(argv=["echo", "hello"], env=ENV, tail_bytes=0))

    assert outcome.output_tail == b""
    assert outcome.output_bytes == 6
    assert capfdbinary.readouterr().out == b"hello\n"


def test_it_passes_invalid_utf8_through_unchanged(capfdbinary):
    outcome = run(sh(r"printf '\377\376 ok \200'; printf '\303(' >&2"))

    captured = capfdbinary.readouterr()
    assert captured.out == b"\xff\xfe ok \x80"
    assert captured.err == b"\xc3("
    assert outcome.output_tail == b"\xff\xfe ok \x80\xc3("


def test_it_records_nothing_for_a_silent_child(capfdbinary):
    outcome = run(Command(argv=["true"], env=ENV))

    assert capfdbinary.readouterr() == (b"", b"")
    assert outcome.output_tail == b""
    assert outcome.output_bytes == 0


def test_it_keeps_stdout_and_stderr_interleaved_in_arrival_order(capfdbinary):
    script = "printf o1; sleep 0.05; printf e1 >&2; sleep 0.05; printf o2; sleep 0.05"
    outcome = run(sh(f"{script}; printf e2 >&2"))

    assert outcome.output_tail == b"o1e1o2e2"
    assert capfdbinary.readouterr() == (b"o1o2", b"e1e2")


def test_it_gives_the_child_exactly_the_given_environment(capfdbinary):
    env = {"CRONLOG_TASK": "nightly backup", "EMPTY": ""}

    run(Command(argv=["/usr/bin/env"], env=env))

    lines = capfdbinary.readouterr().out.decode().splitlines()
    assert sorted(lines) == ["CRONLOG_TASK=nightly backup", "EMPTY="]


def test_it_runs_argv_without_a_shell(capfdbinary):
    run(Command(argv=["printf", "%s|", "$HOME", "*", "a b"], env=ENV))

    assert capfdbinary.readouterr().out == b"$HOME|*|a b|"


def test_it_runs_the_child_in_a_process_group_of_its_own(capfdbinary):
    code = "import os; print(os.getpid() == os.getpgrp() != os.getpgid(os.getppid()))"

    run(Command(argv=[sys.executable, "-c", code], env=ENV))

    assert capfdbinary.readouterr().out == b"True\n"


def test_the_child_reads_cronlogs_stdin(tmp_path, start_driver):
    driver = start_driver("cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    out, _ = driver.communicate(b"from stdin\n", timeout=WAIT_SECONDS)

    assert out == b"from stdin\n"
    assert driver_outcome(tmp_path)["output_tail"] == "from stdin\n"


def test_it_calls_on_started_in_the_calling_thread_with_a_lowered_switch_interval():
    before = sys.getswitchinterval()
    seen = []

    def on_started():
        seen.append((threading.current_thread(), sys.getswitchinterval()))

    run(Command(argv=["true"], env=ENV), on_started)

    assert seen == [(threading.current_thread(), pytest.approx(0.001))]
    assert sys.getswitchinterval() == before


def test_it_restores_the_previous_signal_handlers():
    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]

        run(Command(argv=["true"], env=ENV))

        assert signal.getsignal(signal.SIGHUP) is handler
        assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == before
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_it_runs_from_another_thread_leaving_the_signal_handlers_alone():
    before = signal.getsignal(signal.SIGTERM)
    outcomes, seen = [], []

    def job():
        outcomes.append(
            run(sh("exit 4"), lambda: seen.append(signal.getsignal(signal.SIGTERM)))
        )

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(WAIT_SECONDS)

    assert [outcome.exit_status for outcome in outcomes] == [4]
    assert seen == [before]


def test_it_measures_a_short_sleep_within_20_ms():
    outcome = run(Command(argv=["sleep", "0.2"], env=ENV))

    assert abs(outcome.duration_ms - 200) <= 20
    wall_ms = (outcome.ended_at - outcome.started_at) / timedelta(milliseconds=1)
    assert abs(wall_ms - outcome.duration_ms) <= 5


def test_it_stamps_start_and_end_in_utc():
    before = datetime.now(UTC)

    outcome = run(Command(argv=["true"], env=ENV))

    for stamp in (outcome.started_at, outcome.ended_at):
        assert stamp.utcoffset() == timedelta(0)
        assert before <= stamp <= datetime.now(UTC)
    assert outcome.started_at <= outcome.ended_at


def test_a_child_that_stops_on_sigterm_at_the_timeout_is_not_sigkilled():
    outcome = run(Command(argv=["sleep", "30"], env=ENV, timeout=0.2, kill_after=5))

    assert outcome.timed_out
    assert outcome.signal == signal.SIGTERM
    assert outcome.exit_status == exits.TIMED_OUT
    assert 200 <= outcome.duration_ms < 1000


def test_it_sigkills_a_child_ignoring_sigterm_after_kill_after(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = f'trap "" TERM\n{STUBBORN_GRANDCHILD}'

    outcome = run(sh(script, str(pid_file), timeout=0.3, kill_after=0.4))

    assert outcome.timed_out
    assert outcome.signal == signal.SIGKILL
    assert outcome.exit_status == exits.TIMED_OUT
    assert 700 <= outcome.duration_ms < 1500
    assert wait_until_gone(read_pid(pid_file))


def test_it_forwards_sigterm_and_leaves_no_process_of_the_group(tmp_path, start_driver):
    pid_file = tmp_path / "grandchild.pid"
    driver = start_driver("sh", "-c", STUBBORN_GRANDCHILD, "sh", pid_file)
    grandchild = read_pid(pid_file)

    driver.send_signal(signal.SIGTERM)

    assert driver.wait(WAIT_SECONDS) == 143
    outcome = driver_outcome(tmp_path)
    assert outcome["forwarded_signal"] == signal.SIGTERM
    assert outcome["signal"] == signal.SIGTERM
    assert wait_until_gone(grandchild)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_it_exits_with_the_forwarded_signal_whatever_the_child_returns(
    tmp_path, signum, start_driver
):
    pid_file = tmp_path / "child.pid"
    script = 'trap "exit 0" TERM INT HUP; echo $$ > "$1"; sleep 30 & wait'
    driver = start_driver("sh", "-c", script, "sh", pid_file)
    read_pid(pid_file)

    driver.send_signal(signum)

    assert driver.wait(WAIT_SECONDS) == 128 + signum
    outcome = driver_outcome(tmp_path)
    assert outcome["returncode"] == 0
    assert outcome["forwarded_signal"] == signum


def test_a_second_signal_kills_the_group(tmp_path, start_driver):
    pid_file = tmp_path / "child.pid"
    script = 'trap "" TERM INT; echo $$ > "$1"; sleep 30'
    driver = start_driver("sh", "-c", script, "sh", pid_file)
    child = read_pid(pid_file)

    driver.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    still_running = is_running(child)
    driver.send_signal(signal.SIGINT)

    assert still_running
    assert driver.wait(WAIT_SECONDS) == 143
    outcome = driver_outcome(tmp_path)
    assert outcome["forwarded_signal"] == signal.SIGTERM
    assert outcome["signal"] == signal.SIGKILL


def test_it_returns_soon_after_the_exit_when_a_background_process_holds_the_pipes(
    tmp_path, capfdbinary
):
    pid_file = tmp_path / "background.pid"
    started = time.monotonic()

    outcome = run(sh('sleep 30 & echo $! > "$1"; echo started', str(pid_file)))

    elapsed = time.monotonic() - started
    os.kill(read_pid(pid_file), signal.SIGKILL)
    assert OUTPUT_GRACE_SECONDS <= elapsed < 2
    assert outcome.duration_ms < 500
    assert outcome.output_tail == b"started\n"
    assert capfdbinary.readouterr().out == b"started\n"


def test_it_passes_output_on_at_once(tmp_path, start_driver):
    go = tmp_path / "go"
    script = """
    echo first
    i=0; while [ ! -e "$1" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
    echo second
    """
    driver = start_driver("sh", "-c", script, "sh", go, stdout=subprocess.PIPE)

    # The child is still waiting for `go`, so the first line was not held back.
    ready, _, _ = select.select([driver.stdout], [], [], WAIT_SECONDS)
    first = driver.stdout.readline() if ready else b""
    go.touch()
    rest, _ = driver.communicate(timeout=WAIT_SECONDS)

    assert first == b"first\n"
    assert rest == b"second\n"
    assert driver.returncode == 0


def test_a_closed_pipe_on_its_stdout_ends_the_child_with_sigpipe_as_without_it(
    tmp_path,
):
    # As `cronlog run -- seq 1 1000000 | head -1` runs; bare, seq dies of SIGPIPE.
    command = driver_command(tmp_path, "seq", "1", "1000000")
    driver = subprocess.Popen(command, env=DRIVER_ENV, stdout=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=driver.stdout, stdout=subprocess.PIPE)
    driver.stdout.close()

    first, _ = head.communicate(timeout=WAIT_SECONDS)

    assert first == b"1\n"
    assert driver.wait(WAIT_SECONDS) == 128 + signal.SIGPIPE
    outcome = driver_outcome(tmp_path)
    assert outcome["signal"] == signal.SIGPIPE
    assert 0 < outcome["output_bytes"] < sum(len(f"{n}\n") for n in range(1, 10**6))


def test_a_child_ignoring_sigpipe_sees_its_write_to_a_closed_pipe_fail(tmp_path):
    script = "trap '' PIPE; exec seq 1 1000000"
    command = driver_command(tmp_path, "sh", "-c", script)
    driver = subprocess.Popen(
        command, env=DRIVER_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = subprocess.Popen(["head", "-1"], stdin=driver.stdout, stdout=subprocess.PIPE)
    driver.stdout.close()

    first, _ = head.communicate(timeout=WAIT_SECONDS)
    errors = driver.stderr.read()

    assert first == b"1\n"
    assert driver.wait(WAIT_SECONDS) == 1
    assert b"Broken pipe" in errors
    assert driver_outcome(tmp_path)["signal"] is None


def test_a_full_disk_on_its_stdout_fails_the_job(tmp_path):
    command = driver_command(tmp_path, "seq", "1", "1000000")

    with open("/dev/full", "wb") as full:
        status = subprocess.run(
            command, env=DRIVER_ENV, stdout=full, timeout=WAIT_SECONDS
        ).returncode

    assert status == 128 + signal.SIGPIPE
    assert driver_outcome(tmp_path)["signal"] == signal.SIGPIPE


def wait_until_full(read_end):
    capacity = fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ)
    pending = array.array("i", [0])
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        fcntl.ioctl(read_end, termios.FIONREAD, pending)
        if pending[0] >= capacity:
            return
        time.sleep(0.01)
    raise AssertionError("the pipe never filled up")


def test_it_waits_for_room_when_its_own_stdout_is_non_blocking(tmp_path):
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # shared with whoever set it: cronlog sees it too
    command = driver_command(tmp_path, "head", "-c", "1000000", "/dev/zero")
    with os.fdopen(read_end, "rb") as reader:
        driver = subprocess.Popen(command, env=DRIVER_ENV, stdout=write_end)
        os.close(write_end)
        wait_until_full(read_end)  # from here on, cronlog's writes would block

        received = reader.read()

    assert driver.wait(WAIT_SECONDS) == 0
    assert received == b"\0" * 1_000_000


def test_it_keeps_capturing_when_its_own_stdout_is_closed(tmp_path):
    command = driver_command(tmp_path, "sh", "-c", "echo out; echo err >&2")

    # As `cronlog run ... >&-` would run: fd 1 closed.
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command],
        env=DRIVER_ENV,
        stderr=subprocess.PIPE,
        timeout=WAIT_SECONDS,
    )

    assert closed.returncode == 0
    assert closed.stderr == b"err\n"
    assert driver_outcome(tmp_path)["output_tail"] == "out\nerr\n"


def test_the_child_keeps_the_inherited_fds_and_no_other(tmp_path, capfdbinary):
    kept = os.open(tmp_path / "kept", os.O_WRONLY | os.O_CREAT)
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT)
    code = f"import os; os.write({kept}, b'kept'); os.write({other}, b'leaked')"
    try:
        outcome = run(Command([sys.executable, "-c", code], ENV, inherit_fds=(kept,)))

        assert not os.get_inheritable(kept)
    finally:
        os.close(kept)
        os.close(other)
    assert (tmp_path / "kept").read_bytes() == b"kept"
    assert (tmp_path / "other").read_bytes() == b""
    assert outcome.returncode == 1
    assert b"Bad file descriptor" in capfdbinary.readouterr().err


def test_a_lock_on_an_inherited_fd_lasts_as_long_as_the_child(tmp_path):
    lock_path = tmp_path / "task.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held_after_cronlog_let_go = []

    def cronlog_dies():
        os.close(fd)  # as a SIGKILLed cronlog's fds are
        held_after_cronlog_let_go.append(not can_lock(lock_path))

    outcome = run(Command(["sleep", "0.3"], ENV, inherit_fds=(fd,)), cronlog_dies)

    assert outcome.returncode == 0
    assert held_after_cronlog_let_go == [True]
    assert can_lock(lock_path)


def can_lock(path):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def signal_masks(text):
    fields = dict(line.split(":\t") for line in text.splitlines())
    return {name: int(fields[name], 16) for name in ("SigBlk", "SigIgn")}


def bit(signum):
    return 1 << (signum - 1)


def test_the_child_gets_default_signals_and_an_empty_mask(capfdbinary):
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        run(Command(["grep", "^Sig", "/proc/self/status"], ENV))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    masks = signal_masks(capfdbinary.readouterr().out.decode())
    assert masks["SigBlk"] == 0
    # Python ignores these two; the test process catches the forwarded ones.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
        assert not masks["SigIgn"] & bit(signum)


def test_a_signal_ignored_when_it_started_stays_ignored_in_the_child(tmp_path):
    # As `cmd &` in a script starts it: SIGINT ignored.
    command = driver_command(tmp_path, "grep", "^Sig", "/proc/self/status")
    ignoring = subprocess.run(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command],
        env=DRIVER_ENV,
        stdout=subprocess.PIPE,
        timeout=WAIT_SECONDS,
    )

    masks = signal_masks(ignoring.stdout.decode())
    assert masks["SigIgn"] & bit(signal.SIGINT)
    assert not masks["SigIgn"] & bit(signal.SIGTERM)


def test_it_says_when_a_scripts_interpreter_is_missing(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/no/such/interpreter\necho never\n")
    script.chmod(0o755)

    outcome = run(Command(argv=[str(script)], env=ENV))

    assert outcome.spawn_error == (
        f"cannot run {script}: its interpreter (the #! line) was not found"
    )
    assert outcome.exit_status == exits.NOT_FOUND


def test_it_names_the_path_of_a_script_found_on_path_without_its_interpreter(
    tmp_path, monkeypatch
):
    script = tmp_path / "cronlog-test-job"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    outcome = run(Command(argv=["cronlog-test-job"], env=ENV))

    assert outcome.spawn_error == (
        f"cannot run {script}: its interpreter (the #! line) was not found"
    )
    assert outcome.exit_status == exits.NOT_FOUND


def test_an_ignored_sigchld_does_not_lose_the_childs_status():
    # As when cronlog is started by a program that ignores SIGCHLD.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        outcome = run(Command(argv=["sh", "-c", "exit 3"], env=ENV))
        after = signal.getsignal(signal.SIGCHLD)
    finally:
        signal.signal(signal.SIGCHLD, previous)

    assert outcome.exit_status == 3
    assert after == signal.SIG_IGN  # put back as it was found
