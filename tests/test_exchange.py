"""Export, replay and import (SPEC "Export, replay, import"; coopctl/exchange.py).

The helpers here are this file's own: `Cli` runs `coopctl.cli.app` in-process with CliRunner
against a database given through COOPCTL_DB, `story` plays a dispute with real commands at fixed
instants, and `tamper` edits an export the way a forger would. A few tests run the installed
`coopctl` as a subprocess.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from coopctl import exchange, service
from coopctl.config import Settings
from coopctl.errors import InvalidInput, Refused
from coopctl.lifecycle import Action, Party, canonical_json
from coopctl.policy import HOUR, MINUTE, Policy, ReminderOffsets, parse_instant
from coopctl.service import Service
from coopctl.store import Location, Store

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
SHANGHAI = ZoneInfo("Asia/Shanghai")
EXPORTED_AT = "2026-12-04T09:00"


# --------------------------------------------------------------------------- helpers


class Cli:
    """`coopctl ...` in-process, on one database, with no configuration leaking in."""

    def __init__(self, db: Path, cwd: Path):
        self.db = db
        self.cwd = cwd
        self.runner = CliRunner()

    def __call__(self, *args, input: str | bytes | None = None, db: Path | None = None):
        from coopctl.cli import app

        env = {k: None for k in os.environ if k.startswith("COOPCTL_")}
        env.update({"COOPCTL_DB": str(db or self.db), "COOPCTL_OPERATOR": "tester", "NO_COLOR": "1"})
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = self.runner.invoke(app, [str(a) for a in args], env=env, input=input, catch_exceptions=True)
        finally:
            os.chdir(old)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args, **kwargs):
        result = self(*args, **kwargs)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result


def story(cli: Cli) -> None:
    """Three orders: a delivery failed twice and escalated (1), a cancellation left unanswered (2),
    and one still live at the export (3) so that an import has deadlines left to fire."""
    c = cli.ok
    c("create", "--merchant", "商家A", "--creator", "达人小王", "--product", "P1", "--form", "live", "--commission", "12.5",
      "--ad-budget", "5000", "--latest-start", "2026-11-10T20:00", "--note", "双十一", "--at", "2026-11-01T10:00")
    c("accept", "1", "--creator", "达人小王", "--at", "2026-11-02T09:00")
    c("create", "--merchant", "商家B", "--creator", "达人阿珍", "--product", "P2", "--product", "P3", "--form", "video",
      "--commission", "20", "--latest-start", "2026-11-20T12:00", "--at", "2026-11-03T14:00")
    c("accept", "2", "--creator", "达人阿珍", "--at", "2026-11-04T10:00")
    c("tick", "--now", "2026-11-05T00:00")
    c("cancel-request", "2", "--creator", "达人阿珍", "--reason", "档期冲突", "--at", "2026-11-06T18:00")
    c("go-live", "1", "--creator", "达人小王", "--at", "2026-11-08T20:00")
    c("deliver", "1", "--creator", "达人小王", "--evidence", "https://v.douyin.com/1", "--at", "2026-11-08T23:30")
    c("tick", "--now", "2026-11-09T00:00")
    c("tick", "--now", "2026-11-21T00:00")
    c("review", "1", "--merchant", "商家A", "--fail", "--reason", "色号讲错", "--at", "2026-11-21T10:00")
    c("deliver", "1", "--creator", "达人小王", "--evidence", "补播", "--at", "2026-11-24T21:00")
    c("review", "1", "--merchant", "商家A", "--fail", "--reason", "时长不足", "--at", "2026-11-26T11:00")
    c("create", "--merchant", "商家C", "--creator", "达人老李", "--product", "P4", "--form", "live", "--commission", "8",
      "--latest-start", "2026-12-20T20:00", "--at", "2026-11-28T10:00")
    c("accept", "3", "--creator", "达人老李", "--at", "2026-11-29T10:00")
    c("go-live", "3", "--creator", "达人老李", "--at", "2026-12-03T20:00")
    c("tick", "--now", "2026-12-04T00:00")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, str]:
    """The story's database (read it, never change it) and its export text."""
    folder = tmp_path_factory.mktemp("story")
    cli = Cli(folder / "story.db", folder)
    story(cli)
    text = cli.ok("export", "--all", "--at", EXPORTED_AT).stdout
    return folder / "story.db", text


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "coopctl.db", tmp_path)


@pytest.fixture
def doc(made) -> dict:
    return json.loads(made[1])


def write(tmp_path: Path, document, name: str = "export.json") -> Path:
    path = tmp_path / name
    text = document if isinstance(document, (str, bytes)) else json.dumps(document, ensure_ascii=False, indent=2)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rehash(order: dict) -> None:
    """What a careful forger does after editing events: recompute the whole chain."""
    from coopctl.lifecycle import GENESIS_HASH, event_hash

    previous = GENESIS_HASH
    for e in order["events"]:
        at = parse_instant(e["at"], SHANGHAI)
        e["prev_hash"] = previous
        e["hash"] = event_hash(order["id"], e["seq"], e["kind"], at, e["actor"], e["operator"], e["data"], previous)
        previous = e["hash"]


