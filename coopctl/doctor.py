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
- rebuild (not with `quick`): every order rebuilt from its events through the rules
  (`history.rebuild`) and compared with its stored row, field by field: the terms, the policy
  and reminder offsets, the status, the deadlines (`deadline`, and `wake_at`, which `tick` finds
  due orders by), the counters and the idempotency key; a reminder marked sent that the rules
  never had for the order (it would silence one) too. `show` and `history` run the same checks
  on the one order they print (`check_order`);
- ids: stored ids that today's rules refuse (SPEC section 1: stored before the rules were
  tightened): reported, readable, never rewritten (a warning: the database stays healthy);
- instants: stored instants outside 1970-01-01 .. 9999-12-31 UTC;
- overdue: orders whose next deadline or reminder passed more than `grace` ago, which a
  running cron would have applied ("cron is not running");
- last tick: when `tick` last completed a run (tick_runs), for information;
- outbox (SPEC section 5): dead notifications, and pending ones
  written more than `grace` ago ("is the dispatcher running?").
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone, tzinfo

from coopctl import history, lifecycle
from coopctl.errors import Busy, CoopError, StorageError
from coopctl.lifecycle import Event, Order
from coopctl.models import SCHEMA_VERSION, SQLModel
from coopctl.policy import MINUTE, SECOND, format_duration, iso, to_instant
from coopctl.rows import order_from_row
from coopctl.store import FULL_ORDER_COLUMNS, Store
from coopctl.trust import id_problem, shown

DEFAULT_GRACE = 10 * MINUTE


def _at(instant: int, tz: tzinfo) -> str:
    return iso(instant - instant % SECOND, tz)
CHUNK = 500
MAX_LISTED = 20  # broken chains named one by one; beyond that, counted


class Unhealthy(CoopError):
    """`doctor` found problems (exit 1); the report says what to do about each."""

    exit_code = 1


class Altered(CoopError):
    """What `show` or `history` printed is not what the events say (exit 1): a hash chain that does
    not hold, or a stored order row that differs from the rebuild of its events."""

    exit_code = 1


@dataclass(frozen=True)
class Finding:
    check: str  # integrity, schema, journal, hash_chain, rebuild, ids, instants, overdue, last_tick
    ok: bool
    message: str  # what was found
    action: str | None = None  # what to do, when something is wrong (or, for a warning, what it means)
    order: int | None = None
    seq: int | None = None
    field: str | None = None  # the column of the order row, for the rebuild, ids and instants checks

    def to_json(self) -> dict:
        data = {"check": self.check, "ok": self.ok, "message": self.message, "action": self.action}
        if self.order is not None:
            data.update(order=self.order, seq=self.seq)
        if self.field is not None:
            data["field"] = self.field
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


def examine(
    store: Store, now: int, tz: tzinfo, *, grace: int = DEFAULT_GRACE, chunk: int = CHUNK, quick: bool = False,
    signing_key: bool = False,
) -> Report:
    """Every check on `store`'s database, read-only; see the module's docstring. `quick` checks
    the hash chains of the orders only, without rebuilding them through the rules."""
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
        contents = _evidence_contents(store) if version >= 4 and not quick else None
        report.findings.extend(_orders(store, report, chunk, quick, contents))
        report.findings.append(_overdue(store, now, tz, grace))
        if version >= 2:
            report.findings.append(_last_tick(store, tz))
        if version >= 3:
            report.findings.extend(_sealing(store, now, tz, grace, signing_key))
        if version >= 4:
            report.findings.extend(_outbox(store, now, tz, grace))
    except StorageError as exc:
        if not damaged:
            raise
        report.findings.append(Finding("hash_chain", False, f"the orders cannot be read: {exc}",
                                       "restore the database from a backup (see the integrity finding)"))
    return report


# --------------------------------------------------------------------------- the file


def _sqlite(store: Store) -> sqlite3.Connection:
    """A read-only connection of our own to the file, waiting out locks like every command (on a
    read-only filesystem, opened the way the store opens it: see `store.open_mode`)."""
    return sqlite3.connect(store.read_only_uri(), uri=True, timeout=store.busy_timeout / 1_000_000, isolation_level=None)


