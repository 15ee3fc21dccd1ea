"""Rebuilding an order from its events alone, with the same rules the live commands use.

Pure. `verify_chain` checks the hash chain; `rebuild` feeds each recorded event back through
`lifecycle.create`, `lifecycle.act` and `lifecycle.fire_due` and checks that the rules produce
exactly that event at that instant. `replay`, `import` and the timeline of `show` use it.
`check_outbox` compares an order's notifications and `reminders_sent` with what the rules wrote
along the rebuilt history (SPEC section 7, "Files are input like any other").

`rebuild(..., strict=True)` (the default) is for new input, a file read by `replay` or `import`:
ids, texts and operators are checked as typed ones (`coopctl.trust`). A history stored in this
database is rebuilt with `strict=False`: values stored before the rules were tightened (an id with
a zero-width space, a merchant that is its own creator) stay readable and are checked by the rules
they were stored under (`trust.check_stored_id`); `doctor` reports them (`trust.id_problem`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from coopctl.errors import CoopError
from coopctl.evidence import files_from_json
from coopctl.lifecycle import (
    ACTION_OF_KIND,
    PLATFORM,
    Action,
    EVIDENCE_KEY,
    GENESIS_HASH,
    SYSTEM,
    Event,
    Kind,
    Notification,
    Order,
    Outcome,
    Party,
    Terms,
    act,
    create,
    event_hash,
    fire_due,
    reminders_due,
)
from coopctl.memo import ValueCache
from coopctl.policy import POLICY_KEYS_OF_V4, InvalidValue, Policy, ReminderOffsets, iso, parse_instant, to_instant
from coopctl.trust import check_id, check_operator, check_stored_id


class Divergence(Exception):
    """The recorded history and the rules part ways at event `seq`."""

    def __init__(self, seq: int, why: str):
        super().__init__(f"event seq {seq}: {why}")
        self.seq = seq
        self.why = why

    def __reduce__(self):  # pickled with the arguments it was made from (replay's helper sends verdicts back)
        return (type(self), (self.seq, self.why))


class NotificationDivergence(Divergence):
    """An order's outbox (or `reminders_sent`) is not what the rules wrote along its history:
    `index` is the notification's place in the order's list (0-based, as in the file), `kind` its kind."""

    def __init__(self, seq: int, index: int | None, kind: str | None, why: str):
        where = "reminders_sent" if index is None else f"notifications[{index}] (kind {kind})"
        Exception.__init__(self, f"{where}: {why}")
        self.seq = seq
        self.index = index
        self.kind = kind
        self.why = f"{where}: {why}"
        self._given = why

    def __reduce__(self):
        return (type(self), (self.seq, self.index, self.kind, self._given))


@dataclass(frozen=True)
class Step:
    """One recorded event, the order right after it, and the notifications the rules wrote with it."""

    event: Event
    order: Order
    notifications: tuple[Notification, ...] = ()


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


def _created(order_id: int, e: Event, strict: bool) -> Outcome:
    if e.kind != Kind.CREATED:
        raise Divergence(e.seq, f"the first event must be 'created', not {e.kind!r}")
    data = e.data
    if not isinstance(data, dict) or not isinstance(data.get("terms"), dict):
        raise Divergence(e.seq, "the created event lacks its terms")
    try:
        terms = _terms_from_json(data["terms"], strict)
        policy = Policy.from_json(data.get("policy", {}))
        reminders = ReminderOffsets.from_json(data.get("reminders", {}))
        key = data.get("idempotency_key")
        if key is not None:
            key = (check_id if strict else check_stored_id)(key, "idempotency key")
        return create(order_id, terms, policy, reminders, e.at, e.operator, key, written_policy=_as_recorded(policy, data))
    except (CoopError, InvalidValue) as exc:
        raise Divergence(e.seq, f"not allowed: {exc}") from None


# The terms of a created event, each distinct value (and strictness) read once (`memo`: a book
# repeats its merchants, creators, products and terms).
_terms_from_json = ValueCache(lambda data, strict: Terms.from_json(data, strict=strict))


def _as_recorded(policy: Policy, data: dict) -> dict | None:
    """The policy as a created event recorded before schema 4 wrote it: without the keys that
    version added (they mean their defaults, which `Policy.from_json` gave them), each other key
    as the rules write it. None for a policy that lacks no such key (then it is written in full)."""
    recorded = data.get("policy")
    if not isinstance(recorded, dict):
        return None
    full = policy.to_json()
    missing = full.keys() - recorded.keys()
    if not missing or not missing <= POLICY_KEYS_OF_V4:
        return None
    return {key: value for key, value in full.items() if key in recorded}


def recorded_action(e: Event) -> tuple[Action, Party | None, str | None, dict]:
    """The action a party's (or the platform's) event records, as `act` takes it: (action, party
    (None: the platform), party id, the keyword values its data carries). ValueError says why an
    event is no such action."""
    action = ACTION_OF_KIND.get(e.kind)
    party_text, _, party_id = e.actor.partition(":")
    platform = e.actor == PLATFORM
    if action is None or (party_text not in ("merchant", "creator") and not platform) or platform != (action is Action.ARBITRATE):
        raise ValueError(f"{e.actor!r} cannot cause a {e.kind!r} event")
    data = e.data if isinstance(e.data, dict) else {}
    values = {"reason": data.get("reason"), "evidence": data.get("evidence")}
    if action is Action.EXTEND_REQUEST and isinstance(data.get("latest_start_at"), str):
        try:
            values["proposal"] = parse_instant(data["latest_start_at"], timezone.utc)
        except InvalidValue as exc:
            raise ValueError(f"latest_start_at: {exc}") from None
    if action is Action.ARBITRATE:
        values["ruling"], values["amount"] = data.get("ruling"), data.get("amount")
    return action, None if platform else Party(party_text), None if platform else party_id, values


def _party_step(order: Order, e: Event, strict: bool) -> Outcome:
    """A party's (or the platform's) recorded action, taken again through `act` with the values
    its event carries: the rules then check it was allowed and give the same event."""
    try:
        action, party, party_id, values = recorded_action(e)
    except ValueError as exc:
        raise Divergence(e.seq, str(exc)) from None
    data = e.data if isinstance(e.data, dict) else {}
    if e.kind == Kind.DELIVERED and data.get("mode") != "manual":
        raise Divergence(e.seq, "a delivery by a party must be manual")
    try:
        return act(
            order, action, party, party_id, e.at, e.operator,
            evidence_files=files_from_json(data.get(EVIDENCE_KEY), strict=strict), strict=strict, **values,
        )
    except CoopError as exc:
        raise Divergence(e.seq, f"not allowed at {iso(e.at)}: {exc}") from None


def _check_operator(e: Event) -> None:
    try:
        check_operator(e.operator, "operator")
    except CoopError as exc:
        raise Divergence(e.seq, f"not allowed: {exc}") from None


def _describe(expected: Event, recorded: Event) -> str:
    for name in ("kind", "at", "actor", "operator", "data"):
        mine, theirs = getattr(expected, name), getattr(recorded, name)
        if mine != theirs:
            if name == "at":
                mine, theirs = iso(mine), iso(theirs)
            return f"outcome differs: the rules give {name} {mine!r} here, the history has {theirs!r}"
    return "outcome differs: the rules give another hash here"


def rebuild(order_id: int, events: list[Event], *, strict: bool = True) -> list[Step]:
    """Replay the events through the rules; the steps with the order after each event and the
    notifications the rules wrote with it. `strict` (new input, the default) checks ids, texts and
    operators as typed ones; `strict=False` (a history stored here) by the rules they were stored
    under, so that ids stored before SPEC section 1's rules still rebuild."""
    if not events:
        raise Divergence(1, "the order has no events")
    if strict:
        for e in events:
            _check_operator(e)
    produced = _created(order_id, events[0], strict)
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
            produced = _party_step(order, e, strict)


