"""export writes the same bytes as before its speed-up (issue 14: byte-identical output).

The reference is the export as it was written before `coopctl/jsontext.py`: read through the
store's own queries (`Tx.orders_after`, `load_many`, `events_of`, `notification_rows`, `Event`
objects), proofs by `Tree.proof`, documents assembled as before, encoded by json.dumps(indent=2)
and `json_escaped`, chunk by chunk. It is COPIED here (not imported), so that it stays what it
was whatever coopctl/exchange.py becomes; it takes each order's JSON from `Order.to_json`, so
that fields added to the order later are compared too.

- databases built by real commands (every status; ids, notes and reasons with Chinese, quotes,
  backslashes; values written outside coopctl with control and format characters that exports
  write as \\u escapes; big numbers; floats, NaN and Infinity in stored event data), unsealed and
  sealed, on SQLite and PostgreSQL, by chunks of several sizes;
- a golden file of one of them (tests/fixtures/export_golden.json);
- Hypothesis: any document (any keys, nesting, nulls, booleans, ints of any size, strings of any
  characters, finite floats) is encoded as json.dumps encodes it, alone and through the chunked writer;
- every code point is escaped by orjson as json.dumps(ensure_ascii=False) escapes it, and
  jsontext.UNSAFE_UTF8 is trust.UNSAFE in UTF-8.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopctl import exchange, jsontext
from coopctl.policy import iso, parse_instant
from coopctl.trust import UNSAFE
from test_exchange import Cli

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = "2027-01-01T00:00:00+08:00"
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "export_golden.json"


# --------------------------------------------------------------------------- the reference (copied)


def u_escape(ch: str) -> str:
    point = ord(ch)
    if point < 0x10000:
        return f"\\u{point:04x}"
    point -= 0x10000
    return f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}"


def json_escaped(text: str) -> str:
    if text.isascii() and "\x7f" not in text:
        return text
    if UNSAFE.search(text) is None:
        return text
    return text.translate({ord(ch): u_escape(ch) for ch in set(UNSAFE.findall(text))})


def reference_dumps(document) -> str:
    return json_escaped(json.dumps(document, ensure_ascii=False, indent=2)) + "\n"


_NESTED = ('{\n  "orders": [', "\n  ]\n}")


def reference_write(handle, header: dict, chunks) -> None:
    head = reference_dumps({**header, "orders": []})
    handle.write(head[: -len("]\n}\n")])
    opening, closing = _NESTED
    written = 0
    for documents in chunks:
        if not documents:
            continue
        text = json_escaped(json.dumps({"orders": documents}, ensure_ascii=False, indent=2))
        handle.write(("," if written else "") + text[len(opening) : -len(closing)])
        written += len(documents)
    handle.write("]\n}\n" if written == 0 else "\n  ]\n}\n")


def reference_document(order, events, notes, tz) -> dict:
    return {
        **order.to_json(tz),
        "reminders_sent": sorted(order.reminders_sent),
        "events": [e.to_json(tz) for e in events],
        "notifications": [
            {
                "order": n.order_id,
                "recipient": n.recipient,
                "channel": n.channel,
                "kind": n.kind,
                "at": iso(n.at, tz),
                "text": n.text,
                "sent_at": None if n.sent_at is None else iso(n.sent_at, tz),
            }
            for n in notes
        ],
    }


def reference_chunks(tx, ids, tz, sealing, chunk_size):
    after, position = 0, 0
    while True:
        if ids is None:
            orders = tx.orders_after(after, chunk_size)
        else:
            orders = tx.load_many(ids[position : position + chunk_size])
            position += chunk_size
        if not orders:
            return
        chunk = [o.id for o in orders]
        events = tx.events_of(chunk)
        notes = {i: [] for i in chunk}
        for row in tx.notification_rows(chunk):
            notes[row.order_id].append(row)
        documents = [reference_document(o, events[o.id], notes[o.id], tz) for o in orders]
        if sealing is not None:
            found = reference_sealed(sealing, chunk)
            for document, order_id in zip(documents, chunk):
                if order_id in found:
                    document["sealed"] = found[order_id]
        yield documents
        after = chunk[-1]


def reference_sealed(sealing, chunk) -> dict:
    from sqlalchemy import func, select

    from coopctl.models import EventRow

    events = EventRow.__table__
    head = sealing.head
    if head.size == 0:
        return {}
    rows = sealing.conn.execute(
        select(events.c.order_id, func.max(events.c.seq), func.max(events.c.log_index))
        .where(events.c.order_id.in_(chunk), events.c.log_index.is_not(None), events.c.log_index < head.size)
        .group_by(events.c.order_id)
    )
    return {o: {"seq": s, "log_index": i, "proof": [p.hex() for p in sealing.tree.proof(i, head.size)]} for o, s, i in rows}


def reference_export(db: str, ids, at: str, tz, chunk_size: int = 1000) -> bytes:
    from coopctl.seal import ExportSeal
    from coopctl.store import Store, locate

    store = Store(locate(db))
    try:
        with store.read() as tx:
            sealing = ExportSeal(tx.conn)
            sealing = sealing if sealing.head is not None else None
            header = {"format": "coopctl-export", "version": 1, "exported_at": iso(parse_instant(at, tz), tz)}
            if sealing is not None:
                header["seal"] = sealing.header()
            out = io.StringIO()
            reference_write(out, header, reference_chunks(tx, None if ids is None else sorted(set(ids)), tz, sealing, chunk_size))
    finally:
        store.dispose()
    return out.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- a book made by real commands


HOSTILE = '商家"引号"\\反斜杠'


def build(cli: Cli) -> None:
    """Every status, by real commands, with ids and texts a JSON encoder must get right."""
    c = cli.ok
    m, cr = "商家A", "达人小王"

    def create(merchant=m, creator=cr, note=None, at="2026-11-01T10:00", **more):
        args = ["create", "--merchant", merchant, "--creator", creator, "--product", "P-1", "--product", "货品'2'",
                "--form", "live", "--commission", more.get("commission", "12.5"), "--ad-budget", more.get("budget", "5000"),
                "--latest-start", more.get("latest", "2026-11-20T20:00"), "--at", at]
        if note is not None:
            args += ["--note", note]
        c(*args)

    create(note='双十一 "大促" \\ 备注', merchant=HOSTILE)         # 1 pending (then expires at the first tick)
    create(at="2026-11-01T10:01", commission="99.99", budget="999999999999.99")  # 2 effective
    create(at="2026-11-01T10:02")                                   # 3 rejected
    create(at="2026-11-01T10:03")                                   # 4 withdrawn
    create(at="2026-11-01T10:04")                                   # 5 cancel_requested -> cancelled
    create(at="2026-11-01T10:05")                                   # 6 cancel_requested -> unilaterally
    create(at="2026-11-01T10:06")                                   # 7 live
    create(at="2026-11-01T10:07")                                   # 8 delivered -> review_failed -> disputed
    create(at="2026-11-01T10:08")                                   # 9 completed
    create(at="2026-11-01T10:09", latest="2026-11-05T20:00")       # 10 closed_overdue
    c("accept", "2", "--creator", cr, "--at", "2026-11-02T09:00")
    c("reject", "3", "--creator", cr, "--reason", "档期\"满\"了 \\ 抱歉", "--at", "2026-11-02T09:00")
    c("withdraw", "4", "--merchant", m, "--reason", "预算调整", "--at", "2026-11-02T09:00")
    for order in (5, 6, 7, 8, 9, 10):
        c("accept", str(order), "--creator", cr, "--at", "2026-11-02T09:00")
    c("cancel-request", "5", "--creator", cr, "--reason", "生病", "--at", "2026-11-03T09:00")
    c("cancel-confirm", "5", "--merchant", m, "--at", "2026-11-03T10:00")
    c("cancel-request", "6", "--merchant", m, "--reason", "换人", "--at", "2026-11-03T09:00")
    for order in (7, 8, 9):
        c("go-live", str(order), "--creator", cr, "--at", "2026-11-04T20:00")
    for order in (8, 9):
        c("deliver", str(order), "--creator", cr, "--evidence", "https://v.douyin.com/\"1\"", "--at", "2026-11-04T23:00")
    c("review", "9", "--merchant", m, "--pass", "--at", "2026-11-05T10:00")
    c("review", "8", "--merchant", m, "--fail", "--reason", "色号讲错", "--at", "2026-11-05T10:00")
    c("tick", "--now", "2026-11-07T00:00")
    c("deliver", "8", "--creator", cr, "--evidence", "补播", "--at", "2026-11-08T21:00")
    c("review", "8", "--merchant", m, "--fail", "--reason", "时长不足", "--at", "2026-11-09T11:00")
    c("tick", "--now", "2026-11-10T00:00")
    create(at="2026-11-10T10:00")                                   # 11 pending at the export
    create(at="2026-11-10T10:01", latest="2026-12-30T20:00")       # 12 live at the export
    create(at="2026-11-10T10:02", latest="2026-12-30T20:00")       # 13 effective at the export
    c("accept", "13", "--creator", cr, "--at", "2026-11-10T11:00")
    c("accept", "12", "--creator", cr, "--at", "2026-11-10T11:00")
    c("go-live", "12", "--creator", cr, "--at", "2026-11-10T11:30")
    c("tick", "--now", "2026-11-10T12:00")


def damage(db: Path) -> None:
    """Values stored outside coopctl (before SPEC section 1's rules, or by hand): control and format
    characters in ids and notes, which exports write as \\u escapes, big numbers and floats in event
    data, event data that is not JSON."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE orders SET note = ? WHERE id = 2", ("tab\there\x07bell\x1b[31m\u200b\u2028\x7f\x85\ufeff end",))
        conn.execute("UPDATE orders SET creator = ? WHERE id = 3", ("达人\u202eevil\U000e0041",))
        conn.execute("UPDATE notifications SET text = text || ? WHERE id = 1", ("\u0000\x1f\u00ad",))
        conn.execute("UPDATE events SET data = ? WHERE order_id = 4 AND seq = 1", (
            '{"big": 123456789012345678901234567890, "neg": -9223372036854775809, "f": 2.5e-07, "g": 1e16, '
            '"h": [0.1, -0.0, 5e-324], "nan": NaN, "inf": -Infinity, "huge": 1e999}',))
        conn.execute("UPDATE events SET data = ? WHERE order_id = 4 AND seq = 2", ("not json \x01 at all",))
        conn.execute("UPDATE events SET actor = ? WHERE order_id = 5 AND seq = 1", ("merchant:\x1b]0;x\x07",))


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bytes")
    build(Cli(folder / "book.db", folder))
    return folder / "book.db"


