"""`list --format jsonl` of a whole book on two cores: a helper process writes most of the text.

Streaming a million orders as JSON lines costs about as much to read the rows from the database
as to make their text, and one process does both on one core. From HELPER_AT_LEAST rows on,
chunks of rows are handed to a helper process, which makes their lines exactly as
`printer.write_jsonl(render.order_records(rows))` does here and sends back the UTF-8 bytes; this
process goes on reading the next rows from its one read transaction (so the listing stays one
snapshot of the book) and writes every line itself, in order. While the helper holds AHEAD chunks
not yet answered, the chunk just read is made here instead, so neither side waits for long.

Rows travel as length-prefixed `marshal` frames (the driver's tuples of str, int and None: the
cheapest form to write and to read back), text comes back as length-prefixed bytes; the first
frame (pickled) gives the time zone. The writes to the helper never block (what its pipe does not
take waits in a buffer, as for tick's helper, `tickwork.Helper`), so the two can never wait for
each other. If the helper cannot be started, stops or fails, the chunks it did not answer are
made here: a listing never fails because of its helper. It ignores Ctrl-C (this process answers
it, then closes the helper's input) and stops at the end of its input.
"""

from __future__ import annotations

import marshal
import os
import pickle
import sys
from collections import deque
from datetime import tzinfo
from itertools import islice
from typing import Iterable, Iterator

from coopctl.tickwork import _HEADER, Pipes, _cores, _read_exact

HELPER_AT_LEAST = 20_000  # rows made here before a helper is started (its start costs ~0.2 s of CPU)
PIECE = 400  # rows per piece given to the helper (its text, about 450 KB, fits in the pipe back)
AHEAD = 6  # chunks the helper may hold unanswered before the next one is made here (at most one more
# chunk waits behind them: then the listing waits for the helper's oldest answer)


def print_jsonl(chunks: Iterable[list[tuple]], tz: tzinfo, stream=None, *, at_least: int | None = None,
                helper: bool | None = None) -> int:
    """Every row of `chunks` (lists of store.LISTED_COLUMNS rows) as `printer.write_jsonl` writes
    `render.order_records` of them to `stream` (sys.stdout): the same bytes, past `at_least` rows
    (HELPER_AT_LEAST) made by a helper process on a machine with a second core, when `stream` is a
    UTF-8 file (`helper`: True always, as tests do; False never). The number of records written."""
    from coopctl import printer, render

    stream = sys.stdout if stream is None else stream
    at_least = HELPER_AT_LEAST if at_least is None else at_least
    use = (_cores() > 1) if helper is None else helper
    write = printer.utf8_bytes_writer(stream) if use else None
    if write is None:
        return printer.write_jsonl(render.order_records(_rows(chunks), tz), stream)
    chunks, lines = iter(chunks), Lines(tz)
    count = 0
    for chunk in chunks:  # the first rows here, a chunk at a time
        write(lines.text(chunk))
        count += len(chunk)
        if count >= at_least:
            return count + _with_helper(chunks, lines, write, Formatter.start(tz))
    return count  # the whole listing was short


def _rows(chunks: Iterable[list[tuple]]) -> Iterator[tuple]:
    for chunk in chunks:
        yield from chunk


class Lines:
    """The lines of rows given piece by piece, as `printer.write_jsonl` writes them to a UTF-8
    stream, encoded: one `render.order_records(...).json_lines` for every piece, so that what it
    keeps (instants, policies, parties already written) serves them all."""

    def __init__(self, tz: tzinfo):
        from coopctl import render
        from coopctl.trust import json_escaped

        self.feed: deque[tuple] = deque()
        self.lines = render.order_records(_Feed(self.feed), tz).json_lines(json_escaped)

    def text(self, rows: list[tuple]) -> bytes:
        self.feed.extend(rows)
        lines = list(islice(self.lines, len(rows)))
        if len(lines) != len(rows):  # the maker stopped on a row it could not write (it raised then)
            raise RuntimeError("the listing's lines could not be made")
        return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


class _Feed:
    """The rows of `Lines`, taken one by one as they are given (never asked for more)."""

    def __init__(self, rows: deque):
        self.rows = rows

    def __iter__(self):
        return self

    def __next__(self):
        return self.rows.popleft()