def _journal_mode(store: Store, conn: sqlite3.Connection) -> str:
    """The file's journal mode. Opened immutable, SQLite reports 'delete' for every file: the
    header says it then (bytes 18 and 19 are 2 for WAL)."""
    if store.open_mode != "immutable":
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    with open(store.location.path, "rb") as f:
        header = f.read(20)
    return "wal" if header[18:20] == b"\x02\x02" else "delete"


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


# The schema version that added each table after the first: an older database lacks it by design.
# Columns added to an existing table are named table.column.
ADDED_IN = {
    "tick_runs": 2, "order_products": 3, "seal_nodes": 3, "seal_heads": 3, "events.log_index": 3,
    # schema 4, issue 12: disputes and extensions, evidence files
    "orders.extensions": 4, "orders.extension_requested_by": 4, "orders.proposed_latest_start_at": 4,
    "orders.disputed_by": 4, "orders.appeals": 4, "orders.ruling": 4, "orders.dispute_liable": 4,
    "evidence_files": 4,
    # schema 4, issue 13: the outbox delivered
    "notifications.state": 4, "notifications.attempts": 4, "notifications.next_attempt_at": 4,
    "notifications.last_error": 4, "notifications.claimed_by": 4, "notifications.lease_until": 4,
}


def _shape(store: Store, version: int) -> list[Finding]:
    """Tables, columns and the tick index, read with sqlite-utils; the journal mode."""
    import sqlite_utils

    findings: list[Finding] = []
    conn = _sqlite(store)
    try:
        db = sqlite_utils.Database(conn)
        missing: list[str] = []
        for table in SQLModel.metadata.sorted_tables:
            if version < ADDED_IN.get(table.name, 1):
                continue  # added by a later version: reported as an old schema instead
            if not db[table.name].exists():
                missing.append(f"table {table.name}")
                continue
            have = set(db[table.name].columns_dict)
            missing += [
                f"{table.name}.{c.name}" for c in table.columns
                if c.name not in have and version >= ADDED_IN.get(f"{table.name}.{c.name}", 1)
            ]
        if "orders" in db.table_names() and "ix_orders_wake_at" not in {i.name for i in db["orders"].indexes}:
            missing.append("index ix_orders_wake_at (tick would read every order)")
        mode = _journal_mode(store, conn)
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


class _Listed:
    """The problems of one check: the first MAX_LISTED kept as findings, the rest counted (so that
    memory stays bounded however many orders are broken)."""

    def __init__(self, check: str, healthy: str, more: str, action: str, *, warning: bool = False):
        self.check, self.healthy, self.more, self.action, self.warning = check, healthy, more, action, warning
        self.found: list[Finding] = []
        self.orders: set[int] = set()  # the orders of the listed findings
        self.count = 0  # orders with a problem of this check
        self.last_order: int | None = None

    def add(self, finding: Finding) -> None:
        if finding.order != self.last_order:
            self.count += 1
            self.last_order = finding.order
        if len(self.found) < MAX_LISTED:
            self.found.append(finding)
            self.orders.add(finding.order)

    def findings(self, orders: int) -> list[Finding]:
        if not self.count:
            return [Finding(self.check, True, self.healthy.format(orders=orders))] if self.healthy else []
        findings = list(self.found)
        unlisted = self.count - len(self.orders)
        if unlisted > 0:
            findings.append(Finding(
                self.check, self.warning, f"{unlisted} more orders {self.more} (the first {len(self.orders)} are listed)",
                self.action,
            ))
        return findings


