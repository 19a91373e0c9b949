"""Run one command through cronlog.runner in a process of its own, like `cronlog run`.

    python driver.py OUTCOME_JSON ARGV...

Writes the Outcome and the peak memory to OUTCOME_JSON and exits with its exit_status,
so the tests can signal a runner that is not the test process, give it a broken stdout
and measure its memory.
"""

import json
import os
import sys
from pathlib import Path

from cronlog import runner


def peak_rss_kib() -> int:
    # VmHWM, unlike ru_maxrss, does not count the test process this one was forked from.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> int:
    outcome_path, *argv = sys.argv[1:]
    outcome = runner.run(runner.Command(argv=argv, env=dict(os.environ)))

    fields = {name: getattr(outcome, name) for name in runner.Outcome.__slots__}
    fields["output_tail"] = outcome.output_tail.decode("latin-1")
    fields["started_at"] = outcome.started_at.isoformat()
    fields["ended_at"] = outcome.ended_at.isoformat()
    fields["peak_rss_kib"] = peak_rss_kib()
    with open(outcome_path, "w") as file:
        json.dump(fields, file)
    return outcome.exit_status


if __name__ == "__main__":
    sys.exit(main())
