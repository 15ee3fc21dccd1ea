"""The rules of a cooperation order (SPEC section 1), tested on the pure core: no database, no CLI.

The expected tables below are copied from SPEC.md, not from `coopctl.lifecycle`, so that a
change to the rules in the code that the spec does not make shows up here.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import timezone
from decimal import Decimal

import pytest

from coopctl.errors import InvalidInput, Refused
from coopctl.lifecycle import (
    GENESIS_HASH,
    Action,
    Event,
    Order,
    Outcome,
    Party,
    Status,
    Terms,
    act,
    create,
    event_hash,
    fire_due,
    make_terms,
    remind,
    tick_order,
    wake_at,
)
from coopctl.policy import DAY, HOUR, MINUTE, Policy, ReminderOffsets, parse_instant

# --------------------------------------------------------------------------- the spec, literally

MERCHANT_ID = "商家A"
CREATOR_ID = "达人小王"
OPERATOR = "ops"
T0 = parse_instant("2026-11-01T10:00:00+08:00", timezone.utc)
LATEST = T0 + 10 * DAY

S = Status
A = Action
MERCHANT, CREATOR = Party.MERCHANT, Party.CREATOR

ALL_STATUSES = [
    "pending", "effective", "cancel_requested", "live", "delivered", "review_failed", "extension_requested",
    "completed", "rejected", "withdrawn", "expired", "cancelled", "cancelled_unilaterally", "closed_overdue",
    "disputed", "ruled", "resolved",
]
ALL_ACTIONS = [
    "accept", "reject", "withdraw", "cancel-request", "cancel-confirm", "cancel-decline", "cancel-withdraw",
    "extend-request", "extend-confirm", "extend-decline",
    "go-live", "deliver", "review --pass", "review --fail", "complain", "arbitrate", "appeal",
]

# status -> terms (the "terms" column of the states table)
SPEC_TERMS = {
    "pending": "not_yet_effective",
    "effective": "in_force",
    "cancel_requested": "in_force",
    "live": "in_force",
    "delivered": "in_force",
    "review_failed": "in_force",
    "completed": "fulfilled",
    "rejected": "void",
    "withdrawn": "void",
    "expired": "void",
    "cancelled": "void",
    "cancelled_unilaterally": "in_force",
    "closed_overdue": "in_force",
    "disputed": "in_force",
    "extension_requested": "in_force",
    "ruled": "settled",
    "resolved": "settled",
}
# no deadline of their own (a dispute waits for a person; its reminder to the platform is not a deadline)
TERMINAL = {
    "completed", "rejected", "withdrawn", "expired", "cancelled", "cancelled_unilaterally", "closed_overdue", "disputed",
    "resolved",
}
# the actions whose notifications go to both parties and the platform (SPEC section 1, "Notifications")
TO_EVERYONE = {"complain", "arbitrate", "appeal"}

# who acts: "creator", "merchant", "either", "other" (the party that did not request or propose),
# "requester" (the party that did), "not_liable" (the party not liable) or "platform"
SPEC_ACTIONS = {
    "accept": ("creator", {"pending": "effective"}, "accepted"),
    "reject": ("creator", {"pending": "rejected"}, "rejected"),
    "withdraw": ("merchant", {"pending": "withdrawn"}, "withdrawn"),
    "cancel-request": ("either", {"effective": "cancel_requested"}, "cancel_requested"),
    "cancel-confirm": ("other", {"cancel_requested": "cancelled"}, "cancel_confirmed"),
    "cancel-decline": ("other", {"cancel_requested": "effective"}, "cancel_declined"),
    "go-live": ("creator", {"effective": "live"}, "went_live"),
    "deliver": ("creator", {"effective": "delivered", "live": "delivered", "review_failed": "delivered"}, "delivered"),
    "review --pass": ("merchant", {"delivered": "completed"}, "review_passed"),
    "review --fail": ("merchant", {"delivered": "review_failed"}, "review_failed"),
    "cancel-withdraw": ("requester", {"cancel_requested": "effective"}, "cancel_withdrawn"),
    "extend-request": ("either", {"effective": "extension_requested"}, "extension_requested"),
    "extend-confirm": ("other", {"extension_requested": "effective"}, "extension_confirmed"),
    "extend-decline": ("other", {"extension_requested": "effective"}, "extension_declined"),
    "complain": (
        "not_liable", {"closed_overdue": "disputed", "cancelled_unilaterally": "disputed", "completed": "disputed"},
        "complaint_filed",
    ),
    "arbitrate": ("platform", {"disputed": "ruled"}, "ruled"),
    "appeal": ("either", {"ruled": "disputed"}, "appealed"),
}

# status -> (status after the deadline, event kind, liable party after it)
SPEC_TIMEOUTS = {
    "pending": ("expired", "expired", None),
    "effective": ("closed_overdue", "closed_overdue", "creator"),
    "cancel_requested": ("cancelled_unilaterally", "cancelled_unilaterally", "requester"),
    "live": ("delivered", "delivered", None),
    "delivered": ("completed", "auto_accepted", None),
    "review_failed": ("disputed", "escalated", None),
    "extension_requested": ("effective", "extension_lapsed", None),
    "ruled": ("resolved", "ruling_final", None),  # the stories' rulings are `none`
}


def spec_deadline(status: str, entered_at: int, created_at: int, latest_start: int, policy: Policy) -> int | None:
    """The "next deadline" column of the states table."""
    return {
        "pending": lambda: min(created_at + policy.accept_window, latest_start),
        "effective": lambda: latest_start,
        "cancel_requested": lambda: min(entered_at + policy.cancel_response_window, latest_start),
        "live": lambda: entered_at + policy.auto_deliver_after,
        "delivered": lambda: entered_at + policy.review_window,
        "review_failed": lambda: entered_at + policy.makeup_window,
        "extension_requested": lambda: min(entered_at + policy.extension_response_window, latest_start),
        "ruled": lambda: entered_at + policy.appeal_window,
    }.get(status, lambda: None)()


def acting_parties(action: str, requester: Party | None, status: str | None = None) -> list[Party | None]:
    """Who may do `action` (None: the platform); `requester` asked for the cancellation or proposed
    the extension (the stories' requester), and the liable party of `status` may not complain."""
    who = SPEC_ACTIONS[action][0]
    if who == "platform":
        return [None]
    if who == "not_liable":
        if status == "completed":
            return [MERCHANT, CREATOR]
        liable = CREATOR if status == "closed_overdue" else requester
        return [liable.other]
    if who == "either":
        return [MERCHANT, CREATOR]
    if who == "other":
        return [requester.other]
    if who == "requester":
        return [requester]
    return [Party(who)]


def requester_of(order: Order) -> Party | None:
    return order.cancel_requested_by or order.extension_requested_by


def natural_party(action: str) -> Party | None:
    """The party that would do this action when it is allowed (for refusals by state)."""
    who = SPEC_ACTIONS[action][0]
    if who == "platform":
        return None
    return Party(who) if who in ("creator", "merchant") else MERCHANT


def addr(party: Party | None) -> str:
    if party is None:
        return "platform"
    return f"{party}:{MERCHANT_ID if party is MERCHANT else CREATOR_ID}"


# --------------------------------------------------------------------------- building orders


def terms(latest_start: int = LATEST, **overrides) -> Terms:
    fields = dict(
        merchant=MERCHANT_ID, creator=CREATOR_ID, products=["商品-001", "P2"], form="live",
        commission="12.5", ad_budget="5000", latest_start_at=latest_start, note="双十一专场",
    )
    fields.update(overrides)
    return make_terms(**fields)


class Story:
    """An order and everything written for it so far."""

    def __init__(self, outcome: Outcome):
        self.order = outcome.order
        self.events: list[Event] = list(outcome.events)
        self.notes = list(outcome.notifications)

    def apply(self, outcome: Outcome) -> Outcome:
        self.order = outcome.order
        self.events += outcome.events
        self.notes += outcome.notifications
        return outcome

    def do(self, action: str, party: Party | None, at: int, **kw) -> Outcome:
        if action in ("review --fail", "complain", "appeal", "arbitrate"):
            kw.setdefault("reason", "画面模糊")
        if action == "arbitrate":
            kw.setdefault("ruling", "none")
        if action == "extend-request":
            kw.setdefault("proposal", self.order.terms.latest_start_at + 5 * DAY)
        party_id = None if party is None else self.order.party_id(party)
        return self.apply(act(self.order, Action(action), party, party_id, at, OPERATOR, **kw))

    def tick(self, now: int) -> Outcome:
        return self.apply(tick_order(self.order, now, OPERATOR))

    def copy(self) -> "Story":
        other = copy.copy(self)
        other.events = list(self.events)
        other.notes = list(self.notes)
        return other


def new_story(latest_start: int = LATEST, policy: Policy | None = None, reminders: ReminderOffsets | None = None) -> Story:
    return Story(create(1, terms(latest_start), policy or Policy(), reminders or ReminderOffsets(), T0, OPERATOR))


def story_in(status: str, requester: Party = MERCHANT, **kw) -> Story:
    """An order brought into `status` through the rules themselves, hour by hour from T0."""
    s = new_story(**kw)
    h = lambda n: T0 + n * HOUR  # noqa: E731
    if status == "pending":
        return s
    if status == "rejected":
        s.do("reject", CREATOR, h(1), reason="档期冲突")
        return s
    if status == "withdrawn":
        s.do("withdraw", MERCHANT, h(1), reason="预算调整")
        return s
    if status == "expired":
        s.tick(s.order.deadline)
        return s
    s.do("accept", CREATOR, h(1))
    if status == "effective":
        return s
    if status == "extension_requested":
        s.do("extend-request", requester, h(2), reason="主播生病")
        return s
    if status == "closed_overdue":
        s.tick(s.order.terms.latest_start_at)
        return s
    if status in ("cancel_requested", "cancelled", "cancelled_unilaterally"):
        s.do("cancel-request", requester, h(2), reason="计划有变")
        if status == "cancelled":
            s.do("cancel-confirm", requester.other, h(3))
        if status == "cancelled_unilaterally":
            s.tick(s.order.deadline)
        return s
    s.do("go-live", CREATOR, h(2))
    if status == "live":
        return s
    s.do("deliver", CREATOR, h(3), evidence="https://v.douyin.com/abc")
    if status == "delivered":
        return s
    if status in ("completed", "ruled", "resolved"):
        s.do("review --pass", MERCHANT, h(4))
        if status == "completed":
            return s
        s.do("complain", MERCHANT, h(5), reason="销量造假")
        s.do("arbitrate", None, h(6), reason="证据不足")
        if status == "resolved":
            s.do("appeal", requester, h(7), reason="新证据")
            s.do("arbitrate", None, h(8), reason="维持原裁决")
        return s
    s.do("review --fail", MERCHANT, h(4))
    if status == "review_failed":
        return s
    assert status == "disputed"
    s.do("deliver", CREATOR, h(5))
    s.do("review --fail", MERCHANT, h(6))
    s.do("deliver", CREATOR, h(7))
    s.do("review --fail", MERCHANT, h(8))
    return s


def expected_deadline(story: Story) -> int | None:
    o = story.order
    return spec_deadline(str(o.status), story.events[-1].at, story.events[0].at, o.terms.latest_start_at, o.policy)


def chain_is_valid(events: list[Event]) -> bool:
    prev = GENESIS_HASH
    for n, e in enumerate(events, start=1):
        if e.seq != n or e.prev_hash != prev:
            return False
        if e.hash != event_hash(e.order_id, e.seq, e.kind, e.at, e.actor, e.operator, e.data, e.prev_hash):
            return False
        prev = e.hash
    return True


ALLOWED_CASES = [
    pytest.param(status, action, party, id=f"{status}-{action}-by-{party or 'platform'}")
    for action, (who, sources, _) in SPEC_ACTIONS.items()
    for status in sources
    for party in acting_parties(action, MERCHANT, status)
]
# the allowed actions of a status with a deadline (a complaint's window is tested in test_disputes.py)
DEADLINE_CASES = [c for c in ALLOWED_CASES if c.values[0] in SPEC_TIMEOUTS]
REFUSED_PAIRS = [(s, a) for s in ALL_STATUSES for a in ALL_ACTIONS if s not in SPEC_ACTIONS[a][1]]


def test_the_tables_cover_seventeen_statuses_and_seventeen_actions():
    assert sorted(s.value for s in Status) == sorted(ALL_STATUSES)
    assert sorted(a.value for a in Action) == sorted(ALL_ACTIONS)
    allowed = sum(len(sources) for _, sources, _ in SPEC_ACTIONS.values())
    assert allowed == 21
    assert len(REFUSED_PAIRS) == 17 * 17 - 21


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_story_reaches_every_status_with_its_spec_terms_and_deadline(status):
    story = story_in(status)
    assert story.order.status == status
    assert story.order.terms_state == SPEC_TERMS[status]
    assert story.order.deadline == expected_deadline(story)
    assert (story.order.deadline is None) == (status in TERMINAL)
    assert chain_is_valid(story.events)


# --------------------------------------------------------------------------- every status x action


@pytest.mark.parametrize(("status", "action", "party"), ALLOWED_CASES)
def test_allowed_action_moves_to_the_spec_target_and_notifies_the_other_party(status, action, party):
    story = story_in(status)
    before = story.order
    at = before.last_event_at + 10 * MINUTE
    out = story.do(action, party, at)
    _, sources, kind = SPEC_ACTIONS[action]
    target = sources[status]
    after = out.order
    assert after.status == target
    assert after.terms_state == SPEC_TERMS[target]
    # a dispute keeps the liable party the order had when it opened; the stories rule `none`
    assert after.liable_party == (before.liable_party if action == "complain" else None)
    assert [e.kind for e in out.events] == [kind]
    event = out.events[0]
    assert event.seq == before.last_seq + 1
    assert event.at == at
    assert event.actor == addr(party)
    assert event.operator == OPERATOR
    assert event.prev_hash == before.last_hash
    assert after.last_hash == event.hash
    assert after.last_event_at == at
    recipients = [addr(MERCHANT), addr(CREATOR), "platform"] if action in TO_EVERYONE else [addr(party.other)]
    assert [(n.recipient, n.channel, n.kind, n.at) for n in out.notifications] == [
        (who, "inbox", kind, at) for who in recipients
    ]
    latest = before.terms.latest_start_at
    if action == "extend-confirm":
        assert after.terms.latest_start_at == before.proposed_latest_start_at == latest + 5 * DAY
        latest = before.proposed_latest_start_at
    assert after.deadline == spec_deadline(target, at, before.created_at, latest, before.policy)


@pytest.mark.parametrize(("status", "action"), REFUSED_PAIRS, ids=[f"{s}-{a}" for s, a in REFUSED_PAIRS])
def test_action_not_allowed_in_status_is_refused_and_changes_nothing(status, action):
    story = story_in(status)
    before = story.order
    snapshot = replace(before)
    party = natural_party(action)
    with pytest.raises(Refused) as info:
        story.do(action, party, before.last_event_at + 10 * MINUTE)
    assert status in str(info.value)
    assert story.order is before
    assert before == snapshot


@pytest.mark.parametrize(("status", "action"), REFUSED_PAIRS, ids=[f"{s}-{a}" for s, a in REFUSED_PAIRS])
def test_action_not_allowed_in_status_is_refused_for_either_party(status, action):
    story = story_in(status)
    for party in (MERCHANT, CREATOR):
        with pytest.raises(Refused):
            story.do(action, party, story.order.last_event_at + 10 * MINUTE)
    assert story.order.status == status


@pytest.mark.parametrize(("status", "action", "party"), [c for c in ALLOWED_CASES if c.values[2] is not None])
def test_wrong_party_id_is_refused(status, action, party):
    story = story_in(status)
    before = story.order
    at = before.last_event_at + MINUTE
    for wrong in ("someone-else", "", before.party_id(party.other), before.party_id(party) + " "):
        with pytest.raises(Refused):
            act(before, Action(action), party, wrong, at, OPERATOR, reason="r", ruling="none",
                proposal=before.terms.latest_start_at + DAY)
    assert story.order == before


@pytest.mark.parametrize(
    ("status", "action", "party"),
    [c for c in ALLOWED_CASES if SPEC_ACTIONS[c.values[1]][0] != "either" and c.values[:2] != ("completed", "complain")],
)
def test_wrong_party_kind_is_refused(status, action, party):
    story = story_in(status)
    before = story.order
    wrong = MERCHANT if party is None else party.other
    with pytest.raises(Refused):
        act(before, Action(action), wrong, before.party_id(wrong), before.last_event_at + MINUTE, OPERATOR, reason="r",
            ruling="none", proposal=before.terms.latest_start_at + DAY)
    if party is not None:  # nor may the platform do what a party does
        with pytest.raises(Refused):
            act(before, Action(action), None, None, before.last_event_at + MINUTE, OPERATOR, reason="r", ruling="none",
                proposal=before.terms.latest_start_at + DAY)
    assert story.order == before


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize(("status", "action", "party"), DEADLINE_CASES)
def test_action_one_microsecond_before_the_deadline_is_allowed(status, action, party):
    story = story_in(status)
    deadline = expected_deadline(story)
    assert story.order.deadline == deadline
    out = story.do(action, party, deadline - 1)
    assert [e.kind for e in out.events] == [SPEC_ACTIONS[action][2]]
    assert out.order.status == SPEC_ACTIONS[action][1][status]


@pytest.mark.parametrize(("status", "action", "party"), DEADLINE_CASES)
def test_action_at_the_deadline_is_too_late_because_the_deadline_fires_first(status, action, party):
    story = story_in(status)
    before = story.order
    deadline = expected_deadline(story)
    with pytest.raises(Refused) as info:
        story.do(action, party, deadline)
    message = str(info.value)
    assert "too late" in message
    assert SPEC_TIMEOUTS[status][0] in message
    assert story.order is before


@pytest.mark.parametrize("status", list(SPEC_TIMEOUTS))
def test_action_long_after_the_deadline_is_too_late(status):
    story = story_in(status)
    action = next(a for a, (_, sources, _) in SPEC_ACTIONS.items() if status in sources)
    party = acting_parties(action, requester_of(story.order), status)[0]
    with pytest.raises(Refused, match="too late"):
        story.do(action, party, expected_deadline(story) + 30 * DAY)


@pytest.mark.parametrize("requester", [MERCHANT, CREATOR])
@pytest.mark.parametrize("status", list(SPEC_TIMEOUTS))
def test_deadline_fires_at_the_deadline_not_before(status, requester):
    story = story_in(status, requester=requester)
    deadline = expected_deadline(story)
    early = tick_order(story.order, deadline - 1, OPERATOR)
    assert early.events == [] and early.order.status == status
    before = story.order
    out = story.tick(deadline)
    target, kind, liable = SPEC_TIMEOUTS[status]
    assert out.order.status == target
    assert [(e.kind, e.at, e.actor) for e in out.events] == [(kind, deadline, "system")]
    assert out.events[0].seq == before.last_seq + 1
    assert out.order.terms_state == SPEC_TERMS[target]
    expected_liable = requester if liable == "requester" else liable
    assert out.order.liable_party == (None if expected_liable is None else Party(expected_liable))
    timeout_notes = [n for n in out.notifications if n.kind != "reminder"]
    assert sorted((n.recipient, n.channel, n.kind, n.at) for n in timeout_notes) == sorted(
        [(addr(MERCHANT), "inbox", kind, deadline), (addr(CREATOR), "inbox", kind, deadline)]
    )


def test_pending_deadline_is_accept_window_after_creation_when_latest_start_is_later():
    story = new_story(latest_start=T0 + 10 * DAY)
    assert story.order.deadline == T0 + 3 * DAY


@pytest.mark.parametrize("latest", [T0 + 1, T0 + 1 * DAY, T0 + 3 * DAY - 1, T0 + 3 * DAY])
def test_pending_deadline_is_capped_by_latest_start(latest):
    story = new_story(latest_start=latest)
    assert story.order.deadline == min(T0 + 3 * DAY, latest) == latest
    out = story.tick(latest)
    assert [(e.kind, e.at) for e in out.events] == [("expired", latest)]


def test_pending_deadline_uses_the_policy_of_the_order():
    story = new_story(policy=Policy(accept_window=HOUR))
    assert story.order.deadline == T0 + HOUR


@pytest.mark.parametrize("requester", [MERCHANT, CREATOR])
def test_cancel_requested_deadline_is_capped_by_latest_start(requester):
    latest = T0 + 20 * HOUR
    story = story_in("effective", latest_start=latest)
    story.do("cancel-request", requester, T0 + 2 * HOUR)
    assert story.order.deadline == latest  # not T0 + 2h + 48h
    out = story.tick(latest)
    assert [(e.kind, e.at) for e in out.events] == [("cancelled_unilaterally", latest)]
    assert out.order.liable_party is requester


def test_cancel_requested_deadline_is_response_window_after_the_request():
    story = story_in("cancel_requested")
    assert story.order.deadline == T0 + 2 * HOUR + 48 * HOUR


@pytest.mark.parametrize("requester", [MERCHANT, CREATOR])
def test_cancelled_unilaterally_makes_the_requester_liable(requester):
    story = story_in("cancelled_unilaterally", requester=requester)
    assert story.order.status == "cancelled_unilaterally"
    assert story.order.liable_party is requester
    assert story.order.terms_state == "in_force"
    assert story.events[-1].data.get("liable_party", str(requester)) == str(requester)


def test_closed_overdue_makes_the_creator_liable():
    story = story_in("closed_overdue")
    assert story.order.liable_party is CREATOR
    assert story.order.terms_state == "in_force"
    assert story.events[-1].at == LATEST


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if s not in ("closed_overdue", "cancelled_unilaterally")])
def test_no_party_is_liable_in_any_other_status(status):
    assert story_in(status).order.liable_party is None


