"""Durations as people write them in a crontab line: `90s`, `5m`, `1h30m`, `500ms`.

Read by hand rather than with `re`: this runs before every job, and importing `re`
costs more than all the parsing cronlog does there.
"""

from __future__ import annotations

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DIGITS = "0123456789"
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
    """Sum the `<number><unit>` parts that make up all of `cleaned`."""
    position, total = 0, 0.0
    while position < len(cleaned):
        number_end = _number_end(cleaned, position)
        unit = (
            "ms" if cleaned.startswith("ms", number_end) else cleaned[number_end:][:1]
        )
        if number_end == position or unit not in _UNIT_SECONDS:
            raise ValueError(
                f"not a duration: {original!r} (write e.g. 90s, 5m, 1h30m, 500ms)"
            )
        total += float(cleaned[position:number_end]) * _UNIT_SECONDS[unit]
        position = number_end + len(unit)
    return total


def _number_end(text: str, start: int) -> int:
    """Where the number at `start` ends: digits, then a dot only if digits follow."""
    end = _digits_end(text, start)
    if end > start and text.startswith(".", end):
        fraction_end = _digits_end(text, end + 1)
        if fraction_end > end + 1:
            end = fraction_end
    return end


def _digits_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    return end


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
