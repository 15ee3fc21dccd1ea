"""The one printer of tables (SPEC section 4, "Tables fit" and "Formats").

A table is a `TableSpec`: columns, each with a name, a kind, a priority and a justification, and
how its cell is read from a record. Only this module knows widths: it measures every cell in
display cells (`rich.cells.cell_len`: a Chinese character is two), and fits a table to the width
by the rules of section 4:

- the width is the terminal's (or COLUMNS when set) on a terminal; piped, COLUMNS when set and no
  limit otherwise; `--wide` lifts every limit;
- to fit, the least important columns are dropped first (the highest `priority` number first;
  priority 0 is never dropped): as many as needed for the rest to fit with free text at its
  shortest (TEXT_MIN cells, or its header), no more; then free text (kind `text`: notes, reasons,
  texts, policies) is shortened with `…` to the room left;
- ids, statuses, instants and numbers are never cut; each record is one line, except an id too
  wide for the whole width, which wraps (folds) inside its column;
- on a terminal the table is drawn by rich (a header rule, colours unless NO_COLOR); piped it is
  plain text: the header first, one line per record, two spaces between columns, no rule, no
  trailing spaces, no blank lines.

Cells are escaped (`trust.shown`) before they are measured, so widths are those of what is shown.

Machine formats (`json`, `jsonl`, `csv`, `tsv`) stream: records are written as they come from an
iterator, in chunks, so memory does not grow with their number. JSON goes through
`render.json_text` / `trust.json_escaped`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from coopctl.trust import UNSAFE, json_escaped, shown, u_escape

ID, STATUS, INSTANT, NUMBER, TEXT = "id", "status", "instant", "number", "text"
KINDS = (ID, STATUS, INSTANT, NUMBER, TEXT)
FORMATS = ("table", "json", "jsonl", "csv", "tsv")
SEP = 2  # cells between two columns (piped: two spaces; on a terminal: rich's padding and rule gap)
TEXT_MIN = 20  # the shortest a free-text column gets before columns are dropped for it
TEXT_FLOOR = 2  # ... and the shortest at all, when even the columns that stay leave no room
ID_FLOOR = 4  # an id folded to fit is never narrower than this
CHUNK = 500  # records per write when streaming


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    priority: int  # 0: never dropped; otherwise the higher, the sooner it is dropped
    get: Callable[[Any, Any], Any]  # (record, context) -> the cell (str, number or None)
    justify: str = "left"
    style: Callable[[str], str] | None = None  # cell text -> rich style, on a terminal
    yields: bool = False  # free text dropped, rather than kept, when keeping it cuts a more important free text

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind


@dataclass(frozen=True)
class TableSpec:
    columns: tuple[Column, ...]
    name: str = ""  # which table this is (the README names its order of importance)
    wide_only: frozenset[str] = field(default_factory=frozenset)  # columns shown only with --wide

    def order_of_importance(self) -> list[str]:
        return [c.name for c in sorted(self.columns, key=lambda c: c.priority)]


def cell_len(text: str) -> int:
    if text.isascii():
        return len(text)
    from rich.cells import cell_len as measure

    return measure(text)


# --------------------------------------------------------------------------- width


def output_width(stream=None) -> int | None:
    """The width a table must fit: COLUMNS when set (a positive number), else the terminal's when
    `stream` is one, else None (piped: no limit)."""
    stream = sys.stdout if stream is None else stream
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if is_terminal(stream):
        try:
            return os.get_terminal_size(stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80
    return None


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- fitting


INSTANT_IN_TEXT = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` display cells, ending with `…` when cut; never inside an instant
    that the text quotes (the cut moves before it)."""
    if cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    from rich.cells import get_character_cell_size

    room, cut = width - 1, 0
    for ch in text:
        size = get_character_cell_size(ch)
        if size > room:
            break
        cut += 1
        room -= size
    for match in INSTANT_IN_TEXT.finditer(text, max(cut - 40, 0)):
        if match.start() < cut < match.end():
            cut = match.start()
            break
    return text[:cut] + "…"


