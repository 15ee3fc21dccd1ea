"""Reading an export incrementally (SPEC section 2: `import`, `replay` and `verify` stream).

An export is parsed with ijson's C backend (yajl2_c), one order at a time, and each order dict
goes through the same per-order checks as before (`exchange._parse_order`): memory follows one
chunk of orders, never the file. Numbers stay exact: ijson gives whole numbers as Python ints of
any size and the others as Decimal; they are then read exactly as `json.loads` read them (ints
as they are, refused beyond 40 digits; the others as the float `json` would make, refused when
not finite), so that hashes computed over an event's data are the same.

The top-level keys may come in any order:
- the *header* is what comes before "orders" (a coopctl export writes format, version,
  exported_at and seal there). It is read first, from a bounded recording of the bytes
  (at most HEADER_LIMIT), which is then replayed to the fast parser: one pass, file or stdin.
- when format, version and exported_at are all in the header, the orders are read in C, each
  checked as it arrives, `exported_at` against each event at once. A file laid out as coopctl
  writes it has each order cut out of the bytes as its own text (checked whole by orjson, then
  read by `json` where it is replayed: several times faster than ijson building it, and the text
  goes to replay's helper process as it is); any other layout, and anything from the first piece
  that is not one whole object, is built by `ijson.items_coro`, with the same outcome.
  A "seal" after the orders is looked for only when the caller needs it (`verify`,
  `replay --public-key`), with a second C pipeline over the same bytes.
- otherwise (keys re-sorted, e.g. `jq -S` puts "version" after "orders") the rest of the file
  is read event by event: orders are built the same way but in Python (slower), and the checks
  that need the missing keys (format, version, exported_at against the last event) are deferred
  to the end of the file, `finish()`: an import is still one transaction, rolled back when they
  fail; stdin cannot be read twice, so this is also what stdin gets.

Text that UTF-8 cannot carry (a lone surrogate escape such as \\ud800, which yajl would turn into
'?' or into undecodable bytes) is refused from the raw bytes as they are read, in C-speed scans.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import sys
from array import array
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO, Callable, Iterator

import ijson
import orjson

from coopctl.errors import InvalidInput
from coopctl.policy import iso

BUFFER = 1 << 20  # bytes read (and parsed) at once
HEADER_LIMIT = 64 << 20  # bytes a file may hold before its "orders" (a coopctl export: under 1 KB)
_BIG = 10**40  # whole numbers of more than 40 digits are absurd (as before, with json)
_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]")
# a \u escape of a surrogate, not itself escaped (an even run of backslashes before it), with the
# low half that must follow a high one
_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u([dD][89a-fA-F])[0-9a-fA-F]{2}(\\u[dD][c-fC-F][0-9a-fA-F]{2})?")
_CARRY = 64  # bytes of one read kept for the next scan (an escape pair is 12 bytes)
# yajl's C parser crashes (a segmentation fault) on JSON nested some 100,000 deep; an export is
# nested about 8 deep, so MAX_OPEN brackets opened without one closed between them is refused
MAX_OPEN = 512
_DEEP = re.compile(rb"(?:[\[{][^\[\]{}]{0,64}){%d}" % MAX_OPEN)
# and on a whole number of more than 4,300 digits (Python's limit for int()); no text of an export
# holds that many digits in a row (ids: 128 characters; notes and reasons: 2,000)
_LONG_NUMBER = re.compile(rb"[0-9]{4000}")
# Both regexes cost some 20-50 ms per megabyte (they try a match at every bracket and digit), so
# each runs only on a window that a C-speed pre-filter cannot clear: _DEEP needs 512 openings
# with no closing bracket among them, so the window's brackets alone (every other byte deleted)
# must hold 512 openings in a row; _LONG_NUMBER needs 4,000 digits in a row, which cover at least
# one whole aligned block of _DIGIT_BLOCK bytes. The regex still decides: the refusals are its own.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENINGS = re.compile(rb"[\[{]{%d}" % MAX_OPEN)
_DIGIT_BLOCK = 2000


# The layout of a coopctl export's orders (`export` indents by two): each order begins on a line of
# its own with "{" at four spaces and ends with "}" at four spaces; no text of JSON holds a raw newline.
SPLIT = True  # cut the orders out of the bytes (tests compare it with the C parser alone)
_ORDERS_MARK = b'\n  "orders": ['
_CLOSE = b"\n    }"
_NEXT = b",\n    {"
_END = b"\n  ]"
_LOOKAHEAD = len(_CLOSE) + len(_NEXT)
_IN_ORDERS = b'{"orders":['  # stands in for a document's beginning up to an order of its array
PIECE_LIMIT = 64 << 20  # bytes of one order past which it is left to the parser (memory stays bounded)
_validate = orjson.loads


def _orders_start(recorded: bytes, header: dict) -> int | None:
    """Where the array of "orders" begins in the first bytes of the file (just after its "["),
    when that is provably the place the header's parser stopped at: the bytes before it, with the
    array and the object closed, are a JSON object whose keys are the header's, in order, then one
    "orders" (an "orders" inside a text or deeper in a value, or a key spelled with escapes before
    it, would give other keys or no JSON at all). None: the C parser reads the file as it is."""
    at = recorded.find(_ORDERS_MARK)
    if at < 0 or recorded.find(b'"orders"') != at + _ORDERS_MARK.index(b'"'):  # the first "orders" of the file
        return None
    start = at + len(_ORDERS_MARK)
    top: list = []

    def pairs(found: list) -> dict:
        top[:] = found  # the top-level object is the last one closed
        return dict(found)

    try:
        json.loads((recorded[:start] + b"]}").decode("utf-8"), object_pairs_hook=pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if [key for key, _ in top] != [*header, "orders"] or top[-1][1] != []:
        return None
    return start


def _reads(buf: bytes, start: int, ends: list[int]) -> list[bytes]:
    """The bytes of `buf` from `start`, cut where the reads that brought them ended, the first
    after the stand-in for the document's beginning up to an order of its array."""
    reads, done = [], start
    for end in ends:
        if end > done:
            reads.append(buf[done:end])
            done = end
    return [_IN_ORDERS + (reads[0] if reads else b""), *reads[1:]]


