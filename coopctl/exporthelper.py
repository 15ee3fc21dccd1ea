"""`export --all` of a large book on two cores: a helper process makes most of the document's text.

Exporting an order costs about a fifth in reading its rows (and, on a sealed book, its proof) and
four fifths in making its text: its document from the rows (`exchange.documents_of`) and their
indented JSON (`exchange.chunk_text`). From HELPER_AT_LEAST orders on, this process goes on
reading from its one read transaction (so the export stays one snapshot of the book) and computing
the proofs, and hands each piece of rows (PIECE orders: (order rows, event rows, notification rows),
the driver's plain values, as marshal frames) to a helper process, which sends back the piece's
UTF-8 text, with a stand-in where a sealed order's "sealed" part goes (the ids of those orders
travel, not their proofs); this process writes the parts into it (`exchange.sealed_into`) and
writes every piece itself, in order. While the helper holds AHEAD pieces unanswered, the piece
just read is made here instead, so neither side waits for long.

The helper is `linehelper`'s (`linehelper.in_order`, `Formatter`, `serve`: the same pipes, the same
fall-back): if it cannot be started, stops or fails, the pieces it did not answer are made here,
so an export never fails because of its helper and writes the same bytes with or without it
(tests/test_exporthelper.py).
"""

from __future__ import annotations

from contextlib import closing
from datetime import tzinfo
from typing import Iterator

from coopctl import linehelper
from coopctl.tickwork import _cores

HELPER_AT_LEAST = 20_000  # orders made here before a helper is started (its start costs ~0.3 s of CPU)
PIECE = 200  # orders per piece given to the helper (its text, about 1 MB sealed, fits in the pipe back)
AHEAD = 4  # pieces the helper may hold unanswered before the next one is made here


class ExportFormatter(linehelper.Formatter):
    """The helper process, seen from the export: pieces of rows in (marshal), their text back."""

    SERVE = "coopctl.exporthelper:serve"

    def submit(self, piece) -> bool:
        """A piece without its "sealed" parts, only the ids of the orders that have one: the parts
        are written in here (`_sealed_into`)."""
        rows, event_rows, note_rows, sealed = piece
        return super().submit((rows, event_rows, note_rows, set(sealed) if sealed else None))


def export_texts(tx, ids: list[int] | None, tz: tzinfo, summary=None, *, sealing=None, helper: bool | None = None,
                 at_least: int | None = None) -> Iterator[tuple[int, bytes | list]]:
    """(number of orders, text) of every piece of the export of these orders (None: every order), as
    `exchange.texts_of(exchange._order_chunks(...))` gives them (a sealed piece's text as the list
    of buffers that make it: `_sealed_into`): the same bytes, past `at_least`
    orders (HELPER_AT_LEAST) made mostly by a helper process on a machine with a second core
    (`helper`: True always, as tests do; False never)."""
    from coopctl import exchange

    use = (_cores() > 1) if helper is None else helper
    at_least = HELPER_AT_LEAST if at_least is None else at_least
    size = min(PIECE, exchange.EXPORT_CHUNK) if use else None  # read in pieces the helper can take
    parts = exchange.chunk_rows(tx, ids, summary, sealing=sealing, size=size)
    made = _maker(tz)
    count = 0
    for part in parts:  # the first orders here
        yield len(part[0]), _sealed_into(made(part), part)
        count += len(part[0])
        if use and count >= at_least:
            break
    else:
        return
    with closing(linehelper.in_order(parts, made, ExportFormatter.start(tz), ahead=AHEAD)) as texts:
        for part, text in texts:
            yield len(part[0]), _sealed_into(text, part)


def _sealed_into(text: bytes, part) -> bytes | list:
    """A piece's text with the "sealed" parts of its orders, as the buffers that make it
    (`exchange.sealed_segments`: `_write_document` writes them without joining them), or the text
    itself when none of its orders is sealed."""
    from coopctl.exchange import sealed_segments

    sealed = part[3]
    parts = list(sealed.values()) if sealed else None  # by order id, as the rows are (`sealed_of_rows`)
    return sealed_segments(text, parts) if parts else text


def _maker(tz: tzinfo):
    """The text of a piece (order rows, event rows, notification rows, and the "sealed" parts or
    the ids of the orders that have one), with SEALED_HOLE where the parts go (`_sealed_into`)."""
    from coopctl.exchange import chunk_text, documents_of

    def made(part) -> bytes:
        rows, event_rows, note_rows, sealed = part
        return chunk_text(documents_of(rows, event_rows, note_rows, set(sealed) if sealed else None, tz))

    return made


def serve() -> None:
    """The helper's loop (`linehelper.serve`), making export pieces."""
    linehelper.serve(_maker)