def wrapped(line: str, width: int | None) -> list[str]:
    """A one-line report fitted to the width: broken after `;` or `,` (continuations indented by
    two spaces), a piece wider than the whole width folded. Unchanged when it fits."""
    if width is None or cell_len(line) <= width:
        return [line]
    pieces = re.findall(r"[^;,]*[;,]?\s*", line)
    lines, current = [], ""
    for piece in (p for p in pieces if p):
        candidate = current + piece
        if current and cell_len(candidate.rstrip()) > width:
            lines.append(current.rstrip())
            current = "  " + piece
        else:
            current = candidate
    if current.strip():
        lines.append(current.rstrip())
    return [part for text in lines for part in fold(text, width)]


def fold(text: str, width: int) -> list[str]:
    """An id too wide for its column, as lines of at most `width` cells."""
    if cell_len(text) <= width:
        return [text]
    from rich.cells import chop_cells

    return chop_cells(text, max(width, 2))


@dataclass
class Layout:
    columns: list[Column]  # those shown, in the spec's order
    widths: list[int]
    natural: list[int]
    kept: list[int]  # their places among the columns the cells were made for

    def total(self) -> int:
        return sum(self.widths) + SEP * max(len(self.widths) - 1, 0)


def fit(columns: Sequence[Column], headers: list[str], rows: list[list[str]], width: int | None, wide: bool) -> Layout:
    """Which columns to show and how wide, for rows of escaped cells (SPEC section 4)."""
    natural = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    keep = list(range(len(columns)))
    if wide or width is None:
        return Layout([columns[i] for i in keep], [natural[i] for i in keep], [natural[i] for i in keep], keep)

    def least(i: int) -> int:
        if columns[i].kind != TEXT:
            return natural[i]
        return min(natural[i], max(cell_len(headers[i]), TEXT_MIN))

    def total(indices, size) -> int:
        return sum(size(i) for i in indices) + SEP * max(len(indices) - 1, 0)

    droppable = sorted((i for i in keep if columns[i].priority > 0), key=lambda i: (-columns[i].priority, -i))
    while total(keep, least) > width and droppable:
        keep.remove(droppable.pop(0))
    widths = _widths(columns, keep, natural, least, width, total)
    while True:  # a column that yields goes when a more important free text is cut while it stays
        cut = [i for i in keep if columns[i].kind == TEXT and widths[i] < natural[i]]
        yielding = [i for i in keep if columns[i].yields and any(columns[c].priority < columns[i].priority for c in cut)]
        if not yielding:
            break
        keep.remove(max(yielding, key=lambda i: (columns[i].priority, i)))
        widths = _widths(columns, keep, natural, least, width, total)
    return Layout([columns[i] for i in keep], [widths[i] for i in keep], [natural[i] for i in keep], keep)


def _widths(columns: Sequence[Column], keep: list[int], natural: list[int], least, width: int, total) -> dict[int, int]:
    """The width of each kept column: each at its least, then the room left to free text (the
    most important first); still too wide, free text down to its floor, then an id folded."""
    widths = {i: least(i) for i in keep}
    spare = width - total(keep, widths.__getitem__)
    texts = sorted((i for i in keep if columns[i].kind == TEXT), key=lambda i: (columns[i].priority, i))
    for i in texts:  # room left goes to free text, the most important first
        if spare <= 0:
            break
        grow = min(spare, natural[i] - widths[i])
        widths[i] += grow
        spare -= grow
    for i in texts:  # still too wide: free text down to its floor
        if spare >= 0:
            break
        cut = min(-spare, widths[i] - min(TEXT_FLOOR, natural[i]))
        widths[i] -= cut
        spare += cut
    while spare < 0:  # the one exception: an id too wide for the whole width folds
        ids = [i for i in keep if columns[i].kind == ID and widths[i] > ID_FLOOR]
        if not ids:
            break
        widest = max(ids, key=lambda i: widths[i])
        others = [widths[i] for i in ids if i != widest]
        target = max(ID_FLOOR, widths[widest] + spare, max(others, default=0))
        if target >= widths[widest]:
            target = widths[widest] - 1
        spare += widths[widest] - target
        widths[widest] = target
    return widths


def escaped_cells(spec: TableSpec, records: Iterable[Any], wide: bool, context=None) -> tuple[list[Column], list[str], list[list[str]]]:
    columns = [c for c in spec.columns if wide or c.name not in spec.wide_only]
    headers = [shown(c.name) for c in columns]
    rows = [[_cell(c.get(r, context)) for c in columns] for r in records]
    return columns, headers, rows