class _Sink:
    """Where `ijson.items_coro` puts what it builds: a list, or nowhere (a parse only checked)."""

    def __init__(self, into: list | None = None):
        self.send = into.append if into is not None else _ignore


def _ignore(value) -> None:
    pass


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def loads_piece(piece: bytes, source: str):
    """One order's text (`_split_orders`) read as the C parser reads it: whole numbers as ints, the
    others as Decimal; the parser decides what json refuses (it was checked by orjson already)."""
    try:
        return json.loads(piece.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        try:
            return next(ijson.items(b"[" + piece + b"]", "item", use_float=False))
        except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
            raise _json_error(source, exc) from None


def _maybe_deep(window: bytes) -> bool:
    return _OPENINGS.search(window.translate(None, _NOT_BRACKETS)) is not None


def _maybe_long_number(window: bytes) -> bool:
    return any(window[p : p + _DIGIT_BLOCK].isdigit() for p in range(0, len(window) - _DIGIT_BLOCK + 1, _DIGIT_BLOCK))


def _not_unicode(source: str) -> InvalidInput:
    return InvalidInput(f"{source} is not a coopctl export: it holds text that is not valid Unicode")


class _Scanned:
    """A binary stream as ijson reads it: a leading UTF-8 byte-order mark dropped, lone surrogate
    escapes refused, the bytes counted (for progress), optionally recorded (for the header)."""

    def __init__(self, raw: BinaryIO, source: str):
        self.raw, self.source = raw, source
        self.position = 0
        self.recording: list[bytes] | None = None
        self._recorded = 0
        self._first = True
        self._carry = b""
        self._carry_deep = b""

    def read(self, size: int = BUFFER) -> bytes:
        if size == 0:  # ijson asks read(0) to tell bytes from text
            return b""
        try:
            chunk = self.raw.read(size)
        except OSError as exc:
            raise InvalidInput(f"cannot read {self.source}: {exc.strerror}") from None
        if self._first and chunk:
            while len(chunk) < 3 and chunk == b"\xef\xbb\xbf"[: len(chunk)]:
                more = self.raw.read(size)
                if not more:
                    break
                chunk += more
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            self._first = False
            try:  # UTF-16 and other encodings are told at once (a multi-byte character may be cut at the end)
                codecs.getincrementaldecoder("utf-8")().decode(chunk[:4096])
            except UnicodeDecodeError:
                raise InvalidInput(f"{self.source} is not a coopctl export: it is not UTF-8 text") from None
        self._scan(chunk)
        window = self._carry_deep + chunk
        if _maybe_deep(window) and _DEEP.search(window):
            raise InvalidInput(f"{self.source} is not a coopctl export: its JSON is nested too deeply")
        if _maybe_long_number(window) and _LONG_NUMBER.search(window):
            raise InvalidInput(f"{self.source} is not a coopctl export: a number in it is too large")
        self._carry_deep = chunk[-(MAX_OPEN * 65):]
        self.position += len(chunk)
        if self.recording is not None:
            self.recording.append(chunk)
            self._recorded += len(chunk)
            if self._recorded > HEADER_LIMIT:
                raise InvalidInput(
                    f"{self.source}: more than {HEADER_LIMIT >> 20} MB before its 'orders'; "
                    "a coopctl export has its header first")
        return chunk

    def _scan(self, chunk: bytes) -> None:
        text = self._carry + chunk
        end = len(text) if not chunk else max(0, len(text) - 12)  # an escape may go on in the next read
        if _SURROGATE_HINT.search(text):
            for found in _SURROGATE.finditer(text):
                if found.end() > end and chunk:
                    break
                high = found.group(1)[1:2].lower() in b"89ab"
                if not high or found.group(2) is None:
                    raise _not_unicode(self.source)
        self._carry = text[max(0, end - _CARRY):] if chunk else b""


    def pending(self) -> bool:
        """Whether the bytes not yet judged (an escape that may go on in the next read) hold a lone
        surrogate: the parser may have met it first, and must not get the blame."""
        for found in _SURROGATE.finditer(self._carry):
            if found.group(1)[1:2].lower() not in b"89ab" or found.group(2) is None:
                return True
        return False


def _plain(value, where: str, key: str):
    """A number as `json.loads` would have read it: ints as they are (at most 40 digits), the others
    as the float it makes (finite)."""
    if type(value) is Decimal:
        number = float(value)
        if number in (float("inf"), float("-inf")) or len(value.as_tuple().digits) > 80:
            raise InvalidInput(f"{where}: {key!r}: the number {str(value)[:20]}... is too large")
        return number
    if type(value) is int and not -_BIG < value < _BIG:
        raise InvalidInput(f"{where}: {key!r}: the number {str(value)[:20]}... is too large")
    return value


def plain_numbers(obj: dict, where: str) -> None:
    """Decimal -> float and absurd ints refused, in place, in one object's own values (an event's
    data is walked by `exchange._check_data`)."""
    for key, value in obj.items():
        kind = type(value)
        if kind is Decimal or kind is int:
            obj[key] = _plain(value, where, key)
        elif kind is list:
            for position, inner in enumerate(value):
                if type(inner) is Decimal or type(inner) is int:
                    value[position] = _plain(inner, where, f"{key}[{position}]")


def _plain_deep(value, where: str, key: str):
    """`_plain` through a whole value (the header's, which is small)."""
    if isinstance(value, dict):
        for inner_key, inner in value.items():
            value[inner_key] = _plain_deep(inner, where, f"{key}.{inner_key}")
        return value
    if isinstance(value, list):
        return [_plain_deep(inner, where, f"{key}[{i}]") for i, inner in enumerate(value)]
    return _plain(value, where, key)


_CONSTANT = re.compile(r"(-?Infinity|NaN)")


def _json_error(source: str, exc: Exception, scanned: "_Scanned | None" = None) -> InvalidInput:
    if scanned is not None and scanned.pending():
        return _not_unicode(source)
    said = exc.args[0] if exc.args else None
    # yajl's message comes as bytes when the bit of the file it quotes is cut inside a character
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(exc)
    if isinstance(exc, UnicodeDecodeError) or "invalid bytes in UTF8" in text:
        return InvalidInput(f"{source} is not a coopctl export: it is not UTF-8 text")
    if isinstance(exc, ValueError) and "digits" in text:  # int() refusing thousands of digits
        return InvalidInput(f"{source} is not a coopctl export: a number in it is too large")
    lines = text.strip().splitlines()
    if "invalid char" in text and len(lines) > 1:
        constant = _CONSTANT.search(lines[1])
        if constant:
            return InvalidInput(f"{source} is not a coopctl export: {constant.group(1)} is not a number JSON allows")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return InvalidInput(f"{source} is not a coopctl export: not JSON ({first})")


def _kind_of_event(event: str) -> str:
    return {"start_array": "an array", "string": "text", "boolean": "true/false", "null": "null"}.get(event, "a number")


def _value(first: tuple, events) -> object:
    """The value whose first event is `first`, built from the events that follow."""
    prefix, event, value = first
    if event not in ("start_map", "start_array"):
        return value
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for _, event, value in events:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return builder.value
    return builder.value  # pragma: no cover - the parser raises on a premature end


def parse_item(source: str, index: int, item):
    """The order at `index` of the file's "orders", as the parser built it, checked and read into an
    `ExportedOrder` (`exchange._parse_order`, after its numbers are made plain), in place."""
    from coopctl.exchange import _parse_order

    where = f"{source}: orders[{index}]"
    if type(item) is bytes:
        item = loads_piece(item, source)
    if isinstance(item, dict):
        plain_numbers(item, where)
        for key in ("events", "notifications"):
            inner = item.get(key)
            if type(inner) is list:
                for position, entry in enumerate(inner):
                    if type(entry) is dict:
                        plain_numbers(entry, f"{where}, {key}[{position}]")
    return _parse_order(item, where)


def count_of(order) -> tuple:
    """What `ExportStream.count` needs of an order: (id, events, notifications, latest event instant)."""
    events = order.events
    return (order.id, len(events), len(order.notifications), max(e.at for e in events) if events else None)


@dataclass
class ExportStream:
    """An export being read: `header` (the top-level keys read so far), `orders()` (each order
    checked, once), then `finish()` (the checks that waited for the end of the file)."""

    source: str
    scanned: _Scanned
    header: dict
    fast: bool  # the header came first: orders are built in C
    events: object  # the parse events, positioned inside "orders" (the slow path) or None
    size: int | None  # bytes in the file (None: stdin or a pipe)
    want_seal: bool = False
    ids: array = field(default_factory=lambda: array("q"))
    event_count: int = 0
    notification_count: int = 0
    latest: tuple[int, int] | None = None  # (instant, order id) of the file's last event
    exported_at: int | None = None
    seal: object | None = None
    finished: bool = False
    _seen: set | None = None
    progress: Callable[[int, int], None] | None = None  # told (bytes read, orders) when none is given


    @property
    def position(self) -> int:
        return self.scanned.position

    def orders(self, progress: Callable[[int, int], None] | None = None) -> Iterator:
        """Each order as an `ExportedOrder`, checked as `parse_document` checks it; `progress(bytes,
        orders)` after each read. The header's own checks run first when it is complete."""
        for index, item in enumerate(self.items(progress)):
            order = parse_item(self.source, index, item)
            self.count(count_of(order))
            yield order
        self.finish()

    def items(self, progress: Callable[[int, int], None] | None = None) -> Iterator:
        """The orders as the parser built them, not yet checked (`orders()` checks each with
        `parse_item` and `count`, then calls `finish`; `replayhelper` does the same on two cores)."""
        progress = progress or self.progress
        if self.fast:
            self._check_header()
        return self._fast_orders(progress) if self.fast else self._slow_orders(progress)

    def count(self, counted: tuple) -> None:
        """The file-wide checks of one order, in file order: its id not seen before, its last event
        not after `exported_at`; `counted` is `count_of(order)`."""
        order_id, events, notifications, last_at = counted
        ids = self.ids
        if ids and order_id <= ids[-1]:  # exports are sorted by id; a file that is not is checked by a set
            if self._seen is None:
                self._seen = set(ids)
            if order_id in self._seen:
                raise InvalidInput(f"{self.source}: order {order_id} appears twice")
        if self._seen is not None:
            self._seen.add(order_id)
        ids.append(order_id)
        self.event_count += events
        self.notification_count += notifications
        if last_at is not None and (self.latest is None or last_at > self.latest[0]):
            self.latest = (last_at, order_id)
        if self.exported_at is not None:
            self._check_dated()

    def _check_dated(self) -> None:
        latest = self.latest
        if latest is not None and self.exported_at < latest[0]:
            raise InvalidInput(
                f"{self.source}: 'exported_at' {iso(self.exported_at)} is before the last event of order {latest[1]} "
                f"({iso(latest[0])}); an export cannot be older than the history it holds"
            )

    def _fast_orders(self, progress) -> Iterator:
        """The orders after a complete header: each order's own text, cut out of the bytes, when the
        file is laid out as coopctl writes it (`_orders_start`, `_split_orders`); otherwise, and from
        the first order that is not, the dicts of the C parser (`_parsed_orders`)."""
        recorded = b"".join(self.scanned.recording or [])
        self.scanned.recording = None
        start = _orders_start(recorded, self.header) if SPLIT else None
        if start is None:
            return self._parsed_orders(progress, [recorded] if recorded else [], 0)
        return self._split_orders(progress, recorded, start)

    def _split_orders(self, progress, buf: bytes, pos: int) -> Iterator:
        """Each order as the bytes of its text, from `pos` (just inside the array of "orders").

        An order of a coopctl export ends with `\\n    }` followed by `,\\n    {` (the next order) or
        by `\\n  ]` (the end of the array); every piece cut there is checked to be one whole JSON
        object (orjson, a strict parser, in C) before it is given out. Pieces that are each one whole
        value, joined by the commas between them, are the array's values: a cut in the wrong place
        (another indentation, a file made by hand) leaves a piece that is not one.

        What comes out, and which error comes first, is what the parser alone gives (it parses each
        read whole, then gives out the orders completed in it): the orders of a read are given out
        once everything read so far is known to be JSON (the start of an order not yet complete is
        fed to a parser of its own as it comes). Otherwise (a piece that is not one whole object, a
        piece orjson refuses such as a number beyond 64 bits, bytes that are not JSON, the end of
        the array, the end of the file, a read refused) the parser reads the bytes of the orders
        not yet given out, read by read as they came, and then the rest of the file, as if it had
        read the file from the start."""
        count = 0
        searched = pos
        scanned = self.scanned
        ends = [len(buf)]  # where each read ends in buf (the header's reads: one, the last holds the first orders)
        partial, parsed_to = None, pos  # the parser of the order not yet complete, and how far into buf it was fed
        while True:
            first = pos  # the first order of this read not given out yet
            pieces = []
            settled = True
            while True:
                j = buf.find(_CLOSE, searched)
                if j < 0 or j + _LOOKAHEAD > len(buf):
                    break
                after = j + len(_CLOSE)
                if buf.startswith(_NEXT, after):
                    end_of_array = False
                elif buf.startswith(_END, after):
                    end_of_array = True
                else:  # not where an order of this layout ends: look further
                    searched = after
                    continue
                piece = buf[pos:after]
                try:
                    _validate(piece)
                except ValueError:
                    settled = False
                    break
                if end_of_array:  # what follows the array (a seal, the end) is the parser's, with this read's orders
                    settled = False
                    break
                pieces.append(piece)
                pos = searched = after + len(_NEXT) - 1  # the next order's "{"
                partial = None
            if settled and pos < len(buf):
                if partial is None:
                    partial, more = ijson.items_coro(_Sink(), "orders.item", use_float=False), _IN_ORDERS + buf[pos:]
                else:
                    more = buf[parsed_to:]
                parsed_to = len(buf)
                try:
                    partial.send(more)
                except (ijson.JSONError, UnicodeDecodeError, ValueError):
                    settled = False
            if not settled:
                yield from self._parsed_orders(progress, _reads(buf, first, ends), count)
                return
            count += len(pieces)
            yield from pieces
            try:
                chunk = scanned.read(BUFFER) if len(buf) - pos <= PIECE_LIMIT else b""
            except InvalidInput:  # refused as read: an order completed before it is given out first
                yield from self._parsed_orders(progress, _reads(buf, pos, ends), count, read_on=False)
                raise
            if progress is not None:
                progress(scanned.position, count)
            if not chunk:  # the file ends inside an order (or one is too long to be cut out): the parser says what it is
                yield from self._parsed_orders(progress, _reads(buf, pos, ends), count)
                return
            searched = max(pos, len(buf) - _LOOKAHEAD) - pos
            parsed_to -= pos
            ends = [end - pos for end in ends if end > pos]
            buf = buf[pos:] + chunk
            ends.append(len(buf))
            pos = 0

    def _parsed_orders(self, progress, firsts: list[bytes], count: int, *, read_on: bool = True) -> Iterator:
        """The orders as ijson's C backend builds them from `firsts` (the first reads of the document:
        as recorded, or after a stand-in for what came before them) and then, `read_on`, the rest of
        the stream; a "seal" after the orders is looked for when the caller needs it."""
        found: list = []
        seals: list = []
        coros = [ijson.items_coro(_Sink(found), "orders.item", use_float=False)]
        if self.want_seal and "seal" not in self.header:
            coros.append(ijson.items_coro(_Sink(seals), "seal", use_float=False))
        try:
            for chunk in self._chunks(firsts, read_on):
                for coro in coros:
                    coro.send(chunk) if chunk else coro.close()
                count += len(found)
                yield from found
                found.clear()
                if progress is not None:
                    progress(self.scanned.position, count)
        except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
            raise _json_error(self.source, exc, self.scanned) from None
        if seals:
            self.header["seal"] = seals[-1]

    def _chunks(self, firsts: list[bytes], read_on: bool) -> Iterator[bytes]:
        """`firsts`, then (`read_on`) each read of the stream up to the empty one at its end."""
        yield from firsts
        while read_on:
            chunk = self.scanned.read(BUFFER)
            yield chunk
            read_on = bool(chunk)

    def _slow_orders(self, progress) -> Iterator:
        """The rest of the file event by event: orders built here, the keys after them kept."""
        events = self.events
        count = 0
        last = 0
        try:
            for item in events:
                prefix, event, value = item
                if prefix == "orders" and event == "end_array":
                    break
                count += 1
                yield _value(item, events)
                if progress is not None and self.scanned.position != last:
                    last = self.scanned.position
                    progress(last, count)
            for prefix, event, value in events:  # the keys after "orders"
                if prefix == "" and event == "map_key":
                    self.header[value] = _plain_deep(_value(next(events), events), self.source, value)
        except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
            raise _json_error(self.source, exc, self.scanned) from None
        if progress is not None:
            progress(self.scanned.position, count)

    def _check_header(self) -> None:
        from coopctl.exchange import FORMAT, VERSION, _instant

        header, source = self.header, self.source
        if header.get("format") != FORMAT:
            raise InvalidInput(f"{source} is not a coopctl export: 'format' is {header.get('format')!r}, expected {FORMAT!r}")
        version = header.get("version")
        if type(version) is not int or version != VERSION:
            raise InvalidInput(f"{source}: unsupported export version {version!r}; this coopctl reads version {VERSION}")
        self.exported_at = _instant(header, "exported_at", source)
        if "orders" in header:  # present but not an array (an array is streamed, never kept here)
            from coopctl.exchange import _kind

            raise InvalidInput(f"{source}: 'orders' must be an array, got {_kind(header['orders'])}")
        if "seal" in header and self.seal is None:  # SPEC section 6: shape checked here, signature and proofs by `verify`
            from coopctl.seal import head_from_json

            self.seal = head_from_json(header["seal"], source)

    def finish(self) -> None:
        """The checks that needed the whole file: the header (when it came after the orders) and
        `exported_at` against the file's last event."""
        if self.finished:
            return
        if not self.fast:
            self._check_header()
            self._check_dated()
        elif "seal" in self.header and self.seal is None:
            from coopctl.seal import head_from_json

            self.seal = head_from_json(self.header["seal"], self.source)
        self.finished = True


def open_export(raw: BinaryIO, source: str, *, size: int | None = None, want_seal: bool = False) -> ExportStream:
    """Read an export's header from `raw` (a binary stream) and get ready to stream its orders."""
    scanned = _Scanned(raw, source)
    scanned.recording = []
    events = ijson.parse(scanned, buf_size=BUFFER, use_float=False)
    header: dict = {}
    in_orders = False
    try:
        try:
            first = next(events)
        except StopIteration:  # pragma: no cover - yajl raises on an empty document
            raise InvalidInput(f"{source} is not a coopctl export: it is empty") from None
        if first[1] != "start_map":
            _value(first, events)
            for _ in events:  # trailing garbage is "not JSON", as before
                pass
            raise InvalidInput(f"{source} is not a coopctl export: expected a JSON object, got {_kind_of_event(first[1])}")
        for prefix, event, value in events:
            if prefix == "" and event == "map_key":
                following = next(events)
                if value == "orders" and following[1] == "start_array":
                    in_orders = True
                    break
                header[value] = _plain_deep(_value(following, events), source, value)
            elif prefix == "" and event == "end_map":
                for _ in events:
                    pass
                break
    except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
        raise _json_error(source, exc, scanned) from None
    fast = in_orders and all(key in header for key in ("format", "version", "exported_at"))
    if not in_orders:
        stream = ExportStream(source, scanned, header, True, None, size, want_seal)
        scanned.recording = None
        if "orders" not in header:
            stream._check_header()
            raise InvalidInput(f"{source}: 'orders' must be an array, got null")
        return stream
    if not fast:
        scanned.recording = None
    return ExportStream(source, scanned, header, fast, None if fast else events, size, want_seal)


def open_path(path: str, *, want_seal: bool = False):
    """`open_export` of a file (its size known when it is a regular file); the handle is the
    caller's to close (`stream.scanned.raw`)."""
    try:
        handle = open(path, "rb")
    except IsADirectoryError:
        raise InvalidInput(f"{path!r} is a directory, not an export file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path!r}: {exc.strerror}") from None
    try:
        mode = os.fstat(handle.fileno())
        size = mode.st_size if stat.S_ISREG(mode.st_mode) else None
        return open_export(handle, path, size=size, want_seal=want_seal)
    except BaseException:
        handle.close()
        raise


def open_source(file: str, *, want_seal: bool = False) -> ExportStream:
    """The command line's FILE argument: a path, or - for stdin."""
    if file == "-":
        return open_export(sys.stdin.buffer, "stdin", want_seal=want_seal)
    return open_path(file, want_seal=want_seal)