def single_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database, including what is still in its WAL file."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --------------------------------------------------------------------------- export


def test_export_document_has_format_version_and_every_order_with_events_and_notifications(doc):
    assert (doc["format"], doc["version"], doc["exported_at"]) == ("coopctl-export", 1, "2026-12-04T09:00:00+08:00")
    assert [o["id"] for o in doc["orders"]] == [1, 2, 3]
    first = doc["orders"][0]
    keys = list(first)
    assert keys[-3:] == ["reminders_sent", "events", "notifications"]
    for name in exchange.REQUIRED_FIELDS:
        assert name in first
    assert first["status"] == "disputed" and first["failed_reviews"] == 2
    assert first["policy"]["review_window"] == "14d"
    assert [e["seq"] for e in first["events"]] == list(range(1, len(first["events"]) + 1))
    assert set(first["events"][0]) == {"seq", "kind", "at", "actor", "operator", "data", "prev_hash", "hash"}
    assert first["events"][-1]["kind"] == "escalated" and first["events"][-1]["actor"] == "system"
    assert first["reminders_sent"] == sorted(first["reminders_sent"]) and first["reminders_sent"]
    note = first["notifications"][0]
    assert list(note) == ["order", "recipient", "channel", "kind", "at", "text", "sent_at"]
    assert note["sent_at"] is None


def test_export_is_stable_apart_from_exported_at(made, tmp_path):
    db, text = made
    cli = Cli(db, tmp_path)
    again = cli.ok("export", "--all", "--at", EXPORTED_AT).stdout
    later = cli.ok("export", "3", "1", "2", "--at", "2027-01-01T00:00").stdout
    assert again == text
    assert later.replace("2027-01-01T00:00:00+08:00", "2026-12-04T09:00:00+08:00") == text


def test_export_chosen_orders_only(made, tmp_path):
    result = Cli(made[0], tmp_path).ok("export", "2", "2", "--at", EXPORTED_AT)
    assert [o["id"] for o in json.loads(result.stdout)["orders"]] == [2]


def test_export_needs_ids_or_all(made, tmp_path):
    cli = Cli(made[0], tmp_path)
    assert "--all" in single_error(cli("export"))
    assert cli("export").exit_code == 2
    assert cli("export", "1", "--all").exit_code == 2


def test_export_of_an_unknown_order_is_exit_3(made, tmp_path):
    result = Cli(made[0], tmp_path)("export", "1", "99")
    assert result.exit_code == 3
    assert "no order 99" in single_error(result)


def test_export_without_a_database_is_exit_5(cli, tmp_path):
    result = cli("export", "--all")
    assert result.exit_code == 5
    assert not (tmp_path / "coopctl.db").exists()


