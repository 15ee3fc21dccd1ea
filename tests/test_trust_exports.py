"""Files are input like any other (SPEC section 7) and look-alike parties (SPEC section 1).

Everything `replay` and `import` read from an export is checked as strictly as the same value
typed: ids, operators, texts, recipients, channels, kinds, instants, order ids. The outbox is
rebuilt through the rules and compared with the file: a notification the rules did not write, a
missing or altered one, a silenced or forged reminder is a divergence (exit 1) that names the
order and the notification, and `import` writes nothing. The forger here edits the file and
recomputes the hash chain (`lifecycle.event_hash`), so the chain alone cannot tell.

The story (`story`) is played with real commands at fixed instants, some of them in another time
zone (the texts of its notifications carry instants in both offsets), with ticks that write each
kind of reminder, a deadline that passed with no tick after its reminder, and an action dated
before a reminder that a tick had already written.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sqlite3
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from coopctl import exchange, history, lifecycle, trust
from coopctl.errors import InvalidInput
from coopctl.lifecycle import GENESIS_HASH, Terms, event_hash
from coopctl.policy import HOUR, MINUTE, Policy, ReminderOffsets, iso, parse_instant

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXPORTED_AT = "2026-12-04T09:00"

ESC = "\x1b[2J\x1b[H"  # clear the screen
OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # write the clipboard
ZWSP, RLO, LRI, BOM, NBSP, IDEOGRAPHIC_SPACE = "\u200b", "\u202e", "\u2066", "\ufeff", "\u00a0", "\u3000"


# --------------------------------------------------------------------------- helpers


class Cli:
    """`coopctl ...` in-process on one database, no configuration leaking in; `tz` runs the
    command with a configuration file whose display time zone is `tz`."""

    def __init__(self, db: Path, cwd: Path):
        self.db, self.cwd, self.runner = db, cwd, CliRunner()

    def __call__(self, *args, db: Path | None = None, tz: str | None = None, input: str | None = None):
        from coopctl.cli import app

        env = {k: None for k in os.environ if k.startswith("COOPCTL_")}
        env.update({"COOPCTL_DB": str(db or self.db), "COOPCTL_OPERATOR": "tester", "NO_COLOR": "1"})
        if tz is not None:
            config = self.cwd / f"{tz.replace('/', '_')}.toml"
            config.write_text(f'[display]\ntimezone = "{tz}"\n')
            env["COOPCTL_CONFIG"] = str(config)
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = self.runner.invoke(app, [str(a) for a in args], env=env, input=input)
        finally:
            os.chdir(old)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args, **kwargs):
        result = self(*args, **kwargs)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result


NY = "America/New_York"


def story(cli: Cli) -> None:
    """1 completed, with an accept (SMS), a latest-start and a review reminder on its way; 2 pending,
    reminded, its accept deadline passed with no tick since; 3 effective, accepted at an instant
    before the accept reminder that a tick had already written; 4 cancelled unilaterally, its
    request made in New York (its text holds a deadline at -05:00)."""
    c = cli.ok
    c("create", "--merchant", "商家A", "--creator", "达人小王", "--product", "P1", "--form", "live", "--commission", "12.5",
      "--ad-budget", "5000", "--latest-start", "2026-11-10T20:00", "--note", "双十一", "--at", "2026-11-01T10:00")
    c("create", "--merchant", "商家B", "--creator", "达人阿珍", "--product", "P2", "--form", "video", "--commission", "8",
      "--latest-start", "2026-11-20T12:00+08:00", "--at", "2026-11-02T09:00+08:00", tz=NY)
    c("accept", "2", "--creator", "达人阿珍", "--at", "2026-11-02T12:00+08:00", tz=NY)
    c("tick", "--now", "2026-11-03T12:00")  # order 1: the accept reminder (SMS)
    c("cancel-request", "2", "--creator", "达人阿珍", "--reason", "档期冲突", "--at", "2026-11-03T10:00+08:00", tz=NY)
    c("accept", "1", "--creator", "达人小王", "--at", "2026-11-03T13:00")
    c("create", "--merchant", "商家C", "--creator", "达人老李", "--product", "P3", "--form", "live", "--commission", "10",
      "--latest-start", "2026-11-30T20:00", "--at", "2026-11-08T10:00")
    c("tick", "--now", "2026-11-09T21:00+08:00", tz=NY)  # order 1: latest start reminder; order 2 cancelled unilaterally
    c("tick", "--now", "2026-11-10T11:00")  # order 3: accept reminder at 11-10 10:00
    c("accept", "3", "--creator", "达人老李", "--at", "2026-11-09T08:00")  # before that reminder, after its creation
    c("go-live", "1", "--creator", "达人小王", "--at", "2026-11-10T12:00")
    c("deliver", "1", "--creator", "达人小王", "--evidence", "https://v.douyin.com/1", "--at", "2026-11-10T14:00")
    c("create", "--merchant", "商家D", "--creator", "达人大刘", "--product", "P4", "--form", "live", "--commission", "9",
      "--latest-start", "2026-12-30T20:00", "--idempotency-key", "k-4", "--at", "2026-11-20T10:00")
    c("tick", "--now", "2026-11-23T00:00")  # order 1: review reminder; order 4: accept reminder
    c("review", "1", "--merchant", "商家A", "--pass", "--at", "2026-11-23T10:00")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("trust-story")
    cli = Cli(folder / "story.db", folder)
    story(cli)
    return folder / "story.db", cli.ok("export", "--all", "--at", EXPORTED_AT).stdout


@pytest.fixture
def doc(made) -> dict:
    return json.loads(made[1])


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "target.db", tmp_path)


def write(tmp_path: Path, document, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def order_of(doc: dict, order_id: int) -> dict:
    return next(o for o in doc["orders"] if o["id"] == order_id)


def rehash(order: dict) -> None:
    """The forger's move: recompute every hash of the order's chain after an edit."""
    previous = GENESIS_HASH
    for e in order["events"]:
        e["prev_hash"] = previous
        try:
            at = parse_instant(e["at"], SHANGHAI)
        except ValueError:  # an instant no command could write: left as the forger wrote it
            continue
        e["hash"] = event_hash(order["id"], e["seq"], e["kind"], at, e["actor"], e["operator"], e["data"], previous)
        previous = e["hash"]


def index_of(order: dict, kind: str, channel: str | None = None, nth: int = 0) -> int:
    found = [i for i, n in enumerate(order["notifications"]) if n["kind"] == kind and channel in (None, n["channel"])]
    return found[nth]


def one_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "\x1b" not in result.stderr + result.stdout
    return lines[0]


def refused(cli: Cli, tmp_path: Path, document, code: int) -> str:
    """Replay and import both refuse the file with `code`; the import writes nothing at all."""
    path = write(tmp_path, document)
    replayed = cli("replay", path)
    assert replayed.exit_code == code, (replayed.stdout, replayed.stderr)
    line = one_error(replayed)
    imported = cli("import", path)
    assert imported.exit_code == code, imported.stderr
    assert not cli.db.exists(), "a refused import must not even create the database"
    return line


def reproduced(cli: Cli, tmp_path: Path, document) -> None:
    result = cli("replay", write(tmp_path, document))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


# --------------------------------------------------------------------------- the story itself


def test_the_story_has_every_kind_of_reminder_and_texts_in_two_offsets(doc):
    reminders = [n for o in doc["orders"] for n in o["notifications"] if n["kind"] == "reminder"]
    assert sorted((n["order"], n["channel"]) for n in reminders) == [(1, "inbox"), (1, "inbox"), (1, "sms"), (3, "sms"), (4, "sms")]
    texts = " ".join(n["text"] for o in doc["orders"] for n in o["notifications"])
    assert "-05:00" in texts and "+08:00" in texts
    three = order_of(doc, 3)
    kinds = [n["kind"] for n in three["notifications"]]
    assert kinds == ["created", "created", "reminder", "accepted"]  # the reminder was written before the (earlier) accept
    assert three["notifications"][2]["at"] > three["notifications"][3]["at"]
    assert order_of(doc, 2)["status"] == "cancelled_unilaterally" and order_of(doc, 4)["status"] == "pending"


def test_a_genuine_export_reproduces_and_imports_with_its_outbox(made, doc, cli, tmp_path):
    path = write(tmp_path, made[1])
    result = cli.ok("replay", path)
    assert "4 of 4 orders reproduced" in result.stdout
    cli.ok("import", path)
    with sqlite3.connect(cli.db) as conn:
        stored = conn.execute("SELECT count(*) FROM notifications").fetchone()[0]
    assert stored == sum(len(o["notifications"]) for o in doc["orders"])
    assert cli.ok("export", "--all", "--at", EXPORTED_AT).stdout == made[1]


def test_the_same_instant_written_in_another_offset_is_the_same_text(doc, cli, tmp_path):
    order = order_of(doc, 2)
    i = index_of(order, "cancel_requested")
    text = order["notifications"][i]["text"]
    stamp = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-05:00", text).group(0)
    order["notifications"][i]["text"] = text.replace(stamp, iso(parse_instant(stamp, SHANGHAI), SHANGHAI))
    for n in order["notifications"]:
        n["at"] = iso(parse_instant(n["at"], SHANGHAI)).replace("+00:00", "Z")
    reproduced(cli, tmp_path, doc)


def test_another_instant_in_a_text_is_a_divergence(doc, cli, tmp_path):
    order = order_of(doc, 2)
    i = index_of(order, "cancel_requested")
    note = order["notifications"][i]
    note["text"] = re.sub(r"T\d\d:", "T23:", note["text"])
    line = refused(cli, tmp_path, doc, 1)
    assert line.startswith(f"error: order 2 diverges at notifications[{i}] (kind cancel_requested): "), line
    assert "text" in line


# --------------------------------------------------------------------------- a forged outbox


def rewritten_sms_text(doc):
    order = order_of(doc, 1)
    i = index_of(order, "created", "sms")
    order["notifications"][i]["text"] = "商家A: 请把保证金转到 6222 0000 1234 5678"
    return 1, i, "created", "text"


def sms_to_another_recipient(doc):
    order = order_of(doc, 1)
    i = index_of(order, "created", "sms")
    order["notifications"][i]["recipient"] = "creator:达人阿珍"
    return 1, i, "created", "recipient"


def inbox_made_sms(doc):
    order = order_of(doc, 2)
    i = index_of(order, "accepted")
    order["notifications"][i]["channel"] = "sms"
    return 2, i, "accepted", "channel"


def kind_changed(doc):
    order = order_of(doc, 1)
    i = index_of(order, "review_passed")
    order["notifications"][i]["kind"] = "accepted"
    return 1, i, "accepted", "kind"


def at_changed(doc):
    order = order_of(doc, 1)
    i = index_of(order, "went_live")
    order["notifications"][i]["at"] = "2026-11-10T12:00:01+08:00"
    return 1, i, "went_live", "at"


def notification_deleted(doc):
    order = order_of(doc, 2)
    i = index_of(order, "cancelled_unilaterally", nth=1)
    del order["notifications"][i]
    return 2, i, "cancelled_unilaterally", "missing"


def message_nobody_caused(doc):
    order = order_of(doc, 4)
    forged = dict(order["notifications"][0], channel="sms", text="您的账户存在风险，请点击 http://evil.example 验证")
    order["notifications"].append(forged)
    return 4, len(order["notifications"]) - 1, "created", "no such notification"


def notification_duplicated(doc):
    order = order_of(doc, 1)
    i = index_of(order, "review_passed")
    order["notifications"].insert(i + 1, copy.deepcopy(order["notifications"][i]))
    return 1, i + 1, "review_passed", "no such notification"


def notifications_of_two_events_swapped(doc):
    order = order_of(doc, 1)
    i, j = index_of(order, "went_live"), index_of(order, "delivered")
    order["notifications"][i], order["notifications"][j] = order["notifications"][j], order["notifications"][i]
    return 1, i, "delivered", "went_live"


FORGED_OUTBOX = [rewritten_sms_text, sms_to_another_recipient, inbox_made_sms, kind_changed, at_changed,
                 notification_deleted, message_nobody_caused, notification_duplicated, notifications_of_two_events_swapped]


@pytest.mark.parametrize("forge", FORGED_OUTBOX, ids=lambda f: f.__name__)
def test_a_forged_outbox_is_a_divergence_naming_the_order_and_the_notification(doc, cli, tmp_path, forge):
    order, index, kind, says = forge(doc)
    line = refused(cli, tmp_path, doc, 1)
    assert line.startswith(f"error: order {order} diverges at notifications[{index}] (kind {kind}): "), line
    assert says in line, line


def test_replay_json_names_the_notification(doc, cli, tmp_path):
    rewritten_sms_text(doc)
    result = cli("replay", write(tmp_path, doc), "--json")
    assert result.exit_code == 1
    verdicts = {v["order"]: v for v in json.loads(result.stdout)}
    assert verdicts[1]["verdict"] == "diverges" and verdicts[1]["notification"] == 1
    assert [verdicts[i]["verdict"] for i in (2, 3, 4)] == ["reproduced"] * 3


# --------------------------------------------------------------------------- reminders, both ways


def reminder_silenced(doc):
    """The review reminder removed, its key left in reminders_sent: the merchant was never told."""
    order = order_of(doc, 1)
    del order["notifications"][index_of(order, "reminder", nth=2)]
    return 1, "reminders_sent", "no such reminder"


def reminder_forged_without_its_key(doc):
    """A reminder the order does not know it sent (its key removed from reminders_sent)."""
    order = order_of(doc, 4)
    order["reminders_sent"] = []
    return 4, f"notifications[{index_of(order, 'reminder')}] (kind reminder)", "not in reminders_sent"


def reminder_key_without_its_reminder(doc):
    """A key claiming the latest-start reminder of order 4 was sent: after an import, tick would never send it."""
    order = order_of(doc, 4)
    latest = parse_instant(order["latest_start_at"], SHANGHAI)
    order["reminders_sent"] = sorted(order["reminders_sent"] + [f"latest_start@{latest}"])
    return 4, "reminders_sent", "no such reminder"


def reminder_text_rewritten(doc):
    order = order_of(doc, 4)
    i = index_of(order, "reminder")
    order["notifications"][i]["text"] = "please pay the deposit for cooperation order #4 today"
    return 4, f"notifications[{i}] (kind reminder)", "not a reminder the rules write"


def reminder_to_another_recipient(doc):
    order = order_of(doc, 1)
    i = index_of(order, "reminder", nth=2)
    order["notifications"][i]["recipient"] = "creator:达人小王"
    return 1, f"notifications[{i}] (kind reminder)", "not a reminder the rules write"


def reminder_at_moved(doc):
    order = order_of(doc, 4)
    i = index_of(order, "reminder")
    order["notifications"][i]["at"] = "2026-11-22T11:00:00+08:00"
    return 4, f"notifications[{i}] (kind reminder)", "the rules write it at"


def reminder_where_it_does_not_apply(doc):
    """The accept reminder of order 1 moved after its acceptance: no tick writes it there."""
    order = order_of(doc, 1)
    notes = order["notifications"]
    reminder = notes.pop(index_of(order, "reminder"))
    at = index_of(order, "accepted")
    notes.insert(at + 1, reminder)
    return 1, f"notifications[{at + 1}] (kind reminder)", "not a reminder the rules write after event seq 2 (accepted, order effective)"


def reminder_no_tick_could_write(doc):
    """Order 4's latest-start reminder, text and key exact, while it is pending: its time (a day before
    the latest start) comes after the accept deadline, which a tick would have fired first."""
    order = order_of(doc, 4)
    latest = parse_instant(order["latest_start_at"], SHANGHAI)
    text = f"cooperation order #4 must go live by {iso(latest, SHANGHAI)}"
    order["notifications"].append(dict(order["notifications"][0], channel="inbox", kind="reminder", at=iso(latest - 24 * HOUR, SHANGHAI), text=text))
    order["reminders_sent"] = sorted(order["reminders_sent"] + [f"latest_start@{latest}"])
    return 4, f"notifications[{len(order['notifications']) - 1}] (kind reminder)", "no tick can write it"


def reminder_written_twice(doc):
    order = order_of(doc, 4)
    i = index_of(order, "reminder")
    order["notifications"].insert(i + 1, copy.deepcopy(order["notifications"][i]))
    return 4, f"notifications[{i + 1}] (kind reminder)", "already written"


def reminder_before_the_order(doc):
    order = order_of(doc, 3)
    notes = order["notifications"]
    notes.insert(0, notes.pop(index_of(order, "reminder")))
    return 3, "notifications[0] (kind reminder)", "before the order was created"


FORGED_REMINDERS = [reminder_silenced, reminder_forged_without_its_key, reminder_key_without_its_reminder,
                    reminder_text_rewritten, reminder_to_another_recipient, reminder_at_moved,
                    reminder_where_it_does_not_apply, reminder_no_tick_could_write, reminder_written_twice,
                    reminder_before_the_order]


@pytest.mark.parametrize("forge", FORGED_REMINDERS, ids=lambda f: f.__name__)
def test_forged_or_silenced_reminders_are_a_divergence(doc, cli, tmp_path, forge):
    order, where, says = forge(doc)
    line = refused(cli, tmp_path, doc, 1)
    assert line.startswith(f"error: order {order} diverges at {where}: "), line
    assert says in line, line


def test_an_order_that_no_tick_reminded_reproduces_without_reminders(doc, cli, tmp_path):
    """Reminders depend on cron: the file of a book whose tick never ran in the window has none."""
    order = order_of(doc, 4)
    order["notifications"] = [n for n in order["notifications"] if n["kind"] != "reminder"]
    order["reminders_sent"] = []
    reproduced(cli, tmp_path, doc)


# --------------------------------------------------------------------------- hostile text in every field


def _order_field(key, value):
    def edit(doc):
        order = order_of(doc, 1)
        if key == "products":
            order["products"] = [value]
        else:
            order[key] = value
    return edit


def _event_field(seq, path, value):
    """Set an event's field (or a path into its data), then recompute the chain."""
    def edit(doc):
        order = order_of(doc, 1)
        node = order["events"][seq - 1]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        rehash(order)
    return edit


