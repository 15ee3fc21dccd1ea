"""Sealed histories (SPEC section 6): an append-only Merkle log over every event, signed tree heads,
inclusion proofs in exports, and their offline verification.

The log follows RFC 6962 (Certificate Transparency) section 2.1 exactly, so that a verifier
written from the RFC in another language agrees:

- leaf = SHA-256(0x00 || the event's `hash` as 32 bytes), node = SHA-256(0x01 || left || right);
- MTH(D[n]) splits at k, the largest power of two smaller than n; the empty tree's root is
  SHA-256 of nothing (e3b0c442…);
- the inclusion proof of leaf m in a tree of size n is RFC 6962's PATH(m, D[n]), checked by the
  algorithm of RFC 9162 section 2.1.3.2.

Storage (schema 3): every event gets `events.log_index` when first sealed. A seal numbers the
events not yet sealed by (order id, seq) after every event sealed before (one seal is treated as
one transaction: within an order, events keep their seq order, and what a seal adds always comes
after what an earlier seal added). The complete subtrees of level >= 1 are stored in `seal_nodes`
(level, idx): a seal reads the tree's right edge (one node per set bit of the size), hashes only
the new leaves, and writes only the new nodes; a proof reads about log2(n) stored nodes and never
the log. `seal_heads` holds each signed tree head.

The signed message is `canonical_json({"log": "coopctl", "size", "root", "sealed_at"})` (sorted
keys, no spaces, UTF-8; `root` in lowercase hex, `sealed_at` ISO 8601 in UTC as
`2026-12-01T02:00:00+00:00`), signed with Ed25519 (the `cryptography` package). An export
carries that head with `sealed_at` in UTC exactly as signed, so that a verifier rebuilds the
message from the file's own text.

Nothing here imports a database library at module level: `verify` runs with no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Callable, Iterable

from coopctl.errors import InvalidInput, Refused
from coopctl.lifecycle import canonical_json
from coopctl.policy import InvalidValue, iso, parse_instant

LOG_NAME = "coopctl"
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (RFC 6962 section 2.1)
ENV_KEY = "COOPCTL_SIGNING_KEY"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
MAX_PROOF = 64  # a log of at most 2**64 leaves has proofs of at most 64 hashes
_CHUNK = 50_000  # leaves read (and nodes written) per statement while sealing or checking
_BLOCK = 256  # nodes of one level read at once for proofs (an export walks the log in order)
_EXPORT_BLOCKS = 64  # blocks an export's proofs keep (`ExportSeal`)
_PROOF_SEPARATOR = b",\n          "  # between two hashes of a "sealed" part's proof, as an export indents it


# --------------------------------------------------------------------------- RFC 6962 hashing


def leaf_hash(event_hash: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def mth(leaves: list[bytes]) -> bytes:
    """MTH of already hashed leaves, by the RFC's recursion (for small trees and the verifier)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = split(n)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def fold(stack: list[tuple[int, bytes]]) -> bytes:
    """The root of a tree from its right edge (complete subtrees, largest first): folded from the
    right, which is MTH's split at the largest power of two."""
    if not stack:
        return EMPTY_ROOT
    root = stack[-1][1]
    for _, h in reversed(stack[:-1]):
        root = node_hash(h, root)
    return root


