"""Benchmark: `coopctl dispatch` (SPEC section 5, issue 13).

    python bench/dispatch.py [--notifications 20000] [--rounds 3] [--concurrency 8] [--json]

Per round, on a fresh copy of one template database holding N pending notifications:
- `coopctl dispatch --exec /bin/true --concurrency K` (target >= 300 notifications/s);
- `coopctl dispatch --webhook URL --concurrency K` to a local HTTP/1.1 keep-alive server in this
  process (answers 200 at once; target >= 500/s);
- the database's own cost per notification, in process: claims of max(8K, 64) at a time (as dispatch) and their
  recording as sent (one transaction each), with no delivery at all;
- `python -c "import sqlmodel"` as the baseline of start-up cost, timed in the same round.
Every figure includes the dispatcher's start-up. Medians over the rounds are printed; the
machine is shared, so quote the ratio to the baseline beside the absolute figures.
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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from timing import compiled  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
EXEC_PER_S, WEBHOOK_PER_S = 300, 500
NOW = "2026-12-01T12:00:00+08:00"


def coopctl() -> str:
    beside = Path(sys.executable).parent / "coopctl"
    return str(beside) if beside.exists() else shutil.which("coopctl") or "coopctl"


def template(folder: Path, count: int) -> Path:
    """A database with one order and `count` pending notifications (every one due at NOW)."""
    from coopctl.config import Settings
    from coopctl.service import Service, create_order
    from coopctl.policy import parse_instant
    from coopctl.store import Store, locate

    path = folder / "template.db"
    store = Store(locate(str(path)))
    tz = Settings().tz
    at = parse_instant("2026-12-01T10:00:00+08:00", tz, now=lambda: 0)
    create_order(Service(store, Settings(), "bench"), merchant="商家A", creator="达人小王", products=["P1"], form="live",
                 commission="10", ad_budget="0", latest_start_at=at + 86_400_000_000 * 5, note=None, at=at)
    store.dispose()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM notifications")
    conn.executemany(
        "INSERT INTO notifications (order_id, recipient, channel, kind, at, text) VALUES (1, ?, ?, 'created', ?, ?)",
        [(f"creator:达人{i % 97}", "inbox" if i % 2 else "sms", at, f"通知 #{i}: cooperation order #1") for i in range(count)],
    )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def fresh(template_path: Path, folder: Path, name: str) -> Path:
    target = folder / name
    for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(template_path, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
    return target


def run(argv: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return wall, done.stdout


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def database_cost(path: Path, batch: int) -> float:
    """Microseconds of database work per notification: claim `batch` at a time, record them sent."""
    from coopctl.store import Store, locate

    store = Store(locate(str(path)))
    total = 0
    start = time.perf_counter()
    try:
        while True:
            with store.write() as tx:
                rows = tx.claim_notifications("bench:1:x", now=10**17, wall=1, lease_until=10**15, limit=batch)
            if not rows:
                break
            with store.write() as tx:
                tx.record_deliveries("bench:1:x", [(r[0], "sent", 1, 10**15, None, None) for r in rows])
            total += len(rows)
    finally:
        store.dispose()
    return (time.perf_counter() - start) / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    folder = Path(tempfile.mkdtemp(prefix="coopctl-dispatch-bench-"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        base = template(folder, args.notifications)
        figures: dict[str, list[float]] = {"baseline_s": [], "exec_s": [], "webhook_s": [], "db_us": []}
        for _ in range(args.rounds):
            figures["baseline_s"].append(run([sys.executable, "-c", "import sqlmodel"], dict(os.environ))[0])
            for name, how in (("exec_s", ["--exec", "/bin/true"]), ("webhook_s", ["--webhook", url])):
                db = fresh(base, folder, "round.db")
                env = {**os.environ, "COOPCTL_DB": str(db)}
                wall, out = run([coopctl(), "dispatch", *how, "--concurrency", str(args.concurrency), "--now", NOW, "--json"], env)
                sent = json.loads(out)["sent"]
                if sent != args.notifications:
                    raise SystemExit(f"{name}: sent {sent} of {args.notifications}")
                figures[name].append(wall)
            figures["db_us"].append(database_cost(fresh(base, folder, "round.db"), max(8 * args.concurrency, 64)))
        med = {k: statistics.median(v) for k, v in figures.items()}
        n = args.notifications
        result = {
            "notifications": n, "rounds": args.rounds, "concurrency": args.concurrency, "load_avg": os.getloadavg(),
            "baseline_import_sqlmodel_s": round(med["baseline_s"], 3),
            "exec": {"wall_s": round(med["exec_s"], 2), "per_s": round(n / med["exec_s"]), "limit_per_s": EXEC_PER_S,
                     "ok": n / med["exec_s"] >= EXEC_PER_S},
            "webhook": {"wall_s": round(med["webhook_s"], 2), "per_s": round(n / med["webhook_s"]),
                        "limit_per_s": WEBHOOK_PER_S, "ok": n / med["webhook_s"] >= WEBHOOK_PER_S},
            "database_us_per_notification": round(med["db_us"], 1),
        }
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{n:,} notifications, concurrency {args.concurrency}, median of {args.rounds} rounds "
                  f"(load average {result['load_avg'][0]:.1f}); import sqlmodel: {med['baseline_s']:.3f} s")
            for name in ("exec", "webhook"):
                r = result[name]
                print(f"  {name:8} {r['wall_s']:7.2f} s  {r['per_s']:6,}/s  (target {r['limit_per_s']}/s: {'ok' if r['ok'] else 'MISSED'})")
            print(f"  database alone (claim + mark sent): {result['database_us_per_notification']} µs per notification")
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
