"""The plumbing every command shares: the app, its options and choices, the error handling
(`guarded`), the runtime of a command (database, settings, clock) and the report of a change."""

from __future__ import annotations

import errno
import functools
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from coopctl.typer_fast import FastGroup

if TYPE_CHECKING:  # pragma: no cover
    from coopctl.config import Settings
    from coopctl.lifecycle import Action, Party
    from coopctl.service import Service



# ----------------------------------------------------------------------------- choices

# The values an option takes, in one place: help lists them and the shell completes them
# (`coopctl.typer_fast.tidy`) for every command with an option of that name, without anything
# declared on the command. (command, option) overrides (None, option). A command keeps checking
# what it is given (its own message, exit 2): these are what is offered, not a second parser.
# tests/test_conventions.py checks them against the enums of the rules.
STATUSES = (
    "pending", "effective", "cancel_requested", "live", "delivered", "review_failed", "extension_requested",
    "completed", "rejected", "withdrawn", "expired", "cancelled", "cancelled_unilaterally", "closed_overdue",
    "disputed", "ruled", "resolved",
)
TERMS = ("not_yet_effective", "in_force", "fulfilled", "void", "settled")
FORMS = ("live", "video")
PARTIES = ("merchant", "creator")
RULINGS = ("merchant", "creator", "none")
SORT_KEYS = ("id", "-id", "created", "-created", "deadline", "-deadline")
FORMATS = ("table", "json", "jsonl", "csv", "tsv")  # list, notifications, history (SPEC section 4)
VIEW_FORMATS = ("table", "json")  # board, config
DELIVERY_STATES = ("pending", "sent", "failed", "dead")  # notifications --state (SPEC section 5)
CHANNELS = ("inbox", "sms")
CHOICES: dict[tuple[str | None, str], tuple[str, ...]] = {
    (None, "--form"): FORMS,
    (None, "--status"): STATUSES,
    (None, "--terms"): TERMS,
    (None, "--liable"): PARTIES,
    (None, "--ruling"): RULINGS,
    (None, "--sort"): SORT_KEYS,
    (None, "--format"): FORMATS,
    (None, "--state"): DELIVERY_STATES,
    (None, "--channel"): CHANNELS,
    ("board", "--format"): VIEW_FORMATS,
    ("config", "--format"): VIEW_FORMATS,
}
# What help calls the value of an option that names none (instead of Typer's `<str>`, `<int>`)
METAVARS = {
    "--db": "PATH|URL", "--config": "FILE", "--operator": "NAME", "--at": "TS", "--now": "TS", "--as-of": "TS",
    "--latest-start": "TS", "--due-before": "TS", "--created-after": "TS", "--created-before": "TS",
    "--merchant": "ID", "--creator": "ID", "--product": "ID", "--order": "ORDER", "--limit": "N", "--batch": "N",
    "--commission": "PERCENT", "--ad-budget": "YUAN", "--amount": "YUAN", "--grace": "DURATION",
    "--timeout": "DURATION", "--lease": "DURATION", "--interval": "DURATION", "--after": "CURSOR",
    "--idempotency-key": "KEY", "--public-key": "FILE", "--policy": "FILE", "--out": "FILE", "--evidence-file": "FILE",
    "--get": "SHA256", "--webhook": "URL", "--exec": "CMD", "--concurrency": "N",
}


class RootGroup(FastGroup):
    """The root command: its options (--db, --config, --operator) are accepted before or after the
    command's name, and every command's help names its values and lists its choices (see
    `coopctl.typer_fast`, the one module that relies on Typer's internals)."""

    global_options = frozenset({"--db", "--config", "--operator"})
    choices = CHOICES
    metavars = METAVARS


