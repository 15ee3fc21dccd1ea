"""Rich tables, panels, timelines and progress bars; JSON shapes that are not an order's own.

Data goes to stdout, messages to stderr. On a terminal rich draws colour; piped, the same
tables come out as plain text (no escape codes), and NO_COLOR turns colour off everywhere.

Nothing stored reaches a terminal raw (SPEC section 7): this module is the printer, and it alone
escapes. Every table is a `_table()` (its title, headers and cells, text or rich `Text`, are
escaped by `trust.shown` as they are added, so widths are measured on what is shown), every
console is a `_console()` (what it prints is escaped the same way, through groups and panels,
and a last pass escapes whatever text segment still holds a control or format character), and
one-line reports go through `_say`. JSON for stdout is `json_text`: the same JSON value, with
control, format and separator characters written as `\\uXXXX`.
"""

from __future__ import annotations

import functools
from itertools import chain
import json
import os
import sys
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Callable, Iterator

from coopctl.lifecycle import Event, Order, Outcome, Status
from coopctl.policy import InvalidValue, iso, local_text, parse_instant
from coopctl.trust import json_escaped, shown

if TYPE_CHECKING:  # rich is imported where output is drawn: a --json command never loads it
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

STATUS_STYLE = {
    Status.PENDING: "yellow",
    Status.EFFECTIVE: "cyan",
    Status.CANCEL_REQUESTED: "magenta",
    Status.LIVE: "bold cyan",
    Status.DELIVERED: "blue",
    Status.REVIEW_FAILED: "bold yellow",
    Status.COMPLETED: "green",
    Status.REJECTED: "dim",
    Status.WITHDRAWN: "dim",
    Status.EXPIRED: "dim",
    Status.CANCELLED: "dim",
    Status.CANCELLED_UNILATERALLY: "red",
    Status.CLOSED_OVERDUE: "red",
    Status.DISPUTED: "bold red",
}


def _console(stderr: bool = False, stream=None) -> Console:
    """A safe console on stdout (or stderr, or `stream`): on a terminal as wide as the terminal or
    COLUMNS (SPEC section 4); piped, as wide as COLUMNS, or without a practical limit (tables
    fitted by the printer never wait on it)."""
    from coopctl.printer import output_width

    stream = stream if stream is not None else sys.stderr if stderr else sys.stdout
    console = _rich()[1](
        file=stream,
        width=output_width(stream) or 100_000,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
        highlight=False,
        markup=False,  # ids, notes and reasons are shown as typed: "[bold]M[/bold]" is not markup here
        emoji=False,  # nor is ":smile:" an emoji (and not looking for codes in every cell draws tables faster)
        soft_wrap=False,
    )
    console.on_broken_pipe = _reader_gone
    return console


def _reader_gone() -> None:
    """Rich's answer to a closed pipe is SystemExit(1); here the BrokenPipeError goes on to the
    command line, which knows whether the command changed something (exit 6, rolled back) or only
    read (exit 0, quietly). Called while rich handles that error: a bare raise re-raises it."""
    raise


def _table(*args, **kwargs) -> Table:
    """A rich Table whose title, caption, headers and cells are escaped as they are given."""
    return _rich()[0](*args, **kwargs)


def _grid(**kwargs) -> Table:
    return _rich()[0].grid(**kwargs)


@functools.cache
def _rich():
    """(SafeTable, SafeConsole): rich's Table and Console, escaping what they are given. Built on
    first use, so that a command that prints no table never imports rich."""
    from rich.console import Console
    from rich.segment import Segment
    from rich.table import Table

    class SafeTable(Table):
        def __init__(self, *headers, title=None, caption=None, **kwargs):
            super().__init__(*map(_clean, headers), title=_clean(title), caption=_clean(caption), **kwargs)

        def add_column(self, header="", footer="", **kwargs) -> None:
            super().add_column(_clean(header), _clean(footer), **kwargs)

        def add_row(self, *renderables, **kwargs) -> None:
            super().add_row(*map(_clean, renderables), **kwargs)

    class SafeConsole(Console):
        def print(self, *objects, **kwargs) -> None:
            super().print(*map(_clean, objects), **kwargs)

        def _render_buffer(self, buffer) -> str:
            # the last line of defence: text that reached the output without passing _clean
            # (alignment aside, it is still shown escaped); rich's own control codes stay as they are
            return super()._render_buffer(
                segment if segment.control or _is_plain(segment.text)
                else Segment(shown(segment.text, keep_newlines=True), segment.style, segment.control)
                for segment in buffer
            )

    return SafeTable, SafeConsole


def _is_plain(text: str) -> bool:
    """Whether `shown` leaves a text as it is (newlines aside): the common case, checked fast."""
    if text.isascii() and text.isprintable():
        return True
    return shown(text, keep_newlines=True) == text


def _clean(value):
    """A value about to be laid out: text escaped; rich Text escaped keeping its styles; groups
    and panels cleaned through; anything else (a SafeTable, already clean) as it is."""
    if value is None or value.__class__ is str:
        return None if value is None else shown(value)
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    if isinstance(value, str):
        return shown(value)
    if isinstance(value, Text):
        return _clean_text(value)
    if isinstance(value, Group):
        return Group(*map(_clean, value.renderables), fit=value.fit)
    if isinstance(value, Panel):
        value.title, value.subtitle = _clean(value.title), _clean(value.subtitle)
        value.renderable = _clean(value.renderable)
    return value


def _clean_text(text: Text) -> Text:
    """A rich Text with its characters escaped and every style kept on what it covered."""
    from rich.text import Span, Text

    plain = text.plain
    if shown(plain) == plain:
        return text
    cuts = sorted({0, len(plain), *(i for span in text.spans for i in (span.start, span.end))})
    result = text.blank_copy()
    for start, end in zip(cuts, cuts[1:]):
        piece = shown(plain[start:end])
        styles = [span.style for span in text.spans if span.start <= start and end <= span.end]
        result.append_text(Text(piece, spans=[Span(0, len(piece), style) for style in styles]))
    return result


def json_text(value, *, indent: int | None = 2) -> str:
    """JSON for stdout: `json.dumps` with UTF-8 kept as is, except that control, format and
    separator characters (ESC, C1 controls such as U+009B, bidirectional overrides, zero-width
    characters, U+2028) are written as `\\uXXXX` escapes: the same JSON value for a program,
    nothing a terminal would act on for a person reading it. Ordinary text comes out exactly as
    `json.dumps(value, ensure_ascii=False)` writes it."""
    return json_escaped(json.dumps(value, ensure_ascii=False, indent=indent))




def when(instant: int | None, tz: tzinfo) -> str:
    """An instant for a table: `2026-12-01 20:00:00` in the display zone; with the offset
    (`2026-11-01 01:30:00-04:00`) in a zone whose offset changes (daylight saving), where a wall
    time alone can name two instants. Never raises: a stored value beyond 9999 shows as `+10000-…`."""
    if instant is None:
        return "—"
    return local_text(instant, tz, sep=" ", offset=_offset_varies(tz))


@functools.lru_cache(maxsize=16)
def _offset_varies(tz: tzinfo) -> bool:
    """Whether the zone's UTC offset is not constant from 2000 on (daylight saving, or a change of
    standard time): four samples a year to 2100 (any daylight-saving season spans one of them).
    Asia/Shanghai (daylight saving only in 1986-1991) and UTC are constant: no offsets shown."""
    if isinstance(tz, timezone):
        return False
    offsets = set()
    for year in range(2000, 2101):
        for month in (1, 4, 7, 10):
            offsets.add(datetime(year, month, 1, 12, tzinfo=tz).utcoffset())
            if len(offsets) > 1:
                return True
    return False


def _status(status: Status | str) -> Text:
    from rich.text import Text

    return Text(str(status), style=STATUS_STYLE.get(Status(status), ""))


def _tz_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", tz))


# --------------------------------------------------------------------------- orders


