"""SPEC section 4, "Tables fit" and "Formats": every table at 80 and 200 columns, piped (COLUMNS)
and on a real terminal (a pty; tmux when installed), with Chinese ids, 128-character ids, very
long notes and hostile ids; every machine format parsed back; the machine formats stream.

Widths are measured in display cells (rich.cells.cell_len: a Chinese character is two).
"""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from conftest import OPERATOR, base_env, coopctl_executable, in_pty

T0 = "2026-11-01T10:00:00+08:00"
LATEST = "2026-11-20T20:00:00+08:00"
NOW = "2026-11-02T10:00:00+08:00"
LONG_CHINESE_ID = "龘" * 128  # 256 cells: wider than any terminal here; the one record allowed to wrap
LONG_ASCII_ID = "c" * 128
HOSTILE = ("[bold]M[/bold]", ":smile:<b>", "'; DROP TABLE orders; --")
LONG_NOTE = ("双十二预热直播，" * 120) + "\nsecond line\tafter a tab"
REASON = "档期已满，" * 300
EVIDENCE_NAME = "直播截图-" * 15 + ".png"  # 75 characters, 150 cells, 199 bytes (a file name holds 255)
INSTANT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BOX = set("─━│┃╭╮╰╯┌┐└┘├┤┬┴┼═║")
STATUSES = ("pending", "effective", "rejected", "live", "cancel_requested")


def _runner_env(db: Path, **extra) -> dict:
    env = {k: None for k in os.environ if k.startswith("COOPCTL_")}
    env.update({"COOPCTL_DB": str(db), "COOPCTL_OPERATOR": OPERATOR, "NO_COLOR": "1", "COLUMNS": None})
    env.update(extra)
    return env


def cli(db: Path, *args, columns: int | None = None, check: bool = True):
    from coopctl.cli import app

    env = _runner_env(db, COLUMNS=None if columns is None else str(columns))
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if check:
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> dict:
    """Five orders: Chinese ids and a very long note; 128-character ids (one Chinese: 256
    cells); hostile ids; a long rejection reason; a live order. Plus an export of them, a
    what-if policy, and the ids each table must show whole."""
    base = tmp_path_factory.mktemp("tables")
    db = base / "book.db"
    cwd = os.getcwd()
    os.chdir(base)
    try:
        def create(merchant, creator, product="P1", note=None, at=T0):
            args = ["create", "--merchant", merchant, "--creator", creator, "--product", product, "--form", "live",
                    "--commission", "12.5", "--latest-start", LATEST, "--at", at]
            if note is not None:
                args += ["--note", note]
            cli(db, *args)

        create("商家A-美妆旗舰店", "达人小王", note=LONG_NOTE)
        create(LONG_CHINESE_ID, LONG_ASCII_ID, product="P-" + "长" * 60)
        create(HOSTILE[0], HOSTILE[1], product=HOSTILE[2], note="[red]not markup[/red] :smile:")
        create("商家B", "达人阿珍")
        create("商家C", "达人大刘")
        cli(db, "accept", 1, "--creator", "达人小王", "--at", "2026-11-01T11:00:00+08:00")
        cli(db, "reject", 4, "--creator", "达人阿珍", "--reason", REASON, "--at", "2026-11-01T11:00:00+08:00")
        cli(db, "accept", 5, "--creator", "达人大刘", "--at", "2026-11-01T11:00:00+08:00")
        cli(db, "go-live", 5, "--creator", "达人大刘", "--at", "2026-11-01T12:00:00+08:00")
        cli(db, "cancel-request", 1, "--merchant", "商家A-美妆旗舰店", "--reason", REASON, "--at", "2026-11-01T12:00:00+08:00")
        proofs = []  # evidence files: a long Chinese name, markup in a name, the same content twice
        for name, content in ((EVIDENCE_NAME, b"x" * 3_000_000), ("[bold]proof[red] :smile:.png", b"p"), ("copy.png", b"p")):
            (base / name).write_bytes(content)
            proofs += ["--evidence-file", str(base / name)]
        cli(db, "deliver", 5, "--creator", "达人大刘", *proofs, "--at", "2026-11-01T12:30:00+08:00")
        cli(db, "export", "--all", "--out", str(base / "book.json"), "--at", "2026-11-01T13:00:00+08:00")
        (base / "other.toml").write_text('[policy]\naccept_window = "1d"\ncancel_response_window = "12h"\n')
    finally:
        os.chdir(cwd)
    return {"db": db, "dir": base, "export": base / "book.json", "policy": base / "other.toml"}


