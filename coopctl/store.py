"""Storage: the engine factory, the schema and its version, and every query.

One `Store` per command; `store.write()` is one write transaction (SQLite: BEGIN IMMEDIATE,
so writers queue on the lock instead of deadlocking; PostgreSQL: row locks), `store.read()` a
read-only one. All SQL is built with SQLAlchemy from the SQLModel tables, so it is portable;
the few SQLite-specific statements (PRAGMAs) live here and nowhere else.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import bindparam, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import NullPool

from coopctl.errors import Busy, InvalidInput, StorageError
from coopctl.lifecycle import Event, Notification, Order, Outcome, Party, Status, Terms, wake_at
from coopctl.models import APPLICATION, EVENTS, META, NOTIFICATIONS, ORDERS, SCHEMA_VERSION, SQLModel
from coopctl.policy import SECOND, Policy, ReminderOffsets

_BUSY_WORDS = ("database is locked", "database table is locked", "lock timeout", "could not obtain lock", "deadlock")


@dataclass(frozen=True)
class Location:
    """Where the database is: a SQLAlchemy URL, and the file behind it for SQLite."""

    url: str
    path: Path | None  # None for an in-memory SQLite or a server database

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def display(self) -> str:
        if self.path is not None:
            return str(self.path)
        return make_url(self.url).render_as_string(hide_password=True)


def locate(value: str) -> Location:
    """A file path or a SQLAlchemy URL (sqlite:///x.db, postgresql+psycopg://...)."""
    if not value or not value.strip():
        raise InvalidInput("the database location is empty; give a file path or a URL")
    if "://" not in value:
        path = Path(value).expanduser().absolute()
        return Location(f"sqlite:///{path}", path)
    try:
        url = make_url(value)
    except ArgumentError:
        raise InvalidInput(f"cannot read the database URL {value!r}") from None
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return Location(value, None)
        path = Path(database).expanduser().absolute()
        return Location(url.set(database=str(path)).render_as_string(hide_password=False), path)
    return Location(value, None)


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in _BUSY_WORDS)


def translate(exc: DBAPIError, where: str) -> Exception:
    """Map a driver error to Busy (exit 4) or StorageError (exit 5)."""
    if _is_busy(exc):
        return Busy(f"the database {where} stayed locked by another coopctl; nothing was changed, try again")
    detail = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
    if "not a database" in detail or "file is encrypted" in detail:
        return StorageError(f"{where} is not a SQLite database ({detail}); point --db at a coopctl database")
    if "no such table" in detail or "does not exist" in detail and "relation" in detail:
        return StorageError(f"{where} is not a coopctl database (no coopctl tables); run `coopctl init` on a new file")
    return StorageError(f"database problem at {where}: {detail}")


class Store:
    """A database opened for one command."""

    def __init__(self, location: Location, *, busy_timeout: int = 10 * SECOND):
        self.location = location
        self.busy_timeout = busy_timeout
        self._engine: Engine | None = None

    # ---------------------------------------------------------------- engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        seconds = self.busy_timeout / SECOND
        try:
            if self.location.is_sqlite:
                engine = create_engine(
                    self.location.url,
                    connect_args={"timeout": seconds, "isolation_level": None, "check_same_thread": False},
                    poolclass=NullPool,
                )
                event.listen(engine, "connect", _sqlite_connect)
                event.listen(engine, "begin", _sqlite_begin)
                return engine
            connect_args = {}
            if make_url(self.location.url).get_backend_name() == "postgresql":
                millis = max(1, int(seconds * 1000))
                connect_args = {"options": f"-c lock_timeout={millis} -c statement_timeout=0", "connect_timeout": max(1, int(seconds))}
            return create_engine(self.location.url, connect_args=connect_args, poolclass=NullPool)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise InvalidInput(f"cannot use the database URL {self.location.display}: {exc}") from None

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # ---------------------------------------------------------------- existence and schema

    def exists(self) -> bool:
        path = self.location.path
        return path is None or path.exists()

    def require(self) -> None:
        """For commands that never create a database: it must exist and be a current coopctl one."""
        path = self.location.path
        if path is not None:
            if not path.exists():
                raise StorageError(f"no database at {path}; create one with `coopctl init` or point --db/COOPCTL_DB at one")
            if path.is_dir():
                raise StorageError(f"{path} is a directory, not a database file")
        with self.read() as tx:
            tx.check_schema()

    def initialise(self, *, made_by: str = "init") -> bool:
        """Create the schema if the database is new; True when it was created now."""
        path = self.location.path
        if path is not None:
            if path.is_dir():
                raise StorageError(f"{path} is a directory, not a database file")
            if not path.parent.exists():
                raise StorageError(f"cannot create {path}: the folder {path.parent} does not exist")
        with self.write() as tx:
            state = tx.schema_state()
            if state == "coopctl":
                tx.check_schema()
                return False
            if state == "foreign":
                raise StorageError(
                    f"{self.location.display} already holds tables that are not coopctl's; refusing to touch it"
                )
            SQLModel.metadata.create_all(tx.conn)
            tx.conn.execute(
                insert(META),
                [
                    {"key": "application", "value": APPLICATION},
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "made_by", "value": made_by},
                ],
            )
        if self.location.is_sqlite:
            raw = self.engine.raw_connection()  # WAL is a property of the file: set once, outside a transaction
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()
        return True

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def write(self) -> Iterator["Tx"]:
        with self._transaction(write=True) as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator["Tx"]:
        with self._transaction(write=False) as tx:
            yield tx

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator["Tx"]:
        where = self.location.display
        try:
            with self.engine.connect() as conn:
                conn.execution_options(coopctl_write=write)
                with conn.begin():
                    yield Tx(conn, self.location.is_sqlite)
        except IntegrityError as exc:
            raise Busy(
                f"another coopctl changed the same order at the same time ({str(exc.orig).splitlines()[0]}); "
                "nothing was changed, try again"
            ) from None
        except DBAPIError as exc:
            raise translate(exc, where) from None


