"""The command line through typer.testing.CliRunner (SPEC section 2): options, JSON shapes,
exit codes and the one-line `error:` messages, and that a refused command changes nothing.

The end-to-end flows through the installed entry point are in test_e2e.py."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from coopctl.models import SCHEMA_VERSION

M, C = "商家A", "达人小王"
T0 = "2026-11-01T10:00:00+08:00"
LATEST = "2026-11-20T20:00:00+08:00"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
ALL_STATUSES = {
    "pending", "effective", "cancel_requested", "live", "delivered", "review_failed", "completed", "rejected",
    "withdrawn", "expired", "cancelled", "cancelled_unilaterally", "closed_overdue", "disputed",
    "extension_requested", "ruled", "resolved",
}
ORDER_FIELDS = {
    "id", "merchant", "creator", "products", "form", "commission_pct", "ad_budget", "latest_start_at", "note",
    "status", "terms", "liable_party", "created_at", "deadline", "cancel_requested_by", "went_live_at",
    "delivered_at", "delivery_mode", "failed_reviews", "policy",
    "extensions", "extension_requested_by", "proposed_latest_start_at", "disputed_by", "appeals", "ruling",
}
POLICY_DEFAULTS = {
    "accept_window": "3d", "cancel_response_window": "48h", "auto_deliver_after": "24h", "review_window": "14d",
    "makeup_window": "7d", "max_failed_reviews": 2, "extension_response_window": "48h", "max_extensions": 2,
    "max_extension": "15d", "complaint_window": "90d", "arbitration_window": "5d", "appeal_window": "14d", "max_appeals": 1,
}


# --------------------------------------------------------------------------- helpers


def create_args(**override) -> list[str]:
    options = {
        "--merchant": M, "--creator": C, "--product": "P1", "--form": "live", "--commission": "12.5",
        "--latest-start": LATEST, "--at": T0,
    }
    options.update({f"--{k.replace('_', '-')}": v for k, v in override.items()})
    args = ["create"]
    for name, value in options.items():
        if value is not None:
            args += [name, value]
    return args


def create(invoke, *extra: str, **override) -> dict:
    result = invoke(*create_args(**override), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def ok(result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def as_json(result):
    return json.loads(ok(result))


def assert_error(result, code: int, message: str | None = None, *, match: str | None = None) -> None:
    """Exit `code`, nothing on stdout, exactly one line on stderr starting with `error:`."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if message is not None:
        assert result.stderr == f"error: {message}\n"
    if match is not None:
        assert re.search(match, lines[0]), lines[0]


def status_of(invoke, order_id: int = 1) -> str:
    return as_json(invoke("show", order_id, "--json"))["status"]


def events_of(invoke, order_id: int = 1) -> list[dict]:
    return as_json(invoke("history", order_id, "--json"))


def write_config(tmp_path: Path, text: str, name: str = "coopctl.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the order as JSON


def test_create_json_is_the_order_as_the_spec_describes_it(invoke):
    order = create(invoke, "--product", "P2", "--ad-budget", "5000", "--note", "双十二预热")
    assert ORDER_FIELDS <= set(order)
    assert order["id"] == 1
    assert (order["merchant"], order["creator"], order["products"], order["form"]) == (M, C, ["P1", "P2"], "live")
    assert (order["commission_pct"], order["ad_budget"], order["note"]) == ("12.50", "5000.00", "双十二预热")
    assert (order["status"], order["terms"], order["liable_party"]) == ("pending", "not_yet_effective", None)
    assert (order["created_at"], order["latest_start_at"]) == (T0, LATEST)
    assert order["deadline"] == "2026-11-04T10:00:00+08:00"
    assert (order["cancel_requested_by"], order["went_live_at"], order["delivered_at"], order["delivery_mode"]) == (None,) * 4
    assert order["failed_reviews"] == 0
    assert order["policy"] == POLICY_DEFAULTS


def test_create_prints_the_order_and_its_deadline(invoke):
    result = invoke(*create_args())
    assert ok(result) == "order 1 created: pending, expires (not accepted in time) at 2026-11-04 10:00:00\n"
    assert result.stderr == ""


def test_show_json_has_every_order_field_and_the_events(invoke):
    create(invoke)
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    shown = as_json(invoke("show", 1, "--json"))
    assert ORDER_FIELDS | {"events"} <= set(shown)
    assert shown["status"] == "effective"
    assert [set(e) for e in shown["events"]] == [{"seq", "kind", "at", "actor", "operator", "data", "prev_hash", "hash"}] * 2
    first, second = shown["events"]
    assert (first["seq"], first["kind"], first["at"], first["actor"], first["operator"]) == (1, "created", T0, f"merchant:{M}", "ops-test")
    assert first["prev_hash"] == "0" * 64
    assert (second["seq"], second["kind"], second["actor"], second["data"]) == (2, "accepted", f"creator:{C}", {})
    assert second["prev_hash"] == first["hash"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["hash"]) for e in shown["events"])
    assert events_of(invoke) == shown["events"]


def test_every_instant_in_json_is_iso_8601_with_the_default_offset(invoke):
    create(invoke, at="2026-11-01T10:00")  # no offset: read in Asia/Shanghai
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T03:30:00Z"))
    ok(invoke("deliver", 1, "--creator", C, "--at", "2026-11-02T09:00"))
    shown = as_json(invoke("show", 1, "--json"))
    instants = [shown[k] for k in ("latest_start_at", "created_at", "deadline", "went_live_at", "delivered_at")]
    instants += [e["at"] for e in shown["events"]]
    instants += [n["at"] for n in as_json(invoke("notifications", "--json"))]
    instants.append(as_json(invoke("tick", "--now", "2026-11-03T00:00", "--json"))["now"])
    assert all(ISO.match(t) and t.endswith("+08:00") for t in instants), instants
    assert shown["created_at"] == "2026-11-01T10:00:00+08:00"
    assert shown["events"][1]["at"] == "2026-11-01T11:30:00+08:00"
    # delivering straight from effective also sets went_live_at, at the same instant
    assert shown["went_live_at"] == shown["delivered_at"] == "2026-11-02T09:00:00+08:00"
    assert [e["kind"] for e in shown["events"]] == ["created", "accepted", "delivered"]


