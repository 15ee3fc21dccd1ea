"""PostgreSQL as a second backend (SPEC: "SQL stays portable so that PostgreSQL can serve").

The same commands give the same JSON, messages and exit codes on SQLite and on PostgreSQL; the
lifecycle, dispute, export/replay/import and concurrency flows run on both (`backend`); the move
from SQLite to PostgreSQL (`export --all` then `import`) keeps every history and hash; and
several `tick` processes with actions racing them apply each transition exactly once.

The PostgreSQL server is a throwaway one started from the local binaries (tests/pg.py); without
binaries or COOPCTL_TEST_PG_URL the PostgreSQL cases are skipped with a message saying so.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timezone
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import base_env, coopctl_executable
from coopctl.models import SCHEMA_VERSION
from dbtools import deliver_outbox

M, C = "商家A", "达人小王"
T0 = "2026-11-01T10:00:00+08:00"
LATEST = "2026-11-20T20:00:00+08:00"


def create_args(merchant: str = M, creator: str = C, at: str = T0, latest: str = LATEST, *extra: str) -> list[str]:
    return [
        "create", "--merchant", merchant, "--creator", creator, "--product", "P1", "--product", "P2", "--form", "live",
        "--commission", "12.5", "--ad-budget", "5000", "--latest-start", latest, "--at", at, *extra,
    ]


# The main flows as one script of commands: (args, expected exit code). Instants are fixed, so the
# output (ids, hashes, notifications) is the same wherever it runs.
SCRIPT: list[tuple[list[str], int]] = [
    (["init", "--json"], 0),
    # 1: the happy path: accept, go live, deliver, review --pass
    (create_args(at=T0) + ["--json"], 0),
    (["accept", "1", "--creator", C, "--at", "2026-11-01T12:00", "--json"], 0),
    (["go-live", "1", "--creator", C, "--at", "2026-11-05T20:00", "--json"], 0),
    (["deliver", "1", "--creator", C, "--evidence", "https://v.douyin.com/x", "--at", "2026-11-05T23:00", "--json"], 0),
    (["review", "1", "--merchant", M, "--pass", "--at", "2026-11-06T10:00", "--json"], 0),
    # 2: rejected; 3: withdrawn
    (create_args(creator="达人阿珍") + ["--json"], 0),
    (["reject", "2", "--creator", "达人阿珍", "--reason", "档期冲突", "--at", "2026-11-01T11:00", "--json"], 0),
    (create_args() + ["--note", "备注", "--json"], 0),
    (["withdraw", "3", "--merchant", M, "--reason", "预算调整", "--at", "2026-11-01T11:00", "--json"], 0),
    # 4: cancelled by agreement; 5: a declined cancellation, later overdue (tick)
    (create_args() + ["--json"], 0),
    (["accept", "4", "--creator", C, "--at", "2026-11-01T11:00"], 0),
    (["cancel-request", "4", "--merchant", M, "--reason", "换品", "--at", "2026-11-02T10:00", "--json"], 0),
    (["cancel-confirm", "4", "--creator", C, "--at", "2026-11-02T11:00", "--json"], 0),
    (create_args() + ["--json"], 0),
    (["accept", "5", "--creator", C, "--at", "2026-11-01T11:00"], 0),
    (["cancel-request", "5", "--creator", C, "--at", "2026-11-02T10:00"], 0),
    (["cancel-decline", "5", "--merchant", M, "--at", "2026-11-02T11:00", "--json"], 0),
    # 6: live, then tick delivers (auto) and, 14 days later, auto-accepts: a cascade in one tick
    (create_args() + ["--json"], 0),
    (["accept", "6", "--creator", C, "--at", "2026-11-01T11:00"], 0),
    (["go-live", "6", "--creator", C, "--at", "2026-11-03T20:00"], 0),
    # 7: the dispute: a failed review, a make-up delivery, a second failure, then no make-up in time
    (create_args() + ["--json"], 0),
    (["accept", "7", "--creator", C, "--at", "2026-11-01T11:00"], 0),
    (["deliver", "7", "--creator", C, "--at", "2026-11-04T21:00"], 0),
    (["review", "7", "--merchant", M, "--fail", "--reason", "未展示商品", "--at", "2026-11-05T10:00", "--json"], 0),
    (["deliver", "7", "--creator", C, "--evidence", "补播", "--at", "2026-11-07T21:00"], 0),
    (["review", "7", "--merchant", M, "--fail", "--reason", "仍未展示", "--at", "2026-11-08T10:00", "--json"], 0),
    # 8: idempotency; 9: left pending, expires at tick
    (create_args() + ["--idempotency-key", "k-8", "--json"], 0),
    (create_args() + ["--idempotency-key", "k-8", "--json"], 0),
    (create_args(creator="达人大刘") + ["--idempotency-key", "k-8"], 1),
    (create_args(creator="达人大刘") + ["--json"], 0),
    # refusals (1), invalid input (2), unknown orders (3)
    (["accept", "1", "--creator", C, "--at", "2026-11-07T10:00"], 1),
    (["accept", "9", "--creator", C, "--at", "2026-11-01T12:00"], 1),
    (["go-live", "5", "--creator", C, "--at", "2026-11-01T09:00"], 1),
    (["accept", "9", "--creator", "达人大刘", "--at", "2026-11-04T10:00"], 1),
    (["review", "7", "--merchant", M, "--fail", "--at", "2026-11-08T11:00"], 2),
    (create_args(at="yesterday"), 2),
    (create_args(latest="2026-10-01T00:00"), 2),
    (["show", "999"], 3),
    (["accept", "999", "--creator", C], 3),
    # reading
    (["list", "--json"], 0),
    (["list", "--status", "pending", "--due-before", "2026-12-01", "--json"], 0),
    (["show", "7", "--json"], 0),
    (["history", "1", "--json"], 0),
    # tick: a dry run, the real one, a second run that changes nothing, then a cascade
    (["tick", "--now", "2026-11-10T00:00", "--dry-run", "--json"], 0),
    (["tick", "--now", "2026-11-10T00:00", "--json"], 0),
    (["tick", "--now", "2026-11-10T00:00", "--json"], 0),
    (["tick", "--now", "2027-01-01T00:00", "--json"], 0),
    (["list", "--json"], 0),
    (["show", "6", "--json"], 0),
    (["show", "7", "--json"], 0),
    (["notifications", "--json"], 0),
    (["export", "--all", "--at", "2027-01-02T00:00"], 0),
]


def run_script(invoke, db: str) -> list[tuple[int, str, str]]:
    results = []
    for args, code in SCRIPT:
        result = invoke(*args, env={"COOPCTL_DB": db})
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        if code != 0:
            assert result.stdout == "" and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
        results.append((result.exit_code, result.stdout.replace(db, "<db>"), result.stderr.replace(db, "<db>")))
    return results


@pytest.mark.postgres
def test_every_command_gives_the_same_json_messages_and_exit_codes_on_both_backends(invoke, tmp_path, pg_url):
    on_sqlite = run_script(invoke, str(tmp_path / "coopctl.db"))
    on_postgres = run_script(invoke, pg_url)
    for (args, _), mine, theirs in zip(SCRIPT, on_sqlite, on_postgres):
        assert theirs == mine, args
    statuses = {o["id"]: o["status"] for o in json.loads(on_postgres[-5][1])}
    assert statuses == {
        1: "completed", 2: "rejected", 3: "withdrawn", 4: "cancelled", 5: "closed_overdue", 6: "completed",
        7: "disputed", 8: "expired", 9: "expired",
    }
    ticks = [json.loads(out) for (args, _), (_, out, _) in zip(SCRIPT, on_postgres) if args[0] == "tick"]
    assert ticks[0] == ticks[1] and ticks[1]["applied"] > 0 and ticks[2]["applied"] == 0
    assert ticks[3]["by_kind"]["auto_accepted"] == 1  # order 6: delivered (auto), then auto-accepted


# --------------------------------------------------------------------------- through the installed entry point


@pytest.fixture
def cli(tmp_path: Path):
    """cli(db, *args) runs the installed `coopctl` with COOPCTL_DB=db."""
    executable = coopctl_executable()

    def run(db: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [executable, *args], capture_output=True, text=True, encoding="utf-8", env=base_env(db),
            cwd=tmp_path, input=input, timeout=120,
        )

    return run


def ok_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_lifecycle_through_the_installed_entry_point(cli, backend):
    order = ok_json(cli(backend, *create_args(), "--json"))
    assert (order["id"], order["status"], order["terms"]) == (1, "pending", "not_yet_effective")
    assert ok_json(cli(backend, "accept", "1", "--creator", C, "--at", "2026-11-01T12:00", "--json"))["status"] == "effective"
    assert ok_json(cli(backend, "go-live", "1", "--creator", C, "--at", "2026-11-02T20:00", "--json"))["status"] == "live"
    refused = cli(backend, "review", "1", "--merchant", M, "--pass", "--at", "2026-11-02T21:00")
    assert (refused.returncode, refused.stdout) == (1, "") and refused.stderr.startswith("error: ")
    report = ok_json(cli(backend, "tick", "--now", "2026-12-01T00:00", "--json"))
    assert report["applied"] == 2 and report["by_kind"] == {"delivered": 1, "auto_accepted": 1}
    shown = ok_json(cli(backend, "show", "1", "--json"))
    assert (shown["status"], shown["delivery_mode"]) == ("completed", "auto")
    assert [e["seq"] for e in shown["events"]] == [1, 2, 3, 4, 5]
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(shown["events"], shown["events"][1:]))


def test_commands_that_need_a_database_exit_5_without_one(invoke, backend):
    result = invoke("list", env={"COOPCTL_DB": backend})  # no tables yet: the file is missing, the server database empty
    assert result.exit_code == 5 and result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ") and "coopctl init" in result.stderr


@pytest.mark.postgres
def test_a_missing_or_unreachable_server_database_exits_5_in_one_line_without_the_password(invoke, pg_server):
    missing = pg_server.url("no_such_db").replace("postgres@", "postgres:s3cret@")
    result = invoke("show", "1", env={"COOPCTL_DB": missing})
    assert result.exit_code == 5 and result.stdout == ""
    assert result.stderr.startswith("error: ") and 'database "no_such_db" does not exist' in result.stderr
    assert "s3cret" not in result.stderr and len(result.stderr.splitlines()) == 1
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = invoke("tick", env={"COOPCTL_DB": f"postgresql+psycopg://u:s3cret@127.0.0.1:{closed_port}/x"})
    assert refused.exit_code == 5 and "cannot reach the PostgreSQL server" in refused.stderr
    assert "s3cret" not in refused.stderr and len(refused.stderr.splitlines()) == 1


@pytest.mark.postgres
def test_init_creates_and_versions_the_schema_as_on_sqlite(invoke, pg_url):
    from sqlalchemy import create_engine, inspect, text

    from coopctl.models import SCHEMA_VERSION

    first = invoke("init", "--json", env={"COOPCTL_DB": pg_url})
    again = invoke("init", "--json", env={"COOPCTL_DB": pg_url})
    assert json.loads(first.stdout)["created"] is True and json.loads(again.stdout)["created"] is False
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            meta = dict(conn.execute(text("SELECT key, value FROM coopctl_meta")).all())
            assert meta["application"] == "coopctl" and meta["schema_version"] == str(SCHEMA_VERSION)
            assert {"orders", "events", "notifications", "coopctl_meta"} <= set(inspect(conn).get_table_names())
            conn.execute(text("UPDATE coopctl_meta SET value = '99' WHERE key = 'schema_version'"))
            conn.commit()
    finally:
        engine.dispose()
    newer = invoke("list", env={"COOPCTL_DB": pg_url})
    assert newer.exit_code == 5 and "schema version 99" in newer.stderr


# --------------------------------------------------------------------------- export, replay, import; the move


def _history(invoke, db: str) -> None:
    for args, code in SCRIPT[:32]:  # every status but the tick ones
        assert invoke(*args, env={"COOPCTL_DB": db}).exit_code == code, args


def test_export_replay_import_round_trip(invoke, backend, tmp_path, request):
    _history(invoke, backend)
    exported = invoke("export", "--all", "--out", "all.json", "--at", "2026-11-09T00:00", env={"COOPCTL_DB": backend})
    assert exported.exit_code == 0, exported.stderr
    assert invoke("replay", "all.json", env={"COOPCTL_DB": backend}).exit_code == 0
    target = request.getfixturevalue("pg_server")() if "://" in backend else str(tmp_path / "copy.db")
    imported = invoke("import", "all.json", "--json", env={"COOPCTL_DB": target})
    assert imported.exit_code == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == list(range(1, 10))
    again = invoke("export", "--all", "--at", "2026-11-09T00:00", env={"COOPCTL_DB": target})
    assert again.stdout == (tmp_path / "all.json").read_text(encoding="utf-8")
    twice = invoke("import", "all.json", env={"COOPCTL_DB": target})
    assert twice.exit_code == 1 and "already exist" in twice.stderr
    # new orders come after the imported ids, and tick carries on where the source left off
    new = invoke(*create_args(at="2026-11-09T01:00"), "--json", env={"COOPCTL_DB": target})
    assert json.loads(new.stdout)["id"] == 10
    reports = [invoke("tick", "--now", "2027-01-01T00:00", "--json", env={"COOPCTL_DB": db}) for db in (backend, target)]
    source, copy = (json.loads(r.stdout) for r in reports)
    assert source["applied"] > 0 and copy["by_kind"] == {**source["by_kind"], "expired": source["by_kind"]["expired"] + 1}
    deliver_outbox(invoke, env={"COOPCTL_DB": target})
    doctor = invoke("doctor", "--json", env={"COOPCTL_DB": target})
    assert doctor.exit_code == 0 and json.loads(doctor.stdout)["healthy"] is True, doctor.stdout


@pytest.mark.postgres
def test_moving_from_sqlite_to_postgresql_keeps_every_history_and_hash(invoke, cli, tmp_path, pg_url):
    """README.md's recipe: `coopctl --db old.db export --all | coopctl --db URL import -`."""
    old = str(tmp_path / "old.db")
    demo = json.loads(invoke("--db", old, "demo", "--json").stdout)
    assert len(demo) == 17
    document = cli(old, "export", "--all")
    assert document.returncode == 0, document.stderr
    moved = ok_json(cli(pg_url, "import", "-", "--json", input=document.stdout))
    assert moved["imported"] == [o["id"] for o in demo]

    def run(db: str, *args: str) -> str:
        result = invoke(*args, env={"COOPCTL_DB": db})
        assert result.exit_code == 0, result.stderr
        return result.stdout

    at = ("--at", "2030-01-01T00:00")
    assert run(pg_url, "export", "--all", *at) == run(old, "export", "--all", *at)
    # the PostgreSQL database carries on: the next tick fires the same deadlines, new ids follow
    now = ("--now", "2031-01-01T00:00", "--json")
    assert json.loads(run(pg_url, "tick", *now)) == json.loads(run(old, "tick", *now))
    assert json.loads(run(pg_url, *create_args(at="2030-06-01T00:00", latest="2030-07-01T00:00"), "--json"))["id"] == 18