def _note_field(key, value):
    def edit(doc):
        order_of(doc, 1)["notifications"][0][key] = value
    return edit


HOSTILE_TEXT = {"esc": ESC, "osc52": OSC52, "zwsp": ZWSP, "rlo": RLO, "bom": BOM}
HOSTILE_ID = {**HOSTILE_TEXT, "lri": LRI, "nbsp": NBSP, "ideographic-space": IDEOGRAPHIC_SPACE, "nfd": "e\u0301",
              "trailing-space": " "}
HOSTILE_FIELDS = [
    *[(f"order-merchant-{n}", _order_field("merchant", "商家" + v)) for n, v in HOSTILE_ID.items()],
    *[(f"order-creator-{n}", _order_field("creator", "达人" + v)) for n, v in list(HOSTILE_ID.items())[:3]],
    *[(f"order-product-{n}", _order_field("products", "P" + v)) for n, v in list(HOSTILE_ID.items())[5:]],
    *[(f"order-note-{n}", _order_field("note", "双十一" + v)) for n, v in HOSTILE_TEXT.items()],
    *[(f"terms-merchant-{n}", _event_field(1, ("data", "terms", "merchant"), "商家A" + v)) for n, v in HOSTILE_ID.items()],
    *[(f"terms-note-{n}", _event_field(1, ("data", "terms", "note"), "双十一" + v)) for n, v in HOSTILE_TEXT.items()],
    ("idempotency-key-zwsp", _event_field(1, ("data", "idempotency_key"), "k" + ZWSP)),
    *[(f"operator-{n}", _event_field(2, ("operator",), "ops" + v)) for n, v in HOSTILE_TEXT.items()],
    ("operator-newline", _event_field(2, ("operator",), "ops\nroot")),
    *[(f"evidence-{n}", _event_field(4, ("data", "evidence"), "https://v.douyin.com/1" + v)) for n, v in HOSTILE_TEXT.items()],
    ("event-actor-zwsp", _event_field(2, ("actor",), "creator:达人小王" + ZWSP)),
    ("event-actor-unknown", _event_field(2, ("actor",), "admin")),
    ("event-kind-unknown", _event_field(2, ("kind",), "paid_out")),
    *[(f"notification-text-{n}", _note_field("text", "商家A proposes" + v)) for n, v in HOSTILE_TEXT.items()],
    ("notification-recipient-zwsp", _note_field("recipient", "creator:达人小王" + ZWSP)),
    ("notification-recipient-phone", _note_field("recipient", "+86 138 0000 0000")),
    ("notification-channel-email", _note_field("channel", "email")),
    ("notification-kind-unknown", _note_field("kind", "payment")),
    ("notification-text-too-long", _note_field("text", "x" * 4000)),
    ("merchant-is-its-own-creator", _order_field("creator", "商家A")),
]


