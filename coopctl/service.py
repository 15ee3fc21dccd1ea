"""Use cases: load -> decide (lifecycle) -> save, one transaction each.

Usable from Python without the command line: every function takes a `Service` (store,
settings, operator) and plain values, returns records, and raises the typed errors of
`coopctl.errors`. The clock is never read here: instants are arguments.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from coopctl import lifecycle
from coopctl.config import Settings
from coopctl.errors import KeyTaken, NotFound, Refused, ReportFailed
from coopctl.lifecycle import Action, Event, Order, Outcome, Party, make_terms
from coopctl.policy import SECOND
from coopctl.store import FULL_ORDER_COLUMNS, ListQuery, Store, Tx

if TYPE_CHECKING:
    from coopctl.doctor import CheckedOrder
    from coopctl.evidence import EvidenceFile, HeldFile
    from coopctl.tickwork import Decided

# Orders per committed batch. SQLite has one writer at a time anyway: larger batches mean fewer
# commits (each an fsync and a checkpoint), with the write lock held for about a second and a
# half per batch. PostgreSQL's concurrent ticks share the due orders batch by batch.
SQLITE_TICK_BATCH = 20_000
TICK_BATCH = 5000


@dataclass(frozen=True)
class Service:
    store: Store
    settings: Settings
    operator: str


# ----------------------------------------------------------------------------- the report is part of the change

Report = Callable[[Any], None]
"""What a changing command says it did: called with the command's result inside its transaction,
it writes the whole report (a table or JSON) to its stream and flushes it. The command line
supplies it; None (from Python) reports nothing."""


def reporting(report: Report | None) -> Report | None:
    """`report`, with a failure to write it (any OSError: a full disk, a closed pipe) raised as
    ReportFailed (exit 6)."""
    if report is None:
        return None

    def deliver(result) -> None:
        try:
            report(result)
        except OSError as exc:
            raise ReportFailed(exc.strerror or str(exc) or type(exc).__name__) from None

    return deliver


class Change:
    """The write transaction of one command (`tx`) and the result it reports (`done`)."""

    def __init__(self, tx: Tx):
        self.tx = tx
        self.reported = False
        self._result: Any = None

    def done(self, result) -> None:
        """This transaction carries the command's report, of `result`: written when the body ends."""
        self.reported, self._result = True, result


@contextmanager
def change(store: Store, report: Report | None) -> Iterator[Change]:
    """The one way a command changes the database: render into the stream, flush, then commit.

    The body works on `change.tx` and hands its result to `change.done(result)`; when it ends
    normally, `report(result)` writes and flushes the report, still inside the transaction, and
    only then does the transaction commit. A report that cannot be written rolls the transaction
    back and raises ReportFailed: a retried command never makes a second order, and nothing is
    marked sent that its reader did not get. (A commit that fails after the report was written is
    said by the exit code and the error line: the report then describes what did not happen.)
    A transaction whose body never calls `done` commits without a report (tick's earlier batches)."""
    deliver = reporting(report)
    with store.write() as tx:
        current = Change(tx)
        yield current
        if deliver is not None and current.reported:
            deliver(current._result)


@dataclass
class TickReport:
    now: int
    applied: int = 0
    by_kind: Counter = field(default_factory=Counter)
    reminders: int = 0
    orders: int = 0

    def add(self, decided: "Decided") -> None:
        self.by_kind.update(decided.by_kind)
        self.applied += len(decided.events)
        self.reminders += decided.reminders
        self.orders += len(decided.states)