# every table, as (name, args); {export}/{policy}/{fresh} are filled in per run
TABLES = [
    ("list", ["list"]),
    ("show", ["show", "1"]),
    ("show-long-ids", ["show", "2"]),
    ("show-hostile", ["show", "3"]),
    ("history", ["history", "4"]),
    ("notifications", ["notifications"]),
    ("replay", ["replay", "{export}"]),
    ("what-if", ["replay", "{export}", "--policy", "{policy}"]),
    ("import", ["--db", "{fresh}", "import", "{export}"]),
    ("doctor", ["doctor", "--now", NOW, "--grace", "2d"]),  # healthy: the book's outbox is a day old, never dispatched
    ("demo", ["--db", "{fresh}", "demo"]),
    ("tick", ["tick", "--now", NOW, "--dry-run"]),
    ("evidence", ["evidence", "5"]),
    ("tick-list", ["tick", "--now", NOW, "--dry-run", "--list"]),
    ("board", ["board", "--now", NOW]),
    ("config", ["config"]),
    ("show-as-of", ["show", "3", "--as-of", NOW]),
    ("show-hostile-as-of", ["show", "2", "--as-of", NOW]),
]
LISTS = {"list", "history", "notifications", "evidence"}


def _args(book, args, tmp_path) -> list[str]:
    fresh = tmp_path / "fresh.db"
    return [a.format(export=book["export"], policy=book["policy"], fresh=fresh) for a in args]


def _check_fits(text: str, width: int, what: str) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= width, f"{what}: {cell_len(line)} cells > {width}: {line!r}"


TRUNCATED_INSTANT = re.compile(r"(?:^|\s)(?:\d{4}-\d\d-\d\d[ T]?[\d:]*|\d{1,4}(?:-\d{0,2}){0,2})$")


def _check_never_cut(text: str, name: str) -> None:
    """Ids, statuses and instants are never cut: no `…` ends a piece of an instant or of a
    status, the 128-character Chinese id is there whole (folded over lines) or not at all
    (notifications quote it inside their text, which is free text)."""
    for line in text.splitlines():
        for match in re.finditer("…", line):
            before = line[: match.start()]
            assert not TRUNCATED_INSTANT.search(before), (name, line)
            cell = re.search(r"(?:^|  )(\S+)$", before)  # a whole cell (free text may quote a status)
            word = cell.group(1) if cell else ""
            assert not any(s.startswith(word) and s != word for s in STATUSES if len(word) >= 3), (name, line)
    if name != "notifications":
        count = text.count("龘")
        assert count % 128 == 0, (name, count)  # whole wherever it is shown


def _check_piped_rules(text: str, name: str) -> None:
    lines = text.splitlines()
    assert not BOX & set(text), f"{name}: box-drawing rules when piped"
    assert all(line == line.rstrip() for line in lines), f"{name}: trailing spaces"
    assert not lines or lines[0] != "", f"{name}: starts with a blank line"
    assert "\n\n\n" not in text, f"{name}: parts are separated by single blank lines"
    if name in LISTS:
        assert "" not in lines, f"{name}: a list has no blank lines"


HEADERS = {"list": "id", "history": "seq", "notifications": "id", "evidence": "seq"}


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("name,args", TABLES, ids=[t[0] for t in TABLES])
def test_every_table_fits_the_width_when_piped(book, tmp_path, name, args, width):
    result = cli(book["db"], *_args(book, args, tmp_path), columns=width)
    out = result.stdout
    assert out.strip(), name
    _check_fits(out, width, name)
    _check_never_cut(out, name)
    _check_piped_rules(out, name)
    if name in LISTS:
        assert out.splitlines()[0].split()[0] == HEADERS[name], "a list's first line is its header"


def _one_line_per_record(out: str, ids: list[int]) -> None:
    rows = out.splitlines()[1:]
    starts = [line.split()[0] for line in rows if line[:1] != " " or line.strip()[:1].isdigit()]
    assert [int(s) for s in starts if s.isdigit()] == ids


