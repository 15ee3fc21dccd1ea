"""Export and import at the scale of a large merchant programme (the performance issue: `export
--all` and `import` of 1,000,000 orders in bounded memory, with a progress bar on a terminal and
nothing extra when piped; coopctl/exchange.py, render.progress).

The book is tests/dbtools.py's: orders in every timed status, built through the rules and the
bulk path. The chunk sizes are made small here so that a few thousand orders cross many chunk
boundaries; the byte-for-byte stability of the document itself is tests/test_exchange.py's.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import sqlite3
import subprocess
import tracemalloc
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from coopctl import exchange, render
from coopctl.config import Settings
from coopctl.errors import NotFound, Refused
from coopctl.service import Service
from coopctl.store import Store, locate
from conftest import base_env, coopctl_executable
from dbtools import BASE, build

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXPORTED_AT = BASE + 40 * 86_400_000_000


def service(path: Path) -> Service:
    return Service(Store(locate(str(path))), Settings(), "tester")


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("book") / "book.db"
    build(path, 2500)
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    for name in ("EXPORT_CHUNK", "REPLAY_CHUNK", "IMPORT_CHUNK"):
        monkeypatch.setattr(exchange, name, 97)


class Sink:
    """A text stream that keeps only a digest of what it is given (and how many writes)."""

    def __init__(self):
        import hashlib

        self.digest = hashlib.sha256()
        self.writes = 0

    def write(self, text: str) -> int:
        self.digest.update(text.encode("utf-8"))
        self.writes += 1
        return len(text)


def exported(svc: Service, ids=None) -> str:
    out = io.StringIO()
    exchange.write_export(svc, ids, out, exported_at=EXPORTED_AT, tz=SHANGHAI)
    return out.getvalue()


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("ids", [None, [2500, 7, 1, 98, 97, 7], [42], []], ids=["all", "some", "one", "none"])
def test_the_streamed_export_is_the_document_byte_for_byte(book, small_chunks, ids):
    svc = service(book)
    try:
        if ids == []:  # an empty book exports an empty array, as json.dumps writes it
            svc = service(book.parent / "empty.db")
            svc.store.initialise()
            ids = None
        document = exchange.export_document(svc, ids, exported_at=EXPORTED_AT, tz=SHANGHAI)
        assert exported(svc, ids) == exchange.dumps(document)
    finally:
        svc.store.dispose()


def test_export_writes_once_per_chunk_and_reports_what_it_wrote(book, small_chunks):
    svc = service(book)
    sink, seen, total = Sink(), [], []
    try:
        summary = exchange.write_export(svc, None, sink, exported_at=EXPORTED_AT, tz=SHANGHAI,
                                        total_hint=total.append, progress=seen.append)
    finally:
        svc.store.dispose()
    assert total == [2500] and sum(seen) == 2500 and max(seen) == 97
    # the header, one write per chunk (and one of the comma before each chunk after the first), the closing
    assert sink.writes == 1 + len(seen) + (len(seen) - 1) + 1
    assert list(summary.ids) == list(range(1, 2501))
    with sqlite3.connect(book) as conn:
        (events,), = conn.execute("SELECT count(*) FROM events")
        (notes,), = conn.execute("SELECT count(*) FROM notifications")
    assert (summary.events, summary.notifications) == (events, notes)


def test_export_memory_does_not_grow_with_the_number_of_orders(tmp_path, small_chunks):
    """The peak of Python allocations while exporting 3,000 orders is about that of 300: the
    document is never held whole, only a chunk of orders with their events and notifications."""
    peaks = []
    for orders in (300, 3000):
        path = tmp_path / f"{orders}.db"
        build(path, orders)
        svc = service(path)
        try:
            svc.store.require()
            tracemalloc.start()
            exchange.write_export(svc, None, Sink(), exported_at=EXPORTED_AT, tz=SHANGHAI)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
            svc.store.dispose()
    assert peaks[1] < 1.5 * peaks[0], f"peak {peaks[0]:,} bytes for 300 orders, {peaks[1]:,} for 3,000"


def test_export_of_an_unknown_order_writes_nothing(book, tmp_path):
    svc = service(book)
    target = tmp_path / "out.json"
    try:
        with pytest.raises(NotFound, match="no order 9999"):
            exchange.write_export(svc, [1, 9999], target, exported_at=EXPORTED_AT, tz=SHANGHAI)
    finally:
        svc.store.dispose()
    assert list(tmp_path.iterdir()) == []


def test_an_export_that_fails_midway_leaves_the_file_as_it_was(book, tmp_path, small_chunks, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    real, calls = exchange._order_document, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 1000:
            raise RuntimeError("the disk went away")
        return real(*args)

    monkeypatch.setattr(exchange, "_order_document", failing)
    svc = service(book)
    try:
        with pytest.raises(RuntimeError):
            exchange.write_export(svc, None, target, exported_at=EXPORTED_AT, tz=SHANGHAI)
    finally:
        svc.store.dispose()
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# --------------------------------------------------------------------------- import


def test_import_in_chunks_round_trips_through_the_bulk_path(book, tmp_path, small_chunks):
    source = service(book)
    try:
        text = exported(source)
    finally:
        source.store.dispose()
    target = service(tmp_path / "copy.db")
    target.store.initialise()
    statements, seen = [], []
    event.listen(target.store.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: statements.append(
                     (sql.split()[0:3], len(params) if many else sql.count("), (") + 1)))
    try:
        summary = exchange.import_orders(target, exchange.parse_document(text), progress=seen.append)
        assert len(summary) == 2500 and list(summary.ids) == list(range(1, 2501))
        assert len(summary.shown) == exchange.IMPORT_SHOWN and all(v.ok and v.steps == [] for v in summary.shown)
        assert sum(seen) == 2500 and max(seen) == 97
        inserts = [(words[2], rows) for words, rows in statements if words[:2] == ["INSERT", "INTO"]]
        assert {table for table, _ in inserts} == {"orders", "order_products", "events", "notifications"}
        # the bulk path: many rows per statement (SQLite: INSERT … VALUES (…), (…), …), never one per row
        with target.store.read() as tx:
            stored = sum(tx.conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one() for t in ("orders", "order_products", "events", "notifications"))
        assert sum(rows for _, rows in inserts) == stored
        assert len([1 for table, _ in inserts if table == "orders"]) == 26  # one per chunk of 97 orders
        assert len(inserts) < stored / 90
        assert exported(target) == text
    finally:
        target.store.dispose()


def test_import_is_all_or_nothing_even_when_a_late_chunk_fails(book, tmp_path, small_chunks, monkeypatch):
    source = service(book)
    try:
        text = exported(source, list(range(1, 1001)))
    finally:
        source.store.dispose()
    path = tmp_path / "copy.db"
    target = service(path)
    target.store.initialise()
    from coopctl.store import Tx

    real, calls = Tx.insert_history, []

    def failing(self, events, notifications):
        calls.append(1)
        if len(calls) == 8:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, events, notifications)

    monkeypatch.setattr(Tx, "insert_history", failing)
    try:
        with pytest.raises(Exception):
            exchange.import_orders(target, exchange.parse_document(text))
    finally:
        target.store.dispose()
    with sqlite3.connect(path) as conn:
        assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("orders", "events", "notifications")] == [0, 0, 0]


def test_import_refuses_a_diverging_order_in_a_late_chunk_and_creates_nothing(book, tmp_path, small_chunks):
    source = service(book)
    try:
        document = json.loads(exported(source, list(range(1, 1001))))
    finally:
        source.store.dispose()
    document["orders"][900]["events"][0]["operator"] = "mallory"
    target = service(tmp_path / "never.db")
    try:
        with pytest.raises(Refused, match="order 901 diverges at event seq 1"):
            exchange.import_orders(target, exchange.parse_document(json.dumps(document, ensure_ascii=False)))
    finally:
        target.store.dispose()
    assert not (tmp_path / "never.db").exists()


def test_an_idempotency_key_is_checked_across_chunks(tmp_path, small_chunks):
    """Order 1 (first chunk) and order 150 (second chunk) of one file were created with the same
    key, each in its own database: the second would have been the first, so it diverges."""
    from coopctl.service import create_order

    def orders_with_key(name: str, count: int, keyed: int) -> list[dict]:
        svc = service(tmp_path / name)
        try:
            for n in range(1, count + 1):
                create_order(svc, merchant="M", creator="C", products=["P"], form="live", commission="5", ad_budget="0",
                             latest_start_at=BASE + 30 * 86_400_000_000, note=None, at=BASE + n,
                             idempotency_key="K" if n == keyed else None)
            return json.loads(exported(svc))["orders"]
        finally:
            svc.store.dispose()

    document = json.loads(exchange.dumps({"format": "coopctl-export", "version": 1, "exported_at": "2026-12-11T10:00:00+08:00", "orders": []}))
    document["orders"] = orders_with_key("a.db", 120, 1) + orders_with_key("b.db", 150, 150)[-1:]
    verdicts = exchange.replay(exchange.parse_document(json.dumps(document, ensure_ascii=False)))
    assert [(v.order_id, v.divergence.seq) for v in verdicts if not v.ok] == [(150, 1)]
    assert "idempotency key 'K' already belongs to order 1" in verdicts[-1].message


def test_a_parsed_order_does_not_keep_the_files_copy_of_its_history(book):
    svc = service(book)
    try:
        parsed = exchange.parse_document(exported(svc, [1, 2]))
    finally:
        svc.store.dispose()
    assert all("events" not in o.fields and "notifications" not in o.fields for o in parsed.orders)
    assert all(o.events and o.notifications for o in parsed.orders)


# --------------------------------------------------------------------------- progress on a terminal only


def test_progress_is_nothing_at_all_when_stderr_is_piped(monkeypatch):
    monkeypatch.setattr(render, "shows_progress", lambda: False)
    with render.progress(1_000_000, "export") as advance:
        assert advance is render._no_progress
    with render.counted_progress("export") as (total_hint, advance):
        assert total_hint is None


def test_progress_draws_a_rich_bar_for_long_work_on_a_terminal(monkeypatch):
    drawn = []

    class Bar:
        def __init__(self, *columns, **options):
            drawn.append(("console on stderr", options["console"].file is fake_stderr))
            names = {type(c).__name__ for c in columns}
            assert {"BarColumn", "MofNCompleteColumn", "Rate", "TimeRemainingColumn"} <= names  # rate and time left

        def add_task(self, label, total):
            drawn.append((label, total))
            return 1

        def start(self):
            drawn.append("start")

        def update(self, task, advance):
            drawn.append(advance)

        def stop(self):
            drawn.append("stop")

    import rich.progress

    fake_stderr = io.StringIO()
    monkeypatch.setattr(rich.progress, "Progress", Bar)
    monkeypatch.setattr(render, "shows_progress", lambda: True)
    monkeypatch.setattr("sys.stderr", fake_stderr)
    with render.progress(10, "small") as advance:  # too small to be worth a bar
        assert advance is render._no_progress
    with render.counted_progress("export") as (total_hint, advance):
        advance(5)  # before the size is known: nothing to draw
        total_hint(5000)
        advance(1000)
        advance(4000)
    assert drawn == [("console on stderr", True), ("export", 5000), "start", 1000, 4000, "stop"]


def _run_on_a_terminal(args: list[str], env: dict, cwd: Path) -> tuple[int, bytes, bytes]:
    """Run the installed coopctl with stderr on a pseudo-terminal and stdout to a file."""
    main, secondary = pty.openpty()
    with open(cwd / "stdout.bin", "wb") as stdout:
        proc = subprocess.Popen([coopctl_executable(), *args], stdout=stdout, stderr=secondary, env=env, cwd=cwd)
    os.close(secondary)
    terminal = b""
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                terminal += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=120)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, (cwd / "stdout.bin").read_bytes(), terminal


def test_export_shows_a_bar_on_a_terminal_and_nothing_extra_when_piped(book, tmp_path):
    env = {**base_env(book), "TERM": "xterm", "COLUMNS": "100"}
    env.pop("NO_COLOR")
    piped = subprocess.run([coopctl_executable(), "export", "--all", "--at", "2026-12-11T10:00"], capture_output=True, env=env, cwd=tmp_path)
    assert piped.returncode == 0 and piped.stderr == b""
    code, out, terminal = _run_on_a_terminal(["export", "--all", "--at", "2026-12-11T10:00"], env, tmp_path)
    assert code == 0
    assert out == piped.stdout  # the data is the same, untouched by the bar
    assert b"export" in terminal and b"\x1b[" in terminal  # the bar was drawn, then erased


def test_a_large_out_file_is_synced_and_dropped_from_the_page_cache_as_it_is_written(tmp_path, monkeypatch):
    """`atomic_file` syncs a large file step by step (`exchange._SyncedAsWritten`): every range but
    the last step is synced and dropped from the page cache in turn, and the file is byte-exact."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this OS")
    monkeypatch.setattr(exchange, "SYNC_STEP", 4096)
    dropped: list[tuple[int, int]] = []
    advise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, start, length, how: (dropped.append((start, length)), advise(fd, start, length, how)))
    text = "".join(f"{i:07d} 合作订单\n" for i in range(20_000))
    target = tmp_path / "big.json"
    with exchange.atomic_file(target) as handle:
        for start in range(0, len(text), 999):
            handle.write(text[start : start + 999])
    assert target.read_text(encoding="utf-8") == text
    assert dropped and dropped[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(dropped, dropped[1:]))  # contiguous, in order
    assert all(n > 0 for _, n in dropped)
    assert len(text.encode()) - (dropped[-1][0] + dropped[-1][1]) >= 4096  # the last step stays for the fsync


