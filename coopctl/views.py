"""The operations views of SPEC section 4: the board, an order seen ahead (`show --as-of`, the
overdue mark), what a dry-run tick would do order by order, and the settings in effect.

Each view is a record built from the store (or from an order already read) with a `to_json(tz)`
that gives its JSON shape; `render_views.py` draws the tables. Nothing here prints, reads the
clock or imports rich: instants are arguments, as everywhere below the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from coopctl import lifecycle
from coopctl.errors import Refused
from coopctl.lifecycle import TERMS_OF, TIMERS, Event, Order, Status, TermsState
from coopctl.policy import DAY, HOUR, format_duration, iso

if TYPE_CHECKING:  # pragma: no cover
    from coopctl.config import Settings
    from coopctl.service import Service

# ----------------------------------------------------------------------------- the board

DUE_WINDOWS: tuple[tuple[str, int], ...] = (("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY))


def _arbitration_window(policy_text: str) -> int:
    """An order's own `arbitration_window`, from its stored policy (a key it lacks: the default)."""
    import json

    from coopctl.policy import InvalidValue, Policy

    try:
        return Policy.from_json(json.loads(policy_text)).arbitration_window
    except (ValueError, TypeError, InvalidValue):  # a damaged row (`doctor` names it): the default
        return Policy().arbitration_window


def _ts(instant: int | None, tz: tzinfo) -> str | None:
    return None if instant is None else iso(instant, tz)


@dataclass(frozen=True)
class Board:
    """`coopctl board`: the whole book at `now`, counted from indexes."""

    now: int
    by_status: dict[str, int]
    overdue: int
    oldest_overdue: int | None
    due: dict[str, int]  # nested: "24h" includes "1h"
    due_24h_by_kind: dict[str, int]
    disputes_open: int
    disputes_past_window: int
    oldest_dispute: int | None
    outbox_pending: int
    oldest_pending: int | None
    outbox_failed: int = 0  # SPEC section 5: failed, to be tried again; dead, given up
    outbox_dead: int = 0
    last_tick: tuple[int, int, int] | None = None  # (now, finished_at, applied)

    @property
    def orders(self) -> int:
        return sum(self.by_status.values())

    @property
    def by_terms(self) -> dict[str, int]:
        counts = {str(terms): 0 for terms in TermsState}
        for status, n in self.by_status.items():
            counts[str(TERMS_OF[Status(status)])] += n
        return counts

    def to_json(self, tz: tzinfo) -> dict:
        last = self.last_tick
        return {
            "now": iso(self.now, tz),
            "orders": self.orders,
            "by_status": dict(self.by_status),
            "by_terms": self.by_terms,
            "overdue": {"count": self.overdue, "oldest": _ts(self.oldest_overdue, tz)},
            "due": dict(self.due),
            "due_24h_by_kind": dict(self.due_24h_by_kind),
            "disputes": {
                "open": self.disputes_open,
                "past_arbitration_window": self.disputes_past_window,
                "oldest": _ts(self.oldest_dispute, tz),
            },
            "outbox": {
                "pending": self.outbox_pending,
                "oldest_pending": _ts(self.oldest_pending, tz),
                "failed": self.outbox_failed,
                "dead": self.outbox_dead,
            },
            "last_tick": None if last is None else {"now": iso(last[0], tz), "finished_at": iso(last[1], tz), "applied": last[2]},
        }


def timer_kinds() -> dict[str, str]:
    """What fires at each timed status's deadline (event kind), in the order of the states table."""
    return {str(status): str(timer.kind) for status, timer in TIMERS.items()}


def board(svc: "Service", now: int) -> Board:
    """Count the book at `now` in one read transaction (one snapshot: the parts agree)."""
    svc.store.require()
    statuses = [str(s) for s in Status]
    with svc.store.read() as tx:
        by_status = tx.board_status_counts(statuses)
        bounds = [now] + [now + span for _, span in DUE_WINDOWS]
        overdue, *steps = tx.board_deadline_counts(bounds)
        due, running = {}, 0
        for (name, _), n in zip(DUE_WINDOWS, steps):
            running += n
            due[name] = running
        oldest_overdue = tx.board_oldest_deadline(now) if overdue else None
        by_status_24h = _due_by_status(tx, by_status, now, now + DAY, due["24h"])
        kinds = {kind: 0 for kind in dict.fromkeys(timer_kinds().values())}
        for status, n in by_status_24h.items():
            kind = timer_kinds().get(status)
            if kind is not None:
                kinds[kind] += n
        opened, late, oldest_dispute = tx.board_disputes(str(Status.DISPUTED), now, _arbitration_window)
        outbox = tx.board_outbox()
        last = tx.last_tick_run()
    return Board(
        now=now, by_status={s: by_status.get(s, 0) for s in statuses}, overdue=overdue, oldest_overdue=oldest_overdue,
        due=due, due_24h_by_kind=kinds, disputes_open=opened, disputes_past_window=late, oldest_dispute=oldest_dispute,
        outbox_pending=outbox["pending"], oldest_pending=outbox["oldest_pending"],
        outbox_failed=outbox["failed"], outbox_dead=outbox["dead"],
        last_tick=None if last is None else (last.now, last.finished_at, last.applied),
    )


