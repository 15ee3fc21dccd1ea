"""Time is checked, not guessed (SPEC section 7, last rule; section 2's `now`).

- Instants lie between 1970-01-01 and 9999-12-31 UTC; a window that would put any deadline past
  that is refused (exit 2) before anything is stored, and an instant already stored past it (an
  old database, a forger) never stops `list`, `show` or `export` of the whole book.
- A local time without an offset that a daylight-saving change skips, or passes twice, is refused
  (exit 2) in the configured zone; with an offset it is taken. Tables in such a zone show offsets.
- Durations, counts and ids accept ASCII digits only; absurd sizes (thousands of digits, beyond 64
  bits) are exit 2 with one `error:` line, never an internal error.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from coopctl.policy import DAY, MAX_INSTANT, InvalidValue, iso, local_text, parse_duration, parse_instant

NY = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
HUGE = "1" + "0" * 5000


def create_args(**override) -> list[str]:
    options = {"--merchant": "商家A", "--creator": "达人小王", "--product": "P1", "--form": "live",
               "--commission": "12.5", "--latest-start": "2026-11-20T20:00:00+08:00", "--at": "2026-11-01T10:00:00+08:00"}
    options.update(override)
    return ["create", *[w for k, v in options.items() if v is not None for w in (k, v)]]


def one_error(result, code: int, says: str = "") -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    assert says in lines[0], (says, lines[0])
    return lines[0]


@pytest.fixture
def book(invoke, db_rows):
    """Order 1 (effective) and order 2 (pending); returns db_rows for before/after comparisons."""
    assert invoke(*create_args()).exit_code == 0
    assert invoke("accept", "1", "--creator", "达人小王", "--at", "2026-11-01T11:00:00+08:00").exit_code == 0
    assert invoke(*create_args()).exit_code == 0
    return db_rows


def config(tmp_path, text: str) -> None:
    (tmp_path / "coopctl.toml").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- digits and sizes


@pytest.mark.parametrize("text", ["٣d", "３d", "3d\u200b", "²d", "1_0d", "３h", "1d１２h"])
def test_durations_accept_ascii_digits_only(text):
    with pytest.raises(InvalidValue):
        parse_duration(text)


@pytest.mark.parametrize("key, value", [("accept_window", "٣d"), ("review_window", "３d"),
                                        ("accept_window", HUGE + "d"), ("makeup_window", "1d" + HUGE + "h")])
def test_a_config_window_in_other_digits_or_of_thousands_of_digits_is_exit_2_naming_the_key(invoke, tmp_path, key, value):
    config(tmp_path, f'[policy]\n{key} = "{value}"\n')
    one_error(invoke("list"), 2, key)


@pytest.mark.parametrize("value", ["10" + "0" * 29, "1" + "0" * 5000, "-1", "1001"])
def test_a_config_count_beyond_its_range_or_64_bits_is_exit_2(invoke, tmp_path, value):
    config(tmp_path, f"[policy]\nmax_failed_reviews = {value}\n")
    one_error(invoke("list"), 2)


@pytest.mark.parametrize("grace", ["３m", HUGE + "m", "99999999999999999999d"])
def test_doctor_grace_in_other_digits_or_huge_is_exit_2(invoke, book, grace):
    one_error(invoke("doctor", "--grace", grace), 2, "--grace")


@pytest.mark.parametrize("text", ["1_0", "٣", "１", "1e3", "+1", " 0x1", "99999999999999999999", str(2**53), HUGE])
def test_order_ids_are_ascii_digits_from_1_to_2_to_the_53_minus_1(invoke, book, text):
    before = book()
    one_error(invoke("show", text), 2, "order id must be")
    assert book() == before


def test_the_largest_order_id_is_read_and_simply_not_found(invoke, book):
    one_error(invoke("show", str(2**53 - 1)), 3, f"no order {2**53 - 1}")


@pytest.mark.parametrize("args, says", [
    (["list", "--limit", "1" + "0" * 20], "--limit"),
    (["list", "--limit", HUGE], "--limit"),
    (["list", "--limit", "５"], "--limit"),
    (["notifications", "--order", "1" + "0" * 20], "--order"),
    (["notifications", "--order", "1_0"], "--order"),
    (["tick", "--batch", "1" + "0" * 20, "--now", "2026-11-02T00:00"], "--batch"),
    (["tick", "--batch", "٣", "--now", "2026-11-02T00:00"], "--batch"),
    (["export", "1" + "0" * 20], "order id"),
    (["export", "1", "1_0"], "order id"),
    (["accept", "1" + "0" * 20, "--creator", "达人小王"], "order id"),
    (["go-live", "٣", "--creator", "达人小王"], "order id"),
], ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else v)
def test_every_numeric_option_refuses_other_digits_and_huge_numbers_with_exit_2(invoke, book, args, says):
    before = book()
    one_error(invoke(*args), 2, says)
    assert book() == before


def test_a_count_in_range_is_still_read(invoke, book):
    assert [o["id"] for o in json.loads(invoke("list", "--limit", "1", "--json").stdout)] == [1]
    assert json.loads(invoke("notifications", "--order", "2", "--json").stdout)[0]["order"] == 2
    assert invoke("tick", "--batch", "1000000", "--now", "2026-11-02T00:00").exit_code == 0


# --------------------------------------------------------------------------- the range of instants


def test_instants_run_to_the_last_microsecond_of_9999_utc():
    assert parse_instant("9999-12-31T23:59:59.999999Z", timezone.utc) == MAX_INSTANT
    assert parse_instant("9999-06-01T00:00:00+00:00", timezone.utc) < MAX_INSTANT  # 9999 was refused before
    assert parse_instant("1970-01-01T00:00:00Z", timezone.utc) == 0
    assert parse_instant("1970-01-01T08:00:00", SHANGHAI) == 0


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "10000-01-01T00:00", "1969-12-31T23:59:59.999999Z",
                                  "1970-01-01T07:59:59"])
def test_an_instant_outside_1970_to_9999_utc_is_refused(text):
    with pytest.raises(InvalidValue):
        parse_instant(text, SHANGHAI)


def test_a_timestamp_past_9999_utc_after_its_offset_is_exit_2_not_an_internal_error(invoke, book):
    before = book()
    one_error(invoke("accept", "2", "--creator", "达人小王", "--at", "9999-12-31T23:00:00-05:00"), 2, "out of range")
    assert book() == before


@pytest.mark.parametrize("instant", [MAX_INSTANT, MAX_INSTANT + 30 * DAY, 2**63 - 1, -(2**62)])
def test_iso_and_local_text_never_raise_and_write_expanded_years(instant):
    for tz in (timezone.utc, SHANGHAI, NY):
        text = iso(instant, tz)
        assert text.startswith(("9999-", "+", "-")), text
        local_text(instant, tz, sep=" ", offset=False)
    assert iso(MAX_INSTANT + 30 * DAY) == "+10000-01-30T23:59:59.999999+00:00"
    assert iso(MAX_INSTANT + 30 * DAY, SHANGHAI) == "+10000-01-31T07:59:59.999999+08:00"
    # in range, but past 9999 in the zone: written in UTC, and read back as the same instant
    assert iso(MAX_INSTANT, SHANGHAI) == "9999-12-31T23:59:59.999999+00:00"
    assert parse_instant(iso(MAX_INSTANT, SHANGHAI), SHANGHAI) == MAX_INSTANT


# --------------------------------------------------------------------------- far-future windows


def test_going_live_with_a_window_past_9999_is_exit_2_and_nothing_is_stored(invoke, tmp_path, db_rows):
    """The issue's case: auto_deliver_after = 3650d near 9999 committed go-live, then every list,
    show and export of the database failed."""
    config(tmp_path, '[policy]\nauto_deliver_after = "3650d"\n')
    assert invoke(*create_args(**{"--latest-start": "9995-01-01T00:00Z", "--at": "9990-01-01T00:00Z"})).exit_code == 0
    assert invoke("accept", "1", "--creator", "达人小王", "--at", "9990-01-02T00:00Z").exit_code == 0
    before = db_rows()
    line = one_error(invoke("go-live", "1", "--creator", "达人小王", "--at", "9990-01-03T00:00Z"), 2, "after 9999-12-31 UTC")
    assert "+10000-" in line
    assert db_rows() == before
    assert invoke("list").exit_code == 0 and invoke("show", "1").exit_code == 0
    assert invoke("export", "--all", "--at", "9999-01-01T00:00Z").exit_code == 0


def test_a_cascade_past_9999_is_refused_at_the_action_that_starts_it(invoke, tmp_path, db_rows):
    """Auto delivery at 9999-12-30 is in range; the auto acceptance 14 days later is not: refused
    at go-live, so that tick never meets a deadline it cannot record."""
    config(tmp_path, '[policy]\nauto_deliver_after = "2d"\n')
    assert invoke(*create_args(**{"--latest-start": "9999-12-31T00:00Z", "--at": "9999-12-20T00:00Z"})).exit_code == 0
    assert invoke("accept", "1", "--creator", "达人小王", "--at", "9999-12-21T00:00Z").exit_code == 0
    before = db_rows()
    one_error(invoke("go-live", "1", "--creator", "达人小王", "--at", "9999-12-28T00:00Z"), 2, "delivered: accepted automatically")
    one_error(invoke("deliver", "1", "--creator", "达人小王", "--at", "9999-12-28T00:00Z"), 2, "after 9999-12-31 UTC")
    assert db_rows() == before


def test_windows_that_end_within_9999_are_taken(invoke, tmp_path):
    config(tmp_path, '[policy]\naccept_window = "3650d"\nreview_window = "1d"\n')
    done = invoke(*create_args(**{"--latest-start": "9999-12-31T23:59:59Z", "--at": "9999-12-20T00:00Z"}), "--json")
    assert done.exit_code == 0, done.stderr
    # 9999-12-31T23:59:59Z is 10000-01-01 in Shanghai: written in UTC, an ISO 8601 that reads back
    assert json.loads(done.stdout)["deadline"] == "9999-12-31T23:59:59+00:00"
    assert "9999-12-31 23:59:59+00:00" in invoke("list").stdout
    assert invoke("accept", "1", "--creator", "达人小王", "--at", "9999-12-21T00:00Z").exit_code == 0
    assert invoke("deliver", "1", "--creator", "达人小王", "--at", "9999-12-30T00:00Z").exit_code == 0
    assert invoke("tick", "--now", "9999-12-31T23:59:59Z").exit_code == 0
    assert json.loads(invoke("show", "1", "--json").stdout)["status"] == "completed"


def test_an_instant_stored_past_9999_keeps_the_whole_book_readable(invoke, book, db_path):
    conn = sqlite3.connect(db_path)
    try:
        far = MAX_INSTANT + 40 * DAY
        conn.execute("UPDATE orders SET latest_start_at = ?, deadline = ? WHERE id = 1", (far, far))
        conn.execute("UPDATE notifications SET at = ? WHERE order_id = 1", (far,))
        conn.commit()
    finally:
        conn.close()
    listed = invoke("list")
    assert listed.exit_code == 0, listed.stderr
    assert invoke("list", "--json").exit_code == 0
    shown = invoke("show", "1")
    assert shown.exit_code in (0, 1), shown.stderr  # D's chain and row checks may speak up; reading works
    assert "internal error" not in shown.stderr
    assert "+10000-02-10 07:59:59.999999" in shown.stdout  # the latest start, 40 days past the last instant, in Shanghai
    assert invoke("notifications").exit_code == 0
    assert invoke("export", "--all").exit_code == 0
    assert json.loads(invoke("show", "2", "--json").stdout)["id"] == 2


# --------------------------------------------------------------------------- daylight saving


@pytest.mark.parametrize("option, value, says", [
    ("--at", "2026-03-08T02:30", "does not exist in America/New_York"),
    ("--at", "2026-11-01T01:30", "happens twice in America/New_York"),
    ("--latest-start", "2026-03-08T02:00:00", "does not exist"),
    ("--latest-start", "2026-11-01T01:59:59", "happens twice"),
])
def test_a_local_time_skipped_or_repeated_by_daylight_saving_is_refused_without_an_offset(invoke, tmp_path, db_rows, option, value, says):
    config(tmp_path, '[display]\ntimezone = "America/New_York"\n')
    base = {"--at": "2026-03-01T10:00", "--latest-start": "2026-11-20T20:00"}
    base[option] = value
    assert invoke("init").exit_code == 0
    before = db_rows()
    one_error(invoke(*create_args(**base)), 2, says)
    assert db_rows() == before


def test_with_an_offset_each_of_the_two_times_of_a_fold_is_taken(invoke, tmp_path):
    config(tmp_path, '[display]\ntimezone = "America/New_York"\n')
    first = invoke(*create_args(**{"--at": "2026-11-01T01:30-04:00", "--latest-start": "2026-11-20T20:00"}), "--json")
    second = invoke(*create_args(**{"--at": "2026-11-01T01:30-05:00", "--latest-start": "2026-11-20T20:00"}), "--json")
    assert first.exit_code == 0 and second.exit_code == 0, (first.stderr, second.stderr)
    assert json.loads(first.stdout)["created_at"] == "2026-11-01T01:30:00-04:00"
    assert json.loads(second.stdout)["created_at"] == "2026-11-01T01:30:00-05:00"
    table = invoke("list").stdout
    # the two pending deadlines are 01:30 three days later at -05:00 (both after the change): distinct instants
    assert "2026-11-04 00:30:00-05:00" in table and "2026-11-04 01:30:00-05:00" in table


@pytest.mark.parametrize("args", [["tick", "--now", "2026-03-08T02:15"], ["list", "--due-before", "2026-11-01T01:00"],
                                  ["doctor", "--now", "2026-03-08T02:59:59"]], ids=lambda a: a[0])
def test_every_timestamp_option_refuses_a_gap_or_fold_time(invoke, tmp_path, args):
    config(tmp_path, '[display]\ntimezone = "America/New_York"\n')
    assert invoke("init").exit_code == 0
    one_error(invoke(*args), 2, args[1])


def test_a_gap_or_fold_is_only_a_problem_in_a_zone_that_has_one(invoke, tmp_path):
    """Asia/Shanghai (the default) has no daylight saving now: the same wall times are plain."""
    assert invoke(*create_args(**{"--at": "2026-03-08T02:30", "--latest-start": "2026-11-01T01:30"})).exit_code == 0


def test_tables_in_a_daylight_saving_zone_show_each_instants_offset(invoke, tmp_path):
    config(tmp_path, '[display]\ntimezone = "America/New_York"\n')
    assert invoke(*create_args(**{"--at": "2026-10-30T01:30-04:00", "--latest-start": "2026-11-20T20:00"})).exit_code == 0
    assert invoke("accept", "1", "--creator", "达人小王", "--at", "2026-11-01T01:30-04:00").exit_code == 0
    assert invoke("cancel-request", "1", "--creator", "达人小王", "--at", "2026-11-01T01:10-05:00").exit_code == 0
    history = invoke("history", "1").stdout
    # the wall clock runs backwards (01:30 then 01:10): the offsets say why
    assert "2026-11-01 01:30:00-04:00" in history and "2026-11-01 01:10:00-05:00" in history


def test_tables_in_a_zone_without_daylight_saving_stay_without_offsets(invoke):
    assert invoke(*create_args()).exit_code == 0
    listed = invoke("list").stdout
    assert "2026-11-04 10:00:00 " in listed and "+08:00" not in listed


# --------------------------------------------------------------------------- now


def test_now_and_now_plus_a_duration_are_read_from_one_clock_reading(invoke):
    done = invoke(*create_args(**{"--at": "now", "--latest-start": "now+2d"}), "--json")
    assert done.exit_code == 0, done.stderr
    order = json.loads(done.stdout)
    created, latest = (parse_instant(order[k], timezone.utc) for k in ("created_at", "latest_start_at"))
    assert latest - created == 2 * DAY


@pytest.mark.parametrize("args", [["tick", "--now", "now-90m"], ["list", "--due-before", "now+1d"], ["doctor", "--now", "now"]],
                         ids=lambda a: a[0])
def test_now_minus_or_plus_a_duration_is_accepted_wherever_a_timestamp_is(invoke, args):
    assert invoke("init").exit_code == 0
    done = invoke(*args)
    assert done.exit_code == 0, done.stderr


@pytest.mark.parametrize("text", ["now+٣d", "now+", "now*2d", "nowish", "now+" + HUGE + "d", "now+3651d", "now-60000d"])
def test_a_malformed_or_out_of_range_now_is_exit_2(invoke, text):
    assert invoke("init").exit_code == 0
    one_error(invoke("tick", "--now", text), 2, "--now")


# --------------------------------------------------------------------------- the rule in the core


def _live_order(went_live: int, auto_deliver: int, review: int = 14 * DAY):
    from decimal import Decimal

    from coopctl import lifecycle
    from coopctl.lifecycle import Action, Party, Terms
    from coopctl.policy import Policy, ReminderOffsets

    terms = Terms("M", "C", ("P",), "live", Decimal("1.00"), Decimal("0.00"), MAX_INSTANT - DAY)
    policy = Policy(accept_window=3 * DAY, auto_deliver_after=auto_deliver, review_window=review)
    order = lifecycle.create(1, terms, policy, ReminderOffsets(), went_live - 2 * DAY, "op").order
    order = lifecycle.act(order, Action.ACCEPT, Party.CREATOR, "C", went_live - DAY, "op").order
    return lifecycle.act(order, Action.GO_LIVE, Party.CREATOR, "C", went_live, "op")


def test_the_core_refuses_an_action_whose_cascade_of_deadlines_ends_past_9999():
    from coopctl.errors import InvalidInput

    with pytest.raises(InvalidInput, match="delivered: accepted automatically"):
        _live_order(MAX_INSTANT - 10 * DAY, auto_deliver=2 * DAY)  # delivered in range, accepted 14 days later: not
    with pytest.raises(InvalidInput, match="live: delivered automatically"):
        _live_order(MAX_INSTANT - 10 * DAY, auto_deliver=3650 * DAY)
    outcome = _live_order(MAX_INSTANT - 20 * DAY, auto_deliver=2 * DAY)  # both within 9999
    assert outcome.order.deadline == MAX_INSTANT - 18 * DAY


def test_far_from_9999_the_check_is_two_comparisons_and_never_refuses():
    """The quick way out covers every order that entered its status before about 9930: with
    the longest windows (3650d each) nothing it does can reach past 9999 from there."""
    from coopctl.lifecycle import _ALWAYS_IN_RANGE

    longest = 3650 * DAY
    outcome = _live_order(_ALWAYS_IN_RANGE - DAY, auto_deliver=longest, review=longest)
    assert outcome.order.deadline + longest <= MAX_INSTANT
