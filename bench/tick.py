"""Benchmark: `coopctl tick` on a large order book against a raw set-based SQLite baseline.

    python bench/tick.py --orders 1000000 --due 100000 [--json]

1. Builds (once, cached under bench/out/) a database of N orders of which D are due: every
   order is decided by coopctl's own rules (`lifecycle.create`) and written through the storage
   layer's bulk path (`Tx.insert_new`), never by hand-written SQL. Due orders are pending orders
   whose accept window has passed; the others are pending with deadlines and reminders ahead.
2. Times `coopctl tick --now T` as a separate process on a fresh copy: wall seconds and peak
   RSS (the child's own rusage), start-up, imports and commit included.
3. Times, in the same run and also as a separate process, a raw `sqlite3` baseline that writes
   the same rows with set-based SQL: per due order the order row updated, one event row with a
   64-hex hash and a JSON payload, and two notification rows.

With --json the last line is {"orders", "due", "tick_s", "baseline_s", "ratio", "peak_rss_mb", "db"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from coopctl import lifecycle  # noqa: E402
from coopctl.lifecycle import Terms  # noqa: E402
from coopctl.policy import DAY, HOUR, Policy, ReminderOffsets, iso, parse_instant  # noqa: E402
from coopctl.store import Store, locate  # noqa: E402
from decimal import Decimal  # noqa: E402
from datetime import timezone  # noqa: E402

NOW = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
CHUNK = 20_000


def build(path: Path, orders: int, due: int, *, progress: bool = True) -> None:
    """N orders through the rules and the storage layer's bulk path; D of them due at NOW."""
    store = Store(locate(str(path)))
    store.initialise(made_by="bench")
    policy, reminders = Policy(), ReminderOffsets()
    due_terms = Terms("商家-bench", "达人-bench", ("P-1",), "live", Decimal("12.50"), Decimal("5000.00"), NOW + 30 * DAY)
    later_terms = Terms("商家-bench", "达人-bench-2", ("P-2",), "video", Decimal("8.00"), Decimal("0.00"), NOW + 30 * DAY)
    started = time.perf_counter()
    order_id = 0
    while order_id < orders:
        batch = []
        for _ in range(min(CHUNK, orders - order_id)):
            order_id += 1
            if order_id <= due:  # spread due orders over the last day so wake_at differs
                created = NOW - 3 * DAY - (order_id % 86_400) * 1_000_000
                batch.append(lifecycle.create(order_id, due_terms, policy, reminders, created, "bench"))
            else:
                created = NOW - HOUR + (order_id % 3_600) * 1_000_000
                batch.append(lifecycle.create(order_id, later_terms, policy, reminders, created, "bench"))
        with store.write() as tx:
            tx.insert_new(batch)
        if progress:
            rate = order_id / (time.perf_counter() - started)
            print(f"\rbuilding {path.name}: {order_id:,}/{orders:,} orders ({rate:,.0f}/s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    store.dispose()
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")


def cached_db(orders: int, due: int) -> Path:
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    path = out / f"tick-{orders}-{due}.db"
    if not path.exists():
        partial = path.with_suffix(".partial")
        for suffix in ("", "-wal", "-shm"):
            Path(str(partial) + suffix).unlink(missing_ok=True)
        build(partial, orders, due)
        partial.rename(path)
    return path


def fresh_copy(source: Path, workdir: Path, name: str) -> Path:
    target = workdir / name
    shutil.copyfile(source, target)
    return target


def timed(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a process; (wall seconds, peak RSS in MB of that process, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode()


BASELINE = r"""
import sqlite3, sys
path, now = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA synchronous=FULL")
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TEMP TABLE due AS SELECT id, merchant, creator, deadline, last_seq, last_hash FROM orders WHERE wake_at <= ?", (now,))
conn.execute('''INSERT INTO events (order_id, seq, kind, at, actor, operator, data, prev_hash, hash)
                SELECT id, last_seq + 1, 'expired', deadline, 'system', 'bench', '{"reason":"accept window passed"}',
                       last_hash, lower(hex(randomblob(32))) FROM due''')
conn.execute('''INSERT INTO notifications (order_id, recipient, channel, kind, at, text)
                SELECT id, 'merchant:' || merchant, 'inbox', 'expired', deadline,
                       'cooperation order #' || id || ' expired: it was not accepted in time' FROM due
                UNION ALL
                SELECT id, 'creator:' || creator, 'inbox', 'expired', deadline,
                       'cooperation order #' || id || ' expired: it was not accepted in time' FROM due''')
conn.execute('''UPDATE orders SET status = 'expired', status_since = deadline, last_seq = last_seq + 1,
                       last_hash = (SELECT hash FROM events e WHERE e.order_id = orders.id AND e.seq = orders.last_seq + 1),
                       last_event_at = deadline, deadline = NULL, wake_at = NULL
                WHERE id IN (SELECT id FROM due)''')
conn.execute("COMMIT")
"""


def coopctl_argv() -> list[str]:
    exe = Path(sys.executable).parent / "coopctl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "coopctl"]


def run(orders: int, due: int) -> dict:
    source = cached_db(orders, due)
    with tempfile.TemporaryDirectory(prefix="coopctl-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"}
        env.pop("COOPCTL_CONFIG", None)
        tick_db = fresh_copy(source, work, "tick.db")
        tick_s, rss, out = timed([*coopctl_argv(), "--db", str(tick_db), "tick", "--now", iso(NOW), "--json"], env)
        report = json.loads(out)
        if report["applied"] != due:
            raise SystemExit(f"tick applied {report['applied']} transitions, expected {due}")
        idle_s, idle_rss, _ = timed([*coopctl_argv(), "--db", str(tick_db), "tick", "--now", iso(NOW), "--json"], env)
        base_db = fresh_copy(source, work, "baseline.db")
        baseline_s, _, _ = timed([sys.executable, "-c", BASELINE, str(base_db), str(NOW)], env)
    return {
        "orders": orders,
        "due": due,
        "tick_s": round(tick_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(tick_s / baseline_s, 2),
        "peak_rss_mb": round(rss, 1),
        "idle_tick_s": round(idle_s, 3),
        "db": "sqlite",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    if not 0 <= args.due <= args.orders:
        parser.error("--due must be between 0 and --orders")
    result = run(args.orders, args.due)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>12}: {value}")


if __name__ == "__main__":
    main()
