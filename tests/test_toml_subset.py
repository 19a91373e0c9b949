"""The subset reader gives tomllib's answer or none, and spares the run tomllib."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cronlog import toml_subset

EXAMPLE = Path(__file__).parent.parent / "examples" / "config.toml"


def agrees_with_tomllib(text: str) -> bool:
    """True when loads gave None or exactly what tomllib gives."""
    result = toml_subset.loads(text)
    if result is None:
        return True
    return result == tomllib.loads(text) and types_of(result) == types_of(
        tomllib.loads(text)
    )


def types_of(value: object) -> object:
    """The value's shape with every leaf's type, so 1 and 1.0 and True differ."""
    if isinstance(value, dict):
        return {key: types_of(item) for key, item in value.items()}
    return type(value).__name__


def test_the_example_config_reads_as_tomllib_reads_it() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")

    result = toml_subset.loads(text)

    assert result is not None
    assert result == tomllib.loads(text)
    assert result["tasks"]["nightly-backup"]["schedule"] == "0 3 * * *"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ('a = "x\\ty\\n\\"\\\\\\u00e9"', {"a": 'x\ty\n"\\é'}),
        ("a = 'C:\\path'  # comment", {"a": "C:\\path"}),
        ('"a b" = true\nc = false#x', {"a b": True, "c": False}),
        ("a = -0\nb = +12\nc = 0.50", {"a": 0, "b": 12, "c": 0.5}),
        (
            '[ tasks . "a b" ]\nx = "1"\n[tasks.c]',
            {"tasks": {"a b": {"x": "1"}, "c": {}}},
        ),
    ],
)
def test_it_reads_the_subset(text: str, expected: dict[str, object]) -> None:
    assert toml_subset.loads(text) == expected == tomllib.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "a = [1]",
        "a = {b = 1}",
        'a = """x"""',
        "a = '''x'''",
        "a = 1979-05-27",
        "a = 1e3",
        "a = 1_000",
        "a = 0x1F",
        "a = inf",
        'a = "\\b"',
        'a = "\\U0001F600"',
        "a.b = 1",
        "'a' = 1",
        "a = 1\r\n",
        "[tasks]",
        "[other.x]",
        "[[tasks.x]]",
        "[tasks.a.b]",
        "tasks = 1\n[tasks.a]",
        "a = 1\na = 2",
        '[tasks.a]\n[tasks."a"]',
        'a = "\\ud800"',
    ],
)
def test_it_leaves_everything_else_to_tomllib(text: str) -> None:
    assert toml_subset.loads(text) is None


@pytest.mark.parametrize(
    "text", ["a = 01", 'a = "x', "a =", "= 1", "a = 1 2", "[tasks.a"]
)
def test_it_gives_no_answer_where_tomllib_gives_an_error(text: str) -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)

    assert toml_subset.loads(text) is None


SPACE = st.sampled_from(["", " ", "\t", "  "])
BARE_KEY = st.text("abcXYZ019_-", min_size=1, max_size=6)
STRING_PIECE = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=4),
    st.sampled_from(
        [
            '\\"',
            "\\\\",
            "\\n",
            "\\t",
            "\\u00e9",
            "\\uD800",
            "\\u12",
            "\\U0001F600",
            "\\b",
            "\\x",
            "'",
            '"',
            "#",
            "\t",
        ]
    ),
)
BASIC_STRING = st.lists(STRING_PIECE, max_size=4).map(lambda p: '"' + "".join(p) + '"')
LITERAL_STRING = st.lists(STRING_PIECE, max_size=4).map(
    lambda p: "'" + "".join(p) + "'"
)
KEY = st.one_of(
    BARE_KEY, BASIC_STRING, LITERAL_STRING, st.just("tasks"), st.just("a.b")
)
NUMBER = st.from_regex(r"\A[+-]?[0-9_]{1,5}(\.[0-9_]{0,4})?([eE][+-]?[0-9]{1,2})?\Z")
VALUE = st.one_of(
    BASIC_STRING,
    LITERAL_STRING,
    NUMBER,
    st.sampled_from(["true", "false", "True", "truex", "nan", "[1]", '"""x"""', ""]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
COMMENT = st.one_of(st.just(""), st.text(max_size=6).map(lambda t: "#" + t))
PAIR = st.tuples(
    SPACE, KEY, SPACE, st.sampled_from(["=", "", "=="]), SPACE, VALUE, SPACE, COMMENT
).map("".join)
HEADER = st.tuples(
    st.sampled_from(["[", "[[", "[ "]),
    st.sampled_from(["tasks", '"tasks"', "other", "tasks.a"]),
    st.sampled_from([".", " . ", ""]),
    st.one_of(BARE_KEY, BASIC_STRING, st.just("")),
    st.sampled_from(["]", " ]", "]]", ""]),
    SPACE,
    COMMENT,
).map("".join)
JUNK = st.text(max_size=8)
LINE = st.one_of(PAIR, PAIR, PAIR, HEADER, COMMENT, SPACE, JUNK)
DOCUMENT = st.tuples(
    st.lists(LINE, max_size=8), st.sampled_from(["\n", "\n", "\n", "\r\n"])
).map(lambda parts: parts[1].join(parts[0]))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENT)
@example('a = "x"\n[tasks.b]\nc = 1.5')
def test_a_generated_document_reads_as_tomllib_reads_it(text: str) -> None:
    assert agrees_with_tomllib(text)


@settings(max_examples=1500)
@given(st.text())
def test_any_text_reads_as_tomllib_reads_it_or_not_at_all(text: str) -> None:
    assert agrees_with_tomllib(text)


def test_the_config_file_is_read_without_tomllib_or_re() -> None:
    # No json in the child: it imports re itself.
    script = (
        "import sys\n"
        "from cronlog import config\n"
        "before = set(sys.modules)\n"
        f"document = config.load_config_file({str(EXAMPLE)!r})\n"
        "print(sorted(document['tasks']))\n"
        "print(sorted(set(sys.modules) - before))\n"
        "print('tomllib' in sys.modules, 're' in sys.modules)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert done.stdout.splitlines() == ["['nightly-backup']", "[]", "False False"]
