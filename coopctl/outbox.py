"""Delivering the outbox (SPEC section 5): `coopctl dispatch`, at least once and never lost.

Library first: `dispatch(svc, deliver, options, wall=…)` claims due notifications, hands each to
`deliver` (an `ExecDelivery` or a `WebhookDelivery`) on `concurrency` threads, and records how
each delivery ended; it returns a `Summary`. The clocks are arguments: `options.now` (None: the
wall clock) decides what is due, `sent_at` and `next_attempt_at`; leases always run on `wall`.

How a notification moves:
- a claim (one write transaction: on SQLite one UPDATE … RETURNING, on PostgreSQL rows locked
  FOR UPDATE SKIP LOCKED; `Tx.claim_notifications`) writes this dispatcher's `claimed_by` and a
  lease on the wall clock; the notification stays `pending` (or `failed`);
- the main thread alone talks to the database: it renews the leases of everything it still holds
  every third of a lease, and records finished deliveries in batches (one transaction per batch);
- delivered -> `sent` with `sent_at`; anything else -> `failed` with the next attempt after
  `backoff * 2**(attempts - 1)` (at most `max_backoff`), or `dead` once `max_attempts` failed;
- a stop (SIGINT/SIGTERM: `stop` is set) claims nothing more, lets what is in flight finish (each
  at most `timeout`), records it, and releases what was claimed but not started.

A notification is recorded `sent` only after its delivery succeeded: a dispatcher killed at any
moment leaves what it had in flight `pending` under a lease that runs out, and the next dispatcher
delivers it again with the same id (receivers ignore a repeat by it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Callable

from coopctl.errors import Busy, InvalidInput
from coopctl.policy import SECOND, format_duration, iso
from coopctl.rows import LISTED_NOTIFICATION_COLUMNS
from coopctl.trust import error_line

CHANNELS = ("inbox", "sms")
FLUSH_EVERY = 0.05  # seconds: finished deliveries are recorded at least this often (one transaction each time)
FLUSH_AT = 200  # ...or as soon as this many have finished
CLAIM_AT_MOST = 500  # notifications claimed in one transaction (8 per delivery slot, at least 64)
RECORD_TRIES = 5  # a batch of results the database stayed locked for is tried again this often before exit 4


# ----------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class Retry:
    backoff: int  # microseconds: the wait after the first failure
    max_backoff: int
    max_attempts: int


def after_failure(attempts_before: int, now: int, retry: Retry) -> tuple[str, int, int | None]:
    """(state, attempts, next_attempt_at) of a notification whose attempt number
    `attempts_before + 1` failed at `now`: `dead` once `max_attempts` tries failed, else `failed`,
    due again after `backoff` doubled for each earlier failure, at most `max_backoff`."""
    attempts = attempts_before + 1
    if attempts >= retry.max_attempts:
        return "dead", attempts, None
    doublings = attempts - 1
    wait_for = retry.max_backoff if doublings >= 62 else min(retry.backoff << doublings, retry.max_backoff)
    return "failed", attempts, now + wait_for


# ----------------------------------------------------------------------------- what is handed out


def notification_document(row: tuple, tz: tzinfo) -> dict:
    """The notification as `notifications --json` prints it, from a LISTED_NOTIFICATION_COLUMNS row."""
    nid, order_id, recipient, channel, kind, at, text, state, attempts, sent_at, next_at, error = row
    return {
        "id": nid, "order": order_id, "recipient": recipient, "channel": channel, "kind": kind, "at": iso(at, tz),
        "text": text, "state": state, "attempts": attempts, "sent_at": None if sent_at is None else iso(sent_at, tz),
        "next_attempt_at": None if next_at is None else iso(next_at, tz), "last_error": error,
    }


def body_of(document: dict) -> bytes:
    """The JSON handed to a command (stdin) or a webhook (the POST body): compact UTF-8."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ----------------------------------------------------------------------------- deliveries
# A delivery is called with (document, body) on a worker thread and returns None when the
# notification was delivered, else the reason it was not (one line, `error_line`).


class ExecDelivery:
    """`--exec CMD`: CMD split into words as a shell would (shlex), run without a shell, in a
    process group of its own, with the notification's JSON on stdin and COOPCTL_NOTIFICATION_ID,
    COOPCTL_RECIPIENT, COOPCTL_CHANNEL in its environment; exit 0 is delivered. Past `timeout`
    the whole group is killed (SIGKILL), so that nothing it started lingers."""

    def __init__(self, command: str, timeout: int):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidInput(f"--exec: cannot split the command into words ({exc})") from None
        if not argv:
            raise InvalidInput("--exec: the command is empty")
        if shutil.which(argv[0]) is None:
            raise InvalidInput(f"--exec: no such program {argv[0]!r} (not found, or not executable)")
        self.argv, self.timeout = argv, timeout
        self.base_env = dict(os.environ)
        self.base_env.pop("COOPCTL_WEBHOOK_SECRET", None)  # a secret is never handed on

    def __call__(self, document: dict, body: bytes) -> str | None:
        env = dict(self.base_env)
        env.update({
            "COOPCTL_NOTIFICATION_ID": str(document["id"]),
            "COOPCTL_RECIPIENT": document["recipient"],
            "COOPCTL_CHANNEL": document["channel"],
        })
        try:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            return error_line(f"cannot run {self.argv[0]}: {exc.strerror or exc}")
        try:
            _out, err = proc.communicate(body, timeout=self.timeout / SECOND)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return error_line(f"timed out after {format_duration(self.timeout)}: killed (its process group too)")
        except BaseException:
            _kill_group(proc)
            raise
        if proc.returncode == 0:
            return None
        said = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        code = proc.returncode
        why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        return error_line(f"{why}: {said[-1]}" if said else why)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        proc.kill()
        proc.wait()


