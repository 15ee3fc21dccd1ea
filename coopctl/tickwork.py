"""Tick's work on due orders, in chunks: the rules turn rows read into rows to write.

`decide` is pure: rows of ORDER_COLUMNS in, the rows tick writes out (guarded order states,
events, notifications) with its counts. `tick` runs it either in its own process or, when a
batch is large and the machine has a second core, in a `Helper` process: the rules (Python)
then run on one core while this process reads and writes SQLite on the other. Both give the
same rows, in the same order; the helper only changes where the work is done.

The helper is started on demand and speaks length-prefixed pickles over its stdin and stdout. It
never writes to the database: it is given the rows of its chunks, or, on a SQLite file in WAL mode,
their ids, and then reads those rows itself through a connection that can only read (see
`Decider`). If it cannot be started, or stops or fails, the chunks it did not answer are decided
here instead: a tick never fails because of its helper.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Callable, Iterator

from coopctl import lifecycle
from coopctl.lifecycle import Kind
from coopctl.rows import event_tuple, guarded_state, notification_tuple, order_from_row, rows_by_id_sql

CHUNK = 500  # orders per piece of work: small enough that writing one overlaps deciding the next
HELPER_AT_LEAST = 2000  # due orders in a batch before a helper process is worth its start (~0.1 s)


@dataclass(slots=True)
class Decided:
    """What tick writes for one chunk of due orders, and what it counts."""

    states: list[tuple] = field(default_factory=list)  # rows.guarded_state of each changed order
    events: list[tuple] = field(default_factory=list)  # EVENT_COLUMNS, in the order they happened
    notifications: list[tuple] = field(default_factory=list)  # NOTIFICATION_COLUMNS, likewise
    by_kind: dict[str, int] = field(default_factory=dict)
    reminders: int = 0
    last_key: tuple[int, int] | None = None  # the largest (wake_at, id) read, before any change
    all_changed: bool = True  # every order read got an event or a notification


def decide(rows: list[tuple], now: int, operator: str, tz: tzinfo, *, keys: bool = False) -> Decided:
    """Run tick's rules (`lifecycle.tick_order`) on due orders given as rows of ORDER_COLUMNS.
    `last_key` is found when some order was left unchanged, or when `keys` asks for it (dry run)."""
    out = Decided()
    states, events, notes, by_kind = out.states, out.events, out.notifications, out.by_kind
    tick_order = lifecycle.tick_order
    reminder = Kind.REMINDER.value
    orders = []
    for row in rows:
        order = order_from_row(row)
        orders.append(order)
        outcome = tick_order(order, now, operator, tz)
        if not (outcome.events or outcome.notifications):
            out.all_changed = False
            continue
        states.append(guarded_state(outcome.order, row))
        for e in outcome.events:
            events.append(event_tuple(e))
            by_kind[e.kind] = by_kind.get(e.kind, 0) + 1
        for n in outcome.notifications:
            notes.append(notification_tuple(n))
            if n.kind == reminder:
                out.reminders += 1
    if orders and (keys or not out.all_changed):
        wake_at = lifecycle.wake_at
        out.last_key = max((wake_at(order), order.id) for order in orders)
    return out


def chunks_of(rows: list[tuple], size: int | None = None) -> list[list[tuple]]:
    size = size or CHUNK
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def quiet_gc() -> None:
    """For tick and its helper: the records they make hold no reference cycles, so the cyclic
    collector only costs time (a sixth of a large tick). Everything imported so far is frozen out
    of its view and it runs far less often; it still runs."""
    gc.freeze()
    gc.set_threshold(200_000, 20, 1000)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Decider:
    """Decides the chunks of one tick's batches: shared with a helper process when that pays.

    The chunks of a batch are written in order, so the helper is given them from the front, a
    few ahead at a time; while its next answer is not in yet, this process takes chunks from the
    back and decides them itself, so neither side waits for the other for long.

    A batch comes as rows, or (SQLite) as order ids with `read` to fetch their rows in this
    process's transaction. Given ids, the helper reads the rows of its chunks itself, from the
    file `db_path` with a connection that can only read (`PRAGMA query_only`); it reads after
    this process has taken the write lock for the batch, so it sees exactly what `read` would.
    """

    AHEAD = 4  # chunks given to the helper ahead of the one being written

    def __init__(
        self, now: int, operator: str, tz: tzinfo, *, helper: bool | None = None, keys: bool = False,
        db_path: str | None = None, busy_timeout: float = 10.0,
    ):
        self.now, self.operator, self.tz, self.keys = now, operator, tz, keys
        self.db_path, self.busy_timeout = db_path, busy_timeout
        # None: a helper for large batches on a machine with two cores or more; False: never;
        # True: always (tests).
        self.use_helper = _cores() >= 2 if helper is None else helper
        self.at_least = 0 if helper else HELPER_AT_LEAST
        self.helper: Helper | None = None

    def decide(self, items: list, read: Callable[[list[int]], list[tuple]] | None = None) -> Iterator[Decided]:
        """The decisions for a batch, chunk after chunk, in order: `items` are rows of ORDER_COLUMNS,
        or order ids when `read` is given."""

        def here(chunk: list) -> Decided:
            return decide(chunk if read is None else read(chunk), self.now, self.operator, self.tz, keys=self.keys)

        def give(chunk: list) -> None:
            if read is None:
                helper.submit("rows", chunk)
            elif self.db_path is not None:
                helper.submit("ids", chunk)
            else:
                helper.submit("rows", read(chunk))

        chunks = chunks_of(items)
        helper = self._helper_for(len(items))
        if helper is None or len(chunks) < 2:
            for chunk in chunks:
                yield here(chunk)
            return
        done: dict[int, Decided] = {}
        given = 1  # chunks[1:given] went to the helper; the first is decided here, at once
        back = len(chunks)  # chunks[back:] were decided here
        for index, chunk in enumerate(chunks):
            while helper is not None and given < back and given - index < self.AHEAD:
                give(chunks[given])
                given += 1
            while index not in done:
                if index == 0 or index >= given or helper is None:  # not the helper's (any more)
                    done[index] = here(chunk)
                elif back > given and not helper.ready():
                    back -= 1
                    done[back] = here(chunks[back])
                else:
                    decided = helper.receive()
                    if decided is None:  # it stopped or failed: what it was given is decided here
                        self.close()
                        helper = None
                    else:
                        done[index] = decided
            yield done.pop(index)

    def _helper_for(self, count: int) -> "Helper | None":
        if self.helper is None and self.use_helper and count >= self.at_least:
            self.helper = Helper.start()
            if self.helper is None:
                self.use_helper = False
            else:
                self.helper.setup(self.now, self.operator, self.tz, self.keys, self.db_path, self.busy_timeout)
        return self.helper

    def close(self) -> None:
        if self.helper is not None:
            self.helper.close()
            self.helper = None
        self.use_helper = False  # a helper that failed is not started again for this tick


# ----------------------------------------------------------------------------- the helper process

_HEADER = struct.Struct("<Q")
_PIPE_SIZE = 1 << 20  # Linux lets any process grow a pipe to 1 MB: a few chunks each way, without blocking


def _frame(value) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _read_exact(fd: int, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        part = os.read(fd, min(left, _PIPE_SIZE))
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_bytes_frame(fd: int) -> bytes | None:
    """The next length-prefixed frame's bytes, or None at the end of the stream (or of a truncated one)."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    return _read_exact(fd, _HEADER.unpack(header)[0])