# --------------------------------------------------------------------------- concurrency


def _build_due(db: str, due: int, now: int) -> None:
    """`due` pending orders whose accept window has passed at `now`, through the rules and the bulk path."""
    from coopctl import lifecycle
    from coopctl.lifecycle import Terms
    from coopctl.policy import DAY, Policy, ReminderOffsets
    from coopctl.store import Store, locate

    store = Store(locate(db))
    store.initialise(made_by="test")
    terms = Terms(M, C, ("P1",), "live", Decimal("12.50"), Decimal("0.00"), now + 30 * DAY)
    outcomes = [
        lifecycle.create(i, terms, Policy(), ReminderOffsets(), now - 3 * DAY - (i % 3600) * 1_000_000, "builder")
        for i in range(1, due + 1)
    ]
    with store.write() as tx:
        tx.insert_new(outcomes)
        tx.follow_explicit_ids()
    store.dispose()


def test_concurrent_ticks_and_actions_apply_each_transition_exactly_once(backend, tmp_path):
    """4 `tick` processes share 2,000 due orders (batches of 100) while 4 `accept`s race them on orders they are
    about to expire: every order ends either accepted or expired, never both, never twice."""
    from sqlalchemy import create_engine, text

    from coopctl.policy import DAY, MINUTE, iso, parse_instant
    from coopctl.store import locate

    now = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
    due, contested = 2000, [1, 999, 1001, 1999]
    _build_due(backend, due, now)
    env = base_env(backend)
    executable = coopctl_executable()
    created = {i: now - 3 * DAY - (i % 3600) * 1_000_000 for i in contested}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
        )

    procs = []
    for i in contested:
        procs.append(start("tick", "--now", iso(now), "--batch", "100", "--json"))
        procs.append(start("accept", str(i), "--creator", C, "--at", iso(created[i] + 3 * DAY - MINUTE)))
    results = [(p.args[1], p.args[2], *p.communicate(timeout=180), p.returncode) for p in procs]
    ticks = [r for r in results if r[0] == "tick"]
    accepts = {int(r[1]): r for r in results if r[0] == "accept"}
    assert len(ticks) == 4 and all(code == 0 for *_, code in ticks), ticks
    assert all(code in (0, 1) for *_, code in accepts.values()), accepts
    accepted = {i for i, r in accepts.items() if r[-1] == 0}
    applied = sum(json.loads(out)["applied"] for _, _, out, _, _ in ticks)
    assert applied == due - len(accepted)

    engine = create_engine(locate(backend).url)
    try:
        with engine.connect() as conn:
            kinds = dict(conn.execute(text("SELECT kind, count(*) FROM events GROUP BY kind")).all())
            assert kinds == {"created": due, "expired": due - len(accepted), **({"accepted": len(accepted)} if accepted else {})}
            twice = conn.execute(text(
                "SELECT order_id FROM events WHERE kind IN ('expired', 'accepted') GROUP BY order_id HAVING count(*) > 1"
            )).all()
            assert twice == []
            gaps = conn.execute(text(
                "SELECT o.id FROM orders o JOIN events e ON e.order_id = o.id GROUP BY o.id, o.last_seq "
                "HAVING count(*) <> o.last_seq OR max(e.seq) <> o.last_seq"
            )).all()
            assert gaps == []
            statuses = dict(conn.execute(text("SELECT id, status FROM orders WHERE id IN :ids").bindparams(
                __import__("sqlalchemy").bindparam("ids", expanding=True)), {"ids": contested}).all())
            assert {i for i, s in statuses.items() if s == "effective"} == accepted
            assert conn.execute(text("SELECT count(*) FROM orders WHERE wake_at <= :now"), {"now": now}).scalar() == 0
            notes = conn.execute(text("SELECT count(*) FROM notifications WHERE kind = 'expired'")).scalar()
            assert notes == 2 * (due - len(accepted))
    finally:
        engine.dispose()


