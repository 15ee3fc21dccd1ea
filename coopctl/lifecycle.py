"""The rules of a cooperation order (SPEC section 1): states, transitions, deadlines, reminders.

Pure: no database, no command line, no clock. Every function takes an order and an instant and
returns an `Outcome` (the new order plus the events and notifications to write) or raises
`Refused`. Actions, `tick` and `replay` all go through `act`, `fire_due` and `remind`, so each
rule is written exactly once: in `TRANSITIONS` (what a party may do) and `TIMERS` (what a
deadline does).

Instants and durations are integers of microseconds (see `policy.py`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from datetime import timezone, tzinfo
from enum import StrEnum
from typing import Callable

from coopctl.errors import InvalidInput, Refused
from coopctl.policy import MAX_DURATION, MAX_INSTANT, InvalidValue, Policy, ReminderOffsets, format_duration, iso, parse_instant
# The id and text rules live in the trust boundary; `lifecycle.check_id`, `check_text` and the
# MAX_* lengths are the same objects, kept here for the code and tests that name them so.
from coopctl.trust import MAX_ID_LENGTH, MAX_TEXT_LENGTH, check_id, check_stored_id, check_stored_text, check_text, shown  # noqa: F401

GENESIS_HASH = "0" * 64
UTC = timezone.utc
MAX_PRODUCTS = 100
MAX_AD_BUDGET = Decimal("999999999999.99")


class Status(StrEnum):
    PENDING = "pending"
    EFFECTIVE = "effective"
    CANCEL_REQUESTED = "cancel_requested"
    LIVE = "live"
    DELIVERED = "delivered"
    REVIEW_FAILED = "review_failed"
    EXTENSION_REQUESTED = "extension_requested"
    COMPLETED = "completed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CANCELLED_UNILATERALLY = "cancelled_unilaterally"
    CLOSED_OVERDUE = "closed_overdue"
    DISPUTED = "disputed"
    RULED = "ruled"
    RESOLVED = "resolved"


class TermsState(StrEnum):
    NOT_YET_EFFECTIVE = "not_yet_effective"
    IN_FORCE = "in_force"
    FULFILLED = "fulfilled"
    VOID = "void"
    SETTLED = "settled"


TERMS_OF: dict[Status, TermsState] = {
    Status.PENDING: TermsState.NOT_YET_EFFECTIVE,
    Status.EFFECTIVE: TermsState.IN_FORCE,
    Status.CANCEL_REQUESTED: TermsState.IN_FORCE,
    Status.LIVE: TermsState.IN_FORCE,
    Status.DELIVERED: TermsState.IN_FORCE,
    Status.REVIEW_FAILED: TermsState.IN_FORCE,
    Status.EXTENSION_REQUESTED: TermsState.IN_FORCE,
    Status.COMPLETED: TermsState.FULFILLED,
    Status.REJECTED: TermsState.VOID,
    Status.WITHDRAWN: TermsState.VOID,
    Status.EXPIRED: TermsState.VOID,
    Status.CANCELLED: TermsState.VOID,
    Status.CANCELLED_UNILATERALLY: TermsState.IN_FORCE,
    Status.CLOSED_OVERDUE: TermsState.IN_FORCE,
    Status.DISPUTED: TermsState.IN_FORCE,
    Status.RULED: TermsState.SETTLED,
    Status.RESOLVED: TermsState.SETTLED,
}


class Party(StrEnum):
    MERCHANT = "merchant"
    CREATOR = "creator"

    @property
    def other(self) -> "Party":
        return Party.CREATOR if self is Party.MERCHANT else Party.MERCHANT


class Action(StrEnum):
    """What a party can do; the values are the command names."""

    ACCEPT = "accept"
    REJECT = "reject"
    WITHDRAW = "withdraw"
    CANCEL_REQUEST = "cancel-request"
    CANCEL_CONFIRM = "cancel-confirm"
    CANCEL_DECLINE = "cancel-decline"
    CANCEL_WITHDRAW = "cancel-withdraw"
    EXTEND_REQUEST = "extend-request"
    EXTEND_CONFIRM = "extend-confirm"
    EXTEND_DECLINE = "extend-decline"
    GO_LIVE = "go-live"
    DELIVER = "deliver"
    REVIEW_PASS = "review --pass"
    REVIEW_FAIL = "review --fail"
    COMPLAIN = "complain"
    ARBITRATE = "arbitrate"
    APPEAL = "appeal"


class Kind(StrEnum):
    """Event kinds (and notification kinds, plus `reminder`)."""

    CREATED = "created"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_CONFIRMED = "cancel_confirmed"
    CANCEL_DECLINED = "cancel_declined"
    CANCEL_WITHDRAWN = "cancel_withdrawn"
    EXTENSION_REQUESTED = "extension_requested"
    EXTENSION_CONFIRMED = "extension_confirmed"
    EXTENSION_DECLINED = "extension_declined"
    WENT_LIVE = "went_live"
    DELIVERED = "delivered"
    REVIEW_PASSED = "review_passed"
    REVIEW_FAILED = "review_failed"
    EXPIRED = "expired"
    CLOSED_OVERDUE = "closed_overdue"
    CANCELLED_UNILATERALLY = "cancelled_unilaterally"
    AUTO_ACCEPTED = "auto_accepted"
    ESCALATED = "escalated"
    EXTENSION_LAPSED = "extension_lapsed"
    COMPLAINT_FILED = "complaint_filed"
    RULED = "ruled"
    APPEALED = "appealed"
    RULING_FINAL = "ruling_final"
    REMINDER = "reminder"


SYSTEM = "system"
PLATFORM = "platform"  # the actor of a ruling, and a recipient of dispute notifications


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True, slots=True)
class Terms:
    merchant: str
    creator: str
    products: tuple[str, ...]
    form: str
    commission_pct: Decimal
    ad_budget: Decimal
    latest_start_at: int
    note: str | None = None

    def to_json(self, tz=None) -> dict:
        return {
            "merchant": self.merchant,
            "creator": self.creator,
            "products": list(self.products),
            "form": self.form,
            "commission_pct": str(self.commission_pct),
            "ad_budget": str(self.ad_budget),
            "latest_start_at": iso(self.latest_start_at, tz) if tz else iso(self.latest_start_at),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict, *, strict: bool = True) -> "Terms":
        """Read terms back from a `created` event or an export (instants in any offset). `strict`
        (new input: a file) checks them as typed terms; `strict=False` (a history stored here)
        checks ids and the note by the rules they were stored under (see `make_terms`)."""
        if not isinstance(data, dict):
            raise InvalidInput("terms must be an object")
        try:
            return make_terms(
                merchant=data["merchant"],
                creator=data["creator"],
                products=data["products"],
                form=data["form"],
                commission=data["commission_pct"],
                ad_budget=data["ad_budget"],
                latest_start_at=_read_instant(data["latest_start_at"], "latest_start_at"),
                note=data.get("note"),
                strict=strict,
            )
        except KeyError as exc:
            raise InvalidInput(f"terms lack the field {exc.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class Ruling:
    """The platform's latest ruling on an order: the party in breach (None for `none`), what it
    owes the other (None without `--amount`), why, when, and whether it is final."""

    liable: Party | None
    amount: Decimal | None
    reason: str
    at: int
    final: bool = False

    def to_json(self, tz=None) -> dict:
        return {
            "liable": None if self.liable is None else self.liable._value_,
            "amount": None if self.amount is None else str(self.amount),
            "reason": self.reason,
            "at": iso(self.at, tz) if tz else iso(self.at),
            "final": self.final,
        }

    def stored(self) -> str:
        """The order row's `ruling` column: canonical JSON, the instant in microseconds."""
        return canonical_json({
            "liable": None if self.liable is None else self.liable._value_,
            "amount": None if self.amount is None else str(self.amount),
            "reason": self.reason, "at": self.at, "final": self.final,
        })

    @classmethod
    def from_stored(cls, text: str) -> "Ruling":
        data = json.loads(text)
        liable, amount = data["liable"], data["amount"]
        return cls(
            None if liable is None else Party(liable), None if amount is None else Decimal(amount),
            data["reason"], data["at"], bool(data["final"]),
        )


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    terms: Terms
    policy: Policy
    reminders: ReminderOffsets
    created_at: int
    status: Status = Status.PENDING
    status_since: int = 0
    cancel_requested_by: Party | None = None
    went_live_at: int | None = None
    delivered_at: int | None = None
    delivery_mode: str | None = None
    failed_reviews: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    last_event_at: int = 0
    reminders_sent: frozenset[str] = frozenset()
    idempotency_key: str | None = None
    # issue 12: extensions by agreement, complaints, rulings and appeals
    extensions: int = 0  # extensions confirmed
    extension_requested_by: Party | None = None  # while a proposal waits
    proposed_latest_start_at: int | None = None  # likewise
    disputed_by: Party | None = None  # who complained or appealed last; None for a dispute the rules escalated
    appeals: int = 0
    ruling: Ruling | None = None  # the latest ruling
    dispute_liable: Party | None = None  # the liable party the order had when its dispute opened

    @property
    def deadline(self) -> int | None:
        timer = TIMERS.get(self.status)
        return timer.due(self) if timer else None

    @property
    def terms_state(self) -> TermsState:
        return TERMS_OF[self.status]

    @property
    def liable_party(self) -> Party | None:
        status = self.status
        if status is Status.CLOSED_OVERDUE:
            return Party.CREATOR
        if status is Status.CANCELLED_UNILATERALLY:
            return self.cancel_requested_by
        if status is Status.DISPUTED:
            return self.dispute_liable
        if status is Status.RULED or status is Status.RESOLVED:
            return None if self.ruling is None else self.ruling.liable
        return None

    @property
    def at_deadline(self) -> str | None:
        """What happens when the deadline passes, in words (for tables and timelines)."""
        timer = TIMERS.get(self.status)
        return timer.label if timer else None

    def party_id(self, party: Party) -> str:
        return self.terms.merchant if party is Party.MERCHANT else self.terms.creator

    def to_json(self, tz=None) -> dict:
        """The order as SPEC section 2 "The order as JSON" describes it."""
        fmt = (lambda t: None if t is None else iso(t, tz)) if tz else (lambda t: None if t is None else iso(t))
        terms = self.terms.to_json(tz)
        return {
            "id": self.id,
            **terms,
            "status": str(self.status),
            "terms": str(self.terms_state),
            "liable_party": None if self.liable_party is None else str(self.liable_party),
            "created_at": fmt(self.created_at),
            "deadline": fmt(self.deadline),
            "at_deadline": self.at_deadline,
            "cancel_requested_by": None if self.cancel_requested_by is None else str(self.cancel_requested_by),
            "went_live_at": fmt(self.went_live_at),
            "delivered_at": fmt(self.delivered_at),
            "delivery_mode": self.delivery_mode,
            "failed_reviews": self.failed_reviews,
            "policy": self.policy.to_json(),
            "reminders": self.reminders.to_json(),
            "idempotency_key": self.idempotency_key,
            "last_event_at": fmt(self.last_event_at),
            "extensions": self.extensions,
            "extension_requested_by": _party_text(self.extension_requested_by),
            "proposed_latest_start_at": fmt(self.proposed_latest_start_at),
            "disputed_by": _party_text(self.disputed_by),
            "appeals": self.appeals,
            "ruling": None if self.ruling is None else self.ruling.to_json(tz),
        }


