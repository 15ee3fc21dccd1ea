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