class WebhookDelivery:
    """`--webhook URL`: POSTs the JSON with `Content-Type: application/json`, `Idempotency-Key: ID`
    and, with a secret, `X-Coopctl-Signature: sha256=HEX` (HMAC-SHA256 of the body); any 2xx
    answer is delivered. httpx keeps one pool of keep-alive connections shared by the worker
    threads; a request not answered in full within `timeout` is abandoned. Redirects are not
    followed (a 3xx is a failure: the body and its signature go to the URL configured, nowhere
    else). The secret is never put in a message."""

    def __init__(self, url: str, timeout: int, secret: str | None, concurrency: int):
        import httpx

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise InvalidInput(f"--webhook: not a URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInput("--webhook: give an http:// or https:// URL with a host")
        self.url, self.timeout = url, timeout
        self.key = None if not secret else secret.encode("utf-8")
        self.httpx = httpx
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout / SECOND), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": "coopctl-dispatch"},
        )

    def close(self) -> None:
        self.client.close()

    def __call__(self, document: dict, body: bytes) -> str | None:
        httpx = self.httpx
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(document["id"])}
        if self.key is not None:
            headers["X-Coopctl-Signature"] = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
        deadline = time.monotonic() + self.timeout / SECOND
        try:
            with self.client.stream("POST", self.url, content=body, headers=headers) as response:
                for _ in response.iter_raw():
                    if time.monotonic() > deadline:
                        return error_line(f"timed out after {format_duration(self.timeout)} reading the answer")
                status = response.status_code
        except httpx.TimeoutException:
            return error_line(f"timed out after {format_duration(self.timeout)}")
        except httpx.ConnectError as exc:
            return error_line(f"cannot connect: {exc}")
        except httpx.HTTPError as exc:
            return error_line(f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return error_line(f"{type(exc).__name__}: {exc.strerror or exc}")
        if 200 <= status < 300:
            return None
        return error_line(f"HTTP {status}")


# ----------------------------------------------------------------------------- the dispatcher


@dataclass(frozen=True)
class Options:
    concurrency: int = 4
    timeout: int = 30 * SECOND
    lease: int = 300 * SECOND
    channels: tuple[str, ...] | None = None
    limit: int | None = None
    loop: bool = False
    interval: int = 10 * SECOND
    now: int | None = None  # --now: the clock of what is due, sent_at and next_attempt_at; None: the wall clock


@dataclass
class Summary:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0

    def to_json(self) -> dict:
        return {"claimed": self.claimed, "sent": self.sent, "failed": self.failed, "dead": self.dead}

    def line(self) -> str:
        return f"dispatched: claimed {self.claimed}, sent {self.sent}, failed {self.failed}, dead {self.dead}"


def dispatcher_name() -> str:
    """Who holds a claim: host, process and a random part (a pid can come back)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class _Held:
    row: tuple  # LISTED_NOTIFICATION_COLUMNS
    started: bool = False


@dataclass
class _Run:
    owner: str
    summary: Summary = field(default_factory=Summary)
    queued: deque = field(default_factory=deque)  # claimed, not started: _Held
    flying: dict = field(default_factory=dict)  # Future -> _Held
    finished: list = field(default_factory=list)  # (id, state, attempts, sent_at, next_attempt_at, last_error)
    first_finished: float | None = None


def dispatch(
    svc, deliver: Callable[[dict, bytes], str | None], options: Options, *, wall: Callable[[], int],
    stop: threading.Event | None = None, retry: Retry | None = None,
) -> Summary:
    """Deliver what is due (see the module's docstring); returns what this run claimed and how
    those deliveries ended. Exceptions from the database (Busy, StorageError) end the run after
    what finished was recorded where possible and the unstarted claims were released."""
    settings = svc.settings
    retry = retry or Retry(settings.backoff, settings.max_backoff, settings.max_attempts)
    stop = stop or threading.Event()
    tz = settings.tz
    svc.store.require()
    run = _Run(dispatcher_name())
    renew_every = max(options.lease / SECOND / 3, 0.2)
    next_renewal = time.monotonic() + renew_every

    def clock() -> int:
        if options.now is not None:
            return options.now
        current = wall()
        return current - current % SECOND

    def work(held: _Held) -> tuple:
        document = notification_document(held.row, tz)
        try:
            why = deliver(document, body_of(document))
        except Exception as exc:  # a delivery must never take the dispatcher down
            why = error_line(f"{type(exc).__name__}: {exc}")
        nid, attempts = held.row[0], held.row[LISTED_NOTIFICATION_COLUMNS.index("attempts")]
        at = clock()
        if why is None:
            return (nid, "sent", attempts + 1, at, None, None)
        state, attempts, next_at = after_failure(attempts, at, retry)
        return (nid, state, attempts, None, next_at, why)

    exhausted = False
    pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="coopctl-dispatch")
    try:
        while True:
            room = None if options.limit is None else options.limit - run.summary.claimed
            if not stop.is_set() and not exhausted and len(run.queued) < options.concurrency and room != 0:
                want = min(max(8 * options.concurrency, 64), CLAIM_AT_MOST)
                if room is not None:
                    want = min(want, room)
                got = _claim(svc, run, options, clock(), wall(), want)
                if got is not None and len(got) < want:
                    exhausted = True  # nothing more is due now; in flight may still be
            while run.queued and len(run.flying) < options.concurrency and not stop.is_set():
                held = run.queued.popleft()
                held.started = True
                run.flying[pool.submit(work, held)] = held
            if run.flying:
                done, _ = wait(list(run.flying), timeout=FLUSH_EVERY, return_when=FIRST_COMPLETED)
                for future in done:
                    run.flying.pop(future)
                    run.finished.append(future.result())
                    if run.first_finished is None:
                        run.first_finished = time.monotonic()
            if run.finished and (len(run.finished) >= FLUSH_AT or not run.flying
                                 or time.monotonic() - (run.first_finished or 0) >= FLUSH_EVERY):
                _record(svc, run)
            if time.monotonic() >= next_renewal and (run.flying or run.queued):
                _renew(svc, run, wall() + options.lease)
                next_renewal = time.monotonic() + renew_every
            if run.flying or (run.queued and not stop.is_set()):
                continue
            if stop.is_set():
                break
            if exhausted or room == 0:
                if not options.loop or room == 0:
                    break
                stop.wait(options.interval / SECOND)  # nothing due: sleep, unless told to stop
                exhausted = False
    finally:
        pool.shutdown(wait=True)  # a database error: let what runs finish, then record it
        for future, held in list(run.flying.items()):
            run.flying.pop(future)
            try:
                run.finished.append(future.result())
            except Exception:  # pragma: no cover  (work() catches everything)
                run.queued.append(held)
        try:
            if run.finished:
                _record(svc, run)
        finally:
            if run.queued:
                _release(svc, run)
    return run.summary


def _claim(svc, run: _Run, options: Options, now: int, wall_now: int, want: int) -> list[tuple] | None:
    """One write transaction: the deliveries that ended are recorded (one commit for both: each
    commit is an fsync), then `want` more are claimed. None: the database stayed locked."""
    batch, run.finished, run.first_finished = run.finished, [], None
    try:
        with svc.store.write() as tx:
            tx.record_deliveries(run.owner, batch)
            rows = tx.claim_notifications(
                run.owner, now=now, wall=wall_now, lease_until=wall_now + options.lease, limit=want, channels=options.channels,
            )
    except Busy:
        run.finished = batch + run.finished  # recorded by the next flush (which retries)
        return None
    _count(run, batch)
    run.queued.extend(_Held(row) for row in rows)
    run.summary.claimed += len(rows)
    return rows


def _count(run: _Run, batch: list) -> None:
    for _nid, state, *_ in batch:
        setattr(run.summary, state, getattr(run.summary, state) + 1)


def _record(svc, run: _Run) -> None:
    """One transaction for the deliveries that ended; a database that stays locked is tried again
    (RECORD_TRIES times) before Busy: an ended delivery that is not recorded would be made again."""
    batch, run.finished, run.first_finished = run.finished, [], None
    for attempt in range(RECORD_TRIES):
        try:
            with svc.store.write() as tx:
                tx.record_deliveries(run.owner, batch)
            break
        except Busy:
            if attempt == RECORD_TRIES - 1:
                run.finished = batch + run.finished
                raise
            time.sleep(0.1 * (attempt + 1))
    _count(run, batch)


def _renew(svc, run: _Run, lease_until: int) -> None:
    ids = [h.row[0] for h in run.flying.values()] + [h.row[0] for h in run.queued]
    try:
        with svc.store.write() as tx:
            tx.renew_leases(run.owner, ids, lease_until)
    except Busy:
        pass  # tried again at the next renewal; a lease is minutes, a lock seconds


def _release(svc, run: _Run) -> None:
    ids = [h.row[0] for h in run.queued]
    with svc.store.write() as tx:
        tx.release_claims(run.owner, ids)
    run.summary.claimed -= len(ids)  # given back: not this run's
    run.queued.clear()