def _say(*lines: str) -> None:
    """One-line reports (an action done, a tick, a file written) are plain text, on a terminal as
    when piped: there is nothing to draw, so rich is not even loaded for them. Each line is
    escaped (an id or a kind read from the database is shown, never obeyed) and stays one line
    unless it is wider than the width (SPEC section 4): then it breaks after `;` or `,`."""
    from coopctl.printer import output_width, wrapped

    width = output_width(sys.stdout)
    sys.stdout.write("".join(f"{part}\n" for line in lines for part in wrapped(shown(line), width)))


def order_created(order: Order, tz: tzinfo, created: bool) -> None:
    verb = "created" if created else "already exists"
    _say(f"order {order.id} {verb}: {order.status}, {order.at_deadline or ''} at {when(order.deadline, tz)}".rstrip())


def action_done(outcome: Outcome, tz: tzinfo) -> None:
    order = outcome.order
    lines = [f"order {order.id}: {e.kind} at {when(e.at, tz)} by {e.actor}" for e in outcome.events]
    line = f"order {order.id} is now {order.status} (terms {order.terms_state})"
    if order.deadline is not None:
        line += f"; next deadline {when(order.deadline, tz)}: {order.at_deadline}"
    if order.liable_party is not None:
        line += f"; liable: {order.liable_party}"
    _say(*lines, line)


# --------------------------------------------------------------------------- the printer's tables
#
# Every table is a printer.TableSpec; `print_table` fits it to the width (SPEC section 4) and draws
# it with rich on a terminal, as plain lines when piped. Views made of parts (`show`, `demo`,
# `replay`, ...) print their parts with `_parts`: single blank lines between them.


class Context:
    """What a table's cells are made with: the display zone, the clock, and --wide."""

    __slots__ = ("tz", "now", "wide")

    def __init__(self, tz: tzinfo, now: int | None = None, wide: bool = False):
        self.tz, self.now, self.wide = tz, _clock() if now is None else now, wide


def _clock() -> int:
    from coopctl.policy import to_instant

    return to_instant(datetime.now(timezone.utc))


def _instant_of(value, tz: tzinfo) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_instant(value, tz)
    except (InvalidValue, TypeError):
        return None


def relative(instant: int | None, now: int) -> str | None:
    """A deadline as a person reads it beside the instant: `in 2d 3h`, `overdue 10d`, `in 45m`."""
    if instant is None:
        return None
    delta = instant - now
    if delta == 0:
        return "due now"
    span = _span(abs(delta))
    return f"in {span}" if delta > 0 else f"overdue {span}"


def _span(micros: int) -> str:
    seconds = micros // 1_000_000
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    for big, big_unit, small, small_unit in ((days, "d", hours, "h"), (hours, "h", minutes, "m")):
        if big:
            return f"{big}{big_unit} {small}{small_unit}" if small else f"{big}{big_unit}"
    return f"{minutes}m" if minutes else "<1m"


def _style_of_status(text: str) -> str:
    try:
        return STATUS_STYLE.get(Status(text), "")
    except ValueError:
        return ""


def _col(name, kind, priority, get, justify="left", style=None, yields=False):
    from coopctl.printer import Column

    return Column(name, kind, priority, get, justify, style, yields)


def _spec(name: str, *columns, wide_only=()):
    from coopctl.printer import TableSpec

    return TableSpec(tuple(columns), name, frozenset(wide_only))


def _when_field(key):
    return lambda r, c: when(_instant_of(r.get(key), c.tz), c.tz) if r.get(key) is not None else None


def _order_table():
    """`list` and `demo`: rows are `Order.to_json(tz)` dicts (what the machine formats print)."""
    return _spec(
        "orders",
        _col("id", "id", 0, lambda r, c: r["id"], "right"),
        _col("status", "status", 0, lambda r, c: r["status"], style=_style_of_status),
        _col("deadline", "instant", 1, _when_field("deadline")),
        _col("due", "instant", 2, lambda r, c: relative(_instant_of(r.get("deadline"), c.tz), c.now)),
        _col("merchant", "id", 3, lambda r, c: r["merchant"]),
        _col("then", "text", 4, lambda r, c: r.get("at_deadline")),
        _col("creator", "id", 5, lambda r, c: r["creator"]),
        _col("terms", "status", 6, lambda r, c: r.get("terms")),
        _col("liable", "status", 7, lambda r, c: r.get("liable_party")),
        _col("commission", "number", 8, lambda r, c: f"{r['commission_pct']}%", "right"),
        _col("form", "status", 9, lambda r, c: r.get("form")),
        _col("created", "instant", 10, _when_field("created_at")),
        _col("products", "id", 11, lambda r, c: ", ".join(r.get("products") or ())),
        _col("note", "text", 12, lambda r, c: r.get("note")),
    )


def _notification_table():
    """`notifications`: rows are `notification_json` dicts. What goes first at 80 columns: the
    delivery details (last error, sent, next attempt, attempts, channel), then the kind (the text
    says it too), then the recipient; id, order, state and instant stay, and the text fills what
    is left (shortened with `…`)."""
    return _spec(
        "notifications",
        _col("id", "id", 0, lambda r, c: r["id"], "right"),
        _col("order", "id", 0, lambda r, c: r["order"], "right"),
        _col("state", "status", 0, lambda r, c: r["state"]),
        _col("at", "instant", 1, _when_field("at")),
        _col("text", "text", 2, lambda r, c: r["text"]),
        _col("recipient", "id", 3, lambda r, c: r["recipient"]),
        _col("kind", "status", 4, lambda r, c: r["kind"]),
        _col("channel", "status", 5, lambda r, c: r["channel"]),
        _col("attempts", "number", 6, lambda r, c: r["attempts"], "right"),
        _col("next attempt", "instant", 7, _when_field("next_attempt_at")),
        _col("sent", "instant", 8, _when_field("sent_at")),
        _col("last error", "text", 9, lambda r, c: r["last_error"]),
    )


def _history_table():
    """`history`: rows are `Event.to_json(tz)` dicts."""
    return _spec(
        "history",
        _col("seq", "number", 0, lambda r, c: r["seq"], "right"),
        _col("at", "instant", 0, _when_field("at")),
        _col("kind", "status", 0, lambda r, c: r["kind"]),
        _col("actor", "id", 1, lambda r, c: r["actor"]),
        _col("data", "text", 2, lambda r, c: _details_of(r["kind"], r.get("data"), c.tz)),
        _col("operator", "id", 3, lambda r, c: r["operator"]),
        _col("hash", "id", 4, lambda r, c: r["hash"] if c.wide else r["hash"][:16]),
    )


def _timeline_table():
    """`show`, `replay` and what-if timelines: rows are (Event, state after or None) pairs, or a
    dict for the line of the next deadline."""
    def pick(event_value, next_value=None):
        return lambda r, c: next_value(r, c) if isinstance(r, dict) else event_value(r, c)

    return _spec(
        "timeline",
        _col("seq", "number", 0, pick(lambda r, c: r[0].seq, lambda r, c: ""), "right"),
        _col("at", "instant", 0, pick(lambda r, c: when(r[0].at, c.tz), lambda r, c: when(r["at"], c.tz))),
        _col("event", "status", 0, pick(lambda r, c: r[0].kind, lambda r, c: "next deadline")),
        _col("state after", "status", 1, pick(lambda r, c: r[1].status if r[1] else "", lambda r, c: relative(r["at"], c.now)),
             style=_style_of_status),
        _col("actor", "id", 2, pick(lambda r, c: r[0].actor, lambda r, c: "system")),
        _col("details", "text", 3, pick(lambda r, c: _details(r[0], c.tz), lambda r, c: f"then: {r['then']}")),
        _col("deadline then", "instant", 4, pick(lambda r, c: (when(r[1].deadline, c.tz) if r[1].deadline else "—") if r[1] else "",
                                                  lambda r, c: "")),
        _col("operator", "id", 5, pick(lambda r, c: r[0].operator, lambda r, c: "")),
    )


ORDER_TABLE = _order_table()
NOTIFICATION_TABLE = _notification_table()
HISTORY_TABLE = _history_table()
TIMELINE_TABLE = _timeline_table()