def test_tick_with_a_helper_process_writes_what_it_writes_without(backend, monkeypatch, request):
    """The helper process decides the chunks (given their rows on PostgreSQL, their ids on a SQLite
    file in WAL mode): the histories and the outbox are the same as a tick without it."""
    from sqlalchemy import text

    from coopctl import tickwork
    from coopctl.config import Settings
    from coopctl.policy import parse_instant
    from coopctl.service import Service, tick
    from coopctl.store import Store, locate

    monkeypatch.setattr(tickwork, "CHUNK", 40)
    now = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
    dumps = []
    for helper in (True, False):
        if helper:
            db = backend
        elif backend.startswith("postgresql"):
            db = request.getfixturevalue("pg_server")()
        else:
            db = backend.replace(".db", "-without.db")
        _build_due(db, 300, now)
        store = Store(locate(db))
        try:
            report = tick(Service(store, Settings(), "cron"), now, batch=120, helper=helper)
            assert report.applied == 300
            with store.read() as tx:
                dumps.append((
                    tx.conn.execute(text("SELECT order_id, seq, kind, at, data, prev_hash, hash FROM events ORDER BY order_id, seq")).all(),
                    tx.conn.execute(text("SELECT id, order_id, recipient, kind, at, text FROM notifications ORDER BY id")).all(),
                ))
        finally:
            store.dispose()
    assert dumps[0] == dumps[1]


