"""Nothing reaches a terminal raw (SPEC section 7, third rule): stored text is shown as text.

A database is filled with hostile text the way an old database or a forger would hold it: the
rows are rewritten by SQL (bypassing every input check), and the hash chains are recomputed so
that the histories still verify. Ids, notes, evidence, reasons, operators and notification texts
then carry a clear-screen (ESC [2J), an OSC 52 clipboard write (ESC ] 52 ; c ; … BEL), a C1 CSI
(U+009B), a right-to-left override (U+202E), a zero-width space (U+200B), a byte-order mark
(U+FEFF), a carriage return and a NUL.

Every command that prints them (`show`, `history`, `list`, `notifications`, `replay`, `doctor`,
one-line reports and error messages) is run piped (CliRunner and the installed entry point) and
on a terminal (a pseudo-terminal for stdout and one for stderr, colours on): the bytes written
never hold the data's ESC, BEL, C1 or NUL, nor U+202E/U+200B/U+FEFF raw, and do hold the escaped
forms (`\\x1b`, `\\u202e`). Rich's own colour codes on a terminal are fine; the data's are not, so
the terminal checks look for the data's sequences (`[2J`, `]52;` after an ESC byte). JSON output
is the same JSON value with those characters written as `\\uXXXX`.
"""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import tty
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import OPERATOR, base_env, coopctl_executable

# What the data holds: each piece is something a terminal would obey.
CLEAR = "\x1b[2J"
OSC52 = "\x1b]52;c;aGk=\x07"
C1_CSI = "\x9b2J"
RLO, ZWSP, BOM = "\u202e", "\u200b", "\ufeff"
HOSTILE = CLEAR + OSC52 + RLO + ZWSP + BOM + C1_CSI + "\r" + "\x00"
# What it must look like once shown.
ESCAPED = ["\\x1b[2J", "\\x1b]52;c;aGk=\\x07", "\\u202e", "\\u200b", "\\ufeff", "\\x9b2J", "\\r", "\\x00"]

MARK = "MARK"  # placeholders typed cleanly, then rewritten into HOSTILE by SQL
FORBIDDEN_RAW = [RLO, ZWSP, BOM, "\x9b", "\x07", "\x00"]


# --------------------------------------------------------------------------- the hostile database


def _cli(db: Path, *args: str, env: dict | None = None):
    from coopctl.cli import app

    full = {k: None for k in os.environ if k.startswith("COOPCTL_")}
    full.update({"COOPCTL_DB": str(db), "COOPCTL_OPERATOR": OPERATOR, "NO_COLOR": "1", "COLUMNS": "400"})
    full.update(env or {})
    return CliRunner().invoke(app, list(args), env=full)