@pytest.mark.parametrize("edit", [e for _, e in HOSTILE_FIELDS], ids=[n for n, _ in HOSTILE_FIELDS])
def test_hostile_text_in_any_field_of_a_file_is_exit_2(doc, cli, tmp_path, edit):
    edit(doc)
    line = refused(cli, tmp_path, doc, 2)
    assert "order 1" in line, line
    for raw in ("\x1b", ZWSP, RLO, LRI, BOM, "\x07"):
        assert raw not in line


def test_a_refused_character_is_named_by_its_code_point(doc, cli, tmp_path):
    _order_field("merchant", "商家A" + RLO)(doc)
    line = refused(cli, tmp_path, doc, 2)
    assert "order 1: merchant id" in line and "U+202E" in line, line


def test_a_whole_forged_order_with_a_look_alike_merchant_is_exit_2(doc, cli, tmp_path):
    """Order 1 rewritten consistently for merchant 商家A + U+200B (events rehashed, order fields and
    texts too): the chain holds, yet the id is one the command line would refuse."""
    order = order_of(doc, 1)
    text = json.dumps(order, ensure_ascii=False).replace("商家A", "商家A" + ZWSP)
    order.clear()
    order.update(json.loads(text))
    rehash(order)
    line = refused(cli, tmp_path, doc, 2)
    assert "U+200B" in line