@pytest.mark.parametrize("width", [80, 200])
def test_list_keeps_each_order_on_one_line_except_an_id_too_wide_for_the_whole_width(book, width):
    out = cli(book["db"], "list", columns=width).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "status", "deadline"]  # the most important columns stay
    record_lines = [line for line in lines[1:] if re.match(r"\s*\d+\s", line)]
    assert [int(line.split()[0]) for line in record_lines] == [1, 2, 3, 4, 5]
    extra = len(lines) - 1 - len(record_lines)
    merchant_shown = "merchant" in lines[0].split()
    if merchant_shown:  # order 2's 256-cell merchant folds over lines; nothing else does
        assert extra >= 1 and out.count("龘") == 128
    else:
        assert extra == 0


def test_at_80_columns_the_least_important_columns_go_first(book):
    header = cli(book["db"], "list", columns=80).stdout.splitlines()[0].split()
    from coopctl.render import ORDER_TABLE

    order = ORDER_TABLE.order_of_importance()
    assert header == order[: len(header)], "columns are dropped from the least important"
    wide = cli(book["db"], "list", columns=500).stdout.splitlines()[0].split()
    assert len(wide) > len(header)


def test_free_text_is_shortened_with_an_ellipsis_and_wide_shows_it_whole(book):
    narrow = cli(book["db"], "show", "1", columns=80).stdout
    note_line = next(line for line in narrow.splitlines() if line.startswith("note"))
    assert note_line.endswith("…") and cell_len(note_line) <= 80
    whole = cli(book["db"], "show", "1", "--wide", columns=80).stdout
    assert LONG_NOTE.replace("\n", "\\n").replace("\t", "\\t") in whole  # escaped, and whole
    unlimited = cli(book["db"], "show", "1").stdout  # piped without COLUMNS: no width limit
    assert LONG_NOTE.replace("\n", "\\n").replace("\t", "\\t") in unlimited


def test_wide_shows_every_column_whatever_the_width(book):
    from coopctl.render import ORDER_TABLE

    out = cli(book["db"], "list", "--wide", columns=80).stdout
    assert out.splitlines()[0].split() == [c.name for c in ORDER_TABLE.columns]
    assert LONG_NOTE.replace("\n", "\\n").replace("\t", "\\t") in out


def test_hostile_ids_are_shown_as_typed_never_as_markup(book):
    out = cli(book["db"], "list", columns=200).stdout + cli(book["db"], "show", "3", columns=200).stdout
    for text in HOSTILE[:2]:
        assert text in out


def test_the_evidence_table_shows_names_as_typed_and_a_sha256_prefix_that_get_takes(book, tmp_path):
    import hashlib

    narrow = cli(book["db"], "evidence", "5", columns=80).stdout
    rows = narrow.splitlines()[1:]
    assert len(rows) == 3 and all(line.split()[:2] == ["4", "delivered"] for line in rows)
    prefix = hashlib.sha256(b"p").hexdigest()[:16]
    assert "[bold]proof[red] :smile:.png" in narrow and prefix in narrow and "2.9 MiB" in narrow
    wide = cli(book["db"], "evidence", "5", "--wide").stdout
    assert EVIDENCE_NAME in wide and hashlib.sha256(b"p").hexdigest() in wide
    out = tmp_path / "p.png"
    assert cli(book["db"], "evidence", "5", "--get", prefix, "--out", str(out)).exit_code == 0
    assert out.read_bytes() == b"p"


def test_relative_times_beside_deadlines_in_list_and_show(book):
    out = cli(book["db"], "list", columns=200).stdout
    assert "due" in out.splitlines()[0].split()
    assert re.search(r"(in|overdue) \d+[dhm]", out)
    show = cli(book["db"], "show", "5", columns=80).stdout
    assert re.search(r"deadline\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \((in|overdue) [^)]+\)", show)


def test_piped_list_footer_goes_to_stderr(book):
    result = cli(book["db"], "list")
    assert "5 orders;" in result.stderr and "5 orders;" not in result.stdout


def test_relative_time_words():
    from coopctl.render import relative

    h = 3_600_000_000
    assert relative(51 * h, 0) == "in 2d 3h"
    assert relative(0, 240 * h) == "overdue 10d"
    assert relative(45 * 60_000_000, 0) == "in 45m"
    assert relative(10, 10) == "due now"