def test_timed_out_transition_is_dated_at_its_deadline_and_the_next_deadline_counts_from_there():
    story = story_in("live")
    went_live = T0 + 2 * HOUR
    auto_delivery = went_live + 24 * HOUR
    out = story.tick(auto_delivery + 5 * DAY)  # tick runs long after the deadline
    assert [(e.kind, e.at) for e in out.events] == [("delivered", auto_delivery)]
    assert out.order.delivered_at == auto_delivery
    assert out.order.deadline == auto_delivery + 14 * DAY
    assert out.order.last_event_at == auto_delivery


def test_escalation_is_dated_at_the_makeup_deadline():
    story = story_in("review_failed")
    failed_at = T0 + 4 * HOUR
    out = story.tick(failed_at + 30 * DAY)
    assert [(e.kind, e.at) for e in out.events] == [("escalated", failed_at + 7 * DAY)]
    assert out.order.status == "disputed"
    assert out.order.deadline is None


def test_one_tick_cascades_live_to_delivered_auto_to_completed_auto_accepted():
    story = story_in("live")
    went_live = T0 + 2 * HOUR
    before = story.order
    out = story.tick(went_live + 60 * DAY)
    delivered_at = went_live + 24 * HOUR
    assert [(e.kind, e.at, e.actor) for e in out.events] == [
        ("delivered", delivered_at, "system"),
        ("auto_accepted", delivered_at + 14 * DAY, "system"),
    ]
    assert out.events[0].data.get("mode") == "auto"
    assert [e.seq for e in out.events] == [before.last_seq + 1, before.last_seq + 2]
    assert out.events[1].prev_hash == out.events[0].hash
    order = out.order
    assert order.status == "completed"
    assert order.terms_state == "fulfilled"
    assert order.delivery_mode == "auto"
    assert order.delivered_at == delivered_at
    assert order.went_live_at == went_live
    assert order.deadline is None
    assert sorted((n.recipient, n.kind, n.at) for n in out.notifications) == sorted(
        [
            (addr(MERCHANT), "delivered", delivered_at),
            (addr(CREATOR), "delivered", delivered_at),
            (addr(MERCHANT), "auto_accepted", delivered_at + 14 * DAY),
            (addr(CREATOR), "auto_accepted", delivered_at + 14 * DAY),
        ]
    )
    assert all(n.channel == "inbox" for n in out.notifications)
    assert chain_is_valid(story.events)


