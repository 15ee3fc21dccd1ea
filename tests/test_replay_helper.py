"""`replay --summary` and `import` on two cores (issue 14; `coopctl/replayhelper.py`): the chunks,
verdicts, errors and file-wide checks are exactly those of the one-process replay
(`exchange.replay_chunks` over `stream.orders()`), whether the helper answers, refuses a chunk,
dies or cannot start; nothing of it is left running."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbtools import exported_book

from coopctl import exchange, replayhelper, streaming
from coopctl.exchange import dumps
from coopctl.lifecycle import GENESIS_HASH, event_hash
from coopctl.policy import parse_instant

CHUNK = 7  # orders per chunk here: a file of 60 orders is 9 chunks, most of them the helper's


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    return json.loads(exported_book(tmp_path_factory.mktemp("helper"), 60).read_text(encoding="utf-8"))


def rehash(order: dict) -> None:
    previous = GENESIS_HASH
    for e in order["events"]:
        at = parse_instant(e["at"], timezone.utc)
        e["prev_hash"] = previous
        e["hash"] = event_hash(order["id"], e["seq"], e["kind"], at, e["actor"], e["operator"], e["data"], previous)
        previous = e["hash"]


def with_key(order: dict, key: str) -> None:
    order["idempotency_key"] = key
    order["events"][0]["data"]["idempotency_key"] = key
    rehash(order)


def tampered(doc: dict) -> dict:
    doc["orders"][3]["status"] = "expired" if doc["orders"][3]["status"] != "expired" else "pending"
    doc["orders"][20]["events"][0]["hash"] = "0" * 64
    doc["orders"][41]["notifications"][0]["text"] = "changed"
    doc["orders"][59]["failed_reviews"] = 7
    return doc


def malformed_late(doc: dict) -> dict:
    tampered(doc)
    doc["orders"][45]["status"] = 5
    return doc


def duplicate_id(doc: dict) -> dict:
    tampered(doc)
    order = doc["orders"][50]
    order["id"] = doc["orders"][10]["id"]
    for n in order["notifications"]:
        n["order"] = order["id"]
    rehash(order)
    return doc


def duplicate_key(doc: dict) -> dict:
    for index in (2, 30, 31, 44):  # across chunks and within one
        with_key(doc["orders"][index], "K-1")
    with_key(doc["orders"][5], "K-2")
    return doc


def dated_too_early(doc: dict) -> dict:
    tampered(doc)
    doc["exported_at"] = doc["orders"][30]["created_at"]  # before the events of some order of the file
    return doc


def resorted(doc: dict) -> dict:  # keys after the orders: the slow reader, checks at the end
    tampered(doc)
    orders = doc.pop("orders")
    return {"orders": orders, **doc, "version": 1}


def resorted_bad_format(doc: dict) -> dict:
    doc = resorted(doc)
    doc["format"] = "other"
    return doc


def with_decimals(doc: dict) -> dict:  # numbers that are not whole: the chunks go pickled, not marshalled
    doc["orders"][12]["commission_pct"] = 12.5 if doc["orders"][12]["commission_pct"] == "12.50" else 1.5
    doc["orders"][25]["events"][0]["data"]["x"] = 0.25
    return doc


EDITS = {
    "good": lambda d: d, "tampered": tampered, "malformed late": malformed_late, "duplicate id": duplicate_id,
    "duplicate key": duplicate_key, "dated too early": dated_too_early, "re-sorted": resorted,
    "re-sorted, bad format": resorted_bad_format, "decimals": with_decimals,
}
CUT = {"cut at the end": 0.97, "cut in the middle": 0.55}


def text_of(document: dict, edit: str) -> bytes:
    if edit in CUT:
        raw = dumps(tampered(copy.deepcopy(document))).encode()
        return raw[: int(len(raw) * CUT[edit])]
    return dumps(EDITS[edit](copy.deepcopy(document))).encode()


def outcome(chunks) -> list:
    """What a reader sees: each chunk's (id, ok, message), then the error that ended it, if any."""
    seen = []
    try:
        for chunk in chunks:
            seen.append([(v.order_id, v.ok, v.message) for v in chunk])
    except Exception as exc:  # noqa: BLE001 - compared
        seen.append((type(exc).__name__, str(exc)))
    return seen


def one_process(raw: bytes) -> list:
    stream = streaming.open_export(io.BytesIO(raw), "f.json")
    return outcome(exchange.replay_chunks(stream.orders(), keep_steps=False, chunk=CHUNK))


def two_processes(raw: bytes, *, full: bool = False, **options) -> list:
    stream = streaming.open_export(io.BytesIO(raw), "f.json")
    options = {"helper": True, "at_least": 0, **options}
    return outcome(replayhelper.verdict_chunks(stream, full=full, chunk=CHUNK, **options))