# --------------------------------------------------------------------------- instants and ids


def test_an_export_dated_before_its_own_last_event_is_exit_2(doc, cli, tmp_path):
    doc["exported_at"] = "2026-11-23T09:59:59+08:00"  # the last event: order 1's review at 10:00
    line = refused(cli, tmp_path, doc, 2)
    assert "'exported_at'" in line and "before the last event of order 1" in line, line


def test_an_export_dated_at_its_last_event_reproduces(doc, cli, tmp_path):
    doc["exported_at"] = "2026-11-23T02:00:00Z"
    reproduced(cli, tmp_path, doc)


def test_an_event_before_1970_is_exit_2(doc, cli, tmp_path):
    _event_field(2, ("at",), "1969-12-31T23:59:59Z")(doc)
    assert "out of range" in refused(cli, tmp_path, doc, 2)


def _renumbered(doc: dict, new_id: int) -> dict:
    """Order 4 alone under another id, consistently: its texts, events (rehashed) and notifications."""
    order = order_of(doc, 4)
    order["id"] = new_id
    for n in order["notifications"]:
        n["order"] = new_id
        n["text"] = n["text"].replace("#4", f"#{new_id}")
    rehash(order)
    doc["orders"] = [order]
    return doc


@pytest.mark.parametrize("order_id", [2**53, 2**62, -1, 0], ids=["2^53", "2^62", "negative", "zero"])
def test_an_order_id_outside_1_to_2_53_minus_1_is_exit_2(doc, cli, tmp_path, order_id):
    line = refused(cli, tmp_path, _renumbered(doc, order_id), 2)
    assert "'id' must be from 1 to 9007199254740991" in line, line


