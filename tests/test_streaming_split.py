"""The orders of an export cut out of its bytes (`streaming._split_orders`) read exactly as the C
parser alone reads them: the same orders, header and seal, or the same one-line error, whatever
the layout of the file, wherever it is cut off or damaged, and however its reads fall.

Every case is read twice, with `streaming.SPLIT` on and off, and the two outcomes compared."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dbtools import exported_book


@pytest.fixture(scope="module")
def export_bytes(tmp_path_factory) -> bytes:
    return exported_book(tmp_path_factory.mktemp("split"), 14).read_bytes()


class Reads(io.RawIOBase):
    """At most `size` bytes per read, whatever is asked: the cuts fall anywhere."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = data, size

    def readable(self):
        return True

    def read(self, size=-1):
        chunk, self.data = self.data[: self.size], self.data[self.size :]
        return chunk


def outcome(data: bytes, *, split: bool, read: int = 1 << 20) -> tuple:
    """What reading `data` gives: ("ok", orders, header) or ("error", the message)."""
    from coopctl import streaming

    was = streaming.SPLIT
    streaming.SPLIT = split
    try:
        stream = streaming.open_export(Reads(data, read), "t.json", want_seal=True)
        orders = [repr(order) for order in stream.orders()]
        return ("ok", orders, repr(stream.header), repr(stream.seal))
    except Exception as exc:  # noqa: BLE001 - the outcome compared
        return ("error", type(exc).__name__, str(exc))
    finally:
        streaming.SPLIT = was


def same_both_ways(data: bytes, read: int = 1 << 20) -> tuple:
    cut = outcome(data, split=True, read=read)
    assert cut == outcome(data, split=False, read=read)
    return cut


def test_a_coopctl_export_is_cut_into_its_orders_and_read_the_same(export_bytes):
    from coopctl import streaming

    stream = streaming.open_export(Reads(export_bytes, 4096), "t.json")
    pieces = list(stream.items())
    # every order as its text, but those of the read that holds the end of the array (the parser's)
    assert [type(piece) for piece in pieces[:12]] == [bytes] * 12
    assert [(json.loads(piece) if type(piece) is bytes else piece)["id"] for piece in pieces] == list(range(1, 15))
    assert same_both_ways(export_bytes)[0] == "ok"


@pytest.mark.parametrize("indent", [None, 0, 1, 2, 3, 4, "\t"])
@pytest.mark.parametrize("ascii_only", [False, True])
def test_any_layout_reads_the_same(export_bytes, indent, ascii_only):
    document = json.loads(export_bytes)
    data = json.dumps(document, indent=indent, ensure_ascii=ascii_only).encode()
    assert same_both_ways(data)[0] == "ok"
    assert same_both_ways(data, read=97)[0] == "ok"


def _with(export_bytes: bytes, change) -> bytes:
    document = json.loads(export_bytes)
    change(document)
    return json.dumps(document, indent=2, ensure_ascii=False).encode()


CHANGES = {
    "a number beyond 64 bits": lambda d: d["orders"][3].update(reminders_sent=12345678901234567890123),
    "a number that is not whole": lambda d: d["orders"][5].update(reminders_sent=0.1),
    "an order that is not an object": lambda d: d["orders"].insert(2, 5),
    "no orders": lambda d: d.update(orders=[]),
    "one order": lambda d: d.update(orders=d["orders"][:1]),
    "a key after the orders": lambda d: d.update(after={"orders": [1]}),
    "a seal after the orders": lambda d: d.update(seal={"log_size": 1}),
    "an 'orders' inside the header": lambda d: d.update({"x": {"orders": [{"id": 1}]}, "orders": d.pop("orders")}),
    "the orders' layout inside a text": lambda d: d["orders"][0].update(note='\n    },\n    {\n  ]'),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_files_changed_by_hand_read_the_same(export_bytes, change):
    same_both_ways(_with(export_bytes, change))
    same_both_ways(_with(export_bytes, change), read=61)


def test_a_header_that_spells_orders_with_an_escape_is_read_the_same(export_bytes):
    head, _, rest = export_bytes.partition(b'\n  "orders": [')
    data = head + b'\n  "\\u006frders": [],\n  "orders": [' + rest
    same_both_ways(data)  # the parser stops at the first, and reads the orders of both
    data = head + b'\n  "\\u006frders": 3,\n  "orders": [' + rest
    same_both_ways(data)


def test_a_file_cut_off_or_damaged_anywhere_reads_the_same(export_bytes):
    step = max(1, len(export_bytes) // 400)
    for end in range(0, len(export_bytes), step):
        same_both_ways(export_bytes[:end])
    for at in range(0, len(export_bytes), step * 3):
        for byte in (b"}", b"]", b",", b'"', b"\n", b"x", b"0", b"NaN"):
            same_both_ways(export_bytes[:at] + byte + export_bytes[at + 1 :])


# (not NaN: whether yajl's message quotes it, which `_json_error` looks for, depends on where a read ends)
SNIPPETS = [b"}", b"]", b",", b'"', b"\n", b" ", b"{", b"[", b"\\", b"\n    }", b",\n    {", b"\n  ]", b"\n    },\n    {",
            b"\n    }\n  ]", b"1e400", b"-0", b"\xff", b"\\ud800", b'"\\u00e9"', b"99999999999999999999999"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_reads_the_same(export_bytes, data):
    document = bytearray(export_bytes)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(document)))
        cut = data.draw(st.integers(0, 3))
        document[at : at + cut] = data.draw(st.sampled_from(SNIPPETS))
    read = data.draw(st.sampled_from([1 << 20, 4096, 333, 17]))
    same_both_ways(bytes(document), read=read)


def test_an_order_longer_than_the_piece_limit_is_left_to_the_parser(export_bytes, monkeypatch):
    from coopctl import streaming

    monkeypatch.setattr(streaming, "PIECE_LIMIT", 500)  # every order of the file is longer
    assert same_both_ways(export_bytes, read=200)[0] == "ok"
