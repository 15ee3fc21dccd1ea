"""SPEC section 7, "Files the tool writes are the owner's" and "No silent places to lose data".

- A database location that names no file (`sqlite://`, `sqlite:///`, `:memory:`, a `file:` URI
  with mode=memory) is invalid input (exit 2) for every command; coopctl's own scratch database
  is `Location.memory()`, never a user's location.
- A database path that exists and is not a regular file (a device such as /dev/null, a FIFO) is
  a database problem (exit 5), refused before SQLite touches it.
- New databases with their -wal and -shm, and exports, are mode 0600 whatever the umask.
- `export --out` replaces a regular file atomically and writes a FIFO, a device or /dev/stdout in
  place, never replacing it; a killed export's temporary file is removed by the next export.
- A read-only database (read-only filesystem, file or folder) is read by every command that only
  reads; a changing command exits 5 with one line and changes nothing.

Some cases need root (a read-only bind mount in a private mount namespace through `unshare`, or
dropping the capability that lets root write anywhere through `capsh`); they skip, saying why,
where that is not available.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coopctl import exchange
from coopctl.errors import InvalidInput, StorageError
from coopctl.store import Location, Store, locate, open_mode
from conftest import base_env, coopctl_executable

LATEST = "2030-01-01T00:00:00+08:00"
CREATE = ("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live",
          "--commission", "10", "--latest-start", LATEST, "--at", "2026-11-01T10:00:00+08:00")
READING = (("show", "1"), ("list",), ("history", "1"), ("notifications",), ("export", "1", "--at", "2026-11-01T12:00:00+08:00"),
           ("doctor", "--now", "2026-11-01T11:00:00+08:00", "--grace", "2h"))  # healthy: the outbox is an hour old
CHANGING = (("accept", "1", "--creator", "C", "--at", "2026-11-01T11:00:00+08:00"), CREATE,
            ("tick", "--now", "2026-11-01T11:00:00+08:00"), ("init",), ("notifications", "--mark-sent"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def one_error_line(stderr: str, starts: str = "error: ") -> None:
    assert stderr.count("\n") == 1 and stderr.startswith(starts), stderr
    assert "Traceback" not in stderr


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def one_order(invoke, db_path: Path) -> Path:
    result = invoke(*CREATE)
    assert result.exit_code == 0, result.stderr
    return db_path


# --------------------------------------------------------------------------- no silent places to lose data

NO_FILE = [
    "sqlite://", "sqlite:///", "sqlite:///:memory:", ":memory:", " :memory: ", "sqlite+pysqlite://",
    "file::memory:", "file:x.db?mode=memory", "sqlite:///file:x.db?mode=memory&uri=true",
    "sqlite:///x.db?mode=memory&uri=true", "file:?cache=shared",
]


@pytest.mark.parametrize("value", NO_FILE)
def test_a_location_that_names_no_file_is_invalid_input(value):
    with pytest.raises(InvalidInput, match="names no file"):
        locate(value)


@pytest.mark.parametrize("args", [CREATE, ("init",), ("list",), ("show", "1"), ("tick",), ("doctor",), ("export", "--all"), ("import", "-")])
def test_every_command_refuses_an_in_memory_database_with_exit_2(invoke, tmp_path, args):
    result = invoke(*args, env={"COOPCTL_DB": "sqlite://"}, input="{}")
    assert result.exit_code == 2, result.stdout
    one_error_line(result.stderr, "error: the database URL 'sqlite://' names no file")
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing was created anywhere


def test_an_unset_variable_in_the_url_is_refused_not_an_in_memory_database(run_coopctl, tmp_path):
    # COOPCTL_DB="sqlite:///$UNSET": `create` used to say "order 1 created" and keep nothing
    result = run_coopctl(*CREATE, env={"COOPCTL_DB": "sqlite:///"})
    assert result.returncode == 2
    one_error_line(result.stderr, "error: the database URL 'sqlite:///' names no file")
    assert "created" not in result.stdout


def test_coopctl_keeps_its_own_scratch_database_in_memory_explicitly():
    with pytest.raises(InvalidInput):
        locate("sqlite://")
    scratch = Store(Location.memory())
    try:
        assert scratch.initialise(made_by="test") is True
        with scratch.read() as tx:
            assert tx.schema_state() == "coopctl"
    finally:
        scratch.dispose()


def test_a_file_uri_or_url_that_names_a_file_is_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert locate(f"file:{tmp_path}/a.db").path == tmp_path / "a.db"
    assert locate(f"sqlite:///file:{tmp_path}/b.db?uri=true").path == tmp_path / "b.db"
    assert locate("sqlite:///c.db").path == tmp_path / "c.db"
    with pytest.raises(InvalidInput, match="coopctl opens SQLite files itself"):
        locate("sqlite:///c.db?mode=ro&uri=true")  # how the file is opened is coopctl's to choose
    with pytest.raises(InvalidInput, match="coopctl opens SQLite files itself"):
        locate(f"sqlite:///file:{tmp_path}/b.db?uri=true&immutable=1")
    with pytest.raises(InvalidInput, match="is a SQLite URI with options"):
        locate(f"file:{tmp_path}/b.db?nolock=1")


def test_a_path_with_url_characters_is_the_file_it_names(invoke, tmp_path):
    odd = tmp_path / "odd?name#1.db"  # a '?' used to start a query string in the URL built from it
    result = invoke(*CREATE, env={"COOPCTL_DB": str(odd)})
    assert result.exit_code == 0, result.stderr
    assert odd.exists()
    assert invoke("show", "1", env={"COOPCTL_DB": str(odd)}).exit_code == 0


# --------------------------------------------------------------------------- not a regular file


@pytest.fixture
def null_device(tmp_path: Path) -> Path:
    """A private device node like /dev/null (character device 1,3), in the test's folder.

    Never the real /dev/null: code with the defect these tests look for replaces or unlinks the
    device it is given (`demo` unlinked an "empty database", `--out` renamed over it), which
    would break /dev/null for the whole machine."""
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        node.write_text("x")  # a filesystem mounted nodev cannot open device nodes
    except (OSError, AttributeError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    return node


@pytest.mark.parametrize("args", [("init",), CREATE, ("list",), ("demo",), ("doctor",)])
def test_a_device_as_the_database_is_refused_and_left_alone(run_coopctl, null_device, args):
    result = run_coopctl(*args, env={"COOPCTL_DB": str(null_device)})
    assert result.returncode == 5, result.stdout
    one_error_line(result.stderr, f"error: {null_device} is a device, not a database file")
    assert sorted(p.name for p in null_device.parent.iterdir()) == ["null"]  # no null-journal, null-wal
    assert stat.S_ISCHR(os.lstat(null_device).st_mode)  # `demo` used to unlink an empty "database"


def test_a_fifo_as_the_database_is_refused_without_blocking(run_coopctl, tmp_path):
    fifo = tmp_path / "db.fifo"
    os.mkfifo(fifo)
    for args in (CREATE, ("list",)):
        result = run_coopctl(*args, env={"COOPCTL_DB": str(fifo)}, timeout=20)
        assert result.returncode == 5
        one_error_line(result.stderr, f"error: {fifo} is a FIFO, not a database file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.fifo"]


def test_a_symlink_to_a_database_file_is_that_database(invoke, one_order, tmp_path):
    link = tmp_path / "link.db"
    link.symlink_to(one_order)
    result = invoke("show", "1", "--json", env={"COOPCTL_DB": str(link)})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["id"] == 1


# --------------------------------------------------------------------------- the owner's files


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_a_new_database_and_its_wal_and_shm_are_the_owners_alone(umask, tmp_path):
    path = tmp_path / "new.db"
    store = Store(locate(str(path)))
    try:
        store.initialise()
        with store.write() as tx:  # the write leaves -wal and -shm while the connection is open
            tx.conn.exec_driver_sql("INSERT INTO coopctl_meta (key, value) VALUES ('probe', 'x')")
        modes = {p.name: mode_of(p) for p in tmp_path.iterdir()}
    finally:
        store.dispose()
    assert modes == {"new.db": 0o600, "new.db-wal": 0o600, "new.db-shm": 0o600}


def test_create_on_a_new_path_makes_a_private_database(umask, invoke, db_path):
    assert invoke(*CREATE).exit_code == 0
    assert mode_of(db_path) == 0o600


def test_an_export_file_is_the_owners_alone_also_when_it_replaces_one(umask, invoke, one_order, tmp_path):
    out = tmp_path / "e.json"
    out.write_text("old")
    os.chmod(out, 0o644)
    result = invoke("export", "1", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert mode_of(out) == 0o600
    assert json.loads(out.read_text())["orders"][0]["id"] == 1


def test_write_atomically_is_private_even_under_a_umask_that_removes_the_owners_bits(tmp_path):
    old = os.umask(0o277)
    try:
        exchange.write_atomically(tmp_path / "k", "secret")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "k") == 0o600


# --------------------------------------------------------------------------- --out targets


def test_a_fifo_target_is_written_in_place_for_its_reader(invoke, one_order, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke("export", "1", "--out", str(fifo))
    reader.join(20)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not renamed over
    assert json.loads(got[0])["orders"][0]["id"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coopctl.db", "out.fifo"]


def test_a_device_as_the_target_is_written_in_place_even_as_root(invoke, one_order, null_device):
    before = os.lstat(null_device)
    result = invoke("export", "1", "--out", str(null_device))
    assert result.exit_code == 0, result.stderr
    after = os.lstat(null_device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not [p for p in null_device.parent.iterdir() if "coopctl-tmp" in p.name]


@pytest.mark.parametrize("stdout_to", ["pipe", "file"])
def test_a_symlink_to_dev_stdout_writes_to_stdout_and_stays(run_coopctl, one_order, tmp_path, stdout_to):
    link = tmp_path / "to-stdout"
    link.symlink_to("/dev/stdout")
    if stdout_to == "pipe":
        result = run_coopctl("export", "1", "--out", str(link))
        assert result.returncode == 0, result.stderr
        text = result.stdout[: result.stdout.rindex("}") + 1]
    else:  # stdout is a regular file: it is written through /proc, not replaced by a rename
        sink = tmp_path / "sink.txt"
        with open(sink, "w") as handle:
            done = subprocess.run([coopctl_executable(), "export", "1", "--out", str(link)], stdout=handle,
                                  stderr=subprocess.PIPE, text=True, env=base_env(one_order), cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr
        text = sink.read_text()
        text = text[: text.rindex("}") + 1]
    assert json.loads(text)["orders"][0]["id"] == 1
    assert os.readlink(link) == "/dev/stdout"
    assert not [n for n in os.listdir(tmp_path) if "coopctl-tmp" in n]


def test_a_symlink_to_a_regular_file_replaces_that_file_and_keeps_the_link(invoke, one_order, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert invoke("export", "1", "--out", str(link)).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text())["orders"][0]["id"] == 1


def test_targets_reached_through_proc_are_never_replaced():
    assert exchange._in_place("/dev/stdout") and exchange._in_place("/dev/fd/1")
    assert exchange._through_proc("/proc/self/fd/1")
    assert not exchange._through_proc(__file__)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_exports_temporary_is_removed_by_the_next_export(invoke, one_order, tmp_path):
    out = tmp_path / "e.json"
    # a real export killed in the middle of writing (SIGKILL: no cleanup runs)
    script = (
        "import os, signal, sys\n"
        "from coopctl.exchange import atomic_file\n"
        "with atomic_file(sys.argv[1]) as handle:\n"
        "    handle.write('{\"partial\": ')\n    handle.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(out)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    [left] = [p for p in tmp_path.iterdir() if "coopctl-tmp" in p.name]
    assert left.name.startswith(".e.json.coopctl-tmp-") and mode_of(left) == 0o600
    live = tmp_path / f".e.json.coopctl-tmp-{os.getppid()}-00ff"  # a running export's: kept
    live.write_text("")
    other = tmp_path / f".other.json.coopctl-tmp-{_dead_pid()}-00ff"  # another target's: not ours to remove
    other.write_text("")
    assert invoke("export", "1", "--out", str(out)).exit_code == 0
    assert not left.exists()
    assert live.exists() and other.exists()
    assert json.loads(out.read_text())["orders"][0]["id"] == 1


def test_a_failed_export_leaves_the_target_and_no_temporary(invoke, one_order, tmp_path):
    out = tmp_path / "e.json"
    out.write_text("kept")
    result = invoke("export", "7", "--out", str(out))
    assert result.exit_code == 3
    assert out.read_text() == "kept"
    assert not [p for p in tmp_path.iterdir() if "coopctl-tmp" in p.name]


# --------------------------------------------------------------------------- read-only databases


def _make(tmp_path: Path, name: str, *, wal: bytes | None = None, shm: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(b"SQLite format 3\x00" + bytes(100))
    if wal is not None:
        Path(f"{path}-wal").write_bytes(wal)
    if shm:
        Path(f"{path}-shm").write_bytes(bytes(32768))
    return path


@pytest.mark.parametrize(
    "file_w, folder_w, wal, shm, expected",
    [
        (True, True, None, False, "rwc"),
        (False, True, None, False, "immutable"),  # a 0444 file, cleanly closed: nothing is left behind
        (False, True, b"x" * 100, False, "ro"),  # changes wait in the -wal: SQLite makes the -shm
        (False, True, None, True, "ro"),
        (True, False, None, False, "immutable"),  # a read-only folder (or filesystem): no -shm can be made
        (True, False, b"", False, "immutable"),  # an empty -wal holds nothing
        (False, False, b"x" * 100, True, "ro"),  # -wal and -shm are there: read through them
        (True, False, b"x" * 100, False, "error"),  # changes nobody can read without a -shm: never an older view
    ],
)
def test_the_open_mode_follows_what_may_be_written(tmp_path, monkeypatch, file_w, folder_w, wal, shm, expected):
    path = _make(tmp_path, "x.db", wal=wal, shm=shm)
    writable = {str(path): file_w, str(tmp_path): folder_w}
    monkeypatch.setattr("coopctl.store.os.access", lambda p, mode: writable.get(str(p), False))
    if expected == "error":
        with pytest.raises(StorageError, match="holds changes that SQLite can read only with a x.db-shm"):
            open_mode(path)
    else:
        assert open_mode(path) == expected
    assert open_mode(tmp_path / "new.db") == "rwc"


def _can(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _run_script(wrapper: list[str], script: str, env: dict, cwd: Path) -> list[dict]:
    """Run a shell script under `wrapper` (a mount namespace, dropped capabilities); each line of
    its output is one command's JSON record."""
    done = subprocess.run([*wrapper, script], capture_output=True, text=True, env=env, cwd=cwd, timeout=240)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


