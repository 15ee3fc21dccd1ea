"""Benchmark: `coopctl list` pages on the 1,000,000-order book against `import sqlmodel`.

    python bench/listing_pages.py [--db bench/out/book-v2.db] [--rounds 5] [--json]

The book (bench/tick.py's cached_db) is schema 2 and must not be written: give a COPY (the first
command upgrades it to schema 3 in place: the indexes of `list` and order_products; timed once).
Then, in each round, interleaved, as separate processes: `python -c "import sqlmodel"`, and each
`coopctl list` of the cases below (piped: stdout to a pipe, footer on stderr). Medians over the
rounds; ratios against the median of `import sqlmodel` in the same run (the machine is shared:
single runs swing by tens of percent). Budget (issue 11): each within 1.25x.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import coopctl, compiled, interleaved, print_summary, summary, timed  # noqa: E402

LIMIT = 1.25


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=str(HERE / "out" / "book-v2.db"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    env = {**os.environ, "COOPCTL_DB": options.db, "NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"}
    env.pop("COLUMNS", None)
    tool = coopctl()
    started = time.perf_counter()
    timed([tool, "list", "--limit", "1"], env)  # upgrades an older copy in place (timed once)
    upgrade_s = time.perf_counter() - started
    deep = base64.urlsafe_b64encode(json.dumps(["id", 900_000, 900_000], separators=(",", ":")).encode()).decode().rstrip("=")
    cases = {
        "first page": ["list"],
        "deep page (--after id 900000)": ["list", "--after", deep],
        "--sort -created": ["list", "--sort", "-created"],
        "--sort deadline": ["list", "--sort", "deadline"],
        "--status pending": ["list", "--status", "pending"],
        "--status live (none)": ["list", "--status", "live"],
        "--terms void": ["list", "--terms", "void"],
        "--liable creator": ["list", "--liable", "creator"],
        "--merchant 商家-bench": ["list", "--merchant", "商家-bench"],
        "--merchant 商家* (prefix)": ["list", "--merchant", "商家*"],
        "--creator 达人-bench-2": ["list", "--creator", "达人-bench-2"],
        "--creator 达人-bench* (prefix)": ["list", "--creator", "达人-bench*"],
        "--product P-1": ["list", "--product", "P-1"],
        "--product P-* (prefix)": ["list", "--product", "P-*"],
        "--created-after": ["list", "--created-after", "2026-12-01T11:30:00+08:00"],
        "--created-before": ["list", "--created-before", "2026-11-29T00:00:00+08:00"],
        "--due-before": ["list", "--due-before", "2026-12-01T12:00:00+08:00"],
        "--overdue": ["list", "--overdue"],
        "--status pending --sort deadline": ["list", "--status", "pending", "--sort", "deadline"],
    }
    commands = {"import sqlmodel": [sys.executable, "-c", "import sqlmodel"], **{n: [tool, *a] for n, a in cases.items()}}
    times = interleaved(commands, env, options.rounds)
    found = summary(times, "import sqlmodel", {name: LIMIT for name in cases})
    report = {"db": options.db, "rounds": options.rounds, "upgrade_s": round(upgrade_s, 2), "load_avg": os.getloadavg(),
              "cases": found}
    print_summary(f"{options.db}: first command {upgrade_s:.1f}s; median of {options.rounds} rounds, "
                  f"load average {report['load_avg'][0]:.2f}", found)
    if options.json:
        print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