def test_fit_drops_then_shortens_then_folds_only_ids():
    from coopctl.printer import Column, fit

    cols = [Column("id", "id", 0, None), Column("status", "status", 0, None), Column("note", "text", 2, None),
            Column("extra", "status", 5, None)]
    headers = ["id", "status", "note", "extra"]
    rows = [["12", "pending", "x" * 100, "y" * 30]]
    layout = fit(cols, headers, rows, 40, False)
    assert [c.name for c in layout.columns] == ["id", "status", "note"] and layout.total() == 40
    layout = fit(cols, headers, [["商" * 40, "pending", "n", "e"]], 40, False)
    assert layout.total() <= 40 and layout.widths[0] < 80  # only the id gives way
    assert fit(cols, headers, rows, 40, True).widths == [2, 7, 100, 30]  # --wide: everything


def test_a_column_that_yields_is_dropped_rather_than_cut_a_more_important_text():
    """doctor's "what to do" goes before its finding is cut; kept when both fit whole, and when
    the finding is cut anyway (at 40 cells: 20 each would still cut it)."""
    from coopctl.printer import Column, fit

    cols = [Column("check", "status", 0, None), Column("finding", "text", 1, None),
            Column("what to do", "text", 2, None, yields=True)]
    headers = ["check", "finding", "what to do"]
    rows = [["hash_chain", "f" * 60, "w" * 30]]
    assert [c.name for c in fit(cols, headers, rows, 80, False).columns] == ["check", "finding"]
    assert fit(cols, headers, rows, 80, False).widths == [10, 60]
    assert [c.name for c in fit(cols, headers, rows, 120, False).columns] == headers
    plain = [Column(c.name, c.kind, c.priority, None) for c in cols]  # without yields: both cut
    assert fit(plain, headers, rows, 80, False).widths == [10, 46, 20]


def test_doctor_at_80_columns_shows_each_finding_whole(tmp_path, run_coopctl):
    """The finding, instants included, is whole at 80 columns; what to do is on stderr's error line."""
    db = str(tmp_path / "d.db")
    assert run_coopctl("--db", db, "demo", env={"COLUMNS": "200"}).returncode == 0
    result = run_coopctl("--db", db, "doctor", "--grace", "1000d", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["check", "finding"]
    tick_line = next(line for line in lines if line.startswith("last_tick"))
    assert re.search(r"finished at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00", tick_line), tick_line
    assert all(cell_len(line) <= 80 for line in lines)


# --------------------------------------------------------------------------- a real terminal


def run_in_pty(args: list[str], columns: int, env: dict) -> str:
    out, code = in_pty(args, columns=columns, rows=60, env=env)
    assert code == 0, out.decode("utf-8", "replace")
    return ANSI.sub("", out.decode("utf-8", "replace")).replace("\r\n", "\n")


def _terminal_env(db: Path, colour: bool = False) -> dict:
    env = base_env(db)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    env["TERM"] = "xterm-256color"
    if colour:
        env.pop("NO_COLOR", None)
    return env


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("name,args", TABLES, ids=[t[0] for t in TABLES])
def test_every_table_fits_a_real_terminal(book, tmp_path, name, args, width):
    """A pty of `width` columns, no COLUMNS: the terminal's own width; colours on (escape codes
    stripped before measuring)."""
    out = run_in_pty([coopctl_executable(), *_args(book, args, tmp_path)], width, _terminal_env(book["db"], colour=True))
    assert out.strip(), name
    _check_fits(out, width, name)
    _check_never_cut(out, name)


def test_show_panel_does_not_fold_at_80_columns(book, tmp_path):
    out = run_in_pty([coopctl_executable(), "show", "1"], 80, _terminal_env(book["db"]))
    panel = out.split("╰")[0].splitlines()
    labels = [line[2:].split("  ")[0].strip() for line in panel if line.startswith("│")]
    assert "" not in labels, "a panel field continued on a second line"
    assert all(cell_len(line) <= 80 for line in panel)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI: apt-get install -y tmux)")
