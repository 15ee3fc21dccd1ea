"""Schema versions (coopctl/migrations.py): a version-1 database, built from the frozen DDL in
tests/fixtures/schema_v1.sql, is upgraded in place by any command, inside one transaction;
a newer one is refused (exit 5) naming both versions and is left untouched."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from coopctl import migrations
from coopctl.errors import StorageError
from coopctl.models import SCHEMA_VERSION
from coopctl.policy import DAY, iso
from coopctl.store import Store, locate
from conftest import base_env, coopctl_executable, read_rows
from dbtools import BASE, SCENARIOS, file_digest, scenario_outcome, verify_all

V1_DDL = Path(__file__).parent / "fixtures" / "schema_v1.sql"


def SEAL_ADDED(before: dict) -> dict:
    """What versions 3 and 4 add to the rows of an older database: for sealing, events.log_index
    (NULL: not sealed yet) and the empty seal tables; for disputes (`V4_ADDED`), the order columns
    and the new policy keys."""
    return {"events": [row + (None,) for row in before["events"]], "seal_nodes": [], "seal_heads": [], **V4_ADDED(before)}


V4_DEFAULTS = {
    "extension_response_window": "48h", "max_extensions": 2, "max_extension": "15d", "complaint_window": "90d",
    "arbitration_window": "5d", "appeal_window": "14d", "max_appeals": 1,
}  # SPEC section 1's defaults, copied here


def OUTBOX_ADDED(before: dict) -> dict:
    """What version 4 adds to each notification (SPEC section 5): its state (sent when it had a
    sent_at, else pending), attempts 0, and no next attempt, error or lease."""
    return {"notifications": sorted(
        (row + ("pending" if row[7] is None else "sent", 0, None, None, None, None) for row in before["notifications"]),
        key=repr,
    )}


def V4_ADDED(before: dict) -> dict:
    """What version 4 does to the rows of an older database: each order's policy gets the new keys'
    defaults, and each row the new columns as an order without extensions or disputes has them;
    the empty table of evidence contents; each notification its delivery state (OUTBOX_ADDED)."""
    policy_at = 9  # orders.policy, the tenth column of every version
    rows = []
    for row in before["orders"]:
        policy = json.dumps({**json.loads(row[policy_at]), **V4_DEFAULTS}, sort_keys=True, separators=(",", ":"))
        rows.append(row[:policy_at] + (policy,) + row[policy_at + 1 :] + (0, None, None, None, 0, None, None))
    return {"orders": sorted(rows, key=repr), "evidence_files": [], **OUTBOX_ADDED(before)}


def build_v1(path: Path, orders: int = 6) -> None:
    """A version-1 database as coopctl 0.1 left it: the frozen DDL, WAL, and a few orders in
    different statuses written through the storage layer (which has not changed for them)."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL.read_text())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    _insert_old(path, orders)


def _old_order_rows(tx) -> None:
    """Make `tx` write orders as a coopctl before schema 4 did: without the columns of disputes and
    extensions, and with the policy of six keys that version froze on each order."""
    from coopctl.rows import order_values
    from coopctl.store import V4_ORDER_DEFAULTS

    def insert_orders(orders):
        values = [order_values(o) for o in orders]
        for v in values:
            v["policy"] = json.dumps({k: json.loads(v["policy"])[k] for k in V3_POLICY_KEYS}, sort_keys=True, separators=(",", ":"))
        columns = tuple(c for c in values[0] if c not in V4_ORDER_DEFAULTS)
        sql = f"INSERT INTO orders ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        if tx.conn.dialect.name == "postgresql":
            sql = sql.replace("?", "%s")
        tx.conn.exec_driver_sql(sql, [tuple(v[c] for c in columns) for v in values])
        tx._insert_products(orders)

    tx.insert_orders = insert_orders


V3_POLICY_KEYS = ("accept_window", "cancel_response_window", "auto_deliver_after", "review_window", "makeup_window", "max_failed_reviews")