def _forge(db: Path, only: dict | None = None) -> None:
    """Every MARK in every text column becomes HOSTILE (JSON-escaped inside JSON columns), then
    each order's chain is recomputed so that it verifies: what a forger with write access leaves."""
    from coopctl.lifecycle import GENESIS_HASH, event_hash

    as_json = json.dumps(HOSTILE, ensure_ascii=False)[1:-1]
    conn = sqlite3.connect(db)
    try:
        for table, columns, json_columns in (
            ("orders", ("merchant", "creator", "note", "idempotency_key"), ("products",)),
            ("events", ("actor", "operator"), ("data",)),
            ("notifications", ("recipient", "text"), ()),
        ):
            if only is not None:
                columns = [c for c in columns if c in only.get(table, ())]
                json_columns = [c for c in json_columns if c in only.get(table, ())]
            for column in columns:
                conn.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (MARK, MARK + HOSTILE))
            for column in json_columns:
                conn.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (MARK, MARK + as_json))
        for (order_id,) in conn.execute("SELECT id FROM orders").fetchall():
            previous = GENESIS_HASH
            rows = conn.execute("SELECT seq, kind, at, actor, operator, data FROM events WHERE order_id = ? ORDER BY seq",
                                (order_id,)).fetchall()
            for seq, kind, at, actor, operator, data in rows:
                digest = event_hash(order_id, seq, kind, at, actor, operator, json.loads(data), previous)
                conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE order_id = ? AND seq = ?",
                             (previous, digest, order_id, seq))
                previous = digest
            conn.execute("UPDATE orders SET last_hash = ? WHERE id = ?", (previous, order_id))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """Order 1: created, accepted, delivered with evidence, failed review with a reason; order 2:
    pending. Every id, note, evidence, reason, operator and notification text holds HOSTILE."""
    # the folder's name is hostile too: `doctor` and error messages print the database's path
    folder = tmp_path_factory.mktemp("hostile") / ("book" + CLEAR + RLO + ZWSP)
    folder.mkdir()
    db = folder / "hostile.db"
    op = {"COOPCTL_OPERATOR": "ops" + MARK}
    for order in ("1", "2"):
        done = _cli(db, "create", "--merchant", "商家" + MARK, "--creator", "达人" + MARK, "--product", "P" + MARK,
                    "--form", "live", "--commission", "12.5", "--latest-start", "2026-11-20T20:00:00+08:00",
                    "--note", "note" + MARK, "--idempotency-key", f"key{order}" + MARK,
                    "--at", "2026-11-01T10:00:00+08:00", env=op)
        assert done.exit_code == 0, done.stderr
    for args in (("accept", "1", "--creator", "达人" + MARK, "--at", "2026-11-01T11:00:00+08:00"),
                 ("deliver", "1", "--creator", "达人" + MARK, "--evidence", "https://v.example/" + MARK,
                  "--at", "2026-11-01T12:00:00+08:00"),
                 ("review", "1", "--merchant", "商家" + MARK, "--fail", "--reason", "why" + MARK,
                  "--at", "2026-11-01T13:00:00+08:00")):
        done = _cli(db, *args, env=op)
        assert done.exit_code == 0, done.stderr
    export = _cli(db, "export", "1", "--out", str(folder / "clean.json"), "--at", "2026-11-02T00:00:00+08:00")
    assert export.exit_code == 0, export.stderr
    _forge(db)
    return db


@pytest.fixture(scope="module")
def hostile_export(hostile, tmp_path_factory) -> Path:
    """An export of the forged order 1, as `coopctl export` writes it (chains verify)."""
    out = tmp_path_factory.mktemp("export") / "forged.json"
    done = _cli(hostile, "export", "1", "--out", str(out), "--at", "2026-11-02T00:00:00+08:00")
    assert done.exit_code == 0, done.stderr
    return out


def test_the_forged_database_really_holds_the_hostile_text(hostile):
    conn = sqlite3.connect(hostile)
    try:
        merchant, note = conn.execute("SELECT merchant, note FROM orders WHERE id = 1").fetchone()
        operators = {r[0] for r in conn.execute("SELECT operator FROM events")}
        texts = [r[0] for r in conn.execute("SELECT text FROM notifications")]
    finally:
        conn.close()
    assert HOSTILE in merchant and HOSTILE in note and operators == {"ops" + MARK + HOSTILE}
    assert any(HOSTILE in t for t in texts)


# --------------------------------------------------------------------------- what is checked


def assert_nothing_raw(data: bytes, *, terminal: bool = False) -> None:
    """No byte or character of HOSTILE as a terminal would obey it. On a terminal rich writes its
    own colour codes (ESC [ … m): then the data's sequences are looked for after an ESC."""
    text = data.decode("utf-8", "replace")
    for ch in FORBIDDEN_RAW:
        assert ch not in text, (f"U+{ord(ch):04X} reached the output raw", text[:2000])
    assert "\r" not in text, "a carriage return reached the output raw"
    if terminal:
        for sequence in ("\x1b[2J", "\x1b]52", "\x1b]"):
            assert sequence not in text, (f"{sequence!r} reached the terminal", text[:2000])
    else:
        assert "\x1b" not in text, ("ESC reached the output raw", text[:2000])


