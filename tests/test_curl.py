"""curl.py: which commands are probed, how argv changes, how the status is read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cronlog import curl
from cronlog.status_codes import DEFAULT_OK_STATUSES, parse_ok_statuses

URL = "https://tradezone.sg/api/tradein/auto-submit"


@pytest.fixture
def no_curlrc(tmp_path):
    """An environment whose home holds no curlrc."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "PATH": "/usr/bin:/bin"}


def prepare(argv, tmp_path, env):
    return curl.prepare(argv, tmp_path, env)


@pytest.mark.parametrize(
    "argv",
    [["curl", URL], ["/usr/bin/curl", "-sS", URL], ["./bin/curl", URL]],
)
def test_it_recognises_curl_by_name_or_path(argv):
    assert curl.is_curl(argv)


@pytest.mark.parametrize(
    "argv", [[], ["curlie", URL], ["sh", "-c", "curl x"], ["/usr/bin/curl2"]]
)
def test_it_does_not_take_other_programs_for_curl(argv):
    assert not curl.is_curl(argv)


def test_it_inserts_a_private_header_file_right_after_curl(tmp_path, no_curlrc):
    argv = ["curl", "-sS", "-X", "POST", URL, "-H", "X-API-Key: k"]

    probe = prepare(argv, tmp_path, no_curlrc)

    assert probe.header_file is not None
    assert Path(probe.header_file).parent == tmp_path
    assert probe.argv == ("curl", "--dump-header", str(probe.header_file), *argv[1:])
    assert stat.S_IMODE(Path(probe.header_file).stat().st_mode) == 0o600
    assert probe.unprobed_reason is None


@pytest.mark.parametrize("first", ["-q", "--disable", "-qsS"])
def test_it_keeps_a_leading_q_first_so_the_curlrc_stays_disabled(
    tmp_path, no_curlrc, first
):
    probe = prepare(["curl", first, URL], tmp_path, no_curlrc)

    assert probe.argv == ("curl", first, "--dump-header", str(probe.header_file), URL)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["curl", "-sSfD", "-", URL], "--dump-header"),
        (["curl", "--dump-header=h.txt", URL], "--dump-header"),
        (["curl", "--dump-h", "h.txt", URL], "--dump-header"),
        (["curl", "-K", "job.cfg"], "-K/--config"),
        (["curl", "-sKjob.cfg"], "-K/--config"),
        (["curl", "--config", "job.cfg"], "-K/--config"),
        (["curl", URL, "--next", URL], "--next"),
        (["curl", URL, "-:", URL], "--next"),
        (["curl", "-Z", URL, URL], "--parallel"),
        (["curl", "--parallel", URL, URL], "--parallel"),
    ],
)
def test_it_leaves_a_command_it_cannot_probe_untouched(tmp_path, no_curlrc, argv, why):
    probe = prepare(argv, tmp_path, no_curlrc)

    assert probe.argv == tuple(argv)
    assert probe.header_file is None
    assert why in probe.unprobed_reason
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]


@pytest.mark.parametrize(
    "argv",
    [
        ["curl", "-oD", URL],  # -o's value is "D"
        ["curl", "-H", "X-Dump: 1", URL],
        ["curl", "-w", "%{http_code}", URL],
        ["curl", "--data", "x=1", URL],
        ["curl", "--no-progress-meter", URL],
        ["curl", "--parallel-max", "3", URL],
        ["curl", "-L", "-f", "-s", "-S", URL],
    ],
)
def test_it_probes_commands_whose_options_leave_the_header_file_alone(
    tmp_path, no_curlrc, argv
):
    probe = prepare(argv, tmp_path, no_curlrc)

    assert probe.header_file is not None
    assert probe.unprobed_reason is None


@pytest.mark.parametrize(
    "line",
    [
        'dump-header = "/tmp/h"',
        "dump-header:/tmp/h",
        "--dump-header /tmp/h",
        "  -sD /tmp/h",
        "next",
        "config = more.cfg",
    ],
)
def test_it_does_not_probe_when_the_curlrc_would_fight_the_probe(tmp_path, line):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text(f"# cronlog test\nsilent\n{line}\n")

    probe = prepare(["curl", URL], tmp_path, {"HOME": str(home)})

    assert probe.header_file is None
    assert str(home / ".curlrc") in probe.unprobed_reason


@pytest.mark.parametrize("variable", ["CURL_HOME", "XDG_CONFIG_HOME"])
def test_it_reads_the_curlrc_where_curl_looks_first(tmp_path, no_curlrc, variable):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".curlrc").write_text("-D /tmp/h\n")

    probe = prepare(["curl", URL], tmp_path, {**no_curlrc, variable: str(elsewhere)})

    assert probe.header_file is None


def test_it_probes_despite_a_harmless_curlrc(tmp_path, no_curlrc):
    home = no_curlrc["HOME"]
    (tmp_path / "home" / ".curlrc").write_text("silent\nshow-error\nmax-time = 30\n")

    probe = prepare(["curl", URL], tmp_path, {"HOME": home})

    assert probe.header_file is not None


