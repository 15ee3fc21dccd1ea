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
from dbtools import BASE, build, file_digest

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
        "integrity", "journal", "schema", "hash_chain", "rebuild", "overdue", "last_tick",
    ]
    assert report["findings"][4]["message"] == "30 orders: every order row is what the rules make of its events"
    assert problems(report) == []
    last = report["findings"][-1]["message"]
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
    assert report["findings"][-1]["message"] == "no tick has completed a run on this database yet"


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
    code, report, stderr = doctor_json(invoke, "--now", LATER)
    assert code == 1
    [finding] = problems(report)
    assert finding["check"] == "overdue"
    assert finding["message"].startswith("cron is not running: 30 orders overdue since 2026-11-")
    assert finding["message"].endswith("(no tick has ever completed)")
    assert finding["action"] == "run `coopctl tick` and check the crontab (* * * * * coopctl tick)"
    one_error_line(stderr)
    assert invoke("tick", "--now", LATER).exit_code == 0
    assert doctor_json(invoke, "--now", LATER)[0] == 0


def test_a_deadline_just_passed_is_within_the_grace_period(invoke, db_path):
    result = invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                    "--commission", "10", "--latest-start", iso(BASE + 2 * DAY), "--at", iso(BASE))
    assert result.exit_code == 0, result.stderr
    deadline = BASE + DAY  # the accept reminder: 24h before the accept deadline (created + 2d by latest start)
    assert doctor_json(invoke, "--now", iso(deadline + 5 * MINUTE))[0] == 0
    code, report, _ = doctor_json(invoke, "--now", iso(deadline + 11 * MINUTE))
    assert code == 1 and "1 order overdue since" in problems(report)[0]["message"]
    assert doctor_json(invoke, "--now", iso(deadline + 11 * MINUTE), "--grace", "1h")[0] == 0


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
    assert [f["check"] for f in problems(report)] == ["overdue"]
    if backend.startswith("postgresql"):  # no file to check: the SQLite-only checks are left out
        assert [f["check"] for f in report["findings"]] == ["schema", "hash_chain", "rebuild", "overdue", "last_tick"]
    assert invoke("tick", "--now", LATER, env=env).exit_code == 0
    result = invoke("doctor", "--json", "--now", LATER, env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["findings"][-1]["message"].startswith("the last tick finished at ")
