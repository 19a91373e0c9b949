"""Which HTTP statuses count as a successful HTTP job (`--ok-status 200,204,3xx`)."""

from __future__ import annotations

DEFAULT_OK = "2xx"


class OkStatuses:
    """A set of accepted statuses: exact codes and whole classes such as `2xx`."""

    __slots__ = ("classes", "codes", "text")

    def __init__(
        self, codes: frozenset[int], classes: frozenset[int], text: str
    ) -> None:
        self.codes = codes
        self.classes = classes
        self.text = text

    def accepts(self, status: int) -> bool:
        return status in self.codes or status // 100 in self.classes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OkStatuses) and (self.codes, self.classes) == (
            other.codes,
            other.classes,
        )

    def __hash__(self) -> int:
        return hash((self.codes, self.classes))

    def __repr__(self) -> str:
        return f"OkStatuses({self.text!r})"


def parse_ok_statuses(text: str) -> OkStatuses:
    """`200,204,3xx` -> OkStatuses. Raises ValueError naming the bad part."""
    codes: set[int] = set()
    classes: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if len(part) == 3 and part.endswith("xx") and part[0] in "12345":
            classes.add(int(part[0]))
        elif len(part) == 3 and part.isdigit() and 100 <= int(part) <= 599:
            codes.add(int(part))
        else:
            raise ValueError(
                f"not an HTTP status or class: {part!r} (e.g. 200,204,3xx)"
            )
    return OkStatuses(frozenset(codes), frozenset(classes), text.strip())


DEFAULT_OK_STATUSES = parse_ok_statuses(DEFAULT_OK)