@pytest.mark.parametrize("orders", [3, 120])  # below and above the size where PostgreSQL switches to COPY
def test_a_batch_that_lost_a_race_is_busy_and_writes_nothing(backend, orders):
    """Tx.save writes an order only if its last seq is still the one read: one order changed behind
    the batch's back makes the whole batch exit 4 (Busy) with nothing written."""
    from sqlalchemy import text

    from coopctl import lifecycle
    from coopctl.errors import Busy
    from coopctl.policy import parse_instant
    from coopctl.store import Store, locate

    now = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
    _build_due(backend, orders, now)
    store = Store(locate(backend))
    try:
        with store.read() as tx:
            batch = tx.due(now, limit=1000)
        with store.write() as tx:
            tx.conn.execute(text("UPDATE orders SET last_seq = 7 WHERE id = :id"), {"id": batch[-1].id})
        with pytest.raises(Busy):
            with store.write() as tx:
                tx.save(batch, [lifecycle.tick_order(o, now, "test") for o in batch])
        with store.read() as tx:
            assert tx.count_due(now) == orders
            assert tx.conn.execute(text("SELECT count(*) FROM events WHERE kind <> 'created'")).scalar() == 0
    finally:
        store.dispose()


def test_dispatchers_marking_sent_at_once_never_hand_out_the_same_notification(backend):
    """`notifications --pending --mark-sent` from several dispatchers at once: each pending
    notification is handed to exactly one of them (PostgreSQL: rows claimed with SKIP LOCKED)."""
    import threading

    from coopctl.config import Settings
    from coopctl.policy import parse_instant
    from coopctl.service import Service, notifications
    from coopctl.store import Store, locate

    now = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
    _build_due(backend, 400, now)  # each created order has two notifications for its creator
    barrier, handed, errors = threading.Barrier(4), [], []

    def dispatch() -> None:
        store = Store(locate(backend))
        try:
            barrier.wait()
            for _ in range(3):
                rows = notifications(Service(store, Settings(), "dispatcher"), pending=True, mark_sent_at=now)
                handed.extend(r.id for r in rows)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=dispatch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(handed) == len(set(handed)) == 800


