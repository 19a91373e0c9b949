"""cronlog: run a scheduled job, time it, judge it and report it to the dashboard."""

__version__ = "0.1.0"
