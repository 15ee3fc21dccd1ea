"""The batched tick (keys from the wake_at index, rows read and written in id order, many rows
per statement, one commit per batch, the rules run in a helper process or not) must write exactly
what the rules give when each order is fired on its own: the same events byte for byte (hashes
included) and the same notifications, whatever the batch size, whether a helper process decides
the chunks (or stops half-way), and whether tick runs once or several times on the way.

The book has a few thousand orders in every timed status (pending, effective, cancel_requested,
live, delivered, review_failed), so every kind of deadline fires, with the cascades live ->
delivered (auto) -> completed and reminders on the way. COOPCTL_STRESS multiplies its size.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from coopctl import lifecycle, tickwork
from coopctl.config import Settings
from coopctl.lifecycle import canonical_json
from coopctl.policy import DAY, HOUR
from coopctl.service import Service, tick
from coopctl.store import Store, locate

from dbtools import BASE, build, event_lists, stress

OPERATOR = "cron"
STOPS = (BASE + 2 * DAY + 5 * HOUR, BASE + 4 * DAY, BASE + 40 * DAY)  # reminders due, some deadlines, then all


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batches") / "book.db"
    build(path, 3000 * stress())
    return path


def stored_notifications(path: Path) -> dict[int, list[tuple]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found: dict[int, list[tuple]] = {}
        for order_id, *rest in conn.execute("SELECT order_id, recipient, channel, kind, at, text FROM notifications"):
            found.setdefault(order_id, []).append(tuple(rest))
        return {k: sorted(v) for k, v in found.items()}
    finally:
        conn.close()


def one_by_one(path: Path, stops: tuple[int, ...]) -> tuple[dict, dict]:
    """What the rules give when every order is fired on its own, at each stop in turn."""
    events = event_lists(path)
    notes = stored_notifications(path)
    tz = Settings().tz
    store = Store(locate(str(path)))
    try:
        with store.read() as tx:
            orders = tx.load_many(tx.all_order_ids())
    finally:
        store.dispose()
    for order in orders:
        for now in stops:
            outcome = lifecycle.tick_order(order, now, OPERATOR, tz)
            events[order.id] += [
                (e.seq, e.kind, e.at, e.actor, canonical_json(e.data), e.prev_hash, e.hash) for e in outcome.events
            ]
            notes[order.id] = sorted(notes[order.id] + [(n.recipient, n.channel, n.kind, n.at, n.text) for n in outcome.notifications])
            order = outcome.order
    return events, notes


def batched(book: Path, target: Path, stops: tuple[int, ...], batch: int, helper: bool | None = None) -> tuple[dict, dict]:
    shutil.copyfile(book, target)
    store = Store(locate(str(target)))
    try:
        svc = Service(store, Settings(), OPERATOR)
        for now in stops:
            tick(svc, now, batch=batch, helper=helper)
    finally:
        store.dispose()
    return event_lists(target), stored_notifications(target)


@pytest.mark.parametrize(
    "batch, stops",
    [(5000, STOPS), (97, STOPS), (5000, STOPS[-1:]), (1, STOPS[-1:])],
    ids=["5000, three ticks", "97, three ticks", "5000, one tick", "1, one tick"],
)
def test_a_batched_tick_writes_what_firing_each_order_alone_gives(book, tmp_path, batch, stops):
    expected_events, expected_notes = one_by_one(book, stops)
    events, notes = batched(book, tmp_path / "ticked.db", stops, batch)
    assert sum(len(v) for v in events.values()) > sum(len(v) for v in event_lists(book).values())
    kinds = {e[1] for history in events.values() for e in history}
    assert {"expired", "closed_overdue", "cancelled_unilaterally", "delivered", "auto_accepted", "escalated"} <= kinds
    assert events == expected_events
    assert notes == expected_notes
    if len(stops) > 1:
        assert any(n[2] == "reminder" for history in notes.values() for n in history)


@pytest.fixture(scope="module")
def expected(book) -> tuple[dict, dict]:
    return one_by_one(book, STOPS)


@pytest.fixture
def helper_answers(monkeypatch) -> list[int]:
    """How many chunks the helper process decided (one entry per answer: its number of states)."""
    answers: list[int] = []
    receive = tickwork.Helper.receive

    def counting(self):
        decided = receive(self)
        if decided is not None:
            answers.append(len(decided.states))
        return decided

    monkeypatch.setattr(tickwork.Helper, "receive", counting)
    return answers


@pytest.mark.parametrize("batch, chunk", [(5000, 97), (600, 7)], ids=["batch 5000, chunks of 97", "batch 600, chunks of 7"])
def test_a_helper_process_deciding_the_chunks_writes_the_same(book, tmp_path, monkeypatch, expected, helper_answers, batch, chunk):
    monkeypatch.setattr(tickwork, "CHUNK", chunk)
    assert batched(book, tmp_path / "ticked.db", STOPS, batch, helper=True) == expected
    assert len(helper_answers) > 10 and sum(helper_answers) > 0  # the helper did decide chunks


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_the_helper_reads_its_chunks_itself_only_alongside_a_wal_database(book, tmp_path, monkeypatch, expected, helper_answers, journal):
    """In WAL mode the helper reads the rows of its chunks itself (a read-only connection, while
    tick holds the write lock); otherwise, where it could not read alongside, it is given the rows."""
    source = tmp_path / "source.db"
    shutil.copyfile(book, source)
    conn = sqlite3.connect(source)
    assert conn.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
    conn.close()
    kinds: list[str] = []
    submit = tickwork.Helper.submit
    monkeypatch.setattr(tickwork.Helper, "submit", lambda self, kind, chunk: (kinds.append(kind), submit(self, kind, chunk)))
    monkeypatch.setattr(tickwork, "CHUNK", 97)
    assert batched(source, tmp_path / "ticked.db", STOPS, 5000, helper=True) == expected
    assert kinds and set(kinds) == {"ids" if journal == "wal" else "rows"}
    assert len(helper_answers) == len(kinds)


def test_without_a_helper_process_the_same_is_written(book, tmp_path, monkeypatch, expected, helper_answers):
    monkeypatch.setattr(tickwork, "CHUNK", 97)
    assert batched(book, tmp_path / "ticked.db", STOPS, 5000, helper=False) == expected
    assert helper_answers == []


def test_a_helper_that_dies_half_way_is_replaced_by_deciding_here(book, tmp_path, monkeypatch, expected, helper_answers):
    monkeypatch.setattr(tickwork, "CHUNK", 50)
    receive = tickwork.Helper.receive
    helpers = []

    def dying(self):
        if len(helper_answers) == 3:
            self.proc.kill()
            self.proc.wait()
            helpers.append(self.proc)
        return receive(self)

    monkeypatch.setattr(tickwork.Helper, "receive", dying)
    assert batched(book, tmp_path / "ticked.db", STOPS, 5000, helper=True) == expected
    assert helpers and all(proc.returncode is not None for proc in helpers)
    assert len(helper_answers) >= 3


def test_a_helper_that_cannot_start_changes_nothing(book, tmp_path, monkeypatch, expected):
    monkeypatch.setattr(tickwork.Helper, "start", classmethod(lambda cls: None))
    monkeypatch.setattr(tickwork, "CHUNK", 97)
    assert batched(book, tmp_path / "ticked.db", STOPS, 5000, helper=True) == expected


def test_an_error_in_the_rules_surfaces_the_same_with_a_helper(book, tmp_path, monkeypatch):
    """A chunk the helper cannot decide is decided here again, so the error is the one tick gives
    without a helper; the batch it was in is rolled back and the helper is gone."""
    monkeypatch.setattr(tickwork, "CHUNK", 50)
    errors, counts = [], []
    for helper in (True, False):
        target = tmp_path / f"broken-{helper}.db"
        shutil.copyfile(book, target)
        conn = sqlite3.connect(target)
        with conn:  # one due order far into the batch whose stored policy cannot be read
            conn.execute("UPDATE orders SET policy = '{broken' WHERE id = (SELECT id FROM orders ORDER BY id LIMIT 1 OFFSET 400)")
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.close()
        store = Store(locate(str(target)))
        try:
            with pytest.raises(ValueError) as raised:
                tick(Service(store, Settings(), OPERATOR), STOPS[-1], batch=5000, helper=helper)
        finally:
            store.dispose()
        errors.append((type(raised.value), str(raised.value)))
        conn = sqlite3.connect(target)
        counts.append(conn.execute("SELECT count(*) FROM events").fetchone()[0] - before)
        conn.close()
    assert errors[0] == errors[1]
    assert counts == [0, 0]


def _helpers_running(mark: str | None = None) -> list[int]:
    """Processes running tick's helper (its command line names coopctl.tickwork's serve); with
    `mark`, only those whose environment holds COOPCTL_TEST_MARK=mark (a helper inherits it from
    the tick a test started: another test's helper, run meanwhile by another worker, is not one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if b"coopctl.tickwork import serve" not in cmdline:
                    continue
                if mark is not None and f"COOPCTL_TEST_MARK={mark}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
            except OSError:
                continue
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_the_command_with_and_without_a_helper_gives_the_same_and_leaves_no_process(book, tmp_path, db_path, run_coopctl):
    outputs, dumps = [], []
    for setting in ("on", "off"):
        shutil.copyfile(book, db_path)
        done = run_coopctl("tick", "--now", "2026-12-11T10:00:00+08:00", "--json",
                           env={"COOPCTL_TICK_HELPER": setting, "COOPCTL_TEST_MARK": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        outputs.append(done.stdout)
        dumps.append((event_lists(db_path), stored_notifications(db_path)))
        assert _helpers_running(str(tmp_path)) == []
    assert outputs[0] == outputs[1]
    assert dumps[0] == dumps[1]
    assert '"applied": ' in outputs[0] and '"applied": 0' not in outputs[0]


def test_a_bad_helper_setting_is_refused_in_one_line(book, db_path, run_coopctl):
    shutil.copyfile(book, db_path)
    before = event_lists(db_path)
    done = run_coopctl("tick", "--now", "2026-12-11T10:00:00+08:00", env={"COOPCTL_TICK_HELPER": "sometimes"})
    assert done.returncode == 2
    assert done.stderr == "error: COOPCTL_TICK_HELPER must be auto, on or off, got 'sometimes'\n"
    assert event_lists(db_path) == before


def _start_tick_with_helper(db_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """`coopctl tick` with the helper forced on, in its own process group; returns once its helper runs."""
    from conftest import base_env, coopctl_executable

    mark = str(db_path)  # only this tick's helper: another worker may be running the same test meanwhile
    env = {**base_env(db_path), "COOPCTL_TICK_HELPER": "on", "COOPCTL_TEST_MARK": mark}
    proc = subprocess.Popen(
        [coopctl_executable(), "tick", "--now", "2026-12-11T10:00:00+08:00", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not (helpers := _helpers_running(mark)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return proc, helpers


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [p for p in pids if Path(f"/proc/{p}").exists() and b"Z" not in _state(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1][:3]
    except OSError:
        return b" Z "


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_ctrl_c_during_a_tick_with_a_helper_rolls_back_in_one_line_and_leaves_no_process(book, db_path):
    shutil.copyfile(book, db_path)
    before = event_lists(db_path)
    proc, helpers = _start_tick_with_helper(db_path)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    except ProcessLookupError:  # it had finished already
        pass
    out, err = proc.communicate(timeout=30)
    assert _wait_gone(helpers) == []
    if proc.returncode == 0:  # it finished first: then it did all of it
        assert err == b"" and b'"applied": ' in out
        return
    assert proc.returncode == 130, err
    message = err.decode()
    if message == "error: interrupted after the latest transaction committed; what it changed stands\n":
        assert event_lists(db_path) != before  # the Ctrl-C came during or after the commit: the batch stands
        return
    assert message in (
        "error: interrupted; the current transaction was rolled back\n",
        "error: interrupted; nothing was changed\n",  # it came while the helper worked, before the batch's transaction began
    )
    assert event_lists(db_path) == before  # the one batch (the whole book) was rolled back


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_a_helper_outlives_a_killed_tick_by_no_more_than_its_current_chunk(book, db_path):
    shutil.copyfile(book, db_path)
    proc, helpers = _start_tick_with_helper(db_path)
    assert helpers, "the helper did not start"
    proc.kill()
    proc.communicate(timeout=30)
    assert _wait_gone(helpers) == []
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