def _steps(before: Order | None, outcome: Outcome) -> list[Step]:
    """A step per event of an outcome. Within a cascade deadlines strictly increase, so the
    order after a system event at t is `fire_due(before, t)`; the last event leaves `outcome.order`.

    Each event's notifications are the outcome's next ones of its kind and instant: `_record`
    writes every notification of an event with the event's kind and `at`, right after the
    notifications of the event before, and no two successive events share both."""
    steps = []
    last = len(outcome.events) - 1
    notes = outcome.notifications
    taken = 0
    for index, e in enumerate(outcome.events):
        if index < last and before is not None and e.actor == SYSTEM:
            after = fire_due(before, e.at, e.operator).order
        else:
            after = outcome.order
        start = taken
        while taken < len(notes) and notes[taken].kind == e.kind and notes[taken].at == e.at:
            taken += 1
        steps.append(Step(e, after, tuple(notes[start:taken])))
    return steps


# --------------------------------------------------------------------------- the outbox


# An instant as `policy.iso` writes one into a notification's text, in the offset of the command
# that wrote it: texts compare with every such instant read as an instant.
_INSTANT_IN_TEXT = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[+-]\d{2}:\d{2}|Z))")


def _text_key(text: str) -> tuple:
    """A text split around its instants, each instant read (an aware datetime compares by the
    instant it names, whatever its offset); an instant that cannot be read stays text."""
    parts = _INSTANT_IN_TEXT.split(text)
    for i in range(1, len(parts), 2):
        try:
            parts[i] = datetime.fromisoformat(parts[i])
        except ValueError:
            pass
    return tuple(parts)


