"""`tick`: every deadline up to now, as the rules fire them."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    JsonOpt,
    Runtime,
    _number,
    clock,
    command,
    emit_json,
    instant,
    report,
    runtime,
)


def _tick_helper() -> bool | None:
    """COOPCTL_TICK_HELPER: `auto` (the default: a helper process decides large batches on a
    machine with two cores or more), `on` or `off`."""
    from coopctl.errors import InvalidInput

    raw = os.environ.get("COOPCTL_TICK_HELPER", "auto")
    choices = {"auto": None, "on": True, "off": False}
    if raw.strip().lower() not in choices:
        raise InvalidInput(f"COOPCTL_TICK_HELPER must be auto, on or off, got {raw!r}")
    return choices[raw.strip().lower()]


@command()
def tick(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="Apply everything due up to this instant [default: now].", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would happen; write nothing.")] = False,
    listing: Annotated[bool, typer.Option("--list", help="With --dry-run: each order that would change, its transitions and reminders.")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Orders per transaction; each batch commits on its own, so a smaller one holds the write lock for less time [default: 20000 on SQLite, 5000 on PostgreSQL].", parser=_number("--batch", high=1_000_000), show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fire every deadline and reminder due by now; cron runs this every minute.

    Example (crontab): * * * * * cd /srv/coop && coopctl tick --json >> tick.log
    """
    from coopctl import render
    from coopctl.service import tick as run_tick
    from coopctl.tickwork import quiet_gc

    if listing and not dry_run:
        from coopctl.errors import InvalidInput

        raise InvalidInput("--list goes with --dry-run (coopctl tick --dry-run --list)")
    rt = runtime(ctx)
    at = instant(now, rt, "--now")
    helper = _tick_helper()
    if listing:
        return _tick_list(rt, at, batch, as_json)

    def show(summary) -> None:
        bar.close()  # the progress bar is gone (from the terminal too) before the report is drawn
        if as_json:
            emit_json(render.tick_json(summary, rt.tz))
        else:
            render.tick_summary(summary, rt.tz, dry_run)

    with ExitStack() as bar:
        total_hint, progress = bar.enter_context(render.tick_progress())
        sizing = {} if batch is None else {"batch": batch}
        quiet_gc()
        summary = run_tick(
            rt.service, at, dry_run=dry_run, progress=progress, total_hint=total_hint, clock=clock, helper=helper,
            report=None if dry_run else report(show), **sizing
        )
    if dry_run:  # wrote nothing: its report is a read-only command's output
        show(summary)


def _tick_list(rt: Runtime, at: int, batch: int | None, as_json: bool) -> None:
    """`tick --dry-run --list`: each order that would change is printed as its chunk is decided
    (streamed: a dry run over 100,000 due orders holds one chunk, not every order's list)."""
    from coopctl import render, views
    from coopctl.service import tick as run_tick

    out = sys.stdout
    first = [True]

    def listed(decided) -> None:
        for change in views.changes_of(decided):
            if as_json:
                out.write(("\n    " if first[0] else ",\n    ") + render.json_text(change.to_json(rt.tz), indent=None))
            else:
                from coopctl.render_views import tick_change_line

                tick_change_line(change, rt.tz)
            first[0] = False

    if as_json:  # the report's keys, with "orders" streamed after "now"
        from coopctl.policy import iso

        out.write('{\n  "now": ' + render.json_text(iso(at, rt.tz)) + ',\n  "orders": [')
    sizing = {} if batch is None else {"batch": batch}
    summary = run_tick(rt.service, at, dry_run=True, clock=clock, helper=False, on_decided=listed, **sizing)
    if as_json:
        rest = render.tick_json(summary, rt.tz)
        rest.pop("now")
        body = render.json_text(rest)[1:].lstrip("\n")  # its keys, without the opening brace
        out.write(("" if first[0] else "\n  ") + "],\n" + body + "\n")
    else:
        render.tick_summary(summary, rt.tz, True)
