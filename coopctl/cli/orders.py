"""The lifecycle actions of SPEC section 1: create, accept, … review."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    AtOpt,
    CreatorOpt,
    EvidenceFileOpt,
    JsonOpt,
    MerchantOpt,
    OrderArg,
    ReasonOpt,
    _act,
    _note,
    command,
    emit_json,
    instant,
    one_party,
    report,
    runtime,
)


@command()
def create(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option("--merchant", help="The merchant proposing the order.", show_default=False)],
    creator: Annotated[str, typer.Option("--creator", help="The creator invited.", show_default=False)],
    product: Annotated[list[str], typer.Option("--product", help="A product id; repeat for several.", show_default=False)],
    form: Annotated[str, typer.Option("--form", help="live or video.", show_default=False)],
    commission: Annotated[str, typer.Option("--commission", help="Commission rate in percent (0 < rate <= 100, two decimals).", show_default=False)],
    latest_start: Annotated[str, typer.Option("--latest-start", help="Latest time to go live or publish (ISO 8601).", show_default=False)],
    ad_budget: Annotated[str, typer.Option("--ad-budget", help="Ad budget in yuan (>= 0, two decimals).")] = "0",
    note: Annotated[Optional[str], typer.Option("--note", help="A note on the order.", show_default=False)] = None,
    idempotency_key: Annotated[Optional[str], typer.Option("--idempotency-key", help="Repeat-safe key: the same key and terms return the same order.", show_default=False)] = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A merchant proposes an order to a creator; it waits `pending` for the creator's answer.

    Example: coopctl create --merchant 商家A --creator 达人小王 --product P1 --form live
    --commission 12.5 --ad-budget 5000 --latest-start 2026-12-01T20:00
    """
    from coopctl.service import create_order

    rt = runtime(ctx)

    @report
    def done(result) -> None:
        order, created = result
        if as_json:
            emit_json(order.to_json(rt.tz))
        else:
            from coopctl import render

            render.order_created(order, rt.tz, created)
        if not created:
            sys.stdout.flush()  # the answer first: a report that fails says so alone
            _note(f"order {order.id} already exists for idempotency key {idempotency_key!r}; nothing was changed")

    create_order(
        rt.service, merchant=merchant, creator=creator, products=product, form=form, commission=commission,
        ad_budget=ad_budget, latest_start_at=instant(latest_start, rt, "--latest-start"), note=note,
        at=instant(at, rt), idempotency_key=idempotency_key, report=done,
    )


@command()
def accept(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator accepts a pending order; its terms come into force.

    Example: coopctl accept 12 --creator 达人小王
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.ACCEPT, Party.CREATOR, creator, at, as_json)


@command()
def reject(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, reason: ReasonOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator declines a pending order.

    Example: coopctl reject 12 --creator 达人小王 --reason "schedule full"
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.REJECT, Party.CREATOR, creator, at, as_json, reason=reason)


@command()
def withdraw(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, reason: ReasonOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The merchant withdraws an order before the creator accepted it.

    Example: coopctl withdraw 12 --merchant 商家A
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.WITHDRAW, Party.MERCHANT, merchant, at, as_json, reason=reason)


@command("cancel-request")
def cancel_request(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, reason: ReasonOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """Either party asks to cancel an effective order; the other must answer in time.

    Example: coopctl cancel-request 12 --merchant 商家A --reason "product recalled"
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_REQUEST, party, who, at, as_json, reason=reason)


@command("cancel-confirm")
def cancel_confirm(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The other party agrees to cancel: the order is cancelled by agreement.

    Example: coopctl cancel-confirm 12 --creator 达人小王
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_CONFIRM, party, who, at, as_json)


@command("cancel-decline")
def cancel_decline(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The other party declines to cancel: the order is effective again.

    Example: coopctl cancel-decline 12 --creator 达人小王
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_DECLINE, party, who, at, as_json)


@command("cancel-withdraw")
def cancel_withdraw(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The party that asked to cancel takes the request back: the order is effective again.

    Example: coopctl cancel-withdraw 12 --merchant 商家A
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_WITHDRAW, party, who, at, as_json)


@command("extend-request")
def extend_request(
    ctx: typer.Context,
    order: OrderArg,
    merchant: MerchantOpt = None,
    creator: CreatorOpt = None,
    reason: ReasonOpt = None,
    latest_start: Annotated[Optional[str], typer.Option("--latest-start", help="The later latest start proposed (required; ISO 8601; at most max_extension later).", show_default=False)] = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Either party proposes to move the latest start of an effective order; the other must answer in time.

    Example: coopctl extend-request 12 --creator 达人小王 --latest-start 2026-12-20T20:00 --reason "host ill"
    """
    from coopctl.lifecycle import Action

    from coopctl.errors import InvalidInput

    if latest_start is None:
        raise InvalidInput("extend-request needs --latest-start TS (the later latest start it proposes)")
    party, who = one_party(merchant, creator)
    rt = runtime(ctx)
    _act(ctx, order, Action.EXTEND_REQUEST, party, who, at, as_json, reason=reason, proposal=instant(latest_start, rt, "--latest-start"))


@command("extend-confirm")
def extend_confirm(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The other party agrees: the latest start moves to the proposal.

    Example: coopctl extend-confirm 12 --merchant 商家A
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.EXTEND_CONFIRM, party, who, at, as_json)


@command("extend-decline")
def extend_decline(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The other party declines: the order is effective again, its latest start unchanged.

    Example: coopctl extend-decline 12 --merchant 商家A
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.EXTEND_DECLINE, party, who, at, as_json)


@command("go-live")
def go_live(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator went live or published; delivery follows (automatically after a while).

    Example: coopctl go-live 12 --creator 达人小王 --at 2026-12-01T19:30
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.GO_LIVE, Party.CREATOR, creator, at, as_json)


@command()
def deliver(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, evidence: Annotated[Optional[str], typer.Option("--evidence", help="A link or a note proving the delivery.", show_default=False)] = None, evidence_file: EvidenceFileOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator delivers (also a make-up after a failed review); the merchant reviews it.

    Example: coopctl deliver 12 --creator 达人小王 --evidence https://v.douyin.com/abc --evidence-file screen.png
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.DELIVER, Party.CREATOR, creator, at, as_json, evidence=evidence, evidence_files=evidence_file)


@command()
def review(
    ctx: typer.Context,
    order: OrderArg,
    merchant: MerchantOpt = None,
    passed: Annotated[bool, typer.Option("--pass", help="Accept the delivery.")] = False,
    failed: Annotated[bool, typer.Option("--fail", help="Reject the delivery (needs --reason).")] = False,
    reason: ReasonOpt = None,
    evidence_file: EvidenceFileOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The merchant reviews a delivery: --pass completes it, --fail asks for a make-up.

    Example: coopctl review 12 --merchant 商家A --fail --reason "product not shown" --evidence-file replay.mp4
    """
    from coopctl.errors import InvalidInput
    from coopctl.lifecycle import Action, Party

    if passed == failed:
        raise InvalidInput("review needs exactly one of --pass or --fail")
    if failed and not (reason or "").strip():
        raise InvalidInput("review --fail needs --reason TEXT")
    if passed and reason is not None:
        raise InvalidInput("--reason goes with --fail, not --pass")
    if passed and evidence_file:
        raise InvalidInput("--evidence-file goes with --fail, not --pass")
    action = Action.REVIEW_PASS if passed else Action.REVIEW_FAIL
    _act(ctx, order, action, Party.MERCHANT, merchant, at, as_json, reason=reason, evidence_files=evidence_file)
