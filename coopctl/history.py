"""Rebuilding an order from its events alone, with the same rules the live commands use.

Pure. `verify_chain` checks the hash chain; `rebuild` feeds each recorded event back through
`lifecycle.create`, `lifecycle.act` and `lifecycle.fire_due` and checks that the rules produce
exactly that event at that instant. `replay`, `import` and the timeline of `show` use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from coopctl.errors import CoopError
from coopctl.lifecycle import (
    ACTION_OF_KIND,
    GENESIS_HASH,
    SYSTEM,
    Event,
    Kind,
    Order,
    Outcome,
    Party,
    Terms,
    act,
    create,
    event_hash,
    fire_due,
)
from coopctl.policy import InvalidValue, Policy, ReminderOffsets, iso


class Divergence(Exception):
    """The recorded history and the rules part ways at event `seq`."""

    def __init__(self, seq: int, why: str):
        super().__init__(f"event seq {seq}: {why}")
        self.seq = seq
        self.why = why


@dataclass(frozen=True)
class Step:
    """One recorded event and the order right after it."""

    event: Event
    order: Order


def verify_chain(order_id: int, events: list[Event]) -> None:
    """Each event follows the previous one (seq, prev_hash) and its hash matches its content."""
    if not events:
        raise Divergence(1, "the order has no events")
    previous = GENESIS_HASH
    for position, e in enumerate(events, start=1):
        if e.seq != position:
            if e.seq > position and any(later.seq == position for later in events[position:]):
                raise Divergence(position, f"events reordered: seq {position} comes after seq {e.seq}")
            if e.seq > position:
                raise Divergence(position, f"event removed: seq {position} is missing (found seq {e.seq} next)")
            raise Divergence(e.seq, f"event inserted or reordered: seq {e.seq} appears at position {position}")
        if e.prev_hash != previous:
            raise Divergence(e.seq, "prev_hash does not match the previous event's hash (event removed, inserted or reordered)")
        expected = event_hash(order_id, e.seq, e.kind, e.at, e.actor, e.operator, e.data, e.prev_hash)
        if e.hash != expected:
            raise Divergence(e.seq, "hash does not match the event's content (event altered or hash forged)")
        previous = e.hash


def _created(order_id: int, e: Event) -> Outcome:
    if e.kind != Kind.CREATED:
        raise Divergence(e.seq, f"the first event must be 'created', not {e.kind!r}")
    data = e.data
    if not isinstance(data, dict) or not isinstance(data.get("terms"), dict):
        raise Divergence(e.seq, "the created event lacks its terms")
    try:
        terms = Terms.from_json(data["terms"])
        policy = Policy.from_json(data.get("policy", {}))
        reminders = ReminderOffsets.from_json(data.get("reminders", {}))
        return create(order_id, terms, policy, reminders, e.at, e.operator, data.get("idempotency_key"))
    except (CoopError, InvalidValue) as exc:
        raise Divergence(e.seq, f"not allowed: {exc}") from None


def _party_step(order: Order, e: Event) -> Outcome:
    action = ACTION_OF_KIND.get(e.kind)
    party_text, _, party_id = e.actor.partition(":")
    if action is None or party_text not in ("merchant", "creator"):
        raise Divergence(e.seq, f"{e.actor!r} cannot cause a {e.kind!r} event")
    data = e.data if isinstance(e.data, dict) else {}
    if e.kind == Kind.DELIVERED and data.get("mode") != "manual":
        raise Divergence(e.seq, "a delivery by a party must be manual")
    try:
        return act(
            order, action, Party(party_text), party_id, e.at, e.operator,
            reason=data.get("reason"), evidence=data.get("evidence"),
        )
    except CoopError as exc:
        raise Divergence(e.seq, f"not allowed at {iso(e.at)}: {exc}") from None


def _describe(expected: Event, recorded: Event) -> str:
    for name in ("kind", "at", "actor", "operator", "data"):
        mine, theirs = getattr(expected, name), getattr(recorded, name)
        if mine != theirs:
            if name == "at":
                mine, theirs = iso(mine), iso(theirs)
            return f"outcome differs: the rules give {name} {mine!r} here, the history has {theirs!r}"
    return "outcome differs: the rules give another hash here"


def rebuild(order_id: int, events: list[Event]) -> list[Step]:
    """Replay the events through the rules; the steps with the order after each event."""
    if not events:
        raise Divergence(1, "the order has no events")
    produced = _created(order_id, events[0])
    order: Order | None = None
    steps: list[Step] = []
    position = 0
    while True:
        for expected in produced.events:
            if position >= len(events):
                raise Divergence(
                    expected.seq,
                    f"missing event: the rules fire {expected.kind!r} at {iso(expected.at)} before the next recorded event",
                )
            recorded = events[position]
            if expected != recorded:
                if recorded.actor != SYSTEM and expected.actor == SYSTEM:
                    raise Divergence(
                        recorded.seq,
                        f"not allowed: a deadline had passed before it ({expected.kind!r} was due at {iso(expected.at)})",
                    )
                raise Divergence(recorded.seq, _describe(expected, recorded))
            position += 1
        steps += _steps(order, produced)
        order = produced.order
        if position >= len(events):
            return steps
        e = events[position]
        if e.at < order.last_event_at:
            raise Divergence(e.seq, f"time goes backwards: {iso(e.at)} is before {iso(order.last_event_at)}")
        if e.actor == SYSTEM:
            produced = fire_due(order, e.at, e.operator)
            if not produced.events:
                deadline = order.deadline
                when = "no deadline" if deadline is None else f"the deadline is {iso(deadline)}"
                raise Divergence(e.seq, f"not allowed: the system fired {e.kind!r} at {iso(e.at)} but {when}")
        else:
            produced = _party_step(order, e)


def _steps(before: Order | None, outcome: Outcome) -> list[Step]:
    """A step per event of an outcome. Within a cascade deadlines strictly increase, so the
    order after a system event at t is `fire_due(before, t)`; the last event leaves `outcome.order`."""
    steps = []
    last = len(outcome.events) - 1
    for index, e in enumerate(outcome.events):
        if index < last and before is not None and e.actor == SYSTEM:
            after = fire_due(before, e.at, e.operator).order
        else:
            after = outcome.order
        steps.append(Step(e, after))
    return steps
