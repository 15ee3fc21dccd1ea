"""The installed `coopctl` entry point, run as a subprocess (as cron and operators run it): the
main flows, and that failures exit with their code, print one `error:` line, never a traceback,
and create or change nothing. Each call costs about a second, so the many cases live in
test_cli.py (CliRunner); here are the paths where the real process matters."""

from __future__ import annotations

import json
import sqlite3

M, C = "商家A", "达人小王"
T0 = "2026-11-01T10:00:00+08:00"
LATEST = "2026-11-20T20:00:00+08:00"
OPERATOR = "ops-test"  # what conftest puts in COOPCTL_OPERATOR
ANSI = "\x1b["
ORDER_FIELDS = {
    "id", "merchant", "creator", "products", "form", "commission_pct", "ad_budget", "latest_start_at", "note",
    "status", "terms", "liable_party", "created_at", "deadline", "cancel_requested_by", "went_live_at",
    "delivered_at", "delivery_mode", "failed_reviews", "policy",
}
EVENT_FIELDS = {"seq", "kind", "at", "actor", "operator", "data", "prev_hash", "hash"}
CREATE = ["create", "--merchant", M, "--creator", C, "--product", "P1001-口红套装", "--form", "live",
          "--commission", "12.5", "--ad-budget", "5000", "--latest-start", LATEST, "--at", T0]


def ok(proc) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert ANSI not in proc.stdout + proc.stderr
    return proc.stdout


def ok_json(proc):
    return json.loads(ok(proc))


