"""Every command documents itself (STYLE habit 8, after sqlite-utils' test_docs.py): each command
registered on the Typer app has `--help` that exits 0 and a docstring with an example of use."""

from __future__ import annotations

import re

import pytest
import typer.main

from coopctl.cli import app

SPEC_COMMANDS = {
    "create", "accept", "reject", "withdraw", "cancel-request", "cancel-confirm", "cancel-decline", "go-live",
    "deliver", "review", "tick", "show", "history", "list", "notifications", "dispatch", "init", "demo",
}
EXAMPLE = re.compile(r"^\s*Example\b[^:\n]*:\s*(.+(?:\n(?!\s*$).+)*)", re.MULTILINE)


def registered() -> dict[str, object]:
    """Command name -> the function behind it, as Typer registers them."""
    group = typer.main.get_command(app)
    return dict(sorted(group.commands.items()))


COMMANDS = registered()


def test_every_command_of_the_spec_is_registered():
    assert SPEC_COMMANDS <= set(COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_exits_0(invoke, name):
    result = invoke(name, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: coopctl {name} ")
    assert "Example" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_has_a_docstring_with_an_example(name):
    doc = COMMANDS[name].callback.__doc__ or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else ""
    assert summary, f"{name} has no docstring"
    match = EXAMPLE.search(doc)
    assert match, f"the docstring of {name} has no 'Example:'"
    example = match.group(1)
    assert "coopctl" in example and name in example, f"the example of {name} does not run it: {example!r}"


def test_root_help_lists_every_command(run_coopctl):
    proc = run_coopctl("--help")
    assert proc.returncode == 0
    assert proc.stderr == ""
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\b", proc.stdout, re.MULTILINE), name


def test_no_arguments_shows_help(invoke):
    result = invoke()
    assert "Usage: coopctl" in result.output
    assert result.exit_code in (0, 2)  # Typer's no_args_is_help exits 2 with click 8.2+


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_accepts_json(name):
    options = {opt for param in COMMANDS[name].params for opt in getattr(param, "opts", [])}
    assert "--json" in options


# --------------------------------------------------------------------------- the README's tour, as a terminal shows it
#
# README.md's tour is a transcript of a terminal 80 columns wide: each `$ ` command is run again
# here, in a pseudo-terminal of that size (tables drawn with their rules, footers as their last
# line, error lines on the same screen), and the transcript must be what it prints. To refresh the
# README after a change of output: `python tests/test_docs.py --write`.

TOUR_START = "```console\n"  # the first console block after the heading "## A tour"
TOUR_COLUMNS = 80
TOUR_DIR = "/tmp/tour"  # the folder the transcript shows (the run's own temporary folder is written as it)


def tour_block(readme: str) -> tuple[int, int]:
    """Where the tour's console block is in README.md: (start, end) of its text."""
    start = readme.index(TOUR_START, readme.index("\n## A tour\n")) + len(TOUR_START)
    return start, readme.index("```\n", start)


def tour_commands(block: str) -> list[str]:
    """The commands of a transcript: lines after `$ `, with their `\\` continuations."""
    commands, lines = [], block.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("$ "):
            command = line[2:]
            j = i
            while command.endswith("\\"):
                j += 1
                command = command[:-1].rstrip() + " " + lines[j].strip()
            commands.append(command)
    return commands


def _in_terminal(command: str, env: dict, cwd: str) -> tuple[str, int]:
    """What `bash -c command` shows on an 80-column pseudo-terminal (colours and cursor codes
    removed, as a reader sees the screen), and its exit code."""
    from conftest import in_pty

    out, code = in_pty(["bash", "--norc", "--noprofile", "-c", command], columns=TOUR_COLUMNS, rows=50, env=env, cwd=cwd)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", out.decode("utf-8", "replace"))
    return text.replace("\r\n", "\n"), code


def run_tour(block: str, workdir: str) -> str:
    """The transcript that running the tour's commands in `workdir` prints, on a terminal."""
    import os
    import shutil
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPCTL_") and k not in ("COLUMNS", "LINES")}
    env.update({"NO_COLOR": "1", "TERM": "xterm-256color", "LANG": "C.UTF-8"})
    venv_bin = os.path.dirname(shutil.which("coopctl", path=os.path.dirname(sys.executable)) or sys.executable)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    lines, last = [], 0
    for command in tour_commands(block):
        lines.append(command)
        if command.startswith("export "):  # the one shell built-in of the tour that changes what follows
            name, _, value = command.split("#")[0].strip()[len("export "):].partition("=")
            env[name] = value
            continue
        if command.strip() == "echo $?":
            lines.append(f"{last}\n")
            continue
        shown, last = _in_terminal(command, env, workdir)
        # trailing spaces (a table's padding) are not seen on a screen, and not kept in the README
        lines.append("".join(line.rstrip() + "\n" for line in shown.replace(workdir, TOUR_DIR).splitlines()))
    # the block's own line breaks: a command as written in the README (continuations kept)
    written = iter(_written_commands(block))
    out = []
    for item in lines:
        if item in tour_commands(block):
            out.append(next(written))
        else:
            out.append(item)
    return "".join(part if part.endswith("\n") else part + "\n" for part in out if part != "")


def _written_commands(block: str) -> list[str]:
    """Each `$ ` command with its continuation lines, as written in the block (ending in a newline)."""
    found, lines = [], block.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("$ "):
            text, j = line, i
            while lines[j].rstrip("\n").endswith("\\"):
                j += 1
                text += lines[j]
            found.append(text)
    return found


def test_the_readme_tour_is_what_an_80_column_terminal_shows(tmp_path):
    """README.md's tour, command by command, in a pseudo-terminal 80 columns wide: the same
    text, so it cannot go stale (tables with rules, relative times, errors and all)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    start, end = tour_block(readme)
    block = readme[start:end]
    assert len(tour_commands(block)) >= 10
    regenerated = run_tour(block, str(tmp_path))
    assert regenerated == block, "README tour is stale: run `python tests/test_docs.py --write`"
    typed = {line for command in _written_commands(block) for line in command.splitlines()}
    assert max(_cells(line) for line in regenerated.splitlines() if line not in typed) <= TOUR_COLUMNS
    assert any(line.startswith("┏") or line.startswith("╭") or line.startswith("┌") for line in regenerated.splitlines())


def _cells(line: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


if __name__ == "__main__":  # python tests/test_docs.py --write: the tour as the terminal shows it now
    import sys
    import tempfile
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "README.md"
    readme = path.read_text(encoding="utf-8")
    start, end = tour_block(readme)
    with tempfile.TemporaryDirectory() as work:
        fresh = run_tour(readme[start:end], work)
    if "--write" in sys.argv:
        path.write_text(readme[:start] + fresh + readme[end:], encoding="utf-8")
    else:
        sys.stdout.write(fresh)
