"""Evidence files (SPEC section 1, "Evidence files"; section 2, `export --with-evidence`; section 7).

`--evidence-file` on deliver and review --fail: read, hashed and checked before the transaction
(a file over 20 MiB, missing, unreadable or not regular is exit 2 and nothing changes), recorded
in the event's data (so the hash chain covers name, size and SHA-256), the content stored once
per distinct content. `coopctl evidence ORDER` lists them (checked as `show` checks an order);
`--get SHA256 --out FILE` writes one back (0600, atomic). `export --with-evidence` carries them,
`replay` and `import` check each against its event; doctor rehashes every stored content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from coopctl import evidence as ev
from coopctl.errors import InvalidInput
from coopctl.history import Divergence, rebuild, verify_chain
from coopctl.lifecycle import Action, Party, act, event_hash
from coopctl.models import SCHEMA_VERSION
from conftest import read_rows
from dbtools import deliver_outbox

T0 = "2026-12-01T10:00:00+08:00"
MIB20 = 20 * 1024 * 1024
M, C = "商家A", "达人小王"


def _db(invoke, db: str | None = None):
    """invoke with --db given through the environment (a backend's URL, or the test's file)."""
    if db is None:
        return invoke
    return lambda *args, **kw: invoke(*args, env={"COOPCTL_DB": db, **kw.pop("env", {})}, **kw)


def _effective(run, at_accept: str = "2026-12-01T11:00:00+08:00") -> None:
    created = run("create", "--merchant", M, "--creator", C, "--product", "P1", "--form", "live", "--commission", "10",
                  "--latest-start", "2026-12-20T20:00:00+08:00", "--at", T0)
    assert created.exit_code == 0, created.stderr
    accepted = run("accept", "1", "--creator", C, "--at", at_accept)
    assert accepted.exit_code == 0, accepted.stderr


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _deliver(run, *files: Path, at: str = "2026-12-01T12:00:00+08:00"):
    args = ["deliver", "1", "--creator", C, "--at", at, "--json"]
    for f in files:
        args += ["--evidence-file", str(f)]
    return run(*args)


def _listed(run, order: int = 1) -> list[dict]:
    result = run("evidence", str(order), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _stored(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT sha256, size, length(content) FROM evidence_files ORDER BY sha256").fetchall()
    finally:
        conn.close()


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --------------------------------------------------------------------------- attaching


def test_a_delivery_records_each_file_in_its_event_and_keeps_the_content(invoke, tmp_path, db_path):
    _effective(invoke)
    shot = _file(tmp_path, "截图 1.png", os.urandom(3000))
    note = _file(tmp_path, "note.txt", b"live at 20:00")
    result = _deliver(invoke, shot, note)
    assert result.exit_code == 0, result.stderr
    events = json.loads(invoke("show", "1", "--json").stdout)["events"]
    assert events[-1]["kind"] == "delivered"
    assert events[-1]["data"]["evidence_files"] == [
        {"name": "截图 1.png", "size": 3000, "sha256": _sha(shot.read_bytes())},
        {"name": "note.txt", "size": 13, "sha256": _sha(b"live at 20:00")},
    ]
    assert [(r["seq"], r["kind"], r["name"], r["size"], r["held"]) for r in _listed(invoke)] == [
        (3, "delivered", "截图 1.png", 3000, True), (3, "delivered", "note.txt", 13, True),
    ]
    assert sorted(_stored(db_path)) == sorted([(_sha(shot.read_bytes()), 3000, 3000), (_sha(b"live at 20:00"), 13, 13)])


def test_a_failed_review_takes_evidence_files_and_a_pass_does_not(invoke, tmp_path):
    _effective(invoke)
    assert _deliver(invoke).exit_code == 0
    clip = _file(tmp_path, "clip.mp4", b"\x00\x01" * 500)
    passed = invoke("review", "1", "--merchant", M, "--pass", "--evidence-file", str(clip), "--at", "2026-12-01T13:00:00+08:00")
    assert passed.exit_code == 2 and passed.stderr == "error: --evidence-file goes with --fail, not --pass\n"
    failed = invoke("review", "1", "--merchant", M, "--fail", "--reason", "product not shown", "--evidence-file", str(clip),
                    "--at", "2026-12-01T13:00:00+08:00")
    assert failed.exit_code == 0, failed.stderr
    assert [(r["seq"], r["kind"], r["name"]) for r in _listed(invoke)] == [(4, "review_failed", "clip.mp4")]


def test_the_rules_refuse_evidence_files_on_actions_that_take_none():
    from coopctl.lifecycle import create, make_terms
    from coopctl.policy import Policy, ReminderOffsets, parse_instant
    from datetime import timezone

    at = parse_instant("2026-12-01T02:00:00+00:00", timezone.utc)
    terms = make_terms(merchant=M, creator=C, products=["P"], form="live", commission="10", ad_budget="0",
                       latest_start_at=at + 10 * 86_400_000_000, note=None)
    order = create(1, terms, Policy(), ReminderOffsets(), at, "op").order
    record = ev.EvidenceFile("a.txt", 1, _sha(b"a"))
    with pytest.raises(InvalidInput, match="accept takes no evidence files"):
        act(order, Action.ACCEPT, Party.CREATOR, C, at + 1, "op", evidence_files=(record,))


def test_a_20_mib_file_is_accepted_and_one_byte_more_is_exit_2_with_nothing_changed(invoke, tmp_path, db_path):
    _effective(invoke)
    exact = tmp_path / "exact.bin"
    with open(exact, "wb") as f:
        f.truncate(MIB20)
    over = tmp_path / "over.bin"
    with open(over, "wb") as f:
        f.truncate(MIB20 + 1)
    before = read_rows(db_path)
    refused = _deliver(invoke, exact, over)
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: --evidence-file '{over}' is 20,971,521 bytes; at most 20,971,520 (20 MiB) are allowed a file; nothing was changed\n"
    )
    assert refused.stdout == ""
    assert read_rows(db_path) == before
    accepted = _deliver(invoke, exact)
    assert accepted.exit_code == 0, accepted.stderr
    assert _stored(db_path) == [(_sha(b"\0" * MIB20), MIB20, MIB20)]


def test_a_file_that_grows_past_20_mib_while_read_is_refused(tmp_path, monkeypatch):
    path = _file(tmp_path, "growing.bin", b"x" * 10)
    real_read = os.read
    calls = []

    def growing(fd, n):  # the file's size said 10 bytes; it delivers more than 20 MiB
        calls.append(n)
        return b"y" * n if len(calls) <= 21 else real_read(fd, n)

    monkeypatch.setattr(ev.os, "read", growing)
    with pytest.raises(InvalidInput, match="at most 20,971,520"):
        ev.read_files([str(path)])


def _nothing_changed(invoke, db_path, args, message):
    before = read_rows(db_path)
    result = invoke(*args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert read_rows(db_path) == before


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "under-a-file", "empty-path"])
def test_a_missing_or_non_regular_file_is_exit_2_with_nothing_changed(invoke, tmp_path, db_path, kind):
    _effective(invoke)
    path = {
        "missing": tmp_path / "nothere.png",
        "directory": tmp_path,
        "fifo": tmp_path / "pipe",
        "under-a-file": _file(tmp_path, "plain", b"x") / "child",
        "empty-path": "",
    }[kind]
    if kind == "fifo":
        os.mkfifo(path)
    message = {
        "missing": "cannot read it (no such file); nothing was changed",
        "directory": "is a directory, not a file",
        "fifo": "is not a regular file (a device, FIFO or socket)",
        "under-a-file": "cannot read it (Not a directory)",
        "empty-path": "--evidence-file is empty",
    }[kind]
    _nothing_changed(invoke, db_path, ["deliver", "1", "--creator", C, "--evidence-file", str(path), "--at", "2026-12-01T12:00"], message)


def test_an_unreadable_file_is_exit_2_with_nothing_changed(invoke, tmp_path, db_path, monkeypatch):
    _effective(invoke)
    path = _file(tmp_path, "secret.pdf", b"%PDF")
    if os.geteuid() != 0:  # root reads a file of mode 0000 anyway: then the read itself fails (EIO)
        path.chmod(0)
        message = "cannot read it (Permission denied)"
    else:
        def failing(fd, n):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(ev.os, "read", failing)
        message = "cannot read it (Input/output error)"
    _nothing_changed(invoke, db_path, ["deliver", "1", "--creator", C, "--evidence-file", str(path), "--at", "2026-12-01T12:00"], message)


def test_the_same_content_is_stored_once_however_often_it_is_attached(invoke, tmp_path, db_path):
    _effective(invoke)
    one = _file(tmp_path, "one.jpg", b"same bytes")
    two = _file(tmp_path, "two.jpg", b"same bytes")
    assert _deliver(invoke, one, two, one).exit_code == 0
    failed = invoke("review", "1", "--merchant", M, "--fail", "--reason", "again", "--evidence-file", str(two),
                    "--at", "2026-12-01T13:00:00+08:00")
    assert failed.exit_code == 0, failed.stderr
    assert [r["name"] for r in _listed(invoke)] == ["one.jpg", "two.jpg", "one.jpg", "two.jpg"]
    assert _stored(db_path) == [(_sha(b"same bytes"), 10, 10)]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name,point", [
    ("a\x1b[31mred.png", "U+001B"), ("x\u202egnp.exe", "U+202E"), ("zero\u200bwidth.pdf", "U+200B"),
    ("line\nbreak.txt", "U+000A"), ("tab\there.txt", "U+0009"),
])
def test_hostile_file_names_are_refused_naming_the_character(invoke, tmp_path, db_path, name, point):
    _effective(invoke)
    path = _file(tmp_path, name, b"x")
    before = read_rows(db_path)
    result = _deliver(invoke, path)
    assert result.exit_code == 2
    assert point in result.stderr and "which is not allowed; rename the file" in result.stderr
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr and "\u200b" not in result.stderr
    assert read_rows(db_path) == before


def test_a_file_name_that_is_not_utf8_on_disk_is_refused(invoke, tmp_path, db_path):
    _effective(invoke)
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(raw, "wb") as f:
        f.write(b"x")
    result = _deliver(invoke, Path(os.fsdecode(raw)))
    assert result.exit_code == 2 and "U+DCE9" in result.stderr


def test_the_file_name_check_of_the_trust_boundary():
    from coopctl.trust import check_file_name

    assert check_file_name("证据 (1).png", "name") == "证据 (1).png"
    for bad in ("", ".", "..", "a/b", "x" * 256, "a\x00b", "\ufeffbom.txt", 7):
        with pytest.raises(InvalidInput):
            check_file_name(bad, "name")


# --------------------------------------------------------------------------- the hash chain


def _edit(db: Path, sql: str, *params) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def test_altering_a_file_name_in_the_event_breaks_the_chain(invoke, tmp_path, db_path):
    _effective(invoke)
    assert _deliver(invoke, _file(tmp_path, "invoice.pdf", b"%PDF-1.7")).exit_code == 0
    _edit(db_path, "UPDATE events SET data = replace(data, 'invoice.pdf', 'inv\u202efdp.exe') WHERE seq = 3")
    listed = invoke("evidence", "1")
    assert listed.exit_code == 1
    assert "inv\\u202efdp.exe" in listed.stdout and "\u202e" not in listed.stdout  # shown escaped, never obeyed
    assert "event seq 3: hash does not match the event's content" in listed.stderr
    got = invoke("evidence", "1", "--get", _sha(b"%PDF-1.7"), "--out", str(tmp_path / "out.pdf"))
    assert got.exit_code == 1 and not (tmp_path / "out.pdf").exists()
    doctor = invoke("doctor", "--json")
    assert doctor.exit_code == 1
    chains = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "hash_chain" and not f["ok"]]
    assert [(f["order"], f["seq"]) for f in chains] == [(1, 3)]


def test_altering_a_stored_content_is_a_doctor_finding_and_get_refuses_it(invoke, tmp_path, db_path):
    _effective(invoke)
    content = b"the original screenshot"
    assert _deliver(invoke, _file(tmp_path, "shot.png", content)).exit_code == 0
    deliver_outbox(invoke)
    healthy = invoke("doctor", "--json", "--now", "2026-12-01T12:00")
    assert healthy.exit_code == 0, healthy.stdout
    assert [f["message"] for f in json.loads(healthy.stdout)["findings"] if f["check"] == "evidence"] == [
        "1 evidence files: every stored content hashes to its sha256",
    ]
    _edit(db_path, "UPDATE evidence_files SET content = ?", b"the forged screenshot!!")
    doctor = invoke("doctor", "--json", "--now", "2026-12-01T12:00")
    assert doctor.exit_code == 1
    found = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "evidence"]
    assert [(f["ok"], f["order"], f["seq"]) for f in found] == [(False, 1, 3)]
    assert "no longer hashes to its sha256 (altered)" in found[0]["message"]
    out = tmp_path / "back.png"
    got = invoke("evidence", "1", "--get", _sha(content), "--out", str(out))
    assert got.exit_code == 1 and "no longer hashes to its sha256" in got.stderr and not out.exists()
    # quick checks the chains only: the contents are not read
    assert all(f["check"] != "evidence" for f in json.loads(invoke("doctor", "--json", "--quick", "--now", "2026-12-01T12:00").stdout)["findings"])


def test_a_deleted_content_row_and_a_content_stored_as_text_are_findings(invoke, tmp_path, db_path):
    _effective(invoke)
    assert _deliver(invoke, _file(tmp_path, "a.txt", b"aaaa"), _file(tmp_path, "b.txt", b"bbbb")).exit_code == 0
    _edit(db_path, "DELETE FROM evidence_files WHERE sha256 = ?", _sha(b"aaaa"))
    _edit(db_path, "UPDATE evidence_files SET content = 'b' || X'ff' || 'bb' WHERE sha256 = ?", _sha(b"bbbb"))  # TEXT, not UTF-8
    doctor = invoke("doctor", "--json", "--now", "2026-12-01T12:00")
    assert doctor.exit_code == 1
    messages = [f["message"] for f in json.loads(doctor.stdout)["findings"] if f["check"] == "evidence"]
    assert len(messages) == 2
    assert "'a.txt'" in messages[0] and "not in the evidence store" in messages[0]
    assert "'b.txt'" in messages[1] and "no longer hashes" in messages[1]


def _chained(order_id: int, events: list[dict]) -> list:
    """Events with their hashes computed in turn (what a forger with the file would write)."""
    from coopctl.lifecycle import GENESIS_HASH, Event

    out, prev = [], GENESIS_HASH
    for seq, e in enumerate(events, start=1):
        digest = event_hash(order_id, seq, e["kind"], e["at"], e["actor"], "op", e["data"], prev)
        out.append(Event(order_id, seq, e["kind"], e["at"], e["actor"], "op", e["data"], prev, digest))
        prev = digest
    return out


@pytest.mark.parametrize("files,why", [
    ([{"name": "a", "size": 1}], "exactly name, size and sha256"),
    ([{"name": "a", "size": -1, "sha256": "0" * 64}], "size must be"),
    ([{"name": "a", "size": MIB20 + 1, "sha256": "0" * 64}], "size must be"),
    ([{"name": "a", "size": 1, "sha256": "A" * 64}], "sha256 must be"),
    ([{"name": "a\u202eb", "size": 1, "sha256": "0" * 64}], "U+202E"),
    ([], "non-empty array"),
    ("a.txt", "non-empty array"),
])
def test_a_recorded_history_with_malformed_evidence_files_does_not_rebuild(files, why):
    from coopctl.lifecycle import create, make_terms
    from coopctl.policy import Policy, ReminderOffsets

    at = 1_764_554_400_000_000
    terms = make_terms(merchant=M, creator=C, products=["P"], form="live", commission="10", ad_budget="0",
                       latest_start_at=at + 10 * 86_400_000_000, note=None)
    created = create(1, terms, Policy(), ReminderOffsets(), at, "op").events[0]
    events = _chained(1, [
        {"kind": "created", "at": at, "actor": created.actor, "data": created.data},
        {"kind": "accepted", "at": at + 1, "actor": f"creator:{C}", "data": {}},
        {"kind": "delivered", "at": at + 2, "actor": f"creator:{C}", "data": {"mode": "manual", "evidence_files": files}},
    ])
    verify_chain(1, events)  # the hashes hold: the rules refuse it
    with pytest.raises(Divergence) as caught:
        rebuild(1, events)
    assert caught.value.seq == 3 and why in str(caught.value)


# --------------------------------------------------------------------------- --get


def test_get_writes_the_file_back_byte_for_byte_with_mode_0600(invoke, tmp_path):
    _effective(invoke)
    content = os.urandom(100_000) + b"\r\n\x00end"
    assert _deliver(invoke, _file(tmp_path, "proof.bin", content)).exit_code == 0
    out = tmp_path / "restored.bin"
    old = os.umask(0)
    try:
        got = invoke("evidence", "1", "--get", _sha(content), "--out", str(out))
        again = invoke("evidence", "1", "--get", _sha(content)[:8].upper(), "--out", str(out), "--json")  # a prefix; replaces it
    finally:
        os.umask(old)
    assert got.exit_code == 0, got.stderr
    assert got.stdout == f"wrote proof.bin (100,006 bytes, sha256 {_sha(content)[:16]}…) of order 1 to {out}\n"
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == {"order": 1, "file": str(out), "name": "proof.bin", "size": 100_006, "sha256": _sha(content)}
    assert out.read_bytes() == content
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if "coopctl-tmp" in p.name] == []


@pytest.mark.parametrize("args,code,message", [
    (["--get", "0" * 64, "--out", "x"], 3, "error: order 1 names no evidence file " + "0" * 64),
    (["--get", "xyz", "--out", "x"], 2, "error: --get: give the file's SHA-256"),
    (["--get", "1234567", "--out", "x"], 2, "error: --get: give the file's SHA-256"),
    (["--get", "0" * 64], 2, "error: --get needs --out FILE"),
    (["--out", "x"], 2, "error: --out goes with --get SHA256"),
])
def test_get_refusals(invoke, tmp_path, args, code, message):
    _effective(invoke)
    assert _deliver(invoke, _file(tmp_path, "a.txt", b"a")).exit_code == 0
    result = invoke("evidence", "1", *args)
    assert result.exit_code == code and result.stderr.startswith(message), result.stderr
    assert not (tmp_path / "x").exists()


def test_evidence_of_an_unknown_order_is_exit_3_and_an_order_without_files_lists_none(invoke):
    _effective(invoke)
    assert invoke("evidence", "9").exit_code == 3
    assert _listed(invoke) == []


# --------------------------------------------------------------------------- export, replay, import


def _export(run, *extra) -> dict:
    result = run("export", "1", "--at", "2026-12-02T00:00:00+08:00", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _book(run, tmp_path: Path) -> dict[str, bytes]:
    contents = {"a.png": os.urandom(5000), "b.txt": b"second file", "dup.txt": b"second file"}
    _effective(run)
    assert _deliver(run, *(_file(tmp_path, name, data) for name, data in contents.items())).exit_code == 0
    return contents


def test_export_with_evidence_carries_each_distinct_file_after_the_notifications(invoke, tmp_path):
    contents = _book(invoke, tmp_path)
    order = _export(invoke, "--with-evidence")["orders"][0]
    assert list(order)[list(order).index("notifications") + 1] == "evidence"
    assert order["evidence"] == [
        {"sha256": _sha(contents["a.png"]), "name": "a.png", "size": 5000, "content_base64": base64.b64encode(contents["a.png"]).decode()},
        {"sha256": _sha(b"second file"), "name": "b.txt", "size": 11, "content_base64": base64.b64encode(b"second file").decode()},
    ]
    assert "evidence" not in _export(invoke)["orders"][0]  # without it: named by hash in the events only


def test_export_with_evidence_writes_the_same_text_in_pieces_of_bounded_contents(invoke, tmp_path, db_path, monkeypatch):
    """Contents are read and written a piece at a time (exchange.EVIDENCE_PIECE), not a chunk of
    1,000 orders at a time; the text is the same however the pieces fall, seal included."""
    from coopctl import exchange

    _book(invoke, tmp_path)
    key = tmp_path / "seal.key"
    made = invoke("keygen", "--out", str(key), "--json")
    assert made.exit_code == 0, made.stderr
    assert invoke("seal", "--now", "2026-12-01T13:00:00+08:00", env={"COOPCTL_SIGNING_KEY": str(key)}).exit_code == 0
    for i in range(2, 5):  # more orders, each with its own file
        assert invoke("create", "--merchant", M, "--creator", C, "--product", "P", "--form", "video", "--commission", "5",
                      "--latest-start", "2026-12-20T20:00:00+08:00", "--at", T0).exit_code == 0
        assert invoke("accept", str(i), "--creator", C, "--at", "2026-12-01T11:00:00+08:00").exit_code == 0
        proof = _file(tmp_path, f"p{i}.bin", os.urandom(1000 * i))
        assert invoke("deliver", str(i), "--creator", C, "--evidence-file", str(proof), "--at", "2026-12-01T12:00:00+08:00").exit_code == 0
    whole = invoke("export", "--all", "--with-evidence", "--at", "2026-12-02T00:00:00+08:00").stdout
    monkeypatch.setattr(exchange, "EVIDENCE_PIECE", 1)  # a piece per order
    pieces = invoke("export", "--all", "--with-evidence", "--at", "2026-12-02T00:00:00+08:00").stdout
    assert pieces == whole
    orders = json.loads(whole)["orders"]
    assert [len(o["evidence"]) for o in orders] == [2, 1, 1, 1]
    assert list(orders[0])[-2:] == ["evidence", "sealed"]
    (tmp_path / "sealed.json").write_text(whole, encoding="utf-8")
    public = json.loads(made.stdout)["public_key"]
    verified = invoke("verify", str(tmp_path / "sealed.json"), "--public-key", public)
    assert verified.exit_code == 0, verified.stderr


def test_export_with_evidence_replays_and_imports_with_the_contents_on_both_backends(invoke, tmp_path, backend, request):
    run = _db(invoke, backend)
    contents = _book(run, tmp_path)
    document = _export(run, "--with-evidence")
    (tmp_path / "e.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    replayed = run("replay", str(tmp_path / "e.json"))
    assert replayed.exit_code == 0, replayed.stderr
    target = request.getfixturevalue("pg_server")() if "://" in backend else str(tmp_path / "copy.db")
    imported = _db(invoke, target)("import", str(tmp_path / "e.json"))
    assert imported.exit_code == 0, imported.stderr
    copy = _db(invoke, target)
    assert [(r["name"], r["held"]) for r in _listed(copy)] == [("a.png", True), ("b.txt", True), ("dup.txt", True)]
    for name, data in contents.items():
        out = tmp_path / f"back-{name}"
        assert copy("evidence", "1", "--get", _sha(data), "--out", str(out)).exit_code == 0
        assert out.read_bytes() == data
    assert _export(copy, "--with-evidence") == document  # the same file again, contents included
    deliver_outbox(copy)
    doctor = copy("doctor", "--json", "--now", "2026-12-01T12:00")
    assert doctor.exit_code == 0, doctor.stdout


def test_an_export_without_evidence_imports_the_files_as_not_held_here(invoke, tmp_path, backend, request):
    run = _db(invoke, backend)
    contents = _book(run, tmp_path)
    (tmp_path / "plain.json").write_text(json.dumps(_export(run), ensure_ascii=False), encoding="utf-8")
    target = request.getfixturevalue("pg_server")() if "://" in backend else str(tmp_path / "copy.db")
    copy = _db(invoke, target)
    assert copy("import", str(tmp_path / "plain.json")).exit_code == 0
    assert [(r["name"], r["held"]) for r in _listed(copy)] == [("a.png", False), ("b.txt", False), ("dup.txt", False)]
    got = copy("evidence", "1", "--get", _sha(contents["a.png"]), "--out", str(tmp_path / "x"))
    assert got.exit_code == 1 and "is recorded but not held in this database" in got.stderr
    assert not (tmp_path / "x").exists()
    deliver_outbox(copy)
    assert copy("doctor", "--now", "2026-12-01T12:00").exit_code == 0  # not held is no damage


def test_the_contents_fill_in_files_recorded_as_not_held(tmp_path):
    """An import with the contents of a file this database knows only by its hash keeps them;
    a content held already is never replaced."""
    from coopctl.store import Store, locate

    store = Store(locate(str(tmp_path / "s.db")))
    store.initialise()
    one, two = ev.HeldFile(ev.EvidenceFile("a", 3, _sha(b"one")), b"one"), ev.HeldFile(ev.EvidenceFile("b", 3, _sha(b"two")), b"two")
    with store.write() as tx:
        tx.record_evidence([one.file, two.file])
        tx.store_evidence([one])
    with store.write() as tx:
        tx.store_evidence([ev.HeldFile(one.file, b"bad"), two])  # the first is held already: left as it is
        tx.record_evidence([one.file])
    with store.read() as tx:
        assert tx.evidence_contents([one.file.sha256, two.file.sha256]) == {one.file.sha256: b"one", two.file.sha256: b"two"}
    store.dispose()


def _forged(document: dict, change) -> dict:
    copy = json.loads(json.dumps(document))
    change(copy["orders"][0]["evidence"])
    return copy


FORGERIES = {
    "content": (lambda e: e[0].update(content_base64=base64.b64encode(b"x" * 5000).decode()), "does not hash to the sha256 its event recorded"),
    "base64": (lambda e: e[1].update(content_base64="!!not base64!!"), "content_base64 is not valid base64"),
    "short": (lambda e: e[1].update(content_base64=base64.b64encode(b"second fil").decode()), "its content is 10 bytes, the event recorded 11"),
    "size": (lambda e: e[1].update(size=12), "has size 12, the event recorded 11"),
    "name": (lambda e: e[1].update(name="other.txt"), "is named 'other.txt', which no event recorded"),
    "unnamed": (lambda e: e.append({"sha256": _sha(b"z"), "name": "z", "size": 1, "content_base64": "eg=="}), "is named by no event"),
    "twice": (lambda e: e.append(dict(e[0])), "is embedded twice"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_embedded_file_is_refused_by_replay_and_import_naming_order_and_seq(invoke, tmp_path, db_path, forgery):
    _book(invoke, tmp_path)
    change, why = FORGERIES[forgery]
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(_forged(_export(invoke, "--with-evidence"), change), ensure_ascii=False), encoding="utf-8")
    replayed = invoke("replay", str(path))
    assert replayed.exit_code == 1
    assert replayed.stderr.startswith("error: order 1 diverges at event seq 3: evidence file ") and why in replayed.stderr
    target = tmp_path / "copy.db"
    imported = invoke("import", str(path), env={"COOPCTL_DB": str(target)})
    assert imported.exit_code == 1 and why in imported.stderr and "nothing was imported" in imported.stderr
    assert not target.exists()  # refused before anything was created


@pytest.mark.parametrize("value,why", [
    ("x", "'evidence' must be an array"),
    ([{"sha256": "0" * 64, "name": "a", "size": 1}], "exactly sha256, name, size and content_base64"),
    ([{"sha256": "0" * 63, "name": "a", "size": 1, "content_base64": ""}], "sha256 must be"),
    ([{"sha256": "0" * 64, "name": "a\x1b", "size": 1, "content_base64": ""}], "U+001B"),
    ([{"sha256": "0" * 64, "name": "a", "size": 1, "content_base64": 5}], "content_base64 must be text"),
])
def test_a_malformed_evidence_array_is_not_a_coopctl_export(invoke, tmp_path, value, why):
    _book(invoke, tmp_path)
    document = _export(invoke)
    document["orders"][0]["evidence"] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = invoke("replay", str(path))
    assert result.exit_code == 2 and why in result.stderr and "order 1" in result.stderr, result.stderr


# --------------------------------------------------------------------------- schema 3 -> 4

V3_DDL = Path(__file__).parent / "fixtures" / "schema_v3.sql"


def _build_v3(path: Path) -> None:
    """A version-3 database as coopctl 0.3 left it (tests/test_migrations.py's builder)."""
    from test_migrations import build_v3

    build_v3(path, orders=4)


def _schema(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return {n: " ".join(sql.split()) for n, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
    finally:
        conn.close()


def test_a_version_3_database_is_upgraded_in_place_with_the_evidence_table(run_coopctl, tmp_path, db_path):
    assert SCHEMA_VERSION == 4
    _build_v3(db_path)
    before = read_rows(db_path)
    assert "evidence_files" not in before
    result = run_coopctl("list", "--json")
    assert result.returncode == 0, result.stderr
    after = read_rows(db_path)
    assert after["evidence_files"] == []
    from test_migrations import V4_ADDED

    assert {k: v for k, v in after.items() if k != "coopctl_meta"} == {
        **{k: v for k, v in before.items() if k != "coopctl_meta"}, **V4_ADDED(before),
    }
    assert dict(after["coopctl_meta"])["schema_version"] == "4"
    fresh = tmp_path / "fresh.db"
    assert run_coopctl("init", env={"COOPCTL_DB": str(fresh)}).returncode == 0
    assert _schema(db_path) == _schema(fresh)
    doctor = run_coopctl("doctor", "--json")
    assert all(f["check"] != "schema" or f["ok"] for f in json.loads(doctor.stdout)["findings"])


def test_a_failing_v4_step_leaves_version_3(db_path, monkeypatch):
    from coopctl import migrations
    from coopctl.errors import StorageError
    from coopctl.store import Store, locate

    _build_v3(db_path)
    before = read_rows(db_path)

    def half_then_fail(conn):
        migrations._V4_EVIDENCE.create(conn)
        raise StorageError("simulated failure in the evidence step")

    monkeypatch.setattr(migrations, "_v4_evidence", half_then_fail)
    store = Store(locate(str(db_path)))
    with pytest.raises(StorageError, match="simulated failure"):
        store.require()
    store.dispose()
    assert read_rows(db_path) == before


@pytest.mark.postgres
def test_a_version_3_database_on_postgresql_is_upgraded_and_holds_bytea_contents(invoke, pg_url, tmp_path):
    from sqlalchemy import create_engine, text

    run = _db(invoke, pg_url)
    _effective(run)
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:  # back to version 3: no evidence table
            conn.execute(text("DROP TABLE evidence_files"))
            conn.execute(text("UPDATE coopctl_meta SET value = '3' WHERE key = 'schema_version'"))
        content = bytes(range(256)) * 10
        assert _deliver(run, _file(tmp_path, "bytes.bin", content)).exit_code == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT value FROM coopctl_meta WHERE key = 'schema_version'")).scalar() == str(SCHEMA_VERSION)
            kind = conn.execute(text("SELECT data_type FROM information_schema.columns WHERE table_name = 'evidence_files' AND column_name = 'content'")).scalar()
            assert kind == "bytea"
            assert bytes(conn.execute(text("SELECT content FROM evidence_files")).scalar()) == content
    finally:
        engine.dispose()
    out = tmp_path / "back.bin"
    assert run("evidence", "1", "--get", _sha(content), "--out", str(out)).exit_code == 0 and out.read_bytes() == content
