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


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    console = _rich()[1](
        file=stream,
        width=None if terminal else 200,
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
    escaped (an id or a kind read from the database is shown, never obeyed) and stays one line."""
    sys.stdout.write("".join(f"{shown(line)}\n" for line in lines))


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


def _terms_panel(order: Order, tz: tzinfo) -> Panel:
    from rich.panel import Panel

    grid = _grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    t = order.terms
    rows = [
        ("merchant", t.merchant),
        ("creator", t.creator),
        ("products", ", ".join(t.products)),
        ("form", t.form),
        ("commission", f"{t.commission_pct}%"),
        ("ad budget", f"¥{t.ad_budget}"),
        ("latest start", when(t.latest_start_at, tz)),
        ("note", t.note or "—"),
        ("status", _status(order.status)),
        ("terms", str(order.terms_state)),
        ("liable party", str(order.liable_party) if order.liable_party else "—"),
        ("deadline", f"{when(order.deadline, tz)}  → {order.at_deadline}" if order.deadline else "—"),
        ("failed reviews", str(order.failed_reviews)),
        ("policy", ", ".join(f"{k}={v}" for k, v in order.policy.to_json().items())),
    ]
    if order.cancel_requested_by is not None:
        rows.insert(11, ("cancel requested by", str(order.cancel_requested_by)))
    if order.delivered_at is not None:
        rows.insert(11, ("delivered", f"{when(order.delivered_at, tz)} ({order.delivery_mode})"))
    if order.went_live_at is not None:
        rows.insert(11, ("went live", when(order.went_live_at, tz)))
    for label, value in rows:
        grid.add_row(label, value)
    return Panel(grid, title=f"order {order.id}", subtitle=f"times in {_tz_name(tz)}", expand=False)


def _details(e: Event, tz: tzinfo) -> str:
    data = e.data
    if e.kind == "created":
        terms = data.get("terms", {}) if isinstance(data, dict) else {}
        latest = terms.get("latest_start_at", "")
        try:
            latest = when(parse_instant(latest, tz), tz)
        except (InvalidValue, TypeError):
            pass
        return f"latest start {latest}, commission {terms.get('commission_pct', '?')}%"
    return ", ".join(f"{k}={v}" for k, v in data.items())


def timeline_table(order: Order | None, events: list[Event], tz: tzinfo, states: list[Order] | None = None, title: str | None = None) -> Table:
    from rich import box
    from rich.text import Text

    table = _table(title=title or "timeline", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("at")
    table.add_column("event")
    table.add_column("actor")
    table.add_column("operator")
    table.add_column("state after")
    table.add_column("deadline then")
    table.add_column("details", overflow="fold")
    for index, e in enumerate(events):
        after = states[index] if states is not None and index < len(states) else None
        table.add_row(
            str(e.seq), when(e.at, tz), e.kind, e.actor, e.operator,
            _status(after.status) if after else "",
            when(after.deadline, tz) if after and after.deadline else "—" if after else "",
            _details(e, tz),
        )
    if order is not None and order.deadline is not None:
        table.add_row("", when(order.deadline, tz), Text("next: " + (order.at_deadline or ""), style="italic"), "system", "", "", "", "")
    return table


def order_detail(order: Order, events: list[Event], tz: tzinfo) -> None:
    from rich.console import Group

    from coopctl.history import Divergence, rebuild

    try:
        states = [step.order for step in rebuild(order.id, events, strict=False)]  # stored: legacy ids stay readable
    except Divergence:
        states = None
    console = _console()
    console.print(Group(_terms_panel(order, tz), timeline_table(order, events, tz, states)))


def history_table(order: Order, events: list[Event], tz: tzinfo) -> None:
    from rich import box

    table = _table(title=f"history of order {order.id}", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("seq", "at", "kind", "actor", "operator", "data", "hash"):
        table.add_column(name, overflow="fold")
    for e in events:
        table.add_row(str(e.seq), when(e.at, tz), e.kind, e.actor, e.operator, _details(e, tz), e.hash[:16])
    _console().print(table)


def orders_table(orders: list[Order], tz: tzinfo, title: str | None = None, footer: str | None = None) -> None:
    """The orders as a table, then a last line: `footer` when given ("" for none: `list` piped
    says it on stderr), else the count and the time zone."""
    from rich import box

    table = _table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for name, justify in (("id", "right"), ("merchant", "left"), ("creator", "left"), ("form", "left"),
                          ("commission", "right"), ("status", "left"), ("terms", "left"), ("liable", "left"),
                          ("next deadline", "left"), ("then", "left")):
        table.add_column(name, justify=justify)
    for o in orders:
        table.add_row(
            str(o.id), o.terms.merchant, o.terms.creator, o.terms.form, f"{o.terms.commission_pct}%",
            _status(o.status), str(o.terms_state), str(o.liable_party or "—"),
            when(o.deadline, tz), o.at_deadline or "—",
        )
    console = _console()
    console.print(table)
    if footer is None:
        console.print(f"{len(orders)} order{'s' if len(orders) != 1 else ''}; times in {_tz_name(tz)}")
    elif footer:
        console.print(shown(footer))


# --------------------------------------------------------------------------- notifications


def notification_json(row, tz: tzinfo) -> dict:
    return {
        "order": row.order_id,
        "recipient": row.recipient,
        "channel": row.channel,
        "kind": row.kind,
        "at": iso(row.at, tz),
        "text": row.text,
    }


def notifications_table(rows, tz: tzinfo) -> None:
    from rich import box

    table = _table(box=box.SIMPLE_HEAD)
    for name in ("order", "at", "recipient", "channel", "kind", "sent", "text"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(str(r.order_id), when(r.at, tz), r.recipient, r.channel, r.kind, when(r.sent_at, tz) if r.sent_at else "pending", r.text)
    console = _console()
    console.print(table)
    console.print(f"{len(rows)} notification{'s' if len(rows) != 1 else ''}")


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
    from rich.progress import Progress

    # the bar never takes over stdout: data written meanwhile (an export) must reach it untouched
    bar = Progress(console=_console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=False)
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda done=1: bar.update(task, advance=done)
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


def _verdict_line(verdict, tz: tzinfo) -> Text:
    from rich.text import Text

    end = verdict.rebuilt
    if verdict.ok:
        line = Text(f"order {verdict.order_id}: ", style="bold")
        line.append("reproduced", style="bold green")
        line.append(f" — {len(verdict.exported.events)} events, ends ")
        line.append_text(_status(end.status))
        line.append(f" (terms {end.terms_state}), liable party: {end.liable_party or 'none'}")
        if end.deadline is not None:
            line.append(f"; next deadline {when(end.deadline, tz)}: {end.at_deadline}")
        return line
    line = Text(f"order {verdict.order_id}: ", style="bold")
    line.append(f"DIVERGES at event seq {verdict.divergence.seq}", style="bold red")
    line.append(f": {verdict.divergence.why}")
    return line


def replay_report(verdicts: list, tz: tzinfo, source: str) -> None:
    """Per order: the timeline rebuilt by the rules (state and deadline after each event), then the verdict."""
    from rich.console import Group
    from rich.text import Text

    console = _console()
    for verdict in verdicts:
        steps = verdict.steps
        states = [step.order for step in steps]
        title = f"order {verdict.order_id} as replayed from {source}"
        if not verdict.ok and len(states) < len(verdict.exported.events):
            title += f" (not reproduced from seq {len(states) + 1})"
        first = states[0] if states else None
        parts = []
        if first is not None:
            t = first.terms
            parts.append(Text(
                f"order {verdict.order_id}: {t.merchant} → {t.creator}, {', '.join(t.products)} ({t.form}), "
                f"commission {t.commission_pct}%, ad budget ¥{t.ad_budget}, latest start {when(t.latest_start_at, tz)}",
                style="bold",
            ))
            parts.append(Text(f"policy: {', '.join(f'{k}={v}' for k, v in first.policy.to_json().items())}"))
        parts.append(timeline_table(verdict.rebuilt if verdict.ok else None, verdict.exported.events, tz, states, title=title))
        parts.append(_verdict_line(verdict, tz))
        console.print(Group(*parts))
        console.print()
    good = sum(1 for v in verdicts if v.ok)
    console.print(f"{good} of {len(verdicts)} order{'s' if len(verdicts) != 1 else ''} reproduced; times in {_tz_name(tz)}")


def what_if_report(results: list, tz: tzinfo, policy_source: str) -> None:
    """Per order: both outcomes side by side, the recorded actions the other policy would refuse, and
    the alternative timeline."""
    from rich import box
    from rich.console import Group
    from rich.text import Text

    console = _console()
    for r in results:
        recorded, alternative = r.recorded, r.alternative
        table = _table(title=f"order {r.order_id}: as recorded vs under {policy_source} (both at {when(r.until, tz)})",
                      box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column("")
        table.add_column("as recorded")
        table.add_column(f"under {policy_source}")

        def cell(order, name):
            if order is None:
                return "—"
            if name == "status":
                return _status(order.status)
            if name == "deadline":
                return f"{when(order.deadline, tz)} → {order.at_deadline}" if order.deadline is not None else "—"
            value = {"terms": order.terms_state, "liable party": order.liable_party, "failed reviews": order.failed_reviews}[name]
            return "—" if value is None else str(value)

        for name in ("status", "terms", "liable party", "deadline", "failed reviews"):
            table.add_row(name, cell(recorded, name), cell(alternative, name))
        mine = r.verdict.steps[0].order.policy.to_json() if r.verdict.steps else {}
        theirs = r.policy.to_json()
        changed = [k for k in theirs if mine.get(k) != theirs[k]]
        table.add_row("policy", ", ".join(f"{k}={mine.get(k)}" for k in changed) or "(same)",
                      ", ".join(f"{k}={theirs[k]}" for k in changed) or "(same)")
        parts: list = [table]
        if not r.verdict.ok:
            parts.append(Text(f"note: the recorded history is not reproduced ({r.verdict.message})", style="yellow"))
        if r.problem:
            parts.append(Text(f"cannot replay under {policy_source}: {r.problem}", style="red"))
        for e, why in r.refused:
            parts.append(Text(f"seq {e.seq} {e.kind} by {e.actor} at {when(e.at, tz)} would have been refused: {why}", style="yellow"))
        difference = r.first_difference
        if r.problem is None:
            if difference is None:
                parts.append(Text("same outcome: the histories do not differ", style="green"))
            else:
                parts.append(Text(f"first difference at seq {difference.seq}: {_difference_text(difference, tz)}", style="bold"))
        if r.steps:
            states = [s.order for s in r.steps]
            parts.append(timeline_table(alternative, [s.event for s in r.steps], tz, states,
                                        title=f"order {r.order_id} under {policy_source}"))
        console.print(Group(*parts))
        console.print()
    differ = sum(1 for r in results if r.first_difference is not None or r.problem)
    console.print(f"{differ} of {len(results)} order{'s' if len(results) != 1 else ''} would have gone differently "
                  f"under {policy_source}; times in {_tz_name(tz)}")


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


def import_done(verdicts: list, where: str, tz: tzinfo) -> None:
    from rich import box

    table = _table(title=f"imported into {where}", box=box.SIMPLE_HEAD, title_justify="left")
    for name, justify in (("id", "right"), ("merchant", "left"), ("creator", "left"), ("events", "right"),
                          ("status", "left"), ("liable", "left"), ("next deadline", "left")):
        table.add_column(name, justify=justify)
    for v in verdicts[:IMPORT_ROWS_SHOWN]:
        o = v.rebuilt
        table.add_row(str(o.id), o.terms.merchant, o.terms.creator, str(len(v.exported.events)), _status(o.status),
                      str(o.liable_party or "—"), when(o.deadline, tz))
    console = _console()
    console.print(table)
    if len(verdicts) > IMPORT_ROWS_SHOWN:
        console.print(f"… and {len(verdicts) - IMPORT_ROWS_SHOWN} more (`coopctl list` shows them)")
    console.print(f"{len(verdicts)} order{'s' if len(verdicts) != 1 else ''} imported; every history replayed; times in {_tz_name(tz)}")


# --------------------------------------------------------------------------- doctor


def doctor_report(report, tz: tzinfo) -> None:
    from rich import box
    from rich.text import Text

    table = _table(title=f"doctor: {report.database}", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("check", "", "finding", "what to do"):
        table.add_column(name, overflow="fold")
    for f in report.findings:
        mark = Text("ok", style="green") if f.ok else Text("PROBLEM", style="bold red")
        table.add_row(f.check, mark, f.message, f.action or "")
    console = _console()
    console.print(table)
    problems = len(report.problems)
    verdict = "healthy" if not problems else f"{problems} problem{'s' if problems != 1 else ''}"
    console.print(f"{verdict}: {report.orders} orders checked at {when(report.now, tz)} ({_tz_name(tz)})")