RUNNER = r"""
import json, sys
from typer.testing import CliRunner
from coopctl.cli import app
db, commands = sys.argv[1], json.loads(sys.argv[2])
runner = CliRunner()
for args in commands:  # in one process: the commands as the entry point runs them, without its start-up each time
    done = runner.invoke(app, ["--db", db, *args], env={"NO_COLOR": "1"})
    crashed = done.exception is not None and not isinstance(done.exception, SystemExit)
    print(json.dumps({"args": args, "code": -1 if crashed else done.exit_code, "stdout": done.stdout, "stderr": done.stderr}))
"""


def _runner_script(tmp_path: Path, db: Path) -> str:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    commands = json.dumps([list(a) for a in READING + CHANGING])
    quote = lambda s: "'" + str(s).replace("'", "'\\''") + "'"  # noqa: E731
    return f"{quote(sys.executable)} {quote(runner)} {quote(db)} {quote(commands)}"


def _expected_reads(invoke, db: Path) -> dict[tuple, str]:
    return {tuple(a): invoke(*a, env={"COOPCTL_DB": str(db)}).stdout for a in READING}


def _check_read_only_run(records: list[dict], expected: dict[tuple, str], where: str) -> None:
    for record in records:
        args = tuple(record["args"])
        if args in expected:
            assert record["code"] == 0, record
            assert "error" not in record["stderr"]  # piped, a list's footer is on stderr (SPEC section 4)
            if args[0] not in ("doctor",):
                assert record["stdout"] == expected[args], args
        else:
            assert record["code"] == 5, record
            one_error_line(record["stderr"], f"error: the database {where} is read-only (")
            assert "nothing was changed" in record["stderr"] and record["stdout"] == ""


