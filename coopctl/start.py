"""The console script's entry point: the command line is imported here, under a Ctrl-C guard.

Importing `coopctl.cli` (Typer, click, rich's pieces) takes about 60 ms, during which a Ctrl-C
would otherwise end the process with a KeyboardInterrupt traceback from the middle of an import.
Nothing has been opened by then: the answer is the one line of any interruption, and exit 130.
So is a Ctrl-C in the instant after the command ended, before `coopctl.cli.main` ignores them.
"""

from __future__ import annotations

import sys

from coopctl.errors import INTERRUPTED  # a module of no dependencies: microseconds, before the long import


def main() -> None:
    try:
        from coopctl.cli import main as run
    except KeyboardInterrupt:
        _interrupted_before_start()
    try:
        run()  # it ends the process (`coopctl.cli.leave`)
    except KeyboardInterrupt:  # in the instant after the command ended, before `run` ignores interrupts
        _interrupted_at_the_end()


def _interrupted_at_the_end() -> None:
    """The one line of any interruption (it says whether the latest commit stands), exit 130."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from coopctl.cli import leave
    from coopctl.cli.base import _fail, interrupted

    leave(_fail(130, interrupted()).exit_code)


def _interrupted_before_start() -> None:
    try:
        sys.stderr.write(f"error: {INTERRUPTED['none']}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or full: the exit code still says it
        pass
    import os

    os._exit(130)