def create_order(
    svc: Service,
    *,
    merchant: str,
    creator: str,
    products: list[str],
    form: str,
    commission: str,
    ad_budget: str,
    latest_start_at: int,
    note: str | None,
    at: int,
    idempotency_key: str | None = None,
    report: Report | None = None,
) -> tuple[Order, bool]:
    """Create an order; returns (order, created). A repeated idempotency key returns the first order.
    `report((order, created))` is written before the transaction commits (see `change`)."""
    terms = make_terms(
        merchant=merchant, creator=creator, products=products, form=form, commission=commission,
        ad_budget=ad_budget, latest_start_at=latest_start_at, note=note,
    )
    if idempotency_key is not None:
        idempotency_key = lifecycle.check_id(idempotency_key, "idempotency key")
    if idempotency_key is None or not svc.store.exists():
        # No earlier order can be returned: decide before touching storage (the rules are pure), so
        # that an invalid order leaves no new database behind. The id is known only inside the
        # transaction, where the rules run again.
        lifecycle.create(0, terms, svc.settings.policy, svc.settings.reminders, at, svc.operator, idempotency_key, svc.settings.tz)
    svc.store.initialise()
    try:
        return _create(svc, terms, at, idempotency_key, report)
    except KeyTaken:
        # Another create with the same new key committed between our look-up and our insert
        # (PostgreSQL: read committed; SQLite's writers queue at BEGIN): a new transaction finds it.
        return _create(svc, terms, at, idempotency_key, report)


def _create(svc: Service, terms, at: int, idempotency_key: str | None, report: Report | None) -> tuple[Order, bool]:
    with change(svc.store, report) as current:
        tx = current.tx
        if idempotency_key is not None:
            existing = tx.find_by_key(idempotency_key)
            if existing is not None:
                if existing.terms != terms:
                    raise Refused(
                        f"idempotency key {idempotency_key!r} was already used for order {existing.id} "
                        "with other terms; use a new key for a new order"
                    )
                current.done((existing, False))  # nothing to commit, but the answer is still the report
                return existing, False
        order_id = tx.new_order_id()
        outcome = lifecycle.create(
            order_id, terms, svc.settings.policy, svc.settings.reminders, at, svc.operator, idempotency_key,
            svc.settings.tz,
        )
        tx.fill_new(outcome)
        current.done((outcome.order, True))
    return outcome.order, True


def perform(
    svc: Service,
    order_id: int,
    action: Action,
    party: Party | None,
    party_id: str | None,
    at: int,
    *,
    reason: str | None = None,
    evidence: str | None = None,
    evidence_files: Sequence[str] = (),
    report: Report | None = None,
    **values,
) -> Outcome:
    """A party (or, `party` None, the platform) acts on an order: due deadlines fire first, then
    the action, all in one transaction; `report(outcome)` is written before it commits. `values`
    are what some actions carry (`proposal`, `ruling`, `amount`: see `lifecycle.act`).
    `evidence_files` are paths (`--evidence-file`): read and hashed before the transaction
    (`read_evidence`), recorded on the action's event and their contents kept in the same
    transaction."""
    held = read_evidence(evidence_files)
    svc.store.require()
    with change(svc.store, report) as current:
        tx = current.tx
        order = tx.load(order_id, lock=True)
        if order is None:
            raise NotFound(f"no order {order_id}; `coopctl list` shows the orders")
        outcome = lifecycle.act(
            order, action, party, party_id, at, svc.operator, reason=reason, evidence=evidence,
            evidence_files=files_of(held), tz=svc.settings.tz, **values,
        )
        tx.save([order], [outcome])
        keep_evidence(tx, held)
        current.done(outcome)
    return outcome


# ----------------------------------------------------------------------------- evidence files


def read_evidence(paths: Sequence[str] | None) -> list["HeldFile"]:
    """The files a command attaches (`--evidence-file`), read whole, hashed and checked, BEFORE
    its transaction: a missing, unreadable, non-regular or too large file is InvalidInput (exit 2)
    and nothing has changed. Any action that takes evidence files goes through these three steps:
    `held = read_evidence(paths)` first; `evidence_files=files_of(held)` to the rules
    (`lifecycle.act` records them in the event's data); `keep_evidence(tx, held)` in the same
    transaction as the event."""
    from coopctl.evidence import read_files

    return read_files(paths)


