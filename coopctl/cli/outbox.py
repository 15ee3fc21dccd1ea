"""The outbox (SPEC section 5): notifications (list, retry, --mark-sent) and dispatch."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    CHANNELS,
    DELIVERY_STATES as STATES,
    FormatOpt,
    JsonOpt,
    WideOpt,
    _note,
    _number,
    clock,
    command,
    emit_json,
    instant,
    output_format,
    report,
    runtime,
)

MAX_CONCURRENCY = 256


def _invalid(message: str):
    from coopctl.errors import InvalidInput

    return InvalidInput(message)


def _choices(values: list[str] | None, known: tuple[str, ...], option: str) -> tuple[str, ...] | None:
    """Repeated option values, each one of `known` (exit 2 otherwise), without repeats; None: all."""
    if not values:
        return None
    for value in values:
        if value not in known:
            raise _invalid(f"{option}: unknown value {value[:40]!r} (known: {', '.join(known)})")
    return tuple(dict.fromkeys(values))


def _duration(value: str, option: str) -> int:
    from coopctl.policy import InvalidValue, parse_duration

    try:
        return parse_duration(value, allow_zero=False)
    except InvalidValue as exc:
        raise _invalid(f"{option}: {exc}") from None


@command()
def notifications(
    ctx: typer.Context,
    words: Annotated[Optional[list[str]], typer.Argument(metavar="[retry ID …]", help="`retry ID …` (or `retry --dead`): make dead or failed notifications pending again, due at once.", show_default=False)] = None,
    order: Annotated[Optional[int], typer.Option("--order", help="Only this order's notifications.", parser=_number("--order", order_id=True), show_default=False)] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only those not yet delivered (state pending).")] = False,
    state: Annotated[Optional[list[str]], typer.Option("--state", help="Only these delivery states: pending, sent, failed, dead; repeat for several.", show_default=False)] = None,
    channel: Annotated[Optional[list[str]], typer.Option("--channel", help="Only this channel: inbox or sms; repeat for both.", show_default=False)] = None,
    mark_sent: Annotated[bool, typer.Option("--mark-sent", help="Mark the pending ones listed as sent, at once (a dispatcher of your own; `coopctl dispatch` retries instead).")] = False,
    dead: Annotated[bool, typer.Option("--dead", help="With retry: every dead notification.")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many notifications (not with --mark-sent).", parser=_number("--limit"), show_default=False)] = None,
    fmt: FormatOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The notification outbox (in-app messages and SMS), oldest first, with each one's delivery
    state; `notifications retry ID …` (or `--dead`) gives dead or failed ones another round.

    Example: coopctl notifications --state dead      coopctl notifications retry --dead
    """
    fmt = output_format(fmt, as_json)
    if words:
        if words[0] != "retry":
            raise _invalid(f"unknown word {words[0][:40]!r}: `coopctl notifications retry ID …` or options only")
        if pending or state or channel or mark_sent or limit is not None or order is not None:
            raise _invalid("retry takes notification ids or --dead, and no filters")
        _retry(ctx, words[1:], dead, as_json)
        return
    if dead:
        raise _invalid("--dead goes with retry: coopctl notifications retry --dead")
    states = _choices(state, STATES, "--state")
    if pending:
        states = ("pending",) if states is None else tuple(s for s in states if s == "pending") or ("none",)
    channels = _choices(channel, CHANNELS, "--channel")
    rt = runtime(ctx)
    from coopctl import render

    if not mark_sent:  # read only: the rows stream from the database
        from coopctl.service import iter_notification_rows

        rows = iter_notification_rows(rt.service, order_id=order, states=states, channels=channels, limit=limit)
        render.notification_list(render.notification_records(rows, rt.tz), rt.tz, wide=wide, fmt=fmt)
        return
    if limit is not None or state or channel:
        raise _invalid("--mark-sent hands out every pending notification (of --order): not with --limit, --state or --channel")
    from coopctl.service import notifications as outbox

    def show(rows) -> None:
        render.notifications_table(rows, rt.tz, wide=wide, fmt=fmt)

    # --mark-sent: what is handed out is written and flushed before it is marked sent
    outbox(rt.service, order_id=order, pending=True, mark_sent_at=instant(None, rt), report=report(show), wall=clock())