def test_fire_due_cascade_stops_at_now():
    story = story_in("live")
    delivered_at = T0 + 26 * HOUR
    out = fire_due(story.order, delivered_at + 14 * DAY - 1, OPERATOR)
    assert [e.kind for e in out.events] == ["delivered"]
    assert out.order.status == "delivered"


@pytest.mark.parametrize("status", ALL_STATUSES)
@pytest.mark.parametrize("offset", [0, HOUR, 2 * DAY, 12 * DAY + 3 * HOUR, 13 * DAY, 40 * DAY])
def test_tick_twice_at_the_same_now_changes_nothing_the_second_time(status, offset):
    story = story_in(status, latest_start=T0 + 2 * DAY)
    now = story.order.last_event_at + offset
    first = story.tick(now)
    second = tick_order(first.order, now, OPERATOR)
    assert second.events == []
    assert second.notifications == []
    assert second.order == first.order


@pytest.mark.parametrize("latest", [T0 + 2 * DAY, T0 + 10 * DAY])
@pytest.mark.parametrize("status", list(SPEC_TIMEOUTS))
def test_ticking_hourly_yields_the_same_history_as_one_tick_at_the_end(status, latest):
    story = story_in(status, latest_start=latest)
    hourly, once = story.copy(), story.copy()
    start = story.order.last_event_at
    end = start + 30 * DAY
    now = start
    while now < end:
        now += HOUR - 7  # not aligned with any deadline
        hourly.tick(min(now, end))
    hourly.tick(end)
    once.tick(end)
    key = lambda e: (e.seq, e.kind, e.at, e.actor, e.operator, e.data, e.prev_hash, e.hash)  # noqa: E731
    assert [key(e) for e in hourly.events] == [key(e) for e in once.events]
    assert hourly.events == once.events
    assert replace(hourly.order, reminders_sent=frozenset()) == replace(once.order, reminders_sent=frozenset())
    assert once.order.status in TERMINAL