def _settled(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.read_bytes()


@pytest.mark.skipif(not IS_ROOT, reason="a read-only bind mount needs root")
def test_every_reading_command_works_on_a_read_only_filesystem(invoke, one_order, tmp_path):
    if not shutil.which("unshare") or not _can(["unshare", "-m", "true"]):
        pytest.skip("no private mount namespace here (unshare -m)")
    before = _settled(one_order)
    expected = _expected_reads(invoke, one_order)
    Path(f"{one_order}-wal").unlink(missing_ok=True)
    Path(f"{one_order}-shm").unlink(missing_ok=True)
    mount = tmp_path / "ro"
    mount.mkdir()
    inner = _runner_script(tmp_path, mount / one_order.name)
    script = f"mount --bind '{tmp_path}' '{mount}' && mount -o remount,bind,ro '{mount}' && {inner}"
    records = _run_script(["unshare", "-m", "sh", "-c"], script, base_env(one_order), tmp_path)
    assert len(records) == len(READING) + len(CHANGING)
    _check_read_only_run(records, expected, str(mount / one_order.name))
    assert one_order.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("coopctl.db")) == ["coopctl.db"]


def _without_root_powers() -> list[str]:
    """A wrapper that runs a shell command as root without the capability to write anywhere."""
    if not IS_ROOT:
        pytest.skip("emulates an ordinary user by dropping root's capabilities")
    if not shutil.which("capsh") or not _can(["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", "true"]):
        pytest.skip("capsh cannot drop capabilities here")
    return ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c"]