def test_a_leading_q_makes_the_curlrc_irrelevant(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text("dump-header = /tmp/h\n")

    probe = prepare(["curl", "-q", URL], tmp_path, {"HOME": str(home)})

    assert probe.header_file is not None


def test_it_does_not_probe_when_it_cannot_create_the_header_file(tmp_path, no_curlrc):
    probe = prepare(["curl", URL], tmp_path / "missing", no_curlrc)

    assert probe.argv == ("curl", URL)
    assert "cannot create a header file" in probe.unprobed_reason


def test_read_status_takes_the_final_response_and_removes_the_file(tmp_path, no_curlrc):
    probe = prepare(["curl", "-L", URL], tmp_path, no_curlrc)
    Path(probe.header_file).write_bytes(
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: /next\r\n\r\n"
        b"HTTP/2 500 \r\ncontent-type: text/plain\r\n\r\n"
    )

    status = curl.read_status(probe)

    assert status == 500
    assert not Path(probe.header_file).exists()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\n", 201),
        (b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 403 No\r\n\r\n", 403),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/2 204\r\n\r\n", 204),
        (b"HTTP/1.0 404 Not Found\r\nX-Note: HTTP/1.1 200 OK\r\n\r\n", 404),
        (b"HTTP/1.1 100 Continue\r\n\r\n", None),
        (b"220 FTP server ready\r\n", None),
        (b"", None),
    ],
)
def test_the_final_status_skips_informational_answers(headers, status):
    assert curl.final_status(headers) == status


def test_read_status_of_an_unprobed_command_is_unknown(tmp_path, no_curlrc):
    probe = prepare(["curl", "-D", "-", URL], tmp_path, no_curlrc)

    assert curl.read_status(probe) is None


def test_read_status_survives_a_header_file_curl_never_wrote(tmp_path, no_curlrc):
    probe = prepare(["curl", URL], tmp_path, no_curlrc)
    Path(probe.header_file).unlink()

    assert curl.read_status(probe) is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (7, "curl exit 7: could not connect to host"),
        (6, "curl exit 6: could not resolve host"),
        (28, "curl exit 28: timed out"),
        (35, "curl exit 35: TLS handshake failed"),
        (60, "curl exit 60: TLS certificate not trusted"),
        (22, "curl exit 22: HTTP error (with -f)"),
        (52, "curl exit 52: empty reply from server"),
        (56, "curl exit 56: connection reset"),
        (99, "curl exit 99"),
    ],
)
def test_it_says_what_curls_exit_status_means(code, words):
    assert curl.describe_exit(code) == words


def test_an_accepted_status_is_a_success():
    assert curl.judge_http(0, 204, DEFAULT_OK_STATUSES, None) == ("success", None, 0)


def test_a_status_not_accepted_fails_with_curl_fails_code():
    assert curl.judge_http(0, 500, DEFAULT_OK_STATUSES, None) == (
        "failed",
        "HTTP 500",
        22,
    )


def test_ok_status_widens_what_is_accepted():
    accepted = parse_ok_statuses("200,3xx")

    assert curl.judge_http(0, 301, accepted, None)[0] == "success"
    assert curl.judge_http(0, 201, accepted, None)[1] == "HTTP 201"


def test_curls_own_failure_keeps_its_exit_status():
    assert curl.judge_http(7, None, DEFAULT_OK_STATUSES, None) == (
        "failed",
        "curl exit 7: could not connect to host",
        7,
    )


def test_an_unprobed_failure_says_the_status_was_not_checked():
    status, reason, exit_status = curl.judge_http(
        22, None, DEFAULT_OK_STATUSES, "the command sets its own --dump-header"
    )

    assert (status, exit_status) == ("failed", 22)
    assert reason.splitlines() == [
        "curl exit 22: HTTP error (with -f)",
        "the HTTP status was not checked: the command sets its own --dump-header",
    ]


def test_an_unknown_status_with_exit_0_is_a_success():
    assert curl.judge_http(0, None, DEFAULT_OK_STATUSES, "uses --next")[0] == "success"


@pytest.mark.parametrize(
    "argv",
    [
        ["curl", "-D", "h.txt", URL],
        ["curl", "-Dh.txt", URL],
        ["curl", URL, "--dump-header", "h.txt"],
        ["curl", "-sSD", "h.txt", URL],
        ["curl", "-sSDh.txt", URL],
    ],
)
def test_a_command_dumping_its_headers_to_a_file_is_judged_from_that_file(
    tmp_path, no_curlrc, argv, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    probe = curl.prepare(argv, tmp_path, no_curlrc)
    Path("h.txt").write_bytes(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")

    status = curl.read_status(probe)

    assert probe.argv == tuple(argv)
    assert (probe.header_file, probe.unprobed_reason) == ("h.txt", None)
    assert status == 503
    assert Path("h.txt").exists()  # the user's file is theirs to keep
