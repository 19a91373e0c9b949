"""Each task at a glance: its last run, how often it succeeds, how long it takes, and
whether it is overdue. Shared by `GET /api/scheduled-tasks` and the Schedulers page.

A task is overdue when its schedule has fired since its last run started, allowing the
run time the job usually needs plus a minute for cron and the report to arrive.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from cronlog.store import Store, parse_timestamp

RECENT_RUNS = 20
REPORT_GRACE = timedelta(minutes=1)


class TaskInfo(Protocol):
    """A known task, as `cronlog.tasks` describes it."""

    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def schedule(self) -> str | None: ...  # a crontab expression

    @property
    def timezone(self) -> str | None: ...  # an IANA name; UTC when None


@dataclass(frozen=True)
class TaskSummary:
    task_id: str
    title: str
    schedule: str | None
    timezone: str | None
    recent: list[dict[str, Any]]  # newest first
    success_rate: float | None
    median_duration_ms: int | None
    overdue: bool

    @property
    def last_run(self) -> dict[str, Any] | None:
        return self.recent[0] if self.recent else None

    @property
    def last_failure(self) -> dict[str, Any] | None:
        return next((run for run in self.recent if run["status"] == "failed"), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task_title": self.title,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "last_run": self.last_run,
            "recent_runs": len(self.recent),
            "success_rate": self.success_rate,
            "median_duration_ms": self.median_duration_ms,
            "overdue": self.overdue,
        }


def summarise(
    store: Store, tasks: Sequence[TaskInfo], now: datetime
) -> list[TaskSummary]:
    """The known tasks in their given order, then any other task the store has seen."""
    seen = store.seen_tasks()
    known = {task.id for task in tasks}
    entries: list[tuple[str, str, str | None, str | None]] = [
        (task.id, task.title, task.schedule, task.timezone) for task in tasks
    ]
    entries += [
        (task_id, seen[task_id], None, None) for task_id in sorted(seen.keys() - known)
    ]

    return [
        _summary(
            task_id,
            title,
            schedule,
            timezone,
            store.runs(task_id=task_id, limit=RECENT_RUNS),
            now,
        )
        for task_id, title, schedule, timezone in entries
    ]


def _summary(
    task_id: str,
    title: str,
    schedule: str | None,
    timezone: str | None,
    recent: list[dict[str, Any]],
    now: datetime,
) -> TaskSummary:
    finished = [run for run in recent if run["status"] != "running"]
    successes = sum(run["status"] == "success" for run in finished)
    durations = [run["duration_ms"] for run in recent if run["duration_ms"] is not None]
    median = int(statistics.median(durations)) if durations else None

    overdue = bool(
        recent
        and schedule
        and is_overdue(
            schedule, timezone, parse_timestamp(recent[0]["started_at"]), now, median
        )
    )
    return TaskSummary(
        task_id=task_id,
        title=title,
        schedule=schedule,
        timezone=timezone,
        recent=recent,
        success_rate=successes / len(finished) if finished else None,
        median_duration_ms=median,
        overdue=overdue,
    )


def is_overdue(
    schedule: str,
    timezone: str | None,
    last_started: datetime,
    now: datetime,
    median_duration_ms: int | None,
) -> bool:
    """Whether a run the schedule expected by now has not been recorded.

    The latest firing counts only once the job has had its usual run time and the grace
    to report; an unreadable schedule or timezone marks nothing overdue.
    """
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
        allowance = REPORT_GRACE + timedelta(milliseconds=median_duration_ms or 0)
        expected = croniter(schedule, (now - allowance).astimezone(zone)).get_prev(
            datetime
        )
    except (CroniterError, ZoneInfoNotFoundError, ValueError, KeyError):
        return False
    return bool(last_started < expected)
