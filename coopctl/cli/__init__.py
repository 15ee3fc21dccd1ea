"""The command line: parse, call the service, render, map errors to exit codes.

Heavy libraries (SQLModel/SQLAlchemy, rich tables) are imported inside the commands that need
them, so `coopctl --help` starts as fast as Typer itself. The clock is read once per command,
here, and passed down as an instant.

The commands live by area in this package (`orders`, `clock`, `reading`, `outbox`, `databases`,
`moving`, `overview`, `sealing`), on the one `app` of `coopctl.cli.base`; this module is the console
script's entry point.
"""

from __future__ import annotations

import copy
import errno
import io
import os
import sys
from typing import Callable

import typer

from coopctl.cli.base import FORMS, PARTIES, STATUSES, TERMS, SAID, RootGroup, _discard_stdout, _fail, app, ignore_interrupts, interrupted  # noqa: F401  the choices: named by the tests
from coopctl.cli import orders, disputes, clock, reading, outbox, evidence, databases, moving, overview, sealing  # noqa: E402,F401  each registers its commands on `app`, in this order (help lists them so)


def main() -> None:
    """The console-script entry point: only the command named on the line is built, and the
    process ends without tearing the interpreter down.

    Typer turns every registered command into a click command (reading each signature and its
    annotations) before it parses anything; to run one command, one is enough. `coopctl --help`,
    a mistyped name and anything unusual get the whole app, as before."""
    SAID.main = True
    _standard_streams()
    out = sys.stdout
    try:
        status = _run(out)
    except KeyboardInterrupt:  # a Ctrl-C after the command's own handlers, before interrupts are ignored below:
        status = _fail(130, interrupted()).exit_code  # exit 130 with the one line (whether the latest commit stands), not a death by SIGINT
    ignore_interrupts()
    leave(status)


def _run(out) -> int | str | None:
    """`main`'s command, and the status it ends with."""
    try:
        only_command(sys.argv[1:])()
        status = 0
    except SystemExit as done:
        status = done.code
        if status == 130 and not SAID.line:  # Typer's own answer to a Ctrl-C before the command began: silent
            status = _fail(130, interrupted()).exit_code
        if status == 1 and sys.stdout is not out:  # click met EPIPE writing help (it wraps stdout, exits 1): the reader went away
            sys.stdout = out
            _discard_stdout()
            status = 0
    except BrokenPipeError:  # help or usage text whose reader went away
        _discard_stdout()
        status = 0
    except KeyboardInterrupt:  # before the command began (commands are `guarded`)
        status = _fail(130, interrupted()).exit_code
    except OSError as exc:  # help or usage text on a stdout that cannot take it (commands are `guarded`)
        _discard_stdout()
        status = _fail(6, f"could not write the output ({exc.strerror or exc}); the database was not changed").exit_code
    return status


ESCAPE = "coopctl-escape"  # the codec error handler of the standard streams


def _standard_streams() -> None:
    """Make the standard streams unable to fail the command on their own.

    A character the stream cannot encode (PYTHONIOENCODING=ascii, a Latin-1 terminal) is written
    as a JSON escape (\\u5546; beyond the BMP a surrogate pair): readable on a terminal, and still
    valid JSON inside a string, whoever wrote the JSON. stderr drops what it cannot write (a full
    disk, a closed pipe): a message nobody can read must not replace the command's exit code with
    a traceback. stdout's failures are the command's to handle (`guarded`, `service.change`)."""
    import codecs

    codecs.register_error(ESCAPE, _json_escape)
    _standard_stdout()
    _standard_stderr()


def _standard_stdout() -> None:
    out = sys.stdout
    if out is None:  # started with stdout closed (>&-): every report fails as on a closed descriptor
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(_Closed()), encoding="utf-8", errors=ESCAPE)
        return
    if isinstance(getattr(out, "buffer", None), io.RawIOBase):
        # PYTHONUNBUFFERED=1 (common in containers) puts the text layer straight on the file, and
        # it ignores a short write: a report cut off by a reader that went away would count as
        # written. A buffered layer between them writes the rest (or raises); what is written
        # still goes out at once (sys.__stdout__ keeps the file open).
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(out.buffer), encoding=out.encoding, errors=ESCAPE, line_buffering=True
        )
        return
    try:
        out.reconfigure(errors=ESCAPE)
    except (AttributeError, ValueError):  # replaced or closed: leave it as it is
        pass


def _standard_stderr() -> None:
    try:
        fd, encoding = sys.stderr.fileno(), sys.stderr.encoding
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(_Unfailing(fd)), encoding=encoding, errors=ESCAPE, line_buffering=True
    )