def test_the_display_timezone_of_the_config_changes_json_instants_and_reading(invoke, tmp_path):
    write_config(tmp_path, '[display]\ntimezone = "UTC"\n')
    order = create(invoke, at="2026-11-01T10:00")  # read in UTC now
    assert order["created_at"] == "2026-11-01T10:00:00+00:00"
    assert order["latest_start_at"] == "2026-11-20T12:00:00+00:00"
    assert as_json(invoke("tick", "--now", "2026-11-01T11:00", "--json"))["now"] == "2026-11-01T11:00:00+00:00"
    assert [n["at"] for n in as_json(invoke("notifications", "--json"))] == ["2026-11-01T10:00:00+00:00"] * 2


def test_a_state_changing_command_with_json_prints_the_order_after_the_change(invoke):
    create(invoke)
    after = as_json(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00", "--json"))
    assert ORDER_FIELDS <= set(after)
    assert (after["status"], after["terms"], after["deadline"]) == ("effective", "in_force", LATEST)
    after = as_json(invoke("go-live", 1, "--creator", C, "--at", "2026-11-02T20:00:00+08:00", "--json"))
    assert (after["status"], after["went_live_at"], after["deadline"]) == ("live", "2026-11-02T20:00:00+08:00", "2026-11-03T20:00:00+08:00")


def test_an_action_prints_its_events_and_where_the_order_stands(invoke):
    create(invoke)
    result = invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00")
    assert ok(result) == (
        f"order 1: accepted at 2026-11-01 11:00:00 by creator:{C}\n"
        "order 1 is now effective (terms in_force); next deadline 2026-11-20 20:00:00: closed overdue, creator liable\n"
    )


def test_show_and_history_print_the_terms_and_the_timeline(invoke):
    create(invoke, "--note", "双十二预热")
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    shown = ok(invoke("show", 1))
    for text in ("order 1", "双十二预热", "effective", "in_force", "timeline", "accepted", f"creator:{C}",
                 "2026-11-20 20:00:00", "closed overdue, creator liable", "times in Asia/Shanghai"):
        assert text in shown, text
    history = ok(invoke("history", 1))
    assert history.splitlines()[0].split() == ["seq", "at", "kind", "actor", "data", "operator", "hash"]  # piped: a list, header first
    hashes = [e["hash"][:16] for e in events_of(invoke)]
    assert all(h in history for h in hashes)


# --------------------------------------------------------------------------- databases and configuration


def test_the_database_can_be_a_sqlalchemy_url(invoke, tmp_path):
    ok(invoke("--db", "sqlite:///url.db", "init"))
    assert (tmp_path / "url.db").exists()
    ok(invoke("--db", "sqlite:///url.db", *create_args()))
    assert [o["id"] for o in as_json(invoke("--db", "sqlite:///url.db", "list", "--json"))] == [1]


def test_the_config_database_url_applies_unless_db_or_coopctl_db_is_given(invoke, tmp_path, db_path):
    write_config(tmp_path, '[database]\nurl = "from-config.db"\n')
    ok(invoke("init", env={"COOPCTL_DB": None}))
    assert (tmp_path / "from-config.db").exists() and not db_path.exists()
    ok(invoke("init"))  # COOPCTL_DB wins
    assert db_path.exists()
    ok(invoke("--db", "flag.db", "init", env={"COOPCTL_DB": None}))  # and so does --db
    assert (tmp_path / "flag.db").exists()


def test_coopctl_config_names_the_config_file(invoke, tmp_path):
    write_config(tmp_path, '[policy]\naccept_window = "5d"\n', name="ops.toml")
    from_env = as_json(invoke(*create_args(), "--json", env={"COOPCTL_CONFIG": "ops.toml"}))
    assert (from_env["deadline"], from_env["policy"]["accept_window"]) == ("2026-11-06T10:00:00+08:00", "5d")
    from_flag = as_json(invoke("--config", "ops.toml", *create_args(), "--json"))
    assert from_flag["policy"]["accept_window"] == "5d"
    assert as_json(invoke(*create_args(), "--json"))["policy"]["accept_window"] == "3d"  # no ./coopctl.toml


# --------------------------------------------------------------------------- flows


def test_cancellation_requested_by_either_party_and_answered_by_the_other(invoke):
    for _ in range(4):
        create(invoke)
        ok(invoke("accept", _ + 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    at = ("--at", "2026-11-02T10:00:00+08:00")
    answer = ("--at", "2026-11-02T12:00:00+08:00")
    ok(invoke("cancel-request", 1, "--merchant", M, "--reason", "库存不足", *at))
    assert as_json(invoke("cancel-confirm", 1, "--creator", C, *answer, "--json"))["status"] == "cancelled"
    ok(invoke("cancel-request", 2, "--merchant", M, *at))
    declined = as_json(invoke("cancel-decline", 2, "--creator", C, *answer, "--json"))
    assert (declined["status"], declined["cancel_requested_by"]) == ("effective", None)
    requested = as_json(invoke("cancel-request", 3, "--creator", C, *at, "--json"))
    assert (requested["status"], requested["cancel_requested_by"], requested["deadline"]) == (
        "cancel_requested", "creator", "2026-11-04T10:00:00+08:00",
    )
    assert as_json(invoke("cancel-confirm", 3, "--merchant", M, *answer, "--json"))["status"] == "cancelled"
    ok(invoke("cancel-request", 4, "--creator", C, *at))
    assert as_json(invoke("cancel-decline", 4, "--merchant", M, *answer, "--json"))["status"] == "effective"
    assert [e["kind"] for e in events_of(invoke, 1)] == ["created", "accepted", "cancel_requested", "cancel_confirmed"]
    assert events_of(invoke, 1)[2]["data"] == {"by": "merchant", "reason": "库存不足"}
    assert [e["kind"] for e in events_of(invoke, 4)][-1] == "cancel_declined"


def test_an_unanswered_cancellation_makes_the_requester_liable(invoke):
    create(invoke)
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    ok(invoke("cancel-request", 1, "--creator", C, "--at", "2026-11-02T10:00:00+08:00"))
    report = as_json(invoke("tick", "--now", "2026-11-05T00:00:00+08:00", "--json"))
    assert (report["applied"], report["by_kind"]) == (1, {"cancelled_unilaterally": 1})
    shown = as_json(invoke("show", 1, "--json"))
    assert (shown["status"], shown["terms"], shown["liable_party"]) == ("cancelled_unilaterally", "in_force", "creator")
    assert shown["events"][-1]["at"] == "2026-11-04T10:00:00+08:00"  # at its deadline, not when tick ran


def test_failed_reviews_then_make_up_then_dispute(invoke):
    create(invoke)
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    ok(invoke("deliver", 1, "--creator", C, "--evidence", "https://v.douyin.com/a", "--at", "2026-11-02T10:00:00+08:00"))
    for n, day in ((1, 3), (2, 5)):
        failed = as_json(invoke("review", 1, "--merchant", M, "--fail", "--reason", "没有展示卖点", "--at", f"2026-11-0{day}T10:00:00+08:00", "--json"))
        assert (failed["status"], failed["failed_reviews"], failed["deadline"]) == (
            "review_failed", n, f"2026-11-{day + 7:02d}T10:00:00+08:00",
        )
        ok(invoke("deliver", 1, "--creator", C, "--at", f"2026-11-0{day + 1}T10:00:00+08:00"))
    final = as_json(invoke("review", 1, "--merchant", M, "--fail", "--reason", "仍未达标", "--at", "2026-11-07T10:00:00+08:00", "--json"))
    assert (final["status"], final["failed_reviews"], final["deadline"], final["terms"]) == ("disputed", 3, None, "in_force")
    events = events_of(invoke)
    assert [e["kind"] for e in events] == [
        "created", "accepted", "delivered", "review_failed", "delivered", "review_failed", "delivered", "review_failed",
    ]
    assert events[3]["data"] == {"reason": "没有展示卖点"}
    assert events[2]["data"] == {"mode": "manual", "evidence": "https://v.douyin.com/a"}


def test_tick_json_shape_counts_and_a_second_tick_applies_nothing(invoke):
    create(invoke)
    create(invoke)
    ok(invoke("accept", 2, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    ok(invoke("go-live", 2, "--creator", C, "--at", "2026-11-02T20:00:00+08:00"))
    first = as_json(invoke("tick", "--now", "2026-12-31T00:00:00+08:00", "--json"))
    assert first == {
        "now": "2026-12-31T00:00:00+08:00", "applied": 3,
        "by_kind": {"auto_accepted": 1, "delivered": 1, "expired": 1}, "reminders": 0,
    }
    second = as_json(invoke("tick", "--now", "2026-12-31T00:00:00+08:00", "--json"))
    assert second == {"now": "2026-12-31T00:00:00+08:00", "applied": 0, "by_kind": {}, "reminders": 0}
    delivered, accepted = events_of(invoke, 2)[-2:]
    assert (delivered["kind"], delivered["at"], delivered["actor"], delivered["data"]) == (
        "delivered", "2026-11-03T20:00:00+08:00", "system", {"mode": "auto"},
    )
    assert (accepted["kind"], accepted["at"]) == ("auto_accepted", "2026-11-17T20:00:00+08:00")


def test_tick_dry_run_reports_the_same_and_writes_nothing(invoke, db_rows, db_bytes):
    create(invoke)
    create(invoke, at="2026-11-02T10:00:00+08:00")
    rows, data = db_rows(), db_bytes(settle=True)
    now = ("--now", "2026-11-04T12:00:00+08:00")  # expires order 1; order 2's accept reminder is due
    dry = as_json(invoke("tick", *now, "--dry-run", "--json"))
    assert ok(invoke("tick", *now, "--dry-run")) == (
        "tick at 2026-11-04 12:00:00: would apply 1 transition (expired 1), 1 reminder; nothing was written (dry run)\n"
    )
    assert db_rows() == rows
    assert db_bytes() == data
    real = as_json(invoke("tick", *now, "--json"))
    assert dry == real == {"now": "2026-11-04T12:00:00+08:00", "applied": 1, "by_kind": {"expired": 1}, "reminders": 1}


def test_hourly_ticks_and_one_tick_give_identical_histories(invoke, tmp_path):
    write_config(tmp_path, '[policy]\naccept_window = "2h"\nauto_deliver_after = "2h"\nreview_window = "5h"\n')

    def scenario(db: Path, ticks: list[str]) -> list:
        env = {"COOPCTL_DB": str(db)}
        for _ in range(2):
            ok(invoke(*create_args(latest_start="2026-11-03T10:00:00+08:00"), env=env))
        ok(invoke("accept", 2, "--creator", C, "--at", "2026-11-01T10:30:00+08:00", env=env))
        ok(invoke("go-live", 2, "--creator", C, "--at", "2026-11-01T11:00:00+08:00", env=env))
        for now in ticks:
            ok(invoke("tick", "--now", now, env=env))
        return [as_json(invoke("history", i, "--json", env=env)) for i in (1, 2)]

    hourly = [f"2026-11-01T{h:02d}:17:00+08:00" for h in range(10, 20)]
    often = scenario(tmp_path / "hourly.db", hourly)
    once = scenario(tmp_path / "once.db", ["2026-11-01T20:17:00+08:00"])
    assert often == once
    assert [e["kind"] for e in once[0]] == ["created", "expired"]
    assert [(e["kind"], e["at"]) for e in once[1][-2:]] == [
        ("delivered", "2026-11-01T13:00:00+08:00"), ("auto_accepted", "2026-11-01T18:00:00+08:00"),
    ]


# --------------------------------------------------------------------------- policy, operator


def test_an_order_keeps_the_policy_it_was_created_under(invoke, tmp_path):
    write_config(tmp_path, '[policy]\naccept_window = "1d"\n')
    first = create(invoke)
    write_config(tmp_path, '[policy]\naccept_window = "5d"\n')
    second = create(invoke)
    assert (first["deadline"], first["policy"]["accept_window"]) == ("2026-11-02T10:00:00+08:00", "24h")  # 1d, spelt as 24h
    old, new = (as_json(invoke("show", i, "--json")) for i in (1, 2))
    assert (old["deadline"], old["policy"]) == ("2026-11-02T10:00:00+08:00", {**POLICY_DEFAULTS, "accept_window": "24h"})
    assert (new["deadline"], new["policy"]) == ("2026-11-06T10:00:00+08:00", {**POLICY_DEFAULTS, "accept_window": "5d"})
    assert second["id"] == 2
    # and under the 5d configuration the first order still expires after one day
    report = as_json(invoke("tick", "--now", "2026-11-03T00:00:00+08:00", "--json"))
    assert report["by_kind"] == {"expired": 1}
    assert (status_of(invoke, 1), status_of(invoke, 2)) == ("expired", "pending")


def test_the_operator_is_recorded_from_option_environment_or_login_name(invoke):
    create(invoke)  # COOPCTL_OPERATOR=ops-test from conftest
    ok(invoke("--operator", "值班员A", "accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    ok(invoke("go-live", 1, "--creator", C, "--at", "2026-11-01T12:00:00+08:00", env={"COOPCTL_OPERATOR": "cron-env"}))
    login = {"COOPCTL_OPERATOR": None, "LOGNAME": "casey", "USER": "casey", "LNAME": None, "USERNAME": None}
    ok(invoke("deliver", 1, "--creator", C, "--at", "2026-11-01T13:00:00+08:00", env=login))
    assert [e["operator"] for e in events_of(invoke)] == ["ops-test", "值班员A", "cron-env", "casey"]


# --------------------------------------------------------------------------- idempotency


def test_the_same_idempotency_key_and_terms_return_the_same_order(invoke, db_rows):
    create(invoke, "--idempotency-key", "req-1")
    rows = db_rows()
    result = invoke(*create_args(), "--idempotency-key", "req-1", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["id"] == 1
    assert result.stderr == "order 1 already exists for idempotency key 'req-1'; nothing was changed\n"
    assert db_rows() == rows
    assert len(events_of(invoke)) == 1


def test_the_same_idempotency_key_with_other_terms_is_refused(invoke, db_rows):
    create(invoke, "--idempotency-key", "req-1")
    rows = db_rows()
    result = invoke(*create_args(commission="13"), "--idempotency-key", "req-1")
    assert_error(result, 1, "idempotency key 'req-1' was already used for order 1 with other terms; use a new key for a new order")
    assert db_rows() == rows


# --------------------------------------------------------------------------- refusals change nothing


def _accepted(invoke):
    create(invoke)
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))


REFUSALS = [
    # (setup, command, message)
    (create, ["accept", 1, "--creator", "达人小李", "--at", "2026-11-01T11:00:00+08:00"],
     "creator '达人小李' is not the creator of order 1 ('达人小王' is)"),
    (create, ["withdraw", 1, "--merchant", "商家B", "--at", "2026-11-01T11:00:00+08:00"],
     "merchant '商家B' is not the merchant of order 1 ('商家A' is)"),
    (create, ["go-live", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"], "order 1 is pending; go-live needs effective"),
    (create, ["review", 1, "--merchant", M, "--pass", "--at", "2026-11-01T11:00:00+08:00"], "order 1 is pending; review --pass needs delivered"),
    (create, ["cancel-request", 1, "--merchant", M, "--at", "2026-11-01T11:00:00+08:00"], "order 1 is pending; cancel-request needs effective"),
    (create, ["accept", 1, "--creator", C, "--at", "2026-11-04T10:00:00+08:00"],
     "too late: order 1 became expired at 2026-11-04T10:00:00+08:00 when its deadline passed; accept needs pending"),
    (create, ["accept", 1, "--creator", C, "--at", "2026-11-01T09:59:59+08:00"],
     "2026-11-01T09:59:59+08:00 is earlier than the last event of order 1 (2026-11-01T10:00:00+08:00); time cannot go backwards"),
    (_accepted, ["accept", 1, "--creator", C, "--at", "2026-11-01T12:00:00+08:00"], "order 1 is effective; accept needs pending"),
    (_accepted, ["go-live", 1, "--creator", C, "--at", "2026-11-20T20:00:00+08:00"],
     "too late: order 1 became closed_overdue at 2026-11-20T20:00:00+08:00 when its deadline passed; go-live needs effective"),
    (_accepted, ["cancel-confirm", 1, "--merchant", M, "--at", "2026-11-01T12:00:00+08:00"],
     "order 1 is effective; cancel-confirm needs cancel_requested"),
]


@pytest.mark.parametrize("setup, command, message", REFUSALS, ids=[" ".join(map(str, c[:1] + c[2:4])) for _, c, _ in REFUSALS])
def test_a_refused_command_exits_1_and_changes_nothing(invoke, db_rows, setup, command, message):
    setup(invoke)
    rows = db_rows()
    assert_error(invoke(*command), 1, message)
    assert db_rows() == rows


def test_the_requester_cannot_answer_its_own_cancellation(invoke, db_rows):
    _accepted(invoke)
    ok(invoke("cancel-request", 1, "--merchant", M, "--at", "2026-11-02T10:00:00+08:00"))
    rows = db_rows()
    for command in ("cancel-confirm", "cancel-decline"):
        result = invoke(command, 1, "--merchant", M, "--at", "2026-11-02T11:00:00+08:00")
        assert_error(result, 1, "order 1: the merchant asked for this cancellation; only the creator may answer it")
    assert db_rows() == rows


# --------------------------------------------------------------------------- invalid input: exit 2

BAD_CREATE = [
    ({"at": "yesterday"}, "--at: expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got 'yesterday'"),
    ({"at": "2026-13-01T10:00"}, "--at: expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got '2026-13-01T10:00'"),
    ({"latest_start": "soon"}, "--latest-start: expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got 'soon'"),
    ({"latest_start": T0},
     "the latest start time 2026-11-01T10:00:00+08:00 must be after the creation time 2026-11-01T10:00:00+08:00"),
    ({"latest_start": "2026-10-31T10:00:00+08:00"},
     "the latest start time 2026-10-31T10:00:00+08:00 must be after the creation time 2026-11-01T10:00:00+08:00"),
    ({"commission": "0"}, "commission must be more than 0 and at most 100, got 0"),
    ({"commission": "100.01"}, "commission must be more than 0 and at most 100, got 100.01"),
    ({"commission": "12.345"}, "commission must be a plain decimal with at most two places, such as 12.5, got '12.345'"),
    ({"commission": "abc"}, "commission must be a plain decimal with at most two places, such as 12.5, got 'abc'"),
    ({"ad_budget": "-1"}, "ad budget must be a plain decimal with at most two places, such as 12.5, got '-1'"),
    ({"ad_budget": "10.001"}, "ad budget must be a plain decimal with at most two places, such as 12.5, got '10.001'"),
    ({"merchant": ""}, "merchant id must be non-empty text"),
    ({"creator": "c" * 129}, "creator id is 129 characters long; at most 128 are allowed"),
    ({"merchant": "商家\x07A"}, "merchant id '商家\\x07A' contains the character U+0007 (a control character), which ids may not hold"),
    ({"product": "P\n1"}, "product id 'P\\n1' contains the character U+000A (a control character), which ids may not hold"),
    ({"form": "tv"}, "form must be 'live' or 'video', got 'tv'"),
]


@pytest.mark.parametrize("override, message", BAD_CREATE, ids=[f"{k}={v!r}"[:40] for o, _ in BAD_CREATE for k, v in o.items()])
def test_bad_create_input_exits_2_with_one_line(invoke, db_path, override, message):
    assert_error(invoke(*create_args(**override)), 2, message)
    assert not db_path.exists()  # nothing was created, not even the database


def test_the_longest_ids_and_any_script_are_accepted_as_given(invoke):
    order = create(invoke, merchant="m" * 128, creator="达人·小王 🎬", product="P-商品-१२३")
    assert (order["merchant"], order["creator"], order["products"]) == ("m" * 128, "达人·小王 🎬", ["P-商品-१२३"])
    assert (create(invoke, commission="100")["commission_pct"], create(invoke, commission="0.01")["commission_pct"]) == ("100.00", "0.01")


BAD_ACTIONS = [
    (["review", 1, "--merchant", M, "--pass", "--fail", "--reason", "x"], "review needs exactly one of --pass or --fail"),
    (["review", 1, "--merchant", M], "review needs exactly one of --pass or --fail"),
    (["review", 1, "--merchant", M, "--fail"], "review --fail needs --reason TEXT"),
    (["review", 1, "--merchant", M, "--fail", "--reason", "  "], "review --fail needs --reason TEXT"),
    (["cancel-request", 1, "--merchant", M, "--creator", C], "name exactly one party: --merchant M or --creator C"),
    (["cancel-request", 1], "name exactly one party: --merchant M or --creator C"),
    (["cancel-confirm", 1, "--merchant", M, "--creator", C], "name exactly one party: --merchant M or --creator C"),
    (["cancel-confirm", 1], "name exactly one party: --merchant M or --creator C"),
    (["cancel-decline", 1, "--merchant", M, "--creator", C], "name exactly one party: --merchant M or --creator C"),
    (["cancel-decline", 1], "name exactly one party: --merchant M or --creator C"),
    (["accept", 1], "accept needs --creator ID (who is acting)"),
    (["accept", 1, "--creator", C, "--at", "2026-11-01 25:00"],
     "--at: expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got '2026-11-01 25:00'"),
    (["tick", "--now", "tomorrow"], "--now: expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got 'tomorrow'"),
    (["list", "--status", "done"],
     "--status: unknown status 'done' (known: cancel_requested, cancelled, cancelled_unilaterally, closed_overdue, "
     "completed, delivered, disputed, effective, expired, extension_requested, live, pending, rejected, resolved, "
     "review_failed, ruled, withdrawn)"),
    (["list", "--due-before", "later"], "--due-before: expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got 'later'"),
]


@pytest.mark.parametrize("command, message", BAD_ACTIONS, ids=[" ".join(map(str, c)) for c, _ in BAD_ACTIONS])
def test_bad_action_input_exits_2_with_one_line_and_changes_nothing(invoke, db_rows, command, message):
    create(invoke)
    rows = db_rows()
    assert_error(invoke(*command), 2, message)
    assert db_rows() == rows


@pytest.mark.parametrize("command", [["show", "abc"], ["show", "0"], ["list", "--limit", "0"], ["accept", "1", "--bogus"], ["frobnicate"]])
def test_usage_errors_exit_2_without_a_traceback(invoke, command):
    create(invoke)
    result = invoke(*command)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "error" in result.stderr.lower()


@pytest.mark.parametrize(
    "text, message",
    [
        ('[policy]\nacept_window = "1d"\n',
         "coopctl.toml: [policy] unknown key 'acept_window' (known: accept_window, appeal_window, arbitration_window, "
         "auto_deliver_after, cancel_response_window, complaint_window, extension_response_window, makeup_window, "
         "max_appeals, max_extension, max_extensions, max_failed_reviews, review_window)"),
        ("[database]\ntimeout = 3\n", "coopctl.toml: unknown key 'database.timeout' (known: busy_timeout, url)"),
        ('[polcy]\naccept_window = "1d"\n', "coopctl.toml: unknown section '[polcy]' (known: database, policy, reminders, display, delivery, evidence)"),
        ('[policy]\naccept_window = "3 days"\n',
         "coopctl.toml: [policy] 'accept_window': expected a duration such as '3d', '48h', '90m', '30s' or '1d12h', got '3 days'"),
        ('[display]\ntimezone = "Mars/Olympus"\n', "coopctl.toml: 'display.timezone': unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_bad_config_file_exits_2_naming_the_key(invoke, tmp_path, text, message):
    write_config(tmp_path, text)
    assert_error(invoke("list"), 2, message)


def test_a_config_file_that_is_not_toml_exits_2(invoke, tmp_path):
    write_config(tmp_path, "[policy\n")
    assert_error(invoke("list"), 2, match=r"^error: config file 'coopctl.toml' is not valid TOML")


def test_an_explicit_config_that_does_not_exist_exits_2(invoke, tmp_path, db_path):
    assert_error(invoke("--config", "missing.toml", *create_args()), 2, "config file 'missing.toml' does not exist")
    assert_error(invoke(*create_args(), env={"COOPCTL_CONFIG": "gone.toml"}), 2, "config file 'gone.toml' does not exist")
    assert not db_path.exists()


# --------------------------------------------------------------------------- exit 3 and 5


@pytest.mark.parametrize(
    "command",
    [
        ["show", 42], ["history", 42], ["notifications", "--order", 42], ["accept", 42, "--creator", C],
        ["reject", 42, "--creator", C], ["withdraw", 42, "--merchant", M], ["cancel-request", 42, "--merchant", M],
        ["cancel-confirm", 42, "--creator", C], ["cancel-decline", 42, "--creator", C], ["go-live", 42, "--creator", C],
        ["deliver", 42, "--creator", C], ["review", 42, "--merchant", M, "--pass"],
    ],
    ids=lambda c: str(c[0]),
)
def test_an_unknown_order_exits_3(invoke, db_rows, command):
    create(invoke)
    rows = db_rows()
    assert_error(invoke(*command), 3, "no order 42; `coopctl list` shows the orders")
    assert db_rows() == rows


MISSING_DB_COMMANDS = [
    ["show", 1], ["list"], ["history", 1], ["tick"], ["notifications"], ["notifications", "--mark-sent"],
    ["accept", 1, "--creator", C], ["review", 1, "--merchant", M, "--pass"], ["cancel-request", 1, "--creator", C],
]


@pytest.mark.parametrize("command", MISSING_DB_COMMANDS, ids=lambda c: " ".join(map(str, c)))
def test_a_missing_database_exits_5_and_is_not_created(invoke, db_path, tmp_path, command):
    assert_error(
        invoke(*command), 5,
        f"no database at {db_path}; create one with `coopctl init` or point --db/COOPCTL_DB at one",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_database_given_as_a_url_is_not_created_either(invoke, tmp_path):
    assert_error(invoke("--db", "sqlite:///elsewhere.db", "list"), 5, match="no database at .*elsewhere.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["list"], ["show", 1], ["tick"], ["accept", 1, "--creator", C], ["init"], [*create_args()]],
                         ids=lambda c: str(c[0]))
def test_a_file_of_random_bytes_exits_5_and_is_left_alone(invoke, db_path, command):
    db_path.write_bytes(bytes((i * 7919) % 256 for i in range(8192)))
    data = db_path.read_bytes()
    assert_error(invoke(*command), 5, f"{db_path} is not a SQLite database (file is not a database); point --db at a coopctl database")
    assert db_path.read_bytes() == data


def foreign_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE inventory (sku TEXT PRIMARY KEY, qty INTEGER)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("command", [["list"], ["show", 1], ["history", 1], ["tick"], ["notifications"], ["accept", 1, "--creator", C]],
                         ids=lambda c: str(c[0]))
def test_a_foreign_sqlite_database_exits_5_and_is_left_alone(invoke, db_path, command):
    foreign_db(db_path)
    data = db_path.read_bytes()
    assert_error(invoke(*command), 5, f"{db_path} is not a coopctl database (no coopctl tables); run `coopctl init` on a new file")
    assert db_path.read_bytes() == data


@pytest.mark.parametrize("command", [["init"], [*create_args()]], ids=lambda c: str(c[0]))
def test_init_and_create_refuse_a_foreign_sqlite_database(invoke, db_path, db_rows, command):
    foreign_db(db_path)
    data = db_path.read_bytes()
    assert_error(invoke(*command), 5, f"{db_path} already holds tables that are not coopctl's; refusing to touch it")
    assert db_path.read_bytes() == data
    assert db_rows() == {"inventory": []}


def test_a_newer_schema_exits_5(invoke, db_path):
    ok(invoke("init"))
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE coopctl_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    assert_error(
        invoke("list"), 5,
        f"this database has schema version 99, newer than this coopctl understands ({SCHEMA_VERSION}); upgrade coopctl",
    )


def test_a_directory_as_database_exits_5(invoke, tmp_path):
    (tmp_path / "dir.db").mkdir()
    assert_error(invoke("--db", "dir.db", "list"), 5, f"{tmp_path / 'dir.db'} is a directory, not a database file")


def test_init_creates_a_database_and_a_second_init_changes_nothing(invoke, db_path, db_rows):
    assert ok(invoke("init")) == f"created {db_path}\n"
    assert as_json(invoke("list", "--json")) == []
    create(invoke)
    rows = db_rows()
    assert ok(invoke("init")) == f"already a coopctl database: {db_path}\n"
    assert as_json(invoke("init", "--json")) == {"database": str(db_path), "created": False}
    assert db_rows() == rows


# --------------------------------------------------------------------------- list and notifications


def test_list_shows_the_next_deadline_and_what_happens_then(invoke):
    create(invoke)
    create(invoke)
    ok(invoke("reject", 2, "--creator", C, "--reason", "档期已满", "--at", "2026-11-01T11:00:00+08:00"))
    result = invoke("list", "--wide", env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # piped: the header first, one line per order, the footer on stderr
    assert lines[0].split() == ["id", "status", "deadline", "due", "merchant", "then", "creator", "terms", "liable",
                                "commission", "form", "created", "products", "note"]
    first = lines[1].split()
    assert first[:5] == ["1", "pending", "2026-11-04", "10:00:00", first[4]] and first[4].startswith(("in", "overdue"))
    assert "expires (not accepted in time)" in lines[1] and M in lines[1] and C in lines[1]
    second = lines[2].split()
    assert second[:4] == ["2", "rejected", "—", "—"] and "void" in second
    assert len(lines) == 3 and result.stderr.strip().splitlines()[-1] == "2 of 2 orders; times in Asia/Shanghai"


def test_list_filters(invoke):
    create(invoke)  # 1: pending, deadline 11-04
    create(invoke, merchant="商家B", at="2026-10-31T10:00:00+08:00")  # 2: pending, deadline 11-03
    create(invoke, creator="达人阿珍")
    ok(invoke("accept", 3, "--creator", "达人阿珍", "--at", "2026-11-01T11:00:00+08:00"))  # 3: effective, 11-20

    def ids(*args):
        return [o["id"] for o in as_json(invoke("list", *args, "--json"))]

    assert ids() == [1, 2, 3]
    assert ids("--status", "pending") == [1, 2]
    assert ids("--status", "effective", "--status", "pending") == [1, 2, 3]
    assert ids("--merchant", "商家B") == [2]
    assert ids("--creator", "达人阿珍") == [3]
    assert ids("--due-before", "2026-11-10") == [2, 1]
    assert ids("--limit", "2") == [1, 2]
    assert ids("--status", "disputed") == []


def test_notifications_json_shape_and_the_created_pair(invoke):
    create(invoke)
    ok(invoke("accept", 1, "--creator", C, "--at", "2026-11-01T11:00:00+08:00"))
    rows = as_json(invoke("notifications", "--json"))
    assert all(list(n) == ["id", "order", "recipient", "channel", "kind", "at", "text", "state", "attempts", "sent_at",
                           "next_attempt_at", "last_error"] for n in rows)  # SPEC section 2
    assert [(n["id"], n["state"], n["attempts"]) for n in rows] == [(1, "pending", 0), (2, "pending", 0), (3, "pending", 0)]
    assert [(n["order"], n["recipient"], n["channel"], n["kind"], n["at"]) for n in rows] == [
        (1, f"creator:{C}", "inbox", "created", T0),
        (1, f"creator:{C}", "sms", "created", T0),
        (1, f"merchant:{M}", "inbox", "accepted", "2026-11-01T11:00:00+08:00"),
    ]
    assert rows[2]["text"] == f"{C} accepted cooperation order #1"


def test_tick_writes_each_reminder_once(invoke):
    create(invoke)
    first = as_json(invoke("tick", "--now", "2026-11-03T10:30:00+08:00", "--json"))  # 24h before the accept deadline
    assert first == {"now": "2026-11-03T10:30:00+08:00", "applied": 0, "by_kind": {}, "reminders": 1}
    again = as_json(invoke("tick", "--now", "2026-11-03T11:00:00+08:00", "--json"))
    assert again["reminders"] == 0
    reminders = [n for n in as_json(invoke("notifications", "--json")) if n["kind"] == "reminder"]
    assert [(n["recipient"], n["channel"], n["at"]) for n in reminders] == [(f"creator:{C}", "sms", "2026-11-03T10:00:00+08:00")]


def test_notifications_pending_and_mark_sent(invoke):
    create(invoke)
    create(invoke)
    assert len(as_json(invoke("notifications", "--pending", "--json"))) == 4
    assert [n["order"] for n in as_json(invoke("notifications", "--order", 2, "--json"))] == [2, 2]
    handed = as_json(invoke("notifications", "--order", 1, "--mark-sent", "--json"))
    assert [(n["order"], n["channel"]) for n in handed] == [(1, "inbox"), (1, "sms")]
    assert [n["order"] for n in as_json(invoke("notifications", "--pending", "--json"))] == [2, 2]
    assert as_json(invoke("notifications", "--mark-sent", "--json")) != []
    assert as_json(invoke("notifications", "--pending", "--json")) == []
    assert len(as_json(invoke("notifications", "--json"))) == 4  # still listed, now as sent
    assert "pending" not in ok(invoke("notifications")).split()


# --------------------------------------------------------------------------- demo


def test_demo_builds_every_status_in_coopctl_demo_db_and_rebuilds_its_own(invoke, tmp_path):
    no_db = {"COOPCTL_DB": None}  # so that the default, ./coopctl-demo.db, applies
    orders = as_json(invoke("demo", "--json", env=no_db))
    assert {o["status"] for o in orders} == ALL_STATUSES
    assert len(orders) == 17
    demo_db = tmp_path / "coopctl-demo.db"
    assert demo_db.exists()
    # its own database is rebuilt from scratch, not appended to
    table = ok(invoke("demo", env=no_db))
    assert f"demo database {demo_db}" in table
    assert "17 orders; times in Asia/Shanghai" in table.splitlines()  # then how to look at it (test_conventions)
    listed = as_json(invoke("--db", str(demo_db), "list", "--json"))
    assert [o["id"] for o in listed] == list(range(1, 18))
    assert {o["status"] for o in listed} == ALL_STATUSES


@pytest.mark.parametrize("kind", ["init", "random", "foreign"])
def test_demo_refuses_a_database_it_did_not_create(invoke, tmp_path, kind):
    target = tmp_path / "coopctl-demo.db"
    if kind == "init":
        ok(invoke("--db", str(target), "init"))
    elif kind == "random":
        target.write_bytes(b"\x00not sqlite\xff" * 100)
    else:
        foreign_db(target)
    data = target.read_bytes()
    result = invoke("demo", env={"COOPCTL_DB": None})
    if kind == "random":
        assert_error(result, 5, f"{target} is not a SQLite database (file is not a database); point --db at a coopctl database")
    else:
        assert_error(result, 5, f"{target} exists and was not created by `coopctl demo`; refusing to touch it (give another --db)")
    assert target.read_bytes() == data


_INTERRUPTED_WHILE_PARSING = """
import sys, coopctl.cli
from typer import _click as click  # Typer 0.29 carries its own click
def interrupt(*args, **kwargs):
    raise KeyboardInterrupt  # what a Ctrl-C does while click is still handling the command line
click.core.Context.invoke = interrupt  # the first callback (the root group's), before the command
ended = []
coopctl.cli.leave = ended.append  # main() ends the process here
sys.argv = ["coopctl", *sys.argv[1:]]
coopctl.cli.main()
print(ended)
"""


_INTERRUPTED_WHILE_IMPORTING = """
import builtins, os, signal, sys
imported = builtins.__import__
def ctrl_c_at_typer(name, *args, **kwargs):
    if name == "typer":  # what a Ctrl-C does while the command line's libraries are still being imported
        os.kill(os.getpid(), signal.SIGINT)
    return imported(name, *args, **kwargs)
builtins.__import__ = ctrl_c_at_typer
sys.argv = ["coopctl", "list"]
from coopctl.start import main  # the console script's first line
main()
"""


def test_a_ctrl_c_while_the_program_is_still_importing_is_one_line_and_exit_130(tmp_path, db_path):
    """The console script imports the command line under a guard: no traceback from an import."""
    import subprocess
    import sys

    from conftest import base_env

    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_IMPORTING], capture_output=True, text=True,
                          env=base_env(db_path), cwd=tmp_path, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "error: interrupted; nothing was changed\n")
    assert not db_path.exists()


_INTERRUPTED_AT_THE_END = """
import sys
import coopctl.cli
ignore = coopctl.cli.ignore_interrupts
def ctrl_c_first():  # what a Ctrl-C does in the instant after the command ended, before interrupts are ignored
    coopctl.cli.ignore_interrupts = ignore
    raise KeyboardInterrupt
coopctl.cli.ignore_interrupts = ctrl_c_first
sys.argv = ["coopctl", *sys.argv[1:]]
from coopctl.start import main
main()
"""


@pytest.mark.parametrize("args, said", [
    (["list", "--json"], "interrupted; nothing was changed"),
    ([*create_args(), "--json"], "interrupted after the latest transaction committed; what it changed stands"),
])
def test_a_ctrl_c_just_after_the_command_ended_is_one_line_and_exit_130(args, said, tmp_path, db_path):
    import subprocess
    import sys

    from conftest import base_env, coopctl_executable

    subprocess.run([coopctl_executable(), "init"], env=base_env(db_path), cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_AT_THE_END, *args], capture_output=True, text=True,
                          env=base_env(db_path), cwd=tmp_path, timeout=120)
    assert (proc.returncode, proc.stderr) == (130, f"error: {said}\n")
    assert proc.stdout.startswith(("[", "{"))  # the command's own output was written before


@pytest.mark.parametrize("args", [["list"], ["tick", "--json"]])
def test_a_ctrl_c_while_the_command_line_is_parsed_is_one_line_and_exit_130(args, tmp_path, db_path):
    """Typer answers a KeyboardInterrupt before the command began with a silent exit 130."""
    import subprocess
    import sys

    from conftest import base_env, coopctl_executable

    subprocess.run([coopctl_executable(), "init"], env=base_env(db_path), cwd=tmp_path, check=True, capture_output=True)
    before = db_path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_PARSING, *args], capture_output=True, text=True,
                          env=base_env(db_path), cwd=tmp_path, timeout=120)
    assert (proc.stdout, proc.stderr) == ("[130]\n", "error: interrupted; nothing was changed\n")
    assert db_path.read_bytes() == before