@pytest.mark.parametrize("command", [["list"], ["show", "1"]], ids=["list", "show"])
def test_list_and_show_in_an_80_column_tmux_window(book, tmp_path, command):
    socket = str(tmp_path / "tmux.sock")
    env = _terminal_env(book["db"])
    script = tmp_path / "run.sh"
    exports = "".join(f"export {k}={shlex_quote(v)}\n" for k, v in env.items() if k.isidentifier())
    script.write_text(f"{exports}{coopctl_executable()} {' '.join(command)} > /dev/tty; tmux -S {socket} wait-for -S done\n")
    subprocess.run(["tmux", "-S", socket, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "60",
                    f"sh {script}; sleep 30"], check=True, env={**env, "TMUX": ""}, timeout=30)
    try:
        subprocess.run(["tmux", "-S", socket, "wait-for", "done"], check=True, timeout=30)
        screen = _tmux("-S", socket, "capture-pane", "-p", "-J", "-S", "-60")
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, timeout=30)
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines, screen
    assert all(cell_len(line.rstrip()) <= 80 for line in lines), screen
    if command == ["list"]:
        assert any(line.strip().startswith("id") for line in lines) and "5 orders" in screen
    else:
        assert "order 1" in screen and "timeline" in screen


def shlex_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


# --------------------------------------------------------------------------- formats


