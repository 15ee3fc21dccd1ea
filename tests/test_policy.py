"""Durations, instants and the policy windows (SPEC section 1, "Durations are written like ...")."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from coopctl.policy import (
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    InvalidValue,
    Policy,
    ReminderOffsets,
    format_duration,
    iso,
    parse_duration,
    parse_instant,
    to_datetime,
    to_instant,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-11-26T12:00:00Z, the same instant as 2026-11-26T20:00:00+08:00
NOON_UTC = to_instant(datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc))


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", 3 * DAY),
        ("48h", 48 * HOUR),
        ("90m", 90 * MINUTE),
        ("30s", 30 * SECOND),
        ("1d12h", 36 * HOUR),
        ("14d", 14 * DAY),
        ("7d", 7 * DAY),
        ("24h", DAY),
        ("1d1h1m1s", DAY + HOUR + MINUTE + SECOND),
    ],
)
def test_spec_duration_examples_parse_to_microseconds(text, expected):
    assert parse_duration(text) == expected


def test_a_day_is_exactly_24_hours():
    assert parse_duration("1d") == parse_duration("24h") == 24 * 60 * 60 * SECOND
    assert parse_duration("3d") == parse_duration("72h")


@pytest.mark.parametrize(
    "text",
    ["", "   ", "3", "d", "3x", "3D", "3.5h", "-1d", "+1d", "1h1d", "1d 12h", "3 d", "1w", "P3D", "3days", "0x10s"],
)
def test_malformed_duration_is_refused(text):
    with pytest.raises(InvalidValue):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 3, 3.0, True, b"3d", ["3d"]])
def test_duration_that_is_not_text_is_refused(value):
    with pytest.raises(InvalidValue):
        parse_duration(value)


@pytest.mark.parametrize("text", ["0s", "0d", "0h0m", "0d0h0m0s"])
def test_zero_duration_is_refused_unless_allowed(text):
    with pytest.raises(InvalidValue, match="longer than zero"):
        parse_duration(text)
    assert parse_duration(text, allow_zero=True) == 0


def test_duration_longer_than_ten_years_is_refused():
    assert parse_duration("3650d") == 3650 * DAY
    with pytest.raises(InvalidValue, match="3650d"):
        parse_duration("3651d")


def test_malformed_duration_error_quotes_the_input():
    with pytest.raises(InvalidValue, match="'3x'"):
        parse_duration("3x")


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "0s"),
        (3 * DAY, "3d"),
        (48 * HOUR, "48h"),
        (24 * HOUR, "24h"),
        (36 * HOUR, "36h"),
        (14 * DAY, "14d"),
        (7 * DAY, "7d"),
        (90 * MINUTE, "90m"),
        (30 * SECOND, "30s"),
        (HOUR, "1h"),
        (61 * SECOND, "61s"),
    ],
)
def test_format_duration_spells_defaults_as_the_spec_does(us, text):
    assert format_duration(us) == text


@pytest.mark.parametrize(
    "text", ["3d", "48h", "90m", "30s", "1d12h", "14d", "7d", "24h", "1d1s", "3650d", "59m59s", "25h"]
)
def test_format_duration_round_trips_through_parse(text):
    us = parse_duration(text)
    assert parse_duration(format_duration(us)) == us


# --------------------------------------------------------------------------- instants


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T20:00:00+08:00",
        "2026-11-26T12:00:00+00:00",
        "2026-11-26T12:00:00Z",
        "2026-11-26T12:00:00z",
        "2026-11-26T07:00:00-05:00",
        "2026-11-26 20:00:00+08:00",
    ],
)
def test_instant_with_offset_or_z_is_that_instant_whatever_the_default_zone(text):
    assert parse_instant(text, SHANGHAI) == NOON_UTC
    assert parse_instant(text, timezone.utc) == NOON_UTC


def test_instant_without_offset_is_read_in_the_given_zone():
    assert parse_instant("2026-11-26T20:00:00", SHANGHAI) == NOON_UTC
    assert parse_instant("2026-11-26T12:00:00", timezone.utc) == NOON_UTC
    assert parse_instant("2026-11-26T20:00:00", timezone(timedelta(hours=8))) == NOON_UTC


def test_instant_keeps_microseconds():
    assert parse_instant("2026-11-26T12:00:00.000001Z", SHANGHAI) == NOON_UTC + 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "garbage",
        "yesterday",
        "now",
        "2026-13-01T00:00:00",
        "2026-11-31T00:00:00",
        "2026-11-26T25:00:00",
        "+2026-11-26",
        "26/11/2026",
        "1969-12-31T23:59:59Z",
        "x" * 100,
    ],
)
def test_garbage_instant_is_refused(text):
    with pytest.raises(InvalidValue):
        parse_instant(text, SHANGHAI)


@pytest.mark.parametrize("value", [None, 1795694400, 1795694400.0, datetime(2026, 1, 1)])
def test_instant_that_is_not_text_is_refused(value):
    with pytest.raises(InvalidValue):
        parse_instant(value, SHANGHAI)


def test_iso_prints_an_offset_and_round_trips():
    text = iso(NOON_UTC)
    assert text == "2026-11-26T12:00:00+00:00"
    assert iso(NOON_UTC, SHANGHAI) == "2026-11-26T20:00:00+08:00"
    assert parse_instant(text, SHANGHAI) == NOON_UTC
    assert parse_instant(iso(NOON_UTC + 7, SHANGHAI), timezone.utc) == NOON_UTC + 7


def test_to_instant_and_to_datetime_are_inverse():
    moment = datetime(2026, 11, 26, 20, 0, 0, 123456, tzinfo=SHANGHAI)
    assert to_datetime(to_instant(moment), SHANGHAI) == moment


# --------------------------------------------------------------------------- policy records


def test_policy_defaults_are_the_spec_defaults():
    policy = Policy()
    assert policy.accept_window == 3 * DAY
    assert policy.cancel_response_window == 48 * HOUR
    assert policy.auto_deliver_after == 24 * HOUR
    assert policy.review_window == 14 * DAY
    assert policy.makeup_window == 7 * DAY
    assert policy.max_failed_reviews == 2
    assert policy.to_json() == {
        "accept_window": "3d",
        "cancel_response_window": "48h",
        "auto_deliver_after": "24h",
        "review_window": "14d",
        "makeup_window": "7d",
        "max_failed_reviews": 2,
        "extension_response_window": "48h",
        "max_extensions": 2,
        "max_extension": "15d",
        "complaint_window": "90d",
        "arbitration_window": "5d",
        "appeal_window": "14d",
        "max_appeals": 1,
    }


def test_reminder_offsets_defaults_are_the_spec_defaults():
    assert ReminderOffsets().to_json() == {
        "before_accept_deadline": "24h",
        "before_latest_start": "24h",
        "before_review_deadline": "48h",
    }


@pytest.mark.parametrize(
    "policy",
    [
        Policy(),
        Policy(accept_window=HOUR, cancel_response_window=90 * MINUTE, auto_deliver_after=30 * SECOND,
               review_window=36 * HOUR, makeup_window=DAY + SECOND, max_failed_reviews=0),
        Policy(max_failed_reviews=1000),
    ],
)
def test_policy_json_round_trip(policy):
    assert Policy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    "offsets",
    [ReminderOffsets(), ReminderOffsets(0, 0, 0), ReminderOffsets(90 * MINUTE, 36 * HOUR, 3 * DAY)],
)
def test_reminder_offsets_json_round_trip(offsets):
    assert ReminderOffsets.from_json(offsets.to_json()) == offsets


def test_policy_from_partial_json_keeps_other_defaults():
    assert Policy.from_json({"accept_window": "1d"}) == Policy(accept_window=DAY)
    assert Policy.from_json({}) == Policy()
    assert ReminderOffsets.from_json({"before_review_deadline": "0s"}) == ReminderOffsets(before_review_deadline=0)


@pytest.mark.parametrize("cls", [Policy, ReminderOffsets])
def test_unknown_policy_key_is_named_in_the_error(cls):
    with pytest.raises(InvalidValue, match="accept_windw"):
        cls.from_json({"accept_windw": "3d"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("accept_window", "0s"),
        ("accept_window", "3x"),
        ("review_window", 14),
        ("makeup_window", "-7d"),
        ("max_failed_reviews", "2"),
        ("max_failed_reviews", True),
        ("max_failed_reviews", -1),
        ("max_failed_reviews", 1001),
        ("max_failed_reviews", 2.0),
    ],
)
def test_bad_policy_value_names_its_key(key, value):
    with pytest.raises(InvalidValue, match=key):
        Policy.from_json({key: value})


def test_policy_windows_may_not_be_zero_but_reminder_offsets_may():
    with pytest.raises(InvalidValue, match="cancel_response_window"):
        Policy.from_json({"cancel_response_window": "0s"})
    assert ReminderOffsets.from_json({"before_accept_deadline": "0s"}).before_accept_deadline == 0


@pytest.mark.parametrize("data", [None, [], "3d", 3])
@pytest.mark.parametrize("cls", [Policy, ReminderOffsets])
def test_policy_from_json_needs_a_table(cls, data):
    with pytest.raises(InvalidValue):
        cls.from_json(data)
