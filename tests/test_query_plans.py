"""Reading costs what is asked for, not what is stored (SPEC section 3, "Scale"; the performance
issue: `tick` with nothing due, `list --due-before`, `list --limit 50` and `show` on 1,000,000
orders must cost about a start-up).

Each test runs the service as the command line does, records every statement it sends to SQLite
(with its parameters), and asks SQLite how it runs the ones that read `orders` or `events`
(`EXPLAIN QUERY PLAN`): through the index on the next deadline (`ix_orders_deadline`), on the next
wake-up (`ix_orders_wake_at`), or the primary key, never a SCAN of the whole table or a sort of
every matching row (`USE TEMP B-TREE`). Then the same statements run on a book ten times as large
with as many orders due: the work SQLite does (virtual machine steps) must not grow with it.

Both with and without `ANALYZE` statistics (the benchmark databases are analysed; a fresh one is not).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event

from coopctl import lifecycle
from coopctl.config import Settings
from coopctl.lifecycle import Terms
from coopctl.policy import DAY, HOUR, SECOND, Policy, ReminderOffsets, parse_instant
from coopctl.service import Service, get_order, list_orders, tick
from coopctl.store import Store, locate

NOW = parse_instant("2026-12-01T12:00:00+08:00", None)
SMALL, LARGE, DUE = 300, 3000, 30  # orders in each book, and how many of them are due at NOW


def build(path: Path, orders: int, *, analyse: bool) -> Store:
    """`orders` pending orders through the rules and the bulk path (as bench/tick.py builds them):
    the first DUE past their accept deadline at NOW, the rest with deadlines ahead."""
    store = Store(locate(str(path)))
    store.initialise(made_by="test")
    policy, reminders = Policy(), ReminderOffsets()
    terms = Terms("商家A", "达人小王", ("P1",), "live", Decimal("12.50"), Decimal("0"), NOW + 30 * DAY)
    outcomes = []
    for order_id in range(1, orders + 1):
        if order_id <= DUE:
            created = NOW - 3 * DAY - order_id * SECOND
        else:
            created = NOW - HOUR + order_id * SECOND
        outcomes.append(lifecycle.create(order_id, terms, policy, reminders, created, "test"))
    with store.write() as tx:
        tx.insert_new(outcomes)
    if analyse:
        with sqlite3.connect(path) as conn:
            conn.execute("ANALYZE")
    return store


class Recorder:
    """Every statement a store sends to SQLite, with its parameters (executemany left out)."""

    def __init__(self, store: Store):
        self.statements: list[tuple[str, tuple]] = []
        event.listen(store.engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not executemany:
            self.statements.append((statement, tuple(parameters or ())))

    def reads(self, table: str) -> list[tuple[str, tuple]]:
        """The SELECTs that read `table`."""
        return [
            (sql, params) for sql, params in self.statements
            if sql.lstrip().upper().startswith("SELECT") and f"FROM {table}" in " ".join(sql.split())
        ]


def plan(path: Path, sql: str, params: tuple) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        conn.close()


def steps(path: Path, sql: str, params: tuple) -> int:
    """How many virtual machine steps SQLite takes to run the statement to its end."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    count = 0

    def tick_handler() -> int:
        nonlocal count
        count += 1
        return 0

    try:
        conn.set_progress_handler(tick_handler, 1)
        conn.execute(sql, params).fetchall()
        return count
    finally:
        conn.close()


@pytest.fixture(scope="module", params=[False, True], ids=["fresh", "analysed"])
def shelf(request, tmp_path_factory) -> tuple[Path, Path]:
    """The small and the large book, built once (never changed: the tests work on copies)."""
    folder = tmp_path_factory.mktemp("books")
    small, large = folder / "small.db", folder / "large.db"
    build(large, LARGE, analyse=request.param).dispose()
    build(small, SMALL, analyse=request.param).dispose()
    return small, large


