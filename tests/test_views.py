"""SPEC section 4, "Seeing ahead" and "Settings": `show` marks a deadline that passed,
`show --as-of` is exactly what a tick at that instant then `show` gives (and writes nothing),
`tick --dry-run --list` lists exactly the events a real tick writes, and `config` says where every
setting came from without ever printing a secret."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import OPERATOR
from dbtools import BASE, build, file_digest
from coopctl.policy import DAY, HOUR, iso

N = 36  # six of each timed status (dbtools.SCENARIOS)


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("views") / "book.db"
    build(path, N, spread_minutes=600)
    return path


def copy(book: Path, to: Path) -> Path:
    shutil.copy(book, to)
    return to


def as_json(result) -> dict | list:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def order_id_of_each_status(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT status, min(id) FROM orders GROUP BY status"))


# ----------------------------------------------------------------------------- show marks overdue


def test_show_marks_a_deadline_that_passed_and_what_the_next_tick_makes_it(invoke, tmp_path, book):
    db = copy(book, tmp_path / "b.db")
    live = order_id_of_each_status(db)["live"]
    shown = as_json(invoke("--db", str(db), "show", str(live), "--json"))
    assert shown["status"] == "live"
    # the book's deadlines lie in November 2026; the clock is later: the live order is overdue,
    # and the next tick delivers it and then accepts it automatically (a cascade)
    assert shown["overdue"] == {"since": shown["deadline"], "becomes": "completed"}
    table = invoke("--db", str(db), "show", str(live))
    assert table.exit_code == 0
    assert "overdue since" in table.stdout and "the next tick makes it completed" in table.stdout


def test_show_of_an_order_whose_deadline_is_ahead_marks_nothing(invoke):
    created = as_json(invoke("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                             "--commission", "10", "--latest-start", "now+10d", "--json"))
    shown = as_json(invoke("show", str(created["id"]), "--json"))
    assert shown["overdue"] is None
    assert "overdue" not in invoke("show", str(created["id"])).stdout


# ----------------------------------------------------------------------------- show --as-of


INSTANTS = [BASE + 14 * HOUR, BASE + DAY + 12 * HOUR, BASE + 3 * DAY, BASE + 6 * DAY, BASE + 12 * DAY, BASE + 40 * DAY]


@pytest.mark.parametrize("at", INSTANTS, ids=lambda at: iso(at)[:16])
def test_show_as_of_is_what_a_tick_then_show_gives_and_writes_nothing(invoke, tmp_path, book, at):
    """Every timed status, at instants before, between and after their deadlines (cascades: live
    -> delivered -> completed, review_failed -> disputed)."""
    projected_db = copy(book, tmp_path / "p.db")
    ticked_db = copy(book, tmp_path / "t.db")
    before = file_digest(projected_db)
    stamp = iso(at)
    projections = {}
    for order in range(1, N + 1):
        projections[order] = as_json(invoke("--db", str(projected_db), "show", str(order), "--as-of", stamp, "--json"))
    assert file_digest(projected_db) == before, "show --as-of wrote to the database"
    assert as_json(invoke("--db", str(ticked_db), "tick", "--now", stamp, "--json"))["now"]
    statuses = set()
    for order in range(1, N + 1):
        real = as_json(invoke("--db", str(ticked_db), "show", str(order), "--json"))
        projected = projections[order]
        assert projected.pop("projected") is True
        assert projected.pop("as_of") == iso(at, __import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
        added, _reminders = projected.pop("projected_events"), projected.pop("projected_reminders")
        real.pop("overdue")
        assert projected == real, f"order {order}"
        assert added == len(real["events"]) - len(as_json(invoke("--db", str(book), "history", str(order), "--json")))
        statuses.add(real["status"])
    assert len(statuses) > 1


def test_show_as_of_table_says_it_is_a_projection(invoke, tmp_path, book):
    db = copy(book, tmp_path / "b.db")
    out = invoke("--db", str(db), "show", "1", "--as-of", iso(BASE + 40 * DAY))
    assert out.exit_code == 0
    assert out.stdout.startswith("PROJECTION as of ") and "nothing was written" in out.stdout.splitlines()[0]


def test_show_as_of_before_the_last_event_is_refused(invoke, tmp_path, book):
    db = copy(book, tmp_path / "b.db")
    out = invoke("--db", str(db), "show", "1", "--as-of", iso(BASE - DAY))
    assert out.exit_code == 1 and out.stdout == ""
    assert out.stderr.startswith("error: --as-of ") and "earlier than the last event of order 1" in out.stderr


def test_show_as_of_a_malformed_instant_is_invalid_input(invoke, tmp_path, book):
    db = copy(book, tmp_path / "b.db")
    out = invoke("--db", str(db), "show", "1", "--as-of", "soon")
    assert out.exit_code == 2 and out.stderr.startswith("error: --as-of")


# ----------------------------------------------------------------------------- tick --dry-run --list


def written_events(path: Path, after: dict[int, int]) -> dict[int, list[tuple[str, int]]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT order_id, seq, kind, at FROM events ORDER BY order_id, seq").fetchall()
    found: dict[int, list[tuple[str, int]]] = {}
    for order_id, seq, kind, at in rows:
        if seq > after[order_id]:
            found.setdefault(order_id, []).append((kind, at))
    return found


def reminders_written(path: Path, before: int) -> dict[int, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT order_id, count(*) FROM notifications WHERE id > ? AND kind = 'reminder' GROUP BY order_id", (before,)))


@pytest.mark.parametrize("at", [INSTANTS[1], INSTANTS[3], INSTANTS[5]], ids=lambda at: iso(at)[:16])
def test_tick_dry_run_list_is_the_events_a_real_tick_writes(invoke, tmp_path, book, at):
    db = copy(book, tmp_path / "b.db")
    before = file_digest(db)
    stamp = iso(at)
    listed = as_json(invoke("--db", str(db), "tick", "--dry-run", "--list", "--now", stamp, "--batch", "7", "--json"))
    assert file_digest(db) == before, "a dry run wrote to the database"
    plain = as_json(invoke("--db", str(db), "tick", "--dry-run", "--now", stamp, "--json"))
    assert {k: v for k, v in listed.items() if k != "orders"} == plain
    with sqlite3.connect(db) as conn:
        seqs = dict(conn.execute("SELECT id, last_seq FROM orders"))
        last_note = conn.execute("SELECT max(id) FROM notifications").fetchone()[0]
    real = as_json(invoke("--db", str(db), "tick", "--now", stamp, "--json"))
    assert {k: v for k, v in real.items()} == plain
    events = written_events(db, seqs)
    reminders = reminders_written(db, last_note)
    expected = sorted(
        ({"id": i, "events": [{"kind": k, "at": iso(t, __import__("zoneinfo").ZoneInfo("Asia/Shanghai"))} for k, t in events.get(i, [])],
          "reminders": reminders.get(i, 0)} for i in sorted(set(events) | set(reminders))),
        key=lambda o: o["id"],
    )
    assert sorted(listed["orders"], key=lambda o: o["id"]) == expected
    assert expected, "nothing would change at this instant: the test proves nothing"


def test_tick_dry_run_list_as_a_table_names_each_order_and_its_transitions(invoke, tmp_path, book):
    db = copy(book, tmp_path / "b.db")
    out = invoke("--db", str(db), "tick", "--dry-run", "--list", "--now", iso(BASE + 40 * DAY))
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert len(lines) == N + 1 and lines[-1].startswith("tick at ") and "nothing was written" in lines[-1]
    assert all(line.startswith("order ") for line in lines[:-1])
    assert any(", auto_accepted at " in line for line in lines)  # a cascade: each step with its instant


def test_tick_list_without_dry_run_is_refused(invoke, tmp_path, book):
    db = copy(book, tmp_path / "b.db")
    before = file_digest(db)
    out = invoke("--db", str(db), "tick", "--list", "--now", iso(BASE + 40 * DAY))
    assert out.exit_code == 2 and out.stderr.startswith("error: --list goes with --dry-run")
    assert file_digest(db) == before


# ----------------------------------------------------------------------------- config


def config(invoke, *args, env=None) -> dict:
    return as_json(invoke(*args, "config", "--json", env=env))


def test_config_says_default_for_every_setting_nobody_set(invoke, tmp_path):
    found = config(invoke, env={"COOPCTL_DB": None, "COOPCTL_OPERATOR": None})
    assert found["database.url"]["from"] == "default" and found["database.url"]["value"].endswith("coopctl.db")
    assert found["config_file"] == {"value": None, "from": "default"}
    assert found["operator"]["from"] == "default"
    for key in ("database.busy_timeout", "display.timezone", "policy.accept_window", "reminders.before_latest_start",
                "delivery.backoff", "delivery.max_backoff", "delivery.max_attempts", "delivery.webhook_secret",
                "evidence.signing_key"):
        assert found[key]["from"] == "default", key
    assert found["policy.accept_window"]["value"] == "3d" and found["database.busy_timeout"]["value"] == "10s"
    assert found["delivery.webhook_secret"]["value"] == "unset"


def test_config_names_the_file_for_what_it_sets_and_default_for_the_rest(invoke, tmp_path):
    (tmp_path / "coopctl.toml").write_text('[policy]\naccept_window = "36h"\n[display]\ntimezone = "UTC"\n[database]\nurl = "x.db"\n')
    found = config(invoke, env={"COOPCTL_DB": None})
    assert found["config_file"] == {"value": "coopctl.toml", "from": "default"}
    assert found["policy.accept_window"] == {"value": "36h", "from": "coopctl.toml"}
    assert found["display.timezone"] == {"value": "UTC", "from": "coopctl.toml"}
    assert found["database.url"]["from"] == "coopctl.toml" and found["database.url"]["value"].endswith("x.db")
    assert found["policy.review_window"] == {"value": "14d", "from": "default"}


def test_config_tells_env_from_option(invoke, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('[reminders]\nbefore_latest_start = "6h"\n')
    by_env = config(invoke, env={"COOPCTL_CONFIG": str(other), "COOPCTL_OPERATOR": "env-op"})
    assert by_env["config_file"] == {"value": str(other), "from": "env COOPCTL_CONFIG"}
    assert by_env["operator"] == {"value": "env-op", "from": "env COOPCTL_OPERATOR"}
    assert by_env["database.url"]["from"] == "env COOPCTL_DB"
    assert by_env["reminders.before_latest_start"] == {"value": "6h", "from": str(other)}
    by_option = config(invoke, "--config", str(other), "--operator", "opt-op", "--db", str(tmp_path / "o.db"))
    assert by_option["config_file"]["from"] == "option" and by_option["operator"] == {"value": "opt-op", "from": "option"}
    assert by_option["database.url"] == {"value": str(tmp_path / "o.db"), "from": "option"}


def test_config_never_prints_a_secret(invoke, tmp_path):
    env = {"COOPCTL_WEBHOOK_SECRET": "s3cr3t-hmac-key", "COOPCTL_SIGNING_KEY": str(tmp_path / "seal.pem")}
    found = config(invoke, env=env)
    assert found["delivery.webhook_secret"] == {"value": "set", "from": "env COOPCTL_WEBHOOK_SECRET"}
    assert found["evidence.signing_key"] == {"value": str(tmp_path / "seal.pem"), "from": "env COOPCTL_SIGNING_KEY"}
    table = invoke("config", env=env)
    assert table.exit_code == 0
    for out in (table.stdout, json.dumps(found)):
        assert "s3cr3t" not in out


def test_config_table_has_one_part_per_section(invoke):
    out = invoke("config")
    assert out.exit_code == 0
    for section in ("general", "policy", "reminders", "delivery", "evidence"):
        assert section in out.stdout
    assert OPERATOR in out.stdout
