"""Disputes and extensions (issue 12, SPEC section 1): complaints, rulings, appeals, and latest
starts moved by agreement, on the pure core first (before and at each new deadline), then through
the rebuild of histories, then end to end on the command line.

Every (status, action) pair of the new actions, allowed and refused, is in test_lifecycle.py's
tables (copied from SPEC); this file tests the time rules, the windows and counts, the liable
party, the notifications and reminders of the new states.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from coopctl import history
from coopctl.errors import InvalidInput, Refused
from coopctl.lifecycle import Action, Party, Status, act, fire_due, remind, tick_order, wake_at
from coopctl.policy import DAY, HOUR, MINUTE, Policy, iso
from test_lifecycle import CREATOR, LATEST, MERCHANT, OPERATOR, T0, Story, addr, new_story, story_in
from dbtools import deliver_outbox

EVERYONE = [addr(MERCHANT), addr(CREATOR), "platform"]


def kinds(outcome) -> list[str]:
    return [e.kind for e in outcome.events]


def reminders_of(outcome) -> list[tuple[str, int, str]]:
    return [(n.recipient, n.at, n.text) for n in outcome.notifications if n.kind == "reminder"]


def closed_story(status: str, requester: Party = MERCHANT, **kw) -> Story:
    """closed_overdue, cancelled_unilaterally or completed, reached through the rules."""
    return story_in(status, requester=requester, **kw)


# --------------------------------------------------------------------------- cancel-withdraw


@pytest.mark.parametrize("requester", [MERCHANT, CREATOR])
def test_the_requester_withdraws_a_cancellation_request_and_the_order_is_effective_again(requester):
    story = story_in("cancel_requested", requester=requester)
    out = story.do("cancel-withdraw", requester, T0 + 3 * HOUR)
    assert out.order.status == "effective" and out.order.cancel_requested_by is None
    assert out.order.deadline == LATEST
    assert [(n.recipient, n.kind) for n in out.notifications] == [(addr(requester.other), "cancel_withdrawn")]
    with pytest.raises(Refused, match="only the"):
        story_in("cancel_requested", requester=requester).do("cancel-withdraw", requester.other, T0 + 3 * HOUR)


# --------------------------------------------------------------------------- extensions


@pytest.mark.parametrize("proposer", [MERCHANT, CREATOR])
def test_a_proposal_waits_with_its_proposer_and_latest_start_then_a_confirmation_moves_the_latest_start(proposer):
    story = story_in("effective")
    proposal = LATEST + 5 * DAY
    out = story.do("extend-request", proposer, T0 + 2 * HOUR, proposal=proposal, reason="主播生病")
    waiting = out.order
    assert waiting.status == "extension_requested" and waiting.terms_state == "in_force"
    assert waiting.extension_requested_by is proposer and waiting.proposed_latest_start_at == proposal
    as_json = waiting.to_json()
    assert as_json["extension_requested_by"] == str(proposer)
    assert as_json["proposed_latest_start_at"] == iso(proposal) and as_json["extensions"] == 0
    assert out.events[0].data == {"by": str(proposer), "latest_start_at": iso(proposal), "reason": "主播生病"}
    assert waiting.deadline == T0 + 2 * HOUR + 48 * HOUR
    with pytest.raises(Refused, match="proposed this extension"):
        story.copy().do("extend-confirm", proposer, T0 + 3 * HOUR)
    done = story.do("extend-confirm", proposer.other, T0 + 3 * HOUR).order
    assert done.status == "effective" and done.terms.latest_start_at == proposal and done.extensions == 1
    assert (done.extension_requested_by, done.proposed_latest_start_at) == (None, None)
    assert done.deadline == proposal


def test_a_declined_proposal_moves_nothing():
    story = story_in("extension_requested")
    out = story.do("extend-decline", CREATOR, T0 + 3 * HOUR)
    assert out.order.status == "effective" and out.order.terms.latest_start_at == LATEST and out.order.extensions == 0
    assert (out.order.extension_requested_by, out.order.proposed_latest_start_at) == (None, None)


@pytest.mark.parametrize(
    ("move", "allowed"),
    [(0, False), (-HOUR, False), (1, True), (15 * DAY, True), (15 * DAY + 1, False), (40 * DAY, False)],
)
def test_a_proposal_must_be_later_and_at_most_max_extension_later(move, allowed):
    story = story_in("effective")
    at = T0 + 2 * HOUR
    if allowed:
        assert story.do("extend-request", MERCHANT, at, proposal=LATEST + move).order.status == "extension_requested"
    else:
        with pytest.raises(Refused, match="not later than|max_extension"):
            story.do("extend-request", MERCHANT, at, proposal=LATEST + move)
        assert story.order.status == "effective"


def test_max_extension_is_the_orders_own_policy():
    story = story_in("effective", policy=Policy(max_extension=HOUR))
    with pytest.raises(Refused, match=r"max_extension \(1h\)"):
        story.do("extend-request", MERCHANT, T0 + 2 * HOUR, proposal=LATEST + HOUR + 1)
    story.do("extend-request", MERCHANT, T0 + 2 * HOUR, proposal=LATEST + HOUR)


@pytest.mark.parametrize("limit", [0, 1, 2])
def test_once_max_extensions_were_confirmed_a_proposal_is_refused(limit):
    story = story_in("effective", policy=Policy(max_extensions=limit))
    at = T0 + 2 * HOUR
    for n in range(limit):
        story.do("extend-request", CREATOR, at, proposal=story.order.terms.latest_start_at + DAY)
        story.do("extend-confirm", MERCHANT, at + MINUTE)
        at += HOUR
    assert story.order.extensions == limit
    with pytest.raises(Refused, match=f"max_extensions {limit}"):
        story.do("extend-request", CREATOR, at, proposal=story.order.terms.latest_start_at + DAY)
    declined = story_in("effective", policy=Policy(max_extensions=1))  # a declined proposal does not count
    declined.do("extend-request", CREATOR, T0 + 2 * HOUR, proposal=LATEST + DAY)
    declined.do("extend-decline", MERCHANT, T0 + 3 * HOUR)
    declined.do("extend-request", CREATOR, T0 + 4 * HOUR, proposal=LATEST + DAY)


def test_a_proposal_without_a_latest_start_is_invalid_input():
    story = story_in("effective")
    with pytest.raises(InvalidInput, match="--latest-start"):
        act(story.order, Action.EXTEND_REQUEST, MERCHANT, story.order.terms.merchant, T0 + 2 * HOUR, OPERATOR)


def test_the_response_deadline_one_microsecond_before_and_at():
    story = story_in("extension_requested")  # proposed at T0+2h, latest start T0+10d
    deadline = T0 + 2 * HOUR + 48 * HOUR
    assert story.order.deadline == deadline
    assert story.copy().do("extend-confirm", CREATOR, deadline - 1).order.status == "effective"
    assert tick_order(story.order, deadline - 1, OPERATOR).events == []
    with pytest.raises(Refused, match="too late.*became effective"):
        story.copy().do("extend-confirm", CREATOR, deadline)  # the deadline fires first
    out = story.tick(deadline)
    assert [(e.kind, e.at, e.actor) for e in out.events] == [("extension_lapsed", deadline, "system")]
    lapsed = out.order
    assert lapsed.status == "effective" and lapsed.terms.latest_start_at == LATEST and lapsed.extensions == 0
    assert (lapsed.extension_requested_by, lapsed.proposed_latest_start_at, lapsed.liable_party) == (None, None, None)
    assert sorted(n.recipient for n in out.notifications if n.kind == "extension_lapsed") == sorted([addr(MERCHANT), addr(CREATOR)])
    assert lapsed.deadline == LATEST


@pytest.mark.parametrize("gap", [-HOUR, 0], ids=["latest-start-first", "same-instant"])
def test_the_latest_start_before_or_at_the_response_deadline_closes_the_order_overdue(gap):
    proposed_at = T0 + 2 * HOUR
    latest = proposed_at + 48 * HOUR + gap
    story = story_in("effective", latest_start=latest)
    story.do("extend-request", CREATOR, proposed_at, proposal=latest + DAY)
    assert story.order.deadline == latest
    assert story.copy().do("extend-confirm", MERCHANT, latest - 1).order.terms.latest_start_at == latest + DAY
    with pytest.raises(Refused, match="too late.*closed_overdue"):
        story.copy().do("extend-confirm", MERCHANT, latest)
    out = story.tick(latest + 30 * DAY)
    assert [(e.kind, e.at) for e in out.events] == [("closed_overdue", latest)]
    assert out.order.status == "closed_overdue" and out.order.liable_party is CREATOR
    assert (out.order.extension_requested_by, out.order.proposed_latest_start_at) == (None, None)


def test_a_confirmed_extension_drives_closed_overdue_and_gets_its_own_latest_start_reminder():
    story = story_in("effective")
    assert reminders_of(story.tick(LATEST - DAY)) == [
        (addr(CREATOR), LATEST - DAY, f"cooperation order #1 must go live by {iso(LATEST)}")
    ]
    new_latest = LATEST + 7 * DAY
    story.do("extend-request", CREATOR, LATEST - 20 * HOUR, proposal=new_latest)
    story.do("extend-confirm", MERCHANT, LATEST - 19 * HOUR)
    assert story.tick(LATEST).events == []  # the old latest start is no deadline any more
    assert wake_at(story.order) == new_latest - DAY
    assert reminders_of(story.tick(new_latest - DAY - 1)) == []
    assert reminders_of(story.tick(new_latest - DAY)) == [
        (addr(CREATOR), new_latest - DAY, f"cooperation order #1 must go live by {iso(new_latest)}")
    ]
    assert story.order.reminders_sent == {f"latest_start@{LATEST}", f"latest_start@{new_latest}"}
    assert story.tick(new_latest - 1).events == []
    out = story.tick(new_latest)
    assert [(e.kind, e.at) for e in out.events] == [("closed_overdue", new_latest)]
    assert out.order.liable_party is CREATOR


def test_the_latest_start_reminder_is_written_while_an_extension_is_requested():
    latest = T0 + 3 * DAY
    story = story_in("effective", latest_start=latest)
    story.do("extend-request", MERCHANT, latest - 30 * HOUR, proposal=latest + DAY)  # answer due at latest + 18h
    assert story.order.deadline == latest
    out = story.tick(latest - DAY)
    assert reminders_of(out) == [(addr(CREATOR), latest - DAY, f"cooperation order #1 must go live by {iso(latest)}")]
    assert story.order.status == "extension_requested"


# --------------------------------------------------------------------------- complaints


@pytest.mark.parametrize(
    ("status", "requester", "complainant", "liable"),
    [
        ("closed_overdue", MERCHANT, MERCHANT, CREATOR),
        ("cancelled_unilaterally", MERCHANT, CREATOR, MERCHANT),
        ("cancelled_unilaterally", CREATOR, MERCHANT, CREATOR),
        ("completed", MERCHANT, MERCHANT, None),
        ("completed", MERCHANT, CREATOR, None),
    ],
)
def test_a_complaint_opens_a_dispute_that_keeps_the_liable_party_and_tells_everyone(status, requester, complainant, liable):
    story = closed_story(status, requester)
    entered = story.order.status_since
    out = story.do("complain", complainant, entered + DAY, reason="违约", evidence="https://x.example/1")
    order = out.order
    assert order.status == "disputed" and order.terms_state == "in_force"
    assert order.liable_party is liable and order.disputed_by is complainant
    assert out.events[0].data == {"by": str(complainant), "reason": "违约", "evidence": "https://x.example/1"}
    assert [(n.recipient, n.channel, n.kind) for n in out.notifications] == [(who, "inbox", "complaint_filed") for who in EVERYONE]
    assert order.to_json()["disputed_by"] == str(complainant) and order.to_json()["liable_party"] == (liable and str(liable))


@pytest.mark.parametrize(("status", "requester", "liable"), [("closed_overdue", MERCHANT, CREATOR), ("cancelled_unilaterally", CREATOR, CREATOR)])
def test_the_liable_party_may_not_complain(status, requester, liable):
    story = closed_story(status, requester)
    with pytest.raises(Refused, match="liable party"):
        story.do("complain", liable, story.order.status_since + HOUR)


@pytest.mark.parametrize("status", ["closed_overdue", "cancelled_unilaterally", "completed"])
def test_a_complaint_one_microsecond_before_the_complaint_window_ends_and_at_it(status):
    story = closed_story(status, CREATOR)
    ends = story.order.status_since + 90 * DAY
    complainant = MERCHANT
    assert story.copy().do("complain", complainant, ends - 1).order.status == "disputed"
    with pytest.raises(Refused, match="too late to complain.*complaint_window"):
        story.do("complain", complainant, ends)
    assert story.order.status == status


def test_a_complaint_needs_a_reason():
    story = closed_story("completed")
    for reason in (None, "", "   "):
        with pytest.raises(InvalidInput, match="needs a reason"):
            act(story.order, Action.COMPLAIN, MERCHANT, story.order.terms.merchant, story.order.status_since + HOUR, OPERATOR, reason=reason)


# --------------------------------------------------------------------------- rulings and appeals


def disputed_story(**kw) -> Story:
    story = closed_story("closed_overdue", **kw)
    story.do("complain", MERCHANT, story.order.status_since + HOUR, reason="未开播")
    return story


@pytest.mark.parametrize(("ruling", "amount", "liable"), [("creator", "500", CREATOR), ("merchant", None, MERCHANT), ("none", None, None)])
def test_a_ruling_settles_the_terms_names_the_party_in_breach_and_tells_everyone(ruling, amount, liable):
    story = disputed_story()
    at = story.order.status_since + DAY
    out = story.do("arbitrate", None, at, ruling=ruling, amount=amount, reason="证据充分")
    order = out.order
    assert order.status == "ruled" and order.terms_state == "settled" and order.liable_party is liable
    assert order.to_json()["ruling"] == {
        "liable": None if liable is None else str(liable), "amount": None if amount is None else "500.00",
        "reason": "证据充分", "at": iso(at), "final": False,
    }
    assert out.events[0].actor == "platform" and out.events[0].operator == OPERATOR
    assert [(n.recipient, n.kind) for n in out.notifications] == [(who, "ruled") for who in EVERYONE]
    assert order.deadline == at + 14 * DAY


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ruling": "none", "amount": "5"}, "cannot carry an --amount"),
        ({"ruling": "nobody"}, "merchant, creator or none"),
        ({"ruling": None}, "merchant, creator or none"),
        ({"ruling": "creator", "amount": "-1"}, "amount"),
        ({"ruling": "creator", "amount": "1.234"}, "amount"),
        ({"ruling": "creator", "reason": None}, "needs a reason"),
        ({"ruling": "creator", "reason": " "}, "needs a reason"),
    ],
)
def test_a_malformed_ruling_is_invalid_input_and_changes_nothing(kw, message):
    story = disputed_story()
    before = story.order
    kw = {"reason": "r", **kw}
    with pytest.raises(InvalidInput, match=message):
        act(before, Action.ARBITRATE, None, None, before.last_event_at + HOUR, OPERATOR, **kw)
    assert story.order is before


def test_only_the_platform_rules_and_only_a_party_appeals():
    story = disputed_story()
    with pytest.raises(Refused, match="only the platform"):
        story.copy().do("arbitrate", MERCHANT, story.order.last_event_at + HOUR, ruling="creator")
    story.do("arbitrate", None, story.order.last_event_at + HOUR, ruling="creator")
    with pytest.raises(Refused, match="not the platform"):
        act(story.order, Action.APPEAL, None, None, story.order.last_event_at + HOUR, OPERATOR, reason="r")


def test_in_disputed_only_arbitrate_and_in_ruled_only_appeal():
    story = disputed_story()
    for action, party in (("appeal", MERCHANT), ("complain", MERCHANT), ("deliver", CREATOR)):
        with pytest.raises(Refused, match="is disputed"):
            story.copy().do(action, party, story.order.last_event_at + HOUR)
    story.do("arbitrate", None, story.order.last_event_at + HOUR, ruling="creator")
    for action, party in (("arbitrate", None), ("complain", MERCHANT), ("cancel-request", MERCHANT)):
        with pytest.raises(Refused, match="is ruled"):
            story.copy().do(action, party, story.order.last_event_at + HOUR)


def test_an_appeal_one_microsecond_before_the_appeal_window_ends_and_at_it():
    story = disputed_story()
    ruled_at = story.order.last_event_at + HOUR
    story.do("arbitrate", None, ruled_at, ruling="creator", amount="100")
    ends = ruled_at + 14 * DAY
    appealed = story.copy().do("appeal", CREATOR, ends - 1, reason="新证据").order
    assert appealed.status == "disputed" and appealed.appeals == 1 and appealed.disputed_by is CREATOR
    assert appealed.liable_party is CREATOR  # the dispute keeps the liable party of the ruling appealed
    with pytest.raises(Refused, match="too late.*resolved"):
        story.copy().do("appeal", CREATOR, ends, reason="新证据")
    out = story.tick(ends)
    assert [(e.kind, e.at, e.actor) for e in out.events] == [("ruling_final", ends, "system")]
    final = out.order
    assert final.status == "resolved" and final.terms_state == "settled" and final.liable_party is CREATOR
    assert final.ruling.final is True and final.ruling.amount == Decimal("100.00") and final.deadline is None
    assert [n.recipient for n in out.notifications if n.kind == "ruling_final"] == [addr(MERCHANT), addr(CREATOR)]


@pytest.mark.parametrize("max_appeals", [0, 1, 2])
def test_the_ruling_after_the_last_allowed_appeal_is_final_at_once(max_appeals):
    story = disputed_story(policy=Policy(max_appeals=max_appeals))
    at = story.order.last_event_at
    for n in range(max_appeals):
        at += HOUR
        assert story.do("arbitrate", None, at, ruling="creator").order.status == "ruled"
        at += HOUR
        story.do("appeal", MERCHANT if n % 2 else CREATOR, at, reason="不服")
    at += HOUR
    out = story.do("arbitrate", None, at, ruling="merchant", reason="终局")
    assert out.order.status == "resolved" and out.order.ruling.final and out.order.appeals == max_appeals
    assert out.events[0].data["final"] is True
    assert out.order.liable_party is MERCHANT
    assert "finally" in out.notifications[0].text


def test_the_arbitration_reminder_reaches_the_platform_once_per_opening():
    story = disputed_story()
    opened = story.order.status_since
    due = opened + 5 * DAY
    assert wake_at(story.order) == due
    assert reminders_of(story.tick(due - 1)) == []
    text = f"cooperation order #1 is waiting for a ruling: its arbitration window ended at {iso(due)}"
    late = story.copy()
    assert reminders_of(late.tick(due + 3 * DAY)) == [("platform", due, text)]  # a late tick: dated when it was due
    assert reminders_of(story.tick(due)) == [("platform", due, text)]
    assert reminders_of(story.tick(due + 10 * DAY)) == [] and wake_at(story.order) is None
    story.do("arbitrate", None, due + 11 * DAY, ruling="creator")
    story.do("appeal", CREATOR, due + 12 * DAY, reason="不服")
    reopened = story.order.status_since
    assert wake_at(story.order) == reopened + 5 * DAY  # a new opening gets its own reminder
    assert [r[0] for r in reminders_of(story.tick(reopened + 5 * DAY))] == ["platform"]
    assert story.order.reminders_sent >= {f"arbitration@{due}", f"arbitration@{reopened + 5 * DAY}"}


def test_the_arbitration_window_is_the_orders_own():
    story = disputed_story(policy=Policy(arbitration_window=HOUR))
    assert wake_at(story.order) == story.order.status_since + HOUR
    assert remind(story.order, story.order.status_since + HOUR).notifications[0].recipient == "platform"


# --------------------------------------------------------------------------- history: cadence, rebuild


def full_story() -> Story:
    """Extension requested, confirmed; closed overdue; complaint; ruling; appeal; ruling."""
    story = story_in("effective")
    story.do("extend-request", CREATOR, T0 + 2 * HOUR, proposal=LATEST + 3 * DAY, reason="档期")
    story.do("extend-confirm", MERCHANT, T0 + 3 * HOUR)
    story.tick(LATEST + 4 * DAY)
    story.do("complain", MERCHANT, LATEST + 5 * DAY, reason="未开播", evidence="截图")
    story.tick(LATEST + 11 * DAY)
    story.do("arbitrate", None, LATEST + 12 * DAY, ruling="creator", amount="800", reason="违约")
    story.do("appeal", CREATOR, LATEST + 13 * DAY, reason="不服")
    story.do("arbitrate", None, LATEST + 14 * DAY, ruling="creator", amount="600", reason="改判")
    return story


@pytest.mark.parametrize("status", ["extension_requested", "ruled"])
def test_ticking_hourly_or_once_gives_the_same_history_for_the_new_timers(status):
    story = story_in(status)
    hourly, once = story.copy(), story.copy()
    start, end = story.order.last_event_at, story.order.last_event_at + 30 * DAY
    now = start
    while now < end:
        now += HOUR - 7
        hourly.tick(min(now, end))
    once.tick(end)
    assert hourly.events == once.events and hourly.events != story.events
    assert replace(hourly.order, reminders_sent=frozenset()) == replace(once.order, reminders_sent=frozenset())


def test_every_new_event_rebuilds_through_the_rules_with_its_notifications():
    story = full_story()
    assert story.order.status == "resolved"
    steps = history.rebuild(1, story.events)
    assert steps[-1].order == replace(story.order, reminders_sent=frozenset())
    kinds_seen = [s.event.kind for s in steps]
    for kind in ("extension_requested", "extension_confirmed", "closed_overdue", "complaint_filed", "ruled", "appealed"):
        assert kind in kinds_seen
    history.check_outbox(steps, story.notes, story.order.reminders_sent)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [("ruled", "final", True), ("ruled", "amount", "-1"), ("ruled", "ruling", "platform"),
     ("extension_requested", "latest_start_at", iso(LATEST + 20 * DAY)), ("extension_confirmed", "latest_start_at", iso(LATEST))],
)
def test_an_altered_ruling_or_proposal_with_recomputed_hashes_is_a_divergence(kind, field, value):
    """Recomputed hashes hide an edit only if the edited history is one the rules allow (sealing
    closes that gap): a first ruling marked final, a negative amount, a proposal beyond
    max_extension, a confirmation of another latest start than the proposal are not."""
    from coopctl.lifecycle import Event, GENESIS_HASH, event_hash

    story = full_story()
    events, prev = [], GENESIS_HASH
    for e in story.events:
        data = dict(e.data)
        if e.kind == kind and len([x for x in events if x.kind == kind]) == 0:
            data[field] = value
        digest = event_hash(e.order_id, e.seq, e.kind, e.at, e.actor, e.operator, data, prev)
        events.append(Event(e.order_id, e.seq, e.kind, e.at, e.actor, e.operator, data, prev, digest))
        prev = digest
    with pytest.raises(history.Divergence):
        history.rebuild(1, events)


def test_a_platform_event_by_a_party_or_a_party_event_by_the_platform_is_a_divergence():
    from coopctl.lifecycle import Event, event_hash

    story = full_story()
    index = next(i for i, e in enumerate(story.events) if e.kind == "ruled")
    for actor in (addr(MERCHANT), "platform"):
        e = story.events[index] if actor != "platform" else story.events[index - 1]  # complaint_filed by the platform
        forged = replace(e, actor=actor)
        forged = replace(forged, hash=event_hash(e.order_id, e.seq, e.kind, e.at, actor, e.operator, e.data, e.prev_hash))
        with pytest.raises(history.Divergence, match="cannot cause"):
            history.rebuild(1, story.events[: story.events.index(e)] + [forged])


def test_fire_due_cascades_through_a_lapsed_extension_to_closed_overdue():
    story = story_in("extension_requested")
    out = fire_due(story.order, LATEST + DAY, OPERATOR)
    assert [(e.kind, e.at) for e in out.events] == [("extension_lapsed", T0 + 50 * HOUR), ("closed_overdue", LATEST)]


# --------------------------------------------------------------------------- the command line

M, C = "商家A", "达人小王"


def cli_ok(invoke, *args, **kw):
    result = invoke(*args, **kw)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def create(invoke, latest="2026-12-10T20:00", at="2026-12-01T10:00"):
    out = cli_ok(invoke, "create", "--merchant", M, "--creator", C, "--product", "P1", "--form", "live",
                 "--commission", "10", "--latest-start", latest, "--at", at, "--json")
    return json.loads(out.stdout)["id"]


def test_cli_a_full_dispute_from_complaint_to_final_ruling(invoke):
    order = create(invoke)
    cli_ok(invoke, "accept", order, "--creator", C, "--at", "2026-12-01T11:00")
    cli_ok(invoke, "tick", "--now", "2026-12-11T00:00")  # closed overdue: the creator is liable
    complained = json.loads(cli_ok(invoke, "complain", order, "--merchant", M, "--reason", "未开播", "--evidence", "https://x.example/s",
                                   "--at", "2026-12-12T10:00", "--json").stdout)
    assert (complained["status"], complained["disputed_by"], complained["liable_party"]) == ("disputed", "merchant", "creator")
    board = json.loads(cli_ok(invoke, "board", "--now", "2026-12-18T10:00", "--json").stdout)
    assert board["disputes"] == {"open": 1, "past_arbitration_window": 1, "oldest": "2026-12-12T10:00:00+08:00"}
    assert board["by_terms"]["settled"] == 0
    ruled = json.loads(cli_ok(invoke, "--operator", "仲裁员-7", "arbitrate", order, "--ruling", "creator", "--amount", "500",
                              "--reason", "直播未发生", "--at", "2026-12-13T10:00", "--json").stdout)
    assert ruled["status"] == "ruled" and ruled["terms"] == "settled" and ruled["liable_party"] == "creator"
    assert ruled["ruling"] == {"liable": "creator", "amount": "500.00", "reason": "直播未发生", "at": "2026-12-13T10:00:00+08:00", "final": False}
    assert ruled["deadline"] == "2026-12-27T10:00:00+08:00"
    appealed = json.loads(cli_ok(invoke, "appeal", order, "--creator", C, "--reason", "设备故障", "--at", "2026-12-14T10:00", "--json").stdout)
    assert (appealed["status"], appealed["appeals"], appealed["disputed_by"]) == ("disputed", 1, "creator")
    final = json.loads(cli_ok(invoke, "arbitrate", order, "--ruling", "creator", "--amount", "300", "--reason", "酌减",
                              "--at", "2026-12-15T10:00", "--json").stdout)
    assert final["status"] == "resolved" and final["ruling"]["final"] is True and final["ruling"]["amount"] == "300.00"
    shown = json.loads(cli_ok(invoke, "show", order, "--json").stdout)
    ruled_events = [e for e in shown["events"] if e["kind"] == "ruled"]
    assert [(e["actor"], e["operator"]) for e in ruled_events] == [("platform", "仲裁员-7"), ("platform", "ops-test")]
    notes = json.loads(cli_ok(invoke, "notifications", "--order", order, "--json").stdout)
    for kind in ("complaint_filed", "ruled", "appealed"):
        assert sorted(n["recipient"] for n in notes if n["kind"] == kind) == sorted(
            [f"merchant:{M}", f"creator:{C}", "platform"] * (2 if kind == "ruled" else 1)
        )
    assert cli_ok(invoke, "list", "--status", "resolved", "--terms", "settled", "--json").stdout.count('"id"') == 1
    assert "ruling" in cli_ok(invoke, "show", order).stdout
    assert invoke("appeal", order, "--merchant", M, "--reason", "x", "--at", "2026-12-16T10:00").exit_code == 1
    exported = cli_ok(invoke, "export", "--all", "--out", "d.json", "--at", "2026-12-20T00:00")
    assert "1 order" in exported.stdout + exported.stderr or exported.exit_code == 0
    assert "1 of 1 order reproduced" in cli_ok(invoke, "replay", "d.json").stdout
    deliver_outbox(invoke)  # the dispatcher delivered what the dispute notified
    assert json.loads(cli_ok(invoke, "doctor", "--now", "2026-12-20T00:00", "--json").stdout)["findings"]


def test_cli_a_full_extension_drives_closed_overdue_and_its_reminder(invoke):
    order = create(invoke)
    cli_ok(invoke, "accept", order, "--creator", C, "--at", "2026-12-01T11:00")
    waiting = json.loads(cli_ok(invoke, "extend-request", order, "--creator", C, "--latest-start", "2026-12-20T20:00",
                                "--reason", "嗓子发炎", "--at", "2026-12-02T10:00", "--json").stdout)
    assert waiting["status"] == "extension_requested" and waiting["extension_requested_by"] == "creator"
    assert waiting["proposed_latest_start_at"] == "2026-12-20T20:00:00+08:00" and waiting["deadline"] == "2026-12-04T10:00:00+08:00"
    confirmed = json.loads(cli_ok(invoke, "extend-confirm", order, "--merchant", M, "--at", "2026-12-03T10:00", "--json").stdout)
    assert confirmed["latest_start_at"] == "2026-12-20T20:00:00+08:00" and confirmed["extensions"] == 1
    assert confirmed["proposed_latest_start_at"] is None and confirmed["extension_requested_by"] is None
    quiet = json.loads(cli_ok(invoke, "tick", "--now", "2026-12-10T20:00", "--json").stdout)
    assert quiet["applied"] == 0
    reminded = json.loads(cli_ok(invoke, "tick", "--now", "2026-12-19T20:00", "--json").stdout)
    assert reminded["reminders"] == 1
    notes = json.loads(cli_ok(invoke, "notifications", "--order", order, "--json").stdout)
    assert [n["text"] for n in notes if n["kind"] == "reminder"] == [f"cooperation order #{order} must go live by 2026-12-20T20:00:00+08:00"]
    closed = json.loads(cli_ok(invoke, "tick", "--now", "2026-12-21T00:00", "--json").stdout)
    assert closed["by_kind"] == {"closed_overdue": 1}
    shown = json.loads(cli_ok(invoke, "show", order, "--json").stdout)
    assert shown["status"] == "closed_overdue" and shown["events"][-1]["at"] == "2026-12-20T20:00:00+08:00"


def test_cli_cancel_withdraw_and_extend_decline(invoke):
    order = create(invoke)
    cli_ok(invoke, "accept", order, "--creator", C, "--at", "2026-12-01T11:00")
    cli_ok(invoke, "cancel-request", order, "--merchant", M, "--at", "2026-12-01T12:00")
    assert invoke("cancel-withdraw", order, "--creator", C, "--at", "2026-12-01T13:00").exit_code == 1
    assert json.loads(cli_ok(invoke, "cancel-withdraw", order, "--merchant", M, "--at", "2026-12-01T13:00", "--json").stdout)["status"] == "effective"
    cli_ok(invoke, "extend-request", order, "--merchant", M, "--latest-start", "2026-12-11T20:00", "--at", "2026-12-01T14:00")
    declined = json.loads(cli_ok(invoke, "extend-decline", order, "--creator", C, "--at", "2026-12-01T15:00", "--json").stdout)
    assert declined["status"] == "effective" and declined["latest_start_at"] == "2026-12-10T20:00:00+08:00"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["complain", "1", "--merchant", M, "--at", "2026-12-12T10:00"], 2, "needs a reason"),
        (["arbitrate", "1", "--ruling", "none", "--amount", "5", "--reason", "x"], 2, "cannot carry an --amount"),
        (["arbitrate", "1", "--ruling", "merchant"], 2, "needs a reason"),
        (["arbitrate", "1", "--reason", "x"], 2, "--ruling"),
        (["arbitrate", "1", "--ruling", "platform", "--reason", "x"], 2, "merchant, creator or none"),
        (["arbitrate", "1", "--ruling", "creator", "--amount", "abc", "--reason", "x"], 2, "amount"),
        (["appeal", "1", "--creator", C, "--at", "2026-12-12T10:00"], 2, "needs a reason"),
        (["arbitrate", "1", "--ruling", "creator", "--reason", "x", "--at", "2026-12-12T10:00"], 1, "is closed_overdue"),
        (["complain", "1", "--creator", C, "--reason", "x", "--at", "2026-12-12T10:00"], 1, "liable party"),
        (["complain", "1", "--merchant", M, "--reason", "x", "--at", "2027-03-11T00:00"], 1, "too late to complain"),
        (["extend-request", "1", "--creator", C, "--at", "2026-12-12T10:00"], 2, "--latest-start"),
        (["extend-request", "1", "--creator", C, "--latest-start", "soon", "--at", "2026-12-12T10:00"], 2, "--latest-start"),
        (["complain", "9", "--merchant", M, "--reason", "x"], 3, "no order 9"),
        (["arbitrate", "9", "--ruling", "creator", "--reason", "x"], 3, "no order 9"),
    ],
)
def test_cli_refusals_and_invalid_input_are_one_line_with_their_exit_code_and_change_nothing(invoke, db_path, args, code, message):
    from conftest import read_rows

    order = create(invoke)
    cli_ok(invoke, "accept", order, "--creator", C, "--at", "2026-12-01T11:00")
    cli_ok(invoke, "tick", "--now", "2026-12-11T00:00")
    before = read_rows(db_path)
    result = invoke(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1 and message in result.stderr
    assert read_rows(db_path) == before


def test_cli_new_policy_keys_are_validated_naming_the_key(invoke, tmp_path):
    for key, value in (("max_appeals", "-1"), ("max_extensions", '"two"'), ("complaint_window", '"soon"'), ("appeal_window", '"0s"')):
        config = tmp_path / f"{key}.toml"
        config.write_text(f"[policy]\n{key} = {value}\n", encoding="utf-8")
        result = invoke("config", "--json", env={"COOPCTL_CONFIG": str(config)})
        assert result.exit_code == 2 and key in result.stderr, (key, result.stderr)
    good = tmp_path / "good.toml"
    good.write_text('[policy]\nmax_appeals = 0\narbitration_window = "2d"\n', encoding="utf-8")
    shown = json.loads(cli_ok(invoke, "config", "--json", env={"COOPCTL_CONFIG": str(good)}).stdout)
    assert shown["policy.max_appeals"]["value"] == 0 and shown["policy.arbitration_window"]["value"] == "48h"


def test_board_counts_each_dispute_against_its_own_arbitration_window(invoke, tmp_path):
    short = tmp_path / "short.toml"
    short.write_text('[policy]\narbitration_window = "1h"\n', encoding="utf-8")
    for config in (None, short):
        env = {} if config is None else {"COOPCTL_CONFIG": str(config)}
        out = invoke("create", "--merchant", M, "--creator", C, "--product", "P1", "--form", "live", "--commission", "10",
                     "--latest-start", "2026-12-10T20:00", "--at", "2026-12-01T10:00", "--json", env=env)
        order = json.loads(out.stdout)["id"]
        cli_ok(invoke, "accept", order, "--creator", C, "--at", "2026-12-01T11:00")
        cli_ok(invoke, "tick", "--now", "2026-12-11T00:00")
        cli_ok(invoke, "complain", order, "--merchant", M, "--reason", "未开播", "--at", "2026-12-12T10:00")
    board = json.loads(cli_ok(invoke, "board", "--now", "2026-12-12T12:00", "--json").stdout)
    assert board["disputes"] == {"open": 2, "past_arbitration_window": 1, "oldest": "2026-12-12T10:00:00+08:00"}
    assert list(board["by_status"])[-3:] == ["disputed", "ruled", "resolved"]
    dry = json.loads(cli_ok(invoke, "tick", "--dry-run", "--list", "--now", "2026-12-12T12:00", "--json").stdout)
    assert dry["reminders"] == 1 and [o["reminders"] for o in dry["orders"]] == [1]


def test_cli_a_dispute_with_evidence_files_on_the_complaint_the_ruling_and_the_appeal(invoke, tmp_path):
    """SPEC section 1: complain, arbitrate and appeal take --evidence-file (repeatable): each file is
    named in its event (so the chain covers it), kept once, listed by `evidence`, and carried by
    `export --with-evidence` into a replay and an import that check it."""
    import hashlib

    files = {}
    for name, content in (("录屏.mp4", b"\x00screen" * 1000), ("chat.png", b"png" * 333), ("裁决书.pdf", b"%PDF ruling"),
                          ("appeal.txt", "设备故障的证明".encode())):
        (tmp_path / name).write_bytes(content)
        files[name] = hashlib.sha256(content).hexdigest()
    order = create(invoke)
    cli_ok(invoke, "accept", order, "--creator", C, "--at", "2026-12-01T11:00")
    cli_ok(invoke, "tick", "--now", "2026-12-11T00:00")
    cli_ok(invoke, "complain", order, "--merchant", M, "--reason", "未开播", "--evidence-file", str(tmp_path / "录屏.mp4"),
           "--evidence-file", str(tmp_path / "chat.png"), "--at", "2026-12-12T10:00")
    cli_ok(invoke, "arbitrate", order, "--ruling", "creator", "--reason", "直播未发生",
           "--evidence-file", str(tmp_path / "裁决书.pdf"), "--at", "2026-12-13T10:00")
    assert invoke("appeal", order, "--creator", C, "--reason", "x", "--evidence-file", str(tmp_path / "missing.bin"),
                  "--at", "2026-12-14T09:00").exit_code == 2  # a missing file: nothing changes
    cli_ok(invoke, "appeal", order, "--creator", C, "--reason", "设备故障", "--evidence-file", str(tmp_path / "appeal.txt"),
           "--at", "2026-12-14T10:00")
    shown = json.loads(cli_ok(invoke, "show", order, "--json").stdout)
    named = {e["kind"]: [f["name"] for f in e["data"].get("evidence_files", [])] for e in shown["events"]}
    assert named["complaint_filed"] == ["录屏.mp4", "chat.png"] and named["ruled"] == ["裁决书.pdf"] and named["appealed"] == ["appeal.txt"]
    listed = json.loads(cli_ok(invoke, "evidence", order, "--json").stdout)
    assert sorted((f["name"], f["sha256"], f["held"]) for f in listed) == sorted((n, h, True) for n, h in files.items())
    cli_ok(invoke, "export", "--all", "--with-evidence", "--out", str(tmp_path / "d.json"), "--at", "2026-12-20T00:00")
    assert "1 of 1 order reproduced" in cli_ok(invoke, "replay", str(tmp_path / "d.json")).stdout
    other = tmp_path / "other.db"
    cli_ok(invoke, "import", str(tmp_path / "d.json"), env={"COOPCTL_DB": str(other)})
    moved = json.loads(cli_ok(invoke, "evidence", order, "--json", env={"COOPCTL_DB": str(other)}).stdout)
    assert sorted((f["sha256"], f["held"]) for f in moved) == sorted((h, True) for h in files.values())
