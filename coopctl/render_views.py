"""Tables of the operations views (`board`, `config`, the overdue mark and projection of `show`,
`tick --dry-run --list`), drawn with render's safe tables and console: every cell is escaped
(SPEC section 7), widths are rich's, in display cells. Parts are separated by one blank line.
"""

from __future__ import annotations

import sys
from datetime import tzinfo

from coopctl import render
from coopctl.lifecycle import TERMS_OF, Status
from coopctl.policy import SECOND
from coopctl.printer import Column, TableSpec
from coopctl.render import _tz_name, when
from coopctl.views import Board, OrderChange, Overdue, Projection, Setting, timer_kinds


def _cell(index: int):
    return lambda record, context: record[index]


# The tables of these views, through the one printer (SPEC section 4): fitted to the width, no
# rules or trailing spaces when piped, parts separated by single blank lines.
PAIRS = TableSpec((Column("item", "id", 0, _cell(0)), Column("value", "text", 0, _cell(1))), name="board parts")
STATUSES = TableSpec((
    Column("status", "status", 0, _cell(0)), Column("terms", "status", 1, _cell(1)),
    Column("orders", "number", 0, _cell(2), "right"),
), name="board statuses")
KINDS = TableSpec((
    Column("in 24h, fires", "status", 0, _cell(0)), Column("at the deadline of", "status", 1, _cell(1)),
    Column("orders", "number", 0, _cell(2), "right"),
), name="board kinds")
SETTINGS = TableSpec((
    Column("setting", "id", 0, _cell(0)), Column("value", "text", 1, _cell(1)), Column("from", "text", 2, _cell(2)),
), name="config")


def board_table(b: Board, tz: tzinfo) -> None:
    last = b.last_tick
    head = [
        ("now", when(b.now, tz)),
        ("orders", f"{b.orders:,}"),
        # finished_at is the wall clock to the microsecond: shown to the second, as every instant a person reads
        ("last tick", "never" if last is None else f"for {when(last[0], tz)}, finished {when(last[1] - last[1] % SECOND, tz)}, applied {last[2]:,}"),
        ("times in", _tz_name(tz)),
    ]
    statuses = [(status, str(TERMS_OF[Status(status)]), f"{n:,}") for status, n in b.by_status.items()]
    terms = [(name, f"{n:,}") for name, n in b.by_terms.items()]
    deadlines = [
        ("overdue", f"{b.overdue:,}" + (f" (oldest {when(b.oldest_overdue, tz)})" if b.oldest_overdue is not None else "")),
        *((f"due in {name}", f"{n:,}") for name, n in b.due.items()),
    ]
    kinds = [(kind, status, f"{b.due_24h_by_kind.get(kind, 0):,}") for status, kind in timer_kinds().items()]
    rest = [
        ("disputes open", f"{b.disputes_open:,}" + (f" (oldest {when(b.oldest_dispute, tz)})" if b.oldest_dispute is not None else "")),
        ("past arbitration window", f"{b.disputes_past_window:,}"),
        ("outbox pending", f"{b.outbox_pending:,}" + (f" (oldest {when(b.oldest_pending, tz)})" if b.oldest_pending is not None else "")),
        ("outbox failed", f"{b.outbox_failed:,}"),
        ("outbox dead", f"{b.outbox_dead:,}"),
    ]
    with render.view() as part:
        part(lambda: render.print_table(PAIRS, head, tz=tz, title="board"))
        part(lambda: render.print_table(STATUSES, statuses, tz=tz, title="by status"))
        part(lambda: render.print_table(PAIRS, terms, tz=tz, title="by terms"))
        part(lambda: render.print_table(PAIRS, deadlines, tz=tz, title="deadlines"))
        part(lambda: render.print_table(KINDS, kinds, tz=tz, title="in the next 24h"))
        part(lambda: render.print_table(PAIRS, rest, tz=tz, title="disputes and outbox"))


def overdue_line(mark: Overdue | None, tz: tzinfo) -> None:
    """Below `show`'s panel and timeline, after a blank line: the deadline that passed with no
    tick to fire it."""
    if mark is not None:
        sys.stdout.write("\n")
        render.line("⚠ " + mark.text(lambda t: when(t, tz)))


def projection_header(p: Projection, tz: tzinfo) -> None:
    """Above the projected order: what it is, so that nobody takes it for the stored one."""
    added = len(p.added)
    render.line(
        f"PROJECTION as of {when(p.as_of, tz)}: the order as the rules make it then "
        f"({added} deadline{'s' if added != 1 else ''} fired, {p.reminders} reminder{'s' if p.reminders != 1 else ''}); "
        "nothing was written"
    )
    sys.stdout.write("\n")


def config_table(entries: list[Setting]) -> None:
    groups: dict[str, list[Setting]] = {}
    for e in entries:
        section = e.key.split(".", 1)[0] if "." in e.key else "general"
        groups.setdefault("general" if section in ("database", "display") else section, []).append(e)
    with render.view() as part:
        for section, rows in groups.items():
            records = [(e.key, "—" if e.value is None else str(e.value), e.origin) for e in rows]
            part(lambda records=records, section=section: render.print_table(SETTINGS, records, tz=None, title=section))


def tick_change_line(change: OrderChange, tz: tzinfo) -> None:
    """`tick --dry-run --list`: one line per order that would change, as it is decided."""
    steps = ", ".join(f"{kind} at {when(at, tz)}" for kind, at in change.events) or "no transition"
    reminders = f"; {change.reminders} reminder{'s' if change.reminders != 1 else ''}" if change.reminders else ""
    render.line(f"order {change.id}: {steps}{reminders}")
