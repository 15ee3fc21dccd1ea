"""`export --all` of a large book on two cores (coopctl/exporthelper.py): what the helper process
makes must be, byte for byte, what one process writes (the document of `export_document`), on a
sealed book with values no command would write, whether the helper answers every piece, stops
half-way, cannot start or is given a value it cannot carry; the summary is the same."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from coopctl import exchange, exporthelper, linehelper
from coopctl.config import Settings
from coopctl.policy import iso
from coopctl.service import Service
from coopctl.store import Store, locate

from dbtools import build

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXPORTED_AT = 1_800_000_000_000_000  # 2027-01-15, after every event of the book
ORDERS = 1200


def _coopctl(db: Path, *args: str, key: Path) -> None:
    env = {**os.environ, "COOPCTL_DB": str(db), "COOPCTL_SIGNING_KEY": str(key), "COOPCTL_OPERATOR": "test"}
    done = subprocess.run([sys.executable, "-m", "coopctl", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """1,200 orders, sealed but for the last 200 (created after the seal: no "sealed" part), with
    stored values no command would write: escapes, bidi, zero-width characters, a NaN."""
    folder = tmp_path_factory.mktemp("exporthelper")
    path = folder / "book.db"
    build(path, ORDERS - 200)
    key = folder / "seal.key"
    _coopctl(path, "keygen", "--out", str(key), key=key)
    _coopctl(path, "seal", "--now", "2027-01-01T00:00:00+08:00", key=key)
    store = Store(locate(str(path)))
    try:
        build_more(store)
    finally:
        store.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE orders SET creator = ?, note = ? WHERE id = 404", ("达人\x1b[31m红\u202e", "note\x07\u200b\n"))
        conn.execute("UPDATE orders SET merchant = ? WHERE id = 1100", ("商家\x1b]0;x\x07",))
        conn.execute("UPDATE events SET data = ? WHERE order_id = 777 AND seq = 1", ('{"x": NaN, "y": 2.5e-7}',))
    return path


def build_more(store: Store) -> None:
    """Orders ORDERS-199..ORDERS, as dbtools.build makes them, after the seal."""
    from dbtools import BASE, DAY, HOUR, MINUTE, SCENARIOS, scenario_outcome

    batch = []
    for order_id in range(ORDERS - 199, ORDERS + 1):
        created = BASE + (order_id * 7919 % 1440) * MINUTE
        batch.append(scenario_outcome(order_id, created, created + 5 * DAY + (order_id % 5) * HOUR,
                                      SCENARIOS[order_id % len(SCENARIOS)]))
    with store.write() as tx:
        tx.insert_new(batch)


def _service(path: Path) -> Service:
    return Service(Store(locate(str(path))), Settings(), "test")


def exported(path: Path, ids=None) -> tuple[bytes, exchange.ExportSummary]:
    svc = _service(path)
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, encoding="utf-8", newline="\n")
    try:
        summary = exchange.write_export(svc, ids, stream, exported_at=EXPORTED_AT, tz=SHANGHAI)
        stream.flush()
    finally:
        svc.store.dispose()
    return out.getvalue(), summary


@pytest.fixture(scope="module")
def expected(book) -> bytes:
    """The document as one process holds it: dumps(export_document)."""
    svc = _service(book)
    try:
        document = exchange.export_document(svc, None, exported_at=EXPORTED_AT, tz=SHANGHAI)
    finally:
        svc.store.dispose()
    assert sum("sealed" in o for o in document["orders"]) == ORDERS - 200
    return exchange.dumps(document).encode("utf-8")


def test_the_expected_export_holds_the_forged_values_and_the_proofs(expected):
    assert b"\\u001b[31m" in expected and b"\x1b" not in expected and b"NaN" in expected and b'"proof": [' in expected


@pytest.fixture
def two_cores(monkeypatch):
    """A helper from the 300th order on, in pieces of 37 orders, at most 2 unanswered."""
    monkeypatch.setattr(exporthelper, "_cores", lambda: 2)
    monkeypatch.setattr(exporthelper, "HELPER_AT_LEAST", 300)
    monkeypatch.setattr(exporthelper, "PIECE", 37)
    monkeypatch.setattr(exporthelper, "AHEAD", 2)


def test_a_helper_making_the_text_writes_what_one_process_writes(book, expected, two_cores, answered):
    text, summary = exported(book)
    assert text == expected
    assert len(answered) >= 10  # most pieces after the 300th order were the helper's
    assert list(summary.ids) == list(range(1, ORDERS + 1))
    with sqlite3.connect(book) as conn:
        (events,), = conn.execute("SELECT count(*) FROM events")
        (notes,), = conn.execute("SELECT count(*) FROM notifications")
    assert (summary.events, summary.notifications) == (events, notes)


def test_some_orders_through_the_helper_are_the_document_of_those_orders(book, two_cores, answered):
    ids = list(range(ORDERS, 0, -3))
    svc = _service(book)
    try:
        document = exchange.export_document(svc, ids, exported_at=EXPORTED_AT, tz=SHANGHAI)
    finally:
        svc.store.dispose()
    assert exported(book, ids)[0] == exchange.dumps(document).encode("utf-8")
    assert answered


def test_one_core_or_below_the_threshold_the_same_is_written_without_a_helper(book, expected, two_cores, answered, monkeypatch):
    monkeypatch.setattr(exporthelper, "HELPER_AT_LEAST", 5000)
    assert exported(book)[0] == expected
    monkeypatch.setattr(exporthelper, "HELPER_AT_LEAST", 0)
    monkeypatch.setattr(exporthelper, "_cores", lambda: 1)
    assert exported(book)[0] == expected
    assert answered == []


def test_a_helper_that_stops_half_way_is_replaced_by_making_the_text_here(book, expected, two_cores, monkeypatch):
    started: list[linehelper.Formatter] = []

    def dying(cls, tz):
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.read(50000)"], bufsize=0,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(cls(proc))
        return started[-1]

    monkeypatch.setattr(exporthelper.ExportFormatter, "start", classmethod(dying))
    assert exported(book)[0] == expected
    assert started and started[0].proc.poll() is not None


def test_a_helper_that_cannot_start_leaves_the_work_here(book, expected, two_cores, monkeypatch):
    monkeypatch.setattr(exporthelper.ExportFormatter, "start", classmethod(lambda cls, tz: None))
    assert exported(book)[0] == expected


def test_a_piece_the_helper_cannot_be_given_is_made_here(book, two_cores, answered, monkeypatch):
    """A value of a type marshal cannot carry (a driver may give a Decimal): that piece stays here."""
    chunk_rows = exchange.chunk_rows

    def with_a_decimal(*args, **kwargs):
        for rows, events, notes, sealed in chunk_rows(*args, **kwargs):
            if rows[0][0] > 600:
                notes = [*notes, (-1, Decimal("1"))]  # no order -1: the text is unchanged
            yield rows, events, notes, sealed

    monkeypatch.setattr(exchange, "chunk_rows", with_a_decimal)
    text, _ = exported(book)
    monkeypatch.setattr(exporthelper, "_cores", lambda: 1)
    assert text == exported(book)[0]
    assert 0 < len(answered) <= (600 - 300) // 37 + 2  # only the pieces before order 600 went to the helper


def test_the_export_command_writes_the_same_file_with_its_helper(book, expected, tmp_path):
    """Through the command line, on a file and on a pipe, past the real threshold's logic: the
    environment cannot lower it, so the book is exported whole with a helper forced by a tiny
    threshold in a child process that imports coopctl itself."""
    code = (
        "import sys; from coopctl import exporthelper; exporthelper.HELPER_AT_LEAST = 100; exporthelper._cores = lambda: 2; "
        "exporthelper.PIECE = 50; from coopctl.cli import main; sys.argv = ['coopctl', *sys.argv[1:]]; main()"
    )
    env = {**os.environ, "COOPCTL_DB": str(book), "COOPCTL_OPERATOR": "test"}
    at = iso(EXPORTED_AT, SHANGHAI)
    out = tmp_path / "all.json"
    done = subprocess.run([sys.executable, "-c", code, "export", "--all", "--at", at, "--out", str(out)],
                          env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    piped = subprocess.run([sys.executable, "-c", code, "export", "--all", "--at", at], env=env, capture_output=True)
    assert piped.returncode == 0, piped.stderr
    assert out.read_bytes() == piped.stdout == expected