@pytest.fixture
def books(shelf, tmp_path: Path):
    """(service on a copy of the small book, the small book, the large book): the plans and steps
    are taken on the untouched books, as they were when the service ran its statements."""
    small, large = shelf
    work = tmp_path / "work.db"
    with sqlite3.connect(small) as source, sqlite3.connect(work) as target:
        source.backup(target)
    store = Store(locate(str(work)))
    yield Service(store, Settings(), "test"), small, large
    store.dispose()


def check(reads: list[tuple[str, tuple]], small: Path, large: Path, *, uses: str) -> None:
    assert reads, "no statement read the table"
    for sql, params in reads:
        steps_plan = plan(small, sql, params)
        text = " | ".join(steps_plan)
        assert any(uses in step for step in steps_plan), f"{text}\n{sql}"
        assert "TEMP B-TREE" not in text, f"sorts every matching row: {text}\n{sql}"
        # a SCAN is allowed only of the index asked for, in its order (it stops after LIMIT rows)
        assert not any(step.startswith("SCAN orders") and uses != "SCAN orders" and uses not in step for step in steps_plan), text
        assert plan(large, sql, params) == steps_plan, "the plan changes with the size of the book"
        few, many = steps(small, sql, params), steps(large, sql, params)
        assert many <= few * 1.5 + 50, f"{few} steps on {SMALL} orders, {many} on {LARGE}: it grows with the table\n{sql}"


def test_list_due_before_searches_the_index_on_the_next_deadline(books):
    svc, small, large = books
    recorder = Recorder(svc.store)
    orders = list_orders(svc, due_before=NOW, limit=50)
    assert len(orders) == 30 and [o.deadline for o in orders] == sorted(o.deadline for o in orders)
    check(recorder.reads("orders"), small, large, uses="SEARCH orders USING INDEX ix_orders_deadline (deadline>? AND deadline<?)")  # >NULL: IS NOT NULL


def test_list_with_a_limit_walks_the_primary_key_and_stops(books):
    svc, small, large = books
    recorder = Recorder(svc.store)
    orders = list_orders(svc, limit=50)
    assert [o.id for o in orders] == list(range(1, 51))
    # SQLite says SCAN for a walk of the table in rowid order: it stops after LIMIT rows (no sort)
    check(recorder.reads("orders"), small, large, uses="SCAN orders")


def test_tick_reads_only_what_is_due_through_the_index_on_wake_at(books):
    svc, small, large = books
    recorder = Recorder(svc.store)
    report = tick(svc, NOW, batch=7)  # several batches: the first query, then those after a key
    assert report.applied == 30
    reads = recorder.reads("orders")
    # the ids of each batch come from the covering index alone; then the rows of those ids only
    by_key = [(sql, params) for sql, params in reads if " WHERE id IN (" not in sql]
    by_id = [(sql, params) for sql, params in reads if " WHERE id IN (" in sql]
    # each batch also asks the index whether anything due is left (LIMIT 1): its last batch then
    # commits only after the report is written (SPEC section 7)
    batches = [(sql, params) for sql, params in by_key if params[1] != 1]
    assert len(batches) > 2 and len(by_id) >= len(batches) - 1
    check(by_key, small, large, uses="INDEX ix_orders_wake_at")
    check(by_id, small, large, uses="SEARCH orders USING INTEGER PRIMARY KEY")


def test_tick_with_nothing_due_reads_nothing_but_the_index(books):
    svc, small, large = books
    recorder = Recorder(svc.store)
    assert tick(svc, NOW - 3 * DAY - HOUR).applied == 0
    check(recorder.reads("orders"), small, large, uses="INDEX ix_orders_wake_at")


def test_count_of_due_orders_for_the_progress_bar_uses_the_index(books):
    svc, small, large = books
    recorder = Recorder(svc.store)
    tick(svc, NOW, total_hint=lambda total: None)
    counts = [(sql, params) for sql, params in recorder.reads("orders") if "count(" in sql.lower()]
    assert counts
    check(counts, small, large, uses="COVERING INDEX ix_orders_wake_at")