def _with_helper(chunks: Iterator[list[tuple]], lines: Lines, write, formatter: "Formatter | None") -> int:
    """Write the lines of every chunk in order: most made by the formatter, the rest here."""
    count = 0
    queue: deque[list] = deque()  # [chunk, text or None (the formatter's, not in yet)], in order
    try:
        for chunk in _pieces(chunks):
            count += len(chunk)
            if formatter is not None and formatter.pending < AHEAD:
                formatter.submit(chunk)
                queue.append([chunk, None])
            else:
                queue.append([chunk, lines.text(chunk)])
            while queue and (queue[0][1] is not None or len(queue) > AHEAD + 1 or (formatter is not None and formatter.ready())):
                formatter = _write_head(queue, lines, write, formatter)
        while queue:
            formatter = _write_head(queue, lines, write, formatter)
    finally:
        if formatter is not None:
            formatter.close()
    return count


def _pieces(chunks: Iterator[list[tuple]]) -> Iterator[list[tuple]]:
    """The chunks read, in pieces of PIECE rows: each answer then fits in the pipe back, so the
    helper goes on with the next piece while this process is busy reading."""
    for chunk in chunks:
        for start in range(0, len(chunk), PIECE):
            yield chunk[start : start + PIECE]


def _write_head(queue: deque, lines: Lines, write, formatter: "Formatter | None") -> "Formatter | None":
    """Write the first chunk's text (waiting for the formatter's answer if it is the formatter's);
    a formatter that cannot answer is closed and its chunks are made here. The formatter left."""
    chunk, text = queue[0]
    if text is None and formatter is not None:
        text = formatter.receive()
        if text is None:
            formatter.close()
            formatter = None
    if text is None:
        text = lines.text(chunk)
    queue.popleft()
    write(text)
    return formatter


class Formatter(Pipes):
    """The helper process, seen from the listing: pieces of rows in (marshal), their text back."""

    @classmethod
    def start(cls, tz: tzinfo) -> "Formatter | None":
        proc = cls.spawn("coopctl.linehelper:serve")
        if proc is None:
            return None
        formatter = cls(proc)
        formatter._send(pickle.dumps(tz))
        return formatter

    def _send(self, payload: bytes) -> None:
        self._send_bytes(_HEADER.pack(len(payload)) + payload)

    def submit(self, chunk: list[tuple]) -> None:
        self._send(marshal.dumps(chunk))
        self.pending += 1

    def receive(self) -> bytes | None:
        """The text of the oldest piece given, or None if the helper could not make it."""
        if self.pending == 0:
            return None
        self.pending -= 1
        try:
            self._wait_readable()
            header = _read_exact(self.rfd, _HEADER.size)
            if header is None:
                return None
            (size,) = _HEADER.unpack(header)
            if size == 0:  # it failed on this piece: made here, where the error surfaces
                return None
            return _read_exact(self.rfd, size)
        except (OSError, ValueError):
            return None


def serve() -> None:
    """The helper's loop: a chunk of rows in, its lines out (an empty frame for a chunk it could not
    make), until its input ends."""
    import signal

    from coopctl.tickwork import quiet_gc

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the listing, which then closes our stdin
    quiet_gc()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        header = _read_exact(stdin, _HEADER.size)
        data = None if header is None else _read_exact(stdin, _HEADER.unpack(header)[0])
        if data is None:
            os._exit(0)
        tz = pickle.loads(data)
        lines = Lines(tz)
        while (header := _read_exact(stdin, _HEADER.size)) is not None:
            data = _read_exact(stdin, _HEADER.unpack(header)[0])
            if data is None:
                break
            try:
                text = lines.text(marshal.loads(data))
            except Exception:  # noqa: BLE001 - the listing makes this chunk itself, where the error surfaces
                text, lines = b"", Lines(tz)
            view = memoryview(_HEADER.pack(len(text)) + text)
            while view:
                view = view[os.write(stdout, view) :]
    except (OSError, KeyboardInterrupt):
        pass
    os._exit(0)
