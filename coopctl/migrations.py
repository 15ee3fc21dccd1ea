"""Schema upgrades: one step per version, from N to N + 1, run in place when a command opens
an older database.

`upgrade` runs every step from the database's version to `SCHEMA_VERSION` and records the new
version, all on the caller's connection, inside the caller's ONE write transaction
(`Store.upgrade`, or `Store.initialise`): a step that fails leaves the database exactly at its
old version. A newer database is never touched (`Tx.check_schema` refuses it, exit 5).

Each step carries its own frozen copy of the tables it creates, so that a later change to
`coopctl/models.py` never changes what an old step does. The steps use portable SQLAlchemy DDL
(SQLite and PostgreSQL both run DDL inside a transaction). A step that must rebuild a SQLite
table (what `ALTER TABLE` cannot do) should use sqlite-utils' `Table.transform()` on the same
connection, per SPEC section 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, inspect, update
from sqlalchemy import text as text_sql
from sqlalchemy.engine import Connection

from coopctl.errors import StorageError
from coopctl.models import META, SCHEMA_VERSION


@dataclass(frozen=True)
class Step:
    """Upgrades a database from `version` to `version + 1`."""

    version: int
    what: str
    run: Callable[[Connection], None]


# --------------------------------------------------------------------------- 1 -> 2

_V2 = MetaData()
_V2_TICK_RUNS = Table(  # frozen: tick_runs as version 2 defines it (models.TickRun)
    "tick_runs",
    _V2,
    Column("id", Integer, primary_key=True),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=False),
    Column("now", BigInteger, nullable=False),
    Column("applied", Integer, nullable=False),
    Column("reminders", Integer, nullable=False),
    Column("operator", String(256), nullable=False),
)


def _add_tick_runs(conn: Connection) -> None:
    _V2_TICK_RUNS.create(conn)


# --------------------------------------------------------------------------- 2 -> 3

_V3 = MetaData()
_V3_ORDERS = Table(  # frozen: only the columns the indexes of version 3 name (the table exists)
    "orders",
    _V3,
    Column("id", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("liable_party", String(16)),
    Column("deadline", BigInteger),
)
_V3_LIST_INDEXES = (  # frozen: the indexes of `list` as version 3 defines them (models.OrderRow)
    Index("ix_orders_created", _V3_ORDERS.c.created_at),
    Index("ix_orders_liable", _V3_ORDERS.c.liable_party),
    Index("ix_orders_status_deadline", _V3_ORDERS.c.status, _V3_ORDERS.c.deadline),
    Index("ix_orders_status_created", _V3_ORDERS.c.status, _V3_ORDERS.c.created_at),
)
_V3_NOTIFICATIONS = Table(  # frozen: only the columns the index of version 3 names (the table exists)
    "notifications",
    _V3,
    Column("id", Integer, primary_key=True),
    Column("sent_at", BigInteger),
    Column("at", BigInteger, nullable=False),
)
_V3_BOARD_INDEX = Index("ix_notifications_pending_at", _V3_NOTIFICATIONS.c.sent_at, _V3_NOTIFICATIONS.c.at)
_V3_ORDER_PRODUCTS = Table(  # frozen: order_products as version 3 defines it (models.OrderProduct)
    "order_products",
    _V3,
    Column("product", String(128), primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), primary_key=True),
)


def _v3_list(conn: Connection) -> None:
    """`list`'s part of 2 -> 3: the indexes its filters and sorts search (SPEC section 4, "Lists"),
    and order_products filled with the products of every existing order (one row per distinct
    product of an order; the placeholder rows of unfinished creates have none)."""
    for index in _V3_LIST_INDEXES:
        index.create(conn)
    _V3_ORDER_PRODUCTS.create(conn)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            "INSERT INTO order_products (product, order_id) "
            "SELECT DISTINCT j.value, o.id FROM orders AS o, json_each(o.products) AS j WHERE o.status != ''"
        )
    else:
        conn.exec_driver_sql(
            "INSERT INTO order_products (product, order_id) "
            "SELECT DISTINCT j.value, o.id FROM orders AS o, jsonb_array_elements_text(o.products::jsonb) AS j(value) "
            "WHERE o.status != ''"
        )


def _v3_board(conn: Connection) -> None:
    """`board`'s part of 2 -> 3: the oldest pending notification read from an index, in one probe."""
    _V3_BOARD_INDEX.create(conn)