def test_show_reads_one_order_and_its_events_by_key(books):
    svc, small, large = books
    recorder = Recorder(svc.store)
    order, events = get_order(svc, 12)
    assert order.id == 12 and [e.seq for e in events] == [1]
    check(recorder.reads("orders"), small, large, uses="SEARCH orders USING INTEGER PRIMARY KEY (rowid=?)")
    check(recorder.reads("events"), small, large, uses="SEARCH events USING")


# --------------------------------------------------------------------------- list: filters, sorts, pages
# A varied book (7 merchants, 11 creators, 18 shared products and one per order, six statuses), small and ten times
# as large: each page of `list` is one index search per status that stops after the page (the
# steps do not grow with the book); its count reads the same index, at most COUNT_CAP + 1 entries.

from coopctl.service import COUNT_CAP, list_page  # noqa: E402
from coopctl.store import ListQuery  # noqa: E402
from dbtools import BASE, SCENARIOS, scenario_outcome  # noqa: E402


def build_varied(path: Path, orders: int, *, analyse: bool) -> None:
    store = Store(locate(str(path)))
    store.initialise(made_by="test")
    policy, reminders = Policy(), ReminderOffsets()
    outcomes = []
    for i in range(1, orders + 1):
        if i % 2:  # pending orders whose products other orders share
            terms = Terms(f"商家-{i % 7}", f"达人-{i % 11}", (f"P-{i % 13}", f"Q-{i % 5}"), "live", Decimal("12.50"),
                          Decimal("0"), BASE + 30 * DAY)
            outcomes.append(lifecycle.create(i, terms, policy, reminders, BASE + i * 60_000_000, "test"))
        else:
            outcomes.append(scenario_outcome(i, BASE + i * 60_000_000, BASE + 5 * DAY, SCENARIOS[i % len(SCENARIOS)]))
    with store.write() as tx:
        tx.insert_new(outcomes)
    store.dispose()
    with sqlite3.connect(path) as conn:
        # a tenth liable, as orders closed overdue or cancelled unilaterally are (the plans only
        # read the column; the statistics then know that it is selective)
        conn.execute("UPDATE orders SET liable_party = 'creator' WHERE id % 10 = 0")
        if analyse:
            conn.execute("ANALYZE")