def _party_text(party: Party | None) -> str | None:
    return None if party is None else party._value_


def _generated(cls, name: str, params: str, lines: list[str]) -> Callable:
    """A function written for `cls`, a frozen dataclass with slots: it sets each slot through the
    slot's own descriptor, as the generated __init__ does through object.__setattr__, in about
    half the time. Tick builds several such records for every due order."""
    namespace = {"new": object.__new__, "cls": cls}
    for f in fields(cls):
        namespace[f"set_{f.name}"] = cls.__dict__[f.name].__set__
    source = f"def {name}({params}):\n    record = new(cls)\n" + "".join(f"    {line}\n" for line in lines) + "    return record\n"
    exec(source, namespace)  # noqa: S102 - code built from the dataclass's own field names
    return namespace[name]


def fast_constructor(cls) -> Callable:
    """`cls(*values)` for every field in order (no defaults), for the hot path."""
    names = [f.name for f in fields(cls)]
    return _generated(cls, "make", ", ".join(names), [f"set_{n}(record, {n})" for n in names])


def _evolver() -> Callable[[Order, dict], Order]:
    names = [f.name for f in fields(Order)]
    return _generated(
        Order, "evolve", "order, changes",
        ["get = changes.get"] + [f"set_{n}(record, get({n!r}, order.{n}))" for n in names],
    )


evolve: Callable[[Order, dict], Order] = _evolver()
evolve.__doc__ = "`dataclasses.replace(order, **changes)` for the hot path (tick touches every due order)."


@dataclass(frozen=True, slots=True)
class Event:
    order_id: int
    seq: int
    kind: str
    at: int
    actor: str
    operator: str
    data: dict
    prev_hash: str
    hash: str

    def to_json(self, tz=None) -> dict:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "at": iso(self.at, tz) if tz else iso(self.at),
            "actor": self.actor,
            "operator": self.operator,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value) -> str:
    """The one serialisation that hashes are computed over: sorted keys, no spaces, UTF-8."""
    return _CANONICAL.encode(value)


