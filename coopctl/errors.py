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


class ReportFailed(CoopError):
    """The command's report could not be written (a full disk, a closed pipe): the transaction it
    belonged to was rolled back. `reason` is the operating system's word for it."""

    exit_code = 6

    def __init__(self, reason: str, message: str | None = None):
        self.reason = reason
        super().__init__(message or f"could not write the report ({reason}); nothing was changed")


class KeyTaken(Busy):
    """Another transaction committed the same new idempotency key first (a unique-index violation):
    trying again in a new transaction finds its order. Exit 4 if it still happens then."""


# The line of a Ctrl-C (exit 130), by what became of the command's latest write transaction
# (`store.WRITES.latest`); `cli.base.interrupted` picks it, `start` says the first before anything is imported.
INTERRUPTED = {
    "none": "interrupted; nothing was changed",
    "rolled back": "interrupted; the current transaction was rolled back",
    "committed": "interrupted after the latest transaction committed; what it changed stands",
}
