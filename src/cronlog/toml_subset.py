"""A reader of the small part of TOML that cronlog's config files use.

`import tomllib` brings `re`, `typing`, `string` and `datetime`, which cost more
before every job than the rest of cronlog's start. This reader takes comments,
`key = value` lines with bare or "double-quoted" keys, basic strings with the escapes
\\" \\\\ \\n \\t \\uXXXX, 'literal' strings, booleans, decimal integers, plain floats
and `[tasks.ID]` headers. For anything else, even valid TOML, it answers None and the
caller asks tomllib, so its answer is tomllib's or nothing: it gives no errors of
its own.
"""

from __future__ import annotations

# Annotations only: a runtime `typing` would undo the point of this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BARE_KEY_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
DIGITS = frozenset("0123456789")
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
SPACE = " \t"
VALUE_END = " \t#"
TABLE = "tasks"
# Longer numbers go to tomllib, which alone knows what to make of them.
NUMBER_LIMIT = 18


class _Outside(Exception):
    """The text leaves the subset; tomllib must judge it."""


def loads(text: str) -> dict[str, Any] | None:
    """The document as tomllib would read it, or None when it is outside the subset."""
    for character in text:
        # Control characters are never valid TOML, and a CR only in a CRLF, which
        # this reader leaves to tomllib.
        if (character < " " and character not in "\t\n") or character == "\x7f":
            return None

    try:
        return _document(text)
    except _Outside:
        return None


def _document(text: str) -> dict[str, Any]:
    document: dict[str, Any] = {}
    table = document
    tasks: dict[str, dict[str, Any]] | None = None
    for line in text.split("\n"):
        position = _skip_space(line, 0)
        if position == len(line) or line[position] == "#":
            continue

        if line[position] == "[":
            task_id, position = _header(line, position + 1)
            if tasks is None:
                tasks = document[TABLE] = {}
            if task_id in tasks:
                raise _Outside
            table = tasks[task_id] = {}
        else:
            key, position = _key(line, position)
            position = _skip_space(line, position)
            if line[position : position + 1] != "=":
                raise _Outside
            value, position = _value(line, _skip_space(line, position + 1))
            # A root `tasks` value would clash with the headers' table.
            if key in table or (table is document and key == TABLE):
                raise _Outside
            table[key] = value

        position = _skip_space(line, position)
        if position < len(line) and line[position] != "#":
            raise _Outside
    return document


def _skip_space(line: str, position: int) -> int:
    while position < len(line) and line[position] in SPACE:
        position += 1
    return position


def _header(line: str, position: int) -> tuple[str, int]:
    """`[tasks.ID]` from just after the bracket: the ID and where the line goes on."""
    table, position = _key(line, _skip_space(line, position))
    position = _skip_space(line, position)
    if table != TABLE or line[position : position + 1] != ".":
        raise _Outside

    task_id, position = _key(line, _skip_space(line, position + 1))
    position = _skip_space(line, position)
    if line[position : position + 1] != "]":
        raise _Outside
    return task_id, position + 1


def _key(line: str, position: int) -> tuple[str, int]:
    if line[position : position + 1] == '"':
        return _basic_string(line, position)

    end = position
    while end < len(line) and line[end] in BARE_KEY_CHARACTERS:
        end += 1
    if end == position:
        raise _Outside
    return line[position:end], end


def _value(line: str, position: int) -> tuple[Any, int]:
    if line.startswith('"', position):
        if line.startswith('"""', position):
            raise _Outside
        return _basic_string(line, position)

    if line.startswith("'", position):
        end = line.find("'", position + 1)
        if line.startswith("'''", position) or end < 0:
            raise _Outside
        return line[position + 1 : end], end + 1

    end = position
    while end < len(line) and line[end] not in VALUE_END:
        end += 1
    token = line[position:end]
    if token in ("true", "false"):
        return token == "true", end
    return _number(token), end


def _basic_string(line: str, position: int) -> tuple[str, int]:
    """The string whose opening quote is at `position`, and the index past its end."""
    parts = []
    start = index = position + 1
    while index < len(line):
        character = line[index]
        if character == '"':
            parts.append(line[start:index])
            return "".join(parts), index + 1
        if character != "\\":
            index += 1
            continue

        parts.append(line[start:index])
        escape = line[index + 1 : index + 2]
        if escape == "u":
            digits = line[index + 2 : index + 6]
            if len(digits) != 4 or not set(digits) <= HEX_DIGITS:
                raise _Outside
            code = int(digits, 16)
            if 0xD800 <= code <= 0xDFFF:  # not a Unicode scalar value
                raise _Outside
            parts.append(chr(code))
            index += 6
        elif escape in ESCAPES:
            parts.append(ESCAPES[escape])
            index += 2
        else:
            raise _Outside
        start = index
    raise _Outside


def _number(token: str) -> int | float:
    """A decimal integer or a float with a fraction and no exponent, as TOML has it."""
    body = token[1:] if token[:1] in ("+", "-") else token
    whole, dot, fraction = body.partition(".")
    if (
        len(body) > NUMBER_LIMIT
        or not _is_decimal(whole)
        or (dot and not (fraction and set(fraction) <= DIGITS))
    ):
        raise _Outside
    return float(token) if dot else int(token)


def _is_decimal(digits: str) -> bool:
    """Digits without a leading zero, or a lone zero."""
    return (
        bool(digits) and set(digits) <= DIGITS and (digits[0] != "0" or digits == "0")
    )
