"""The command line: parse, call the service, render, map errors to exit codes.

Heavy libraries (SQLModel/SQLAlchemy, rich tables) are imported inside the commands that need
them, so `coopctl --help` starts as fast as Typer itself. The clock is read once per command,
here, and passed down as an instant.
"""

from __future__ import annotations

import copy
import errno
import functools
import io
import os
import sys
from contextlib import ExitStack
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
    "pending", "effective", "cancel_requested", "live", "delivered", "review_failed", "completed", "rejected",
    "withdrawn", "expired", "cancelled", "cancelled_unilaterally", "closed_overdue", "disputed",
)
TERMS = ("not_yet_effective", "in_force", "fulfilled", "void")
FORMS = ("live", "video")
PARTIES = ("merchant", "creator")
RULINGS = ("merchant", "creator", "none")
SORT_KEYS = ("id", "-id", "created", "-created", "deadline", "-deadline")
FORMATS = ("table", "json", "jsonl", "csv", "tsv")  # list, notifications, history (SPEC section 4)
VIEW_FORMATS = ("table", "json")  # board, config
CHOICES: dict[tuple[str | None, str], tuple[str, ...]] = {
    (None, "--form"): FORMS,
    (None, "--status"): STATUSES,
    (None, "--terms"): TERMS,
    (None, "--liable"): PARTIES,
    (None, "--ruling"): RULINGS,
    (None, "--sort"): SORT_KEYS,
    (None, "--format"): FORMATS,
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


def _fail(code: int, message: str) -> typer.Exit:
    """Say `message` in one line on stderr (at most MAX_LINE characters) and exit with `code`.
    A stderr that cannot be written (a full disk, a closed pipe) loses the line, not the code."""
    from coopctl.trust import shown  # nothing stored or typed reaches the terminal raw (SPEC section 7)

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
            raise _fail(130, "interrupted; the current transaction was rolled back") from None
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


def _act(ctx: typer.Context, order: int, action: "Action", party: "Party", who: str | None, at: str | None, as_json: bool, **extra) -> None:
    from coopctl.errors import InvalidInput
    from coopctl.service import perform

    if who is None:
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


# ----------------------------------------------------------------------------- orders


@command()
def create(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option("--merchant", help="The merchant proposing the order.", show_default=False)],
    creator: Annotated[str, typer.Option("--creator", help="The creator invited.", show_default=False)],
    product: Annotated[list[str], typer.Option("--product", help="A product id; repeat for several.", show_default=False)],
    form: Annotated[str, typer.Option("--form", help="live or video.", show_default=False)],
    commission: Annotated[str, typer.Option("--commission", help="Commission rate in percent (0 < rate <= 100, two decimals).", show_default=False)],
    latest_start: Annotated[str, typer.Option("--latest-start", help="Latest time to go live or publish (ISO 8601).", show_default=False)],
    ad_budget: Annotated[str, typer.Option("--ad-budget", help="Ad budget in yuan (>= 0, two decimals).")] = "0",
    note: Annotated[Optional[str], typer.Option("--note", help="A note on the order.", show_default=False)] = None,
    idempotency_key: Annotated[Optional[str], typer.Option("--idempotency-key", help="Repeat-safe key: the same key and terms return the same order.", show_default=False)] = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A merchant proposes an order to a creator; it waits `pending` for the creator's answer.

    Example: coopctl create --merchant 商家A --creator 达人小王 --product P1 --form live
    --commission 12.5 --ad-budget 5000 --latest-start 2026-12-01T20:00
    """
    from coopctl.service import create_order

    rt = runtime(ctx)

    @report
    def done(result) -> None:
        order, created = result
        if as_json:
            emit_json(order.to_json(rt.tz))
        else:
            from coopctl import render

            render.order_created(order, rt.tz, created)
        if not created:
            sys.stdout.flush()  # the answer first: a report that fails says so alone
            _note(f"order {order.id} already exists for idempotency key {idempotency_key!r}; nothing was changed")

    create_order(
        rt.service, merchant=merchant, creator=creator, products=product, form=form, commission=commission,
        ad_budget=ad_budget, latest_start_at=instant(latest_start, rt, "--latest-start"), note=note,
        at=instant(at, rt), idempotency_key=idempotency_key, report=done,
    )


@command()
def accept(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator accepts a pending order; its terms come into force.

    Example: coopctl accept 12 --creator 达人小王
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.ACCEPT, Party.CREATOR, creator, at, as_json)


@command()
def reject(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, reason: ReasonOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator declines a pending order.

    Example: coopctl reject 12 --creator 达人小王 --reason "schedule full"
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.REJECT, Party.CREATOR, creator, at, as_json, reason=reason)


@command()
def withdraw(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, reason: ReasonOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The merchant withdraws an order before the creator accepted it.

    Example: coopctl withdraw 12 --merchant 商家A
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.WITHDRAW, Party.MERCHANT, merchant, at, as_json, reason=reason)


@command("cancel-request")
def cancel_request(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, reason: ReasonOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """Either party asks to cancel an effective order; the other must answer in time.

    Example: coopctl cancel-request 12 --merchant 商家A --reason "product recalled"
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_REQUEST, party, who, at, as_json, reason=reason)