def files_of(held: list["HeldFile"]) -> tuple:
    """The records (`evidence.EvidenceFile`) of files read by `read_evidence`, as the event names them."""
    return tuple(h.file for h in held)


def keep_evidence(tx: Tx, held: list["HeldFile"]) -> None:
    """Store the contents of these files in this transaction, once per distinct content."""
    if held:
        tx.store_evidence(held)


def evidence_of_order(svc: Service, order_id: int) -> tuple[list[tuple[Event, "EvidenceFile", bool]], "CheckedOrder"]:
    """`coopctl evidence ORDER`: (event, file, held here) for every file the order's events name,
    in seq order, and the order as `read_order` checked it (its hash chain and row: what is listed
    is what was recorded, or `.refusal()` says so); NotFound (exit 3) for an unknown order. No
    content is read."""
    from coopctl.evidence import named_by

    checked = read_order(svc, order_id)
    named = named_by(checked.events)
    state: dict = {}
    if named:
        with svc.store.read() as tx:
            state = tx.evidence_state(sorted({f.sha256 for _, f in named}))
    return [(e, f, state.get(f.sha256, (0, False))[1]) for e, f in named], checked


def evidence_content(svc: Service, order_id: int, wanted: str) -> tuple["EvidenceFile", bytes]:
    """The content of one file the order names (`evidence ORDER --get SHA256`), by its SHA-256 or
    a prefix of it (at least 8 hex digits) that only one of the order's files has. InvalidInput
    (exit 2) for something that is not such a hash or a prefix that two files share; NotFound
    (exit 3) for an unknown order or a hash the order does not name; Refused (exit 1) for a file
    recorded but not held here, or whose stored content no longer hashes to its SHA-256, and for an
    order whose history does not hold (`read_order`): nothing is written then."""
    import re

    from coopctl.errors import InvalidInput
    from coopctl.evidence import content_problem, named_by

    if not isinstance(wanted, str) or not re.fullmatch(r"[0-9a-fA-F]{8,64}", wanted):
        raise InvalidInput("--get: give the file's SHA-256 (64 hex digits, or at least its first 8) as `coopctl evidence ORDER` lists it")
    wanted = wanted.lower()
    checked = read_order(svc, order_id)  # only a file a history that holds names is written out
    refusal = checked.refusal()
    if refusal is not None:
        raise refusal
    files = {f.sha256: f for _, f in reversed(named_by(checked.events))}  # the first name of each
    with svc.store.read() as tx:
        matches = sorted(sha for sha in files if sha.startswith(wanted))
        if not matches:
            raise NotFound(f"order {order_id} names no evidence file {wanted}; `coopctl evidence {order_id}` lists its files")
        if len(matches) > 1:
            raise InvalidInput(f"--get {wanted} matches {len(matches)} files of order {order_id}; give more of the SHA-256")
        sha = matches[0]
        stored = tx.evidence_content(sha)
    file = files[sha]
    if stored is None or stored[1] is None:
        raise Refused(
            f"evidence file {sha[:16]}… ({file.name!r}) of order {order_id} is recorded but not held in this database "
            "(it came from an export without --with-evidence); get it from the database it was attached in"
        )
    problem = content_problem(sha, file.size, stored[1])
    if problem is not None:
        raise Refused(f"evidence file {sha[:16]}… of order {order_id}: {problem}; nothing was written (run `coopctl doctor`)")
    return file, stored[1]


