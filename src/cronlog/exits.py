"""Every exit status cronlog itself chooses, named once.

`cronlog run` otherwise exits with the job's own status, so cron mail and monitoring see
what they would have seen without cronlog. The values follow the conventions cron users
already know: the shell's 126/127/128+N and timeout(1)'s 124/125.
"""

OK = 0
FAILURE = (
    1  # a cronlog command other than `run` did not do its job (refused report, ...)
)
USAGE = 2  # bad flag, bad config file, unknown task ID: nothing was started
SKIPPED_OVERLAP = (
    75  # --no-overlap: the previous run still holds the lock (EX_TEMPFAIL)
)
TIMED_OUT = 124  # --timeout expired and the job was killed
INTERNAL = 125  # cronlog failed around the job (unexpected error, state dir unwritable)
NOT_EXECUTABLE = 126
NOT_FOUND = 127
SIGNAL_BASE = 128  # killed by signal N exits SIGNAL_BASE + N


def for_signal(signum: int) -> int:
    return SIGNAL_BASE + signum
