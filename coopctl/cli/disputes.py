"""Disputes (SPEC section 1): a party complains, the platform rules, a party appeals the ruling."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from coopctl.cli.base import AtOpt, CreatorOpt, EvidenceFileOpt, JsonOpt, MerchantOpt, OrderArg, _act, command, one_party

# Required by the rules, not by the parser: without one, the error says so on one line (exit 2).
DisputeReasonOpt = Annotated[Optional[str], typer.Option("--reason", metavar="TEXT", help="Why (required), recorded on the event.", show_default=False)]


@command()
def complain(
    ctx: typer.Context,
    order: OrderArg,
    merchant: MerchantOpt = None,
    creator: CreatorOpt = None,
    reason: DisputeReasonOpt = None,
    evidence: Annotated[Optional[str], typer.Option("--evidence", metavar="TEXT", help="A link or a note supporting the complaint.", show_default=False)] = None,
    evidence_file: EvidenceFileOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A party takes an ended order to platform arbitration: the party not liable of a
    closed_overdue or cancelled_unilaterally order, or either party of a completed one, within
    complaint_window of its ending.

    Example: coopctl complain 12 --merchant 商家A --reason "never went live" --evidence-file call.mp3
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.COMPLAIN, party, who, at, as_json, reason=reason, evidence=evidence, evidence_files=evidence_file)


@command()
def arbitrate(
    ctx: typer.Context,
    order: OrderArg,
    ruling: Annotated[Optional[str], typer.Option("--ruling", help="The party in breach: merchant, creator or none.", show_default=False)] = None,
    reason: DisputeReasonOpt = None,
    amount: Annotated[Optional[str], typer.Option("--amount", metavar="YUAN", help="What the party in breach owes the other (>= 0, two decimals; not with none).", show_default=False)] = None,
    evidence_file: EvidenceFileOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The platform rules on a disputed order (actor `platform`; --operator records who typed it).
    Either party may appeal within appeal_window; after max_appeals appeals the ruling is final.

    Example: coopctl arbitrate 12 --ruling creator --amount 500 --reason "no live stream recorded" --evidence-file ruling.pdf
    """
    from coopctl.errors import InvalidInput
    from coopctl.lifecycle import RULINGS, Action

    if ruling is None:
        raise InvalidInput("arbitrate needs --ruling merchant, creator or none")
    if ruling not in RULINGS:
        raise InvalidInput(f"--ruling must be merchant, creator or none, got {ruling!r}")
    _act(ctx, order, Action.ARBITRATE, None, None, at, as_json, reason=reason, ruling=ruling, amount=amount, evidence_files=evidence_file)


@command()
def appeal(
    ctx: typer.Context,
    order: OrderArg,
    merchant: MerchantOpt = None,
    creator: CreatorOpt = None,
    reason: DisputeReasonOpt = None,
    evidence_file: EvidenceFileOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Either party appeals a ruling within appeal_window (at most max_appeals times per order):
    the order is disputed again, for the platform to rule once more.

    Example: coopctl appeal 12 --creator 达人小王 --reason "the stream was on another account"
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.APPEAL, party, who, at, as_json, reason=reason, evidence_files=evidence_file)
