"""Typed errors, each mapped to one exit code by the command line (SPEC section 2)."""

from __future__ import annotations


class CoopError(Exception):
    """Base: the message is one line that says what happened and what to do."""

    exit_code = 1


class Refused(CoopError):
    """The rules do not allow it: wrong state, wrong party, too late, time going backwards."""

    exit_code = 1


class InvalidInput(CoopError):
    """A malformed option, argument, timestamp, configuration or import file."""

    exit_code = 2


class NotFound(CoopError):
    """No such order."""

    exit_code = 3


class Busy(CoopError):
    """The database stayed locked longer than busy_timeout; nothing was changed."""

    exit_code = 4


class StorageError(CoopError):
    """Missing, foreign, unreadable or newer-schema database."""

    exit_code = 5