def test_json_jsonl_csv_tsv_give_back_the_same_orders(book):
    db = book["db"]
    records = json.loads(cli(db, "list", "--json").stdout)
    assert json.loads(cli(db, "list", "--format", "json").stdout) == records
    assert [json.loads(line) for line in cli(db, "list", "--format", "jsonl").stdout.splitlines()] == records
    from coopctl.printer import csv_safe as safe
    from coopctl.printer import flat, tsv_unescaped

    def compact(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    expected = [{k: safe(flat(v, compact)) for k, v in r.items()} for r in records]
    rows = list(csv.DictReader(io.StringIO(cli(db, "list", "--format", "csv").stdout)))
    assert rows == expected and list(rows[0]) == list(records[0])  # the JSON's key order
    tsv = cli(db, "list", "--format", "tsv").stdout.splitlines()
    assert len(tsv) == len(records) + 1, "a tsv record is one line (newlines and tabs escaped)"
    keys = tsv[0].split("\t")
    assert keys == list(records[0])
    assert [dict(zip(keys, map(tsv_unescaped, line.split("\t")))) for line in tsv[1:]] == expected


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv"])
def test_notifications_and_history_take_every_format(book, fmt):
    db = book["db"]
    for args in (["notifications"], ["history", "1"]):
        whole = json.loads(cli(db, *args, "--json").stdout)
        out = cli(db, *args, "--format", fmt).stdout
        if fmt == "json":
            assert json.loads(out) == whole
        elif fmt == "jsonl":
            assert [json.loads(line) for line in out.splitlines()] == whole
        else:
            assert len(list(csv.reader(io.StringIO(out), delimiter="," if fmt == "csv" else "\t"))) == len(whole) + 1


def test_format_json_and_json_agree_and_conflicts_are_refused(book):
    bad = cli(book["db"], "list", "--format", "xml", check=False)
    assert bad.exit_code == 2 and bad.stderr.startswith("error:") and "xml" in bad.stderr
    both = cli(book["db"], "list", "--json", "--format", "csv", check=False)
    assert both.exit_code == 2 and both.stderr.startswith("error:")
    assert cli(book["db"], "list", "--json", "--format", "json").stdout == cli(book["db"], "list", "--json").stdout


def test_streamed_json_is_the_same_text_as_a_whole_array():
    from coopctl.printer import write_json
    from coopctl.render import json_text

    nested = {"a": [1, {"b": "商\u202e", "c": []}, [], {}], "d": {"e": 1.5, "f": True, "g": None}, "h": "\n\t\"\\"}
    for records in ([], [{"a": 1}], [{}], [nested, {"a": None}] * 700):
        stream = io.StringIO()
        write_json(iter(records), _Utf8(stream))
        assert stream.getvalue() == json_text(records) + "\n"


class _Utf8:
    encoding = "utf-8"

    def __init__(self, inner):
        self.inner = inner

    def write(self, text):
        return self.inner.write(text)


class _Sink:
    encoding = "utf-8"

    def write(self, text):
        return len(text)


def _records(n: int):
    for i in range(n):
        yield {"id": i, "merchant": f"商家{i}", "products": ["P1", "P2"], "policy": {"a": "3d"}, "note": "x" * 50}


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv"])
def test_machine_formats_stream_memory_flat_in_the_number_of_records(fmt):
    from coopctl.render import print_records

    print_records(_records(10), fmt=fmt, table=None, tz=None, wide=False, stream=_Sink())  # imports done before measuring
    peaks = []
    gc.disable()  # garbage that only the cycle collector frees would count: none may be left per record
    try:
        for n in (2_000, 20_000):
            tracemalloc.start()
            assert print_records(_records(n), fmt=fmt, table=None, tz=None, wide=False, stream=_Sink()) == n
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    finally:
        gc.enable()
    assert peaks[1] < peaks[0] * 1.5 + 50_000, peaks  # ten times the records, not ten times the memory


# --------------------------------------------------------------------------- listings from stored rows


def test_records_made_from_stored_rows_equal_the_orders_own_json(book):
    """`list` in a machine format writes records straight from the rows; they must be exactly
    `Order.to_json(tz)` (values and key order), and `json_lines()` exactly their compact JSON."""
    from zoneinfo import ZoneInfo

    from coopctl.config import DEFAULT_CONFIG, load_settings
    from coopctl.render import notification_json, notification_records, order_records
    from coopctl.rows import order_from_row
    from coopctl.service import Service, iter_notification_rows, iter_order_rows
    from coopctl.store import Store, locate

    settings = load_settings(DEFAULT_CONFIG, explicit=False)
    service = Service(Store(locate(str(book["db"]))), settings, OPERATOR)
    try:
        from coopctl.store import FULL_ORDER_COLUMNS, LISTED_COLUMNS, ORDER_COLUMNS

        rows = list(iter_order_rows(service))
        with service.store.read() as tx:
            full = tx.order_rows(0, 1000)
        assert rows == [tuple(r[FULL_ORDER_COLUMNS.index(c)] for c in LISTED_COLUMNS) for r in full]
        encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        for tz in (settings.tz, ZoneInfo("UTC"), ZoneInfo("America/New_York")):
            made = list(order_records(rows, tz))
            assert made == [order_from_row(row[:len(ORDER_COLUMNS)]).to_json(tz) for row in full]
            assert [list(m) for m in made] == [list(order_from_row(row[:len(ORDER_COLUMNS)]).to_json(tz)) for row in full]
            assert list(order_records(rows, tz).json_lines()) == [encode(m) for m in made]
            with service.store.read() as tx:
                stored = tx.notification_rows()
            made = list(notification_records(iter_notification_rows(service), tz))
            assert made == [notification_json(r, tz) for r in stored]
            assert list(notification_records(iter_notification_rows(service), tz).json_lines()) == [encode(m) for m in made]
    finally:
        service.store.dispose()


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "UTC", "America/New_York", "Asia/Kolkata"])
def test_fast_instants_are_written_as_iso_writes_them(zone):
    import random
    from zoneinfo import ZoneInfo

    from coopctl.policy import iso
    from coopctl.render import _iso_writer

    tz, rng = ZoneInfo(zone), random.Random(7)
    write = _iso_writer(tz)
    instants = [rng.randrange(0, 253_402_300_799_000_000) for _ in range(3000)]
    instants += [t - t % 1_000_000 for t in instants] + [0, 946_684_800_000_000, 4_102_444_800_000_000 - 1]
    assert [write(t) for t in instants] == [iso(t, tz) for t in instants]
    assert write(None) is None
    quoted = _iso_writer(tz, quoted=True)
    assert [quoted(t) for t in instants] == [json.dumps(iso(t, tz)) for t in instants] and quoted(None) == "null"


