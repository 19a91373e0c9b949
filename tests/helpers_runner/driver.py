"""Run one command through cronlog.runner in a process of its own, like `cronlog run`.

    python driver.py OUTCOME_JSON ARGV...

Writes the Outcome to OUTCOME_JSON and exits with its exit_status, so the tests can send
signals to a runner that is not the test process, and give it a broken stdout.
"""

import dataclasses
import json
import os
import sys

from cronlog import runner


def main() -> int:
    outcome_path, *argv = sys.argv[1:]
    outcome = runner.run(runner.Command(argv=argv, env=dict(os.environ)))

    fields = dataclasses.asdict(outcome)
    fields["output_tail"] = outcome.output_tail.decode("latin-1")
    fields["started_at"] = outcome.started_at.isoformat()
    fields["ended_at"] = outcome.ended_at.isoformat()
    with open(outcome_path, "w") as file:
        json.dump(fields, file)
    return outcome.exit_status


if __name__ == "__main__":
    sys.exit(main())