def _details(e: Event, tz: tzinfo) -> str:
    return _details_of(e.kind, e.data, tz)


def _details_of(kind: str, data, tz: tzinfo) -> str:
    if kind == "created":
        terms = data.get("terms", {}) if isinstance(data, dict) else {}
        latest = terms.get("latest_start_at", "")
        try:
            latest = when(parse_instant(latest, tz), tz)
        except (InvalidValue, TypeError):
            pass
        return f"latest start {latest}, commission {terms.get('commission_pct', '?')}%"
    if not isinstance(data, dict):
        return "" if data is None else str(data)
    return ", ".join(_detail(k, v) for k, v in data.items())


def _detail(key: str, value) -> str:
    """One item of an event's data in a timeline; evidence files by their names (`coopctl evidence` lists them whole)."""
    if key == "evidence_files" and isinstance(value, list):
        names = [str(f.get("name", "?")) if isinstance(f, dict) else "?" for f in value]
        return f"evidence files: {', '.join(names)}"
    return f"{key}={value}"


def print_table(spec, records, *, tz: tzinfo, wide: bool = False, title: str | None = None, now: int | None = None,
                stream=None, context: Context | None = None) -> int:
    """Fit and print one table (SPEC section 4). On a terminal: rich, with its title; piped: the
    header first, one line per record, no rule, no trailing spaces (and no title: a list's first
    line is its header; a view gives its parts' titles as lines of their own)."""
    from coopctl import printer

    stream = sys.stdout if stream is None else stream
    context = context or Context(tz, now, wide)
    layout, headers, rows = printer.layout_for(spec, records, width=printer.output_width(stream), wide=wide, context=context,
                                               stream=stream)
    if printer.is_terminal(stream):
        console = _console(stream=stream)
        console.print(printer.rich_table(layout, headers, rows, title=title, table_factory=_table))
    else:
        if title is not None and _title_piped[0]:
            stream.write(_fit_line(title, stream, wide) + "\n")
        stream.write("".join(line + "\n" for line in printer.plain_lines(layout, headers, rows)))
    return len(rows)


_title_piped = [False]  # set while a view prints its parts: a part's title is a line of its own


def _fit_line(text: str, stream, wide: bool) -> str:
    """A line of a view (a title, a remark): escaped, and shortened with `…` to the width when
    there is one (free text)."""
    from coopctl import printer

    text = shown(text)
    width = None if wide else printer.output_width(stream)
    return text if width is None else printer.shorten(text, width)


@contextmanager
def _parts(stream=None):
    """A view made of parts: yields `part(callable)`, which prints its part after a single blank
    line (none before the first). Piped, each table's title is printed as its first line."""
    stream = sys.stdout if stream is None else stream
    first = [True]

    def part(draw: Callable[[], None]) -> None:
        if not first[0]:
            stream.write("\n")
        first[0] = False
        draw()

    saved = _title_piped[0]
    _title_piped[0] = True
    try:
        yield part
    finally:
        _title_piped[0] = saved


def view(stream=None):
    """For a view made of parts (`board`, `config`, `show`, `demo`): `with render.view() as part:
    part(lambda: render.print_table(SPEC, rows, tz=tz, title="…")); part(lambda: render.line("…"))`
    prints the parts with single blank lines between them (piped, each table's title on its own
    line before its header)."""
    return _parts(stream)


def line(text: str, *, wide: bool = False, style: str = "", stream=None) -> None:
    """One line of a view (a remark, a total): escaped, shortened with `…` to the width."""
    _line(text, wide=wide, style=style, stream=stream)


def _line(text: str, *, wide: bool = False, style: str = "", stream=None) -> None:
    from coopctl import printer

    stream = sys.stdout if stream is None else stream
    if printer.is_terminal(stream):
        from rich.text import Text

        width = None if wide else printer.output_width(stream)
        shown_text = shown(text)
        _console(stream=stream).print(Text(shown_text if width is None else printer.shorten(shown_text, width), style=style))
    else:
        stream.write(_fit_line(text, stream, wide).rstrip() + "\n")


def _footer(text: str | None, stream) -> None:
    """A list's footer: its last line on a terminal; on stderr when piped (stdout holds only the
    header and the rows)."""
    if text is None:
        return
    from coopctl import printer

    if printer.is_terminal(stream):
        _line(text, stream=stream)
    else:
        sys.stderr.write(shown(text) + "\n")
        sys.stderr.flush()


def print_records(records, *, fmt: str, table, tz: tzinfo, wide: bool, footer: str | None = None, stream=None,
                  now: int | None = None, title: str | None = None) -> int:
    """The one way a list is printed (SPEC section 4, "Formats"): `records` are JSON dicts (an
    iterator: machine formats stream it in chunks, memory flat in its length); `table` the
    TableSpec for `fmt == "table"` (whose cells are made from those dicts). `footer` (table
    only) is the last line on a terminal, on stderr when piped. Returns how many were printed.
    `stream` None is sys.stdout (read at call time); `now` None is the clock (relative times)."""
    from coopctl import printer

    stream = sys.stdout if stream is None else stream
    if fmt == "json":
        return printer.write_json(records, stream)
    if fmt == "jsonl":
        return printer.write_jsonl(records, stream)
    if fmt in ("csv", "tsv"):
        return printer.write_delimited(records, stream, fmt)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    count = print_table(table, list(records), tz=tz, wide=wide, title=title, now=now, stream=stream)
    _footer(footer, stream)
    return count


def _terms_fields(order: Order, tz: tzinfo, now: int) -> list[tuple[str, str, str, str]]:
    """The show panel: (label, value, kind, style)."""
    t = order.terms
    deadline = "—"
    if order.deadline is not None:
        deadline = f"{when(order.deadline, tz)} ({relative(order.deadline, now)})"
    rows = [
        ("merchant", t.merchant, "id", ""),
        ("creator", t.creator, "id", ""),
        ("products", ", ".join(t.products), "id", ""),
        ("form", t.form, "status", ""),
        ("commission", f"{t.commission_pct}%", "number", ""),
        ("ad budget", f"¥{t.ad_budget}", "number", ""),
        ("latest start", when(t.latest_start_at, tz), "instant", ""),
        ("note", t.note or "—", "text", ""),
        ("status", str(order.status), "status", STATUS_STYLE.get(order.status, "")),
        ("terms", str(order.terms_state), "status", ""),
        ("liable party", str(order.liable_party) if order.liable_party else "—", "status", ""),
        ("deadline", deadline, "instant", ""),
        ("then", order.at_deadline or "—", "text", ""),
        ("failed reviews", str(order.failed_reviews), "number", ""),
        ("policy", ", ".join(f"{k}={v}" for k, v in order.policy.to_json().items()), "text", ""),
    ]
    rows[-1:-1] = _dispute_fields(order, tz)
    if order.cancel_requested_by is not None:
        rows.insert(11, ("cancel requested by", str(order.cancel_requested_by), "status", ""))
    if order.delivered_at is not None:
        rows.insert(11, ("delivered", f"{when(order.delivered_at, tz)} ({order.delivery_mode})", "instant", ""))
    if order.went_live_at is not None:
        rows.insert(11, ("went live", when(order.went_live_at, tz), "instant", ""))
    return rows


def _dispute_fields(order: Order, tz: tzinfo) -> list[tuple[str, str, str, str]]:
    """The show panel's lines of extensions and disputes, for an order that has any."""
    from coopctl.lifecycle import ruling_words

    rows = []
    if order.extensions:
        rows.append(("extensions", f"{order.extensions} of {order.policy.max_extensions}", "number", ""))
    if order.proposed_latest_start_at is not None:
        rows.append((
            "proposed latest start", f"{when(order.proposed_latest_start_at, tz)} (by the {order.extension_requested_by})",
            "instant", "",
        ))
    if order.disputed_by is not None:
        rows.append(("disputed by", str(order.disputed_by), "status", ""))
    if order.appeals:
        rows.append(("appeals", f"{order.appeals} of {order.policy.max_appeals}", "number", ""))
    if order.ruling is not None:
        r = order.ruling
        final = "final" if r.final else "open to appeal"
        rows.append(("ruling", f"{ruling_words(r)} ({final}; {when(r.at, tz)}): {r.reason}", "text", ""))
    return rows