def _json_escape(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler of streams that cannot encode a character: JSON's `\\uXXXX`."""
    from coopctl.trust import u_escape

    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "".join(u_escape(char) for char in error.object[error.start : error.end]), error.end


class _Closed(io.RawIOBase):
    """What stdout is when the process started without one: nothing can be written to it."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


class _Unfailing(io.RawIOBase):
    """A file descriptor that takes every write: what the system refuses is dropped."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def write(self, data) -> int:
        try:
            return os.write(self._fd, data)
        except OSError:
            return len(data)

    def close(self) -> None:  # the descriptor is the process's, not this object's
        self.flush()


def leave(status) -> None:
    """End the process now, with `status` as `sys.exit` takes it.

    An interpreter that exits normally frees every object of every module one by one: with
    SQLAlchemy, SQLModel, pydantic and rich loaded that takes about 0.2 s, as long as the command
    itself. There is nothing left to do by then (the command closed its database, and the files it
    wrote are closed and synced), so only the standard streams are flushed; the exit handlers of
    the libraries (logging's, weakref finalizers) have nothing to do either."""
    if status is None:
        status = 0
    elif not isinstance(status, int):
        sys.stderr.write(f"{status}\n")
        status = 1
    try:  # commands flushed their output already (`guarded`): this is help and usage text
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # the reader went away (| head), or the stream is closed
        pass
    except OSError as exc:
        if not status:
            status = _fail(6, f"could not write the output ({exc.strerror or exc}); the database was not changed").exit_code
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(status)


def only_command(args: list[str]) -> typer.Typer:
    """The app with only the command that `args` name (global options may come before or after
    the name); for the root's help, `--version` and the completion scripts, the app with every
    command reduced to its name and help; otherwise the app. When the shell asks for completions
    (`_COOPCTL_COMPLETE`), the words typed so far say which."""
    completing = _completion_words()
    if completing is not None:
        args = completing
    name = _command_name(args)
    if name is None and (completing is not None or not args or any(arg in _LISTED for arg in args)):
        return _listing()
    chosen = [c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == name]
    if len(chosen) != 1:
        return app
    narrow = copy.copy(app)
    narrow.registered_commands = chosen
    return narrow


_LISTED = frozenset({"-h", "--help", "--version", "--show-completion", "--install-completion"})
COMPLETE_VAR = "_COOPCTL_COMPLETE"  # Typer's completion protocol: set by the shell function it installs


def _completion_words() -> list[str] | None:
    """The complete words before the one being completed (the program's name left out), when
    this run answers the shell's completion; None otherwise. Bash passes COMP_WORDS and
    COMP_CWORD, zsh, fish and PowerShell _TYPER_COMPLETE_ARGS (as Typer's completion classes read them)."""
    import shlex

    instruction = os.environ.get(COMPLETE_VAR)
    if not instruction:
        return None
    if not instruction.startswith("complete"):  # source_bash …: the script, no command needed
        return []

    def split(text: str) -> list[str]:
        try:
            return shlex.split(text)
        except ValueError:  # an open quote in the word being typed
            return text.split()

    if instruction.endswith("bash"):
        words = split(os.environ.get("COMP_WORDS", ""))
        try:
            return words[1 : int(os.environ.get("COMP_CWORD", "0"))]
        except ValueError:
            return []
    typed = os.environ.get("_TYPER_COMPLETE_ARGS", "")
    words = split(typed)[1:]
    return words if typed.endswith(" ") else words[:-1]


def _listing() -> typer.Typer:
    """`coopctl --help` lists each command's name and the first line of its help: commands without
    their parameters list the same, and Typer need not read 21 signatures to print it."""
    listing = copy.copy(app)
    listing.registered_commands = []
    for info in app.registered_commands:
        entry = copy.copy(info)
        entry.callback = _stub(info.callback)
        listing.registered_commands.append(entry)
    return listing


def _stub(callback: Callable) -> Callable:
    def stub() -> None:  # pragma: no cover - never run: only its name and help are listed
        raise AssertionError("a listing entry cannot run")

    stub.__name__, stub.__doc__ = callback.__name__, callback.__doc__
    return stub


_ROOT_VALUES = RootGroup.global_options  # the root's options that take a value


def _command_name(args: list[str]) -> str | None:
    expect_value = False
    for arg in args:
        if expect_value:
            expect_value = False
        elif arg in _ROOT_VALUES:
            expect_value = True
        elif arg.startswith("-"):
            if arg.split("=", 1)[0] not in _ROOT_VALUES:
                return None  # --help, or an option the root does not know: the whole app answers
        else:
            return arg
    return None
