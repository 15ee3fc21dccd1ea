"""Benchmark: `coopctl tick` on a large order book against a raw set-based SQLite baseline.

    python bench/tick.py --orders 1000000 --due 100000 [--repeat 3] [--json]

1. Builds (once, cached under bench/out/) a database of N orders of which D are due: every
   order is decided by coopctl's own rules (`lifecycle.create`) and written through the storage
   layer's bulk path (`Tx.insert_new`), never by hand-written SQL. Due orders are pending orders
   whose accept window has passed; the others are pending with deadlines and reminders ahead.
2. Times `coopctl tick --now T` as a separate process on a fresh copy (written to disk first):
   wall seconds, peak RSS and CPU seconds (the child's rusage, its helper process included),
   start-up, imports and commit included.
3. Times, in the same round and also as a separate process, a raw `sqlite3` baseline that writes
   the same rows with set-based SQL: per due order the order row updated, one event row with a
   64-hex hash and a JSON payload, and two notification rows.
4. Runs `--repeat` such rounds and reports the medians (single runs swing by tens of percent on
   a shared or virtual machine); each round is printed on stderr.

With --json the last line is {"orders", "due", "tick_s", "baseline_s", "ratio", "peak_rss_mb", "db",
"idle_tick_s", "tick_cpu_s", "rounds": [{"tick_s", "baseline_s", "ratio"}, …]}.

PostgreSQL (`--db URL`, the URL of any database on the server, used to create others):

    python bench/tick.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        --orders 200000 --due 20000 [--workers 1,2,4] [--json]

1. Builds (once, cached on the server as database `coopctl_bench_N_D`) the same order book through
   the same rules and bulk path.
2. For each worker count W: copies it (`CREATE DATABASE … TEMPLATE`, not timed), starts W
   `coopctl tick --now T` processes at once, and times until the last one finishes. The ticks share
   the due orders through `FOR UPDATE SKIP LOCKED`; the run checks that together they applied
   exactly D transitions and that no order received two.

With --json the last line is {"orders", "due", "db": "postgresql", "runs": [{"workers", "tick_s",
"orders_per_s", "applied_by_worker", "peak_rss_mb", "workers_cpu_s"}, …], "idle_tick_s"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
from timing import compiled  # noqa: E402

NOW = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
CHUNK = 20_000


def build(path: Path | str, orders: int, due: int, *, progress: bool = True) -> None:
    """N orders through the rules and the storage layer's bulk path; D of them due at NOW.
    `path` is a SQLite file, or the URL of an empty PostgreSQL database."""
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
            tx.follow_explicit_ids()
        if progress:
            rate = order_id / (time.perf_counter() - started)
            name = store.location.display if store.location.path is None else path.name
            print(f"\rbuilding {name}: {order_id:,}/{orders:,} orders ({rate:,.0f}/s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    store.dispose()
    if store.location.path is None:
        return
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
    """A copy on disk before the clock starts: without the fsync, the first fsync of whichever
    process runs next would also write back the whole copied file, and charge it to that process."""
    target = workdir / name
    for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):  # a WAL of an earlier round must not apply
        leftover.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    with open(target, "rb+") as copy:
        os.fsync(copy.fileno())
    return target


def timed(argv: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """Run a process; (wall seconds, peak RSS in MB, CPU seconds, stdout). The RSS and CPU are the
    process's own and those of any process it started and waited for (tick's helper)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()  # both commands write little; stderr is read once stdout is closed
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.decode()


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