def assert_shown_escaped(data: bytes, *, pieces=("\\x1b[2J", "\\u202e")) -> None:
    text = data.decode("utf-8", "replace")
    for piece in pieces:
        assert piece in text, (f"{piece!r} should be shown", text[:3000])


# The table views: each prints the hostile text (the first two pieces at least, intact; `list`
# shortens its id columns to fit, so only the first piece is sure to be seen whole there).
VIEWS = [
    ("show", ["show", "1"]),
    ("history", ["history", "1"]),
    ("list", ["list"]),
    ("notifications", ["notifications"]),
    ("notifications-of-order", ["notifications", "--order", "1"]),
    ("doctor", ["doctor", "--now", "2026-11-02T00:00:00+08:00"]),
]


# What must be seen escaped beyond "nothing raw": `list` shortens its id columns; `doctor` prints
# the database's path (hostile too) and its findings; JSON escapes as \uXXXX.
PIECES = {"list": ("\\x1b[2J",), "show-json": ("\\u202e", "\\u001b[2J")}


@pytest.mark.parametrize("name, args", VIEWS, ids=[v[0] for v in VIEWS])
def test_piped_views_show_stored_control_and_format_characters_escaped(hostile, name, args):
    done = _cli(hostile, *args)
    assert done.exit_code in (0, 1), done.stderr  # doctor may find the forged rows wanting: it still prints
    assert "Traceback" not in done.stderr
    assert_nothing_raw(done.stdout_bytes)
    assert_nothing_raw(done.stderr_bytes)
    assert_shown_escaped(done.stdout_bytes, pieces=PIECES.get(name, ("\\x1b[2J", "\\u202e")))


def test_every_piece_of_the_hostile_text_is_shown_in_its_escaped_form(hostile):
    shown = _cli(hostile, "show", "1").stdout
    for piece in ESCAPED:
        assert piece in shown, piece


def test_a_note_with_newlines_stays_on_one_line_of_the_table(hostile):
    conn = sqlite3.connect(hostile)
    try:
        conn.execute("UPDATE orders SET note = 'line one\nline two\tTAB' WHERE id = 2")
        conn.commit()
    finally:
        conn.close()
    out = _cli(hostile, "show", "2").stdout
    assert "line one\\nline two\\tTAB" in out
    assert not any(line.strip().startswith("line two") for line in out.splitlines())


def test_one_line_reports_escape_the_stored_ids_they_name(hostile, tmp_path):
    db = tmp_path / "copy.db"
    db.write_bytes(hostile.read_bytes())
    done = _cli(db, "deliver", "1", "--creator", "达人" + MARK + HOSTILE, "--at", "2026-11-01T14:00:00+08:00")
    # B's input checks may refuse a party id holding control characters (exit 2); either way
    # the answer, on stdout or stderr, is escaped.
    assert done.exit_code in (0, 2), done.stderr
    assert_nothing_raw(done.stdout_bytes)
    assert_nothing_raw(done.stderr_bytes)
    if done.exit_code == 0:
        assert_shown_escaped(done.stdout_bytes)


def test_a_report_of_an_order_created_from_stored_ids_is_escaped(tmp_path):
    from coopctl import render
    from coopctl.lifecycle import Action, Party, Terms, act, create
    from coopctl.policy import Policy, ReminderOffsets
    from decimal import Decimal
    from zoneinfo import ZoneInfo
    import io
    import contextlib

    terms = Terms("M" + HOSTILE, "C" + HOSTILE, ("P",), "live", Decimal("1.00"), Decimal("0.00"), 10**15)
    outcome = create(1, terms, Policy(), ReminderOffsets(), 10**14, "op")
    outcome = act(outcome.order, Action.ACCEPT, Party.CREATOR, "C" + HOSTILE, 10**14 + 1, "op")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        render.order_created(outcome.order, ZoneInfo("Asia/Shanghai"), True)
        render.action_done(outcome, ZoneInfo("Asia/Shanghai"))
    assert_nothing_raw(out.getvalue().encode())
    assert "creator:C\\x1b[2J" in out.getvalue()


