"""The hash chain's canonical form: event_hash spells out canonical_json by hand for speed,
so it must agree with canonical_json on any input, or replay and import would reject good
histories."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from coopctl.lifecycle import canonical_json, event_hash
from coopctl.policy import iso

text = st.text(max_size=40)  # any code point: quotes, backslashes, control characters, CJK, emoji
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def reference_hash(order_id, seq, kind, at, actor, operator, data, prev_hash):
    body = canonical_json(
        {"order": order_id, "seq": seq, "kind": kind, "at": iso(at), "actor": actor,
         "operator": operator, "data": data, "prev_hash": prev_hash}
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@settings(max_examples=300, deadline=None)
@given(
    order_id=st.integers(1, 2**62), seq=st.integers(1, 10**6), kind=text,
    at=st.integers(0, 253_402_300_799_000_000), actor=text, operator=text,
    data=st.dictionaries(text, json_values, max_size=4), prev_hash=text,
)
def test_event_hash_equals_the_hash_of_canonical_json(order_id, seq, kind, at, actor, operator, data, prev_hash):
    assert event_hash(order_id, seq, kind, at, actor, operator, data, prev_hash) == reference_hash(
        order_id, seq, kind, at, actor, operator, data, prev_hash
    )


def test_a_known_event_hashes_to_a_known_value():
    """Pinned: changing the canonical form breaks every stored history, so it must be deliberate."""
    digest = event_hash(7, 2, "accepted", 1_793_498_400_000_000, "creator:达人小王", "ops", {}, "0" * 64)
    body = ('{"actor":"creator:达人小王","at":"2026-11-01T02:00:00+00:00","data":{},"kind":"accepted",'
            '"operator":"ops","order":7,"prev_hash":"' + "0" * 64 + '","seq":2}')
    assert digest == hashlib.sha256(("0" * 64 + body).encode()).hexdigest()