# --------------------------------------------------------------------------- list (SPEC section 4, "Lists")

LIST_ARGS = [
    ["--sort", "-deadline"], ["--sort", "created"], ["--status", "effective", "--status", "pending"],
    ["--terms", "void", "--sort", "-id"], ["--merchant", "商家*"], ["--creator", "达人阿珍"], ["--product", "P2"],
    ["--product", "P*"], ["--liable", "creator"], ["--created-after", T0], ["--due-before", "2026-12-01"], ["--overdue"],
]


def _walk(invoke, db: str, args: list[str]) -> list[int]:
    import shlex

    command, ids = ["list", *args, "--limit", "2", "--json"], []
    while True:
        result = invoke(*command, env={"COOPCTL_DB": db})
        assert result.exit_code == 0, result.stderr
        ids += [o["id"] for o in json.loads(result.stdout)]
        if "next page: " not in result.stderr:
            return ids
        command = shlex.split(result.stderr.split("next page: ", 1)[1])[1:]
        if "--db" in command:
            del command[command.index("--db"):command.index("--db") + 2]


def test_list_filters_sorts_and_pages_alike_on_both_backends(invoke, tmp_path, pg_url):
    sqlite_db = str(tmp_path / "list.db")
    for db in (sqlite_db, pg_url):
        _history(invoke, db)
    for args in LIST_ARGS:
        on_sqlite = invoke("list", *args, "--json", env={"COOPCTL_DB": sqlite_db})
        on_pg = invoke("list", *args, "--json", env={"COOPCTL_DB": pg_url})
        assert on_sqlite.exit_code == on_pg.exit_code == 0, (args, on_sqlite.stderr, on_pg.stderr)
        assert json.loads(on_pg.stdout) == json.loads(on_sqlite.stdout), args
        assert _walk(invoke, pg_url, args) == [o["id"] for o in json.loads(on_pg.stdout)], args