def tick(
    svc: Service,
    now: int,
    *,
    dry_run: bool = False,
    batch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    total_hint: Callable[[int], None] | None = None,
    clock: Callable[[], int] | None = None,
    helper: bool | None = None,
    report: Report | None = None,
    on_decided: Callable[["Decided"], None] | None = None,
) -> TickReport:
    """Fire every deadline and reminder due at `now`, in batches each committed on its own.
    `on_decided(decided)` sees each decided chunk as it comes (`tick --dry-run --list`).

    Only orders whose next wake-up (deadline or reminder) is at or before `now` are read, through
    the index on `wake_at`. A killed tick loses at most its current batch; a rerun finishes the job.
    Large batches are decided in chunks, partly by a helper process (`helper`: None decides by the
    machine, True and False force it; see `tickwork.Decider`); what is written is the same.
    A run that finishes records itself in `tick_runs` (started and finished by `clock`, which the
    command line passes in; without one, both are `now`), so that `doctor` can tell when cron ran.

    The report is part of the last transaction: the last batch (the one after which nothing due is
    left) commits with the `tick_runs` row, after `report(tick_report)` was written and flushed.
    When everything due fits one batch (cron's usual minute) the whole tick is that one
    transaction, so a report that cannot be written leaves the database as it was. A larger tick
    has committed its earlier batches by then (each batch commits on its own, so that other
    commands get the lock in between); a failed report says how many transitions those were.
    They stand: they are what any later tick fires anyway, since history does not depend on when
    tick runs. A dry run writes nothing and does not call `report` (the caller prints).
    """
    started_at = now if clock is None else clock()
    svc.store.require()
    if batch is None:
        batch = SQLITE_TICK_BATCH if svc.store.location.is_sqlite else TICK_BATCH
    summary = TickReport(now)
    if total_hint is not None:
        with svc.store.read() as tx:
            total_hint(tx.count_due(now))
    # Several ticks may run at once (PostgreSQL): each batch is claimed with row locks that skip
    # the rows another tick holds (FOR UPDATE SKIP LOCKED), so no order is handled twice. A written
    # order is no longer due, so each batch starts again from the top, and a tick stops only when
    # no due order is left unclaimed: rows another tick held and released unhandled (it failed) are
    # picked up too. A dry run writes nothing, and an order the rules leave as it is stays due:
    # those move on past the key they were selected by instead, so the loop always ends.
    from coopctl.tickwork import Decider

    # A dry run holds no write lock, so another command may commit while it reads: its batches are
    # decided here, from the rows of its own snapshot.
    decider = Decider(
        now, svc.operator, svc.settings.tz, helper=False if dry_run else helper, keys=dry_run,
        busy_timeout=svc.store.busy_timeout / SECOND,
    )
    after: tuple[int, int] | None = None
    committed = 0  # transitions that earlier batches committed
    finished = False
    try:
        while not finished:
            with (_read_only(svc.store) if dry_run else change(svc.store, report)) as current:
                tx = current.tx
                if decider.db_path is None and svc.store.location.path is not None and tx.in_wal_mode():
                    # the helper may read the rows of its chunks itself, alongside this transaction
                    decider.db_path = str(svc.store.location.path)
                items = _due(tx, now, batch, after, skip_locked=not dry_run)
                unsaved: list[Decided] = []
                all_changed, last_key = True, None
                for decided in decider.decide(items, None if not tx.is_sqlite else tx.rows_by_id) if items else ():
                    if not dry_run:
                        unsaved.append(decided)
                        # SQLite writes each chunk as soon as it is decided (while the helper decides
                        # the next); elsewhere the batch is written at once, through COPY.
                        if tx.is_sqlite:
                            _save(tx, unsaved)
                    summary.add(decided)
                    if on_decided is not None:
                        on_decided(decided)
                    all_changed = all_changed and decided.all_changed
                    if decided.last_key is not None and (last_key is None or decided.last_key > last_key):
                        last_key = decided.last_key  # found where some order was left as it was (or a dry run)
                _save(tx, unsaved)
                if items and (dry_run or not all_changed):
                    # the last key selected (before this tick changed the orders); rows may come in id order
                    after = last_key
                if dry_run:
                    finished = len(items) < batch
                else:
                    # the last batch is the one after which nothing due is left: it carries the report
                    finished = not items or not _due(tx, now, 1, after, skip_locked=True)
                    if finished:
                        tx.record_tick_run(
                            started_at=started_at, finished_at=now if clock is None else clock(), now=now,
                            applied=summary.applied, reminders=summary.reminders, operator=svc.operator,
                        )
                        current.done(summary)
            if items and progress is not None:
                progress(len(items), summary.applied)
            committed = summary.applied
    except ReportFailed as failed:
        if committed:
            raise ReportFailed(
                failed.reason,
                f"could not write the report ({failed.reason}); the last batch was not committed, but "
                f"{committed:,} transition{'s' if committed != 1 else ''} of earlier batches were "
                "(the next tick applies the rest, with the same history)",
            ) from None
        raise
    finally:
        decider.close()
    return summary


