"""Benchmark: streaming `import` and `replay --summary` of a large export (issue 14).

    python bench/import.py --orders 1000000 [--export FILE] [--pg URL] [--skip-pipe] [--json]
    python bench/import.py --orders 1000000 --replay-only [--before OTHER/.venv/bin/coopctl] [--replay-rounds 2]

1. The book is bench/tick.py's (`cached_db(orders, orders // 10)`, under bench/out/); it is
   exported once with `export --all --at T` into --export (default bench/out/export-N.json) unless
   that file exists. The export itself is not timed here (bench of the export path: issue 14, D1).
2. Times, each as a separate process (wall seconds, peak RSS and CPU seconds of the child):
   - `import FILE` into a new SQLite file;
   - with --pg URL (any database of a server, used to create others): `import FILE` into a new
     PostgreSQL database, then checks that both databases `export --all --at T` the same bytes;
   - `export --all | import -` from a fresh copy of the book into another new SQLite file (both
     processes' RSS and CPU);
   - `replay FILE --summary` (orders per second);
   - the baseline in the same run: `python -c "import sqlmodel"` (start-up of the dependencies).
3. Prints a line per step on stderr; with --json the last line is {"orders", "file_mb", "steps":
   {name: {"wall_s", "peak_rss_mb", "cpu_s"}}, "replay_orders_per_s", "baseline_s", "same_bytes"}.
The machine this was written on is shared: quote figures with the load average they ran under.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tick import Server, cached_db, coopctl_argv, fresh_copy, timed  # noqa: E402
from timing import compiled  # noqa: E402

AT = "2030-01-01T00:00:00+00:00"


def env_for(db: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update(COOPCTL_DB=db, COOPCTL_OPERATOR="bench", NO_COLOR="1")
    return env


def digest_of_export(db: str) -> str:
    """sha256 of `export --all --at AT`, streamed through a pipe (never held)."""
    proc = subprocess.Popen([*coopctl_argv(), "export", "--all", "--at", AT], stdout=subprocess.PIPE, env=env_for(db))
    digest = hashlib.sha256()
    for block in iter(lambda: proc.stdout.read(1 << 20), b""):
        digest.update(block)
    if proc.wait() != 0:
        raise SystemExit(f"export of {db} failed")
    return digest.hexdigest()


def piped(book: Path, target: Path) -> dict:
    """`export --all | import -`: each process's wall, RSS and CPU."""
    started = time.perf_counter()
    exporter = subprocess.Popen([*coopctl_argv(), "export", "--all", "--at", AT], stdout=subprocess.PIPE, env=env_for(str(book)))
    importer = subprocess.Popen([*coopctl_argv(), "import", "-"], stdin=exporter.stdout, stdout=subprocess.DEVNULL, env=env_for(str(target)))
    exporter.stdout.close()
    results = {}
    for name, proc in (("export", exporter), ("import", importer)):
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"piped {name} failed")
        results[name] = {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def replay_rounds(orders: int, export: Path, before: str | None, rounds: int, as_json: bool) -> None:
    """`replay FILE --summary` alone: this checkout's code and, with `before`, the code before, in
    ABBA order round after round; the medians of orders per second and their ratio."""
    import statistics

    codes = {"after": coopctl_argv()} | ({"before": [before]} if before else {})
    rates: dict[str, list[float]] = {name: [] for name in codes}
    rss: dict[str, list[float]] = {name: [] for name in codes}
    with tempfile.TemporaryDirectory(dir=HERE / "out") as work:
        for round_ in range(rounds):
            order = list(codes) if round_ % 2 == 0 else list(reversed(codes))
            for name in order:
                wall, peak, cpu, _ = timed([*codes[name], "replay", str(export), "--summary"], env_for(str(Path(work) / "none.db")))
                rates[name].append(orders / wall)
                rss[name].append(peak)
                print(f"replay {name}: {orders / wall:,.0f} orders/s, {wall:.1f} s, cpu {cpu:.1f} s, rss {peak:.0f} MB "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    result = {name: {"orders_per_s": round(statistics.median(rates[name])), "rounds": [round(r) for r in rates[name]],
                     "peak_rss_mb": round(max(rss[name]), 1)} for name in codes}
    if before:
        result["speed_up"] = round(statistics.median(rates["after"]) / statistics.median(rates["before"]), 2)
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--pg", default=None)
    parser.add_argument("--skip-pipe", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--replay-only", action="store_true",
                        help="only `replay --summary`, in --replay-rounds rounds (ABBA with --before)")
    parser.add_argument("--before", default=None, help="the coopctl executable of the code before (with --replay-only)")
    parser.add_argument("--replay-rounds", type=int, default=2)
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    book = cached_db(args.orders, args.orders // 10)
    export = args.export or HERE / "out" / f"export-{args.orders}.json"
    if not export.exists():
        subprocess.run([*coopctl_argv(), "export", "--all", "--at", AT, "--out", str(export)], env=env_for(str(book)), check=True)
    if args.replay_only:
        replay_rounds(args.orders, export, args.before, args.replay_rounds, args.json)
        return
    steps: dict = {}

    def step(name: str, argv: list[str], db: str) -> str:
        wall, rss, cpu, out = timed(argv, env_for(db))
        steps[name] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1), "cpu_s": round(cpu, 1)}
        print(f"{name}: {steps[name]} (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
        return out

    baseline, _, _, _ = timed([sys.executable, "-c", "import sqlmodel"])
    with tempfile.TemporaryDirectory(dir=HERE / "out") as work:
        work = Path(work)
        sqlite_db = work / "imported.db"
        step("import_sqlite", [*coopctl_argv(), "import", str(export)], str(sqlite_db))
        same = None
        if args.pg:
            server = Server(args.pg)
            name = f"coopctl_bench_import_{os.getpid()}"
            server.create(name)
            try:
                url = server.database_url(name)
                step("import_postgres", [*coopctl_argv(), "import", str(export)], url)
                same = digest_of_export(str(sqlite_db)) == digest_of_export(url)
            finally:
                server.drop(name)
        sqlite_db.unlink()
        if not args.skip_pipe:
            copy = fresh_copy(book, work, "book.db")
            steps["pipe"] = piped(copy, work / "piped.db")
            print(f"pipe: {steps['pipe']}", file=sys.stderr)
        out = step("replay_summary", [*coopctl_argv(), "replay", str(export), "--summary"], str(work / "none.db"))
    replay = steps["replay_summary"]
    result = {
        "orders": args.orders,
        "file_mb": round(export.stat().st_size / 1e6),
        "steps": steps,
        "replay_orders_per_s": round(args.orders / replay["wall_s"]) if replay["wall_s"] else None,
        "baseline_s": round(baseline, 2),
        "same_bytes": same,
        "replay_said": out.strip().splitlines()[-1] if out.strip() else "",
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