def test_ticking_every_minute_or_once_a_month_yields_the_same_history():
    minutely, monthly = story_in("live"), story_in("live")
    start = minutely.order.last_event_at
    for n in range(1, 16 * 24 * 60 + 1):
        minutely.tick(start + n * MINUTE)
    monthly.tick(start + 16 * DAY)
    assert minutely.events == monthly.events


def test_policy_fixed_on_the_order_decides_its_deadlines():
    story = new_story(policy=Policy(accept_window=DAY, auto_deliver_after=HOUR))
    assert story.order.policy.accept_window == DAY
    assert story.order.deadline == T0 + DAY
    story.do("accept", CREATOR, T0 + HOUR)
    story.do("go-live", CREATOR, T0 + 2 * HOUR)
    assert story.order.deadline == T0 + 3 * HOUR


# --------------------------------------------------------------------------- particular actions


def test_create_makes_a_pending_order_and_tells_the_creator_by_inbox_and_sms():
    out = create(7, terms(), Policy(), ReminderOffsets(), T0, OPERATOR)
    order = out.order
    assert order.status == "pending"
    assert order.terms_state == "not_yet_effective"
    assert order.created_at == T0
    assert order.deadline == T0 + 3 * DAY
    assert order.liable_party is None
    assert order.failed_reviews == 0
    assert [(e.seq, e.kind, e.at, e.actor, e.operator, e.prev_hash) for e in out.events] == [
        (1, "created", T0, addr(MERCHANT), OPERATOR, GENESIS_HASH)
    ]
    assert sorted((n.recipient, n.channel, n.kind, n.at) for n in out.notifications) == [
        (addr(CREATOR), "inbox", "created", T0),
        (addr(CREATOR), "sms", "created", T0),
    ]
    assert all(n.order_id == 7 for n in out.notifications)