def test_the_largest_order_id_is_read_exactly(doc, cli, tmp_path):
    reproduced(cli, tmp_path, _renumbered(doc, trust.MAX_ORDER_ID))
    assert exchange.MAX_ID == trust.MAX_ORDER_ID == 2**53 - 1


# --------------------------------------------------------------------------- genuine books still reproduce


def test_a_genuine_export_of_every_status_reproduces_before_and_after_ticks(cli, tmp_path):
    demo = tmp_path / "demo.db"
    cli.ok("demo", db=demo)
    first = cli.ok("export", "--all", "--at", "2030-01-01T00:00", db=demo).stdout
    statuses = {o["status"] for o in json.loads(first)["orders"]}
    assert statuses >= {s.value for s in lifecycle.Status}
    cli.ok("tick", "--now", "2029-12-31T00:00", db=demo, tz=NY)
    later = cli.ok("export", "--all", "--at", "2030-01-01T00:00", db=demo).stdout
    for text in (first, later):
        assert "orders reproduced" in cli.ok("replay", write(tmp_path, text)).stdout


def test_a_ticked_book_with_reminders_reproduces_and_imports(cli, tmp_path):
    from dbtools import BASE, build

    book = tmp_path / "book.db"
    build(book, 48)
    for hours in range(6, 24 * 20, 11):
        cli.ok("tick", "--now", iso(BASE + hours * HOUR), db=book, tz=NY if hours % 2 else None)
    text = cli.ok("export", "--all", "--at", "2027-01-01T00:00", db=book).stdout
    reminders = {n["text"].split(" ")[0] for o in json.loads(text)["orders"] for n in o["notifications"] if n["kind"] == "reminder"}
    assert reminders == {"please", "cooperation"}  # accept and review reminders ("please"), latest start
    path = write(tmp_path, text)
    assert "48 of 48 orders reproduced" in cli.ok("replay", path).stdout
    cli.ok("import", path)


