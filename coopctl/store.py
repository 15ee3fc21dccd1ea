"""Storage: the engine factory, the schema and its version, and every query.

One `Store` per command; `store.write()` is one write transaction (SQLite: BEGIN IMMEDIATE,
so writers queue on the lock instead of deadlocking; PostgreSQL: row locks), `store.read()` a
read-only one. All SQL is built with SQLAlchemy from the SQLModel tables, so it is portable;
the few SQLite-specific statements (PRAGMAs, many rows per INSERT or UPDATE … FROM (VALUES …)
for bulk writes) live here and nowhere else, and so do the PostgreSQL-specific ones (the schema's
advisory lock, COPY for bulk writes, moving the id sequence after an import). The one exception
is `rows.rows_by_id_sql`, plain SQL that tick's helper process also runs, without SQLAlchemy.

Where the database is (SPEC section 7, "No silent places to lose data"): `locate` reads a user's
location and refuses one that names no file (an in-memory database keeps nothing); a SQLite file
must be a regular file, is created private (0600, so its -wal and -shm are too) and is opened
through a URI built here, read-only or immutable when the file or its folder is not writable
(`open_mode`), so that every command that only reads works on a read-only filesystem.
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import signal
import sqlite3
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

from sqlalchemy import BigInteger, Integer, LargeBinary, bindparam, cast, create_engine, event, func, insert, literal, literal_column, null, select, tuple_, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import QueuePool, StaticPool

from coopctl.errors import Busy, InvalidInput, KeyTaken, StorageError
from coopctl.lifecycle import Event, Order, Outcome
from coopctl.models import APPLICATION, EVENTS, EVIDENCE, META, NOTIFICATIONS, ORDER_PRODUCTS, ORDERS, SCHEMA_VERSION, TICK_RUNS, SQLModel
from coopctl.policy import SECOND
from coopctl.rows import (  # noqa: F401  (re-exported: the row layout belongs to storage)
    EVENT_COLUMNS,
    LISTED_NOTIFICATION_COLUMNS,
    MOVE_COLUMNS,
    NOTIFICATION_COLUMNS,
    ORDER_COLUMNS,
    STATE_COLUMNS,
    STORED_NOTIFICATION_COLUMNS,
    event_tuple,
    notification_tuple,
    order_from_row,
    order_values,
    rows_by_id_sql,
    state_tuple,
)
from coopctl.trust import shown

# Every column of an order row: ORDER_COLUMNS (what an Order is read from) and the three that are
# derived from it when it is written (`doctor` and `show` check that they still are).
FULL_ORDER_COLUMNS = ORDER_COLUMNS + ("liable_party", "deadline", "wake_at")
# The order columns schema 4 added, as an order without extensions or disputes has them.
V4_ORDER_DEFAULTS = {
    "extensions": 0, "extension_requested_by": None, "proposed_latest_start_at": None, "disputed_by": None,
    "appeals": 0, "ruling": None, "dispute_liable": None,
}
# what an order's JSON needs of its row, in this order: the machine formats of `list` read no
# more (render.order_records; the hash, the sequence and the wake-up are a third of a row's bytes)
LISTED_COLUMNS = tuple(c for c in FULL_ORDER_COLUMNS
                       if c not in ("status_since", "last_seq", "last_hash", "reminders_sent", "wake_at",
                                     "dispute_liable"))
_SCHEMA_LOCK = 0x636F6F70  # "coop": the PostgreSQL advisory lock key taken while the schema is created or upgraded
# a unique violation of the idempotency key, as PostgreSQL (the index) and SQLite (the column) name it
_IDEMPOTENCY_INDEX, _IDEMPOTENCY_COLUMN = "ux_orders_idempotency_key", "orders.idempotency_key"
_BUSY_WORDS = ("database is locked", "database table is locked", "lock timeout", "could not obtain lock", "deadlock")


@dataclass(frozen=True)
class Location:
    """Where the database is: a SQLAlchemy URL, and the file behind it for SQLite.

    A user's location always names a file or a server (`locate`); only coopctl itself uses a
    scratch in-memory database, and says so with `Location.memory()`."""

    url: str
    path: Path | None  # the SQLite file; None for a server database or the scratch memory one
    in_memory: bool = False

    @classmethod
    def memory(cls) -> "Location":
        """An in-memory SQLite database for coopctl's own scratch work (`replay`): never a user's."""
        return cls("sqlite://", None, True)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def display(self) -> str:
        if self.path is not None:
            return str(self.path)
        return make_url(self.url).render_as_string(hide_password=True)


_NO_FILE = "names no file (an in-memory database keeps nothing: every order would be lost when the command ends)"


def locate(value: str) -> Location:
    """A file path or a SQLAlchemy URL (sqlite:///x.db, postgresql+psycopg://...), for a database
    that keeps what is written: a location that names no file (`sqlite://`, `sqlite:///`,
    `:memory:`, a `file:` URI with mode=memory) is InvalidInput (SPEC section 7)."""
    if not value or not value.strip():
        raise InvalidInput("the database location is empty; give a file path or a URL")
    if "://" not in value:
        if value.strip() == ":memory:":
            raise InvalidInput(f"the database location ':memory:' {_NO_FILE}; give a file path")
        if value.startswith("file:"):
            return _file_location(_sqlite_uri_path(value, value))
        return _file_location(value)
    try:
        url = make_url(value)
    except ArgumentError:
        raise InvalidInput(f"cannot read the database URL {value!r}") from None
    if url.get_backend_name() == "sqlite":
        shown_url = url.render_as_string(hide_password=True)
        database = url.database or ""
        query = {k for k in url.query if k != "uri"}
        if database.strip() in ("", ":memory:") or str(url.query.get("mode", "")).lower() == "memory":
            raise InvalidInput(f"the database URL {shown_url!r} {_NO_FILE}; give a file, e.g. sqlite:///coopctl.db")
        if query:
            raise InvalidInput(
                f"the database URL {shown_url!r} has options ({', '.join(sorted(query))}); coopctl opens SQLite "
                "files itself: give the file alone, e.g. sqlite:///coopctl.db"
            )
        if database.startswith("file:"):
            database = _sqlite_uri_path(database, shown_url)
        return _file_location(database)
    return Location(value, None)


def _sqlite_uri_path(uri: str, shown_url: str) -> str:
    """The file a SQLite `file:` URI names; one that names none, or asks for memory or options,
    is InvalidInput."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(uri)
    path = unquote(parts.path)
    options = {k.lower(): [v.lower() for v in vs] for k, vs in parse_qs(parts.query, keep_blank_values=True).items()}
    if not path or path == ":memory:" or "memory" in options.get("mode", []) or "memdb" in options.get("vfs", []):
        raise InvalidInput(f"the database location {shown_url!r} {_NO_FILE}; give a file path")
    if parts.netloc not in ("", "localhost") or set(options) - {"uri"}:
        raise InvalidInput(
            f"the database location {shown_url!r} is a SQLite URI with options; coopctl opens SQLite files "
            "itself: give the file's path alone"
        )
    return path


def _file_location(database: str) -> Location:
    path = Path(database).expanduser().absolute()
    return Location(f"sqlite:///{path}", path)


# --------------------------------------------------------------------------- SQLite files

PRIVATE = 0o600  # new databases (and so their -wal, -shm and -journal) and exports: the owner's alone


def not_a_file(path: Path) -> None:
    """StorageError unless `path` is a regular file (symlinks followed) or does not exist."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read {shown(path)}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise StorageError(f"{shown(path)} is a directory, not a database file")
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    raise StorageError(f"{shown(path)} is {kind}, not a database file; point --db at a file (nothing was opened)")


def create_private(path: Path) -> None:
    """Create an empty database file that only its owner may read or write, whatever the umask.
    SQLite gives the -wal, -shm and -journal files it makes later the main file's permissions, so
    they are private too. Through a symlink, the file it points to is created."""
    try:
        fd = os.open(os.path.realpath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE)
    except FileExistsError:
        return  # another coopctl created it just now
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, PRIVATE)  # the umask may have taken the owner's own bits too
    finally:
        os.close(fd)


def open_mode(path: Path, where: str | None = None) -> str:
    """How to open a SQLite file so that every command that only reads can read it:

    - 'rwc': the file and its folder are writable (or the file is new): read and write;
    - 'ro': the file or its folder is not writable, and the -shm that WAL needs is there (or, in
      a writable folder, changes wait in the -wal: SQLite makes the -shm to read them): read-only;
    - 'immutable': the file or its folder is not writable (a read-only filesystem, a file of mode
      0444), there is no -shm and no changes wait in the -wal (a cleanly closed database leaves
      none): SQLite reads the main file alone, without locks, and leaves no -wal or -shm behind
      (which, made read-only, would stop the owner's next write). A -wal with changes and no
      -shm that can be made is StorageError: never an older view of the database.
    """
    if not path.exists():
        return "rwc"
    folder_writable = os.access(path.parent, os.W_OK)
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if os.access(path, os.W_OK) and (folder_writable or (_writable(wal) and _writable(shm))):
        return "rwc"
    if shm.exists():
        return "ro"
    if wal.exists() and wal.stat().st_size > 0:
        if folder_writable:
            return "ro"
        raise StorageError(
            f"the database {shown(where or path)} is read-only ({read_only_reason(path)}) and {shown(wal.name)} holds "
            f"changes that SQLite can read only with a {shown(shm.name)} it cannot create there; copy the file with "
            f"its {shown(wal.name)} to a writable folder and read it there"
        )
    return "immutable"


def _writable(path: Path) -> bool:
    return path.exists() and os.access(path, os.W_OK)


def read_only_reason(path: Path | None) -> str:
    if path is None:
        return "opened read-only"
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return "on a read-only filesystem"
    except OSError:
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    return f"its folder {shown(path.parent)} is not writable"


def sqlite_uri(path: Path, mode: str) -> str:
    """The SQLite URI of a file in one of `open_mode`'s modes."""
    query = {"rwc": "mode=rwc", "ro": "mode=ro", "immutable": "mode=ro&immutable=1"}[mode]
    return f"file://{quote(str(path))}?{query}"


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in _BUSY_WORDS)


def translate(exc: DBAPIError, where: str) -> Exception:
    """Map a driver error to Busy (exit 4) or StorageError (exit 5)."""
    if _is_busy(exc):
        return Busy(f"the database {where} stayed locked by another coopctl; nothing was changed, try again")
    detail = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
    if "not a database" in detail or "file is encrypted" in detail:
        return StorageError(f"{where} is not a SQLite database ({detail}); point --db at a coopctl database")
    if "no such table" in detail:
        return StorageError(f"{where} is not a coopctl database (no coopctl tables); run `coopctl init` on a new file")
    if "does not exist" in detail and "relation" in detail:
        return StorageError(f"{where} is not a coopctl database (no coopctl tables); run `coopctl init` to create them")
    server = _server_problem(detail, where)
    if server is not None:
        return server
    return StorageError(f"database problem at {where}: {detail}")


def _server_problem(detail: str, where: str) -> StorageError | None:
    """PostgreSQL connection failures, said in one line without the driver's preamble (and never
    with a password: `where` hides it and the server does not echo it)."""
    lowered = detail.lower()
    reason = detail.split("FATAL:", 1)[-1].strip() if "FATAL:" in detail else detail
    if "database" in lowered and "does not exist" in lowered:
        return StorageError(
            f"{where}: {reason}; create it on the server (createdb), then run `coopctl init`"
        )
    if "connection refused" in lowered or "could not translate host name" in lowered or "failed to resolve host" in lowered or "timeout expired" in lowered:
        return StorageError(f"cannot reach the PostgreSQL server of {where} ({reason.split(': ')[-1]}); is it running?")
    if "authentication failed" in lowered or "no pg_hba.conf entry" in lowered or "role" in lowered and "does not exist" in lowered:
        return StorageError(f"the PostgreSQL server of {where} refused the login: {reason}")
    return None


class Store:
    """A database opened for one command."""

    def __init__(self, location: Location, *, busy_timeout: int = 10 * SECOND):
        self.location = location
        self.busy_timeout = busy_timeout
        self._engine: Engine | None = None
        self._open_mode: str | None = None

    # ---------------------------------------------------------------- engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        seconds = self.busy_timeout / SECOND
        try:
            if self.location.is_sqlite:
                if self.location.path is None:  # coopctl's own scratch database (Location.memory)
                    # An in-memory database lives only as long as its connection: keep one for the Store.
                    engine = create_engine(
                        "sqlite://", poolclass=StaticPool,
                        connect_args={"timeout": seconds, "isolation_level": None, "check_same_thread": False},
                    )
                else:
                    # The file is opened through a SQLite URI that coopctl builds itself, so that the
                    # open mode (read-write, read-only, immutable) is chosen here and nothing in a
                    # user's URL can turn it into another database. One connection serves the whole
                    # command (kept in the pool, so the WAL is not checkpointed after every batch).
                    self._check_file()
                    connect = functools.partial(
                        sqlite3.connect, sqlite_uri(self.location.path, self.open_mode), uri=True,
                        timeout=seconds, isolation_level=None, check_same_thread=False,
                    )
                    engine = create_engine("sqlite://", creator=connect, poolclass=QueuePool)
                event.listen(engine, "connect", _sqlite_connect)
                event.listen(engine, "begin", _sqlite_begin)
                return engine
            connect_args = {}
            if make_url(self.location.url).get_backend_name() == "postgresql":
                millis = max(1, int(seconds * 1000))
                connect_args = {"options": f"-c lock_timeout={millis} -c statement_timeout=0", "connect_timeout": max(1, int(seconds))}
            # One connection serves the whole command (a server connection costs a round trip and a
            # backend process): kept in the pool between the command's transactions.
            return create_engine(self.location.url, connect_args=connect_args, poolclass=QueuePool)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise InvalidInput(f"cannot use the database URL {self.location.display}: {exc}") from None

    # ---------------------------------------------------------------- the file

    @property
    def open_mode(self) -> str:
        """How the SQLite file is opened, decided once when it is first needed (`open_mode`):
        'rwc', 'ro' or 'immutable'; always 'rwc' for other databases."""
        if self._open_mode is None:
            path = self.location.path
            self._open_mode = "rwc" if path is None else open_mode(path, self.location.display)
        return self._open_mode

    @property
    def read_only(self) -> bool:
        return self.open_mode != "rwc"

    def read_only_uri(self) -> str:
        """A SQLite URI that opens the file for reading only (doctor's own connection)."""
        return sqlite_uri(self.location.path, "immutable" if self.open_mode == "immutable" else "ro")

    def _check_file(self) -> None:
        """A SQLite location must be a regular file (or not exist yet): a device, a FIFO or a socket
        is refused before SQLite touches it (it would write `/dev/null-journal`, say)."""
        path = self.location.path
        if path is not None:
            not_a_file(path)

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise StorageError(
                f"the database {shown(self.location.display)} is read-only ({read_only_reason(self.location.path)}); "
                "nothing was changed. Commands that only read (show, list, history, notifications, export, "
                "doctor) work on it; copy it to a writable place to change it"
            )

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # ---------------------------------------------------------------- existence and schema

    def exists(self) -> bool:
        path = self.location.path
        if path is None:
            return True
        not_a_file(path)
        return path.exists()

    def require(self, *, upgrade: bool = True) -> int:
        """For commands that never create a database: it must exist and be a coopctl one, not newer
        than this coopctl; an older one is upgraded in place (unless `upgrade` is False: `doctor`
        only looks; nor on a read-only file, which the commands that only read can still read).
        Returns the schema version it has now."""
        path = self.location.path
        if path is not None:
            not_a_file(path)
            if not path.exists():
                raise StorageError(f"no database at {path}; create one with `coopctl init` or point --db/COOPCTL_DB at one")
        with self.read() as tx:
            version = tx.schema_version()
        if version < SCHEMA_VERSION and upgrade and not self.read_only:
            self.upgrade()
            version = SCHEMA_VERSION
        return version

    def upgrade(self) -> bool:
        """Bring an older coopctl database to this schema version in place, in one write
        transaction (coopctl/migrations.py); True when it was upgraded now."""
        from coopctl import migrations

        with self.write() as tx:
            tx.lock_schema()
            return bool(migrations.upgrade(tx.conn, tx.schema_version()))

    def initialise(self, *, made_by: str = "init", report: Callable[[bool], None] | None = None) -> bool:
        """Create the schema if the database is new; True when it was created now. `report` (if
        given) is called with that answer inside the transaction, before it commits."""
        path = self.location.path
        if path is not None:
            not_a_file(path)
            if not path.parent.exists():
                raise StorageError(f"cannot create {path}: the folder {path.parent} does not exist")
            if not path.exists():
                create_private(path)
        self._refuse_read_only()
        if path is not None and path.stat().st_size == 0:
            self._ensure_wal()  # a new file is born in WAL mode, before any table exists
        with self.write() as tx:
            tx.lock_schema()
            state = tx.schema_state()
            if state == "coopctl":
                from coopctl import migrations

                migrations.upgrade(tx.conn, tx.schema_version())
                created = False
            elif state == "foreign":
                raise StorageError(
                    f"{self.location.display} already holds tables that are not coopctl's; refusing to touch it"
                )
            else:
                SQLModel.metadata.create_all(tx.conn)
                tx.conn.execute(
                    insert(META),
                    [
                        {"key": "application", "value": APPLICATION},
                        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                        {"key": "made_by", "value": made_by},
                    ],
                )
                created = True
            if report is not None:
                report(created)
        self._ensure_wal()  # also mends a coopctl database left in another journal mode
        return created

    def _ensure_wal(self) -> None:
        """WAL is a property of the file, set outside a transaction (waiting out locks like any
        statement); only on a new file or a coopctl database, never on someone else's."""
        if not self.location.is_sqlite:
            return
        try:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() not in ("wal", "memory"):
                    cursor.execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()
        except DBAPIError as exc:
            raise translate(exc, self.location.display) from None
        except sqlite3.Error as exc:
            raise translate(OperationalError("PRAGMA journal_mode=WAL", None, exc), self.location.display) from None

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def write(self) -> Iterator["Tx"]:
        self._refuse_read_only()
        with self._transaction(write=True) as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator["Tx"]:
        with self._transaction(write=False) as tx:
            yield tx

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator["Tx"]:
        where = self.location.display
        try:
            with self.engine.connect() as conn:
                conn.execution_options(coopctl_write=write)
                transaction = conn.begin()
                outcome = "rolled back"
                try:
                    yield Tx(conn, self.location.is_sqlite)
                    with _interrupts_wait():  # a Ctrl-C now would leave unsaid whether this committed
                        transaction.commit()
                        outcome = "committed"
                finally:
                    if transaction.is_active:
                        transaction.rollback()
                    if write:
                        WRITES.latest = outcome
        except IntegrityError as exc:
            detail = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
            if _IDEMPOTENCY_INDEX in detail or _IDEMPOTENCY_COLUMN in detail:
                # two creates with one new key: the other committed first; a new transaction finds its order
                raise KeyTaken(
                    f"another coopctl created an order with the same idempotency key at the same time ({detail}); "
                    "nothing was changed, try again"
                ) from None
            raise Busy(
                f"another coopctl changed the same order at the same time ({detail}); "
                "nothing was changed, try again"
            ) from None
        except DBAPIError as exc:
            raise translate(exc, where) from None


class WRITES:
    """What became of this process's latest write transaction, for the one line an interrupt
    prints (`cli.base.guarded`): "none" (there was none), "rolled back" or "committed"."""

    latest = "none"


@contextmanager
def _interrupts_wait() -> Iterator[None]:
    """A SIGINT (Ctrl-C) that arrives during a commit is raised once the commit has returned and
    `WRITES` says so; otherwise the interrupt could land between the two, and the command would
    say its transaction was rolled back when it was not. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # no handler this process could put back (one set outside Python): leave it alone
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        signal.raise_signal(signal.SIGINT)  # to the handler that was there (KeyboardInterrupt)


def _sqlite_connect(dbapi_conn, record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the lock at BEGIN (IMMEDIATE): no deferred read-to-write upgrade deadlocks."""
    write = conn.get_execution_options().get("coopctl_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# --------------------------------------------------------------------------- rows <-> records


class Bulk:
    """A statement compiled once for the connection's dialect and run with executemany on
    plain tuples: the SQL is still built from the SQLModel tables (portable), but the per-row
    parameter processing of SQLAlchemy is skipped on the hot paths (tick, bulk loading)."""

    _cache: dict = {}

    def __init__(self, sql: str, names: tuple[str, ...] | None, defaults: dict):
        self.sql = sql
        self.names = names  # positional dialects: the order of the parameters
        self.defaults = defaults  # values the compiler bound itself (e.g. OFFSET 0)

    @classmethod
    def of(cls, conn: Connection, key: str, build) -> "Bulk":
        dialect = conn.dialect
        cached = cls._cache.get((key, dialect.name, dialect.paramstyle))
        if cached is None:
            compiled = build().compile(dialect=dialect)
            names = tuple(compiled.positiontup) if compiled.positional else None
            cached = cls(str(compiled), names, {k: v for k, v in compiled.params.items() if v is not None})
            cls._cache[(key, dialect.name, dialect.paramstyle)] = cached
        return cached

    def run(self, conn: Connection, columns: tuple[str, ...], rows: list[tuple]):
        """Execute for rows given as tuples in `columns` order."""
        if self.names is not None:
            if self.names != columns:
                index = [columns.index(n) for n in self.names]
                rows = [tuple(r[i] for i in index) for r in rows]
            return conn.exec_driver_sql(self.sql, rows)
        return conn.exec_driver_sql(self.sql, [dict(zip(columns, r)) for r in rows])

    def query(self, conn: Connection, params: dict):
        params = {**self.defaults, **params}
        if self.names is not None:
            return conn.exec_driver_sql(self.sql, tuple(params[n] for n in self.names))
        return conn.exec_driver_sql(self.sql, params)

    def tuples(self, conn: Connection, params: dict) -> list[tuple]:
        """The rows of `query` as the driver's plain tuples (see `_tuples`)."""
        return _tuples(conn, self.sql, self.query(conn, params))


@contextmanager
def _driver_errors(conn: Connection, sql: str) -> Iterator[None]:
    """Work done on the driver itself (fetching, COPY): a driver error comes back as SQLAlchemy's
    (IntegrityError, OperationalError, …) like any other statement's."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error, dialect=conn.dialect) from None


def _tuples(conn: Connection, sql: str, result) -> list[tuple]:
    """Every row of an executed statement as the driver's plain tuples, without SQLAlchemy's Row
    objects (a quarter of the cost of reading tick's due orders)."""
    try:
        with _driver_errors(conn, sql):
            return result.cursor.fetchall()
    finally:
        result.close()


_COPY_AT_LEAST = 50  # PostgreSQL: from this many rows on, inserts go through COPY


def _copy(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """PostgreSQL's bulk path: COPY … FROM STDIN on the transaction's own connection."""
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    with _driver_errors(conn, sql):
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)


_MULTI_AT_LEAST = 8  # SQLite: from this many rows on, several rows go in each statement
_MULTI_ROWS = 500  # SQLite: rows per statement (fewer if the build allows fewer parameters)


def _multi_rows(conn: Connection, width: int) -> int:
    """How many rows of `width` parameters fit in one statement on this SQLite connection."""
    limit = conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(_MULTI_ROWS, limit // width))


@lru_cache(maxsize=64)
def _multi_sql(kind: str, table: str, columns: tuple[str, ...], rows: int, quote) -> str:
    """SQLite's bulk statements for `rows` rows at once: one `INSERT … VALUES (…), (…)`, or one
    `UPDATE … FROM (VALUES …)` guarded like `_update_statement` (the last two values of each row are
    the order's id and the seq it was read at). SQLite then writes hundreds of rows in one step,
    without a round through the driver for each row as executemany makes."""
    values = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * rows)
    if kind == "insert":
        return f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) VALUES {values}"
    state = columns[:-2]
    sets = ", ".join(f"{quote(c)} = v.column{i}" for i, c in enumerate(state, 1))
    return (
        f"UPDATE {quote(table)} SET {sets} FROM (VALUES {values}) AS v "
        f"WHERE {quote(table)}.id = v.column{len(state) + 1} AND {quote(table)}.last_seq = v.column{len(state) + 2}"
    )


def _multi(conn: Connection, kind: str, table: str, columns: tuple[str, ...], rows: list[tuple]) -> int:
    """Run `_multi_sql` over `rows` in chunks; the number of rows written."""
    per = _multi_rows(conn, len(columns))
    quote = conn.dialect.identifier_preparer.quote
    written = 0
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        flat = tuple(chain.from_iterable(chunk))
        written += conn.exec_driver_sql(_multi_sql(kind, table, columns, len(chunk), quote), flat).rowcount
    return written


def _insert(table, columns: tuple[str, ...]):
    return lambda: insert(table).values({c: bindparam(c) for c in columns})


# The columns an event is read from: every one but log_index (schema 3, coopctl/seal.py), so that
# `doctor` still reads the events of an older database it does not upgrade.
_EVENT_READ = tuple(c for c in EVENTS.c if c.name != "log_index")


def event_from_row(row) -> Event:
    return Event(row.order_id, row.seq, row.kind, row.at, row.actor, row.operator, _event_data(row.data), row.prev_hash, row.hash)


def _event_data(text):
    """An event's data; text that is not JSON (written outside coopctl) is kept as it is, so that
    the hash check names the altered event instead of the read failing."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text


def _update_statement(columns: tuple[str, ...] = STATE_COLUMNS):
    return (
        update(ORDERS)
        .where(ORDERS.c.id == bindparam("b_id"), ORDERS.c.last_seq == bindparam("b_last_seq"))
        .values({name: bindparam(name) for name in columns})
    )


_GUARD = ("b_id", "b_last_seq")
# What a guarded state row holds (rows.guarded_state), by its length: every state column, or
# those a move changes; then the guard.
_UPDATE_COLUMNS = STATE_COLUMNS + _GUARD
_MOVE_UPDATE_COLUMNS = MOVE_COLUMNS + _GUARD
_UPDATES = {
    len(_UPDATE_COLUMNS): ("update_state", _UPDATE_COLUMNS),
    len(_MOVE_UPDATE_COLUMNS): ("update_move", _MOVE_UPDATE_COLUMNS),
}


def _update_from_copy(conn: Connection, params: list[tuple], columns: tuple[str, ...] = _UPDATE_COLUMNS) -> int:
    """PostgreSQL's bulk path for the guarded update: the new states are COPYed into a temporary
    table (dropped at commit), then one UPDATE … FROM joins it on (id, last seq); the row count
    still tells whether another coopctl changed one of the orders meanwhile."""
    from sqlalchemy import BigInteger, Column, MetaData, Table

    state = columns[:-2]
    staged = Table(
        "coopctl_new_state", MetaData(),
        *[Column(name, ORDERS.c[name].type) for name in state],
        Column("b_id", BigInteger), Column("b_last_seq", BigInteger),
        prefixes=["TEMPORARY"], postgresql_on_commit="DROP",
    )
    staged.create(conn)
    _copy(conn, staged.name, columns, params)
    statement = (
        update(ORDERS)
        .where(ORDERS.c.id == staged.c.b_id, ORDERS.c.last_seq == staged.c.b_last_seq)
        .values({name: staged.c[name] for name in state})
    )
    changed = conn.execute(statement).rowcount
    staged.drop(conn)  # a second group of the same transaction stages its own
    return changed


def _select_orders():
    return select(*[ORDERS.c[name] for name in ORDER_COLUMNS])


def _select_due():
    return (
        _select_orders()
        .where(ORDERS.c.wake_at <= bindparam("now"))
        .order_by(ORDERS.c.wake_at, ORDERS.c.id)
        .limit(bindparam("limit", type_=Integer))
    )


def _select_due_claim():
    """Due orders for a worker to claim (PostgreSQL): ordered by the indexed wake_at only, so that
    LIMIT stops the index scan early; SQLite's index on wake_at already ends with the id."""
    return (
        _select_orders()
        .where(ORDERS.c.wake_at <= bindparam("now"))
        .order_by(ORDERS.c.wake_at)
        .limit(bindparam("limit", type_=Integer))
    )


def _select_due_after():
    wake, oid = bindparam("after_wake"), bindparam("after_id")
    return (
        _select_orders()
        .where(ORDERS.c.wake_at <= bindparam("now"))
        .where((ORDERS.c.wake_at > wake) | ((ORDERS.c.wake_at == wake) & (ORDERS.c.id > oid)))
        .order_by(ORDERS.c.wake_at, ORDERS.c.id)
        .limit(bindparam("limit", type_=Integer))
    )


def _due_query(now: int, limit: int, after: tuple[int, int] | None):
    """(cache key, statement builder, parameters) of the first `limit` due orders by (wake_at, id),
    after the key `after` when given."""
    params: dict = {"now": now, "limit": limit}
    if after is None:
        return "due", _select_due, params
    params["after_wake"], params["after_id"] = after
    return "due_after", _select_due_after, params


def _ids_only(build):
    """The keys of the same due orders: their ids alone, straight from the covering index on wake_at."""
    return lambda: build().with_only_columns(ORDERS.c.id)


LIST_SORTS = ("id", "created", "deadline")
_PREFIX_END = "\U0010ffff"  # after every character a stored id may hold: p* is p <= value < p + U+10FFFF


@dataclass(frozen=True)
class ListQuery:
    """What `coopctl list` asks for (SPEC section 4, "Lists"): filters combined with AND, and the
    order. A merchant, creator or product ending in `*` is a prefix. Instants are microseconds."""

    statuses: tuple[str, ...] | None = None  # None: any status; (): none (a contradictory --status/--terms)
    merchant: str | None = None
    creator: str | None = None
    product: str | None = None
    liable: str | None = None
    created_after: int | None = None
    created_before: int | None = None
    due_before: int | None = None
    overdue_at: int | None = None  # --overdue: a deadline at or before this instant (now)
    sort: str = "id"  # one of LIST_SORTS
    descending: bool = False


def _sort_column(sort: str):
    return {"id": ORDERS.c.id, "created": ORDERS.c.created_at, "deadline": ORDERS.c.deadline}[sort]


def _merge_key(query: ListQuery, key: tuple) -> tuple:
    """The order of `list_page`'s merge: the sort value (none last), then the id; descending turns
    both around but still puts the orders without a deadline last."""
    value, order_id = key
    if query.descending:
        return (value is None, 0 if value is None else -value, -order_id)
    return (value is None, 0 if value is None else value, order_id)


def _matches(column, value: str):
    """Equality, or for a value ending in `*` a prefix as a range an index serves (never LIKE,
    which SQLite's case-insensitive LIKE cannot serve from an index), checked exactly as well
    (a PostgreSQL collation other than C may order some characters otherwise)."""
    if not value.endswith("*"):
        return [column == value]
    prefix = value[:-1]
    if not prefix:
        return []
    return [column >= prefix, column < prefix + _PREFIX_END, func.substr(column, 1, len(prefix)) == prefix]


def _distinct_ids(merged):
    """Merged (order, key) pairs with an order met twice in a row (two runs found it) kept once."""
    last = None
    for found in merged:
        if found[1] != last:
            last = found[1]
            yield found


def _list_conditions(query: ListQuery, status: str | None, *, counting: bool = False) -> list:
    """The WHERE of a run of `list_page` (one status, or any) or of its count. An exact product is
    a join that drives the page (`Tx._segment`); a prefix, or the count, asks order_products."""
    conditions: list = [ORDERS.c.status == status] if status is not None else [ORDERS.c.status != ""]
    if query.merchant is not None:
        conditions += _matches(ORDERS.c.merchant, query.merchant)
    if query.creator is not None:
        conditions += _matches(ORDERS.c.creator, query.creator)
    if query.product is not None and (query.product.endswith("*") or counting) and query.product != "*":
        products = select(ORDER_PRODUCTS.c.order_id).where(*_matches(ORDER_PRODUCTS.c.product, query.product))
        conditions.append(ORDERS.c.id.in_(products))
    if query.liable is not None:
        conditions.append(ORDERS.c.liable_party == query.liable)
    if query.created_after is not None:
        conditions.append(ORDERS.c.created_at > query.created_after)
    if query.created_before is not None:
        conditions.append(ORDERS.c.created_at < query.created_before)
    if query.due_before is not None:
        conditions.append(ORDERS.c.deadline < query.due_before)
    if query.overdue_at is not None:
        conditions.append(ORDERS.c.deadline <= query.overdue_at)
    return conditions


class Tx:
    """One transaction: the queries and writes a command needs."""

    def __init__(self, conn: Connection, is_sqlite: bool):
        self.conn = conn
        self.is_sqlite = is_sqlite

    # ---------------------------------------------------------------- schema

    def lock_schema(self) -> None:
        """Creating or upgrading the schema, one process at a time: on PostgreSQL a transaction-level
        advisory lock (two first `create`s on a new database would otherwise both create tables);
        SQLite's BEGIN IMMEDIATE already serialises every writer."""
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")

    def schema_state(self) -> str:
        """'empty', 'coopctl' or 'foreign'."""
        from sqlalchemy import inspect

        names = set(inspect(self.conn).get_table_names())
        if META.name in names:
            return "coopctl"
        return "foreign" if names else "empty"

    def meta(self) -> dict[str, str]:
        return {row.key: row.value for row in self.conn.execute(select(META.c.key, META.c.value))}

    def check_schema(self) -> dict[str, str]:
        meta = self.meta()
        if meta.get("application") != APPLICATION:
            raise StorageError("this database is not a coopctl database")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise StorageError(
                f"this coopctl database records no readable schema version ({meta.get('schema_version')!r}); "
                "restore it from a backup"
            ) from None
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"this database has schema version {version}, newer than this coopctl understands "
                f"({SCHEMA_VERSION}); upgrade coopctl"
            )
        return meta

    def schema_version(self) -> int:
        """The schema version of this coopctl database (not newer than this coopctl's)."""
        return int(self.check_schema()["schema_version"])

    # ---------------------------------------------------------------- orders

    def load(self, order_id: int, *, lock: bool = False) -> Order | None:
        query = _select_orders().where(ORDERS.c.id == order_id)
        if lock and not self.is_sqlite:
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        return None if row is None else order_from_row(row)

    def find_by_key(self, key: str) -> Order | None:
        row = self.conn.execute(_select_orders().where(ORDERS.c.idempotency_key == key)).first()
        return None if row is None else order_from_row(row)

    def new_order_id(self) -> int:
        """The next id, reserved by inserting a placeholder row in this transaction."""
        placeholder = {
            "merchant": "", "creator": "", "products": "[]", "form": "", "commission_pct": "0", "ad_budget": "0",
            "latest_start_at": 0, "policy": "{}", "reminders": "{}", "created_at": 0, "status": "", "status_since": 0,
            "failed_reviews": 0, "last_seq": 0, "last_hash": "", "last_event_at": 0, "reminders_sent": "[]",
            "extensions": 0, "appeals": 0,
        }
        result = self.conn.execute(insert(ORDERS).values(placeholder).returning(ORDERS.c.id))
        return result.scalar_one()

    def fill_new(self, outcome: Outcome) -> None:
        """Write a newly created order into its reserved row, with its events and notifications."""
        values = order_values(outcome.order)
        self.conn.execute(update(ORDERS).where(ORDERS.c.id == outcome.order.id).values(values))
        self._insert_products([outcome.order])
        self._append(outcome)

    def insert_orders(self, orders: list[Order]) -> None:
        """Bulk insert of whole orders with their ids (import, bulk loading)."""
        if orders:
            columns = tuple(order_values(orders[0]))
            self._insert_rows("insert_orders", ORDERS, columns, [tuple(order_values(o).values()) for o in orders])
            self._insert_products(orders)

    def _insert_products(self, orders: list[Order]) -> None:
        """order_products (schema 3): one row per distinct product of each new order, so that
        `list --product` searches an index. Written where orders are inserted; never changed."""
        rows = [(p, o.id) for o in orders for p in dict.fromkeys(o.terms.products)]
        if rows:
            self._insert_rows("insert_order_products", ORDER_PRODUCTS, ("product", "order_id"), rows)

    def insert_new(self, outcomes: list[Outcome]) -> None:
        """Bulk path for whole new orders decided by the rules (bulk loading, benchmarks)."""
        self.insert_orders([o.order for o in outcomes])
        self._append_many(outcomes)

    def ids_present(self, ids: list[int]) -> set[int]:
        present: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            present.update(self.conn.execute(select(ORDERS.c.id).where(ORDERS.c.id.in_(chunk))).scalars())
        return present

    def save(self, before: list[Order], outcomes: list[Outcome]) -> None:
        """Write many outcomes at once: each order's row (guarded by its last seq), events, notifications."""
        changed = [(b, o) for b, o in zip(before, outcomes) if o.events or o.notifications]
        if changed:
            self.save_rows(
                [state_tuple(o.order) + (b.id, b.last_seq) for b, o in changed],
                [event_tuple(e) for _, o in changed for e in o.events],
                [notification_tuple(n) for _, o in changed for n in o.notifications],
            )

    def save_rows(self, states: list[tuple], events: list[tuple], notifications: list[tuple]) -> None:
        """Write decided rows: `states` are guarded states (rows.guarded_state: STATE_COLUMNS, or
        MOVE_COLUMNS alone, then the order's id and the seq it was read at), `events` and
        `notifications` row tuples, each in the order they happened."""
        if not states:
            return
        # Write in id order: rows and index pages are then visited sequentially, not at random
        # (half the cost of a tick batch on a large book), and row locks are taken in one order.
        # The sorts are stable, so each order's events and notifications keep their own order.
        if any(states[i][-2] > states[i + 1][-2] for i in range(len(states) - 1)):
            states = sorted(states, key=lambda row: row[-2])
            events = sorted(events, key=lambda row: row[0])
            notifications = sorted(notifications, key=lambda row: row[0])
        groups: dict[int, list[tuple]] = {}
        for row in states:
            groups.setdefault(len(row), []).append(row)
        rowcount = 0
        for width, rows in sorted(groups.items()):
            key, columns = _UPDATES[width]
            if len(rows) >= _COPY_AT_LEAST and self.conn.dialect.name == "postgresql":
                written = _update_from_copy(self.conn, rows, columns)
            elif len(rows) >= _MULTI_AT_LEAST and self.is_sqlite:
                written = _multi(self.conn, "update", ORDERS.name, columns, rows)
            else:
                build = (lambda: _update_statement(columns[:-2]))
                written = Bulk.of(self.conn, key, build).run(self.conn, columns, rows).rowcount
            rowcount = -1 if written == -1 or rowcount == -1 else rowcount + written
        if rowcount not in (-1, len(states)):
            raise Busy("another coopctl changed some of these orders at the same time; nothing was changed, try again")
        if events:
            self._insert_rows("insert_events", EVENTS, EVENT_COLUMNS, events)
        if notifications:
            self._insert_rows("insert_notifications", NOTIFICATIONS, NOTIFICATION_COLUMNS, notifications)

    def _append(self, outcome: Outcome) -> None:
        self._append_many([outcome])

    def _append_many(self, outcomes: list[Outcome]) -> None:
        events = [event_tuple(e) for o in outcomes for e in o.events]
        notes = [notification_tuple(n) for o in outcomes for n in o.notifications]
        if events:
            self._insert_rows("insert_events", EVENTS, EVENT_COLUMNS, events)
        if notes:
            self._insert_rows("insert_notifications", NOTIFICATIONS, NOTIFICATION_COLUMNS, notes)

    def _insert_rows(self, key: str, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Many rows at once: for more than a few rows, up to 500 rows per INSERT on SQLite and COPY on
        PostgreSQL (several times faster than one INSERT per row, even pipelined); else the compiled
        INSERT with executemany."""
        if len(rows) >= _COPY_AT_LEAST and self.conn.dialect.name == "postgresql":
            _copy(self.conn, table.name, columns, rows)
        elif len(rows) >= _MULTI_AT_LEAST and self.is_sqlite:
            _multi(self.conn, "insert", table.name, columns, rows)
        else:
            Bulk.of(self.conn, key, _insert(table, columns)).run(self.conn, columns, rows)

    def insert_history(self, events: list[Event], notifications: list[dict]) -> None:
        """Bulk insert of stored events and notification rows with their `sent_at` (import), on the
        same bulk path as tick."""
        if events:
            self._insert_rows("insert_events", EVENTS, EVENT_COLUMNS, [event_tuple(e) for e in events])
        if notifications:
            columns = STORED_NOTIFICATION_COLUMNS
            rows = [tuple(n[c] for c in columns) for n in notifications]
            self._insert_rows("insert_stored_notifications", NOTIFICATIONS, columns, rows)

    def follow_explicit_ids(self) -> None:
        """After orders were inserted with their own ids (import): new ids must come after them.
        SQLite takes max(id) + 1 by itself; a PostgreSQL sequence has to be moved on."""
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders))"
            )

    # ---------------------------------------------------------------- reading

    def events(self, order_id: int) -> list[Event]:
        rows = self.conn.execute(select(*_EVENT_READ).where(EVENTS.c.order_id == order_id).order_by(EVENTS.c.seq))
        return [event_from_row(r) for r in rows]

    def events_of(self, order_ids: list[int]) -> dict[int, list[Event]]:
        found: dict[int, list[Event]] = {i: [] for i in order_ids}
        for start in range(0, len(order_ids), 500):
            chunk = order_ids[start : start + 500]
            rows = self.conn.execute(
                select(*_EVENT_READ).where(EVENTS.c.order_id.in_(chunk)).order_by(EVENTS.c.order_id, EVENTS.c.seq)
            )
            for r in rows:
                found[r.order_id].append(event_from_row(r))
        return found

    def notification_rows(
        self, order_ids: list[int] | None = None, *, pending: bool = False, limit: int | None = None, claim: bool = False,
        wall: int | None = None,
    ):
        """Outbox rows by id. `pending`: state pending. `claim` (to mark them sent): those a
        dispatcher holds under a running lease (on the wall clock `wall`) are left out, and on
        PostgreSQL the rows are locked, skipping those another command holds, so that two
        `--mark-sent` at once never hand out the same one."""
        c = NOTIFICATIONS.c
        query = select(NOTIFICATIONS).order_by(c.id)
        if claim and not self.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        if order_ids is not None:
            query = query.where(c.order_id.in_(order_ids))
        if pending:
            query = query.where(c.state == "pending")
        if claim and wall is not None:
            query = query.where((c.lease_until.is_(None)) | (c.lease_until < wall))
        if limit is not None:
            query = query.limit(limit)
        return list(self.conn.execute(query))

    def mark_sent(self, ids: list[int], at: int) -> None:
        c = NOTIFICATIONS.c
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.conn.execute(
                update(NOTIFICATIONS).where(c.id.in_(chunk), c.state.in_(("pending", "failed")))
                .values(sent_at=at, state="sent", claimed_by=None, lease_until=None, next_attempt_at=None)
            )

    # ---------------------------------------------------------------- the outbox (SPEC section 5)
    # A claim takes the due notifications oldest first (by id): `pending` ones (next_attempt_at
    # NULL or come), `failed` ones whose next attempt has come, both without a running lease. Each
    # state is read through the index on (state, id); on PostgreSQL the rows are locked FOR UPDATE
    # SKIP LOCKED, so that dispatchers claiming at once take different ones; on SQLite the claim is
    # one UPDATE … RETURNING in a write transaction (one writer at a time).

    def _due_ids(self, state: str, now: int, wall: int, limit: int, channels: tuple[str, ...] | None):
        c = NOTIFICATIONS.c
        query = select(c.id).where(
            c.state == state, (c.next_attempt_at.is_(None)) | (c.next_attempt_at <= now),
            (c.lease_until.is_(None)) | (c.lease_until < wall),
        )
        if channels:
            query = query.where(c.channel.in_(channels))
        return query.order_by(c.state, c.id).limit(limit)

    def claim_notifications(
        self, owner: str, *, now: int, wall: int, lease_until: int, limit: int, channels: tuple[str, ...] | None = None,
    ) -> list[tuple]:
        """Claim at most `limit` due notifications for `owner` until `lease_until` (wall clock);
        returns their LISTED_NOTIFICATION_COLUMNS rows, by id."""
        c = NOTIFICATIONS.c
        listed = [c[name] for name in LISTED_NOTIFICATION_COLUMNS]
        if self.is_sqlite:
            pending = self._due_ids("pending", now, wall, limit, channels).subquery()
            failed = self._due_ids("failed", now, wall, limit, channels).subquery()
            both = select(pending.c.id).union_all(select(failed.c.id)).subquery()
            chosen = select(both.c.id).order_by(both.c.id).limit(limit)
            statement = (
                update(NOTIFICATIONS).where(c.id.in_(chosen)).values(claimed_by=owner, lease_until=lease_until)
                .returning(*listed)
            )
            rows = _tuples(self.conn, "claim notifications", self.conn.execute(statement))
            return sorted(rows)
        ids: list[int] = []
        for state in ("pending", "failed"):
            query = self._due_ids(state, now, wall, limit, channels).with_for_update(skip_locked=True)
            ids += [r[0] for r in self.conn.execute(query)]
        ids = sorted(ids)[:limit]
        if not ids:
            return []
        statement = (
            update(NOTIFICATIONS).where(c.id.in_(ids)).values(claimed_by=owner, lease_until=lease_until).returning(*listed)
        )
        return sorted(_tuples(self.conn, "claim notifications", self.conn.execute(statement)))

    def renew_leases(self, owner: str, ids: list[int], lease_until: int) -> None:
        c = NOTIFICATIONS.c
        for start in range(0, len(ids), 500):
            self.conn.execute(
                update(NOTIFICATIONS).where(c.id.in_(ids[start : start + 500]), c.claimed_by == owner)
                .values(lease_until=lease_until)
            )

    def release_claims(self, owner: str, ids: list[int]) -> None:
        """Give back what `owner` claimed and did not start: due again at once for any dispatcher."""
        c = NOTIFICATIONS.c
        for start in range(0, len(ids), 500):
            self.conn.execute(
                update(NOTIFICATIONS).where(c.id.in_(ids[start : start + 500]), c.claimed_by == owner)
                .values(claimed_by=None, lease_until=None)
            )

    def record_deliveries(self, owner: str, outcomes: list[tuple]) -> int:
        """Each (id, state, attempts, sent_at, next_attempt_at, last_error) of a delivery that
        ended. A success is recorded whoever holds the claim now (the message went out); a failure
        only while `owner` still holds it and it is not sent. Returns the rows changed."""
        if not outcomes:
            return 0
        c = NOTIFICATIONS.c
        changed = 0
        sent = [o for o in outcomes if o[1] == "sent"]
        other = [o for o in outcomes if o[1] != "sent"]
        if sent:
            statement = (
                update(NOTIFICATIONS)
                .where(c.id == bindparam("b_id"), (c.state == "pending") | (c.state == "failed"))
                .values(state="sent", attempts=bindparam("b_attempts"), sent_at=bindparam("b_sent_at"),
                        next_attempt_at=None, claimed_by=None, lease_until=None)
            )
            result = self.conn.execute(statement, [{"b_id": o[0], "b_attempts": o[2], "b_sent_at": o[3]} for o in sent])
            changed += result.rowcount
        if other:
            statement = (
                update(NOTIFICATIONS)
                .where(c.id == bindparam("b_id"), c.claimed_by == owner, (c.state == "pending") | (c.state == "failed"))
                .values(state=bindparam("b_state"), attempts=bindparam("b_attempts"),
                        next_attempt_at=bindparam("b_next"), last_error=bindparam("b_error"),
                        claimed_by=None, lease_until=None)
            )
            result = self.conn.execute(statement, [
                {"b_id": o[0], "b_state": o[1], "b_attempts": o[2], "b_next": o[4], "b_error": o[5]} for o in other
            ])
            changed += result.rowcount
        return changed

    def notification_states(self, ids: list[int]) -> dict[int, str]:
        c = NOTIFICATIONS.c
        found: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            found.update(self.conn.execute(select(c.id, c.state).where(c.id.in_(ids[start : start + 500]))).all())
        return found

    def retry_notifications(self, ids: list[int] | None) -> int:
        """Make the dead or failed notifications `ids` (None: every dead one) pending again, due at
        once, with attempts back to 0. Returns how many."""
        c = NOTIFICATIONS.c
        values = dict(state="pending", attempts=0, next_attempt_at=None, claimed_by=None, lease_until=None)
        if ids is None:
            return self.conn.execute(update(NOTIFICATIONS).where(c.state == "dead").values(**values)).rowcount
        changed = 0
        for start in range(0, len(ids), 500):
            changed += self.conn.execute(
                update(NOTIFICATIONS).where(c.id.in_(ids[start : start + 500]), c.state.in_(("dead", "failed"))).values(**values)
            ).rowcount
        return changed

    def outbox_backlog(self, older_than: int) -> tuple[int, int, int | None]:
        """(dead notifications; pending ones whose `at` is before `older_than`; the oldest pending
        `at`), through the index on (state, at): `doctor`."""
        c = NOTIFICATIONS.c
        dead = self._count(NOTIFICATIONS, c.state == "dead")
        late = self._count(NOTIFICATIONS, (c.state == "pending") & (c.at < older_than))
        oldest = self.conn.execute(select(func.min(c.at)).where(c.state == "pending")).scalar()
        return dead, late, oldest

    def due(self, now: int, *, limit: int, after: tuple[int, int] | None = None, skip_locked: bool = False) -> list[Order]:
        """The first `limit` orders by (wake_at, id) whose next deadline or reminder is at or before
        `now` (and after the key `after`); returned in id order on SQLite, by wake_at elsewhere."""
        return [order_from_row(r) for r in self.due_rows(now, limit=limit, after=after, skip_locked=skip_locked)]

    def due_rows(
        self, now: int, *, limit: int, after: tuple[int, int] | None = None, skip_locked: bool = False
    ) -> list[tuple]:
        """`due` as rows of ORDER_COLUMNS (plain tuples), for tick to decide in bulk."""
        if self.is_sqlite:  # the keys from the covering index, then the rows in storage order, not at random
            ids = self.due_ids(now, limit=limit, after=after)
            return [row for start in range(0, len(ids), 500) for row in self.rows_by_id(ids[start : start + 500])]
        key, build, params = _due_query(now, limit, after)
        if skip_locked:
            if after is None:  # claiming: by wake_at alone, which the index yields in order (no sort of every due row)
                key, build = "due_claim", _select_due_claim
            key += "_skip_locked"
            build = (lambda plain: lambda: plain().with_for_update(skip_locked=True))(build)
        return Bulk.of(self.conn, key, build).tuples(self.conn, params)

    def due_ids(self, now: int, *, limit: int, after: tuple[int, int] | None = None) -> list[int]:
        """SQLite: the ids of the orders `due` gives, in id order, read from the index alone."""
        key, build, params = _due_query(now, limit, after)
        return sorted(row[0] for row in Bulk.of(self.conn, key + "_ids", _ids_only(build)).tuples(self.conn, params))

    def rows_by_id(self, ids: list[int]) -> list[tuple]:
        """SQLite: the rows of ORDER_COLUMNS of these orders, in id order (at most 500 ids)."""
        sql = rows_by_id_sql(len(ids))
        return _tuples(self.conn, sql, self.conn.exec_driver_sql(sql, tuple(ids)))

    def in_wal_mode(self) -> bool:
        """SQLite in WAL mode: other connections can read while this transaction writes."""
        return self.is_sqlite and str(self.conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"

    def count_due(self, now: int) -> int:
        return self.conn.execute(select(func.count()).select_from(ORDERS).where(ORDERS.c.wake_at <= now)).scalar_one()

    def list_orders(
        self,
        *,
        statuses: list[str] | None = None,
        merchant: str | None = None,
        creator: str | None = None,
        due_before: int | None = None,
        limit: int | None = None,
    ) -> list[Order]:
        """Orders by id (by deadline with `due_before`), every one unless `limit`: `list_page`'s
        query walked page by page."""
        query = ListQuery(
            statuses=tuple(statuses) if statuses else None, merchant=merchant, creator=creator, due_before=due_before,
            sort="deadline" if due_before is not None else "id",
        )
        if limit is not None:
            return [o for o, _ in self.list_page(query, after=None, limit=limit)]
        return list(self.walk(query, after=None))

    def list_page(self, query: "ListQuery", *, after: tuple | None, limit: int, rows: bool = False) -> list[tuple[Order, tuple]]:
        """The first `limit` orders that `query` selects, in its order, after the key `after` (keyset
        paging): each with its key (sort value, id), the cursor of the page that follows it. With
        `rows`, each order is its stored row (LISTED_COLUMNS, the driver's plain tuple, not
        decoded): the fast path of the machine formats (`render.order_records`).

        Each run is one index search that stops after `limit` rows: several statuses (or a
        `--terms`) are one search per status, merged here, so that no run sorts what it found; a
        sort by deadline reads the orders with a deadline, then those without (they come last)."""
        statuses = query.statuses if query.statuses is not None else (None,)
        exact = self._prefixes_as_values(query) if statuses else None
        runs = [self._run(q, status, after, limit, rows) for q in (exact or [query]) for status in statuses]
        if len(runs) <= 1:
            return runs[0] if runs else []
        merged = heapq.merge(*runs, key=lambda found: _merge_key(query, found[1]))
        if exact is not None and query.product is not None:  # an order with two of the products: once
            merged = _distinct_ids(merged)
        return list(islice(merged, limit))

    PREFIX_VALUES = 32  # a prefix matching at most this many distinct values is searched value by value
    PREFIX_RUNS = 64  # ... when the searches (values x statuses) are at most this many

    def _prefixes_as_values(self, query: "ListQuery") -> list["ListQuery"] | None:
        """A merchant, creator or product prefix that matches few distinct values (the common case:
        `商家A*` names a handful of shops, each with many orders) as one exact query per value: each
        an index search already in the page's order that stops after the page, merged by
        `list_page` like the statuses, instead of one range that must read (and sort) every match.
        None when there is no prefix, or it matches too many values (then the range is searched).
        The values are found by a probe of the index each (the next value after the last)."""
        from dataclasses import replace

        choices: list[list[tuple[str, str]]] = []
        for name, column in (("merchant", ORDERS.c.merchant), ("creator", ORDERS.c.creator), ("product", ORDER_PRODUCTS.c.product)):
            value = getattr(query, name)
            if value is None or not value.endswith("*") or value == "*":
                continue
            values = self._values_with_prefix(column, value[:-1])
            if values is None:
                return None
            choices.append([(name, v) for v in values])
        if not choices:
            return None
        combos = [()]
        for options in choices:
            combos = [c + (o,) for c in combos for o in options]
            if len(combos) * len(query.statuses or (None,)) > self.PREFIX_RUNS:
                return None
        return [replace(query, **dict(combo)) for combo in combos]

    def _values_with_prefix(self, column, prefix: str) -> list[str] | None:
        """The distinct values of an indexed column starting with `prefix`, in index order, or None
        beyond PREFIX_VALUES (or when one ends in `*`, which an exact query would read as a prefix)."""
        found: list[str] = []
        low = column >= prefix
        while len(found) <= self.PREFIX_VALUES:
            value = self.conn.execute(select(func.min(column)).where(low, column < prefix + _PREFIX_END)).scalar()
            if value is None:
                return found
            if value.endswith("*"):
                return None
            if value.startswith(prefix):  # a collation other than C may put others in the range
                found.append(value)
            low = column > value
        return None

    def walk(self, query: "ListQuery", *, after: tuple | None, page: int = 1000, rows: bool = False) -> Iterator[Order]:
        """Every order `query` selects after `after`, in its order, a page at a time (memory flat);
        with `rows`, their stored rows (as `list_page` gives them)."""
        while True:
            found = self.list_page(query, after=after, limit=page, rows=rows)
            for order, _ in found:
                yield order
            if len(found) < page:
                return
            after = found[-1][1]

    def count_listed(self, query: "ListQuery", *, cap: int) -> int:
        """How many orders `query` selects, counting at most `cap + 1` of them (through the same
        indexes as the page): a result above `cap` means "more than `cap`"."""
        if query.statuses == ():
            return 0
        if query.product is not None and query.product.endswith("*") and query.product != "*":
            # a product prefix: driven from order_products (product, order_id), each order once, and
            # stopped after cap + 1 orders (`id IN (subquery)` would first gather every match)
            from dataclasses import replace

            conditions = _list_conditions(replace(query, product=None), None) + _matches(ORDER_PRODUCTS.c.product, query.product)
            if query.statuses:
                conditions.append(ORDERS.c.status.in_(query.statuses))
            inner = (select(ORDER_PRODUCTS.c.order_id).distinct()
                     .select_from(ORDER_PRODUCTS.join(ORDERS, ORDERS.c.id == ORDER_PRODUCTS.c.order_id))
                     .where(*conditions).limit(cap + 1))
            return self.conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one()
        conditions = _list_conditions(query, None, counting=True)
        if query.statuses:
            conditions.append(ORDERS.c.status.in_(query.statuses))
        inner = select(literal_column("1")).select_from(ORDERS).where(*conditions).limit(cap + 1)
        return self.conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one()

    def _run(self, query: "ListQuery", status: str | None, after: tuple | None, limit: int, rows: bool) -> list[tuple[Order, tuple]]:
        conditions = _list_conditions(query, status)
        if query.sort != "deadline":
            return self._segment(query, conditions, _sort_column(query.sort), after, limit, rows)
        found: list[tuple[Order, tuple]] = []
        if after is None or after[0] is not None:  # the orders with a deadline, in deadline order
            found = self._segment(query, conditions + [ORDERS.c.deadline.is_not(None)], ORDERS.c.deadline, after, limit, rows)
        if len(found) < limit and query.due_before is None and query.overdue_at is None:  # then those without
            rest_after = None if after is None or after[0] is not None else (None, after[1])
            rest = self._segment(query, conditions + [ORDERS.c.deadline.is_(None)], None, rest_after, limit - len(found), rows)
            found.extend(rest)
        return found

    def _segment(self, query: "ListQuery", conditions: list, column, after: tuple | None, limit: int, rows: bool = False):
        """One index search: `conditions`, ordered by (column, id) (id alone when column is None or
        the id), after the key `after`, at most `limit` rows (as Orders, or with `rows` as the
        stored rows of FULL_ORDER_COLUMNS)."""
        desc = query.descending
        key_column = ORDERS.c.deadline if query.sort == "deadline" else _sort_column(query.sort)
        names = LISTED_COLUMNS if rows else ORDER_COLUMNS
        statement = select(*[ORDERS.c[name] for name in names], key_column.label("sort_key"))
        order_id = ORDERS.c.id
        if query.product is not None and not query.product.endswith("*"):
            # drive from order_products (product, order_id): the product's orders in id order
            order_id = ORDER_PRODUCTS.c.order_id
            statement = statement.select_from(ORDER_PRODUCTS.join(ORDERS, ORDERS.c.id == ORDER_PRODUCTS.c.order_id))
            conditions = conditions + [ORDER_PRODUCTS.c.product == query.product]
        if column is None or column is ORDERS.c.id:
            if after is not None:
                conditions = conditions + [order_id < after[1] if desc else order_id > after[1]]
            ordering = [order_id.desc() if desc else order_id]
        else:
            if after is not None:
                pair, mark = tuple_(column, order_id), tuple_(bindparam(None, after[0], type_=BigInteger), bindparam(None, after[1], type_=BigInteger))
                conditions = conditions + [pair < mark if desc else pair > mark]
            ordering = [column.desc(), order_id.desc()] if desc else [column, order_id]
        statement = statement.where(*conditions).order_by(*ordering).limit(limit)
        if rows:  # the driver's tuples, without SQLAlchemy's Row objects (as `listing_rows`)
            return [(row[:-1], (row[-1], row[0])) for row in _tuples(self.conn, "list rows", self.conn.execute(statement))]
        return [(order_from_row(row[:-1]), (row[-1], row[0])) for row in self.conn.execute(statement)]

    def all_order_ids(self) -> list[int]:
        return list(self.conn.execute(select(ORDERS.c.id).where(ORDERS.c.status != "").order_by(ORDERS.c.id)).scalars())

    def orders_after(self, after_id: int, limit: int) -> list[Order]:
        """The next `limit` orders after `after_id`, by id: a walk of the primary key in chunks
        (export --all), never the whole table at once."""
        query = _select_orders().where(ORDERS.c.id > after_id, ORDERS.c.status != "").order_by(ORDERS.c.id).limit(limit)
        return [order_from_row(r) for r in self.conn.execute(query)]

    def load_many(self, ids: list[int]) -> list[Order]:
        """These orders (those that exist), by id."""
        found: list[Order] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = _select_orders().where(ORDERS.c.id.in_(chunk), ORDERS.c.status != "")
            found.extend(order_from_row(r) for r in self.conn.execute(query))
        return sorted(found, key=lambda o: o.id)

    def latest_event(self, ids: list[int] | None = None) -> tuple[int, int] | None:
        """(instant, order id) of the latest last event among these orders (None: every order), or
        None when there is none: an export may not be dated before it (SPEC section 7)."""
        best: tuple[int, int] | None = None
        chunks = [None] if ids is None else [ids[i : i + 500] for i in range(0, len(ids), 500)]
        for chunk in chunks:
            query = select(ORDERS.c.last_event_at, ORDERS.c.id).where(ORDERS.c.status != "")
            if chunk is not None:
                query = query.where(ORDERS.c.id.in_(chunk))
            row = self.conn.execute(query.order_by(ORDERS.c.last_event_at.desc(), ORDERS.c.id).limit(1)).first()
            if row is not None and (best is None or row[0] > best[0]):
                best = (row[0], row[1])
        return best

    def count_orders(self) -> int:
        return self.conn.execute(select(func.count()).select_from(ORDERS).where(ORDERS.c.status != "")).scalar_one()

    def keys_in_use(self, keys: list[str]) -> dict[str, int]:
        """Which of these idempotency keys orders already have: key -> order id."""
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = select(ORDERS.c.idempotency_key, ORDERS.c.id).where(ORDERS.c.idempotency_key.in_(chunk))
            found.update((key, order_id) for key, order_id in self.conn.execute(query))
        return found

    # ---------------------------------------------------------------- tick runs

    def record_tick_run(self, *, started_at: int, finished_at: int, now: int, applied: int, reminders: int, operator: str) -> None:
        """One row per completed tick (schema 2): `doctor` reads when cron last ran."""
        self.conn.execute(
            insert(TICK_RUNS).values(
                started_at=started_at, finished_at=finished_at, now=now, applied=applied, reminders=reminders,
                operator=operator,
            )
        )

    def last_tick_run(self):
        """The latest tick run row (id, started_at, finished_at, now, applied, reminders, operator), or None."""
        return self.conn.execute(select(TICK_RUNS).order_by(TICK_RUNS.c.id.desc()).limit(1)).first()

    # ---------------------------------------------------------------- evidence files (schema 4)

    def _evidence_insert(self):
        """INSERT … ON CONFLICT for evidence_files, in the dialect's own words (both SQLite and
        PostgreSQL take the same clause; SQLAlchemy spells it per dialect)."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        return dialect_insert(EVIDENCE)

    def store_evidence(self, held: list) -> None:
        """Keep these contents (`evidence.HeldFile`), once per distinct content: a content already
        held stays as it is; a row that only recorded the file (NULL: not held) gets its content."""
        from coopctl.evidence import distinct

        for h in distinct(held):
            statement = self._evidence_insert().values(sha256=h.file.sha256, size=h.file.size, content=h.content)
            self.conn.execute(statement.on_conflict_do_update(
                index_elements=[EVIDENCE.c.sha256], set_={"content": statement.excluded.content},
                where=EVIDENCE.c.content.is_(None),
            ))

    def record_evidence(self, files: list) -> None:
        """Record these files (`evidence.EvidenceFile`) as known but not held here, unless a row
        for their content exists already (import without contents)."""
        seen: dict[str, object] = {}
        for f in files:
            seen.setdefault(f.sha256, f)
        for f in seen.values():
            statement = self._evidence_insert().values(sha256=f.sha256, size=f.size, content=None)
            self.conn.execute(statement.on_conflict_do_nothing(index_elements=[EVIDENCE.c.sha256]))

    def evidence_state(self, shas: list[str]) -> dict[str, tuple[int, bool]]:
        """sha256 -> (size, held) for those of these contents that have a row (no content is read)."""
        found: dict[str, tuple[int, bool]] = {}
        for start in range(0, len(shas), 500):
            chunk = shas[start : start + 500]
            query = select(EVIDENCE.c.sha256, EVIDENCE.c.size, EVIDENCE.c.content.is_not(None)).where(EVIDENCE.c.sha256.in_(chunk))
            found.update((sha, (size, bool(held))) for sha, size, held in self.conn.execute(query))
        return found

    def evidence_contents(self, shas: list[str]) -> dict[str, bytes | None]:
        """sha256 -> content (None: not held) of those that have a row, read one at a time."""
        found: dict[str, bytes | None] = {}
        for sha in dict.fromkeys(shas):
            row = self.evidence_content(sha)
            if row is not None:
                found[sha] = row[1]
        return found

    def evidence_content(self, sha: str) -> tuple[int, bytes | None] | None:
        """(size, content or None) of one stored content, or None when it has no row."""
        # read as bytes whatever was written there (a TEXT value written by hand is not UTF-8 text to decode)
        content = cast(EVIDENCE.c.content, LargeBinary) if self.is_sqlite else EVIDENCE.c.content
        row = self.conn.execute(select(EVIDENCE.c.size, content).where(EVIDENCE.c.sha256 == sha)).first()
        if row is None:
            return None
        return row[0], None if row[1] is None else bytes(row[1])

    def evidence_keys(self, after: str, limit: int) -> list[tuple[str, int, bool]]:
        """(sha256, size, held) of the next `limit` stored contents after `after`, by key: doctor
        walks them in chunks and reads each content alone (memory: one file at a time)."""
        query = (
            select(EVIDENCE.c.sha256, EVIDENCE.c.size, EVIDENCE.c.content.is_not(None))
            .where(EVIDENCE.c.sha256 > after).order_by(EVIDENCE.c.sha256).limit(limit)
        )
        return [(sha, size, bool(held)) for sha, size, held in self.conn.execute(query)]

    # ---------------------------------------------------------------- doctor

    def order_heads(self, after_id: int, limit: int) -> list[tuple[int, int, str]]:
        """(id, last_seq, last_hash) of the next `limit` orders after `after_id`, by id: `doctor`
        walks every order's hash chain in chunks, never loading all orders at once."""
        query = (
            select(ORDERS.c.id, ORDERS.c.last_seq, ORDERS.c.last_hash)
            .where(ORDERS.c.id > after_id, ORDERS.c.status != "")
            .order_by(ORDERS.c.id)
            .limit(limit)
        )
        return [tuple(r) for r in self.conn.execute(query)]

    def order_rows(self, after_id: int, limit: int) -> list[tuple]:
        """The whole stored rows (FULL_ORDER_COLUMNS, as the driver gives them, not decoded) of the
        next `limit` orders after `after_id`, by id: `doctor` compares each with the rebuild of its
        events, chunk by chunk. On a database older than schema 4 (which doctor reads without
        upgrading) the columns of disputes and extensions are read as a new order has them."""
        older = self.schema_version() < 4
        query = (
            select(*[
                (null() if V4_ORDER_DEFAULTS[name] is None else literal(V4_ORDER_DEFAULTS[name])).label(name) if older and name in V4_ORDER_DEFAULTS else ORDERS.c[name]
                for name in FULL_ORDER_COLUMNS
            ])
            .where(ORDERS.c.id > after_id, ORDERS.c.status != "")
            .order_by(ORDERS.c.id)
            .limit(limit)
        )
        return [tuple(r) for r in self.conn.execute(query)]

    def listing_rows(self, after_id: int, limit: int) -> list[tuple]:
        """The stored rows (LISTED_COLUMNS, the driver's plain tuples) of the next `limit` orders
        after `after_id`, by id, as `render.order_records` takes them."""
        query = (
            select(*[ORDERS.c[name] for name in LISTED_COLUMNS])
            .where(ORDERS.c.id > after_id, ORDERS.c.status != "")
            .order_by(ORDERS.c.id)
            .limit(limit)
        )
        return _tuples(self.conn, "listing rows", self.conn.execute(query))

    def notification_listing_rows(
        self, after_id: int, limit: int, *, order_id: int | None = None, states: tuple[str, ...] | None = None,
        channels: tuple[str, ...] | None = None,
    ) -> list[tuple]:
        """LISTED_NOTIFICATION_COLUMNS of the next `limit` outbox rows after `after_id`, by id, as
        plain tuples: `notifications` streams in chunks. A filter by state reads the index on
        (state, id)."""
        c = NOTIFICATIONS.c
        query = select(*[c[name] for name in LISTED_NOTIFICATION_COLUMNS]).where(c.id > after_id)
        if order_id is not None:
            query = query.where(c.order_id == order_id)
        if states:
            query = query.where(c.state.in_(states))
        if channels:
            query = query.where(c.channel.in_(channels))
        return _tuples(self.conn, "notification rows", self.conn.execute(query.order_by(c.id).limit(limit)))

    def order_row(self, order_id: int) -> tuple | None:
        """One order's whole stored row (FULL_ORDER_COLUMNS, not decoded), or None."""
        query = select(*[ORDERS.c[name] for name in FULL_ORDER_COLUMNS]).where(ORDERS.c.id == order_id)
        row = self.conn.execute(query).first()
        return None if row is None else tuple(row)

    def oldest_due(self, now: int) -> int | None:
        """The earliest wake-up (deadline or reminder) at or before `now`, or None."""
        return self.conn.execute(select(func.min(ORDERS.c.wake_at)).where(ORDERS.c.wake_at <= now)).scalar()

    # ---------------------------------------------------------------- board (SPEC section 4)
    # Counts for `coopctl board`, from indexes only. SQLite counts a whole table (or index) from
    # its pages without decoding a row (`SELECT count(*)` with no WHERE); a count with a condition
    # visits each matching index entry. So a set of conditions that splits the table into parts is
    # counted part by part up to PROBE entries each; every part below that is exact, and the one
    # large part left is the table's count minus the others (several large parts: all but the last
    # are counted in full). The common book (most orders in one status, most notifications sent)
    # costs a few thousand index entries, not a pass over millions.

    BOARD_PROBE = 20_000

    def _count(self, table, condition, *, cap: int | None = None) -> int:
        """Rows of `table` meeting `condition` (at most `cap`, when given: a bounded probe)."""
        inner = select(table.c[next(iter(table.primary_key.columns.keys()))]).where(condition)
        if cap is not None:
            inner = inner.limit(cap)
        return self.conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one()

    def _partition_counts(self, table, parts: list) -> list[int]:
        """The counts of conditions that split `table` into disjoint parts covering every row."""
        counts: list[int | None] = []
        for condition in parts:
            found = self._count(table, condition, cap=self.BOARD_PROBE)
            counts.append(found if found < self.BOARD_PROBE else None)
        large = [i for i, n in enumerate(counts) if n is None]
        if large:
            for i in large[:-1]:
                counts[i] = self._count(table, parts[i])
            counts[large[-1]] = self._rows_of(table) - sum(n for n in counts if n is not None)
        return counts  # type: ignore[return-value]

    def _rows_of(self, table) -> int:
        """Rows of `table`, counted once per transaction (the board splits the orders twice, by
        status and by deadline: one pass over the smallest index, not two)."""
        counted = self.__dict__.setdefault("_table_rows", {})
        if table.name not in counted:
            counted[table.name] = self.conn.execute(select(func.count()).select_from(table)).scalar_one()
        return counted[table.name]

    def board_status_counts(self, statuses: list[str]) -> dict[str, int]:
        """Orders per status, through the index on status. Every status the rules know is named
        (`doctor` finds any other; '' is the placeholder of an id being created, never committed)."""
        names = [""] + [s for s in statuses if s]
        counts = self._partition_counts(ORDERS, [ORDERS.c.status == name for name in names])
        found = dict(zip(names, counts))
        found.pop("")
        return found

    def board_deadline_counts(self, bounds: list[int]) -> list[int]:
        """Orders whose deadline is at or before each of the increasing `bounds` and after the one
        before it (the first part: at or before bounds[0]), through the index on deadline (the
        table's count, when a part is large, is the one `board_status_counts` already made)."""
        c = ORDERS.c.deadline
        parts = [c.is_(None), c <= bounds[0]]
        parts += [(c > low) & (c <= high) for low, high in zip(bounds, bounds[1:])]
        parts.append(c > bounds[-1])
        return self._partition_counts(ORDERS, parts)[1:-1]

    def board_oldest_deadline(self, now: int) -> int | None:
        """The earliest deadline at or before `now` (the first entry of the index)."""
        return self.conn.execute(select(func.min(ORDERS.c.deadline)).where(ORDERS.c.deadline <= now)).scalar()

    def board_due_in_status(self, status: str, after: int, until: int) -> int:
        """Orders in `status` whose deadline is after `after` and at or before `until`."""
        c = ORDERS.c
        return self._count(ORDERS, (c.status == status) & (c.deadline > after) & (c.deadline <= until))

    def board_disputes(self, status: str, now: int, window_of: Callable[[str], int]) -> tuple[int, int, int | None]:
        """(orders in `status`, those that entered it at least their own `window_of(policy)` before
        `now`, the earliest `status_since` among them), through the index on status. Each order
        keeps its own window (SPEC section 1: the policy is frozen per order), read from its row;
        the open disputes are few (a person rules each one), and are streamed, not held."""
        c = ORDERS.c
        count, late, oldest = 0, 0, None
        windows: dict[str, int] = {}
        for since, policy in self.conn.execute(select(c.status_since, c.policy).where(c.status == status)):
            count += 1
            oldest = since if oldest is None or since < oldest else oldest
            window = windows.get(policy)
            if window is None:
                window = windows[policy] = window_of(policy)
            if since + window <= now:
                late += 1
        return count, late, oldest

    def board_outbox(self) -> dict:
        """{"pending", "oldest_pending", "failed", "dead"} of the outbox, through the index on
        (state, at): the states counted part by part (the sent ones are the rest of the table),
        the oldest pending one in one probe."""
        c = NOTIFICATIONS.c
        names = ("pending", "failed", "dead", "sent")
        counts = dict(zip(names, self._partition_counts(NOTIFICATIONS, [c.state == name for name in names])))
        oldest = None
        if counts["pending"]:
            oldest = self.conn.execute(select(func.min(c.at)).where(c.state == "pending")).scalar()
        return {"pending": counts["pending"], "oldest_pending": oldest, "failed": counts["failed"], "dead": counts["dead"]}
