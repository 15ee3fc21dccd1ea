"""The storage layer on a temporary SQLite file (SPEC section 3, "Storage"): the schema and its
settings, the write transaction, busy handling, the `due` query, and the columns `tick` relies on."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from datetime import timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event, insert

from coopctl import lifecycle
from coopctl.config import Settings
from coopctl.errors import Busy, InvalidInput, StorageError
from coopctl.lifecycle import Action, Party, Status, wake_at
from coopctl.models import EVENTS, SCHEMA_VERSION
from coopctl.policy import DAY, HOUR, SECOND, parse_instant
from coopctl.service import Service, create_order, perform, tick
from coopctl.store import Store, locate

OPERATOR = "ops"


def at(text: str) -> int:
    return parse_instant(text, timezone.utc)


T0 = at("2026-11-01T10:00:00+08:00")
LATEST = at("2026-11-20T20:00:00+08:00")


@pytest.fixture
def store(db_path: Path):
    s = Store(locate(str(db_path)), busy_timeout=SECOND)
    yield s
    s.dispose()


@pytest.fixture
def svc(store: Store) -> Service:
    return Service(store, Settings(), OPERATOR)


def new_order(svc: Service, *, created: int = T0, latest: int = LATEST, merchant: str = "商家A", creator: str = "达人小王"):
    order, made = create_order(
        svc, merchant=merchant, creator=creator, products=["P1"], form="live", commission="12.5",
        ad_budget="5000", latest_start_at=latest, note=None, at=created,
    )
    assert made
    return order


def columns(path: Path, order_id: int) -> tuple:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT status, deadline, wake_at FROM orders WHERE id = ?", (order_id,)).fetchone()
    finally:
        conn.close()


# --------------------------------------------------------------------------- schema


def test_initialise_creates_the_schema_in_wal_mode_with_foreign_keys_on(store, db_path):
    assert store.initialise() is True
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"orders", "events", "notifications", "coopctl_meta"} <= tables
        meta = dict(conn.execute("SELECT key, value FROM coopctl_meta"))
        assert meta["application"] == "coopctl"
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "ix_orders_wake_at" in indexes
    finally:
        conn.close()
    with store.read() as tx:
        assert tx.conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced_on_every_connection(store):
    from sqlalchemy.exc import IntegrityError

    store.initialise()
    with store.write() as tx:
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            tx.conn.execute(
                insert(EVENTS).values(
                    order_id=999, seq=1, kind="created", at=0, actor="system", operator="x", data="{}",
                    prev_hash="0" * 64, hash="0" * 64,
                )
            )


def test_initialise_twice_keeps_the_database_as_it_is(svc, store, db_path, db_rows):
    new_order(svc)
    rows = db_rows()
    assert store.initialise() is False
    assert db_rows() == rows


def test_initialise_refuses_a_foreign_sqlite_database(store, db_path, db_rows):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.execute("INSERT INTO customers VALUES ('x')")
    conn.commit()
    conn.close()
    data = db_path.read_bytes()
    with pytest.raises(StorageError, match="already holds tables that are not coopctl's; refusing to touch it"):
        store.initialise()
    assert db_path.read_bytes() == data
    assert db_rows() == {"customers": [("x",)]}


def test_require_on_a_missing_file_creates_nothing(store, db_path):
    with pytest.raises(StorageError, match="no database at .*; create one with `coopctl init`"):
        store.require()
    assert not db_path.exists()


def test_require_refuses_random_bytes(store, db_path):
    db_path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(StorageError, match="is not a SQLite database"):
        store.require()


def test_require_refuses_a_newer_schema(store, db_path):
    store.initialise()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE coopctl_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this coopctl understands"):
        store.require()


def test_locate_reads_paths_and_sqlalchemy_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = locate("x.db")
    assert plain.path == tmp_path / "x.db"
    assert plain.url == f"sqlite:///{tmp_path / 'x.db'}"
    url = locate("sqlite:///y.db")
    assert url.path == tmp_path / "y.db"
    assert url.is_sqlite
    with pytest.raises(InvalidInput, match="names no file"):  # SPEC section 7 (tests/test_trust_files.py)
        locate("sqlite://")
    with pytest.raises(InvalidInput, match="the database location is empty"):
        locate("  ")


# --------------------------------------------------------------------------- transactions


def test_a_write_transaction_begins_immediate_and_a_read_one_deferred(store):
    store.initialise()
    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: seen.append(sql))
    with store.write():
        pass
    with store.read():
        pass
    assert seen == ["BEGIN IMMEDIATE", "BEGIN"]


def test_the_write_lock_is_taken_at_begin_not_at_the_first_write(store, db_path):
    store.initialise()
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        with store.write():  # no statement yet: the lock is already held
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at the end of the transaction
        other.execute("ROLLBACK")
        with store.read():  # a reader does not block writers
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_locked_database_raises_busy_after_busy_timeout_and_changes_nothing(db_path, db_rows):
    store = Store(locate(str(db_path)), busy_timeout=SECOND // 4)
    svc = Service(store, Settings(), OPERATOR)
    order = new_order(svc)
    rows = db_rows()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(Busy) as caught:
            perform(svc, order.id, Action.ACCEPT, Party.CREATOR, "达人小王", T0 + HOUR)
        assert time.monotonic() - started >= 0.2
        assert str(caught.value) == f"the database {db_path} stayed locked by another coopctl; nothing was changed, try again"
        assert caught.value.exit_code == 4
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert db_rows() == rows


def test_a_writer_waits_for_a_short_lock_instead_of_failing(svc, store, db_path):
    order = new_order(svc)
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.2, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        outcome = perform(svc, order.id, Action.ACCEPT, Party.CREATOR, "达人小王", T0 + HOUR)  # busy_timeout 1s
    finally:
        release.join()
        holder.close()
    assert outcome.order.status is Status.EFFECTIVE


def test_an_error_inside_a_write_rolls_everything_back(svc, store, db_rows):
    order = new_order(svc)
    rows = db_rows()
    with pytest.raises(RuntimeError):
        with store.write() as tx:
            tx.conn.execute(
                insert(EVENTS).values(
                    order_id=order.id, seq=2, kind="accepted", at=T0, actor="creator:达人小王", operator="x",
                    data="{}", prev_hash="0" * 64, hash="0" * 64,
                )
            )
            raise RuntimeError("boom")
    assert db_rows() == rows


def _event_row(order_id: int) -> dict:
    return dict(
        order_id=order_id, seq=2, kind="accepted", at=T0, actor="creator:达人小王", operator="x",
        data="{}", prev_hash="0" * 64, hash="0" * 64,
    )


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process, as in a coopctl started from a terminal
    (a suite started in the background inherits it ignored); the handler before is put back."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_a_ctrl_c_during_a_commit_is_raised_after_it_and_said_as_committed(svc, store, db_rows, monkeypatch):
    """SIGINT right after the database committed: the interrupt must not say "rolled back"."""
    from coopctl.cli.base import interrupted
    from coopctl.store import WRITES

    order = new_order(svc)
    rows = db_rows()
    commit = store.engine.dialect.do_commit

    def commit_then_interrupt(dbapi_conn):
        commit(dbapi_conn)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # a handler that raises does so here, before `_transaction` knows

    monkeypatch.setattr(store.engine.dialect, "do_commit", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with store.write() as tx:
            tx.conn.execute(insert(EVENTS).values(**_event_row(order.id)))
    assert db_rows() != rows  # it committed
    assert WRITES.latest == "committed"
    assert interrupted() == "interrupted after the latest transaction committed; what it changed stands"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.usefixtures("ctrl_c_raises")
def test_a_ctrl_c_inside_a_write_rolls_it_back_and_says_so(svc, store, db_rows):
    from coopctl.cli.base import interrupted

    order = new_order(svc)
    rows = db_rows()
    with pytest.raises(KeyboardInterrupt):
        with store.write() as tx:
            tx.conn.execute(insert(EVENTS).values(**_event_row(order.id)))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert db_rows() == rows
    assert interrupted() == "interrupted; the current transaction was rolled back"


def test_a_save_from_a_stale_copy_is_refused_and_writes_nothing(svc, store, db_rows):
    order = new_order(svc)
    with store.read() as tx:
        stale = tx.load(order.id)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, "达人小王", T0 + HOUR)
    rows = db_rows()
    late = lifecycle.act(stale, Action.REJECT, Party.CREATOR, "达人小王", T0 + 2 * HOUR, OPERATOR)
    with pytest.raises(Busy):
        with store.write() as tx:
            tx.save([stale], [late])
    assert db_rows() == rows


# --------------------------------------------------------------------------- rows and records


def test_an_order_reads_back_exactly_as_written(svc, store):
    order, _ = create_order(
        svc, merchant="商家A-美妆旗舰店", creator="达人小王", products=["P1001-口红套装", "P2"], form="video",
        commission="7.05", ad_budget="12000.50", latest_start_at=LATEST, note="双十二预热\n第二行", at=T0,
        idempotency_key="k-1",
    )
    with store.read() as tx:
        loaded = tx.load(order.id)
        assert tx.load(order.id + 1) is None
    assert loaded == order
    assert loaded.terms.commission_pct == Decimal("7.05")
    assert loaded.terms.ad_budget == Decimal("12000.50")
    assert loaded.terms.merchant == "商家A-美妆旗舰店"
    assert loaded.terms.note == "双十二预热\n第二行"


def test_money_and_rates_are_stored_as_decimal_text(svc, db_path):
    new_order(svc)
    conn = sqlite3.connect(db_path)
    try:
        row = conn.execute("SELECT commission_pct, ad_budget, typeof(commission_pct), typeof(ad_budget) FROM orders").fetchone()
    finally:
        conn.close()
    assert row == ("12.50", "5000.00", "text", "text")


def test_ids_are_given_in_order_from_one(svc):
    ids = [new_order(svc).id for _ in range(3)]
    assert ids == [1, 2, 3]


# --------------------------------------------------------------------------- deadlines in columns


def test_deadline_and_wake_at_columns_follow_the_lifecycle(svc, store, db_path):
    """`deadline` is the states table's next deadline; `wake_at` the earliest of it and any reminder not yet written."""
    order = new_order(svc)

    def check(status: str, deadline: int | None, wake: int | None) -> None:
        assert columns(db_path, order.id) == (status, deadline, wake)
        with store.read() as tx:
            loaded = tx.load(order.id)
        assert (loaded.deadline, wake_at(loaded)) == (deadline, wake)

    check("pending", T0 + 3 * DAY, T0 + 2 * DAY)  # the accept reminder, 24h before the accept deadline
    tick(svc, T0 + 2 * DAY)  # writes that reminder
    check("pending", T0 + 3 * DAY, T0 + 3 * DAY)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, "达人小王", T0 + 2 * DAY + HOUR)
    check("effective", LATEST, LATEST - DAY)  # the latest-start reminder
    perform(svc, order.id, Action.GO_LIVE, Party.CREATOR, "达人小王", T0 + 5 * DAY)
    check("live", T0 + 6 * DAY, T0 + 6 * DAY)
    tick(svc, T0 + 6 * DAY)  # auto delivery, at its deadline
    check("delivered", T0 + 20 * DAY, T0 + 18 * DAY)  # the review reminder, 48h before
    tick(svc, T0 + 18 * DAY)
    check("delivered", T0 + 20 * DAY, T0 + 20 * DAY)
    perform(svc, order.id, Action.REVIEW_PASS, Party.MERCHANT, "商家A", T0 + 19 * DAY)
    check("completed", None, None)