def test_the_sample_dispute_still_reproduces(cli):
    sample = Path(__file__).resolve().parent.parent / "sample_data" / "dispute_export.json"
    assert "2 of 2 orders reproduced" in cli.ok("replay", sample).stdout


# --------------------------------------------------------------------------- ids on the command line


def create(cli: Cli, **override):
    options = {"--merchant": "商家A", "--creator": "达人小王", "--product": "P1", "--form": "live",
               "--commission": "12.5", "--latest-start": "2026-12-30T20:00", "--at": "2026-11-01T10:00"}
    options.update(override)
    return cli("create", *[w for k, v in options.items() for w in (k, v)])


LOOK_ALIKE = [
    ("--merchant", "商家A" + ZWSP, "U+200B"),
    ("--merchant", RLO + "商家A", "U+202E"),
    ("--creator", "达人" + LRI + "小王", "U+2066"),
    ("--creator", BOM + "达人小王", "U+FEFF"),
    ("--product", "P" + NBSP + "1", "U+00A0"),
    ("--product", "商品" + IDEOGRAPHIC_SPACE + "1", "U+3000"),
    ("--merchant", "cafe\u0301", "U+0301"),
    ("--merchant", " 商家A", "U+0020"),
    ("--creator", "达人小王 ", "U+0020"),
    ("--idempotency-key", "key" + ZWSP, "U+200B"),
]


@pytest.mark.parametrize("option, value, point", LOOK_ALIKE, ids=[f"{o}-{p}" for o, _, p in LOOK_ALIKE])
def test_a_look_alike_id_on_the_command_line_is_exit_2_naming_the_character(cli, option, value, point):
    result = create(cli, **{option: value})
    assert result.exit_code == 2, result.stderr
    line = one_error(result)
    assert point in line, line
    assert ZWSP not in line and RLO not in line and BOM not in line
    assert not cli.db.exists()


def test_a_merchant_cannot_be_its_own_creator(cli):
    result = create(cli, **{"--creator": "商家A"})
    assert result.exit_code == 2
    assert "the merchant and the creator are the same id" in one_error(result)


def test_nfc_ids_and_inner_spaces_are_valid_and_stored_exactly(cli):
    result = create(cli, **{"--merchant": "caf\u00e9 旗舰店", "--product": "商品 A", "--idempotency-key": "k 1"})
    assert result.exit_code == 0, result.stderr
    shown = json.loads(cli.ok("show", "1", "--json").stdout)
    assert (shown["merchant"], shown["products"]) == ("caf\u00e9 旗舰店", ["商品 A"])


