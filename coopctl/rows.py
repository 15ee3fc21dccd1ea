"""Rows <-> records: how an order, an event and a notification are laid out as row tuples.

Pure (no SQLAlchemy): the storage layer writes and reads these tuples, and tick's helper process
(`coopctl.tickwork`) builds them without loading the database libraries.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache

from coopctl.lifecycle import Event, Notification, Order, Party, Ruling, Status, canonical_json, new_order, new_terms, wake_at
from coopctl.policy import Policy, ReminderOffsets


@lru_cache(maxsize=256)
def _policy(text: str) -> Policy:
    return Policy.from_json(json.loads(text))


@lru_cache(maxsize=256)
def _reminders(text: str) -> ReminderOffsets:
    return ReminderOffsets.from_json(json.loads(text))


@lru_cache(maxsize=4096)
def _products(text: str) -> tuple[str, ...]:
    """A product list from its JSON text; the same lists come back again and again in a batch."""
    return tuple(json.loads(text))


_dumps = canonical_json  # stored JSON (products, policy, event data) is written the way hashes see it

ORDER_COLUMNS = (
    "id", "merchant", "creator", "products", "form", "commission_pct", "ad_budget", "latest_start_at", "note",
    "policy", "reminders", "created_at", "status", "status_since", "cancel_requested_by", "went_live_at",
    "delivered_at", "delivery_mode", "failed_reviews", "last_seq", "last_hash", "last_event_at",
    "reminders_sent", "idempotency_key",
    # schema 4 (issue 12): extensions by agreement and disputes
    "extensions", "extension_requested_by", "proposed_latest_start_at", "disputed_by", "appeals", "ruling",
    "dispute_liable",
)


@lru_cache(maxsize=16)
def rows_by_id_sql(count: int) -> str:
    """SQLite: the rows of ORDER_COLUMNS of `count` orders given by id, in id order (the storage
    layer and tick's helper process read chunks of due orders with it)."""
    return f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE id IN ({', '.join('?' * count)}) ORDER BY id"


_STATUS = {s.value: s for s in Status}
_PARTY = {None: None, "merchant": Party.MERCHANT, "creator": Party.CREATOR}
_NO_REMINDERS: frozenset[str] = frozenset()


def order_from_row(row) -> Order:
    """An order from a row of ORDER_COLUMNS, in that order (a Row or a plain tuple)."""
    (oid, merchant, creator, products, form, commission, budget, latest, note, policy, reminders, created,
     status, since, requested_by, went_live, delivered, mode, failed, seq, digest, last_at, sent, key,
     extensions, extension_by, proposed, disputed_by, appeals, ruling, dispute_liable) = row
    return new_order(
        oid,
        new_terms(merchant, creator, _products(products), form, Decimal(commission), Decimal(budget), latest, note),
        _policy(policy),
        _reminders(reminders),
        created,
        _STATUS[status],
        since,
        _PARTY[requested_by],
        went_live,
        delivered,
        mode,
        failed,
        seq,
        digest,
        last_at,
        _NO_REMINDERS if sent == "[]" else frozenset(json.loads(sent)),
        key,
        extensions,
        _PARTY[extension_by],
        proposed,
        _PARTY[disputed_by],
        appeals,
        None if ruling is None else _ruling(ruling),
        _PARTY[dispute_liable],
    )


@lru_cache(maxsize=256)
def _ruling(text: str) -> Ruling:
    return Ruling.from_stored(text)


STATE_COLUMNS = (
    "status", "status_since", "cancel_requested_by", "went_live_at", "delivered_at", "delivery_mode",
    "failed_reviews", "liable_party", "deadline", "wake_at", "last_seq", "last_hash", "last_event_at",
    "reminders_sent",
    "latest_start_at", "extensions", "extension_requested_by", "proposed_latest_start_at", "disputed_by", "appeals",
    "ruling", "dispute_liable",
)


def state_tuple(order: Order) -> tuple:
    """The columns that change as an order moves, in STATE_COLUMNS order."""
    requested_by = order.cancel_requested_by
    liable = order.liable_party
    sent = order.reminders_sent
    return (  # `_value_`: the plain string, without the `.value` property's Python-level call
        order.status._value_,
        order.status_since,
        None if requested_by is None else requested_by._value_,
        order.went_live_at,
        order.delivered_at,
        order.delivery_mode,
        order.failed_reviews,
        None if liable is None else liable._value_,
        order.deadline,
        wake_at(order),
        order.last_seq,
        order.last_hash,
        order.last_event_at,
        _dumps(sorted(sent)) if sent else "[]",
        order.terms.latest_start_at,
        order.extensions,
        None if order.extension_requested_by is None else order.extension_requested_by._value_,
        order.proposed_latest_start_at,
        None if order.disputed_by is None else order.disputed_by._value_,
        order.appeals,
        None if order.ruling is None else order.ruling.stored(),
        None if order.dispute_liable is None else order.dispute_liable._value_,
    )


# The state columns every move may change; the rest of STATE_COLUMNS (schema 4: the latest start,
# extensions and disputes) change only on the actions of extensions and disputes.
MOVE_COLUMNS = STATE_COLUMNS[:14]
_MOVES = len(MOVE_COLUMNS)
_KEPT_AT = tuple(ORDER_COLUMNS.index(name) for name in STATE_COLUMNS[_MOVES:])
_ID_AT, _SEQ_AT = ORDER_COLUMNS.index("id"), ORDER_COLUMNS.index("last_seq")


def guarded_state(order: Order, row: tuple) -> tuple:
    """What tick writes for an order read as `row` (ORDER_COLUMNS) and now `order`: its state
    columns and the guard (id, seq read). MOVE_COLUMNS alone when the other state columns are as
    read (nearly every tick transition: a narrower UPDATE, 14 columns instead of 22); every one
    of STATE_COLUMNS otherwise. `Tx.save_rows` tells the two apart by their length."""
    state = state_tuple(order)
    guard = (row[_ID_AT], row[_SEQ_AT])
    if all(state[_MOVES + i] == row[at] for i, at in enumerate(_KEPT_AT)):
        return state[:_MOVES] + guard
    return state + guard


def _state_values(order: Order) -> dict:
    return dict(zip(STATE_COLUMNS, state_tuple(order)))


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
        "note": terms.note,
        "policy": _dumps(order.policy.to_json()),
        "reminders": _dumps(order.reminders.to_json()),
        "created_at": order.created_at,
        "idempotency_key": order.idempotency_key,
        **_state_values(order),
    }


