"""Random histories of a few orders against a small independent model of SPEC section 1.

Hypothesis drives actions (allowed or not, by the right party or not, with the right id or
not), time steps forward (and sometimes backwards, or exactly onto a deadline) and `tick_order`
calls; after every step the invariants of the spec must hold. The states table is written
here literally, independent of `coopctl.lifecycle`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timezone

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coopctl.errors import Refused
from coopctl.lifecycle import (
    GENESIS_HASH,
    Action,
    Party,
    act,
    create,
    event_hash,
    make_terms,
    tick_order,
)
from coopctl.policy import DAY, HOUR, MINUTE, Policy, ReminderOffsets, parse_instant

MERCHANT_ID = "商家A"
CREATOR_ID = "达人小王"
OPERATOR = "hypothesis"
T0 = parse_instant("2026-11-01T10:00:00+08:00", timezone.utc)
N_ORDERS = 2

# The states table of SPEC section 1: status -> (terms, liable party).
# "requester" means the party that asked to cancel; "opening" the liable party the order had when
# its dispute opened; "ruling" the party the latest ruling names.
STATES = {
    "pending": ("not_yet_effective", None),
    "effective": ("in_force", None),
    "cancel_requested": ("in_force", None),
    "live": ("in_force", None),
    "delivered": ("in_force", None),
    "review_failed": ("in_force", None),
    "completed": ("fulfilled", None),
    "rejected": ("void", None),
    "withdrawn": ("void", None),
    "expired": ("void", None),
    "cancelled": ("void", None),
    "cancelled_unilaterally": ("in_force", "requester"),
    "closed_overdue": ("in_force", "creator"),
    "disputed": ("in_force", "opening"),
    "extension_requested": ("in_force", None),
    "ruled": ("settled", "ruling"),
    "resolved": ("settled", "ruling"),
}
TERMINAL = {
    "completed", "rejected", "withdrawn", "expired", "cancelled", "cancelled_unilaterally", "closed_overdue", "disputed",
    "resolved",
}

# What happens at each deadline: status -> (new status, event kind).
TIMEOUTS = {
    "pending": ("expired", "expired"),
    "effective": ("closed_overdue", "closed_overdue"),
    "cancel_requested": ("cancelled_unilaterally", "cancelled_unilaterally"),
    "live": ("delivered", "delivered"),
    "delivered": ("completed", "auto_accepted"),
    "review_failed": ("disputed", "escalated"),
    "extension_requested": ("effective", "extension_lapsed"),  # closed_overdue when the latest start comes first
    "ruled": ("resolved", "ruling_final"),
}
TIMEOUT_KINDS = {k for _, k in TIMEOUTS.values()} | {"closed_overdue"}

# The actions table: command -> (who, {from: to}, event kind).
ACTIONS = {
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
    "complain": ("not_liable", {s: "disputed" for s in ("closed_overdue", "cancelled_unilaterally", "completed")}, "complaint_filed"),
    "arbitrate": ("platform", {"disputed": "ruled"}, "ruled"),
    "appeal": ("either", {"ruled": "disputed"}, "appealed"),
}


@dataclass(frozen=True)
class Model:
    """What the spec says an order is: enough to predict its status and deadline."""

    status: str
    entered_at: int
    created_at: int
    latest_start: int
    policy: Policy
    requester: str | None = None
    failed: int = 0
    last_at: int = 0
    n_events: int = 1
    proposer: str | None = None
    proposal: int | None = None
    extensions: int = 0
    appeals: int = 0
    ruling: str | None = None  # the liable party of the latest ruling ("none" for none)
    opening: str | None = None  # the liable party when the dispute opened

    @property
    def liable(self) -> str | None:
        if self.status == "closed_overdue":
            return "creator"
        if self.status == "cancelled_unilaterally":
            return self.requester
        if self.status == "disputed":
            return self.opening
        if self.status in ("ruled", "resolved"):
            return None if self.ruling == "none" else self.ruling
        return None

    @property
    def deadline(self) -> int | None:
        p = self.policy
        return {
            "pending": lambda: min(self.created_at + p.accept_window, self.latest_start),
            "effective": lambda: self.latest_start,
            "cancel_requested": lambda: min(self.entered_at + p.cancel_response_window, self.latest_start),
            "live": lambda: self.entered_at + p.auto_deliver_after,
            "delivered": lambda: self.entered_at + p.review_window,
            "review_failed": lambda: self.entered_at + p.makeup_window,
            "extension_requested": lambda: min(self.entered_at + p.extension_response_window, self.latest_start),
            "ruled": lambda: self.entered_at + p.appeal_window,
        }.get(self.status, lambda: None)()

    def fire(self, now: int) -> "Model":
        model = self
        while (due := model.deadline) is not None and due <= now:
            target, _ = TIMEOUTS[model.status]
            changes: dict = {}
            if model.status == "extension_requested":
                changes = {"proposer": None, "proposal": None}
                if model.latest_start <= model.entered_at + model.policy.extension_response_window:
                    target = "closed_overdue"
            model = replace(model, status=target, entered_at=due, last_at=due, n_events=model.n_events + 1, **changes)
        return model

    def act(self, action: str, party: str, right_id: bool, at: int, proposal: int = 0, ruling: str = "none") -> "Model | None":
        """The model after the action, or None when the rules refuse it. `party` "platform" is
        the platform (it names no id); `proposal` an extension's, `ruling` an arbitration's."""
        if (not right_id and party != "platform") or at < self.last_at:
            return None
        model = self.fire(at)
        who, sources, _ = ACTIONS[action]
        if model.status not in sources:
            return None
        p = model.policy
        if (who == "platform") != (party == "platform"):
            return None
        if who in ("creator", "merchant") and party != who:
            return None
        if who == "other" and party == (model.proposer if model.status == "extension_requested" else model.requester):
            return None
        if who == "requester" and party != model.requester:
            return None
        if who == "not_liable" and party == model.liable:
            return None
        target = sources[model.status]
        changes: dict = {}
        if action == "extend-request":
            if model.extensions >= p.max_extensions or not model.latest_start < proposal <= model.latest_start + p.max_extension:
                return None
            changes.update(proposer=party, proposal=proposal)
        if action in ("extend-confirm", "extend-decline"):
            changes.update(proposer=None, proposal=None)
        if action == "extend-confirm":
            changes.update(latest_start=model.proposal, extensions=model.extensions + 1)
        if action == "complain":
            if at >= model.entered_at + p.complaint_window:
                return None
            changes["opening"] = model.liable
        if action == "arbitrate":
            changes["ruling"] = ruling
            if model.appeals >= p.max_appeals:
                target = "resolved"
        if action == "appeal":
            if model.appeals >= p.max_appeals:
                return None
            changes.update(appeals=model.appeals + 1, opening=model.liable)
        if action == "cancel-request":
            changes["requester"] = party
        if action in ("cancel-decline", "cancel-withdraw"):
            changes["requester"] = None
        if action == "review --fail":
            changes["failed"] = model.failed + 1
            if changes["failed"] > model.policy.max_failed_reviews:
                target = "disputed"
        return replace(model, status=target, entered_at=at, last_at=at, n_events=model.n_events + 1, **changes)


windows = st.sampled_from([HOUR, 24 * HOUR, 48 * HOUR, 3 * DAY, 7 * DAY, 14 * DAY])
policies = st.builds(
    Policy,
    accept_window=windows,
    cancel_response_window=windows,
    auto_deliver_after=windows,
    review_window=windows,
    makeup_window=windows,
    max_failed_reviews=st.integers(0, 3),
    extension_response_window=windows,
    max_extensions=st.integers(0, 2),
    max_extension=st.sampled_from([HOUR, DAY, 15 * DAY]),
    complaint_window=windows,
    arbitration_window=windows,
    appeal_window=windows,
    max_appeals=st.integers(0, 2),
)
# how far a proposal moves the latest start: not at all, just, up to 15 days, beyond
moves = st.sampled_from([0, 1, HOUR, DAY, 15 * DAY, 15 * DAY + 1, 20 * DAY])
rulings = st.sampled_from(["merchant", "creator", "none"])
offsets = st.sampled_from([0, HOUR, 24 * HOUR, 48 * HOUR])
reminder_offsets = st.builds(ReminderOffsets, offsets, offsets, offsets)
steps = st.sampled_from(
    [0, 1, MINUTE, 10 * MINUTE, HOUR, 3 * HOUR, 12 * HOUR, DAY, 2 * DAY, 3 * DAY, 8 * DAY, -1, -HOUR, -DAY]
)
order_index = st.integers(0, N_ORDERS - 1)
parties = st.sampled_from(["merchant", "creator", "merchant", "creator", "platform"])
# How often the "something allowed" rule picks each action, to keep orders alive and moving.
WEIGHTS = {
    "accept": 6, "reject": 1, "withdraw": 1, "cancel-request": 3, "cancel-confirm": 2, "cancel-decline": 3,
    "go-live": 3, "deliver": 4, "review --pass": 1, "review --fail": 4,
    "cancel-withdraw": 2, "extend-request": 3, "extend-confirm": 3, "extend-decline": 1, "complain": 3,
    "arbitrate": 4, "appeal": 3,
}


def rightful_party(order, action: str, coin: bool) -> str:
    """The party the actions table lets do `action` (either one, by a coin toss, where both may)."""
    who = ACTIONS[action][0]
    if who == "either" or (who == "not_liable" and str(order.status) == "completed"):
        return "merchant" if coin else "creator"
    if who == "other":
        asked = order.extension_requested_by if str(order.status) == "extension_requested" else order.cancel_requested_by
        return "creator" if asked == Party.MERCHANT else "merchant"
    if who == "requester":
        return str(order.cancel_requested_by)
    if who == "not_liable":
        return "creator" if order.liable_party == Party.MERCHANT else "merchant"
    return who


class CooperationOrders(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = T0
        self.orders = []
        self.models = []
        self.events = []
        self.notes = []

    @initialize(
        setups=st.lists(
            st.tuples(st.integers(1, 30 * 24).map(lambda h: h * HOUR), policies, reminder_offsets),
            min_size=N_ORDERS, max_size=N_ORDERS,
        )
    )
    def create_orders(self, setups):
        for n, (latest_in, policy, reminders) in enumerate(setups, start=1):
            terms = make_terms(
                merchant=MERCHANT_ID, creator=CREATOR_ID, products=[f"商品{n}"], form="live",
                commission="10", ad_budget="100", latest_start_at=T0 + latest_in,
            )
            out = create(n, terms, policy, reminders, T0, OPERATOR)
            assert [(x.recipient, x.channel) for x in out.notifications] == [
                (f"creator:{CREATOR_ID}", "inbox"), (f"creator:{CREATOR_ID}", "sms"),
            ]
            self.orders.append(out.order)
            self.models.append(Model("pending", T0, T0, T0 + latest_in, policy, last_at=T0))
            self.events.append(list(out.events))
            self.notes.append(list(out.notifications))

    # ------------------------------------------------------------------ time

    @rule(step=steps)
    def move_time(self, step):
        self.now = max(T0, self.now + step)

    @rule(i=order_index, nudge=st.sampled_from([-1, -1, 0, 1]))
    def jump_to_a_deadline(self, i, nudge):
        deadline = self.orders[i].deadline
        if deadline is not None:
            self.now = max(T0, deadline + nudge)

    # ------------------------------------------------------------------ actions

    @rule(
        i=order_index,
        action=st.sampled_from(list(ACTIONS)),
        party=parties,
        right_id=st.sampled_from([True, True, True, False]),
        move=moves,
        ruling=rulings,
    )
    def party_acts(self, i, action, party, right_id, move, ruling):
        self._act(i, action, party, right_id, move, ruling)

    @rule(
        i=order_index,
        choice=st.integers(0, 99),
        coin=st.booleans(),
        wrong_party=st.sampled_from([False, False, False, True]),
        move=moves,
        ruling=rulings,
    )
    def party_does_something_allowed(self, i, choice, coin, wrong_party, move, ruling):
        """An action allowed in the current status, mostly by the party that may do it."""
        order = self.orders[i]
        status = str(order.status)
        candidates = [a for a, (_, sources, _) in ACTIONS.items() if status in sources for _ in range(WEIGHTS[a])]
        if not candidates:
            return
        action = candidates[choice % len(candidates)]
        party = rightful_party(order, action, coin)
        if wrong_party:
            party = {"merchant": "creator", "creator": "platform", "platform": "merchant"}[party]
        self._act(i, action, party, True, move, ruling)

    @rule(i=order_index, choice=st.integers(0, 99), coin=st.booleans(), move=moves, ruling=rulings)
    def party_moves_the_order_forward(self, i, choice, coin, move, ruling):
        """The rightful party does what brings the order closer to delivery."""
        order = self.orders[i]
        forward = {
            "pending": ["accept"],
            "effective": ["go-live", "deliver", "cancel-request"],
            "cancel_requested": ["cancel-decline", "cancel-confirm"],
            "live": ["deliver"],
            "delivered": ["review --fail", "review --fail", "review --pass"],
            "review_failed": ["deliver"],
            "extension_requested": ["extend-confirm", "extend-decline"],
            "closed_overdue": ["complain"],
            "cancelled_unilaterally": ["complain"],
            "completed": ["complain"],
            "disputed": ["arbitrate"],
            "ruled": ["appeal", "appeal", "arbitrate"],
        }.get(str(order.status))
        if str(order.status) == "effective" and choice % 4 == 0:
            forward = ["extend-request"]
        if not forward:
            return
        action = forward[choice % len(forward)]
        self._act(i, action, rightful_party(order, action, coin), True, move, ruling)

    def _act(self, i, action, party, right_id, move=DAY, ruling="none"):
        order, model = self.orders[i], self.models[i]
        party_enum = None if party == "platform" else Party(party)
        party_id = None if party_enum is None else order.party_id(party_enum) if right_id else order.party_id(party_enum) + "x"
        proposal = order.terms.latest_start_at + move
        expected = model.act(action, party, right_id, self.now, proposal, ruling)
        snapshot = replace(order)
        try:
            out = act(order, Action(action), party_enum, party_id, self.now, OPERATOR, reason="理由",
                      proposal=proposal, ruling=ruling)
        except Refused:
            assert expected is None, f"{action} by {party} refused but the spec allows it from {model.status}"
            assert order == snapshot  # a refused action changes nothing
            return
        assert expected is not None, f"{action} by {party} allowed in {order.status} at {self.now} but the spec refuses it"
        kinds = [e.kind for e in out.events]
        assert kinds[-1] == ACTIONS[action][2]
        assert all(k in TIMEOUT_KINDS for k in kinds[:-1])
        action_note = [n for n in out.notifications if n.at == self.now and n.kind == ACTIONS[action][2]
                       and not n.recipient.startswith(party)]
        assert len(action_note) >= 1
        self._apply(i, out, expected)

    # ------------------------------------------------------------------ tick

    @rule(i=order_index)
    def tick(self, i):
        now = self.now
        out = tick_order(self.orders[i], now, OPERATOR)
        expected = self.models[i].fire(now)
        assert all(e.actor == "system" and e.at <= now for e in out.events)
        self._apply(i, out, expected)
        deadline = self.orders[i].deadline
        assert deadline is None or deadline > now
        again = tick_order(self.orders[i], now, OPERATOR)
        assert again.events == [] and again.notifications == [] and again.order == self.orders[i]

    @rule()
    def tick_all(self):
        for i in range(N_ORDERS):
            self.tick(i)

    def _apply(self, i, out, expected: Model):
        for event in out.events:
            recipients = [n for n in out.notifications if n.kind == event.kind and n.at == event.at]
            if event.actor == "system":
                assert {(n.recipient, n.channel) for n in recipients} >= {
                    (f"merchant:{MERCHANT_ID}", "inbox"), (f"creator:{CREATOR_ID}", "inbox"),
                }
            else:
                actor_kind = event.actor.split(":")[0]
                other = "creator" if actor_kind == "merchant" else "merchant"
                assert any(n.recipient.startswith(other + ":") and n.channel == "inbox" for n in recipients)
        self.orders[i] = out.order
        self.models[i] = expected
        self.events[i] += out.events
        self.notes[i] += out.notifications

    # ------------------------------------------------------------------ invariants

    @invariant()
    def order_matches_the_model(self):
        for order, model, events in zip(self.orders, self.models, self.events):
            assert str(order.status) == model.status
            assert order.deadline == model.deadline
            assert order.failed_reviews == model.failed
            assert order.last_event_at == model.last_at
            assert len(events) == model.n_events == order.last_seq
            if model.status in ("cancel_requested", "cancelled_unilaterally"):
                assert order.cancel_requested_by == Party(model.requester)
            assert order.terms.latest_start_at == model.latest_start and order.extensions == model.extensions
            assert order.proposed_latest_start_at == model.proposal
            assert order.extension_requested_by == (None if model.proposer is None else Party(model.proposer))
            assert order.appeals == model.appeals

    @invariant()
    def deadline_is_none_exactly_in_terminal_statuses(self):
        for order in self.orders:
            deadline = order.deadline
            assert (deadline is None) == (str(order.status) in TERMINAL)
            assert deadline is None or isinstance(deadline, int)
            if deadline is not None:
                assert deadline > order.last_event_at

    @invariant()
    def events_are_numbered_and_dated_in_order(self):
        for events in self.events:
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert all(a.at <= b.at for a, b in zip(events, events[1:]))
            assert events[0].kind == "created"

    @invariant()
    def hash_chain_is_valid(self):
        for order, events in zip(self.orders, self.events):
            prev = GENESIS_HASH
            for e in events:
                assert e.prev_hash == prev
                assert e.hash == event_hash(e.order_id, e.seq, e.kind, e.at, e.actor, e.operator, e.data, e.prev_hash)
                prev = e.hash
            assert order.last_hash == prev

    @invariant()
    def terms_and_liability_follow_the_states_table(self):
        for order, model in zip(self.orders, self.models):
            terms, liable = STATES[str(order.status)]
            assert str(order.terms_state) == terms
            if liable in ("requester", "opening", "ruling"):
                liable = model.liable
            assert order.liable_party == (None if liable is None else Party(liable))

    @invariant()
    def each_reminder_is_written_once(self):
        for notes in self.notes:
            reminders = [(n.recipient, n.channel, n.text) for n in notes if n.kind == "reminder"]
            assert len(reminders) == len(set(reminders))


CooperationOrders.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCooperationOrders = CooperationOrders.TestCase