def _read_frame(fd: int):
    """The next value from a file descriptor, or None at the end of the stream (or of a truncated one)."""
    data = _read_bytes_frame(fd)
    return None if data is None else pickle.loads(data)


def serve_frames(begin: Callable[[bytes], Callable[[bytes], bytes]]) -> None:
    """A helper's main loop over length-prefixed byte frames (`linehelper`'s and `replayhelper`'s):
    the first frame goes to `begin`, which gives the function answering each later one; an answer
    that raises is sent as an empty frame (the parent then does that piece itself, where the error
    surfaces). Ctrl-C is for the parent, which then closes our stdin; the loop stops at its end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        data = _read_bytes_frame(stdin)
        if data is None:
            os._exit(0)
        answer = begin(data)
        quiet_gc()
        while (data := _read_bytes_frame(stdin)) is not None:
            try:
                out = answer(data)
            except Exception:  # noqa: BLE001 - made again by the parent
                out = b""
            view = memoryview(_HEADER.pack(len(out)) + out)
            while view:
                view = view[os.write(stdout, view) :]
    except (OSError, KeyboardInterrupt):
        pass
    os._exit(0)


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, AttributeError, OSError):  # not Linux, or not allowed: smaller steps then
        pass


class Pipes:
    """A helper process seen from its parent: its stdin and stdout. No thread: what is given to it
    waits in a buffer and is written whenever the pipe takes it (non-blocking), and while waiting
    for an answer, so the two never wait for each other; answers come back in the order given.
    `tickwork.Helper` (tick) and `linehelper.Formatter` (list) are its two kinds."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.rfd, self.wfd = proc.stdout.fileno(), proc.stdin.fileno()
        _grow_pipe(self.rfd)
        _grow_pipe(self.wfd)
        os.set_blocking(self.wfd, False)
        self.out = bytearray()
        self.pending = 0
        self.broken = False

    @classmethod
    def spawn(cls, serve: str) -> subprocess.Popen | None:
        """A Python process running `serve` (a module's function: "coopctl.tickwork:serve") with
        this checkout on its path, or None if it cannot be started."""
        if not sys.executable:
            return None
        root = str(Path(__file__).resolve().parent.parent)
        module, function = serve.split(":")
        code = f"import sys; sys.path.insert(0, {root!r}); from {module} import {function}; {function}()"
        try:
            return subprocess.Popen(
                [sys.executable, "-c", code], bufsize=0,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        except OSError:
            return None

    def _pump(self) -> None:
        """Write what the pipe takes now of what waits to be sent."""
        out = self.out
        while out and not self.broken:
            try:
                written = os.write(self.wfd, out)
            except BlockingIOError:
                return
            except OSError:  # it is gone; receive() tells
                self.broken = True
                return
            del out[:written]

    def _send_bytes(self, data: bytes) -> None:
        self.out += data
        self._pump()

    def _send_frame(self, payload: bytes) -> None:
        self._send_bytes(_HEADER.pack(len(payload)) + payload)

    def _receive_frame(self) -> bytes | None:
        """The next answer's bytes (empty: the helper could not make that piece), waiting for it;
        None when the helper is gone or its answer was cut off."""
        self._wait_readable()
        return _read_bytes_frame(self.rfd)

    def ready(self) -> bool:
        """Whether the next answer has begun to arrive (so receive() will not wait long)."""
        self._pump()
        try:
            return bool(select.select([self.rfd], [], [], 0)[0])
        except (OSError, ValueError):
            return True  # receive() will find out

    def _wait_readable(self) -> None:
        """Block until there is something to read, sending what waits meanwhile (the helper may
        need it before it can answer)."""
        while self.out and not self.broken:
            readable, writable, _ = select.select([self.rfd], [self.wfd], [])
            if readable:
                return
            if writable:
                self._pump()

    def close(self) -> None:
        """Stop it: what it has not answered yet is dropped."""
        for stream in (self.proc.stdin, self.proc.stdout):  # it reads EOF, or its write fails: it stops
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Helper(Pipes):
    """Tick's helper process: chunks of due orders in (pickled), their `Decided` back."""

    @classmethod
    def start(cls) -> "Helper | None":
        proc = cls.spawn("coopctl.tickwork:serve")
        return None if proc is None else cls(proc)

    def _send(self, message) -> None:
        self._send_bytes(_frame(message))

    def setup(self, now: int, operator: str, tz: tzinfo, keys: bool, db_path: str | None, busy_timeout: float) -> None:
        self._send(("setup", now, operator, tz, keys, db_path, busy_timeout))

    def submit(self, kind: str, chunk: list) -> None:
        """Give it a chunk: ("rows", rows of ORDER_COLUMNS) or ("ids", order ids it reads itself)."""
        self._send((kind, chunk))
        self.pending += 1

    def receive(self) -> Decided | None:
        """The decision on the oldest chunk given, or None if the helper could not give it."""
        if self.pending == 0:
            return None
        self.pending -= 1
        try:
            self._wait_readable()
            answer = _read_frame(self.rfd)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
            return None
        if not isinstance(answer, Decided):
            return None  # ("error", text): the chunk is decided here again, where the error surfaces
        return answer


def serve() -> None:
    """The helper's main loop: decide each chunk read from stdin, answer on stdout, stop at EOF."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for tick itself, which then closes our stdin
    quiet_gc()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    now = operator = tz = db_path = None
    keys, busy_timeout, conn = False, 10.0, None
    try:
        while (message := _read_frame(stdin)) is not None:
            kind = message[0]
            if kind == "setup":
                _, now, operator, tz, keys, db_path, busy_timeout = message
                continue
            try:
                rows = message[1]
                if kind == "ids":
                    if conn is None:
                        conn = _reader(db_path, busy_timeout)
                    ids, rows = rows, conn.execute(rows_by_id_sql(len(rows)), rows).fetchall()
                    if [row[0] for row in rows] != ids:
                        raise LookupError("the orders read are not the ones asked for")
                answer = decide(rows, now, operator, tz, keys=keys)
            except Exception as exc:  # noqa: BLE001 - reported back; tick decides the chunk again itself
                answer = ("error", f"{type(exc).__name__}: {exc}")
            view = memoryview(_frame(answer))
            while view:
                view = view[os.write(stdout, view) :]
    except (OSError, KeyboardInterrupt):
        pass
    os._exit(0)


def _reader(path: str, busy_timeout: float):
    """A connection that can only read: each query is its own read transaction (autocommit)."""
    import sqlite3

    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    conn.execute("PRAGMA query_only=1")
    return conn
