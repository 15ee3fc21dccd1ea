"""Benchmark: the machine formats stream a whole book (SPEC section 4, issue 11).

    python bench/listing.py [--db PATH] [--runs 3] [--limit N] [--json]

On the 1,000,000-order book, `coopctl list --format jsonl --all` must stream at least 50,000
orders/s with a peak RSS under 150 MB, and `coopctl notifications --format jsonl` likewise
(notifications/s). Each command runs as its own process, its stdout read by this script (every
line counted, as a reader of the pipe would), `--runs` times interleaved; the medians are given.
Peak RSS is the child's own (`os.wait4`). `python -c "import sqlmodel"` is timed in the same
rounds as the baseline of start-up cost (the figures include coopctl's start-up).

The database: --db PATH, else bench/out/tick-1000000-100000.db (bench/tick.py builds it), else
/work/bench-before/bench/out/tick-1000000-100000.db. It is only read; `--copy DIR` runs on a
copy in DIR (made once, reused), for a book that must not even gain a -wal/-shm file.
`list --all` is used when this `list` has it (engineer G's paging), plain `list` otherwise
(today's `list` prints every order).

The verdict is on wall time; CPU time (user + system of the child) is shown beside it, as it
suffers less from a shared machine. With --json the last line is {"db", "runs", "load_avg",
"commands": {NAME: {"argv", "records", "wall_s", "cpu_s", "per_s", "per_cpu_s", "peak_rss_mb",
"limit_per_s", "limit_rss_mb", "ok"}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from timing import compiled  # noqa: E402

HERE = Path(__file__).resolve().parent
BOOKS = [HERE / "out" / "tick-1000000-100000.db", Path("/work/bench-before/bench/out/tick-1000000-100000.db")]
PER_S, RSS_MB = 50_000, 150


def coopctl() -> str:
    beside = Path(sys.executable).parent / "coopctl"
    return str(beside) if beside.exists() else shutil.which("coopctl") or "coopctl"


def timed(argv: list[str], env: dict) -> tuple[float, int, float, float]:
    """(wall seconds, records read from stdout, peak RSS in MB, CPU seconds of the child) of one
    run. A record is a line, but for `--format json` (indented: a record is `  {` on its own
    line) and csv/tsv (a header line first)."""
    marker = b"\n  {\n" if "json" in argv and argv[argv.index("json") - 1] == "--format" else b"\n"
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    records, tail = 0, b""
    for block in iter(lambda: proc.stdout.read(1 << 20), b""):
        records += (tail + block).count(marker)
        tail = block[-(len(marker) - 1):] if len(marker) > 1 else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    if "--format" in argv and argv[argv.index("--format") + 1] in ("csv", "tsv") and records:
        records -= 1  # the header
    return wall, records, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def has_all(exe: str, db: str, env: dict) -> bool:
    out = subprocess.run([exe, "--db", db, "list", "--help"], capture_output=True, text=True, env=env).stdout
    return "--all" in out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db")
    parser.add_argument("--copy", help="run on a copy of the book in this folder")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, help="only the first N records (a quick look)")
    parser.add_argument("--formats", default="jsonl", help="list's formats to time, e.g. jsonl,json,csv,tsv [jsonl]")
    parser.add_argument("--no-notifications", action="store_true", help="time list alone")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    book = Path(args.db) if args.db else next((b for b in BOOKS if b.exists()), None)
    if book is None or not book.exists():
        raise SystemExit("no book: build it with bench/tick.py, or give --db PATH")
    if args.copy:
        target = Path(args.copy) / book.name
        if not target.exists() or target.stat().st_size != book.stat().st_size:
            Path(args.copy).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(book, target)
        book = target
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update({"NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"})
    env.pop("COLUMNS", None)
    exe = coopctl()
    limit = ["--limit", str(args.limit)] if args.limit else []
    every = [] if limit else (["--all"] if has_all(exe, str(book), env) else [])
    commands = {f"list --format {fmt} --all": [exe, "--db", str(book), "list", "--format", fmt, *every, *limit]
                for fmt in args.formats.split(",")}
    if not args.no_notifications:
        commands["notifications --format jsonl"] = [exe, "--db", str(book), "notifications", "--format", "jsonl", *limit]
    commands["import sqlmodel"] = [sys.executable, "-c", "import sqlmodel"]
    results: dict[str, list[tuple[float, int, float, float]]] = {name: [] for name in commands}
    for _ in range(args.runs):  # round after round: a load that comes and goes hits every figure alike
        for name, argv in commands.items():
            results[name].append(timed(argv, env))
    report = {"db": str(book), "runs": args.runs, "load_avg": os.getloadavg(), "commands": {}}
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        records = runs[0][1]
        rss = max(r[2] for r in runs)
        cpu = statistics.median(r[3] for r in runs)
        entry = {"argv": commands[name][2:], "records": records, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                 "peak_rss_mb": round(rss, 1)}
        if name != "import sqlmodel":
            per_s = records / wall
            entry.update({"per_s": round(per_s), "per_cpu_s": round(records / cpu) if cpu else None,
                          "limit_per_s": PER_S, "limit_rss_mb": RSS_MB, "ok": per_s >= PER_S and rss < RSS_MB})
        report["commands"][name] = entry
        figures = f"{records:>9} records in {wall:7.2f} s (CPU {cpu:6.2f} s)" + (
            f" = {entry['per_s']:>7}/s ({entry['per_cpu_s']}/CPU-s)" if "per_s" in entry else "")
        verdict = "" if "ok" not in entry else ("  ok" if entry["ok"] else f"  NOT within {PER_S}/s and {RSS_MB} MB")
        print(f"{name:32} {figures}, peak RSS {rss:6.1f} MB{verdict}")
    print(f"load average {report['load_avg'][0]:.2f} (a shared machine: figures are medians of {args.runs} rounds)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
