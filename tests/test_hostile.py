"""Hostile and malformed input (SPEC section 2, "Exit codes and errors"): every case gets its
documented exit code, one clear line on stderr that starts with `error:` (or Typer's usage
format for what the parser itself refuses), never a traceback, and leaves the database byte for
byte as it was (its WAL too). Then Hypothesis fuzzes the option parsers and `import`.

The corpus: command-line values (timestamps, rates, budgets, ids with control characters or
10,000 characters, SQL and markup in ids, unknown orders), configuration files (broken TOML,
wrong types, unknown keys, zero or negative windows), export files (truncated, wrong types,
huge numbers, deep nesting) and database files (empty, random bytes, truncated, someone
else's SQLite file, a newer schema).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import string
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopctl.models import SCHEMA_VERSION
from conftest import OPERATOR
from dbtools import BASE, build, file_digest

TEN_THOUSAND = "x" * 10_000
FUTURE = "2026-12-30T20:00:00+08:00"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    says: str = ""  # the error line contains this
    db: str = "book"  # book | missing | empty | random | text | truncated | foreign | newer | alien-meta | no-version | no-orders | directory
    config: str | bytes | None = None  # written to {config}
    export: str | bytes | None = None  # written to {export}
    usage: bool = False  # refused by the command-line parser itself (Typer's usage format)


def C(id, *args, code=2, says="", **kw) -> Case:
    return Case(id, tuple(args), code, says, **kw)


def create(**override) -> tuple[str, ...]:
    options = {"--merchant": "商家A", "--creator": "达人小王", "--product": "P1", "--form": "live",
               "--commission": "12.5", "--latest-start": FUTURE, "--at": "2026-11-01T10:00:00+08:00"}
    options.update(override)
    return ("create", *[w for k, v in options.items() if v is not None for w in (k, v)])


# The book (tests/dbtools.build, 6 orders): 1 effective, 2 cancel_requested, 3 live, 4 delivered,
# 5 review_failed, 6 pending; merchant of order N is 商家-{N % 7}, creator 达人-{N % 11}.
ACCEPT_6 = ("accept", "6", "--creator", "达人-6")
AT_OK = "2026-11-03T00:00:00+08:00"  # after every order of the book was created, before its deadlines

COMMAND_LINE = [
    # timestamps
    C("at-words", *ACCEPT_6, "--at", "yesterday", says="--at: expected an ISO 8601 timestamp"),
    C("at-empty", *ACCEPT_6, "--at", "", says="--at: expected an ISO 8601 timestamp"),
    C("at-month-13", *ACCEPT_6, "--at", "2026-13-01T10:00", says="--at"),
    C("at-hour-25", *ACCEPT_6, "--at", "2026-11-01T25:00", says="--at"),
    C("at-offset-25h", *ACCEPT_6, "--at", "2026-11-01T10:00+25:00", says="--at"),
    C("at-year-10000", *ACCEPT_6, "--at", "10000-01-01T00:00", says="--at"),
    C("at-before-1970", *ACCEPT_6, "--at", "1969-12-31T23:59:59Z", says="out of range"),
    C("at-10000-chars", *ACCEPT_6, "--at", "2" * 10_000, says="--at"),
    C("at-nul", *ACCEPT_6, "--at", AT_OK[:16] + "\x00", says="--at"),
    C("at-backwards", *ACCEPT_6, "--at", "2026-11-01T00:00:00+08:00", code=1, says="time cannot go backwards"),
    C("now-garbage", "tick", "--now", "soon", says="--now: expected an ISO 8601 timestamp"),
    C("due-before-garbage", "list", "--due-before", "1st of May", says="--due-before"),
    C("latest-start-before-creation", *create(**{"--latest-start": "2026-10-01T00:00"}), says="must be after the creation time"),
    C("latest-start-garbage", *create(**{"--latest-start": "Dec 30"}), says="--latest-start"),
    # rates and budgets
    C("commission-words", *create(**{"--commission": "twelve"}), says="commission must be a plain decimal"),
    C("commission-zero", *create(**{"--commission": "0"}), says="commission must be more than 0"),
    C("commission-over-100", *create(**{"--commission": "100.01"}), says="at most 100"),
    C("commission-negative", *create(**{"--commission": "-5"}), says="commission"),
    C("commission-exponent", *create(**{"--commission": "1e2"}), says="commission"),
    C("commission-three-places", *create(**{"--commission": "12.345"}), says="at most two places"),
    C("commission-nan", *create(**{"--commission": "NaN"}), says="commission"),
    C("commission-infinity", *create(**{"--commission": "Infinity"}), says="commission"),
    C("commission-comma", *create(**{"--commission": "12,5"}), says="commission"),
    C("budget-negative", *create(**{"--ad-budget": "-1"}), says="ad budget"),
    C("budget-too-large", *create(**{"--ad-budget": "1000000000000"}), says="ad budget"),
    C("budget-400-digits", *create(**{"--ad-budget": "9" * 400}), says="ad budget"),
    C("budget-thousands-separator", *create(**{"--ad-budget": "5,000"}), says="ad budget"),
    # ids
    C("merchant-empty", *create(**{"--merchant": ""}), says="merchant id must be non-empty"),
    C("merchant-nul", *create(**{"--merchant": "商家\x00A"}), says="control character"),
    C("merchant-newline", *create(**{"--merchant": "商家\nA"}), says="control character"),
    C("merchant-ansi-escape", *create(**{"--merchant": "\x1b[31mred\x1b[0m"}), says="control character"),
    C("merchant-line-separator", *create(**{"--merchant": "a\u2028b"}), says="U+2028"),
    C("merchant-10000-chars", *create(**{"--merchant": TEN_THOUSAND}), says="at most 128"),
    C("creator-129-chars", *create(**{"--creator": "达" * 129}), says="at most 128"),
    C("product-tab", *create(**{"--product": "P\t1"}), says="control character"),
    C("product-10000-chars", *create(**{"--product": TEN_THOUSAND}), says="at most 128"),
    C("form-uppercase", *create(**{"--form": "LIVE"}), says="form must be 'live' or 'video'"),
    C("idempotency-key-control", *create(**{"--idempotency-key": "k\x07"}), says="control character"),
    C("note-10000-chars", *create(**{"--note": TEN_THOUSAND}), says="at most 2000"),
    C("creator-sql", "accept", "6", "--creator", "x'; DROP TABLE orders; --", "--at", AT_OK, code=1, says="is not the creator of order 6"),
    C("creator-markup", "accept", "6", "--creator", "[bold red]达人-6[/]", "--at", AT_OK, code=1, says="'[bold red]达人-6[/]' is not the creator"),
    C("merchant-sql-wrong-party", "withdraw", "6", "--merchant", "1 OR 1=1", "--at", AT_OK, code=1, says="is not the merchant"),
    C("reason-10000-chars", "reject", "6", "--creator", "达人-6", "--reason", TEN_THOUSAND, "--at", AT_OK, says="at most 2000"),
    C("reason-nul", "reject", "6", "--creator", "达人-6", "--reason", "no\x00", "--at", AT_OK, says="control character"),
    C("evidence-escape", "deliver", "1", "--creator", "达人-1", "--evidence", "\x1b]8;;http://evil\x07x", "--at", AT_OK, says="control character"),
    C("operator-empty", "--operator", "", "list", says="--operator"),
    C("operator-bell", "--operator", "ops\x07", "list", says="--operator"),
    C("operator-300-chars", "--operator", "o" * 300, "list", says="--operator"),
    # orders and options
    C("order-unknown", "accept", "999", "--creator", "达人-6", code=3, says="no order 999"),
    C("order-unknown-show", "show", "424242", code=3, says="no order 424242"),
    C("order-unknown-export", "export", "31337", code=3, says="31337"),
    C("order-zero", "show", "0", says="order id must be from 1 to 9007199254740991, got 0"),
    C("order-negative", "show", "-1", usage=True),
    C("order-words", "show", "one", says="order id must be a whole number written in digits 0-9"),
    C("order-sql", "show", "1; DROP TABLE orders", says="order id must be a whole number"),
    C("order-2-to-the-70", "show", str(2**70), says="order id must be from 1 to 9007199254740991"),
    C("review-neither", "review", "4", "--merchant", "商家-4", says="exactly one of --pass or --fail"),
    C("review-fail-no-reason", "review", "4", "--merchant", "商家-4", "--fail", says="needs --reason"),
    C("cancel-both-parties", "cancel-request", "1", "--merchant", "商家-1", "--creator", "达人-1", says="exactly one party"),
    C("accept-no-creator", "accept", "6", says="--creator"),
    C("status-unknown", "list", "--status", "lost", says="unknown status 'lost'"),
    C("limit-zero", "list", "--limit", "0", says="--limit must be from 1"),
    C("tick-batch-zero", "tick", "--batch", "0", says="--batch must be from 1 to 1000000"),
    C("doctor-grace-words", "doctor", "--grace", "a while", says="--grace"),
    C("export-nothing", "export", says="name the orders to export"),
    C("export-both", "export", "1", "--all", says="not both"),
    C("unknown-option", "list", "--colour", usage=True),
    C("unknown-command", "delete", "1", usage=True),
    C("db-empty-location", "--db", "", "list", says="the database location is empty"),
    C("db-unknown-driver", "--db", "nosuchdb://x/y", "list", says="cannot use the database URL"),
    C("db-missing-folder", "--db", "{tmp}/no/such/folder/x.db", "init", code=5, says="does not exist"),
]

CONFIG = [
    C("config-broken-toml", "--config", "{config}", "list", config="[database\nurl = 1", says="is not valid TOML"),
    C("config-not-utf8", "--config", "{config}", "list", config=b"[policy]\naccept_window = \"\xff\xfe\"\n", says="not UTF-8"),
    C("config-unknown-section", "--config", "{config}", "list", config="[polcy]\naccept_window = \"3d\"\n", says="unknown section '[polcy]'"),
    C("config-unknown-key", "--config", "{config}", "list", config="[policy]\naccept_windw = \"3d\"\n", says="accept_windw"),
    C("config-unknown-database-key", "--config", "{config}", "list", config="[database]\npath = \"x.db\"\n", says="database.path"),
    C("config-window-number", "--config", "{config}", "list", config="[policy]\naccept_window = 3\n", says="accept_window"),
    C("config-window-zero", "--config", "{config}", "list", config="[policy]\nreview_window = \"0s\"\n", says="review_window"),
    C("config-window-negative", "--config", "{config}", "list", config="[policy]\nmakeup_window = \"-7d\"\n", says="makeup_window"),
    C("config-window-huge", "--config", "{config}", "list", config="[policy]\naccept_window = \"99999999999999999999d\"\n", says="accept_window"),
    C("config-window-array", "--config", "{config}", "list", config="[policy]\naccept_window = [\"3d\"]\n", says="accept_window"),
    C("config-max-failed-words", "--config", "{config}", "list", config="[policy]\nmax_failed_reviews = \"two\"\n", says="max_failed_reviews"),
    C("config-max-failed-negative", "--config", "{config}", "list", config="[policy]\nmax_failed_reviews = -1\n", says="max_failed_reviews"),
    C("config-max-failed-float", "--config", "{config}", "list", config="[policy]\nmax_failed_reviews = 1.5\n", says="max_failed_reviews"),
    C("config-max-failed-bool", "--config", "{config}", "list", config="[policy]\nmax_failed_reviews = true\n", says="max_failed_reviews"),
    C("config-reminder-words", "--config", "{config}", "list", config="[reminders]\nbefore_accept_deadline = \"soon\"\n", says="before_accept_deadline"),
    C("config-busy-timeout-words", "--config", "{config}", "list", config="[database]\nbusy_timeout = \"forever\"\n", says="busy_timeout"),
    C("config-busy-timeout-negative", "--config", "{config}", "list", config="[database]\nbusy_timeout = -1\n", says="busy_timeout"),
    C("config-url-empty", "--config", "{config}", "list", config="[database]\nurl = \"\"\n", says="database.url"),
    C("config-url-number", "--config", "{config}", "list", config="[database]\nurl = 5\n", says="database.url"),
    C("config-timezone-unknown", "--config", "{config}", "list", config="[display]\ntimezone = \"Mars/Olympus_Mons\"\n", says="Mars/Olympus_Mons"),
    C("config-timezone-path", "--config", "{config}", "list", config="[display]\ntimezone = \"../../etc/passwd\"\n", says="display.timezone"),
    C("config-section-not-table", "--config", "{config}", "list", config="policy = 5\n", says="'policy' must be a table"),
    C("config-deep-nesting", "--config", "{config}", "list", config="[a" + ".b" * 500 + "]\nx = 1\n", says="unknown section"),
    C("config-missing", "--config", "{tmp}/nowhere.toml", "list", says="does not exist"),
    C("config-directory", "--config", "{tmp}", "list", says="config"),
]


def _export(orders, **top) -> str:
    return json.dumps({"format": "coopctl-export", "version": 1, "exported_at": "2026-12-01T00:00:00+08:00", "orders": orders, **top})


EXPORTS = [
    C("export-empty-file", "import", "{export}", export=b"", says="not JSON"),
    C("export-truncated", "import", "{export}", export="VALID[:half]", says="not JSON"),
    C("export-not-json", "import", "{export}", export="hello", says="not JSON"),
    C("export-array", "import", "{export}", export="[]", says="expected a JSON object"),
    C("export-wrong-format", "import", "{export}", export=json.dumps({"format": "other", "version": 1}), says="'format' is 'other'"),
    C("export-newer-version", "import", "{export}", export=json.dumps({"format": "coopctl-export", "version": 99}), says="unsupported export version 99"),
    C("export-version-string", "import", "{export}", export=json.dumps({"format": "coopctl-export", "version": "1"}), says="unsupported export version"),
    C("export-orders-object", "import", "{export}", export=_export({"1": {}}), says="'orders' must be an array"),
    C("export-order-id-string", "import", "{export}", export='VALID:id="7"', says="id"),
    C("export-order-id-huge", "import", "{export}", export="VALID:id=" + "9" * 400, says="too large"),
    C("export-number-1e400", "import", "{export}", export="VALID:failed_reviews=1e400", says="too large"),
    C("export-nan", "import", "{export}", export="VALID:failed_reviews=NaN", says="NaN is not a number JSON allows"),
    C("export-deep-nesting", "import", "{export}", export="[" * 100_000 + "]" * 100_000, says="nested too deeply"),
    C("export-deep-nesting-in-data", "import", "{export}", export="VALID:note=" + "[" * 50_000 + "]" * 50_000, says="not a coopctl export"),
    C("export-not-utf8", "import", "{export}", export=b"\xff\xfe{\x00}", says="not UTF-8"),
    C("export-lone-surrogate", "import", "{export}", export='{"format": "coopctl-export", "x": "\\ud800"}', says="not valid Unicode"),
    C("export-events-missing", "import", "{export}", export="VALID:events=None", says="events"),
    C("export-hash-forged", "import", "{export}", export="VALID:forge", code=1, says="seq 1"),
    C("export-order-twice", "import", "{export}", export="VALID:twice", says="appears twice"),
    C("export-id-exists", "import", "{export}", export="VALID", code=1, says="already exists"),
    C("export-missing-file", "import", "{tmp}/nowhere.json", says="nowhere.json"),
    C("export-directory", "import", "{tmp}", says="is a directory"),
    C("replay-truncated", "replay", "{export}", export="VALID[:half]", says="not JSON"),
    C("import-into-new-db-refused", "--db", "{tmp}/new.db", "import", "{export}", export="VALID:forge", code=1, says="nothing was imported"),
]

DATABASES = [
    C("db-missing-list", "list", db="missing", code=5, says="no database at"),
    C("db-missing-accept", *ACCEPT_6, db="missing", code=5, says="no database at"),
    C("db-empty-file-list", "list", db="empty", code=5, says="not a coopctl database"),
    C("db-empty-file-tick", "tick", db="empty", code=5, says="not a coopctl database"),
    C("db-random-list", "list", db="random", code=5, says="is not a SQLite database"),
    C("db-random-create", *create(), db="random", code=5, says="is not a SQLite database"),
    C("db-random-init", "init", db="random", code=5, says="is not a SQLite database"),
    C("db-random-doctor", "doctor", db="random", code=5, says="is not a SQLite database"),
    C("db-text-file-show", "show", "1", db="text", code=5, says="is not a SQLite database"),
    C("db-truncated-list", "list", db="truncated", code=5, says="database"),
    C("db-truncated-tick", "tick", "--now", FUTURE, db="truncated", code=5, says="database"),
    C("db-truncated-export", "export", "--all", db="truncated", code=5, says="database"),
    C("db-foreign-list", "list", db="foreign", code=5, says="not a coopctl database"),
    C("db-foreign-init", "init", db="foreign", code=5, says="refusing to touch it"),
    C("db-foreign-create", *create(), db="foreign", code=5, says="refusing to touch it"),
    C("db-foreign-import", "import", "{export}", export="VALID", db="foreign", code=5, says="refusing to touch it"),
    C("db-newer-list", "list", db="newer", code=5, says=f"schema version {SCHEMA_VERSION + 1}, newer than this coopctl understands ({SCHEMA_VERSION})"),
    C("db-newer-tick", "tick", db="newer", code=5, says=f"schema version {SCHEMA_VERSION + 1}"),
    C("db-newer-create", *create(), db="newer", code=5, says=f"schema version {SCHEMA_VERSION + 1}"),
    C("db-alien-meta", "list", db="alien-meta", code=5, says="not a coopctl database"),
    C("db-no-version", "list", db="no-version", code=5, says="no readable schema version"),
    C("db-no-orders-table", "list", db="no-orders", code=5, says="not a coopctl database"),
    C("db-directory", "list", db="directory", code=5, says="is a directory"),
]

CORPUS = COMMAND_LINE + CONFIG + EXPORTS + DATABASES


def test_the_corpus_has_at_least_60_cases_in_every_family(capsys):
    assert len(CORPUS) >= 60
    assert min(len(COMMAND_LINE), len(CONFIG), len(EXPORTS), len(DATABASES)) >= 10
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    with capsys.disabled():
        print(f"\nhostile corpus: {len(CORPUS)} cases ({len(COMMAND_LINE)} command line, {len(CONFIG)} configuration, "
              f"{len(EXPORTS)} export files, {len(DATABASES)} database files), {len(THROUGH_THE_ENTRY_POINT)} also through the entry point")


# --------------------------------------------------------------------------- preparing a case


def valid_export(book: Path, tmp: Path) -> dict:
    """An export of order 6 of the book, written by `coopctl export`."""
    from typer.testing import CliRunner

    from coopctl.cli import app

    out = tmp / "order-6.json"
    env = {k: None for k in os.environ if k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": str(book), "COOPCTL_OPERATOR": OPERATOR, "NO_COLOR": "1"})
    result = CliRunner().invoke(app, ["export", "6", "--out", str(out), "--at", "2026-12-01T00:00:00+08:00"], env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def export_text(spec: str | bytes, book_doc: dict) -> str | bytes:
    if isinstance(spec, bytes) or not spec.startswith("VALID"):
        return spec
    doc = json.loads(json.dumps(book_doc))
    order = doc["orders"][0]
    rest = spec[len("VALID"):]
    if rest == "[:half]":
        text = json.dumps(doc, ensure_ascii=False)
        return text[: len(text) // 2]
    if rest == ":forge":
        order["events"][0]["operator"] = "mallory"
    elif rest == ":twice":
        doc["orders"].append(order)
    elif rest.startswith(":"):
        key, _, raw = rest[1:].partition("=")
        text = json.dumps(doc, ensure_ascii=False)
        marker = json.dumps({key: "__HOLE__"})[1:-1]  # "key": "__HOLE__"
        order[key] = "__HOLE__"
        text = json.dumps(doc, ensure_ascii=False)
        return text.replace(marker, f'"{key}": {"null" if raw == "None" else raw}', 1)
    return json.dumps(doc, ensure_ascii=False)


def prepare_db(kind: str, path: Path, book: Path) -> None:
    if kind == "book":
        path.write_bytes(book.read_bytes())
    elif kind == "missing":
        pass
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(random.Random(7).randbytes(64 * 1024))
    elif kind == "text":
        path.write_text("these are not the orders you are looking for\n")
    elif kind == "truncated":
        data = book.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "directory":
        path.mkdir()
    else:
        if kind == "foreign":
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("INSERT INTO customers (name) VALUES ('someone else''s data')")
        else:
            path.write_bytes(book.read_bytes())
            conn = sqlite3.connect(path)
            if kind == "newer":
                conn.execute("UPDATE coopctl_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
            elif kind == "alien-meta":
                conn.execute("UPDATE coopctl_meta SET value = 'someone-else' WHERE key = 'application'")
            elif kind == "no-version":
                conn.execute("DELETE FROM coopctl_meta WHERE key = 'schema_version'")
            elif kind == "no-orders":
                conn.execute("PRAGMA foreign_keys = OFF")
                conn.execute("DROP TABLE orders")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("book") / "book.db"
    build(path, 6)
    return path


@pytest.fixture(scope="module")
def book_doc(book, tmp_path_factory) -> dict:
    return valid_export(book, tmp_path_factory.mktemp("doc"))


def snapshot(path: Path):
    if path.is_dir():
        return "directory"
    return file_digest(path) if path.exists() else "missing"


def check_error(result, case: Case) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    if case.usage:
        assert result.stderr.startswith("Usage: coopctl"), result.stderr
        assert "Error" in result.stderr
        return
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert case.says in lines[0], (case.says, lines[0])
    assert len(lines[0]) < 1200, "the message must stay one readable line"


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_hostile_input_gets_its_exit_code_one_line_and_changes_nothing(case: Case, invoke, tmp_path, db_path, book, book_doc):
    prepare_db(case.db, db_path, book)
    files = {"{tmp}": str(tmp_path), "{db}": str(db_path)}
    if case.config is not None:
        config = tmp_path / "hostile.toml"
        config.write_bytes(case.config if isinstance(case.config, bytes) else case.config.encode())
        files["{config}"] = str(config)
    if case.export is not None:
        export = tmp_path / "hostile.json"
        text = export_text(case.export, book_doc)
        export.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        files["{export}"] = str(export)
    args = [files.get(a, a) for a in case.args]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    watched = [db_path, tmp_path / "new.db"]
    before = [snapshot(p) for p in watched]
    result = invoke(*args)
    assert result.exit_code == case.code, (result.exit_code, result.stderr)
    check_error(result, case)
    assert [snapshot(p) for p in watched] == before


# A few through the installed entry point: the same answers from a real process.
THROUGH_THE_ENTRY_POINT = ["at-words", "merchant-10000-chars", "order-unknown", "order-zero", "config-broken-toml",
                           "export-deep-nesting", "db-random-list", "db-truncated-tick", "db-newer-list", "db-foreign-init"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c.id in THROUGH_THE_ENTRY_POINT], ids=lambda c: c.id)
def test_the_installed_command_answers_the_same(case: Case, run_coopctl, tmp_path, db_path, book, book_doc):
    prepare_db(case.db, db_path, book)
    files = {"{tmp}": str(tmp_path)}
    if case.config is not None:
        config = tmp_path / "hostile.toml"
        config.write_text(case.config)
        files["{config}"] = str(config)
    if case.export is not None:
        export = tmp_path / "hostile.json"
        export.write_text(export_text(case.export, book_doc))
        files["{export}"] = str(export)
    before = snapshot(db_path)
    result = run_coopctl(*[files.get(a, a) for a in case.args])
    assert result.returncode == case.code, result.stderr
    check_error(result, case)
    assert snapshot(db_path) == before


def test_sql_and_markup_in_ids_are_stored_and_shown_exactly_as_typed(invoke, db_path):
    hostile = {"--merchant": "商家'); DROP TABLE orders; --", "--creator": "[bold red]达人[/bold red]",
               "--product": "<script>alert(1)</script>", "--note": "[link=http://evil.example]click[/link] %s %n {0}"}
    result = invoke(*create(**hostile), "--json")
    assert result.exit_code == 0, result.stderr
    order = json.loads(result.stdout)
    assert (order["merchant"], order["creator"], order["products"], order["note"]) == (
        hostile["--merchant"], hostile["--creator"], [hostile["--product"]], hostile["--note"],
    )
    shown = invoke("show", str(order["id"])).stdout
    for text in hostile.values():
        assert text in shown  # rich markup is not interpreted: what was typed is what is shown
    assert hostile["--creator"] in invoke("list").stdout
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    finally:
        conn.close()


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=int(os.environ.get("COOPCTL_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_the_parsers_never_raise_anything_but_their_own_error():
    from coopctl.errors import InvalidInput
    from coopctl.lifecycle import check_decimal, check_id
    from coopctl.policy import InvalidValue, parse_duration, parse_instant
    from decimal import Decimal
    from zoneinfo import ZoneInfo

    @given(st.text(max_size=80) | st.from_regex(r"-?\d{1,20}[dhms]?(\d{1,20}[dhms])*", fullmatch=True))
    @FUZZ
    def durations(text):
        try:
            value = parse_duration(text, allow_zero=True)
        except InvalidValue as exc:
            assert "\n" not in str(exc)
        else:
            assert 0 <= value <= 3650 * 86_400 * 10**6

    @given(st.text(max_size=80) | st.from_regex(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:\d{2}|Z)?", fullmatch=True))
    @FUZZ
    def instants(text):
        try:
            parse_instant(text, ZoneInfo("Asia/Shanghai"))
        except InvalidValue:
            pass

    @given(st.text(max_size=40) | st.from_regex(r"-?\d{0,20}(\.\d{0,5})?", fullmatch=True) | st.integers() | st.decimals(allow_nan=True))
    @FUZZ
    def decimals(value):
        try:
            number = check_decimal(value, "commission", minimum=Decimal(0), maximum=Decimal(100), open_minimum=True)
        except InvalidInput:
            pass
        else:
            assert 0 < number <= 100 and number == number.quantize(Decimal("0.01"))

    @given(st.text(max_size=300))
    @FUZZ
    def ids(value):
        try:
            assert check_id(value, "merchant") == value and 0 < len(value) <= 128
        except InvalidInput:
            pass

    durations()
    instants()
    decimals()
    ids()


OPTION_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=140) | st.sampled_from(
    ["", "0", "-1", "1e9", "NaN", "12.5", "100", "2026-11-01T10:00", "2026-02-30", "9" * 200, "'; DROP TABLE orders; --", "[red]x[/]"]
)


@given(merchant=OPTION_TEXT, commission=OPTION_TEXT, budget=OPTION_TEXT, latest=OPTION_TEXT, at=OPTION_TEXT)
@FUZZ
def test_create_with_random_option_text_is_0_or_2_never_a_traceback(invoke, db_path, book, merchant, commission, budget, latest, at):
    if not db_path.exists():
        prepare_db("book", db_path, book)
    before = snapshot(db_path)
    result = invoke(*create(**{"--merchant": merchant, "--commission": commission, "--ad-budget": budget,
                               "--latest-start": latest, "--at": at}))
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        assert result.stderr.startswith(("error: ", "Usage: ")), result.stderr
        if result.stderr.startswith("error: "):
            assert result.stderr.count("\n") == 1
        assert snapshot(db_path) == before


def _mutations(doc: dict):
    """Strategies that break a valid export in the ways files get broken."""
    text = json.dumps(doc, ensure_ascii=False)
    scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
    json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(doc, ())

    def replace_at(path, value):
        copy = json.loads(text)
        if not path:
            return value
        node = copy
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return copy

    replaced = st.builds(lambda p, v: json.dumps(replace_at(p, v), ensure_ascii=False), st.sampled_from(paths), json_values)
    cut = st.integers(min_value=0, max_value=len(text)).map(lambda n: text[:n])
    flipped = st.tuples(st.integers(min_value=0, max_value=len(text) - 1), st.characters(blacklist_categories=("Cs",))).map(
        lambda t: text[: t[0]] + t[1] + text[t[0] + 1:]
    )
    whole = json_values.map(json.dumps)
    return replaced | cut | flipped | whole


def test_import_of_random_documents_and_mutated_exports_is_0_1_or_2_never_a_traceback(tmp_path_factory, book, book_doc):
    from typer.testing import CliRunner

    from coopctl.cli import app

    runner = CliRunner()
    work = tmp_path_factory.mktemp("import-fuzz")
    target = work / "target.db"
    export = work / "fuzz.json"
    codes = []

    @given(_mutations(book_doc))
    @FUZZ
    def fuzz(text):
        for suffix in ("", "-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        target.write_bytes(book.read_bytes())
        conn = sqlite3.connect(target)
        conn.execute("PRAGMA foreign_keys = OFF")
        for table in ("notifications", "events", "order_products", "orders"):
            conn.execute(f"DELETE FROM {table} WHERE {'id' if table == 'orders' else 'order_id'} = 6")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        before = snapshot(target)
        export.write_text(text, encoding="utf-8")
        env = {k: None for k in os.environ if k.startswith("COOPCTL_")}
        env.update({"COOPCTL_DB": str(target), "COOPCTL_OPERATOR": OPERATOR, "NO_COLOR": "1"})
        result = runner.invoke(app, ["import", str(export)], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        codes.append(result.exit_code)
        assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
        assert "Traceback" not in result.stderr
        if result.exit_code:
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
            assert snapshot(target) == before

    fuzz()
    assert set(codes) - {0}, "the mutations should break most exports"