def _cell(value) -> str:
    if value is None:
        return "—"
    return shown(value if isinstance(value, str) else str(value))


def _lines_of(layout: Layout, row: list[str]) -> list[list[str]]:
    """A record's cells fitted to the layout: text shortened, a too-wide id folded."""
    cells = []
    for column, width, natural, text in zip(layout.columns, layout.widths, layout.natural, row):
        if column.kind == TEXT:
            cells.append([shorten(text, width)])
        elif column.kind == ID and width < natural:
            cells.append(fold(text, width))
        else:
            cells.append([text])
    height = max((len(c) for c in cells), default=1)
    return [[c[k] if k < len(c) else "" for c in cells] for k in range(height)]


def _pad(text: str, width: int, justify: str) -> str:
    gap = width - cell_len(text)
    if gap <= 0:
        return text
    return " " * gap + text if justify == "right" else text + " " * gap


def plain_lines(layout: Layout, headers: list[str], rows: list[list[str]], *, header: bool = True) -> Iterable[str]:
    """Piped: the header, then one line per record (a folded id adds lines); no rule, no
    trailing spaces."""
    widths, justify = layout.widths, [c.justify for c in layout.columns]
    if header:
        yield (" " * SEP).join(_pad(h, w, j) for h, w, j in zip(_shown_headers(layout, headers), widths, justify)).rstrip()
    for row in rows:
        for line in _lines_of(layout, _project(layout, row)):
            yield (" " * SEP).join(_pad(t, w, j) for t, w, j in zip(line, widths, justify)).rstrip()


# the layout knows which of the spec's columns it kept; headers and rows are given for every
# column of the spec (after wide_only), so they are projected onto the kept ones
def _project(layout: Layout, row: list[str]) -> list[str]:
    return [row[k] for k in layout.kept]


def _shown_headers(layout: Layout, headers: list[str]) -> list[str]:
    return [headers[k] for k in layout.kept]


def layout_for(spec: TableSpec, records: Iterable[Any], *, width: int | None, wide: bool, context=None, stream=None):
    """(layout, headers, rows) for the records: every cell escaped, the layout fitted. On a
    stream that cannot encode every character (PYTHONIOENCODING=ascii), cells are measured as
    the stream will write them (`\\uXXXX` escapes), so that columns stay aligned."""
    columns, headers, rows = escaped_cells(spec, records, wide, context)
    if stream is not None and not _unicode_ok(stream):
        encoding = stream.encoding or "ascii"
        errors = getattr(stream, "errors", None) or "backslashreplace"
        try:
            "\u5546".encode(encoding, errors)
        except (LookupError, UnicodeError):
            errors = "backslashreplace"

        def written(text: str) -> str:
            return text if text.isascii() else text.encode(encoding, errors).decode(encoding)

        headers = [written(h) for h in headers]
        rows = [[written(cell) for cell in row] for row in rows]
    return fit(columns, headers, rows, width, wide), headers, rows


def rich_table(layout: Layout, headers: list[str], rows: list[list[str]], *, title: str | None = None, table_factory=None):
    """On a terminal: the fitted table for rich, every column at its width."""
    from rich import box
    from rich.text import Text

    table = table_factory(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, pad_edge=False,
                          padding=(0, 1, 0, 0), collapse_padding=True)
    for column, width, natural, name in zip(layout.columns, layout.widths, layout.natural, _shown_headers(layout, headers)):
        folds = column.kind == ID and width < natural
        table.add_column(name, justify=column.justify, width=width, no_wrap=not folds, overflow="fold" if folds else "crop")
    for row in rows:
        cells = []
        for column, width, text in zip(layout.columns, layout.widths, _project(layout, row)):
            if column.kind == TEXT:
                text = shorten(text, width)
            style = column.style(text) if column.style is not None else ""
            cells.append(Text(text, style=style) if style else text)
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------- machine formats


def _unicode_ok(stream) -> bool:
    import codecs

    try:
        return codecs.lookup(stream.encoding or "ascii").name.startswith("utf")
    except (AttributeError, LookupError, TypeError):
        return False


