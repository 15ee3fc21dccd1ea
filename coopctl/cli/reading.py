"""Reading orders: show, history, list (the outbox's `notifications` is in `coopctl.cli.outbox`)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    FormatOpt,
    Globals,
    JsonOpt,
    OrderArg,
    Runtime,
    WideOpt,
    _number,
    command,
    emit_json,
    instant,
    output_format,
    runtime,
)


AsOfOpt = Annotated[Optional[str], typer.Option("--as-of", help="Show the order as the rules make it at this instant (every deadline up to it fired, in memory; nothing is written).", show_default=False)]


@command()
def show(ctx: typer.Context, order: OrderArg, as_of: AsOfOpt = None, wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """Show an order's terms and the timeline of its events and deadlines; a deadline that passed
    is marked overdue. --as-of TS shows a projection: the order as a tick at TS would leave it.

    Example: coopctl show 12      coopctl show 12 --as-of now+14d
    """
    from coopctl import views
    from coopctl.service import read_order

    rt = runtime(ctx)
    ahead = None if as_of is None else instant(as_of, rt, "--as-of")
    checked = read_order(rt.service, order)  # the chain and the row, checked as they are read
    record, events = checked.shown, checked.printable_events()
    if record is not None:  # print what can be printed, then say what does not hold (exit 1)
        if ahead is not None:
            projected = views.project(record, events, ahead, rt.service.operator, rt.tz)
            if as_json:
                emit_json(views.projection_json(projected, rt.tz))
            else:
                from coopctl import render, render_views

                render_views.projection_header(projected, rt.tz)
                render.order_detail(projected.order, projected.events, rt.tz, wide=wide, now=rt.now)
        else:
            mark = views.overdue(record, rt.now, rt.tz)
            if as_json:
                emit_json({
                    **record.to_json(rt.tz), "events": [e.to_json(rt.tz) for e in events],
                    "overdue": None if mark is None else mark.to_json(rt.tz),
                })
            else:
                from coopctl import render, render_views

                render.order_detail(record, events, rt.tz, wide=wide, now=rt.now)
                render_views.overdue_line(mark, rt.tz)
    refusal = checked.refusal()
    if refusal is not None:
        sys.stdout.flush()
        raise refusal


@command()
def history(ctx: typer.Context, order: OrderArg, fmt: FormatOpt = None, wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """List an order's events with their hashes.

    Example: coopctl history 12 --json
    """
    from coopctl.service import read_order

    rt = runtime(ctx)
    checked = read_order(rt.service, order)  # the chain and the row, checked as they are read
    record, events = checked.shown, checked.printable_events()
    fmt = output_format(fmt, as_json)
    from coopctl import render

    if fmt != "table":
        render.print_records((e.to_json(rt.tz) for e in events), fmt=fmt, table=None, tz=rt.tz, wide=wide)
    elif record is not None:
        render.history_table(record, events, rt.tz, wide=wide)
    refusal = checked.refusal()
    if refusal is not None:
        sys.stdout.flush()
        raise refusal


LIST_PAGE = 50  # rows of a `list` table unless --limit or --all (SPEC section 4, "Lists")
MAX_LIMIT = 100_000  # --limit above this is refused (--all streams every order)


@command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="Only these statuses; repeat for several.", show_default=False)] = None,
    terms: Annotated[Optional[str], typer.Option("--terms", help="Only orders whose terms are in this state: not_yet_effective, in_force, fulfilled, void.", show_default=False)] = None,
    liable: Annotated[Optional[str], typer.Option("--liable", help="Only orders where this party is liable: merchant or creator.", show_default=False)] = None,
    merchant: Annotated[Optional[str], typer.Option("--merchant", help="Only this merchant's orders (ending in * : a prefix).", show_default=False)] = None,
    creator: Annotated[Optional[str], typer.Option("--creator", help="Only this creator's orders (ending in * : a prefix).", show_default=False)] = None,
    product: Annotated[Optional[str], typer.Option("--product", help="Only orders of this product (ending in * : a prefix).", show_default=False)] = None,
    created_after: Annotated[Optional[str], typer.Option("--created-after", help="Only orders created after this instant.", show_default=False)] = None,
    created_before: Annotated[Optional[str], typer.Option("--created-before", help="Only orders created before this instant.", show_default=False)] = None,
    due_before: Annotated[Optional[str], typer.Option("--due-before", help="Only orders whose next deadline is before this instant (sorts by deadline).", show_default=False)] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only orders whose deadline has passed without a tick (sorts by deadline).")] = False,
    sort: Annotated[Optional[str], typer.Option("--sort", help="id, created or deadline; -KEY descending [default: id].", show_default=False)] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="The cursor a page printed: the page after it.", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help=f"At most this many orders [default: {LIST_PAGE} as a table, all otherwise].", parser=_number("--limit", high=MAX_LIMIT), show_default=False)] = None,
    every: Annotated[bool, typer.Option("--all", help="Every order, not a page.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, whatever the width.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="table, json, jsonl, csv or tsv [default: table].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List orders, a page at a time, with their next deadline and what happens then.

    Example: coopctl list --status pending --due-before now+1d
    """
    from coopctl.service import list_page, walk_orders

    rt = runtime(ctx)
    query, given = _list_query(rt, status=status, terms=terms, liable=liable, merchant=merchant, creator=creator,
                               product=product, created_after=created_after, created_before=created_before,
                               due_before=due_before, overdue=overdue, sort=sort)
    fmt = output_format(fmt, as_json)
    if every and limit is not None:
        raise _invalid("--all and --limit cannot be given together: --all lists every order")
    size = None if every else limit if limit is not None else LIST_PAGE if fmt == "table" else None
    rows = fmt != "table"  # machine formats: records made from the stored rows (render.order_records)
    if size is None and fmt == "jsonl":  # a whole book, perhaps: on two cores (coopctl/linehelper.py)
        from coopctl.linehelper import print_jsonl
        from coopctl.service import walk_order_chunks

        print_jsonl(walk_order_chunks(rt.service, query, after=after), rt.tz)
        return
    if size is None:
        _print_orders(walk_orders(rt.service, query, after=after, rows=rows), fmt=fmt, tz=rt.tz, wide=wide, now=rt.now, rows=rows)
        return
    page = list_page(rt.service, query, after=after, limit=size, rows=rows)
    _print_orders(page.orders, fmt=fmt, tz=rt.tz, wide=wide, footer=_list_footer(ctx, rt, page, given, fmt), now=rt.now, rows=rows)