def exported(cli: Cli, *args) -> bytes:
    result = cli.ok("export", *args, "--at", AT)
    return result.stdout_bytes


def cli_on(db: Path) -> Cli:
    return Cli(db, db.parent)


# --------------------------------------------------------------------------- tests: real databases


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_export_all_of_a_book_made_by_commands_is_byte_identical_to_the_reference(book, chunk, monkeypatch):
    monkeypatch.setattr(exchange, "EXPORT_CHUNK", chunk)
    text = exported(cli_on(book), "--all")
    tz = _zone()
    assert text == reference_export(str(book), None, AT, tz, chunk)
    statuses = {order["status"] for order in json.loads(text)["orders"]}
    assert statuses >= {"pending", "effective", "rejected", "withdrawn", "cancelled", "cancelled_unilaterally", "live",
                        "delivered", "review_failed", "completed", "closed_overdue", "expired"}


def _zone():
    from coopctl.config import DEFAULT_TIMEZONE

    return ZoneInfo(DEFAULT_TIMEZONE)  # the commands run without a configuration


def test_export_of_values_stored_outside_coopctl_is_byte_identical(book, tmp_path, monkeypatch):
    db = tmp_path / "damaged.db"
    db.write_bytes(book.read_bytes())
    damage(db)
    monkeypatch.setattr(exchange, "EXPORT_CHUNK", 3)
    cli = cli_on(db)
    text = exported(cli, "--all")
    assert text == reference_export(str(db), None, AT, _zone(), 3)
    assert b"\\u200b" in text and b"\\u202e" in text and b"NaN" in text and b"2.5e-07" in text and b"\\u0000" in text
    assert exported(cli, "4", "2", "7") == reference_export(str(db), [4, 2, 7], AT, _zone())
    out = tmp_path / "out.json"
    cli.ok("export", "--all", "--at", AT, "--out", str(out))
    assert out.read_bytes() == text


