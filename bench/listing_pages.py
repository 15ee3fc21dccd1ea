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
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COOPCTL = str(Path(sys.executable).with_name("coopctl"))


def run(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{args}: exit {result.returncode}: {result.stderr.decode()[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=str(HERE / "out" / "book-v2.db"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    env = {**os.environ, "COOPCTL_DB": options.db, "NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"}
    started = time.perf_counter()
    run([COOPCTL, "list", "--limit", "1"], env)  # upgrades a schema-2 copy in place
    upgrade_s = time.perf_counter() - started
    deep = base64.urlsafe_b64encode(json.dumps(["id", 900_000, 900_000], separators=(",", ":")).encode()).decode().rstrip("=")
    cases = {
        "first page": ["list"],
        "deep page (--after id 900000)": ["list", "--after", deep],
        "--sort -created": ["list", "--sort", "-created"],
        "--sort deadline": ["list", "--sort", "deadline"],
        "--status pending": ["list", "--status", "pending"],
        "--terms void": ["list", "--terms", "void"],
        "--liable creator": ["list", "--liable", "creator"],
        "--merchant 商家-bench": ["list", "--merchant", "商家-bench"],
        "--creator 达人-bench-2": ["list", "--creator", "达人-bench-2"],
        "--creator 达人-bench*": ["list", "--creator", "达人-bench*"],
        "--product P-1": ["list", "--product", "P-1"],
        "--created-after": ["list", "--created-after", "2026-12-01T11:30:00+08:00"],
        "--created-before": ["list", "--created-before", "2026-11-29T00:00:00+08:00"],
        "--due-before": ["list", "--due-before", "2026-12-01T12:00:00+08:00"],
        "--overdue": ["list", "--overdue"],
        "--status pending --sort deadline": ["list", "--status", "pending", "--sort", "deadline"],
    }
    times: dict[str, list[float]] = {"import sqlmodel": [], **{name: [] for name in cases}}
    for number in range(options.rounds):
        times["import sqlmodel"].append(run([sys.executable, "-c", "import sqlmodel"], env))
        for name, args in cases.items():
            times[name].append(run([COOPCTL, *args], env))
        print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), file=sys.stderr)
    base = statistics.median(times["import sqlmodel"])
    report = {"db": options.db, "rounds": options.rounds, "upgrade_s": round(upgrade_s, 2), "import_sqlmodel_s": round(base, 3),
              "cases": {name: {"median_s": round(statistics.median(v), 3), "ratio": round(statistics.median(v) / base, 2)}
                        for name, v in times.items() if name != "import sqlmodel"}}
    if options.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(f"upgrade to schema 3: {upgrade_s:.1f}s; import sqlmodel: {base:.3f}s (median of {options.rounds})")
        for name, row in report["cases"].items():
            print(f"  {name:36} {row['median_s']:.3f}s  {row['ratio']:.2f}x")


if __name__ == "__main__":
    main()