def test_created_event_carries_the_terms_and_policy_for_replay():
    out = create(1, terms(), Policy(review_window=DAY), ReminderOffsets(), T0, OPERATOR)
    data = out.events[0].data
    assert Terms.from_json(data["terms"]) == out.order.terms
    assert Policy.from_json(data["policy"]) == Policy(review_window=DAY)


@pytest.mark.parametrize("latest", [T0, T0 - 1, T0 - DAY])
def test_create_with_latest_start_at_or_before_creation_is_invalid_input(latest):
    with pytest.raises(InvalidInput):
        create(1, terms(latest), Policy(), ReminderOffsets(), T0, OPERATOR)


def test_create_with_latest_start_one_microsecond_after_creation_is_valid():
    out = create(1, terms(T0 + 1), Policy(), ReminderOffsets(), T0, OPERATOR)
    assert out.order.deadline == T0 + 1


def test_deliver_from_effective_sets_went_live_at_without_a_went_live_event():
    story = story_in("effective")
    at = T0 + 5 * HOUR
    out = story.do("deliver", CREATOR, at, evidence="https://v.douyin.com/xyz")
    assert [e.kind for e in out.events] == ["delivered"]
    assert out.events[0].data.get("mode") == "manual"
    assert out.events[0].data.get("evidence") == "https://v.douyin.com/xyz"
    assert out.order.went_live_at == at
    assert out.order.delivered_at == at
    assert out.order.delivery_mode == "manual"
    assert "went_live" not in [e.kind for e in story.events]


def test_go_live_then_deliver_keeps_the_go_live_instant():
    story = story_in("live")
    out = story.do("deliver", CREATOR, T0 + 9 * HOUR)
    assert out.order.went_live_at == T0 + 2 * HOUR
    assert out.order.delivered_at == T0 + 9 * HOUR
    assert out.order.delivery_mode == "manual"


@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_failed_review_needs_a_reason(reason):
    story = story_in("delivered")
    before = story.order
    with pytest.raises(InvalidInput, match="reason"):
        act(before, Action.REVIEW_FAIL, MERCHANT, MERCHANT_ID, T0 + 5 * HOUR, OPERATOR, reason=reason)
    assert story.order == before


def test_failed_review_records_its_reason():
    story = story_in("delivered")
    out = story.do("review --fail", MERCHANT, T0 + 5 * HOUR, reason="未展示商品")
    assert out.events[0].data.get("reason") == "未展示商品"
    assert out.order.failed_reviews == 1


def test_failed_reviews_escalate_to_disputed_on_the_one_that_exceeds_the_default_maximum():
    story = story_in("delivered")
    h = lambda n: T0 + n * HOUR  # noqa: E731
    seen = []
    for n, (deliver_at, review_at) in enumerate([(None, 4), (5, 6), (7, 8)], start=1):
        if deliver_at is not None:
            story.do("deliver", CREATOR, h(deliver_at))
        out = story.do("review --fail", MERCHANT, h(review_at))
        assert [e.kind for e in out.events] == ["review_failed"]
        assert out.order.failed_reviews == n
        seen.append(str(out.order.status))
    assert seen == ["review_failed", "review_failed", "disputed"]
    assert story.order.deadline is None
    assert story.order.terms_state == "in_force"
    assert story.order.liable_party is None
    assert [(n.recipient, n.channel) for n in out.notifications] == [(addr(CREATOR), "inbox")]


@pytest.mark.parametrize("maximum", [0, 1, 2, 4])
def test_failed_review_that_would_exceed_max_failed_reviews_escalates(maximum):
    story = story_in("delivered", policy=Policy(max_failed_reviews=maximum))
    at = T0 + 4 * HOUR
    statuses = []
    for _ in range(maximum + 1):
        out = story.do("review --fail", MERCHANT, at)
        statuses.append(str(out.order.status))
        at += HOUR
        if out.order.status == "review_failed":
            story.do("deliver", CREATOR, at)
            at += HOUR
    assert statuses == ["review_failed"] * maximum + ["disputed"]


