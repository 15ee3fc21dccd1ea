"""A report is part of the change (SPEC section 7, first rule), messages (section 2), and the two
PostgreSQL rules of section 7 ("No silent places to lose data").

Through the installed entry point with real file descriptors (CliRunner cannot fake them):
- stdout on /dev/full, or a pipe whose reader is gone (or goes away after a few bytes), makes
  `create`, an action, `tick`, `import` and `notifications --pending --mark-sent` exit 6 with one
  `error:` line, and the database is as it was (SQLite: byte for byte; PostgreSQL: every row);
- a read-only command whose reader goes away ends quietly with exit 0 (section 4);
- error lines stay within 500 characters, a full stderr does not change the exit code, and
  streams that cannot encode UTF-8 get readable text and valid JSON;
- creates racing with one new idempotency key all return the one order; a busy_timeout the
  database cannot take is refused as configuration.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import timezone
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import base_env, coopctl_executable, read_rows
from dbtools import stress

M, C = "商家A", "达人小王"
EXE = coopctl_executable()


def _now() -> int:
    from coopctl.policy import parse_instant

    return parse_instant("2026-12-01T12:00:00+08:00", timezone.utc)


def _iso(instant: int) -> str:
    from coopctl.policy import iso

    return iso(instant)


def created_at(order_id: int) -> int:
    """When order `order_id` of `book` was created: its accept window has passed at _now()."""
    from coopctl.policy import DAY, SECOND

    return _now() - 3 * DAY - (order_id % 3600) * SECOND


def book(db: str, orders: int, *, first: int = 1) -> None:
    """`orders` pending orders (ids from `first`), each with its two notifications, all due at
    _now(): built through the rules and the store's bulk path."""
    from coopctl import lifecycle
    from coopctl.lifecycle import Terms
    from coopctl.policy import DAY, Policy, ReminderOffsets
    from coopctl.store import Store, locate

    store = Store(locate(db))
    store.initialise(made_by="test")
    terms = Terms(M, C, ("P1",), "live", Decimal("12.50"), Decimal("0.00"), _now() + 30 * DAY)
    outcomes = [
        lifecycle.create(i, terms, Policy(), ReminderOffsets(), created_at(i), "builder")
        for i in range(first, first + orders)
    ]
    with store.write() as tx:
        tx.insert_new(outcomes)
        tx.follow_explicit_ids()
    store.dispose()


def state(db: str):
    """What a command may not change: a SQLite file's bytes (and its WAL), with every row; every
    row of every table on PostgreSQL."""
    from sqlalchemy import create_engine, text

    from coopctl.models import SQLModel
    from coopctl.store import locate

    if "://" not in db:
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        wal = Path(f"{db}-wal")
        return Path(db).read_bytes(), wal.read_bytes() if wal.exists() else b"", read_rows(Path(db))
    engine = create_engine(locate(db).url)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(map(tuple, conn.execute(text(f'SELECT * FROM "{name}"')).all()), key=repr)
                for name in sorted(SQLModel.metadata.tables)
            }
    finally:
        engine.dispose()


