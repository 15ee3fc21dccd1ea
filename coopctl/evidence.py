"""Evidence files (SPEC section 1, "Evidence files"; section 2, `export --with-evidence`).

A party attaches files to an event (`--evidence-file PATH`, repeatable): each file is read whole
(at most MAX_BYTES), hashed with SHA-256 and recorded in the event's data as
`evidence_files: [{"name", "size", "sha256"}]`, so that the hash chain covers the name, the size
and the content's hash. The content itself is stored in the table `evidence_files` (models), once
per distinct content (its SHA-256 is the key), in the same transaction as the event; a file that
was recorded somewhere else and never given to this database (an import without its contents)
has a row with NULL content: "not held here".

Three parts, each used by one layer:
- the record and its checks (pure): `EvidenceFile`, `files_from_json` (an event's data, typed or
  read from a file, through the trust boundary), `named_by` (the files an order's events name);
- reading the files a command names (`read_files`), before any transaction: a missing,
  unreadable, non-regular or too large file is InvalidInput (exit 2) and nothing changes;
- what export, replay and import do with contents (`embedded`, `check_embedded`): each a
  separate step per order, beside the export's encoder, not inside it.

The command line wires it on an action in two lines: the `EvidenceFileOpt` option and
`evidence_files=evidence_file` passed on to `_act` (see coopctl/cli/base.py).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterable

from coopctl.errors import InvalidInput
from coopctl.trust import check_file_name, shown

MAX_BYTES = 20 * 1024 * 1024  # 20 MiB a file (SPEC section 1)
MAX_FILES = 100  # files one event may carry (a bound for input read from files)
SHA256 = re.compile(r"[0-9a-f]{64}")
KEY = "evidence_files"  # the key of an event's data that lists them
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EvidenceFile:
    """What an event records of one file: its base name, its size in bytes, its SHA-256 (hex)."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class HeldFile:
    """A file's record and its content (read from disk, or from an export's `content_base64`)."""

    file: EvidenceFile
    content: bytes


# --------------------------------------------------------------------------- the record


def check_sha256(value, what: str = "sha256") -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise InvalidInput(f"{what} must be a SHA-256 in 64 lowercase hex digits")
    return value