@pytest.fixture
def answers(monkeypatch) -> list:
    """How the helper answered each chunk it was given (a tuple: replayed there)."""
    seen: list = []
    receive = replayhelper.Replayer.receive

    def counted(self):
        answer = receive(self)
        seen.append(answer)
        return answer

    monkeypatch.setattr(replayhelper.Replayer, "receive", counted)
    return seen


@pytest.mark.parametrize("edit", [*EDITS, *CUT])
@pytest.mark.parametrize("full", [False, True], ids=["summary", "import"])
def test_two_processes_give_the_chunks_verdicts_and_errors_of_one(document, edit, full, answers):
    raw = text_of(document, edit)
    expected = one_process(raw)
    assert two_processes(raw, full=full) == expected
    if edit in ("good", "tampered", "duplicate key", "decimals"):
        assert sum(isinstance(a, tuple) for a in answers) >= 2  # the helper replayed some (the first two at least)


def test_a_frame_larger_than_the_pipe_reaches_the_helper_while_this_process_does_other_work(document):
    """A chunk's frame is several times what the pipe holds (1 MB): the rest must reach the helper
    while this process is busy elsewhere (writing an import's rows, replaying a chunk itself), not
    only when it next looks at the pipe. Here it only sleeps, and the helper's answer arrives."""
    import select
    import time

    items = [copy.deepcopy(order) for _ in range(24) for order in document["orders"]]  # 1,440 orders
    payload = replayhelper._payload(items)
    assert len(payload) > 1 << 20
    replayer = replayhelper.Replayer.start("f.json", False)
    assert replayer is not None
    try:
        replayer.submit(0, payload)
        deadline = time.monotonic() + 30
        while not select.select([replayer.rfd], [], [], 0.2)[0]:  # no call into the replayer meanwhile
            assert time.monotonic() < deadline, "the helper never got the whole frame"
        assert replayer.receive() is None  # it refused the chunk (ids seen twice), after reading it whole
    finally:
        replayer.close()
    assert replayer.proc.poll() is not None


def test_an_order_the_helper_refuses_is_replayed_here_where_its_error_is_raised(document, answers, monkeypatch):
    monkeypatch.setattr(replayhelper, "AHEAD", 100)  # every chunk to the helper
    monkeypatch.setattr(replayhelper, "HELD", {True: 100, False: 100})
    monkeypatch.setattr(replayhelper, "_take_back", lambda queue, work: None)  # and none taken back at the end
    raw = text_of(document, "malformed late")
    assert two_processes(raw)[-1] == ("InvalidInput", "f.json: order 46: 'status' must be text, got a number")
    assert None in answers  # the helper gave the chunk back


def test_full_verdicts_from_the_helper_are_those_replayed_here(document, answers):
    raw = text_of(document, "tampered")
    here = [v for chunk in exchange.replay_chunks(streaming.open_export(io.BytesIO(raw), "f").orders(),
                                                 keep_steps=False, chunk=CHUNK) for v in chunk]
    there = [v for chunk in replayhelper.verdict_chunks(streaming.open_export(io.BytesIO(raw), "f"), full=True,
                                                        chunk=CHUNK, helper=True, at_least=0) for v in chunk]
    assert [(v.exported, v.rebuilt, v.divergence and str(v.divergence), v.evidence) for v in there] == [
        (v.exported, v.rebuilt, v.divergence and str(v.divergence), v.evidence) for v in here
    ]
    assert sum(isinstance(a, tuple) for a in answers) >= 2


def test_a_helper_that_cannot_start_leaves_the_work_here(document, monkeypatch):
    monkeypatch.setattr(replayhelper.Replayer, "spawn", classmethod(lambda cls, serve: None))
    raw = text_of(document, "tampered")
    assert two_processes(raw) == one_process(raw)


@pytest.mark.parametrize("after", [0, 2])
def test_a_helper_that_dies_leaves_its_chunks_to_be_replayed_here(document, monkeypatch, after):
    """Killed before it answers anything, or after two answers: what it held is replayed here."""
    receive = replayhelper.Replayer.receive
    given = []

    def dying(self):
        if len(given) == after:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        given.append(1)
        return receive(self)

    monkeypatch.setattr(replayhelper.Replayer, "receive", dying)
    for edit in ("tampered", "malformed late"):
        given.clear()
        raw = text_of(document, edit)
        assert two_processes(raw) == one_process(raw)