def same_text(mine: str, theirs: str) -> bool:
    """Two notification texts say the same: equal once the instants in them are compared as
    instants (the same message written by a command in another time zone is the same text);
    any other difference is a different text."""
    return mine == theirs or _text_key(mine) == _text_key(theirs)


def comparable_text(text: str) -> str:
    """A notification's text with the instants in it written in UTC (for tests and messages)."""
    parts = _text_key(text)
    return "".join(iso(to_instant(p)) if isinstance(p, datetime) else p for p in parts)


def _same(mine: Notification, theirs: Notification) -> str | None:
    """Why a notification in the file is not the one the rules wrote (None when it is)."""
    for name in ("recipient", "channel", "kind"):
        if getattr(mine, name) != getattr(theirs, name):
            return f"the rules write {name} {getattr(mine, name)!r} here, the file has {getattr(theirs, name)!r}"
    if mine.at != theirs.at:
        return f"the rules write it at {iso(mine.at)}, the file has {iso(theirs.at)}"
    if not same_text(mine.text, theirs.text):
        return f"the rules write the text {mine.text!r}, the file has another"
    return None


def check_outbox(steps: list[Step], notifications: list[Notification], reminders_sent: frozenset[str]) -> None:
    """The order's notifications (in outbox order) and `reminders_sent` are what the rules wrote
    along the rebuilt `steps`; raises NotificationDivergence naming the first that is not.

    Each event's notifications come in the order the rules wrote them, events in seq order (only
    the delivery fields are not compared: the caller leaves them out). A reminder (kind
    `reminder`) is written by a `tick` between two events, so it may stand between the
    notifications of event k and those of event k+1 (at any place there is one a tick could have
    written it, whatever its `at`), and there it must be exactly the notification that
    `lifecycle.remind` writes for one of the reminders due in the order after event k: its
    recipient, channel, `at` (its reminder time, or event k's instant when later) and text, dated
    before its deadline, at a time a tick could have run (after the reminder time, before both the
    reminder's deadline and the order's next deadline, which that tick would have fired first),
    and written once. The keys of the reminders present are exactly `reminders_sent`: a key without
    its reminder is a silenced reminder, a reminder without its key a forged one."""
    position = 0
    written: dict[str, int] = {}  # reminder key -> index of its notification
    last_seq = steps[-1].event.seq if steps else 1
    for number, step in enumerate(steps):
        if number:
            position = _reminders_at(steps[number - 1], notifications, position, written)
        elif position < len(notifications) and notifications[position].kind == Kind.REMINDER:
            raise NotificationDivergence(1, position, Kind.REMINDER.value, "a reminder before the order was created")
        for expected in step.notifications:
            if position >= len(notifications):
                raise NotificationDivergence(
                    step.event.seq, None if not notifications else len(notifications), expected.kind,
                    f"missing: the rules notify {expected.recipient} on {expected.channel} of event seq {step.event.seq} "
                    f"({step.event.kind}) here, the file has no such notification",
                )
            found = notifications[position]
            why = _same(expected, found)
            if why is not None:
                raise NotificationDivergence(step.event.seq, position, found.kind, f"event seq {step.event.seq} ({step.event.kind}): {why}")
            position += 1
    if steps:
        position = _reminders_at(steps[-1], notifications, position, written)
    if position < len(notifications):
        found = notifications[position]
        raise NotificationDivergence(
            last_seq, position, found.kind,
            f"the rules wrote no such notification (to {found.recipient} on {found.channel} at {iso(found.at)})",
        )
    unmarked = sorted((index, key) for key, index in written.items() if key not in reminders_sent)
    if unmarked:
        index, key = unmarked[0]
        raise NotificationDivergence(
            last_seq, index, Kind.REMINDER.value,
            f"reminder {key!r} is not in reminders_sent (a reminder the order does not know it was sent)",
        )
    missing = sorted(reminders_sent - written.keys())
    if missing:
        raise NotificationDivergence(
            last_seq, None, None,
            f"it holds {missing[0]!r} but the file has no such reminder (a reminder marked sent that is not there)",
        )


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _reminders_at(step: Step, notifications: list[Notification], position: int, written: dict[str, int]) -> int:
    """Check the reminders that stand at `position`, written by ticks after `step`; returns the
    position after them."""
    order = step.order if not step.order.reminders_sent else replace(step.order, reminders_sent=frozenset())
    while position < len(notifications) and notifications[position].kind == Kind.REMINDER:
        found = notifications[position]
        key = _reminder_key(step, order, found, position)
        if key in written:
            raise NotificationDivergence(
                step.event.seq, position, found.kind, f"reminder {key!r} was already written (notifications[{written[key]}])"
            )
        written[key] = position
        position += 1
    return position


