"""Benchmark: how fast coopctl starts and answers, against the libraries it is built on.

    python bench/startup.py [--db PATH | --orders N --due D] [--runs 7] [--json]

Operations staff run commands all day and cron runs `coopctl tick` every minute, so every
command must start about as fast as the libraries it needs, even on a large order book:

- `coopctl --help`, `coopctl COMMAND --help`, `--version` and shell completion (what the
  shell function that `--install-completion` installs runs at each TAB: bash, zsh, fish) within
  1.5x of `python -c "import typer"`;
- `show`, `list --limit 50`, `list --due-before`, a `tick` with nothing due and one action
  within 1.25x of `python -c "import sqlmodel"`.

The database: --db PATH when given, else bench/out/tick-1000000-100000.db when bench/tick.py
has built it, else one of --orders/--due built (and cached) by bench/tick.py's `cached_db`
through coopctl's own rules and bulk path. Commands that write (`tick`, `accept`) run on a copy.
`tick --now` is one second before the earliest wake-up in the database, so nothing is due; each
`accept` takes another pending order whose deadline is ahead.

Every command runs as a separate process, `--runs` times, interleaved (round after round), so
that a load that comes and goes hits every figure alike; the medians are compared. Wall time is
the figure; CPU time (user + system of the child) is shown too, as it suffers less from a
shared machine. Before timing, the coopctl package is compiled to bytecode (as `pip install`
does; an editable install run with PYTHONDONTWRITEBYTECODE would compile every module on every
start), unless --no-compile (remove coopctl/__pycache__ first to measure that case).

With --json the last line is {"db", "orders", "runs", "load_avg", "commands": {NAME: {"argv",
"wall_ms", "cpu_ms", "baseline", "ratio", "cpu_ratio", "limit", "ok"}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tick import NOW, cached_db, coopctl_argv  # noqa: E402  (bench/tick.py: the cached order book)
from timing import compiled  # noqa: E402

LARGE = HERE / "out" / "tick-1000000-100000.db"
HELP_LIMIT = 1.5
COMMAND_LIMIT = 1.25
SECOND = 1_000_000


def iso_utc(instant: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(instant / SECOND, timezone.utc).isoformat()


def copy_database(source: Path, target: Path) -> Path:
    """A copy that can be written: the file and, when one is left, its WAL (never a half)."""
    shutil.copyfile(source, target)
    wal = Path(f"{source}-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{target}-wal"))
    return target


def facts(db: Path, runs: int) -> dict:
    """What the commands need from the database: an order to show, an instant before every
    wake-up, an instant with orders due, and `runs` pending orders that can still be accepted."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (orders,) = conn.execute("SELECT count(*) FROM orders").fetchone()
        (first_wake,) = conn.execute("SELECT min(wake_at) FROM orders").fetchone()
        (middle,) = conn.execute("SELECT id FROM orders ORDER BY id LIMIT 1 OFFSET ?", (max(0, orders // 2),)).fetchone()
        (latest_event,) = conn.execute("SELECT max(last_event_at) FROM orders WHERE status = 'pending'").fetchone()
        acting_at = max(NOW, latest_event + SECOND)
        pending = conn.execute(
            "SELECT id, creator FROM orders WHERE status = 'pending' AND deadline > ? ORDER BY id DESC LIMIT ?",
            (acting_at + 60 * SECOND, runs),
        ).fetchall()
    finally:
        conn.close()
    if first_wake is None:
        raise SystemExit(f"{db}: no order has a deadline; use a database built by bench/tick.py")
    if len(pending) < runs:
        raise SystemExit(f"{db}: fewer than {runs} pending orders to accept")
    return {
        "orders": orders, "show": middle, "quiet_now": first_wake - SECOND, "due_before": NOW,
        "acting_at": acting_at, "pending": pending,
    }


def completing(shell: str, words: str) -> dict[str, str]:
    """The environment of one TAB: what Typer's completion script sets for `shell`."""
    env = {"_COOPCTL_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
    return env


def run_timed(argv: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall seconds, user + system CPU seconds) of one run of `argv` as its own process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def commands(python: str, coopctl: list[str], db: Path, work_db: Path, f: dict) -> dict[str, tuple]:
    """name -> (baseline, argv or a function of the round giving argv[, more environment])."""
    show = str(f["show"])

    def accept(round_: int) -> list[str]:
        order, creator = f["pending"][round_]
        return [*coopctl, "--db", str(work_db), "accept", str(order), "--creator", creator, "--at", iso_utc(f["acting_at"])]

    return {
        "import typer": (None, [python, "-c", "import typer"]),
        "import sqlmodel": (None, [python, "-c", "import sqlmodel"]),
        "--help": ("import typer", [*coopctl, "--help"]),
        "show --help": ("import typer", [*coopctl, "show", "--help"]),
        "tick --help": ("import typer", [*coopctl, "tick", "--help"]),
        "--version": ("import typer", [*coopctl, "--version"]),
        "complete bash: command": ("import typer", coopctl, completing("bash", "coopctl cancel-")),
        "complete bash: options": ("import typer", coopctl, completing("bash", "coopctl accept 7 --")),
        "complete bash: --status": ("import typer", coopctl, completing("bash", "coopctl list --db x.db --status c")),
        "complete zsh: options": ("import typer", coopctl, completing("zsh", "coopctl create --")),
        "complete fish: --form": ("import typer", coopctl, completing("fish", "coopctl create --form ")),
        "show ID": ("import sqlmodel", [*coopctl, "--db", str(db), "show", show]),
        "show ID --json": ("import sqlmodel", [*coopctl, "--db", str(db), "show", show, "--json"]),
        "list --limit 50": ("import sqlmodel", [*coopctl, "--db", str(db), "list", "--limit", "50"]),
        "list --due-before --limit 50": (
            "import sqlmodel", [*coopctl, "--db", str(db), "list", "--due-before", iso_utc(f["due_before"]), "--limit", "50"],
        ),
        "tick (nothing due)": ("import sqlmodel", [*coopctl, "--db", str(work_db), "tick", "--now", iso_utc(f["quiet_now"])]),
        "accept": ("import sqlmodel", accept),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="a SQLite database built by bench/tick.py (read only; writes go to a copy)")
    parser.add_argument("--orders", type=int, default=100_000, help="without --db and the 1,000,000-order database: build this many")
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7, help="runs of each command; the median counts [7]")
    parser.add_argument("--no-compile", action="store_true", help="do not compile coopctl to bytecode first")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.db is not None:
        if not args.db.is_file():
            parser.error(f"--db {args.db}: no such file")
        source = args.db.resolve()
    elif LARGE.exists():
        source = LARGE
    else:
        source = cached_db(args.orders, args.due)
    if not args.no_compile:
        compiled()
    f = facts(source, args.runs)
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update({"NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"})
    with tempfile.TemporaryDirectory(prefix="coopctl-startup-") as tmp:
        work = Path(tmp)
        print(f"copying {source.name} for the commands that write…", file=sys.stderr)
        work_db = copy_database(source, work / "work.db")
        table = commands(python, coopctl_argv(), source, work_db, f)
        walls: dict[str, list[float]] = {name: [] for name in table}
        cpus: dict[str, list[float]] = {name: [] for name in table}
        argvs: dict[str, list[str]] = {}
        for round_ in range(args.runs):
            for name, (_, argv, *more) in table.items():
                argv = argv(round_) if callable(argv) else argv
                argvs.setdefault(name, argv)
                wall, cpu = run_timed(argv, {**env, **(more[0] if more else {})}, work)
                walls[name].append(wall)
                cpus[name].append(cpu)
            print(f"\rround {round_ + 1}/{args.runs}", end="", file=sys.stderr)
        print(file=sys.stderr)
    load = [round(x, 2) for x in os.getloadavg()]
    result = {"db": str(source), "orders": f["orders"], "runs": args.runs, "load_avg": load, "commands": {}}
    for name, (baseline, *_) in table.items():
        wall_ms = statistics.median(walls[name]) * 1000
        cpu_ms = statistics.median(cpus[name]) * 1000
        entry = {"argv": [Path(argvs[name][0]).name, *argvs[name][1:]], "wall_ms": round(wall_ms, 1), "cpu_ms": round(cpu_ms, 1)}
        if baseline is not None:
            limit = HELP_LIMIT if baseline == "import typer" else COMMAND_LIMIT
            ratio = wall_ms / (statistics.median(walls[baseline]) * 1000)
            cpu_ratio = cpu_ms / (statistics.median(cpus[baseline]) * 1000)
            entry.update(baseline=baseline, ratio=round(ratio, 3), cpu_ratio=round(cpu_ratio, 3), limit=limit, ok=ratio <= limit)
        result["commands"][name] = entry
    print(f"{source} ({f['orders']:,} orders), median of {args.runs} interleaved runs, load average {load[0]} {load[1]} {load[2]}")
    print(f"{'command':32} {'wall ms':>9} {'cpu ms':>9}  {'vs':16} {'ratio':>6} {'cpu':>6} {'limit':>6}")
    for name, e in result["commands"].items():
        line = f"{name:32} {e['wall_ms']:9.0f} {e['cpu_ms']:9.0f}"
        if "baseline" in e:
            verdict = "ok" if e["ok"] else "SLOW"
            line += f"  {e['baseline']:16} {e['ratio']:6.2f} {e['cpu_ratio']:6.2f} {e['limit']:6.2f} {verdict}"
        print(line)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