def _dumper(stream, indent: int | None, separators=None) -> Callable[[Any], str]:
    """JSON text of one value, as `json_text` writes it (`ensure_ascii` on a stream that cannot
    take UTF-8). One encoder for the whole listing: json.dumps with options builds a new one
    per call, which costs as much as encoding a record."""
    if _unicode_ok(stream):
        encode = json.JSONEncoder(ensure_ascii=False, indent=indent, separators=separators).encode
        return lambda value: _escaped(encode(value))
    return json.JSONEncoder(ensure_ascii=True, indent=indent, separators=separators).encode


def _ascii_json(text: str) -> str:
    """JSON text with every character beyond ASCII as a `\\uXXXX` escape (a surrogate pair
    above U+FFFF): what `ensure_ascii=True` writes. Such characters stand only inside strings."""
    if text.isascii():
        return text
    return "".join(ch if ch < "\x80" else _u_escape(ch) for ch in text)


_u_escape = u_escape  # the trust boundary's


def _escaped(text: str) -> str:
    """`json_escaped`, with a C-speed first look: every character it escapes is one that
    `str.isprintable` rejects (categories Cc, Cf, Cs, Zl, Zp), so printable text (the common
    case, Chinese included) is returned at once. A newline (the indentation of `json`) is
    looked past."""
    if text.isprintable() or ("\n" in text and text.replace("\n", "").isprintable()):
        return text
    return json_escaped(text)


def _chunks(records: Iterable[Any]) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _indented(stream) -> Callable[[Any], str]:
    """`json.dumps(value, indent=2)` (escaped as `_dumper` does), written without json's
    indenting encoder: that one is pure Python and leaves a cycle of closures behind per call,
    garbage that only the cycle collector frees (memory that grows with the records when it runs
    late). Scalars go through the C encoder."""
    scalar = json.JSONEncoder(ensure_ascii=not _unicode_ok(stream)).encode

    def pretty(value, indent: str) -> str:
        if isinstance(value, dict):
            if not value:
                return "{}"
            inner = indent + "  "
            return "{\n" + ",\n".join(f"{inner}{scalar(str(k) if not isinstance(k, str) else k)}: {pretty(v, inner)}"
                                      for k, v in value.items()) + "\n" + indent + "}"
        if isinstance(value, (list, tuple)):
            if not value:
                return "[]"
            inner = indent + "  "
            return "[\n" + ",\n".join(inner + pretty(v, inner) for v in value) + "\n" + indent + "]"
        return scalar(value)

    if _unicode_ok(stream):
        return lambda value: _escaped(pretty(value, ""))
    return lambda value: pretty(value, "")


def write_json(records: Iterable[dict], stream) -> int:
    """A JSON array, streamed: the same text as `json_text(list(records))` (indent 2)."""
    dump, count = _indented(stream), 0
    texts = getattr(records, "json_texts", None)
    if texts is not None:  # records that write their own indented JSON (render.order_records), escaped as made
        ascii_only = not _unicode_ok(stream)
        for chunk in _chunks(texts(None if ascii_only else json_escaped)):
            text = "".join(("[\n  " if count + k == 0 else ",\n  ") + t.replace("\n", "\n  ") for k, t in enumerate(chunk))
            stream.write(_ascii_json(text) if ascii_only else text)
            count += len(chunk)
        stream.write("[]\n" if count == 0 else "\n]\n")
        return count
    for chunk in _chunks(records):
        stream.write("".join(("[\n  " if count + k == 0 else ",\n  ") + dump(r).replace("\n", "\n  ") for k, r in enumerate(chunk)))
        count += len(chunk)
    stream.write("[]\n" if count == 0 else "\n]\n")
    return count


def utf8_bytes_writer(stream) -> Callable[[bytes], Any] | None:
    """A writer of UTF-8 bytes straight to `stream`'s byte buffer, when `stream` is a file's
    UTF-8 text layer (a process's stdout), after flushing what that layer holds; else None."""
    import codecs
    import io

    if not isinstance(stream, io.TextIOWrapper) or os.linesep != "\n":
        return None
    try:
        if codecs.lookup(stream.encoding).name != "utf-8":
            return None
    except LookupError:
        return None
    stream.flush()
    return stream.buffer.write