def test_a_sealed_pieces_buffers_are_written_whole_and_in_order_through_short_writes(tmp_path, monkeypatch):
    """`_SyncedAsWritten.write_segments` (a sealed export's pieces, not joined first) writes every
    buffer whole and in order when `os.writev` writes only part of what it is given, splitting a
    buffer anywhere, and when there are more buffers than one call takes; what was written before
    and after through the text layer stays in place, and the syncing sees every byte."""
    monkeypatch.setattr(exchange, "SYNC_STEP", 4096)
    monkeypatch.setattr(exchange, "_IOV_MAX", 3)
    writev, calls = os.writev, []

    def short(fd, buffers):
        calls.append(len(buffers))
        assert len(buffers) <= 3
        budget, taken = 1 + len(calls) * 7 % 23, []
        for buffer in buffers:  # at most `budget` bytes this time
            if budget <= 0:
                break
            taken.append(bytes(buffer[:budget]))
            budget -= len(taken[-1])
        return writev(fd, taken)

    monkeypatch.setattr(os, "writev", short)
    pieces = [[f"片{i}-{j}|".encode() * (j % 4 + 1) for j in range(i % 9 + 1)] for i in range(400)]
    target = tmp_path / "sealed.json"
    with exchange.atomic_file(target) as handle:
        handle.write("[head]")
        write = exchange._segments_writer(handle)
        for piece in pieces:
            handle.write(",")
            write([memoryview(b) for b in piece])
        handle.write("[end]")
        written = handle.buffer.raw._written
    expected = "[head]" + "".join("," + b"".join(piece).decode() for piece in pieces) + "[end]"
    assert target.read_text(encoding="utf-8") == expected
    assert written + len("[end]") == len(expected.encode())  # the flushed tail came after
    assert max(calls) == 3 and len(calls) > 400


def test_only_an_out_files_stream_takes_buffers_unjoined(tmp_path):
    assert exchange._segments_writer(io.StringIO()) is None
    assert exchange._segments_writer(io.TextIOWrapper(io.BytesIO(), encoding="utf-8")) is None