def run(orders: int, due: int, repeat: int = 3) -> dict:
    """`repeat` rounds of (tick, baseline), each on a fresh copy; the figures are the medians. On a
    shared or virtual machine the speed of the CPU and the disk drifts by tens of percent from one
    second to the next, so single runs are not compared."""
    source = cached_db(orders, due)
    ticks, baselines, rss, cpu, idles = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="coopctl-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"}
        env.pop("COOPCTL_CONFIG", None)
        for round_ in range(repeat):
            tick_db = fresh_copy(source, work, "tick.db")
            tick_s, tick_rss, tick_cpu, out = timed(
                [*coopctl_argv(), "--db", str(tick_db), "tick", "--now", iso(NOW), "--json"], env
            )
            report = json.loads(out)
            if report["applied"] != due:
                raise SystemExit(f"tick applied {report['applied']} transitions, expected {due}")
            idle_s, _, _, _ = timed([*coopctl_argv(), "--db", str(tick_db), "tick", "--now", iso(NOW), "--json"], env)
            base_db = fresh_copy(source, work, "baseline.db")
            baseline_s, _, _, _ = timed([sys.executable, "-c", BASELINE, str(base_db), str(NOW)], env)
            ticks.append(tick_s)
            baselines.append(baseline_s)
            rss.append(tick_rss)
            cpu.append(tick_cpu)
            idles.append(idle_s)
            print(
                f"round {round_ + 1}/{repeat}: tick {tick_s:.2f} s ({tick_cpu:.1f} CPU s, {tick_rss:.0f} MB), "
                f"baseline {baseline_s:.2f} s, ratio {tick_s / baseline_s:.2f}",
                file=sys.stderr,
            )
    tick_s, baseline_s = statistics.median(ticks), statistics.median(baselines)
    return {
        "orders": orders,
        "due": due,
        "tick_s": round(tick_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(tick_s / baseline_s, 2),
        "peak_rss_mb": round(max(rss), 1),
        "db": "sqlite",
        "idle_tick_s": round(statistics.median(idles), 3),
        "tick_cpu_s": round(statistics.median(cpu), 2),
        "rounds": [
            {"tick_s": round(t, 3), "baseline_s": round(b, 3), "ratio": round(t / b, 2)} for t, b in zip(ticks, baselines)
        ],
    }


# --------------------------------------------------------------------------- PostgreSQL


class Server:
    """The PostgreSQL server behind --db: creates, copies and drops the bench databases."""

    def __init__(self, url: str):
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        if self.url.get_backend_name() != "postgresql":
            raise SystemExit(f"--db must be a PostgreSQL URL (postgresql+psycopg://...), not {url!r}")

    def database_url(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def admin(self):
        import psycopg

        u = self.url
        return psycopg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database or "postgres",
            autocommit=True,
        )

    def exists(self, name: str) -> bool:
        with self.admin() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def create(self, name: str, template: str | None = None) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def rename(self, old: str, new: str) -> None:
        with self.admin() as conn:
            conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def query(self, name: str, sql: str):
        import psycopg

        u = self.url
        with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=name, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description is not None else []


def cached_pg(server: Server, orders: int, due: int) -> str:
    """The name of the template database with the order book, built once."""
    name = f"coopctl_bench_{orders}_{due}"
    if not server.exists(name):
        partial = f"{name}_partial"
        server.create(partial)
        build(server.database_url(partial), orders, due)
        server.query(partial, "VACUUM ANALYZE")
        server.rename(partial, name)
    return name


def tick_workers(argv: list[str], workers: int, env: dict) -> tuple[float, list[dict], float, float]:
    """Start `workers` tick processes at once; (wall seconds until the last ends, their reports, peak
    RSS MB, CPU seconds the workers used together)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(workers)]
    reports = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a tick worker failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        reports.append(json.loads(out))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    return wall, reports, usage.ru_maxrss / 1024, cpu


def run_postgres(url: str, orders: int, due: int, workers: list[int]) -> dict:
    server = Server(url)
    template = cached_pg(server, orders, due)
    env = {**os.environ, "NO_COLOR": "1", "COOPCTL_OPERATOR": "bench"}
    env.pop("COOPCTL_CONFIG", None)
    work = f"{template}_run"
    runs, idle_s = [], None
    try:
        for count in workers:
            server.create(work, template)
            argv = [*coopctl_argv(), "--db", server.database_url(work), "tick", "--now", iso(NOW), "--json"]
            wall, reports, rss, cpu = tick_workers(argv, count, env)
            applied = [r["applied"] for r in reports]
            if sum(applied) != due:
                raise SystemExit(f"{count} workers applied {sum(applied)} transitions together, expected {due}")
            (twice,), = server.query(work, "SELECT count(*) FROM (SELECT order_id FROM events WHERE kind = 'expired' "
                                           "GROUP BY order_id HAVING count(*) > 1) AS d")
            (left,), = server.query(work, f"SELECT count(*) FROM orders WHERE wake_at <= {NOW}")
            if twice or left:
                raise SystemExit(f"{count} workers: {twice} orders expired twice, {left} still due")
            runs.append({
                "workers": count, "tick_s": round(wall, 3), "orders_per_s": round(due / wall),
                "applied_by_worker": sorted(applied, reverse=True), "peak_rss_mb": round(rss, 1),
                "workers_cpu_s": round(cpu, 2),
            })
            print(f"{count} worker(s): {wall:.2f} s, {cpu:.1f} CPU s, applied {applied}", file=sys.stderr)
            if idle_s is None:
                idle_s, *_ = tick_workers(argv, 1, env)
    finally:
        server.drop(work)
    return {"orders": orders, "due": due, "db": "postgresql", "runs": runs, "idle_tick_s": round(idle_s or 0, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    parser.add_argument("--repeat", type=int, default=3, help="SQLite: rounds of (tick, baseline); the medians are reported [3]")
    parser.add_argument("--db", help="a PostgreSQL URL: measure there instead of SQLite (the server's databases are created from it)")
    parser.add_argument("--workers", default="1,2,4", help="PostgreSQL: concurrent tick processes per run, comma-separated [1,2,4]")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    if not 0 <= args.due <= args.orders:
        parser.error("--due must be between 0 and --orders")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--workers: comma-separated counts, e.g. 1,2,4")
    if not workers or min(workers) < 1:
        parser.error("--workers: each count must be at least 1")
    if args.db and args.db.startswith("sqlite"):
        parser.error("--db is for PostgreSQL; without it the benchmark runs on SQLite")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    result = run_postgres(args.db, args.orders, args.due, workers) if args.db else run(args.orders, args.due, args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>12}: {value}")


if __name__ == "__main__":
    main()
