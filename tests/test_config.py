"""Settings come from flags, then environment, then the config file, then defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains

from cronlog import config
from cronlog.errors import ConfigError


def write_config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config" / "cronlog" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        **extra,
    }


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'url = "https://file.example"\n')
    env = env_for(tmp_path, CRONLOG_URL="https://env.example")

    from_flag = config.resolve({"url": "https://flag.example"}, env)
    from_env = config.resolve({}, env)
    from_file = config.resolve({}, env_for(tmp_path))

    assert (from_flag.url.value, from_flag.url.source) == (
        "https://flag.example",
        "--url",
    )
    assert (from_env.url.value, from_env.url.source) == (
        "https://env.example",
        "CRONLOG_URL",
    )
    assert from_file.url.value == "https://file.example"
    assert from_file.url.source.startswith("config file ")


def test_with_nothing_configured_there_is_no_dashboard(tmp_path: Path) -> None:
    settings = config.resolve({}, env_for(tmp_path))

    assert settings.url.value is None
    assert settings.ingest_url is None
    assert settings.report_timeout.value == config.DEFAULT_REPORT_TIMEOUT


@pytest.mark.parametrize(
    "base",
    [
        "https://dash.example/prefix",
        "https://dash.example/prefix/",
        "https://dash.example/prefix/api/scheduled-tasks/ingest",
    ],
)
def test_the_ingest_path_is_joined_whatever_the_trailing_slash(base: str) -> None:
    assert (
        config.ingest_url(base)
        == "https://dash.example/prefix/api/scheduled-tasks/ingest"
    )


def test_the_key_comes_from_cronlog_api_key_before_chatkit_api_key(
    tmp_path: Path,
) -> None:
    both = env_for(tmp_path, CRONLOG_API_KEY="mine", CHATKIT_API_KEY="dashboards")
    only_chatkit = env_for(tmp_path, CHATKIT_API_KEY="dashboards")

    assert config.resolve({}, both).api_key.value == "mine"
    assert config.resolve({}, only_chatkit).api_key.value == "dashboards"
    assert config.resolve({}, only_chatkit).api_key.source == "CHATKIT_API_KEY"


def test_a_key_file_is_read_and_trimmed(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("  s3cret-key-value \n")
    key_file.chmod(0o600)

    settings = config.resolve({"api_key_file": str(key_file)}, env_for(tmp_path))

    assert settings.api_key.value == "s3cret-key-value"
    assert "s3cret" not in settings.api_key.source


def test_an_empty_or_missing_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")

    with pytest.raises(ConfigError, match="is empty"):
        config.resolve({"api_key_file": str(empty)}, env_for(tmp_path))
    with pytest.raises(ConfigError, match="cannot read key file"):
        config.resolve({"api_key_file": str(tmp_path / "nope")}, env_for(tmp_path))


def test_a_key_file_is_read_only_as_far_as_a_key_can_go(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_text("k" * 10_000)

    with pytest.raises(ConfigError, match=f"key file {big} is over 4096 characters"):
        config.resolve({"api_key_file": str(big)}, env_for(tmp_path))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_a_key_file_that_is_not_a_file_is_refused_without_reading_it(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block until something writes
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path(kind)

    with pytest.raises(ConfigError, match=f"key file {path} is not a regular file"):
        config.resolve({"api_key_file": str(path)}, env_for(tmp_path))


def test_a_ca_bundle_under_home_is_expanded_where_it_is_used(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "ca.pem").write_text("")
    write_config(tmp_path, 'ca_bundle = "~/ca.pem"\n')

    settings = config.resolve({}, {**env_for(tmp_path), "HOME": str(home)})

    assert settings.ca_bundle.value == str(home / "ca.pem")


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "url = \n")

    with pytest.raises(ConfigError, match=f"config file {path} is not valid TOML"):
        config.resolve({}, env_for(tmp_path))


def test_a_byte_order_mark_is_named_as_the_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, '\ufeffurl = "http://127.0.0.1:8787"\n')

    with pytest.raises(ConfigError, match=f"config file {path} starts with a byte"):
        config.resolve({}, env_for(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('urll = "x"\n', "unknown key 'urll'"),
        ("url = 3\n", "'url' must be a str"),
        ('allow_http = "yes"\n', "'allow_http' must be a bool"),
        ('api_key = "a"\napi_key_file = "b"\n', "not both"),
        ('[tasks.x]\nschedule = "* * * * *"\n', "needs a title"),
        ('[tasks.x]\ntitle = "X"\ncolour = "red"\n', "unknown key 'colour'"),
        ('report_timeout = "soon"\n', "not a duration"),
        ('[tasks.x]\ntitle = "X"\nschedule = "bogus cron"\n', "not a cron expression"),
        ('[tasks.x]\ntitle = "X"\ntimezone = "Mars/Olympus"\n', "unknown timezone"),
        ('[tasks.x]\ntitle = "X"\ntimezone = "../../etc/passwd"\n', "unknown timezone"),
    ],
)
def test_bad_config_values_name_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    write_config(tmp_path, text)

    with pytest.raises(ConfigError, match=message):
        settings = config.resolve({}, env_for(tmp_path))
        from cronlog import tasks

        tasks.registry(settings.tasks)


@pytest.mark.parametrize(
    ("schedule", "timezone"),
    [("0 10 * * 0", "Asia/Singapore"), ("@daily", "UTC"), ("*/5 * * * SUN", "Etc/UTC"),
     ("0 0 1 1 * *", "America/New_York")],
)  # fmt: skip
def test_good_schedules_and_timezones_pass_the_quick_check(
    tmp_path: Path, schedule: str, timezone: str
) -> None:
    write_config(
        tmp_path,
        f'[tasks.x]\ntitle = "X"\nschedule = "{schedule}"\ntimezone = "{timezone}"\n',
    )

    settings = config.resolve({}, env_for(tmp_path))

    assert settings.tasks["x"]["timezone"] == timezone


def test_cronlog_config_names_a_file_that_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CRONLOG_CONFIG names"):
        config.resolve(
            {}, env_for(tmp_path, CRONLOG_CONFIG=str(tmp_path / "absent.toml"))
        )


def test_plain_http_to_another_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    env = env_for(tmp_path, CRONLOG_URL="http://dash.example")

    with pytest.raises(ConfigError, match="--allow-http"):
        config.resolve({}, env)
    assert config.resolve({"allow_http": True}, env).url.value == "http://dash.example"
    assert (
        config.resolve({}, {**env, "CRONLOG_ALLOW_HTTP": "1"}).allow_http.value is True
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787", "http://localhost/x", "http://[::1]:9"]
)
def test_plain_http_to_loopback_is_fine(tmp_path: Path, url: str) -> None:
    assert config.resolve({"url": url}, env_for(tmp_path)).url.value == url


@pytest.mark.parametrize("url", ["ftp://dash.example", "dash.example", "https://"])
def test_a_url_that_is_not_one_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="is not a dashboard URL"):
        config.resolve({"url": url}, env_for(tmp_path))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:18790?x=1#frag",
        "https://dash.example/prefix?token=t",
        "https://dash.example/#top",
        "https://dash.example/?",
    ],
)
def test_a_url_with_a_query_or_fragment_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="query or fragment") as raised:
        config.resolve({"url": url}, env_for(tmp_path))

    assert str(raised.value).startswith("--url: ")
    assert "token=t" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["http://user:pw-secret@127.0.0.1:8787", "https://pw-secret@dash.example/x"]
)
def test_credentials_in_the_url_are_refused_without_being_shown(
    tmp_path: Path, url: str
) -> None:
    env = env_for(tmp_path, CRONLOG_URL=url)

    with pytest.raises(ConfigError, match="reverse proxy") as raised:
        config.resolve({}, env)

    assert str(raised.value).startswith("CRONLOG_URL: ")
    assert "pw-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:8x", "Port could not be cast"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://[not-an-address]/", "not a valid URL"),
        ("https://dash.example/a b", "a space or a control character"),
        ("https://dash.example/\nx", "a space or a control character"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_it_and_its_source(
    tmp_path: Path, url: str, problem: str
) -> None:
    write_config(tmp_path, f"url = {json.dumps(url)}\n")

    with pytest.raises(ConfigError, match=problem) as raised:
        config.resolve({}, env_for(tmp_path))

    assert str(raised.value).startswith("config file ")
    assert repr(url) in str(raised.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://[::1]x:8787", "Invalid IPv6 URL"),
        ("http://dash[::1]:8787", "Invalid IPv6 URL"),
        ("http://[::1]]:8787", "Invalid IPv6 URL"),
        ("http://[[::1]:8787", "Invalid IPv6 URL"),
        ("http://[127.0.0.1]/", "is not an IPv6 address"),
        ("http://[fe80::1%eth0]/", "is not an IPv6 address"),
        ("http://[1::2:3:4:5:6:7:8]/", "is not an IPv6 address"),
        ("http://127.1/", "is not an IPv4 address"),
        ("http://127.0.0.01/", "is not an IPv4 address"),
        ("https://256.1.1.1/", "is not an IPv4 address"),
        ("https://dash..example/", "is not a host name"),
        ("https://bücher.example/", "xn-- form"),
        ("https://dash.example:80:81/", "Port could not be cast"),
        ("https://dash.example:" + "9" * 5000, "Port out of range"),
    ],
)
def test_a_url_urllib_would_half_read_is_refused_too(
    tmp_path: Path, url: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        config.resolve({"url": url}, env_for(tmp_path))

    assert str(raised.value).startswith(f"--url: {url!r} is not a valid URL: ")


@pytest.mark.parametrize(
    ("url", "ingest"),
    [
        (
            "HTTPS://Dash.Example:443",
            "https://Dash.Example:443/api/scheduled-tasks/ingest",
        ),
        (
            "http://[::FFFF:127.0.0.1]:8787/",
            "http://[::FFFF:127.0.0.1]:8787/api/scheduled-tasks/ingest",
        ),
        (
            "https://dash_1.example./x",
            "https://dash_1.example./x/api/scheduled-tasks/ingest",
        ),
        ("https://dash.example:/", "https://dash.example:/api/scheduled-tasks/ingest"),
        (
            "https://xn--bcher-kva.example",
            "https://xn--bcher-kva.example/api/scheduled-tasks/ingest",
        ),
    ],
)
def test_a_well_formed_url_is_kept_and_gets_the_ingest_path(
    tmp_path: Path, url: str, ingest: str
) -> None:
    settings = config.resolve({"url": url, "allow_http": True}, env_for(tmp_path))

    assert settings.url.value == url
    assert settings.ingest_url == ingest


def test_the_ingest_path_goes_after_the_port_and_path_of_the_url(
    tmp_path: Path,
) -> None:
    settings = config.resolve({"url": "http://[::1]:8787/"}, env_for(tmp_path))

    assert settings.ingest_url == "http://[::1]:8787/api/scheduled-tasks/ingest"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("first-line-part\nsecond-line-part", "is more than one line"),
        ("first-line-part\rsecond-line-part", "is more than one line"),
        ("first-line-part\x01second-line-part", "holds a control character"),
        ("first-line-part second-line-part", "holds a space"),
        ("first-line-part\u00e9second-line-part", "not ASCII"),
    ],
)
def test_a_key_that_no_http_header_can_carry_is_refused_without_being_shown(
    tmp_path: Path, key: str, problem: str
) -> None:
    env = env_for(tmp_path, CRONLOG_API_KEY=key)

    with pytest.raises(ConfigError, match=problem) as raised:
        config.resolve({}, env)

    message = str(raised.value)
    assert message.startswith("CRONLOG_API_KEY: ")
    assert "line-part" not in message


def test_a_two_line_key_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("first-line-part\nsecond-line-part\n")
    key_file.chmod(0o600)

    with pytest.raises(ConfigError, match="more than one line") as raised:
        config.resolve({"api_key_file": str(key_file)}, env_for(tmp_path))

    assert str(raised.value).startswith(f"--api-key-file ({key_file}): ")
    assert "line-part" not in str(raised.value)


def test_a_key_in_the_config_file_is_checked_too(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'api_key = "first-line-part\\tsecond-line-part"\n')

    with pytest.raises(ConfigError, match="control character") as raised:
        config.resolve({}, env_for(tmp_path))

    assert str(raised.value).startswith(f"config file {path}: ")
    assert "line-part" not in str(raised.value)


def test_an_empty_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    write_config(tmp_path, 'api_key = " "\n')

    with pytest.raises(ConfigError, match="the API key is empty"):
        config.resolve({}, env_for(tmp_path))


@pytest.mark.parametrize("name", ["environment", "owner"])
@pytest.mark.parametrize("value", ["", "  ", "x" * 201])
def test_a_blank_or_overlong_environment_or_owner_flag_is_refused(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^--{name}: {name} is") as raised:
        config.resolve({name: value}, env_for(tmp_path))

    assert ("empty" in str(raised.value)) == (len(value) < 200)


def test_a_blank_environment_in_the_config_file_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, 'environment = ""\n')

    with pytest.raises(ConfigError) as raised:
        config.resolve({}, env_for(tmp_path))

    assert str(raised.value).startswith(f"config file {path}: environment is empty")


def test_an_overlong_owner_variable_is_refused_naming_it(tmp_path: Path) -> None:
    env = env_for(tmp_path, CRONLOG_OWNER="o" * 201)

    with pytest.raises(ConfigError) as raised:
        config.resolve({}, env)

    assert str(raised.value).startswith("CRONLOG_OWNER: owner is 201 characters")


def test_an_empty_environment_variable_means_not_set(tmp_path: Path) -> None:
    settings = config.resolve({}, env_for(tmp_path, CRONLOG_ENVIRONMENT=""))

    assert (settings.environment.value, settings.environment.source) == (
        None,
        "default",
    )


def test_names_at_the_limit_are_kept_as_given(tmp_path: Path) -> None:
    name = "e" * 200

    settings = config.resolve({"environment": name, "owner": "Ops"}, env_for(tmp_path))

    assert settings.environment.value == name
    assert settings.owner.value == "Ops"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('[tasks."a b"]', "holds a space or an invisible character"),
        ('[tasks."a\\nb"]', "holds a space or an invisible character"),
        ('[tasks."a\\u0007b"]', "holds a space or an invisible character"),
        ('[tasks.""]', "the task ID is empty"),
        (f"[tasks.{'t' * 201}]", "is 201 characters"),
    ],
)
def test_a_bad_task_id_in_the_config_file_is_refused(
    tmp_path: Path, table: str, problem: str
) -> None:
    path = write_config(tmp_path, f'{table}\ntitle = "T"\n')

    with pytest.raises(ConfigError, match=problem) as raised:
        config.resolve({}, env_for(tmp_path))

    assert str(raised.value).startswith(f"config file {path}: [tasks]: ")
    assert "\n" not in str(raised.value)


def test_a_task_title_over_the_limit_is_refused(tmp_path: Path) -> None:
    write_config(tmp_path, f'[tasks.nightly]\ntitle = "{"T" * 201}"\n')

    with pytest.raises(ConfigError, match=r"\[tasks.nightly\] the title is 201"):
        config.resolve({}, env_for(tmp_path))


def test_paths_are_plain_strings(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'state_dir = "~/state"\n')

    settings = config.resolve({}, {**env_for(tmp_path), "HOME": str(tmp_path)})

    assert settings.config_file == str(path)
    assert settings.state_dir.value == os.path.expanduser("~/state")


COSTLY_MODULES = {
    "dataclasses",
    "typing",
    "pathlib",
    "re",
    "tomllib",
    "urllib",
    "ipaddress",
}


@pytest.mark.parametrize("url", [{}, {"CRONLOG_URL": "https://trade.rezult.co"}])
def test_without_a_file_resolving_imports_nothing_costly(
    tmp_path: Path, url: dict[str, str]
) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from cronlog import config, tasks; "
        f"s = config.resolve({{}}, {env_for(tmp_path, **url)!r}); "
        "s.ingest_url; "
        "tasks.title_for('sync-price-grid', None, tasks.registry(s.tasks)); "
        f"print(sorted({COSTLY_MODULES!r} & set(sys.modules)))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )

    assert result.stdout.strip() == "[]", result.stderr


def test_a_config_file_others_can_read_gets_a_chmod_warning(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'api_key = "k"\n', mode=0o644)

    settings = config.resolve({}, env_for(tmp_path))

    assert settings.warnings == [
        f"{path} can be read by other users; fix with: chmod 600 {path}"
    ]


def test_a_key_file_others_can_read_gets_a_chmod_warning(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("k")
    key_file.chmod(0o640)

    settings = config.resolve({"api_key_file": str(key_file)}, env_for(tmp_path))

    assert settings.warnings == [
        f"{key_file} can be read by other users; fix with: chmod 600 {key_file}"
    ]


def test_the_state_directory_follows_xdg_then_home(tmp_path: Path) -> None:
    xdg = config.resolve({}, env_for(tmp_path, XDG_STATE_HOME=str(tmp_path / "xdg")))
    override = config.resolve(
        {}, env_for(tmp_path, CRONLOG_STATE_DIR=str(tmp_path / "s"))
    )

    assert xdg.state_dir.value == str(tmp_path / "xdg" / "cronlog")
    assert override.state_dir.value == str(tmp_path / "s")


@pytest.mark.parametrize(
    ("key", "masked"),
    [(None, "(not set)"), ("short", "…"), ("abcdefghijklmnop", "abcd…")],
)
def test_mask_shows_at_most_four_characters(key: str | None, masked: str) -> None:
    assert config.mask(key) == masked


@pytest.mark.parametrize("value", ["-5", "0", '"nan"'])
def test_a_report_timeout_must_be_a_positive_duration(
    tmp_path: Path, value: str
) -> None:
    write_config(tmp_path, f"report_timeout = {value}\n")

    with pytest.raises(ConfigError, match=r"report_timeout|duration"):
        config.resolve({}, env_for(tmp_path))


def test_a_report_timeout_may_be_seconds_or_a_duration(tmp_path: Path) -> None:
    write_config(tmp_path, 'report_timeout = "2m"\n')
    assert config.resolve({}, env_for(tmp_path)).report_timeout.value == 120
    write_config(tmp_path, "report_timeout = 7\n")
    assert config.resolve({}, env_for(tmp_path)).report_timeout.value == 7


toml_values = st.recursive(
    st.one_of(
        st.text(max_size=20), st.integers(), st.floats(allow_nan=True), st.booleans()
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=10), children, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_any_file_text_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")

    try:
        document = config.load_config_file(str(path))
    except ConfigError as error:
        assert str(path) in str(error)
        return
    assert set(document) <= set(config.FILE_KEYS)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    document=st.dictionaries(
        st.sampled_from([*config.FILE_KEYS, "other"]), toml_values, max_size=4
    )
)
def test_any_well_formed_toml_resolves_or_is_a_config_error(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    import tomllib

    path = write_config(tmp_path, _to_toml(document))
    try:
        tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError:
        return  # the generator made something TOML cannot say; not the loader's case

    try:
        resolved = config.resolve({}, env_for(tmp_path))
        from cronlog import tasks

        tasks.registry(resolved.tasks)
    except ConfigError:
        return


def _to_toml(document: dict[str, Any]) -> str:
    import json

    lines, tables = [], []
    for key, value in document.items():
        if isinstance(value, dict):
            tables.append(f"[{json.dumps(key)}]")
            tables += [
                f"{json.dumps(k)} = {json.dumps(v)}"
                for k, v in value.items()
                if not isinstance(v, (dict, list))
            ]
        else:
            lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    return "\n".join(lines + tables) + "\n"


def urllib_reading(url: str) -> tuple[str, str | None, int | None, str] | None:
    """What `urllib.parse` makes of a URL, None when it refuses it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port, parts.path
    except ValueError:
        return None