_quote = json.encoder.encode_basestring  # the string encoder json.dumps uses with ensure_ascii=False


def event_hash(order_id: int, seq: int, kind: str, at: int, actor: str, operator: str, data: dict, prev_hash: str) -> str:
    """SHA-256 of the previous hash followed by the event's canonical JSON (instants in UTC):
    `canonical_json({"order", "seq", "kind", "at", "actor", "operator", "data", "prev_hash"})`,
    spelled out in sorted key order because tick computes one per due order."""
    body = (
        '{"actor":' + _quote(actor)
        + ',"at":' + _quote(iso(at))
        + ',"data":' + (canonical_json(data) if data else "{}")
        + ',"kind":' + _quote(kind)
        + ',"operator":' + _quote(operator)
        + ',"order":' + int.__repr__(order_id)
        + ',"prev_hash":' + _quote(prev_hash)
        + ',"seq":' + int.__repr__(seq)
        + "}"
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Notification:
    order_id: int
    recipient: str
    channel: str
    kind: str
    at: int
    text: str

    def to_json(self, tz=None) -> dict:
        return {
            "order": self.order_id,
            "recipient": self.recipient,
            "channel": self.channel,
            "kind": self.kind,
            "at": iso(self.at, tz) if tz else iso(self.at),
            "text": self.text,
        }


new_order = fast_constructor(Order)
new_terms = fast_constructor(Terms)
new_event = fast_constructor(Event)
new_notification = fast_constructor(Notification)


@dataclass(slots=True)
class Outcome:
    """What a rule decided: the order after it, and what to write with it, in order."""

    order: Order
    events: list[Event] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)

    def then(self, other: "Outcome") -> "Outcome":
        return Outcome(other.order, self.events + other.events, self.notifications + other.notifications)


# --------------------------------------------------------------------------- validation


_DECIMAL = re.compile(r"\d{1,15}(?:\.\d{1,2})?")
FORMS = ("live", "video")


def check_decimal(value, what: str, *, minimum: Decimal, maximum: Decimal, open_minimum: bool) -> Decimal:
    """A plain decimal with at most two places ("12.5", "5000"), within bounds; never a float."""
    text = value if isinstance(value, str) else str(value) if isinstance(value, (int, Decimal)) and not isinstance(value, bool) else None
    if text is None or not _DECIMAL.fullmatch(text.strip()):
        raise InvalidInput(f"{what} must be a plain decimal with at most two places, such as 12.5, got {value!r}")
    number = Decimal(text.strip()).quantize(Decimal("0.01"))
    too_low = number <= minimum if open_minimum else number < minimum
    if too_low or number > maximum:
        low = f"more than {minimum}" if open_minimum else f"at least {minimum}"
        raise InvalidInput(f"{what} must be {low} and at most {maximum}, got {value}")
    return number


def make_terms(
    *, merchant, creator, products, form, commission, ad_budget, latest_start_at: int, note=None, strict: bool = True
) -> Terms:
    """Validate the terms of a new order; every problem is InvalidInput naming the field.

    Ids follow SPEC section 1 (`trust.check_id`: NFC, no control or format characters, no other
    spaces) and the merchant and creator must be two parties. `strict=False` is for terms stored
    before those rules (a stored history rebuilt for `show` or `doctor`): ids and the note are
    checked as they were then (`trust.check_stored_id`), and a merchant that is its own creator is
    let through; such terms are read, never written anew."""
    identify, describe = (check_id, check_text) if strict else (check_stored_id, check_stored_text)
    if not isinstance(products, (list, tuple)) or not products:
        raise InvalidInput("an order needs at least one product id")
    if len(products) > MAX_PRODUCTS:
        raise InvalidInput(f"an order may list at most {MAX_PRODUCTS} products, got {len(products)}")
    products = tuple(identify(p, "product") for p in products)
    if len(set(products)) != len(products):
        raise InvalidInput("the same product id is listed twice")
    if form not in FORMS:
        raise InvalidInput(f"form must be 'live' or 'video', got {form!r}")
    if isinstance(latest_start_at, bool) or not isinstance(latest_start_at, int):
        raise InvalidInput("latest start must be an instant")
    merchant = identify(merchant, "merchant")
    creator = identify(creator, "creator")
    if strict and merchant == creator:
        raise InvalidInput(f"the merchant and the creator are the same id '{shown(merchant)}'; an order is made between two parties")
    return Terms(
        merchant=merchant,
        creator=creator,
        products=products,
        form=form,
        commission_pct=check_decimal(commission, "commission", minimum=Decimal(0), maximum=Decimal(100), open_minimum=True),
        ad_budget=check_decimal(ad_budget, "ad budget", minimum=Decimal(0), maximum=MAX_AD_BUDGET, open_minimum=False),
        latest_start_at=latest_start_at,
        note=describe(note, "note"),
    )


def _read_instant(value, what: str) -> int:
    from datetime import timezone

    try:
        return parse_instant(value, timezone.utc)
    except InvalidValue as exc:
        raise InvalidInput(f"{what}: {exc}") from None


# --------------------------------------------------------------------------- the tables


# A guard says why `acting` (a party, or None: the platform) may not take a transition, or None.


def _own(party: Party) -> Callable[[Order, "Party | None"], str | None]:
    def guard(order: Order, acting: Party | None) -> str | None:
        if acting is not party:
            return f"only the order's {party} may do this, not {'the platform' if acting is None else 'its ' + acting}"
        return None

    return guard


def _either(order: Order, acting: Party | None) -> str | None:
    if acting is None:
        return "only the merchant or the creator may do this, not the platform"
    return None


def _not_requester(order: Order, acting: Party | None) -> str | None:
    if acting is None:
        return "only the merchant or the creator may answer a cancellation request"
    if acting is order.cancel_requested_by:
        return f"the {acting} asked for this cancellation; only the {acting.other} may answer it"
    return None


def _requester(order: Order, acting: Party | None) -> str | None:
    if acting is None or acting is not order.cancel_requested_by:
        return f"only the {order.cancel_requested_by} asked for this cancellation, so only it may withdraw the request"
    return None


def _not_proposer(order: Order, acting: Party | None) -> str | None:
    if acting is None:
        return "only the merchant or the creator may answer a proposal to move the latest start"
    if acting is order.extension_requested_by:
        return f"the {acting} proposed this extension; only the {acting.other} may answer it"
    return None


def _not_liable(order: Order, acting: Party | None) -> str | None:
    if acting is None:
        return "only the merchant or the creator may complain"
    if acting is order.liable_party:
        return f"the {acting} is the liable party of this {order.status} order; only the {acting.other} may complain"
    return None


def _platform(order: Order, acting: Party | None) -> str | None:
    if acting is not None:
        return f"only the platform rules on a dispute (coopctl arbitrate), not the {acting}"
    return None