@command("cancel-confirm")
def cancel_confirm(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The other party agrees to cancel: the order is cancelled by agreement.

    Example: coopctl cancel-confirm 12 --creator 达人小王
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_CONFIRM, party, who, at, as_json)


@command("cancel-decline")
def cancel_decline(ctx: typer.Context, order: OrderArg, merchant: MerchantOpt = None, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The other party declines to cancel: the order is effective again.

    Example: coopctl cancel-decline 12 --creator 达人小王
    """
    from coopctl.lifecycle import Action

    party, who = one_party(merchant, creator)
    _act(ctx, order, Action.CANCEL_DECLINE, party, who, at, as_json)


@command("go-live")
def go_live(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator went live or published; delivery follows (automatically after a while).

    Example: coopctl go-live 12 --creator 达人小王 --at 2026-12-01T19:30
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.GO_LIVE, Party.CREATOR, creator, at, as_json)


@command()
def deliver(ctx: typer.Context, order: OrderArg, creator: CreatorOpt = None, evidence: Annotated[Optional[str], typer.Option("--evidence", help="A link or a note proving the delivery.", show_default=False)] = None, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """The creator delivers (also a make-up after a failed review); the merchant reviews it.

    Example: coopctl deliver 12 --creator 达人小王 --evidence https://v.douyin.com/abc
    """
    from coopctl.lifecycle import Action, Party

    _act(ctx, order, Action.DELIVER, Party.CREATOR, creator, at, as_json, evidence=evidence)


@command()
def review(
    ctx: typer.Context,
    order: OrderArg,
    merchant: MerchantOpt = None,
    passed: Annotated[bool, typer.Option("--pass", help="Accept the delivery.")] = False,
    failed: Annotated[bool, typer.Option("--fail", help="Reject the delivery (needs --reason).")] = False,
    reason: ReasonOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The merchant reviews a delivery: --pass completes it, --fail asks for a make-up.

    Example: coopctl review 12 --merchant 商家A --fail --reason "product not shown"
    """
    from coopctl.errors import InvalidInput
    from coopctl.lifecycle import Action, Party

    if passed == failed:
        raise InvalidInput("review needs exactly one of --pass or --fail")
    if failed and not (reason or "").strip():
        raise InvalidInput("review --fail needs --reason TEXT")
    if passed and reason is not None:
        raise InvalidInput("--reason goes with --fail, not --pass")
    action = Action.REVIEW_PASS if passed else Action.REVIEW_FAIL
    _act(ctx, order, action, Party.MERCHANT, merchant, at, as_json, reason=reason)


# ----------------------------------------------------------------------------- the clock


def _tick_helper() -> bool | None:
    """COOPCTL_TICK_HELPER: `auto` (the default: a helper process decides large batches on a
    machine with two cores or more), `on` or `off`."""
    from coopctl.errors import InvalidInput

    raw = os.environ.get("COOPCTL_TICK_HELPER", "auto")
    choices = {"auto": None, "on": True, "off": False}
    if raw.strip().lower() not in choices:
        raise InvalidInput(f"COOPCTL_TICK_HELPER must be auto, on or off, got {raw!r}")
    return choices[raw.strip().lower()]


@command()
def tick(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="Apply everything due up to this instant [default: now].", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would happen; write nothing.")] = False,
    listing: Annotated[bool, typer.Option("--list", help="With --dry-run: each order that would change, its transitions and reminders.")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Orders per transaction; each batch commits on its own, so a smaller one holds the write lock for less time [default: 20000 on SQLite, 5000 on PostgreSQL].", parser=_number("--batch", high=1_000_000), show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fire every deadline and reminder due by now; cron runs this every minute.

    Example (crontab): * * * * * cd /srv/coop && coopctl tick --json >> tick.log
    """
    from coopctl import render
    from coopctl.service import tick as run_tick
    from coopctl.tickwork import quiet_gc

    if listing and not dry_run:
        from coopctl.errors import InvalidInput

        raise InvalidInput("--list goes with --dry-run (coopctl tick --dry-run --list)")
    rt = runtime(ctx)
    at = instant(now, rt, "--now")
    helper = _tick_helper()
    if listing:
        return _tick_list(rt, at, batch, as_json)

    def show(summary) -> None:
        bar.close()  # the progress bar is gone (from the terminal too) before the report is drawn
        if as_json:
            emit_json(render.tick_json(summary, rt.tz))
        else:
            render.tick_summary(summary, rt.tz, dry_run)

    with ExitStack() as bar:
        total_hint, progress = bar.enter_context(render.tick_progress())
        sizing = {} if batch is None else {"batch": batch}
        quiet_gc()
        summary = run_tick(
            rt.service, at, dry_run=dry_run, progress=progress, total_hint=total_hint, clock=clock, helper=helper,
            report=None if dry_run else report(show), **sizing
        )
    if dry_run:  # wrote nothing: its report is a read-only command's output
        show(summary)


def _tick_list(rt: Runtime, at: int, batch: int | None, as_json: bool) -> None:
    """`tick --dry-run --list`: each order that would change is printed as its chunk is decided
    (streamed: a dry run over 100,000 due orders holds one chunk, not every order's list)."""
    from coopctl import render, views
    from coopctl.service import tick as run_tick

    out = sys.stdout
    first = [True]

    def listed(decided) -> None:
        for change in views.changes_of(decided):
            if as_json:
                out.write(("\n    " if first[0] else ",\n    ") + render.json_text(change.to_json(rt.tz), indent=None))
            else:
                from coopctl.render_views import tick_change_line

                tick_change_line(change, rt.tz)
            first[0] = False

    if as_json:  # the report's keys, with "orders" streamed after "now"
        from coopctl.policy import iso

        out.write('{\n  "now": ' + render.json_text(iso(at, rt.tz)) + ',\n  "orders": [')
    sizing = {} if batch is None else {"batch": batch}
    summary = run_tick(rt.service, at, dry_run=True, clock=clock, helper=False, on_decided=listed, **sizing)
    if as_json:
        rest = render.tick_json(summary, rt.tz)
        rest.pop("now")
        body = render.json_text(rest)[1:].lstrip("\n")  # its keys, without the opening brace
        out.write(("" if first[0] else "\n  ") + "],\n" + body + "\n")
    else:
        render.tick_summary(summary, rt.tz, True)


# ----------------------------------------------------------------------------- reading

AsOfOpt = Annotated[Optional[str], typer.Option("--as-of", help="Show the order as the rules make it at this instant (every deadline up to it fired, in memory; nothing is written).", show_default=False)]


@command()
def show(ctx: typer.Context, order: OrderArg, as_of: AsOfOpt = None, wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """Show an order's terms and the timeline of its events and deadlines; a deadline that passed
    is marked overdue. --as-of TS shows a projection: the order as a tick at TS would leave it.

    Example: coopctl show 12      coopctl show 12 --as-of now+14d
    """
    from coopctl import views
    from coopctl.service import read_order

    rt = runtime(ctx)
    ahead = None if as_of is None else instant(as_of, rt, "--as-of")
    checked = read_order(rt.service, order)  # the chain and the row, checked as they are read
    record, events = checked.shown, checked.printable_events()
    if record is not None:  # print what can be printed, then say what does not hold (exit 1)
        if ahead is not None:
            projected = views.project(record, events, ahead, rt.service.operator, rt.tz)
            if as_json:
                emit_json(views.projection_json(projected, rt.tz))
            else:
                from coopctl import render, render_views

                render_views.projection_header(projected, rt.tz)
                render.order_detail(projected.order, projected.events, rt.tz, wide=wide, now=rt.now)
        else:
            mark = views.overdue(record, rt.now, rt.tz)
            if as_json:
                emit_json({
                    **record.to_json(rt.tz), "events": [e.to_json(rt.tz) for e in events],
                    "overdue": None if mark is None else mark.to_json(rt.tz),
                })
            else:
                from coopctl import render, render_views

                render.order_detail(record, events, rt.tz, wide=wide, now=rt.now)
                render_views.overdue_line(mark, rt.tz)
    refusal = checked.refusal()
    if refusal is not None:
        sys.stdout.flush()
        raise refusal


@command()
def history(ctx: typer.Context, order: OrderArg, fmt: FormatOpt = None, wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """List an order's events with their hashes.

    Example: coopctl history 12 --json
    """
    from coopctl.service import read_order

    rt = runtime(ctx)
    checked = read_order(rt.service, order)  # the chain and the row, checked as they are read
    record, events = checked.shown, checked.printable_events()
    fmt = output_format(fmt, as_json)
    from coopctl import render

    if fmt != "table":
        render.print_records((e.to_json(rt.tz) for e in events), fmt=fmt, table=None, tz=rt.tz, wide=wide)
    elif record is not None:
        render.history_table(record, events, rt.tz, wide=wide)
    refusal = checked.refusal()
    if refusal is not None:
        sys.stdout.flush()
        raise refusal


LIST_PAGE = 50  # rows of a `list` table unless --limit or --all (SPEC section 4, "Lists")
MAX_LIMIT = 100_000  # --limit above this is refused (--all streams every order)


@command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="Only these statuses; repeat for several.", show_default=False)] = None,
    terms: Annotated[Optional[str], typer.Option("--terms", help="Only orders whose terms are in this state: not_yet_effective, in_force, fulfilled, void.", show_default=False)] = None,
    liable: Annotated[Optional[str], typer.Option("--liable", help="Only orders where this party is liable: merchant or creator.", show_default=False)] = None,
    merchant: Annotated[Optional[str], typer.Option("--merchant", help="Only this merchant's orders (ending in * : a prefix).", show_default=False)] = None,
    creator: Annotated[Optional[str], typer.Option("--creator", help="Only this creator's orders (ending in * : a prefix).", show_default=False)] = None,
    product: Annotated[Optional[str], typer.Option("--product", help="Only orders of this product (ending in * : a prefix).", show_default=False)] = None,
    created_after: Annotated[Optional[str], typer.Option("--created-after", help="Only orders created after this instant.", show_default=False)] = None,
    created_before: Annotated[Optional[str], typer.Option("--created-before", help="Only orders created before this instant.", show_default=False)] = None,
    due_before: Annotated[Optional[str], typer.Option("--due-before", help="Only orders whose next deadline is before this instant (sorts by deadline).", show_default=False)] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only orders whose deadline has passed without a tick (sorts by deadline).")] = False,
    sort: Annotated[Optional[str], typer.Option("--sort", help="id, created or deadline; -KEY descending [default: id].", show_default=False)] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="The cursor a page printed: the page after it.", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help=f"At most this many orders [default: {LIST_PAGE} as a table, all otherwise].", parser=_number("--limit", high=MAX_LIMIT), show_default=False)] = None,
    every: Annotated[bool, typer.Option("--all", help="Every order, not a page.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, whatever the width.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="table, json, jsonl, csv or tsv [default: table].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List orders, a page at a time, with their next deadline and what happens then.

    Example: coopctl list --status pending --due-before now+1d
    """
    from coopctl.service import list_page, walk_orders

    rt = runtime(ctx)
    query, given = _list_query(rt, status=status, terms=terms, liable=liable, merchant=merchant, creator=creator,
                               product=product, created_after=created_after, created_before=created_before,
                               due_before=due_before, overdue=overdue, sort=sort)
    fmt = output_format(fmt, as_json)
    if every and limit is not None:
        raise _invalid("--all and --limit cannot be given together: --all lists every order")
    size = None if every else limit if limit is not None else LIST_PAGE if fmt == "table" else None
    if size is None:
        _print_orders(walk_orders(rt.service, query, after=after), fmt=fmt, tz=rt.tz, wide=wide, now=rt.now)
        return
    page = list_page(rt.service, query, after=after, limit=size)
    _print_orders(page.orders, fmt=fmt, tz=rt.tz, wide=wide, footer=_list_footer(ctx, rt, page, given, fmt), now=rt.now)


def _invalid(message: str):
    from coopctl.errors import InvalidInput

    return InvalidInput(message)


def _list_query(rt: "Runtime", *, status, terms, liable, merchant, creator, product, created_after, created_before,
                due_before, overdue, sort):
    """The ListQuery of `list`'s options, checked (exit 2 when one is not valid), and the options
    as the next page's command repeats them (instants as resolved, with their offset)."""
    from coopctl import trust
    from coopctl.lifecycle import TERMS_OF, Party, Status, TermsState
    from coopctl.policy import iso
    from coopctl.store import LIST_SORTS, ListQuery

    given: list[str] = []
    known = [s.value for s in Status]
    statuses = None
    for s in status or []:
        if s not in known:
            raise _invalid(f"--status: unknown status {s[:40]!r} (known: {', '.join(sorted(known))})")
        given += ["--status", s]
    if status:
        statuses = tuple(dict.fromkeys(status))
    if terms is not None:
        if terms not in {t.value for t in TermsState}:
            raise _invalid(f"--terms: unknown terms state {terms[:40]!r} (known: {', '.join(t.value for t in TermsState)})")
        of_terms = tuple(s.value for s in Status if TERMS_OF[s] == terms)
        statuses = of_terms if statuses is None else tuple(s for s in statuses if s in of_terms)
        given += ["--terms", terms]
    if liable is not None:
        if liable not in {p.value for p in Party}:
            raise _invalid(f"--liable: must be merchant or creator, got {liable[:40]!r}")
        given += ["--liable", liable]
    ids = {}
    for option, value in (("--merchant", merchant), ("--creator", creator), ("--product", product)):
        if value is not None:
            if value != "*":
                trust.check_id(value[:-1] if value.endswith("*") else value, option.lstrip("-"))
            ids[option] = value
            given += [option, value]
    instants = {}
    for option, value in (("--created-after", created_after), ("--created-before", created_before), ("--due-before", due_before)):
        if value is not None:
            instants[option] = instant(value, rt, option)
            given += [option, iso(instants[option], rt.tz)]
    if overdue:
        given.append("--overdue")
    if sort is None:
        key, descending = ("deadline" if due_before is not None or overdue else
                           "created" if created_after is not None or created_before is not None else "id"), False
    else:
        key, descending = sort.removeprefix("-"), sort.startswith("-")
        if key not in LIST_SORTS:
            raise _invalid(f"--sort: unknown sort key {sort[:40]!r} (known: {', '.join(LIST_SORTS)}, each with - for descending)")
        given += ["--sort", sort]
    query = ListQuery(
        statuses=statuses, merchant=ids.get("--merchant"), creator=ids.get("--creator"), product=ids.get("--product"),
        liable=liable, created_after=instants.get("--created-after"), created_before=instants.get("--created-before"),
        due_before=instants.get("--due-before"), overdue_at=rt.now if overdue else None, sort=key, descending=descending,
    )
    return query, given


def _list_footer(ctx: typer.Context, rt: "Runtime", page, given: list[str], fmt: str) -> str | None:
    """How many of how many were shown and the exact command of the next page (None for a machine
    format that printed every match)."""
    import shlex

    if fmt != "table" and page.next_cursor is None:
        return None
    total = f"more than {page.total:,}" if page.more_than else f"{page.total:,}"
    line = f"{len(page.orders):,} of {total} order{'' if total == '1' else 's'}"
    if fmt == "table":
        line += f"; times in {getattr(rt.tz, 'key', rt.tz)}"
    if page.next_cursor is None:
        return line
    g: Globals = ctx.find_root().obj or Globals(None, None, None)
    words = ["coopctl"]
    for option, value in (("--db", g.db), ("--config", g.config)):
        if value and value != os.environ.get(f"COOPCTL_{option[2:].upper()}"):
            words += [option, value]
    words += ["list", *given]
    limit = ctx.params.get("limit")
    if limit is not None:
        words += ["--limit", str(limit)]
    if fmt != "table":
        words += ["--format", fmt]
    if ctx.params.get("wide"):
        words.append("--wide")
    words += ["--after", page.next_cursor]
    return f"{line}; next page: {shlex.join(words)}"


def _print_orders(orders, *, fmt: str, tz, wide: bool, footer: str | None = None, now: int | None = None) -> None:
    """The one place `list` prints, through the one printer (`render.print_records`): the table's
    footer is its last line on a terminal and goes to stderr when piped; a machine format that a
    limit cut says so on stderr."""
    from coopctl import render
    from coopctl.trust import shown

    records = (o.to_json(tz) for o in orders)
    table_footer = footer if fmt == "table" else None
    render.print_records(records, fmt=fmt, table=render.ORDER_TABLE, tz=tz, wide=wide, footer=table_footer, now=now)
    if footer and fmt != "table":
        sys.stdout.flush()
        sys.stderr.write(shown(footer) + "\n")


@command()
def notifications(
    ctx: typer.Context,
    order: Annotated[Optional[int], typer.Option("--order", help="Only this order's notifications.", parser=_number("--order", order_id=True), show_default=False)] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only those not yet marked sent.")] = False,
    mark_sent: Annotated[bool, typer.Option("--mark-sent", help="Mark the pending ones listed as sent (for the dispatcher).")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many notifications (not with --mark-sent).", parser=_number("--limit"), show_default=False)] = None,
    fmt: FormatOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The notification outbox (in-app messages and SMS), oldest first.

    Example: coopctl notifications --pending --mark-sent --json   # hand them to the dispatcher
    """
    from coopctl.service import iter_notification_rows
    from coopctl.service import notifications as outbox

    fmt = output_format(fmt, as_json)
    rt = runtime(ctx)
    from coopctl import render

    def show(rows) -> None:
        render.notifications_table(rows, rt.tz, wide=wide, fmt=fmt)

    if not mark_sent:  # read only: the rows stream from the database
        rows = iter_notification_rows(rt.service, order_id=order, pending=pending, limit=limit)
        render.notification_list(render.notification_records(rows, rt.tz), rt.tz, wide=wide, fmt=fmt)
        return
    if limit is not None:
        from coopctl.errors import InvalidInput

        raise InvalidInput("--limit: not with --mark-sent (every pending notification listed is marked sent)")
    # --mark-sent: what is handed out is written and flushed before it is marked sent
    outbox(rt.service, order_id=order, pending=True, mark_sent_at=instant(None, rt), report=report(show))


# ----------------------------------------------------------------------------- databases


@command()
def init(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Create an empty coopctl database (nothing happens if it already is one).

    Example: coopctl --db /srv/coop/coopctl.db init
    """
    from coopctl.service import initialise

    rt = runtime(ctx)
    where = rt.service.store.location.display

    @report
    def done(created: bool) -> None:
        if as_json:
            emit_json({"database": where, "created": created})
        else:
            from coopctl.trust import shown

            sys.stdout.write(f"{'created' if created else 'already a coopctl database:'} {shown(where)}\n")

    initialise(rt.service, report=done)


@command()
def doctor(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="Check for deadlines missed as of this instant [default: now].", show_default=False)] = None,
    grace: Annotated[str, typer.Option("--grace", help="How long past a deadline counts as missed by cron.")] = "10m",
    quick: Annotated[bool, typer.Option("--quick", help="Check the orders' hash chains only, without rebuilding each order through the rules.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a database: integrity, schema version, every order's hash chain and its row rebuilt
    from its events through the rules, old ids, missed deadlines (cron).

    Each finding says what to do. Exit 0 when healthy, 1 when something needs attention; only reads.

    Example (crontab, hourly): 0 * * * * coopctl doctor > /dev/null || mail -s coopctl ops
    """
    from coopctl import render
    from coopctl.doctor import Unhealthy, examine
    from coopctl.errors import InvalidInput
    from coopctl.policy import InvalidValue, parse_duration

    try:
        grace_us = parse_duration(grace, allow_zero=True)
    except InvalidValue as exc:
        raise InvalidInput(f"--grace: {exc}") from None
    rt = runtime(ctx)
    report = examine(rt.service.store, instant(now, rt, "--now"), rt.tz, grace=grace_us, quick=quick,
                     signing_key=bool(rt.settings.signing_key_path))
    if as_json:
        emit_json(report.to_json(rt.tz))
    else:
        render.doctor_report(report, rt.tz)
    if not report.healthy:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise Unhealthy(f"{first.message}{more}; {first.action}")


@command()
def demo(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Build a demonstration database (every status), run tick, and show the orders.

    Its scripted orders ship with coopctl; it never touches a database it did not create.

    Example: coopctl demo     # writes ./coopctl-demo.db; then: coopctl --db coopctl-demo.db list
    """
    from coopctl import render
    from coopctl.demo import run_demo
    from coopctl.errors import ReportFailed

    rt = runtime(ctx, default_db=DEMO_DB, config_db=False)
    orders = run_demo(rt.service, now=instant(None, rt))
    where = rt.service.store.location.display
    try:  # the demo builds a database of its own, and keeps it: its report is said afterwards
        if as_json:
            emit_json([o.to_json(rt.tz) for o in orders])
        else:
            render.demo_view(orders, rt.tz, where)
            sys.stdout.write("\n")
            for hint in _look_at_demo(ctx, where, orders).strip("\n").splitlines():
                render.line(hint)  # a view's line: fitted to the width like the rest
        sys.stdout.flush()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportFailed(reason, f"could not write the report ({reason}); the demo database {where} was built") from None


def _look_at_demo(ctx: typer.Context, where: str, orders) -> str:
    """How to look at the demo database: the commands to type next, with its --db."""
    import shlex

    from coopctl.trust import shown

    given = ctx.find_root().obj.db
    db = DEMO_DB if given is None else (where if "://" in given else given)  # a URL as displayed: no password
    first = min((o.id for o in orders), default=1)
    base = f"coopctl --db {shown(shlex.quote(db))}"
    return f"\nLook at it: {base} list\n            {base} show {first}    (also: history, notifications)\n"


# ----------------------------------------------------------------------------- export, replay, import

ExportFileArg = Annotated[str, typer.Argument(help="An export file written by `coopctl export` (- reads stdin).", show_default=False)]


def _read_export(file: str):
    """Parse an export file (or stdin for -); malformed -> InvalidInput (exit 2)."""
    from coopctl import exchange

    if file == "-":
        return exchange.parse_document(sys.stdin.buffer, source="stdin")
    return exchange.load(file)


@command()
def export(
    ctx: typer.Context,
    orders: Annotated[Optional[list[int]], typer.Argument(help="The order ids to export.", parser=_number("order id", order_id=True), show_default=False)] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Export every order.")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="Write the export to this file (atomically) instead of stdout.", show_default=False)] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="The instant recorded as exported_at (ISO 8601) [default: now].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write orders with their terms, policy, events and notifications as a versioned JSON document.

    Example: coopctl export 7 12 --out dispute-7.json    (or: coopctl export --all > all.json)
    """
    from coopctl import exchange, render
    from coopctl.errors import InvalidInput

    if not orders and not all_orders:
        raise InvalidInput("name the orders to export (coopctl export 7 12) or give --all")
    if orders and all_orders:
        raise InvalidInput("give order ids or --all, not both")
    rt = runtime(ctx)
    exported_at = instant(at, rt)
    # written as it is read, in chunks; a bar on stderr unless the document itself goes to the terminal
    with render.counted_progress("export", show=out is not None or not sys.stdout.isatty()) as (total_hint, advance):
        summary = exchange.write_export(
            rt.service, None if all_orders else orders, sys.stdout if out is None else out,
            exported_at=exported_at, tz=rt.tz, total_hint=total_hint, progress=advance,
        )
    if out is None:
        return
    if as_json:
        emit_json({"file": out, "exported_at": summary.exported_at, "orders": summary.ids.tolist()})
    else:
        render.export_done(out, len(summary.ids), summary.events, summary.notifications)


@command()
def replay(
    ctx: typer.Context,
    file: ExportFileArg,
    policy: Annotated[Optional[str], typer.Option("--policy", help="What if: replay the party actions under the [policy] of this TOML file (informational, exit 0).", show_default=False)] = None,
    public_key: Annotated[Optional[str], typer.Option("--public-key", help="First check the file's seal as `coopctl verify` does (a file holding the base64 key, or the key).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild every order of an export from its events with the rules; check hashes, timing and outcome.

    Exit 0 when every order is reproduced, 1 naming the order and event seq where one diverges,
    2 when the file is not a coopctl export. Nothing is written (a scratch database is used).

    Example: coopctl replay dispute-7.json    (what if: coopctl replay dispute-7.json --policy other.toml)
    """
    from coopctl import exchange, render
    from coopctl.config import load_settings
    from coopctl.errors import Refused

    rt = runtime(ctx)
    key = None
    if public_key is not None:
        from coopctl.seal import parse_public_key

        key = parse_public_key(public_key)
    export_file = _read_export(file)
    source = "stdin" if file == "-" else os.path.basename(file)
    if key is not None:  # SPEC section 6: the same checks as `verify`, before replaying
        from coopctl.seal import check_verification, verify_export

        check_verification(verify_export(export_file, key), require_sealed=False)
    if policy is not None:
        other = load_settings(policy, explicit=True).policy
        results = exchange.what_if(export_file, other)
        if as_json:
            emit_json([r.to_json(rt.tz) for r in results])
        else:
            render.what_if_report(results, rt.tz, os.path.basename(policy))
        return
    verdicts = exchange.replay(export_file)
    if as_json:
        emit_json([v.to_json(rt.tz) for v in verdicts])
    else:
        render.replay_report(verdicts, rt.tz, source)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        more = f" ({len(failed)} of {len(verdicts)} orders diverge)" if len(failed) > 1 else ""
        raise Refused(f"{failed[0].message}{more}; this history is not what the rules produce")


@command("import")
def import_(ctx: typer.Context, file: ExportFileArg, as_json: JsonOpt = False) -> None:
    """Load the orders of an export, keeping ids, events and hashes, after the same checks as replay.

    All or nothing: a history that does not replay, or an order id that already exists, is refused
    and nothing is written. Imported orders keep their own policy; `tick` treats them like any other.

    Example: coopctl --db support.db import dispute-7.json
    """
    from coopctl import exchange, render

    rt = runtime(ctx)
    export_file = _read_export(file)
    where = rt.service.store.location.display

    @report
    def done(verdicts) -> None:
        bar.close()  # the progress bar is gone before the report is drawn
        if as_json:
            emit_json({
                "database": where,
                "imported": [v.order_id for v in verdicts],
                "events": sum(len(v.exported.events) for v in verdicts),
                "notifications": sum(len(v.exported.notifications) for v in verdicts),
            })
        else:
            render.import_done(verdicts, where, rt.tz)

    with ExitStack() as bar:
        advance = bar.enter_context(render.progress(2 * len(export_file.orders), "import (replay, then write)"))
        exchange.import_orders(rt.service, export_file, progress=advance, report=done)


# ----------------------------------------------------------------------------- operations views


@command()
def board(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="The instant the board is drawn for [default: now].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """The operations overview: orders by status and terms, what is overdue, what falls due in the
    next hour, day and week, disputes, the outbox, and the last tick. Only reads indexes.

    Example: coopctl board      coopctl board --json | jq .overdue
    """
    from coopctl import views

    rt = runtime(ctx)
    result = views.board(rt.service, instant(now, rt, "--now"))
    if as_json:
        emit_json(result.to_json(rt.tz))
    else:
        from coopctl.render_views import board_table

        board_table(result, rt.tz)


@command("config")
def config_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The settings in effect and where each came from (default, the file, env COOPCTL_…, option).
    Secrets are never printed: only whether they are set (a key file: its path).

    Example: coopctl config      coopctl --config prod.toml config --json
    """
    from pathlib import Path

    from coopctl import views
    from coopctl.config import DEFAULT_CONFIG

    rt = runtime(ctx)
    root = ctx.find_root()
    g: Globals = root.obj or Globals(None, None, None)
    explicit = g.config is not None and g.config != ""
    config_file = g.config if explicit else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    if g.db is not None:
        db_origin = _origin(root, "db", "COOPCTL_DB")
    elif rt.settings.db_url and not rt.db_from_default:
        db_origin = config_file
    else:
        db_origin = "default"
    origins = views.Origins(
        config_file=config_file,
        config_origin=_origin(root, "config", "COOPCTL_CONFIG") if explicit else "default",
        db=rt.service.store.location.display,
        db_origin=db_origin,
        operator=rt.service.operator,
        operator_origin=_origin(root, "operator", "COOPCTL_OPERATOR") if g.operator is not None else "default",
        file_keys=views.file_keys(config_file),
    )
    entries = views.settings_view(rt.settings, origins)
    if as_json:
        emit_json(views.settings_json(entries))
    else:
        from coopctl.render_views import config_table

        config_table(entries)


def _origin(root: typer.Context, name: str, variable: str) -> str:
    """'option' or 'env VARIABLE': how a root option got its value (the parser tells; by the name
    of its ParameterSource, which Typer may take from a click of its own)."""
    source = root.get_parameter_source(name)
    return f"env {variable}" if getattr(source, "name", None) == "ENVIRONMENT" else "option"


# ----------------------------------------------------------------------------- sealed histories (SPEC section 6)


@command()
def keygen(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="The file to write the new private key to (PEM, mode 0600); never overwritten.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Make an Ed25519 signing key for `seal`; print its public key (publish that one).

    Example: coopctl keygen --out /srv/coop/seal.key    (then [evidence] signing_key = "seal.key")
    """
    from coopctl.seal import keygen as make_key

    public = make_key(out)
    if as_json:
        emit_json({"file": out, "public_key": public})
    else:
        sys.stdout.write(public + "\n")


@command()
def seal(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="The instant the tree head is signed at [default: now].", show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check", help="Recompute the log from the stored events and check every stored tree head; writes nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add every event not yet sealed to the log and sign its tree head; cron runs it after tick.

    Exit 2 without a signing key ([evidence] signing_key or COOPCTL_SIGNING_KEY). With --check:
    exit 1 naming the first tree head that no longer matches the events (history rewritten).

    Example (crontab): * * * * * coopctl tick --json >> tick.log && coopctl seal --json >> seal.log
    """
    from coopctl.seal import check_seal, seal_log
    from coopctl.trust import shown

    rt = runtime(ctx)
    if check:
        from coopctl.errors import Refused

        result = check_seal(rt.service)
        if as_json:
            emit_json(result.to_json())
        elif result.problem is None:
            sys.stdout.write(f"ok: {result.heads} tree heads match the {result.size} sealed events\n")
        if result.problem is not None:
            raise Refused(f"{result.problem}; restore the database from a backup, and keep this one for inspection")
        return
    at = instant(now, rt, "--now")

    @report
    def done(result) -> None:
        if as_json:
            emit_json(result.to_json())
        else:
            h = result.head
            what = f"{result.added} new" if result.added else "nothing new: the last tree head"
            sys.stdout.write(shown(f"sealed {h.size} events ({what}) at {h.to_json()['sealed_at']}: root {h.root}") + "\n")

    seal_log(rt.service, at, rt.settings.signing_key_path, report=done)


@command()
def verify(
    ctx: typer.Context,
    file: ExportFileArg,
    public_key: Annotated[str, typer.Option("--public-key", help="The platform's public key: a file holding its base64, or the base64 itself.", show_default=False)],
    require_sealed: Annotated[bool, typer.Option("--require-sealed", help="Exit 1 unless every event of every order is sealed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an export offline: hash chains, the tree head's signature, each order's inclusion proof.

    Exit 0 when all hold (printing up to which seq each order is sealed), 1 naming the tree head
    or the order and seq that fails, 2 when the file is not a coopctl export. Opens no database.

    Example: coopctl verify dispute-7.json --public-key coop.pub
    """
    from coopctl.seal import check_verification, parse_public_key, verify_export, verify_lines
    from coopctl.trust import shown

    key = parse_public_key(public_key)
    result = verify_export(_read_export(file), key)
    if as_json:
        emit_json(result.to_json())
    else:
        sys.stdout.write("".join(shown(line) + "\n" for line in verify_lines(result)))
    check_verification(result, require_sealed=require_sealed)


def main() -> None:
    """The console-script entry point: only the command named on the line is built, and the
    process ends without tearing the interpreter down.

    Typer turns every registered command into a click command (reading each signature and its
    annotations) before it parses anything; to run one command, one is enough. `coopctl --help`,
    a mistyped name and anything unusual get the whole app, as before."""
    _standard_streams()
    out = sys.stdout
    try:
        only_command(sys.argv[1:])()
        status = 0
    except SystemExit as done:
        status = done.code
        if status == 1 and sys.stdout is not out:  # click met EPIPE writing help (it wraps stdout, exits 1): the reader went away
            sys.stdout = out
            _discard_stdout()
            status = 0
    except BrokenPipeError:  # help or usage text whose reader went away
        _discard_stdout()
        status = 0
    except OSError as exc:  # help or usage text on a stdout that cannot take it (commands are `guarded`)
        _discard_stdout()
        status = _fail(6, f"could not write the output ({exc.strerror or exc}); the database was not changed").exit_code
    leave(status)


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
