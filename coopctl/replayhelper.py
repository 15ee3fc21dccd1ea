"""`replay --summary` and `import` of a large export on two cores: a helper process replays most chunks.

Replaying an order (its checks as it is read, its rebuild through the rules, the scratch database
and the comparisons) costs several times what parsing it costs, and one process does all of it on
one core. Here this process reads the file (the scan of its bytes and the C parser) and hands
chunks of REPLAY_CHUNK orders, as the parser built them, to a helper process, which checks and
replays them exactly as `exchange.replay_chunks` does (`streaming.parse_item`, then
`exchange.replay_part` through its own scratch database) and sends the verdicts back. While the
helper holds AHEAD chunks not yet answered, the chunk just read is replayed here instead, so
neither side waits for the other for long.

What must follow the file's order stays here, applied to each chunk in turn as it is yielded:
the file-wide checks of every order (`ExportStream.count`: an id seen twice, an event after
`exported_at`), the idempotency keys of earlier chunks (`exchange.duplicate_key`), and the checks
that wait for the end of the file (`ExportStream.finish`, before the last chunk when it is short,
as `replay_chunks` meets them). The chunks, their verdicts, the first error and everything printed
are the same as `replay_chunks(stream.orders(), keep_steps=False)` gives: the helper only answers
chunks in which nothing went wrong; for any other (an order it refuses, anything unexpected) it
says so, and this process replays that chunk itself, from the bytes it sent, so that the error
is raised here, at its place, with its own message. If the helper cannot be started, stops or
fails, the chunks it did not answer are replayed here: a replay never fails because of its helper.

Chunks go out as length-prefixed `marshal` frames of each order's own text, as `streaming` cut it
out of the file (then the helper parses it), or of the parser's dicts (a file not laid out as
coopctl writes it; `pickle` when a number that is not whole is still a Decimal); answers come back
pickled: for `replay --summary` only the verdicts of orders that do not reproduce or have an
idempotency key (the others are counted), for `import` every verdict.
The helper ignores Ctrl-C (this process answers it, then closes the helper's input) and stops at
the end of its input.
"""

from __future__ import annotations

import marshal
import os
import pickle
import queue
import threading
from collections import deque
from itertools import islice
from typing import Iterator

from coopctl.tickwork import Pipes, _cores, quiet_gc, serve_frames

HELPER_AT_LEAST = 1000  # orders read (a first chunk full: more follow) before a helper is started
AHEAD = 3  # chunks the helper may hold unanswered before the next one is replayed here
# Chunks read and not yet yielded, at most (then this process waits for the helper's oldest answer):
# memory holds no more, whatever the size of the file. For import every verdict is kept until its
# chunk is written; for replay --summary a chunk done is a few counts (an order that reproduced and
# has no idempotency key is kept as its id), so more may wait.
HELD = {True: 4, False: 16}


class Reproduced:
    """An order that reproduced, as `replay --summary` counts it (its verdict stayed in the helper)."""

    __slots__ = ("order_id",)
    ok = True
    message = ""
    divergence = None

    def __init__(self, order_id: int):
        self.order_id = order_id


def verdict_chunks(stream, *, full: bool, chunk: int | None = None, progress=None, helper: bool | None = None,
                   at_least: int | None = None) -> Iterator[list]:
    """`exchange.replay_chunks(stream.orders(progress), keep_steps=False, chunk=chunk)`, then
    `stream.finish()`: the same chunks of verdicts, errors and checks, with a helper process on a
    machine with a second core once `at_least` orders were read and more follow (HELPER_AT_LEAST;
    `helper`: True always, as tests do; False never). `full`: every verdict as `replay_chunks` makes
    it (import); otherwise an order that reproduced may come as a `Reproduced` (replay --summary)."""
    from coopctl import exchange
    from coopctl.store import Location, Store

    size = chunk or exchange.REPLAY_CHUNK
    quiet_gc()
    at_least = HELPER_AT_LEAST if at_least is None else at_least
    use = (_cores() > 1) if helper is None else helper
    scratch = Store(Location.memory())
    scratch.initialise(made_by="replay")
    work = _Work(stream, scratch, full, size)
    replayer: Replayer | None = None
    started = False
    queue: deque[_Entry] = deque()
    items = stream.items(progress)
    read = 0
    try:
        while True:
            batch, failure = _next_batch(items, size)
            if batch:
                entry = _Entry(read, batch, last=len(batch) < size or failure is not None, failure=failure)
                read += len(batch)
                if failure is None and use and not started and read >= max(at_least, 1) and len(batch) == size:
                    replayer, started = Replayer.start(stream.source, full), True
                if failure is None and replayer is not None and replayer.pending < AHEAD:
                    entry.payload = _payload(batch)
                    entry.batch = None  # the bytes are kept (to replay it here if need be), not the dicts
                    replayer.submit(entry.first, entry.payload)
                else:
                    work.here(entry)
                queue.append(entry)
            while queue and (queue[0].done or len(queue) >= HELD[full] or not batch or failure is not None
                             or replayer is None or replayer.ready()):
                if not batch and replayer is not None and not queue[0].done and not replayer.ready():
                    _take_back(queue, work)  # the file is read: the last chunks the helper has are done here too
                replayer = work.answer(queue[0], replayer)
                yield work.finished(queue.popleft())
            if not batch or failure is not None:
                break
        if failure is not None:
            raise failure
        stream.finish()
    finally:
        if replayer is not None:
            replayer.close()
        scratch.dispose()