def _sqlite_connect(dbapi_conn, record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the lock at BEGIN (IMMEDIATE): no deferred read-to-write upgrade deadlocks."""
    write = conn.get_execution_options().get("coopctl_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# --------------------------------------------------------------------------- rows <-> records


@lru_cache(maxsize=256)
def _policy(text: str) -> Policy:
    return Policy.from_json(json.loads(text))


@lru_cache(maxsize=256)
def _reminders(text: str) -> ReminderOffsets:
    return ReminderOffsets.from_json(json.loads(text))


def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def order_from_row(row) -> Order:
    return Order(
        id=row.id,
        terms=Terms(
            merchant=row.merchant,
            creator=row.creator,
            products=tuple(json.loads(row.products)),
            form=row.form,
            commission_pct=Decimal(row.commission_pct),
            ad_budget=Decimal(row.ad_budget),
            latest_start_at=row.latest_start_at,
            note=row.note,
        ),
        policy=_policy(row.policy),
        reminders=_reminders(row.reminders),
        created_at=row.created_at,
        status=Status(row.status),
        status_since=row.status_since,
        cancel_requested_by=None if row.cancel_requested_by is None else Party(row.cancel_requested_by),
        went_live_at=row.went_live_at,
        delivered_at=row.delivered_at,
        delivery_mode=row.delivery_mode,
        failed_reviews=row.failed_reviews,
        last_seq=row.last_seq,
        last_hash=row.last_hash,
        last_event_at=row.last_event_at,
        reminders_sent=frozenset(json.loads(row.reminders_sent)),
        idempotency_key=row.idempotency_key,
    )


def _state_values(order: Order) -> dict:
    """The columns that change as an order moves."""
    return {
        "status": str(order.status),
        "status_since": order.status_since,
        "cancel_requested_by": None if order.cancel_requested_by is None else str(order.cancel_requested_by),
        "went_live_at": order.went_live_at,
        "delivered_at": order.delivered_at,
        "delivery_mode": order.delivery_mode,
        "failed_reviews": order.failed_reviews,
        "liable_party": None if order.liable_party is None else str(order.liable_party),
        "deadline": order.deadline,
        "wake_at": wake_at(order),
        "last_seq": order.last_seq,
        "last_hash": order.last_hash,
        "last_event_at": order.last_event_at,
        "reminders_sent": _dumps(sorted(order.reminders_sent)),
    }


def order_values(order: Order) -> dict:
    """Every column of an order row."""
    terms = order.terms
    return {
        "id": order.id,
        "merchant": terms.merchant,
        "creator": terms.creator,
        "products": _dumps(list(terms.products)),
        "form": terms.form,
        "commission_pct": str(terms.commission_pct),
        "ad_budget": str(terms.ad_budget),
        "latest_start_at": terms.latest_start_at,
        "note": terms.note,
        "policy": _dumps(order.policy.to_json()),
        "reminders": _dumps(order.reminders.to_json()),
        "created_at": order.created_at,
        "idempotency_key": order.idempotency_key,
        **_state_values(order),
    }


def event_values(e: Event) -> dict:
    return {
        "order_id": e.order_id, "seq": e.seq, "kind": e.kind, "at": e.at, "actor": e.actor,
        "operator": e.operator, "data": _dumps(e.data), "prev_hash": e.prev_hash, "hash": e.hash,
    }


def event_from_row(row) -> Event:
    return Event(row.order_id, row.seq, row.kind, row.at, row.actor, row.operator, json.loads(row.data), row.prev_hash, row.hash)


def notification_values(n: Notification) -> dict:
    return {"order_id": n.order_id, "recipient": n.recipient, "channel": n.channel, "kind": n.kind, "at": n.at, "text": n.text}


def _update_statement():
    names = [
        "status", "status_since", "cancel_requested_by", "went_live_at", "delivered_at", "delivery_mode",
        "failed_reviews", "liable_party", "deadline", "wake_at", "last_seq", "last_hash", "last_event_at",
        "reminders_sent",
    ]
    return (
        update(ORDERS)
        .where(ORDERS.c.id == bindparam("b_id"), ORDERS.c.last_seq == bindparam("b_last_seq"))
        .values({name: bindparam(name) for name in names})
    )


class Tx:
    """One transaction: the queries and writes a command needs."""

    def __init__(self, conn: Connection, is_sqlite: bool):
        self.conn = conn
        self.is_sqlite = is_sqlite

    # ---------------------------------------------------------------- schema

    def schema_state(self) -> str:
        """'empty', 'coopctl' or 'foreign'."""
        from sqlalchemy import inspect

        names = set(inspect(self.conn).get_table_names())
        if META.name in names:
            return "coopctl"
        return "foreign" if names else "empty"

    def meta(self) -> dict[str, str]:
        return {row.key: row.value for row in self.conn.execute(select(META.c.key, META.c.value))}

    def check_schema(self) -> dict[str, str]:
        meta = self.meta()
        if meta.get("application") != APPLICATION:
            raise StorageError("this database is not a coopctl database")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"this database has schema version {version}, newer than this coopctl understands "
                f"({SCHEMA_VERSION}); upgrade coopctl"
            )
        return meta

    # ---------------------------------------------------------------- orders

    def load(self, order_id: int, *, lock: bool = False) -> Order | None:
        query = select(ORDERS).where(ORDERS.c.id == order_id)
        if lock and not self.is_sqlite:
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        return None if row is None else order_from_row(row)

    def find_by_key(self, key: str) -> Order | None:
        row = self.conn.execute(select(ORDERS).where(ORDERS.c.idempotency_key == key)).first()
        return None if row is None else order_from_row(row)

    def new_order_id(self) -> int:
        """The next id, reserved by inserting a placeholder row in this transaction."""
        placeholder = {
            "merchant": "", "creator": "", "products": "[]", "form": "", "commission_pct": "0", "ad_budget": "0",
            "latest_start_at": 0, "policy": "{}", "reminders": "{}", "created_at": 0, "status": "", "status_since": 0,
            "failed_reviews": 0, "last_seq": 0, "last_hash": "", "last_event_at": 0, "reminders_sent": "[]",
        }
        result = self.conn.execute(insert(ORDERS).values(placeholder).returning(ORDERS.c.id))
        return result.scalar_one()

    def fill_new(self, outcome: Outcome) -> None:
        """Write a newly created order into its reserved row, with its events and notifications."""
        values = order_values(outcome.order)
        self.conn.execute(update(ORDERS).where(ORDERS.c.id == outcome.order.id).values(values))
        self._append(outcome)

    def insert_orders(self, orders: list[Order]) -> None:
        """Bulk insert of whole orders with their ids (import, bulk loading)."""
        if orders:
            self.conn.execute(insert(ORDERS), [order_values(o) for o in orders])

    def ids_present(self, ids: list[int]) -> set[int]:
        present: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            present.update(self.conn.execute(select(ORDERS.c.id).where(ORDERS.c.id.in_(chunk))).scalars())
        return present

    def save(self, before: list[Order], outcomes: list[Outcome]) -> None:
        """Write many outcomes at once: each order's row (guarded by its last seq), events, notifications."""
        changed = [(b, o) for b, o in zip(before, outcomes) if o.events or o.notifications]
        if not changed:
            return
        params = []
        for b, o in changed:
            values = _state_values(o.order)
            values["b_id"] = b.id
            values["b_last_seq"] = b.last_seq
            params.append(values)
        result = self.conn.execute(_update_statement(), params)
        if result.rowcount not in (-1, len(params)):
            raise Busy("another coopctl changed some of these orders at the same time; nothing was changed, try again")
        self._append_many([o for _, o in changed])

    def _append(self, outcome: Outcome) -> None:
        self._append_many([outcome])

    def _append_many(self, outcomes: list[Outcome]) -> None:
        events = [event_values(e) for o in outcomes for e in o.events]
        notes = [notification_values(n) for o in outcomes for n in o.notifications]
        if events:
            self.conn.execute(insert(EVENTS), events)
        if notes:
            self.conn.execute(insert(NOTIFICATIONS), notes)

    def insert_history(self, events: list[Event], notifications: list[dict]) -> None:
        """Bulk insert of stored events and notification rows (import)."""
        if events:
            self.conn.execute(insert(EVENTS), [event_values(e) for e in events])
        if notifications:
            self.conn.execute(insert(NOTIFICATIONS), notifications)

    # ---------------------------------------------------------------- reading

    def events(self, order_id: int) -> list[Event]:
        rows = self.conn.execute(select(EVENTS).where(EVENTS.c.order_id == order_id).order_by(EVENTS.c.seq))
        return [event_from_row(r) for r in rows]

    def events_of(self, order_ids: list[int]) -> dict[int, list[Event]]:
        found: dict[int, list[Event]] = {i: [] for i in order_ids}
        for start in range(0, len(order_ids), 500):
            chunk = order_ids[start : start + 500]
            rows = self.conn.execute(
                select(EVENTS).where(EVENTS.c.order_id.in_(chunk)).order_by(EVENTS.c.order_id, EVENTS.c.seq)
            )
            for r in rows:
                found[r.order_id].append(event_from_row(r))
        return found

    def notification_rows(self, order_ids: list[int] | None = None, *, pending: bool = False, limit: int | None = None):
        query = select(NOTIFICATIONS).order_by(NOTIFICATIONS.c.id)
        if order_ids is not None:
            query = query.where(NOTIFICATIONS.c.order_id.in_(order_ids))
        if pending:
            query = query.where(NOTIFICATIONS.c.sent_at.is_(None))
        if limit is not None:
            query = query.limit(limit)
        return list(self.conn.execute(query))

    def mark_sent(self, ids: list[int], at: int) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.conn.execute(
                update(NOTIFICATIONS).where(NOTIFICATIONS.c.id.in_(chunk), NOTIFICATIONS.c.sent_at.is_(None)).values(sent_at=at)
            )

    def due(self, now: int, *, limit: int, after: tuple[int, int] | None = None, skip_locked: bool = False) -> list[Order]:
        """Orders whose next deadline or reminder is at or before `now`, by (wake_at, id)."""
        query = select(ORDERS).where(ORDERS.c.wake_at <= now)
        if after is not None:
            wake, oid = after
            query = query.where((ORDERS.c.wake_at > wake) | ((ORDERS.c.wake_at == wake) & (ORDERS.c.id > oid)))
        query = query.order_by(ORDERS.c.wake_at, ORDERS.c.id).limit(limit)
        if skip_locked and not self.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        return [order_from_row(r) for r in self.conn.execute(query)]

    def count_due(self, now: int) -> int:
        return self.conn.execute(select(func.count()).select_from(ORDERS).where(ORDERS.c.wake_at <= now)).scalar_one()

    def list_orders(
        self,
        *,
        statuses: list[str] | None = None,
        merchant: str | None = None,
        creator: str | None = None,
        due_before: int | None = None,
        limit: int | None = None,
    ) -> list[Order]:
        query = select(ORDERS).where(ORDERS.c.status != "")
        if statuses:
            query = query.where(ORDERS.c.status.in_(statuses))
        if merchant is not None:
            query = query.where(ORDERS.c.merchant == merchant)
        if creator is not None:
            query = query.where(ORDERS.c.creator == creator)
        if due_before is not None:
            query = query.where(ORDERS.c.deadline < due_before).order_by(ORDERS.c.deadline, ORDERS.c.id)
        else:
            query = query.order_by(ORDERS.c.id)
        if limit is not None:
            query = query.limit(limit)
        return [order_from_row(r) for r in self.conn.execute(query)]

    def all_order_ids(self) -> list[int]:
        return list(self.conn.execute(select(ORDERS.c.id).where(ORDERS.c.status != "").order_by(ORDERS.c.id)).scalars())

    def max_order_id(self) -> int:
        return self.conn.execute(select(func.max(ORDERS.c.id))).scalar() or 0
