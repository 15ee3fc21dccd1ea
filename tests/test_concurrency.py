"""Concurrency (SPEC section 3): `tick` processes and action processes at the same time on one
database apply every transition exactly once and lose none; a database locked longer than
`busy_timeout` is exit 4 with nothing changed, a shorter lock is waited out silently.

Sized by COOPCTL_STRESS (default 1: 4 tick processes and 4 action processes, 300 orders, about
45 commands per action process). COOPCTL_STRESS=10 runs 3,000 orders and about 450 commands per
action process (minutes).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timezone
from pathlib import Path

import pytest

from coopctl.config import Settings
from coopctl.lifecycle import Action, Party
from coopctl.policy import DAY, HOUR, MINUTE, iso
from coopctl.service import Service, create_order, perform, tick
from coopctl.store import Store, locate
from conftest import OPERATOR, base_env, coopctl_executable
from dbtools import BASE, event_lists, file_digest, integrity, load_orders, scenario_outcome, stress, verify_all

TICK_PROCESSES = 4
ACTION_PROCESSES = 4
# 200 orders and 30 commands per process by default, to keep the suite short; COOPCTL_STRESS=2 or more: 300 and 45 per step
ORDERS = 200 if stress() == 1 else 300 * stress()
COMMANDS_PER_PROCESS = 30 if stress() == 1 else 45 * stress()
IDEMPOTENCY_KEYS = 4
TICK_TIMES = [BASE + t for t in (6 * HOUR, DAY, 36 * HOUR, 2 * DAY, 60 * HOUR, 3 * DAY, 3 * DAY + 6 * HOUR, 4 * DAY,
                                 5 * DAY, 6 * DAY, 10 * DAY, 20 * DAY)]
FINAL = BASE + 40 * DAY

# What each command writes, and the plans: (command, party, offset from creation, extra options).
KIND = {
    "accept": "accepted", "reject": "rejected", "withdraw": "withdrawn", "cancel-request": "cancel_requested",
    "cancel-confirm": "cancel_confirmed", "cancel-decline": "cancel_declined", "go-live": "went_live",
    "deliver": "delivered", "review --pass": "review_passed", "review --fail": "review_failed",
}
C, M = "creator", "merchant"
PLANS = [
    [("accept", C, HOUR, []), ("go-live", C, DAY, []), ("review --pass", M, 60 * HOUR, [])],  # auto-delivered in between
    [("accept", C, 2 * HOUR, []), ("deliver", C, DAY, ["--evidence", "https://v.example/1"]),
     ("review --fail", M, DAY + HOUR, ["--reason", "product not shown"]), ("deliver", C, 2 * DAY, []),
     ("review --pass", M, 2 * DAY + HOUR, [])],
    [("reject", C, HOUR, ["--reason", "schedule full"])],
    [("withdraw", M, 30 * MINUTE, [])],
    [("accept", C, HOUR, []), ("cancel-request", M, 2 * HOUR, ["--reason", "recall"]), ("cancel-confirm", C, 3 * HOUR, [])],
    [("accept", C, HOUR, []), ("cancel-request", C, 2 * HOUR, []), ("cancel-decline", M, DAY, []), ("go-live", C, 4 * DAY, [])],
    [("accept", C, 3 * DAY + HOUR, [])],  # too late: the accept window has passed
    [("accept", C, HOUR, []), ("cancel-request", M, 2 * HOUR, []), ("cancel-confirm", C, 3 * DAY, [])],  # too late
]


def created_at(order_id: int) -> int:
    return BASE + (order_id * 37 % 1440) * MINUTE


def build_book(path: Path) -> None:
    """ORDERS pending orders created over one day (deadlines at many instants), through the rules."""
    store = Store(locate(str(path)))
    store.initialise(made_by="test")
    with store.write() as tx:
        tx.insert_new([
            scenario_outcome(i, created_at(i), created_at(i) + 5 * DAY, "pending", operator=OPERATOR)
            for i in range(1, ORDERS + 1)
        ])
    store.dispose()


def party_of(order_id: int, party: str) -> str:
    return f"商家-{order_id % 7}" if party == M else f"达人-{order_id % 11}"


def idempotent_create(key: int) -> list[str]:
    return ["create", "--merchant", "商家-idem", "--creator", f"达人-idem-{key}", "--product", f"P-idem-{key}",
            "--form", "video", "--commission", "7.5", "--latest-start", iso(BASE + 10 * DAY),
            "--idempotency-key", f"idem-{key}", "--at", iso(BASE + 2 * HOUR), "--json"]


def action_args(order_id: int, step) -> list[str]:
    command, party, offset, extra = step
    words = command.split()
    return [*words, str(order_id), f"--{party}", party_of(order_id, party), *extra, "--at", iso(created_at(order_id) + offset)]


def plans(seed: int) -> list[list[list[str]]]:
    """Per action process: its commands in the order of their instants (as they would come in), so
    that the ticks, paced to the actions' progress, meet them near the deadlines they race with."""
    rng = random.Random(seed)
    result = []
    for worker in range(ACTION_PROCESSES):
        queues = []
        budget = COMMANDS_PER_PROCESS - IDEMPOTENCY_KEYS
        for order_id in range(worker + 1, ORDERS + 1, ACTION_PROCESSES):
            if budget <= 0:
                break
            steps = PLANS[order_id % len(PLANS)]
            queues.append([action_args(order_id, s) for s in steps])
            budget -= len(steps)
        commands = [idempotent_create(k) for k in range(IDEMPOTENCY_KEYS)]
        rng.shuffle(commands)
        actions = [c for queue in queues for c in queue]
        rng.shuffle(actions)
        actions.sort(key=lambda args: parse_action(args)[4])  # roughly as time goes by; ties at random
        result.append(commands + actions)
    return result


