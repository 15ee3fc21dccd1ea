"""Helpers of the reliability tests (concurrency, crashes, hostile input, doctor, migrations):
build an order book through the rules, read every history back, check that it replays.

Orders are decided by coopctl's own rules (`lifecycle.create`/`lifecycle.act`) and written
through the storage layer's bulk path (`Tx.insert_new`), as bench/tick.py does: never by
hand-written SQL, so the histories are real ones.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
from datetime import timezone
from decimal import Decimal
from pathlib import Path

from coopctl import history, lifecycle
from coopctl.lifecycle import Action, Party, Terms
from coopctl.policy import DAY, HOUR, MINUTE, Policy, ReminderOffsets, parse_instant
from coopctl.store import Store, locate, order_from_row

EXPORTED_AT = "2026-12-11T10:00:00+08:00"  # the `--at` of the exports the tests make


def exported_book(folder: Path, orders: int) -> Path:
    """`export --all --at EXPORTED_AT` of a book of `orders` orders (`build`), as a file in
    `folder` (made once per folder and size)."""
    from conftest import base_env, coopctl_executable

    target = folder / f"e{orders}.json"
    if not target.exists():
        book = folder / f"b{orders}.db"
        build(book, orders)
        done = subprocess.run([coopctl_executable(), "export", "--all", "--at", EXPORTED_AT, "--out", str(target)],
                              capture_output=True, env=base_env(book), cwd=folder, timeout=300)
        assert done.returncode == 0, done.stderr
    return target


BASE = parse_instant("2026-11-01T10:00:00+08:00", timezone.utc)
SCENARIOS = ("pending", "effective", "cancel_requested", "live", "delivered", "review_failed")


def stress() -> int:
    """COOPCTL_STRESS: 1 by default (CI); 10 or 100 for a longer soak by hand."""
    try:
        return max(1, int(os.environ.get("COOPCTL_STRESS", "1")))
    except ValueError:
        return 1


def scenario_outcome(order_id: int, created: int, latest: int, scenario: str, operator: str = "builder"):
    """One order brought to `scenario` by the rules, as one Outcome (every event and notification)."""
    terms = Terms(f"商家-{order_id % 7}", f"达人-{order_id % 11}", (f"P-{order_id}",), "live", Decimal("12.50"),
                  Decimal("5000.00"), latest)
    outcome = lifecycle.create(order_id, terms, Policy(), ReminderOffsets(), created, operator)
    creator, merchant = terms.creator, terms.merchant
    steps: list[tuple[Action, Party, str, int, dict]] = []
    if scenario != "pending":
        steps.append((Action.ACCEPT, Party.CREATOR, creator, created + HOUR, {}))
    if scenario == "cancel_requested":
        steps.append((Action.CANCEL_REQUEST, Party.MERCHANT, merchant, created + 2 * HOUR, {"reason": "recall"}))
    if scenario == "live":
        steps.append((Action.GO_LIVE, Party.CREATOR, creator, created + 2 * HOUR, {}))
    if scenario in ("delivered", "review_failed"):
        steps.append((Action.DELIVER, Party.CREATOR, creator, created + 2 * HOUR, {"evidence": "https://v.example/x"}))
    if scenario == "review_failed":
        steps.append((Action.REVIEW_FAIL, Party.MERCHANT, merchant, created + 3 * HOUR, {"reason": "not shown"}))
    for action, party, who, at, extra in steps:
        outcome = outcome.then(lifecycle.act(outcome.order, action, party, who, at, operator, **extra))
    return outcome


def build(path: Path, orders: int, *, spread_minutes: int = 1440, chunk: int = 5000) -> None:
    """A database of `orders` orders in every timed status, created over `spread_minutes` from
    BASE (so that deadlines fall at many instants); every one is due by `BASE + 40d`."""
    store = Store(locate(str(path)))
    store.initialise(made_by="test")
    try:
        for start in range(1, orders + 1, chunk):
            batch = []
            for order_id in range(start, min(orders, start + chunk - 1) + 1):
                created = BASE + (order_id * 7919 % spread_minutes) * MINUTE
                latest = created + 5 * DAY + (order_id % 5) * HOUR
                scenario = SCENARIOS[order_id % len(SCENARIOS)]
                batch.append(scenario_outcome(order_id, created, latest, scenario))
            with store.write() as tx:
                tx.insert_new(batch)
    finally:
        store.dispose()
    checkpoint(path)


def checkpoint(path: Path) -> None:
    """Fold the WAL into the main file, so that a copy of the file alone is the whole database."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def event_lists(path: Path) -> dict[int, list[tuple]]:
    """Every order's events as stored: {order_id: [(seq, kind, at, actor, data, prev_hash, hash), ...]}."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found: dict[int, list[tuple]] = {}
        rows = conn.execute("SELECT order_id, seq, kind, at, actor, data, prev_hash, hash FROM events ORDER BY order_id, seq")
        for order_id, *rest in rows:
            found.setdefault(order_id, []).append(tuple(rest))
        return found
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def verify_all(path: Path, *, known: dict[int, str] | None = None, chunk: int = 1000) -> dict[int, str]:
    """Every order's hash chain verifies, its events rebuild through the rules, and the stored
    order is where its history leads (status, last seq, last hash).

    Returns {order_id: digest of its stored events}; orders whose digest is in `known` (checked
    by an earlier call, and unchanged since) are not rebuilt again."""
    from sqlalchemy import select

    from coopctl.models import ORDERS
    from coopctl.store import ORDER_COLUMNS

    known = known or {}
    digests: dict[int, str] = {}
    store = Store(locate(str(path)))
    try:
        with store.read() as tx:
            ids = tx.all_order_ids()
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                events = tx.events_of(part)
                rows = tx.conn.execute(select(*[ORDERS.c[n] for n in ORDER_COLUMNS]).where(ORDERS.c.id.in_(part)))
                stored = {o.id: o for o in map(order_from_row, rows)}
                for order_id in part:
                    digest = hashlib.sha256(repr([(e, stored[order_id].last_hash) for e in events[order_id]]).encode()).hexdigest()
                    digests[order_id] = digest
                    if known.get(order_id) == digest:
                        continue
                    try:
                        history.verify_chain(order_id, events[order_id])
                        steps = history.rebuild(order_id, events[order_id], strict=False)  # a stored history
                    except history.Divergence as exc:
                        raise AssertionError(f"order {order_id}: {exc}") from None
                    rebuilt, row = steps[-1].order, stored[order_id]
                    assert (rebuilt.status, rebuilt.last_seq, rebuilt.last_hash) == (
                        row.status, row.last_seq, row.last_hash,
                    ), f"order {order_id}: the stored row is not where its history leads"
    finally:
        store.dispose()
    return digests


def load_orders(path: Path) -> dict:
    store = Store(locate(str(path)))
    try:
        with store.read() as tx:
            return {o.id: o for o in tx.list_orders()}
    finally:
        store.dispose()


def file_digest(path: Path) -> dict[str, str | None]:
    """SHA-256 of a database file and of its write-ahead log (None when absent; an empty log,
    which holds nothing, counts as absent). The -shm index is derived and not compared."""
    digests: dict[str, str | None] = {}
    for suffix in ("", "-wal"):
        f = Path(str(path) + suffix)
        data = f.read_bytes() if f.exists() else b""
        digests[suffix or "db"] = hashlib.sha256(data).hexdigest() if data or (f.exists() and not suffix) else None
    return digests


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def deliver_outbox(run, **kw) -> None:
    """Hand every pending notification to a dispatcher of our own (`notifications --pending
    --mark-sent`), as a running dispatcher would have: `doctor` then has no backlog to report, so
    a test of another finding sees that finding alone. `run` is a test's way of running coopctl
    (`invoke`, or a book's own runner), `kw` what it takes besides the arguments (`env=`)."""
    result = run("notifications", "--pending", "--mark-sent", "--format", "jsonl", **kw)
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert code == 0, result.stderr


__all__ = [
    "BASE", "SCENARIOS", "build", "checkpoint", "deliver_outbox", "event_lists", "file_digest", "integrity", "kill",
    "load_orders", "order_from_row", "scenario_outcome", "stress", "verify_all",
]

