"""Sealed histories (SPEC section 6): RFC 6962 hashing checked against an independent
implementation written here from RFC 6962 section 2.1 and against the published Certificate
Transparency vectors; keygen, seal, seal --check, the export's seal parts, verify (every forgery
caught, naming the order and seq), replay --public-key, doctor, on both backends where a database
is involved."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
from datetime import timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopctl import seal
from coopctl.lifecycle import event_hash
from coopctl.policy import parse_instant
from conftest import base_env, coopctl_executable
from dbtools import deliver_outbox

# --------------------------------------------------------------------------- RFC 6962, written again


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """RFC 6962 2.1: MTH({}) = SHA-256(), MTH({d0}) = SHA-256(0x00 || d0), else split at k."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return ref_leaf(d[0])
    k = ref_k(len(d))
    return ref_node(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1: PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_root_from_path(m: int, n: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    """The root PATH(m, D[n]) leads to, by the same recursion read backwards (None: wrong length)."""
    if n == 1:
        return leaf if not path else None
    if not path:
        return None
    k = ref_k(n)
    if m < k:
        inner = ref_root_from_path(m, k, leaf, path[:-1])
        return None if inner is None else ref_node(inner, path[-1])
    inner = ref_root_from_path(m - k, n - k, leaf, path[:-1])
    return None if inner is None else ref_node(path[-1], inner)


def memory_tree(data: list[bytes]) -> seal.Tree:
    """coopctl's Tree over leaves kept in memory, built as `seal` builds the stored one: the
    nodes its incremental `push` makes, leaves at level 0."""
    nodes: dict[tuple[int, int], bytes] = {}
    stack: list = []
    for i, d in enumerate(data):
        leaf = seal.leaf_hash(d)
        nodes[(0, i)] = leaf
        made: list = []
        seal.push(stack, leaf, i, made)
        for level, idx, h in made:
            nodes[(level, idx)] = h
    return seal.Tree(lambda level, first, last: {i: nodes[(level, i)] for i in range(first, last + 1) if (level, i) in nodes})


CT_LEAVES = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [  # the Certificate Transparency reference roots for the first 1..8 of those leaves
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_the_empty_tree_and_the_prefixes_are_rfc_6962s():
    assert seal.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert seal.fold([]) == seal.EMPTY_ROOT == memory_tree([]).root(0)
    assert seal.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert seal.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@pytest.mark.parametrize("n", range(1, 9))
def test_roots_match_the_certificate_transparency_vectors(n):
    tree = memory_tree(CT_LEAVES[:n])
    assert tree.root(n).hex() == CT_ROOTS[n - 1]
    assert seal.mth([seal.leaf_hash(d) for d in CT_LEAVES[:n]]).hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize("m, n, path", [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
])
def test_inclusion_proofs_match_the_certificate_transparency_vectors(m, n, path):
    tree = memory_tree(CT_LEAVES[:n])
    assert [p.hex() for p in tree.proof(m, n)] == path
    assert seal.verify_inclusion(m, n, seal.leaf_hash(CT_LEAVES[m]), [bytes.fromhex(p) for p in path], bytes.fromhex(CT_ROOTS[n - 1]))


def test_the_exports_proofs_by_level_are_the_rfc_paths_for_sizes_1_to_130_and_every_index():
    """`Tree.sealed_parts` (an export's fast path, siblings level by level and the proof's text
    above them kept in a shared memo) gives the RFC's PATH(m, D[n]) for every leaf, proofs asked
    in order, out of order and twice, in one call or across calls, with the chunk's leaves at hand
    or read, as the text the JSON encoder writes for the part."""
    data = [hashlib.sha256(str(i).encode()).digest() for i in range(130)]
    tree = memory_tree(data)
    for n in range(1, 131):
        memo: dict = {}
        order = [*range(n), *reversed(range(n)), *range(0, n, 3), n - 1, n - 1, 0]
        pairs = [(1 + m % 5, m) for m in order]
        # the text an export writes: the encoder's own indenting of the part, at its depth
        expected = [json.dumps({"sealed": {"seq": seq, "log_index": m, "proof": [p.hex() for p in ref_path(m, data[:n])]}},
                               indent=2).replace("\n", "\n    ").encode()[1:-6] for seq, m in pairs]
        assert [seal.sealed_text(seq, m, ref_path(m, data[:n])) for seq, m in pairs] == expected, n
        at_hand = {m: data[m].hex() for m in range(0, n, 2)}
        assert tree.sealed_parts(pairs[:n], n, memo, at_hand) + tree.sealed_parts(pairs[n:], n, memo) == expected, n
        assert [tree.sealed_parts([pair], n, {})[0] for pair in pairs[:n]] == expected[:n], n
    for m, n, path in [(0, 1, []), (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"])]:
        part = seal.sealed_text(1, m, memory_tree(CT_LEAVES[:n]).proof(m, n))
        assert seal.sealed_json(part) == {"seq": 1, "log_index": m, "proof": path}


def test_the_exports_proofs_hash_a_damaged_event_hash_at_hand_as_the_stored_tree_does():
    """A chunk's leaf whose stored hash is not 64 hex digits (written outside coopctl: too short,
    too long, spaced, not hex) is hashed as its text (`_event_bytes`), as the stored tree hashes
    it, whether the chunk's other leaves are regular or not: the proofs are the RFC's paths over
    those leaves, so the damage shows where a verifier looks, not as a proof that cannot be made."""
    texts = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(12)]
    texts[3] = texts[3][:62]
    texts[6] = texts[6] + "ab"
    texts[8] = " ".join([texts[8][:32], texts[8][32:62]])  # 63 characters, 31 bytes through fromhex
    texts[9] = "zz" + texts[9][2:]
    data = [seal._event_bytes(text) for text in texts]
    assert [len(d) for d in data if len(d) != 32] == [62, 66, 63, 64]  # each hashed as its UTF-8 text
    tree = memory_tree(data)
    n = len(data)
    pairs = [(1, m) for m in range(n)]
    expected = [seal.sealed_text(1, m, ref_path(m, data)) for m in range(n)]
    for at_hand in ({m: texts[m] for m in range(n)}, {m: texts[m] for m in (0, 1, 2, 4, 5, 10, 11)}, {m: texts[m] for m in (2, 3)}):
        assert tree.sealed_parts(pairs, n, {}, at_hand) == expected


def test_mth_path_and_verification_agree_with_the_rfc_for_sizes_1_to_70_and_every_index():
    data = [hashlib.sha256(str(i).encode()).digest() for i in range(70)]
    tree = memory_tree(data)
    for n in range(1, 71):
        root = ref_mth(data[:n])
        assert tree.root(n) == root, n
        edge = seal.fold(tree.right_edge(n))
        assert edge == root, n
        for m in range(n):
            path = tree.proof(m, n)
            assert path == ref_path(m, data[:n]), (m, n)
            assert ref_root_from_path(m, n, ref_leaf(data[m]), path) == root
            assert seal.verify_inclusion(m, n, ref_leaf(data[m]), path, root)
            other = (m + 1) % n
            if other != m:  # a proof never verifies another leaf at its index, nor this leaf at another index
                assert not seal.verify_inclusion(m, n, ref_leaf(data[other]), path, root)
                assert not seal.verify_inclusion(other, n, ref_leaf(data[m]), path, root) or ref_path(other, data[:n]) == path
            for size in (n + 1, n + 2):  # another size is checked by the RFC's own recursion: both agree
                assert seal.verify_inclusion(m, size, ref_leaf(data[m]), path, root) == (ref_root_from_path(m, size, ref_leaf(data[m]), path) == root)
            assert not seal.verify_inclusion(m, n, ref_leaf(data[m]), path + [root], root)
            if path:
                assert not seal.verify_inclusion(m, n, ref_leaf(data[m]), path[:-1], root)


# --------------------------------------------------------------------------- keys


def test_keygen_writes_a_private_pkcs8_pem_whatever_the_umask_and_prints_only_the_public_key(tmp_path):
    out = tmp_path / "seal.key"
    result = subprocess.run(
        ["sh", "-c", f"umask 000 && exec {coopctl_executable()} keygen --out {out}"],
        capture_output=True, text=True, env=base_env(tmp_path / "none.db"), cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pem = out.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS #8
    public = result.stdout.strip()
    assert len(public) == 44 and len(seal.parse_public_key(public)) == 32
    body = "".join(pem.splitlines()[1:-1])
    assert body not in result.stdout + result.stderr and body[:20] not in result.stdout
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem.encode(), None)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert seal.parse_public_key(public) == raw
    assert not (tmp_path / "none.db").exists()


def test_keygen_never_overwrites_a_file_exit_2(invoke, tmp_path):
    out = tmp_path / "seal.key"
    out.write_text("precious")
    result = invoke("keygen", "--out", str(out))
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert out.read_text() == "precious"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert invoke("keygen", "--out", str(tmp_path / "dangling")).exit_code == 2
    assert not (tmp_path / "nowhere").exists()


def _init(invoke, db: str):
    assert invoke("init", env={"COOPCTL_DB": db}).exit_code == 0


@pytest.mark.parametrize("problem", ["unset", "missing", "directory", "garbage", "empty_env"])
def test_seal_without_a_usable_key_is_exit_2_in_one_line_and_stores_nothing(invoke, tmp_path, db_path, problem):
    _init(invoke, str(db_path))
    env = {"unset": {}, "missing": {"COOPCTL_SIGNING_KEY": str(tmp_path / "no.key")},
           "directory": {"COOPCTL_SIGNING_KEY": str(tmp_path)}, "empty_env": {"COOPCTL_SIGNING_KEY": ""}}.get(problem)
    if problem == "garbage":
        (tmp_path / "bad.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        env = {"COOPCTL_SIGNING_KEY": str(tmp_path / "bad.key")}
    result = invoke("seal", env=env)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and result.stdout == ""
    assert sqlite3.connect(db_path).execute("SELECT count(*) FROM seal_heads").fetchone() == (0,)


def test_the_configured_key_is_read_beside_the_config_file_and_the_environment_wins(invoke, tmp_path, db_path):
    _init(invoke, str(db_path))
    folder = tmp_path / "etc"
    folder.mkdir()
    assert invoke("keygen", "--out", str(folder / "seal.key")).exit_code == 0
    other = invoke("keygen", "--out", str(tmp_path / "other.key")).stdout.strip()
    (folder / "coopctl.toml").write_text('[evidence]\nsigning_key = "seal.key"\n')
    config = {"COOPCTL_CONFIG": str(folder / "coopctl.toml")}
    first = invoke("seal", "--json", env=config)
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["public_key"] != other
    wins = invoke("seal", "--now", "now+1m", "--json", env={**config, "COOPCTL_SIGNING_KEY": str(tmp_path / "other.key")})
    assert wins.exit_code == 0  # nothing new: the last head again, whoever's key is configured
    (folder / "coopctl.toml").write_text('[evidence]\nsigning_key = 7\n')
    bad = invoke("seal", env=config)
    assert bad.exit_code == 2 and "evidence.signing_key" in bad.stderr
    (folder / "coopctl.toml").write_text('[evidence]\nkey = "x"\n')
    assert invoke("seal", env=config).exit_code == 2


# --------------------------------------------------------------------------- a small sealed book


M, C = "商家-1", "达人-1"


def _create(invoke, db: str, n: int, at: str) -> None:
    for i in range(n):
        r = invoke("create", "--merchant", f"{M}{i}", "--creator", f"{C}{i}", "--product", f"P-{i}", "--form", "live",
                   "--commission", "12.5", "--ad-budget", "5000", "--latest-start", "2026-12-20T10:00", "--note", f"order {i}",
                   "--at", at, env={"COOPCTL_DB": db})
        assert r.exit_code == 0, r.stderr


@pytest.fixture
def book(invoke, tmp_path, backend):
    """A book on either backend: 5 orders, sealed, then more events; a key and its public key."""
    key = tmp_path / "seal.key"
    public = invoke("keygen", "--out", str(key)).stdout.strip()
    (tmp_path / "seal.pub").write_text(public + "\n")
    env = {"COOPCTL_DB": backend, "COOPCTL_SIGNING_KEY": str(key)}
    _init(invoke, backend)
    _create(invoke, backend, 5, "2026-12-01T10:00")
    assert invoke("accept", "2", "--creator", f"{C}1", "--at", "2026-12-01T11:00", env=env).exit_code == 0
    first = invoke("seal", "--now", "2026-12-01T12:00", "--json", env=env)
    assert first.exit_code == 0, first.stderr
    assert invoke("accept", "3", "--creator", f"{C}2", "--at", "2026-12-01T13:00", env=env).exit_code == 0
    assert invoke("go-live", "3", "--creator", f"{C}2", "--at", "2026-12-01T14:00", env=env).exit_code == 0

    def run(*args, **extra):
        return invoke(*args, env={**env, **extra})

    run.db, run.key, run.public, run.first_head = backend, key, public, json.loads(first.stdout)
    run.pub_file = tmp_path / "seal.pub"
    return run


def _export(book, tmp_path, name="e.json", *ids) -> dict:
    out = tmp_path / name
    args = [str(i) for i in ids] if ids else ["--all"]
    r = book("export", *args, "--out", str(out), "--at", "2026-12-02T00:00")
    assert r.exit_code == 0, r.stderr
    return json.loads(out.read_text())


def _write(tmp_path, document, name="forged.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2))
    return path


def _rechain(order: dict) -> None:
    """What a forger does: recompute every hash of the order's chain after changing it."""
    previous = "0" * 64
    for position, e in enumerate(order["events"], start=1):
        e["seq"] = position
        e["prev_hash"] = previous
        e["hash"] = event_hash(order["id"], position, e["kind"], parse_instant(e["at"], timezone.utc), e["actor"], e["operator"], e["data"], previous)
        previous = e["hash"]
    if "last_hash" in order:
        order["last_hash"] = previous


def test_seal_signs_the_rfc_6962_root_of_every_event_and_nothing_new_stores_nothing(book, tmp_path):
    head = book.first_head
    assert set(head) == {"size", "root", "sealed_at", "public_key", "signature"}
    assert head["sealed_at"] == "2026-12-01T04:00:00+00:00" and head["public_key"] == book.public
    document = _export(book, tmp_path)
    hashes = [bytes.fromhex(e["hash"]) for o in document["orders"] for e in o["events"]]
    assert head["size"] == 6  # 5 created + 1 accepted, numbered by (order id, seq)
    sealed_hashes = [bytes.fromhex(e["hash"]) for o in document["orders"] for e in o["events"]
                     if o["id"] != 3 or e["seq"] == 1]
    assert head["root"] == ref_mth(sealed_hashes).hex()
    message = json.dumps({"log": "coopctl", "size": 6, "root": head["root"], "sealed_at": head["sealed_at"]},
                         sort_keys=True, separators=(",", ":")).encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    import base64

    Ed25519PublicKey.from_public_bytes(base64.b64decode(book.public)).verify(base64.b64decode(head["signature"]), message)
    second = book("seal", "--now", "2026-12-01T15:00", "--json")
    assert json.loads(second.stdout)["size"] == 8 and second.exit_code == 0
    again = book("seal", "--now", "2026-12-01T16:00", "--json")
    assert json.loads(again.stdout) == json.loads(second.stdout)  # the last head again
    text = book("seal", "--now", "2026-12-01T16:00")
    assert text.exit_code == 0 and text.stdout.count("\n") == 1 and "nothing new" in text.stdout
    assert book("seal", "--check").exit_code == 0
    backwards = book("seal", "--now", "2026-12-01T14:30")
    assert backwards.exit_code == 1 and "time does not go backwards" in backwards.stderr
    # the log: the first seal's events, then what the second added (order 3's seq 2 and 3)
    later = [bytes.fromhex(e["hash"]) for o in document["orders"] if o["id"] == 3 for e in o["events"][1:]]
    assert ref_mth(sealed_hashes + later).hex() == json.loads(second.stdout)["root"]
    assert sorted(hashes) == sorted(sealed_hashes + later)


def test_an_untouched_export_verifies_with_only_the_public_key_in_a_process_with_no_database(book, tmp_path):
    _export(book, tmp_path)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = subprocess.run(
        [coopctl_executable(), "verify", str(tmp_path / "e.json"), "--public-key", str(book.pub_file)],
        capture_output=True, text=True, env={**base_env(empty / "no.db"), "COOPCTL_SIGNING_KEY": ""}, cwd=empty, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert list(empty.iterdir()) == []  # no database was made or opened
    lines = result.stdout.splitlines()
    assert lines[0] == "tree head: 6 events sealed at 2026-12-01T04:00:00+00:00, signed by this key"
    assert lines[1].startswith("  root ") and len(lines[1]) == 7 + 64
    assert "order 2: sealed up to seq 2 (every event)" in lines
    assert "order 3: sealed up to seq 1; seq 2-3 not sealed yet" in lines
    inline = book("verify", str(tmp_path / "e.json"), "--public-key", book.public, "--json")
    assert inline.exit_code == 0 and json.loads(inline.stdout)["ok"] is True
    required = book("verify", str(tmp_path / "e.json"), "--public-key", book.public, "--require-sealed")
    assert required.exit_code == 1 and "order 3 seq 2: not sealed yet" in required.stderr
    assert book("seal", "--now", "2026-12-01T15:00").exit_code == 0
    _export(book, tmp_path, "later.json")
    assert book("verify", str(tmp_path / "later.json"), "--public-key", book.public, "--require-sealed").exit_code == 0


def test_replay_and_import_accept_sealed_exports_and_replay_checks_the_seal_first(book, tmp_path, invoke):
    document = _export(book, tmp_path)
    assert book("replay", str(tmp_path / "e.json")).exit_code == 0
    assert book("replay", str(tmp_path / "e.json"), "--public-key", book.public).exit_code == 0
    copy_db = str(tmp_path / "copy.db")
    imported = invoke("import", str(tmp_path / "e.json"), env={"COOPCTL_DB": copy_db})
    assert imported.exit_code == 0, imported.stderr
    forged = copy.deepcopy(document)
    forged["orders"][0]["events"][0]["data"]["terms"]["commission_pct"] = "99"
    _rechain(forged["orders"][0])
    result = book("replay", str(_write(tmp_path, forged)), "--public-key", book.public)
    assert result.exit_code == 1 and "order 1 seq 1" in result.stderr


def test_an_unsealed_database_exports_without_seal_parts(invoke, tmp_path, db_path):
    _init(invoke, str(db_path))
    _create(invoke, str(db_path), 2, "2026-12-01T10:00")
    out = tmp_path / "plain.json"
    assert invoke("export", "--all", "--out", str(out), "--at", "2026-12-02T00:00").exit_code == 0
    text = out.read_text()
    assert '"seal"' not in text and '"sealed"' not in text
    document = json.loads(text)
    assert list(document) == ["format", "version", "exported_at", "orders"]
    result = invoke("verify", str(out), "--public-key", "A" * 43 + "=")
    assert result.exit_code == 0 and "not sealed yet" in result.stdout
    assert invoke("verify", str(out), "--public-key", "A" * 43 + "=", "--require-sealed").exit_code == 1


def _forgeries(document: dict, older: dict, other_key_head: dict) -> dict:
    """name -> (forged document, what the error must name)."""
    out = {}

    def variant(name, change, names):
        d = copy.deepcopy(document)
        change(d)
        out[name] = (d, names)

    def order(d, i):
        return next(o for o in d["orders"] if o["id"] == i)

    def altered_event(d):
        order(d, 2)["events"][1]["operator"] = "someone else"
        _rechain(order(d, 2))

    def changed_terms(d):
        order(d, 1)["events"][0]["data"]["terms"]["commission_pct"] = "50"
        order(d, 1)["commission_pct"] = "50"
        _rechain(order(d, 1))

    def changed_terms_of_the_order_only(d):
        order(d, 4)["commission_pct"] = "50.00"

    def removed_last(d):
        del order(d, 2)["events"][-1]

    def removed_middle(d):
        o = order(d, 3)  # sealed up to seq 3: remove seq 1 and rechain the rest
        del o["events"][0]
        _rechain(o)

    def added_inside(d):
        o = order(d, 2)
        extra = copy.deepcopy(o["events"][1])
        extra["at"] = o["events"][0]["at"]  # accepted twice, the first time at once
        o["events"].insert(1, extra)
        _rechain(o)

    def proof_of_another(d):
        order(d, 1)["sealed"] = copy.deepcopy(order(d, 4)["sealed"])

    def altered_head(d):
        d["seal"]["root"] = "0" * 64

    def head_size(d):
        d["seal"]["size"] += 1

    def older_head(d):
        d["seal"] = copy.deepcopy(older)

    def other_key(d):
        d["seal"] = copy.deepcopy(other_key_head)

    variant("altered event, chain recomputed", altered_event, ("order 2", "seq 2"))
    variant("changed terms, chain recomputed", changed_terms, ("order 1", "seq 1"))
    variant("changed terms of the order, events untouched", changed_terms_of_the_order_only, ("order 4", "seq 2", "commission_pct"))
    variant("last sealed event removed", removed_last, ("order 2", "seq 2"))
    variant("first event removed, chain recomputed", removed_middle, ("order 3", "seq 3", "removed"))
    variant("event added inside, chain recomputed", added_inside, ("order 2", "seq 2"))
    variant("proof of another order", proof_of_another, ("order 1", "seq 1"))
    variant("altered tree head", altered_head, ("the tree head",))
    variant("tree head size changed", head_size, ("the tree head",))
    variant("a tree head older than the proofs", older_head, ("order 1", "seq 1"))
    variant("signature of another key", other_key, ("the tree head", "another key"))
    return out


def test_every_forgery_is_caught_by_verify_with_exit_1_naming_the_order_and_seq(book, tmp_path, invoke):
    older = _export(book, tmp_path, "older.json")["seal"]
    assert book("accept", "4", "--creator", f"{C}3", "--at", "2026-12-01T15:00").exit_code == 0
    assert book("seal", "--now", "2026-12-01T16:00").exit_code == 0
    document = _export(book, tmp_path)
    other_key = tmp_path / "other.key"
    other_public = invoke("keygen", "--out", str(other_key)).stdout.strip()
    other_db = str(tmp_path / "other.db")
    _init(invoke, other_db)
    _create(invoke, other_db, 1, "2026-12-01T10:00")
    other_head = json.loads(invoke("seal", "--json", env={"COOPCTL_DB": other_db, "COOPCTL_SIGNING_KEY": str(other_key)}).stdout)
    assert book("verify", str(_write(tmp_path, document, "untouched.json")), "--public-key", book.public).exit_code == 0
    for name, (forged, names) in _forgeries(document, older, other_head).items():
        result = book("verify", str(_write(tmp_path, forged)), "--public-key", book.public)
        assert result.exit_code == 1, (name, result.stdout, result.stderr)
        first = result.stderr.splitlines()[0]
        assert first.startswith("error: ") and result.stderr.count("\n") == 1, name
        for word in names:
            assert word in first, (name, first)
    # the head of another key verifies with that key: only its proofs fail
    signed_elsewhere = copy.deepcopy(document)
    signed_elsewhere["seal"] = other_head
    result = book("verify", str(_write(tmp_path, signed_elsewhere)), "--public-key", other_public)
    assert result.exit_code == 1 and "order 1 seq 1" in result.stderr


@pytest.mark.parametrize("bad", [
    {"format": "something"}, [], {"format": "coopctl-export", "version": 1, "exported_at": "2026-12-02T00:00:00+00:00", "orders": [], "seal": {"size": -1}},
])
def test_verify_is_exit_2_for_a_file_that_is_not_a_coopctl_export(invoke, tmp_path, bad):
    path = _write(tmp_path, bad)
    result = invoke("verify", str(path), "--public-key", "A" * 43 + "=")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_a_malformed_proof_is_exit_2_and_a_bad_public_key_is_exit_2(book, tmp_path):
    document = _export(book, tmp_path)
    document["orders"][0]["sealed"]["proof"] = ["zz"]
    assert book("verify", str(_write(tmp_path, document)), "--public-key", book.public).exit_code == 2
    assert book("replay", str(tmp_path / "forged.json")).exit_code == 2
    for key in ("not base64!", "AAAA", "", book.public[:-2] + "x="):
        result = book("verify", str(tmp_path / "e.json"), "--public-key", key)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, key


def _rewrite_in_database(db: str) -> None:
    """What an insider does: change an event inside the database and recompute its chain."""
    import sqlalchemy

    url = db if "://" in db else f"sqlite:///{db}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        rows = conn.exec_driver_sql("SELECT seq, kind, at, actor, operator, data FROM events WHERE order_id = 2 ORDER BY seq").all()
        previous = "0" * 64
        for seq, kind, at, actor, operator, data in rows:
            data = json.loads(data)
            if seq == 1:
                data["terms"]["commission_pct"] = "1"
            h = event_hash(2, seq, kind, at, actor, "forger" if seq == 1 else operator, data, previous)
            conn.exec_driver_sql(
                "UPDATE events SET data = %s, operator = %s, prev_hash = %s, hash = %s WHERE order_id = 2 AND seq = %s"
                .replace("%s", "?" if url.startswith("sqlite") else "%s"),
                (json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False), "forger" if seq == 1 else operator, previous, h, seq),
            )
            previous = h
        conn.exec_driver_sql(
            "UPDATE orders SET last_hash = %s, commission_pct = '1' WHERE id = 2".replace("%s", "?" if url.startswith("sqlite") else "%s"),
            (previous,),
        )
    engine.dispose()


def test_seal_check_catches_a_history_rewritten_inside_the_database(book):
    assert book("seal", "--now", "2026-12-01T15:00").exit_code == 0
    ok = book("seal", "--check", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout) == {"heads": 2, "size": 8, "ok": True, "problem": None}
    _rewrite_in_database(book.db)
    result = book("seal", "--check")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: tree head 1 (size 6") and result.stderr.count("\n") == 1
    doctor = book("doctor", "--now", "2026-12-01T15:01", "--json")
    assert doctor.exit_code == 1
    assert [f["ok"] for f in json.loads(doctor.stdout)["findings"] if f["check"] == "seal_check"] == [False]


def test_doctor_reports_events_unsealed_for_longer_than_the_grace(book):
    deliver_outbox(book)  # the outbox is delivered: the sealing finding is the only one
    fine = book("doctor", "--now", "2026-12-01T13:05", "--grace", "10m", "--quick", "--json")
    assert fine.exit_code == 0, fine.stdout
    late = book("doctor", "--now", "2026-12-01T15:00", "--grace", "10m", "--quick", "--json")
    assert late.exit_code == 1
    finding = next(f for f in json.loads(late.stdout)["findings"] if f["check"] == "sealed")
    assert finding["ok"] is False and finding["order"] == 3 and finding["seq"] == 2
    assert book("seal", "--now", "2026-12-01T15:00").exit_code == 0
    assert book("doctor", "--now", "2026-12-01T15:00", "--grace", "10m", "--quick").exit_code == 0


# --------------------------------------------------------------------------- property: random histories


def _in_process_book(path: Path, plan: list[tuple[str, int]], key) -> tuple[dict, bytes]:
    """Orders brought to random scenarios through the rules, sealed at the planned moments, exported."""
    from coopctl import exchange
    from coopctl.config import Settings
    from coopctl.policy import DAY
    from coopctl.service import Service
    from coopctl.store import Store, locate
    from dbtools import BASE, scenario_outcome

    store = Store(locate(str(path)))
    store.initialise()
    sealed_at = BASE
    for number, (scenario, seal_after) in enumerate(plan, start=1):
        with store.write() as tx:
            tx.insert_new([scenario_outcome(number, BASE + number * 60_000_000, BASE + 5 * DAY, scenario)])
            if seal_after:
                sealed_at += 60_000_000
                seal.seal(tx, key, BASE + 10 * DAY + sealed_at - BASE)
    svc = Service(store, Settings(), "ops-test")
    text = exchange.dumps(exchange.export_document(svc, None, exported_at=BASE + 30 * DAY, tz=timezone.utc))
    store.dispose()
    return json.loads(text), text.encode()


def _mutations(document: dict) -> list[tuple[str, object]]:
    """Paths to the sealed parts' values: the head, each proof, each sealed event's hash and content."""
    found: list[tuple[str, object]] = []
    if "seal" in document:
        for k in ("root", "signature", "size", "sealed_at"):
            found.append((f"seal.{k}", ("seal", k)))
    for i, o in enumerate(document["orders"]):
        if "sealed" not in o:
            continue
        found.append((f"order {o['id']} log_index", ("orders", i, "sealed", "log_index")))
        for j in range(len(o["sealed"]["proof"])):
            found.append((f"order {o['id']} proof {j}", ("orders", i, "sealed", "proof", j)))
        for j in range(o["sealed"]["seq"]):
            for k in ("hash", "operator", "at"):
                found.append((f"order {o['id']} event {j + 1} {k}", ("orders", i, "events", j, k)))
    return found


def _changed(value, at: int):
    if isinstance(value, int):
        return value + 1
    chars = list(value)
    position = at % len(chars)
    c = chars[position]
    if ":" in value and not c.isdigit():  # an instant: its digits (any one character separates date and time in ISO 8601 as Python reads it)
        position = [i for i, ch in enumerate(chars) if ch.isdigit()][at % 12]
        c = chars[position]
    if c in "0123456789abcdef":
        chars[position] = "0123456789abcdef"[("0123456789abcdef".index(c) + 1) % 16]
    elif c.isalnum():
        chars[position] = "B" if c != "B" else "C"
    else:
        position = next(i for i, ch in enumerate(chars) if ch.isdigit())
        chars[position] = "1" if chars[position] != "1" else "2"
    return "".join(chars)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(st.sampled_from(["pending", "effective", "cancel_requested", "live", "delivered", "review_failed"]), st.booleans()), min_size=1, max_size=7),
    pick=st.integers(min_value=0, max_value=10_000),
    at=st.integers(min_value=0, max_value=200),
)
def test_random_histories_sealed_at_random_moments_verify_and_no_single_change_to_a_sealed_part_does(tmp_path_factory, plan, pick, at):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from coopctl import exchange

    key = Ed25519PrivateKey.generate()
    public = seal._raw_public(key)
    path = tmp_path_factory.mktemp("prop") / "p.db"
    document, text = _in_process_book(path, plan, key)
    result = seal.verify_export(exchange.parse_document(text), public)
    assert result.failures == []
    sealed_orders = {o.order_id for o in result.orders if o.sealed_seq is not None}
    assert sealed_orders == {o["id"] for o in document["orders"] if "sealed" in o}
    mutations = _mutations(document)
    if not mutations:
        return
    name, where = mutations[pick % len(mutations)]
    forged = copy.deepcopy(document)
    target = forged
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = _changed(target[where[-1]], at)
    try:
        outcome = seal.verify_export(exchange.parse_document(json.dumps(forged)), public)
    except Exception as exc:  # malformed now: exit 2, not verified either
        from coopctl.errors import InvalidInput

        assert isinstance(exc, InvalidInput), (name, exc)
        return
    assert outcome.failures, name


def test_seals_running_at_once_never_number_an_event_twice(book, tmp_path):
    env = {**base_env(Path(book.db)), "COOPCTL_SIGNING_KEY": str(book.key)}
    if "://" in book.db:
        env["COOPCTL_DB"] = book.db
    procs = [subprocess.Popen([coopctl_executable(), "seal", "--now", "2026-12-01T15:00", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for _ in range(3)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert all(code in (0, 4) for code, _, _ in results), results
    heads = [json.loads(out) for code, out, _ in results if code == 0]
    assert heads and all(h["size"] == 8 for h in heads)
    assert book("seal", "--check").exit_code == 0


@pytest.mark.parametrize("size", [1, 2, 3, 200])
def test_an_exports_sealed_parts_are_the_last_sealed_event_and_its_rfc_path_in_chunks_of_any_size(book, size):
    """The parts come from the chunk's own event rows (`ExportSeal.sealed_of_rows`), their level-0
    siblings from the chunk's events when it holds them: in chunks of 1 (no sibling at hand), 2,
    3 and 200, each part is the order's last event under the head and `Tree.proof`'s RFC path, also
    after a second seal has put an order's newer events far from its first ones in the log."""
    from coopctl import exchange
    from coopctl.rows import driver_rows
    from coopctl.store import Store, locate

    for i in range(5, 9):
        r = book("create", "--merchant", f"{M}{i}", "--creator", f"{C}{i}", "--product", f"P-{i}", "--form", "live",
                 "--commission", "12.5", "--ad-budget", "5000", "--latest-start", "2026-12-20T10:00", "--at", "2026-12-01T15:00")
        assert r.exit_code == 0, r.stderr
    for args in (("seal", "--now", "2026-12-01T16:00"), ("deliver", "3", "--creator", f"{C}2", "--at", "2026-12-01T17:00"),
                 ("seal", "--now", "2026-12-01T18:00")):
        r = book(*args)
        assert r.exit_code == 0, r.stderr
    store = Store(locate(book.db))
    try:
        with store.read() as tx:
            sealing = exchange._sealing(tx)
            head = sealing.head
            parts = {}
            for _, _, _, sealed in exchange.chunk_rows(tx, None, sealing=sealing, size=size):
                parts.update((order_id, seal.sealed_json(part)) for order_id, part in sealed.items())
            expected = {}
            for order_id, seq, log_index in driver_rows(tx.conn, "SELECT order_id, max(seq), max(log_index) FROM events "
                                                        "WHERE log_index IS NOT NULL GROUP BY order_id", ()):
                path = [p.hex() for p in seal.stored_tree(tx.conn).proof(log_index, head.size)]
                expected[order_id] = {"seq": seq, "log_index": log_index, "proof": path}
    finally:
        store.dispose()
    assert len(expected) == 9 and parts == expected
    # order 3's delivery is the log's last leaf, after orders 6-9 sealed between its events
    assert expected[3]["log_index"] == head.size - 1 > max(expected[o]["log_index"] for o in range(6, 10))