def test_a_helper_that_answers_garbage_is_closed_and_its_chunks_replayed_here(document, monkeypatch):
    started = []

    def garbage(cls, serve):
        code = "import sys\nsys.stdout.buffer.write(bytes([5, 0, 0, 0, 0, 0, 0, 0]) + b'junk!')\nsys.stdout.flush()\nsys.stdin.buffer.read()"
        proc = subprocess.Popen([sys.executable, "-c", code],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        started.append(proc)
        return proc

    monkeypatch.setattr(replayhelper.Replayer, "spawn", classmethod(garbage))
    raw = text_of(document, "tampered")
    assert two_processes(raw) == one_process(raw)
    assert started and started[0].poll() is not None  # closed, not left behind


def test_no_helper_is_left_running_after_an_error_or_an_early_stop(document):
    made = []
    start = replayhelper.Replayer.start.__func__

    def recorded(cls, *args):
        replayer = start(cls, *args)
        made.append(replayer)
        return replayer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replayhelper.Replayer, "start", classmethod(recorded))
        two_processes(text_of(document, "malformed late"))
        chunks = replayhelper.verdict_chunks(streaming.open_export(io.BytesIO(text_of(document, "good")), "f"),
                                             full=False, chunk=CHUNK, helper=True, at_least=0)
        next(chunks)
        chunks.close()  # the reader stops early (as an import refused at its first chunk does)
    assert len(made) == 2
    for replayer in made:
        assert replayer.proc.wait(timeout=10) is not None


def test_the_last_chunks_the_helper_holds_are_taken_back_once_the_file_is_read(document, monkeypatch, answers):
    monkeypatch.setattr(replayhelper, "AHEAD", 100)
    monkeypatch.setattr(replayhelper, "HELD", {True: 100, False: 100})
    taken = []
    here = replayhelper._Work.here

    def counted(self, entry):
        taken.append(entry.first)
        return here(self, entry)

    monkeypatch.setattr(replayhelper._Work, "here", counted)
    raw = text_of(document, "tampered")
    assert two_processes(raw) == one_process(raw)
    assert taken and taken == sorted(taken, reverse=True) and CHUNK * 8 in taken  # from the back
    assert len(answers) + len(taken) == 9


def test_small_files_and_a_machine_with_one_core_stay_in_one_process(document, monkeypatch):
    monkeypatch.setattr(replayhelper.Replayer, "start", classmethod(lambda cls, *a: pytest.fail("no helper here")))
    raw = text_of(document, "tampered")
    stream = streaming.open_export(io.BytesIO(raw), "f.json")
    assert outcome(replayhelper.verdict_chunks(stream, full=False, chunk=CHUNK, helper=True, at_least=60)) == one_process(raw)
    monkeypatch.setattr(replayhelper, "_cores", lambda: 1)
    stream = streaming.open_export(io.BytesIO(raw), "f.json")
    assert outcome(replayhelper.verdict_chunks(stream, full=False, chunk=CHUNK, at_least=0)) == one_process(raw)


# --------------------------------------------------------------------------- the commands


def run(tmp_path: Path, *args, helper: bool, monkeypatch) -> tuple[int, str, str]:
    from coopctl.cli import app

    monkeypatch.setattr(exchange, "REPLAY_CHUNK", CHUNK)
    monkeypatch.setattr(exchange, "IMPORT_CHUNK", CHUNK)
    monkeypatch.setattr(replayhelper, "HELPER_AT_LEAST", 0)
    monkeypatch.setattr(replayhelper, "_cores", lambda: 2 if helper else 1)
    env = {k: None for k in os.environ if k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": str(tmp_path / "none.db"), "COOPCTL_OPERATOR": "tester", "NO_COLOR": "1"})
    result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = result.stdout
    import re

    return result.exit_code, re.sub(r"; [0-9,]+ orders/s;", "; N orders/s;", out), result.stderr


@pytest.mark.parametrize("edit", ["good", "tampered", "malformed late", "duplicate key", "cut at the end"])
def test_replay_summary_prints_the_same_with_and_without_the_helper(document, tmp_path, monkeypatch, edit, answers):
    path = tmp_path / "f.json"
    path.write_bytes(text_of(document, edit))
    for extra in ([], ["--json"]):
        alone = run(tmp_path, "replay", path, "--summary", *extra, helper=False, monkeypatch=monkeypatch)
        assert not answers
        both = run(tmp_path, "replay", path, "--summary", *extra, helper=True, monkeypatch=monkeypatch)
        assert both == alone
        answers.clear()


@pytest.mark.parametrize("edit", ["good", "tampered", "malformed late", "duplicate key", "cut at the end", "re-sorted, bad format"])
def test_import_with_the_helper_is_the_same_all_or_nothing(document, tmp_path, monkeypatch, edit):
    import sqlite3

    path = tmp_path / "f.json"
    path.write_bytes(text_of(document, edit))
    results, contents = [], []
    for helper in (False, True):
        db = tmp_path / f"{helper}.db"
        code, out, err = run(tmp_path, "--db", db, "import", path, helper=helper, monkeypatch=monkeypatch)
        results.append((code, out.replace(str(db), "DB"), err.replace(str(db), "DB")))
        if code == 0:
            with sqlite3.connect(db) as conn:
                contents.append([conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in ("orders", "events", "notifications")])
        else:
            assert not db.exists()  # refused: nothing written, the database it created removed
    assert results[0] == results[1]
    assert (results[0][0] == 0) == (edit == "good")
    assert len(contents) in (0, 2) and (not contents or contents[0] == contents[1])
