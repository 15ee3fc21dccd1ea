"""Moving histories: export, replay, import (SPEC section 2)."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    JsonOpt,
    _number,
    command,
    emit_json,
    instant,
    report,
    runtime,
)


ExportFileArg = Annotated[str, typer.Argument(help="An export file written by `coopctl export` (- reads stdin).", show_default=False)]


def _read_export(file: str):
    """Parse an export file (or stdin for -); malformed -> InvalidInput (exit 2)."""
    from coopctl import exchange

    if file == "-":
        return exchange.parse_document(sys.stdin.buffer, source="stdin")
    return exchange.load(file)


@command()
def export(
    ctx: typer.Context,
    orders: Annotated[Optional[list[int]], typer.Argument(help="The order ids to export.", parser=_number("order id", order_id=True), show_default=False)] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Export every order.")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="Write the export to this file (atomically) instead of stdout.", show_default=False)] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="The instant recorded as exported_at (ISO 8601) [default: now].", show_default=False)] = None,
    with_evidence: Annotated[bool, typer.Option("--with-evidence", help="Carry the contents of the orders' evidence files (base64); without it they are named by hash only.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write orders with their terms, policy, events and notifications as a versioned JSON document.

    Example: coopctl export 7 12 --out dispute-7.json    (or: coopctl export --all > all.json)
    """
    from coopctl import exchange, render
    from coopctl.errors import InvalidInput

    if not orders and not all_orders:
        raise InvalidInput("name the orders to export (coopctl export 7 12) or give --all")
    if orders and all_orders:
        raise InvalidInput("give order ids or --all, not both")
    rt = runtime(ctx)
    exported_at = instant(at, rt)
    # written as it is read, in chunks; a bar on stderr unless the document itself goes to the terminal
    with render.counted_progress("export", show=out is not None or not sys.stdout.isatty()) as (total_hint, advance):
        summary = exchange.write_export(
            rt.service, None if all_orders else orders, sys.stdout if out is None else out,
            exported_at=exported_at, tz=rt.tz, total_hint=total_hint, progress=advance, with_evidence=with_evidence,
        )
    if out is None:
        return
    if as_json:
        emit_json({"file": out, "exported_at": summary.exported_at, "orders": summary.ids.tolist()})
    else:
        render.export_done(out, len(summary.ids), summary.events, summary.notifications)


@command()
def replay(
    ctx: typer.Context,
    file: ExportFileArg,
    policy: Annotated[Optional[str], typer.Option("--policy", help="What if: replay the party actions under the [policy] of this TOML file (informational, exit 0).", show_default=False)] = None,
    public_key: Annotated[Optional[str], typer.Option("--public-key", help="First check the file's seal as `coopctl verify` does (a file holding the base64 key, or the key).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild every order of an export from its events with the rules; check hashes, timing and outcome.

    Exit 0 when every order is reproduced, 1 naming the order and event seq where one diverges,
    2 when the file is not a coopctl export. Nothing is written (a scratch database is used).

    Example: coopctl replay dispute-7.json    (what if: coopctl replay dispute-7.json --policy other.toml)
    """
    from coopctl import exchange, render
    from coopctl.config import load_settings
    from coopctl.errors import Refused

    rt = runtime(ctx)
    key = None
    if public_key is not None:
        from coopctl.seal import parse_public_key

        key = parse_public_key(public_key)
    export_file = _read_export(file)
    source = "stdin" if file == "-" else os.path.basename(file)
    if key is not None:  # SPEC section 6: the same checks as `verify`, before replaying
        from coopctl.seal import check_verification, verify_export

        check_verification(verify_export(export_file, key), require_sealed=False)
    if policy is not None:
        other = load_settings(policy, explicit=True).policy
        results = exchange.what_if(export_file, other)
        if as_json:
            emit_json([r.to_json(rt.tz) for r in results])
        else:
            render.what_if_report(results, rt.tz, os.path.basename(policy))
        return
    verdicts = exchange.replay(export_file)
    if as_json:
        emit_json([v.to_json(rt.tz) for v in verdicts])
    else:
        render.replay_report(verdicts, rt.tz, source)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        more = f" ({len(failed)} of {len(verdicts)} orders diverge)" if len(failed) > 1 else ""
        raise Refused(f"{failed[0].message}{more}; this history is not what the rules produce")


@command("import")
def import_(ctx: typer.Context, file: ExportFileArg, as_json: JsonOpt = False) -> None:
    """Load the orders of an export, keeping ids, events and hashes, after the same checks as replay.

    All or nothing: a history that does not replay, or an order id that already exists, is refused
    and nothing is written. Imported orders keep their own policy; `tick` treats them like any other.

    Example: coopctl --db support.db import dispute-7.json
    """
    from coopctl import exchange, render

    rt = runtime(ctx)
    export_file = _read_export(file)
    where = rt.service.store.location.display

    @report
    def done(verdicts) -> None:
        bar.close()  # the progress bar is gone before the report is drawn
        if as_json:
            emit_json({
                "database": where,
                "imported": [v.order_id for v in verdicts],
                "events": sum(len(v.exported.events) for v in verdicts),
                "notifications": sum(len(v.exported.notifications) for v in verdicts),
            })
        else:
            render.import_done(verdicts, where, rt.tz)

    with ExitStack() as bar:
        advance = bar.enter_context(render.progress(2 * len(export_file.orders), "import (replay, then write)"))
        exchange.import_orders(rt.service, export_file, progress=advance, report=done)
