"""The console script's entry point: the command line is imported here, under a Ctrl-C guard.

Importing `coopctl.cli` (Typer, click, rich's pieces) takes about 60 ms, during which a Ctrl-C
would otherwise end the process with a KeyboardInterrupt traceback from the middle of an import.
Nothing has been opened by then: the answer is the one line of any interruption, and exit 130.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from coopctl.cli import main as run
    except KeyboardInterrupt:
        _interrupted_before_start()
    run()


def _interrupted_before_start() -> None:
    try:
        sys.stderr.write("error: interrupted; nothing was changed\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or full: the exit code still says it
        pass
    import os

    os._exit(130)
