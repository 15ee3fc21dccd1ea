"""`coopctl doctor`: each finding names what is wrong and what to do; exit 0 healthy, 1 with
findings, 5 when there is no coopctl database to check; it only ever reads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from coopctl.doctor import examine
from coopctl.models import SCHEMA_VERSION
from coopctl.policy import DAY, MINUTE, iso
from coopctl.store import Store, locate
from dbtools import BASE, build, deliver_outbox, file_digest

LATER = iso(BASE + 40 * DAY)  # every order of dbtools.build is due by then


@pytest.fixture
def book(db_path: Path) -> Path:
    """30 orders in every timed status, all ticked up to LATER: a healthy database."""
    build(db_path, 30)
    return db_path


@pytest.fixture
def ticked(book: Path, invoke) -> Path:
    result = invoke("tick", "--now", LATER)
    assert result.exit_code == 0, result.stderr
    deliver_outbox(invoke)  # a dispatcher runs too: the outbox holds no backlog
    return book


def doctor_json(invoke, *args) -> tuple[int, dict, str]:
    result = invoke("doctor", "--json", *args)
    return result.exit_code, json.loads(result.stdout), result.stderr


def problems(report: dict) -> list[dict]:
    return [f for f in report["findings"] if not f["ok"]]


def one_error_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert "Traceback" not in stderr


def tamper(path: Path, sql: str, *params) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


# --------------------------------------------------------------------------- healthy


def test_a_healthy_database_exits_0_and_every_check_is_ok(invoke, ticked):
    code, report, stderr = doctor_json(invoke, "--now", LATER)
    assert code == 0 and stderr == ""
    assert report["healthy"] is True
    assert report["orders"] == 30
    assert report["schema_version"] == SCHEMA_VERSION
    assert [f["check"] for f in report["findings"]] == [
        "integrity", "journal", "schema", "hash_chain", "rebuild", "overdue", "last_tick", "outbox_dead", "outbox_backlog",
    ]
    assert report["findings"][4]["message"] == "30 orders: every order row is what the rules make of its events"
    assert problems(report) == []
    last = report["findings"][6]["message"]
    assert last.startswith("the last tick finished at ") and f"up to {iso(BASE + 40 * DAY, __import__('zoneinfo').ZoneInfo('Asia/Shanghai'))}" in last


def test_the_human_report_is_a_table_and_a_verdict(invoke, ticked):
    result = invoke("doctor", "--now", LATER)
    assert result.exit_code == 0
    assert "every hash chain verifies" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("healthy: 30 orders checked at ")


def test_an_empty_new_database_is_healthy(invoke):
    assert invoke("init").exit_code == 0
    code, report, _ = doctor_json(invoke)
    assert code == 0
    assert report["orders"] == 0
    assert report["findings"][6]["message"] == "no tick has completed a run on this database yet"
    assert report["findings"][-1]["message"] == "no notification pending for more than 10m"


def test_doctor_only_reads(invoke, book, db_path):
    digest = file_digest(db_path)
    assert invoke("doctor", "--now", LATER).exit_code == 1  # overdue: nothing ticked yet
    assert file_digest(db_path) == digest


# --------------------------------------------------------------------------- hash chains


def test_an_altered_event_is_named_by_order_and_seq(invoke, ticked, db_path):
    tamper(db_path, "UPDATE events SET data = ? WHERE order_id = 7 AND seq = 2", '{"forged":true}')
    code, report, stderr = doctor_json(invoke, "--now", LATER)
    assert code == 1
    [finding] = problems(report)
    assert finding["check"] == "hash_chain"
    assert (finding["order"], finding["seq"]) == (7, 2)
    assert finding["message"] == "order 7: event seq 2: hash does not match the event's content (event altered or hash forged)"
    assert "restore it from a backup" in finding["action"]
    one_error_line(stderr)
    assert stderr.startswith("error: order 7: event seq 2: hash does not match")


def test_a_removed_last_event_is_found_through_the_order_row(invoke, ticked, db_path):
    tamper(db_path, "DELETE FROM events WHERE order_id = 9 AND seq = (SELECT max(seq) FROM events WHERE order_id = 9)")
    code, report, _ = doctor_json(invoke, "--now", LATER)
    assert code == 1
    [finding] = problems(report)
    assert finding["order"] == 9
    assert "events removed" in finding["message"]


def test_a_removed_middle_event_and_a_forged_hash_are_both_found(invoke, ticked, db_path):
    tamper(db_path, "DELETE FROM events WHERE order_id = 4 AND seq = 2")
    tamper(db_path, "UPDATE orders SET last_hash = ? WHERE id = 5", "f" * 64)
    code, report, _ = doctor_json(invoke, "--now", LATER)
    assert code == 1
    found = {(f["order"], f["seq"]) for f in problems(report)}
    assert found == {(4, 2), (5, report_last_seq(db_path, 5))}


def report_last_seq(path: Path, order_id: int) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT last_seq FROM orders WHERE id = ?", (order_id,)).fetchone()[0]
    finally:
        conn.close()


def test_many_broken_orders_are_listed_up_to_20_then_counted(invoke, ticked, db_path):
    tamper(db_path, "UPDATE events SET operator = 'mallory' WHERE seq = 1")
    code, report, _ = doctor_json(invoke, "--now", LATER)
    assert code == 1
    found = problems(report)
    assert len(found) == 21
    assert found[-1]["message"] == "10 more orders have a broken history (the first 20 are listed)"


def test_chains_are_checked_chunk_by_chunk(ticked):
    store = Store(locate(str(ticked)))
    try:
        report = examine(store, BASE + 40 * DAY, __import__("zoneinfo").ZoneInfo("UTC"), chunk=7)
    finally:
        store.dispose()
    assert report.orders == 30 and report.healthy


# --------------------------------------------------------------------------- cron


def test_overdue_orders_mean_cron_is_not_running(invoke, book):
    deliver_outbox(invoke)
    code, report, stderr = doctor_json(invoke, "--now", LATER)
    assert code == 1
    [finding] = problems(report)
    assert finding["check"] == "overdue"
    assert finding["message"].startswith("cron is not running: 30 orders overdue since 2026-11-")
    assert finding["message"].endswith("(no tick has ever completed)")
    assert finding["action"] == "run `coopctl tick` and check the crontab (* * * * * coopctl tick)"
    one_error_line(stderr)
    assert invoke("tick", "--now", LATER).exit_code == 0
    deliver_outbox(invoke)
    assert doctor_json(invoke, "--now", LATER)[0] == 0


def test_a_deadline_just_passed_is_within_the_grace_period(invoke, db_path):
    result = invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                    "--commission", "10", "--latest-start", iso(BASE + 2 * DAY), "--at", iso(BASE))
    assert result.exit_code == 0, result.stderr
    deliver_outbox(invoke)
    deadline = BASE + DAY  # the accept reminder: 24h before the accept deadline (created + 2d by latest start)
    assert doctor_json(invoke, "--now", iso(deadline + 5 * MINUTE))[0] == 0
    code, report, _ = doctor_json(invoke, "--now", iso(deadline + 11 * MINUTE))
    assert code == 1 and "1 order overdue since" in problems(report)[0]["message"]
    assert doctor_json(invoke, "--now", iso(deadline + 11 * MINUTE), "--grace", "1h")[0] == 0


def test_a_book_whose_outbox_nobody_ever_delivered_is_a_backlog(invoke, db_path):
    """SPEC section 5: pending notifications older than --grace are a finding from the first one
    on, not only once a dispatcher has delivered something (a dispatcher never started is the
    case the check exists for)."""
    result = invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                    "--commission", "10", "--latest-start", iso(BASE + 5 * DAY), "--at", iso(BASE))
    assert result.exit_code == 0, result.stderr
    assert doctor_json(invoke, "--now", iso(BASE + 5 * MINUTE))[0] == 0  # within the grace
    code, report, stderr = doctor_json(invoke, "--now", iso(BASE + 11 * MINUTE))
    assert code == 1
    [finding] = problems(report)
    assert finding["check"] == "outbox_backlog"
    assert finding["message"].startswith("2 notifications pending for more than 10m (the oldest from 2026-11-01T10:00:00+08:00)")
    assert "coopctl dispatch" in finding["action"]
    one_error_line(stderr)
    assert doctor_json(invoke, "--now", iso(BASE + 11 * MINUTE), "--grace", "1h")[0] == 0
    deliver_outbox(invoke)
    assert doctor_json(invoke, "--now", iso(BASE + 11 * MINUTE))[0] == 0


def test_orders_that_have_ended_are_never_overdue(invoke, ticked):
    code, report, _ = doctor_json(invoke, "--now", iso(BASE + 400 * DAY))
    assert code == 0
    assert report["findings"][5] == {
        "check": "overdue", "ok": True, "message": "no deadline or reminder is more than 10m overdue", "action": None,
    }


# --------------------------------------------------------------------------- the file


def test_an_older_schema_is_a_finding_and_is_not_upgraded(invoke, db_path):
    from test_migrations import build_v1, meta

    build_v1(db_path)
    digest = file_digest(db_path)
    code, report, _ = doctor_json(invoke, "--now", iso(BASE))
    assert code == 1
    [finding] = problems(report)
    assert finding["message"] == f"schema version 1 is older than this coopctl's ({SCHEMA_VERSION})"
    assert "`coopctl init`" in finding["action"]
    assert meta(db_path)["schema_version"] == "1"
    assert file_digest(db_path) == digest


def test_a_dropped_tick_index_and_a_rollback_journal_are_findings(invoke, ticked, db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("DROP INDEX ix_orders_wake_at")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    code, report, _ = doctor_json(invoke, "--now", LATER)
    assert code == 1
    found = {f["check"]: f for f in problems(report)}
    assert set(found) == {"schema", "journal"}
    assert "index ix_orders_wake_at" in found["schema"]["message"]
    assert found["journal"]["message"].startswith("the journal mode is delete, not wal")


def test_a_damaged_file_is_an_integrity_finding(invoke, ticked, db_path):
    conn = sqlite3.connect(db_path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_orders_creator'").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(db_path, "r+b") as f:  # scribble over the cells of an index that doctor's own reads do not use
        f.seek((root - 1) * page_size + 200)
        f.write(b"\xa5" * (page_size - 400))
    code, report, stderr = doctor_json(invoke, "--now", LATER)
    assert code == 1
    finding = problems(report)[0]
    assert finding["check"] == "integrity"
    assert "restore the database from a backup" in finding["action"]
    one_error_line(stderr)


@pytest.mark.parametrize("kind", ["missing", "foreign", "random", "newer"])
def test_no_coopctl_database_to_check_is_exit_5(invoke, db_path, kind):
    if kind == "foreign":
        tamper(db_path, "CREATE TABLE customers (name TEXT)")
    elif kind == "random":
        db_path.write_bytes(bytes(range(256)) * 64)
    elif kind == "newer":
        assert invoke("init").exit_code == 0
        tamper(db_path, "UPDATE coopctl_meta SET value = ? WHERE key = 'schema_version'", str(SCHEMA_VERSION + 1))
    result = invoke("doctor")
    assert result.exit_code == 5
    one_error_line(result.stderr)
    assert result.stdout == ""
    if kind == "missing":
        assert not db_path.exists()


def test_bad_options_are_exit_2(invoke, ticked):
    for args, message in (
        (["--grace", "soon"], "error: --grace: expected a duration"),
        (["--now", "yesterday"], "error: --now: expected an ISO 8601 timestamp"),
    ):
        result = invoke("doctor", *args)
        assert result.exit_code == 2
        assert result.stderr.startswith(message)


def test_doctor_reads_while_another_process_holds_the_write_lock(run_coopctl, ticked, db_path):
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        result = run_coopctl("doctor", "--now", LATER, env={"COOPCTL_CONFIG": None})
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 30
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# --------------------------------------------------------------------------- both backends


def test_doctor_on_each_backend_finds_an_overdue_order_then_is_healthy_after_tick(invoke, backend):
    env = {"COOPCTL_DB": backend}
    created = invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                     "--commission", "10", "--latest-start", iso(BASE + 5 * DAY), "--at", iso(BASE), env=env)
    assert created.exit_code == 0, created.stderr
    result = invoke("doctor", "--json", "--now", LATER, env=env)
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    assert [f["check"] for f in problems(report)] == ["overdue", "outbox_backlog"]  # neither cron nor a dispatcher ran
    if backend.startswith("postgresql"):  # no file to check: the SQLite-only checks are left out
        assert [f["check"] for f in report["findings"]] == [
            "schema", "hash_chain", "rebuild", "overdue", "last_tick", "outbox_dead", "outbox_backlog",
        ]
    assert invoke("tick", "--now", LATER, env=env).exit_code == 0
    deliver_outbox(invoke, env=env)
    result = invoke("doctor", "--json", "--now", LATER, env=env)
    assert result.exit_code == 0, result.stderr
    [last] = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "last_tick"]
    assert last["message"].startswith("the last tick finished at ")


# --------------------------------------------------------------------------- what is shown is checked (SPEC section 7)


def tamper_any(location: str, sql: str, **params) -> None:
    """Run one statement on a SQLite file or a PostgreSQL database, outside coopctl."""
    from sqlalchemy import create_engine, text

    engine = create_engine(location if "://" in location else f"sqlite:///{location}")
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def stored(location: str, sql: str, **params):
    from sqlalchemy import create_engine, text

    engine = create_engine(location if "://" in location else f"sqlite:///{location}")
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def _each_status(invoke, env: dict) -> None:
    """Orders 1..4: pending, effective, delivered, review_failed (a deadline and reminders each)."""
    start = "2026-11-01T10:00:00+08:00"
    for _ in range(4):
        created = invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                         "--commission", "12.5", "--latest-start", iso(BASE + 5 * DAY), "--at", start, env=env)
        assert created.exit_code == 0, created.stderr
    for order, steps in ((2, ["accept"]), (3, ["accept", "deliver"]), (4, ["accept", "deliver", "review"])):
        for step in steps:
            args = {"accept": ["accept", str(order), "--creator", "C"], "deliver": ["deliver", str(order), "--creator", "C"],
                    "review": ["review", str(order), "--merchant", "M", "--fail", "--reason", "no"]}[step]
            result = invoke(*args, "--at", iso(BASE + 3600 * 10**6), env=env)
            assert result.exit_code == 0, result.stderr
    deliver_outbox(invoke, env=env)


ROW_EDITS = [
    ("commission_pct", 1, "UPDATE orders SET commission_pct = '99.00' WHERE id = :id", "12.50"),
    ("status", 2, "UPDATE orders SET status = 'completed' WHERE id = :id", "'effective'"),
    ("deadline", 3, "UPDATE orders SET deadline = deadline + 864000000000 WHERE id = :id", "T"),
    ("wake_at", 1, "UPDATE orders SET wake_at = NULL WHERE id = :id", "T"),
    ("failed_reviews", 4, "UPDATE orders SET failed_reviews = 0 WHERE id = :id", "1"),
    ("merchant", 2, "UPDATE orders SET merchant = 'M2' WHERE id = :id", "'M'"),
    ("latest_start_at", 2, "UPDATE orders SET latest_start_at = latest_start_at + 86400000000 WHERE id = :id", "T"),
    ("policy", 1, "UPDATE orders SET policy = REPLACE(policy, '\"3d\"', '\"30d\"') WHERE id = :id", "'{"),
    ("liable_party", 2, "UPDATE orders SET liable_party = 'merchant' WHERE id = :id", "null"),
    ("reminders_sent", 1, "UPDATE orders SET reminders_sent = '[\"accept@99\"]' WHERE id = :id", None),
]


@pytest.mark.parametrize("column, order, sql, want", ROW_EDITS, ids=[e[0] for e in ROW_EDITS])
def test_an_edited_order_row_is_a_finding_naming_the_order_and_the_field(invoke, db_path, column, order, sql, want):
    _each_status(invoke, {})
    assert doctor_json(invoke, "--now", iso(BASE + 3600 * 10**6))[0] == 0
    tamper_any(str(db_path), sql, id=order)
    code, report, stderr = doctor_json(invoke, "--now", iso(BASE + 3600 * 10**6))
    assert code == 1
    found = [f for f in problems(report) if f["check"] == "rebuild"]
    assert {(f["order"], f["field"]) for f in found} >= {(order, column)}, found
    [finding] = [f for f in found if f["field"] == column]
    assert finding["message"].startswith(f"order {order}: the stored {column} ")
    if want is not None:
        assert f"its events give {want}" in finding["message"] if want != "T" else "its events give 2026-" in finding["message"]
    assert "was changed outside coopctl" in finding["action"]
    one_error_line(stderr)
    assert stderr.startswith(f"error: order {order}: the stored ")
    # --quick checks the chains only: the row's own columns are not compared
    quick = invoke("doctor", "--json", "--quick", "--now", iso(BASE + 3600 * 10**6))
    assert quick.exit_code == 0, quick.stderr
    assert "rebuild" not in [f["check"] for f in json.loads(quick.stdout)["findings"]]


@pytest.mark.parametrize("command", ["show", "history"])
def test_show_and_history_print_an_edited_row_then_say_so_with_exit_1(invoke, db_path, command):
    _each_status(invoke, {})
    tamper_any(str(db_path), "UPDATE orders SET commission_pct = '99.00', deadline = NULL WHERE id = 2")
    result = invoke(command, "2", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)  # what could be printed was printed
    one_error_line(result.stderr)
    assert result.stderr.startswith("error: order 2: the stored commission_pct is 99.00, its events give 12.50 (and 1 more)")
    assert "what is shown is not what was recorded" in result.stderr
    assert invoke(command, "1").exit_code == 0  # the other orders are fine


@pytest.mark.parametrize("command", ["show", "history", "doctor"])
def test_an_edited_event_is_named_by_seq_by_show_history_and_doctor(invoke, db_path, command):
    _each_status(invoke, {})
    tamper_any(str(db_path), "UPDATE events SET data = :data WHERE order_id = 3 AND seq = 2", data='{"by":"x"}')
    args = [command, "3"] if command != "doctor" else ["doctor", "--quick", "--now", iso(BASE + 3600 * 10**6)]
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stdout != ""  # still printed
    one_error_line(result.stderr)
    assert result.stderr.startswith("error: order 3: event seq 2: hash does not match the event's content")


def test_event_data_that_is_not_json_is_an_altered_event_not_a_crash(invoke, db_path):
    _each_status(invoke, {})
    tamper_any(str(db_path), "UPDATE events SET data = '{not json' WHERE order_id = 4 AND seq = 1")
    for args in (["show", "4"], ["history", "4", "--json"], ["doctor", "--now", iso(BASE + 3600 * 10**6)]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        one_error_line(result.stderr)
        assert result.stderr.startswith("error: order 4: event seq 1: hash does not match"), result.stderr


def test_an_unreadable_order_row_shows_what_its_events_say_and_exits_1(invoke, db_path):
    _each_status(invoke, {})
    tamper_any(str(db_path), "UPDATE orders SET status = 'bogus' WHERE id = 2")
    result = invoke("show", "2", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "effective"  # the rebuild of its events
    assert result.stderr.startswith("error: order 2: the stored order row cannot be read (KeyError: 'bogus')")
    code, report, _ = doctor_json(invoke, "--now", iso(BASE + 3600 * 10**6))
    assert code == 1 and [f["order"] for f in problems(report)] == [2]


def test_a_history_with_recomputed_hashes_that_the_rules_refuse_is_found(invoke, db_path):
    """A forger who rewrites an event and recomputes every hash keeps the chain; the rules do not."""
    from coopctl.lifecycle import event_hash

    _each_status(invoke, {})
    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT seq, kind, at, actor, operator, data FROM events WHERE order_id = 2 ORDER BY seq").fetchall()
    previous = "0" * 64
    for seq, kind, at, actor, operator, data in rows:
        data = json.loads(data)
        if seq == 2:
            at = at - 30 * DAY  # accepted before the order existed
        digest = event_hash(2, seq, kind, at, actor, operator, data, previous)
        conn.execute("UPDATE events SET at = ?, prev_hash = ?, hash = ? WHERE order_id = 2 AND seq = ?", (at, previous, digest, seq))
        previous = digest
    conn.execute("UPDATE orders SET last_hash = ? WHERE id = 2", (previous,))
    conn.commit()
    conn.close()
    quick = invoke("doctor", "--quick", "--now", iso(BASE + 3600 * 10**6))
    if quick.exit_code != 0 and "prev_hash" in quick.stderr:
        pytest.skip("the genesis hash is not '0' * 64 in this version")
    assert quick.exit_code == 0, quick.stderr  # the chain holds
    code, report, stderr = doctor_json(invoke, "--now", iso(BASE + 3600 * 10**6))
    assert code == 1
    [finding] = problems(report)
    assert (finding["check"], finding["order"], finding["seq"]) == ("rebuild", 2, 2)
    assert "does not follow the rules" in finding["action"]
    assert invoke("show", "2").exit_code == 1


def test_stored_ids_that_todays_rules_refuse_are_reported_not_rewritten(db_path, invoke):
    """An id stored before SPEC section 1 was tightened (a zero-width space, NFD): readable, reported."""
    from decimal import Decimal

    from coopctl import lifecycle
    from coopctl.lifecycle import Terms
    from coopctl.policy import Policy, ReminderOffsets

    store = Store(locate(str(db_path)))
    try:
        store.initialise(made_by="test")
        outcomes = []
        for order_id, merchant in ((1, "商家A\u200b"), (2, "Cafe\u0301"), (3, "ok")):
            terms = Terms(merchant, "达人", ("P",), "live", Decimal("10.00"), Decimal("0.00"), BASE + 5 * DAY)
            outcomes.append(lifecycle.create(order_id, terms, Policy(), ReminderOffsets(), BASE, "old"))
        with store.write() as tx:
            tx.insert_new(outcomes)
    finally:
        store.dispose()
    deliver_outbox(invoke)
    before = file_digest(db_path)
    code, report, stderr = doctor_json(invoke, "--now", iso(BASE + DAY // 2))
    assert code == 0, stderr  # a warning: nothing to repair, the database is healthy
    found = [f for f in report["findings"] if f["check"] == "ids"]
    assert [(f["order"], f["field"], f["ok"]) for f in found] == [(1, "merchant", True), (2, "merchant", True)]
    assert "U+200B" in found[0]["message"] and "NFC" in found[1]["message"]
    assert "\u200b" not in json.dumps(report, ensure_ascii=False).replace("\\u200b", "")  # shown escaped
    assert "never rewritten" in found[0]["action"]
    assert invoke("show", "1").exit_code == 0  # readable
    assert file_digest(db_path) == before


def test_stored_instants_outside_1970_to_9999_are_findings(invoke, db_path):
    _each_status(invoke, {})
    tamper_any(str(db_path), "UPDATE orders SET wake_at = :far WHERE id = 1", far=2**62)
    tamper_any(str(db_path), "UPDATE orders SET went_live_at = -5 WHERE id = 3")
    code, report, _ = doctor_json(invoke, "--now", iso(BASE + 3600 * 10**6))
    assert code == 1
    found = {(f["order"], f["field"]) for f in problems(report) if f["check"] == "instants"}
    assert found == {(1, "wake_at"), (3, "went_live_at")}


def test_the_orders_are_rebuilt_in_bounded_chunks(db_path, monkeypatch):
    """Memory follows the chunk, not the book: each read holds at most `chunk` rows and their events."""
    from coopctl.store import Tx

    build(db_path, 2000)
    sizes = {"rows": [], "events": []}
    rows_of, events_of = Tx.order_rows, Tx.events_of
    monkeypatch.setattr(Tx, "order_rows", lambda self, after, limit: sizes["rows"].append(len(r := rows_of(self, after, limit))) or r)
    monkeypatch.setattr(Tx, "events_of", lambda self, ids: sizes["events"].append(len(ids)) or events_of(self, ids))
    store = Store(locate(str(db_path)))
    try:
        report = examine(store, BASE + 40 * DAY, __import__("zoneinfo").ZoneInfo("UTC"), chunk=150)
    finally:
        store.dispose()
    assert report.orders == 2000
    assert [f.check for f in report.problems] == ["overdue", "outbox_backlog"]  # every order rebuilt and found as stored
    assert max(sizes["rows"]) == 150 and max(sizes["events"]) == 150
    assert len(sizes["rows"]) == 2000 // 150 + 2  # 14 chunks (the last one short) and the empty read that ends


def test_many_edited_rows_are_listed_up_to_20_then_counted(invoke, ticked, db_path):
    tamper(db_path, "UPDATE orders SET note = 'forged'")
    code, report, _ = doctor_json(invoke, "--now", LATER)
    assert code == 1
    found = problems(report)
    assert len(found) == 21 and all(f["check"] == "rebuild" for f in found)
    assert found[-1]["message"] == "10 more orders have an order row that is not what their events make (the first 20 are listed)"


def test_doctor_on_each_backend_finds_an_edited_row_and_an_edited_event(invoke, backend):
    env = {"COOPCTL_DB": backend}
    _each_status(invoke, env)
    now = iso(BASE + 3600 * 10**6)
    assert invoke("doctor", "--now", now, env=env).exit_code == 0
    tamper_any(backend, "UPDATE orders SET status = 'completed', failed_reviews = 5 WHERE id = 4")
    tamper_any(backend, "UPDATE events SET operator = 'mallory' WHERE order_id = 2 AND seq = 1")
    result = invoke("doctor", "--json", "--now", now, env=env)
    assert result.exit_code == 1
    found = {(f["check"], f["order"], f.get("field"), f["seq"]) for f in problems(json.loads(result.stdout))}
    assert found == {("rebuild", 4, "status", None), ("rebuild", 4, "failed_reviews", None), ("hash_chain", 2, None, 1)}
    quick = invoke("doctor", "--json", "--quick", "--now", now, env=env)
    assert {(f["check"], f["order"]) for f in problems(json.loads(quick.stdout))} == {("hash_chain", 2)}
    for command in ("show", "history"):
        shown = invoke(command, "2", env=env)
        assert shown.exit_code == 1 and shown.stderr.startswith("error: order 2: event seq 1: hash does not match")
        assert invoke(command, "4", env=env).stderr.startswith("error: order 4: the stored status is 'completed'")
    assert stored(backend, "SELECT status FROM orders WHERE id = 4") == "completed"  # reported, never rewritten