def test_a_sealed_export_is_byte_identical_with_its_proofs(book, tmp_path, monkeypatch):
    db = tmp_path / "sealed.db"
    db.write_bytes(book.read_bytes())
    cli = cli_on(db)
    key = tmp_path / "seal.key"
    cli.ok("keygen", "--out", str(key))
    config = tmp_path / "coopctl.toml"
    config.write_text(f'[evidence]\nsigning_key = "{key}"\n', encoding="utf-8")
    cli.ok("--config", str(config), "seal", "--now", "2026-11-10T12:30")
    cli.ok("create", "--merchant", "商家Z", "--creator", "达人Z", "--product", "P", "--form", "video", "--commission", "1",
           "--latest-start", "2026-12-30T20:00", "--at", "2026-11-10T13:00")  # one order not sealed yet
    for chunk in (2, 1000):
        monkeypatch.setattr(exchange, "EXPORT_CHUNK", chunk)
        text = exported(cli, "--all")
        assert text == reference_export(str(db), None, AT, _zone(), chunk)
    document = json.loads(text)
    assert "seal" in document and sum("sealed" in o for o in document["orders"]) == len(document["orders"]) - 1


def test_both_backends_export_the_bytes_of_the_reference(backend, tmp_path):
    cli = Cli(tmp_path / "unused.db", tmp_path)
    cli.db = backend
    build(cli)
    text = exported(cli, "--all")
    assert text == reference_export(backend, None, AT, _zone())
    assert exported(cli, "3", "1") == reference_export(backend, [1, 3], AT, _zone())