def run_ticks(times: list[int], env: dict, cwd: Path, out: list, progress) -> None:
    for now in times:
        while progress() < TICK_TIMES.index(now) / len(TICK_TIMES):  # the k-th tick after k/n of the actions
            time.sleep(0.05)
        for attempt in range(50):
            proc = subprocess.run([coopctl_executable(), "tick", "--now", iso(now), "--json"], capture_output=True,
                                  text=True, env=env, cwd=cwd, timeout=300)
            out.append((now, proc.returncode, proc.stdout, proc.stderr))
            if proc.returncode != 4:
                break


def parse_action(args: list[str]) -> tuple[str, int, str, str, int, dict]:
    """(kind, order, party, who, at, options) of an action command line."""
    words = list(args)
    command = words.pop(0)
    if command == "review":
        command += " " + words.pop(0)
    order_id = int(words.pop(0))
    options = dict(zip(words[0::2], words[1::2]))
    party = "merchant" if "--merchant" in options else "creator"
    return KIND[command], order_id, party, options[f"--{party}"], parse_iso(options["--at"]), options


def parse_iso(text: str) -> int:
    from coopctl.policy import parse_instant

    return parse_instant(text, timezone.utc)


ACTION_OF = {
    "accepted": Action.ACCEPT, "rejected": Action.REJECT, "withdrawn": Action.WITHDRAW,
    "cancel_requested": Action.CANCEL_REQUEST, "cancel_confirmed": Action.CANCEL_CONFIRM,
    "cancel_declined": Action.CANCEL_DECLINE, "went_live": Action.GO_LIVE, "delivered": Action.DELIVER,
    "review_passed": Action.REVIEW_PASS, "review_failed": Action.REVIEW_FAIL,
}