_V3_SEAL_NODES = Table(  # frozen: seal_nodes as version 3 defines it (models.SealNode)
    "seal_nodes",
    _V3,
    Column("level", Integer, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("hash", LargeBinary, nullable=False),
)
_V3_SEAL_HEADS = Table(  # frozen: seal_heads as version 3 defines it (models.SealHead)
    "seal_heads",
    _V3,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),
    Column("sealed_at", BigInteger, nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
)


def _v3_seal(conn: Connection) -> None:
    """Sealed histories (SPEC section 6): events.log_index (NULL: not sealed yet; a unique index,
    so that `seal` finds what is new without a pass over the log), the log's nodes and its signed
    tree heads. ADD COLUMN appends the column after the last one, exactly where a new database
    declares it, so an upgraded database has the schema of a new one."""
    conn.exec_driver_sql("ALTER TABLE events ADD COLUMN log_index BIGINT")
    Index("ux_events_log_index", Table("events", MetaData(), Column("log_index", BigInteger)).c.log_index, unique=True).create(conn)
    _V3_SEAL_NODES.create(conn)
    _V3_SEAL_HEADS.create(conn)


def _to_v3(conn: Connection) -> None:
    _v3_list(conn)
    _v3_board(conn)
    _v3_seal(conn)


# --------------------------------------------------------------------------- 3 -> 4

# frozen: the order columns version 4 adds (models.OrderRow), in the order a new database declares them
_V4_ORDER_COLUMNS = (
    ("extensions", "INTEGER DEFAULT '0' NOT NULL"),
    ("extension_requested_by", "VARCHAR(16)"),
    ("proposed_latest_start_at", "BIGINT"),
    ("disputed_by", "VARCHAR(16)"),
    ("appeals", "INTEGER DEFAULT '0' NOT NULL"),
    ("ruling", "TEXT"),
    ("dispute_liable", "VARCHAR(16)"),
)
# frozen: the policy keys version 4 adds, with their defaults as a policy is written (SPEC section 1)
_V4_POLICY_DEFAULTS = (
    ("extension_response_window", "48h"),
    ("max_extensions", 2),
    ("max_extension", "15d"),
    ("complaint_window", "90d"),
    ("arbitration_window", "5d"),
    ("appeal_window", "14d"),
    ("max_appeals", 1),
)


def _v4_disputes(conn: Connection) -> None:
    """Disputes and extensions (issue 12): the order columns of extensions, complaints, rulings and
    appeals (an existing order has none yet), and the new policy keys written into every existing
    order's frozen policy with their defaults (SPEC section 1: "written down on the order when the
    database is upgraded"), so that no later change of the defaults moves its deadlines. A key an
    order's policy already holds is kept. The policy is canonical JSON (sorted keys, no spaces), as
    coopctl writes it; each distinct policy is rewritten once, whatever the number of orders."""
    import json

    present = {c["name"] for c in inspect(conn).get_columns("orders")}
    for name, ddl in _V4_ORDER_COLUMNS:
        if name not in present:  # ADD COLUMN appends it, where a new database declares it
            conn.exec_driver_sql(f"ALTER TABLE orders ADD COLUMN {name} {ddl}")
    policies = [row[0] for row in conn.exec_driver_sql("SELECT DISTINCT policy FROM orders WHERE status != ''")]
    for text in policies:
        try:
            policy = json.loads(text)
        except ValueError:
            continue  # not JSON: left as it is, for `doctor` to report
        if not isinstance(policy, dict):
            continue
        missing = {key: value for key, value in _V4_POLICY_DEFAULTS if key not in policy}
        if not missing:
            continue
        upgraded = json.dumps({**policy, **missing}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        conn.execute(text_sql("UPDATE orders SET policy = :new WHERE policy = :old"), {"new": upgraded, "old": text})


_V4 = MetaData()
_V4_EVIDENCE = Table(  # frozen: evidence_files as version 4 defines it (models.EvidenceContent)
    "evidence_files",
    _V4,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("content", LargeBinary),
)


def _v4_evidence(conn: Connection) -> None:
    """Evidence files (SPEC section 1): the table of their contents, once per distinct content
    (NULL content: recorded, not held here). Events name them in their data, so no existing row
    changes; a database that already has the table (an earlier, interrupted upgrade cannot leave
    one: the step runs in the upgrade's one transaction) is left as it is."""
    _V4_EVIDENCE.create(conn, checkfirst=True)


_V4_OUT = MetaData()
_V4_NOTIFICATIONS = Table(  # frozen: the columns the indexes of version 4 name (the table exists)
    "notifications",
    _V4_OUT,
    Column("id", Integer, primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("state", String(8), nullable=False),
)
_V4_OUTBOX_COLUMNS = (  # frozen: what version 4 adds to notifications (models.NotificationRow), in order
    "state VARCHAR(8) DEFAULT 'pending' NOT NULL",
    "attempts INTEGER DEFAULT 0 NOT NULL",
    "next_attempt_at BIGINT",
    "last_error TEXT",
    "claimed_by VARCHAR(64)",
    "lease_until BIGINT",
)
_V4_OUTBOX_INDEXES = (  # frozen: claims and the board (models.NotificationRow)
    Index("ix_notifications_state_id", _V4_NOTIFICATIONS.c.state, _V4_NOTIFICATIONS.c.id),
    Index("ix_notifications_state_at", _V4_NOTIFICATIONS.c.state, _V4_NOTIFICATIONS.c.at),
)


def _v4_outbox(conn: Connection) -> None:
    """The outbox's delivery (SPEC section 5): each notification's state, attempts, next attempt,
    last error and the lease of the dispatcher holding it. What was marked sent is `sent`,
    everything else `pending` (due at once). The indexes on (state, id) and (state, at) replace
    those on sent_at: claims and the board read them only. ADD COLUMN appends each column after
    the last one, where a new database declares it."""
    present = {c["name"] for c in inspect(conn).get_columns("notifications")}
    if "state" in present:  # a database whose outbox is already delivered (the other parts of 4 were not)
        return
    for column in _V4_OUTBOX_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE notifications ADD COLUMN {column}")
    conn.exec_driver_sql("UPDATE notifications SET state = 'sent' WHERE sent_at IS NOT NULL")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_notifications_sent")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_notifications_pending_at")
    for index in _V4_OUTBOX_INDEXES:
        index.create(conn, checkfirst=True)


def _to_v4(conn: Connection) -> None:
    _v4_disputes(conn)
    _v4_evidence(conn)
    _v4_outbox(conn)


# --------------------------------------------------------------------------- the list

STEPS: tuple[Step, ...] = (
    Step(1, "add tick_runs: one row per tick run, so that `doctor` can tell when cron last ran", _add_tick_runs),
    Step(2, "add the indexes of `list` and `board`, order_products, and sealed histories (events.log_index, seal_nodes, seal_heads)", _to_v3),
    Step(3, "add disputes and extensions (order columns, the new policy keys' defaults on every order), evidence_files (the contents of evidence files, once per distinct content) and the outbox's delivery (notifications.state, attempts, next_attempt_at, last_error and leases, with their indexes)", _to_v4),
)


def upgrade(conn: Connection, version: int) -> list[Step]:
    """Bring a database of schema `version` to `SCHEMA_VERSION` on `conn` (already in a write
    transaction); the steps run, in order. Nothing is committed here."""
    if version == SCHEMA_VERSION:
        return []
    steps = {step.version: step for step in STEPS}
    path = [steps.get(v) for v in range(version, SCHEMA_VERSION)]
    if version < 1 or version > SCHEMA_VERSION or None in path:
        raise StorageError(
            f"this database has schema version {version}, which this coopctl (schema {SCHEMA_VERSION}) cannot upgrade"
        )
    for step in path:
        step.run(conn)
    conn.execute(update(META).where(META.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    return path