def test_review_failed_timer_escalates_to_disputed():
    story = story_in("review_failed")
    out = story.tick(T0 + 4 * HOUR + 7 * DAY)
    assert [(e.kind, e.actor) for e in out.events] == [("escalated", "system")]
    assert out.order.status == "disputed"
    assert out.order.terms_state == "in_force"


def test_makeup_delivery_from_review_failed_restarts_the_review_window():
    story = story_in("review_failed")
    at = T0 + 3 * DAY
    out = story.do("deliver", CREATOR, at, evidence="补播链接")
    assert out.order.status == "delivered"
    assert out.order.delivered_at == at
    assert out.order.delivery_mode == "manual"
    assert out.order.went_live_at == T0 + 2 * HOUR
    assert out.order.deadline == at + 14 * DAY
    assert out.order.failed_reviews == 1
    passed = story.do("review --pass", MERCHANT, at + DAY)
    assert passed.order.status == "completed"


@pytest.mark.parametrize("requester", [MERCHANT, CREATOR])
def test_either_party_may_request_cancellation(requester):
    story = story_in("effective")
    out = story.do("cancel-request", requester, T0 + 2 * HOUR, reason="排期变动")
    assert out.order.status == "cancel_requested"
    assert out.order.cancel_requested_by is requester
    assert out.events[0].data.get("reason") == "排期变动"
    assert [n.recipient for n in out.notifications] == [addr(requester.other)]


@pytest.mark.parametrize("answer", ["cancel-confirm", "cancel-decline"])
@pytest.mark.parametrize("requester", [MERCHANT, CREATOR])
def test_only_the_party_that_did_not_request_may_answer_a_cancellation(requester, answer):
    story = story_in("cancel_requested", requester=requester)
    before = story.order
    with pytest.raises(Refused):
        story.do(answer, requester, T0 + 3 * HOUR)
    assert story.order is before
    out = story.do(answer, requester.other, T0 + 3 * HOUR)
    assert out.order.status == ("cancelled" if answer == "cancel-confirm" else "effective")
    assert [n.recipient for n in out.notifications] == [addr(requester)]


def test_declined_cancellation_returns_to_effective_with_the_latest_start_deadline():
    story = story_in("cancel_requested", requester=CREATOR)
    out = story.do("cancel-decline", MERCHANT, T0 + 3 * HOUR)
    assert out.order.status == "effective"
    assert out.order.cancel_requested_by is None
    assert out.order.deadline == LATEST
    again = story.do("cancel-request", MERCHANT, T0 + 4 * HOUR)
    assert again.order.cancel_requested_by is MERCHANT
    assert again.order.deadline == T0 + 4 * HOUR + 48 * HOUR


def test_confirmed_cancellation_voids_the_terms_with_no_one_liable():
    story = story_in("cancelled")
    assert story.order.terms_state == "void"
    assert story.order.liable_party is None
    assert story.order.deadline is None


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize("status", ["pending", "effective", "live", "delivered", "review_failed", "cancel_requested"])
def test_time_going_backwards_is_refused(status):
    story = story_in(status)
    before = story.order
    action = next(a for a, (_, sources, _) in SPEC_ACTIONS.items() if status in sources)
    party = acting_parties(action, requester_of(before), status)[0]
    with pytest.raises(Refused, match="backwards|earlier"):
        story.do(action, party, before.last_event_at - 1)
    assert story.order is before


@pytest.mark.parametrize(("status", "action", "party"), ALLOWED_CASES)
def test_action_at_the_same_instant_as_the_last_event_is_allowed(status, action, party):
    story = story_in(status)
    at = story.order.last_event_at
    out = story.do(action, party, at)
    assert out.events[-1].at == at


def test_accept_at_the_creation_instant_is_allowed():
    story = new_story()
    out = story.do("accept", CREATOR, T0)
    assert out.order.status == "effective"


def test_action_after_a_timed_out_event_may_not_go_back_before_it():
    story = story_in("live")
    story.tick(T0 + 26 * HOUR)  # auto delivered at T0+26h
    with pytest.raises(Refused):
        story.do("review --pass", MERCHANT, T0 + 26 * HOUR - 1)
    out = story.do("review --pass", MERCHANT, T0 + 26 * HOUR)
    assert out.order.status == "completed"


# --------------------------------------------------------------------------- the hash chain


def long_story() -> Story:
    story = story_in("disputed")
    story.notes.clear()
    return story


def test_hash_chain_links_every_event_from_genesis():
    events = long_story().events
    assert len(events) >= 8
    assert events[0].prev_hash == GENESIS_HASH
    for prev, event in zip(events, events[1:]):
        assert event.prev_hash == prev.hash
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert re.fullmatch(r"[0-9a-f]{64}", e.hash)
        assert e.hash == event_hash(e.order_id, e.seq, e.kind, e.at, e.actor, e.operator, e.data, e.prev_hash)
    assert len({e.hash for e in events}) == len(events)


def test_hash_chain_includes_timed_out_events():
    story = story_in("live")
    story.tick(T0 + 60 * DAY)
    assert chain_is_valid(story.events)
    assert story.order.last_hash == story.events[-1].hash


BASE_EVENT = dict(
    order_id=1, seq=3, kind="accepted", at=T0, actor=addr(CREATOR), operator="ops",
    data={"reason": "ok"}, prev_hash="ab" * 32,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", 2),
        ("seq", 4),
        ("kind", "rejected"),
        ("at", T0 + 1),
        ("actor", addr(MERCHANT)),
        ("operator", "ops2"),
        ("data", {"reason": "ok!"}),
        ("data", {"reason": "ok", "extra": None}),
        ("data", {}),
        ("prev_hash", "ba" * 32),
    ],
)
def test_changing_any_field_changes_the_hash(field, value):
    original = event_hash(**BASE_EVENT)
    assert event_hash(**{**BASE_EVENT, field: value}) != original
    assert event_hash(**BASE_EVENT) == original  # deterministic


def test_hash_does_not_depend_on_data_key_order():
    a = event_hash(**{**BASE_EVENT, "data": {"x": 1, "y": 2}})
    b = event_hash(**{**BASE_EVENT, "data": {"y": 2, "x": 1}})
    assert a == b