def _retry(ctx: typer.Context, ids: list[str], dead: bool, as_json: bool) -> None:
    from coopctl import trust
    from coopctl.service import retry_notifications

    if dead == bool(ids):
        raise _invalid("retry needs notification ids or --dead (not both)")
    numbers = [trust.parse_count(i, "notification id", low=1, high=2**63 - 1) for i in ids] if ids else None
    rt = runtime(ctx)

    @report
    def done(count: int) -> None:
        if as_json:
            emit_json({"retried": count})
        else:
            sys.stdout.write(f"{count} notification{'' if count == 1 else 's'} pending again, due at once\n")

    retry_notifications(rt.service, numbers, report=done)


@command()
def dispatch(
    ctx: typer.Context,
    exec_: Annotated[Optional[str], typer.Option("--exec", help="Run this command per notification (split as a shell would, no shell): the JSON on stdin; exit 0 is delivered.", show_default=False)] = None,
    webhook: Annotated[Optional[str], typer.Option("--webhook", help="POST each notification's JSON here; any 2xx is delivered.", show_default=False)] = None,
    channel: Annotated[Optional[list[str]], typer.Option("--channel", help="Only this channel: inbox or sms; repeat for both.", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Claim at most this many notifications in this run.", parser=_number("--limit"), show_default=False)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Deliveries at a time.", parser=_number("--concurrency", high=MAX_CONCURRENCY))] = 4,
    timeout: Annotated[str, typer.Option("--timeout", help="A delivery that takes longer fails (the command and its process group are killed).")] = "30s",
    lease: Annotated[str, typer.Option("--lease", help="How long a claim holds without renewal (the wall clock); a dead dispatcher's claims are due again after it.")] = "5m",
    loop: Annotated[bool, typer.Option("--loop", help="Keep claiming every --interval until SIGINT or SIGTERM.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="With --loop: the wait when nothing is due.")] = "10s",
    now: Annotated[Optional[str], typer.Option("--now", help="The clock for what is due, sent_at and next_attempt_at [default: the wall clock].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver the outbox: claim what is due (oldest first), deliver it, record sent / failed
    (tried again after a backoff) / dead. At least once: a notification is marked sent only after
    its delivery succeeded. Exit 0 whatever the deliveries did; `--json` prints the summary.

    Example: coopctl dispatch --exec 'send-sms --quiet' --concurrency 8 --loop
    """
    import signal
    import threading

    from coopctl import outbox

    if (exec_ is None) == (webhook is None):
        raise _invalid("give exactly one of --exec CMD or --webhook URL")
    options = outbox.Options(
        concurrency=concurrency, timeout=_duration(timeout, "--timeout"), lease=_duration(lease, "--lease"),
        channels=_choices(channel, CHANNELS, "--channel"), limit=limit, loop=loop,
        interval=_duration(interval, "--interval"), now=None,
    )
    rt = runtime(ctx)
    if now is not None:
        from dataclasses import replace

        options = replace(options, now=instant(now, rt, "--now"))
    if exec_ is not None:
        deliver = outbox.ExecDelivery(exec_, options.timeout)
    else:
        deliver = outbox.WebhookDelivery(webhook, options.timeout, rt.settings.webhook_key, concurrency)
    stop = threading.Event()
    previous = {}

    def stopping(signum, frame) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, stopping)
    try:
        summary = outbox.dispatch(rt.service, deliver, options, wall=clock, stop=stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        close = getattr(deliver, "close", None)
        if close is not None:
            close()
    if stop.is_set():
        _note("dispatch: stopped by a signal; what was in flight was recorded, unstarted claims released")
    # Each delivery was recorded as it ended (a delivery that happened cannot be undone by a
    # report that fails): the summary is said afterwards.
    if as_json:
        emit_json(summary.to_json())
    else:
        sys.stdout.write(summary.line() + "\n")