def _no_change(order: Order, at: int, data: dict) -> dict:
    return {}


def _cancel_requested(order: Order, at: int, data: dict) -> dict:
    return {"cancel_requested_by": Party(data["by"])}


def _cancel_declined(order: Order, at: int, data: dict) -> dict:
    return {"cancel_requested_by": None}


def _extension_requested(order: Order, at: int, data: dict) -> dict:
    return {"extension_requested_by": Party(data["by"]), "proposed_latest_start_at": _read_instant(data["latest_start_at"], "latest_start_at")}


_NO_PROPOSAL = {"extension_requested_by": None, "proposed_latest_start_at": None}


def _extension_answered(order: Order, at: int, data: dict) -> dict:
    return dict(_NO_PROPOSAL)


def _extension_confirmed(order: Order, at: int, data: dict) -> dict:
    return {
        "terms": replace(order.terms, latest_start_at=order.proposed_latest_start_at),
        "extensions": order.extensions + 1,
        **_NO_PROPOSAL,
    }


def _complained(order: Order, at: int, data: dict) -> dict:
    return {"disputed_by": Party(data["by"]), "dispute_liable": order.liable_party}


def _ruled(order: Order, at: int, data: dict) -> dict:
    final = order.appeals >= order.policy.max_appeals
    liable = data["ruling"]
    ruling = Ruling(
        None if liable == "none" else Party(liable),
        None if data.get("amount") is None else Decimal(data["amount"]),
        data["reason"], at, final,
    )
    changes: dict = {"ruling": ruling}
    if final:
        changes["status"] = Status.RESOLVED
    return changes


def _appealed(order: Order, at: int, data: dict) -> dict:
    return {
        "appeals": order.appeals + 1,
        "disputed_by": Party(data["by"]),
        "dispute_liable": None if order.ruling is None else order.ruling.liable,
    }


# A check says why a transition the guard lets through is refused at this instant with this data.


def _extension_allowed(order: Order, at: int, data: dict, tz: tzinfo = UTC) -> str | None:
    policy = order.policy
    if order.extensions >= policy.max_extensions:
        return (
            f"its latest start was already moved {order.extensions} time{'s' if order.extensions != 1 else ''} "
            f"(max_extensions {policy.max_extensions}); no further extension is possible"
        )
    proposal = _read_instant(data["latest_start_at"], "latest_start_at")
    current = order.terms.latest_start_at
    if proposal <= current:
        return f"the proposed latest start {iso(proposal, tz)} is not later than the current one, {iso(current, tz)}"
    if proposal - current > policy.max_extension:
        return (
            f"the proposed latest start {iso(proposal, tz)} is more than max_extension "
            f"({format_duration(policy.max_extension)}) after the current one, {iso(current, tz)}"
        )
    return None


def _within_complaint_window(order: Order, at: int, data: dict, tz: tzinfo = UTC) -> str | None:
    ends = order.status_since + order.policy.complaint_window
    if at >= ends:
        return (
            f"too late to complain: it became {order.status} at {iso(order.status_since, tz)}, and complaint_window "
            f"({format_duration(order.policy.complaint_window)}) ended at {iso(ends, tz)}"
        )
    return None


def _appeal_left(order: Order, at: int, data: dict, tz: tzinfo = UTC) -> str | None:
    if order.appeals >= order.policy.max_appeals:
        return f"it was appealed {order.appeals} time(s) already (max_appeals {order.policy.max_appeals})"
    return None


def _nothing_to_check(order: Order, at: int, data: dict, tz: tzinfo = UTC) -> str | None:
    return None


def _went_live(order: Order, at: int, data: dict) -> dict:
    return {"went_live_at": at}


def _delivered(order: Order, at: int, data: dict) -> dict:
    return {
        "delivered_at": at,
        "delivery_mode": data["mode"],
        "went_live_at": order.went_live_at if order.went_live_at is not None else at,
    }


def _review_failed(order: Order, at: int, data: dict) -> dict:
    count = order.failed_reviews + 1
    changes: dict = {"failed_reviews": count}
    if count > order.policy.max_failed_reviews:
        changes["status"] = Status.DISPUTED
    return changes


@dataclass(frozen=True, slots=True)
class Transition:
    """A party action allowed in one status: where it leads, its event, who may, what changes."""

    target: Status
    kind: Kind
    guard: Callable[[Order, "Party | None"], str | None]
    effect: Callable[[Order, int, dict], dict] = _no_change
    check: Callable[[Order, int, dict, tzinfo], str | None] = _nothing_to_check


_DELIVER = Transition(Status.DELIVERED, Kind.DELIVERED, _own(Party.CREATOR), _delivered)
_COMPLAIN_NOT_LIABLE = Transition(Status.DISPUTED, Kind.COMPLAINT_FILED, _not_liable, _complained, _within_complaint_window)

TRANSITIONS: dict[tuple[Status, Action], Transition] = {
    (Status.PENDING, Action.ACCEPT): Transition(Status.EFFECTIVE, Kind.ACCEPTED, _own(Party.CREATOR)),
    (Status.PENDING, Action.REJECT): Transition(Status.REJECTED, Kind.REJECTED, _own(Party.CREATOR)),
    (Status.PENDING, Action.WITHDRAW): Transition(Status.WITHDRAWN, Kind.WITHDRAWN, _own(Party.MERCHANT)),
    (Status.EFFECTIVE, Action.CANCEL_REQUEST): Transition(
        Status.CANCEL_REQUESTED, Kind.CANCEL_REQUESTED, _either, _cancel_requested
    ),
    (Status.CANCEL_REQUESTED, Action.CANCEL_CONFIRM): Transition(Status.CANCELLED, Kind.CANCEL_CONFIRMED, _not_requester),
    (Status.CANCEL_REQUESTED, Action.CANCEL_DECLINE): Transition(
        Status.EFFECTIVE, Kind.CANCEL_DECLINED, _not_requester, _cancel_declined
    ),
    (Status.EFFECTIVE, Action.GO_LIVE): Transition(Status.LIVE, Kind.WENT_LIVE, _own(Party.CREATOR), _went_live),
    (Status.EFFECTIVE, Action.DELIVER): _DELIVER,
    (Status.LIVE, Action.DELIVER): _DELIVER,
    (Status.REVIEW_FAILED, Action.DELIVER): _DELIVER,
    (Status.DELIVERED, Action.REVIEW_PASS): Transition(Status.COMPLETED, Kind.REVIEW_PASSED, _own(Party.MERCHANT)),
    (Status.DELIVERED, Action.REVIEW_FAIL): Transition(
        Status.REVIEW_FAILED, Kind.REVIEW_FAILED, _own(Party.MERCHANT), _review_failed
    ),
    (Status.CANCEL_REQUESTED, Action.CANCEL_WITHDRAW): Transition(
        Status.EFFECTIVE, Kind.CANCEL_WITHDRAWN, _requester, _cancel_declined
    ),
    (Status.EFFECTIVE, Action.EXTEND_REQUEST): Transition(
        Status.EXTENSION_REQUESTED, Kind.EXTENSION_REQUESTED, _either, _extension_requested, _extension_allowed
    ),
    (Status.EXTENSION_REQUESTED, Action.EXTEND_CONFIRM): Transition(
        Status.EFFECTIVE, Kind.EXTENSION_CONFIRMED, _not_proposer, _extension_confirmed
    ),
    (Status.EXTENSION_REQUESTED, Action.EXTEND_DECLINE): Transition(
        Status.EFFECTIVE, Kind.EXTENSION_DECLINED, _not_proposer, _extension_answered
    ),
    (Status.CLOSED_OVERDUE, Action.COMPLAIN): _COMPLAIN_NOT_LIABLE,
    (Status.CANCELLED_UNILATERALLY, Action.COMPLAIN): _COMPLAIN_NOT_LIABLE,
    (Status.COMPLETED, Action.COMPLAIN): Transition(
        Status.DISPUTED, Kind.COMPLAINT_FILED, _either, _complained, _within_complaint_window
    ),
    # `resolved` instead once max_appeals appeals were made (see _ruled)
    (Status.DISPUTED, Action.ARBITRATE): Transition(Status.RULED, Kind.RULED, _platform, _ruled),
    (Status.RULED, Action.APPEAL): Transition(Status.DISPUTED, Kind.APPEALED, _either, _appealed, _appeal_left),
}


