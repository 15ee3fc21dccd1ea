"""Benchmark: `board` and `show --as-of` on the 1,000,000-order book, against `import sqlmodel`.

    python bench/board.py [--db PATH] [--runs 5] [--json]

SPEC section 4 / issue 11: `board` within 1.5x and `show --as-of` within 1.25x of
`python -c "import sqlmodel"`, measured in the same run. Both only read: the book is opened as
it is (never written: both commands are read-only; `file_digest`-style checks are in the tests).
Every command runs as its own process, round after round (interleaved), and medians are
compared. The machine may be shared and noisy: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DB = Path("/work/bench-before/bench/out/tick-1000000-100000.db")
HERE = Path(__file__).resolve().parent


def coopctl() -> str:
    beside = Path(sys.executable).parent / "coopctl"
    return str(beside) if beside.exists() else "coopctl"


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=str(DEFAULT_DB))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": args.db, "COOPCTL_OPERATOR": "bench", "NO_COLOR": "1"})
    tool = coopctl()
    commands = {
        "import sqlmodel": ([sys.executable, "-c", "import sqlmodel"], None),
        "board --json": ([tool, "board", "--json"], 1.5),
        "board (table)": ([tool, "board"], 1.5),
        "show 500000 --as-of now+30d --json": ([tool, "show", "500000", "--as-of", "now+30d", "--json"], 1.25),
        "show 500000 --as-of now+30d": ([tool, "show", "500000", "--as-of", "now+30d"], 1.25),
        "show 500000 --json": ([tool, "show", "500000", "--json"], None),
    }
    for argv, _ in commands.values():  # warm the page cache and the bytecode
        timed(argv, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, (argv, _) in commands.items():
            times[name].append(timed(argv, env))
    base = statistics.median(times["import sqlmodel"])
    report = {"db": args.db, "runs": args.runs, "load_avg": os.getloadavg()[0], "commands": {}}
    for name, (argv, limit) in commands.items():
        median = statistics.median(times[name])
        report["commands"][name] = {
            "wall_ms": round(median * 1000, 1), "ratio": round(median / base, 2), "limit": limit,
            "ok": None if limit is None else median / base <= limit,
        }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.db}: median of {args.runs} runs, load average {report['load_avg']:.2f}")
    for name, row in report["commands"].items():
        limit = "" if row["limit"] is None else f"  (limit {row['limit']}x: {'ok' if row['ok'] else 'OVER'})"
        print(f"  {name:<40} {row['wall_ms']:>8.1f} ms  {row['ratio']:>5.2f}x{limit}")


if __name__ == "__main__":
    main()
