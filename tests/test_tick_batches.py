"""The batched tick (keys from the wake_at index, rows read and written in id order, executemany,
one commit per batch) must write exactly what the rules give when each order is fired on its
own: the same events byte for byte (hashes included) and the same notifications, whatever the
batch size, and whether tick runs once or several times on the way.

The book has a few thousand orders in every timed status (pending, effective, cancel_requested,
live, delivered, review_failed), so every kind of deadline fires, with the cascades live ->
delivered (auto) -> completed and reminders on the way. COOPCTL_STRESS multiplies its size.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from coopctl import lifecycle
from coopctl.config import Settings
from coopctl.lifecycle import canonical_json
from coopctl.policy import DAY, HOUR
from coopctl.service import Service, tick
from coopctl.store import Store, locate

from dbtools import BASE, build, event_lists, stress

OPERATOR = "cron"
STOPS = (BASE + 2 * DAY + 5 * HOUR, BASE + 4 * DAY, BASE + 40 * DAY)  # reminders due, some deadlines, then all


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batches") / "book.db"
    build(path, 3000 * stress())
    return path


def stored_notifications(path: Path) -> dict[int, list[tuple]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found: dict[int, list[tuple]] = {}
        for order_id, *rest in conn.execute("SELECT order_id, recipient, channel, kind, at, text FROM notifications"):
            found.setdefault(order_id, []).append(tuple(rest))
        return {k: sorted(v) for k, v in found.items()}
    finally:
        conn.close()


def one_by_one(path: Path, stops: tuple[int, ...]) -> tuple[dict, dict]:
    """What the rules give when every order is fired on its own, at each stop in turn."""
    events = event_lists(path)
    notes = stored_notifications(path)
    tz = Settings().tz
    store = Store(locate(str(path)))
    try:
        with store.read() as tx:
            orders = tx.load_many(tx.all_order_ids())
    finally:
        store.dispose()
    for order in orders:
        for now in stops:
            outcome = lifecycle.tick_order(order, now, OPERATOR, tz)
            events[order.id] += [
                (e.seq, e.kind, e.at, e.actor, canonical_json(e.data), e.prev_hash, e.hash) for e in outcome.events
            ]
            notes[order.id] = sorted(notes[order.id] + [(n.recipient, n.channel, n.kind, n.at, n.text) for n in outcome.notifications])
            order = outcome.order
    return events, notes


def batched(book: Path, target: Path, stops: tuple[int, ...], batch: int) -> tuple[dict, dict]:
    shutil.copyfile(book, target)
    store = Store(locate(str(target)))
    try:
        svc = Service(store, Settings(), OPERATOR)
        for now in stops:
            tick(svc, now, batch=batch)
    finally:
        store.dispose()
    return event_lists(target), stored_notifications(target)


@pytest.mark.parametrize(
    "batch, stops",
    [(5000, STOPS), (97, STOPS), (5000, STOPS[-1:]), (1, STOPS[-1:])],
    ids=["5000, three ticks", "97, three ticks", "5000, one tick", "1, one tick"],
)
def test_a_batched_tick_writes_what_firing_each_order_alone_gives(book, tmp_path, batch, stops):
    expected_events, expected_notes = one_by_one(book, stops)
    events, notes = batched(book, tmp_path / "ticked.db", stops, batch)
    assert sum(len(v) for v in events.values()) > sum(len(v) for v in event_lists(book).values())
    kinds = {e[1] for history in events.values() for e in history}
    assert {"expired", "closed_overdue", "cancelled_unilaterally", "delivered", "auto_accepted", "escalated"} <= kinds
    assert events == expected_events
    assert notes == expected_notes
    if len(stops) > 1:
        assert any(n[2] == "reminder" for history in notes.values() for n in history)
