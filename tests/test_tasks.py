"""The known task IDs, their titles and schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cronlog import tasks
from cronlog.errors import ConfigError, UsageError


def test_the_guides_five_tasks_are_built_in_with_their_titles():
    known = tasks.registry({})

    assert {task_id: task.title for task_id, task in known.items()} == {
        "sync-price-grid": "Sync price grid",
        "refresh-woocommerce-catalog": "Refresh WooCommerce catalog",
        "graphiti-sync": "Graphiti enrichment",
        "tradein-auto-submit": "Trade-in auto submit",
        "tradein-email-retry": "Trade-in email retry",
    }
    assert all(task.timezone == "Asia/Singapore" for task in known.values())


def test_sunday_ten_sgt_is_sunday_two_utc():
    task = tasks.registry({})["sync-price-grid"]
    saturday_noon = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    upcoming = tasks.next_run(task, saturday_noon)

    assert upcoming is not None
    assert upcoming.astimezone(UTC) == datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def test_every_five_minutes_fires_on_the_next_multiple_of_five():
    task = tasks.registry({})["tradein-email-retry"]

    upcoming = tasks.next_run(task, datetime(2026, 12, 3, 10, 7, 30, tzinfo=UTC))

    assert upcoming is not None and upcoming.astimezone(UTC).minute == 10


def test_the_config_file_adds_and_overrides_tasks():
    known = tasks.registry(
        {
            "nightly": {"title": "Nightly", "schedule": "0 3 * * *"},
            "graphiti-sync": {"title": "Graphiti (new name)"},
        }
    )

    assert known["nightly"].title == "Nightly"
    assert known["nightly"].timezone == "UTC"
    assert known["graphiti-sync"].title == "Graphiti (new name)"
    assert known["graphiti-sync"].schedule == "30 10 * * 0"


def test_a_title_given_on_the_line_wins():
    assert tasks.title_for("sync-price-grid", "Mine", tasks.registry({})) == "Mine"


def test_an_unknown_id_suggests_the_closest_known_one():
    with pytest.raises(UsageError, match="did you mean 'tradein-email-retry'"):
        tasks.title_for("tradein-emial-retry", None, tasks.registry({}))


def test_an_id_like_nothing_known_gets_no_suggestion_but_the_way_out():
    with pytest.raises(UsageError) as raised:
        tasks.title_for("zzz", None, tasks.registry({}))

    assert "did you mean" not in str(raised.value)
    assert "--title" in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": "X", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"title": "X", "schedule": "every day"}, "not a cron expression"),
    ],
)
def test_a_bad_schedule_or_timezone_is_a_config_error(fields, message):
    task = tasks.registry({"x": fields})["x"]

    with pytest.raises(ConfigError, match=message):
        tasks.check_schedule(task)


@pytest.mark.parametrize(
    "task_id", ["sync-price-grid", "nightly.backup_2", "café-sync", "t" * 200]
)
def test_a_task_id_of_visible_characters_is_accepted(task_id):
    assert tasks.check_task_id(task_id) is None


@pytest.mark.parametrize(
    ("task_id", "problem"),
    [
        ("", "is empty"),
        ("a b", "holds a space or an invisible character"),
        ("a\tb", "holds a space or an invisible character"),
        ("nightly\n", "holds a space or an invisible character"),
        ("a\x1bb", "holds a space or an invisible character"),
        ("a\u200bb", "holds a space or an invisible character"),
        ("a\u00a0b", "holds a space or an invisible character"),
        ("t" * 201, "is 201 characters; the dashboard takes at most 200"),
    ],
)
def test_any_other_task_id_is_a_usage_error_saying_why(task_id, problem):
    with pytest.raises(UsageError, match=problem) as raised:
        tasks.check_task_id(task_id)

    assert "\n" not in str(raised.value)


def test_an_overlong_task_id_is_shortened_in_the_message():
    with pytest.raises(UsageError) as raised:
        tasks.check_task_id("t" * 5000)

    assert len(str(raised.value)) < 200


def test_an_override_leaves_the_built_in_task_unchanged():
    before = tasks.registry({})["graphiti-sync"]

    tasks.registry({"graphiti-sync": {"timezone": "UTC"}})

    assert tasks.registry({})["graphiti-sync"] == before
    assert before.timezone == "Asia/Singapore"


def test_tasks_are_equal_when_their_fields_are():
    one = tasks.Task("x", "X", "* * * * *")
    same = tasks.Task(id="x", title="X", schedule="* * * * *")

    assert one == same and hash(one) == hash(same)
    assert one != one.replace(title="Y")
    assert repr(one) == "Task('x', 'X', '* * * * *', 'UTC', None)"


def test_a_schedule_that_never_fires_has_no_next_run():
    task = tasks.registry({"never": {"title": "Never", "schedule": "0 0 30 2 *"}})[
        "never"
    ]

    assert tasks.next_run(task, datetime(2026, 12, 3, tzinfo=UTC)) is None


def test_a_new_schedule_drops_the_old_frequency_words():
    known = tasks.registry({"tradein-auto-submit": {"schedule": "*/2 * * * *"}})

    assert known["tradein-auto-submit"].frequency is None
