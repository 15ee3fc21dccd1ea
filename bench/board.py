"""Benchmark: `board` and `show --as-of` on the 1,000,000-order book, against `import sqlmodel`.

    python bench/board.py [--db PATH] [--runs 5] [--json]

SPEC section 4 / issue 11: `board` within 1.5x and `show --as-of` within 1.25x of
`python -c "import sqlmodel"`, measured in the same run (bench/timing.py: separate processes,
interleaved rounds, medians). Both only read, but opening a book may leave -wal/-shm files:
give a copy (bench/out is read-only). The machine may be shared and noisy: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import coopctl, compiled, interleaved, print_summary, summary  # noqa: E402

DEFAULT_DB = HERE / "out" / "tick-1000000-100000.db"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=str(DEFAULT_DB))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": args.db, "COOPCTL_OPERATOR": "bench", "NO_COLOR": "1"})
    tool = coopctl()
    cases = {
        "import sqlmodel": ([sys.executable, "-c", "import sqlmodel"], None),
        "board --json": ([tool, "board", "--json"], 1.5),
        "board (table)": ([tool, "board"], 1.5),
        "show 500000 --as-of now+30d --json": ([tool, "show", "500000", "--as-of", "now+30d", "--json"], 1.25),
        "show 500000 --as-of now+30d": ([tool, "show", "500000", "--as-of", "now+30d"], 1.25),
        "show 500000 --json": ([tool, "show", "500000", "--json"], None),
    }
    times = interleaved({name: argv for name, (argv, _) in cases.items()}, env, args.runs)
    found = summary(times, "import sqlmodel", {name: limit for name, (_, limit) in cases.items()})
    report = {"db": args.db, "runs": args.runs, "load_avg": os.getloadavg(), "commands": found}
    print_summary(f"{args.db}: median of {args.runs} runs, load average {report['load_avg'][0]:.2f}", found)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
