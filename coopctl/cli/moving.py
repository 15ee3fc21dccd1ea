"""Moving histories: export, replay, import (SPEC section 2)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, closing, contextmanager
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
    """Parse a whole export file (or stdin for -) into memory; malformed -> InvalidInput (exit 2).
    For `replay --policy`, which keeps every order to compare; the other commands stream."""
    from coopctl import exchange

    if file == "-":
        return exchange.parse_document(sys.stdin.buffer, source="stdin")
    return exchange.load(file)


@contextmanager
def _streamed(file: str, *, want_seal: bool = False):
    """An export being read (`coopctl.streaming`), its file closed at the end."""
    from coopctl.streaming import open_source

    stream = open_source(file, want_seal=want_seal)
    try:
        yield stream
    finally:
        if file != "-":
            stream.scanned.raw.close()


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


OrderIdsOpt = Annotated[
    Optional[list[int]],
    typer.Option("--order", help="Replay only this order of the file (repeatable); an id the file does not hold is exit 3.",
                 parser=_number("order id", order_id=True), show_default=False),
]


@command()
def replay(
    ctx: typer.Context,
    file: ExportFileArg,
    policy: Annotated[Optional[str], typer.Option("--policy", help="What if: replay the party actions under the [policy] of this TOML file (informational, exit 0).", show_default=False)] = None,
    public_key: Annotated[Optional[str], typer.Option("--public-key", help="First check the file's seal as `coopctl verify` does (a file holding the base64 key, or the key).", show_default=False)] = None,
    summary: Annotated[bool, typer.Option("--summary", help="One line per order that does not reproduce, then the totals, instead of every timeline.")] = False,
    only: OrderIdsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild every order of an export from its events with the rules; check hashes, timing and outcome.

    Exit 0 when every order is reproduced, 1 naming the order and event seq where one diverges,
    2 when the file is not a coopctl export, 3 when an --order is not in the file. Nothing is
    written (a scratch database is used). The file is read as it goes: memory does not grow with it.

    Example: coopctl replay all.json --summary    (or: coopctl replay dispute-7.json --order 7; what if: --policy other.toml)
    """
    from coopctl import exchange, render
    from coopctl.config import load_settings
    from coopctl.errors import NotFound, Refused

    rt = runtime(ctx)
    key = None
    if public_key is not None:
        from coopctl.seal import parse_public_key

        key = parse_public_key(public_key)
    source = "stdin" if file == "-" else os.path.basename(file)
    if policy is not None:
        other = load_settings(policy, explicit=True).policy
        export_file = _read_export(file)
        if key is not None:  # SPEC section 6: the same checks as `verify`, before replaying
            from coopctl.seal import check_verification, verify_export

            check_verification(verify_export(export_file, key), require_sealed=False)
        if only:
            export_file = exchange.ExportFile(export_file.exported_at, [o for o in export_file.orders if o.id in set(only)], export_file.seal)
        results = exchange.what_if(export_file, other)
        if as_json:
            emit_json([r.to_json(rt.tz) for r in results])
        else:
            render.what_if_report(results, rt.tz, os.path.basename(policy))
        return
    held = None
    if key is not None and file == "-":  # stdin is read once: held, verified, then replayed (as before streaming)
        from coopctl.seal import check_verification, verify_export

        held = _read_export(file)
        check_verification(verify_export(held, key), require_sealed=False)
    elif key is not None:  # the seal is checked over the whole file first (a second read of it)
        _verify_first(file, key)
    wanted = set(only or ())
    found: set[int] = set()
    failed: list = []
    good = total = 0
    started = time.perf_counter()
    collected: list = []  # --json: the verdicts' JSON (small), --summary --json: only those that diverge
    with ExitStack() as reading:
        if held is not None:
            orders = iter(held.orders)
        else:
            stream = reading.enter_context(_streamed(file))
            stream.progress = reading.enter_context(render.file_progress("replay", stream.size))
            orders = stream.orders()
        if wanted:
            orders = (o for o in orders if o.id in wanted and not found.add(o.id))
        if summary and held is None and not wanted:  # every order, only the outcome kept: on two cores
            from coopctl.replayhelper import verdict_chunks

            chunks = reading.enter_context(closing(verdict_chunks(stream, full=False)))
        else:
            chunks = exchange.replay_chunks(orders, keep_steps=not summary and not as_json)
        first = True
        for chunk in chunks:
            for verdict in chunk:
                total += 1
                if verdict.ok:
                    good += 1
                elif len(failed) < exchange.NAMED:
                    failed.append(verdict.message)
                else:
                    failed.append(None)
            if as_json:
                collected.extend(v.to_json(rt.tz) for v in chunk if not summary or not v.ok)
            elif summary:
                for verdict in chunk:
                    if not verdict.ok:
                        render.replay_summary_line(verdict, rt.tz)
            else:
                render.replay_report(chunk, rt.tz, source, totals=False, first=first)
                first = first and not chunk
    seconds = time.perf_counter() - started
    if as_json:
        emit_json({"orders": total, "reproduced": total - len(failed), "diverge": collected} if summary else collected)
    elif summary:
        render.replay_totals(good, total, rt.tz, seconds=seconds)
    else:
        if total:
            sys.stdout.write("\n")
        render.replay_totals(good, total, rt.tz)
    missing = sorted(wanted - found)
    if missing:
        raise NotFound(f"no order {exchange._named(missing)} in {source}")
    if failed:
        more = f" ({len(failed)} of {total} orders diverge)" if len(failed) > 1 else ""
        raise Refused(f"{failed[0]}{more}; this history is not what the rules produce")


def _verify_first(file: str, key: bytes) -> None:
    """`replay --public-key`: `verify`'s checks, streamed, before anything is replayed."""
    from coopctl.seal import check_verification

    check_verification(verified(file, key), require_sealed=False)


def verified(file: str, key: bytes):
    """`seal.verify_stream` of FILE (or stdin), a regular file read again when its tree head
    comes after orders that carry proofs."""
    from coopctl.seal import verify_stream
    from coopctl.streaming import open_path

    reopen = None if file == "-" else (lambda: open_path(file, want_seal=True))
    with _streamed(file, want_seal=True) as stream:
        return verify_stream(stream, key, reopen)


@command("import")
def import_(ctx: typer.Context, file: ExportFileArg, as_json: JsonOpt = False) -> None:
    """Load the orders of an export, keeping ids, events and hashes, after the same checks as replay.

    All or nothing: a history that does not replay, an order id that already exists, or a file that
    turns out malformed at its end is refused and nothing is written (one transaction). The file is
    read as it goes (FILE or - for stdin): memory does not grow with it. Imported orders keep their
    own policy; `tick` treats them like any other.

    Example: coopctl --db support.db import dispute-7.json    (a move: coopctl --db OLD export --all | coopctl --db NEW import -)
    """
    from coopctl import exchange, render

    rt = runtime(ctx)
    where = rt.service.store.location.display
    bars: list = []

    @report
    def done(summary) -> None:
        for bar in bars:
            bar.close()  # the progress bar is gone before the report is drawn
        if as_json:
            emit_json({
                "database": where,
                "imported": summary.ids.tolist(),
                "events": summary.events,
                "notifications": summary.notifications,
            })
        else:
            render.import_done(summary, where, rt.tz)

    with _streamed(file) as stream:
        from contextlib import ExitStack

        with ExitStack() as bar:
            bars.append(bar)
            update = bar.enter_context(render.file_progress("import", stream.size))
            stream.progress = update  # the bar follows the bytes read
            exchange.import_orders(rt.service, stream, report=done)