@pytest.fixture(scope="module", params=[False, True], ids=["fresh", "analysed"])
def varied(request, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("varied")
    small, large = folder / "small.db", folder / "large.db"
    build_varied(small, SMALL, analyse=request.param)
    build_varied(large, LARGE, analyse=request.param)
    return small, large


def list_reads(small: Path, query: ListQuery, after: str | None = None):
    """(page, the page's statements, the count's statements) of `list_page` on the small book."""
    store = Store(locate(str(small)))
    try:
        recorder = Recorder(store)
        page = list_page(Service(store, Settings(), "test"), query, after=after, limit=20)
    finally:
        store.dispose()
    reads = [r for r in recorder.reads("orders") + recorder.reads("order_products") if "coopctl_meta" not in r[0]]
    reads = list(dict.fromkeys(reads))
    return page, [r for r in reads if "count(" not in r[0]], [r for r in reads if "count(" in r[0]]


def check_count(counts, small: Path) -> None:
    assert counts, "the total was not counted"
    for sql, params in counts:
        text = " | ".join(plan(small, sql, params))
        assert "INDEX" in text or "PRIMARY KEY" in text, text
        assert "SCAN orders |" not in text + " |" and not text.startswith("SCAN orders"), f"reads the table: {text}"
        assert f"LIMIT" in sql and COUNT_CAP + 1 in params, sql


FILTERS = {
    "status": (ListQuery(statuses=("live",)), "ix_orders_status (status=?)"),
    "several statuses": (ListQuery(statuses=("live", "pending", "delivered")), "ix_orders_status (status=?)"),
    "terms in_force": (ListQuery(statuses=("effective", "cancel_requested", "live", "delivered", "review_failed")), "ix_orders_status (status=?)"),
    "merchant": (ListQuery(merchant="商家-3"), "ix_orders_merchant (merchant=?)"),
    "creator": (ListQuery(creator="达人-4"), "ix_orders_creator (creator=?)"),
    "product": (ListQuery(product="P-7"), "order_products"),
    "liable": (ListQuery(liable="creator"), "ix_orders_liable (liable_party=?)"),
    "created after": (ListQuery(created_after=BASE + 100 * 60_000_000, sort="created"), "ix_orders_created (created_at>?)"),
    "created before": (ListQuery(created_before=BASE + 100 * 60_000_000, sort="created"), "ix_orders_created (created_at<?)"),
    "due before": (ListQuery(due_before=BASE + 10 * DAY, sort="deadline"), "ix_orders_deadline"),
    "overdue": (ListQuery(overdue_at=BASE + 10 * DAY, sort="deadline"), "ix_orders_deadline"),
    "status by deadline": (ListQuery(statuses=("live", "pending"), sort="deadline"), "ix_orders_status_deadline (status=? AND deadline"),
    "status by created": (ListQuery(statuses=("live",), sort="created", descending=True), "ix_orders_status_created (status=?)"),
}


@pytest.mark.parametrize("name", FILTERS)
def test_every_filter_of_list_searches_an_index_and_stops_after_the_page(varied, name):
    small, large = varied
    query, uses = FILTERS[name]
    page, reads, counts = list_reads(small, query)
    check(reads, small, large, uses=uses)
    check_count(counts, small)


SORTS = {
    "id": (ListQuery(), "SCAN orders"),
    "-id": (ListQuery(descending=True), "SCAN orders"),
    "created": (ListQuery(sort="created"), "INDEX ix_orders_created"),
    "-created": (ListQuery(sort="created", descending=True), "INDEX ix_orders_created"),
    "deadline": (ListQuery(sort="deadline"), "INDEX ix_orders_deadline"),
    "-deadline": (ListQuery(sort="deadline", descending=True), "INDEX ix_orders_deadline"),
}


@pytest.mark.parametrize("name", SORTS)
def test_every_sort_of_list_walks_its_index_first_page_and_deep_page_alike(varied, name):
    small, large = varied
    query, uses = SORTS[name]
    first, reads, _ = list_reads(small, query)
    check(reads, small, large, uses=uses)
    # a page deep into the book (after the 200th order of this order): as cheap as the first
    store = Store(locate(str(small)))
    try:
        with store.read() as tx:
            deep_key = tx.list_page(query, after=None, limit=200)[-1][1]
    finally:
        store.dispose()
    from coopctl.service import encode_cursor

    deep, reads, _ = list_reads(small, query, after=encode_cursor(query, deep_key))
    assert deep.orders and not {o.id for o in deep.orders} & {o.id for o in first.orders}
    check(reads, small, large, uses="INTEGER PRIMARY KEY" if query.sort == "id" else uses)


@pytest.mark.parametrize("query", [ListQuery(merchant="商家-*"), ListQuery(product="P-1*"), ListQuery(merchant="商家-3", sort="deadline")],
                         ids=["merchant prefix", "product prefix", "merchant by deadline"])
def test_prefixes_and_a_party_sorted_otherwise_search_an_index_never_the_table(varied, query):
    """A prefix (or a party's orders in another order than by id) is an index range: it reads
    the matches, not the table (it may sort them; see README, "Lists")."""
    small, _ = varied
    page, reads, counts = list_reads(small, query)
    assert page.orders
    for sql, params in reads + counts:
        text = " | ".join(plan(small, sql, params))
        assert "SEARCH" in text and not text.startswith("SCAN orders") and "| SCAN orders" not in text, text
