"""A worker process of tests/test_concurrency.py: runs a list of coopctl commands against the
shared database, one after another, and writes what each one did as JSON lines.

    python tests/concurrency_worker.py PLAN.json RESULTS.jsonl

Each command runs the real command line (`coopctl.cli.app`) in this process, as a separate
`coopctl` invocation would: its own settings, engine and connection, its own transaction; only
the interpreter start-up is shared, so that a worker can issue dozens of commands in seconds. A
command that exits 4 (busy) is retried, as the message asks, up to MAX_RETRIES times.
"""

from __future__ import annotations

import json
import sys
import time

from typer.testing import CliRunner

from coopctl.cli import app

MAX_RETRIES = 200


def main(plan_path: str, results_path: str) -> int:
    commands = json.load(open(plan_path, encoding="utf-8"))
    runner = CliRunner()
    with open(results_path, "w", encoding="utf-8") as out:
        for args in commands:
            retries = 0
            while True:
                result = runner.invoke(app, args)
                if result.exit_code != 4 or retries >= MAX_RETRIES:
                    break
                retries += 1
                time.sleep(0.01 * (retries % 5))
            record = {
                "args": args,
                "code": result.exit_code,
                "retries": retries,
                "stdout": result.stdout if result.exit_code == 0 else "",
                "stderr": result.stderr,
                "exception": None if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception),
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
