"""`coopctl doctor`: check a database and say, for each finding, what to do.

Library first: `examine(store, now)` returns a `Report` of findings, each with what was found
and what to do; the command line renders it and exits 0 when healthy, 1 otherwise. Only reads:
an older schema is reported, not upgraded. A missing, foreign, unreadable or newer database is
still a `StorageError` (exit 5), as for every command.

The checks:
- integrity: SQLite's `PRAGMA integrity_check` and `PRAGMA foreign_key_check` (SQLite only);
- schema: the recorded version, and (SQLite, through sqlite-utils) that every table, column
  and the `wake_at` index that `tick` relies on are there; the journal mode is WAL;
- hash chains: every order's events, chunk by chunk, through `history.verify_chain`, and the
  order row's last seq and hash against the end of its chain;
- overdue: orders whose next deadline or reminder passed more than `grace` ago, which a
  running cron would have applied ("cron is not running");
- last tick: when `tick` last completed a run (tick_runs), for information.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import tzinfo

from coopctl import history
from coopctl.errors import Busy, CoopError, StorageError
from coopctl.models import SCHEMA_VERSION, SQLModel
from coopctl.policy import MINUTE, SECOND, format_duration, iso
from coopctl.store import Store

DEFAULT_GRACE = 10 * MINUTE


def _at(instant: int, tz: tzinfo) -> str:
    return iso(instant - instant % SECOND, tz)
CHUNK = 500
MAX_LISTED = 20  # broken chains named one by one; beyond that, counted


class Unhealthy(CoopError):
    """`doctor` found problems (exit 1); the report says what to do about each."""

    exit_code = 1


@dataclass(frozen=True)
class Finding:
    check: str  # integrity, schema, journal, hash_chain, overdue, last_tick
    ok: bool
    message: str  # what was found
    action: str | None = None  # what to do, when something is wrong
    order: int | None = None
    seq: int | None = None

    def to_json(self) -> dict:
        data = {"check": self.check, "ok": self.ok, "message": self.message, "action": self.action}
        if self.order is not None:
            data.update(order=self.order, seq=self.seq)
        return data


@dataclass
class Report:
    database: str
    now: int
    schema_version: int
    orders: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_json(self, tz: tzinfo) -> dict:
        return {
            "database": self.database,
            "now": iso(self.now, tz),
            "healthy": self.healthy,
            "schema_version": self.schema_version,
            "orders": self.orders,
            "findings": [f.to_json() for f in self.findings],
        }


def examine(store: Store, now: int, tz: tzinfo, *, grace: int = DEFAULT_GRACE, chunk: int = CHUNK) -> Report:
    """Every check on `store`'s database, read-only; see the module's docstring."""
    version = store.require(upgrade=False)
    report = Report(store.location.display, now, version)
    damaged = False
    if store.location.path is not None:
        integrity = _integrity(store, report)
        damaged = not integrity.ok
        report.findings.append(integrity)
        report.findings.extend(_shape(store, version))
    report.findings.append(_version(version))
    try:
        report.findings.extend(_chains(store, report, chunk))
        report.findings.append(_overdue(store, now, tz, grace))
        if version >= 2:
            report.findings.append(_last_tick(store, tz))
    except StorageError as exc:
        if not damaged:
            raise
        report.findings.append(Finding("hash_chain", False, f"the orders cannot be read: {exc}",
                                       "restore the database from a backup (see the integrity finding)"))
    return report


# --------------------------------------------------------------------------- the file


def _sqlite(store: Store) -> sqlite3.Connection:
    """A read-only connection of our own to the file, waiting out locks like every command."""
    uri = f"{store.location.path.as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=store.busy_timeout / 1_000_000, isolation_level=None)


def _integrity(store: Store, report: Report) -> Finding:
    what = "restore the database from a backup, or recover it with `sqlite3 FILE .recover`, then run `coopctl doctor` again"
    try:
        conn = _sqlite(store)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
            orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise Busy(f"the database {report.database} stayed locked by another coopctl; nothing was checked, try again") from None
        return Finding("integrity", False, f"the integrity check could not run: {exc}", what)
    except sqlite3.DatabaseError as exc:
        return Finding("integrity", False, f"the database file is damaged: {exc}", what)
    if problems != ["ok"]:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        return Finding("integrity", False, f"PRAGMA integrity_check found damage: {shown}", what)
    if orphans:
        tables = sorted({row[0] for row in orphans})
        return Finding(
            "integrity", False, f"{len(orphans)} rows of {', '.join(tables)} point to orders that do not exist",
            "someone deleted orders by hand; restore the database from a backup",
        )
    return Finding("integrity", True, "PRAGMA integrity_check: ok; no rows point to missing orders")


def _shape(store: Store, version: int) -> list[Finding]:
    """Tables, columns and the tick index, read with sqlite-utils; the journal mode."""
    import sqlite_utils

    findings: list[Finding] = []
    conn = _sqlite(store)
    try:
        db = sqlite_utils.Database(conn)
        missing: list[str] = []
        for table in SQLModel.metadata.sorted_tables:
            if table.name == "tick_runs" and version < 2:
                continue  # added by version 2: reported as an old schema instead
            if not db[table.name].exists():
                missing.append(f"table {table.name}")
                continue
            have = set(db[table.name].columns_dict)
            missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
        if "orders" in db.table_names() and "ix_orders_wake_at" not in {i.name for i in db["orders"].indexes}:
            missing.append("index ix_orders_wake_at (tick would read every order)")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    if missing:
        findings.append(Finding(
            "schema", False, f"missing from the schema: {', '.join(missing)}",
            "the schema was changed by hand; restore the database from a backup",
        ))
    if mode.lower() != "wal":
        findings.append(Finding(
            "journal", False, f"the journal mode is {mode}, not wal: readers and writers block each other",
            f"with no coopctl running, run: sqlite3 {store.location.path} 'PRAGMA journal_mode=WAL'",
        ))
    else:
        findings.append(Finding("journal", True, "journal mode: wal"))
    return findings


def _version(version: int) -> Finding:
    if version < SCHEMA_VERSION:
        return Finding(
            "schema", False, f"schema version {version} is older than this coopctl's ({SCHEMA_VERSION})",
            "run `coopctl init` (or any command) to upgrade it in place; back the file up first",
        )
    return Finding("schema", True, f"schema version {version}")


# --------------------------------------------------------------------------- the orders


def _chains(store: Store, report: Report, chunk: int) -> list[Finding]:
    findings: list[Finding] = []
    broken = 0
    after = 0
    while True:
        with store.read() as tx:  # one short read per chunk: a long check never holds the WAL back
            heads = tx.order_heads(after, chunk)
            if not heads:
                break
            events = tx.events_of([h[0] for h in heads])
        for order_id, last_seq, last_hash in heads:
            report.orders += 1
            problem = _chain_problem(order_id, events[order_id], last_seq, last_hash)
            if problem is not None:
                broken += 1
                if broken <= MAX_LISTED:
                    seq, why = problem
                    findings.append(Finding(
                        "hash_chain", False, f"order {order_id}: event seq {seq}: {why}",
                        f"the history of order {order_id} was changed outside coopctl; restore it from a backup "
                        f"or an export (`coopctl replay` shows the recorded timeline), and find out who wrote to the database",
                        order=order_id, seq=seq,
                    ))
        after = heads[-1][0]
    if broken > MAX_LISTED:
        findings.append(Finding(
            "hash_chain", False, f"{broken - MAX_LISTED} more orders have a broken history (the first {MAX_LISTED} are listed)",
            "restore the database from a backup",
        ))
    if not broken:
        findings.append(Finding("hash_chain", True, f"{report.orders} orders: every hash chain verifies"))
    return findings


def _chain_problem(order_id: int, events: list, last_seq: int, last_hash: str) -> tuple[int, str] | None:
    try:
        history.verify_chain(order_id, events)
    except history.Divergence as exc:
        return exc.seq, exc.why
    end = events[-1]
    if end.seq < last_seq:
        return end.seq + 1, f"missing: the order row counts {last_seq} events, the history ends at seq {end.seq} (events removed)"
    if end.seq > last_seq:
        return last_seq + 1, f"the order row counts {last_seq} events, the history goes on to seq {end.seq} (events added)"
    if end.hash != last_hash:
        return end.seq, "the order row's last hash is not the hash of its last event"
    return None


def _overdue(store: Store, now: int, tz: tzinfo, grace: int) -> Finding:
    cutoff = now - grace
    with store.read() as tx:
        count = tx.count_due(cutoff)
        oldest = tx.oldest_due(cutoff) if count else None
        last = tx.last_tick_run() if tx.schema_version() >= 2 else None
    if not count:
        return Finding("overdue", True, f"no deadline or reminder is more than {format_duration(grace)} overdue")
    ran = "no tick has ever completed" if last is None else f"the last tick finished at {_at(last.finished_at, tz)}"
    return Finding(
        "overdue", False,
        f"cron is not running: {count} order{'s' if count != 1 else ''} overdue since {_at(oldest, tz)} ({ran})",
        "run `coopctl tick` and check the crontab (* * * * * coopctl tick)",
    )


def _last_tick(store: Store, tz: tzinfo) -> Finding:
    with store.read() as tx:
        last = tx.last_tick_run()
    if last is None:
        return Finding("last_tick", True, "no tick has completed a run on this database yet")
    return Finding(
        "last_tick", True,
        f"the last tick finished at {_at(last.finished_at, tz)} (up to {_at(last.now, tz)}; "
        f"{last.applied} transitions, {last.reminders} reminders, by {last.operator})",
    )