def _due_by_status(tx, by_status: dict[str, int], after: int, until: int, total: int) -> dict[str, int]:
    """Orders per timed status with a deadline in (after, until], `total` in all. Only timed
    statuses have deadlines, so the largest one's share is `total` minus the others': the smaller
    statuses are counted (through the index on status), the largest never is. With one timed
    status in the book (or nothing due) nothing is read at all."""
    if not total:
        return {}
    timed = sorted((n, s) for s, n in by_status.items() if n and Status(s) in TIMERS)
    if not timed:
        return {}
    found = {s: tx.board_due_in_status(s, after, until) for _, s in timed[:-1]}
    found[timed[-1][1]] = total - sum(found.values())
    return found


# ----------------------------------------------------------------------------- seeing ahead


@dataclass(frozen=True)
class Overdue:
    """A deadline that passed with no tick to fire it: since when, and what the next tick makes it."""

    since: int
    becomes: str

    def to_json(self, tz: tzinfo) -> dict:
        return {"since": iso(self.since, tz), "becomes": self.becomes}

    def text(self, when: Callable[[int], str]) -> str:
        return f"overdue since {when(self.since)}; the next tick makes it {self.becomes}"


def overdue(order: Order, now: int, tz: tzinfo) -> Overdue | None:
    """The order's deadline, when it is at or before `now` (what the next tick fires, cascades included)."""
    deadline = order.deadline
    if deadline is None or deadline > now:
        return None
    fired = lifecycle.fire_due(order, now, "system", tz)
    return Overdue(deadline, str(fired.order.status))


@dataclass(frozen=True)
class Projection:
    """An order as the rules make it at `as_of`: every deadline up to then fired, in memory."""

    as_of: int
    order: Order
    events: list[Event]  # the stored events, then those the projection added
    added: list[Event]
    reminders: int


def project(order: Order, events: list[Event], as_of: int, operator: str, tz: tzinfo) -> Projection:
    """What `tick --now AS_OF` would make of this order (`lifecycle.tick_order`); nothing is written.
    An instant before the order's last event is refused, as it is for every action (exit 1)."""
    if as_of < order.last_event_at:
        raise Refused(
            f"--as-of {iso(as_of, tz)} is earlier than the last event of order {order.id} "
            f"({iso(order.last_event_at, tz)}); a projection looks ahead, `coopctl history {order.id}` shows the past"
        )
    outcome = lifecycle.tick_order(order, as_of, operator, tz)
    reminders = sum(1 for n in outcome.notifications if n.kind == lifecycle.Kind.REMINDER.value)
    return Projection(as_of, outcome.order, list(events) + list(outcome.events), list(outcome.events), reminders)


def projection_json(p: Projection, tz: tzinfo) -> dict:
    """`show --as-of --json`: the order and its events as `show --json` prints them after a tick at
    `as_of`, plus "as_of", "projected": true and "projected_events" (how many of the events are
    the projection's: the last ones)."""
    return {
        **p.order.to_json(tz),
        "events": [e.to_json(tz) for e in p.events],
        "as_of": iso(p.as_of, tz),
        "projected": True,
        "projected_events": len(p.added),
        "projected_reminders": p.reminders,
    }


# ----------------------------------------------------------------------------- tick --dry-run --list


@dataclass(frozen=True)
class OrderChange:
    """What a tick would do to one order: its transitions (kind, at) and how many reminders."""

    id: int
    events: tuple[tuple[str, int], ...]
    reminders: int

    def to_json(self, tz: tzinfo) -> dict:
        return {"id": self.id, "events": [{"kind": k, "at": iso(at, tz)} for k, at in self.events], "reminders": self.reminders}