def _requester_liable(order: Order) -> dict:
    return {"liable_party": str(order.cancel_requested_by)}


@dataclass(frozen=True, slots=True)
class Timer:
    """The deadline of one status and what fires there. `effect` gives the other fields that
    change (as a transition's does). A timer with two outcomes names the one that wins when its
    own deadline comes first, or at the same instant, as `first`; `due` is then the earlier of the
    two deadlines (see `outcome`)."""

    due: Callable[[Order], int]
    target: Status
    kind: Kind
    label: str
    data: Callable[[Order], dict] = lambda order: {}
    effect: Callable[[Order, int], dict] | None = None
    first: "Timer | None" = None

    def outcome(self, order: Order) -> "Timer":
        """The timer that fires at this order's deadline: `first` when its deadline is the due one."""
        first = self.first
        if first is not None and first.due(order) <= self.due(order):
            return first
        return self


TIMERS: dict[Status, Timer] = {
    Status.PENDING: Timer(
        lambda o: min(o.created_at + o.policy.accept_window, o.terms.latest_start_at),
        Status.EXPIRED, Kind.EXPIRED, "expires (not accepted in time)",
    ),
    Status.EFFECTIVE: Timer(
        lambda o: o.terms.latest_start_at,
        Status.CLOSED_OVERDUE, Kind.CLOSED_OVERDUE, "closed overdue, creator liable",
        lambda o: {"liable_party": "creator"},
    ),
    Status.CANCEL_REQUESTED: Timer(
        lambda o: min(o.status_since + o.policy.cancel_response_window, o.terms.latest_start_at),
        Status.CANCELLED_UNILATERALLY, Kind.CANCELLED_UNILATERALLY, "cancelled unilaterally, requester liable",
        _requester_liable,
    ),
    Status.LIVE: Timer(
        lambda o: o.status_since + o.policy.auto_deliver_after,
        Status.DELIVERED, Kind.DELIVERED, "delivered automatically",
        lambda o: {"mode": "auto"},
        lambda o, at: _delivered(o, at, {"mode": "auto"}),
    ),
    Status.DELIVERED: Timer(
        lambda o: o.status_since + o.policy.review_window,
        Status.COMPLETED, Kind.AUTO_ACCEPTED, "accepted automatically",
    ),
    Status.REVIEW_FAILED: Timer(
        lambda o: o.status_since + o.policy.makeup_window,
        Status.DISPUTED, Kind.ESCALATED, "escalated to dispute (no make-up in time)",
    ),
    # The response deadline, unless the latest start comes first or at the same instant.
    Status.EXTENSION_REQUESTED: Timer(
        lambda o: min(o.status_since + o.policy.extension_response_window, o.terms.latest_start_at),
        Status.EFFECTIVE, Kind.EXTENSION_LAPSED, "extension lapses (or closed overdue at the latest start)",
        effect=lambda o, at: dict(_NO_PROPOSAL),
        first=Timer(
            lambda o: o.terms.latest_start_at,
            Status.CLOSED_OVERDUE, Kind.CLOSED_OVERDUE, "closed overdue, creator liable",
            lambda o: {"liable_party": "creator"},
            lambda o, at: dict(_NO_PROPOSAL),
        ),
    ),
    Status.RULED: Timer(
        lambda o: o.status_since + o.policy.appeal_window,
        Status.RESOLVED, Kind.RULING_FINAL, "the ruling becomes final",
        effect=lambda o, at: {"ruling": replace(o.ruling, final=True)},
    ),
}


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder `tick` writes once, `offset` before a deadline, while the order is in `statuses`
    and the deadline is still ahead. `overdue`: written at the deadline itself instead, and for as
    long as the order stays in `statuses` (the platform's reminder of a dispute waiting for a
    ruling: no deadline passes then). `recipient` None is the platform."""

    name: str
    statuses: frozenset[Status]
    deadline: Callable[[Order], int]
    offset: Callable[[Order], int]
    recipient: Party | None
    channel: str
    text: str
    overdue: bool = False

    def recipient_of(self, order: Order) -> str:
        return PLATFORM if self.recipient is None else actor_of(self.recipient, order)


REMINDERS: tuple[Reminder, ...] = (
    Reminder(
        "accept", frozenset({Status.PENDING}), TIMERS[Status.PENDING].due,
        lambda o: o.reminders.before_accept_deadline, Party.CREATOR, "sms",
        "please accept or reject cooperation order #{id} before {deadline}",
    ),
    Reminder(
        "latest_start", frozenset({Status.PENDING, Status.EFFECTIVE, Status.CANCEL_REQUESTED, Status.EXTENSION_REQUESTED}),
        lambda o: o.terms.latest_start_at,
        lambda o: o.reminders.before_latest_start, Party.CREATOR, "inbox",
        "cooperation order #{id} must go live by {deadline}",
    ),
    Reminder(
        "review", frozenset({Status.DELIVERED}), TIMERS[Status.DELIVERED].due,
        lambda o: o.reminders.before_review_deadline, Party.MERCHANT, "inbox",
        "please review the delivery of cooperation order #{id} before {deadline}; it is accepted automatically then",
    ),
    Reminder(  # once per opening: the key names the instant the dispute's window ended
        "arbitration", frozenset({Status.DISPUTED}), lambda o: o.status_since + o.policy.arbitration_window,
        lambda o: 0, None, "inbox",
        "cooperation order #{id} is waiting for a ruling: its arbitration window ended at {deadline}",
        overdue=True,
    ),
)

MESSAGES: dict[str, str] = {
    Kind.CREATED: "{merchant} proposes cooperation order #{id} to you; please answer before {deadline}",
    Kind.ACCEPTED: "{creator} accepted cooperation order #{id}",
    Kind.REJECTED: "{creator} rejected cooperation order #{id}",
    Kind.WITHDRAWN: "{merchant} withdrew cooperation order #{id}",
    Kind.CANCEL_REQUESTED: "{actor} asks to cancel cooperation order #{id}; please answer before {deadline}",
    Kind.CANCEL_CONFIRMED: "{actor} agreed to cancel cooperation order #{id}",
    Kind.CANCEL_DECLINED: "{actor} declined to cancel cooperation order #{id}",
    Kind.WENT_LIVE: "{creator} went live for cooperation order #{id}",
    Kind.DELIVERED: "cooperation order #{id} was delivered; please review it before {deadline}",
    Kind.REVIEW_PASSED: "{merchant} accepted the delivery of cooperation order #{id}",
    Kind.REVIEW_FAILED: "{merchant} rejected the delivery of cooperation order #{id}: {reason}",
    Kind.EXPIRED: "cooperation order #{id} expired: it was not accepted in time",
    Kind.CLOSED_OVERDUE: "cooperation order #{id} closed: the latest start time passed without going live",
    Kind.CANCELLED_UNILATERALLY: "cooperation order #{id} closed: the cancellation request went unanswered",
    Kind.AUTO_ACCEPTED: "the delivery of cooperation order #{id} was accepted automatically",
    Kind.ESCALATED: "cooperation order #{id} was escalated to platform arbitration",
    Kind.CANCEL_WITHDRAWN: "{actor} withdrew the request to cancel cooperation order #{id}",
    Kind.EXTENSION_REQUESTED: (
        "{actor} proposes to move the latest start of cooperation order #{id} to {proposal}; please answer before {deadline}"
    ),
    Kind.EXTENSION_CONFIRMED: "{actor} agreed to move the latest start of cooperation order #{id} to {latest_start}",
    Kind.EXTENSION_DECLINED: "{actor} declined to move the latest start of cooperation order #{id}",
    Kind.EXTENSION_LAPSED: (
        "the proposal to move the latest start of cooperation order #{id} went unanswered; it stays {latest_start}"
    ),
    Kind.COMPLAINT_FILED: "{actor} complained about cooperation order #{id}; it goes to platform arbitration: {reason}",
    Kind.RULED: "the platform ruled on cooperation order #{id}: {ruling}; either party may appeal before {deadline}",
    Kind.APPEALED: "{actor} appealed the ruling on cooperation order #{id}; it goes back to platform arbitration: {reason}",
    Kind.RULING_FINAL: "the ruling on cooperation order #{id} is final: {ruling}",
}
FINAL_RULING_MESSAGE = "the platform ruled on cooperation order #{id}, finally: {ruling}"
_TO_EVERYONE = frozenset({Kind.COMPLAINT_FILED, Kind.APPEALED, Kind.RULED})  # both parties and the platform


# --------------------------------------------------------------------------- the rules


def actor_of(party: Party, order: Order) -> str:
    """'merchant:ID' or 'creator:ID' (`_value_`: an f-string would format the enum the slow way)."""
    return party._value_ + ":" + order.party_id(party)


def _message(order: Order, kind: str, actor: str, data: dict, tz: tzinfo = UTC) -> str:
    deadline = order.deadline if order.status in TIMERS else None
    if kind == Kind.REVIEW_FAILED and order.status is Status.DISPUTED:
        template = "{merchant} rejected the delivery of cooperation order #{id} again; it is escalated to platform arbitration"
    elif kind == Kind.RULED and order.status is Status.RESOLVED:
        template = FINAL_RULING_MESSAGE
    else:
        template = MESSAGES[kind]
    return template.format(
        id=order.id,
        merchant=order.terms.merchant,
        creator=order.terms.creator,
        actor=actor,
        reason=data.get("reason", ""),
        deadline="-" if deadline is None or "{deadline}" not in template else iso(deadline, tz),
        proposal="-" if order.proposed_latest_start_at is None else iso(order.proposed_latest_start_at, tz),
        latest_start=iso(order.terms.latest_start_at, tz) if "{latest_start}" in template else "-",
        ruling=ruling_words(order.ruling) if "{ruling}" in template else "-",
    )


def ruling_words(ruling: "Ruling | None") -> str:
    """A ruling in words, for messages and tables: 'the merchant is liable and owes 500.00 yuan'."""
    if ruling is None:
        return "-"
    if ruling.liable is None:
        return "no party is liable"
    owes = "" if ruling.amount is None else f" and owes the {ruling.liable.other._value_} {ruling.amount} yuan"
    return f"the {ruling.liable._value_} is liable{owes}"


def _record(
    order: Order, kind: Kind, at: int, actor: str, operator: str, data: dict, changes: dict, target: Status, tz: tzinfo = UTC
) -> Outcome:
    """Write one event: the order moves to `target` (or `changes['status']`) and notifies."""
    seq = order.last_seq + 1
    kind_text = kind._value_  # the plain string (`.value` is a Python-level property: slower)
    digest = event_hash(order.id, seq, kind_text, at, actor, operator, data, order.last_hash)
    event = new_event(order.id, seq, kind_text, at, actor, operator, data, order.last_hash, digest)
    status = changes.pop("status", target)
    changes["status"] = status
    changes["status_since"] = at if status is not order.status else order.status_since
    changes["last_seq"] = seq
    changes["last_hash"] = digest
    changes["last_event_at"] = at
    after = evolve(order, changes)
    text = _message(after, kind, actor, data, tz)
    if actor == SYSTEM:
        recipients = [actor_of(Party.MERCHANT, after), actor_of(Party.CREATOR, after)]
    elif kind in _TO_EVERYONE:
        recipients = [actor_of(Party.MERCHANT, after), actor_of(Party.CREATOR, after), PLATFORM]
    else:
        party = Party(actor.split(":", 1)[0])
        recipients = [actor_of(party.other, after)]
    notes = [new_notification(order.id, who, "inbox", kind_text, at, text) for who in recipients]
    return Outcome(after, [event], notes)


def create(
    order_id: int,
    terms: Terms,
    policy: Policy,
    reminders: ReminderOffsets,
    at: int,
    operator: str,
    idempotency_key: str | None = None,
    tz: tzinfo = UTC,
    written_policy: dict | None = None,
) -> Outcome:
    """A merchant proposes an order: it is `pending`, and the creator is told by inbox and SMS.
    `written_policy` is the policy as the event records it when that is not `policy.to_json()`: a
    history recorded before some policy keys existed (see `history`), rebuilt to the same event."""
    if terms.latest_start_at <= at:
        raise InvalidInput(
            f"the latest start time {iso(terms.latest_start_at, tz)} must be after the creation time {iso(at, tz)}"
        )
    order = Order(
        id=order_id, terms=terms, policy=policy, reminders=reminders, created_at=at,
        status=Status.PENDING, status_since=at, last_event_at=at, idempotency_key=idempotency_key,
    )
    data = {"terms": terms.to_json(), "policy": written_policy or policy.to_json(), "reminders": reminders.to_json()}
    if idempotency_key is not None:
        data["idempotency_key"] = idempotency_key
    outcome = _record(order, Kind.CREATED, at, actor_of(Party.MERCHANT, order), operator, data, {}, Status.PENDING, tz)
    inbox = outcome.notifications[0]
    outcome.notifications.append(Notification(inbox.order_id, inbox.recipient, "sms", inbox.kind, inbox.at, inbox.text))
    check_horizon(outcome.order, tz)
    return outcome


def fire_due(order: Order, now: int, operator: str, tz: tzinfo = UTC) -> Outcome:
    """Fire every deadline at or before `now`, each at its own deadline, cascading."""
    current = order
    events: list[Event] = []
    notes: list[Notification] = []
    while (timer := TIMERS.get(current.status)) is not None:
        due = timer.due(current)
        if due > now:
            break
        if timer.first is not None:
            timer = timer.outcome(current)
        changes = {} if timer.effect is None else timer.effect(current, due)
        step = _record(current, timer.kind, due, SYSTEM, operator, timer.data(current), changes, timer.target, tz)
        current = step.order
        events += step.events
        notes += step.notifications
    return Outcome(current, events, notes)


RULINGS = ("merchant", "creator", "none")
_NEEDS_REASON = {
    Action.REVIEW_FAIL: "a failed review needs a reason (--reason TEXT)",
    Action.COMPLAIN: "a complaint needs a reason (--reason TEXT)",
    Action.APPEAL: "an appeal needs a reason (--reason TEXT)",
    Action.ARBITRATE: "a ruling needs a reason (--reason TEXT)",
}


def act(
    order: Order,
    action: Action,
    party: Party | None,
    party_id: str | None,
    at: int,
    operator: str,
    *,
    reason: str | None = None,
    evidence: str | None = None,
    proposal: int | None = None,
    ruling: str | None = None,
    amount=None,
    evidence_files: tuple = (),
    tz: tzinfo = UTC,
    strict: bool = True,
) -> Outcome:
    """A party (or, `party` None, the platform: `arbitrate`) acts at `at`: due deadlines fire
    first, then the action if the rules allow it. `proposal` is the latest start an
    `extend-request` proposes; `ruling` ('merchant', 'creator' or 'none') and `amount` (yuan) are
    an `arbitrate`'s. `strict=False` checks the reason and evidence by the older rules (a stored
    history rebuilt). `evidence_files` (`evidence.EvidenceFile` records, already checked) are
    recorded in the event's data as `evidence_files`, on the actions of EVIDENCE_ACTIONS only."""
    if action in _NEEDS_REASON and not (reason or "").strip():
        raise InvalidInput(_NEEDS_REASON[action])
    extra = _checked_extra(action, proposal, ruling, amount)  # input first: invalid is exit 2 whatever the order
    if party is not None and party_id != order.party_id(party):
        raise Refused(f"{party} {party_id!r} is not the {party} of order {order.id} ({order.party_id(party)!r} is)")
    if at < order.last_event_at:
        raise Refused(
            f"{iso(at, tz)} is earlier than the last event of order {order.id} ({iso(order.last_event_at, tz)}); "
            "time cannot go backwards"
        )
    describe = check_text if strict else check_stored_text
    reason = describe(reason, "reason")
    evidence = describe(evidence, "evidence")
    if evidence_files and action not in EVIDENCE_ACTIONS:
        raise InvalidInput(f"{action} takes no evidence files (--evidence-file goes with {', '.join(EVIDENCE_ACTIONS)})")
    fired = fire_due(order, at, operator, tz)
    current = fired.order
    rule = TRANSITIONS.get((current.status, action))
    if rule is None:
        raise Refused(_not_allowed(order, current, action, fired, tz))
    problem = rule.guard(current, party)
    if problem:
        raise Refused(f"order {order.id}: {problem}")
    data = _action_data(action, party, reason, evidence, extra, current)
    if evidence_files:
        data[EVIDENCE_KEY] = [f.to_json() for f in evidence_files]
    problem = rule.check(current, at, data, tz)
    if problem:
        raise Refused(f"order {order.id}: {problem}")
    changes = rule.effect(current, at, data)
    actor = PLATFORM if party is None else actor_of(party, current)
    step = _record(current, rule.kind, at, actor, operator, data, changes, rule.target, tz)
    check_horizon(step.order, tz, action, at)
    return fired.then(step)