def _orders(store: Store, report: Report, chunk: int, quick: bool, contents: "_Contents | None" = None) -> list[Finding]:
    """Every order, `chunk` at a time (one short read per chunk: a long check never holds the WAL
    back, and memory holds one chunk of rows and events). With `contents` (schema 4, not quick),
    each evidence file an event names is looked up in the store (`_evidence_refs`)."""
    checks = {
        "hash_chain": _Listed(
            "hash_chain", "{orders} orders: every hash chain verifies", "have a broken history",
            "restore the database from a backup",
        ),
    }
    if not quick:
        checks["rebuild"] = _Listed(
            "rebuild", "{orders} orders: every order row is what the rules make of its events",
            "have an order row that is not what their events make", "restore the database from a backup",
        )
        checks["ids"] = _Listed(
            "ids", "", "hold ids that today's rules refuse", _OLD_ID, warning=True,
        )
        checks["instants"] = _Listed(
            "instants", "", "hold instants outside 1970-01-01 .. 9999-12-31 UTC", _FAR_INSTANT,
        )
    if contents is not None:
        checks["evidence"] = _Listed("evidence", "", "name evidence files that are not stored as recorded", _EVIDENCE_ACTION)
    after = 0
    while True:
        with store.read() as tx:
            rows = tx.order_heads(after, chunk) if quick else tx.order_rows(after, chunk)
            if not rows:
                break
            events = tx.events_of([row[0] for row in rows])
            if contents is not None:
                for finding in _evidence_refs(tx, events, contents):
                    checks["evidence"].add(finding)
        for row in rows:
            report.orders += 1
            if quick:
                found = _chain_findings(row[0], events[row[0]], row[1], row[2])
            else:
                found = check_order(row, events[row[0]], stored_values=True).findings
            for finding in found:
                checks[finding.check].add(finding)
        after = rows[-1][0]
        del rows, events
    found = [f for listed in checks.values() for f in listed.findings(report.orders)]
    if contents is not None:  # the altered contents no event names, or the healthy line (not per order)
        found += contents.findings(listed=checks["evidence"].count)
    return found


# --------------------------------------------------------------------------- evidence files (schema 4)


_EVIDENCE_ACTION = (
    "the evidence store was changed outside coopctl (the events, whose hash chain holds, recorded "
    "another file): restore evidence_files from a backup, or import the order again from an export "
    "made --with-evidence"
)
EVIDENCE_CHUNK = 1000  # stored contents whose keys are read at once; each content is read alone
MAX_BAD = 10_000  # altered contents remembered by key (to name the events that name them); the rest counted


class _Contents:
    """The stored evidence contents that are not what their key says (`_evidence_contents`), and
    which of them an event was found to name."""

    def __init__(self) -> None:
        self.rows = 0
        self.bad: dict[str, str] = {}  # sha256 -> why
        self.unlisted = 0  # altered contents beyond MAX_BAD
        self.named: set[str] = set()

    def findings(self, listed: int) -> list[Finding]:
        """The altered contents no event names (the others were reported with their event), and
        the healthy line when there is evidence at all and nothing was found (`listed`: the
        orders whose events name a file not stored as recorded)."""
        found = [
            Finding("evidence", False, f"evidence file {sha[:16]}…: {why} (no event names it)", _EVIDENCE_ACTION)
            for sha, why in sorted(self.bad.items()) if sha not in self.named
        ]
        if self.unlisted:
            found.append(Finding("evidence", False, f"{self.unlisted} more stored evidence contents do not hash to their sha256", _EVIDENCE_ACTION))
        if not self.bad and not self.unlisted and not listed and self.rows:
            found.append(Finding("evidence", True, f"{self.rows} evidence files: every stored content hashes to its sha256"))
        return found


def _evidence_contents(store: Store) -> _Contents:
    """Every stored evidence content hashed again and compared with its key and size: the keys
    are read EVIDENCE_CHUNK at a time, each content alone (memory: one file, at most 20 MiB)."""
    from coopctl.evidence import content_problem

    contents = _Contents()
    after = ""
    while True:
        with store.read() as tx:
            keys = tx.evidence_keys(after, EVIDENCE_CHUNK)
            for sha, size, held in keys:
                contents.rows += 1
                if not held:
                    continue
                stored = tx.evidence_content(sha)
                problem = content_problem(sha, size, None if stored is None else stored[1])
                if problem is not None:
                    if len(contents.bad) < MAX_BAD:
                        contents.bad[sha] = problem
                    else:
                        contents.unlisted += 1
        if len(keys) < EVIDENCE_CHUNK:
            return contents
        after = keys[-1][0]