def _due(tx: Tx, now: int, limit: int, after: tuple[int, int] | None, *, skip_locked: bool) -> list:
    """SQLite: the due ids (the rows are read by id); elsewhere the due rows, claimed."""
    if tx.is_sqlite:
        return tx.due_ids(now, limit=limit, after=after)
    return tx.due_rows(now, limit=limit, after=after, skip_locked=skip_locked)


@contextmanager
def _read_only(store: Store) -> Iterator[Change]:
    """A read transaction shaped like `change` (a dry run's batches), never reported."""
    with store.read() as tx:
        yield Change(tx)


def _save(tx, unsaved: list["Decided"]) -> None:
    """Write the decided chunks not written yet, as one set of rows, and forget them."""
    if unsaved:
        tx.save_rows(
            [row for piece in unsaved for row in piece.states],
            [row for piece in unsaved for row in piece.events],
            [row for piece in unsaved for row in piece.notifications],
        )
        unsaved.clear()


def get_order(svc: Service, order_id: int) -> tuple[Order, list[Event]]:
    svc.store.require()
    with svc.store.read() as tx:
        order = tx.load(order_id)
        if order is None:
            raise NotFound(f"no order {order_id}; `coopctl list` shows the orders")
        return order, tx.events(order_id)


def read_order(svc: Service, order_id: int) -> "CheckedOrder":
    """An order as `show` and `history` print it, checked as it is read (SPEC section 7): its hash
    chain, and its stored row against the rebuild of its events through the rules. What does not
    hold is in `.problems` (the caller prints what it can, then says so); `.shown` is the stored
    order, or what its events make of it when the row cannot be read."""
    from coopctl.doctor import check_order

    svc.store.require()
    with svc.store.read() as tx:
        row = tx.order_row(order_id)
        if row is None or row[FULL_ORDER_COLUMNS.index("status")] == "":
            raise NotFound(f"no order {order_id}; `coopctl list` shows the orders")
        events = tx.events(order_id)
    return check_order(row, events)


def list_orders(
    svc: Service,
    *,
    statuses: list[str] | None = None,
    merchant: str | None = None,
    creator: str | None = None,
    due_before: int | None = None,
    limit: int | None = None,
) -> list[Order]:
    svc.store.require()
    with svc.store.read() as tx:
        return tx.list_orders(statuses=statuses, merchant=merchant, creator=creator, due_before=due_before, limit=limit)


# ----------------------------------------------------------------------------- list: pages and cursors

COUNT_CAP = 10_000  # `list` counts the matches up to here, through the page's indexes; above: "more than"


@dataclass(frozen=True)
class Page:
    """A page of `list`: the orders (or their stored rows: `list_page(rows=True)`), how many match
    (`total`, exact unless `more_than`), and the cursor of the next page (None when this one is
    the last)."""

    orders: list
    total: int
    more_than: bool
    next_cursor: str | None


