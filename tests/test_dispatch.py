"""`coopctl dispatch` and the outbox's delivery states (SPEC section 5), on real processes: the
receivers are real commands and a real HTTP server on 127.0.0.1; dispatchers run as the
installed entry point, several at once, killed, stopped by signals."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from coopctl.policy import MINUTE, SECOND, iso, parse_instant
from coopctl.store import Store, locate
from conftest import base_env, coopctl_executable
from dbtools import BASE, DAY, SCENARIOS, scenario_outcome, stress

T = BASE + 2 * DAY  # the dispatchers' --now: after every notification of the books below
RECEIVER = r'''
import json, os, sys, time
log, fail_first, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
doc = json.loads(sys.stdin.buffer.read().decode("utf-8"))
nid = os.environ["COOPCTL_NOTIFICATION_ID"]
entry = {"id": int(nid), "doc": doc, "dispatcher": os.getppid(), "pid": os.getpid(),
         "env": {k: os.environ[k] for k in ("COOPCTL_NOTIFICATION_ID", "COOPCTL_RECIPIENT", "COOPCTL_CHANNEL")},
         "secret_seen": "COOPCTL_WEBHOOK_SECRET" in os.environ}
if sleep:
    time.sleep(sleep)
tries = os.path.join(log + ".tries", nid)
os.makedirs(log + ".tries", exist_ok=True)
with open(tries, "a") as f:
    f.write("x")
if os.path.getsize(tries) <= fail_first:
    print("not yet\nsecond line: try again", file=sys.stderr)
    sys.exit(3)
with open(log, "a") as f:
    f.write(json.dumps(entry) + "\n")
'''
HANGER = r'''
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
'''


def make_book(url: str, orders: int) -> int:
    """`orders` orders in several statuses (each with its notifications, pending), written
    through the storage layer on SQLite or PostgreSQL; returns the number of notifications."""
    store = Store(locate(url))
    store.initialise(made_by="test")
    try:
        with store.write() as tx:
            tx.insert_new([scenario_outcome(i, BASE + i * MINUTE, BASE + 5 * DAY, SCENARIOS[i % len(SCENARIOS)])
                           for i in range(1, orders + 1)])
        with store.read() as tx:
            return tx.conn.exec_driver_sql("SELECT count(*) FROM notifications").scalar_one()
    finally:
        store.dispose()


def outbox(url: str) -> dict[int, dict]:
    store = Store(locate(url))
    try:
        with store.read() as tx:
            rows = tx.conn.exec_driver_sql(
                "SELECT id, state, attempts, sent_at, next_attempt_at, last_error, claimed_by, lease_until, channel FROM notifications"
            ).fetchall()
    finally:
        store.dispose()
    names = ("state", "attempts", "sent_at", "next_attempt_at", "last_error", "claimed_by", "lease_until", "channel")
    return {r[0]: dict(zip(names, r[1:])) for r in rows}


def receiver(tmp_path: Path, fail_first: int = 0, sleep: float = 0.0) -> tuple[str, Path]:
    script = tmp_path / "receiver.py"
    script.write_text(RECEIVER)
    log = tmp_path / "delivered.log"
    return f"{sys.executable} {script} {log} {fail_first} {sleep}", log


def deliveries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def coop(tmp_path):
    """coop(url, *args, env=…) runs the installed coopctl on the database `url`."""

    def run(url: str, *args, env: dict | None = None, timeout: float = 120):
        full = base_env(Path(url) if "://" not in url else tmp_path / "unused.db")
        full["COOPCTL_DB"] = url
        full.update(env or {})
        return subprocess.run([coopctl_executable(), *map(str, args)], capture_output=True, text=True,
                              env=full, cwd=tmp_path, timeout=timeout)

    return run


def summary(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- retries and backoff


def test_a_command_failing_the_first_attempts_is_tried_again_at_each_backoff_instant(coop, tmp_path, db_path):
    db = str(db_path)
    make_book(db, 1)
    (tmp_path / "coopctl.toml").write_text('[delivery]\nbackoff = "1m"\nmax_backoff = "3m"\nmax_attempts = 5\n')
    command, log = receiver(tmp_path, fail_first=3)
    sms = [i for i, n in outbox(db).items() if n["channel"] == "sms"]
    assert len(sms) == 1
    (nid,) = sms
    at = T
    expected_next = [T + MINUTE, T + 3 * MINUTE, T + 6 * MINUTE]  # 1m, then 2m, then 4m capped at 3m
    for attempt, next_at in enumerate(expected_next, start=1):
        if attempt > 1:  # a second before its next attempt, it is not due
            early = summary(coop(db, "dispatch", "--exec", command, "--channel", "sms", "--now", iso(at - SECOND), "--json"))
            assert early == {"claimed": 0, "sent": 0, "failed": 0, "dead": 0}
        done = summary(coop(db, "dispatch", "--exec", command, "--channel", "sms", "--now", iso(at), "--json"))
        assert done == {"claimed": 1, "sent": 0, "failed": 1, "dead": 0}
        row = outbox(db)[nid]
        assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("failed", attempt, next_at)
        assert row["last_error"] == "exit 3: second line: try again" and row["claimed_by"] is None
        at = next_at
    done = summary(coop(db, "dispatch", "--exec", command, "--channel", "sms", "--now", iso(at), "--json"))
    assert done == {"claimed": 1, "sent": 1, "failed": 0, "dead": 0}
    row = outbox(db)[nid]
    assert (row["state"], row["attempts"], row["sent_at"], row["next_attempt_at"]) == ("sent", 4, T + 6 * MINUTE, None)
    (entry,) = deliveries(log)
    assert entry["env"] == {"COOPCTL_NOTIFICATION_ID": str(nid), "COOPCTL_RECIPIENT": entry["doc"]["recipient"],
                            "COOPCTL_CHANNEL": "sms"}
    listed = json.loads(coop(db, "notifications", "--json").stdout)
    handed = {**entry["doc"]}
    assert handed["id"] == nid and handed["state"] == "failed" and handed["attempts"] == 3
    mine = next(n for n in listed if n["id"] == nid)
    assert set(handed) == set(mine) and all(handed[k] == mine[k] for k in ("order", "recipient", "channel", "kind", "at", "text"))
    assert entry["doc"]["channel"] == "sms" and others_untouched(outbox(db), nid)


def others_untouched(rows: dict, nid: int) -> bool:
    return all(n["state"] == "pending" and n["attempts"] == 0 for i, n in rows.items() if i != nid)


def test_max_attempts_make_it_dead_doctor_says_so_and_retry_brings_it_back(coop, tmp_path, db_path):
    db = str(db_path)
    make_book(db, 1)
    (tmp_path / "coopctl.toml").write_text('[delivery]\nmax_attempts = 2\nbackoff = "30s"\n')
    command, _ = receiver(tmp_path, fail_first=100)
    first = summary(coop(db, "dispatch", "--exec", command, "--now", iso(T), "--json"))
    assert first["claimed"] == first["failed"] >= 2 and first["dead"] == 0
    second = summary(coop(db, "dispatch", "--exec", command, "--now", iso(T + MINUTE), "--json"))
    assert second == {"claimed": first["claimed"], "sent": 0, "failed": 0, "dead": first["claimed"]}
    rows = outbox(db)
    assert {(n["state"], n["attempts"], n["next_attempt_at"]) for n in rows.values()} == {("dead", 2, None)}
    doctor = coop(db, "doctor", "--now", iso(T + 2 * MINUTE), "--json")
    assert doctor.returncode == 1
    found = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}
    assert not found["outbox_dead"]["ok"] and "retry --dead" in found["outbox_dead"]["action"]
    assert coop(db, "notifications", "--state", "dead", "--json").stdout.count('"state": "dead"') == len(rows)
    one = min(rows)
    assert coop(db, "notifications", "retry", 999999).returncode == 3
    again = coop(db, "notifications", "retry", one, "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == {"retried": 1}
    assert outbox(db)[one] | {"last_error": None} == {**rows[one], "state": "pending", "attempts": 0, "last_error": None}
    refused = coop(db, "notifications", "retry", one)
    assert refused.returncode == 1 and refused.stderr.startswith("error: notification") and "pending" in refused.stderr
    everything = coop(db, "notifications", "retry", "--dead", "--json")
    assert json.loads(everything.stdout) == {"retried": len(rows) - 1}
    assert {n["state"] for n in outbox(db).values()} == {"pending"}
    backlog = coop(db, "doctor", "--now", iso(T + DAY), "--json")
    assert backlog.returncode == 1 and "is the dispatcher running?" in backlog.stdout


def test_a_command_hanging_past_the_timeout_is_killed_with_its_process_group(coop, tmp_path, db_path):
    db = str(db_path)
    make_book(db, 1)
    script = tmp_path / "hang.py"
    script.write_text(HANGER)
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    done = summary(coop(db, "dispatch", "--exec", f"{sys.executable} {script} {pid_file}", "--channel", "sms",
                        "--timeout", "1s", "--now", iso(T), "--json"))
    assert time.monotonic() - started < 30
    assert done == {"claimed": 1, "sent": 0, "failed": 1, "dead": 0}
    (row,) = [n for n in outbox(db).values() if n["channel"] == "sms"]
    assert row["state"] == "failed" and row["last_error"].startswith("timed out after 1s")
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the command's own child (its process group) was killed too"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- webhooks


class Hook:
    """A webhook receiver on 127.0.0.1: answers `fail_first` 500s per Idempotency-Key, then 200."""

    def __init__(self, fail_first: int = 1):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.tries: dict[str, int] = {}
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                hook.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                hook.tries[key] = hook.tries.get(key, 0) + 1
                status = 500 if hook.tries[key] <= hook.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


SECRET = "s3cret-that-is-never-shown"


def test_a_webhook_answering_500_then_200_is_signed_and_delivered_once_with_its_id(coop, db_path, hook):
    db = str(db_path)
    total = make_book(db, 2)
    env = {"COOPCTL_WEBHOOK_SECRET": SECRET}
    first = coop(db, "dispatch", "--webhook", hook.url, "--now", iso(T), "--json", env=env)
    assert summary(first) == {"claimed": total, "sent": 0, "failed": total, "dead": 0}
    assert {n["last_error"] for n in outbox(db).values()} == {"HTTP 500"}
    second = coop(db, "dispatch", "--webhook", hook.url, "--now", iso(T + MINUTE), "--json", env=env)
    assert summary(second) == {"claimed": total, "sent": total, "failed": 0, "dead": 0}
    assert {(n["state"], n["sent_at"]) for n in outbox(db).values()} == {("sent", T + MINUTE)}
    assert len(hook.requests) == 2 * total
    for request in hook.requests:
        headers, body = request["headers"], request["body"]
        doc = json.loads(body)
        assert headers["Content-Type"] == "application/json"
        assert headers["Idempotency-Key"] == str(doc["id"])
        assert headers["X-Coopctl-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert request["path"] == "/hook"
    assert sorted(hook.tries.values()) == [2] * total
    for result in (first, second):
        assert SECRET not in result.stdout + result.stderr


def test_without_a_secret_there_is_no_signature_and_the_config_secret_is_used_but_never_shown(coop, tmp_path, db_path, hook):
    db = str(db_path)
    make_book(db, 1)
    hook.fail_first = 0
    summary(coop(db, "dispatch", "--webhook", hook.url, "--now", iso(T), "--limit", "1", "--json"))
    assert "X-Coopctl-Signature" not in hook.requests[-1]["headers"]
    (tmp_path / "coopctl.toml").write_text(f'[delivery]\nwebhook_secret = "{SECRET}"\n')
    summary(coop(db, "dispatch", "--webhook", hook.url, "--now", iso(T), "--json"))
    last = hook.requests[-1]
    assert last["headers"]["X-Coopctl-Signature"] == "sha256=" + hmac.new(SECRET.encode(), last["body"], hashlib.sha256).hexdigest()
    shown = coop(db, "config", "--json")
    assert json.loads(shown.stdout)["delivery.webhook_secret"] == {"value": "set", "from": "coopctl.toml"}
    assert SECRET not in shown.stdout and SECRET not in coop(db, "config").stdout


def test_a_receiver_that_is_down_leaves_every_notification_failed_and_exit_0(coop, db_path):
    db = str(db_path)
    total = make_book(db, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    result = coop(db, "dispatch", "--webhook", f"http://127.0.0.1:{port}/", "--timeout", "5s", "--now", iso(T), "--json")
    assert summary(result) == {"claimed": total, "sent": 0, "failed": total, "dead": 0}
    assert all(n["last_error"].startswith("cannot connect") and n["next_attempt_at"] == T + MINUTE for n in outbox(db).values())


# --------------------------------------------------------------------------- several dispatchers


def test_four_dispatchers_at_once_deliver_each_notification_exactly_once(coop, tmp_path, backend):
    total = make_book(backend, 30)
    command, log = receiver(tmp_path, sleep=0.01)
    env = base_env(tmp_path / "unused.db")
    env["COOPCTL_DB"] = backend
    procs = [subprocess.Popen([coopctl_executable(), "dispatch", "--exec", command, "--concurrency", "2", "--now", iso(T),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True)
             for _ in range(4)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _, _ in results] == [0] * 4, results
    summaries = [json.loads(out) for _, out, _ in results]
    assert sum(s["sent"] for s in summaries) == total == sum(s["claimed"] for s in summaries)
    ids = [d["id"] for d in deliveries(log)]
    assert sorted(ids) == sorted(outbox(backend)) and len(ids) == len(set(ids)) == total
    assert {n["state"] for n in outbox(backend).values()} == {"sent"}


@pytest.mark.stress
def test_a_dispatcher_killed_again_and_again_loses_nothing_and_repeats_only_what_was_in_flight(tmp_path, db_path):
    db = str(db_path)
    total = make_book(db, max(20, stress() // 50))
    command, log = receiver(tmp_path, sleep=0.02)
    env = base_env(db_path)
    args = [coopctl_executable(), "dispatch", "--exec", command, "--concurrency", "3", "--lease", "1s", "--now", iso(T)]
    rng = random.Random(13)
    killed: set[int] = set()
    for _ in range(10):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
        time.sleep(rng.uniform(0.3, 1.2))
        proc.kill()
        proc.wait()
        killed.add(proc.pid)
    time.sleep(1.2)  # the dead dispatchers' leases run out
    final = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert final.returncode == 0, final.stderr
    rows = outbox(db)
    assert {n["state"] for n in rows.values()} == {"sent"} and len(rows) == total
    by_id: dict[int, list[int]] = {}
    for d in deliveries(log):
        by_id.setdefault(d["id"], []).append(d["dispatcher"])
    assert set(by_id) == set(rows), "every notification delivered at least once"
    for nid, dispatchers in by_id.items():
        if len(dispatchers) > 1:  # a repeat: every delivery but the last was a killed dispatcher's, in flight
            # (a receiver still running when its dispatcher was killed may see init, pid 1, as its parent)
            assert all(pid in killed or pid == 1 for pid in dispatchers[:-1]), (nid, dispatchers, killed)


def test_loop_stops_on_sigterm_finishing_what_is_in_flight_and_releasing_the_rest(tmp_path, db_path):
    db = str(db_path)
    total = make_book(db, 10)
    command, log = receiver(tmp_path, sleep=0.4)
    env = base_env(db_path)
    proc = subprocess.Popen([coopctl_executable(), "dispatch", "--exec", command, "--concurrency", "2", "--loop",
                             "--interval", "1s", "--now", iso(T), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True)
    deadline = time.monotonic() + 60
    while not deliveries(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    done = json.loads(out)
    rows = outbox(db)
    assert done["sent"] == len(deliveries(log)) == sum(1 for n in rows.values() if n["state"] == "sent") < total
    assert done["claimed"] == done["sent"]  # what it claimed and did not start was given back
    assert all(n["claimed_by"] is None and n["lease_until"] is None for n in rows.values()), "nothing claimed and unsent"
    again = subprocess.run([coopctl_executable(), "dispatch", "--exec", command, "--concurrency", "4", "--now", iso(T), "--json"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert json.loads(again.stdout)["sent"] == total - done["sent"]  # released ones are due at once


def test_loop_without_anything_due_sleeps_and_exits_0_on_sigint(tmp_path, db_path):
    total = make_book(str(db_path), 1)
    command, log = receiver(tmp_path)
    proc = subprocess.Popen([coopctl_executable(), "dispatch", "--exec", command, "--loop", "--interval", "1s",
                             "--now", iso(T)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env(db_path),
                            cwd=tmp_path, text=True)
    deadline = time.monotonic() + 60  # on a loaded machine start-up alone can take seconds
    while len(deliveries(log)) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # everything delivered: it now sleeps and claims again every second
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == f"dispatched: claimed {total}, sent {total}, failed 0, dead 0\n"


# --------------------------------------------------------------------------- the command line


def test_mark_sent_leaves_alone_what_a_dispatcher_holds_under_a_lease(invoke, db_path):
    db = str(db_path)
    total = make_book(db, 2)
    store = Store(locate(db))
    with store.write() as tx:
        held = tx.claim_notifications("someone:1:x", now=T, wall=10**18, lease_until=10**18 + 1, limit=1)
    store.dispose()
    handed = json.loads(invoke("notifications", "--mark-sent", "--json").stdout)
    assert len(handed) == total - 1 and held[0][0] not in {n["id"] for n in handed}
    assert all(n["state"] == "pending" for n in handed)  # as they were handed out, before being marked sent


@pytest.mark.parametrize("args,message", [
    (["dispatch"], "exactly one of --exec"),
    (["dispatch", "--exec", "true", "--webhook", "http://127.0.0.1:1/"], "exactly one of --exec"),
    (["dispatch", "--exec", "no-such-program-here"], "no such program"),
    (["dispatch", "--exec", "'unbalanced"], "cannot split"),
    (["dispatch", "--webhook", "ftp://example.com/"], "http:// or https://"),
    (["dispatch", "--exec", "true", "--timeout", "0s"], "--timeout"),
    (["dispatch", "--exec", "true", "--concurrency", "0"], "--concurrency"),
    (["dispatch", "--exec", "true", "--channel", "fax"], "--channel"),
    (["notifications", "--state", "lost"], "--state"),
    (["notifications", "retry"], "ids or --dead"),
    (["notifications", "retry", "1", "--dead"], "ids or --dead"),
    (["notifications", "retry", "x"], "notification id"),
    (["notifications", "resend", "1"], "unknown word"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v)[:40])
def test_invalid_input_is_exit_2_and_changes_nothing(invoke, db_path, args, message):
    make_book(str(db_path), 1)
    before = outbox(str(db_path))
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert outbox(str(db_path)) == before


@pytest.mark.parametrize("toml,key", [
    ('[delivery]\nbackoff = "0s"\n', "delivery.backoff"),
    ('[delivery]\nmax_backoff = "soon"\n', "delivery.max_backoff"),
    ('[delivery]\nbackoff = "2h"\n', "delivery.max_backoff"),
    ('[delivery]\nmax_attempts = 0\n', "delivery.max_attempts"),
    ('[delivery]\nmax_attempts = true\n', "delivery.max_attempts"),
    ('[delivery]\nwebhook_secret = 12\n', "delivery.webhook_secret"),
    ('[delivery]\nretries = 3\n', "delivery.retries"),
])
def test_delivery_configuration_is_validated_naming_the_key(invoke, tmp_path, toml, key):
    (tmp_path / "coopctl.toml").write_text(toml)
    result = invoke("config")
    assert result.exit_code == 2 and key in result.stderr


def test_config_shows_the_delivery_settings_with_their_origins(invoke, tmp_path):
    (tmp_path / "coopctl.toml").write_text('[delivery]\nbackoff = "30s"\nmax_attempts = 3\n')
    found = json.loads(invoke("config", "--json", env={"COOPCTL_WEBHOOK_SECRET": SECRET}).stdout)
    assert found["delivery.backoff"] == {"value": "30s", "from": "coopctl.toml"}
    assert found["delivery.max_backoff"] == {"value": "1h", "from": "default"}
    assert found["delivery.max_attempts"] == {"value": 3, "from": "coopctl.toml"}
    assert found["delivery.webhook_secret"] == {"value": "set", "from": "env COOPCTL_WEBHOOK_SECRET"}


def test_notifications_filter_by_state_channel_and_limit_in_every_format(invoke, coop, tmp_path, db_path):
    db = str(db_path)
    make_book(db, 3)
    command, _ = receiver(tmp_path)
    summary(coop(db, "dispatch", "--exec", command, "--channel", "sms", "--now", iso(T), "--json"))
    every = json.loads(invoke("notifications", "--json").stdout)
    assert list(every[0]) == ["id", "order", "recipient", "channel", "kind", "at", "text", "state", "attempts",
                              "sent_at", "next_attempt_at", "last_error"]
    sent = json.loads(invoke("notifications", "--state", "sent", "--json").stdout)
    assert sent == [n for n in every if n["state"] == "sent"] and {n["channel"] for n in sent} == {"sms"}
    inbox = [json.loads(line) for line in invoke("notifications", "--channel", "inbox", "--format", "jsonl").stdout.splitlines()]
    assert inbox == [n for n in every if n["channel"] == "inbox"]
    assert json.loads(invoke("notifications", "--pending", "--json").stdout) == [n for n in every if n["state"] == "pending"]
    assert json.loads(invoke("notifications", "--limit", "2", "--json").stdout) == every[:2]
    csv_lines = invoke("notifications", "--state", "sent", "--format", "csv").stdout.splitlines()
    assert csv_lines[0] == "id,order,recipient,channel,kind,at,text,state,attempts,sent_at,next_attempt_at,last_error"
    assert len(csv_lines) == len(sent) + 1
    assert all(n["sent_at"] == iso(T, parse_instant and __import__("zoneinfo").ZoneInfo("Asia/Shanghai")) for n in sent)