app = typer.Typer(
    name="coopctl",
    cls=RootGroup,
    help="Administer cooperation orders between merchants and creators (精选联盟 合作订单管理).",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ----------------------------------------------------------------------------- shared options

DbOpt = Annotated[Optional[str], typer.Option("--db", envvar="COOPCTL_DB", metavar="PATH|URL", help="Database file or SQLAlchemy URL [default: ./coopctl.db]; before or after the command.", show_default=False)]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", envvar="COOPCTL_CONFIG", metavar="FILE", help="TOML configuration [default: ./coopctl.toml when present]; before or after the command.", show_default=False)]
OperatorOpt = Annotated[Optional[str], typer.Option("--operator", envvar="COOPCTL_OPERATOR", metavar="NAME", help="Who is typing; recorded on every event [default: login name]; before or after the command.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
AtOpt = Annotated[Optional[str], typer.Option("--at", metavar="TS", help="When it happens (ISO 8601, no offset = configured timezone; now, now+2d, now-90m) [default: now].", show_default=False)]


def version() -> str:
    """The installed package's version (its metadata), or the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("coopctl")
    except PackageNotFoundError:  # run from a checkout that was not installed
        from coopctl import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"coopctl {version()}\n")
        raise typer.Exit(0)


VersionOpt = Annotated[bool, typer.Option("--version", help="Print `coopctl VERSION` and exit.", is_eager=True, callback=_print_version)]
FormatOpt = Annotated[Optional[str], typer.Option("--format", help="Output format: table, json, jsonl, csv or tsv [default: table; --json means json].", show_default=False)]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column and whole text, whatever the width.")]


def _number(what: str, *, low: int = 1, high: int = 2**63 - 1, order_id: bool = False) -> Callable[[str], int]:
    """A Typer parser for a count or an order id: ASCII digits only, within range, read by
    `trust.parse_count`/`parse_order_id` (Typer's int would read '１' and '1_0', and pass 10**20 on
    to the database); anything else is one `error:` line and exit 2 (SPEC section 7)."""

    def parse(text) -> int:
        from coopctl import trust
        from coopctl.errors import InvalidInput

        try:
            if order_id:
                return trust.parse_order_id(text, what)
            return trust.parse_count(text, what, low=low, high=high)
        except InvalidInput as exc:
            raise _fail(exc.exit_code, str(exc)) from None

    return parse


OrderArg = Annotated[int, typer.Argument(metavar="ORDER", help="The order id.", parser=_number("order id", order_id=True), show_default=False)]
MerchantOpt = Annotated[Optional[str], typer.Option("--merchant", metavar="ID", help="The merchant acting (must be the order's merchant).", show_default=False)]
CreatorOpt = Annotated[Optional[str], typer.Option("--creator", metavar="ID", help="The creator acting (must be the order's creator).", show_default=False)]
ReasonOpt = Annotated[Optional[str], typer.Option("--reason", metavar="TEXT", help="Why, recorded on the event.", show_default=False)]
# SPEC section 1, "Evidence files": on any action that takes them, `evidence_file: EvidenceFileOpt = None`
# and `evidence_files=evidence_file` passed on to `_act` (-> service.perform: read, hashed, kept).
EvidenceFileOpt = Annotated[Optional[list[str]], typer.Option("--evidence-file", metavar="FILE", help="A file proving it (at most 20 MiB), hashed into the event and kept in the database; repeat for several.", show_default=False)]


@dataclass(frozen=True)
class Globals:
    db: str | None
    config: str | None
    operator: str | None


@app.callback()
def root(ctx: typer.Context, db: DbOpt = None, config: ConfigOpt = None, operator: OperatorOpt = None, show_version: VersionOpt = False) -> None:
    """coopctl: the cooperation-order lifecycle from a terminal; cron runs `coopctl tick`."""
    ctx.obj = Globals(db, config, operator)


# ----------------------------------------------------------------------------- plumbing


MAX_LINE = 500  # characters of an error line, "error: " included (SPEC section 2)


class SAID:
    """Whether `_fail` has said this process's one line (`main` says one for an exit 130 that Typer
    made silently: a Ctrl-C while it was still parsing the command line), and whether `main` runs
    this process (the console script) rather than a caller in-process."""

    line = False
    main = False


def _fail(code: int, message: str) -> typer.Exit:
    """Say `message` in one line on stderr (at most MAX_LINE characters) and exit with `code`.
    A stderr that cannot be written (a full disk, a closed pipe) loses the line, not the code."""
    from coopctl.trust import shown  # nothing stored or typed reaches the terminal raw (SPEC section 7)

    SAID.line = True
    try:
        sys.stderr.write(f"error: {_shorten(_abbreviate(shown(' '.join(message.split()))))}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # nobody can be told; the exit code still says it
        pass
    return typer.Exit(code)


MAX_ECHO = 200  # a value quoted back in a message longer than this is shortened, so the line stays readable


def _abbreviate(message: str) -> str:
    """'xxxx…xx' (10,000 characters) for any quoted value longer than MAX_ECHO characters."""
    import re

    def cut(match: re.Match) -> str:
        quote, body = match.group(1), match.group(2)
        return f"{quote}{body[:40]}…{body[-8:]}{quote} ({len(body):,} characters)"

    return re.sub(r"(['\"])((?:(?!\1).){%d,})\1" % (MAX_ECHO + 1), cut, message)


def _shorten(message: str, room: int = MAX_LINE - len("error: ")) -> str:
    """A message longer than `room` keeps its beginning (what happened) and its last clause (what
    to do, after the last "; ", when that is short), with "…" for what is left out in between."""
    if len(message) <= room:
        return message
    cut = message.rfind("; ")
    advice = message[cut:] if cut > 0 and len(message) - cut <= room // 3 else ""
    return message[: room - len(advice) - 1].rstrip() + "…" + advice


# errors of writing stdout: a read-only command whose output cannot be written says so (exit 6)
_OUTPUT_ERRNOS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.ECONNRESET, errno.EBADF})


def guarded(command: Callable) -> Callable:
    """Map every typed error to its exit code and one line on stderr; never a traceback.

    The command's output is flushed here, so that a failure to write it is caught where it
    happens, not at exit: a reader that went away ends a read-only command quietly (exit 0,
    SPEC section 4); an output that cannot be written otherwise (a full disk) is exit 6. A
    changing command has written and flushed its report before it committed (`service.change`):
    its failure arrives as ReportFailed (exit 6, rolled back)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from coopctl.errors import CoopError, ReportFailed

        try:
            result = command(*args, **kwargs)
            ignore_interrupts()  # done: a Ctrl-C from here on would only hide the exit code
            sys.stdout.flush()
            return result
        except (typer.Exit, typer.Abort):
            raise
        except ReportFailed as exc:
            _discard_stdout()
            raise _fail(exc.exit_code, str(exc)) from None
        except CoopError as exc:
            raise _fail(exc.exit_code, f"{exc}{_demo_hint(exc)}") from None
        except KeyboardInterrupt:
            raise _fail(130, interrupted()) from None
        except BrokenPipeError:  # the reader went away (| head): the command only read
            _discard_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:  # a bug: say so in one line, never a traceback
            if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:  # writing stdout (a full disk)
                _discard_stdout()
                raise _fail(6, f"could not write the output ({exc.strerror or exc}); the database was not changed") from None
            if _is_db_error(exc):
                raise _fail(5, f"database problem: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            if isinstance(exc, (MemoryError, RecursionError)):
                raise _fail(2, "the input is too large or too deeply nested to process") from None
            raise _fail(1, f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); nothing was changed; please report it") from None

    return wrapper


def interrupted() -> str:
    """The line of a Ctrl-C (exit 130): what became of the command's latest write transaction."""
    from coopctl.errors import INTERRUPTED

    store = sys.modules.get("coopctl.store")  # not loaded yet: nothing was opened
    return INTERRUPTED[store.WRITES.latest if store else "none"]


def ignore_interrupts() -> None:
    """Ignore SIGINT for the rest of the process, when `main` runs it (the console script: nothing
    is left but to report and exit; a command run in-process, as tests do, leaves it alone) and
    from the main thread (only it may set a handler)."""
    import signal
    import threading

    if SAID.main and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_opened: dict[str, object] = {}  # "path": the database file of this command (set by `runtime`)
DEMO_DB = "coopctl-demo.db"


def _demo_hint(exc: Exception) -> str:
    """A database that is not there, when ./coopctl-demo.db is: say how to look at the demo's
    (after `coopctl demo`, `coopctl list` reads ./coopctl.db)."""
    from pathlib import Path

    from coopctl.errors import StorageError

    path = _opened.get("path")
    if not isinstance(exc, StorageError) or not isinstance(path, Path) or path.exists():
        return ""
    demo = Path(DEMO_DB).absolute()
    if path == demo or not demo.is_file():
        return ""
    return f"; the demo database is ./{DEMO_DB}: coopctl --db {DEMO_DB} list"


def _discard_stdout() -> None:
    """After stdout failed, what is still buffered goes nowhere: stdout's descriptor is pointed at
    /dev/null (as the Python documentation advises for SIGPIPE), so that the flush at exit neither
    fails again nor prints a traceback."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (CliRunner): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def report(show: Callable[..., None]) -> Callable:
    """The report of a changing command (see `service.change`): `show(result)` draws it on stdout,
    then it is flushed, so that it has left this process before the transaction commits."""

    def write(result) -> None:
        show(result)
        sys.stdout.flush()

    return write


def _is_db_error(exc: Exception) -> bool:
    module = type(exc).__module__
    return module.startswith("sqlalchemy") or module.startswith("sqlite3") or module.startswith("psycopg")


def command(name: str | None = None, **kwargs):
    def register(func: Callable) -> Callable:
        return app.command(name, **kwargs)(guarded(func))

    return register


@dataclass(frozen=True)
class Runtime:
    settings: "Settings"
    service: "Service"
    db_from_default: bool

    @property
    def tz(self):
        return self.settings.tz

    @functools.cached_property
    def now(self) -> int:
        """The clock, read once per command (whole seconds: readable records): the default of
        --at/--now and what `now`, `now+2d`, `now-90m` count from."""
        from datetime import datetime, timezone

        from coopctl.policy import to_instant

        return to_instant(datetime.now(timezone.utc).replace(microsecond=0))


def runtime(ctx: typer.Context, *, default_db: str | None = None, config_db: bool = True) -> Runtime:
    """Settings, store and operator for this command (nothing is opened yet)."""
    from pathlib import Path

    from coopctl.config import DEFAULT_CONFIG, DEFAULT_DB, load_settings
    from coopctl.trust import check_operator
    from coopctl.service import Service
    from coopctl.store import Store, locate

    g: Globals = ctx.find_root().obj or Globals(None, None, None)
    if g.config == "":  # an empty COOPCTL_CONFIG is unset (click reads it so); an empty --config is a mistake
        from coopctl.errors import InvalidInput

        raise InvalidInput("--config is empty; give a TOML file, or leave the option out for ./coopctl.toml")
    explicit = g.config is not None
    config_path = g.config if explicit else DEFAULT_CONFIG
    settings = load_settings(config_path, explicit=explicit)
    if g.db is not None:  # `--db ""` (say, an unset "$DB" in a script) is refused, not read as the default
        db, from_default = g.db, False
    elif settings.db_url and config_db:
        db, from_default = settings.db_url, False
        if "://" not in db and not os.path.isabs(db):
            db = str(Path(config_path).parent / db)
    else:
        db, from_default = default_db or DEFAULT_DB, True
    operator = check_operator(g.operator if g.operator is not None else _login_name())
    store = Store(locate(db), busy_timeout=settings.busy_timeout)
    _opened["path"] = store.location.path
    ctx.call_on_close(store.dispose)  # close the pooled connection: the last close checkpoints the WAL
    return Runtime(settings, Service(store, settings, operator), from_default)


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except Exception:
        return "unknown"


def instant(value: str | None, rt: Runtime, option: str = "--at") -> int:
    """--at/--now (or the clock, read once per command) as microseconds since the epoch: ISO 8601
    (no offset: the configured zone, where a skipped or repeated local time is refused), or
    `now`, `now+DURATION`, `now-DURATION`; between 1970-01-01 and 9999-12-31 UTC."""
    from coopctl.errors import InvalidInput
    from coopctl.policy import InvalidValue, parse_instant

    if value is None:
        return rt.now
    try:
        return parse_instant(value, rt.tz, now=lambda: rt.now)
    except InvalidValue as exc:
        raise InvalidInput(f"{option}: {exc}") from None


def clock() -> int:
    """The wall clock, for records of when something ran (tick_runs), not for the rules."""
    from datetime import datetime, timezone

    from coopctl.policy import to_instant

    return to_instant(datetime.now(timezone.utc))


def emit_json(value) -> None:
    from coopctl.render import json_text

    if _takes_unicode(sys.stdout):
        sys.stdout.write(json_text(value) + "\n")
    else:  # every character beyond ASCII as a \u escape: control and format characters too
        import json

        sys.stdout.write(json.dumps(value, ensure_ascii=True, indent=2) + "\n")


def output_format(fmt: str | None, as_json: bool) -> str:
    """`--format F` (SPEC section 4), `--json` being `--format json`; both at once must agree."""
    from coopctl.errors import InvalidInput

    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"--format: unknown format {fmt[:40]!r} (known: {', '.join(FORMATS)})")
    if as_json and fmt not in (None, "json"):
        raise InvalidInput(f"--json is --format json; it cannot be combined with --format {fmt}")
    return "json" if as_json else fmt or "table"


def _takes_unicode(stream) -> bool:
    """True when `stream` encodes as UTF-8 (or another Unicode encoding): JSON may then carry
    every character as itself; otherwise (PYTHONIOENCODING=ascii, a Latin-1 locale) as \\u escapes."""
    import codecs

    try:
        return codecs.lookup(stream.encoding or "ascii").name.startswith("utf")
    except (AttributeError, LookupError, TypeError):
        return False


def _note(line: str) -> None:
    """A remark on stderr beside the report (not an error); lost, not fatal, if stderr cannot take it."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def one_party(merchant: str | None, creator: str | None) -> tuple["Party", str]:
    from coopctl.errors import InvalidInput
    from coopctl.lifecycle import Party

    if (merchant is None) == (creator is None):
        raise InvalidInput("name exactly one party: --merchant M or --creator C")
    return (Party.MERCHANT, merchant) if merchant is not None else (Party.CREATOR, creator)


def _act(ctx: typer.Context, order: int, action: "Action", party: "Party | None", who: str | None, at: str | None, as_json: bool, **extra) -> None:
    """Perform `action` on `order` as `party` (None: the platform, `arbitrate`) and report it."""
    from coopctl.errors import InvalidInput
    from coopctl.service import perform

    if who is None and party is not None:
        raise InvalidInput(f"{action} needs --{party} ID (who is acting)")
    rt = runtime(ctx)

    @report
    def done(outcome) -> None:
        if as_json:
            emit_json(outcome.order.to_json(rt.tz))
        else:
            from coopctl import render

            render.action_done(outcome, rt.tz)

    perform(rt.service, order, action, party, who, instant(at, rt), report=done, **extra)