# --------------------------------------------------------------------------- ids stored before the rules


def _legacy_book(path: Path) -> None:
    """One order as the rules before SPEC section 1's look-alike rules stored it: merchant and
    creator the same id 商家A + U+200B (both refused today), a reason holding U+200B."""
    from coopctl.lifecycle import Action, Party
    from coopctl.store import Store, locate

    start = parse_instant("2026-11-01T10:00+08:00", SHANGHAI)
    legacy = "商家A" + ZWSP
    terms = Terms(legacy, legacy, ("P1",), "live", Decimal("12.50"), Decimal("0.00"), start + 200 * HOUR)
    outcome = lifecycle.create(1, terms, Policy(), ReminderOffsets(), start, "old-ops")
    outcome = outcome.then(lifecycle.act(outcome.order, Action.ACCEPT, Party.CREATOR, legacy, start + HOUR, "old-ops", strict=False))
    outcome = outcome.then(lifecycle.act(outcome.order, Action.CANCEL_REQUEST, Party.MERCHANT, legacy, start + 2 * HOUR,
                                         "old-ops", reason="档期" + ZWSP, strict=False))
    store = Store(locate(str(path)))
    store.initialise(made_by="test")
    try:
        with store.write() as tx:
            tx.insert_new([outcome])
    finally:
        store.dispose()


def test_ids_stored_before_the_rules_stay_readable_and_are_never_rewritten(tmp_path):
    cli = Cli(tmp_path / "legacy.db", tmp_path)
    _legacy_book(cli.db)
    shown = cli.ok("show", "1")
    assert "cancel_requested" in shown.stdout
    assert json.loads(cli.ok("show", "1", "--json").stdout)["merchant"] == "商家A" + ZWSP
    listed = json.loads(cli.ok("list", "--json").stdout)
    assert [party for o in listed for party in (o["merchant"], o["creator"])].count("商家A" + ZWSP) == 2
    text = cli.ok("export", "--all", "--at", EXPORTED_AT).stdout
    cli.ok("tick", "--now", "2026-11-20T00:00")
    assert json.loads(cli.ok("show", "1", "--json").stdout)["status"] == "cancelled_unilaterally"
    # a file is new input: the same history read from an export is refused
    result = Cli(tmp_path / "other.db", tmp_path)("import", write(tmp_path, text))
    assert result.exit_code == 2 and "U+200B" in one_error(result)


def test_a_stored_history_rebuilds_leniently_and_a_file_strictly(tmp_path):
    from coopctl.store import Store, locate

    path = tmp_path / "legacy.db"
    _legacy_book(path)
    store = Store(locate(str(path)))
    try:
        with store.read() as tx:
            events = tx.events(1)
    finally:
        store.dispose()
    steps = history.rebuild(1, events, strict=False)
    assert [s.order.status.value for s in steps] == ["pending", "effective", "cancel_requested"]
    assert [len(s.notifications) for s in steps] == [2, 1, 1]
    with pytest.raises(history.Divergence, match="U\\+200B"):
        history.rebuild(1, events)
    assert trust.id_problem("商家A" + ZWSP) is not None and trust.id_problem("商家A") is None


def test_lifecycle_keeps_the_trust_rules_under_their_old_names():
    assert lifecycle.check_id is trust.check_id and lifecycle.check_text is trust.check_text
    assert (lifecycle.MAX_ID_LENGTH, lifecycle.MAX_TEXT_LENGTH) == (trust.MAX_ID_LENGTH, trust.MAX_TEXT_LENGTH)
    with pytest.raises(InvalidInput, match="U\\+200B"):
        Terms.from_json({**_terms_json(), "creator": "达人" + ZWSP})
    assert Terms.from_json({**_terms_json(), "creator": "达人" + ZWSP}, strict=False).creator == "达人" + ZWSP


def _terms_json() -> dict:
    return {"merchant": "商家A", "creator": "达人小王", "products": ["P1"], "form": "live", "commission_pct": "12.5",
            "ad_budget": "0", "latest_start_at": "2026-12-01T00:00:00+00:00", "note": None}


# --------------------------------------------------------------------------- the forger, fuzzed


