"""The service layer from Python, without Typer (STYLE "library first, CLI second"): create,
act, tick, list and the outbox, each one transaction, each refusal changing nothing."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

import pytest

from coopctl.config import Settings
from coopctl.errors import InvalidInput, NotFound, Refused, StorageError
from coopctl.lifecycle import GENESIS_HASH, Action, Party, Status, event_hash
from coopctl.policy import DAY, HOUR, MINUTE, Policy, parse_instant
from coopctl.service import Service, create_order, get_order, list_orders, notifications, perform, tick
from coopctl.store import Store, locate

OPERATOR = "ops"
M, C = "商家A", "达人小王"


def at(text: str) -> int:
    return parse_instant(text, timezone.utc)


T0 = at("2026-11-01T10:00:00+08:00")
LATEST = at("2026-11-20T20:00:00+08:00")


@pytest.fixture
def store(db_path: Path):
    s = Store(locate(str(db_path)))
    yield s
    s.dispose()


@pytest.fixture
def svc(store: Store) -> Service:
    return Service(store, Settings(), OPERATOR)


def new(svc: Service, *, created: int = T0, latest: int = LATEST, key: str | None = None, merchant: str = M,
        creator: str = C, commission: str = "12.5"):
    return create_order(
        svc, merchant=merchant, creator=creator, products=["P1"], form="live", commission=commission,
        ad_budget="5000", latest_start_at=latest, note=None, at=created, idempotency_key=key,
    )


def kinds(svc: Service, order_id: int) -> list[str]:
    return [e.kind for e in get_order(svc, order_id)[1]]


def outbox(svc: Service, order_id: int | None = None) -> list[tuple]:
    return [(r.recipient, r.channel, r.kind, r.at) for r in notifications(svc, order_id=order_id)]


# --------------------------------------------------------------------------- create


def test_create_order_writes_a_pending_order_its_event_and_two_notifications(svc):
    order, created = new(svc)
    assert created is True
    assert (order.id, order.status, order.deadline) == (1, Status.PENDING, T0 + 3 * DAY)
    stored, events = get_order(svc, order.id)
    assert stored == order
    assert [(e.seq, e.kind, e.at, e.actor, e.operator) for e in events] == [(1, "created", T0, f"merchant:{M}", OPERATOR)]
    assert outbox(svc) == [(f"creator:{C}", "inbox", "created", T0), (f"creator:{C}", "sms", "created", T0)]


def test_create_order_creates_the_database_when_missing(svc, db_path):
    assert not db_path.exists()
    new(svc)
    assert db_path.exists()


@pytest.mark.parametrize(
    "latest, message",
    [
        (T0, r"the latest start time 2026-11-01T10:00:00\+08:00 must be after the creation time 2026-11-01T10:00:00\+08:00"),
        (T0 - 1, "must be after the creation time"),
    ],
)
def test_a_latest_start_at_or_before_creation_is_invalid_and_leaves_no_database(svc, db_path, latest, message):
    with pytest.raises(InvalidInput, match=message):
        new(svc, latest=latest)
    assert not db_path.exists()


def test_invalid_terms_leave_no_database(svc, db_path):
    with pytest.raises(InvalidInput, match="commission must be more than 0 and at most 100, got 0"):
        new(svc, commission="0")
    assert not db_path.exists()


def test_the_same_idempotency_key_and_terms_return_the_first_order(svc, db_rows):
    first, created = new(svc, key="k1")
    rows = db_rows()
    again, created_again = new(svc, key="k1", created=T0 + HOUR)
    assert (created, created_again) == (True, False)
    assert again == first
    assert db_rows() == rows


def test_a_repeated_key_returns_the_order_even_after_its_latest_start_passed(svc, db_rows):
    first, _ = new(svc, key="k1")
    rows = db_rows()
    again, created = new(svc, key="k1", created=LATEST + DAY)  # a retry long after: not a new order
    assert (again.id, created) == (first.id, False)
    assert db_rows() == rows


def test_a_keyed_create_with_a_bad_latest_start_leaves_no_database(svc, db_path):
    with pytest.raises(InvalidInput, match="must be after the creation time"):
        new(svc, key="k1", latest=T0)
    assert not db_path.exists()


def test_the_same_idempotency_key_with_other_terms_is_refused(svc, db_rows):
    new(svc, key="k1")
    rows = db_rows()
    with pytest.raises(Refused) as caught:
        new(svc, key="k1", commission="13")
    assert str(caught.value) == (
        "idempotency key 'k1' was already used for order 1 with other terms; use a new key for a new order"
    )
    assert db_rows() == rows


def test_each_order_keeps_the_policy_it_was_created_under(store):
    short = Service(store, Settings(policy=Policy(accept_window=DAY)), OPERATOR)
    long = Service(store, Settings(policy=Policy(accept_window=5 * DAY)), OPERATOR)
    first, _ = new(short)
    second, _ = new(long)
    assert get_order(long, first.id)[0].deadline == T0 + DAY
    assert get_order(long, first.id)[0].policy.accept_window == DAY
    assert get_order(long, second.id)[0].deadline == T0 + 5 * DAY
    # the first order expires at its own deadline, whatever the service's settings now say
    report = tick(long, T0 + 2 * DAY)
    assert report.by_kind == {"expired": 1}
    assert get_order(long, first.id)[0].status is Status.EXPIRED
    assert get_order(long, second.id)[0].status is Status.PENDING


# --------------------------------------------------------------------------- perform


def test_the_main_flow_from_python(svc):
    order, _ = new(svc)
    steps = [
        (Action.ACCEPT, Party.CREATOR, C, T0 + HOUR, Status.EFFECTIVE),
        (Action.GO_LIVE, Party.CREATOR, C, T0 + 2 * DAY, Status.LIVE),
        (Action.DELIVER, Party.CREATOR, C, T0 + 2 * DAY + HOUR, Status.DELIVERED),
        (Action.REVIEW_PASS, Party.MERCHANT, M, T0 + 3 * DAY, Status.COMPLETED),
    ]
    for action, party, who, when, status in steps:
        outcome = perform(svc, order.id, action, party, who, when)
        assert outcome.order.status is status
    final, events = get_order(svc, order.id)
    assert [e.kind for e in events] == ["created", "accepted", "went_live", "delivered", "review_passed"]
    assert (final.delivery_mode, final.delivered_at, final.went_live_at) == ("manual", T0 + 2 * DAY + HOUR, T0 + 2 * DAY)
    assert final.deadline is None
    # every other party action notifies the other party on inbox
    assert outbox(svc)[2:] == [
        (f"merchant:{M}", "inbox", "accepted", T0 + HOUR),
        (f"merchant:{M}", "inbox", "went_live", T0 + 2 * DAY),
        (f"merchant:{M}", "inbox", "delivered", T0 + 2 * DAY + HOUR),
        (f"creator:{C}", "inbox", "review_passed", T0 + 3 * DAY),
    ]


def test_events_are_hash_chained(svc):
    order, _ = new(svc)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
    perform(svc, order.id, Action.CANCEL_REQUEST, Party.MERCHANT, M, T0 + 2 * HOUR, reason="库存不足")
    _, events = get_order(svc, order.id)
    previous = GENESIS_HASH
    for seq, e in enumerate(events, start=1):
        assert e.seq == seq
        assert e.prev_hash == previous
        assert e.hash == event_hash(order.id, e.seq, e.kind, e.at, e.actor, e.operator, e.data, e.prev_hash)
        previous = e.hash
    assert events[-1].data == {"by": "merchant", "reason": "库存不足"}


def test_a_failed_review_beyond_max_failed_reviews_escalates_to_disputed(svc):
    order, _ = new(svc)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
    when = T0 + DAY
    for round_ in (1, 2):
        perform(svc, order.id, Action.DELIVER, Party.CREATOR, C, when, evidence=f"https://v.douyin.com/{round_}")
        outcome = perform(svc, order.id, Action.REVIEW_FAIL, Party.MERCHANT, M, when + HOUR, reason="not shown")
        assert (outcome.order.status, outcome.order.failed_reviews) == (Status.REVIEW_FAILED, round_)
        when += DAY
    perform(svc, order.id, Action.DELIVER, Party.CREATOR, C, when)
    outcome = perform(svc, order.id, Action.REVIEW_FAIL, Party.MERCHANT, M, when + HOUR, reason="still not shown")
    assert (outcome.order.status, outcome.order.failed_reviews) == (Status.DISPUTED, 3)
    assert [e.kind for e in outcome.events] == ["review_failed"]
    assert outcome.order.deadline is None


def test_an_unknown_order_is_not_found(svc):
    new(svc)
    with pytest.raises(NotFound, match="^no order 7; `coopctl list` shows the orders$"):
        perform(svc, 7, Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
    with pytest.raises(NotFound):
        get_order(svc, 7)
    with pytest.raises(NotFound):
        notifications(svc, order_id=7)


@pytest.mark.parametrize(
    "action, party, who, when, message",
    [
        (Action.ACCEPT, Party.CREATOR, "达人小李", T0 + HOUR, "creator '达人小李' is not the creator of order 1 ('达人小王' is)"),
        (Action.WITHDRAW, Party.MERCHANT, "商家B", T0 + HOUR, "merchant '商家B' is not the merchant of order 1 ('商家A' is)"),
        (Action.GO_LIVE, Party.CREATOR, C, T0 + HOUR, "order 1 is pending; go-live needs effective"),
        (Action.DELIVER, Party.CREATOR, C, T0 + HOUR, "order 1 is pending; deliver needs effective or live or review_failed"),
        (Action.ACCEPT, Party.CREATOR, C, T0 - 1,
         "2026-11-01T09:59:59.999999+08:00 is earlier than the last event of order 1 (2026-11-01T10:00:00+08:00); time cannot go backwards"),
        (Action.ACCEPT, Party.CREATOR, C, T0 + 3 * DAY,
         "too late: order 1 became expired at 2026-11-04T10:00:00+08:00 when its deadline passed; accept needs pending"),
    ],
)
def test_a_refused_action_raises_refused_and_changes_nothing(svc, db_rows, action, party, who, when, message):
    new(svc)
    rows = db_rows()
    with pytest.raises(Refused) as caught:
        perform(svc, 1, action, party, who, when)
    assert str(caught.value) == message
    assert db_rows() == rows  # not even the expiry that the late accept fired in passing


def test_an_action_fires_due_deadlines_first(svc):
    order, _ = new(svc)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
    perform(svc, order.id, Action.GO_LIVE, Party.CREATOR, C, T0 + DAY)
    # review two days after the auto delivery (which nobody ticked): the delivery is recorded at its deadline
    outcome = perform(svc, order.id, Action.REVIEW_PASS, Party.MERCHANT, M, T0 + 4 * DAY)
    assert [(e.kind, e.at, e.actor) for e in outcome.events] == [
        ("delivered", T0 + 2 * DAY, "system"),
        ("review_passed", T0 + 4 * DAY, f"merchant:{M}"),
    ]
    assert outcome.order.delivery_mode == "auto"


def test_reading_a_missing_database_raises_and_creates_nothing(svc, db_path):
    for call in (
        lambda: get_order(svc, 1),
        lambda: list_orders(svc),
        lambda: tick(svc, T0),
        lambda: notifications(svc),
        lambda: perform(svc, 1, Action.ACCEPT, Party.CREATOR, C, T0),
    ):
        with pytest.raises(StorageError, match="no database at"):
            call()
    assert not db_path.exists()


# --------------------------------------------------------------------------- tick


def flow_to_live(svc: Service) -> int:
    order, _ = new(svc)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
    perform(svc, order.id, Action.GO_LIVE, Party.CREATOR, C, T0 + DAY)
    return order.id


def test_one_tick_fires_a_whole_cascade_each_step_at_its_deadline(svc):
    order_id = flow_to_live(svc)
    report = tick(svc, T0 + 60 * DAY)
    assert (report.applied, dict(report.by_kind), report.reminders) == (2, {"delivered": 1, "auto_accepted": 1}, 0)
    order, events = get_order(svc, order_id)
    assert [(e.kind, e.at, e.actor, e.operator, e.data) for e in events[3:]] == [
        ("delivered", T0 + 2 * DAY, "system", OPERATOR, {"mode": "auto"}),
        ("auto_accepted", T0 + 16 * DAY, "system", OPERATOR, {}),
    ]
    assert (order.status, order.delivery_mode, order.delivered_at) == (Status.COMPLETED, "auto", T0 + 2 * DAY)
    # both timed-out transitions notify both parties on inbox
    assert outbox(svc, order_id)[-4:] == [
        (f"merchant:{M}", "inbox", "delivered", T0 + 2 * DAY),
        (f"creator:{C}", "inbox", "delivered", T0 + 2 * DAY),
        (f"merchant:{M}", "inbox", "auto_accepted", T0 + 16 * DAY),
        (f"creator:{C}", "inbox", "auto_accepted", T0 + 16 * DAY),
    ]
    again = tick(svc, T0 + 60 * DAY)
    assert (again.applied, dict(again.by_kind), again.reminders) == (0, {}, 0)


def test_a_dry_run_tick_reports_the_same_and_writes_nothing(svc, db_rows, db_bytes):
    flow_to_live(svc)
    new(svc, created=T0 + 50 * DAY, latest=T0 + 70 * DAY)  # its accept reminder is due at T0 + 52d
    rows, data = db_rows(), db_bytes(settle=True)
    dry = tick(svc, T0 + 52 * DAY, dry_run=True)
    assert db_rows() == rows
    assert db_bytes() == data
    real = tick(svc, T0 + 52 * DAY)
    assert (dry.applied, dict(dry.by_kind), dry.reminders) == (real.applied, dict(real.by_kind), real.reminders) == (
        2, {"delivered": 1, "auto_accepted": 1}, 1,
    )


def test_ticking_often_or_once_gives_the_same_history(tmp_path):
    def scenario(path: Path, ticks: list[int]) -> dict:
        s = Service(Store(locate(str(path))), Settings(), OPERATOR)
        ids = [new(s, created=T0)[0].id for _ in range(4)]
        perform(s, ids[1], Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)  # -> closed_overdue at LATEST
        perform(s, ids[2], Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
        perform(s, ids[2], Action.GO_LIVE, Party.CREATOR, C, T0 + DAY)  # -> delivered, then completed
        perform(s, ids[3], Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
        perform(s, ids[3], Action.DELIVER, Party.CREATOR, C, T0 + 2 * HOUR)
        perform(s, ids[3], Action.REVIEW_FAIL, Party.MERCHANT, M, T0 + 3 * HOUR, reason="x")  # -> disputed
        for now in ticks:
            tick(s, now)
        return {i: [e.to_json() for e in get_order(s, i)[1]] for i in ids}

    end = T0 + 30 * DAY
    often = scenario(tmp_path / "often.db", list(range(T0 + 7 * MINUTE, end, 13 * HOUR)) + [end])
    once = scenario(tmp_path / "once.db", [end])
    assert often == once
    assert [e["kind"] for e in once[1]] == ["created", "expired"]
    assert [e["kind"] for e in once[2]] == ["created", "accepted", "closed_overdue"]
    assert [e["kind"] for e in once[3]][-2:] == ["delivered", "auto_accepted"]
    assert [e["kind"] for e in once[4]][-1] == "escalated"


def test_tick_works_through_every_due_order_in_batches(svc):
    for _ in range(5):
        new(svc)
    untouched, _ = new(svc, created=T0 + 10 * DAY, latest=T0 + 40 * DAY)
    report = tick(svc, T0 + 4 * DAY, batch=2)
    assert (report.applied, dict(report.by_kind), report.orders) == (5, {"expired": 5}, 5)
    assert [o.status for o in list_orders(svc)] == [Status.EXPIRED] * 5 + [Status.PENDING]
    assert kinds(svc, untouched.id) == ["created"]


def test_a_reminder_is_written_once_and_never_after_its_deadline(svc):
    reminded, _ = new(svc)
    missed, _ = new(svc, created=T0 + HOUR)
    first = tick(svc, T0 + 2 * DAY + 30 * MINUTE)  # after the first's reminder time, before the second's
    assert (first.applied, first.reminders) == (0, 1)
    assert tick(svc, T0 + 2 * DAY + 40 * MINUTE).reminders == 0
    rows = notifications(svc, order_id=reminded.id)
    reminders = [r for r in rows if r.kind == "reminder"]
    assert [(r.recipient, r.channel, r.at) for r in reminders] == [(f"creator:{C}", "sms", T0 + 2 * DAY)]
    # the second order's accept deadline passes before anyone ticks: it expires, with no reminder
    late = tick(svc, T0 + 5 * DAY)
    assert (late.applied, late.reminders) == (2, 0)
    assert [r.kind for r in notifications(svc, order_id=missed.id)] == ["created", "created", "expired", "expired"]


# --------------------------------------------------------------------------- list and outbox


def test_list_orders_filters_by_status_party_and_deadline(svc):
    a, _ = new(svc, merchant="商家A", creator="达人小王")  # pending, deadline T0 + 3d
    b, _ = new(svc, merchant="商家B", creator="达人小王", created=T0 - DAY)  # pending, deadline T0 + 2d
    c, _ = new(svc, merchant="商家A", creator="达人阿珍")
    perform(svc, c.id, Action.ACCEPT, Party.CREATOR, "达人阿珍", T0 + HOUR)  # effective, deadline LATEST
    assert [o.id for o in list_orders(svc)] == [a.id, b.id, c.id]
    assert [o.id for o in list_orders(svc, statuses=["effective"])] == [c.id]
    assert [o.id for o in list_orders(svc, statuses=["effective", "pending"])] == [a.id, b.id, c.id]
    assert [o.id for o in list_orders(svc, merchant="商家A")] == [a.id, c.id]
    assert [o.id for o in list_orders(svc, creator="达人小王")] == [a.id, b.id]
    assert [o.id for o in list_orders(svc, due_before=T0 + 10 * DAY)] == [b.id, a.id]  # soonest first
    assert [o.id for o in list_orders(svc, limit=1)] == [a.id]
    assert list_orders(svc, statuses=["completed"]) == []


def test_notifications_pending_and_mark_sent(svc):
    order, _ = new(svc)
    perform(svc, order.id, Action.ACCEPT, Party.CREATOR, C, T0 + HOUR)
    assert len(notifications(svc, pending=True)) == 3
    handed = notifications(svc, pending=True, mark_sent_at=T0 + 2 * HOUR)
    assert [r.kind for r in handed] == ["created", "created", "accepted"]
    assert notifications(svc, pending=True) == []
    assert [r.sent_at for r in notifications(svc)] == [T0 + 2 * HOUR] * 3
    perform(svc, order.id, Action.GO_LIVE, Party.CREATOR, C, T0 + 3 * HOUR)
    assert [r.kind for r in notifications(svc, pending=True)] == ["went_live"]