def test_the_golden_export_is_written_again_byte_for_byte(book):
    """tests/fixtures/export_golden.json: `export --all --at AT` of `build`'s book. When the order
    JSON changes on purpose (SPEC), regenerate it: COOPCTL_REGOLD=1 pytest tests/test_export_bytes.py."""
    text = exported(cli_on(book), "--all")
    if os.environ.get("COOPCTL_REGOLD") == "1":
        GOLDEN.write_bytes(reference_export(str(book), None, AT, _zone()))
    assert text == GOLDEN.read_bytes() == reference_export(str(book), None, AT, _zone())


# --------------------------------------------------------------------------- tests: the encoder


def test_orjson_escapes_every_code_point_as_json_dumps_does():
    every = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000)
    assert jsontext.orjson.dumps(every) == json.dumps(every, ensure_ascii=False).encode("utf-8")
    for i in range(0, 0x110000, 4096):  # and one by one, so that a difference names its character
        part = "".join(chr(j) for j in range(i, i + 4096) if not 0xD800 <= j < 0xE000)
        assert jsontext.indented({"k": part}) == jsontext.reference({"k": part}), hex(i)


def test_the_utf8_pattern_is_trust_unsafe_above_the_json_escapes():
    for i in range(0x20, 0x110000):
        if 0xD800 <= i < 0xE000:
            continue
        ch = chr(i)
        encoded = ch.encode("utf-8")
        unsafe = UNSAFE.match(ch) is not None
        assert (jsontext.UNSAFE_UTF8.fullmatch(encoded) is not None) == unsafe, hex(i)
        if unsafe:
            assert encoded[0] in jsontext._LEADS, hex(i)