PANEL_FRAME = 4  # a panel's border and padding, left and right
PANEL_GAP = 2  # between a label and its value


def print_panel(title: str, fields: list[tuple[str, str, str, str]], *, subtitle: str | None = None, wide: bool = False,
                stream=None) -> None:
    """A record as labelled lines, fitted like a table: free text shortened, an id wider than the
    room left folds, nothing else cut. On a terminal a rich panel; piped, `title` then
    `label  value` lines."""
    from coopctl import printer

    stream = sys.stdout if stream is None else stream
    terminal = printer.is_terminal(stream)
    width = None if wide else printer.output_width(stream)
    labels = [shown(label) for label, *_ in fields]
    label_width = max(map(printer.cell_len, labels), default=0)
    room = None if width is None else max(width - label_width - PANEL_GAP - (PANEL_FRAME if terminal else 0), 8)
    values = []
    for (label, value, kind, style) in fields:
        text = shown(value)
        if room is not None and kind == "text":
            text = printer.shorten(text, room)
        values.append((text, kind, style))
    if not terminal:
        heading = title if subtitle is None else f"{title} ({subtitle})"
        stream.write(_fit_line(heading, stream, wide) + "\n")
        for label, (text, kind, _style) in zip(labels, values):
            lines = printer.fold(text, room) if room is not None and kind == "id" else [text]
            for k, piece in enumerate(lines):
                stream.write(((label if k == 0 else "").ljust(label_width) + " " * PANEL_GAP + piece).rstrip() + "\n")
        return
    from rich.panel import Panel
    from rich.text import Text

    grid = _grid(padding=(0, 0, 0, PANEL_GAP), pad_edge=False)
    grid.add_column(style="bold", no_wrap=True, width=label_width)
    value_width = max((printer.cell_len(text) for text, _, _ in values), default=1)
    if room is not None:
        value_width = min(value_width, room)
    grid.add_column(no_wrap=False, overflow="fold", width=value_width + PANEL_GAP)  # rich counts the padding in
    for label, (text, kind, style) in zip(labels, values):
        grid.add_row(label, Text(text, style=style) if style else text)
    _console(stream=stream).print(Panel(grid, title=title, subtitle=subtitle, expand=False, title_align="left"))


def _timeline_rows(order: Order | None, events: list[Event], states: list[Order] | None) -> list:
    rows: list = [(e, states[i] if states is not None and i < len(states) else None) for i, e in enumerate(events)]
    if order is not None and order.deadline is not None:
        rows.append({"at": order.deadline, "then": order.at_deadline or ""})
    return rows


def timeline(order: Order | None, events: list[Event], tz: tzinfo, states: list[Order] | None = None, *,
             title: str = "timeline", wide: bool = False, now: int | None = None) -> None:
    print_table(TIMELINE_TABLE, _timeline_rows(order, events, states), tz=tz, wide=wide, title=title, now=now)


def order_detail(order: Order, events: list[Event], tz: tzinfo, *, wide: bool = False, now: int | None = None) -> None:
    """`show`: the panel of the order, then its timeline (a view of two parts)."""
    from coopctl.history import Divergence, rebuild

    try:
        states = [step.order for step in rebuild(order.id, events, strict=False)]  # stored: legacy ids stay readable
    except Divergence:
        states = None
    now = _clock() if now is None else now
    with _parts() as part:
        part(lambda: print_panel(f"order {order.id}", _terms_fields(order, tz, now), subtitle=f"times in {_tz_name(tz)}", wide=wide))
        part(lambda: timeline(order, events, tz, states, wide=wide, now=now))


def history_table(order: Order, events: list[Event], tz: tzinfo, *, wide: bool = False, fmt: str = "table") -> int:
    """`history`: a list (its first line is the header when piped; the title only on a terminal)."""
    return print_records((e.to_json(tz) for e in events), fmt=fmt, table=HISTORY_TABLE, tz=tz, wide=wide,
                         title=f"history of order {order.id}")


def orders_table(orders, tz: tzinfo, title: str | None = None, *, wide: bool = False, fmt: str = "table",
                 now: int | None = None, footer: str | None = "") -> int:
    """Orders (a list, or an iterator for the machine formats) through `print_records`; the
    footer (table only; "" = the count and the zone) after them."""
    records = (o.to_json(tz) for o in orders)
    if fmt != "table":
        return print_records(records, fmt=fmt, table=ORDER_TABLE, tz=tz, wide=wide)
    records = list(records)
    if footer == "":
        footer = f"{len(records)} order{'s' if len(records) != 1 else ''}; times in {_tz_name(tz)}"
    return print_records(records, fmt=fmt, table=ORDER_TABLE, tz=tz, wide=wide, footer=footer, title=title, now=now)


def demo_view(orders: list[Order], tz: tzinfo, where: str, *, wide: bool = False) -> None:
    """`demo`: a view of parts: the orders, then the count and the zone."""
    with _parts() as part:
        part(lambda: orders_table(orders, tz, title=f"demo database {where}", wide=wide, footer=None))
        part(lambda: _line(f"{len(orders)} order{'s' if len(orders) != 1 else ''}; times in {_tz_name(tz)}"))


# --------------------------------------------------------------------------- notifications


def notification_json(row, tz: tzinfo) -> dict:
    """A notification as `notifications --json` prints it (SPEC section 2) and as `dispatch` hands
    it to a command or a webhook: from a stored row (the table's columns by name)."""
    return {
        "id": row.id,
        "order": row.order_id,
        "recipient": row.recipient,
        "channel": row.channel,
        "kind": row.kind,
        "at": iso(row.at, tz),
        "text": row.text,
        "state": row.state,
        "attempts": row.attempts,
        "sent_at": None if row.sent_at is None else iso(row.sent_at, tz),
        "next_attempt_at": None if row.next_attempt_at is None else iso(row.next_attempt_at, tz),
        "last_error": row.last_error,
    }


def notifications_table(rows, tz: tzinfo, *, wide: bool = False, fmt: str = "table") -> int:
    """Outbox rows (as `notification_rows` gives them) in `fmt`."""
    return notification_list((notification_json(r, tz) for r in rows), tz, wide=wide, fmt=fmt)


def notification_list(records, tz: tzinfo, *, wide: bool = False, fmt: str = "table") -> int:
    """`notification_json` records (an iterator: the machine formats stream it) in `fmt`."""
    if fmt != "table":
        return print_records(records, fmt=fmt, table=NOTIFICATION_TABLE, tz=tz, wide=wide)
    records = list(records)
    footer = f"{len(records)} notification{'s' if len(records) != 1 else ''}; times in {_tz_name(tz)}"
    return print_records(records, fmt=fmt, table=NOTIFICATION_TABLE, tz=tz, wide=wide, footer=footer)

# --------------------------------------------------------------------------- tick


def tick_json(report, tz: tzinfo) -> dict:
    return {
        "now": iso(report.now, tz),
        "applied": report.applied,
        "by_kind": dict(sorted(report.by_kind.items())),
        "reminders": report.reminders,
    }


def tick_summary(report, tz: tzinfo, dry_run: bool) -> None:
    verb = "would apply" if dry_run else "applied"
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.by_kind.items()))
    line = f"tick at {when(report.now, tz)}: {verb} {report.applied} transition{'s' if report.applied != 1 else ''}"
    if kinds:
        line += f" ({kinds})"
    line += f", {report.reminders} reminder{'s' if report.reminders != 1 else ''}"
    if dry_run:
        line += "; nothing was written (dry run)"
    _say(line)


PROGRESS_THRESHOLD = 1000  # items: below this, work is over before a bar would help


def _no_progress(done: int = 1) -> None:
    return None


def shows_progress() -> bool:
    """Progress bars go to stderr, and only when it is a terminal: piped, nothing extra is written."""
    return sys.stderr.isatty()


