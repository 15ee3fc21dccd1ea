"""SPEC section 4, "The board": every field of `coopctl board --json` on a built book, checked
against a count made independently (every row read in Python); overdue and due at their exact
instants; and its queries read indexes only, with plans and work that do not grow with the book."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dbtools import BASE, build, file_digest
from test_query_plans import NOW, Recorder, build as build_pending, plan, steps
from coopctl.config import Settings
from coopctl.lifecycle import TERMS_OF, TIMERS, Status
from coopctl.policy import DAY, HOUR, SECOND, iso, parse_duration
from coopctl.service import Service, tick
from coopctl.store import Store, locate
from coopctl.views import board

TZ = ZoneInfo("Asia/Shanghai")
N = 60


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """A book in every timed status, then ticked part of the way: expired, closed, completed,
    disputed orders too, a tick run recorded, and some notifications marked sent."""
    path = tmp_path_factory.mktemp("board") / "book.db"
    build(path, N, spread_minutes=600)
    store = Store(locate(str(path)))
    try:
        tick(Service(store, Settings(), "test"), BASE + 6 * DAY)
    finally:
        store.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE notifications SET sent_at = at, state = 'sent' WHERE id % 3 = 0")
        conn.execute("UPDATE notifications SET state = 'failed', attempts = 1, next_attempt_at = at WHERE id % 7 = 1")
        conn.execute("UPDATE notifications SET state = 'dead', attempts = 8 WHERE id % 11 = 2")
    return path


def independent(path: Path, now: int) -> dict:
    """The board, counted from every row in Python (no index, no SQL aggregate)."""
    conn = sqlite3.connect(path)
    try:
        orders = conn.execute("SELECT status, deadline, status_since, policy FROM orders").fetchall()
        notes = conn.execute("SELECT at, state FROM notifications").fetchall()
        last = conn.execute("SELECT now, finished_at, applied FROM tick_runs ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    by_status = {str(s): sum(1 for o in orders if o[0] == s) for s in Status}
    by_terms: dict[str, int] = {}
    for status, n in by_status.items():
        by_terms[str(TERMS_OF[Status(status)])] = by_terms.get(str(TERMS_OF[Status(status)]), 0) + n
    late = [o[1] for o in orders if o[1] is not None and o[1] <= now]
    ahead = lambda span: sum(1 for o in orders if o[1] is not None and now < o[1] <= now + span)  # noqa: E731
    kinds = {str(t.kind): 0 for t in TIMERS.values()}
    for status, deadline, _, _ in orders:
        if deadline is not None and now < deadline <= now + DAY:
            kinds[str(TIMERS[Status(status)].kind)] += 1
    disputed = [o[2] for o in orders if o[0] == "disputed"]
    # each dispute against its own order's arbitration_window (5d when its policy predates the key)
    windows = [parse_duration(json.loads(o[3]).get("arbitration_window", "5d")) for o in orders if o[0] == "disputed"]
    pending = [n[0] for n in notes if n[1] == "pending"]
    ts = lambda t: None if t is None else iso(t, TZ)  # noqa: E731
    return {
        "now": iso(now, TZ),
        "orders": len(orders),
        "by_status": by_status,
        "by_terms": {k: by_terms.get(k, 0) for k in ("not_yet_effective", "in_force", "fulfilled", "void", "settled")},
        "overdue": {"count": len(late), "oldest": ts(min(late, default=None))},
        "due": {"1h": ahead(HOUR), "24h": ahead(DAY), "7d": ahead(7 * DAY)},
        "due_24h_by_kind": kinds,
        "disputes": {
            "open": len(disputed),
            "past_arbitration_window": sum(1 for since, window in zip(disputed, windows) if since + window <= now),
            "oldest": ts(min(disputed, default=None)),
        },
        "outbox": {"pending": len(pending), "oldest_pending": ts(min(pending, default=None)),
                   "failed": sum(1 for n in notes if n[1] == "failed"), "dead": sum(1 for n in notes if n[1] == "dead")},
        "last_tick": None if last is None else {"now": iso(last[0], TZ), "finished_at": iso(last[1], TZ), "applied": last[2]},
    }


@pytest.mark.parametrize("offset", [5 * DAY, 6 * DAY, 6 * DAY + 3 * HOUR, 8 * DAY, 13 * DAY, 30 * DAY])
def test_board_json_is_every_count_made_row_by_row(invoke, book, tmp_path, offset):
    db = tmp_path / "b.db"
    shutil.copy(book, db)
    before = file_digest(db)
    now = BASE + offset
    result = invoke("--db", str(db), "board", "--now", iso(now), "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found == independent(db, now)
    assert file_digest(db) == before, "board wrote to the database"
    assert list(found["by_status"]) == [str(s) for s in Status]  # the order of the states table


def test_board_of_a_book_this_test_varies_is_exact_whichever_part_is_large(book, tmp_path, monkeypatch):
    """The counts probe each part up to a bound and derive the largest from the table's count:
    with a bound smaller than several parts, the answer is the same."""
    db = tmp_path / "b.db"
    shutil.copy(book, db)
    store = Store(locate(str(db)))
    try:
        svc = Service(store, Settings(), "test")
        exact = board(svc, BASE + 6 * DAY).to_json(TZ)
        from coopctl.store import Tx

        monkeypatch.setattr(Tx, "BOARD_PROBE", 3)
        assert board(svc, BASE + 6 * DAY).to_json(TZ) == exact
    finally:
        store.dispose()
    assert exact == independent(db, BASE + 6 * DAY)


# ----------------------------------------------------------------------------- edges


@pytest.fixture
def one_order(invoke):
    """One pending order created at T0 (its deadline: T0 + 3d)."""
    t0 = BASE
    created = invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                     "--commission", "10", "--latest-start", iso(t0 + 30 * DAY), "--at", iso(t0), "--json")
    assert created.exit_code == 0, created.output
    return t0 + 3 * DAY


def board_at(invoke, at: int) -> dict:
    result = invoke("board", "--now", iso(at), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_deadline_at_now_is_overdue_not_due(invoke, one_order):
    at = board_at(invoke, one_order)
    assert at["overdue"] == {"count": 1, "oldest": iso(one_order, TZ)}
    assert at["due"] == {"1h": 0, "24h": 0, "7d": 0}
    before = board_at(invoke, one_order - SECOND)
    assert before["overdue"]["count"] == 0 and before["due"] == {"1h": 1, "24h": 1, "7d": 1}


def test_due_windows_include_their_end_and_nest(invoke, one_order):
    assert board_at(invoke, one_order - HOUR)["due"] == {"1h": 1, "24h": 1, "7d": 1}
    assert board_at(invoke, one_order - HOUR - SECOND)["due"] == {"1h": 0, "24h": 1, "7d": 1}
    assert board_at(invoke, one_order - DAY)["due_24h_by_kind"]["expired"] == 1
    assert board_at(invoke, one_order - DAY - SECOND)["due"] == {"1h": 0, "24h": 0, "7d": 1}
    assert board_at(invoke, one_order - 7 * DAY - SECOND)["due"] == {"1h": 0, "24h": 0, "7d": 0}


def test_board_of_an_empty_book_and_no_tick_yet(invoke):
    assert invoke("init").exit_code == 0
    empty = board_at(invoke, BASE)
    assert empty["orders"] == 0 and empty["last_tick"] is None and empty["outbox"]["oldest_pending"] is None


def test_board_without_a_database_is_exit_5(invoke):
    result = invoke("board")
    assert result.exit_code == 5 and result.stderr.startswith("error:")


def test_board_table_lists_every_status_in_the_order_of_the_states_table(invoke, one_order):
    result = invoke("board", "--now", iso(one_order))
    assert result.exit_code == 0
    part = result.stdout.split("by terms")[0]  # the status table comes before the terms
    lines = [line.split()[0] for line in part.splitlines() if line.split() and line.split()[0] in {str(s) for s in Status}]
    assert lines == [str(s) for s in Status]


# ----------------------------------------------------------------------------- query plans

SMALL, LARGE = 300, 3000


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board-books")
    small, large = folder / "small.db", folder / "large.db"
    build_pending(small, SMALL, analyse=False).dispose()
    build_pending(large, LARGE, analyse=False).dispose()
    return small, large


def test_board_reads_indexes_only_and_its_work_does_not_grow_with_the_book(shelf, tmp_path, monkeypatch):
    """Each part is probed up to Tx.BOARD_PROBE index entries (20,000: bounded work, whatever the
    book); here the bound is made smaller than both books, so that the bound shows."""
    from coopctl.store import Tx

    monkeypatch.setattr(Tx, "BOARD_PROBE", 100)
    small, large = shelf
    work = tmp_path / "work.db"
    shutil.copy(small, work)
    store = Store(locate(str(work)))
    try:
        recorder = Recorder(store)
        found = board(Service(store, Settings(), "test"), NOW)
    finally:
        store.dispose()
    assert found.overdue == 30 and found.by_status["pending"] == SMALL
    reads = [(sql, params) for sql, params in recorder.statements
             if sql.lstrip().upper().startswith("SELECT") and ("orders" in sql or "notifications" in sql)]
    assert len(reads) > 5
    for sql, params in reads:
        text = " | ".join(plan(small, sql, params))
        counts_the_table = "WHERE" not in sql.upper()  # count(*) of a whole table: its pages, not its rows
        if not counts_the_table:
            assert "SCAN orders" not in text.replace("SCAN orders USING COVERING INDEX", "") or "LIMIT" in sql.upper(), f"{text}\n{sql}"
            assert "USING INDEX" in text or "COVERING INDEX" in text or "SEARCH" in text, f"{text}\n{sql}"
        assert "TEMP B-TREE" not in text, f"{text}\n{sql}"
        assert plan(large, sql, params) == plan(small, sql, params)
        few, many = steps(small, sql, params), steps(large, sql, params)
        assert many <= few * 1.5 + 50, f"{few} steps on {SMALL} orders, {many} on {LARGE}\n{sql}"


def test_board_counts_a_whole_table_at_most_once(shelf, tmp_path, monkeypatch):
    """Splitting the orders by status and by deadline both need the table's count when a part is
    large: it is read once (one pass over the smallest index), not once per split; the outbox's
    sent notifications are never counted as a whole when few are pending."""
    from coopctl.store import Tx

    monkeypatch.setattr(Tx, "BOARD_PROBE", 100)
    small, _ = shelf
    work = tmp_path / "work.db"
    shutil.copy(small, work)
    store = Store(locate(str(work)))
    try:
        recorder = Recorder(store)
        board(Service(store, Settings(), "test"), NOW)
    finally:
        store.dispose()
    whole = [" ".join(sql.split()) for sql, _ in recorder.statements if "WHERE" not in sql.upper() and "count(" in sql.lower()]
    assert sum("FROM orders" in sql for sql in whole) == 1, whole
    assert sum("FROM notifications" in sql for sql in whole) <= 1, whole