def test_cancel_requested_deadline_is_capped_by_the_latest_start(svc, db_path):
    order = new_order(svc, latest=T0 + 2 * DAY)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, "达人小王", T0 + HOUR)
    perform(svc, order.id, Action.CANCEL_REQUEST, Party.MERCHANT, "商家A", T0 + DAY)
    status, deadline, _ = columns(db_path, order.id)
    assert (status, deadline) == ("cancel_requested", T0 + 2 * DAY)  # not T0 + 1d + 48h


# --------------------------------------------------------------------------- due


def test_due_returns_only_orders_whose_wake_at_has_come(svc, store):
    first = new_order(svc, created=T0)  # wakes at T0 + 2d (accept reminder)
    second = new_order(svc, created=T0 + HOUR)  # wakes at T0 + 2d + 1h
    third = new_order(svc, created=T0 + 2 * HOUR)  # wakes at T0 + 2d + 2h
    perform(svc, third.id, Action.REJECT, Party.CREATOR, "达人小王", T0 + 3 * HOUR)  # no deadline: never due
    with store.read() as tx:
        assert tx.due(T0 + 2 * DAY - 1, limit=10) == []
        assert [o.id for o in tx.due(T0 + 2 * DAY, limit=10)] == [first.id]
        assert [o.id for o in tx.due(T0 + 2 * DAY + HOUR, limit=10)] == [first.id, second.id]
        assert [o.id for o in tx.due(T0 + 100 * DAY, limit=10)] == [first.id, second.id]
        assert tx.count_due(T0 + 100 * DAY) == 2
        assert [o.id for o in tx.due(T0 + 100 * DAY, limit=1)] == [first.id]
        after = (T0 + 2 * DAY, first.id)
        assert [o.id for o in tx.due(T0 + 100 * DAY, limit=10, after=after)] == [second.id]


def test_due_orders_by_wake_at_then_id(svc, store):
    late = new_order(svc, created=T0 + DAY)
    early_a = new_order(svc, created=T0)
    early_b = new_order(svc, created=T0)
    with store.read() as tx:
        # the first `limit` by (wake_at, id) are chosen; SQLite hands them back in id order
        assert [o.id for o in tx.due(T0 + 10 * DAY, limit=2)] == [early_a.id, early_b.id]
        assert [o.id for o in tx.due(T0 + 10 * DAY, limit=1)] == [early_a.id]
        assert [o.id for o in tx.due(T0 + 10 * DAY, limit=10)] == sorted([early_a.id, early_b.id, late.id])
        assert [o.id for o in tx.due(T0 + 10 * DAY, limit=1, after=(T0 + 2 * DAY, early_a.id))] == [early_b.id]
        assert [o.id for o in tx.due(T0 + 10 * DAY, limit=10, after=(T0 + 2 * DAY, early_b.id))] == [late.id]