@contextmanager
def progress(total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for long work (`total` items or more than PROGRESS_THRESHOLD)
    on a terminal; yields `advance(done)`. When stderr is piped, or the work is small or of unknown
    size, nothing is shown and rich.progress is not even imported."""
    if total is None or total < PROGRESS_THRESHOLD or not shows_progress():
        yield _no_progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    # the bar never takes over stdout: data written meanwhile (an export) must reach it untouched
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _rate_column(),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
        console=_console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=False,
    )
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda done=1: bar.update(task, advance=done)
    finally:
        bar.stop()


def _rate_column():
    """Items per second (`12,345/s`), as rich measures it over the last seconds."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")

    return Rate()


@contextmanager
def file_progress(label: str, size: int | None):
    """A bar for reading an export (import, replay) on a terminal: bytes read of `size` (the file's;
    None for stdin: the bar then only counts), orders done, their rate and the time left. Yields
    `update(position, orders)`; nothing at all when stderr is piped."""
    if not shows_progress() or (size is not None and size < 1 << 20):
        yield lambda position, orders: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[orders]:,} orders ({task.fields[rate]:,.0f}/s)"),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
        console=_console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=False,
    )
    task = bar.add_task(label, total=size, orders=0, rate=0.0)
    bar.start()

    def update(position: int, orders: int) -> None:
        elapsed = bar.tasks[0].elapsed or 0.0
        bar.update(task, completed=position, orders=orders, rate=orders / elapsed if elapsed > 0 else 0.0)

    try:
        yield update
    finally:
        bar.stop()


@contextmanager
def counted_progress(label: str, *, show: bool = True):
    """`progress` for work that counts its own size once it has started (tick, export): yields
    (total_hint, advance). total_hint is None when no bar can be shown (stderr piped, or `show`
    false), so that the work need not even count."""
    with ExitStack() as stack:
        advance = [_no_progress]

        def total_hint(total: int) -> None:
            advance[0] = stack.enter_context(progress(total, label))

        yield (total_hint if show and shows_progress() else None), lambda done=1: advance[0](done)


@contextmanager
def tick_progress():
    """`counted_progress` for `service.tick`: yields (total_hint, on_batch(orders, applied))."""
    with counted_progress("tick") as (total_hint, advance):
        yield total_hint, lambda orders, applied: advance(orders)


# --------------------------------------------------------------------------- export, replay, import


def export_done(path: str, orders: int, events: int, notes: int) -> None:
    _say(f"exported {orders} order{'s' if orders != 1 else ''} ({events} events, {notes} notifications) to {path}")


def _verdict_text(verdict, tz: tzinfo) -> tuple[str, str]:
    end = verdict.rebuilt
    if verdict.ok:
        line = (f"order {verdict.order_id}: reproduced — {len(verdict.exported.events)} events, ends {end.status}"
                f" (terms {end.terms_state}), liable party: {end.liable_party or 'none'}")
        if end.deadline is not None:
            line += f"; next deadline {when(end.deadline, tz)}: {end.at_deadline}"
        return line, "bold green"
    return f"order {verdict.order_id}: DIVERGES at event seq {verdict.divergence.seq}: {verdict.divergence.why}", "bold red"


def replay_report(verdicts: list, tz: tzinfo, source: str, *, wide: bool = False, totals: bool = True, first: bool = True) -> None:
    """Per order: its terms, the timeline rebuilt by the rules (state and deadline after each
    event), then the verdict; parts separated by single blank lines. A streamed replay draws each
    chunk with `totals=False` (`first=False` after the first: a blank line before it), then
    `replay_totals`."""
    if not verdicts and not totals:
        return
    if not first:
        sys.stdout.write("\n")
    with _parts() as part:
        for verdict in verdicts:
            steps = verdict.steps
            states = [step.order for step in steps]
            title = f"order {verdict.order_id} as replayed from {source}"
            if not verdict.ok and len(states) < len(verdict.exported.events):
                title += f" (not reproduced from seq {len(states) + 1})"
            first = states[0] if states else None
            if first is not None:
                t = first.terms
                part(lambda t=t, first=first, verdict=verdict: print_panel(f"order {verdict.order_id}", [
                    ("merchant", t.merchant, "id", ""), ("creator", t.creator, "id", ""),
                    ("products", ", ".join(t.products), "id", ""), ("form", t.form, "status", ""),
                    ("commission", f"{t.commission_pct}%", "number", ""), ("ad budget", f"¥{t.ad_budget}", "number", ""),
                    ("latest start", when(t.latest_start_at, tz), "instant", ""),
                    ("policy", ", ".join(f"{k}={v}" for k, v in first.policy.to_json().items()), "text", ""),
                ], wide=wide))
            part(lambda verdict=verdict, states=states, title=title: (
                timeline(verdict.rebuilt if verdict.ok else None, verdict.exported.events, tz, states, title=title, wide=wide),
                _line(*_verdict_text(verdict, tz)[:1], style=_verdict_text(verdict, tz)[1], wide=wide),
            ))
        if totals:
            good = sum(1 for v in verdicts if v.ok)
            part(lambda: _line(f"{good} of {len(verdicts)} order{'s' if len(verdicts) != 1 else ''} reproduced; times in {_tz_name(tz)}", wide=wide))


def what_if_report(results: list, tz: tzinfo, policy_source: str, *, wide: bool = False) -> None:
    """Per order: both outcomes side by side, the policy windows that differ, the recorded
    actions the other policy would refuse, and the alternative timeline."""
    compare = _spec(
        "what-if",
        _col("", "status", 0, lambda r, c: r[0]),
        _col("as recorded", "text", 0, lambda r, c: r[1], style=_style_of_status),
        _col(f"under {policy_source}", "text", 0, lambda r, c: r[2], style=_style_of_status),
    )

    def cell(order, name):
        if order is None:
            return "—"
        if name == "status":
            return str(order.status)
        if name == "deadline":
            return when(order.deadline, tz) if order.deadline is not None else "—"
        if name == "then":
            return order.at_deadline or "—"
        value = {"terms": order.terms_state, "liable party": order.liable_party, "failed reviews": order.failed_reviews}[name]
        return "—" if value is None else str(value)

    with _parts() as part:
        for r in results:
            recorded, alternative = r.recorded, r.alternative
            rows = [(name, cell(recorded, name), cell(alternative, name))
                    for name in ("status", "terms", "liable party", "deadline", "then", "failed reviews")]
            mine = r.verdict.steps[0].order.policy.to_json() if r.verdict.steps else {}
            theirs = r.policy.to_json()
            changed = [k for k in theirs if mine.get(k) != theirs[k]]
            lines: list[tuple[str, str]] = [
                ("policy: " + (", ".join(f"{k} {mine.get(k)} → {theirs[k]}" for k in changed) or "(same)"), ""),
            ]
            if not r.verdict.ok:
                lines.append((f"note: the recorded history is not reproduced ({r.verdict.message})", "yellow"))
            if r.problem:
                lines.append((f"cannot replay under {policy_source}: {r.problem}", "red"))
            for e, why in r.refused:
                lines.append((f"seq {e.seq} {e.kind} by {e.actor} at {when(e.at, tz)} would have been refused: {why}", "yellow"))
            difference = r.first_difference
            if r.problem is None:
                if difference is None:
                    lines.append(("same outcome: the histories do not differ", "green"))
                else:
                    lines.append((f"first difference at seq {difference.seq}: {_difference_text(difference, tz)}", "bold"))
            title = f"order {r.order_id}: as recorded vs under {policy_source} (both at {when(r.until, tz)})"

            def draw(rows=rows, lines=lines, title=title):
                print_table(compare, rows, tz=tz, wide=wide, title=title)
                for text, style in lines:
                    _line(text, style=style, wide=wide)

            part(draw)
            if r.steps:
                states = [s.order for s in r.steps]
                part(lambda r=r, states=states, alternative=alternative: timeline(
                    alternative, [s.event for s in r.steps], tz, states, title=f"order {r.order_id} under {policy_source}", wide=wide))
        differ = sum(1 for r in results if r.first_difference is not None or r.problem)
        part(lambda: _line(f"{differ} of {len(results)} order{'s' if len(results) != 1 else ''} would have gone differently "
                           f"under {policy_source}; times in {_tz_name(tz)}", wide=wide))