@pytest.mark.stress
def test_ticks_and_actions_at_once_apply_every_transition_exactly_once(tmp_path, db_path, run_coopctl, capsys):
    build_book(db_path)
    pristine = tmp_path / "pristine.db"
    import shutil

    shutil.copyfile(db_path, pristine)
    config = tmp_path / "busy.toml"
    config.write_text("[database]\nbusy_timeout = \"1s\"\n")  # short: actions meet exit 4 now and then, and retry
    env = base_env(db_path)
    action_env = {**env, "COOPCTL_CONFIG": str(config)}

    all_plans = plans(seed=20261101)
    workers = []
    for index, commands in enumerate(all_plans):
        plan = tmp_path / f"plan-{index}.json"
        plan.write_text(json.dumps(commands, ensure_ascii=False), encoding="utf-8")
        results = tmp_path / f"results-{index}.jsonl"
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "concurrency_worker.py"), str(plan), str(results)],
                                env=action_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        workers.append((proc, results))
    total = sum(map(len, all_plans))

    def progress() -> float:
        if all(proc.poll() is not None for proc, _ in workers):
            return 1.0
        lines = sum(results.read_bytes().count(b"\n") for _, results in workers if results.exists())
        return lines / total

    tick_out: list = []
    tick_threads = [
        threading.Thread(target=run_ticks, args=(TICK_TIMES[w::TICK_PROCESSES], env, tmp_path, tick_out, progress))
        for w in range(TICK_PROCESSES)
    ]
    for t in tick_threads:
        t.start()
    for t in tick_threads:
        t.join()
    records = []
    for proc, results in workers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        records += [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]

    # Every command ended as the rules say: done, or refused in one line; busy was retried.
    codes = Counter(r["code"] for r in records)
    assert set(codes) <= {0, 1}, [r for r in records if r["code"] not in (0, 1)][:3]
    assert all(r["exception"] is None for r in records)
    for r in records:
        if r["code"] == 1:
            assert r["stderr"].count("\n") == 1 and r["stderr"].startswith("error: "), r
    assert len(records) == sum(map(len, all_plans))
    tick_codes = Counter(code for _, code, _, _ in tick_out)
    assert set(tick_codes) <= {0, 4}, [t for t in tick_out if t[1] not in (0, 4)][:3]
    assert tick_codes[0] == len(TICK_TIMES)

    # The same idempotency key gave every process the same single order.
    created = {}
    for r in records:
        if r["args"][0] == "create":
            created.setdefault(r["args"][r["args"].index("--idempotency-key") + 1], set()).add(json.loads(r["stdout"])["id"])
    assert all(len(ids) == 1 for ids in created.values()) and len(created) == IDEMPOTENCY_KEYS
    idem_ids = {key: ids.pop() for key, ids in created.items()}
    assert sorted(idem_ids.values()) == list(range(ORDERS + 1, ORDERS + IDEMPOTENCY_KEYS + 1))

    final = run_coopctl("tick", "--now", iso(FINAL), "--json")
    assert final.returncode == 0, final.stderr

    # The file is sound, every history replays, and nothing is left due.
    assert integrity(db_path) == "ok"
    verify_all(db_path)
    histories = event_lists(db_path)
    assert len(histories) == ORDERS + IDEMPOTENCY_KEYS
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM orders WHERE wake_at <= ?", (FINAL,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM tick_runs").fetchone() == (len(TICK_TIMES) + 1,)
    finally:
        conn.close()

    # Each action that succeeded is in its order's history exactly once; a refused one is not.
    done = []
    for r in records:
        if r["args"][0] == "create":
            continue
        kind, order_id, party, who, at, options = parse_action(r["args"])
        found = sum(1 for e in histories[order_id] if (e[1], e[2], e[3]) == (kind, at, f"{party}:{who}"))
        assert found == (1 if r["code"] == 0 else 0), (r, histories[order_id])
        if r["code"] == 0:
            done.append((order_id, at, kind, party, who, options))

    # The same successful commands run one at a time give exactly the same histories, hashes included.
    sequential = tmp_path / "sequential.db"
    shutil.copyfile(pristine, sequential)
    store = Store(locate(str(sequential)))
    svc = Service(store, Settings(), OPERATOR)
    for key, order_id in sorted(idem_ids.items(), key=lambda kv: kv[1]):
        k = int(key.split("-")[1])
        order, made = create_order(
            svc, merchant="商家-idem", creator=f"达人-idem-{k}", products=[f"P-idem-{k}"], form="video",
            commission="7.5", ad_budget="0", latest_start_at=BASE + 10 * DAY, note=None, at=BASE + 2 * HOUR,
            idempotency_key=key,
        )
        assert (order.id, made) == (order_id, True)
    for order_id, at, kind, party, who, options in sorted(done, key=lambda d: (d[0], d[1])):
        perform(svc, order_id, ACTION_OF[kind], Party(party), who, at, reason=options.get("--reason"),
                evidence=options.get("--evidence"))
    tick(svc, FINAL)
    store.dispose()
    assert event_lists(sequential) == histories
    assert {i: o.status for i, o in load_orders(sequential).items()} == {i: o.status for i, o in load_orders(db_path).items()}

    # And the export of the whole book replays.
    export = run_coopctl("export", "--all", "--out", str(tmp_path / "all.json"))
    assert export.returncode == 0, export.stderr
    replay = run_coopctl("replay", str(tmp_path / "all.json"), "--json")
    assert replay.returncode == 0, replay.stderr[-2000:]

    retries = sum(r["retries"] for r in records) + tick_codes[4]
    with capsys.disabled():  # the figures show in CI output, also under -q
        print(
            f"\nconcurrency: {TICK_PROCESSES} tick + {ACTION_PROCESSES} action processes, {ORDERS + IDEMPOTENCY_KEYS} orders, "
            f"{len(records)} actions ({codes[0]} done, {codes[1]} refused), {len(TICK_TIMES)} ticks, "
            f"{retries} busy retries, {sum(map(len, histories.values()))} events: all replay, identical to a sequential run"
        )


# --------------------------------------------------------------------------- busy