def check_size(value, what: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BYTES:
        raise InvalidInput(f"{what} must be a whole number of bytes from 0 to {MAX_BYTES:,} (20 MiB)")
    return value


def files_from_json(value, *, strict: bool = True) -> tuple[EvidenceFile, ...]:
    """The `evidence_files` of an event's data (None: none), checked as typed ones are: an array
    of at most MAX_FILES objects with exactly `name` (a file name, see `trust.check_file_name`),
    `size` and `sha256`. InvalidInput names what is wrong. `strict=False` (a history stored here)
    reads them the same way: evidence files are newer than every older rule."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{KEY} must be a non-empty array of {{name, size, sha256}} objects")
    if len(value) > MAX_FILES:
        raise InvalidInput(f"{KEY} lists {len(value)} files; at most {MAX_FILES} are allowed on one event")
    files = []
    for index, item in enumerate(value):
        where = f"{KEY}[{index}]"
        if not isinstance(item, dict) or set(item) != {"name", "size", "sha256"}:
            raise InvalidInput(f"{where} must be an object with exactly name, size and sha256")
        files.append(EvidenceFile(
            check_file_name(item["name"], f"{where}.name"),
            check_size(item["size"], f"{where}.size"),
            check_sha256(item["sha256"], f"{where}.sha256"),
        ))
    return tuple(files)


def to_json(files: Iterable[EvidenceFile]) -> list[dict]:
    """The value of `evidence_files` in an event's data."""
    return [f.to_json() for f in files]


def named_by(events) -> list[tuple[object, EvidenceFile]]:
    """(event, file) for every file the events name, in seq order. A stored value the checks
    refuse (altered by hand: the chain check or the rebuild reports it) is still read where it
    has the shape of a file, so that what is there can be shown (escaped); the rest is skipped."""
    found = []
    for e in events:
        data = e.data
        if isinstance(data, dict) and KEY in data:
            try:
                files = files_from_json(data[KEY], strict=False)
            except InvalidInput:
                files = _as_stored(data[KEY])
            found += [(e, f) for f in files]
    return found


def _as_stored(value) -> tuple[EvidenceFile, ...]:
    """The entries of a refused `evidence_files` that still look like files (text name, whole
    size, hex SHA-256), for display only."""
    if not isinstance(value, list):
        return ()
    return tuple(
        EvidenceFile(item["name"], item["size"], item["sha256"]) for item in value
        if isinstance(item, dict) and isinstance(item.get("name"), str) and type(item.get("size")) is int
        and isinstance(item.get("sha256"), str) and SHA256.fullmatch(item["sha256"])
    )


# --------------------------------------------------------------------------- reading files


def read_files(paths: Iterable[str] | None) -> list[HeldFile]:
    """Read, hash and check every file a command names (`--evidence-file`), before its
    transaction starts: a missing or unreadable file, a directory or any other file that is not a
    regular one (a FIFO would block, a device never end), or one larger than 20 MiB is
    InvalidInput (exit 2), so that nothing changes. The name recorded is the path's base name,
    checked as text (`trust.check_file_name`): no control or format characters."""
    return [_read_one(path) for path in paths or ()]


def _read_one(path: str) -> HeldFile:
    quoted = f"'{shown(path)}'"
    if not isinstance(path, str) or not path:
        raise InvalidInput("--evidence-file is empty; give the path of a file")
    name = os.path.basename(path)
    if not name:
        raise InvalidInput(f"--evidence-file {quoted} names a directory, not a file")
    check_file_name(name, f"--evidence-file {quoted}: the file name")
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused just below)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise InvalidInput(f"--evidence-file {quoted}: cannot read it ({_why(exc)}); nothing was changed") from None
    try:
        info = os.fstat(fd)  # the file opened, not what the path names a moment later
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInput(f"--evidence-file {quoted} is a directory, not a file; nothing was changed")
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"--evidence-file {quoted} is not a regular file (a device, FIFO or socket); nothing was changed")
        if info.st_size > MAX_BYTES:
            raise InvalidInput(_too_large(quoted, info.st_size))
        digest, parts, size = hashlib.sha256(), [], 0
        while True:
            try:
                part = os.read(fd, _READ_CHUNK)
            except OSError as exc:
                raise InvalidInput(f"--evidence-file {quoted}: cannot read it ({_why(exc)}); nothing was changed") from None
            if not part:
                break
            size += len(part)
            if size > MAX_BYTES:  # it grew while being read
                raise InvalidInput(_too_large(quoted, size))
            digest.update(part)
            parts.append(part)
    finally:
        os.close(fd)
    return HeldFile(EvidenceFile(name, size, digest.hexdigest()), b"".join(parts))


def _too_large(quoted: str, size: int) -> str:
    return (
        f"--evidence-file {quoted} is {size:,} bytes; at most {MAX_BYTES:,} (20 MiB) are allowed a file; "
        "nothing was changed"
    )


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file"
    return exc.strerror or type(exc).__name__


# --------------------------------------------------------------------------- stored contents


def distinct(held: Iterable[HeldFile]) -> list[HeldFile]:
    """One per distinct content (the first of each SHA-256): what is stored."""
    seen: dict[str, HeldFile] = {}
    for h in held:
        seen.setdefault(h.file.sha256, h)
    return list(seen.values())


def content_problem(sha256: str, size, content) -> str | None:
    """Why a stored content is not the file its key names (None when it is)."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        return "its stored content cannot be read"
    content = bytes(content)
    if len(content) != size:
        return f"its stored content is {len(content):,} bytes, its row says {shown(size)}"
    if hashlib.sha256(content).hexdigest() != sha256:
        return "its stored content no longer hashes to its sha256 (altered)"
    return None


# --------------------------------------------------------------------------- export, replay, import


def embedded(tx, events) -> list[dict]:
    """`export --with-evidence`: the order's `evidence` list, one entry per distinct file its
    events name that this database holds (first name given), in the order they are named:
    `{"sha256", "name", "size", "content_base64"}`. A file not held here is left out (an import
    then records it as not held)."""
    first: dict[str, EvidenceFile] = {}
    for _, f in named_by(events):
        first.setdefault(f.sha256, f)
    if not first:
        return []
    held = tx.evidence_contents(list(first))
    return [
        {"sha256": sha, "name": f.name, "size": f.size, "content_base64": base64.b64encode(held[sha]).decode("ascii")}
        for sha, f in first.items() if held.get(sha) is not None
    ]


@dataclass(frozen=True)
class Embedded:
    """One entry of an exported order's `evidence`, type-checked (its content not yet decoded)."""

    sha256: str
    name: str
    size: int
    content_base64: str