def _take_back(queue: deque, work: "_Work") -> None:
    """Replay here the last chunk given to the helper that it has not answered (it is the last it
    was given, so every answer still awaited comes before its own, which is never read)."""
    for entry in reversed(queue):
        if entry.done:
            continue
        if entry is not queue[0]:
            work.here(entry)
        return


def _next_batch(items: Iterator, size: int) -> tuple[list, BaseException | None]:
    """Up to `size` orders as parsed, and the error that stopped the reading (the file cut off, not
    JSON), if one did: the orders read before it are checked first, as `replay_chunks` checks them."""
    batch: list = []
    try:
        batch.extend(islice(items, size))
    except Exception as exc:  # noqa: BLE001 - raised at its place in the file, after the orders before it
        return batch, exc
    return batch, None


def _payload(batch: list) -> bytes:
    try:
        return b"m" + marshal.dumps(batch)
    except ValueError:  # a Decimal (a number that is not whole, before it is made plain)
        return b"p" + pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


def _items(payload: bytes) -> list:
    return marshal.loads(payload[1:]) if payload[:1] == b"m" else pickle.loads(payload[1:])


class _Entry:
    """One chunk of the file on its way: its first index, the parsed dicts (or the bytes given to the
    helper), and once done, what `replay` made of it: (counts, keys, verdicts) or the error."""

    __slots__ = ("first", "batch", "payload", "last", "failure", "done", "counted", "keys", "verdicts", "error")

    def __init__(self, first: int, batch: list, *, last: bool, failure: BaseException | None):
        self.first, self.batch, self.last, self.failure = first, batch, last, failure
        self.payload: bytes | None = None
        self.done = False
        self.counted: list = []
        self.keys: list = []
        self.verdicts: list = []
        self.error: BaseException | None = None


def replay_items(scratch, source: str, first: int, items: list, full: bool) -> tuple[list, list, list]:
    """Check and replay one chunk of parsed orders: (count_of of each, their idempotency keys, their
    verdicts, without steps); raises at the first order that is refused. Both processes run it."""
    from coopctl import exchange
    from coopctl.streaming import count_of, parse_item

    orders = [parse_item(source, first + index, item) for index, item in enumerate(items)]
    verdicts, keys = exchange.replay_part(scratch, orders, {}, keep_steps=False)
    return [count_of(order) for order in orders], keys, verdicts if full else _kept(verdicts, keys)


def _kept(verdicts: list, keys: list) -> list:
    """What replay --summary keeps of a chunk's verdicts: None for an order that reproduced and has
    no idempotency key (it is only counted); the others whole (a key of an earlier chunk may still
    make one diverge)."""
    return [None if v.ok and key is None else v for v, key in zip(verdicts, keys)]