keys = st.text(max_size=8)
leaves = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text() | st.sampled_from(["\u200b", "\x7f", "\\", '"', "\n", "\u2028", "商家", "\U000e0041", "\ud800"])
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=25)
documents = st.dictionaries(keys, values, max_size=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_is_encoded_as_json_dumps_encodes_it(document):
    try:
        expected = reference_dumps(document).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    assert jsontext.indented(document) + b"\n" == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(documents, max_size=3), max_size=4), st.booleans())
def test_the_chunked_writer_writes_the_whole_documents_text(chunks, binary):
    header = {"format": "coopctl-export", "version": 1, "exported_at": "2027-01-01T00:00:00+08:00"}
    whole = reference_dumps({**header, "orders": [d for chunk in chunks for d in chunk]})
    if binary:
        raw = io.BytesIO()
        handle = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        exchange._write_document(handle, header, exchange.texts_of(chunks), None)
        handle.flush()
        assert raw.getvalue() == whole.encode("utf-8")
    else:
        handle = io.StringIO()
        exchange._write_document(handle, header, exchange.texts_of(chunks), None)
        assert handle.getvalue() == whole


sealed_parts = st.tuples(st.integers(1, 2**63 - 1), st.integers(0, 2**63 - 1),
                         st.lists(st.binary(min_size=32, max_size=32), max_size=64))
order_documents = st.dictionaries(keys.filter(lambda key: key != "sealed"), values, min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(order_documents, st.none() | sealed_parts), min_size=1, max_size=4))
def test_sealed_parts_are_written_into_a_chunks_text_as_the_encoder_writes_them(orders):
    """`exchange.sealed_into` (a sealed export's parts, their text written into the chunk's text
    without a dict, `seal.sealed_text`): the bytes of the documents holding the part's JSON as their
    last member, whatever they hold before it (strings with newlines and braces, nesting), empty
    proofs and 64-hash ones; `seal.sealed_json` reads each part back."""
    from coopctl.seal import sealed_json, sealed_text

    chunk = exchange._Chunk({**document, "sealed": exchange.SEALED_HOLE} if part else dict(document) for document, part in orders)
    chunk.sealed = [None if part is None else sealed_text(*part) for _, part in orders]
    as_json = [None if part is None else {"seq": part[0], "log_index": part[1], "proof": [h.hex() for h in part[2]]}
               for _, part in orders]
    whole = [{**document, "sealed": sealed} if sealed else document for (document, _), sealed in zip(orders, as_json)]
    assert [None if text is None else sealed_json(text) for text in chunk.sealed] == as_json
    try:
        expected = reference_dumps({"orders": whole}).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    opening, closing = exchange._NESTED
    assert exchange.chunk_text(chunk) == expected[len(opening) : -len(closing) - 1]


def test_floats_and_values_orjson_refuses_fall_back_to_the_reference():
    cases = [{"a": 2.5e-7}, {"a": [1e16, 0.1]}, {"k\\": 1e-7}, {"a": 2**64}, {1: "int key"}, {"a": "\ud800"},
             {"a": [[[[]]]], "b": {}}, {"x": 'say ": 1.5'}, {"deep": json.loads("[" * 300 + "]" * 300)}]
    for case in cases:
        assert jsontext.indented(case) == jsontext.reference(case), case
    assert jsontext.indented({"nan": float("nan")}, exact=False) == b'{\n  "nan": NaN\n}'


def test_export_with_stderr_piped_writes_nothing_but_the_document(book, monkeypatch):
    monkeypatch.setattr("coopctl.render.PROGRESS_THRESHOLD", 1)  # a bar would be drawn for any export on a terminal
    result = cli_on(book).ok("export", "--all", "--at", AT)
    assert result.stderr == "" and result.stdout_bytes == GOLDEN.read_bytes()