def push(stack: list[tuple[int, bytes]], leaf: bytes, index: int, made: list | None = None) -> None:
    """Append leaf number `index` to the right edge; complete subtrees merge as they fill. Each new
    node (level, idx, hash) goes to `made`."""
    stack.append((0, leaf))
    level = 0
    while len(stack) > 1 and stack[-2][0] == level:
        right = stack.pop()[1]
        left = stack.pop()[1]
        level += 1
        h = node_hash(left, right)
        stack.append((level, h))
        if made is not None:
            made.append((level, index >> level, h))


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: is `leaf` number `index` of a tree of `size` leaves under `root`?"""
    if index < 0 or index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


class Tree:
    """A view of the stored log: node(level, idx) of a complete subtree, MTH of any range and
    inclusion proofs, from `seal_nodes` (level >= 1) and the events' hashes (level 0), read a block
    of neighbours at a time and kept in a small cache."""

    def __init__(self, fetch: Callable[[int, int, int], dict[int, bytes]], blocks: int = 512):
        self._fetch = fetch  # (level, first idx, last idx) -> {idx: hash}
        self._cache: OrderedDict[tuple[int, int], dict[int, bytes]] = OrderedDict()
        self._blocks = blocks
        self._ranges: dict[tuple[int, int], bytes] = {}

    def node(self, level: int, idx: int) -> bytes:
        try:
            return self._block(level, idx // _BLOCK)[idx]
        except KeyError:
            raise _lacks(level, idx) from None

    def _block(self, level: int, number: int) -> dict[int, bytes]:
        """The stored nodes {idx: hash} of block `number` of `level` (_BLOCK of them, fewer at the end)."""
        key = (level, number)
        block = self._cache.get(key)
        if block is None:
            first = number * _BLOCK
            block = self._fetch(level, first, first + _BLOCK - 1)
            self._cache[key] = block
            if len(self._cache) > self._blocks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return block

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]); lo is aligned to the largest power of two not above hi - lo (as every
        range of the RFC's recursion is)."""
        n = hi - lo
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self.node(level, lo >> level)
        cached = self._ranges.get((lo, hi))
        if cached is None:  # the tree's incomplete right edge: few, and the same for every proof
            k = split(n)
            cached = node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))
            if len(self._ranges) > 4096:
                self._ranges.clear()
            self._ranges[(lo, hi)] = cached
        return cached

    def root(self, size: int) -> bytes:
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def proof(self, m: int, size: int) -> list[bytes]:
        """PATH(m, D[size]), nearest sibling first."""
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = split(hi - lo)
            if m < lo + k:
                path.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.subtree(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path

    def sealed_parts(self, pairs: Iterable[tuple[int, int]], size: int, memo: dict, leaves: dict[int, str] | None = None) -> list[bytes]:
        """The "sealed" part of each (seq, leaf m) in turn, under a tree of `size` leaves, as an
        export writes it: the bytes `sealed_text(seq, m, self.proof(m, size))` gives
        (tests/test_seal.py), which `jsontext.indented` writes for the part's JSON at that depth.
        By level: at each level the sibling of the node above leaf m, complete, or cut at `size`
        on the right edge, or absent (when the sibling starts at or after `size`) until a node
        covers the whole tree; the same path as the RFC's recursion.

        `memo` (a dict, empty at first, for one tree) keeps the previous proof's siblings by level
        as hex, and the proof's text from each level up (its "tail"): above the highest bit where
        m and the previous leaf differ they are the same, so an export, which asks for
        neighbouring leaves in turn, finds about two siblings per proof instead of twenty, and
        writes the part in one formatting of the level-0 sibling and the tail above it (rebuilt
        from the lowest level that changed, about one level per proof on average). It also keeps,
        per level, the block of stored nodes the last sibling came from: the next siblings are
        nearly always in it. `leaves`, {log_index: event hash} of events at hand (an export's
        chunk: `ExportSeal.sealed_of_rows`), are hashed here rather than read. One call for a
        chunk's leaves: a million parts cost what their few changed levels cost, not a call each."""
        if memo.get("size") != size:
            height = (size - 1).bit_length() if size > 1 else 0
            # items[level]: the sibling at that level as the proof writes it after the first hash
            # (_ITEM: comma, indent, quoted hex; None: absent), items[0] the level-0 sibling's bare
            # hex; tails[level]: the items from that level up, then the closing bracket; valid
            # from `fresh` up (tails[height] is the closing alone)
            memo.update(size=size, items=[None] * height, tails=[_TAIL_END] * (height + 1), fresh=height,
                        blocks=[(-1, {})] * height, last=None)
        items, tails, fresh, blocks, last = memo["items"], memo["tails"], memo["fresh"], memo["blocks"], memo["last"]
        height = len(items)
        memo["size"] = None  # until this call ends well: a refusal below leaves the memo to be rebuilt
        hexlify, out = binascii.hexlify, []
        append = out.append
        pairs = list(pairs)
        leaves = leaves or {}
        if len(leaves) > len(pairs):  # an order's earlier events are leaves too, but no proof here needs them
            leaves = {i: leaves[i] for i in {m ^ 1 for _, m in pairs} if i in leaves}
        at_hand = _leaf_hexes(leaves)  # the level-0 siblings at hand, hashed at once
        for seq, m in pairs:
            if last is None:
                changed = height
            else:
                changed = (m ^ last).bit_length()
                if changed > height:
                    changed = height
            last = m
            if changed:
                start = m ^ 1  # level 0: a leaf, of the chunk's events when it is one of them
                if start >= size:
                    items[0] = None
                else:
                    first = at_hand.get(start)
                    items[0] = first if first is not None else hexlify(self.node(0, start))
                for level in range(1, changed):
                    start = ((m >> level) ^ 1) << level
                    if start >= size:
                        items[level] = None
                        continue
                    if start + (1 << level) <= size:
                        idx = start >> level
                        number, block = blocks[level]
                        if number != idx // _BLOCK:
                            number = idx // _BLOCK
                            block = self._block(level, number)
                            blocks[level] = (number, block)
                        node = block.get(idx)
                        if node is None:
                            raise _lacks(level, idx)
                    else:
                        node = self.subtree(start, size)
                    items[level] = _ITEM % hexlify(node)
                if fresh < changed:
                    fresh = changed
            if fresh > 1:  # the tail above level 0, from the lowest level that is still the same
                tail = tails[fresh]
                for level in range(fresh - 1, 0, -1):
                    item = items[level]
                    if item is not None:
                        tail = item + tail
                    tails[level] = tail
                fresh = 1
            first = items[0] if height else None
            if first is not None:
                append(_SEALED_PART % (seq, m, first, tails[1]))
            else:  # leaf m has no level-0 sibling (the last leaf of a tree of odd size), or the tree is one leaf
                append(_SEALED_TEXT % (seq, m, _proof_list([item[_ITEM_QUOTED:] for item in items[1:] if item is not None])))
        memo.update(size=size, fresh=fresh, last=last)
        return out

    def right_edge(self, size: int) -> list[tuple[int, bytes]]:
        """The complete subtrees that make a tree of `size` leaves, largest first."""
        stack, lo = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                stack.append((level, self.node(level, lo >> level)))
                lo += 1 << level
        return stack


class LogDamaged(Refused):
    """The stored log does not hold together (a node or a leaf missing): exit 1, `seal --check`."""


def _lacks(level: int, idx: int) -> LogDamaged:
    return LogDamaged(f"the sealed log lacks its node at level {level}, position {idx}")


def _leaf_hexes(leaves: dict[int, str]) -> dict[int, bytes]:
    """{log_index: the hex of its leaf hash} of these events' hashes (`Tree.sealed_parts`): in
    three passes of C when every one is 64 hex digits, as coopctl writes them; one at a time
    (`_event_bytes`) when one is not."""
    if not leaves:
        return {}
    fromhex, sha256, hexlify = bytes.fromhex, hashlib.sha256, binascii.hexlify
    texts = list(leaves.values())
    try:
        raws = [fromhex(text) for text in texts]
    except (TypeError, ValueError):
        raws = None
    if raws is None or min(map(len, raws)) != 32 or max(map(len, raws)) != 32:
        raws = [_event_bytes(text) for text in texts]
    return dict(zip(leaves, [hexlify(sha256(LEAF_PREFIX + raw).digest()) for raw in raws]))


# --------------------------------------------------------------------------- keys and heads


def _crypto():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    return serialization, Ed25519PrivateKey, Ed25519PublicKey, InvalidSignature


def _raw_public(private) -> bytes:
    serialization = _crypto()[0]
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keygen(out: str) -> str:
    """Write a new Ed25519 private key to `out` (PEM, PKCS #8, mode 0600 whatever the umask; an
    existing file, even a dangling symlink, is refused) and return the public key in base64."""
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    if not out:
        raise InvalidInput("--out: give the file to write the private key to")
    path = Path(out)
    if path.is_symlink() or path.exists():
        raise InvalidInput(f"--out: {str(out)!r} already exists; a signing key is never overwritten (choose another file)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise InvalidInput(f"--out: {str(out)!r} already exists; a signing key is never overwritten (choose another file)") from None
    except OSError as exc:
        raise InvalidInput(f"--out: cannot create {str(out)!r}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken the owner's own bits
        os.write(fd, pem)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise InvalidInput(f"--out: cannot write {str(out)!r}: {exc.strerror}") from None
    os.close(fd)
    return base64.b64encode(_raw_public(private)).decode("ascii")


def key_path(configured: str | None) -> str | None:
    """The signing key's file: COOPCTL_SIGNING_KEY, else `[evidence] signing_key`; empty = unset."""
    env = os.environ.get(ENV_KEY)
    if env:
        return env
    return configured or None


def load_signing_key(path: str | None):
    """The Ed25519 private key of this file; None configured, missing, unreadable or not such a
    key is InvalidInput (exit 2) in one line that never shows the key."""
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    if path is None:
        raise InvalidInput(
            f"no signing key: set {ENV_KEY} or [evidence] signing_key to a key file (`coopctl keygen --out FILE` makes one)"
        )
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise InvalidInput(f"the signing key {str(path)!r} is a directory, not a key file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the signing key {str(path)!r}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(f"the signing key {str(path)!r} is not an unencrypted PEM private key (`coopctl keygen` writes one)") from None
    except Exception:  # an unsupported algorithm
        raise InvalidInput(f"the signing key {str(path)!r} is not an Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"the signing key {str(path)!r} is not an Ed25519 private key")
    return key


def parse_public_key(value: str) -> bytes:
    """--public-key: a file holding the base64 key when such a file exists, else the base64 key
    itself; anything else is InvalidInput (exit 2)."""
    text = value
    if value and os.path.isfile(value):
        try:
            text = Path(value).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"--public-key: cannot read {str(value)!r}: {getattr(exc, 'strerror', None) or 'not text'}") from None
    raw = _b64(text.strip() if isinstance(text, str) else "", 32)
    if raw is None:
        raise InvalidInput("--public-key: expected a file holding the base64 public key or the key itself (44 base64 characters, as `coopctl keygen` prints)")
    return raw


def _b64(text, length: int) -> bytes | None:
    if not isinstance(text, str) or not _B64.fullmatch(text):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != length or base64.b64encode(raw).decode("ascii") != text:
        return None  # one spelling per value: unused bits of the last character must be zero
    return raw


@dataclass(frozen=True)
class Head:
    """A signed tree head: the first `size` leaves of the log have root `root` (hex)."""

    size: int
    root: str
    sealed_at: int
    public_key: str  # base64
    signature: str  # base64

    @staticmethod
    def message(size: int, root: str, sealed_at: int) -> bytes:
        return canonical_json({"log": LOG_NAME, "size": size, "root": root, "sealed_at": iso(sealed_at, timezone.utc)}).encode("utf-8")

    def to_json(self) -> dict:
        return {"size": self.size, "root": self.root, "sealed_at": iso(self.sealed_at, timezone.utc),
                "public_key": self.public_key, "signature": self.signature}

    def signed_by(self, public_key: bytes) -> bool:
        _, _, Ed25519PublicKey, InvalidSignature = _crypto()
        signature = _b64(self.signature, 64)
        if signature is None:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, self.message(self.size, self.root, self.sealed_at))
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_head(private, size: int, root: bytes, sealed_at: int) -> Head:
    signature = private.sign(Head.message(size, root.hex(), sealed_at))
    return Head(size, root.hex(), sealed_at, base64.b64encode(_raw_public(private)).decode("ascii"),
                base64.b64encode(signature).decode("ascii"))


def head_from_json(value, where: str) -> Head:
    """The "seal" of an export, shape-checked (InvalidInput, exit 2); the signature is `verify`'s."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: 'seal' must be an object")
    keys = {"size", "root", "sealed_at", "public_key", "signature"}
    if set(value) != keys:
        raise InvalidInput(f"{where}: 'seal' must hold exactly {', '.join(sorted(keys))}")
    size = value["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63:
        raise InvalidInput(f"{where}: 'seal.size' must be a whole number from 0")
    if not isinstance(value["root"], str) or not _HEX64.fullmatch(value["root"]):
        raise InvalidInput(f"{where}: 'seal.root' must be 64 lowercase hex digits")
    try:
        sealed_at = parse_instant(value["sealed_at"], timezone.utc)
    except InvalidValue as exc:
        raise InvalidInput(f"{where}: 'seal.sealed_at': {exc}") from None
    if iso(sealed_at, timezone.utc) != value["sealed_at"]:
        raise InvalidInput(f"{where}: 'seal.sealed_at' must be written in UTC as signed, such as 2026-12-01T02:00:00+00:00")
    if _b64(value["public_key"], 32) is None:
        raise InvalidInput(f"{where}: 'seal.public_key' must be the base64 of 32 bytes")
    if _b64(value["signature"], 64) is None:
        raise InvalidInput(f"{where}: 'seal.signature' must be the base64 of 64 bytes")
    return Head(size, value["root"], sealed_at, value["public_key"], value["signature"])


@dataclass(frozen=True)
class Sealed:
    """An order's "sealed" part: the inclusion proof of its event `seq`, leaf `log_index`."""

    seq: int
    log_index: int
    proof: tuple[bytes, ...]


def sealed_from_json(value, where: str) -> Sealed:
    if not isinstance(value, dict) or set(value) != {"seq", "log_index", "proof"}:
        raise InvalidInput(f"{where}: 'sealed' must be an object of seq, log_index and proof")
    for key, low in (("seq", 1), ("log_index", 0)):
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v < 2**63:
            raise InvalidInput(f"{where}: 'sealed.{key}' must be a whole number from {low}")
    proof = value["proof"]
    if not isinstance(proof, list) or len(proof) > MAX_PROOF or not all(isinstance(p, str) and _HEX64.fullmatch(p) for p in proof):
        raise InvalidInput(f"{where}: 'sealed.proof' must be an array of at most {MAX_PROOF} hashes of 64 lowercase hex digits")
    return Sealed(value["seq"], value["log_index"], tuple(bytes.fromhex(p) for p in proof))


# --------------------------------------------------------------------------- the stored log


def _tables():
    from coopctl.models import EVENTS, SEAL_HEADS, SEAL_NODES

    return EVENTS, SEAL_NODES, SEAL_HEADS


def stored_tree(conn, blocks: int = 512) -> Tree:
    """A Tree over the log stored on this connection (inside the caller's transaction), keeping
    `blocks` blocks of nodes."""
    from coopctl.rows import driver_rows

    def fetch(level: int, first: int, last: int) -> dict[int, bytes]:
        if level == 0:
            rows = driver_rows(conn, "SELECT log_index, hash FROM events WHERE log_index >= ? AND log_index <= ?", (first, last))
            return {i: leaf_hash(_event_bytes(h)) for i, h in rows}
        rows = driver_rows(conn, "SELECT idx, hash FROM seal_nodes WHERE level = ? AND idx >= ? AND idx <= ?", (level, first, last))
        return {i: bytes(h) for i, h in rows}

    return Tree(fetch, blocks)


def _leaves(conn, first: int, end: int) -> list[tuple]:
    """(log_index, event hash) of the log's leaves first..end-1 that are stored, in log order, as the
    driver's tuples (a seal and `seal --check` read them _CHUNK at a time)."""
    from coopctl.rows import driver_rows

    return driver_rows(conn, "SELECT log_index, hash FROM events WHERE log_index >= ? AND log_index < ? ORDER BY log_index", (first, end))


def _event_bytes(text: str) -> bytes:
    """An event's hash as 32 bytes; a stored value that is not 64 hex digits (written outside
    coopctl) is hashed as its UTF-8 text, so that the damage shows as a root that does not match."""
    try:
        raw = bytes.fromhex(text)
        if len(raw) == 32:
            return raw
    except (TypeError, ValueError):
        pass
    return str(text).encode("utf-8", "surrogatepass")


def latest_head(conn) -> Head | None:
    from sqlalchemy import select

    _, _, SEAL_HEADS = _tables()
    row = conn.execute(select(SEAL_HEADS).order_by(SEAL_HEADS.c.id.desc()).limit(1)).first()
    return None if row is None else Head(row.size, row.root, row.sealed_at, row.public_key, row.signature)


def all_heads(conn) -> list[tuple[int, Head]]:
    from sqlalchemy import select

    _, _, SEAL_HEADS = _tables()
    rows = conn.execute(select(SEAL_HEADS).order_by(SEAL_HEADS.c.id))
    return [(r.id, Head(r.size, r.root, r.sealed_at, r.public_key, r.signature)) for r in rows]


@dataclass(frozen=True)
class SealResult:
    head: Head
    added: int  # events added to the log by this seal (0: the last head, printed again)

    def to_json(self) -> dict:
        return self.head.to_json()


def seal(tx, private, now: int) -> SealResult:
    """Add every event not yet sealed to the log and sign the new tree head, on `tx` (the caller's
    write transaction). Nothing new since the last head: that head, and nothing is stored."""
    from sqlalchemy import func, insert, select

    EVENTS, SEAL_NODES, SEAL_HEADS = _tables()
    conn = tx.conn
    if conn.dialect.name == "postgresql":  # one seal at a time (SQLite's write transaction already is)
        conn.exec_driver_sql("LOCK TABLE seal_heads IN SHARE ROW EXCLUSIVE MODE")
    last = latest_head(conn)
    size = last.size if last is not None else 0
    top = conn.execute(select(func.max(EVENTS.c.log_index))).scalar()
    if (top if top is not None else -1) != size - 1:
        raise LogDamaged(
            f"the sealed log holds {0 if top is None else top + 1} events but its last tree head says {size}; "
            "run `coopctl seal --check` and `coopctl doctor`"
        )
    if last is not None and now < last.sealed_at:
        raise Refused(
            f"--now {iso(now)} is before the last tree head ({iso(last.sealed_at)}); time does not go backwards"
        )
    added = _number_new_events(conn, size)
    if added == 0 and last is not None:
        return SealResult(last, 0)
    tree = stored_tree(conn)
    stack = tree.right_edge(size)
    made: list[tuple[int, int, bytes]] = []
    index = size
    end = size + added
    while index < end:
        rows = _leaves(conn, index, min(end, index + _CHUNK))
        for log_index, h in rows:
            if log_index != index:
                raise LogDamaged(f"the sealed log lacks its leaf {index}")
            push(stack, leaf_hash(_event_bytes(h)), index, made)
            index += 1
        if not rows:
            raise LogDamaged(f"the sealed log lacks its leaf {index}")
        if made:
            tx._insert_rows("insert_seal_nodes", SEAL_NODES, ("level", "idx", "hash"), made)
            made = []
    head = sign_head(private, end, fold(stack), now)
    conn.execute(insert(SEAL_HEADS).values(
        size=head.size, root=head.root, sealed_at=head.sealed_at, public_key=head.public_key, signature=head.signature
    ))
    return SealResult(head, added)


def _number_new_events(conn, base: int) -> int:
    """Give every event not yet sealed its log_index, from `base` on, by (order id, seq): one
    statement, the database doing the numbering. It finds them through the log_index index: left
    to itself, SQLite would walk the whole primary key instead, to have them in (order id, seq)
    order without a sort, which costs a pass over every event (0.5 s on 1,000,000) on every seal,
    also one with nothing new; sorting the new ones is far cheaper."""
    hint = " INDEXED BY ux_events_log_index" if conn.dialect.name == "sqlite" else ""
    sql = (
        "UPDATE events SET log_index = n.r + :base FROM ("
        "SELECT order_id, seq, row_number() OVER (ORDER BY order_id, seq) - 1 AS r "
        f"FROM events{hint} WHERE log_index IS NULL) AS n "
        "WHERE events.order_id = n.order_id AND events.seq = n.seq"
    )
    from sqlalchemy import text

    return conn.execute(text(sql), {"base": base}).rowcount


@dataclass(frozen=True)
class CheckResult:
    heads: int
    size: int  # leaves in the log
    problem: str | None = None

    def to_json(self) -> dict:
        return {"heads": self.heads, "size": self.size, "ok": self.problem is None, "problem": self.problem}


def check(conn) -> CheckResult:
    """`seal --check`: recompute the tree from the stored event hashes, one pass in log order, and
    check every stored head (its signature by its own key, and that it is the root of the first
    `size` leaves now: append-only), and the stored right edge the next seal builds on."""
    from sqlalchemy import func, select

    EVENTS, _, _ = _tables()
    heads = all_heads(conn)
    total = conn.execute(select(func.count()).select_from(EVENTS).where(EVENTS.c.log_index.is_not(None))).scalar() or 0
    for number, (head_id, head) in enumerate(heads, start=1):
        if not head.signed_by(_b64(head.public_key, 32) or b""):
            return CheckResult(len(heads), total, f"tree head {number} (size {head.size}, sealed {iso(head.sealed_at)}) is not signed by its key")
        if number > 1 and (head.size < heads[number - 2][1].size or head.sealed_at < heads[number - 2][1].sealed_at):
            return CheckResult(len(heads), total, f"tree head {number} (size {head.size}) is smaller or older than the head before it")
    pending = sorted(range(len(heads)), key=lambda i: (heads[i][1].size, i))
    position = 0
    stack: list[tuple[int, bytes]] = []
    index = 0

    def settle() -> str | None:
        nonlocal position
        while position < len(pending) and heads[pending[position]][1].size == index:
            number = pending[position] + 1
            head = heads[pending[position]][1]
            if fold(stack).hex() != head.root:
                return (f"tree head {number} (size {head.size}, sealed {iso(head.sealed_at)}) no longer matches: "
                        f"the root of the first {head.size} events is now {fold(stack).hex()} (history rewritten in the database?)")
            position += 1
        return None

    problem = settle()
    while problem is None and index < total:
        rows = _leaves(conn, index, index + _CHUNK)
        if not rows:
            problem = f"the sealed log lacks its leaf {index}"
            break
        for log_index, h in rows:
            if log_index != index:
                problem = f"the sealed log lacks its leaf {index}"
                break
            push(stack, leaf_hash(_event_bytes(h)), index)
            index += 1
            problem = settle()
            if problem is not None:
                break
    if problem is None and position < len(pending):
        head = heads[pending[position]][1]
        problem = f"tree head {pending[position] + 1} (size {head.size}) covers more events than the log holds ({total})"
    if problem is None and stack:
        try:
            stored = stored_tree(conn).right_edge(index)
        except LogDamaged as exc:
            stored, problem = None, str(exc)
        if stored is not None and stored != stack:
            problem = "the stored nodes of the log's right edge do not match its events (the next seal would build on them)"
    return CheckResult(len(heads), total, problem)


def oldest_unsealed(conn) -> tuple[int, int, int] | None:
    """(instant, order id, seq) of the earliest event not yet sealed, found through the log_index
    index (costs what is unsealed); None when every event is sealed."""
    from sqlalchemy import select

    EVENTS, _, _ = _tables()
    row = conn.execute(
        select(EVENTS.c.at, EVENTS.c.order_id, EVENTS.c.seq).where(EVENTS.c.log_index.is_(None))
        .order_by(EVENTS.c.at, EVENTS.c.order_id, EVENTS.c.seq).limit(1)
    ).first()
    return None if row is None else (row[0], row[1], row[2])


# --------------------------------------------------------------------------- exports


class ExportSeal:
    """What an export adds (SPEC section 6): the latest head, and per order the proof of its last
    sealed event under that head; read inside the export's own read transaction."""

    def __init__(self, conn):
        self.conn = conn
        self.head = latest_head(conn)
        # an export walks the log in order: a block per level is in use at a time (the default 512
        # held blocks it had passed: 14 MB more peak RSS on the 1M book, for no speed)
        self.tree = stored_tree(conn, _EXPORT_BLOCKS) if self.head is not None else None
        self._memo: dict = {}  # the siblings of the last proof (Tree.sealed_parts)

    def header(self) -> dict | None:
        return None if self.head is None else self.head.to_json()

    def sealed_of_rows(self, event_rows: list[tuple]) -> dict[int, bytes]:
        """{order id: its "sealed" part's text (`sealed_text`)} for the orders of these event rows
        that have sealed events (an export's chunk: order_id and seq first, hash ninth, log_index
        tenth, by order and seq): each order's last event under the head, from the rows rather
        than another query, with its proof (`Tree.sealed_parts`; `sealed_json` reads a part back),
        in the order of the orders (the rows' order: `exporthelper._sealed_into` relies on it).
        The leaves of the chunk's own events are given to the proofs (their level-0 siblings are
        nearly always among them, and then are not read again)."""
        if self.head is None or self.head.size == 0 or not event_rows:
            return {}
        size = self.head.size
        last: dict[int, tuple[int, int]] = {}
        leaves: dict[int, str] = {}
        for row in event_rows:
            log_index = row[9]
            if log_index is not None and log_index < size:
                last[row[0]] = (row[1], log_index)  # rows by seq: the last one stays
                leaves[log_index] = row[8]
        return dict(zip(last, self.tree.sealed_parts(last.values(), size, self._memo, leaves)))


# An order's "sealed" part as an export writes it: the last member of the order's document, at the
# depth where the export nests orders (`exchange.sealed_into` writes it in; tests/test_export_bytes.py).
_SEALED_TEXT = b'\n      "sealed": {\n        "seq": %d,\n        "log_index": %d,\n        "proof": %s\n      }'
# the same with a proof of at least one hash, made of its first hash's hex and the text after it (a
# tail: `Tree.sealed_parts`), each further hash written after _NEXT_HASH
_SEALED_PART = _SEALED_TEXT.replace(b"%s", b'[\n          "%s"%s')
_NEXT_HASH = b',\n          "'
_ITEM = _NEXT_HASH + b'%s"'  # a hash of the proof after its first
_ITEM_QUOTED = len(_NEXT_HASH) - 1  # where an item's quoted hex starts
_TAIL_END = b"\n        ]"


def sealed_text(seq: int, log_index: int, proof: list[bytes]) -> bytes:
    """An order's "sealed" part as an export writes it (`ExportSeal.sealed_of_rows` makes the same
    bytes from its memo): the last member of its document, with the comma before it left out."""
    return _SEALED_TEXT % (seq, log_index, _proof_list([b'"' + binascii.hexlify(node) + b'"' for node in proof]))


def _proof_list(items: list[bytes]) -> bytes:
    """A "sealed" part's proof as an export indents it, from its hashes' quoted hex texts."""
    return b"[\n          " + _PROOF_SEPARATOR.join(items) + b"\n        ]" if items else b"[]"


def sealed_json(part: bytes) -> dict:
    """An order's "sealed" part (SPEC section 6) as a dict, from its text (`sealed_text`,
    `ExportSeal.sealed_of_rows`): seq, log_index, and the proof's hashes in hex, nearest sibling first."""
    import json

    return json.loads(b"{" + part + b"}")["sealed"]


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class OrderSeal:
    """What `verify` found for one order."""

    order_id: int
    last_seq: int
    sealed_seq: int | None  # the last event under the signed head (None: none is)
    problem: str | None = None

    @property
    def fully_sealed(self) -> bool:
        return self.sealed_seq is not None and self.sealed_seq == self.last_seq

    def line(self) -> str:
        if self.problem is not None:
            return f"order {self.order_id}: FAILS: {self.problem}"
        if self.sealed_seq is None:
            return f"order {self.order_id}: not sealed yet (events 1-{self.last_seq})"
        if self.fully_sealed:
            return f"order {self.order_id}: sealed up to seq {self.sealed_seq} (every event)"
        later = f"seq {self.last_seq}" if self.last_seq == self.sealed_seq + 1 else f"seq {self.sealed_seq + 1}-{self.last_seq}"
        return f"order {self.order_id}: sealed up to seq {self.sealed_seq}; {later} not sealed yet"

    def to_json(self) -> dict:
        return {"order": self.order_id, "events": self.last_seq, "sealed_seq": self.sealed_seq,
                "fully_sealed": self.fully_sealed, "ok": self.problem is None, "problem": self.problem}


@dataclass(frozen=True)
class Verification:
    head: Head | None
    head_problem: str | None
    orders: list[OrderSeal]

    @property
    def failures(self) -> list[str]:
        found = [f"the tree head: {self.head_problem}"] if self.head_problem else []
        return found + [f"order {o.order_id} {o.problem}" for o in self.orders if o.problem]

    def unsealed(self) -> list[OrderSeal]:
        return [o for o in self.orders if o.problem is None and not o.fully_sealed]

    def to_json(self) -> dict:
        return {
            "seal": None if self.head is None else self.head.to_json(),
            "head_ok": self.head_problem is None,
            "head_problem": self.head_problem,
            "orders": [o.to_json() for o in self.orders],
            "ok": not self.failures,
        }


def verify_export(export, public_key: bytes) -> Verification:
    """Check an export offline (SPEC section 6): every hash chain, that the head is signed by this
    key, and each order's inclusion proof; no database is opened."""
    head: Head | None = getattr(export, "seal", None)
    return Verification(head, _head_problem(head, public_key), [_order_seal(order, head) for order in export.orders])


def verify_stream(stream, public_key: bytes, reopen=None) -> Verification:
    """`verify_export` of a `streaming.ExportStream`, order by order as it is read: only the small
    per-order results are kept. An order with an inclusion proof read before the tree head is known
    (a re-sorted file whose "seal" follows the orders) waits for the end of the file: it is then
    checked in a second read of the file (`reopen()`, a new stream of it), or, from stdin, which
    cannot be read twice, from the orders kept meanwhile (memory then grows with them)."""
    results: list[OrderSeal | None] = []
    waiting: dict[int, object] = {}  # position -> order (kept only without `reopen`)
    for order in stream.orders():
        if stream.seal is None and getattr(order, "sealed", None) is not None:
            waiting[len(results)] = None if reopen is not None else order
            results.append(None)
            continue
        results.append(_order_seal(order, stream.seal))
    head = stream.seal
    if waiting:
        if reopen is not None:
            again = reopen()
            try:
                for position, order in enumerate(again.orders()):
                    if position in waiting:
                        results[position] = _order_seal(order, head)
            finally:
                again.scanned.raw.close()
        else:
            for position, order in waiting.items():
                results[position] = _order_seal(order, head)
    return Verification(head, _head_problem(head, public_key), results)


def _head_problem(head, public_key: bytes) -> str | None:
    if head is None:
        return None
    if _b64(head.public_key, 32) != public_key:
        return "it was signed by another key than the one given (its public_key differs)"
    if not head.signed_by(public_key):
        return "its signature does not match its size, root and sealed_at under this key (altered or forged)"
    return None


def _order_seal(order, head) -> OrderSeal:
    from coopctl.history import Divergence, verify_chain

    root = bytes.fromhex(head.root) if head is not None else b""
    events = order.events
    last_seq = len(events)
    sealed: Sealed | None = getattr(order, "sealed", None)
    try:
        verify_chain(order.id, events)
    except Divergence as exc:
        return OrderSeal(order.id, last_seq, None, f"seq {exc.seq}: {exc.why}")
    if sealed is None:
        return OrderSeal(order.id, last_seq, None)
    problem = None
    if head is None:
        problem = f"seq {sealed.seq}: it carries an inclusion proof but the file has no tree head"
    elif sealed.seq > last_seq:
        problem = f"seq {sealed.seq}: the proof is for seq {sealed.seq}, beyond its chain (last seq {last_seq}): an event was removed"
    elif sealed.log_index >= head.size:
        problem = (f"seq {sealed.seq}: the proof claims log index {sealed.log_index}, beyond the tree head's "
                   f"{head.size} events (a tree head older than the proof)")
    elif not verify_inclusion(sealed.log_index, head.size, leaf_hash(_event_bytes(events[sealed.seq - 1].hash)), list(sealed.proof), root):
        problem = (f"seq {sealed.seq}: not under the signed tree head (an event up to seq {sealed.seq} was altered, "
                   "or the proof is another order's)")
    if problem is None:
        problem = _fields_problem(order)
    return OrderSeal(order.id, last_seq, None if problem else sealed.seq, problem)


def _fields_problem(order) -> str | None:
    """The order's own fields (terms, status, …) are not sealed themselves: they must be what its
    sealed events make. Rebuilt through the rules in memory (no database), as replay does."""
    from coopctl.exchange import _compared, _rebuild

    verdict = _rebuild(order)
    if verdict.ok:
        verdict = _compared(verdict, verdict.rebuilt)
    if verdict.ok:
        return None
    return f"seq {verdict.divergence.seq}: {verdict.divergence.why} (the order's fields are not what its events make)"


def verify_lines(v: Verification) -> Iterable[str]:
    """`verify`'s report, one line each (printed through `trust.shown` by the caller)."""
    if v.head is None:
        yield "tree head: none (the file was exported before the first seal)"
    elif v.head_problem:
        yield f"tree head: FAILS: {v.head_problem}"
    else:
        yield f"tree head: {v.head.size} events sealed at {iso(v.head.sealed_at)}, signed by this key"
        yield f"  root {v.head.root}"
    for o in v.orders:
        yield o.line()


def check_verification(v: Verification, *, require_sealed: bool) -> None:
    """Refused (exit 1) naming the first failure; with require_sealed, also an order not fully sealed."""
    failures = v.failures
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise Refused(f"{failures[0]}{more}; this export does not verify")
    if require_sealed:
        unsealed = v.unsealed()
        if v.head is None and not v.orders:
            raise Refused("the file has no tree head: it is not sealed")
        if unsealed:
            first = unsealed[0]
            seq = 1 if first.sealed_seq is None else first.sealed_seq + 1
            more = f" (and {len(unsealed) - 1} more orders)" if len(unsealed) > 1 else ""
            raise Refused(f"order {first.order_id} seq {seq}: not sealed yet{more}; run `coopctl seal` and export again")


# --------------------------------------------------------------------------- the commands' library calls


def seal_log(svc, now: int, key_file: str | None, *, report=None) -> SealResult:
    """`coopctl seal`: the key is read first (no key: exit 2, nothing opened), then one write
    transaction whose report is written before it commits (`service.change`)."""
    from coopctl.service import change

    private = load_signing_key(key_file)
    svc.store.require()
    with change(svc.store, report) as current:
        result = seal(current.tx, private, now)
        current.done(result)
    return result


def check_seal(svc) -> CheckResult:
    """`coopctl seal --check`: read only."""
    svc.store.require()
    with svc.store.read() as tx:
        return check(tx.conn)
