"""Learn the HTTP status of a wrapped curl command without changing what it prints.

curl exits 0 when the server answers HTTP 500, so a curl job judged by its exit code
alone looks healthy while it fails. `prepare` puts `--dump-header <file>` right after
`curl` (after a leading `-q`, which only works as the first argument): curl then writes
every response's header block to a private 0600 file, while its stdout, its stderr and
a user's own `-w/--write-out` stay exactly as they were, and the user's later options
still apply. `read_status` takes the last final status line of that file: with `-L`,
a proxy's CONNECT or `100 Continue`, the final response comes last.

cronlog leaves the command untouched, and judges it by exit code alone, when it cannot
trust the file: the command (or a curlrc that curl reads) sets its own `-D`, reads
options from `-K/--config`, starts a second operation with `--next` (which would not
inherit the inserted option) or runs transfers with `--parallel` (whose headers land
in any order). With several URLs in one operation, the last transfer's status decides.

Checked with curl 7.88.1 (Debian 12), the curl this project targets. `-D/--dump-header`,
`-q` as the first argument and long-option abbreviations (`--dump-h`) go back to curl's
7.x series at least, so the approach is expected to hold for 7.x and 8.x; only 7.88.1
was run. `--dump-header=FILE` is not curl syntax (curl refuses it, exit 2); it is still
treated as the user's own header file so that cronlog never changes such a command.
"""

from __future__ import annotations

import os

from cronlog import exits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cronlog.status_codes import OkStatuses

HEADER_FILE_PREFIX = "curl-headers-"

CURL_EXITS = {
    1: "unsupported protocol",
    3: "malformed URL",
    5: "could not resolve proxy",
    6: "could not resolve host",
    7: "could not connect to host",
    18: "transfer ended before the whole body arrived",
    22: "HTTP error (with -f)",
    23: "could not write the output",
    28: "timed out",
    35: "TLS handshake failed",
    47: "too many redirects",
    52: "empty reply from server",
    55: "failed sending data",
    56: "connection reset",
    60: "TLS certificate not trusted",
}

# Short options whose argument follows, in the same word or the next one. Only letters
# sure to take one are listed: a letter wrongly listed would hide the rest of a group.
_SHORT_WITH_VALUE = frozenset("AbcCdDeEFHKmoPQrtTuUwxXyYz")
# What makes the header file untrustworthy, by short letter and by long name.
_UNPROBEABLE_SHORT = {
    "D": "sets its own --dump-header",
    "K": "reads options from -K/--config",
    ":": "uses --next",
    "Z": "runs transfers with --parallel",
}
_UNPROBEABLE_LONG = {
    "dump-header": _UNPROBEABLE_SHORT["D"],
    "config": _UNPROBEABLE_SHORT["K"],
    "next": _UNPROBEABLE_SHORT[":"],
    "parallel": _UNPROBEABLE_SHORT["Z"],
}
# A curlrc line's option ends at white space, `=` or `:`; its dashes are optional.
_CURLRC_OPTION = r"[^\s=:]+"
# `HTTP/1.1 200 OK`, `HTTP/2 204`: the status of one response in the header file.
_STATUS_LINE = rb"^HTTP/\d(?:\.\d)? ([1-5]\d\d)\b"


class CurlProbe:
    """A curl command ready to run, and where its response headers will be."""

    __slots__ = ("argv", "header_file", "owned", "unprobed_reason")

    def __init__(
        self,
        argv: tuple[str, ...],
        header_file: str | None,
        unprobed_reason: str | None,
        owned: bool = True,
    ) -> None:
        self.argv = argv  # what to run
        self.header_file = header_file  # None when not probed
        self.unprobed_reason = unprobed_reason  # why the status cannot be learned
        self.owned = owned  # cronlog's own file, removed once read (not the user's -D)


def is_curl(argv: Sequence[str]) -> bool:
    """True when the program run is curl itself, by name or by path."""
    return bool(argv) and (argv[0] == "curl" or argv[0].endswith("/curl"))


def prepare(
    argv: Sequence[str], workdir: str, env: Mapping[str, str] | None = None
) -> CurlProbe:
    """The command to run: `argv` with a private `--dump-header`, or as it was.

    A command that already dumps its headers to one file is left as it is, and that
    file is read. `env` is the job's environment, which says where curl looks for a
    curlrc.
    """
    argv = tuple(argv)
    disables_curlrc = _disables_curlrc(argv)
    users_file = _users_header_file(argv[1:])
    if users_file is not None:
        return CurlProbe(argv, users_file, None, owned=False)
    reason = _unprobeable_reason(argv[1:])
    if reason is None and not disables_curlrc:
        reason = _curlrc_reason(os.environ if env is None else env)
    if reason is not None:
        return CurlProbe(argv, None, reason)

    import tempfile

    try:
        handle, name = tempfile.mkstemp(prefix=HEADER_FILE_PREFIX, dir=workdir)
    except OSError as error:
        return CurlProbe(
            argv, None, f"cannot create a header file in {workdir}: {error.strerror}"
        )
    os.close(handle)

    at = 2 if disables_curlrc else 1
    probed = (*argv[:at], "--dump-header", name, *argv[at:])
    return CurlProbe(probed, name, None)


def read_status(probe: CurlProbe) -> int | None:
    """The final HTTP status curl received, or None; removes the header file."""
    if probe.header_file is None:
        return None

    try:
        with open(probe.header_file, "rb") as file:
            headers = file.read()
    except OSError:
        return None
    finally:
        if probe.owned:
            _remove(probe.header_file)

    return final_status(headers)