def _difference_text(d, tz: tzinfo) -> str:
    def step(e):
        return f"{e.kind} at {when(e.at, tz)} by {e.actor}"

    if d.recorded is None:
        mine = "the recorded history ends here"
    elif d.fired_later:
        mine = f"by the export time the rules fire {step(d.recorded)}"
    else:
        mine = f"recorded {step(d.recorded)}"
    theirs = "nothing more happens" if d.what_if is None else step(d.what_if)
    return f"{mine}; under the other policy {theirs}"


IMPORT_ROWS_SHOWN = 50  # a large import is summed up, not drawn row by row


def _import_table():
    """`import`: rows are replay verdicts."""
    return _spec(
        "import",
        _col("id", "id", 0, lambda v, c: v.rebuilt.id, "right"),
        _col("status", "status", 0, lambda v, c: str(v.rebuilt.status), style=_style_of_status),
        _col("next deadline", "instant", 1, lambda v, c: when(v.rebuilt.deadline, c.tz)),
        _col("merchant", "id", 2, lambda v, c: v.rebuilt.terms.merchant),
        _col("creator", "id", 3, lambda v, c: v.rebuilt.terms.creator),
        _col("events", "number", 4, lambda v, c: len(v.exported.events), "right"),
        _col("liable", "status", 5, lambda v, c: v.rebuilt.liable_party),
    )


IMPORT_TABLE = _import_table()


def import_done(summary, where: str, tz: tzinfo, *, wide: bool = False) -> None:
    """`summary`: an `exchange.ImportSummary` (or a list of verdicts): the first IMPORT_ROWS_SHOWN
    orders as a table, then the count."""
    shown = summary.shown if hasattr(summary, "shown") else list(summary)
    total = len(summary)
    with _parts() as part:
        part(lambda: print_table(IMPORT_TABLE, shown[:IMPORT_ROWS_SHOWN], tz=tz, wide=wide, title=f"imported into {where}"))
        lines = []
        if total > IMPORT_ROWS_SHOWN:
            lines.append(f"… and {total - IMPORT_ROWS_SHOWN} more (`coopctl list` shows them)")
        lines.append(f"{total} order{'s' if total != 1 else ''} imported; every history replayed; times in {_tz_name(tz)}")
        part(lambda: [_line(text, wide=wide) for text in lines])


def replay_summary_line(verdict, tz: tzinfo, *, wide: bool = False) -> None:
    """`replay --summary`: one line for an order that does not reproduce."""
    text, style = _verdict_text(verdict, tz)
    _line(text, style=style, wide=wide)


def replay_totals(good: int, total: int, tz: tzinfo, *, seconds: float | None = None, wide: bool = False) -> None:
    line = f"{good} of {total} order{'s' if total != 1 else ''} reproduced"
    if total != good:
        line += f"; {total - good} diverge{'s' if total - good == 1 else ''}"
    if seconds is not None and seconds > 0:
        line += f"; {total / seconds:,.0f} orders/s"
    _line(line + f"; times in {_tz_name(tz)}", wide=wide)


# --------------------------------------------------------------------------- doctor


def _doctor_table():
    """`doctor`: rows are findings."""
    return _spec(
        "doctor",
        _col("check", "status", 0, lambda f, c: f.check),
        _col("", "status", 0, lambda f, c: "ok" if f.ok else "PROBLEM",
             style=lambda text: "green" if text == "ok" else "bold red"),
        _col("finding", "text", 1, lambda f, c: f.message),
        # narrow: the finding whole before what to do (the one-line error on stderr says both)
        _col("what to do", "text", 2, lambda f, c: f.action or "", yields=True),
    )


DOCTOR_TABLE = _doctor_table()


def doctor_report(report, tz: tzinfo, *, wide: bool = False) -> None:
    problems = len(report.problems)
    verdict = "healthy" if not problems else f"{problems} problem{'s' if problems != 1 else ''}"
    with _parts() as part:
        part(lambda: print_table(DOCTOR_TABLE, report.findings, tz=tz, wide=wide, title=f"doctor: {report.database}"))
        part(lambda: _line(f"{verdict}: {report.orders} orders checked at {when(report.now, tz)} ({_tz_name(tz)})", wide=wide))


# --------------------------------------------------------------------------- listings from rows
#
# `list` and `notifications` in the machine formats print every record of a book of millions:
# records are made from the stored rows directly (no Order objects), with instants written by
# `_iso_writer`, at a few microseconds each. tests/test_tables.py checks that they equal
# `Order.to_json(tz)` and `notification_json` field for field, in the same key order.

_YEAR_2000 = 946_684_800_000_000
_YEAR_2100 = 4_102_444_800_000_000


def _iso_writer(tz: tzinfo, *, quoted: bool = False) -> Callable[[int | None], str | None]:
    """`iso(instant, tz)` (None for None), fast for a zone whose offset is constant from 2000 to
    2100 (Asia/Shanghai, UTC): the wall time's minute is written once (a bounded cache) and the
    seconds added. `quoted`: as JSON (`"…"`, or `null`). `iso` itself for other zones and instants."""
    from datetime import timedelta

    if _offset_varies(tz):
        if quoted:
            return lambda t: "null" if t is None else f'"{iso(t, tz)}"'
        return lambda t: None if t is None else iso(t, tz)
    offset = datetime(2020, 1, 1, tzinfo=tz).utcoffset()
    suffix = datetime(2020, 1, 1, tzinfo=tz).isoformat()[19:] + ('"' if quoted else "")
    opening = '"' if quoted else ""
    shift = int(offset.total_seconds()) * 1_000_000
    base = datetime(1970, 1, 1)
    heads: dict[int, str] = {}
    none = "null" if quoted else None

    def write(t):
        if t is None:
            return none
        if not _YEAR_2000 <= t < _YEAR_2100:
            return f'"{iso(t, tz)}"' if quoted else iso(t, tz)
        seconds, micros = divmod(t + shift, 1_000_000)
        minute, second = divmod(seconds, 60)
        head = heads.get(minute)
        if head is None:
            if len(heads) >= 100_000:
                heads.clear()
            head = heads[minute] = opening + (base + timedelta(minutes=minute)).isoformat()[:17]
        if micros:
            return f"{head}{second:02d}.{micros:06d}{suffix}"
        return f"{head}{second:02d}{suffix}"

    return write


@functools.lru_cache(maxsize=256)
def _policy_json(text: str) -> dict:
    from coopctl.policy import Policy

    return Policy.from_json(json.loads(text)).to_json()


@functools.lru_cache(maxsize=256)
def _reminders_json(text: str) -> dict:
    from coopctl.policy import ReminderOffsets

    return ReminderOffsets.from_json(json.loads(text)).to_json()


@functools.lru_cache(maxsize=4096)
def _products_json(text: str) -> tuple:
    return tuple(json.loads(text))


def _quoted_instants(tz: tzinfo):
    """Each instant as its quoted JSON text in `tz` (`null` for None), written once while it repeats:
    (the memo, whose `get` is the fast path, and `instant(t)`, which writes and keeps one; at most
    4096 are kept)."""
    when, seen = _iso_writer(tz, quoted=True), {None: "null"}

    def instant(t):
        if len(seen) > 4096:
            seen.clear()
            seen[None] = "null"
        text = seen[t] = when(t)
        return text

    return seen, instant