class Holder:
    """Another connection that takes a lock and holds it for `seconds`, or until `release()`."""

    def __init__(self, path: Path, seconds: float, begin: str = "BEGIN IMMEDIATE"):
        self.holding, self.released = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(path, seconds, begin), daemon=True)
        self.thread.start()
        assert self.holding.wait(10)

    def _hold(self, path: Path, seconds: float, begin: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(begin)
            if begin == "BEGIN":
                conn.execute("SELECT count(*) FROM orders").fetchone()  # a read lock
            self.holding.set()
            self.released.wait(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    def release(self) -> None:
        self.released.set()
        self.thread.join()


hold_lock = Holder  # noqa: N816


def busy_config(tmp_path: Path, timeout: str) -> str:
    path = tmp_path / f"busy-{timeout}.toml"
    path.write_text(f'[database]\nbusy_timeout = "{timeout}"\n')
    return str(path)


@pytest.fixture
def small_book(run_coopctl, db_path) -> Path:
    created = run_coopctl("create", "--merchant", "商家A", "--creator", "达人小王", "--product", "P1", "--form", "live",
                          "--commission", "12.5", "--latest-start", iso(BASE + 5 * DAY), "--at", iso(BASE))
    assert created.returncode == 0, created.stderr
    return db_path


WRITERS = [
    ["accept", "1", "--creator", "达人小王", "--at", iso(BASE + HOUR)],
    ["tick", "--now", iso(BASE + 10 * DAY)],
    ["create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "video", "--commission", "5",
     "--latest-start", iso(BASE + 5 * DAY), "--at", iso(BASE)],
    ["notifications", "--pending", "--mark-sent"],
]


@pytest.mark.parametrize("args", WRITERS, ids=lambda a: a[0])
def test_a_lock_held_longer_than_busy_timeout_is_exit_4_and_changes_nothing(invoke, tmp_path, small_book, args):
    before = file_digest(small_book)
    holder = hold_lock(small_book, 3.0)
    started = time.monotonic()
    result = invoke(*args, env={"COOPCTL_CONFIG": busy_config(tmp_path, "1s")})
    waited = time.monotonic() - started
    assert result.exit_code == 4, result.stderr
    assert result.stderr == f"error: the database {small_book} stayed locked by another coopctl; nothing was changed, try again\n"
    assert result.stdout == ""
    assert 1.0 <= waited < 3.0
    holder.release()
    assert file_digest(small_book) == before


@pytest.mark.parametrize("args", WRITERS, ids=lambda a: a[0])
def test_a_lock_shorter_than_busy_timeout_is_waited_out_silently(invoke, tmp_path, small_book, args):
    holder = hold_lock(small_book, 0.5)
    started = time.monotonic()
    result = invoke(*args, env={"COOPCTL_CONFIG": busy_config(tmp_path, "5s")})
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 0.4  # it did wait for the lock
    assert "locked" not in result.stderr
    holder.release()


def test_the_installed_command_says_busy_in_one_line(run_coopctl, tmp_path, small_book):
    before = file_digest(small_book)
    holder = hold_lock(small_book, 120)  # until the command has given up
    try:
        result = run_coopctl(*WRITERS[0], env={"COOPCTL_CONFIG": busy_config(tmp_path, "1s")})
    finally:
        holder.release()
    assert result.returncode == 4
    assert result.stderr == f"error: the database {small_book} stayed locked by another coopctl; nothing was changed, try again\n"
    assert file_digest(small_book) == before


def test_reads_and_schema_checks_wait_too(invoke, tmp_path, small_book):
    """In a rollback-journal database a writer's exclusive lock blocks readers: `list` waits for it."""
    conn = sqlite3.connect(small_book)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = file_digest(small_book)
    holder = hold_lock(small_book, 3.0, "BEGIN EXCLUSIVE")
    started = time.monotonic()
    result = invoke("list", env={"COOPCTL_CONFIG": busy_config(tmp_path, "1s")})
    assert result.exit_code == 4
    assert 1.0 <= time.monotonic() - started < 3.0
    assert result.stderr.startswith("error: the database") and result.stderr.count("\n") == 1
    holder.release()
    time.sleep(0.2)
    assert file_digest(small_book) == before
    holder = hold_lock(small_book, 0.5, "BEGIN EXCLUSIVE")
    started = time.monotonic()
    result = invoke("list", "--json", env={"COOPCTL_CONFIG": busy_config(tmp_path, "5s")})
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 0.4
    assert [o["id"] for o in json.loads(result.stdout)] == [1]


def test_setting_wal_mode_waits_for_readers_and_is_exit_4_when_they_stay(invoke, tmp_path, small_book):
    """`init` mends a coopctl database left in rollback-journal mode; that needs the file to itself."""
    conn = sqlite3.connect(small_book)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    holder = hold_lock(small_book, 3.0, "BEGIN")
    result = invoke("init", env={"COOPCTL_CONFIG": busy_config(tmp_path, "1s")})
    assert result.exit_code == 4
    assert result.stderr.startswith("error: the database") and result.stderr.count("\n") == 1
    holder.release()
    time.sleep(0.2)
    hold_lock(small_book, 0.5, "BEGIN")
    started = time.monotonic()
    result = invoke("init", env={"COOPCTL_CONFIG": busy_config(tmp_path, "5s")})
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 0.4
    conn = sqlite3.connect(small_book)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_a_new_database_is_created_in_wal_mode_from_its_first_byte(run_coopctl, db_path):
    assert run_coopctl("init").returncode == 0
    with open(db_path, "rb") as f:
        header = f.read(20)
    assert header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"  # WAL read/write versions