@pytest.mark.parametrize("field", ["kind", "at", "actor", "operator", "data"])
def test_an_altered_event_breaks_the_chain(field):
    events = long_story().events
    victim = events[3]
    value = {"kind": "rejected", "at": victim.at + 1, "actor": "system", "operator": "mallory", "data": {"x": 1}}[field]
    tampered = events[:3] + [replace(victim, **{field: value})] + events[4:]
    assert chain_is_valid(events)
    assert not chain_is_valid(tampered)


# --------------------------------------------------------------------------- reminders


def reminders_of(outcome: Outcome):
    return [(n.recipient, n.channel, n.at) for n in outcome.notifications if n.kind == "reminder"]


def test_accept_reminder_is_an_sms_to_the_creator_24h_before_the_accept_deadline():
    story = new_story()
    remind_at = T0 + 3 * DAY - 24 * HOUR
    assert reminders_of(story.tick(remind_at - 1)) == []
    out = story.tick(remind_at)
    assert out.events == []
    assert reminders_of(out) == [(addr(CREATOR), "sms", remind_at)]
    assert reminders_of(story.tick(remind_at)) == []
    assert reminders_of(story.tick(remind_at + HOUR)) == []


def test_late_tick_writes_the_accept_reminder_once():
    story = new_story()
    out = story.tick(T0 + 2 * DAY + 5 * HOUR)
    assert [r[:2] for r in reminders_of(out)] == [(addr(CREATOR), "sms")]
    assert reminders_of(story.tick(T0 + 2 * DAY + 6 * HOUR)) == []


@pytest.mark.parametrize("status", ["pending", "effective", "cancel_requested"])
def test_latest_start_reminder_is_an_inbox_message_to_the_creator_24h_before(status):
    latest = T0 + 2 * DAY
    story = story_in(status, latest_start=latest)
    remind_at = latest - 24 * HOUR
    assert [r for r in reminders_of(story.tick(remind_at - 1)) if r[1] == "inbox"] == []
    out = story.tick(remind_at)
    assert [r for r in reminders_of(out) if r[1] == "inbox"] == [(addr(CREATOR), "inbox", remind_at)]
    assert reminders_of(story.tick(remind_at)) == []
    assert reminders_of(story.tick(remind_at + HOUR)) == []


def test_latest_start_reminder_is_not_repeated_after_a_declined_cancellation():
    latest = T0 + 2 * DAY
    story = story_in("cancel_requested", latest_start=latest)
    story.tick(latest - 24 * HOUR)
    story.do("cancel-decline", CREATOR, latest - 23 * HOUR)
    assert reminders_of(story.tick(latest - 22 * HOUR)) == []


@pytest.mark.parametrize("status", ["live", "delivered", "review_failed", "completed"])
def test_no_latest_start_reminder_once_live(status):
    latest = T0 + 30 * HOUR
    story = story_in(status, latest_start=latest)
    out = story.tick(latest - 24 * HOUR + MINUTE)
    assert [r for r in reminders_of(out) if r[0] == addr(CREATOR)] == []


def test_review_reminder_is_an_inbox_message_to_the_merchant_48h_before_the_review_deadline():
    story = story_in("delivered")
    deadline = T0 + 3 * HOUR + 14 * DAY
    remind_at = deadline - 48 * HOUR
    assert reminders_of(story.tick(remind_at - 1)) == []
    out = story.tick(remind_at)
    assert reminders_of(out) == [(addr(MERCHANT), "inbox", remind_at)]
    assert reminders_of(story.tick(remind_at + MINUTE)) == []


def test_a_makeup_delivery_gets_its_own_review_reminder():
    story = story_in("delivered")
    story.tick(T0 + 3 * HOUR + 12 * DAY)  # first reminder
    story.do("review --fail", MERCHANT, T0 + 12 * DAY + 4 * HOUR)
    makeup = T0 + 13 * DAY
    story.do("deliver", CREATOR, makeup)
    out = story.tick(makeup + 12 * DAY)
    assert reminders_of(out) == [(addr(MERCHANT), "inbox", makeup + 12 * DAY)]


@pytest.mark.parametrize(
    ("status", "latest", "deadline_of"),
    [
        ("pending", LATEST, lambda s: T0 + 3 * DAY),
        ("pending", T0 + 2 * DAY, lambda s: T0 + 2 * DAY),
        ("effective", T0 + 2 * DAY, lambda s: T0 + 2 * DAY),
        ("cancel_requested", T0 + 2 * DAY, lambda s: T0 + 2 * DAY),
        ("delivered", LATEST, lambda s: T0 + 3 * HOUR + 14 * DAY),
    ],
)
@pytest.mark.parametrize("late", [0, 1, DAY])
def test_reminder_is_never_written_once_its_deadline_has_passed(status, latest, deadline_of, late):
    story = story_in(status, latest_start=latest)
    deadline = deadline_of(story)
    assert story.order.deadline == deadline
    out = story.tick(deadline + late)
    assert out.events[0].kind == SPEC_TIMEOUTS[status][1]
    assert out.events[0].at == deadline
    assert reminders_of(out) == []


@pytest.mark.parametrize("status", ["pending", "effective", "delivered"])
def test_remind_writes_nothing_at_or_after_the_deadline(status):
    story = story_in(status, latest_start=T0 + 2 * DAY)
    deadline = story.order.deadline
    for now in (deadline, deadline + 1, deadline + 10 * DAY):
        assert remind(story.order, now).notifications == []
    assert remind(story.order, deadline - 1).notifications != []


@pytest.mark.parametrize(
    ("offsets", "status"),
    [
        (ReminderOffsets(before_accept_deadline=0), "pending"),
        (ReminderOffsets(before_latest_start=0), "effective"),
        (ReminderOffsets(before_review_deadline=0), "delivered"),
        (ReminderOffsets(0, 0, 0), "pending"),
        (ReminderOffsets(0, 0, 0), "effective"),
        (ReminderOffsets(0, 0, 0), "delivered"),
    ],
)
def test_reminder_offset_zero_disables_that_reminder(offsets, status):
    story = story_in(status, reminders=offsets)  # latest start T0+10d: beyond the pending window
    end = story.order.deadline
    assert wake_at(story.order) == end
    written = []
    now = story.order.last_event_at
    while now < end - 1:
        now = min(now + HOUR, end - 1)
        written += reminders_of(story.tick(now))
    assert written == []