class order_records:
    """`Order.to_json(tz)` of each stored row (store.LISTED_COLUMNS), made from the row itself: an
    iterable of dicts, which also offers `json_lines()`, the same records as compact JSON text
    written straight from the row (what `--format jsonl` prints, at twice the speed of encoding
    each dict)."""

    def __init__(self, rows, tz: tzinfo):
        self.rows, self.tz = rows, tz

    def __iter__(self):
        from coopctl.lifecycle import TERMS_OF, TIMERS

        write = _iso_writer(self.tz)
        terms_of = {s.value: str(t) for s, t in TERMS_OF.items()}
        label_of = {s.value: (TIMERS[s].label if s in TIMERS else None) for s in Status}
        for (oid, merchant, creator, products, form, commission, budget, latest, note, policy, reminders, created,
             status, requested_by, went_live, delivered, mode, failed, last_at, key,
             extensions, extension_by, proposed, disputed_by, appeals, ruling, liable, deadline) in self.rows:
            yield {
                "id": oid, "merchant": merchant, "creator": creator, "products": list(_products_json(products)),
                "form": form, "commission_pct": commission, "ad_budget": budget, "latest_start_at": write(latest),
                "note": note, "status": status, "terms": terms_of[status], "liable_party": liable,
                "created_at": write(created), "deadline": write(deadline), "at_deadline": label_of[status],
                "cancel_requested_by": requested_by, "went_live_at": write(went_live), "delivered_at": write(delivered),
                "delivery_mode": mode, "failed_reviews": failed, "policy": _policy_json(policy),
                "reminders": _reminders_json(reminders), "idempotency_key": key, "last_event_at": write(last_at),
                "extensions": extensions, "extension_requested_by": extension_by, "proposed_latest_start_at": write(proposed),
                "disputed_by": disputed_by, "appeals": appeals,
                "ruling": None if ruling is None else _ruling_json(ruling, self.tz),
            }

    def json_lines(self, escape: Callable[[str], str] | None = None):
        """Each record as `json.dumps(record, ensure_ascii=False, separators=(",", ":"))` writes it.
        `escape` (the printer's `json_escaped`) is applied to what holds a character `str.isprintable`
        rejects (every character a terminal could act on is one): the values that repeat
        (statuses, forms, product lists, policies, and the merchants, creators and amounts, kept
        while they are at most 8,192) once, when first met; a line whose own texts (note, key,
        ruling) hold one, whole. None: nothing is escaped."""
        from json.encoder import encode_basestring as quoted

        from coopctl.lifecycle import TERMS_OF, TIMERS

        safe = (lambda text: text) if escape is None else (lambda text: text if text.isprintable() else escape(text))
        seen, instant = _quoted_instants(self.tz)
        terms_of = {s.value: quoted(str(t)) for s, t in TERMS_OF.items()}
        label_of = {s.value: (quoted(TIMERS[s].label) if s in TIMERS else "null") for s in Status}
        compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        cache: dict = {None: "null"}
        products_of: dict = {}
        policies: dict = {}

        def known(value):  # the few values that repeat (statuses, forms, parties): encoded once
            text = cache[value] = safe(quoted(value))
            return text

        def products_text(text):
            if len(products_of) > 4096:
                products_of.clear()
            found = products_of[text] = safe(compact(list(_products_json(text))))
            return found

        parties: dict = {}  # merchants, creators and amounts: few distinct values in a book, most of them

        def party_text(value):
            if len(parties) > 8192:
                parties.clear()
            found = parties[value] = safe(quoted(value))
            return found

        def policy_text(text, reminders: bool):
            found = policies[text, reminders] = safe(compact(_reminders_json(text) if reminders else _policy_json(text)))
            return found

        get, pget, sget, lget, tget = cache.get, products_of.get, seen.get, policies.get, parties.get
        for (oid, merchant, creator, products, form, commission, budget, latest, note, policy, reminders, created,
             status, requested_by, went_live, delivered, mode, failed, last_at, key,
             extensions, extension_by, proposed, disputed_by, appeals, ruling, liable, deadline) in self.rows:
            line = (
                f'{{"id":{oid},"merchant":{tget(merchant) or party_text(merchant)},'
                f'"creator":{tget(creator) or party_text(creator)},'
                f'"products":{pget(products) or products_text(products)},"form":{get(form) or known(form)},'
                f'"commission_pct":{tget(commission) or party_text(commission)},'
                f'"ad_budget":{tget(budget) or party_text(budget)},'
                f'"latest_start_at":{sget(latest) or instant(latest)},'
                f'"note":{"null" if note is None else quoted(note)},"status":{get(status) or known(status)},'
                f'"terms":{terms_of[status]},"liable_party":{get(liable) or known(liable)},'
                f'"created_at":{sget(created) or instant(created)},"deadline":{sget(deadline) or instant(deadline)},'
                f'"at_deadline":{label_of[status]},"cancel_requested_by":{get(requested_by) or known(requested_by)},'
                f'"went_live_at":{sget(went_live) or instant(went_live)},"delivered_at":{sget(delivered) or instant(delivered)},'
                f'"delivery_mode":{get(mode) or known(mode)},"failed_reviews":{int(failed)},'
                f'"policy":{lget((policy, False)) or policy_text(policy, False)},'
                f'"reminders":{lget((reminders, True)) or policy_text(reminders, True)},'
                f'"idempotency_key":{"null" if key is None else quoted(key)},'
                f'"last_event_at":{sget(last_at) or instant(last_at)},'
                f'"extensions":{int(extensions)},"extension_requested_by":{get(extension_by) or known(extension_by)},'
                f'"proposed_latest_start_at":{sget(proposed) or instant(proposed)},'
                f'"disputed_by":{get(disputed_by) or known(disputed_by)},"appeals":{int(appeals)},'
                f'"ruling":{"null" if ruling is None else compact(_ruling_json(ruling, self.tz))}}}'
            )
            if escape is not None and not ((note is None or note.isprintable()) and (key is None or key.isprintable())
                                           and (ruling is None or ruling.isprintable())):
                line = escape(line)  # the other free texts were made safe as they were first met
            yield line


def _order_cells(self, compact):
    """csv/tsv: the header (the JSON's keys, in order), then each record's cells as
    `printer.flat` writes its fields (null empty, arrays joined with `;`, objects as `compact`
    JSON), made from the row itself; nothing yielded for no rows. Not yet made safe for a
    terminal: the printer does that, cell by cell."""
    from coopctl.lifecycle import TERMS_OF, TIMERS

    write = _iso_writer(self.tz)
    terms_of = {s.value: str(t) for s, t in TERMS_OF.items()}
    label_of = {s.value: (TIMERS[s].label if s in TIMERS else "") for s in Status}
    texts: dict = {}

    def of(text, reminders: bool):
        found = texts[text, reminders] = compact(_reminders_json(text) if reminders else _policy_json(text))
        return found

    rows = iter(self.rows)
    first = next(rows, None)
    if first is None:
        return
    yield list(next(iter(order_records([first], self.tz))))
    get = texts.get
    for (oid, merchant, creator, products, form, commission, budget, latest, note, policy, reminders, created,
         status, requested_by, went_live, delivered, mode, failed, last_at, key,
         extensions, extension_by, proposed, disputed_by, appeals, ruling, liable, deadline) in chain((first,), rows):
        yield [
            str(oid), merchant, creator, ";".join(_products_json(products)), form, commission, budget, write(latest) or "",
            note or "", status, terms_of[status], liable or "", write(created) or "", write(deadline) or "",
            label_of[status], requested_by or "", write(went_live) or "", write(delivered) or "", mode or "",
            str(failed), get((policy, False)) or of(policy, False), get((reminders, True)) or of(reminders, True),
            key or "", write(last_at) or "", str(extensions), extension_by or "", write(proposed) or "",
            disputed_by or "", str(appeals), "" if ruling is None else compact(_ruling_json(ruling, self.tz)),
        ]


order_records.delimited = _order_cells


