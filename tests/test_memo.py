"""The caches of replay and import (`coopctl.memo`): a value shares a result only with the very
same value, so that no second, different value skips a check (issue 14)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coopctl.errors import InvalidInput
from coopctl.memo import TextCache, ValueCache, exact_key
from coopctl.policy import InvalidValue, Policy, ReminderOffsets

LOOK_ALIKES = [
    (1, True), (0, False), (1, 1.0), (0.0, -0.0), ("3d", "3d "), (None, "null"), (Decimal("1.0"), Decimal("1.00")),
    ([1], [True]), ({"a": 1}, {"a": True}), ({"a": 1}, {"a": 1.0}), ({"a": [1]}, {"a": [1.0]}),
    ({"a": {"b": 0}}, {"a": {"b": False}}), ({1: "x"}, {True: "x"}), ({"a": "x"}, {"a": ["x"]}),
]


@pytest.mark.parametrize("one, other", LOOK_ALIKES, ids=[repr(pair) for pair in LOOK_ALIKES])
def test_values_that_compare_equal_but_are_not_the_same_get_other_keys(one, other):
    assert exact_key(one) != exact_key(other)
    assert exact_key(one) == exact_key(one) and hash(exact_key(one)) == hash(exact_key(one))


def test_a_value_json_cannot_make_is_not_cached():
    calls = []
    cache = ValueCache(lambda value: calls.append(value) or len(calls))
    assert cache((1, 2)) == 1 and cache((1, 2)) == 2  # a tuple: checked every time
    assert cache({"a": (1,)}) == 3 and cache({"a": (1,)}) == 4


def test_a_refused_value_is_checked_again_every_time():
    calls = []

    def check(value):
        calls.append(value)
        if value < 0:
            raise InvalidValue("negative")
        return value

    cache = ValueCache(check)
    for _ in range(3):
        with pytest.raises(InvalidValue):
            cache(-1)
    assert cache(2) == 2 and cache(2) == 2 and calls == [-1, -1, -1, 2]


def test_a_full_cache_starts_again_and_still_answers():
    cache = TextCache(str.upper, size=3)
    assert [cache(t) for t in "abcdeab"] == list("ABCDEAB")
    assert len(cache.found) <= 3 and cache(1 and "x") == "X"


def test_a_policy_or_reminders_read_once_does_not_let_a_look_alike_through():
    good = Policy().to_json()
    assert Policy.from_json(good) == Policy()
    for key, value in (("max_appeals", True), ("max_failed_reviews", 2.0), ("accept_window", "0d"), ("accept_window", 3)):
        with pytest.raises(InvalidValue, match=key):
            Policy.from_json({**good, key: value})
    assert Policy.from_json(good) == Policy()
    with pytest.raises(InvalidValue, match="before_latest_start"):
        ReminderOffsets.from_json({"before_latest_start": ["24h"]})
    assert ReminderOffsets.from_json({"before_latest_start": "0s"}).before_latest_start == 0


def test_terms_read_once_do_not_let_other_terms_through():
    from coopctl.history import _terms_from_json

    terms = {"merchant": "m", "creator": "c", "products": ["P1"], "form": "live", "commission_pct": "12.5",
             "ad_budget": "0", "latest_start_at": "2026-12-01T00:00:00+00:00", "note": None}
    assert _terms_from_json(terms, True).products == ("P1",)
    for key, value in (("products", [" P1"]), ("products", ["P1", "P1"]), ("creator", "m"), ("commission_pct", 12.5),
                       ("note", "a\u200bb"), ("form", "Live"), ("latest_start_at", 1764547200000000)):
        with pytest.raises(InvalidInput):
            _terms_from_json({**terms, key: value}, True)
    # the looser reading of a stored history does not answer for the strict one
    zero_width = {**terms, "creator": "c\u200b"}
    assert _terms_from_json(zero_width, False).creator == "c\u200b"
    with pytest.raises(InvalidInput):
        _terms_from_json(zero_width, True)