def _mutation(doc: dict, data) -> bool:
    """One forger's edit of the story's export, the hash chains recomputed afterwards. Returns
    whether the edit must be refused (False: it may be a valid other history, such as another
    operator's name, and must then be refused only when the value is hostile)."""
    orders = doc["orders"]
    order = data.draw(st.sampled_from(orders), label="order")
    notes = order["notifications"]
    move = data.draw(st.sampled_from([
        "note-text", "note-recipient", "note-channel", "note-kind", "note-at", "note-delete", "note-insert",
        "note-move", "sent-add", "sent-remove", "event-at", "event-operator", "terms-amount", "order-amount",
        "exported-at",
    ]), label="move")
    i = data.draw(st.integers(0, len(notes) - 1), label="notification")
    e = data.draw(st.integers(0, len(order["events"]) - 1), label="event")
    must = True
    if move == "note-text":
        text = data.draw(st.text(max_size=60))
        assume(history.comparable_text(text) != history.comparable_text(notes[i]["text"]))
        notes[i]["text"] = text
    elif move == "note-recipient":
        who = data.draw(st.sampled_from(["platform", "merchant:商家A", "creator:达人小王", "creator:达人阿珍", "merchant:商家D"]) | st.text(max_size=20))
        assume(who != notes[i]["recipient"])
        notes[i]["recipient"] = who
    elif move == "note-channel":
        notes[i]["channel"] = {"sms": "inbox", "inbox": "sms"}[notes[i]["channel"]]
    elif move == "note-kind":
        kind = data.draw(st.sampled_from(sorted(exchange.NOTIFICATION_KINDS)))
        assume(kind != notes[i]["kind"])
        notes[i]["kind"] = kind
    elif move == "note-at":
        shift = data.draw(st.integers(-10**6, 10**6).filter(bool))
        notes[i]["at"] = iso(parse_instant(notes[i]["at"], SHANGHAI) + shift * MINUTE)
    elif move == "note-delete":
        del notes[i]
    elif move == "note-insert":
        notes.insert(i, copy.deepcopy(notes[data.draw(st.integers(0, len(notes) - 1))]))
    elif move == "note-move":
        j = data.draw(st.integers(0, len(notes) - 1))
        before = copy.deepcopy(notes)
        notes.insert(j, notes.pop(i))
        assume(notes != before)  # a move among identical neighbours changes nothing
    elif move == "sent-add":
        key = f"{data.draw(st.sampled_from(['accept', 'latest_start', 'review']))}@{data.draw(st.integers(0, 2**40))}"
        assume(key not in order["reminders_sent"])
        order["reminders_sent"] = sorted(order["reminders_sent"] + [key])
    elif move == "sent-remove":
        assume(order["reminders_sent"])
        order["reminders_sent"] = order["reminders_sent"][1:]
    elif move == "event-at":
        shift = data.draw(st.integers(-10**5, 10**5).filter(bool))
        event = order["events"][e]
        event["at"] = iso(parse_instant(event["at"], SHANGHAI) + shift * MINUTE)
    elif move == "event-operator":
        operator = data.draw(st.text(max_size=20))
        order["events"][e]["operator"] = operator
        try:
            trust.check_operator(operator)
            must = False  # another operator's name is another valid history; a hostile one is refused
        except InvalidInput:
            pass
    elif move == "terms-amount":
        order["events"][0]["data"]["terms"]["ad_budget"] = data.draw(st.sampled_from(["0.00", "1.00", "99999.99"]))
        assume(order["events"][0]["data"]["terms"]["ad_budget"] != order["ad_budget"])
    elif move == "order-amount":
        order["commission_pct"] = data.draw(st.sampled_from(["1.00", "50.00", "100.00"]))
    elif move == "exported-at":
        last = max(parse_instant(ev["at"], SHANGHAI) for o in orders for ev in o["events"])
        doc["exported_at"] = iso(last - data.draw(st.integers(1, 10**6)) * MINUTE)
    rehash(order)
    return must


@settings(max_examples=int(os.environ.get("COOPCTL_FUZZ_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_forged_exports_with_recomputed_hashes_are_refused_and_write_nothing(made, tmp_path, data):
    doc = json.loads(made[1])
    must = _mutation(doc, data)
    cli = Cli(tmp_path / f"fuzz-{os.urandom(6).hex()}.db", tmp_path)
    path = write(tmp_path, doc, f"{cli.db.stem}.json")
    replayed = cli("replay", path)
    imported = cli("import", path)
    for result in (replayed, imported):
        assert "Traceback" not in result.stderr + result.stdout
        assert result.exit_code in ((1, 2) if must else (0, 1, 2)), (result.exit_code, result.stderr)
    assert replayed.exit_code == imported.exit_code
    if imported.exit_code:
        assert one_error(imported) and not cli.db.exists()


def test_export_is_never_dated_before_its_own_events(tmp_path):
    """`replay` and `import` refuse a back-dated file, so `export` does not write one (exit 2, no file)."""
    cli = Cli(tmp_path / "book.db", tmp_path)
    assert create(cli).exit_code == 0  # at 2026-11-01T10:00
    line = one_error(cli("export", "1", "--at", "2026-10-01T00:00"))
    assert "before the last event of order 1" in line and "--at" in line
    target = tmp_path / "out.json"
    assert cli("export", "--all", "--at", "2026-10-01T00:00", "--out", target).exit_code == 2
    assert not target.exists()
    assert cli.ok("export", "--all", "--at", EXPORTED_AT).stdout.startswith("{")