LIST_QUERIES = [
    {}, {"sort": "created", "descending": True}, {"sort": "deadline"}, {"statuses": ("pending", "live")}, {"merchant": "商家*"},
    {"creator": "达人阿珍"}, {"product": "P1"}, {"product": "P-*"}, {"liable": "merchant"},
]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv"])
@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
def test_list_from_stored_rows_prints_what_the_orders_print_byte_for_byte(book, tmp_path, fmt, zone):
    """`list` in a machine format reads stored rows and makes its records from them (the fast
    path: no Order per row); what it prints must be, byte for byte, what the Orders' own JSON
    printed through the same printer gives: every format, several queries and pages (a cursor),
    on a Unicode and an ASCII stream, with a stored row holding characters a terminal would act on
    (a forged row: they must come out escaped exactly as before)."""
    import shutil
    import sqlite3
    import sys
    from zoneinfo import ZoneInfo

    from coopctl.cli.reading import _print_orders
    from coopctl.config import DEFAULT_CONFIG, load_settings
    from coopctl.service import Service, list_page, walk_orders
    from coopctl.store import ListQuery, Store, locate

    db = tmp_path / "forged.db"
    shutil.copyfile(book["db"], db)
    with sqlite3.connect(db) as conn:  # stored values no command would write: escapes, bidi, zero-width
        conn.execute("UPDATE orders SET creator = ?, note = ?, idempotency_key = ? WHERE id = 4",
                     ("达人\x1b[31m红\u202e", "note\x07\u200b\n", "key\x9b"))
        conn.execute("UPDATE orders SET delivery_mode = ? WHERE id = 5", ("mo\x1bde",))

    class Ascii(io.StringIO):
        encoding = "ascii"

    tz = ZoneInfo(zone)
    service = Service(Store(locate(str(db))), load_settings(DEFAULT_CONFIG, explicit=False), OPERATOR)
    try:
        def printed(orders, rows: bool, stream_type) -> str:
            stream = stream_type()
            real, sys.stdout = sys.stdout, stream
            try:
                _print_orders(orders, fmt=fmt, tz=tz, wide=False, rows=rows)
            finally:
                sys.stdout = real
            return stream.getvalue()

        checked = 0
        for fields in LIST_QUERIES:
            query = ListQuery(**fields)
            second = list_page(service, query, after=None, limit=2).next_cursor
            for after in (None, second):
                for stream_type in (io.StringIO, Ascii):
                    fast = printed(walk_orders(service, query, after=after, rows=True), True, stream_type)
                    today = printed(walk_orders(service, query, after=after), False, stream_type)
                    assert fast == today, (fields, after)
                    page_fast = list_page(service, query, after=after, limit=3, rows=True)
                    page_today = list_page(service, query, after=after, limit=3)
                    assert printed(page_fast.orders, True, stream_type) == printed(page_today.orders, False, stream_type)
                    assert (page_fast.total, page_fast.next_cursor) == (page_today.total, page_today.next_cursor)
                    checked += fast.count("\n") > 1
        assert checked  # not every query came back empty
        everything = printed(walk_orders(service, ListQuery(), after=None, rows=True), True, io.StringIO)
        assert "\x1b" not in everything and "\u202e" not in everything and "\x07" not in everything
        assert "\\u001b" in everything
    finally:
        service.store.dispose()


def test_jsonl_on_a_stream_that_cannot_take_utf8_is_ascii_and_the_same_records(book):
    from coopctl.printer import write_jsonl
    from coopctl.render import order_records

    class Ascii(io.StringIO):
        encoding = "ascii"

    from coopctl.config import DEFAULT_CONFIG, load_settings
    from coopctl.service import Service, iter_order_rows
    from coopctl.store import Store, locate

    settings = load_settings(DEFAULT_CONFIG, explicit=False)
    service = Service(Store(locate(str(book["db"]))), settings, OPERATOR)
    try:
        rows = list(iter_order_rows(service))
        fast, plain = Ascii(), Ascii()
        write_jsonl(order_records(rows, settings.tz), fast)
        write_jsonl(iter(list(order_records(rows, settings.tz))), plain)
    finally:
        service.store.dispose()
    assert fast.getvalue().isascii() and fast.getvalue() == plain.getvalue()
    assert [json.loads(line)["merchant"] for line in fast.getvalue().splitlines()][:3] == ["商家A-美妆旗舰店", LONG_CHINESE_ID, HOSTILE[0]]


def test_notifications_at_80_columns_keep_their_text_beside_chinese_ids(book):
    """The outbox table drops the delivery details first and keeps id, order, state, instant and
    the text (shortened) at 80 columns, whatever the recipients' ids."""
    from coopctl.render import NOTIFICATION_TABLE

    out = cli(book["db"], "notifications", columns=80).stdout
    header = out.splitlines()[0].split()
    assert header[:5] == ["id", "order", "state", "at", "text"]
    assert header == NOTIFICATION_TABLE.order_of_importance()[: len(header)]
    assert any("商家A" in line and "…" in line for line in out.splitlines()[1:])
    wide = cli(book["db"], "notifications", "--wide").stdout.splitlines()[0]
    assert wide.split()[-2:] == ["last", "error"] and "attempts" in wide
