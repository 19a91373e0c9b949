"""The report's notes: why it failed, then the end of the output, clean and bounded."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cronlog import notes


def test_colour_codes_and_control_characters_are_removed():
    raw = b"\x1b[1;31mERROR\x1b[0m \x1b]0;title\x07done\r\n\x00\x07bell"

    assert notes.clean(raw) == "ERROR done\nbell"


def test_invalid_utf8_becomes_replacement_characters():
    assert notes.clean(b"caf\xc3\xa9 \xff") == "café \ufffd"


def test_a_cut_tail_drops_the_half_character_it_starts_with():
    assert notes.clean("é!".encode()[1:], truncated=True) == "!"


def test_the_key_and_credential_shaped_text_are_redacted():
    raw = (
        b"using key s3cr3t-value-123\n"
        b"X-API-Key: abc\nauthorization: Bearer xyz\nCookie: session=1\n"
        b"GET /x?token=t0k&page=2 password=hunter2 api_key=k9"
    )

    cleaned = notes.clean(raw, ["s3cr3t-value-123"])

    assert cleaned == (
        "using key [redacted]\n"
        "X-API-Key: [redacted]\nauthorization: [redacted]\nCookie: [redacted]\n"
        "GET /x?token=[redacted]&page=2 password=[redacted] api_key=[redacted]"
    )


def test_the_reason_comes_first_then_the_output():
    assert notes.build("exit 3", "line one\nline two\n") == "exit 3\nline one\nline two"


def test_user_notes_are_put_before_the_reason():
    assert notes.build("exit 3", "out", extra="weekly run") == "weekly run\nexit 3\nout"


def test_nothing_to_say_is_none():
    assert notes.build(None, "") is None


def test_long_output_keeps_its_end_and_says_how_much_was_cut():
    output = "".join(f"line {n}\n" for n in range(5000))

    built = notes.build("exit 1", output, earlier_bytes=100)

    assert built is not None and len(built) <= notes.NOTES_LIMIT
    first, marker, rest = built.split("\n", 2)
    assert first == "exit 1"
    assert rest.endswith("line 4999")
    assert output.rstrip("\n").endswith(rest)
    dropped = output.rstrip("\n")[: -len(rest)]
    assert marker == f"[… {100 + len(dropped.encode()):,} bytes of earlier output cut]"


def test_newlines_at_the_start_of_the_kept_output_count_as_cut():
    text = notes.build("exit 1", "\n\n" + "x" * 200, earlier_bytes=1000, limit=250)

    # 243 characters of room after "exit 1\n", 100 of them for the marker: 143 kept
    assert text == "exit 1\n[… 1,059 bytes of earlier output cut]\n" + "x" * 143


def test_a_long_user_note_leaves_room_for_the_reason():
    text = notes.build("exit 1", "the tail", extra="n" * 5000, limit=4000)

    assert len(text) <= 4000
    assert "\nexit 1\n" in text
    assert text.endswith("the tail")


def test_a_reason_line_is_redacted_too():
    assert notes.build("command not found: key-abcdef", secrets=["key-abcdef"]) == (
        "command not found: [redacted]"
    )


@given(
    raw=st.binary(max_size=20000),
    reason=st.one_of(st.none(), st.text(max_size=300)),
    extra=st.one_of(st.none(), st.text(max_size=300)),
    earlier=st.integers(min_value=0, max_value=10**12),
    limit=st.integers(min_value=1, max_value=5000),
)
def test_any_bytes_give_valid_json_notes_within_the_limit(
    raw, reason, extra, earlier, limit
):
    built = notes.build(
        reason,
        notes.clean(raw, ["secret-key"], truncated=earlier > 0),
        extra=extra,
        earlier_bytes=earlier,
        secrets=["secret-key"],
        limit=limit,
    )

    if built is None:
        return
    assert len(built) <= limit
    assert json.loads(json.dumps(built, ensure_ascii=False)) == built
    built.encode("utf-8")  # no lone surrogates: cut on a character boundary
    assert "secret-key" not in built or "secret-key" in (reason or "") + (extra or "")