def failed(proc, code: int) -> str:
    """Exit `code`, nothing on stdout, one `error:` line on stderr, no traceback; returns that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_create_accept_go_live_deliver_review_pass(run_coopctl, db_path, tmp_path, db_rows):
    created = ok_json(run_coopctl(*CREATE, "--note", "双十二预热直播", "--json"))
    assert (created["id"], created["status"], created["deadline"]) == (1, "pending", "2026-11-04T10:00:00+08:00")
    assert ok(run_coopctl("accept", 1, "--creator", C, "--at", "2026-11-01T11:00")) == (
        f"order 1: accepted at 2026-11-01 11:00:00 by creator:{C}\n"
        "order 1 is now effective (terms in_force); next deadline 2026-11-20 20:00:00: closed overdue, creator liable\n"
    )
    ok(run_coopctl("--operator", "值班员B", "go-live", 1, "--creator", C, "--at", "2026-11-18T20:00"))
    ok(run_coopctl("deliver", 1, "--creator", C, "--evidence", "https://v.douyin.com/abc", "--at", "2026-11-18T22:00"))
    done = ok_json(run_coopctl("review", 1, "--merchant", M, "--pass", "--at", "2026-11-19T10:00", "--json"))
    assert (done["status"], done["terms"], done["deadline"], done["liable_party"]) == ("completed", "fulfilled", None, None)

    shown = ok_json(run_coopctl("show", 1, "--json"))
    assert ORDER_FIELDS | {"events"} <= set(shown)
    assert (shown["went_live_at"], shown["delivered_at"], shown["delivery_mode"]) == (
        "2026-11-18T20:00:00+08:00", "2026-11-18T22:00:00+08:00", "manual",
    )
    assert all(set(e) == EVENT_FIELDS for e in shown["events"])
    assert [(e["seq"], e["kind"], e["actor"], e["operator"]) for e in shown["events"]] == [
        (1, "created", f"merchant:{M}", OPERATOR),
        (2, "accepted", f"creator:{C}", OPERATOR),
        (3, "went_live", f"creator:{C}", "值班员B"),
        (4, "delivered", f"creator:{C}", OPERATOR),
        (5, "review_passed", f"merchant:{M}", OPERATOR),
    ]
    assert shown["events"][3]["data"] == {"mode": "manual", "evidence": "https://v.douyin.com/abc"}
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(shown["events"], shown["events"][1:]))

    # a refusal: exit 1, one line, nothing changed
    rows = db_rows()
    line = failed(run_coopctl("accept", 1, "--creator", C, "--at", "2026-11-19T11:00"), 1)
    assert line == "error: order 1 is completed; accept needs pending"
    assert db_rows() == rows

    # piped output has no escape codes even when NO_COLOR is not set
    plain = {"NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "CLICOLOR_FORCE": None}
    table = ok(run_coopctl("list", env=plain))
    assert "completed" in table and "fulfilled" in table


def accepted_in_process(invoke) -> None:
    """Set-up through CliRunner (cheap); the steps under test then run through the entry point."""
    assert invoke(*CREATE).exit_code == 0
    assert invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00").exit_code == 0


def test_cancel_requested_declined_requested_again_and_confirmed(run_coopctl, invoke):
    accepted_in_process(invoke)
    requested = ok_json(run_coopctl("cancel-request", 1, "--merchant", M, "--reason", "库存不足", "--at", "2026-11-02T10:00", "--json"))
    assert (requested["status"], requested["cancel_requested_by"], requested["deadline"]) == (
        "cancel_requested", "merchant", "2026-11-04T10:00:00+08:00",
    )
    declined = ok_json(run_coopctl("cancel-decline", 1, "--creator", C, "--at", "2026-11-02T12:00", "--json"))
    assert (declined["status"], declined["cancel_requested_by"], declined["deadline"]) == ("effective", None, LATEST)
    ok(run_coopctl("cancel-request", 1, "--creator", C, "--reason", "身体不适", "--at", "2026-11-03T10:00"))
    confirmed = ok_json(run_coopctl("cancel-confirm", 1, "--merchant", M, "--at", "2026-11-03T12:00", "--json"))
    assert (confirmed["status"], confirmed["terms"], confirmed["liable_party"], confirmed["deadline"]) == (
        "cancelled", "void", None, None,
    )
    events = json.loads(invoke("history", 1, "--json").stdout)
    assert [(e["kind"], e["actor"], e["data"]) for e in events[2:]] == [
        ("cancel_requested", f"merchant:{M}", {"by": "merchant", "reason": "库存不足"}),
        ("cancel_declined", f"creator:{C}", {}),
        ("cancel_requested", f"creator:{C}", {"by": "creator", "reason": "身体不适"}),
        ("cancel_confirmed", f"merchant:{M}", {}),
    ]


def test_failed_review_make_up_and_escalation_to_dispute(run_coopctl, invoke, tmp_path):
    (tmp_path / "coopctl.toml").write_text("[policy]\nmax_failed_reviews = 1\n", encoding="utf-8")
    accepted_in_process(invoke)
    ok(run_coopctl("deliver", 1, "--creator", C, "--at", "2026-11-02T10:00"))
    first = ok_json(run_coopctl("review", 1, "--merchant", M, "--fail", "--reason", "未展示卖点", "--at", "2026-11-03T10:00", "--json"))
    assert (first["status"], first["failed_reviews"], first["deadline"], first["policy"]["max_failed_reviews"]) == (
        "review_failed", 1, "2026-11-10T10:00:00+08:00", 1,
    )
    makeup = ok_json(run_coopctl("deliver", 1, "--creator", C, "--evidence", "补播", "--at", "2026-11-05T10:00", "--json"))
    assert (makeup["status"], makeup["delivered_at"], makeup["delivery_mode"]) == ("delivered", "2026-11-05T10:00:00+08:00", "manual")
    final = ok_json(run_coopctl("review", 1, "--merchant", M, "--fail", "--reason", "仍未达标", "--at", "2026-11-06T10:00", "--json"))
    assert (final["status"], final["failed_reviews"], final["terms"], final["deadline"]) == ("disputed", 2, "in_force", None)


def test_tick_cascade_dry_run_and_repeat(run_coopctl, invoke, db_rows, db_bytes):
    accepted_in_process(invoke)  # the ticks run as cron runs them
    assert invoke("go-live", 1, "--creator", C, "--at", "2026-11-02T20:00").exit_code == 0
    rows, data = db_rows(), db_bytes(settle=True)
    now = ("--now", "2027-01-01T00:00:00+08:00")
    expected = {
        "now": "2027-01-01T00:00:00+08:00", "applied": 2, "by_kind": {"auto_accepted": 1, "delivered": 1}, "reminders": 0,
    }
    assert ok_json(run_coopctl("tick", *now, "--dry-run", "--json")) == expected
    assert db_rows() == rows and db_bytes() == data
    assert ok_json(run_coopctl("tick", *now, "--json")) == expected
    assert ok_json(run_coopctl("tick", *now, "--json")) == {**expected, "applied": 0, "by_kind": {}}
    events = json.loads(invoke("history", 1, "--json").stdout)
    assert [(e["kind"], e["at"], e["actor"], e["operator"], e["data"]) for e in events[3:]] == [
        ("delivered", "2026-11-03T20:00:00+08:00", "system", OPERATOR, {"mode": "auto"}),
        ("auto_accepted", "2026-11-17T20:00:00+08:00", "system", OPERATOR, {}),
    ]


def test_a_locked_database_exits_4_after_busy_timeout_and_changes_nothing(run_coopctl, invoke, tmp_path, db_path, db_rows):
    (tmp_path / "coopctl.toml").write_text('[database]\nbusy_timeout = "1s"\n', encoding="utf-8")
    assert invoke(*CREATE).exit_code == 0
    rows = db_rows()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        line = failed(run_coopctl("accept", 1, "--creator", C, "--at", "2026-11-01T11:00"), 4)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert line == f"error: the database {db_path} stayed locked by another coopctl; nothing was changed, try again"
    assert db_rows() == rows


def test_a_missing_database_exits_5_and_is_not_created(run_coopctl, tmp_path, db_path):
    for command in (["show", 1], ["accept", 1, "--creator", C]):
        line = failed(run_coopctl(*command), 5)
        assert line == f"error: no database at {db_path}; create one with `coopctl init` or point --db/COOPCTL_DB at one"
    failed(run_coopctl(*CREATE[:-4], "--latest-start", T0, "--at", T0), 2)  # invalid: creates nothing either
    assert list(tmp_path.iterdir()) == []


def test_random_bytes_and_a_foreign_sqlite_database_exit_5_untouched(run_coopctl, tmp_path):
    noise = tmp_path / "noise.db"
    noise.write_bytes(bytes((i * 131 + 7) % 256 for i in range(4096)))
    line = failed(run_coopctl("--db", noise, "list"), 5)
    assert line == f"error: {noise} is not a SQLite database (file is not a database); point --db at a coopctl database"
    foreign = tmp_path / "crm.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    data = foreign.read_bytes()
    line = failed(run_coopctl("--db", foreign, "init"), 5)
    assert line == f"error: {foreign} already holds tables that are not coopctl's; refusing to touch it"
    assert foreign.read_bytes() == data