EVENT_COLUMNS = ("order_id", "seq", "kind", "at", "actor", "operator", "data", "prev_hash", "hash")
NOTIFICATION_COLUMNS = ("order_id", "recipient", "channel", "kind", "at", "text")
STORED_NOTIFICATION_COLUMNS = NOTIFICATION_COLUMNS + ("sent_at", "state")  # an imported outbox keeps what was sent
# What `notifications` lists and `dispatch` delivers (SPEC section 5), in this order.
LISTED_NOTIFICATION_COLUMNS = (
    "id", "order_id", "recipient", "channel", "kind", "at", "text", "state", "attempts", "sent_at", "next_attempt_at",
    "last_error",
)


def event_tuple(e: Event) -> tuple:
    return (e.order_id, e.seq, e.kind, e.at, e.actor, e.operator, _dumps(e.data) if e.data else "{}", e.prev_hash, e.hash)


def notification_tuple(n: Notification) -> tuple:
    return (n.order_id, n.recipient, n.channel, n.kind, n.at, n.text)


def driver_rows(conn, sql: str, params) -> list[tuple]:
    """The rows of `sql` (with `?` marks) as the database driver's plain tuples, on the DB-API
    connection under the SQLAlchemy connection `conn` (the same transaction): for the reads an
    export makes per chunk and per block of the seal's nodes, where SQLAlchemy's statement and row
    objects cost more than the rows."""
    if conn.dialect.name != "sqlite":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()
