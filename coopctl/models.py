"""The tables, declared once with SQLModel.

Instants are BIGINT microseconds since the epoch (UTC); money and rates are decimal strings;
lists and maps are canonical JSON text. Nothing here is SQLite-only, so PostgreSQL serves too.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, LargeBinary, Text
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 4  # 2: tick_runs; 3: the indexes of `list` and `board`, order_products, sealed histories; 4: disputes and extensions, evidence files, outbox delivery (coopctl/migrations.py upgrades older databases in place)
APPLICATION = "coopctl"


class Meta(SQLModel, table=True):
    """Key/value facts about the database: application, schema_version, made_by."""

    __tablename__ = "coopctl_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=Text)


class OrderRow(SQLModel, table=True):
    """One order: its terms, its policy, where it stands, and when `tick` next has work for it."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_wake_at", "wake_at"),
        Index("ix_orders_deadline", "deadline"),
        Index("ix_orders_merchant", "merchant"),
        Index("ix_orders_creator", "creator"),
        Index("ix_orders_status", "status"),
        # schema 3: what `list` sorts and filters by (SPEC section 4, "Lists"): each filter an index
        Index("ix_orders_created", "created_at"),
        Index("ix_orders_liable", "liable_party"),
        Index("ix_orders_status_deadline", "status", "deadline"),
        Index("ix_orders_status_created", "status", "created_at"),
        Index("ux_orders_idempotency_key", "idempotency_key", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    merchant: str = Field(max_length=128)
    creator: str = Field(max_length=128)
    products: str = Field(sa_type=Text)  # JSON array
    form: str = Field(max_length=8)
    commission_pct: str = Field(max_length=32)
    ad_budget: str = Field(max_length=32)
    latest_start_at: int = Field(sa_type=BigInteger)
    note: str | None = Field(default=None, sa_type=Text)
    policy: str = Field(sa_type=Text)  # JSON object
    reminders: str = Field(sa_type=Text)  # JSON object
    created_at: int = Field(sa_type=BigInteger)
    status: str = Field(max_length=32)
    status_since: int = Field(sa_type=BigInteger)
    cancel_requested_by: str | None = Field(default=None, max_length=16)
    went_live_at: int | None = Field(default=None, sa_type=BigInteger)
    delivered_at: int | None = Field(default=None, sa_type=BigInteger)
    delivery_mode: str | None = Field(default=None, max_length=16)
    failed_reviews: int = 0
    liable_party: str | None = Field(default=None, max_length=16)
    deadline: int | None = Field(default=None, sa_type=BigInteger)
    wake_at: int | None = Field(default=None, sa_type=BigInteger)
    last_seq: int = 0
    last_hash: str = Field(max_length=64)
    last_event_at: int = Field(sa_type=BigInteger)
    reminders_sent: str = Field(default="[]", sa_type=Text)  # JSON array of reminder keys
    idempotency_key: str | None = Field(default=None, max_length=256)
    # schema 4 (issue 12): extensions by agreement, complaints, rulings and appeals
    # a server default: an upgraded database adds these NOT NULL columns with it (ALTER TABLE needs one)
    extensions: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    extension_requested_by: str | None = Field(default=None, max_length=16)
    proposed_latest_start_at: int | None = Field(default=None, sa_type=BigInteger)
    disputed_by: str | None = Field(default=None, max_length=16)
    appeals: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    ruling: str | None = Field(default=None, sa_type=Text)  # JSON object: the latest ruling
    dispute_liable: str | None = Field(default=None, max_length=16)  # the liable party when the dispute opened


class OrderProduct(SQLModel, table=True):
    """One row per (product, order) (schema 3), so that `list --product` is an index search: the
    products of an order are written with it (create, import, bulk loading) and never change."""

    __tablename__ = "order_products"

    product: str = Field(primary_key=True, max_length=128)
    order_id: int = Field(primary_key=True, foreign_key="orders.id")


class EventRow(SQLModel, table=True):
    """The hash-chained history of each order; (order_id, seq) can never be written twice."""

    __tablename__ = "events"
    __table_args__ = (Index("ux_events_log_index", "log_index", unique=True),)

    order_id: int = Field(primary_key=True, foreign_key="orders.id")
    seq: int = Field(primary_key=True)
    kind: str = Field(max_length=32)
    at: int = Field(sa_type=BigInteger)
    actor: str = Field(max_length=160)
    operator: str = Field(max_length=256)
    data: str = Field(sa_type=Text)  # canonical JSON
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # SPEC section 6: the event's position in the sealed log (coopctl/seal.py), NULL until a seal
    # adds it. Unique (NULLs apart), so that the events not yet sealed are found by this index.
    log_index: int | None = Field(default=None, sa_type=BigInteger)


class NotificationRow(SQLModel, table=True):
    """The outbox: written with the event that causes it, delivered by `coopctl dispatch` (SPEC
    section 5). `state` is pending, sent, failed or dead; a dispatcher holds what it claimed by
    `claimed_by` and `lease_until` (the wall clock), renewed while it delivers."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_order", "order_id"),
        # schema 4: claims (oldest first within a state) and the board (counts per state, the
        # oldest pending one) read these two indexes only
        Index("ix_notifications_state_id", "state", "id"),
        Index("ix_notifications_state_at", "state", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id")
    recipient: str = Field(max_length=160)
    channel: str = Field(max_length=16)
    kind: str = Field(max_length=32)
    at: int = Field(sa_type=BigInteger)
    text: str = Field(sa_type=Text)
    sent_at: int | None = Field(default=None, sa_type=BigInteger)
    # schema 4 (ADD COLUMN puts them here, after sent_at, as a new database declares them)
    # (server defaults only, so that the bulk inserts of new notifications need not name them)
    state: str = Field(default=None, max_length=8, nullable=False, sa_column_kwargs={"server_default": sql_text("'pending'")})
    attempts: int = Field(default=None, nullable=False, sa_column_kwargs={"server_default": sql_text("0")})
    next_attempt_at: int | None = Field(default=None, sa_type=BigInteger)  # failed: when it is due again
    last_error: str | None = Field(default=None, sa_type=Text)  # one line, checked and escaped
    claimed_by: str | None = Field(default=None, max_length=64)  # the dispatcher holding it
    lease_until: int | None = Field(default=None, sa_type=BigInteger)  # wall clock, microseconds


class TickRun(SQLModel, table=True):
    """One row per completed (non-dry) `tick`: when it ran, for which instant, what it did.
    `doctor` reads the last one to tell whether cron is running."""

    __tablename__ = "tick_runs"

    id: int | None = Field(default=None, primary_key=True)
    started_at: int = Field(sa_type=BigInteger)  # the clock when the run started
    finished_at: int = Field(sa_type=BigInteger)  # the clock when it committed its last batch
    now: int = Field(sa_type=BigInteger)  # the instant it applied deadlines up to (--now)
    applied: int = 0  # timed-out transitions written
    reminders: int = 0
    operator: str = Field(max_length=256)


class SealNode(SQLModel, table=True):
    """The sealed log's complete subtrees (SPEC section 6, RFC 6962): the node at `level` >= 1 and
    position `idx` is the hash of leaves idx * 2**level to (idx + 1) * 2**level - 1. Leaves (level 0)
    are the events' own hashes (events.log_index), so they are not stored twice."""

    __tablename__ = "seal_nodes"
    level: int = Field(primary_key=True)
    idx: int = Field(primary_key=True, sa_type=BigInteger)
    hash: bytes = Field(sa_type=LargeBinary)


class SealHead(SQLModel, table=True):
    """One signed tree head per `seal` that added events: the first `size` leaves have this root."""

    __tablename__ = "seal_heads"

    id: int | None = Field(default=None, primary_key=True)
    size: int = Field(sa_type=BigInteger)
    root: str = Field(max_length=64)  # hex
    sealed_at: int = Field(sa_type=BigInteger)
    public_key: str = Field(max_length=64)  # base64 of the 32 raw bytes
    signature: str = Field(max_length=128)  # base64 of the 64-byte Ed25519 signature


class EvidenceContent(SQLModel, table=True):
    """Schema 4: the contents of evidence files (SPEC section 1), once per distinct content. Events
    name a file by its SHA-256 in their data (`evidence_files`); this row holds its bytes, or NULL
    for a file recorded elsewhere and never given to this database (an import without contents)."""

    __tablename__ = "evidence_files"

    sha256: str = Field(primary_key=True, max_length=64)  # lowercase hex
    size: int = Field(sa_type=BigInteger)
    content: bytes | None = Field(default=None, sa_type=LargeBinary)  # BLOB on SQLite, bytea on PostgreSQL


ORDERS = OrderRow.__table__
EVENTS = EventRow.__table__
NOTIFICATIONS = NotificationRow.__table__
META = Meta.__table__
TICK_RUNS = TickRun.__table__
ORDER_PRODUCTS = OrderProduct.__table__
SEAL_NODES = SealNode.__table__
SEAL_HEADS = SealHead.__table__
EVIDENCE = EvidenceContent.__table__