def encode_cursor(query: ListQuery, key: tuple) -> str:
    """The opaque cursor of the page after `key` (sort value, id): base64url of the sort, the
    value and the id, so that a cursor is used only with the sort it was made for."""
    import base64
    import json

    sort = ("-" if query.descending else "") + query.sort
    raw = json.dumps([sort, key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: ListQuery, text: str) -> tuple:
    """The key a cursor of `encode_cursor` holds, checked against the query's sort (InvalidInput:
    exit 2, when it is not such a cursor)."""
    import base64
    import binascii
    import json

    from coopctl.errors import InvalidInput
    from coopctl.trust import MAX_ORDER_ID

    sort = ("-" if query.descending else "") + query.sort
    bad = InvalidInput(
        "--after: not a cursor of `coopctl list` (give the one its last page printed, with the same --sort)"
    )
    if not isinstance(text, str) or not 1 <= len(text) <= 200 or not text.isascii():
        raise bad
    try:
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise bad from None
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], str)):
        raise bad
    made_for, value, order_id = decoded
    if made_for != sort:
        raise InvalidInput(f"--after: this cursor is for --sort {made_for[:20]!r}, not {sort!r}; give the same --sort")
    if type(order_id) is not int or not 1 <= order_id <= MAX_ORDER_ID:
        raise bad
    if query.sort == "id":
        if value != order_id:
            raise bad
    elif value is None:
        if query.sort != "deadline":
            raise bad
    elif type(value) is not int or not -(2**62) <= value <= 2**62:
        raise bad
    return (value, order_id)


def list_page(svc: Service, query: ListQuery, *, after: str | None, limit: int, count: bool = True, rows: bool = False) -> Page:
    """One page of `list`: at most `limit` orders after the cursor `after`, and the count of every
    match (up to COUNT_CAP) in the same read transaction. With `rows`, the page holds the stored
    rows (LISTED_COLUMNS) instead of Orders, for `render.order_records`."""
    key = None if after is None else decode_cursor(query, after)
    svc.store.require()
    with svc.store.read() as tx:
        found = tx.list_page(query, after=key, limit=limit + 1, rows=rows)
        total = tx.count_listed(query, cap=COUNT_CAP) if count else len(found)
    shown_part, more = found[:limit], len(found) > limit
    cursor = encode_cursor(query, shown_part[-1][1]) if more and shown_part else None
    return Page([o for o, _ in shown_part], min(total, COUNT_CAP) if total > COUNT_CAP else total, total > COUNT_CAP, cursor)


def walk_orders(svc: Service, query: ListQuery, *, after: str | None, rows: bool = False) -> Iterator[Order]:
    """Every order `query` selects after the cursor `after`, streamed a page at a time in one read
    transaction (memory flat in the number of orders). With `rows`, their stored rows
    (LISTED_COLUMNS, not decoded) in chunks of STREAM_CHUNK: what the machine formats print
    through `render.order_records`, without building an Order per row."""
    if rows:
        for found in walk_order_chunks(svc, query, after=after):
            yield from found
        return
    key = None if after is None else decode_cursor(query, after)
    svc.store.require()
    with svc.store.read() as tx:
        yield from tx.walk(query, after=key)


def walk_order_chunks(svc: Service, query: ListQuery, *, after: str | None) -> Iterator[list[tuple]]:
    """`walk_orders(rows=True)` a chunk (a list of up to STREAM_CHUNK stored rows) at a time."""
    key = None if after is None else decode_cursor(query, after)
    svc.store.require()
    with svc.store.read() as tx:
        yield from _pages(tx, query, key)


def _pages(tx: Tx, query: ListQuery, key: tuple | None) -> Iterator[list[tuple]]:
    """The stored rows `query` selects after `key`, one list per STREAM_CHUNK."""
    while True:
        found = tx.list_page(query, after=key, limit=STREAM_CHUNK, rows=True)
        if found:
            yield [row for row, _ in found]
        if len(found) < STREAM_CHUNK:
            return
        key = found[-1][1]


STREAM_CHUNK = 2000  # rows read per query when a listing streams