def _insert_old(path: Path, orders: int, *, products: bool = False) -> None:
    """A few orders in different statuses through the storage layer, as a version 1 or 2 coopctl
    wrote them: without order_products (schema 3), which those versions did not have (`products`:
    with them, as version 3 wrote them); never with the columns of schema 4."""
    store = Store(locate(str(path)))
    with store.write() as tx:  # write() itself never checks nor upgrades the schema
        _old_order_rows(tx)
        if not products:
            tx._insert_products = lambda orders: None
        tx.insert_new([
            scenario_outcome(i, BASE + i * 60_000_000, BASE + 5 * DAY, SCENARIOS[i % len(SCENARIOS)])
            for i in range(1, orders + 1)
        ])
    store.dispose()


V2_DDL = Path(__file__).parent / "fixtures" / "schema_v2.sql"


def build_v2(path: Path, orders: int = 6) -> None:
    """A version-2 database as coopctl 0.2 left it: the frozen DDL, WAL, a few orders."""
    conn = sqlite3.connect(path)
    conn.executescript(V2_DDL.read_text())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    _insert_old(path, orders)


def schema(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return {name: " ".join(sql.split()) for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        )}
    finally:
        conn.close()


def meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM coopctl_meta"))
    finally:
        conn.close()


def test_the_frozen_v1_fixture_is_version_1(db_path):
    build_v1(db_path)
    assert meta(db_path)["schema_version"] == "1"
    assert "tick_runs" not in schema(db_path)
    assert SCHEMA_VERSION == 4, "a new schema version needs a step in coopctl/migrations.py and a test here"


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--json"],
        ["show", "1"],
        ["history", "2", "--json"],
        ["tick", "--now", iso(BASE + 40 * DAY), "--json"],
        ["init"],
        ["export", "1", "2"],
        ["accept", "6", "--creator", "达人-6", "--at", iso(BASE + 3_600_000_000)],
    ],
    ids=lambda a: a[0],
)
def test_any_command_upgrades_a_version_1_database_in_place(run_coopctl, db_path, args):
    build_v1(db_path)
    before = read_rows(db_path)
    result = run_coopctl(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert meta(db_path)["schema_version"] == str(SCHEMA_VERSION)
    after = read_rows(db_path)
    assert "tick_runs" in after and "order_products" in after
    if args[0] not in ("tick", "accept"):  # every row of version 1 is still there, unchanged
        assert {k: v for k, v in after.items() if k not in ("coopctl_meta", "order_products")} == {
            **{k: v for k, v in before.items() if k != "coopctl_meta"}, "tick_runs": [], **SEAL_ADDED(before),
        }
    verify_all(db_path)


def test_an_upgraded_database_has_exactly_the_schema_of_a_new_one(run_coopctl, tmp_path, db_path):
    build_v1(db_path)
    assert run_coopctl("list").returncode == 0
    fresh = tmp_path / "fresh.db"
    assert run_coopctl("init", env={"COOPCTL_DB": str(fresh)}).returncode == 0
    assert schema(db_path) == schema(fresh)


def test_a_tick_on_an_upgraded_database_records_its_run(run_coopctl, db_path):
    build_v1(db_path)
    result = run_coopctl("tick", "--now", iso(BASE + 40 * DAY), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    conn = sqlite3.connect(db_path)
    try:
        runs = conn.execute("SELECT now, applied, reminders, operator, started_at <= finished_at FROM tick_runs").fetchall()
    finally:
        conn.close()
    assert runs == [(BASE + 40 * DAY, report["applied"], report["reminders"], "ops-test", 1)]
    assert report["applied"] > 0
    verify_all(db_path)


def test_the_upgrade_is_atomic_a_failing_step_leaves_version_1(db_path, monkeypatch):
    build_v1(db_path)
    before = read_rows(db_path)
    ran: list[str] = []

    def half_then_fail(conn):
        migrations._add_tick_runs(conn)  # the first half of the step is done...
        ran.append("created tick_runs")
        raise StorageError("simulated failure in the middle of an upgrade step")

    monkeypatch.setattr(migrations, "STEPS", (migrations.Step(1, "fails half way", half_then_fail), *migrations.STEPS[1:]))
    store = Store(locate(str(db_path)))
    with pytest.raises(StorageError, match="simulated failure"):
        store.require()
    store.dispose()
    assert ran == ["created tick_runs"]
    assert meta(db_path)["schema_version"] == "1"
    assert read_rows(db_path) == before  # ...and rolled back: no tick_runs, nothing else changed
    monkeypatch.undo()
    store = Store(locate(str(db_path)))
    store.require()  # the real step then upgrades it
    store.dispose()
    assert meta(db_path)["schema_version"] == str(SCHEMA_VERSION)


def test_a_failing_upgrade_is_one_line_and_exit_5_from_the_command_line(invoke, db_path, monkeypatch):
    build_v1(db_path)
    digest = file_digest(db_path)

    def broken(conn):
        conn.exec_driver_sql("CREATE TABLE tick_runs (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE tick_runs (id INTEGER PRIMARY KEY)")  # fails: already exists

    monkeypatch.setattr(migrations, "STEPS", (migrations.Step(1, "broken", broken), *migrations.STEPS[1:]))
    result = invoke("list")
    assert result.exit_code == 5
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: database problem")
    assert meta(db_path)["schema_version"] == "1"
    assert file_digest(db_path) == digest


def test_several_processes_opening_an_old_database_at_once_upgrade_it_once(tmp_path, db_path):
    build_v1(db_path)
    env = base_env(db_path)
    procs = [
        subprocess.Popen([coopctl_executable(), "list", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert meta(db_path)["schema_version"] == str(SCHEMA_VERSION)
    verify_all(db_path)


@pytest.mark.parametrize("command", [["list"], ["show", "1"], ["tick"], ["init"], ["doctor"]], ids=lambda a: a[0])
def test_a_newer_schema_is_refused_with_exit_5_naming_both_versions_and_left_untouched(run_coopctl, db_path, command):
    assert run_coopctl("init").returncode == 0
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE coopctl_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    digest = file_digest(db_path)
    result = run_coopctl(*command)
    assert result.returncode == 5
    assert result.stderr == (
        f"error: this database has schema version {SCHEMA_VERSION + 1}, newer than this coopctl understands "
        f"({SCHEMA_VERSION}); upgrade coopctl\n"
    )
    assert file_digest(db_path) == digest


def test_an_unreadable_schema_version_is_exit_5(run_coopctl, db_path):
    assert run_coopctl("init").returncode == 0
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE coopctl_meta SET value = 'two' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    result = run_coopctl("list")
    assert result.returncode == 5
    assert result.stderr == "error: this coopctl database records no readable schema version ('two'); restore it from a backup\n"


def test_upgrade_refuses_versions_it_has_no_steps_for(db_path):
    with pytest.raises(StorageError, match="schema version 0, which this coopctl .* cannot upgrade"):
        migrations.upgrade(None, 0)


# --------------------------------------------------------------------------- 2 -> 3 (list)


def test_the_frozen_v2_fixture_is_version_2(db_path):
    build_v2(db_path)
    assert meta(db_path)["schema_version"] == "2"
    assert "order_products" not in schema(db_path) and "ix_orders_created" not in schema(db_path)


@pytest.mark.parametrize("args", [["list", "--json"], ["show", "1"], ["init"]], ids=lambda a: a[0])
def test_any_command_upgrades_a_version_2_database_and_fills_order_products(run_coopctl, db_path, args):
    build_v2(db_path)
    before = read_rows(db_path)
    result = run_coopctl(*args)
    assert result.returncode == 0, result.stderr
    assert meta(db_path)["schema_version"] == str(SCHEMA_VERSION)
    after = read_rows(db_path)
    assert {k: v for k, v in after.items() if k not in ("coopctl_meta", "order_products")} == {
        **{k: v for k, v in before.items() if k != "coopctl_meta"}, **SEAL_ADDED(before),
    }
    products = sorted((p, oid) for oid, text in ((r[0], r[3]) for r in before["orders"]) for p in set(json.loads(text)))
    assert sorted(after["order_products"]) == products and products
    verify_all(db_path)


def test_an_upgraded_version_2_database_has_exactly_the_schema_of_a_new_one(run_coopctl, tmp_path, db_path):
    build_v2(db_path)
    assert run_coopctl("list").returncode == 0
    fresh = tmp_path / "fresh.db"
    assert run_coopctl("init", env={"COOPCTL_DB": str(fresh)}).returncode == 0
    assert schema(db_path) == schema(fresh)


def test_list_by_product_finds_the_orders_of_an_upgraded_database(run_coopctl, db_path):
    build_v2(db_path)
    listed = json.loads(run_coopctl("list", "--json").stdout)
    product = listed[0]["products"][0]
    result = run_coopctl("list", "--product", product, "--json")
    assert result.returncode == 0, result.stderr
    assert [o["id"] for o in json.loads(result.stdout)] == [o["id"] for o in listed if product in o["products"]]


def test_the_v3_upgrade_is_atomic_a_failing_list_step_leaves_version_2(db_path, monkeypatch):
    build_v2(db_path)
    before = read_rows(db_path)

    def half_then_fail(conn):
        migrations._V3_LIST_INDEXES[0].create(conn)
        raise StorageError("simulated failure in the middle of the list step")

    monkeypatch.setattr(migrations, "_v3_list", half_then_fail)
    store = Store(locate(str(db_path)))
    with pytest.raises(StorageError, match="simulated failure"):
        store.require()
    store.dispose()
    assert meta(db_path)["schema_version"] == "2"
    assert read_rows(db_path) == before and "ix_orders_created" not in schema(db_path)


def test_an_upgraded_version_2_database_seals_every_old_event(run_coopctl, tmp_path, db_path):
    build_v2(db_path)
    key = tmp_path / "seal.key"
    assert run_coopctl("keygen", "--out", str(key)).returncode == 0
    result = run_coopctl("seal", "--now", iso(BASE + 10 * DAY), "--json", env={"COOPCTL_SIGNING_KEY": str(key)})
    assert result.returncode == 0, result.stderr
    events = len(read_rows(db_path)["events"])
    assert json.loads(result.stdout)["size"] == events
    assert run_coopctl("seal", "--check", env={"COOPCTL_SIGNING_KEY": str(key)}).returncode == 0


# --------------------------------------------------------------------------- 3 -> 4 (disputes and extensions)

V3_DDL = Path(__file__).parent / "fixtures" / "schema_v3.sql"
V4_COLUMNS = ("extensions", "extension_requested_by", "proposed_latest_start_at", "disputed_by", "appeals", "ruling", "dispute_liable")


def build_v3(path: Path, orders: int = 6) -> None:
    """A version-3 database as coopctl 0.3 left it: the frozen DDL, WAL, a few orders with their
    order_products and a six-key policy each."""
    conn = sqlite3.connect(path)
    conn.executescript(V3_DDL.read_text())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    _insert_old(path, orders, products=True)


def test_the_frozen_v3_fixture_is_version_3_without_the_columns_of_disputes(db_path):
    build_v3(db_path)
    assert meta(db_path)["schema_version"] == "3"
    assert "order_products" in schema(db_path)
    assert not any(column in schema(db_path)["orders"] for column in V4_COLUMNS)
    policies = {row[9] for row in read_rows(db_path)["orders"]}
    assert policies and all(sorted(json.loads(p)) == sorted(V3_POLICY_KEYS) for p in policies)


@pytest.mark.parametrize("args", [["list", "--json"], ["show", "1"], ["init"], ["history", "2", "--json"]], ids=lambda a: a[0])
def test_any_command_upgrades_a_version_3_database_and_writes_the_policy_defaults_into_every_order(run_coopctl, db_path, args):
    build_v3(db_path)
    before = read_rows(db_path)
    result = run_coopctl(*args)
    assert result.returncode == 0, result.stderr
    assert meta(db_path)["schema_version"] == str(SCHEMA_VERSION)
    after = read_rows(db_path)
    assert {k: v for k, v in after.items() if k != "coopctl_meta"} == {
        **{k: v for k, v in before.items() if k != "coopctl_meta"}, **V4_ADDED(before),
    }
    for row in after["orders"]:
        policy = json.loads(row[9])
        assert {k: policy[k] for k in V4_DEFAULTS} == V4_DEFAULTS
    verify_all(db_path)


def test_an_upgraded_version_3_database_has_exactly_the_schema_of_a_new_one(run_coopctl, tmp_path, db_path):
    build_v3(db_path)
    assert run_coopctl("list").returncode == 0
    fresh = tmp_path / "fresh.db"
    assert run_coopctl("init", env={"COOPCTL_DB": str(fresh)}).returncode == 0
    assert schema(db_path) == schema(fresh)


def test_upgraded_orders_show_the_new_fields_and_keep_their_policy_when_the_configuration_changes(run_coopctl, tmp_path, db_path):
    build_v3(db_path)
    config = tmp_path / "other.toml"
    config.write_text('[policy]\ncomplaint_window = "1d"\nmax_appeals = 3\n', encoding="utf-8")
    result = run_coopctl("show", "1", "--json", env={"COOPCTL_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    order = json.loads(result.stdout)
    assert order["policy"]["complaint_window"] == "90d" and order["policy"]["max_appeals"] == 1
    assert (order["extensions"], order["extension_requested_by"], order["proposed_latest_start_at"]) == (0, None, None)
    assert (order["disputed_by"], order["appeals"], order["ruling"]) == (None, 0, None)
    doctor = run_coopctl("doctor", "--json", "--now", iso(BASE))
    assert json.loads(doctor.stdout)["schema_version"] == SCHEMA_VERSION
    assert all(f["ok"] for f in json.loads(doctor.stdout)["findings"] if f["check"] in ("rebuild", "schema")), doctor.stdout


def test_the_v4_upgrade_is_atomic_a_failing_disputes_step_leaves_version_3(db_path, monkeypatch):
    build_v3(db_path)
    before = read_rows(db_path)
    real = migrations._v4_disputes

    def then_fail(conn):
        real(conn)  # every column added and every policy rewritten...
        raise StorageError("simulated failure at the end of the disputes step")

    monkeypatch.setattr(migrations, "_v4_disputes", then_fail)
    store = Store(locate(str(db_path)))
    with pytest.raises(StorageError, match="simulated failure"):
        store.require()
    store.dispose()
    assert meta(db_path)["schema_version"] == "3"
    assert read_rows(db_path) == before and "extensions" not in schema(db_path)["orders"]  # ...and rolled back


def test_the_disputes_step_run_twice_changes_nothing_the_second_time(db_path):
    build_v3(db_path)
    store = Store(locate(str(db_path)))
    store.require()
    once = read_rows(db_path)
    with store.write() as tx:
        migrations._v4_disputes(tx.conn)
    store.dispose()
    assert read_rows(db_path) == once


def test_a_version_3_database_on_postgresql_is_upgraded_with_the_policy_defaults(invoke, pg_url):
    """PostgreSQL: a database of this version taken back to version 3 (the columns of disputes
    dropped, six-key policies), then opened by a command."""
    from sqlalchemy import create_engine, text

    from coopctl.policy import DAY as _DAY

    for i in (1, 2):
        created = invoke(
            "create", "--merchant", f"商家-{i}", "--creator", f"达人-{i}", "--product", "P1", "--form", "live",
            "--commission", "10", "--latest-start", iso(BASE + 5 * _DAY), "--at", iso(BASE), env={"COOPCTL_DB": pg_url},
        )
        assert created.exit_code == 0, created.stderr
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            for column in V4_COLUMNS:
                conn.execute(text(f"ALTER TABLE orders DROP COLUMN {column}"))
            for oid, policy in conn.execute(text("SELECT id, policy FROM orders")).all():
                old = json.dumps({k: json.loads(policy)[k] for k in V3_POLICY_KEYS}, sort_keys=True, separators=(",", ":"))
                conn.execute(text("UPDATE orders SET policy = :p WHERE id = :i"), {"p": old, "i": oid})
            conn.execute(text("UPDATE coopctl_meta SET value = '3' WHERE key = 'schema_version'"))
        result = invoke("show", "2", "--json", env={"COOPCTL_DB": pg_url})
        assert result.exit_code == 0, result.stderr
        order = json.loads(result.stdout)
        assert {k: order["policy"][k] for k in V4_DEFAULTS} == V4_DEFAULTS
        assert (order["extensions"], order["appeals"], order["ruling"]) == (0, 0, None)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT value FROM coopctl_meta WHERE key = 'schema_version'")).scalar() == str(SCHEMA_VERSION)
            policies = [json.loads(p) for (p,) in conn.execute(text("SELECT policy FROM orders"))]
            assert all({k: p[k] for k in V4_DEFAULTS} == V4_DEFAULTS for p in policies) and len(policies) == 2
            columns = {r[0] for r in conn.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"))}
            assert set(V4_COLUMNS) <= columns
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- 3 -> 4 (the outbox)

def build_v3_outbox(path: Path, orders: int = 6) -> None:
    """A version-3 database as coopctl 0.3 left it: the frozen DDL, WAL, a few orders; the
    notifications of the first two orders marked sent (as `--mark-sent` did)."""
    conn = sqlite3.connect(path)
    conn.executescript(V3_DDL.read_text())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    _insert_old(path, orders)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE notifications SET sent_at = ? WHERE order_id IN (1, 2)", (BASE + DAY,))
    conn.commit()
    conn.close()


def test_the_frozen_v3_fixture_is_version_3_with_the_old_outbox(db_path):
    build_v3_outbox(db_path)
    assert meta(db_path)["schema_version"] == "3"
    assert "ix_notifications_state_id" not in schema(db_path)
    rows = read_rows(db_path)["notifications"]
    assert rows and {len(r) for r in rows} == {8}


@pytest.mark.parametrize("args", [["notifications", "--json"], ["list"], ["init"]], ids=lambda a: a[0])
def test_any_command_upgrades_a_version_3_database_sent_ones_sent_others_pending(run_coopctl, db_path, args):
    build_v3_outbox(db_path)
    before = read_rows(db_path)
    result = run_coopctl(*args)
    assert result.returncode == 0, result.stderr
    assert meta(db_path)["schema_version"] == str(SCHEMA_VERSION)
    after = read_rows(db_path)
    assert {k: v for k, v in after.items() if k != "coopctl_meta"} == {
        **{k: v for k, v in before.items() if k != "coopctl_meta"}, **V4_ADDED(before),
    }
    states = {r[0]: r[8] for r in after["notifications"]}
    assert {states[r[0]] for r in before["notifications"] if r[1] in (1, 2)} == {"sent"}
    assert {states[r[0]] for r in before["notifications"] if r[1] not in (1, 2)} == {"pending"}
    verify_all(db_path)


def test_an_upgraded_version_3_outbox_has_exactly_the_schema_of_a_new_one(run_coopctl, tmp_path, db_path):
    build_v3_outbox(db_path)
    assert run_coopctl("list").returncode == 0
    fresh = tmp_path / "fresh.db"
    assert run_coopctl("init", env={"COOPCTL_DB": str(fresh)}).returncode == 0
    assert schema(db_path) == schema(fresh)
    assert "ix_notifications_sent" not in schema(db_path) and "ix_notifications_state_at" in schema(db_path)


def test_the_v4_upgrade_is_atomic_a_failing_outbox_step_leaves_version_3(db_path, monkeypatch):
    build_v3_outbox(db_path)
    before = read_rows(db_path)

    def half_then_fail(conn):
        conn.exec_driver_sql(f"ALTER TABLE notifications ADD COLUMN {migrations._V4_OUTBOX_COLUMNS[0]}")
        raise StorageError("simulated failure in the middle of the outbox step")

    monkeypatch.setattr(migrations, "_v4_outbox", half_then_fail)
    store = Store(locate(str(db_path)))
    with pytest.raises(StorageError, match="simulated failure"):
        store.require()
    store.dispose()
    assert meta(db_path)["schema_version"] == "3"
    assert read_rows(db_path) == before


def test_an_upgraded_version_3_database_is_dispatched(run_coopctl, db_path):
    build_v3_outbox(db_path)
    pending = sum(1 for r in read_rows(db_path)["notifications"] if r[7] is None)
    result = run_coopctl("dispatch", "--exec", "true", "--now", iso(BASE + 2 * DAY), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"claimed": pending, "sent": pending, "failed": 0, "dead": 0} and pending
    assert {r[8] for r in read_rows(db_path)["notifications"]} == {"sent"}


def test_the_v4_upgrade_on_postgresql_keeps_sent_ones_sent(pg_server):
    """The same step on PostgreSQL: a database made with the version-3 tables (the frozen SQLite
    DDL is not PostgreSQL's, so the version-3 notifications table is made by hand, its old
    indexes too), upgraded by `require`."""
    from sqlalchemy import create_engine, text

    url = pg_server()
    engine = create_engine(url)
    from coopctl.models import SQLModel
    from coopctl.store import Store

    with engine.begin() as conn:  # a version-4 schema, turned back into version 3 for the outbox
        SQLModel.metadata.create_all(conn)
        conn.execute(text("INSERT INTO coopctl_meta (key, value) VALUES ('application', 'coopctl'), ('schema_version', '3'), ('made_by', 'init')"))
        conn.execute(text("DROP INDEX ix_notifications_state_id"))
        conn.execute(text("DROP INDEX ix_notifications_state_at"))
        for column in ("state", "attempts", "next_attempt_at", "last_error", "claimed_by", "lease_until"):
            conn.execute(text(f"ALTER TABLE notifications DROP COLUMN {column}"))
        conn.execute(text("CREATE INDEX ix_notifications_sent ON notifications (sent_at, id)"))
        conn.execute(text("CREATE INDEX ix_notifications_pending_at ON notifications (sent_at, at)"))
    engine.dispose()
    store = Store(locate(url))
    with store.write() as tx:
        tx._insert_products = lambda orders: None
        tx.insert_new([scenario_outcome(i, BASE + i * 60_000_000, BASE + 5 * DAY, SCENARIOS[i % len(SCENARIOS)]) for i in (1, 2, 3)])
    with store.write() as tx:
        tx.conn.exec_driver_sql("UPDATE notifications SET sent_at = 1 WHERE order_id = 1")
    store.dispose()
    store = Store(locate(url))
    assert store.require() == SCHEMA_VERSION
    with store.read() as tx:
        rows = tx.conn.exec_driver_sql("SELECT order_id, state, attempts FROM notifications").fetchall()
        indexes = {r[0] for r in tx.conn.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'notifications'")}
    store.dispose()
    assert rows and {(o, s, a) for o, s, a in rows} == {(o, "sent" if o == 1 else "pending", 0) for o, _, _ in rows}
    assert {"ix_notifications_state_id", "ix_notifications_state_at"} <= indexes and "ix_notifications_sent" not in indexes