def test_an_error_message_naming_a_hostile_value_is_escaped(tmp_path):
    """`_fail` is where every error line is written: a configuration key read from a file, quoted
    back in the message, reaches stderr escaped."""
    config = tmp_path / "hostile.toml"
    config.write_text('[policy]\n"bad\\u001b[2J\\u202ekey" = "3d"\n', encoding="utf-8")
    done = _cli(tmp_path / "none.db", "--config", str(config), "list")
    assert done.exit_code == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert_nothing_raw(done.stderr_bytes)
    assert "bad\\x1b[2J\\u202ekey" in done.stderr


def test_fail_escapes_whatever_message_it_is_given(capsys):
    from coopctl.cli import _fail

    exit_ = _fail(1, "internal error (" + HOSTILE + ")")
    assert exit_.exit_code == 1
    err = capsys.readouterr().err
    assert_nothing_raw(err.encode())
    assert "\\x1b[2J" in err and "\\u202e" in err


def test_replay_shows_a_hostile_history_escaped(hostile_export):
    done = _cli(hostile_export.parent / "scratch.db", "replay", str(hostile_export))
    # B's checks refuse the forged texts (exit 1 or 2, an error line naming them); today's code
    # replays them; either way what is printed is escaped
    assert done.exit_code in (0, 1, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert_nothing_raw(done.stdout_bytes)
    assert_nothing_raw(done.stderr_bytes)
    if done.exit_code == 0:
        assert_shown_escaped(done.stdout_bytes)


def test_a_what_if_replay_shows_a_hostile_history_escaped(tmp_path):
    """Only the operators are hostile here (the ids are clean, so the history replays): the
    timelines under the other policy show them escaped."""
    db = tmp_path / "book.db"
    for args in (("create", "--merchant", "M", "--creator", "C", "--product", "P", "--form", "live", "--commission", "10",
                  "--latest-start", "2026-11-20T20:00:00+08:00", "--at", "2026-11-01T10:00:00+08:00"),
                 ("accept", "1", "--creator", "C", "--at", "2026-11-01T11:00:00+08:00"),
                 ("deliver", "1", "--creator", "C", "--at", "2026-11-01T12:00:00+08:00")):
        assert _cli(db, *args, env={"COOPCTL_OPERATOR": "ops" + MARK}).exit_code == 0
    _forge(db, only={"events": ("operator",)})
    export = tmp_path / "ops.json"
    assert _cli(db, "export", "1", "--out", str(export), "--at", "2026-11-02T00:00:00+08:00").exit_code == 0
    other = tmp_path / "other.toml"
    other.write_text('[policy]\nreview_window = "1d"\n')
    done = _cli(tmp_path / "scratch.db", "replay", str(export), "--policy", str(other))
    # B's checks refuse a hostile operator read from a file (an error line); today's code replays it
    assert done.exit_code in (0, 1, 2), done.stderr
    assert_nothing_raw(done.stdout_bytes)
    assert_nothing_raw(done.stderr_bytes)
    if done.exit_code == 0:
        assert_shown_escaped(done.stdout_bytes, pieces=("\\x1b[2J", "\\u202e"))


def test_an_import_table_shows_hostile_ids_escaped(tmp_path):
    """The import summary, drawn by the printer from verdicts whose ids hold HOSTILE."""
    import contextlib
    import io
    from types import SimpleNamespace
    from zoneinfo import ZoneInfo

    from coopctl import render
    from coopctl.lifecycle import Terms, create
    from coopctl.policy import Policy, ReminderOffsets
    from decimal import Decimal

    terms = Terms("M" + HOSTILE, "C" + HOSTILE, ("P",), "live", Decimal("1.00"), Decimal("0.00"), 10**15)
    outcome = create(1, terms, Policy(), ReminderOffsets(), 10**14, "op")
    verdict = SimpleNamespace(rebuilt=outcome.order, exported=SimpleNamespace(events=outcome.events))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        render.import_done([verdict], "db" + HOSTILE, ZoneInfo("Asia/Shanghai"))
    assert_nothing_raw(out.getvalue().encode())
    assert_shown_escaped(out.getvalue().encode())


def test_doctor_findings_are_escaped(capsys):
    from types import SimpleNamespace
    from zoneinfo import ZoneInfo

    from coopctl import render

    finding = SimpleNamespace(check="ids" + HOSTILE, ok=False, message="order 1: merchant " + HOSTILE, action="fix " + HOSTILE)
    report = SimpleNamespace(database="db" + HOSTILE, findings=[finding], problems=[finding], orders=1, now=10**15)
    render.doctor_report(report, ZoneInfo("Asia/Shanghai"))
    out = capsys.readouterr().out
    assert_nothing_raw(out.encode())
    assert_shown_escaped(out.encode())


def test_rich_text_cells_keep_their_style_once_escaped():
    from rich.text import Text

    from coopctl.render import _clean

    text = Text("ok ", style="bold")
    text.append("bad" + CLEAR, style="red")
    text.append(" end")
    cleaned = _clean(text)
    assert cleaned.plain == "ok bad\\x1b[2J end"
    assert cleaned.style == "bold"
    red = [span for span in cleaned.spans if str(span.style) == "red"]
    assert [cleaned.plain[s.start:s.end] for s in red] == ["bad\\x1b[2J"]


def test_the_console_escapes_text_that_bypassed_the_tables():
    """The last pass of the printer: a renderable that no table or print escaped still comes out escaped."""
    import io

    from rich.text import Text

    from coopctl.render import _rich

    out = io.StringIO()
    console = _rich()[1](file=out, width=200, markup=False, highlight=False, no_color=True)

    class Raw:  # a renderable that hands rich its raw text directly
        def __rich_console__(self, console, options):
            yield Text("raw" + HOSTILE)

    console.print(Raw())
    assert_nothing_raw(out.getvalue().encode())
    assert "raw\\x1b[2J" in out.getvalue()


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("args", [["show", "1", "--json"], ["history", "1", "--json"], ["list", "--json"],
                                  ["notifications", "--json"]], ids=lambda a: " ".join(a))
def test_json_output_escapes_control_and_format_characters_and_keeps_the_value(hostile, args):
    done = _cli(hostile, *args)
    # show and history check what they print (SPEC section 7): ids with control characters were never
    # allowed, so they say so (exit 1) after printing; list and notifications only print
    assert done.exit_code == (1 if args[0] in ("show", "history") else 0), done.stderr
    assert_nothing_raw(done.stdout_bytes + done.stderr_bytes)
    assert "\\u202e" in done.stdout and "\\u001b" in done.stdout
    strings = _strings(json.loads(done.stdout))
    assert any(HOSTILE in text for text in strings)  # the same JSON value: nothing lost


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_json_text_is_json_dumps_exactly_for_ordinary_text():
    from coopctl.render import json_text

    value = {"merchant": "商家A", "note": "tab\tnew\nline \"quoted\" \\ é ü 😀", "n": [1, 2.5, None, True]}
    assert json_text(value) == json.dumps(value, ensure_ascii=False, indent=2)


@pytest.mark.parametrize("ch, escape", [("\u202e", "\\u202e"), ("\u200b", "\\u200b"), ("\ufeff", "\\ufeff"),
                                         ("\u2028", "\\u2028"), ("\x9b", "\\u009b"), ("\x7f", "\\u007f"),
                                         ("\U000e0001", "\\udb40\\udc01")])
def test_json_text_escapes_each_unsafe_character_as_the_same_json_value(ch, escape):
    from coopctl.render import json_text

    text = json_text({"k" + ch: "v" + ch})
    assert ch not in text and escape in text
    assert json.loads(text) == {"k" + ch: "v" + ch}


# --------------------------------------------------------------------------- on a terminal


def _on_a_terminal(db: Path, *args: str) -> tuple[int, bytes, bytes]:
    """Run the installed entry point with stdout and stderr each on its own pseudo-terminal (raw
    mode, 300 columns, colours on): what a support engineer's terminal would receive."""
    env = base_env(db)
    env.pop("NO_COLOR", None)
    env.update({"TERM": "xterm-256color", "COLUMNS": "300", "LINES": "50"})
    masters, slaves = [], []
    for _ in range(2):
        master, slave = pty.openpty()
        tty.setraw(slave)
        termios_size = struct.pack("HHHH", 50, 300, 0, 0)
        import fcntl

        fcntl.ioctl(slave, termios.TIOCSWINSZ, termios_size)
        masters.append(master)
        slaves.append(slave)
    proc = subprocess.Popen([coopctl_executable(), *args], stdin=subprocess.DEVNULL, stdout=slaves[0],
                            stderr=slaves[1], env=env, cwd=db.parent)
    for slave in slaves:
        os.close(slave)
    chunks: dict[int, list[bytes]] = {m: [] for m in masters}
    open_ = set(masters)
    while open_:
        ready, _, _ = select.select(list(open_), [], [], 30)
        if not ready:
            break
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                data = b""
            if data:
                chunks[fd].append(data)
            else:
                open_.discard(fd)
    code = proc.wait(timeout=30)
    for master in masters:
        os.close(master)
    return code, b"".join(chunks[masters[0]]), b"".join(chunks[masters[1]])


TERMINAL = [
    ("show", ["show", "1"]),
    ("history", ["history", "1"]),
    ("list", ["list"]),
    ("notifications", ["notifications"]),
    ("doctor", ["doctor", "--now", "2026-11-02T00:00:00+08:00"]),
    ("show-json", ["show", "1", "--json"]),
]


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
@pytest.mark.parametrize("name, args", TERMINAL, ids=[t[0] for t in TERMINAL])
def test_on_a_terminal_stored_text_is_shown_escaped_and_rich_colours_stay(hostile, name, args):
    code, out, err = _on_a_terminal(hostile, *args)
    assert code in (0, 1), err
    assert_nothing_raw(out, terminal=True)
    assert_nothing_raw(err, terminal=True)
    if name != "show-json":
        assert b"\x1b[" in out, "rich draws colour on a terminal (the check above is not vacuous)"
    assert_shown_escaped(out, pieces=PIECES.get(name, ("\\x1b[2J", "\\u202e")))


def test_on_a_terminal_an_error_line_is_escaped(hostile, tmp_path):
    config = tmp_path / "hostile.toml"
    config.write_text('[policy]\n"k\\u001b]52;c;aGk=\\u0007" = "3d"\n', encoding="utf-8")
    code, out, err = _on_a_terminal(hostile, "--config", str(config), "list")
    assert code == 2
    assert_nothing_raw(err, terminal=True)
    assert b"\\x1b]52;c;aGk=\\x07" in err


def test_export_on_a_terminal_shows_stored_control_characters_as_escapes(hostile):
    """Ids stored before SPEC section 1's rules may hold them: the export is the same JSON value,
    with nothing a terminal would act on."""
    done = _cli(hostile, "export", "--all", "--at", "9999-01-01T00:00Z")
    assert done.exit_code == 0, done.stderr
    assert_nothing_raw(done.stdout_bytes)
    assert any(HOSTILE in text for text in _strings(json.loads(done.stdout)))


def test_the_fast_class_of_unsafe_characters_covers_every_one_this_python_knows():
    import unicodedata

    from coopctl.trust import UNSAFE, shown

    missed = [hex(cp) for cp in range(0x110000)
              if chr(cp) != "\n" and shown(chr(cp)) != chr(cp) and not UNSAFE.match(chr(cp))]
    assert missed == []
    assert unicodedata.category("\u202e") == "Cf" and UNSAFE.match("\u202e")