def test_a_version_2_database_on_postgresql_is_upgraded_with_order_products(invoke, pg_url):
    from sqlalchemy import create_engine, text

    from coopctl.models import SCHEMA_VERSION

    _history(invoke, pg_url)
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:  # back to version 2: no order_products, none of list's indexes
            conn.execute(text("DROP TABLE order_products"))
            for name in ("ix_orders_created", "ix_orders_liable", "ix_orders_status_deadline", "ix_orders_status_created",
                         "ix_notifications_state_id", "ix_notifications_state_at"):
                conn.execute(text(f"DROP INDEX {name}"))
            for column in ("state", "attempts", "next_attempt_at", "last_error", "claimed_by", "lease_until"):  # schema 4's outbox
                conn.execute(text(f"ALTER TABLE notifications DROP COLUMN {column}"))
            conn.execute(text("CREATE INDEX ix_notifications_sent ON notifications (sent_at, id)"))
            conn.execute(text("DROP TABLE seal_nodes"))  # and none of the seal's tables and column
            conn.execute(text("DROP TABLE seal_heads"))
            conn.execute(text("ALTER TABLE events DROP COLUMN log_index"))
            conn.execute(text("DROP TABLE evidence_files"))  # and version 4's evidence contents
            conn.execute(text("UPDATE coopctl_meta SET value = '2' WHERE key = 'schema_version'"))
        result = invoke("list", "--product", "P2", "--json", env={"COOPCTL_DB": pg_url})
        assert result.exit_code == 0, result.stderr
        assert [o["id"] for o in json.loads(result.stdout)] == list(range(1, 10))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM order_products")).scalar() == 18
            assert conn.execute(text("SELECT value FROM coopctl_meta WHERE key = 'schema_version'")).scalar() == str(SCHEMA_VERSION)
            assert conn.execute(text("SELECT count(*) FROM notifications WHERE state = 'pending'")).scalar() > 0
            assert conn.execute(text("SELECT count(*) FROM evidence_files")).scalar() == 0
    finally:
        engine.dispose()