def _invalid(message: str):
    from coopctl.errors import InvalidInput

    return InvalidInput(message)


def _list_query(rt: "Runtime", *, status, terms, liable, merchant, creator, product, created_after, created_before,
                due_before, overdue, sort):
    """The ListQuery of `list`'s options, checked (exit 2 when one is not valid), and the options
    as the next page's command repeats them (instants as resolved, with their offset)."""
    from coopctl import trust
    from coopctl.lifecycle import TERMS_OF, Party, Status, TermsState
    from coopctl.policy import iso
    from coopctl.store import LIST_SORTS, ListQuery

    given: list[str] = []
    known = [s.value for s in Status]
    statuses = None
    for s in status or []:
        if s not in known:
            raise _invalid(f"--status: unknown status {s[:40]!r} (known: {', '.join(sorted(known))})")
        given += ["--status", s]
    if status:
        statuses = tuple(dict.fromkeys(status))
    if terms is not None:
        if terms not in {t.value for t in TermsState}:
            raise _invalid(f"--terms: unknown terms state {terms[:40]!r} (known: {', '.join(t.value for t in TermsState)})")
        of_terms = tuple(s.value for s in Status if TERMS_OF[s] == terms)
        statuses = of_terms if statuses is None else tuple(s for s in statuses if s in of_terms)
        given += ["--terms", terms]
    if liable is not None:
        if liable not in {p.value for p in Party}:
            raise _invalid(f"--liable: must be merchant or creator, got {liable[:40]!r}")
        given += ["--liable", liable]
    ids = {}
    for option, value in (("--merchant", merchant), ("--creator", creator), ("--product", product)):
        if value is not None:
            if value != "*":
                trust.check_id(value[:-1] if value.endswith("*") else value, option.lstrip("-"))
            ids[option] = value
            given += [option, value]
    instants = {}
    for option, value in (("--created-after", created_after), ("--created-before", created_before), ("--due-before", due_before)):
        if value is not None:
            instants[option] = instant(value, rt, option)
            given += [option, iso(instants[option], rt.tz)]
    if overdue:
        given.append("--overdue")
    if sort is None:
        key, descending = ("deadline" if due_before is not None or overdue else
                           "created" if created_after is not None or created_before is not None else "id"), False
    else:
        key, descending = sort.removeprefix("-"), sort.startswith("-")
        if key not in LIST_SORTS:
            raise _invalid(f"--sort: unknown sort key {sort[:40]!r} (known: {', '.join(LIST_SORTS)}, each with - for descending)")
        given += ["--sort", sort]
    query = ListQuery(
        statuses=statuses, merchant=ids.get("--merchant"), creator=ids.get("--creator"), product=ids.get("--product"),
        liable=liable, created_after=instants.get("--created-after"), created_before=instants.get("--created-before"),
        due_before=instants.get("--due-before"), overdue_at=rt.now if overdue else None, sort=key, descending=descending,
    )
    return query, given


