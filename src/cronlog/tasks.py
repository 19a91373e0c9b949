"""The known task IDs: the dashboard's five, plus any the config file adds or overrides.

A run must name a known task or give its own `--title`: a typo in a crontab line would
otherwise create a stray task on the dashboard, so an unknown ID is refused with the
closest known one suggested.
"""

from __future__ import annotations

from cronlog.errors import ConfigError, UsageError
from cronlog.payload import NAME_LIMIT  # the dashboard's limit on IDs and titles

# No runtime `typing` or `datetime`: this module is imported before every job starts.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

SINGAPORE = "Asia/Singapore"  # the guide's times are SGT


class Task:
    """A known task: its ID and title, and when it is meant to run."""

    __slots__ = ("frequency", "id", "schedule", "timezone", "title")

    def __init__(
        self,
        id: str,
        title: str,
        # Read by croniter in `timezone`: five fields, a sixth for seconds, or @daily.
        schedule: str | None = None,
        timezone: str = "UTC",
        frequency: str | None = None,  # the schedule in words, as the guide writes it
    ) -> None:
        self.id = id
        self.title = title
        self.schedule = schedule
        self.timezone = timezone
        self.frequency = frequency

    def replace(self, **fields: str | None) -> Task:
        """A copy with `fields` (the config file's keys of a `[tasks.ID]`) changed."""
        current = {name: getattr(self, name) for name in self.__slots__}
        return Task(**{**current, **fields})

    def _fields(self) -> tuple[str | None, ...]:
        return (self.id, self.title, self.schedule, self.timezone, self.frequency)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Task({}, {}, {}, {}, {})".format(*map(repr, self._fields()))


BUILTIN_TASKS = (
    Task(
        "sync-price-grid",
        "Sync price grid",
        "0 10 * * 0",
        SINGAPORE,
        "Weekly (Sunday 10:00 AM SGT)",
    ),
    Task(
        "refresh-woocommerce-catalog",
        "Refresh WooCommerce catalog",
        "5 10 * * 0",
        SINGAPORE,
        "Weekly (Sunday 10:05 AM SGT)",
    ),
    Task(
        "graphiti-sync",
        "Graphiti enrichment",
        "30 10 * * 0",
        SINGAPORE,
        "Weekly (Sunday 10:30 AM SGT)",
    ),
    Task(
        "tradein-auto-submit",
        "Trade-in auto submit",
        "* * * * *",
        SINGAPORE,
        "Every minute",
    ),
    Task(
        "tradein-email-retry",
        "Trade-in email retry",
        "*/5 * * * *",
        SINGAPORE,
        "Every 5 minutes",
    ),
)


def registry(overrides: Mapping[str, Mapping[str, str]]) -> dict[str, Task]:
    """The built-in tasks with the config file's `[tasks.ID]` tables applied."""
    known = {task.id: task for task in BUILTIN_TASKS}
    for task_id, fields in overrides.items():
        base = known.get(task_id)
        if base is None and "title" not in fields:
            raise ConfigError(f"[tasks.{task_id}] in the config file needs a title")
        if base is None:
            known[task_id] = Task(id=task_id, **fields)
        elif "schedule" in fields and "frequency" not in fields:
            # The built-in words describe the built-in schedule.
            known[task_id] = base.replace(**fields, frequency=None)
        else:
            known[task_id] = base.replace(**fields)
    return known


def check_task_id(task_id: str) -> None:
    """Raise UsageError unless `task_id` is 1 to 200 visible characters, no spaces.

    The ID names the task on the dashboard, in lock file names and in crontab lines;
    a space, a line break or an invisible character there is always a mistake.
    """
    if not task_id:
        raise UsageError("the task ID is empty (write e.g. sync-price-grid)")
    if len(task_id) > NAME_LIMIT:
        raise UsageError(
            f"the task ID {task_id[:40]!r}... is {len(task_id)} characters; "
            f"the dashboard takes at most {NAME_LIMIT}"
        )
    if not all(
        character.isprintable() and not character.isspace() for character in task_id
    ):
        raise UsageError(
            f"the task ID {task_id!r} holds a space or an invisible character; "
            "use visible characters only (write e.g. sync-price-grid)"
        )


def title_for(task_id: str, title: str | None, known: Mapping[str, Task]) -> str:
    """The title to report: `--title` if given, else the registry's, else refused."""
    if title is not None:
        return title  # checked with the rest of the line: an empty one is refused
    if task_id in known:
        return known[task_id].title

    hint = suggest(task_id, known)
    did_you_mean = f"did you mean {hint!r}? " if hint else ""
    raise UsageError(
        f"unknown task ID {task_id!r}: {did_you_mean}give --title to report a new "
        "task, or add it to the config file (`cronlog list-tasks` lists the known IDs)"
    )


def suggest(task_id: str, known: Mapping[str, Task]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(task_id, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def next_run(task: Task, now: datetime) -> datetime | None:
    """When the schedule next fires after `now`, in the task's timezone."""
    if not task.schedule:
        return None
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from croniter import CroniterError, croniter

    local_now = now.astimezone(ZoneInfo(task.timezone))
    try:
        upcoming: datetime = croniter(task.schedule, local_now).get_next(datetime)
    except CroniterError:
        return None  # a valid expression that never fires, such as 30 February
    return upcoming


def check_schedule(task: Task) -> None:
    """Raise ConfigError when a task's schedule or timezone cannot be read."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from croniter import croniter

    try:
        ZoneInfo(task.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"task {task.id!r}: unknown timezone {task.timezone!r} "
            "(write e.g. Asia/Singapore)"
        ) from None
    if task.schedule and not croniter.is_valid(task.schedule):
        raise ConfigError(
            f"task {task.id!r}: {task.schedule!r} is not a cron expression "
            "(write e.g. '*/5 * * * *')"
        )