URL_PIECES = [
    *("://", ":/", "//", ":", "/", ".", "%", " ", "[", "]", "@", "?", "#", "\t"),
    *("v1.x", "%eth0", "::", "::1", "fe80::1", "::ffff:1.2.3.4", "127.0.0.1"),
    *("1.2.3.04", "0", "8", "65535", "65536", "\u0663", "dash.example"),
    *("Dash.Example", "xn--bcher-kva", "bücher", "\uff21\uff22", "_", "-"),
]
url_like_text = st.one_of(
    st.text(max_size=40),
    st.builds(
        str.__add__,
        st.sampled_from(["", "http://", "https://", "HTTP://", "http:", "ftp://"]),
        st.lists(
            st.one_of(st.sampled_from(URL_PIECES), st.text(max_size=2)), max_size=8
        ).map("".join),
    ),
)


@settings(max_examples=1000)
@given(url=url_like_text)
def test_any_text_is_refused_or_read_as_urllib_reads_it(url: str) -> None:
    try:
        split = config.split_url(url, "--url")
    except ConfigError as error:
        assert str(error).startswith("--url: ")
        return

    assert split == urllib_reading(url)


path_segments = st.text(alphabet="abcXYZ019-._~%:@!$&'()*+,;=ü", max_size=6)
well_formed_urls = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    st.one_of(
        domains(),
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
        st.ip_addresses(v=6).map(lambda address: f"[{address.exploded.upper()}]"),
    ),
    st.one_of(st.just(""), st.integers(1, 65535).map(":{}".format)),
    st.lists(path_segments, max_size=3).map(
        lambda segments: "".join(f"/{segment}" for segment in segments)
    ),
)


@settings(max_examples=500)
@given(url=well_formed_urls)
def test_a_well_formed_url_is_taken_and_read_as_urllib_reads_it(url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    taken = config.validate_url(url, "--url", allow_http=True)
    split = config.split_url(url, "--url")

    parts = urlsplit(url)
    joined = parts.path.rstrip("/")
    joined += "" if joined.endswith(config.INGEST_PATH) else config.INGEST_PATH
    assert taken == url
    assert split == urllib_reading(url)
    assert config.ingest_url(url) == urlunsplit(parts._replace(path=joined))
