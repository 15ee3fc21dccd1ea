"""Export, replay and import (SPEC section 2, "Export, replay, import").

Library first: every function works without the command line and raises the typed errors of
`coopctl.errors` (a malformed file is `InvalidInput`, exit 2; a history that the rules do not
reproduce, or an id that already exists, is `Refused`, exit 1; an unknown order `NotFound`, 3).

The rules are not written again here. `replay` checks each order with `history.verify_chain`
(the hash chain) and `history.rebuild` (every event fed back through `lifecycle.create`, `act`
and `fire_due`, so an event that was not allowed at its instant, or that a deadline should have
pre-empted, is caught), passes the rebuilt orders through a scratch in-memory database, and
compares what comes back with the exported orders. `what_if` replays the party actions of an
export under another policy with the same `create`, `act` and `fire_due`.

The document: {"format": "coopctl-export", "version": 1, "exported_at": TS, "orders": [ORDER]},
each ORDER being `Order.to_json(tz)` plus "reminders_sent" (which reminders `tick` already wrote,
so that an import does not send them again), "events" and "notifications" (with "sent_at").
Orders are sorted by id, events by seq, notifications by id; the same database exports the same
bytes apart from "exported_at".
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import sys
from array import array
from itertools import chain
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import timezone, tzinfo
from decimal import Decimal, InvalidOperation
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple, TextIO

from coopctl.errors import CoopError, InvalidInput, NotFound, Refused
from coopctl.evidence import files_from_json
from coopctl.history import Divergence, Step, check_outbox, rebuild, recorded_action, verify_chain
from coopctl.memo import TextCache
from coopctl.lifecycle import (
    ACTION_OF_KIND,
    EVIDENCE_KEY,
    MAX_PRODUCTS,
    SYSTEM,
    Event,
    Kind,
    Notification,
    Order,
    Party,
    Terms,
    act,
    create,
    fire_due,
)
from coopctl.policy import InvalidValue, Policy, ReminderOffsets, iso, parse_instant
from coopctl.rows import ORDER_COLUMNS, driver_rows, order_from_row
from coopctl.streaming import _plain, open_export, open_path
from coopctl.trust import MAX_ORDER_ID, MAX_TEXT_LENGTH, check_id, check_operator, check_text, json_escaped, shown

FORMAT = "coopctl-export"
VERSION = 1
MAX_ID = MAX_ORDER_ID  # order ids (and seqs) of a file: 1 to 2^53 - 1, exact in every JSON reader
WHAT_IF_OPERATOR = "what-if"

# The fields of "The order as JSON" that SPEC names: an export must carry every one of them.
REQUIRED_FIELDS = (
    "id", "merchant", "creator", "products", "form", "commission_pct", "ad_budget", "latest_start_at",
    "note", "status", "terms", "liable_party", "created_at", "deadline", "cancel_requested_by",
    "went_live_at", "delivered_at", "delivery_mode", "failed_reviews", "policy",
)
_INSTANTS = {"latest_start_at", "created_at", "deadline", "went_live_at", "delivered_at", "last_event_at", "proposed_latest_start_at"}
_DECIMALS = {"commission_pct", "ad_budget"}
_TEXT = {"merchant", "creator", "form", "status", "terms"}
_TEXT_OR_NULL = {
    "note", "liable_party", "cancel_requested_by", "delivery_mode", "at_deadline", "idempotency_key",
    "extension_requested_by", "disputed_by",
}
_RULING_KEYS = ("liable", "amount", "reason", "at", "final")
_REMINDER_KEY = re.compile(r"[a-z_]{1,32}@-?\d{1,20}")
_HASH = re.compile(r"[0-9a-f]{64}")
# What a file may name, as the rules write it (SPEC section 1): event kinds and actors,
# notification kinds, recipients and channels. Anything else is not a coopctl export (exit 2).
EVENT_KINDS = frozenset(k.value for k in Kind if k is not Kind.REMINDER)
NOTIFICATION_KINDS = frozenset(k.value for k in Kind)
CHANNELS = ("inbox", "sms")
NOTIFICATION_STATES = ("pending", "sent", "failed", "dead")  # section 5's delivery state, when a file carries it
# A notification's text is a template around ids (128 characters each) and a reason (2000).
MAX_NOTIFICATION_TEXT = MAX_TEXT_LENGTH + 1000


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class ExportedOrder:
    """One order of an export file, read and type-checked (not yet checked against the rules)."""

    id: int
    fields: dict  # the order's own JSON fields, as written in the file (without its events and notifications)
    events: list[Event]
    notifications: list[dict]  # rows for the outbox: order_id, recipient, channel, kind, at, text, sent_at
    reminders_sent: frozenset[str]
    sealed: object | None = None  # seal.Sealed: the inclusion proof of its last sealed event (SPEC section 6)
    evidence: tuple = ()  # evidence.Embedded: the files `export --with-evidence` carried (content not yet checked)


@dataclass(frozen=True)
class ExportFile:
    exported_at: int
    orders: list[ExportedOrder]
    seal: object | None = None  # seal.Head: the latest signed tree head when the file was written


@dataclass(frozen=True)
class Verdict:
    """What replay found for one order: the rebuilt steps, and where it diverges (if it does)."""

    exported: ExportedOrder
    steps: list[Step]  # the order after each event; only the reproduced prefix when it diverges
    rebuilt: Order | None  # the order the rules end with (None when the history itself diverges)
    divergence: Divergence | None = None
    evidence: tuple = ()  # evidence.HeldFile: the embedded files, checked against their events (import keeps them)

    @property
    def order_id(self) -> int:
        return self.exported.id

    @property
    def ok(self) -> bool:
        return self.divergence is None

    @property
    def message(self) -> str:
        """One line: the order, the seq (or the notification) and why (empty when reproduced)."""
        if self.divergence is None:
            return ""
        return f"order {self.order_id} diverges at {self.divergence}"

    def to_json(self, tz: tzinfo = timezone.utc) -> dict:
        end = self.rebuilt
        return {
            "order": self.order_id,
            "verdict": "reproduced" if self.ok else "diverges",
            "events": len(self.exported.events),
            "status": None if end is None else str(end.status),
            "terms": None if end is None else str(end.terms_state),
            "liable_party": None if end is None or end.liable_party is None else str(end.liable_party),
            "deadline": None if end is None or end.deadline is None else iso(end.deadline, tz),
            "seq": None if self.divergence is None else self.divergence.seq,
            "notification": getattr(self.divergence, "index", None),
            "reason": None if self.divergence is None else self.divergence.why,
        }


@dataclass
class WhatIf:
    """One order replayed under another policy: its party actions at their instants, deadlines as the
    other windows say. Both sides are taken at `until` (the export time, or the last event if later):
    the recorded side also fires, with the same rules, any deadline that was due but not yet ticked."""

    verdict: Verdict
    policy: Policy
    until: int
    recorded_steps: list[Step] = field(default_factory=list)  # the recorded history (+ deadlines due by `until`)
    steps: list[Step] = field(default_factory=list)  # the alternative history, order after each event
    refused: list[tuple[Event, str]] = field(default_factory=list)  # recorded party actions the rules would refuse
    problem: str | None = None  # why the order cannot be replayed at all

    @property
    def order_id(self) -> int:
        return self.verdict.order_id

    @property
    def recorded(self) -> Order | None:
        return self.recorded_steps[-1].order if self.recorded_steps else None

    @property
    def alternative(self) -> Order | None:
        return self.steps[-1].order if self.steps else None

    @property
    def first_difference(self) -> Difference | None:
        """Where the recorded and the alternative histories first part, or None when they do not."""
        recorded = [s.event for s in self.recorded_steps] or self.verdict.exported.events
        ends = len(self.verdict.exported.events)
        alternative = [s.event for s in self.steps]
        for index in range(max(len(recorded), len(alternative))):
            mine = recorded[index] if index < len(recorded) else None
            theirs = alternative[index] if index < len(alternative) else None
            if mine is not None and theirs is not None and _same_step(mine, theirs):
                continue
            return Difference(index + 1, mine, mine is not None and mine.seq > ends, theirs)
        return None

    def to_json(self, tz: tzinfo = timezone.utc) -> dict:
        difference = self.first_difference
        return {
            "order": self.order_id,
            "verdict": self.verdict.to_json(tz)["verdict"],
            "policy": self.policy.to_json(),
            "until": iso(self.until, tz),
            "recorded": _outcome_json(self.recorded, tz),
            "what_if": _outcome_json(self.alternative, tz),
            "same_outcome": difference is None and self.problem is None,
            "first_difference": None if difference is None else difference.to_json(tz),
            "refused": [{"seq": e.seq, "kind": e.kind, "actor": e.actor, "reason": why} for e, why in self.refused],
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Difference:
    """The first event where two histories part: `recorded` (None: nothing more happened; `fired_later`:
    a deadline the rules fire after the export's last event, by the export time) against `what_if`."""

    seq: int
    recorded: Event | None
    fired_later: bool
    what_if: Event | None

    def to_json(self, tz: tzinfo = timezone.utc) -> dict:
        def step(e: Event | None):
            return None if e is None else {"kind": e.kind, "at": iso(e.at, tz), "actor": e.actor}

        return {"seq": self.seq, "recorded": step(self.recorded), "fired_later": self.fired_later, "what_if": step(self.what_if)}


def _same_step(a: Event, b: Event) -> bool:
    if (a.kind, a.at, a.actor) != (b.kind, b.at, b.actor):
        return False
    return a.kind == Kind.CREATED or a.data == b.data  # a created event carries its policy, which differs by design


def _outcome_json(order: Order | None, tz: tzinfo) -> dict | None:
    if order is None:
        return None
    return {
        "status": str(order.status),
        "terms": str(order.terms_state),
        "liable_party": None if order.liable_party is None else str(order.liable_party),
        "deadline": None if order.deadline is None else iso(order.deadline, tz),
        "at_deadline": order.at_deadline,
        "failed_reviews": order.failed_reviews,
    }


# --------------------------------------------------------------------------- export


EXPORT_CHUNK = 1000  # orders read at once (with their events and notifications) while exporting


@dataclass
class ExportSummary:
    """What an export wrote: the order ids (compact), and how many events and notifications."""

    exported_at: str
    ids: array = field(default_factory=lambda: array("q"))
    events: int = 0
    notifications: int = 0


def export_document(svc, order_ids: list[int] | None, *, exported_at: int, tz: tzinfo, with_evidence: bool = False) -> dict:
    """The export document of these orders (None: every order), read in one transaction. For many
    orders, `write_export` writes the same text without holding the document in memory. Events
    of one chunk with the same stored data share one `data` object: copy before changing one."""
    svc.store.require()
    with svc.store.read() as tx:
        ids = _existing(tx, order_ids)
        _not_back_dated(tx, ids, exported_at, tz)
        sealing = _sealing(tx)
        orders = []
        for chunk in _order_chunks(tx, ids, tz, sealing=sealing, with_evidence=with_evidence):
            if chunk.sealed:
                from coopctl.seal import sealed_json

                for document, part in zip(chunk, chunk.sealed):
                    if part is not None:  # the last member (SPEC section 6)
                        document["sealed"] = sealed_json(part)
            orders.extend(chunk)
    return {**_header(exported_at, tz, sealing), "orders": orders}


def write_export(
    svc,
    order_ids: list[int] | None,
    out: TextIO | str | os.PathLike,
    *,
    exported_at: int,
    tz: tzinfo,
    total_hint: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    with_evidence: bool = False,
) -> ExportSummary:
    """Write the export of these orders (None: every order) to a text stream, or atomically to a
    file, as it is read: EXPORT_CHUNK orders at a time with their events and notifications, in one
    read transaction, so that memory stays bounded however many orders there are. The text is
    exactly `dumps(export_document(...))`. `total_hint` (if given) receives the number of orders
    first, `progress` the number written after each chunk. `with_evidence` adds each order's
    evidence files with their contents (`evidence.embedded`)."""
    svc.store.require()
    with svc.store.read() as tx:
        ids = _existing(tx, order_ids)  # an unknown order is refused before anything is written
        _not_back_dated(tx, ids, exported_at, tz)
        if total_hint is not None:
            total_hint(tx.count_orders() if ids is None else len(ids))
        sealing = _sealing(tx)
        header = _header(exported_at, tz, sealing)
        summary = ExportSummary(header["exported_at"])
        if with_evidence:
            texts = texts_of(_order_chunks(tx, ids, tz, summary, sealing=sealing, with_evidence=True))
        else:  # on two cores when there are many (coopctl/exporthelper.py)
            from coopctl.exporthelper import export_texts

            texts = export_texts(tx, ids, tz, summary, sealing=sealing)
        if isinstance(out, (str, os.PathLike)):
            with atomic_file(out) as handle:
                _write_document(handle, header, texts, progress)
        else:
            _write_document(out, header, texts, progress)
    return summary


def _existing(tx, order_ids: list[int] | None) -> list[int] | None:
    """The ids to export, sorted and unique (None: every order); NotFound names those missing."""
    if order_ids is None:
        return None
    ids = sorted(set(order_ids))
    missing = sorted(set(ids) - tx.ids_present(ids))
    if missing:
        raise NotFound(f"no order {_named(missing)}; `coopctl list` shows the orders")
    return ids


def _not_back_dated(tx, ids: list[int] | None, exported_at: int, tz: tzinfo) -> None:
    """An export is dated at or after every event it holds: `replay` and `import` refuse a file
    whose `exported_at` comes before its own events (SPEC section 7), so none is written."""
    latest = tx.latest_event(ids)
    if latest is not None and exported_at < latest[0]:
        raise InvalidInput(
            f"the export would be dated {iso(exported_at, tz)}, before the last event of order {latest[1]} "
            f"({iso(latest[0], tz)}); give --at at or after it (is the clock right?)"
        )


def _header(exported_at: int, tz: tzinfo, sealing=None) -> dict:
    header = {"format": FORMAT, "version": VERSION, "exported_at": iso(exported_at, tz)}
    if sealing is not None:  # SPEC section 6: the latest tree head, before the orders it covers
        header["seal"] = sealing.header()
    return header


def _sealing(tx):
    """The export's seal part (coopctl/seal.py), or None before the first seal: an unsealed
    database exports the same bytes as before sealing existed."""
    from coopctl.seal import ExportSeal

    sealing = ExportSeal(tx.conn)
    return sealing if sealing.head is not None else None


class _Chunk(list):
    """The documents of EXPORT_CHUNK orders; `exact` is False when a float came out of the database
    (NaN or Infinity, which only the reference encoder writes as json.dumps does: `jsontext`).
    `sealed`, None or beside the documents, each one's "sealed" part as `seal.sealed_of_rows` gives
    it (or None): the documents hold only SEALED_HOLE in its place, `chunk_text` writes it into
    their text (`sealed_into`) and `export_document` puts it there (`seal.sealed_json`)."""

    exact = True
    sealed: list | None = None


def _order_chunks(
    tx, ids: list[int] | None, tz: tzinfo, summary: ExportSummary | None = None, *, sealing=None, with_evidence: bool = False,
) -> Iterator[_Chunk]:
    """The orders' documents, by id, EXPORT_CHUNK at a time (`chunk_rows`, then `documents_of`);
    with `with_evidence`, each order's evidence files too."""
    for rows, event_rows, note_rows, sealed in chunk_rows(tx, ids, summary, sealing=sealing):
        documents = documents_of(rows, event_rows, note_rows, sealed, tz)
        if with_evidence:  # a step of its own, after "notifications": the encoder does not know of it
            yield from _with_evidence(tx, documents)
        else:
            yield documents


def chunk_rows(
    tx, ids: list[int] | None, summary: ExportSummary | None = None, *, sealing=None, size: int | None = None,
) -> Iterator[tuple[list[tuple], list[tuple], list[tuple], dict | None]]:
    """What the documents of the orders are made of, by id, `size` (EXPORT_CHUNK) orders at a time:
    (order rows, their event rows, their notification rows, {order id: "sealed" part as
    `seal.ExportSeal.sealed_of_rows` gives it} or None when the database is not sealed). The
    orders by their key (a walk of the primary key for every order), their events and
    notifications by order id, the rows read straight from the database
    driver on the export's own connection (SQLAlchemy's statement and row machinery cost more than
    the rows themselves at a million orders). Plain tuples, dicts and lists: `exporthelper` hands
    them to another process as they are."""
    reader = _RowReader(tx)
    after, position = 0, 0
    while True:
        size_now = size or EXPORT_CHUNK
        if ids is None:
            rows = reader.orders_after(after, size_now)
        else:
            rows = reader.orders_in(ids[position : position + size_now])
            position += size_now
        if not rows:
            return
        chunk = [row[0] for row in rows]
        event_rows, note_rows = reader.events_of(chunk, log_index=sealing is not None), reader.notifications_of(chunk)
        if summary is not None:
            summary.ids.extend(chunk)
            summary.events += len(event_rows)
            summary.notifications += len(note_rows)
        sealed = sealing.sealed_of_rows(event_rows) if sealing is not None else None
        yield rows, event_rows, note_rows, sealed
        after = chunk[-1]


def documents_of(rows: list[tuple], event_rows: list[tuple], note_rows: list[tuple], sealed, tz: tzinfo) -> _Chunk:
    """The documents of a chunk of orders from its rows (`chunk_rows`): each order's JSON, its
    events turned into their JSON without an `Event` in between, its notifications, and for the
    orders in `sealed` (their "sealed" parts by order id, or only those ids: a set), SEALED_HOLE as
    their last member; when `sealed` holds the parts, they are kept beside the documents
    (`_Chunk.sealed`)."""
    events: dict[int, list] = {row[0]: [] for row in rows}
    notes: dict[int, list] = {row[0]: [] for row in rows}
    documents = _Chunk()
    exact = not _holds_floats(rows, event_rows, note_rows)
    _NON_FINITE[0] = False
    for row in event_rows:
        found = events.get(row[0])
        if found is not None:
            found.append(row)
    for row in note_rows:
        found = notes.get(row[0])
        if found is not None:
            found.append(row)
    when = _Instants(tz)  # an order's instants repeat (created_at is its first event's and its first notifications' `at`)
    data = _Data()  # and so do the data of events ("{}", the same policy and terms)
    for row in rows:
        order = order_from_row(row)
        document = _order_document(order, [_event_json(e, when, data) for e in events[order.id]], notes[order.id], when)
        if sealed and order.id in sealed:
            document["sealed"] = SEALED_HOLE
        documents.append(document)
    documents.exact = exact and not _NON_FINITE[0]
    if isinstance(sealed, dict) and sealed:
        documents.sealed = [sealed.get(row[0]) for row in rows]
    return documents


class _RowReader:
    """Plain row tuples of the export's tables through the DB-API connection under `tx.conn`
    (the same connection, so the same read transaction): ORDER_COLUMNS, events (order_id, seq,
    kind, at, actor, operator, data, prev_hash, hash) by (order_id, seq), notifications (order_id,
    recipient, channel, kind, at, text, sent_at) by id."""

    _EVENTS = "SELECT order_id, seq, kind, at, actor, operator, data, prev_hash, hash"  # then FROM events (`events_of`)
    _NOTES = "SELECT order_id, recipient, channel, kind, at, text, sent_at FROM notifications"

    def __init__(self, tx):
        self.conn = tx.conn

    def _rows(self, sql: str, params) -> list[tuple]:
        return driver_rows(self.conn, sql, params)

    def orders_after(self, after: int, limit: int) -> list[tuple]:
        sql = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE id > ? AND status != '' ORDER BY id LIMIT ?"
        return self._rows(sql, (after, limit))

    def orders_in(self, ids: list[int]) -> list[tuple]:
        found = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            sql = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE id IN ({', '.join('?' * len(part))}) AND status != '' ORDER BY id"
            found.extend(self._rows(sql, part))
        return sorted(found, key=lambda row: row[0])

    def _of(self, base: str, ids: list[int], order: str) -> list[tuple]:
        """The rows of these orders (sorted ids): by range when they are all the ids in it (export
        --all walks the key), else by IN (…), 500 at a time."""
        if ids[-1] - ids[0] + 1 == len(ids):
            return self._rows(f"{base} WHERE order_id >= ? AND order_id <= ? ORDER BY {order}", (ids[0], ids[-1]))
        found = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            found.extend(self._rows(f"{base} WHERE order_id IN ({', '.join('?' * len(part))}) ORDER BY {order}", part))
        return found

    def events_of(self, ids: list[int], *, log_index: bool = False) -> list[tuple]:
        """With `log_index`, each row ends with the event's place in the sealed log (or None):
        what a sealed export's "sealed" parts are made of (`seal.ExportSeal.sealed_of_rows`)."""
        return self._of(self._EVENTS + (", log_index FROM events" if log_index else " FROM events"), ids, "order_id, seq")

    def notifications_of(self, ids: list[int]) -> list[tuple]:
        return self._of(self._NOTES, ids, "id")


def _holds_floats(*tables: list[tuple]) -> bool:
    """Whether any column of these rows came back as a float (a value written outside coopctl)."""
    return any(float in set(map(type, chain.from_iterable(rows))) for rows in tables)


def _event_data(text):
    """An event's data (as `store.event_from_row` reads it): text that is not JSON is kept as is."""
    try:
        return _DATA(text)
    except (TypeError, ValueError, RecursionError):
        return text


_NON_FINITE = [False]  # set when an event's data held NaN or Infinity (see _Chunk.exact)


def _noted_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _NON_FINITE[0] = True
    return value


def _noted_constant(text: str) -> float:
    _NON_FINITE[0] = True
    return float(text)


_DATA = json.JSONDecoder(parse_float=_noted_float, parse_constant=_noted_constant).decode


class _Instants(dict):
    """iso(instant, tz), each instant written once per chunk."""

    def __init__(self, tz: tzinfo):
        super().__init__()
        self.tz = tz

    def __missing__(self, instant: int) -> str:
        text = self[instant] = iso(instant, self.tz) if self.tz else iso(instant)
        return text


class _Data(dict):
    """An event's data from its stored text (`_event_data`), each text decoded once per chunk: the
    documents then share one (never modified) object for equal texts."""

    def __missing__(self, text):
        value = _event_data(text)
        if isinstance(text, str):  # (a NULL or a non-text value written outside coopctl: not kept)
            self[text] = value
        return value


def _event_json(row: tuple, when: _Instants, data: _Data) -> dict:
    """`Event.to_json(tz)` of an event row (of a sealed export: with its log_index after the hash)."""
    seq, kind, at, actor, operator, text, prev_hash, digest = row[1:9]
    return {
        "seq": seq,
        "kind": kind,
        "at": when[at],
        "actor": actor,
        "operator": operator,
        "data": data[text],
        "prev_hash": prev_hash,
        "hash": digest,
    }


EVIDENCE_PIECE = 32 * 1024 * 1024  # base64 characters of evidence held at once while exporting (then written)


class _NamedData(NamedTuple):
    """What `evidence.named_by` reads of an event: its data (here, of its JSON in the document)."""

    data: object


def _with_evidence(tx, documents: "_Chunk") -> Iterator["_Chunk"]:
    """`export --with-evidence` (SPEC section 2): each order's "evidence" (after "notifications",
    before "sealed"), the files its events name that this database holds, with their contents in
    base64 (`evidence.embedded`). The documents come out in pieces holding about EVIDENCE_PIECE
    of contents, each written before the next is read, so that memory stays bounded by one order's
    files, not by a chunk's (the text written is the same: pieces are joined as chunks are)."""
    from coopctl.evidence import embedded

    def begun() -> _Chunk:
        piece = _Chunk()
        piece.exact, piece.sealed = documents.exact, [] if documents.sealed is not None else None
        return piece

    piece, held = begun(), 0
    for i, document in enumerate(documents):  # copies: the chunk's own list does not keep the contents alive
        shaped = {**document, "evidence": embedded(tx, [_NamedData(e["data"]) for e in document["events"]])}
        if "sealed" in shaped:  # the last member, after "evidence"
            shaped["sealed"] = shaped.pop("sealed")
        piece.append(shaped)
        if piece.sealed is not None:
            piece.sealed.append(documents.sealed[i])
        held += sum(len(e["content_base64"]) for e in shaped["evidence"])
        if held >= EVIDENCE_PIECE:
            yield piece
            piece, held = begun(), 0
    if piece:
        yield piece


_NESTED = (b'{\n  "orders": [', b"\n  ]\n}")  # around the orders of a chunk dumped as the document nests them
# A sealed order's "sealed" member while its document is encoded (`documents_of`): a stand-in that
# both encoders write as _HOLE_TEXT, the last member of an order's document at its depth (a string
# never holds a raw newline, so these bytes are a member named "sealed" of an order, which only
# coopctl writes), found by one fast search and replaced by the part (`sealed_into`).
SEALED_HOLE = "\x00"
_HOLE_TEXT = b'\n      "sealed": "\\u0000"'
_HOLE_BACKSLASH = _HOLE_TEXT.index(b"\\")  # where the stand-in's only backslash is in it


def chunk_text(documents: list[dict]) -> bytes:
    """The UTF-8 text of these orders (not empty) as the document holds them: each dumped at the
    depth where the document nests its orders, so that it is indented exactly as one dumps of the
    whole would indent it, without the comma that joins it to the orders before it. Encoded by
    `jsontext.indented` (the same bytes, from a C encoder); their "sealed" parts (`_Chunk.sealed`)
    written into it by `sealed_into`."""
    from coopctl.jsontext import indented

    text = indented({"orders": documents}, exact=getattr(documents, "exact", True))
    opening, closing = _NESTED
    assert text.startswith(opening) and text.endswith(closing)
    parts = getattr(documents, "sealed", None)
    return sealed_into(text[len(opening) : -len(closing)], [part for part in parts if part is not None] if parts else None)


def sealed_into(text: bytes, parts: list[bytes] | None) -> bytes:
    """The text of a chunk of orders (`chunk_text`'s) whose sealed orders hold SEALED_HOLE as their
    "sealed" member, with the "sealed" parts of those orders in turn (their text, as
    `seal.ExportSeal.sealed_of_rows` makes it: the bytes `jsontext.indented` writes for
    `seal.sealed_json(part)` there, tests/test_export_bytes.py) written in its place, without a
    dict or a list of hashes in between (a sealed export writes a million of them). The holes are
    found by their one backslash, the rarest byte of an export's text (a byte search, `memchr`,
    where a search for the whole stand-in stops at every quote)."""
    return b"".join(sealed_segments(text, parts)) if parts else text


def sealed_segments(text: bytes, parts: list[bytes]) -> list:
    """`sealed_into(text, parts)` as the list of buffers it joins: the text between the holes (views
    of `text`, not copies) and the parts in turn. A file's writer takes them as they are
    (`_SyncedAsWritten.write_segments`), so a sealed piece is not copied into one buffer first."""
    find, starts, back, width = text.find, text.startswith, _HOLE_BACKSLASH, len(_HOLE_TEXT)
    segments, at, view, k = [], 0, memoryview(text), 0
    append = segments.append
    i = find(b"\\", back)
    while i >= 0:
        hole = i - back
        if starts(_HOLE_TEXT, hole):
            append(view[at:hole])
            append(parts[k])
            k += 1
            at = hole + width
            i = find(b"\\", at + back)
        else:
            i = find(b"\\", i + 1)
    assert k == len(parts)
    segments.append(view[at:])
    return segments


def texts_of(chunks: Iterable[list[dict]]) -> Iterator[tuple[int, bytes]]:
    """(number of orders, `chunk_text`) of each chunk of documents that is not empty."""
    for documents in chunks:
        if documents:
            yield len(documents), chunk_text(documents)


def _write_document(handle: TextIO, header: dict, texts: Iterable[tuple[int, bytes]], progress: Callable[[int], None] | None) -> None:
    """The text of `dumps({**header, "orders": [...]})`, written a chunk of orders at a time: the
    header, then each chunk's text (`chunk_text`: (number of orders, text) from `texts`, joined by
    commas; a text may come as the list of buffers that make it), then the closing. Written as
    UTF-8 bytes to the stream's buffer when it has one and writes UTF-8 (a list of buffers straight
    to an `atomic_file`'s file, `_segments_writer`); through the text layer otherwise."""
    from coopctl.printer import utf8_bytes_writer

    head = dumps({**header, "orders": []})
    assert head.endswith("[]\n}\n")
    # a stream that cannot take UTF-8 (PYTHONIOENCODING=ascii) escapes the text with its own encoder;
    # a text stream without bytes (StringIO) takes the text
    raw = utf8_bytes_writer(handle)
    write = raw if raw is not None else lambda data: handle.write(data.decode("utf-8"))
    segments_to = _segments_writer(handle) if raw is not None else None
    write(head[: -len("]\n}\n")].encode("utf-8"))
    written = 0
    for count, text in texts:
        if written:
            write(b",")  # a write of its own: the piece's text is not copied to put a comma before it
        if type(text) is list:  # a sealed piece's segments (`sealed_segments`)
            if segments_to is not None:
                segments_to(text)
            else:
                write(b"".join(text))
        else:
            write(text)
        written += count
        if progress is not None:
            progress(count)
    write(b"]\n}\n" if written == 0 else b"\n  ]\n}\n")
    if raw is not None:
        handle.buffer.flush()


def _segments_writer(handle) -> Callable[[list], None] | None:
    """A writer of a list of buffers straight to `atomic_file`'s temporary file (after flushing what
    the text layer and its buffer hold), or None for any other stream (which is given them joined)."""
    file = getattr(getattr(handle, "buffer", None), "raw", None)
    if not isinstance(file, _SyncedAsWritten) or not hasattr(os, "writev"):
        return None

    def write(segments: list) -> None:
        handle.flush()
        file.write_segments(segments)

    return write


def _order_document(order: Order, events: list[dict], notes: list, when: _Instants) -> dict:
    """An order's document: `events` are already JSON (`Event.to_json`), `notes` notification rows
    (order_id, recipient, channel, kind, at, text, sent_at), `when` the instants in the export's zone."""
    return {
        **order.to_json(when.tz),
        "reminders_sent": sorted(order.reminders_sent),
        "events": events,
        "notifications": [
            {
                "order": order_id,
                "recipient": recipient,
                "channel": channel,
                "kind": kind,
                "at": when[at],
                "text": text,
                "sent_at": None if sent_at is None else when[sent_at],
            }
            for order_id, recipient, channel, kind, at, text, sent_at in notes
        ],
    }


def dumps(document: dict) -> str:
    """The file's text: stable key order (that of `to_json`), UTF-8 as is, two-space indent;
    control and format characters (from ids stored before SPEC section 1's rules) as `\\u` escapes,
    so that an export on a terminal shows them as text (the same JSON value)."""
    return json_escaped(json.dumps(document, ensure_ascii=False, indent=2)) + "\n"


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write the whole file or nothing (see `atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(text)


_TEMPORARY = ".coopctl-tmp-"  # `.NAME.coopctl-tmp-PID-RANDOM`: a temporary file of `atomic_file`


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file that only its owner may read (mode 0600, whatever the umask), written whole or
    not at all: a temporary file beside it, flushed and synced, renamed over it when the block
    ends normally, removed when it does not. Through a symlink the file it points to is replaced
    (the link stays). A target that exists and is not a regular file (a FIFO, a device such as
    /dev/null, /dev/stdout or anything else reached through /proc) is written in place and never
    replaced. Temporaries that an earlier, killed export to the same file left behind are removed."""
    given = str(path)
    if os.path.isdir(given):
        raise InvalidInput(f"--out {given!r} is a directory; give a file name")
    if _in_place(given):
        yield from _written_in_place(given)
        return
    target = Path(os.path.realpath(given))  # a symlink's own target: the link itself stays
    folder = target.parent
    _remove_stale_temporaries(folder, target.name)
    temporary = folder / f".{target.name}{_TEMPORARY}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # before any data; the umask cannot widen 0600, but may narrow it
    except OSError as exc:
        raise InvalidInput(f"cannot write {given!r}: {exc.strerror}") from None
    try:
        with io.TextIOWrapper(io.BufferedWriter(_SyncedAsWritten(fd)), encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _sync_folder(folder)
    except OSError as exc:  # writing it (a full disk), syncing or renaming it
        temporary.unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {given!r}: {exc.strerror}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


SYNC_STEP = 128 << 20  # bytes of a large --out file synced and dropped from the page cache at a time
_CAN_DROP = hasattr(os, "posix_fadvise") and hasattr(os, "fdatasync")  # not on macOS: a plain file there
try:  # buffers per os.writev: the system's limit (-1 where it has none to say), at least POSIX's 16
    _IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16


class _SyncedAsWritten(io.FileIO):
    """An `atomic_file`'s temporary file, written as it is synced: each time SYNC_STEP more bytes
    were written, a thread syncs the file (`fdatasync`) and drops from the page cache the part
    written a step before (POSIX_FADV_DONTNEED), while the writer goes on; the last step stays for
    the final fsync. A 5 GB export then does not fill the page cache with its own pages (evicting
    the database's), and the kernel reuses the pages it dropped instead of finding new ones: on
    this machine writing 3.85 GB took 4.3-10.6 s of system time page-cached against 1.3-1.6 s so,
    and the final fsync has one step left to wait for, not the whole file. Where the OS has no
    `posix_fadvise`, this is a plain file. A failed sync here is left to the final fsync, which
    meets the same error and refuses."""

    def __init__(self, fd: int):
        super().__init__(fd, "w", closefd=True)
        self._written = 0
        self._dropped = 0  # the file's first bytes synced and dropped
        self._syncing = None  # the thread at work, if one is

    def write(self, data) -> int:
        count = super().write(data)
        if count:
            self._wrote(count)
        return count

    def write_segments(self, segments: list) -> None:
        """Write these buffers whole, in order, through `os.writev` (_IOV_MAX at a time), without
        joining them first."""
        fd, pending = self.fileno(), segments
        while pending:
            batch = pending[:_IOV_MAX] if len(pending) > _IOV_MAX else pending
            count = os.writev(fd, batch)
            self._wrote(count)
            if count == sum(map(len, batch)):  # nearly always: the whole batch
                pending = pending[len(batch):]
                continue
            batch = list(batch)
            done = 0
            while done < len(batch) and count >= len(batch[done]):  # whole buffers written
                count -= len(batch[done])
                done += 1
            if done < len(batch) and count:  # one written in part: the rest of it is next
                batch[done] = memoryview(batch[done])[count:]
            pending = batch[done:] + pending[len(batch):]

    def _wrote(self, count: int) -> None:
        self._written += count
        if _CAN_DROP and self._written - self._dropped >= 2 * SYNC_STEP and self._syncing is None:
            self._sync(self._written - SYNC_STEP)

    def _sync(self, upto: int) -> None:
        import threading

        first, fd = self._dropped, self.fileno()

        def sync() -> None:
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, first, upto - first, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # the final fsync meets it again, and refuses then
            finally:
                self._dropped, self._syncing = upto, None

        self._syncing = threading.Thread(target=sync, name="coopctl-sync", daemon=True)
        self._syncing.start()

    def close(self) -> None:
        syncing = self._syncing
        if syncing is not None:  # before the descriptor is closed (and its number reused)
            syncing.join()
        super().close()


def _in_place(path: str) -> bool:
    """True for a target that must be written in place: it exists and is not a regular file, or
    it is reached through /proc (/dev/stdout, /dev/fd/1: replacing those would replace a link)."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        return _through_proc(path)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path!r}: {exc.strerror}") from None
    return not stat.S_ISREG(mode) or _through_proc(path)


def _through_proc(path: str) -> bool:
    """Whether resolving `path`, link by link, passes through /proc."""
    current = os.path.abspath(path)
    for _ in range(40):
        folder = os.path.realpath(os.path.dirname(current))
        if folder == "/proc" or folder.startswith("/proc/"):
            return True
        current = os.path.join(folder, os.path.basename(current))
        if not os.path.islink(current):
            return False
        current = os.path.join(folder, os.readlink(current))
    return True  # a loop of links: never replace it


def _written_in_place(path: str) -> Iterator[TextIO]:
    """Write into the target itself. When it is this process's own stdout (`--out /dev/stdout`
    with stdout on a file), the document goes through stdout, so that what the command prints
    after it follows it instead of overwriting its start (a second file description would have
    its own offset)."""
    own = _own_stdout(path)
    if own is not None:
        sys.stdout.flush()
        handle = io.TextIOWrapper(own, encoding="utf-8", newline="\n", write_through=True)
        try:
            yield handle
            handle.flush()
        finally:
            handle.detach()
        return
    try:
        handle = open(path, "w", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path!r}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
            handle.flush()
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise InvalidInput(f"cannot write {path!r}: {exc.strerror}") from None


def _own_stdout(path: str):
    """sys.stdout's binary buffer when `path` is the very file stdout writes to, else None."""
    try:
        target = os.stat(path)
        mine = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    if (target.st_dev, target.st_ino) != (mine.st_dev, mine.st_ino):
        return None
    return getattr(sys.stdout, "buffer", None)


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Remove the temporaries of exports to `name` whose process is gone (killed mid-export)."""
    pattern = re.compile(re.escape(f".{name}{_TEMPORARY}") + r"(\d+)-[0-9a-f]+")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found is None or int(found.group(1)) == os.getpid() or _alive(int(found.group(1))):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or no such pid at all: kept, to be safe)
    return True


def _sync_folder(folder: Path) -> None:
    """The rename is durable once the folder is synced (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading a file


def parse_document(raw: bytes | str | BinaryIO, *, source: str = "the file") -> ExportFile:
    """Read and type-check a whole export (its text, or a binary stream to read it from) into
    memory, through the same streaming reader as `import` and `replay` (`coopctl.streaming`);
    anything malformed is InvalidInput naming the order and field. For small files and tests:
    the commands stream (`read_stream`)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if isinstance(raw, bytes):
        raw = io.BytesIO(raw)
    return collect(open_export(raw, source, want_seal=True))


def collect(stream) -> ExportFile:
    """Every order of an export stream, held: an `ExportFile`."""
    orders = list(stream.orders())
    return ExportFile(stream.exported_at, orders, stream.seal)


def load(path: str | os.PathLike) -> ExportFile:
    """Parse a whole export file into memory (`parse_document`)."""
    stream = open_path(str(path), want_seal=True)
    with stream.scanned.raw:
        return collect(stream)


def _kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "text", bool: "true/false", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    return "a number"


def _get(obj: dict, key: str, where: str):
    if key not in obj:
        raise InvalidInput(f"{where}: the field {key!r} is missing")
    return obj[key]


def _text(obj: dict, key: str, where: str, *, nullable: bool = False) -> str | None:
    value = _get(obj, key, where)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: {key!r} must be text{' or null' if nullable else ''}, got {_kind(value)}")
    return value


def _integer(obj: dict, key: str, where: str, *, low: int = 0, high: int = MAX_ORDER_ID) -> int:
    value = _get(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{where}: {key!r} must be a whole number, got {_kind(value)}")
    if not low <= value <= high:
        raise InvalidInput(f"{where}: {key!r} must be from {low} to {high}, got {value}")
    return value


def _instant(obj: dict, key: str, where: str, *, nullable: bool = False) -> int | None:
    value = _get(obj, key, where)
    if value is None and nullable:
        return None
    try:
        return _utc_instant(value)
    except InvalidValue as exc:
        raise InvalidInput(f"{where}: {key!r}: {exc}") from None


# An instant of a file (without an offset: UTC), each distinct text read once: an order's instants
# repeat (its created_at is also its first event's, its first notifications' and its last_event_at).
_utc_instant = TextCache(lambda text: parse_instant(text, timezone.utc), size=4096)

# The microseconds behind each instant of the order JSON (`_difference`).
_INSTANT_OF = {key: attrgetter(key) for key in _INSTANTS - {"latest_start_at"}}
_INSTANT_OF["latest_start_at"] = attrgetter("terms.latest_start_at")


def _normal(key: str, value):
    """A field's value in a form that compares by meaning: instants as instants, decimals as numbers."""
    if value is None:
        return None
    if key in _INSTANTS:
        return _utc_instant(value)
    if key in _DECIMALS:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidValue(f"expected a decimal, got {_kind(value)}")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise InvalidValue(f"expected a decimal such as '12.5', got {value!r}") from None
        if not number.is_finite():
            raise InvalidValue(f"expected a decimal such as '12.5', got {value!r}")
        return number
    if key == "ruling":
        if not isinstance(value, dict):
            return value
        return {
            **value,
            "at": _normal("created_at", value.get("at")),
            "amount": None if value.get("amount") is None else _normal("ad_budget", value["amount"]),
        }
    if key == "policy":
        return Policy.from_json(value)  # (each distinct value read once: `memo`)
    if key == "reminders":
        return ReminderOffsets.from_json(value)
    return value


def _parse_order(item, where: str) -> ExportedOrder:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object, got {_kind(item)}")
    order_id = _integer(item, "id", where, low=1)
    where = f"{where.rsplit(':', 1)[0]}: order {order_id}"
    for key in REQUIRED_FIELDS:
        _get(item, key, where)
    for key in ("merchant", "creator"):
        _checked(check_id, _text(item, key, where), where, key)
    for key in _TEXT:
        _checked(check_text, _text(item, key, where), where, key)
    for key in _TEXT_OR_NULL:
        if key in item:
            _checked(check_text, _text(item, key, where, nullable=True), where, key)
    if item["merchant"] == item["creator"]:
        raise InvalidInput(f"{where}: the merchant and the creator are the same id; an order is made between two parties")
    if item.get("idempotency_key") is not None:
        _checked(check_id, item["idempotency_key"], where, "idempotency_key")
    products = item["products"]
    if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
        raise InvalidInput(f"{where}: 'products' must be an array of text")
    if len(products) > MAX_PRODUCTS:
        raise InvalidInput(f"{where}: 'products' lists {len(products)} products; at most {MAX_PRODUCTS} are allowed")
    for position, product in enumerate(products):
        _checked(check_id, product, where, f"products[{position}]")
    _integer(item, "failed_reviews", where, high=10_000)
    for key in ("extensions", "appeals"):  # schema 4 (issue 12); an older export has neither
        if key in item:
            _integer(item, key, where, high=10_000)
    if item.get("ruling") is not None:
        _check_ruling(item["ruling"], where)
    if "reminders" in item and not isinstance(item["reminders"], dict):
        raise InvalidInput(f"{where}: 'reminders' must be an object, got {_kind(item['reminders'])}")
    if not isinstance(item["policy"], dict):
        raise InvalidInput(f"{where}: 'policy' must be an object, got {_kind(item['policy'])}")
    for key in (*_INSTANTS, *_DECIMALS, "policy", "reminders"):
        if key not in item:
            continue
        if item[key] is None and key not in {"deadline", "went_live_at", "delivered_at", "proposed_latest_start_at"}:
            raise InvalidInput(f"{where}: {key!r} must not be null")
        try:
            _normal(key, item[key])
        except InvalidValue as exc:
            raise InvalidInput(f"{where}: {key!r}: {exc}") from None
    sent = _get(item, "reminders_sent", where)
    if not isinstance(sent, list) or not all(isinstance(k, str) and _REMINDER_KEY.fullmatch(k) for k in sent):
        raise InvalidInput(f"{where}: 'reminders_sent' must be an array of reminder keys such as 'accept@1764547200000000'")
    events_raw = _get(item, "events", where)
    if not isinstance(events_raw, list):
        raise InvalidInput(f"{where}: 'events' must be an array, got {_kind(events_raw)}")
    events = [_parse_event(order_id, e, f"{where}, events[{i}]") for i, e in enumerate(events_raw)]
    notes_raw = _get(item, "notifications", where)
    if not isinstance(notes_raw, list):
        raise InvalidInput(f"{where}: 'notifications' must be an array, got {_kind(notes_raw)}")
    notes = [_parse_notification(order_id, n, f"{where}, notifications[{i}]") for i, n in enumerate(notes_raw)]
    sealed = None
    if "sealed" in item:  # SPEC section 6: shape checked here, the proof by `verify`
        from coopctl.seal import sealed_from_json

        sealed = sealed_from_json(item.pop("sealed"), where)
    evidence = _parse_evidence(item, where)
    del item["events"], item["notifications"]  # parsed above: the file's copies need not stay in memory
    return ExportedOrder(order_id, item, events, notes, frozenset(sent), sealed, evidence)


def _parse_evidence(item: dict, where: str) -> tuple:
    """`export --with-evidence`'s "evidence" (absent: none), shape checked and taken out of the
    order's fields; the contents are checked against the events by the replay (`_evidence_compared`)."""
    if "evidence" not in item:
        return ()
    from coopctl.evidence import parse_embedded

    return parse_embedded(item.pop("evidence"), where)


def _parse_event(order_id: int, item, where: str) -> Event:
    """An event, every value checked as the same value typed would be: its kind one the rules
    write, its actor `system`, `platform` or a party with a valid id, its operator as `--operator`
    is checked, every text in its data as a note or reason is (ids in a created event's terms and
    its idempotency key as ids)."""
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object, got {_kind(item)}")
    data = _get(item, "data", where)
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: 'data' must be an object, got {_kind(data)}")
    kind = _text(item, "kind", where)
    if kind not in EVENT_KINDS:
        raise InvalidInput(f"{where}: 'kind' {_quoted(kind)} is not an event kind of coopctl")
    actor = _text(item, "actor", where)
    _check_actor(actor, where, "actor", ("system", "platform"))
    _checked(check_operator, _text(item, "operator", where), where, "operator")
    _check_data(data, where, "data")
    if kind == Kind.CREATED:
        _check_created(data, where)
    for key in ("prev_hash", "hash"):
        if not _HASH.fullmatch(_text(item, key, where)):
            raise InvalidInput(f"{where}: {key!r} must be a SHA-256 in 64 lowercase hex digits")
    return Event(
        order_id=order_id,
        seq=_integer(item, "seq", where, low=1),
        kind=kind,
        at=_instant(item, "at", where),
        actor=actor,
        operator=item["operator"],
        data=data,
        prev_hash=item["prev_hash"],
        hash=item["hash"],
    )


def _parse_notification(order_id: int, item, where: str) -> dict:
    """A notification, checked as the rules would write one: recipient `merchant:ID`,
    `creator:ID` (a valid id) or `platform`, channel `inbox` or `sms`, a notification kind, a text
    without control or format characters (newlines and tabs apart), instants in range. The
    delivery fields of section 5 (`id`, `state`, `attempts`, `next_attempt_at`, `last_error`),
    when present, are type-checked and not compared."""
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object, got {_kind(item)}")
    owner = _integer(item, "order", where, low=1)
    if owner != order_id:
        raise InvalidInput(f"{where}: it belongs to order {owner}, not to order {order_id}")
    recipient = _text(item, "recipient", where)
    _check_actor(recipient, where, "recipient", ("platform",))
    channel = _text(item, "channel", where)
    if channel not in CHANNELS:
        raise InvalidInput(f"{where}: 'channel' {_quoted(channel)} is not 'inbox' or 'sms'")
    kind = _text(item, "kind", where)
    if kind not in NOTIFICATION_KINDS:
        raise InvalidInput(f"{where}: 'kind' {_quoted(kind)} is not a notification kind of coopctl")
    text = _text(item, "text", where)
    _checked(lambda v, w: check_text(v, w, limit=MAX_NOTIFICATION_TEXT, nullable=False), text, where, "text")
    if "id" in item:
        _integer(item, "id", where, low=1)
    if "state" in item and item["state"] not in NOTIFICATION_STATES:
        raise InvalidInput(f"{where}: 'state' must be one of {', '.join(NOTIFICATION_STATES)}")
    if "attempts" in item:
        _integer(item, "attempts", where, high=10_000)
    if "next_attempt_at" in item:
        _instant(item, "next_attempt_at", where, nullable=True)
    if "last_error" in item:
        _checked(check_text, _text(item, "last_error", where, nullable=True), where, "last_error")
    sent_at = _instant(item, "sent_at", where, nullable=True)
    return {
        "order_id": order_id,
        "recipient": recipient,
        "channel": channel,
        "kind": kind,
        "at": _instant(item, "at", where),
        "text": text,
        "sent_at": sent_at,
        # SPEC section 5: what was sent stays sent; everything else is delivered from here, afresh
        "state": "pending" if sent_at is None else "sent",
    }


def _checked(check: Callable, value, where: str, key: str):
    """`check(value, what)` from `coopctl.trust`, its refusal naming where in the file."""
    if value is None:
        return None
    try:
        return check(value, key)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def _quoted(value: str) -> str:
    return repr(shown(value[:40] + ("…" if len(value) > 40 else "")))


def _check_actor(value: str, where: str, key: str, plain: tuple[str, ...]) -> None:
    """`merchant:ID` or `creator:ID` with a valid id, or one of `plain`."""
    if value in plain:
        return
    party, colon, party_id = value.partition(":")
    if not colon or party not in (Party.MERCHANT, Party.CREATOR):
        names = " or ".join([*(repr(p) for p in plain), "'merchant:ID'", "'creator:ID'"])
        raise InvalidInput(f"{where}: {key!r} {_quoted(value)} must be {names}")
    _checked(check_id, party_id, where, f"{key} {party}")


def _check_ruling(value, where: str) -> None:
    """An order's `ruling`: {"liable", "amount", "reason", "at", "final"}, each as the rules write it."""
    if not isinstance(value, dict) or set(value) != set(_RULING_KEYS):
        raise InvalidInput(f"{where}: 'ruling' must be null or an object with exactly {', '.join(_RULING_KEYS)}")
    if value["liable"] not in (None, "merchant", "creator"):
        raise InvalidInput(f"{where}: 'ruling.liable' must be 'merchant', 'creator' or null")
    if not isinstance(value["reason"], str) or not isinstance(value["final"], bool):
        raise InvalidInput(f"{where}: 'ruling.reason' must be text and 'ruling.final' true or false")
    _checked(check_text, value["reason"], where, "ruling.reason")
    for key, kind in (("at", "created_at"), ("amount", "ad_budget")):
        if value[key] is None and key == "amount":
            continue
        try:
            _normal(kind, value[key])
        except (InvalidValue, TypeError):
            raise InvalidInput(f"{where}: 'ruling.{key}' must be {'an instant' if key == 'at' else 'a decimal or null'}") from None


def _check_data(value, where: str, path: str) -> None:
    """Every text in an event's data (keys too), as a note or a reason is checked; numbers as
    `json.loads` read them (`streaming.plain_numbers`: a Decimal from the streaming parser becomes
    the float json made, absurd ones are refused), in place."""
    if isinstance(value, str):
        if not (value.isprintable() and len(value) <= MAX_TEXT_LENGTH):  # the common case, at C speed
            _checked(check_text, value, where, path)
    elif isinstance(value, dict):
        for key, inner in value.items():
            if not (isinstance(key, str) and key.isprintable() and len(key) <= MAX_TEXT_LENGTH):
                _checked(check_text, key, where, f"{path} key")
            kind = type(inner)
            if kind is str:  # (as the call below would check it, without the call)
                if not (inner.isprintable() and len(inner) <= MAX_TEXT_LENGTH):
                    _checked(check_text, inner, where, f"{path}.{key}")
            elif kind is Decimal or kind is int:
                value[key] = _plain(inner, where, f"{path}.{key}")
            elif not isinstance(inner, (int, float, type(None))):
                _check_data(inner, where, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            kind = type(inner)
            if kind is Decimal or kind is int:
                value[index] = _plain(inner, where, f"{path}[{index}]")
            else:
                _check_data(inner, where, f"{path}[{index}]")


def _check_created(data: dict, where: str) -> None:
    """The ids of a created event: the terms' merchant, creator and products, and the idempotency key."""
    terms = data.get("terms")
    if isinstance(terms, dict):
        for key in ("merchant", "creator"):
            if key in terms:
                _checked(check_id, terms[key], where, f"data.terms.{key}")
        if "merchant" in terms and terms.get("merchant") == terms.get("creator"):
            raise InvalidInput(f"{where}: the terms' merchant and creator are the same id; an order is made between two parties")
        products = terms.get("products")
        if isinstance(products, list):
            for position, product in enumerate(products):
                _checked(check_id, product, where, f"data.terms.products[{position}]")
    if data.get("idempotency_key") is not None:
        _checked(check_id, data["idempotency_key"], where, "data.idempotency_key")


# --------------------------------------------------------------------------- replay


REPLAY_CHUNK = 1000  # orders checked at once through the scratch database


def replay(export: ExportFile) -> list[Verdict]:
    """Check every order: hash chain, each event allowed at its instant, and the rebuilt order
    (stored in and read back from a scratch database) equal to the exported one."""
    return _replayed(export.orders, keep_steps=True)


def _replayed(orders: Iterable[ExportedOrder], *, keep_steps: bool, progress: Callable[[int], None] | None = None) -> list[Verdict]:
    """`replay_chunks`, every verdict in one list."""
    return [v for chunk in replay_chunks(orders, keep_steps=keep_steps, progress=progress) for v in chunk]


def replay_chunks(
    orders: Iterable[ExportedOrder], *, keep_steps: bool, progress: Callable[[int], None] | None = None,
    chunk: int | None = None,
) -> Iterator[list[Verdict]]:
    """The verdicts of `replay`, REPLAY_CHUNK orders at a time as they are read (any iterable: a
    stream's orders), through one scratch in-memory database that each chunk leaves empty; without
    `keep_steps` only the outcome of each order is kept (an import does not show timelines), so
    that memory follows one chunk, not the file."""
    from coopctl.store import Location, Store

    scratch = Store(Location.memory())
    try:
        scratch.initialise(made_by="replay")
        owners: dict[str, int] = {}
        source = iter(orders)
        while True:
            batch = list(islice(source, chunk or REPLAY_CHUNK))
            if not batch:
                return
            verdicts, _ = replay_part(scratch, batch, owners, keep_steps=keep_steps)
            del batch
            if progress is not None:
                progress(len(verdicts))
            yield verdicts
    finally:
        scratch.dispose()


def replay_part(scratch, batch: list[ExportedOrder], owners: dict[str, int], *, keep_steps: bool) -> tuple[list[Verdict], list]:
    """The verdicts of one chunk of orders (`replay_chunks`), through `scratch`, which it leaves
    empty, and the idempotency key of each order that rebuilt (None otherwise): `owners` holds the
    keys of earlier chunks (key -> order id) and gets those of this one."""
    rebuilt = [_rebuild(order) for order in batch]
    keys = [None if v.rebuilt is None else v.rebuilt.idempotency_key for v in rebuilt]
    part = _unique_keys(rebuilt, owners)
    stored = _through_scratch(scratch, [v for v in part if v.ok]) if any(v.ok for v in part) else {}
    verdicts: list[Verdict] = []
    for verdict in part:
        if verdict.ok:
            verdict = _compared(verdict, stored[verdict.order_id])
        if verdict.ok:
            verdict = _outbox_compared(verdict)
        if verdict.ok:
            verdict = _evidence_compared(verdict)
        verdicts.append(verdict if keep_steps else replace(verdict, steps=[]))
    return verdicts, keys


def duplicate_key(verdict: Verdict, key: str, owner: int) -> Verdict:
    """The verdict of an order whose idempotency key an earlier order of the file holds (`_unique_keys`)."""
    why = f"not allowed: idempotency key {key!r} already belongs to order {owner} of this file"
    return replace(verdict, steps=[], rebuilt=None, divergence=Divergence(1, why))


def _compared(verdict: Verdict, order: Order) -> Verdict:
    """The verdict once the rebuilt order came back from the database: diverging at the last event
    when it is not the order the file says."""
    why = _difference(order, verdict.exported.fields)
    if why is None:
        return replace(verdict, rebuilt=order)
    last = verdict.exported.events[-1]
    return replace(verdict, rebuilt=order, divergence=Divergence(last.seq, why))


def _rebuild(exported: ExportedOrder) -> Verdict:
    """The order rebuilt from its events (strictly: a file is new input). The rules make every
    event again, hash and prev_hash included, and each must equal the recorded one: a history
    that rebuilds has a sound chain, so `verify_chain` runs only when it does not, to name the
    first altered, removed or reordered event before what the rules say about it."""
    events = exported.events
    try:
        steps = rebuild(exported.id, events)
    except Divergence as divergence:
        try:
            verify_chain(exported.id, events)
        except Divergence as broken:
            divergence = broken
        return Verdict(exported, _prefix(exported.id, events, divergence.seq), None, divergence)
    end = steps[-1].order
    if end.reminders_sent != exported.reminders_sent:
        end = replace(end, reminders_sent=exported.reminders_sent)
    return Verdict(exported, steps, end)


def _outbox_compared(verdict: Verdict) -> Verdict:
    """The verdict once the order's notifications and `reminders_sent` were compared with what the
    rules wrote along its history (`history.check_outbox`): only then may an import queue them."""
    exported = verdict.exported
    notes = [Notification(n["order_id"], n["recipient"], n["channel"], n["kind"], n["at"], n["text"]) for n in exported.notifications]
    try:
        check_outbox(verdict.steps, notes, exported.reminders_sent)
    except Divergence as divergence:
        return replace(verdict, divergence=divergence)
    return verdict


def _evidence_compared(verdict: Verdict) -> Verdict:
    """The verdict once every embedded evidence file was checked against the record its event made
    of it (`evidence.check_embedded`: named by an event, its name and size, valid base64, its
    SHA-256): a divergence at that event's seq otherwise. The checked contents go with the verdict."""
    exported = verdict.exported
    if not exported.evidence:
        return verdict
    from coopctl.evidence import EvidenceMismatch, check_embedded

    try:
        held = check_embedded(exported.events, exported.evidence)
    except EvidenceMismatch as mismatch:
        return replace(verdict, divergence=Divergence(mismatch.seq, mismatch.why))
    return replace(verdict, evidence=tuple(held))


def _unique_keys(verdicts: list[Verdict], owner: dict[str, int]) -> list[Verdict]:
    """An idempotency key names one order: a second order created with it would have been the first
    one. `owner` (key -> order id) carries the keys of the file's earlier orders from chunk to chunk."""
    checked = []
    for v in verdicts:
        key = v.rebuilt.idempotency_key if v.rebuilt is not None else None
        if key is not None and key in owner:
            v = duplicate_key(v, key, owner[key])
        elif key is not None:
            owner[key] = v.order_id
        checked.append(v)
    return checked


def _prefix(order_id: int, events: list[Event], seq: int) -> list[Step]:
    """The steps before the divergence, for the timeline (none when even they cannot be rebuilt)."""
    try:
        return rebuild(order_id, events[: seq - 1]) if seq > 1 else []
    except Divergence:
        return []


class _Rollback(Exception):
    """Ends a scratch transaction without keeping what it wrote."""


def _through_scratch(scratch, verdicts: list[Verdict]) -> dict[int, Order]:
    """Save the rebuilt orders and their events in the scratch database and read them back, in a
    transaction that is then rolled back: the scratch database stays empty for the next chunk."""
    back: dict[int, Order] = {}
    try:
        with scratch.write() as tx:
            tx.insert_orders([v.rebuilt for v in verdicts])
            tx.insert_history([e for v in verdicts for e in v.exported.events], [])
            back = {order.id: order for order in tx.load_many([v.order_id for v in verdicts])}
            raise _Rollback
    except _Rollback:
        pass
    return back


def _difference(order: Order, exported: dict) -> str | None:
    """The first field of the order JSON where the rebuilt order and the export disagree. An
    instant the file writes in another offset than UTC (every export does) is compared as the
    instant it is, against the order's own microseconds: read once per distinct text
    (`_utc_instant`), not formatted and read back."""
    mine = order.to_json()
    for key, value in mine.items():
        if key not in exported:
            continue  # a field this export does not carry (the required ones were checked when reading)
        theirs = exported[key]
        if value == theirs:  # the same text or number (what the reading checks let through means the same then)
            continue
        if key in _INSTANTS and value is not None and type(theirs) is str:
            try:
                if _utc_instant(theirs) == _INSTANT_OF[key](order):
                    continue
            except InvalidValue:
                pass
        try:
            same = _normal(key, value) == _normal(key, theirs)
        except InvalidValue:
            same = False
        if not same:
            return f"outcome differs: the rules end with {key} {value!r}, the export says {theirs!r}"
    return None


# --------------------------------------------------------------------------- what if


def what_if(export: ExportFile, policy: Policy, verdicts: list[Verdict] | None = None) -> list[WhatIf]:
    """Replay each order's party actions under `policy`; informational, it never raises on a history."""
    verdicts = verdicts if verdicts is not None else replay(export)
    return [_what_if_one(v, policy, export.exported_at) for v in verdicts]


def _what_if_one(verdict: Verdict, policy: Policy, exported_at: int) -> WhatIf:
    events = verdict.exported.events
    until = max([exported_at, *(e.at for e in events)])
    result = WhatIf(verdict, policy, until)
    if verdict.rebuilt is not None and len(verdict.steps) == len(events):
        tail = fire_due(verdict.rebuilt, until, WHAT_IF_OPERATOR)
        result.recorded_steps = verdict.steps + (rebuild(verdict.order_id, events + tail.events)[len(events):] if tail.events else [])
    if not events or events[0].kind != Kind.CREATED:
        result.problem = "the history does not start with a created event"
        return result
    first = events[0]
    try:
        data = first.data
        terms = Terms.from_json(data.get("terms"))
        reminders = ReminderOffsets.from_json(data.get("reminders", {}))
        outcome = create(verdict.order_id, terms, policy, reminders, first.at, first.operator, data.get("idempotency_key"))
    except (CoopError, InvalidValue) as exc:
        result.problem = f"cannot create the order again: {exc}"
        return result
    order, produced = outcome.order, list(outcome.events)
    for e in events[1:]:
        if e.actor == SYSTEM:
            continue
        try:
            action, party, party_id, values = recorded_action(e)
        except ValueError as exc:
            result.refused.append((e, str(exc)))
            continue
        data = e.data if isinstance(e.data, dict) else {}
        try:
            step = act(
                order, action, party, party_id, e.at, e.operator,
                evidence_files=files_from_json(data.get(EVIDENCE_KEY)), **values,
            )
        except CoopError as exc:
            result.refused.append((e, str(exc)))
            continue
        order, produced = step.order, produced + step.events
    tail = fire_due(order, until, WHAT_IF_OPERATOR)
    try:
        result.steps = rebuild(verdict.order_id, produced + tail.events)  # the same rules give each step's state
    except Divergence as exc:  # pragma: no cover - the rules reproduce what they produced
        result.problem = f"the alternative history does not rebuild: {exc}"
    return result


# --------------------------------------------------------------------------- import


IMPORT_CHUNK = 1000  # orders written at once (with their events and notifications) by an import
NAMED = 5  # ids a refusal names before it counts the rest (an error line stays short)


def _named(ids: list[int]) -> str:
    """'1, 2, 3, 4, 5, … and 2,995 more' for a message: the first NAMED ids, then a count."""
    names = ", ".join(str(i) for i in ids[:NAMED])
    return names + (f", … and {len(ids) - NAMED:,} more" if len(ids) > NAMED else "")


@dataclass
class ImportSummary:
    """What an import wrote: the ids (compact), how many events and notifications, and the first
    IMPORT_SHOWN verdicts (for the table; a large import is summed up, not drawn row by row)."""

    database: str
    ids: array = field(default_factory=lambda: array("q"))
    events: int = 0
    notifications: int = 0
    shown: list[Verdict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


IMPORT_SHOWN = 50


def import_orders(
    svc, export, *, progress: Callable[[int], None] | None = None, report: Callable | None = None
) -> ImportSummary:
    """Load every order of an export (an `ExportFile`, or a `streaming.ExportStream` read as it goes)
    after the replay checks, all or nothing, keeping ids, events and hashes. A history that does not
    replay, an id (or idempotency key) already in the database, or a file that turns out malformed
    at its last byte is refused and nothing is written.

    One write transaction (`service.change`): each chunk of IMPORT_CHUNK orders is replayed as it is
    read, checked against the database, and inserted through the store's bulk path; the header's
    deferred checks run at the end, then `report(summary)` is written, then it commits. Any refusal
    rolls the whole transaction back. A database that this import created is removed again when it
    fails, so that a refused import leaves no trace. `progress` (if given) is told how many orders
    were written after each chunk."""
    store = svc.store
    path = store.location.path
    created = path is not None and not path.exists()
    try:
        return _import(svc, export, progress, report)
    except BaseException:
        if created:
            _remove_database(store, path)
        raise


def _remove_database(store, path: Path) -> None:
    store.dispose()
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), path.with_name(path.name + "-journal")):
        try:
            name.unlink()
        except OSError:
            pass


def _import(svc, export, progress, report) -> ImportSummary:
    from coopctl.service import change

    svc.store.initialise()
    where = svc.store.location.display
    summary = ImportSummary(where)
    if isinstance(export, ExportFile):
        parts = replay_chunks(export.orders, keep_steps=False, chunk=IMPORT_CHUNK)
    else:  # a stream: the same chunks, replayed on two cores (`replayhelper`)
        from coopctl.replayhelper import verdict_chunks

        parts = verdict_chunks(export, full=True, chunk=IMPORT_CHUNK)
    with closing(parts), change(svc.store, report) as current:
        tx = current.tx
        for part in parts:
            failed = [v for v in part if not v.ok]
            if failed:
                more = f" (and {len(failed) - 1} more in its chunk)" if len(failed) > 1 else ""
                raise Refused(f"{failed[0].message}{more}; nothing was imported (`coopctl replay` shows the timeline)")
            present = sorted(tx.ids_present([v.order_id for v in part]))
            if present:
                names = _named(present)
                exists = f"order {names} already exists" if len(present) == 1 else f"orders {names} already exist"
                raise Refused(
                    f"{exists} in {where}; nothing was imported "
                    "(import never overwrites an order: import into another database)"
                )
            keys = [v.rebuilt.idempotency_key for v in part if v.rebuilt.idempotency_key is not None]
            in_use = tx.keys_in_use(keys) if keys else {}
            for v in part:
                key = v.rebuilt.idempotency_key
                if key is not None and key in in_use:
                    raise Refused(
                        f"order {v.order_id} has idempotency key {key!r}, which order {in_use[key]} of {where} "
                        "already uses; nothing was imported"
                    )
            tx.insert_orders([v.rebuilt for v in part])
            events = [e for v in part for e in v.exported.events]
            notes = [n for v in part for n in v.exported.notifications]
            tx.insert_history(events, notes)
            _import_evidence(tx, part)
            summary.ids.extend(v.order_id for v in part)
            summary.events += len(events)
            summary.notifications += len(notes)
            if len(summary.shown) < IMPORT_SHOWN:
                summary.shown.extend(part[: IMPORT_SHOWN - len(summary.shown)])
            if progress is not None:
                progress(len(part))
            del events, notes, part
        if not isinstance(export, ExportFile):
            export.finish()  # the checks that waited for the end of the file (keys after the orders)
        tx.follow_explicit_ids()
        current.done(summary)
    return summary


def _import_evidence(tx, verdicts: list[Verdict]) -> None:
    """The evidence files of imported orders: the embedded contents (checked by the replay) kept,
    every other file their events name recorded as not held here (SPEC section 2)."""
    from coopctl.evidence import not_held

    held = [h for v in verdicts for h in v.evidence]
    if held:
        tx.store_evidence(held)
    missing = [f for v in verdicts for f in not_held(v.exported.events, v.evidence)]
    if missing:
        tx.record_evidence(missing)