def iter_order_rows(svc: Service, *, limit: int | None = None):
    """Every order's stored row (LISTED_COLUMNS) by id, read in chunks inside one read
    transaction: memory flat in the number of orders (SPEC section 4, machine formats)."""
    svc.store.require()
    return _walk(svc, lambda tx, after, n: tx.listing_rows(after, n), limit)


def iter_notification_rows(
    svc: Service, *, order_id: int | None = None, states: tuple[str, ...] | None = None,
    channels: tuple[str, ...] | None = None, limit: int | None = None,
):
    """Outbox rows oldest first (LISTED_NOTIFICATION_COLUMNS), read in chunks by id inside one
    read transaction; nothing written."""
    svc.store.require()
    if order_id is not None:
        with svc.store.read() as tx:
            if tx.load(order_id) is None:
                raise NotFound(f"no order {order_id}; `coopctl list` shows the orders")
    return _walk(svc, lambda tx, after, n: tx.notification_listing_rows(
        after, n, order_id=order_id, states=states, channels=channels), limit)


def _walk(svc: Service, chunk_after, limit: int | None):
    left = limit
    with svc.store.read() as tx:
        after = 0
        while left is None or left > 0:
            rows = chunk_after(tx, after, STREAM_CHUNK if left is None else min(left, STREAM_CHUNK))
            if not rows:
                return
            yield from rows
            after = rows[-1][0]
            if left is not None:
                left -= len(rows)


def notifications(
    svc: Service, *, order_id: int | None = None, pending: bool = False, mark_sent_at: int | None = None,
    report: Report | None = None, wall: int | None = None,
):
    """Outbox rows, oldest first; with `mark_sent_at`, the listed pending ones are marked sent
    atomically, and only once `report(rows)` handed them out (written and flushed): a reader that
    got nothing, or a part, leaves every one of them pending. Those a dispatcher holds under a
    lease running at `wall` are left to it. Without `mark_sent_at` nothing is written and `report`
    is not called (the caller prints the rows)."""
    svc.store.require()
    if mark_sent_at is None:
        with svc.store.read() as tx:
            if order_id is not None and tx.load(order_id) is None:
                raise NotFound(f"no order {order_id}; `coopctl list` shows the orders")
            return tx.notification_rows(None if order_id is None else [order_id], pending=pending)
    with change(svc.store, report) as current:
        tx = current.tx
        if order_id is not None and tx.load(order_id) is None:
            raise NotFound(f"no order {order_id}; `coopctl list` shows the orders")
        rows = tx.notification_rows(None if order_id is None else [order_id], pending=True, claim=True, wall=wall)
        tx.mark_sent([r.id for r in rows], mark_sent_at)
        current.done(rows)
    return rows


def retry_notifications(svc: Service, ids: list[int] | None, report: Report | None = None) -> int:
    """`notifications retry`: the dead or failed notifications `ids` (None: every dead one) are
    pending again, due at once, attempts back to 0. An unknown id is NotFound (exit 3), one that
    is neither dead nor failed Refused (exit 1); then nothing changes. `report(count)` is written
    inside the transaction."""
    svc.store.require()
    with change(svc.store, report) as current:
        tx = current.tx
        if ids is not None:
            ids = list(dict.fromkeys(ids))
            states = tx.notification_states(ids)
            unknown = [i for i in ids if i not in states]
            if unknown:
                raise NotFound(f"no notification {unknown[0]}; `coopctl notifications` lists them with their ids")
            other = [i for i in ids if states[i] not in ("dead", "failed")]
            if other:
                raise Refused(
                    f"notification {other[0]} is {states[other[0]]}, neither dead nor failed: only those are retried"
                )
        count = tx.retry_notifications(ids)
        current.done(count)
    return count


def initialise(svc: Service, report: Report | None = None) -> bool:
    """`coopctl init`: create the schema if the database is new; True when it was created now.
    `report(created)` is written before the schema commits."""
    return svc.store.initialise(report=reporting(report))