def _list_footer(ctx: typer.Context, rt: "Runtime", page, given: list[str], fmt: str) -> str | None:
    """How many of how many were shown and the exact command of the next page (None for a machine
    format that printed every match)."""
    import shlex

    if fmt != "table" and page.next_cursor is None:
        return None
    total = f"more than {page.total:,}" if page.more_than else f"{page.total:,}"
    line = f"{len(page.orders):,} of {total} order{'' if total == '1' else 's'}"
    if fmt == "table":
        line += f"; times in {getattr(rt.tz, 'key', rt.tz)}"
    if page.next_cursor is None:
        return line
    g: Globals = ctx.find_root().obj or Globals(None, None, None)
    words = ["coopctl"]
    for option, value in (("--db", g.db), ("--config", g.config)):
        if value and value != os.environ.get(f"COOPCTL_{option[2:].upper()}"):
            words += [option, value]
    words += ["list", *given]
    limit = ctx.params.get("limit")
    if limit is not None:
        words += ["--limit", str(limit)]
    if fmt != "table":
        words += ["--format", fmt]
    if ctx.params.get("wide"):
        words.append("--wide")
    words += ["--after", page.next_cursor]
    return f"{line}; next page: {shlex.join(words)}"


def _print_orders(orders, *, fmt: str, tz, wide: bool, footer: str | None = None, now: int | None = None,
                  rows: bool = False) -> None:
    """The one place `list` prints, through the one printer (`render.print_records`): the table's
    footer is its last line on a terminal and goes to stderr when piped; a machine format that a
    limit cut says so on stderr. `orders` are Orders, or with `rows` their stored rows, whose
    records `render.order_records` makes directly (the same JSON, byte for byte)."""
    from coopctl import render
    from coopctl.trust import shown

    records = render.order_records(orders, tz) if rows else (o.to_json(tz) for o in orders)
    table_footer = footer if fmt == "table" else None
    render.print_records(records, fmt=fmt, table=render.ORDER_TABLE, tz=tz, wide=wide, footer=table_footer, now=now)
    if footer and fmt != "table":
        sys.stdout.flush()
        sys.stderr.write(shown(footer) + "\n")