def _build_mixed(db: str, orders: int, now: int) -> None:
    """`orders` orders due at `now`, a third each: pending past the accept window (tick changes
    only the columns every move changes), extension_requested past the response window (the
    extension lapses: the proposal's columns change too), and ruled past the appeal window (the
    ruling becomes final: the ruling column changes)."""
    from coopctl import lifecycle
    from coopctl.lifecycle import Action, Party, Terms
    from coopctl.policy import DAY, HOUR, Policy, ReminderOffsets
    from coopctl.store import Store, locate

    store = Store(locate(db))
    store.initialise(made_by="test")
    outcomes = []
    for i in range(1, orders + 1):
        created = now - 40 * DAY - (i % 3600) * 1_000_000
        terms = Terms(M, C, (f"P{i}",), "live", Decimal("12.50"), Decimal("0.00"), now + 30 * DAY)
        outcome = lifecycle.create(i, terms, Policy(), ReminderOffsets(), created, "builder")
        steps = []
        if i % 3 == 1:
            steps = [(Action.ACCEPT, Party.CREATOR, C, created + HOUR, {}),
                     (Action.EXTEND_REQUEST, Party.MERCHANT, M, now - 4 * DAY, {"proposal": now + 31 * DAY})]
        elif i % 3 == 2:
            steps = [(Action.ACCEPT, Party.CREATOR, C, created + HOUR, {}),
                     (Action.DELIVER, Party.CREATOR, C, created + 2 * HOUR, {"evidence": "https://v.example/x"}),
                     (Action.REVIEW_FAIL, Party.MERCHANT, M, created + 3 * HOUR, {"reason": "not shown"}),
                     (Action.ARBITRATE, None, None, created + 20 * DAY, {"ruling": "merchant", "reason": "shown late"})]
        for action, party, who, at, extra in steps:
            outcome = outcome.then(lifecycle.act(outcome.order, action, party, who, at, "builder", **extra))
        outcomes.append(outcome)
    with store.write() as tx:
        tx.insert_new(outcomes)
        tx.follow_explicit_ids()
    store.dispose()


