"""Shared fixtures: a temporary database, the installed `coopctl` entry point, and CliRunner.

Both runners start from the same environment: the database is `db_path` (through COOPCTL_DB),
the operator is `OPERATOR`, colours are off (NO_COLOR), no COOPCTL_CONFIG leaks in from the
caller, and the working directory is the test's `tmp_path` (so `./coopctl.toml` and
`./coopctl-demo.db` land there). `env={"NAME": None}` unsets a variable for one call.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

# The width of every table is the test's own choice: pytest-xdist's workers (and some shells)
# export COLUMNS=80 and LINES=24, which would otherwise reach every command the tests run.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

from pg import backend, pg_server, pg_url  # noqa: F401  the PostgreSQL fixtures: a throwaway server (tests/pg.py)

OPERATOR = "ops-test"


def pytest_configure(config) -> None:
    """Compile the coopctl package to bytecode once, before any test starts a coopctl process (in
    the controller only, not in each xdist worker). An editable install run with
    PYTHONDONTWRITEBYTECODE=1 (the development machine sets it) would otherwise compile every
    coopctl module from source in each process the suite starts (about 0.05 s of CPU each)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        import compileall

        compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "coopctl"), quiet=1)
    # A suite started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
    # ignored, and so would every coopctl it starts: the Ctrl-C tests would then test nothing.
    # Put Python's handler back (each xdist worker runs this too; their children get the default).
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def coopctl_executable() -> str:
    """The installed console script: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "coopctl"
    if beside.exists():
        return str(beside)
    found = shutil.which("coopctl")
    if found is None:  # pragma: no cover
        pytest.fail("the `coopctl` entry point is not installed (pip install -e .)")
    return found


def base_env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": str(db), "COOPCTL_OPERATOR": OPERATOR, "NO_COLOR": "1"})
    return env


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database lives; not created until a command creates it."""
    return tmp_path / "coopctl.db"


@pytest.fixture
def run_coopctl(tmp_path: Path, db_path: Path):
    """Run the installed entry point as a subprocess: run_coopctl("list", "--json") -> CompletedProcess."""
    executable = coopctl_executable()

    def run(*args: str, env: dict[str, str | None] | None = None, input: str | None = None, timeout: float = 60):
        full = base_env(db_path)
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        return subprocess.run(
            [executable, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
            env=full, cwd=tmp_path, input=input, timeout=timeout,
        )

    return run


@pytest.fixture
def invoke(tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `coopctl.cli.app` in-process with CliRunner: invoke("list", "--json") -> Result.

    `result.stdout` and `result.stderr` are separate. An exception that escapes the command
    (a traceback for a user) is re-raised here so that the test fails with it.
    """
    import typer.testing

    from coopctl.cli import app

    monkeypatch.chdir(tmp_path)
    # CliRunner rebuilds the click command from the Typer app on every call (about half the cost
    # of a call): build it once per test instead.
    built = {}
    build = getattr(typer.testing, "_get_command", None)
    if build is not None:
        monkeypatch.setattr(typer.testing, "_get_command", lambda a: built.get(id(a)) or built.setdefault(id(a), build(a)))
    runner = CliRunner()

    def run(*args: str, env: dict[str, str | None] | None = None, input: str | None = None):
        full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COOPCTL_")}
        full.update({"COOPCTL_DB": str(db_path), "COOPCTL_OPERATOR": OPERATOR, "NO_COLOR": "1"})
        full.update(env or {})
        result = runner.invoke(app, [str(a) for a in args], env=full, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


def read_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite file, in a stable order (to compare before/after)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in names}
    finally:
        conn.close()


@pytest.fixture
def db_rows(db_path: Path):
    """db_rows() -> {table: rows} of the test's database (or of another path given)."""
    return lambda path=None: read_rows(path or db_path)


@pytest.fixture
def db_bytes(db_path: Path):
    """db_bytes(settle=False) -> (bytes of the database file, bytes of its WAL).

    To prove that a command wrote nothing, take the "before" with settle=True: it checkpoints the
    WAL into the file first, so that a checkpoint the command happens to run on exit (or a
    connection still open in this process) cannot move bytes around; anything the command writes
    then shows up in the WAL or in the file.
    """

    def read(settle: bool = False) -> tuple[bytes, bytes]:
        if settle:
            conn = sqlite3.connect(db_path)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        wal = Path(f"{db_path}-wal")
        return db_path.read_bytes(), wal.read_bytes() if wal.exists() else b""

    return read


def in_pty(args: list[str], *, columns: int, rows: int, env: dict, cwd=None) -> tuple[bytes, int]:
    """Run `args` on a pseudo-terminal of `columns` x `rows` (stdin, stdout and stderr all on it):
    every byte it showed, and its exit code. tests/test_tables.py and tests/test_docs.py look at
    tables as a person at a terminal sees them through this."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd, close_fds=True)
    os.close(follower)
    out, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(leader)
    return out, code


@pytest.fixture
def answered(monkeypatch) -> list[int]:
    """How many pieces a helper of `list --format jsonl` or `export --all` (linehelper.Formatter and
    its kinds) answered: tests/test_linehelper.py, tests/test_exporthelper.py."""
    from coopctl import linehelper

    answers: list[int] = []
    receive = linehelper.Formatter.receive

    def counting(self):
        text = receive(self)
        if text is not None:
            answers.append(1)
        return text

    monkeypatch.setattr(linehelper.Formatter, "receive", counting)
    return answers