def _evidence_refs(tx, events: dict[int, list[Event]], contents: _Contents) -> list[Finding]:
    """Each evidence file the events of a chunk name: its content has a row (it was stored, or
    recorded as not held, with the event), of the size the event recorded, and is not one whose
    stored bytes no longer hash to it."""
    from coopctl.evidence import named_by

    named = [(order_id, e, f) for order_id, evs in events.items() for e, f in named_by(evs)]
    if not named:
        return []
    state = tx.evidence_state(sorted({f.sha256 for _, _, f in named}))
    found: list[Finding] = []
    for order_id, e, f in named:
        where = f"order {order_id}: event seq {e.seq} names evidence file '{shown(f.name)}' ({f.sha256[:16]}…)"
        have = state.get(f.sha256)
        why = None
        if have is None:
            why = "which is not in the evidence store (its row was deleted)"
        elif f.sha256 in contents.bad:
            contents.named.add(f.sha256)
            why = f"but {contents.bad[f.sha256]}"
        elif have[0] != f.size:
            why = f"of {f.size:,} bytes, the store says {shown(have[0])}"
        if why is not None:
            found.append(Finding("evidence", False, f"{where}, {why}", _EVIDENCE_ACTION, order=order_id, seq=e.seq))
    return found


def _chain_findings(order_id: int, events: list, last_seq: int, last_hash: str) -> list[Finding]:
    problem = _chain_problem(order_id, events, last_seq, last_hash)
    if problem is None:
        return []
    seq, why = problem
    return [Finding(
        "hash_chain", False, f"order {order_id}: event seq {seq}: {why}",
        f"the history of order {order_id} was changed outside coopctl; restore it from a backup "
        f"or an export (`coopctl replay` shows the recorded timeline), and find out who wrote to the database",
        order=order_id, seq=seq,
    )]


def _chain_problem(order_id: int, events: list, last_seq, last_hash) -> tuple[int, str] | None:
    try:
        history.verify_chain(order_id, events)
    except history.Divergence as exc:
        return exc.seq, exc.why
    except (TypeError, ValueError, OverflowError) as exc:  # a value of another type, written by hand
        return 1, f"an event cannot be read ({type(exc).__name__}: {exc})"
    end = events[-1]
    if not isinstance(last_seq, int) or end.seq < last_seq:
        return end.seq + 1, f"missing: the order row counts {shown(last_seq)} events, the history ends at seq {end.seq} (events removed)"
    if end.seq > last_seq:
        return last_seq + 1, f"the order row counts {last_seq} events, the history goes on to seq {end.seq} (events added)"
    if end.hash != last_hash:
        return end.seq, "the order row's last hash is not the hash of its last event"
    return None


# --------------------------------------------------------------------------- one order, rebuilt


_OLD_ID = (
    "this id was stored before coopctl refused such ids (SPEC section 1); it stays readable and is "
    "never rewritten, but new orders must use a valid id (watch for a look-alike party)"
)
_FAR_INSTANT = (
    "an instant outside 1970..9999 cannot be shown, exported or moved; it was written by hand or by "
    "an older coopctl: restore the order from a backup"
)
_ROW_ACTION = (
    "the order row of order {order} was changed outside coopctl (its events, whose hash chain holds, "
    "say otherwise) and `show`, `list` and `tick` read the row: restore the database from a backup and "
    "find out who wrote to it"
)
FIRST_INSTANT = 0  # 1970-01-01T00:00:00Z
LAST_INSTANT = to_instant(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))
_INSTANT_COLUMNS = (
    "latest_start_at", "created_at", "status_since", "went_live_at", "delivered_at", "last_event_at", "deadline", "wake_at",
    "proposed_latest_start_at",
)
_COLUMN = {name: index for index, name in enumerate(FULL_ORDER_COLUMNS)}


@dataclass
class CheckedOrder:
    """One order as stored and as its events make it, and what differs (`check_order`)."""

    order_id: int
    stored: Order | None  # the order row read as an Order; None when it cannot be read
    rebuilt: Order | None  # what the rules make of the events; None when the chain or the rules fail
    events: list[Event]
    findings: list[Finding] = field(default_factory=list)

    @property
    def shown(self) -> Order | None:
        """The order to print: the stored row, or what its events make when the row is unreadable."""
        return self.stored if self.stored is not None else self.rebuilt

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def printable_events(self) -> list[Event]:
        """The events with any data that is not an object (altered by hand) shown as text."""
        return [e if isinstance(e.data, dict) else replace(e, data={"unreadable data": shown(e.data)[:200]}) for e in self.events]

    def refusal(self) -> Altered | None:
        """The one-line error `show` and `history` end with when something does not hold."""
        problems = self.problems
        if not problems:
            return None
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Altered(
            f"{first.message}{more}: what is shown is not what was recorded; run `coopctl doctor`, "
            f"then restore order {self.order_id} from a backup"
        )


