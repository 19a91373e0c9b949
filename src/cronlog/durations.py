"""Durations as people write them in a crontab line: `90s`, `5m`, `1h30m`, `500ms`."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
MAX_SECONDS = 366 * 86400.0  # a year and a day: anything longer is a typo


def parse_duration(text: str) -> float:
    """Seconds in `text` (a bare number is seconds); ValueError names the text."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError("empty duration (write e.g. 90s, 5m, 1h)")

    try:
        seconds = float(cleaned)
    except ValueError:
        seconds = _parse_units(text, cleaned)

    if not 0 <= seconds <= MAX_SECONDS or seconds != seconds:
        raise ValueError(f"duration out of range: {text!r} (0 to 366d)")
    return seconds


def _parse_units(original: str, cleaned: str) -> float:
    position, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(cleaned) or position == 0:
        raise ValueError(
            f"not a duration: {original!r} (write e.g. 90s, 5m, 1h30m, 500ms)"
        )
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 300 -> `5m`, 90 -> `90s`, 0.5 -> `500ms`."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    if whole == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