def changes_of(decided) -> Iterator[OrderChange]:
    """The orders one decided chunk of a tick changes (`tickwork.Decided`), in the order decided."""
    from coopctl.rows import EVENT_COLUMNS, NOTIFICATION_COLUMNS

    e_order, e_kind, e_at = (EVENT_COLUMNS.index(n) for n in ("order_id", "kind", "at"))
    n_order, n_kind = NOTIFICATION_COLUMNS.index("order_id"), NOTIFICATION_COLUMNS.index("kind")
    events: dict[int, list[tuple[str, int]]] = {}
    for row in decided.events:
        events.setdefault(row[e_order], []).append((row[e_kind], row[e_at]))
    reminders: dict[int, int] = {}
    reminder = lifecycle.Kind.REMINDER.value
    for row in decided.notifications:
        if row[n_kind] == reminder:
            reminders[row[n_order]] = reminders.get(row[n_order], 0) + 1
    for state in decided.states:
        order_id = state[-2]  # rows.guarded_state: the state, then (id, seq read)
        yield OrderChange(order_id, tuple(events.get(order_id, ())), reminders.get(order_id, 0))


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Setting:
    key: str  # flat and dotted, as in the TOML: database.url, policy.accept_window; plus operator, config_file
    value: object  # a string, a number, or None; secrets are "set"/"unset", never their content
    origin: str  # "default", the configuration file's path, "env COOPCTL_…", or "option"


@dataclass(frozen=True)
class Origins:
    """Where the command line's own settings came from (the command line knows; click says)."""

    config_file: str | None  # the file read, or None when none was
    config_origin: str
    db: str
    db_origin: str
    operator: str
    operator_origin: str
    file_keys: frozenset[str] = field(default_factory=frozenset)  # dotted keys the file sets


def file_keys(path: str | None) -> frozenset[str]:
    """The dotted keys a configuration file sets (it was read and checked already)."""
    if path is None:
        return frozenset()
    from coopctl.config import tomllib

    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, ValueError):  # it was read a moment ago; if not now, nothing is attributed to it
        return frozenset()
    return frozenset(f"{section}.{key}" for section, table in data.items() if isinstance(table, dict) for key in table)


def settings_view(settings: "Settings", origins: Origins, environ: dict | None = None) -> list[Setting]:
    """Every setting in effect, with where it came from (SPEC section 4, "Settings")."""

    env = os.environ if environ is None else environ
    source = origins.config_file or "default"

    def from_file(key: str) -> str:
        return source if key in origins.file_keys else "default"

    out = [
        Setting("config_file", origins.config_file, origins.config_origin),
        Setting("database.url", origins.db, origins.db_origin),
        Setting("database.busy_timeout", format_duration(settings.busy_timeout), from_file("database.busy_timeout")),
        Setting("operator", origins.operator, origins.operator_origin),
        Setting("display.timezone", settings.timezone, from_file("display.timezone")),
    ]
    for section, values in (("policy", settings.policy.to_json()), ("reminders", settings.reminders.to_json())):
        for key, value in values.items():
            out.append(Setting(f"{section}.{key}", value, from_file(f"{section}.{key}")))
    out += [
        Setting("delivery.backoff", format_duration(settings.backoff), from_file("delivery.backoff")),
        Setting("delivery.max_backoff", format_duration(settings.max_backoff), from_file("delivery.max_backoff")),
        Setting("delivery.max_attempts", settings.max_attempts, from_file("delivery.max_attempts")),
    ]
    out.append(_secret("delivery.webhook_secret", "COOPCTL_WEBHOOK_SECRET", env, path=False,
                       configured=settings.webhook_secret, source=from_file("delivery.webhook_secret")))
    out.append(_secret("evidence.signing_key", "COOPCTL_SIGNING_KEY", env, path=True,
                       configured=settings.signing_key, source=from_file("evidence.signing_key")))
    return out


def _secret(key: str, variable: str, env, *, path: bool, configured: str | None = None, source: str = "default") -> Setting:
    """A secret is never shown: "set" or "unset" (a key file: its path, never its content). The
    environment wins over the configuration file."""
    value = env.get(variable) or ""
    if value:
        return Setting(key, value if path else "set", f"env {variable}")
    if configured:
        return Setting(key, configured if path else "set", source)
    return Setting(key, "unset", "default")


def settings_json(entries: Iterable[Setting]) -> dict:
    return {e.key: {"value": e.value, "from": e.origin} for e in entries}