def check_order(row: tuple, events: list[Event], *, stored_values: bool = False) -> CheckedOrder:
    """Check one order (its row as FULL_ORDER_COLUMNS, its events): the hash chain, then the row
    against the rebuild of the events through the rules, field by field. With `stored_values`
    (doctor), also ids that today's rules refuse and instants outside 1970..9999."""
    order_id = row[0]
    checked = CheckedOrder(order_id, None, None, events)
    found = checked.findings
    try:
        checked.stored = order_from_row(row[: len(FULL_ORDER_COLUMNS) - 3])
    except (KeyError, ValueError, TypeError, ArithmeticError, AttributeError) as exc:
        found.append(Finding(
            "rebuild", False, f"order {order_id}: the stored order row cannot be read ({_why(exc)})",
            _ROW_ACTION.format(order=order_id), order=order_id,
        ))
    chain = _chain_findings(order_id, events, row[_COLUMN["last_seq"]], row[_COLUMN["last_hash"]])
    found += chain
    if not chain:
        try:
            steps = _rebuild(order_id, events)
        except history.Divergence as exc:
            found.append(Finding(
                "rebuild", False, f"order {order_id}: event seq {exc.seq}: {exc.why}",
                f"the history of order {order_id} holds (its hashes match) but does not follow the rules: it was "
                "written outside coopctl with recomputed hashes; restore it from a backup",
                order=order_id, seq=exc.seq,
            ))
        except (KeyError, ValueError, TypeError, ArithmeticError, AttributeError, OverflowError) as exc:
            found.append(Finding(
                "rebuild", False, f"order {order_id}: its events cannot be rebuilt ({_why(exc)})",
                "restore the order from a backup", order=order_id,
            ))
        else:
            checked.rebuilt = steps[-1].order
            if checked.stored is not None:
                found += _differences(row, checked.stored, checked.rebuilt, steps)
    if stored_values:
        found += _stored_values(order_id, row, events)
    return checked


def _rebuild(order_id: int, events: list[Event]) -> list[history.Step]:
    """The rules' rebuild, lenient on ids stored before SPEC section 1 tightened them (those are
    reported by the ids check instead)."""
    return history.rebuild(order_id, events, strict=False)


# (column, how to read it from an Order): what the rules decide, compared with what is stored
_FIELDS = (
    ("merchant", lambda o: o.terms.merchant),
    ("creator", lambda o: o.terms.creator),
    ("products", lambda o: tuple(o.terms.products)),
    ("form", lambda o: o.terms.form),
    ("commission_pct", lambda o: o.terms.commission_pct),
    ("ad_budget", lambda o: o.terms.ad_budget),
    ("latest_start_at", lambda o: o.terms.latest_start_at),
    ("note", lambda o: o.terms.note),
    ("policy", lambda o: o.policy),
    ("reminders", lambda o: o.reminders),
    ("created_at", lambda o: o.created_at),
    ("status", lambda o: o.status),
    ("status_since", lambda o: o.status_since),
    ("cancel_requested_by", lambda o: o.cancel_requested_by),
    ("went_live_at", lambda o: o.went_live_at),
    ("delivered_at", lambda o: o.delivered_at),
    ("delivery_mode", lambda o: o.delivery_mode),
    ("failed_reviews", lambda o: o.failed_reviews),
    ("last_seq", lambda o: o.last_seq),
    ("last_hash", lambda o: o.last_hash),
    ("last_event_at", lambda o: o.last_event_at),
    ("idempotency_key", lambda o: o.idempotency_key),
    ("extensions", lambda o: o.extensions),
    ("extension_requested_by", lambda o: o.extension_requested_by),
    ("proposed_latest_start_at", lambda o: o.proposed_latest_start_at),
    ("disputed_by", lambda o: o.disputed_by),
    ("appeals", lambda o: o.appeals),
    ("ruling", lambda o: o.ruling),
    ("dispute_liable", lambda o: o.dispute_liable),
)
_INSTANT_FIELDS = frozenset(_INSTANT_COLUMNS)