_ALWAYS_IN_RANGE = MAX_INSTANT - (len(TIMERS) + 1) * MAX_DURATION  # see check_horizon


def check_horizon(order: Order, tz: tzinfo = UTC, action: "Action | None" = None, at: int | None = None) -> None:
    """SPEC section 7: every deadline the order will reach if nobody acts again (its own, then each
    that `tick` would fire in turn: auto delivery, then auto acceptance) lies no later than
    9999-12-31 UTC, the last instant coopctl records; else InvalidInput (exit 2), before anything
    is stored. Reminders come before their deadlines, so they are in range too. Each later party
    action is checked when it happens, so `tick` never meets a deadline past the range and its
    hot path checks nothing. Only `status_since` moves along the way: no timer's deadline depends
    on anything else that firing changes (a walk through TIMERS without writing events).

    Every deadline is the latest start or a window after the moment the status began, and a
    cascade adds at most one window per timer: an order that entered its status more than
    len(TIMERS) longest windows before the end of 9999 cannot reach past it (two comparisons,
    the case of every order until the year 9930)."""
    if order.status_since <= _ALWAYS_IN_RANGE and order.terms.latest_start_at <= MAX_INSTANT:
        return
    current = order
    for _ in range(len(TIMERS) + 1):  # the timers lead to states without one; bounded all the same
        timer = TIMERS.get(current.status)
        if timer is None:
            return
        due = timer.due(current)
        timer = timer.outcome(current)
        if due > MAX_INSTANT:
            what = "creating it" if action is None else f"{action} at {iso(at, tz)}"
            raise InvalidInput(
                f"order {order.id}: {what} would put a deadline ({current.status}: {timer.label}) at "
                f"{iso(due, tz)}, after 9999-12-31 UTC, the last instant coopctl can record; "
                "nothing was changed (use shorter policy windows for such far dates)"
            )
        current = evolve(current, {"status": timer.target, "status_since": due})