def parse_embedded(value, where: str) -> tuple[Embedded, ...]:
    """An export's `evidence` array, shape and types checked (exit 2 when malformed); the content
    is checked against the events by `check_embedded`."""
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: 'evidence' must be an array")
    found = []
    for index, item in enumerate(value):
        here = f"{where}, evidence[{index}]"
        if not isinstance(item, dict) or set(item) != {"sha256", "name", "size", "content_base64"}:
            raise InvalidInput(f"{here} must be an object with exactly sha256, name, size and content_base64")
        try:
            found.append(Embedded(
                check_sha256(item["sha256"]), check_file_name(item["name"], "name"), check_size(item["size"]),
                _text(item["content_base64"]),
            ))
        except InvalidInput as exc:
            raise InvalidInput(f"{here}: {exc}") from None
    return tuple(found)


def _text(value) -> str:
    if not isinstance(value, str):
        raise InvalidInput("content_base64 must be text (base64)")
    return value


class EvidenceMismatch(Exception):
    """An embedded file is not what the events recorded: (seq, why), for a divergence."""

    def __init__(self, seq: int, why: str):
        super().__init__(why)
        self.seq, self.why = seq, why


def check_embedded(events, entries: Iterable[Embedded]) -> list[HeldFile]:
    """Every embedded file against the record its events made of it: named by an event (else
    EvidenceMismatch at the last event: a file nobody's action attached), once, under a name and
    size that event recorded, in valid base64 that decodes to that many bytes hashing to its
    sha256 (else EvidenceMismatch at the first event naming it). The decoded files."""
    recorded: dict[str, list[tuple[object, EvidenceFile]]] = {}
    for e, f in named_by(events):
        recorded.setdefault(f.sha256, []).append((e, f))
    last = events[-1].seq if events else 1
    held, seen = [], set()
    for entry in entries:
        named = recorded.get(entry.sha256)
        if not named:
            raise EvidenceMismatch(last, f"evidence file {entry.sha256[:16]}… ({shown(entry.name)!r}) is named by no event")
        seq = named[0][0].seq
        if entry.sha256 in seen:
            raise EvidenceMismatch(seq, f"evidence file {entry.sha256[:16]}… is embedded twice")
        seen.add(entry.sha256)
        if not any(f.name == entry.name for _, f in named):
            raise EvidenceMismatch(seq, f"evidence file {entry.sha256[:16]}… is named {shown(entry.name)!r}, which no event recorded")
        if entry.size != named[0][1].size:
            raise EvidenceMismatch(seq, f"evidence file {entry.sha256[:16]}… has size {entry.size:,}, the event recorded {named[0][1].size:,}")
        try:
            content = base64.b64decode(entry.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise EvidenceMismatch(seq, f"evidence file {entry.sha256[:16]}…: content_base64 is not valid base64") from None
        if len(content) != entry.size:
            raise EvidenceMismatch(seq, f"evidence file {entry.sha256[:16]}…: its content is {len(content):,} bytes, the event recorded {entry.size:,}")
        if hashlib.sha256(content).hexdigest() != entry.sha256:
            raise EvidenceMismatch(seq, f"evidence file {entry.sha256[:16]}…: its content does not hash to the sha256 its event recorded (forged or damaged)")
        held.append(HeldFile(named[0][1], content))
    return held


def not_held(events, held: Iterable[HeldFile]) -> list[EvidenceFile]:
    """The files the events name whose content is not among `held` (one per distinct content):
    an import records them as not held here."""
    have = {h.file.sha256 for h in held}
    missing: dict[str, EvidenceFile] = {}
    for _, f in named_by(events):
        if f.sha256 not in have:
            missing.setdefault(f.sha256, f)
    return list(missing.values())
