"""The report's `notes`: why a run failed, then the end of what the job printed.

What a job prints is controlled by whoever controls the job, so it is treated as
hostile text: decoded as UTF-8 with replacement (any bytes give valid JSON), stripped of
terminal escape codes, scrubbed of secrets, and cut to a limit on a character boundary,
keeping the end, where the error usually is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NOTES_LIMIT = 4000
REDACTED = "[redacted]"
MARKER_ROOM = 100  # what the "[… N bytes of earlier output cut]" line may take

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), lone ESCs.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
)
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))
# Control characters other than tab and newline say nothing to a person reading notes.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Header lines and parameters that carry credentials: keep the name, hide the value.
_SECRET_HEADERS = re.compile(
    r"(?im)((?:x-api-key|authorization|proxy-authorization|cookie|set-cookie)\s*:\s*)"
    r"[^\r\n\"']+"
)
_SECRET_PARAMETERS = re.compile(
    r"(?i)\b((?:password|passwd|token|api_key|apikey|access_token|secret)=)[^\s&\"']+"
)


def clean(raw: bytes, secrets: Iterable[str] = (), *, truncated: bool = False) -> str:
    """Printable, secret-free text from whatever bytes a job wrote.

    A `truncated` tail may begin inside a multi-byte character: those stray
    continuation bytes are dropped rather than shown as replacement marks.
    """
    if truncated:
        raw = raw.lstrip(_CONTINUATION_BYTES)
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    text = _CONTROLS.sub("", _ESCAPES.sub("", text))
    return redact(text, secrets)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values and credential-shaped text by `[redacted]`."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _SECRET_HEADERS.sub(lambda m: m.group(1) + REDACTED, text)
    return _SECRET_PARAMETERS.sub(lambda m: m.group(1) + REDACTED, text)


def build(
    reason: str | None,
    output: str = "",
    *,
    extra: str | None = None,
    earlier_bytes: int = 0,
    secrets: Iterable[str] = (),
    limit: int = NOTES_LIMIT,
    separator: str = "\n",
) -> str | None:
    """The notes: `extra` (the user's --notes), the reason line, then the output's tail.

    `output` is already cleaned; `earlier_bytes` counts what the runner did not keep.
    `separator` goes between the reason and the output (`HTTP 500: <body>`). Nothing
    is returned when there is nothing to say.
    """
    if extra and len(extra) > limit // 2:
        extra = _fit(extra, limit // 2)  # a long --notes must leave room for the reason
    head = [redact(line, secrets) for line in (extra, reason) if line]
    trimmed = output.lstrip("\n")
    leading_newlines = len(output) - len(trimmed)  # part of what is cut, if any is
    output = trimmed.rstrip("\n")
    if not output:
        return _fit("\n".join(head), limit) or None

    prefix = "\n".join(head)
    room = limit - len(prefix) - len(separator) if prefix else limit
    if room <= 0:
        return _fit(prefix, limit)

    if len(output) > room or earlier_bytes:
        if room <= MARKER_ROOM:
            return _fit(prefix, limit)
        kept = output[-(room - MARKER_ROOM) :]
        dropped = output[: len(output) - len(kept)]
        cut = earlier_bytes + leading_newlines + len(dropped.encode())
        output = _marker(cut) + kept
    return f"{prefix}{separator}{output}" if prefix else output


def _marker(cut_bytes: int) -> str:
    """Says how much came before what is kept (counted after colour codes went)."""
    return f"[… {cut_bytes:,} bytes of earlier output cut]\n"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