def count(db: str, sql: str) -> int:
    from sqlalchemy import create_engine, text

    from coopctl.store import locate

    engine = create_engine(locate(db).url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def env_for(db: str, **extra: str | None) -> dict[str, str]:
    """The tests' environment for `db`; stdout buffered as cron has it, unless PYTHONUNBUFFERED is given."""
    env = base_env(Path(db)) if "://" not in db else {**base_env(Path("x")), "COOPCTL_DB": db}
    env.pop("PYTHONUNBUFFERED", None)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(db: str, *args: str, stdout, cwd: Path, **extra: str | None) -> subprocess.CompletedProcess:
    """The installed coopctl with `stdout` as given (a file, a descriptor) and stderr captured."""
    return subprocess.run(
        [EXE, *args], stdout=stdout, stderr=subprocess.PIPE, env=env_for(db, **extra), cwd=cwd, timeout=120,
    )


def run_into(sink: str, db: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run with stdout on /dev/full ("full"), on a pipe whose reader closed before ("closed"), or
    with no stdout at all ("none": `>&-`)."""
    if sink == "none":
        return subprocess.run([EXE, *args], stderr=subprocess.PIPE, env=env_for(db), cwd=cwd, timeout=120,
                              preexec_fn=lambda: os.close(1))
    if sink == "full":
        with open("/dev/full", "wb") as full:
            return run(db, *args, stdout=full, cwd=cwd)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run(db, *args, stdout=write_end, cwd=cwd)
    finally:
        os.close(write_end)


def run_then_hang_up(db: str, *args: str, cwd: Path, after: bytes | int, **extra: str | None):
    """Run with stdout on a pipe whose reader takes `after` (a byte count, or up to the first
    occurrence of these bytes), then closes it, as `| head -c N` or `| head -1` do."""
    proc = subprocess.Popen(
        [EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for(db, **extra), cwd=cwd,
    )
    got = b""
    while True:
        piece = proc.stdout.read1(after - len(got)) if isinstance(after, int) else proc.stdout.read1(1)
        got += piece
        if not piece or (len(got) >= after if isinstance(after, int) else got.endswith(after)):
            break
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    return proc.returncode, got, err.decode()


def failed_report(result: subprocess.CompletedProcess, sink: str) -> str:
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 6, result.stderr.decode()
    assert len(lines) == 1 and "Traceback" not in result.stderr.decode(), lines
    reason = {"full": "No space left on device", "closed": "Broken pipe", "none": "stdout is closed"}[sink]
    return lines[0].replace(reason, "REASON")


SINKS = ("full", "closed")
NOTHING_CHANGED = "error: could not write the report (REASON); nothing was changed"


# --------------------------------------------------------------------------- reports before commits


def _export_of_new_orders(tmp_path: Path) -> Path:
    """An export of orders 101 and 102 (a database of their own), to import elsewhere."""
    source = str(tmp_path / "source.db")
    book(source, 2, first=101)
    out = tmp_path / "orders.json"
    with open(out, "wb") as handle:
        done = run(source, "export", "--all", "--at", _iso(_now()), stdout=handle, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return out


CHANGING = {
    "create": lambda tmp: ["create", "--merchant", M, "--creator", C, "--product", "P1", "--form", "live",
                           "--commission", "12.5", "--latest-start", "2026-12-20T20:00", "--at", "2026-12-01T10:00"],
    "accept": lambda tmp: ["accept", "3", "--creator", C, "--at", _iso(created_at(3) + 3600 * 10**6), "--json"],
    "tick": lambda tmp: ["tick", "--now", _iso(_now()), "--json"],
    "import": lambda tmp: ["import", str(_export_of_new_orders(tmp))],
    "mark-sent": lambda tmp: ["notifications", "--pending", "--mark-sent", "--json"],
}


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("command", CHANGING)
def test_a_report_that_cannot_be_written_rolls_the_change_back(backend, tmp_path, command, sink):
    """stdout on /dev/full or on a closed pipe: exit 6, one line, and the database as it was."""
    book(backend, 5)
    args = CHANGING[command](tmp_path)
    before = state(backend)
    result = run_into(sink, backend, *args, cwd=tmp_path)
    assert failed_report(result, sink) == NOTHING_CHANGED
    assert state(backend) == before
    # the same command with a reader that stays writes its change, so the check above was not empty
    again = run(backend, *args, stdout=subprocess.PIPE, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert state(backend) != before


def test_a_retried_create_after_a_failed_report_makes_exactly_one_order(backend, tmp_path):
    book(backend, 1)
    args = CHANGING["create"](tmp_path) + ["--json"]
    for sink in (*SINKS, "none"):
        assert failed_report(run_into(sink, backend, *args, cwd=tmp_path), sink) == NOTHING_CHANGED
    retried = run(backend, *args, stdout=subprocess.PIPE, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    # (PostgreSQL does not give back the ids a rolled-back transaction drew: the order may be 4)
    assert count(backend, "SELECT count(*) FROM orders") == 2
    assert count(backend, "SELECT max(id) FROM orders") == json.loads(retried.stdout)["id"]


def test_a_repeated_idempotency_key_still_exits_6_when_its_answer_cannot_be_written(backend, tmp_path):
    book(backend, 1)
    args = CHANGING["create"](tmp_path) + ["--idempotency-key", "k-1"]
    assert run(backend, *args, stdout=subprocess.PIPE, cwd=tmp_path).returncode == 0
    before = state(backend)
    result = run_into("full", backend, *args, cwd=tmp_path)
    assert failed_report(result, "full") == NOTHING_CHANGED
    assert state(backend) == before


@pytest.mark.parametrize("as_json, unbuffered", [(True, None), (False, None), (True, "1")],
                         ids=["json", "table", "json-PYTHONUNBUFFERED"])
def test_mark_sent_marks_nothing_when_the_reader_takes_a_few_bytes_and_leaves(backend, tmp_path, as_json, unbuffered):
    """800 notifications (far more than a pipe holds): `| head -c 100` gets 100 bytes, and every
    notification stays pending for the next dispatcher. Also with PYTHONUNBUFFERED=1 (common in
    containers), where Python's text layer alone would take a short write for a whole one."""
    book(backend, 400)
    pending = count(backend, "SELECT count(*) FROM notifications WHERE sent_at IS NULL")
    assert pending == 800
    args = ["notifications", "--pending", "--mark-sent"] + (["--json"] if as_json else [])
    code, got, err = run_then_hang_up(backend, *args, cwd=tmp_path, after=100, PYTHONUNBUFFERED=unbuffered)
    assert (code, len(got)) == (6, 100), err
    assert err == "error: could not write the report (Broken pipe); nothing was changed\n"
    assert count(backend, "SELECT count(*) FROM notifications WHERE sent_at IS NULL") == pending


def test_a_reader_that_stays_gets_every_notification_and_they_are_marked_sent(backend, tmp_path):
    book(backend, 400)
    done = run(backend, "notifications", "--pending", "--mark-sent", "--json", stdout=subprocess.PIPE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 800
    assert count(backend, "SELECT count(*) FROM notifications WHERE sent_at IS NULL") == 0


def test_init_whose_report_cannot_be_written_leaves_no_schema(tmp_path):
    db = str(tmp_path / "new.db")
    result = run_into("full", db, "init", cwd=tmp_path)
    assert failed_report(result, "full") == NOTHING_CHANGED
    # the file may exist (SQLite creates it to open it), but holds no coopctl tables: `init` then creates them
    assert not Path(db).exists() or read_rows(Path(db)) == {}
    again = run(db, "init", "--json", stdout=subprocess.PIPE, cwd=tmp_path)
    assert json.loads(again.stdout)["created"] is True


def test_a_tick_of_several_batches_says_what_its_earlier_batches_committed(tmp_path):
    """300 due orders in batches of 100: the report goes out before the last commit (the last
    batch with its tick_runs row). The two batches before it stand, as the message says, and
    the next tick writes the same history as one tick that never failed."""
    db, twin = str(tmp_path / "coopctl.db"), str(tmp_path / "twin.db")
    book(db, 300)
    state(db)
    shutil.copy(db, twin)
    now = _iso(_now())
    result = run_into("full", db, "tick", "--now", now, "--batch", "100", cwd=tmp_path)
    assert failed_report(result, "full") == (
        "error: could not write the report (REASON); the last batch was not committed, but 200 transitions "
        "of earlier batches were (the next tick applies the rest, with the same history)"
    )
    assert count(db, "SELECT count(*) FROM events WHERE kind = 'expired'") == 200
    assert count(db, "SELECT count(*) FROM tick_runs") == 0
    rest = run(db, "tick", "--now", now, "--batch", "100", "--json", stdout=subprocess.PIPE, cwd=tmp_path)
    assert json.loads(rest.stdout)["applied"] == 100
    whole = run(twin, "tick", "--now", now, "--json", stdout=subprocess.PIPE, cwd=tmp_path)
    assert json.loads(whole.stdout)["applied"] == 300
    exports = [
        run(path, "export", "--all", "--at", now, stdout=subprocess.PIPE, cwd=tmp_path).stdout for path in (db, twin)
    ]
    assert exports[0] == exports[1]


def test_a_tick_that_fits_one_batch_commits_its_run_record_with_its_report(tmp_path):
    """Cron's usual case: the batch and its tick_runs row are one transaction, after the report."""
    db = str(tmp_path / "coopctl.db")
    book(db, 30)
    done = run(db, "tick", "--now", _iso(_now()), "--json", stdout=subprocess.PIPE, cwd=tmp_path)
    assert json.loads(done.stdout)["applied"] == 30
    assert count(db, "SELECT count(*) FROM tick_runs") == 1
    before = state(db)
    nothing_due = run_into("closed", db, "tick", "--now", _iso(_now()), cwd=tmp_path)
    assert failed_report(nothing_due, "closed") == NOTHING_CHANGED
    assert state(db) == before  # not even a tick_runs row


# --------------------------------------------------------------------------- read-only commands


@pytest.fixture(scope="module")
def big_book(tmp_path_factory) -> str:
    """600 orders (1,200 notifications): every listing is far more than a pipe holds."""
    db = str(tmp_path_factory.mktemp("big") / "coopctl.db")
    book(db, 600)
    state(db)
    return db


@pytest.mark.parametrize("args", [
    ["list"], ["list", "--json"], ["notifications"], ["notifications", "--pending", "--json"],
    ["export", "--all"], ["tick", "--dry-run", "--now", "2026-12-01T12:00"],
], ids=lambda a: " ".join(a))
def test_a_reader_that_goes_away_ends_a_read_only_command_quietly(big_book, tmp_path, args):
    """`coopctl list | head -1`: exit 0, nothing on stderr, nothing written."""
    before = state(big_book)
    code, got, err = run_then_hang_up(big_book, *args, cwd=tmp_path, after=b"\n")
    # piped, `list` says on stderr how many of how many it showed (SPEC section 4): no error
    assert (code, without_count(err)) == (0, "")
    assert got.endswith(b"\n")
    assert state(big_book) == before


@pytest.mark.parametrize("args", [
    ["list"], ["list", "--json"], ["tick", "--dry-run", "--now", "2026-12-01T12:00"], ["list", "--help"], ["--help"],
], ids=lambda a: " ".join(a))
def test_a_read_only_command_on_a_full_disk_is_exit_6_in_one_line(big_book, tmp_path, args):
    result = run_into("full", big_book, *args, cwd=tmp_path)
    assert result.returncode == 6
    assert result.stderr.decode() == "error: could not write the output (No space left on device); the database was not changed\n"


# --------------------------------------------------------------------------- messages


def test_an_import_refused_for_thousands_of_existing_ids_names_a_few_and_counts_the_rest(invoke, tmp_path, db_path):
    source = str(tmp_path / "source.db")
    book(source, 40)
    book(str(db_path), 40)
    out = tmp_path / "all.json"
    assert invoke("export", "--all", "--out", str(out), env={"COOPCTL_DB": source}).exit_code == 0
    result = invoke("import", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: orders 1, 2, 3, 4, 5, … and 35 more already exist in ")


def test_an_export_of_many_missing_ids_names_a_few_and_counts_the_rest(invoke, db_path):
    book(str(db_path), 1)
    result = invoke("export", *map(str, range(2, 3002)))
    assert result.exit_code == 3
    assert result.stderr == "error: no order 2, 3, 4, 5, 6, … and 2,995 more; `coopctl list` shows the orders\n"


@pytest.mark.parametrize("message, expected_end", [
    ("x" * 10_000, "x…"),
    ("first part " + "y " * 3000 + "; do this next", "…; do this next"),
    ("; ".join(f"clause {i}" for i in range(200)), "…; clause 199"),
])
def test_every_error_line_is_at_most_500_characters(capsys, message, expected_end):
    from coopctl.cli import _fail

    exit_ = _fail(1, message)
    line = capsys.readouterr().err
    assert exit_.exit_code == 1
    assert line.startswith("error: ") and line.count("\n") == 1
    assert len(line.rstrip("\n")) <= 500
    assert line.rstrip("\n").endswith(expected_end)


@pytest.mark.parametrize("args, code", [
    (["show", "99"], 3),
    (["list", "--no-such-option"], 2),
    (["create", "--merchant", M], 2),
    (["--db", "/nonexistent/coopctl.db", "list"], 5),
])
def test_a_full_stderr_keeps_the_exit_code(tmp_path, args, code):
    db = str(tmp_path / "coopctl.db")
    book(db, 1)
    with open("/dev/full", "wb") as full:
        result = subprocess.run([EXE, *args], stdout=subprocess.PIPE, stderr=full, env=env_for(db), cwd=tmp_path, timeout=60)
    assert result.returncode == code


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_streams_that_cannot_encode_utf8_get_escaped_text_and_valid_json(tmp_path, encoding):
    """PYTHONIOENCODING=ascii (or Latin-1) with ids in Chinese and beyond the BMP: no internal
    error; tables show escapes, and every JSON document still parses to the same values."""
    db = str(tmp_path / "coopctl.db")
    creator = "达人😀é"
    coded = {"PYTHONIOENCODING": encoding}
    made = run(db, *CHANGING["create"](tmp_path)[:4], creator, *CHANGING["create"](tmp_path)[5:], "--json",
               stdout=subprocess.PIPE, cwd=tmp_path, **coded)
    assert made.returncode == 0, made.stderr
    assert made.stdout.isascii() and json.loads(made.stdout)["creator"] == creator
    for args in (["list", "--json"], ["show", "1", "--json"]):
        shown = run(db, *args, stdout=subprocess.PIPE, cwd=tmp_path, **coded)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.isascii()
        assert creator in json.dumps(json.loads(shown.stdout), ensure_ascii=False)
    exported = run(db, "export", "1", stdout=subprocess.PIPE, cwd=tmp_path, **coded)
    assert json.loads(exported.stdout.decode(encoding))["orders"][0]["creator"] == creator
    for args in (["list"], ["history", "1"]):
        table = run(db, *args, stdout=subprocess.PIPE, cwd=tmp_path, **coded)
        assert table.returncode == 0 and b"error" not in table.stderr  # stderr: a list's footer, piped
        assert "\\u5546\\u5bb6A" in table.stdout.decode(encoding)  # 商家A, readable as an escape
        lines = table.stdout.decode(encoding).splitlines()
        assert lines[0].split()[0] in ("id", "seq") and all(line == line.rstrip() for line in lines)
    refused = run(db, "accept", "1", "--creator", "达人", stdout=subprocess.PIPE, cwd=tmp_path, **coded)
    assert refused.returncode == 1 and refused.stderr.startswith(b"error: ") and b"internal error" not in refused.stderr


# --------------------------------------------------------------------------- PostgreSQL (and SQLite)


def _racer(db: str, args: list[str], rounds: int, barrier, results) -> None:
    """One racing process: per round, wait for the others, then run the real command line once."""
    from typer.testing import CliRunner

    from coopctl.cli import app

    os.environ.update(env_for(db))
    runner = CliRunner()
    for r in range(rounds):
        barrier.wait(timeout=120)
        result = runner.invoke(app, [a.replace("{round}", str(r)) for a in args])
        results.put({"round": r, "code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr})


def _race(db: str, commands: list[list[str]], rounds: int) -> list[list[dict]]:
    """Each command in a process of its own (forked from this one, so that all are ready at once);
    every round starts in all of them at the same instant. Returns each round's results."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(commands)), context.Queue()
    procs = [context.Process(target=_racer, args=(db, args, rounds, barrier, results)) for args in commands]
    for proc in procs:
        proc.start()
    try:
        got = [results.get(timeout=120) for _ in range(rounds * len(commands))]
        for proc in procs:
            proc.join(timeout=60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert all(proc.exitcode == 0 for proc in procs)
    return [[x for x in got if x["round"] == r] for r in range(rounds)]


def test_creates_racing_with_one_new_idempotency_key_all_return_the_one_order(backend, tmp_path):
    """8 processes, one new key per round, the same terms: every one exits 0 with the same id."""
    book(backend, 1)
    rounds = 5 * stress()
    args = CHANGING["create"](tmp_path) + ["--idempotency-key", "race-{round}", "--json"]
    for results in _race(backend, [args] * 8, rounds):
        assert [x["code"] for x in results] == [0] * 8, [x["stderr"] for x in results]
        assert len({json.loads(x["stdout"])["id"] for x in results}) == 1
    assert count(backend, "SELECT count(*) FROM orders") == 1 + rounds


def test_creates_racing_with_one_key_and_other_terms_are_refused_not_busy(backend, tmp_path):
    """Half the racers want other terms: they are refused (exit 1), the others get the one order."""
    book(backend, 1)
    same = CHANGING["create"](tmp_path) + ["--idempotency-key", "mixed-{round}", "--json"]
    other = [*same[:10], "13.5", *same[11:]]
    assert other[9] == "--commission"
    rounds = 3 * stress()
    for results in _race(backend, [same, other] * 4, rounds):
        codes = sorted(x["code"] for x in results)
        assert codes == [0] * 4 + [1] * 4, [x["stderr"] for x in results]
    assert count(backend, "SELECT count(*) FROM orders") == 1 + rounds


@pytest.mark.parametrize("timeout, code", [("25d", 2), ("2147484s", 2), ("24d", 0), ("2147483s", 0)])
def test_a_busy_timeout_the_database_cannot_take_is_refused_as_configuration(backend, tmp_path, timeout, code):
    """PostgreSQL's lock_timeout (and SQLite's busy timeout) is a 32-bit count of milliseconds."""
    book(backend, 1)
    config = tmp_path / "coopctl.toml"
    config.write_text(f'[database]\nbusy_timeout = "{timeout}"\n', encoding="utf-8")
    result = run(backend, "list", "--json", stdout=subprocess.PIPE, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    if code:
        message = result.stderr.decode()
        assert message.startswith("error: ") and "'database.busy_timeout'" in message and message.count("\n") == 1


def test_the_largest_busy_timeout_still_waits_for_a_lock_on_sqlite(tmp_path):
    """sqlite3 turns a timeout beyond 2^31-1 ms into no wait at all; the largest one allowed waits."""
    db = str(tmp_path / "coopctl.db")
    book(db, 1)
    (tmp_path / "coopctl.toml").write_text('[database]\nbusy_timeout = "24d"\n', encoding="utf-8")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    proc = subprocess.Popen([EXE, *CHANGING["create"](tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env_for(db), cwd=tmp_path)
    time.sleep(1.5)
    assert proc.poll() is None  # still waiting for the lock
    holder.execute("ROLLBACK")
    holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def without_count(stderr: str) -> str:
    """stderr without `list`'s line of how many orders it showed (piped, it goes there)."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not re.match(r"\d+ of (more than )?[\d,]+ orders?; ", line))