def _order_json_texts(self, escape: Callable[[str], str] | None = None):
    """`--format json`: each record as the printer's indented JSON writes it (indent 2, `": "`),
    made from the row itself; escaped as `json_lines` escapes (None: not at all)."""
    from json.encoder import encode_basestring as quoted

    from coopctl.lifecycle import TERMS_OF, TIMERS

    safe = (lambda text: text) if escape is None else (lambda text: text if text.isprintable() else escape(text))
    seen, instant = _quoted_instants(self.tz)
    terms_of = {s.value: quoted(str(t)) for s, t in TERMS_OF.items()}
    label_of = {s.value: (quoted(TIMERS[s].label) if s in TIMERS else "null") for s in Status}
    scalar = json.JSONEncoder(ensure_ascii=False).encode
    cache: dict = {None: "null"}
    nested: dict = {}

    def known(value):
        text = cache[value] = safe(quoted(value))
        return text

    def block(text, kind: int):  # a nested array or object at depth 1, as the indenting printer writes it
        if len(nested) > 4096:
            nested.clear()
        if kind == 0:
            items = [scalar(v) for v in _products_json(text)]
            made = "[\n    " + ",\n    ".join(items) + "\n  ]" if items else "[]"
        else:
            value = _reminders_json(text) if kind == 2 else _policy_json(text)
            made = ("{\n    " + ",\n    ".join(f"{scalar(str(k))}: {scalar(v)}" for k, v in value.items()) + "\n  }"
                    if value else "{}")
        found = nested[text, kind] = safe(made)
        return found

    get, sget, nget = cache.get, seen.get, nested.get
    for (oid, merchant, creator, products, form, commission, budget, latest, note, policy, reminders, created,
         status, requested_by, went_live, delivered, mode, failed, last_at, key,
         extensions, extension_by, proposed, disputed_by, appeals, ruling, liable, deadline) in self.rows:
        text = (
            f'{{\n  "id": {oid},\n  "merchant": {quoted(merchant)},\n  "creator": {quoted(creator)},'
            f'\n  "products": {nget((products, 0)) or block(products, 0)},\n  "form": {get(form) or known(form)},'
            f'\n  "commission_pct": {quoted(commission)},\n  "ad_budget": {quoted(budget)},'
            f'\n  "latest_start_at": {sget(latest) or instant(latest)},'
            f'\n  "note": {"null" if note is None else quoted(note)},\n  "status": {get(status) or known(status)},'
            f'\n  "terms": {terms_of[status]},\n  "liable_party": {get(liable) or known(liable)},'
            f'\n  "created_at": {sget(created) or instant(created)},\n  "deadline": {sget(deadline) or instant(deadline)},'
            f'\n  "at_deadline": {label_of[status]},\n  "cancel_requested_by": {get(requested_by) or known(requested_by)},'
            f'\n  "went_live_at": {sget(went_live) or instant(went_live)},\n  "delivered_at": {sget(delivered) or instant(delivered)},'
            f'\n  "delivery_mode": {get(mode) or known(mode)},\n  "failed_reviews": {int(failed)},'
            f'\n  "policy": {nget((policy, 1)) or block(policy, 1)},'
            f'\n  "reminders": {nget((reminders, 2)) or block(reminders, 2)},'
            f'\n  "idempotency_key": {"null" if key is None else quoted(key)},'
            f'\n  "last_event_at": {sget(last_at) or instant(last_at)},'
            f'\n  "extensions": {int(extensions)},\n  "extension_requested_by": {get(extension_by) or known(extension_by)},'
            f'\n  "proposed_latest_start_at": {sget(proposed) or instant(proposed)},'
            f'\n  "disputed_by": {get(disputed_by) or known(disputed_by)},\n  "appeals": {int(appeals)},'
            f'\n  "ruling": {"null" if ruling is None else _ruling_block(ruling, self.tz)}\n}}'
        )
        if escape is not None and not f"{merchant}{creator}{commission}{budget}{note or ''}{key or ''}{ruling or ''}".isprintable():
            text = escape(text)
        yield text


order_records.json_texts = _order_json_texts


def _ruling_json(text: str, tz: tzinfo) -> dict:
    """The `ruling` of a stored row as `Ruling.to_json(tz)` gives it."""
    from coopctl.lifecycle import Ruling

    return Ruling.from_stored(text).to_json(tz)


def _ruling_block(text: str, tz: tzinfo) -> str:
    """The `ruling` of a stored row at depth 1 of the indented JSON (`--format json`)."""
    return json.dumps(_ruling_json(text, tz), indent=2, ensure_ascii=False).replace("\n", "\n  ")


class notification_records:
    """`notification_json` of each stored outbox row (LISTED_NOTIFICATION_COLUMNS), made from the row itself; `json_lines(escape)` as for `order_records`."""

    def __init__(self, rows, tz: tzinfo):
        self.rows, self.tz = rows, tz

    def __iter__(self):
        write = _iso_writer(self.tz)
        for nid, order_id, recipient, channel, kind, at, text, state, attempts, sent_at, next_at, error in self.rows:
            yield {"id": nid, "order": order_id, "recipient": recipient, "channel": channel, "kind": kind, "at": write(at),
                   "text": text, "state": state, "attempts": attempts, "sent_at": write(sent_at),
                   "next_attempt_at": write(next_at), "last_error": error}

    def json_lines(self, escape: Callable[[str], str] | None = None):
        from json.encoder import encode_basestring as quoted

        when = _iso_writer(self.tz, quoted=True)
        cache: dict = {}

        def known(value):  # channels, kinds and states: a handful of values, encoded once (escaped, if need be)
            try:
                return cache[value]
            except KeyError:
                text = cache[value] = quoted(value)
                if escape is not None and not text.isprintable():
                    text = cache[value] = escape(text)
                return text

        for nid, order_id, recipient, channel, kind, at, text, state, attempts, sent_at, next_at, error in self.rows:
            line = (f'{{"id":{nid},"order":{order_id},"recipient":{quoted(recipient)},"channel":{known(channel)},'
                    f'"kind":{known(kind)},"at":{when(at)},"text":{quoted(text)},"state":{known(state)},'
                    f'"attempts":{int(attempts)},"sent_at":{when(sent_at)},"next_attempt_at":{when(next_at)},'
                    f'"last_error":{"null" if error is None else quoted(error)}}}')
            if escape is not None and not f"{recipient}{text}{error or ''}".isprintable():
                line = escape(line)
            yield line


# --------------------------------------------------------------------------- evidence files


def evidence_json(order_id: int, event: Event, file, held: bool, tz: tzinfo) -> dict:
    """One file an order's event names (`coopctl evidence ORDER`, machine formats)."""
    return {
        "order": order_id,
        "seq": event.seq,
        "kind": event.kind,
        "at": iso(event.at, tz),
        "name": file.name,
        "size": file.size,
        "sha256": file.sha256,
        "held": held,
    }


def file_size(size: int) -> str:
    """A size for a table: bytes below 1 KiB, else KiB or MiB with one decimal (JSON has the bytes)."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def _evidence_table():
    """`evidence`: rows are `evidence_json` dicts. The SHA-256 shows its first 16 hex digits (what
    `--get` needs: a unique prefix) unless --wide."""
    return _spec(
        "evidence",
        _col("seq", "number", 0, lambda r, c: r["seq"], "right"),
        _col("kind", "status", 0, lambda r, c: r["kind"]),
        _col("sha256", "id", 0, lambda r, c: r["sha256"] if c.wide else r["sha256"][:16]),
        _col("held", "status", 1, lambda r, c: "yes" if r["held"] else "no"),
        _col("name", "text", 2, lambda r, c: r["name"]),
        _col("size", "number", 3, lambda r, c: file_size(r["size"]), "right"),
        _col("at", "instant", 4, _when_field("at")),
    )


EVIDENCE_TABLE = _evidence_table()


def evidence_list(records, tz: tzinfo, *, wide: bool = False, fmt: str = "table") -> int:
    """`evidence ORDER` in `fmt`; the table's footer counts the files and those held here."""
    if fmt != "table":
        return print_records(records, fmt=fmt, table=EVIDENCE_TABLE, tz=tz, wide=wide)
    records = list(records)
    held = sum(1 for r in records if r["held"])
    footer = (f"{len(records)} evidence file{'s' if len(records) != 1 else ''}, {held} held here; "
              f"times in {_tz_name(tz)}")
    return print_records(records, fmt=fmt, table=EVIDENCE_TABLE, tz=tz, wide=wide, footer=footer)


def evidence_written(path: str, file, order_id: int) -> None:
    _say(f"wrote {file.name} ({file.size:,} bytes, sha256 {file.sha256[:16]}…) of order {order_id} to {path}")
