"""`list --format jsonl` of a large book on two cores (coopctl/linehelper.py): what a helper
process makes must be, byte for byte, what one process writes (forged rows with characters a
terminal would act on included), whether the helper answers every piece, stops half-way or
cannot start; a reader that goes away ends the listing and its helper."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from coopctl import linehelper, printer, render, service
from coopctl.config import Settings
from coopctl.service import Service, walk_order_chunks
from coopctl.store import ListQuery, Store, locate

from dbtools import build


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("linehelper") / "book.db"
    build(path, 1200)
    with sqlite3.connect(path) as conn:  # stored values no command would write: escapes, bidi, zero-width
        conn.execute("UPDATE orders SET creator = ?, note = ?, idempotency_key = ? WHERE id = 404",
                     ("达人\x1b[31m红\u202e", "note\x07\u200b\n", "key\x9b"))
        conn.execute("UPDATE orders SET merchant = ?, delivery_mode = ? WHERE id = 1100", ("商家\x1b]0;x\x07", "mo\x1bde"))
    return path


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(service, "STREAM_CHUNK", 150)
    monkeypatch.setattr(linehelper, "PIECE", 37)
    monkeypatch.setattr(linehelper, "AHEAD", 2)


def listed(book: Path, target: Path, **options) -> bytes:
    """print_jsonl of the whole book into a UTF-8 file, as `list --format jsonl --all` does."""
    svc = Service(Store(locate(str(book))), Settings(), "test")
    try:
        with open(target, "w", encoding="utf-8") as stream:
            count = linehelper.print_jsonl(walk_order_chunks(svc, ListQuery(), after=None), Settings().tz, stream, **options)
        assert count == 1200
    finally:
        svc.store.dispose()
    return target.read_bytes()


@pytest.fixture(scope="module")
def expected(book, tmp_path_factory) -> bytes:
    """What one process writes: printer.write_jsonl of the records of every stored row."""
    svc = Service(Store(locate(str(book))), Settings(), "test")
    target = tmp_path_factory.mktemp("one") / "one.jsonl"
    try:
        with open(target, "w", encoding="utf-8") as stream:
            rows = (row for chunk in walk_order_chunks(svc, ListQuery(), after=None) for row in chunk)
            printer.write_jsonl(render.order_records(rows, Settings().tz), stream)
    finally:
        svc.store.dispose()
    return target.read_bytes()


def test_the_expected_listing_holds_the_forged_rows_escaped(expected):
    assert expected.count(b"\n") == 1200
    assert b"\\u001b[31m" in expected and b"\x1b" not in expected and b"\\u202e" in expected


def test_a_helper_making_the_lines_writes_what_one_process_writes(book, tmp_path, expected, small_pieces, answered):
    assert listed(book, tmp_path / "two.jsonl", helper=True, at_least=300) == expected
    assert len(answered) >= 10  # most pieces were the helper's


def test_without_a_helper_or_below_its_threshold_the_same_is_written(book, tmp_path, expected, small_pieces, answered):
    assert listed(book, tmp_path / "none.jsonl", helper=False) == expected
    assert listed(book, tmp_path / "below.jsonl", helper=True, at_least=5000) == expected
    assert answered == []


def test_a_helper_that_stops_half_way_is_replaced_by_making_the_lines_here(book, tmp_path, expected, small_pieces, monkeypatch):
    """A helper that reads a little of its input and exits: its pieces are made here instead."""
    started: list[linehelper.Formatter] = []

    def dying(cls, tz):
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.read(5000)"], bufsize=0,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(cls(proc))
        return started[-1]

    monkeypatch.setattr(linehelper.Formatter, "start", classmethod(dying))
    assert listed(book, tmp_path / "dying.jsonl", helper=True, at_least=300) == expected
    assert started and started[0].proc.poll() is not None


def test_a_helper_that_cannot_start_leaves_the_work_here(book, tmp_path, expected, small_pieces, monkeypatch):
    monkeypatch.setattr(linehelper.Formatter, "start", classmethod(lambda cls, tz: None))
    assert listed(book, tmp_path / "alone.jsonl", helper=True, at_least=300) == expected


def test_a_reader_that_goes_away_ends_the_listing_and_its_helper(book, small_pieces, monkeypatch):
    started: list[linehelper.Formatter] = []
    start = linehelper.Formatter.start.__func__

    def keeping(cls, tz):
        started.append(start(cls, tz))
        return started[-1]

    monkeypatch.setattr(linehelper.Formatter, "start", classmethod(keeping))
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(["head", "-c", "400000"], stdin=read_end, stdout=subprocess.DEVNULL)
    os.close(read_end)
    svc = Service(Store(locate(str(book))), Settings(), "test")
    stream = open(write_end, "w", encoding="utf-8")
    try:
        with pytest.raises(BrokenPipeError):
            linehelper.print_jsonl(walk_order_chunks(svc, ListQuery(), after=None), Settings().tz, stream,
                                   helper=True, at_least=0)
    finally:
        svc.store.dispose()
        reader.wait()
        try:
            stream.close()
        except BrokenPipeError:
            pass  # closing flushes into the closed pipe again
    assert len(started) == 1 and started[0].proc.poll() is not None  # the helper was started, and is gone
