"""Databases: init, doctor, demo."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    DEMO_DB,
    JsonOpt,
    command,
    emit_json,
    instant,
    report,
    runtime,
)


@command()
def init(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Create an empty coopctl database (nothing happens if it already is one).

    Example: coopctl --db /srv/coop/coopctl.db init
    """
    from coopctl.service import initialise

    rt = runtime(ctx)
    where = rt.service.store.location.display

    @report
    def done(created: bool) -> None:
        if as_json:
            emit_json({"database": where, "created": created})
        else:
            from coopctl.trust import shown

            sys.stdout.write(f"{'created' if created else 'already a coopctl database:'} {shown(where)}\n")

    initialise(rt.service, report=done)


@command()
def doctor(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="Check for deadlines missed as of this instant [default: now].", show_default=False)] = None,
    grace: Annotated[str, typer.Option("--grace", help="How long past a deadline counts as missed by cron.")] = "10m",
    quick: Annotated[bool, typer.Option("--quick", help="Check the orders' hash chains only, without rebuilding each order through the rules.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a database: integrity, schema version, every order's hash chain and its row rebuilt
    from its events through the rules, old ids, missed deadlines (cron).

    Each finding says what to do. Exit 0 when healthy, 1 when something needs attention; only reads.

    Example (crontab, hourly): 0 * * * * coopctl doctor > /dev/null || mail -s coopctl ops
    """
    from coopctl import render
    from coopctl.doctor import Unhealthy, examine
    from coopctl.errors import InvalidInput
    from coopctl.policy import InvalidValue, parse_duration

    try:
        grace_us = parse_duration(grace, allow_zero=True)
    except InvalidValue as exc:
        raise InvalidInput(f"--grace: {exc}") from None
    rt = runtime(ctx)
    report = examine(rt.service.store, instant(now, rt, "--now"), rt.tz, grace=grace_us, quick=quick,
                     signing_key=bool(rt.settings.signing_key_path))
    if as_json:
        emit_json(report.to_json(rt.tz))
    else:
        render.doctor_report(report, rt.tz)
    if not report.healthy:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise Unhealthy(f"{first.message}{more}; {first.action}")


@command()
def demo(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Build a demonstration database (every status), run tick, and show the orders.

    Its scripted orders ship with coopctl; it never touches a database it did not create.

    Example: coopctl demo     # writes ./coopctl-demo.db; then: coopctl --db coopctl-demo.db list
    """
    from coopctl import render
    from coopctl.demo import run_demo
    from coopctl.errors import ReportFailed

    rt = runtime(ctx, default_db=DEMO_DB, config_db=False)
    orders = run_demo(rt.service, now=instant(None, rt))
    where = rt.service.store.location.display
    try:  # the demo builds a database of its own, and keeps it: its report is said afterwards
        if as_json:
            emit_json([o.to_json(rt.tz) for o in orders])
        else:
            render.demo_view(orders, rt.tz, where)
            sys.stdout.write("\n")
            for hint in _look_at_demo(ctx, where, orders).strip("\n").splitlines():
                render.line(hint)  # a view's line: fitted to the width like the rest
        sys.stdout.flush()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportFailed(reason, f"could not write the report ({reason}); the demo database {where} was built") from None


def _look_at_demo(ctx: typer.Context, where: str, orders) -> str:
    """How to look at the demo database: the commands to type next, with its --db."""
    import shlex

    from coopctl.trust import shown

    given = ctx.find_root().obj.db
    db = DEMO_DB if given is None else (where if "://" in given else given)  # a URL as displayed: no password
    first = min((o.id for o in orders), default=1)
    base = f"coopctl --db {shown(shlex.quote(db))}"
    return f"\nLook at it: {base} list\n            {base} show {first}    (also: history, notifications)\n"
