"""The TOML configuration -> `Settings` (database, policy, reminders, display).

Every key is optional; an unknown key or a bad value raises `InvalidInput` naming the key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from coopctl.errors import InvalidInput
from coopctl.policy import InvalidValue, Policy, ReminderOffsets, SECOND, parse_duration

DEFAULT_DB = "coopctl.db"
DEFAULT_CONFIG = "coopctl.toml"
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_BUSY_TIMEOUT = 10 * SECOND
# PostgreSQL's lock_timeout is an int of milliseconds; SQLite's busy timeout too (sqlite3 turns a
# larger one into no wait at all: every lock would be exit 4 at once). One bound for both.
MAX_BUSY_TIMEOUT = (2**31 - 1) * SECOND // 1000

_SECTIONS = {
    "database": {"url", "busy_timeout"}, "policy": None, "reminders": None, "display": {"timezone"},
    "delivery": {"backoff", "max_backoff", "max_attempts", "webhook_secret"}, "evidence": {"signing_key"},
}
# [delivery] (SPEC section 5): the dispatcher's retries
DEFAULT_BACKOFF = 60 * SECOND
DEFAULT_MAX_BACKOFF = 3600 * SECOND
DEFAULT_MAX_ATTEMPTS = 8
MAX_ATTEMPTS_LIMIT = 1000


@dataclass(frozen=True)
class Settings:
    db_url: str | None = None
    busy_timeout: int = DEFAULT_BUSY_TIMEOUT
    policy: Policy = field(default_factory=Policy)
    reminders: ReminderOffsets = field(default_factory=ReminderOffsets)
    timezone: str = DEFAULT_TIMEZONE
    signing_key: str | None = None  # [evidence] signing_key: a key file's path (SPEC section 6); never its content
    backoff: int = DEFAULT_BACKOFF  # [delivery]: the wait after the first failed attempt, doubled after each further one
    max_backoff: int = DEFAULT_MAX_BACKOFF
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # then the notification is dead
    webhook_secret: str | None = field(default=None, repr=False)  # never printed: see `webhook_key`

    @property
    def webhook_key(self) -> str | None:
        """The HMAC key of webhook signatures: COOPCTL_WEBHOOK_SECRET wins over the configuration;
        empty = unset."""
        env = os.environ.get("COOPCTL_WEBHOOK_SECRET")
        return env if env else self.webhook_secret

    @property
    def signing_key_path(self) -> str | None:
        """The signing key's file: COOPCTL_SIGNING_KEY wins over the configuration; empty = unset."""
        env = os.environ.get("COOPCTL_SIGNING_KEY")
        return env if env else self.signing_key

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_settings(path: str | os.PathLike | None, *, explicit: bool) -> Settings:
    """Read the configuration file; a missing default file means defaults, a missing named file is an error."""
    if path is None:
        return Settings()
    file = Path(path)
    if not file.exists():
        if explicit:
            raise InvalidInput(f"config file {str(file)!r} does not exist")
        return Settings()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {str(file)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput(f"config file {str(file)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {str(file)!r} is not valid TOML: {exc}") from None
    except ValueError:  # an integer of thousands of digits: Python will not even read it
        raise InvalidInput(f"config file {str(file)!r} holds a number too large to read") from None
    settings = parse_settings(data, source=str(file))
    if settings.signing_key and not os.path.isabs(settings.signing_key):  # as database.url: beside the file
        from dataclasses import replace

        settings = replace(settings, signing_key=str(file.parent / settings.signing_key))
    return settings


def parse_settings(data: dict, *, source: str = "config") -> Settings:
    for section, value in data.items():
        if section not in _SECTIONS:
            raise InvalidInput(f"{source}: unknown section '[{section}]' (known: {', '.join(_SECTIONS)})")
        if not isinstance(value, dict):
            raise InvalidInput(f"{source}: '{section}' must be a table ([{section}])")
        allowed = _SECTIONS[section]
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise InvalidInput(f"{source}: unknown key '{section}.{key}' (known: {', '.join(sorted(allowed))})")
    database = data.get("database", {})
    settings: dict = {}
    if "url" in database:
        url = database["url"]
        if not isinstance(url, str) or not url.strip():
            raise InvalidInput(f"{source}: 'database.url' must be a non-empty path or URL")
        settings["db_url"] = url
    if "busy_timeout" in database:
        busy_timeout = _duration(database["busy_timeout"], "database.busy_timeout", source, allow_zero=True)
        if busy_timeout > MAX_BUSY_TIMEOUT:
            raise InvalidInput(
                f"{source}: 'database.busy_timeout' is at most 2147483647ms (about 24 days: the database "
                f"takes its lock timeout as a 32-bit count of milliseconds), got {database['busy_timeout']!r}"
            )
        settings["busy_timeout"] = busy_timeout
    for section, cls in (("policy", Policy), ("reminders", ReminderOffsets)):
        if section in data:
            try:
                settings[section] = cls.from_json(data[section])
            except InvalidValue as exc:
                raise InvalidInput(f"{source}: [{section}] {exc}") from None
    display = data.get("display", {})
    if "timezone" in display:
        settings["timezone"] = check_timezone(display["timezone"], f"{source}: 'display.timezone'")
    settings.update(_delivery(data.get("delivery", {}), source))
    evidence = data.get("evidence", {})
    if "signing_key" in evidence:
        key = evidence["signing_key"]
        if not isinstance(key, str) or "\x00" in key:
            raise InvalidInput(f"{source}: 'evidence.signing_key' must be the path of a key file (text)")
        settings["signing_key"] = key or None
    return Settings(**settings)


def _delivery(delivery: dict, source: str) -> dict:
    """[delivery]: backoff and max_backoff durations (more than zero, max_backoff not below
    backoff), max_attempts a whole number from 1 to MAX_ATTEMPTS_LIMIT, webhook_secret text."""
    found: dict = {}
    for key in ("backoff", "max_backoff"):
        if key in delivery:
            found[key] = _duration(delivery[key], f"delivery.{key}", source, allow_zero=False)
    if found.get("max_backoff", DEFAULT_MAX_BACKOFF) < found.get("backoff", DEFAULT_BACKOFF):
        raise InvalidInput(f"{source}: 'delivery.max_backoff' must not be shorter than 'delivery.backoff'")
    if "max_attempts" in delivery:
        value = delivery["max_attempts"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS_LIMIT:
            raise InvalidInput(
                f"{source}: 'delivery.max_attempts' must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, got {str(value)[:40]!r}"
            )
        found["max_attempts"] = value
    if "webhook_secret" in delivery:
        secret = delivery["webhook_secret"]
        if not isinstance(secret, str) or "\x00" in secret:
            raise InvalidInput(f"{source}: 'delivery.webhook_secret' must be text")  # the value itself is never echoed
        found["webhook_secret"] = secret or None
    return found


def check_timezone(name, what: str) -> str:
    if not isinstance(name, str) or not name or ".." in name or name.startswith("/"):
        raise InvalidInput(f"{what} must be a time zone name such as 'Asia/Shanghai', got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{what}: unknown time zone {name!r}") from None
    return name


def _duration(value, key: str, source: str, *, allow_zero: bool) -> int:
    try:
        return parse_duration(value, allow_zero=allow_zero)
    except InvalidValue as exc:
        raise InvalidInput(f"{source}: '{key}': {exc}") from None
