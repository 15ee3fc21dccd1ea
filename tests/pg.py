"""A throwaway PostgreSQL server for the tests, and the `backend` fixture.

`pg_server` (session) starts a server from the PostgreSQL binaries on the machine: `initdb` and
`pg_ctl` into a temporary folder, listening on a free loopback port (as root, through the
`postgres` user with `runuser`, since PostgreSQL refuses to run as root; see
/work/shared/POSTGRES.md), and stops it at the end of the session, also when tests fail. It is
callable: `pg_server()` creates a fresh database and returns its SQLAlchemy URL
`postgresql+psycopg://postgres@127.0.0.1:PORT/t_N`.

The binaries are searched in $PG_BIN, then /usr/lib/postgresql/*/bin (newest first), then
`pg_config --bindir` and PATH. With COOPCTL_TEST_PG_URL set (any database on an existing server,
e.g. postgresql+psycopg://me@localhost/postgres) no server is started: the test databases are
created on that server and dropped at the end. With neither, PostgreSQL tests are skipped with a
message that says so.

`backend` is parametrized over "sqlite" and "postgres" and returns a database location usable
with --db / COOPCTL_DB; a test that asks for it runs on both.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

URL_VARIABLE = "COOPCTL_TEST_PG_URL"
TOOLS = ("initdb", "pg_ctl", "postgres")


def _version_key(path: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def find_bindir() -> str | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    candidates: list[str] = []
    if os.environ.get("PG_BIN"):
        candidates.append(os.environ["PG_BIN"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if folder and all(os.access(os.path.join(folder, tool), os.X_OK) for tool in TOOLS):
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A PostgreSQL server the tests may create databases on; `server()` -> a fresh database URL."""

    def __init__(self, host: str, port: int, user: str, password: str | None, admin_db: str, prefix: str):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.admin_db = admin_db
        self.prefix = prefix
        self.created: list[str] = []
        self._numbers = itertools.count(1)

    def url(self, database: str) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg", username=self.user, password=self.password, host=self.host, port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def admin(self):
        """An autocommit psycopg connection to the server's administrative database."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.admin_db,
            autocommit=True, connect_timeout=10,
        )

    def __call__(self, template: str | None = None) -> str:
        """Create a fresh, empty database (or a copy of `template`) and return its URL."""
        name = f"{self.prefix}{next(self._numbers)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)
        return self.url(name)

    def drop_created(self) -> None:
        try:
            with self.admin() as conn:
                for name in self.created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # the server may be gone already; nothing to clean then
            pass
        self.created.clear()


# Stops the server and deletes its folder once the test session's process is gone, however it
# ended (a kill included, when neither the fixture's teardown nor atexit runs).
_REAPER = """
import os, shutil, subprocess, sys, time
parent, folder, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while os.getppid() == parent:
    time.sleep(1)
subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
shutil.rmtree(folder, ignore_errors=True)
"""


class LocalServer(Server):
    """A server of our own in a temporary folder, stopped and deleted by `stop()` (or, if the test
    session is killed, by a small reaper process that outlives it)."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.folder = tempfile.mkdtemp(prefix="coopctl-pg-", dir="/tmp" if self.as_root else None)
        self.running = False
        self.reaper: subprocess.Popen | None = None
        super().__init__("127.0.0.1", 0, "postgres", None, "postgres", "t_")

    def _argv(self, name: str, *args: str) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return [*prefix, os.path.join(self.bindir, name), *args]

    def _tool(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self._argv(name, *args), capture_output=True, text=True, timeout=timeout, cwd=self.folder)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.folder, "postgres")
        data = os.path.join(self.folder, "data")
        made = self._tool("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {(made.stderr or made.stdout).strip()[-1500:]}")
        last = ""
        for _ in range(5):  # a free port can be taken between the probe and the start: try another
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            started = self._tool("pg_ctl", "-D", data, "-l", os.path.join(self.folder, "log"), "-o", options, "-w", "-t", "60", "start")
            if started.returncode == 0:
                self.running = True
                stop = self._argv("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
                self.reaper = subprocess.Popen(
                    [sys.executable, "-c", _REAPER, str(os.getpid()), self.folder, *stop],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                return
            last = (started.stderr or started.stdout).strip() + "\n" + self._log_tail()
            self._tool("pg_ctl", "-D", data, "-m", "immediate", "stop")
        raise RuntimeError(f"pg_ctl could not start the test server: {last[-1500:]}")

    def _log_tail(self) -> str:
        try:
            return Path(self.folder, "log").read_text(errors="replace")[-1000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.running:
            self._tool("pg_ctl", "-D", os.path.join(self.folder, "data"), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.reaper is not None:
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None


def _external(url: str) -> Server:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return Server(u.host or "localhost", u.port or 5432, u.username or "postgres", u.password, u.database or "postgres", f"coopctl_t{os.getpid()}_")


def _skip(why: str) -> None:
    pytest.skip(f"PostgreSQL tests skipped: {why}")


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (started here, or COOPCTL_TEST_PG_URL's); skips without one."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip("the psycopg driver is not installed (pip install -e '.[test]')")
    url = os.environ.get(URL_VARIABLE)
    if url:
        server = _external(url)
        try:
            server.admin().close()
        except Exception as exc:
            pytest.fail(f"{URL_VARIABLE} is set but its server cannot be reached: {str(exc).splitlines()[0]}")
        try:
            yield server
        finally:
            server.drop_created()
        return
    bindir = find_bindir()
    if bindir is None:
        _skip(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in $PG_BIN, "
            f"/usr/lib/postgresql/*/bin or PATH, and {URL_VARIABLE} is not set"
        )
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            _skip("running as root and there is no `postgres` user to run the server (PostgreSQL refuses root)")
    server = LocalServer(bindir)
    atexit.register(server.stop)  # a safety net if the session dies before its teardown
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"could not start a throwaway PostgreSQL server from {bindir}: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database for this test."""
    return pg_server()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path: Path) -> str:
    """A database location for --db / COOPCTL_DB: a SQLite file (not yet created), or a fresh
    PostgreSQL database (empty: no coopctl tables until a command creates them)."""
    if request.param == "sqlite":
        return str(tmp_path / "coopctl.db")
    return request.getfixturevalue("pg_server")()

