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
import pickle
import sys
from collections import deque
from contextlib import closing
from datetime import tzinfo
from itertools import islice
from typing import Callable, Iterable, Iterator

from coopctl.tickwork import Pipes, _cores, serve_frames

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
    with closing(in_order(_pieces(chunks), lines.text, formatter)) as texts:
        for piece, text in texts:
            count += len(piece)
            write(text)
    return count


def in_order(pieces: Iterable, make: Callable[[object], bytes], formatter: "Formatter | None", *,
             ahead: int | None = None) -> Iterator[tuple[object, bytes]]:
    """(piece, its text) for every piece, in order: made by the formatter (a helper process) while
    it holds fewer than `ahead` (AHEAD) pieces unanswered, else by `make` here, and by `make` for
    every piece the formatter could not take or answer (then it is closed). The formatter is
    closed at the end, or when the caller stops early (close this generator)."""
    ahead = AHEAD if ahead is None else ahead
    queue: deque[list] = deque()  # [piece, text or None (the formatter's, not in yet)], in order
    try:
        for piece in pieces:
            if formatter is not None and formatter.pending < ahead and formatter.submit(piece):
                queue.append([piece, None])
            else:
                queue.append([piece, make(piece)])
            while queue and (queue[0][1] is not None or len(queue) > ahead + 1 or (formatter is not None and formatter.ready())):
                formatter, text = _head(queue, make, formatter)
                yield queue.popleft()[0], text
        while queue:
            formatter, text = _head(queue, make, formatter)
            yield queue.popleft()[0], text
    finally:
        if formatter is not None:
            formatter.close()


def _pieces(chunks: Iterator[list[tuple]]) -> Iterator[list[tuple]]:
    """The chunks read, in pieces of PIECE rows: each answer then fits in the pipe back, so the
    helper goes on with the next piece while this process is busy reading."""
    for chunk in chunks:
        for start in range(0, len(chunk), PIECE):
            yield chunk[start : start + PIECE]


def _head(queue: deque, make, formatter: "Formatter | None") -> tuple["Formatter | None", bytes]:
    """The first piece's text (waiting for the formatter's answer if it is the formatter's); a
    formatter that cannot answer is closed and its pieces are made here. The formatter left."""
    piece, text = queue[0]
    if text is None and formatter is not None:
        text = formatter.receive()
        if text is None:
            formatter.close()
            formatter = None
    if text is None:
        text = make(piece)
    return formatter, text


class Formatter(Pipes):
    """The helper process, seen from the listing: pieces of rows in (marshal), their text back."""

    SERVE = "coopctl.linehelper:serve"  # what the helper runs

    @classmethod
    def start(cls, tz: tzinfo) -> "Formatter | None":
        proc = cls.spawn(cls.SERVE)
        if proc is None:
            return None
        formatter = cls(proc)
        formatter._send_frame(pickle.dumps(tz))
        return formatter

    def submit(self, piece) -> bool:
        """Give it a piece; False (and nothing sent) if marshal cannot carry it (a value of a type
        other than the driver's plain ones): it is made here then."""
        try:
            payload = marshal.dumps(piece)
        except ValueError:
            return False
        self._send_frame(payload)
        self.pending += 1
        return True

    def receive(self) -> bytes | None:
        """The text of the oldest piece given, or None if the helper could not make it."""
        if self.pending == 0:
            return None
        self.pending -= 1
        try:
            return self._receive_frame() or None  # empty: it failed on this piece, made here where the error surfaces
        except (OSError, ValueError):
            return None


def serve(maker: Callable[[tzinfo], Callable[[object], bytes]] | None = None) -> None:
    """The helper's loop (`tickwork.serve_frames`): the time zone first, then a piece in, its text
    out. `maker(tz)` gives the function that makes a piece's text (`Lines(tz).text` by default); it
    is made again after a piece that failed."""
    maker = maker or (lambda tz: Lines(tz).text)

    def begin(data: bytes):
        tz = pickle.loads(data)
        make = [maker(tz)]

        def answer(frame: bytes) -> bytes:
            try:
                return make[0](marshal.loads(frame))
            except Exception:
                make[0] = maker(tz)
                raise

        return answer

    serve_frames(begin)