class _Work:
    """This process's side: chunks replayed here, answers taken in, and the in-order checks."""

    def __init__(self, stream, scratch, full: bool, size: int):
        self.stream, self.scratch, self.full, self.size = stream, scratch, full, size
        self.owners: dict[str, int] = {}

    def here(self, entry: _Entry) -> None:
        """Check and replay the chunk in this process. An error is kept, to be raised at the chunk's
        turn after the file-wide checks of the orders before it, as `replay_chunks` meets them one by
        one; so is the reading's error after the last orders read."""
        from coopctl import exchange
        from coopctl.streaming import count_of, parse_item

        items = entry.batch if entry.batch is not None else _items(entry.payload)
        entry.batch = entry.payload = None
        source, first = self.stream.source, entry.first
        counted: list = []
        entry.error = None
        try:
            orders = []
            for index, item in enumerate(items):
                order = parse_item(source, first + index, item)
                orders.append(order)
                counted.append(count_of(order))
            if entry.failure is None:
                verdicts, entry.keys = exchange.replay_part(self.scratch, orders, {}, keep_steps=False)
                entry.verdicts = verdicts if self.full else _kept(verdicts, entry.keys)
        except Exception as exc:  # noqa: BLE001 - raised at its turn
            entry.error = exc
        entry.counted = counted
        entry.done = True

    def answer(self, entry: _Entry, replayer: "Replayer | None") -> "Replayer | None":
        """Make sure the chunk is done: the helper's answer, or replayed here (the helper is closed
        when it could not answer). Returns the helper left."""
        if entry.done:
            return replayer
        answer = replayer.receive() if replayer is not None else None
        if answer is _FAILED:
            replayer.close()
            replayer = None
        if isinstance(answer, tuple):
            entry.counted, entry.keys, entry.verdicts = answer
            entry.payload = None
            entry.done = True
        else:  # the helper refused the chunk (an error to raise here) or is gone
            self.here(entry)
        return replayer

    def finished(self, entry: _Entry) -> list:
        """The chunk's verdicts after the checks that follow the file's order; raises the chunk's
        error at its turn."""
        from coopctl import exchange

        owners = self.owners
        stream = self.stream
        for counted in entry.counted:
            stream.count(counted)
        if entry.error is not None:
            raise entry.error
        if entry.failure is not None:
            raise entry.failure
        verdicts = entry.verdicts
        if None in verdicts:
            verdicts = [Reproduced(counted[0]) if v is None else v for v, counted in zip(verdicts, entry.counted)]
        for position, key in enumerate(entry.keys):
            if key is None:
                continue
            owner = owners.get(key)
            if owner is None:
                owners[key] = entry.counted[position][0]
            else:
                verdicts[position] = exchange.duplicate_key(verdicts[position], key, owner)
        if entry.last:
            stream.finish()
        return verdicts


_FAILED = object()


class Replayer(Pipes):
    """The helper process, seen from the reader: chunks of parsed orders in, their verdicts back.

    Its frames are written by a thread of this process, not pumped between this process's own
    steps as `Pipes` does: a chunk's frame is several times what the pipe holds, and while this
    process writes an import's rows or replays a chunk itself, nothing else would send the rest,
    and the helper would wait (measured on the 1,000,000-order import: the helper was busy half
    the time). `os.write` lets go of the GIL while the pipe is full, so the thread costs this
    process's own work nothing. Only the thread writes to the helper's input, and only once it
    has stopped is that descriptor closed (`close`)."""

    def __init__(self, proc):
        super().__init__(proc)
        os.set_blocking(self.wfd, True)  # the thread waits for the pipe; nothing else writes
        self._frames: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_frames, name="replay-helper-input", daemon=True)
        self._writer.start()

    def _send_bytes(self, data: bytes) -> None:
        self._frames.put(data)

    def _write_frames(self) -> None:
        fd = self.wfd
        while True:
            data = self._frames.get()
            if data is None:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError:  # it is gone: receive() tells
                self.broken = True
                return

    def close(self) -> None:
        """Stop the thread, then the helper: its answers' pipe closed first (its next write fails and
        it stops, so the thread's write, if it waits on a full pipe, fails too), then its input."""
        self._frames.put(None)
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        self._writer.join(timeout=5)
        if self._writer.is_alive():  # a helper that neither reads nor writes: stopped, which ends the write
            self.proc.kill()
            self._writer.join()
        super().close()

    @classmethod
    def start(cls, source: str, full: bool) -> "Replayer | None":
        proc = cls.spawn("coopctl.replayhelper:serve")
        if proc is None:
            return None
        replayer = cls(proc)
        replayer._send_frame(pickle.dumps((source, full)))
        return replayer

    def submit(self, first: int, payload: bytes) -> None:
        self._send_frame(first.to_bytes(8, "little") + payload)
        self.pending += 1

    def receive(self):
        """The oldest chunk's (counts, keys, verdicts); None when the helper refused it (this process
        replays it, where the error surfaces); _FAILED when the helper is gone or garbled."""
        if self.pending == 0:
            return _FAILED
        self.pending -= 1
        try:
            data = self._receive_frame()
            if data is None:
                return _FAILED
            return pickle.loads(data) if data else None
        except Exception:  # noqa: BLE001 - OSError, a truncated or garbled answer: replayed here
            return _FAILED


def serve() -> None:
    """The helper's loop (`tickwork.serve_frames`): (source, full) first, then a chunk in, (counts,
    keys, verdicts) out, or an empty frame for a chunk in which anything went wrong."""

    def begin(data: bytes):
        from coopctl.store import Location, Store

        source, full = pickle.loads(data)
        scratch = Store(Location.memory())
        scratch.initialise(made_by="replay")

        def answer(frame: bytes) -> bytes:
            first = int.from_bytes(frame[:8], "little")
            return pickle.dumps(replay_items(scratch, source, first, _items(frame[8:]), full), protocol=pickle.HIGHEST_PROTOCOL)

        return answer

    serve_frames(begin)
