"""Durations as written on a crontab line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronlog.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("30", 30),
        ("1.5s", 1.5),
        ("2d", 172800),
        (" 5M ", 300),
    ],
)
def test_it_reads_the_units_people_write(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "5x", "m", "1h 30m", "-1", "inf", "nan", "1e400", "5mm"]
)
def test_anything_else_is_a_value_error_quoting_it(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (90, "90s"), (0.5, "500ms"), (3600, "1h"), (0, "0s")],
)
def test_it_writes_the_shortest_exact_spelling(seconds, text):
    assert format_duration(seconds) == text


@given(st.text(max_size=40))
def test_any_text_gives_a_duration_or_a_value_error(text):
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert 0 <= seconds <= 366 * 86400


@given(st.integers(min_value=0, max_value=366 * 86400))
def test_formatting_then_parsing_gives_the_same_seconds(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