@pytest.mark.parametrize("what", ["file 0444", "folder 0555"])
def test_a_read_only_file_or_folder_is_read_and_never_written(invoke, one_order, tmp_path, what):
    wrapper = _without_root_powers()
    before = _settled(one_order)
    expected = _expected_reads(invoke, one_order)
    inner = _runner_script(tmp_path, one_order)
    target = one_order if what.startswith("file") else tmp_path
    os.chmod(target, 0o444 if what.startswith("file") else 0o555)
    try:
        records = _run_script(wrapper, inner, base_env(one_order), tmp_path)
    finally:
        os.chmod(target, 0o600 if what.startswith("file") else 0o755)
    _check_read_only_run(records, expected, str(one_order))
    assert one_order.read_bytes() == before
    # no -wal or -shm left behind (read-only ones would stop the owner's next write)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("coopctl.db")) == ["coopctl.db"]
    assert invoke("accept", "1", "--creator", "C", "--at", "2026-11-01T11:00:00+08:00").exit_code == 0


def test_changes_waiting_in_a_wal_that_cannot_be_read_are_exit_5_not_an_older_view(invoke, one_order, tmp_path):
    wrapper = _without_root_powers()
    copy = tmp_path / "copy"
    copy.mkdir()
    holder = sqlite3.connect(one_order)  # a writer's WAL content that no checkpoint folded in yet
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("UPDATE orders SET note = 'in the wal'")
    holder.commit()
    for suffix in ("", "-wal"):
        shutil.copy(f"{one_order}{suffix}", f"{copy / 'c.db'}{suffix}")
    holder.close()
    assert os.path.getsize(copy / "c.db-wal") > 0
    os.chmod(copy, 0o555)
    try:
        done = subprocess.run([*wrapper, f"'{coopctl_executable()}' --db '{copy / 'c.db'}' show 1"],
                              capture_output=True, text=True, env=base_env(one_order), timeout=60)
    finally:
        os.chmod(copy, 0o755)
    assert done.returncode == 5, done.stdout
    one_error_line(done.stderr, f"error: the database {copy / 'c.db'} is read-only")
    assert "c.db-wal holds changes" in done.stderr