def _reminder_key(step: Step, order: Order, found: Notification, position: int) -> str:
    """The key of the due reminder that `found` is, or NotificationDivergence."""
    after = f"after event seq {step.event.seq} ({step.event.kind}, order {order.status})"
    closest = None
    for key, remind_at, deadline, reminder in reminders_due(order):
        at = max(remind_at, order.last_event_at)
        text = reminder.text.format(id=order.id, deadline=iso(deadline))
        expected = Notification(order.id, reminder.recipient_of(order), reminder.channel, Kind.REMINDER.value, at, text)
        if (expected.recipient, expected.channel) != (found.recipient, found.channel) or not same_text(text, found.text):
            closest = closest or expected
            continue
        why = _same(expected, found)
        if why is not None:
            raise NotificationDivergence(step.event.seq, position, found.kind, f"reminder {key!r} {after}: {why}")
        next_deadline = order.deadline
        until = None if reminder.overdue else deadline  # an overdue reminder has no deadline to come before
        if (until is not None and (not remind_at < until or not at < until)) or (
            next_deadline is not None and not remind_at < next_deadline
        ):
            raise NotificationDivergence(
                step.event.seq, position, found.kind,
                f"reminder {key!r} {after}: no tick can write it (its time {iso(remind_at)} is not before its deadline "
                f"{iso(deadline)} and the order's next deadline)",
            )
        return key
    if closest is None:
        why = f"no reminder applies {after}; the rules wrote no such notification"
    else:
        why = f"not a reminder the rules write {after} (to {found.recipient} on {found.channel}: {_short(found.text)})"
    raise NotificationDivergence(step.event.seq, position, found.kind, why)