def final_status(headers: bytes) -> int | None:
    """The status of the last response that is not informational (1xx)."""
    import re

    statuses = [int(match) for match in re.findall(_STATUS_LINE, headers, re.MULTILINE)]
    final = [status for status in statuses if status >= 200]
    return final[-1] if final else None


def describe_exit(code: int) -> str:
    """curl's exit status in words: `curl exit 7: could not connect to host`."""
    meaning = CURL_EXITS.get(code)
    return f"curl exit {code}: {meaning}" if meaning else f"curl exit {code}"


def judge_http(
    exit_code: int,
    http_status: int | None,
    ok: OkStatuses,
    unprobed_reason: str | None,
) -> tuple[str, str | None, int]:
    """(status, reason, exit status) of a curl run that exited on its own.

    A status that is not accepted fails the run with exit 22, curl --fail's code, so
    cron sees the failure too; jobs adds the tail of the body to the notes.
    """
    if exit_code != 0:
        reason = describe_exit(exit_code)
        if unprobed_reason is not None:
            reason += f"\nthe HTTP status was not checked: {unprobed_reason}"
        return "failed", reason, exit_code

    if http_status is not None and not ok.accepts(http_status):
        return "failed", f"HTTP {http_status}", exits.HTTP_ERROR

    return "success", None, 0


def _users_header_file(words: Sequence[str]) -> str | None:
    """The file of the command's own single `-D FILE`, when nothing else prevents
    reading it; None otherwise (no -D, `-D -`, several, or other obstacles)."""
    found = [
        (position, _dump_header_option(word)) for position, word in enumerate(words)
    ]
    dumps = [(position, split) for position, split in found if split is not None]
    if len(dumps) != 1:
        return None

    position, (flags, inline) = dumps[0]
    kept = [flags] if flags != "-" else []
    if inline:
        target, rest = inline, [*words[:position], *kept, *words[position + 1 :]]
    elif position + 1 < len(words):
        target = words[position + 1]
        rest = [*words[:position], *kept, *words[position + 2 :]]
    else:
        return None

    if target in ("", "-") or target.startswith("%") or _unprobeable_reason(rest):
        return None
    return target


def _dump_header_option(word: str) -> tuple[str, str] | None:
    """For a word that sets --dump-header (`--dump-header`, `-D`, `-DFILE`, `-sSD`):
    the short flags before the D (`-sS`) and the file if it is in the same word."""
    if word == "--dump-header":
        return "-", ""
    if not word.startswith("-") or word.startswith("--"):
        return None
    for index, letter in enumerate(word[1:], start=1):
        if letter == "D":
            return word[:index], word[index + 1 :]
        if letter in _SHORT_WITH_VALUE:
            return None  # the rest of the word is that option's value
    return None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return  # already gone: that is what was wanted


def _disables_curlrc(argv: tuple[str, ...]) -> bool:
    # curl skips its curlrc only when -q (alone or leading a group) comes first.
    first = argv[1] if len(argv) > 1 else ""
    return first == "--disable" or (first.startswith("-q") and first != "-")


def _unprobeable_reason(words: Sequence[str]) -> str | None:
    """Why these curl arguments make the header file untrustworthy, or None.

    Every word is looked at, values included: a value that looks like `-D` costs only
    the probe, while skipping a real option would let cronlog change the command.
    """
    for word in words:
        what = _option_problem(word)
        if what is not None:
            return f"the command {what}"
    return None


def _option_problem(word: str) -> str | None:
    if word.startswith("--"):
        # curl accepts any unambiguous abbreviation of a long option.
        name = word[2:].partition("=")[0]
        if not name:
            return None
        return next(
            (what for full, what in _UNPROBEABLE_LONG.items() if full.startswith(name)),
            None,
        )

    if word.startswith("-"):
        for letter in word[1:]:
            if letter in _UNPROBEABLE_SHORT:
                return _UNPROBEABLE_SHORT[letter]
            if letter in _SHORT_WITH_VALUE:
                return None  # the rest of the word is that option's value
    return None


def _curlrc_reason(env: Mapping[str, str]) -> str | None:
    """Why a curlrc curl may read makes the header file untrustworthy, or None."""
    import re

    for path in _curlrc_candidates(env):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                lines = file.read().splitlines()
        except OSError:
            continue
        for line in lines:
            option = re.match(_CURLRC_OPTION, line.strip())
            if option is None or option.group().startswith("#"):
                continue
            word = option.group()
            what = _option_problem(word if word.startswith("-") else f"--{word}")
            if what is not None:
                return f"{path} {what}"
    return None


def _curlrc_candidates(env: Mapping[str, str]) -> list[str]:
    """Every file some curl version reads as its curlrc (only the first found is)."""
    home = env.get("HOME") or _home_of_user()

    candidates = [
        os.path.join(directory, ".curlrc")
        for directory in (env.get("CURL_HOME"), env.get("XDG_CONFIG_HOME"), home)
        if directory
    ]
    if env.get("XDG_CONFIG_HOME"):
        candidates.append(os.path.join(env["XDG_CONFIG_HOME"], "curlrc"))
    if home:
        candidates.append(os.path.join(home, ".config", "curlrc"))
    return candidates


def _home_of_user() -> str | None:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None