def test_export_out_writes_the_file_atomically(made, tmp_path):
    cli = Cli(made[0], tmp_path)
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    result = cli.ok("export", "--all", "--at", EXPORTED_AT, "--out", target)
    assert "exported 3 orders" in result.stdout
    assert target.read_text(encoding="utf-8") == made[1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []
    summary = json.loads(cli.ok("export", "1", "--at", EXPORTED_AT, "--out", target, "--json").stdout)
    assert summary["orders"] == [1] and summary["file"] == str(target)
    result = cli("export", "--all", "--at", EXPORTED_AT, "--out", tmp_path / "missing" / "x.json")
    assert result.exit_code == 2 and "cannot write" in single_error(result)


# --------------------------------------------------------------------------- round trip and import


def test_round_trip_export_import_into_a_fresh_database_keeps_events_and_hashes(made, tmp_path):
    db, text = made
    path = write(tmp_path, text)
    fresh = Cli(tmp_path / "fresh.db", tmp_path)
    result = fresh.ok("import", path)
    assert "3 orders imported" in result.stdout
    assert fresh.ok("export", "--all", "--at", EXPORTED_AT).stdout == text  # events, hashes, notifications, sent_at
    source = Cli(db, tmp_path)
    for order in (1, 2, 3):
        assert fresh.ok("history", order, "--json").stdout == source.ok("history", order, "--json").stdout
        assert fresh.ok("show", order, "--json").stdout == source.ok("show", order, "--json").stdout


def test_import_keeps_the_outbox_state(made, tmp_path):
    db = tmp_path / "copy.db"
    copy_db(made[0], db)
    cli = Cli(db, tmp_path)
    cli.ok("notifications", "--order", "1", "--mark-sent")
    path = write(tmp_path, cli.ok("export", "--all", "--at", EXPORTED_AT).stdout)  # not before its last event
    fresh = Cli(tmp_path / "fresh.db", tmp_path)
    fresh.ok("import", path, "--json")
    pending = json.loads(fresh.ok("notifications", "--pending", "--json").stdout)
    assert pending and {n["order"] for n in pending} == {2, 3}


def test_import_json_reports_what_was_loaded(made, tmp_path):
    fresh = Cli(tmp_path / "fresh.db", tmp_path)
    report = json.loads(fresh.ok("import", write(tmp_path, made[1]), "--json").stdout)
    assert report["imported"] == [1, 2, 3]
    assert report["events"] == sum(len(o["events"]) for o in json.loads(made[1])["orders"])


def test_import_reads_stdin(made, tmp_path):
    fresh = Cli(tmp_path / "fresh.db", tmp_path)
    fresh.ok("import", "-", input=made[1].encode("utf-8"))
    assert count_rows(tmp_path / "fresh.db", "orders") == 3


def test_import_of_an_existing_id_is_refused_and_writes_nothing(made, tmp_path):
    target = tmp_path / "target.db"
    cli = Cli(target, tmp_path)
    cli.ok("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live", "--commission", "5",
           "--latest-start", "2026-12-30T00:00", "--at", "2026-11-01T00:00")
    before = (count_rows(target, "orders"), count_rows(target, "events"), count_rows(target, "notifications"))
    result = cli("import", write(tmp_path, made[1]))  # orders 2 and 3 are new there, order 1 is not
    assert result.exit_code == 1
    assert "order 1 already exists" in single_error(result)
    assert (count_rows(target, "orders"), count_rows(target, "events"), count_rows(target, "notifications")) == before


def test_import_of_a_tampered_file_writes_nothing_and_creates_no_database(tmp_path, doc):
    doc["orders"][2]["events"][1]["at"] = "2026-11-29T11:00:00+08:00"
    cli = Cli(tmp_path / "never.db", tmp_path)
    result = cli("import", write(tmp_path, doc))
    assert result.exit_code == 1
    assert single_error(result).startswith("error: order 3 diverges at event seq 2:")
    assert "nothing was imported" in result.stderr
    assert not (tmp_path / "never.db").exists()
    assert cli("import", write(tmp_path, "not json", "bad.json")).exit_code == 2
    assert not (tmp_path / "never.db").exists()


def test_create_after_import_gets_an_id_above_the_imported_ones(made, tmp_path):
    path = write(tmp_path, Cli(made[0], tmp_path).ok("export", "3", "--at", EXPORTED_AT).stdout)
    fresh = Cli(tmp_path / "fresh.db", tmp_path)
    fresh.ok("import", path)
    created = json.loads(fresh.ok("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                                  "--commission", "5", "--latest-start", "2027-01-30T00:00", "--json").stdout)
    assert created["id"] == 4


def test_import_on_each_backend_keeps_ids_and_new_orders_come_after_them(made, tmp_path, backend):
    """`backend` (tests/pg.py, through conftest) is a SQLite file, or a fresh PostgreSQL database
    whose id sequence an import must move on."""
    cli = Cli(backend, tmp_path)
    cli.ok("import", write(tmp_path, made[1]))
    assert json.loads(cli.ok("tick", "--now", "2026-12-05T00:00", "--json").stdout)["by_kind"] == {"delivered": 1}
    created = json.loads(cli.ok("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
                                "--commission", "5", "--latest-start", "2027-01-30T00:00", "--json").stdout)
    assert created["id"] == 4
    assert cli("import", write(tmp_path, made[1])).exit_code == 1
    events = json.loads(cli.ok("history", "1", "--json").stdout)
    assert [e["hash"] for e in events] == [e["hash"] for e in json.loads(made[1])["orders"][0]["events"]]


def test_tick_treats_imported_orders_like_any_other(made, tmp_path):
    """Order 3 is live at the export: an imported copy fires the same deadlines and reminders as the
    original, and a reminder written before an export is not written again after the import."""
    original = Cli(tmp_path / "original.db", tmp_path)
    copy_db(made[0], original.db)
    fresh = Cli(tmp_path / "fresh.db", tmp_path)
    fresh.ok("import", write(tmp_path, made[1]))
    ticks = []
    for when in ("2026-12-05T00:00", "2026-12-17T00:00"):
        mine = json.loads(original.ok("tick", "--now", when, "--json").stdout)
        assert json.loads(fresh.ok("tick", "--now", when, "--json").stdout) == mine
        ticks.append((mine["applied"], mine["reminders"]))
    # delivered automatically; then the merchant is reminded to review, and the platform of the
    # dispute that waited arbitration_window for a ruling
    assert ticks == [(1, 0), (0, 2)]
    after_ticks = "2026-12-17T00:00"  # an export is dated at or after its last event
    assert fresh.ok("export", "--all", "--at", after_ticks).stdout == original.ok("export", "--all", "--at", after_ticks).stdout
    later = Cli(tmp_path / "later.db", tmp_path)
    later.ok("import", write(tmp_path, original.ok("export", "3", "--at", "2026-12-17T00:00").stdout, "three.json"))
    assert json.loads(later.ok("tick", "--now", "2026-12-17T12:00", "--json").stdout)["reminders"] == 0
    assert json.loads(later.ok("tick", "--now", "2027-01-01T00:00", "--json").stdout)["by_kind"] == {"auto_accepted": 1}
    shown = json.loads(later.ok("show", "3", "--json").stdout)
    assert shown["status"] == "completed"
    assert [e["kind"] for e in shown["events"]][-2:] == ["delivered", "auto_accepted"]


def test_import_refuses_an_idempotency_key_already_in_use(tmp_path):
    source = Cli(tmp_path / "a.db", tmp_path)
    target = Cli(tmp_path / "b.db", tmp_path)
    terms = ("--merchant", "M", "--creator", "C", "--product", "P", "--form", "live", "--commission", "5",
             "--latest-start", "2026-12-30T00:00", "--at", "2026-11-01T00:00")
    source.ok("create", *terms)
    source.ok("create", *terms, "--idempotency-key", "K")
    target.ok("create", *terms, "--idempotency-key", "K")
    result = target("import", write(tmp_path, source.ok("export", "2").stdout))
    assert result.exit_code == 1
    assert "idempotency key 'K'" in single_error(result) and "order 1" in result.stderr
    assert count_rows(tmp_path / "b.db", "orders") == 1
    Cli(tmp_path / "c.db", tmp_path).ok("import", write(tmp_path, source.ok("export", "2").stdout))


# --------------------------------------------------------------------------- replay


def test_replay_reproduces_every_order_and_shows_the_timeline(made, tmp_path):
    cli = Cli(tmp_path / "unused.db", tmp_path)
    result = cli.ok("replay", write(tmp_path, made[1]))
    out = result.stdout
    assert "order 1: reproduced" in out and "order 2: reproduced" in out and "order 3: reproduced" in out
    assert "ends disputed" in out and "liable party: creator" in out
    for column in ("seq", "state after", "deadline then"):
        assert column in out
    assert "escalated" in out and "review_failed" in out
    assert "3 of 3 orders reproduced" in out
    assert result.stderr == ""
    assert not (tmp_path / "unused.db").exists()  # replay works in a scratch database only


def test_replay_json_is_a_verdict_per_order(made, tmp_path):
    verdicts = json.loads(Cli(tmp_path / "x.db", tmp_path).ok("replay", write(tmp_path, made[1]), "--json").stdout)
    assert [(v["order"], v["verdict"], v["seq"]) for v in verdicts] == [(1, "reproduced", None), (2, "reproduced", None), (3, "reproduced", None)]
    assert verdicts[1]["status"] == "cancelled_unilaterally" and verdicts[1]["liable_party"] == "creator"
    assert verdicts[2]["deadline"] == "2026-12-04T20:00:00+08:00"


def test_replay_accepts_instants_in_any_offset(tmp_path, doc):
    from coopctl.policy import iso

    for order in doc["orders"]:
        for e in order["events"]:
            e["at"] = iso(parse_instant(e["at"], SHANGHAI)).replace("+00:00", "Z")
        order["created_at"] = iso(parse_instant(order["created_at"], SHANGHAI), ZoneInfo("America/New_York"))
    Cli(tmp_path / "x.db", tmp_path).ok("replay", write(tmp_path, doc))


def _event(doc, order_id, seq):
    order = next(o for o in doc["orders"] if o["id"] == order_id)
    return order, next(e for e in order["events"] if e["seq"] == seq)


def changed_time(doc):
    _event(doc, 1, 5)[1]["at"] = "2026-11-21T09:00:00+08:00"


def changed_kind(doc):
    _event(doc, 1, 7)[1]["kind"] = "review_passed"


def changed_actor(doc):
    _event(doc, 2, 3)[1]["actor"] = "merchant:商家B"


def changed_data(doc):
    _event(doc, 1, 5)[1]["data"]["reason"] = "一切正常"


def changed_operator(doc):
    _event(doc, 1, 2)[1]["operator"] = "someone-else"


def removed_event(doc):
    order, e = _event(doc, 1, 4)
    order["events"].remove(e)


def reordered_events(doc):
    order = doc["orders"][0]
    order["events"][5], order["events"][6] = order["events"][6], order["events"][5]


def inserted_event(doc):
    order, e = _event(doc, 1, 6)
    order["events"].insert(6, copy.deepcopy(e))


def forged_final_status(doc):
    doc["orders"][0]["status"] = "completed"


def forged_liable_party(doc):
    doc["orders"][1]["liable_party"] = "merchant"


def forged_hash(doc):
    _event(doc, 3, 3)[1]["hash"] = hashlib.sha256(b"forged").hexdigest()


def forged_last_hash(doc):
    _event(doc, 2, 4)[1]["hash"] = "0" * 64


def removed_last_event(doc):
    doc["orders"][0]["events"].pop()


def late_action_rehashed(doc):
    """The review moved after its window, the chain recomputed: the rules would have auto-accepted first."""
    order, e = _event(doc, 1, 5)
    e["at"] = "2026-11-23T10:00:00+08:00"
    rehash(order)


def forbidden_action_rehashed(doc):
    """The creator "reviews" her own delivery, the chain recomputed: not allowed for that party."""
    order, e = _event(doc, 1, 7)
    e["actor"] = "creator:达人小王"
    rehash(order)


def skipped_deadline_rehashed(doc):
    """The system escalation removed and the chain recomputed: the order claims still review_failed."""
    order = doc["orders"][0]
    order["events"].pop()
    order["status"] = "review_failed"
    rehash(order)


TAMPERING = [
    (changed_time, 1, 5, "altered"),
    (changed_kind, 1, 7, "altered"),
    (changed_actor, 2, 3, "altered"),
    (changed_data, 1, 5, "altered"),
    (changed_operator, 1, 2, "altered"),
    (removed_event, 1, 4, "removed"),
    (reordered_events, 1, 6, "reordered"),
    (inserted_event, 1, 6, "inserted"),
    (forged_final_status, 1, 8, "outcome differs: the rules end with status 'disputed', the export says 'completed'"),
    (forged_liable_party, 2, 4, "liable_party"),
    (forged_hash, 3, 3, "hash does not match"),
    (forged_last_hash, 2, 4, "hash does not match"),
    (removed_last_event, 1, 7, "outcome differs"),
    (late_action_rehashed, 1, 5, "too late: order 1 became completed"),
    (forbidden_action_rehashed, 1, 7, "not allowed"),
    (skipped_deadline_rehashed, 1, 7, "outcome differs"),
]


@pytest.mark.parametrize("tamper, order, seq, why", TAMPERING, ids=[t[0].__name__ for t in TAMPERING])
def test_replay_detects_tampering_at_the_right_seq(tmp_path, doc, tamper, order, seq, why):
    tamper(doc)
    result = Cli(tmp_path / "x.db", tmp_path)("replay", write(tmp_path, doc))
    assert result.exit_code == 1
    line = single_error(result)
    assert line.startswith(f"error: order {order} diverges at event seq {seq}: "), line
    assert why in line
    assert f"order {order}: DIVERGES at event seq {seq}" in result.stdout
    others = {1, 2, 3} - {order}
    for other in others:
        assert f"order {other}: reproduced" in result.stdout


@pytest.mark.parametrize("tamper, order, seq, why", TAMPERING[:4], ids=[t[0].__name__ for t in TAMPERING[:4]])
def test_replay_json_names_the_diverging_seq(tmp_path, doc, tamper, order, seq, why):
    tamper(doc)
    result = Cli(tmp_path / "x.db", tmp_path)("replay", write(tmp_path, doc), "--json")
    assert result.exit_code == 1
    verdicts = {v["order"]: v for v in json.loads(result.stdout)}
    assert verdicts[order]["verdict"] == "diverges" and verdicts[order]["seq"] == seq
    assert all(v["verdict"] == "reproduced" for k, v in verdicts.items() if k != order)


def test_replay_library_reports_divergence_without_raising(doc):
    doc["orders"][0]["status"] = "completed"
    verdicts = exchange.replay(exchange.parse_document(json.dumps(doc)))
    assert [v.ok for v in verdicts] == [False, True, True]
    assert verdicts[0].divergence.seq == 8 and "status" in verdicts[0].divergence.why
    assert verdicts[0].message.startswith("order 1 diverges at event seq 8: outcome differs")


# --------------------------------------------------------------------------- malformed files


def _set(path, value):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop(path):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


MALFORMED_DOCUMENTS = [
    ("wrong format", _set(["format"], "something-else"), "is not a coopctl export: 'format' is 'something-else'"),
    ("no format", _drop(["format"]), "is not a coopctl export"),
    ("newer version", _set(["version"], 2), "unsupported export version 2"),
    ("version as text", _set(["version"], "1"), "unsupported export version '1'"),
    ("version true", _set(["version"], True), "unsupported export version True"),
    ("orders not an array", _set(["orders"], {}), "'orders' must be an array"),
    ("bad exported_at", _set(["exported_at"], "yesterday"), "'exported_at'"),
    ("order not an object", _set(["orders", 0], 7), "orders[0] must be an object"),
    ("order without id", _drop(["orders", 0, "id"]), "orders[0]: the field 'id' is missing"),
    ("id as text", _set(["orders", 0, "id"], "1"), "'id' must be a whole number, got text"),
    ("id zero", _set(["orders", 0, "id"], 0), "'id' must be from 1"),
    ("id huge", _set(["orders", 0, "id"], 10**30), "'id' must be from 1"),
    ("missing status", _drop(["orders", 1, "status"]), "order 2: the field 'status' is missing"),
    ("missing events", _drop(["orders", 1, "events"]), "order 2: the field 'events' is missing"),
    ("missing notifications", _drop(["orders", 0, "notifications"]), "order 1: the field 'notifications' is missing"),
    ("missing reminders_sent", _drop(["orders", 0, "reminders_sent"]), "order 1: the field 'reminders_sent' is missing"),
    ("status a number", _set(["orders", 0, "status"], 3), "order 1: 'status' must be text"),
    ("products not a list", _set(["orders", 0, "products"], "P1"), "order 1: 'products' must be an array of text"),
    ("commission a list", _set(["orders", 0, "commission_pct"], [12]), "order 1: 'commission_pct'"),
    ("commission not a number", _set(["orders", 0, "commission_pct"], "twelve"), "order 1: 'commission_pct'"),
    ("created_at a number", _set(["orders", 0, "created_at"], 1700000000), "order 1: 'created_at'"),
    ("deadline garbage", _set(["orders", 2, "deadline"], "soon"), "order 3: 'deadline'"),
    ("failed_reviews bool", _set(["orders", 0, "failed_reviews"], True), "order 1: 'failed_reviews' must be a whole number"),
    ("policy unknown key", _set(["orders", 0, "policy", "grace"], "1d"), "order 1: 'policy': unknown key 'grace'"),
    ("policy not an object", _set(["orders", 0, "policy"], "3d"), "order 1: 'policy' must be an object"),
    # after order 1's valid policy: an equal-looking value (true == 1, 2.0 == 2) is still read and refused
    ("policy count true", _set(["orders", 1, "policy", "max_appeals"], True), "order 2: 'policy': 'max_appeals' must be a whole number"),
    ("policy count float", _set(["orders", 1, "policy", "max_failed_reviews"], 2.0), "order 2: 'policy': 'max_failed_reviews' must be a whole number"),
    ("reminders_sent junk", _set(["orders", 0, "reminders_sent"], [1]), "order 1: 'reminders_sent'"),
    ("events not a list", _set(["orders", 0, "events"], {}), "order 1: 'events' must be an array"),
    ("event not an object", _set(["orders", 0, "events", 2], "x"), "order 1, events[2] must be an object"),
    ("event without hash", _drop(["orders", 0, "events", 2, "hash"]), "order 1, events[2]: the field 'hash' is missing"),
    ("seq as text", _set(["orders", 0, "events", 2, "seq"], "3"), "order 1, events[2]: 'seq' must be a whole number"),
    ("seq as float", _set(["orders", 0, "events", 2, "seq"], 3.0), "'seq' must be a whole number"),
    ("at a number", _set(["orders", 0, "events", 2, "at"], 1), "order 1, events[2]: 'at'"),
    ("at out of range", _set(["orders", 0, "events", 2, "at"], "0001-01-01T00:00:00+00:00"), "out of range"),
    ("data a list", _set(["orders", 0, "events", 2, "data"], []), "order 1, events[2]: 'data' must be an object"),
    ("actor null", _set(["orders", 0, "events", 2, "actor"], None), "'actor' must be text"),
    ("notification of another order", _set(["orders", 0, "notifications", 0, "order"], 2), "belongs to order 2"),
    ("notification sent_at missing", _drop(["orders", 0, "notifications", 0, "sent_at"]), "the field 'sent_at' is missing"),
    ("duplicate order", lambda d: d["orders"].append(copy.deepcopy(d["orders"][0])), "order 1 appears twice"),
]


@pytest.mark.parametrize("edit, message", [m[1:] for m in MALFORMED_DOCUMENTS], ids=[m[0] for m in MALFORMED_DOCUMENTS])
def test_malformed_documents_are_exit_2_naming_the_field(tmp_path, doc, edit, message):
    edit(doc)
    path = write(tmp_path, doc)
    cli = Cli(tmp_path / "x.db", tmp_path)
    for command in ("replay", "import"):
        result = cli(command, path)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert message in single_error(result)
    assert not (tmp_path / "x.db").exists()


MALFORMED_FILES = [
    ("empty", b"", "not JSON"),
    ("not json", b"coopctl export, honest", "not JSON"),
    ("truncated", b'{"format": "coopctl-export", "version": 1, "orders": [', "not JSON"),
    ("an array", b"[]", "expected a JSON object, got an array"),
    ("a string", b'"coopctl-export"', "expected a JSON object, got text"),
    ("not utf-8", '{"format": "coopctl-export"}'.encode("utf-16"), "not UTF-8"),
    ("huge integer", b'{"format": "coopctl-export", "version": 1, "n": ' + b"9" * 5000 + b"}", "too large"),
    ("huge float", b'{"format": "coopctl-export", "version": 1e999}', "too large"),
    ("nan", b'{"format": "coopctl-export", "version": NaN}', "NaN is not a number JSON allows"),
    ("deep nesting", b'{"format": "coopctl-export", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
    ("lone surrogate", b'{"format": "coopctl-export", "version": 1, "x": "\\ud800"}', "not valid Unicode"),
]


@pytest.mark.parametrize("raw, message", [m[1:] for m in MALFORMED_FILES], ids=[m[0] for m in MALFORMED_FILES])
def test_malformed_files_are_exit_2_with_a_clear_message(tmp_path, raw, message):
    path = write(tmp_path, raw, "bad.json")
    result = Cli(tmp_path / "x.db", tmp_path)("replay", path)
    assert result.exit_code == 2
    line = single_error(result)
    assert message in line and "bad.json" in line


def test_missing_file_and_directory_are_exit_2(tmp_path):
    cli = Cli(tmp_path / "x.db", tmp_path)
    result = cli("replay", tmp_path / "nope.json")
    assert result.exit_code == 2 and "cannot read" in single_error(result)
    result = cli("import", tmp_path)
    assert result.exit_code == 2 and "is a directory" in single_error(result)


def test_an_order_without_events_diverges_at_seq_1(tmp_path, doc):
    doc["orders"][1]["events"] = []
    result = Cli(tmp_path / "x.db", tmp_path)("replay", write(tmp_path, doc))
    assert result.exit_code == 1
    assert single_error(result).startswith("error: order 2 diverges at event seq 1: the order has no events")


def test_an_empty_export_replays_and_imports_nothing(cli, tmp_path):
    path = write(tmp_path, {"format": "coopctl-export", "version": 1, "exported_at": "2026-12-01T00:00:00Z", "orders": []})
    assert "0 of 0 orders reproduced" in cli.ok("replay", path).stdout
    assert json.loads(cli.ok("import", path, "--json").stdout)["imported"] == []


def test_parse_document_raises_invalid_input():
    with pytest.raises(InvalidInput, match="not JSON"):
        exchange.parse_document(b"{", source="x")


# --------------------------------------------------------------------------- what if


def test_replay_with_another_policy_shows_where_the_outcome_differs(made, tmp_path):
    policy = tmp_path / "other.toml"
    policy.write_text('[policy]\nreview_window = "3d"\ncancel_response_window = "72h"\n', encoding="utf-8")
    cli = Cli(tmp_path / "x.db", tmp_path)
    path = write(tmp_path, made[1])
    result = cli.ok("replay", path, "--policy", policy, "--json")
    by_order = {r["order"]: r for r in json.loads(result.stdout)}
    one = by_order[1]
    assert (one["recorded"]["status"], one["what_if"]["status"]) == ("disputed", "completed")
    assert one["first_difference"]["seq"] == 5
    assert one["first_difference"]["what_if"]["kind"] == "auto_accepted"
    assert [r["seq"] for r in one["refused"]] == [5, 6, 7]
    assert "too late" in one["refused"][0]["reason"]
    two = by_order[2]
    assert two["recorded"]["status"] == two["what_if"]["status"] == "cancelled_unilaterally"
    assert two["first_difference"]["what_if"]["at"] == "2026-11-09T18:00:00+08:00"
    text = cli.ok("replay", path, "--policy", policy).stdout
    assert "would have been refused" in text and "first difference at seq 5" in text
    assert "as recorded" in text and "under other.toml" in text


def test_what_if_under_the_same_policy_changes_nothing(made, tmp_path):
    policy = tmp_path / "same.toml"
    policy.write_text("[policy]\n", encoding="utf-8")
    results = json.loads(Cli(tmp_path / "x.db", tmp_path).ok("replay", write(tmp_path, made[1]), "--policy", policy, "--json").stdout)
    assert all(r["same_outcome"] and not r["refused"] for r in results)
    # order 3 was live at the export; both sides are taken at the export time
    assert results[2]["recorded"]["status"] == results[2]["what_if"]["status"] == "live"


def test_what_if_is_informational_even_for_a_tampered_file(tmp_path, doc):
    doc["orders"][0]["status"] = "completed"
    policy = tmp_path / "p.toml"
    policy.write_text('[policy]\nmakeup_window = "30d"\n', encoding="utf-8")
    result = Cli(tmp_path / "x.db", tmp_path).ok("replay", write(tmp_path, doc), "--policy", policy)
    assert "not reproduced" in result.stdout


def test_what_if_with_a_bad_policy_file_is_exit_2(made, tmp_path):
    policy = tmp_path / "bad.toml"
    policy.write_text('[policy]\nreview_window = "soon"\n', encoding="utf-8")
    cli = Cli(tmp_path / "x.db", tmp_path)
    result = cli("replay", write(tmp_path, made[1]), "--policy", policy)
    assert result.exit_code == 2 and "review_window" in single_error(result)
    assert cli("replay", write(tmp_path, made[1]), "--policy", tmp_path / "none.toml").exit_code == 2


# --------------------------------------------------------------------------- the installed command and the sample


def _installed() -> str:
    beside = Path(sys.executable).parent / "coopctl"
    return str(beside) if beside.exists() else (shutil.which("coopctl") or "coopctl")


def _run(tmp_path: Path, *args, db: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": str(db or tmp_path / "sub.db"), "COOPCTL_OPERATOR": "tester", "NO_COLOR": "1"})
    return subprocess.run([_installed(), *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          env=env, cwd=tmp_path, timeout=120)


def test_the_sample_dispute_replays_imports_and_exports_the_same_bytes(tmp_path):
    sample = SAMPLE / "dispute_export.json"
    cli = Cli(tmp_path / "sample.db", tmp_path)
    replayed = cli.ok("replay", sample)
    assert "order 1: reproduced" in replayed.stdout and "ends disputed" in replayed.stdout
    assert "order 2: reproduced" in replayed.stdout and "liable party: creator" in replayed.stdout
    cli.ok("import", sample)
    assert cli.ok("export", "--all", "--at", "2026-12-04T09:00").stdout == sample.read_text(encoding="utf-8")
    what_if = cli.ok("replay", sample, "--policy", SAMPLE / "what_if_policy.toml")
    assert "would have been refused" in what_if.stdout and "first difference at seq 5" in what_if.stdout


def test_an_export_of_schema_3_still_replays_and_imports_and_gets_the_new_fields(tmp_path):
    """tests/fixtures/dispute_export_v3.json was written before disputes and extensions (six-key
    policies, none of their fields): it reproduces, and imported its orders carry the defaults."""
    old = Path(__file__).parent / "fixtures" / "dispute_export_v3.json"
    cli = Cli(tmp_path / "old.db", tmp_path)
    replayed = cli.ok("replay", old)
    assert "order 1: reproduced" in replayed.stdout and "order 2: reproduced" in replayed.stdout
    cli.ok("import", old)
    order = json.loads(cli.ok("show", "1", "--json").stdout)
    assert order["policy"]["complaint_window"] == "90d" and order["policy"]["max_appeals"] == 1
    assert (order["extensions"], order["appeals"], order["ruling"], order["disputed_by"]) == (0, 0, None, None)
    assert cli.ok("export", "--all", "--at", "2026-12-04T09:00").stdout == (SAMPLE / "dispute_export.json").read_text(encoding="utf-8")


def test_installed_coopctl_exit_codes_of_replay_and_import(tmp_path):
    sample = SAMPLE / "dispute_export.json"
    replayed = _run(tmp_path, "replay", sample)
    assert replayed.returncode == 0, replayed.stderr
    assert "2 of 2 orders reproduced" in replayed.stdout and replayed.stderr == ""
    doc = json.loads(sample.read_text(encoding="utf-8"))
    doc["orders"][0]["events"][4]["data"]["reason"] = "nothing wrong"
    tampered = _run(tmp_path, "replay", write(tmp_path, doc))
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("error: order 1 diverges at event seq 5: hash does not match")
    malformed = _run(tmp_path, "import", write(tmp_path, "[1, 2", "bad.json"))
    assert malformed.returncode == 2 and "bad.json is not a coopctl export: not JSON" in malformed.stderr
    assert "Traceback" not in tampered.stderr + malformed.stderr
    assert not (tmp_path / "sub.db").exists()


# --------------------------------------------------------------------------- the property


PARTY_ACTIONS = [
    (Action.ACCEPT, Party.CREATOR), (Action.REJECT, Party.CREATOR), (Action.WITHDRAW, Party.MERCHANT),
    (Action.CANCEL_REQUEST, Party.MERCHANT), (Action.CANCEL_REQUEST, Party.CREATOR),
    (Action.CANCEL_CONFIRM, Party.MERCHANT), (Action.CANCEL_CONFIRM, Party.CREATOR),
    (Action.CANCEL_DECLINE, Party.MERCHANT), (Action.CANCEL_DECLINE, Party.CREATOR),
    (Action.GO_LIVE, Party.CREATOR), (Action.DELIVER, Party.CREATOR),
    (Action.REVIEW_PASS, Party.MERCHANT), (Action.REVIEW_FAIL, Party.MERCHANT),
    ("tick", None),
]
windows = st.integers(1, 72).map(lambda h: h * HOUR)
policies = st.builds(
    Policy, accept_window=windows, cancel_response_window=windows, auto_deliver_after=windows,
    review_window=windows, makeup_window=windows, max_failed_reviews=st.integers(0, 3),
)
steps = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(PARTY_ACTIONS), st.integers(0, 30 * 60).map(lambda m: m * MINUTE)),
    max_size=14,
)


def _memory_service(policy: Policy) -> Service:
    settings = Settings(policy=policy, reminders=ReminderOffsets(before_accept_deadline=2 * HOUR, before_latest_start=3 * HOUR, before_review_deadline=HOUR))
    return Service(Store(Location.memory()), settings, "prop")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, orders=st.integers(1, 3), plan=steps, latest=st.integers(2, 200))
def test_any_history_made_by_valid_actions_replays_and_round_trips(policy, orders, plan, latest):
    """Random actions (refused ones are simply not recorded) and ticks, through the service on a
    database; the export replays with exit 0, imports elsewhere, and exports the same bytes."""
    svc = _memory_service(policy)
    start = parse_instant("2026-11-01T00:00:00+08:00", SHANGHAI)
    ids = []
    for n in range(orders):
        order, _ = service.create_order(
            svc, merchant=f"商家{n}", creator=f"达人{n}", products=["P"], form="live", commission="10", ad_budget="0",
            latest_start_at=start + latest * HOUR, note=None, at=start + n * MINUTE,
        )
        ids.append(order.id)
    now = start + orders * MINUTE
    for which, (action, party), step in plan:
        now += step
        if action == "tick":
            service.tick(svc, now)
            continue
        order_id = ids[which % len(ids)]
        who = f"{'商家' if party is Party.MERCHANT else '达人'}{order_id - 1}"
        try:
            service.perform(svc, order_id, action, party, who, now, reason="原因", evidence="https://v.douyin.com/x")
        except Refused:
            pass
    try:
        _check_round_trip(svc, policy, now, orders)
    finally:
        svc.store.dispose()


def _check_round_trip(svc: Service, policy: Policy, now: int, orders: int) -> None:
    document = exchange.export_document(svc, None, exported_at=now, tz=SHANGHAI)
    text = exchange.dumps(document)
    verdicts = exchange.replay(exchange.parse_document(text))
    assert [v.message for v in verdicts] == [""] * orders
    copy_svc = _memory_service(Policy())
    try:
        exchange.import_orders(copy_svc, exchange.parse_document(text))
        assert exchange.dumps(exchange.export_document(copy_svc, None, exported_at=now, tz=SHANGHAI)) == text
    finally:
        copy_svc.store.dispose()
    # under the same policy, a what-if changes nothing
    assert all(r.first_difference is None and not r.refused for r in exchange.what_if(exchange.parse_document(text), policy))