@pytest.mark.parametrize("batch", [1, 4, 500])  # one row per statement; below and above the bulk paths' sizes
def test_tick_writes_every_column_of_each_order_as_the_rules_give_it(backend, batch):
    """Tick writes the columns every move changes alone when the others stay as read, and every
    state column when an extension lapses or a ruling becomes final: each stored order, every
    field, is what the rules give the order on its own (one tick, batches mixing both kinds)."""
    from coopctl import lifecycle
    from coopctl.config import Settings
    from coopctl.lifecycle import Status
    from coopctl.policy import parse_instant
    from coopctl.service import Service, tick
    from coopctl.store import Store, locate

    now = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
    _build_mixed(backend, 300, now)
    store = Store(locate(backend))
    try:
        with store.read() as tx:
            before = tx.load_many(tx.all_order_ids())
        assert {o.status for o in before} == {Status.PENDING, Status.EXTENSION_REQUESTED, Status.RULED}
        expected = {o.id: lifecycle.tick_order(o, now, "cron", Settings().tz).order for o in before}
        report = tick(Service(store, Settings(), "cron"), now, batch=batch)
        assert report.applied == 300
        with store.read() as tx:
            after = {o.id: o for o in tx.load_many(tx.all_order_ids())}
    finally:
        store.dispose()
    assert {o.status for o in after.values()} == {Status.EXPIRED, Status.EFFECTIVE, Status.RESOLVED}
    assert all(o.ruling.final for o in after.values() if o.status is Status.RESOLVED)
    assert all(o.proposed_latest_start_at is None for o in after.values())
    assert after == expected


def test_a_batch_of_both_widths_that_lost_a_race_is_busy_and_writes_nothing(backend):
    """The guard holds across both kinds of state row: an order whose extension lapses, changed
    behind the batch's back, makes the whole batch Busy, the narrower rows unwritten too."""
    from sqlalchemy import text

    from coopctl import tickwork
    from coopctl.config import Settings
    from coopctl.errors import Busy
    from coopctl.policy import parse_instant
    from coopctl.rows import MOVE_COLUMNS, ORDER_COLUMNS, STATE_COLUMNS, order_values
    from coopctl.store import Store, locate

    now = parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)
    _build_mixed(backend, 120, now)
    store = Store(locate(backend))
    try:
        with store.read() as tx:
            batch = tx.due(now, limit=1000)
            assert len(batch) == 120
        with store.write() as tx:
            tx.conn.execute(text("UPDATE orders SET last_seq = 9 WHERE id = :id"), {"id": 118})  # 118 % 3 == 1
        rows = [tuple(order_values(o)[name] for name in ORDER_COLUMNS) for o in batch]
        decided = tickwork.decide(rows, now, "test", Settings().tz)
        assert {len(state) for state in decided.states} == {len(MOVE_COLUMNS) + 2, len(STATE_COLUMNS) + 2}
        with pytest.raises(Busy):
            with store.write() as tx:
                tx.save_rows(decided.states, decided.events, decided.notifications)
        with store.read() as tx:
            assert tx.count_due(now) == 120
            assert tx.conn.execute(text("SELECT count(*) FROM events WHERE kind IN ('expired', 'extension_lapsed')")).scalar() == 0
    finally:
        store.dispose()