def _differences(row: tuple, stored: Order, rebuilt: Order, steps: list[history.Step]) -> list[Finding]:
    order_id = stored.id
    found: list[Finding] = []

    def differ(column: str, have, want) -> None:
        found.append(Finding(
            "rebuild", False,
            f"order {order_id}: the stored {column} is {_value(column, have)}, its events give {_value(column, want)}",
            _ROW_ACTION.format(order=order_id), order=order_id, field=column,
        ))

    for column, read in _FIELDS:
        have, want = read(stored), read(rebuilt)
        if have != want:
            differ(column, have, want)
    # derived when the row is written: who is liable, the deadline, and when tick next wakes for it
    # (reminders marked sent are not events: the stored ones count, once they are known to be real)
    expected = replace(rebuilt, reminders_sent=stored.reminders_sent)
    liable = expected.liable_party
    for column, want in (
        ("liable_party", None if liable is None else liable.value),
        ("deadline", expected.deadline),
        ("wake_at", lifecycle.wake_at(expected)),
    ):
        have = row[_COLUMN[column]]
        if have != want:
            differ(column, have, want)
    possible = _possible_reminders(steps)
    forged = sorted(key for key in stored.reminders_sent if key not in possible)
    if forged:
        found.append(Finding(
            "rebuild", False,
            f"order {order_id}: the stored reminders_sent holds {', '.join(shown(k)[:60] for k in forged[:3])}, "
            "a reminder the rules never had for this order (it would silence one)",
            _ROW_ACTION.format(order=order_id), order=order_id, field="reminders_sent",
        ))
    return found


def _possible_reminders(steps: list[history.Step]) -> set[str]:
    """Every reminder key (`name@deadline`) the rules could have written in the states the order
    went through."""
    keys = set()
    for step in steps:
        order = step.order
        for reminder in lifecycle.REMINDERS:
            if order.status in reminder.statuses and (reminder.overdue or reminder.offset(order) > 0):
                keys.add(f"{reminder.name}@{reminder.deadline(order)}")
    return keys


def _stored_values(order_id: int, row: tuple, events: list[Event]) -> list[Finding]:
    """Ids that today's rules refuse, and instants outside 1970..9999."""
    found: list[Finding] = []
    ids = [("merchant", row[_COLUMN["merchant"]]), ("creator", row[_COLUMN["creator"]])]
    try:
        products = json.loads(row[_COLUMN["products"]])
    except (TypeError, ValueError):
        products = []
    ids += [("product", p) for p in products if isinstance(p, str)] if isinstance(products, list) else []
    if row[_COLUMN["idempotency_key"]] is not None:
        ids.append(("idempotency_key", row[_COLUMN["idempotency_key"]]))
    for column, value in ids:
        problem = id_problem(value) if isinstance(value, str) else "it is not text"
        if problem is not None:
            found.append(Finding(
                "ids", True, f"order {order_id}: the stored {column} id is refused by today's rules: {problem}",
                _OLD_ID, order=order_id, field=column,
            ))
    for column in _INSTANT_COLUMNS:
        value = row[_COLUMN[column]]
        if value is not None and not _in_range(value):
            found.append(Finding(
                "instants", False, f"order {order_id}: the stored {column} {shown(value)[:40]} is outside 1970..9999",
                _FAR_INSTANT, order=order_id, field=column,
            ))
    for e in events:
        if not _in_range(e.at):
            found.append(Finding(
                "instants", False, f"order {order_id}: event seq {e.seq} is at {shown(e.at)[:40]}, outside 1970..9999",
                _FAR_INSTANT, order=order_id, seq=e.seq, field="at",
            ))
            break
    return found


