"""Durations ("3d", "48h", "1d12h"), instants, and the policy windows an order lives under.

Pure: no I/O, no clock. Instants are integers, microseconds since the Unix epoch (UTC);
durations are integers of microseconds too, so the rules are plain integer arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable

from coopctl.memo import ValueCache

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_UNITS = {"d": DAY, "h": HOUR, "m": MINUTE, "s": SECOND}
# ASCII digits only (`\d` would read '٣d' and '３d' as 3 days); a number is never longer than 15
# digits here (3650d is 315,360,000s), so a duration of thousands of digits is refused unread.
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", re.ASCII)
_MAX_DIGITS = 15
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_DURATION = MAX_DURATION = 3650 * DAY  # the longest window or duration

# SPEC section 7: every instant lies between 1970-01-01 and 9999-12-31 UTC (both days whole).
MIN_INSTANT = 0
MAX_INSTANT = ((datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1))
_CYCLE = 146_097 * DAY  # 400 Gregorian years: calendar, weekdays and a zone's yearly rules repeat
_MIDDLE = 10 * _CYCLE  # the year 5970: a date within 400 years of it converts in any zone


class InvalidValue(ValueError):
    """A value that cannot be read; the message says what was expected."""


def parse_duration(text: str, *, allow_zero: bool = False) -> int:
    """Read "3d", "48h", "90m", "30s" or "1d12h" into microseconds (a day is 24 hours)."""
    if not isinstance(text, str):
        raise InvalidValue(f"expected a duration such as '3d' or '48h', got {text!r}")
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise InvalidValue(f"expected a duration such as '3d', '48h', '90m', '30s' or '1d12h', got {_quoted(text)}")
    if any(n is not None and len(n) > _MAX_DIGITS for n in match.groups()):
        raise InvalidValue(f"a duration must be at most 3650d, got {_quoted(text)}")
    total = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS.values()) if n)
    if total == 0 and not allow_zero:
        raise InvalidValue(f"a duration must be longer than zero, got {text!r}")
    if total > _MAX_DURATION:
        raise InvalidValue(f"a duration must be at most 3650d, got {_quoted(text)}")
    return total


def _quoted(text: str) -> str:
    """A value quoted back in a message: repr (control characters escaped), shortened when long."""
    return repr(text) if len(text) <= 60 else f"{text[:24]!r}… ({len(text):,} characters)"


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
    """The instant in `tz`; OverflowError if the instant cannot be a datetime there (see `local_text`)."""
    return (_EPOCH + timedelta(microseconds=instant)).astimezone(tz)


def iso(instant: int, tz: tzinfo = timezone.utc) -> str:
    """ISO 8601 with an offset; whole seconds unless the instant has a fraction. Never raises for
    an instant outside what datetime can hold (a stored value past 9999 shows as `+10000-…`)."""
    if tz is timezone.utc and type(instant) is int:  # the hot path of hashing and replay: an order's instants repeat
        text = _UTC_TEXT.get(instant)
        if text is None:
            if len(_UTC_TEXT) >= 4096:
                _UTC_TEXT.clear()
            text = _UTC_TEXT[instant] = _iso(instant, tz)
        return text
    return _iso(instant, tz)


_UTC_TEXT: dict[int, str] = {}  # iso(instant) of the instants met lately (bounded; strings are immutable)


def _iso(instant: int, tz: tzinfo) -> str:
    try:
        if tz is timezone.utc:  # no zone conversion needed
            return (_EPOCH + timedelta(microseconds=instant)).isoformat()
        return (_EPOCH + timedelta(microseconds=instant)).astimezone(tz).isoformat()
    except OverflowError:  # beyond what datetime holds (in UTC, or in the zone): costs nothing until then
        return local_text(instant, tz)


def local_text(instant: int, tz: tzinfo, *, sep: str = "T", offset: bool = True) -> str:
    """`iso` with a choice of separator and whether the offset is written; for any integer
    instant, never raising. An instant in range that the zone cannot write with a four-digit year
    (the last hours of 9999 UTC east of Greenwich) is written in UTC, with its offset whatever
    `offset` says (`9999-12-31T23:59:59+00:00`: still ISO 8601, and read back as the same instant).
    Beyond what datetime holds at all (a forged or pre-check stored value), the date is computed
    400-year cycles nearer and written with its true year, as ISO 8601's expanded years are
    (`+10000-01-13T08:00:00+08:00`), so that reading a database never fails on one bad value
    (`doctor` reports it)."""
    try:
        utc = _EPOCH + timedelta(microseconds=instant)
    except OverflowError:
        cycles = (instant - _MIDDLE) // _CYCLE
        moment = (_EPOCH + timedelta(microseconds=instant - cycles * _CYCLE)).astimezone(tz)
        text = (moment if offset else moment.replace(tzinfo=None)).isoformat(sep=sep)
        year = moment.year + 400 * cycles
        written = f"+{year}" if year > 9999 else f"-{-year:04d}" if year < 0 else f"{year:04d}"
        return written + text[4:]
    try:
        moment = utc.astimezone(tz)
    except OverflowError:
        return utc.isoformat(sep=sep)
    return (moment if offset else moment.replace(tzinfo=None)).isoformat(sep=sep)


def in_range(instant: int) -> bool:
    """Whether an instant lies between 1970-01-01 and 9999-12-31 UTC (SPEC section 7)."""
    return MIN_INSTANT <= instant <= MAX_INSTANT


_EXAMPLE = "an ISO 8601 timestamp such as 2026-11-26T20:00:00+08:00"
_RELATIVE = re.compile(r"now(?:([+-])(.+))?", re.ASCII)


def parse_instant(text: str, default_tz: tzinfo, *, now: "int | Callable[[], int] | None" = None) -> int:
    """Read an ISO 8601 timestamp; one without an offset is read in `default_tz`, where it must
    name exactly one instant: a local time skipped by a daylight-saving change, or one that
    happens twice, is refused unless it carries an offset. With `now` (the clock, read by the
    caller once per command, or a function that reads it), `now`, `now+DURATION` and
    `now-DURATION` are read too. The instant must lie between 1970-01-01 and 9999-12-31 UTC."""
    if not isinstance(text, str):
        raise InvalidValue(f"expected an ISO 8601 timestamp, got {text!r}")
    raw = text.strip()
    # Printable ASCII only: datetime.fromisoformat would take "2026-11-01T10:00\x00" as 10:00.
    if not raw or len(raw) > 64 or not (raw.isascii() and raw.isprintable()):
        raise InvalidValue(f"expected {_EXAMPLE}, got {_quoted(text)}")
    if now is not None and raw.startswith("now"):
        return _relative(raw, text, now)
    if not raw[0].isdigit():
        raise InvalidValue(f"expected {_EXAMPLE}, got {_quoted(text)}")
    try:
        moment = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1] in "zZ" else raw)
    except ValueError:
        raise InvalidValue(f"expected {_EXAMPLE}, got {_quoted(text)}") from None
    if moment.tzinfo is None:
        moment = _local(moment, default_tz, raw)
    instant = to_instant(moment)  # plain arithmetic: no conversion that could overflow near 9999
    if not MIN_INSTANT <= instant <= MAX_INSTANT:
        raise InvalidValue(f"timestamp out of range (1970-01-01 to 9999-12-31 UTC): {text!r}")
    return instant


def _relative(raw: str, text: str, now) -> int:
    match = _RELATIVE.fullmatch(raw)
    if match is None:
        raise InvalidValue(f"expected {_EXAMPLE}, got {_quoted(text)}")
    sign, duration = match.groups()
    instant = now() if callable(now) else now
    if sign is not None:
        try:
            delta = parse_duration(duration.strip())
        except InvalidValue as exc:
            raise InvalidValue(f"{_quoted(text)}: {exc}") from None
        instant = instant + delta if sign == "+" else instant - delta
    if not MIN_INSTANT <= instant <= MAX_INSTANT:
        raise InvalidValue(f"timestamp out of range (1970-01-01 to 9999-12-31 UTC): {text!r}")
    return instant


def _local(moment: datetime, tz: tzinfo, raw: str) -> datetime:
    """A wall time read in `tz`, refused when the zone skipped it or passed it twice (PEP 495:
    the two folds then disagree on the offset)."""
    first, second = moment.replace(tzinfo=tz), moment.replace(tzinfo=tz, fold=1)
    try:
        early, late = first.utcoffset(), second.utcoffset()
    except OverflowError:  # pragma: no cover - a zone that cannot even say its offset there
        return first
    if early == late:
        return first
    zone = getattr(tz, "key", None) or str(tz)
    try:
        back = (moment - early).replace(tzinfo=timezone.utc).astimezone(tz).replace(tzinfo=None)
    except OverflowError:
        back = None
    if back == moment:
        raise InvalidValue(
            f"{raw} happens twice in {zone} (clocks are turned back then): add the offset you mean, "
            f"{raw}{_offset(early)} or {raw}{_offset(late)}"
        )
    raise InvalidValue(
        f"{raw} does not exist in {zone} (clocks skip it when they are turned forward): add an offset "
        f"({raw}{_offset(early)} is {_wall(moment - early + late)} there) or give a time that exists"
    )


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _wall(moment: datetime) -> str:
    return moment.isoformat(timespec="minutes" if not moment.second and not moment.microsecond else "auto")


@dataclass(frozen=True, slots=True)
class Policy:
    """The windows of SPEC section 1, fixed on each order when it is created."""

    accept_window: int = 3 * DAY
    cancel_response_window: int = 48 * HOUR
    auto_deliver_after: int = 24 * HOUR
    review_window: int = 14 * DAY
    makeup_window: int = 7 * DAY
    max_failed_reviews: int = 2
    # issue 12: negotiated extensions, complaints, arbitration and appeals
    extension_response_window: int = 48 * HOUR
    max_extensions: int = 2
    max_extension: int = 15 * DAY
    complaint_window: int = 90 * DAY
    arbitration_window: int = 5 * DAY
    appeal_window: int = 14 * DAY
    max_appeals: int = 1

    def to_json(self) -> dict:
        return dict(_policy_json(self))

    @classmethod
    def from_json(cls, data: dict) -> "Policy":
        """Keys missing from `data` (a policy frozen before they existed) take their defaults.
        Read once per distinct value (`memo`: an export repeats one policy on every order)."""
        return _policy_from_json(data)


POLICY_COUNTS = frozenset({"max_failed_reviews", "max_extensions", "max_appeals"})  # whole numbers, not durations
# The keys schema 4 added (issue 12): a policy recorded before them lacks them and means their defaults.
POLICY_KEYS_OF_V4 = frozenset({
    "extension_response_window", "max_extensions", "max_extension", "complaint_window", "arbitration_window",
    "appeal_window", "max_appeals",
})


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
        return _offsets_from_json(data)


_policy_from_json = ValueCache(lambda data: Policy(**_read_keys(Policy, data, counts=POLICY_COUNTS, allow_zero=False)))
_offsets_from_json = ValueCache(lambda data: ReminderOffsets(**_read_keys(ReminderOffsets, data, counts=set(), allow_zero=True)))


@lru_cache(maxsize=64)
def _policy_json(policy: Policy) -> tuple:
    return tuple(
        (f.name, getattr(policy, f.name) if f.name in POLICY_COUNTS else format_duration(getattr(policy, f.name)))
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
