"""Every exit status cronlog itself chooses, named once.

`cronlog run` otherwise exits with the job's own status, so cron mail and monitoring see
what they would have seen without cronlog. The values follow the conventions cron users
already know: the shell's 126/127/128+N and timeout(1)'s 124/125.
"""

OK = 0
# A cronlog command other than `run` did not do its job (refused report, ...).
FAILURE = 1
USAGE = 2  # bad flag, bad config file, unknown task ID: nothing was started
# --no-overlap: the previous run still holds the lock (EX_TEMPFAIL).
SKIPPED_OVERLAP = 75
TIMED_OUT = 124  # --timeout expired and the job was killed
INTERNAL = 125  # cronlog failed around the job (unexpected error, state dir unwritable)
NOT_EXECUTABLE = 126
NOT_FOUND = 127
SIGNAL_BASE = 128  # killed by signal N exits SIGNAL_BASE + N


def for_signal(signum: int) -> int:
    return SIGNAL_BASE + signum


# curl's exit statuses. `--request` uses them for the same failures, so both kinds of
# HTTP job read alike in cron mail and monitoring.
CURL_UNSUPPORTED_PROTOCOL = 1
CURL_NOT_RESOLVED = 6
CURL_NOT_CONNECTED = 7
CURL_PARTIAL_BODY = 18
HTTP_ERROR = 22  # curl --fail's: the answer's status is not one --ok-status accepts
CURL_TIMED_OUT = 28
CURL_TLS_HANDSHAKE = 35
CURL_TOO_MANY_REDIRECTS = 47
CURL_EMPTY_REPLY = 52
CURL_SEND_FAILED = 55
CURL_RECEIVE_FAILED = 56
CURL_CERTIFICATE_NOT_TRUSTED = 60