def _in_range(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and FIRST_INSTANT <= value <= LAST_INSTANT


def _value(column: str, value) -> str:
    """A stored or rebuilt value in a message: instants as ISO 8601 (UTC), text escaped and short."""
    if value is None:
        return "null"
    if column in _INSTANT_FIELDS and _in_range(value):
        return iso(value)
    if hasattr(value, "to_json"):
        value = json.dumps(value.to_json(), ensure_ascii=False, sort_keys=True)
    elif isinstance(value, tuple):
        value = json.dumps(list(value), ensure_ascii=False)
    text = shown(value)
    text = text[:80] + "…" if len(text) > 80 else text
    return f"'{text}'" if isinstance(value, str) else text


def _why(exc: BaseException) -> str:
    text = shown(str(exc).splitlines()[0] if str(exc) else "")
    return f"{type(exc).__name__}: {text[:120]}"


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


def _outbox(store: Store, now: int, tz: tzinfo, grace: int) -> list[Finding]:
    """SPEC section 5: dead notifications (given up after max_attempts) and pending ones written
    more than `grace` ago (a backlog: is the dispatcher running?), through the index on (state, at).
    From the first notification on: a book whose outbox nobody has ever delivered is the backlog
    this check exists to report."""
    with store.read() as tx:
        dead, late, oldest = tx.outbox_backlog(now - grace)
    findings = []
    if dead:
        findings.append(Finding(
            "outbox_dead", False, f"{dead} notification{'s are' if dead != 1 else ' is'} dead (delivery given up after [delivery] max_attempts)",
            "see why: coopctl notifications --state dead; once the receiver is fixed: coopctl notifications retry --dead",
        ))
    else:
        findings.append(Finding("outbox_dead", True, "no dead notification"))
    if late:
        findings.append(Finding(
            "outbox_backlog", False,
            f"{late} notification{'s' if late != 1 else ''} pending for more than {format_duration(grace)} "
            f"(the oldest from {_at(oldest, tz)}): is the dispatcher running?",
            "run `coopctl dispatch --exec CMD` (or --webhook URL), from cron or with --loop under systemd",
        ))
    else:
        findings.append(Finding("outbox_backlog", True, f"no notification pending for more than {format_duration(grace)}"))
    return findings


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def _last_tick(store: Store, tz: tzinfo) -> Finding:
    with store.read() as tx:
        last = tx.last_tick_run()
    if last is None:
        return Finding("last_tick", True, "no tick has completed a run on this database yet")
    return Finding(
        "last_tick", True,
        f"the last tick finished at {_at(last.finished_at, tz)} (up to {_at(last.now, tz)}; "
        f"{_count(last.applied, 'transition')}, {_count(last.reminders, 'reminder')}, by {last.operator})",
    )


def _sealing(store: Store, now: int, tz: tzinfo, grace: int, signing_key: bool) -> list[Finding]:
    """SPEC section 6. Once sealing is in use (a tree head exists, or a signing key is configured),
    an event still unsealed whose instant is more than `grace` before now is a problem (cron runs
    `seal` after `tick`); and every stored tree head must still be the root of its first `size`
    events (`seal --check`: a history rewritten in the database fails it)."""
    from coopctl.seal import check, latest_head, oldest_unsealed

    with store.read() as tx:
        head = latest_head(tx.conn)
        oldest = oldest_unsealed(tx.conn)
        checked = check(tx.conn) if head is not None else None
    findings: list[Finding] = []
    if head is None and not signing_key:
        pass  # sealing not in use here: no finding, the report is what it was before sealed histories
    elif oldest is not None and oldest[0] < now - grace:
        findings.append(Finding(
            "sealed", False,
            f"events are not sealed: the oldest unsealed one (order {oldest[1]}, seq {oldest[2]}) is from {_at(oldest[0], tz)}"
            + ("" if head is None else f"; the last seal was at {_at(head.sealed_at, tz)}"),
            "run `coopctl seal` (and add it to cron after tick: tick && seal)", order=oldest[1], seq=oldest[2],
        ))
    elif head is None:
        findings.append(Finding("sealed", True, "no tree head yet; every event is recent enough"))
    else:
        findings.append(Finding("sealed", True, f"the last seal covers {head.size} events, at {_at(head.sealed_at, tz)}"))
    if checked is not None:
        if checked.problem is None:
            findings.append(Finding("seal_check", True, f"{checked.heads} tree heads match the {checked.size} sealed events"))
        else:
            findings.append(Finding(
                "seal_check", False, checked.problem,
                "a history was rewritten inside the database: restore it from a backup, and keep this copy for inspection",
            ))
    return findings