def _utf8_writer(stream) -> Callable[[str], Any]:
    """Writes text to a UTF-8 stream, encoded here and written to its byte buffer when it has one
    (the text layer's own encoding of large writes costs more than encoding them at once)."""
    write = utf8_bytes_writer(stream)
    if write is None:
        return stream.write
    errors = stream.errors or "strict"
    return lambda text: write(text.encode("utf-8", errors))


def write_jsonl(records: Iterable[dict], stream) -> int:
    """One compact JSON object per line. Records that can write their own JSON text
    (`json_lines()`, e.g. render.order_records) are written from it, escaped the same way."""
    dump, count = _dumper(stream, None, (",", ":")), 0
    lines = getattr(records, "json_lines", None)
    if lines is not None:  # escaped as they are made (only their free texts are looked at)
        ascii_only = not _unicode_ok(stream)
        write = stream.write if ascii_only else _utf8_writer(stream)
        for chunk in _chunks(lines(None if ascii_only else json_escaped)):
            text = "\n".join(chunk) + "\n"
            write(_ascii_json(text) if ascii_only else text)
            count += len(chunk)
        return count
    for chunk in _chunks(records):
        stream.write("".join(dump(r) + "\n" for r in chunk))
        count += len(chunk)
    return count


def flat(value, compact: Callable[[Any], str]) -> str:
    """A JSON field as one csv/tsv cell: null empty, arrays joined with `;`, objects as compact
    JSON, booleans as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ";".join(flat(v, compact) if not isinstance(v, (dict, list)) else compact(v) for v in value)
    if isinstance(value, dict):
        return compact(value)
    return str(value)


def tsv_escaped(text: str) -> str:
    """A tsv cell: backslash, tab, newline and carriage return as `\\\\`, `\\t`, `\\n`, `\\r` (as
    PostgreSQL's COPY text format writes them), so that every record is one line."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def tsv_unescaped(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def write_delimited(records: Iterable[dict], stream, fmt: str) -> int:
    """csv (quoting by the csv module) or tsv: a header of the first record's keys in its order,
    then one row per record. Control and format characters other than newline (csv, quoted) are
    written as `\\uXXXX`, as in JSON: nothing a terminal would act on."""
    import csv
    import io

    compact = _dumper(stream, None, (",", ":"))
    safe = csv_safe if _unicode_ok(stream) else (lambda s: csv_safe(s).encode("ascii", "backslashreplace").decode("ascii"))
    count, keys = 0, None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n") if fmt == "csv" else None
    made = getattr(records, "delimited", None)
    if made is not None:  # records that make their own cells (render.order_records): the header first
        for chunk in _chunks(made(compact)):
            for cells in chunk:
                _write_row(writer, buffer, [safe(c) for c in cells], fmt)
            stream.write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
            count += len(chunk)
        return max(count - 1, 0)
    for chunk in _chunks(records):
        for record in chunk:
            if keys is None:
                keys = list(record)
                _write_row(writer, buffer, [safe(k) for k in keys], fmt)
            _write_row(writer, buffer, [safe(flat(record.get(k), compact)) for k in keys], fmt)
        stream.write(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
        count += len(chunk)
    return count


def csv_safe(text: str) -> str:
    """A csv/tsv cell as it may reach a terminal: control and format characters as `\\uXXXX`
    (as in JSON), except the tab and the newline (csv quotes them; tsv escapes them first)."""
    if text.isprintable():
        return text
    # not `json_escaped`, which leaves ASCII text as it is (in JSON, json.dumps has already
    # escaped the C0 controls; a cell is raw text, where an ESC would reach the terminal)
    return _CELL_UNSAFE.sub(_u_escaped, text)


# trust.UNSAFE but for the tab and the carriage return, which a cell keeps (csv quotes them, tsv
# writes them as \t and \r), as it keeps the newline
_CELL_UNSAFE = re.compile(UNSAFE.pattern.replace("\x00-\x09\x0b-\x1f", "\x00-\x08\x0b\x0c\x0e-\x1f", 1))


def _u_escaped(match: re.Match) -> str:
    return u_escape(match.group())


def _write_row(writer, buffer, cells: list[str], fmt: str) -> None:
    if fmt == "csv":
        writer.writerow(cells)
    else:
        buffer.write("\t".join(tsv_escaped(c) for c in cells) + "\n")
