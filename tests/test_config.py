"""The TOML configuration (SPEC section 2, "Configuration"): every key optional, every bad key or
value refused as invalid input with the key's name in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from coopctl.config import Settings, load_settings, parse_settings
from coopctl.errors import InvalidInput
from coopctl.policy import DAY, HOUR, MINUTE, SECOND, Policy, ReminderOffsets

FULL = """\
[database]
url = "sqlite:///ops.db"
busy_timeout = "30s"

[policy]
accept_window = "2d"
cancel_response_window = "36h"
auto_deliver_after = "12h"
review_window = "10d"
makeup_window = "5d"
max_failed_reviews = 3

[reminders]
before_accept_deadline = "12h"
before_latest_start = "90m"
before_review_deadline = "1d12h"

[display]
timezone = "Europe/Paris"
"""


def write(tmp_path: Path, text: str | bytes, name: str = "coopctl.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str | bytes) -> Settings:
    return load_settings(write(tmp_path, text), explicit=True)


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_spec_defaults():
    settings = Settings()
    assert settings.db_url is None
    assert settings.busy_timeout == 10 * SECOND
    assert settings.policy == Policy()
    assert settings.reminders == ReminderOffsets()
    assert settings.timezone == "Asia/Shanghai"
    assert str(settings.tz) == "Asia/Shanghai"


def test_no_config_path_means_defaults():
    assert load_settings(None, explicit=False) == Settings()


def test_missing_default_config_file_means_defaults(tmp_path):
    assert load_settings(tmp_path / "coopctl.toml", explicit=False) == Settings()


def test_missing_named_config_file_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_settings(tmp_path / "nope.toml", explicit=True)


def test_empty_file_means_defaults(tmp_path):
    assert load(tmp_path, "") == Settings()


def test_empty_sections_mean_defaults(tmp_path):
    assert load(tmp_path, "[database]\n[policy]\n[reminders]\n[display]\n") == Settings()


def test_parse_settings_of_empty_table_is_defaults():
    assert parse_settings({}) == Settings()


# --------------------------------------------------------------------------- every key


def test_every_section_and_key_is_read(tmp_path):
    settings = load(tmp_path, FULL)
    assert settings.db_url == "sqlite:///ops.db"
    assert settings.busy_timeout == 30 * SECOND
    assert settings.policy == Policy(
        accept_window=2 * DAY,
        cancel_response_window=36 * HOUR,
        auto_deliver_after=12 * HOUR,
        review_window=10 * DAY,
        makeup_window=5 * DAY,
        max_failed_reviews=3,
    )
    assert settings.reminders == ReminderOffsets(
        before_accept_deadline=12 * HOUR,
        before_latest_start=90 * MINUTE,
        before_review_deadline=36 * HOUR,
    )
    assert settings.timezone == "Europe/Paris"
    assert str(settings.tz) == "Europe/Paris"


@pytest.mark.parametrize(
    ("section", "key", "value", "read"),
    [
        ("database", "url", '"coopctl.db"', lambda s: s.db_url == "coopctl.db"),
        ("database", "url", '"postgresql://u@h/db"', lambda s: s.db_url == "postgresql://u@h/db"),
        ("database", "busy_timeout", '"2m"', lambda s: s.busy_timeout == 2 * MINUTE),
        ("database", "busy_timeout", '"0s"', lambda s: s.busy_timeout == 0),
        ("policy", "accept_window", '"1d"', lambda s: s.policy.accept_window == DAY),
        ("policy", "cancel_response_window", '"24h"', lambda s: s.policy.cancel_response_window == DAY),
        ("policy", "auto_deliver_after", '"90m"', lambda s: s.policy.auto_deliver_after == 90 * MINUTE),
        ("policy", "review_window", '"7d"', lambda s: s.policy.review_window == 7 * DAY),
        ("policy", "makeup_window", '"1d12h"', lambda s: s.policy.makeup_window == 36 * HOUR),
        ("policy", "max_failed_reviews", "0", lambda s: s.policy.max_failed_reviews == 0),
        ("policy", "max_failed_reviews", "5", lambda s: s.policy.max_failed_reviews == 5),
        ("reminders", "before_accept_deadline", '"6h"', lambda s: s.reminders.before_accept_deadline == 6 * HOUR),
        ("reminders", "before_accept_deadline", '"0s"', lambda s: s.reminders.before_accept_deadline == 0),
        ("reminders", "before_latest_start", '"2d"', lambda s: s.reminders.before_latest_start == 2 * DAY),
        ("reminders", "before_review_deadline", '"30s"', lambda s: s.reminders.before_review_deadline == 30 * SECOND),
        ("display", "timezone", '"UTC"', lambda s: s.timezone == "UTC"),
        ("display", "timezone", '"America/New_York"', lambda s: s.timezone == "America/New_York"),
    ],
)
def test_each_key_alone_is_read_and_others_keep_defaults(tmp_path, section, key, value, read):
    settings = load(tmp_path, f"[{section}]\n{key} = {value}\n")
    assert read(settings)
    # every other section stays at its default
    defaults = Settings()
    if section != "policy":
        assert settings.policy == defaults.policy
    if section != "reminders":
        assert settings.reminders == defaults.reminders
    if section != "display":
        assert settings.timezone == defaults.timezone
    if section != "database":
        assert (settings.db_url, settings.busy_timeout) == (defaults.db_url, defaults.busy_timeout)


def test_partial_policy_keeps_the_other_windows_at_default(tmp_path):
    settings = load(tmp_path, '[policy]\nreview_window = "7d"\n')
    assert settings.policy == Policy(review_window=7 * DAY)


def test_config_file_may_hold_chinese_comments(tmp_path):
    settings = load(tmp_path, '# 合作订单配置\n[policy]\naccept_window = "1d" # 接单时限\n')
    assert settings.policy.accept_window == DAY


# --------------------------------------------------------------------------- refusals name the key


@pytest.mark.parametrize(
    ("text", "name"),
    [
        # unknown section / key
        ('[databse]\nurl = "x.db"\n', "databse"),
        ("[policies]\n", "policies"),
        ('[database]\npath = "x.db"\n', "path"),
        ('[policy]\naccept_windw = "3d"\n', "accept_windw"),
        ('[reminders]\nbefore_deadline = "1h"\n', "before_deadline"),
        ('[display]\ntz = "UTC"\n', "tz"),
        ('url = "x.db"\n', "url"),
        # bad duration
        ('[policy]\naccept_window = "3x"\n', "accept_window"),
        ('[policy]\ncancel_response_window = "2 days"\n', "cancel_response_window"),
        ('[policy]\nauto_deliver_after = ""\n', "auto_deliver_after"),
        ('[policy]\nreview_window = "14"\n', "review_window"),
        ('[policy]\nmakeup_window = "3651d"\n', "makeup_window"),
        ('[reminders]\nbefore_accept_deadline = "1w"\n', "before_accept_deadline"),
        ('[reminders]\nbefore_latest_start = "h"\n', "before_latest_start"),
        ('[reminders]\nbefore_review_deadline = "2.5h"\n', "before_review_deadline"),
        ('[database]\nbusy_timeout = "soon"\n', "busy_timeout"),
        # zero window
        ('[policy]\naccept_window = "0s"\n', "accept_window"),
        ('[policy]\ncancel_response_window = "0d"\n', "cancel_response_window"),
        ('[policy]\nauto_deliver_after = "0h"\n', "auto_deliver_after"),
        ('[policy]\nreview_window = "0m"\n', "review_window"),
        ('[policy]\nmakeup_window = "0d0h"\n', "makeup_window"),
        # negative-looking strings
        ('[policy]\naccept_window = "-3d"\n', "accept_window"),
        ('[policy]\nreview_window = "-1s"\n', "review_window"),
        ('[reminders]\nbefore_accept_deadline = "-24h"\n', "before_accept_deadline"),
        ('[database]\nbusy_timeout = "-10s"\n', "busy_timeout"),
        # wrong types
        ('[policy]\nmax_failed_reviews = "2"\n', "max_failed_reviews"),
        ("[policy]\nmax_failed_reviews = true\n", "max_failed_reviews"),
        ("[policy]\nmax_failed_reviews = 2.0\n", "max_failed_reviews"),
        ("[policy]\nmax_failed_reviews = -1\n", "max_failed_reviews"),
        ("[policy]\nmax_failed_reviews = 1001\n", "max_failed_reviews"),
        ("[policy]\naccept_window = 3\n", "accept_window"),
        ("[policy]\naccept_window = true\n", "accept_window"),
        ('[policy]\naccept_window = ["3d"]\n', "accept_window"),
        ("[reminders]\nbefore_review_deadline = 48\n", "before_review_deadline"),
        ("[database]\nbusy_timeout = 10\n", "busy_timeout"),
        ("[database]\nurl = 5\n", "url"),
        ('[database]\nurl = ""\n', "url"),
        ('[database]\nurl = "   "\n', "url"),
        ("[display]\ntimezone = 8\n", "timezone"),
        ('policy = "3d"\n', "policy"),
        ("display = 1\n", "display"),
        # bad timezone
        ('[display]\ntimezone = "Mars/Olympus_Mons"\n', "timezone"),
        ('[display]\ntimezone = ""\n', "timezone"),
        ('[display]\ntimezone = "../../etc/passwd"\n', "timezone"),
        ('[display]\ntimezone = "/etc/localtime"\n', "timezone"),
        ('[display]\ntimezone = "+08:00"\n', "timezone"),
    ],
)
def test_bad_key_or_value_is_invalid_input_naming_the_key(tmp_path, text, name):
    with pytest.raises(InvalidInput) as info:
        load(tmp_path, text)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"policy": {"max_failed_reviews": "2"}}, "max_failed_reviews"),
        ({"policy": {"max_failed_reviews": True}}, "max_failed_reviews"),
        ({"policy": {"accept_window": None}}, "accept_window"),
        ({"reminders": {"before_latest_start": -5}}, "before_latest_start"),
        ({"display": {"timezone": None}}, "timezone"),
        ({"database": {"busy_timeout": None}}, "busy_timeout"),
        ({"extra": {}}, "extra"),
        ({"policy": []}, "policy"),
    ],
)
def test_parse_settings_refuses_bad_values_naming_the_key(data, name):
    with pytest.raises(InvalidInput) as info:
        parse_settings(data)
    assert name in str(info.value)


def test_error_names_the_source_file(tmp_path):
    path = write(tmp_path, '[policy]\naccept_window = "0s"\n', "ops.toml")
    with pytest.raises(InvalidInput) as info:
        load_settings(path, explicit=True)
    assert "ops.toml" in str(info.value)
    assert "accept_window" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[policy\naccept_window = '3d'\n",
        "[policy]\naccept_window = \n",
        "[policy]\naccept_window = 3d\n",
        '[policy]\naccept_window = "3d"\naccept_window = "2d"\n',
        "this is not toml\n",
    ],
)
def test_broken_toml_is_invalid_input(tmp_path, text):
    with pytest.raises(InvalidInput) as info:
        load(tmp_path, text)
    assert "TOML" in str(info.value)
    assert "coopctl.toml" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b'[policy]\naccept_window = "3d"\n# \xff\xfe\n',
        '[display]\ntimezone = "Asia/Shanghai" # 时区\n'.encode("gb18030"),
    ],
)
def test_non_utf8_file_is_invalid_input(tmp_path, data):
    with pytest.raises(InvalidInput) as info:
        load(tmp_path, data)
    assert "UTF-8" in str(info.value)
    assert "coopctl.toml" in str(info.value)


def test_config_path_that_is_a_directory_is_invalid_input(tmp_path):
    folder = tmp_path / "conf.toml"
    folder.mkdir()
    with pytest.raises(InvalidInput):
        load_settings(folder, explicit=True)
