"""Durations ("3d", "48h", "1d12h"), instants, and the policy windows an order lives under.

Pure: no I/O, no clock. Instants are integers, microseconds since the Unix epoch (UTC);
durations are integers of microseconds too, so the rules are plain integer arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from datetime import datetime, timedelta, timezone, tzinfo

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_UNITS = {"d": DAY, "h": HOUR, "m": MINUTE, "s": SECOND}
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_DURATION = 3650 * DAY


class InvalidValue(ValueError):
    """A value that cannot be read; the message says what was expected."""


def parse_duration(text: str, *, allow_zero: bool = False) -> int:
    """Read "3d", "48h", "90m", "30s" or "1d12h" into microseconds (a day is 24 hours)."""
    if not isinstance(text, str):
        raise InvalidValue(f"expected a duration such as '3d' or '48h', got {text!r}")
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise InvalidValue(f"expected a duration such as '3d', '48h', '90m', '30s' or '1d12h', got {text!r}")
    total = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS.values()) if n)
    if total == 0 and not allow_zero:
        raise InvalidValue(f"a duration must be longer than zero, got {text!r}")
    if total > _MAX_DURATION:
        raise InvalidValue(f"a duration must be at most 3650d, got {text!r}")
    return total


def format_duration(us: int) -> str:
    """One spelling per duration, as the spec writes its defaults: the largest unit that divides
    it exactly, days only from 3 days up (72h -> "3d", 48h -> "48h", 90m -> "90m", 0 -> "0s")."""
    if us == 0:
        return "0s"
    if us % DAY == 0 and us >= 3 * DAY:
        return f"{us // DAY}d"
    for suffix, unit in (("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if us % unit == 0:
            return f"{us // unit}{suffix}"
    return f"{us / SECOND:g}s"


def to_instant(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * SECOND + delta.microseconds


def to_datetime(instant: int, tz: tzinfo = timezone.utc) -> datetime:
    return (_EPOCH + timedelta(microseconds=instant)).astimezone(tz)


def iso(instant: int, tz: tzinfo = timezone.utc) -> str:
    """ISO 8601 with an offset; whole seconds unless the instant has a fraction."""
    if tz is timezone.utc:  # the hot path of hashing: no zone conversion needed
        return (_EPOCH + timedelta(microseconds=instant)).isoformat()
    return to_datetime(instant, tz).isoformat()


def parse_instant(text: str, default_tz: tzinfo) -> int:
    """Read an ISO 8601 timestamp; one without an offset is read in `default_tz`."""
    if not isinstance(text, str):
        raise InvalidValue(f"expected an ISO 8601 timestamp, got {text!r}")
    raw = text.strip()
    # Printable ASCII only: datetime.fromisoformat would take "2026-11-01T10:00\x00" as 10:00.
    if not raw or not raw[0].isdigit() or len(raw) > 64 or not (raw.isascii() and raw.isprintable()):
        raise InvalidValue(f"expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got {text!r}")
    try:
        moment = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1] in "zZ" else raw)
    except ValueError:
        raise InvalidValue(
            f"expected an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=default_tz)
    if not 1970 <= moment.astimezone(timezone.utc).year <= 9998:
        raise InvalidValue(f"timestamp out of range (years 1970 to 9998): {text!r}")
    return to_instant(moment)


@dataclass(frozen=True, slots=True)
class Policy:
    """The windows of SPEC section 1, fixed on each order when it is created."""

    accept_window: int = 3 * DAY
    cancel_response_window: int = 48 * HOUR
    auto_deliver_after: int = 24 * HOUR
    review_window: int = 14 * DAY
    makeup_window: int = 7 * DAY
    max_failed_reviews: int = 2

    def to_json(self) -> dict:
        return dict(_policy_json(self))

    @classmethod
    def from_json(cls, data: dict) -> "Policy":
        return cls(**_read_keys(cls, data, counts={"max_failed_reviews"}, allow_zero=False))


@dataclass(frozen=True, slots=True)
class ReminderOffsets:
    """How long before each deadline `tick` reminds; fixed on each order like the policy. 0 = off."""

    before_accept_deadline: int = 24 * HOUR
    before_latest_start: int = 24 * HOUR
    before_review_deadline: int = 48 * HOUR

    def to_json(self) -> dict:
        return dict(_offsets_json(self))

    @classmethod
    def from_json(cls, data: dict) -> "ReminderOffsets":
        return cls(**_read_keys(cls, data, counts=set(), allow_zero=True))


@lru_cache(maxsize=64)
def _policy_json(policy: Policy) -> tuple:
    return tuple(
        (f.name, getattr(policy, f.name) if f.name == "max_failed_reviews" else format_duration(getattr(policy, f.name)))
        for f in fields(policy)
    )


@lru_cache(maxsize=64)
def _offsets_json(offsets: ReminderOffsets) -> tuple:
    return tuple((f.name, format_duration(getattr(offsets, f.name))) for f in fields(offsets))


def _read_keys(cls, data: dict, *, counts: set[str], allow_zero: bool) -> dict:
    """Validate a table of durations (and counts); every error names its key."""
    if not isinstance(data, dict):
        raise InvalidValue(f"expected a table of {cls.__name__.lower()} keys, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise InvalidValue(f"unknown key '{key}' (known: {', '.join(sorted(known))})")
        if key in counts:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
                raise InvalidValue(f"'{key}' must be a whole number from 0 to 1000, got {value!r}")
            values[key] = value
        else:
            try:
                values[key] = parse_duration(value, allow_zero=allow_zero)
            except InvalidValue as exc:
                raise InvalidValue(f"'{key}': {exc}") from None
    return values