# The actions that may carry evidence files (SPEC section 1, "Evidence files"), and the key of the
# event's data that lists them (`evidence.KEY`).
EVIDENCE_ACTIONS: tuple[Action, ...] = (
    Action.DELIVER, Action.REVIEW_FAIL, Action.COMPLAIN, Action.APPEAL, Action.ARBITRATE,
)
EVIDENCE_KEY = "evidence_files"


def _checked_extra(action: Action, proposal, ruling, amount) -> dict:
    """The values only some actions take, checked as input (InvalidInput: exit 2)."""
    if action is Action.EXTEND_REQUEST:
        if isinstance(proposal, bool) or not isinstance(proposal, int):
            raise InvalidInput("an extension proposal needs the latest start it proposes (--latest-start TS)")
        return {"latest_start_at": iso(proposal)}
    if action is Action.ARBITRATE:
        if ruling not in RULINGS:
            raise InvalidInput(f"--ruling must be merchant, creator or none, got {shown(str(ruling))!r}")
        extra = {"ruling": ruling}
        if amount is not None:
            if ruling == "none":
                raise InvalidInput("a ruling of none names no party in breach, so it cannot carry an --amount")
            extra["amount"] = str(check_decimal(amount, "amount", minimum=Decimal(0), maximum=MAX_AD_BUDGET, open_minimum=False))
        return extra
    return {}