def test_reminder_offsets_are_configurable():
    story = new_story(reminders=ReminderOffsets(before_accept_deadline=90 * MINUTE))
    remind_at = T0 + 3 * DAY - 90 * MINUTE
    assert reminders_of(story.tick(remind_at - 1)) == []
    assert reminders_of(story.tick(remind_at)) == [(addr(CREATOR), "sms", remind_at)]


def test_wake_at_is_the_earliest_unsent_reminder_or_the_deadline():
    story = new_story()  # accept deadline T0+3d, latest start T0+10d
    assert wake_at(story.order) == T0 + 2 * DAY
    story.tick(T0 + 2 * DAY)
    assert wake_at(story.order) == T0 + 3 * DAY
    quiet = new_story(reminders=ReminderOffsets(0, 0, 0))
    assert wake_at(quiet.order) == T0 + 3 * DAY
    effective = story_in("effective")
    assert wake_at(effective.order) == LATEST - DAY
    delivered = story_in("delivered")
    assert wake_at(delivered.order) == T0 + 3 * HOUR + 12 * DAY
    live = story_in("live")
    assert wake_at(live.order) == T0 + 26 * HOUR


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_wake_at_is_none_only_for_terminal_statuses(status):
    story = story_in(status)
    if status == "disputed":  # no deadline, but the platform's reminder once arbitration_window has passed
        assert wake_at(story.order) == story.order.status_since + 5 * DAY
        story.tick(story.order.status_since + 5 * DAY)
    assert (wake_at(story.order) is None) == (status in TERMINAL)


@pytest.mark.parametrize("latest", [T0 + 2 * DAY, LATEST])
@pytest.mark.parametrize("status", list(SPEC_TIMEOUTS))
def test_tick_before_wake_at_does_nothing_and_at_wake_at_does_something(status, latest):
    story = story_in(status, latest_start=latest)
    for _ in range(6):
        wake = wake_at(story.order)
        if wake is None:
            break
        idle = tick_order(story.order, wake - 1, OPERATOR)
        assert idle.events == [] and idle.notifications == []
        busy = story.tick(wake)
        assert busy.events or busy.notifications
        assert wake_at(story.order) is None or wake_at(story.order) > wake
    assert story.order.status in TERMINAL


# --------------------------------------------------------------------------- validation of terms


@pytest.mark.parametrize("field", ["merchant", "creator", "product"])
@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a\x00b", "a\nb", "a\tb", "a\rb", "\x7f", "a\x1bb", "a\u0085b", "a\u2028b", None, 42],
    ids=["empty", "129-chars", "nul", "newline", "tab", "cr", "del", "esc", "nel", "line-sep", "none", "int"],
)
def test_bad_id_is_invalid_input(field, value):
    kwargs = {"products": [value]} if field == "product" else {field: value}
    with pytest.raises(InvalidInput):
        terms(**kwargs)


@pytest.mark.parametrize("field", ["merchant", "creator", "product"])
def test_id_of_128_characters_is_valid(field):
    value = "商" * 128
    kwargs = {"products": [value]} if field == "product" else {field: value}
    t = terms(**kwargs)
    assert value in (t.merchant, t.creator, *t.products)


@pytest.mark.parametrize("products", [[], (), ["P1", "P1"], ["商品", "P2", "商品"], "P1", None])
def test_products_must_be_a_non_empty_list_without_duplicates(products):
    with pytest.raises(InvalidInput):
        terms(products=products)


@pytest.mark.parametrize("form", ["Live", "LIVE", "stream", "short video", "", None, "live "])
def test_form_must_be_live_or_video(form):
    with pytest.raises(InvalidInput):
        terms(form=form)


@pytest.mark.parametrize("form", ["live", "video"])
def test_form_live_and_video_are_valid(form):
    assert terms(form=form).form == form


@pytest.mark.parametrize(
    "commission",
    ["0", "0.00", "0.001", "100.01", "101", "12.345", "1e1", "1E1", "-1", "-0.5", "abc", "", "12,5", "NaN", "Infinity",
     12.5, True, None, Decimal("12.345"), Decimal("1E+1")],
)
def test_bad_commission_is_invalid_input(commission):
    with pytest.raises(InvalidInput):
        terms(commission=commission)


@pytest.mark.parametrize(
    ("commission", "expected"),
    [("100", "100"), ("100.00", "100"), ("0.01", "0.01"), ("12.5", "12.5"), ("12.50", "12.5"), (Decimal("33.33"), "33.33"), (7, "7")],
)
def test_valid_commission_is_a_decimal(commission, expected):
    value = terms(commission=commission).commission_pct
    assert isinstance(value, Decimal)
    assert value == Decimal(expected)


@pytest.mark.parametrize(
    "budget", ["-1", "-0.01", "1.234", "0.001", "1e3", "abc", "", "5,000", 5000.0, None, False, Decimal("-1")]
)
def test_bad_ad_budget_is_invalid_input(budget):
    with pytest.raises(InvalidInput):
        terms(ad_budget=budget)


@pytest.mark.parametrize(("budget", "expected"), [("0", "0"), ("0.01", "0.01"), ("5000", "5000"), ("5000.5", "5000.50"), (0, "0")])
def test_valid_ad_budget_is_a_decimal(budget, expected):
    value = terms(ad_budget=budget).ad_budget
    assert isinstance(value, Decimal)
    assert value == Decimal(expected)


def test_chinese_ids_are_stored_exactly():
    t = make_terms(
        merchant="商家A", creator="达人小王", products=["商品一号", "ｐｒｏｄｕｃｔ２", "caf\u00e9"], form="video",
        commission="8", ad_budget="0", latest_start_at=LATEST, note="直播间 备注\n第二行",
    )
    assert t.merchant == "商家A"
    assert t.creator == "达人小王"
    assert t.products == ("商品一号", "ｐｒｏｄｕｃｔ２", "caf\u00e9")
    assert t.note == "直播间 备注\n第二行"
    order = create(1, t, Policy(), ReminderOffsets(), T0, OPERATOR).order
    data = order.to_json()
    assert (data["merchant"], data["creator"], data["products"]) == ("商家A", "达人小王", ["商品一号", "ｐｒｏｄｕｃｔ２", "caf\u00e9"])
    assert order.party_id(MERCHANT) == "商家A"


def test_terms_json_round_trip():
    t = terms()
    assert Terms.from_json(t.to_json()) == t
