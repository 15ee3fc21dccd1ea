"""Start-up costs only what a command needs (the performance issue: `coopctl --help` and
`coopctl COMMAND --help` within 1.5x of `import typer`; `show`, `list`, actions and an idle
`tick` within 1.25x of `import sqlmodel`; measured by bench/startup.py).

Each case runs in a fresh interpreter and looks at `sys.modules` afterwards: help never loads
the database or table libraries (nor pydantic, which Typer would load to coerce the root's
options), and a command asked for `--json` never loads rich. The command line is run as the
console script runs it (`coopctl.cli.main`, which builds only the command named).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import base_env

HEAVY = ("sqlalchemy", "sqlmodel", "rich.table", "rich.console", "sqlite_utils", "pydantic")

PROBE = """
import json, sys
args = json.loads(sys.argv[1])
{run}
loaded = sorted(m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r})
print(json.dumps(loaded))
"""

VIA_APP = """
from coopctl.cli import app
try:
    app(args, standalone_mode=False)
except SystemExit:
    pass
"""

VIA_MAIN = """
import io, contextlib
import coopctl.cli
ended = []
coopctl.cli.leave = ended.append  # main() ends the process itself: here, only note how
sys.argv = ["coopctl", *args]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    coopctl.cli.main()
assert ended == [0], (ended, out.getvalue())
"""


def loaded(args: list[str], *, run: str = VIA_MAIN, db: Path | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> list[str]:
    code = PROBE.format(run=run, heavy=HEAVY)
    env = {**base_env(db or Path("unused.db")), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_root_help_through_the_app_loads_nothing_heavy():
    assert loaded(["--help"], run=VIA_APP) == []


def test_importing_the_command_line_loads_nothing_heavy():
    assert loaded([], run="import coopctl.cli") == []


@pytest.mark.parametrize("args", [["--help"], ["show", "--help"], ["tick", "--help"], ["--db", "x.db", "list", "-h"],
                                  ["export", "--help"], ["import", "--help"], ["create", "--help"]])
def test_help_loads_nothing_heavy(args, tmp_path):
    assert loaded(args, cwd=tmp_path) == []


@pytest.mark.parametrize("args", [["--version"], ["list", "--db", "x.db", "--help"], ["--show-completion", "bash"]])
def test_version_and_help_after_global_options_load_nothing_heavy(args, tmp_path):
    assert loaded(args, cwd=tmp_path) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize("words", ["coopctl ", "coopctl --", "coopctl accept 7 --", "coopctl list --db x.db --status ", "coopctl create --form l"])
def test_completion_loads_nothing_heavy(shell, words, tmp_path):
    """Completion answers each key press: no pydantic (Typer's coercion), no rich (Typer's help rendering)."""
    env = {"_COOPCTL_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
    assert loaded([], cwd=tmp_path, env=env) == []


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    from dbtools import build

    path = tmp_path_factory.mktemp("book") / "book.db"
    build(path, 30)
    return path


@pytest.mark.parametrize("args", [
    ["show", "7", "--json"], ["list", "--limit", "5", "--json"], ["list", "--due-before", "2026-11-03", "--json"],
    ["history", "7", "--json"], ["notifications", "--order", "7", "--json"], ["tick", "--now", "2026-11-01T00:00", "--json"],
])
def test_a_json_command_never_loads_rich(args, book, tmp_path):
    db = tmp_path / "copy.db"
    db.write_bytes(book.read_bytes())
    modules = loaded(args, db=db, cwd=tmp_path)
    assert not [m for m in modules if m == "rich" or m.startswith("rich.")], modules
    assert "sqlmodel" in modules  # it does use the database


def test_a_table_loads_the_printer(book, tmp_path):
    """The check above is not vacuous: a table goes through the printer (piped, as plain lines
    measured by rich.cells: rich.table itself draws only on a terminal, see test_tables.py)."""
    db = tmp_path / "copy.db"
    db.write_bytes(book.read_bytes())
    code = PROBE.format(run=VIA_MAIN, heavy=HEAVY + ("coopctl.printer",))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(["show", "7"])], capture_output=True, text=True,
                          env=base_env(db), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "coopctl.printer" in json.loads(proc.stdout.splitlines()[-1])


def test_main_builds_only_the_command_named_and_the_whole_app_otherwise():
    from coopctl.cli import app, only_command

    assert [c.callback.__name__ for c in only_command(["--db", "x.db", "show", "7"]).registered_commands] == ["show"]
    assert [c.name for c in only_command(["--db=x.db", "--operator", "me", "cancel-request", "1"]).registered_commands] == ["cancel-request"]
    assert [c.name for c in only_command(["import", "-"]).registered_commands] == ["import"]
    for args in (["shwo", "7"], ["--verbose", "show", "7"], ["--db"]):
        assert only_command(args) is app, args


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--db", "x.db", "--help"], ["-h", "show"], []])
def test_the_root_help_lists_exactly_what_the_whole_app_lists(args):
    from typer.testing import CliRunner

    from coopctl.cli import app, only_command

    listing = only_command(args)
    assert listing is not app and len(listing.registered_commands) == len(app.registered_commands)
    whole, listed = CliRunner().invoke(app, args), CliRunner().invoke(listing, args)
    assert (listed.exit_code, listed.stdout, listed.stderr) == (whole.exit_code, whole.stdout, whole.stderr)
    assert "Commands:" in whole.stdout + whole.stderr and "export" in whole.stdout + whole.stderr


def test_main_ends_the_process_with_the_commands_status_after_flushing(tmp_path):
    """`main` skips the interpreter's teardown (os._exit) but not the exit status or the output."""
    probe = (
        "import sys; from coopctl.cli import main; sys.stdout.write('buffered, not yet flushed'); "
        "sys.argv = ['coopctl', *sys.argv[1:]]; main()"
    )
    env = base_env(tmp_path / "missing.db")
    done = subprocess.run([sys.executable, "-c", probe, "list"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 5 and done.stdout == "buffered, not yet flushed"
    assert done.stderr.startswith("error: no database at")
    done = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0 and "Usage: coopctl" in done.stdout
    done = subprocess.run([sys.executable, "-c", probe, "shwo"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "No such command 'shwo'" in done.stderr