_WITH_REASON = frozenset({
    Action.REJECT, Action.WITHDRAW, Action.CANCEL_REQUEST, Action.REVIEW_FAIL, Action.EXTEND_REQUEST,
    Action.COMPLAIN, Action.APPEAL, Action.ARBITRATE,
})
_BY = frozenset({Action.CANCEL_REQUEST, Action.EXTEND_REQUEST, Action.COMPLAIN, Action.APPEAL})


def _action_data(
    action: Action, party: Party | None, reason: str | None, evidence: str | None, extra: dict, current: Order
) -> dict:
    """The event's data: who asked (`by`), the values the action carries, its reason and evidence."""
    data: dict = dict(extra)
    if action in _BY and party is not None:
        data["by"] = str(party)
    if action is Action.DELIVER:
        data["mode"] = "manual"
    if evidence is not None and action in (Action.DELIVER, Action.COMPLAIN):
        data["evidence"] = evidence
    if action is Action.EXTEND_CONFIRM and current.proposed_latest_start_at is not None:
        data["latest_start_at"] = iso(current.proposed_latest_start_at)
    if action is Action.ARBITRATE:
        data["final"] = current.appeals >= current.policy.max_appeals
    if reason is not None and action in _WITH_REASON:
        data["reason"] = reason
    return data


def allowed_in(action: Action) -> list[Status]:
    return [status for (status, act_), _ in TRANSITIONS.items() if act_ is action]


def _not_allowed(before: Order, current: Order, action: Action, fired: Outcome, tz: tzinfo = UTC) -> str:
    allowed = " or ".join(allowed_in(action))
    if fired.events:
        last = fired.events[-1]
        return (
            f"too late: order {before.id} became {current.status} at {iso(last.at, tz)} when its deadline passed; "
            f"{action} needs {allowed}"
        )
    return f"order {before.id} is {current.status}; {action} needs {allowed}"


def reminders_due(order: Order) -> list[tuple[str, int, int, Reminder]]:
    """Reminders not yet written that apply now: (key, remind_at, deadline, reminder)."""
    due = []
    for reminder in REMINDERS:
        if order.status not in reminder.statuses:
            continue
        if reminder.overdue:
            offset = 0
        else:
            offset = reminder.offset(order)
            if offset <= 0:
                continue
        deadline = reminder.deadline(order)
        key = f"{reminder.name}@{deadline}"
        if key not in order.reminders_sent:
            due.append((key, deadline - offset, deadline, reminder))
    return due


def remind(order: Order, now: int, tz: tzinfo = UTC) -> Outcome:
    """Write each reminder whose time has come while its deadline is still ahead of `now`."""
    notes = []
    sent = set(order.reminders_sent)
    for key, remind_at, deadline, reminder in reminders_due(order):
        if remind_at <= now and (now < deadline or reminder.overdue):
            at = max(remind_at, order.last_event_at)
            text = reminder.text.format(id=order.id, deadline=iso(deadline, tz))
            notes.append(Notification(order.id, reminder.recipient_of(order), reminder.channel, Kind.REMINDER.value, at, text))
            sent.add(key)
    if not notes:
        return Outcome(order)
    return Outcome(replace(order, reminders_sent=frozenset(sent)), [], notes)


def tick_order(order: Order, now: int, operator: str, tz: tzinfo = UTC) -> Outcome:
    """What `tick` does to one order: fire every due deadline, then write due reminders."""
    fired = fire_due(order, now, operator, tz)
    reminded = remind(fired.order, now, tz)
    return fired.then(reminded) if reminded.notifications else fired


def wake_at(order: Order) -> int | None:
    """The next instant `tick` has something to do for this order: a deadline or a reminder."""
    times = [remind_at for _, remind_at, _, _ in reminders_due(order)]
    deadline = order.deadline
    if deadline is not None:
        times.append(deadline)
    return min(times) if times else None


# --------------------------------------------------------------------------- events back to actions

ACTION_OF_KIND: dict[str, Action] = {
    Kind.ACCEPTED: Action.ACCEPT,
    Kind.REJECTED: Action.REJECT,
    Kind.WITHDRAWN: Action.WITHDRAW,
    Kind.CANCEL_REQUESTED: Action.CANCEL_REQUEST,
    Kind.CANCEL_CONFIRMED: Action.CANCEL_CONFIRM,
    Kind.CANCEL_DECLINED: Action.CANCEL_DECLINE,
    Kind.WENT_LIVE: Action.GO_LIVE,
    Kind.DELIVERED: Action.DELIVER,
    Kind.REVIEW_PASSED: Action.REVIEW_PASS,
    Kind.REVIEW_FAILED: Action.REVIEW_FAIL,
    Kind.CANCEL_WITHDRAWN: Action.CANCEL_WITHDRAW,
    Kind.EXTENSION_REQUESTED: Action.EXTEND_REQUEST,
    Kind.EXTENSION_CONFIRMED: Action.EXTEND_CONFIRM,
    Kind.EXTENSION_DECLINED: Action.EXTEND_DECLINE,
    Kind.COMPLAINT_FILED: Action.COMPLAIN,
    Kind.RULED: Action.ARBITRATE,
    Kind.APPEALED: Action.APPEAL,
}
