"""Tables of the operations views (`board`, `config`, the overdue mark and projection of `show`,
`tick --dry-run --list`), drawn with render's safe tables and console: every cell is escaped
(SPEC section 7), widths are rich's, in display cells. Parts are separated by one blank line.
"""

from __future__ import annotations

import sys
from datetime import tzinfo

from coopctl import render
from coopctl.lifecycle import TERMS_OF, Status
from coopctl.render import _console, _grid, _table, _tz_name, when
from coopctl.trust import shown
from coopctl.views import Board, OrderChange, Overdue, Projection, Setting, timer_kinds


def _pairs(rows: list[tuple[str, str]], title: str | None = None):
    grid = _grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if title:
        grid.add_row(title, "")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _print_parts(parts: list) -> None:
    console = _console()
    for i, part in enumerate(parts):
        if i:
            console.print()
        console.print(part)


def board_table(b: Board, tz: tzinfo) -> None:
    from rich import box

    last = b.last_tick
    head = _pairs([
        ("now", when(b.now, tz)),
        ("orders", f"{b.orders:,}"),
        ("last tick", "never" if last is None else f"for {when(last[0], tz)}, finished {when(last[1], tz)}, applied {last[2]:,}"),
        ("times in", _tz_name(tz)),
    ])
    statuses = _table(box=box.SIMPLE_HEAD)
    for name, justify in (("status", "left"), ("terms", "left"), ("orders", "right")):
        statuses.add_column(name, justify=justify)
    for status, n in b.by_status.items():
        statuses.add_row(render._status(status), str(TERMS_OF[Status(status)]), f"{n:,}")
    terms = _pairs([(name, f"{n:,}") for name, n in b.by_terms.items()], title="by terms")
    deadlines = _pairs([
        ("overdue", f"{b.overdue:,}" + (f" (oldest {when(b.oldest_overdue, tz)})" if b.oldest_overdue is not None else "")),
        *((f"due in {name}", f"{n:,}") for name, n in b.due.items()),
    ], title="deadlines")
    kinds = _table(box=box.SIMPLE_HEAD)
    for name, justify in (("in 24h, fires", "left"), ("at the deadline of", "left"), ("orders", "right")):
        kinds.add_column(name, justify=justify)
    for status, kind in timer_kinds().items():
        kinds.add_row(kind, status, f"{b.due_24h_by_kind.get(kind, 0):,}")
    rest = _pairs([
        ("disputes open", f"{b.disputes_open:,}" + (f" (oldest {when(b.oldest_dispute, tz)})" if b.oldest_dispute is not None else "")),
        ("past arbitration window", f"{b.disputes_past_window:,}"),
        ("outbox pending", f"{b.outbox_pending:,}" + (f" (oldest {when(b.oldest_pending, tz)})" if b.oldest_pending is not None else "")),
        ("outbox failed", f"{b.outbox_failed:,}"),
        ("outbox dead", f"{b.outbox_dead:,}"),
    ], title="disputes and outbox")
    _print_parts([head, statuses, terms, deadlines, kinds, rest])


def overdue_line(mark: Overdue | None, tz: tzinfo) -> None:
    """Below `show`'s panel and timeline: the deadline that passed with no tick to fire it."""
    if mark is not None:
        _console().print()
        _console().print("⚠ " + mark.text(lambda t: when(t, tz)))


def projection_header(p: Projection, tz: tzinfo) -> None:
    """Above the projected order: what it is, so that nobody takes it for the stored one."""
    added = len(p.added)
    line = (
        f"PROJECTION as of {when(p.as_of, tz)}: the order as the rules make it then "
        f"({added} deadline{'s' if added != 1 else ''} fired, {p.reminders} reminder{'s' if p.reminders != 1 else ''}); "
        "nothing was written"
    )
    console = _console()
    console.print(line)
    console.print()


def config_table(entries: list[Setting]) -> None:
    from rich import box

    parts = []
    groups: dict[str, list[Setting]] = {}
    for e in entries:
        section = e.key.split(".", 1)[0] if "." in e.key else "general"
        groups.setdefault("general" if section in ("database", "display") else section, []).append(e)
    for section, rows in groups.items():
        table = _table(title=section, box=box.SIMPLE_HEAD, title_justify="left")
        for name in ("setting", "value", "from"):
            table.add_column(name)
        for e in rows:
            value = "—" if e.value is None else str(e.value)
            table.add_row(e.key, value, e.origin)
        parts.append(table)
    _print_parts(parts)


def tick_change_line(change: OrderChange, tz: tzinfo) -> None:
    """`tick --dry-run --list`: one line per order that would change, as it is decided."""
    steps = ", ".join(f"{kind} at {when(at, tz)}" for kind, at in change.events) or "no transition"
    reminders = f"; {change.reminders} reminder{'s' if change.reminders != 1 else ''}" if change.reminders else ""
    sys.stdout.write(shown(f"order {change.id}: {steps}{reminders}") + "\n")
