"""Streaming import, replay and verify (issue 14; SPEC section 2, "Export, replay, import").

The files are built quickly: orders through the rules and the bulk path (tests/dbtools.py's
`build`), then one `export --all` of that book; never thousands of CLI calls.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import base_env, coopctl_executable
from dbtools import BASE, EXPORTED_AT, exported_book, stress

def coopctl(*args, db: Path, cwd: Path, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([coopctl_executable(), *map(str, args)], capture_output=True, env=base_env(db), cwd=cwd,
                          input=input, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("streaming")
    exported_book(folder, 300)
    return folder


def counts(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("orders", "events", "notifications")]


def held_after_kill(db: Path) -> list[int]:
    """The counts a killed import left in `db`: none when it died before its tables were committed
    (an empty file, or one whose schema the kill rolled back, as on a slow machine at 0.2 s)."""
    if not db.exists() or not db.stat().st_size:
        return [0, 0, 0]
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return counts(db) if tables else [0, 0, 0]


def peak_rss_kb(argv: list[str], env: dict, cwd: Path) -> tuple[int, bytes]:
    """Run a command, return (peak RSS of the child in KB, its stderr). The peak is the child's
    own high-water mark (VmHWM of /proc/PID/status, which exec resets), read until it exits:
    `wait4`'s ru_maxrss would also count what the child held before its exec, as a fork of a
    large test process (an xdist worker), however small the command is."""
    import time

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return peak, proc.stderr.read()


# --------------------------------------------------------------------------- memory


@pytest.mark.stress
def test_memory_of_import_and_replay_does_not_grow_with_the_number_of_orders(tmp_path):
    """20,000 and 40,000 orders (70 and 140 MB of JSON; 4,000 and 8,000 by default, to keep the
    suite short: COOPCTL_STRESS=2 runs the full size): the peak RSS of import and of replay
    --summary is within 30% (parsing the whole file at once needed about 4.5 times its size)."""
    from dbtools import stress

    base = 20_000 if stress() >= 2 else 4_000  # the 20,000 vs 40,000 with COOPCTL_STRESS=2 or more
    small, large = exported_book(tmp_path, base), exported_book(tmp_path, 2 * base)
    assert large.stat().st_size > 1.9 * small.stat().st_size
    peaks = {}
    for name, path in (("small", small), ("large", large)):
        env = base_env(tmp_path / f"into-{name}.db")
        for command in (["import", path], ["replay", path, "--summary"]):
            rss, err = peak_rss_kb([coopctl_executable(), *map(str, command)], env, tmp_path)
            assert err == b"", err
            peaks[(command[0], name)] = rss
    for command in ("import", "replay"):
        assert peaks[(command, "large")] < 1.3 * peaks[(command, "small")], peaks
        assert peaks[(command, "large")] < 200_000, peaks  # KB: far below the 140 MB file's 4.5 times
    assert counts(tmp_path / "into-large.db") == counts(tmp_path / f"b{2 * base}.db")


# --------------------------------------------------------------------------- all or nothing


def _bad_last_order(source: Path, target: Path, how: str) -> None:
    document = json.loads(source.read_text(encoding="utf-8"))
    last = document["orders"][-1]
    if how == "diverges":
        last["events"][0]["operator"] = "mallory"
    elif how == "malformed":
        last["events"][0]["seq"] = "one"
    target.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    if how == "truncated":  # the last order's closing is cut off: the JSON itself ends too early
        text = source.read_bytes()
        target.write_bytes(text[: text.rindex(b"}", 0, len(text) - 10)])


@pytest.mark.parametrize("how, code", [("diverges", 1), ("truncated", 2)])
def test_a_file_bad_at_its_last_order_writes_nothing(files, tmp_path, how, code):
    bad = tmp_path / "bad.json"
    _bad_last_order(files / "e300.json", bad, how)
    new = tmp_path / "new.db"
    done = coopctl("import", bad, db=new, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert done.stderr.decode().startswith("error: ") and done.stderr.count(b"\n") == 1
    assert not new.exists() and not any(p.name.startswith("new.db") for p in tmp_path.iterdir())
    # into a database that exists: it keeps what it held, nothing more
    existing = tmp_path / "existing.db"
    assert coopctl("init", db=existing, cwd=tmp_path).returncode == 0
    done = coopctl("import", bad, db=existing, cwd=tmp_path)
    assert done.returncode == code
    assert counts(existing) == [0, 0, 0]


@pytest.mark.stress
def test_import_killed_at_random_points_holds_all_or_nothing(files, tmp_path):
    """SIGKILL at 10 (x COOPCTL_STRESS) random moments: the target holds every order or none."""
    source = files / "e300.json"
    expected = counts(files / "b300.db")
    rng = random.Random(14)
    outcomes = []
    for attempt in range(10 * stress()):
        db = tmp_path / f"k{attempt}.db"
        proc = subprocess.Popen([coopctl_executable(), "import", str(source)], env=base_env(db), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        held = held_after_kill(db)
        assert held in ([0, 0, 0], expected), (attempt, held)
        outcomes.append(held == expected)
    # whatever the kills did, a later import completes it and the result is the file's
    db = tmp_path / "k0.db"
    if not outcomes[0]:
        assert coopctl("import", source, db=db, cwd=tmp_path).returncode == 0
    assert counts(db) == expected


# --------------------------------------------------------------------------- round trip and layouts


def test_the_round_trip_keeps_every_byte_of_every_history(files, tmp_path):
    source = files / "e300.json"
    copy = tmp_path / "copy.db"
    assert coopctl("import", source, db=copy, cwd=tmp_path).returncode == 0
    again = coopctl("export", "--all", "--at", EXPORTED_AT, db=copy, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == source.read_bytes()


def test_import_from_stdin_through_a_pipe(files, tmp_path):
    book, copy = files / "b300.db", tmp_path / "piped.db"
    exporter = subprocess.Popen([coopctl_executable(), "export", "--all", "--at", EXPORTED_AT], stdout=subprocess.PIPE,
                                env=base_env(book), cwd=tmp_path)
    importer = subprocess.run([coopctl_executable(), "import", "-", "--json"], stdin=exporter.stdout, capture_output=True,
                              env=base_env(copy), cwd=tmp_path)
    exporter.stdout.close()
    assert exporter.wait() == 0 and importer.returncode == 0, importer.stderr
    report = json.loads(importer.stdout)
    assert report["imported"] == list(range(1, 301)) and counts(copy) == counts(book)
    assert coopctl("export", "--all", "--at", EXPORTED_AT, db=copy, cwd=tmp_path).stdout == (files / "e300.json").read_bytes()


def _reordered(source: Path, target: Path, keys: list[str]) -> None:
    document = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(json.dumps({k: document[k] for k in keys}, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("keys, stdin", [
    (["orders", "format", "version", "exported_at"], False),
    (["exported_at", "format", "orders", "version"], True),  # as `jq -S` sorts them
])
def test_the_top_level_keys_may_come_in_any_order(files, tmp_path, keys, stdin):
    moved = tmp_path / "moved.json"
    _reordered(files / "e300.json", moved, keys)
    copy = tmp_path / "copy.db"
    if stdin:
        done = coopctl("import", "-", db=copy, cwd=tmp_path, input=moved.read_bytes())
    else:
        done = coopctl("import", moved, db=copy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert counts(copy) == counts(files / "b300.db")
    replayed = coopctl("replay", "-" if stdin else moved, "--summary", db=copy, cwd=tmp_path, input=moved.read_bytes() if stdin else None)
    assert replayed.returncode == 0 and b"300 of 300 orders reproduced" in replayed.stdout


@pytest.mark.parametrize("stdin", [True], ids=["stdin"])
def test_checks_that_need_a_key_after_the_orders_run_at_the_end(files, tmp_path, stdin):
    """A format or exported_at after the orders is checked when it arrives: a wrong one refuses
    the whole import (one transaction), though every order before it was fine."""
    document = json.loads((files / "e300.json").read_text(encoding="utf-8"))
    for key, value, says in (("format", "other", "not a coopctl export"), ("exported_at", "2026-11-01T00:00:00+08:00", "before the last event")):
        bad = {"orders": document["orders"], **{k: document[k] for k in ("format", "version", "exported_at")}, key: value}
        path = tmp_path / "late.json"
        path.write_text(json.dumps(bad, ensure_ascii=False), encoding="utf-8")
        db = tmp_path / f"late-{key}.db"
        done = coopctl("import", "-" if stdin else path, db=db, cwd=tmp_path, input=path.read_bytes() if stdin else None)
        assert done.returncode == 2 and says in done.stderr.decode(), done.stderr
        assert not db.exists()


# --------------------------------------------------------------------------- replay --summary and --order


def test_replay_summary_prints_only_what_does_not_reproduce_then_the_totals(files, tmp_path):
    good = coopctl("replay", files / "e300.json", "--summary", db=tmp_path / "x.db", cwd=tmp_path)
    assert good.returncode == 0 and good.stderr == b""
    lines = good.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("300 of 300 orders reproduced;") and "orders/s" in lines[0]
    document = json.loads((files / "e300.json").read_text(encoding="utf-8"))
    document["orders"][6]["events"][0]["operator"] = "mallory"
    document["orders"][200]["status"] = "completed"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    result = coopctl("replay", bad, "--summary", db=tmp_path / "x.db", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["order 7", "order 201"]
    assert "DIVERGES at event seq 1" in lines[0] and "outcome differs" in lines[1]
    assert lines[2].startswith("298 of 300 orders reproduced; 2 diverge;")
    assert result.stderr.decode().startswith("error: order 7 diverges at event seq 1") and "(2 of 300 orders diverge)" in result.stderr.decode()
    as_json = coopctl("replay", bad, "--summary", "--json", db=tmp_path / "x.db", cwd=tmp_path)
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["orders"] == 300 and report["reproduced"] == 298
    assert [d["order"] for d in report["diverge"]] == [7, 201]


def test_replay_order_replays_only_the_named_orders(files, tmp_path):
    result = coopctl("replay", files / "e300.json", "--order", "5", "--order", "250", "--json", db=tmp_path / "x.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [v["order"] for v in json.loads(result.stdout)] == [5, 250]
    timeline = coopctl("replay", files / "e300.json", "--order", "5", db=tmp_path / "x.db", cwd=tmp_path)
    assert timeline.returncode == 0 and b"order 5 as replayed from e300.json" in timeline.stdout
    assert b"order 6 " not in timeline.stdout and b"1 of 1 order reproduced" in timeline.stdout
    missing = coopctl("replay", files / "e300.json", "--order", "5", "--order", "301", db=tmp_path / "x.db", cwd=tmp_path)
    assert missing.returncode == 3 and missing.stderr.decode() == "error: no order 301 in e300.json\n"
    invalid = coopctl("replay", files / "e300.json", "--order", "abc", db=tmp_path / "x.db", cwd=tmp_path)
    assert invalid.returncode == 2


# --------------------------------------------------------------------------- the reader itself


def test_numbers_stay_exact_and_are_read_as_json_reads_them():
    import io

    from coopctl import streaming

    big = 2**53 - 1
    item = {"a": streaming._plain(big, "x", "a")}
    assert item["a"] == big and type(item["a"]) is int
    stream = streaming.open_export(io.BytesIO(b'{"format": "coopctl-export", "version": 1, "exported_at": "2026-12-01T00:00:00Z", "x": [0.1, 12345678901234567890123], "orders": []}'), "t")
    assert stream.header["x"] == [0.1, 12345678901234567890123] and type(stream.header["x"][0]) is float
    with pytest.raises(Exception, match="too large"):
        streaming.open_export(io.BytesIO(b'{"x": 1' + b"0" * 45 + b'}'), "t")


def test_surrogate_escapes_split_across_reads_are_judged_whole():
    import io

    from coopctl import streaming
    from coopctl.errors import InvalidInput

    class Trickle(io.RawIOBase):  # three bytes per read: every escape is cut somewhere
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def read(self, size=-1):
            chunk, self.data = self.data[:3], self.data[3:]
            return chunk

    good = b'{"x": "\\ud83d\\ude00 and \\\\ud800", "orders": []}'
    stream = streaming.open_export(Trickle(good), "t")
    assert stream.header["x"] == "\U0001f600 and \\ud800"
    for bad in (b'{"x": "\\ud800", "orders": []}', b'{"x": "\\udc00", "orders": []}', b'{"x": "\\ud800\\u0041"}'):
        with pytest.raises(InvalidInput, match="not valid Unicode"):
            streaming.open_export(Trickle(bad), "t")


def _hostile_windows() -> list[bytes]:
    """Windows at and around the limits of the deep-nesting and long-number refusals."""
    gap = b" " * 64
    return [
        b"{" * 512, b"{" * 511, b"[" * 511 + b"}" + b"[" * 511, (b"{" + gap) * 512, (b"{" + gap + b" ") * 512,
        (b"{" + gap) * 511 + b"]" + b"{", (b"[" + gap) * 300 + (b"{\n" * 212), b'{"a": ' * 600,
        b"1" * 4000, b"1" * 3999, b"x" + b"1" * 4000 + b"y", b"a" * 1998 + b"1" * 4000, b"a" * 1999 + b"1" * 3999 + b"b",
        b"a" * 2001 + b"1" * 4000, b"1" * 2000 + b"," + b"1" * 2000, b'{"id": 12, "hash": "0123"}' * 3000,
    ]


@pytest.mark.parametrize("window", _hostile_windows(), ids=range(len(_hostile_windows())))
def test_the_pre_filters_never_clear_a_window_the_regexes_refuse(window):
    """The cheap checks before `_DEEP` and `_LONG_NUMBER` only skip windows that the regex would
    let through: the refusal is still the regex's own."""
    from coopctl import streaming

    assert streaming._maybe_deep(window) or not streaming._DEEP.search(window)
    assert streaming._maybe_long_number(window) or not streaming._LONG_NUMBER.search(window)


@pytest.mark.parametrize("read", [40_000, 50_021, 1 << 20])  # (at least the carry of 33 KB, as every real read is)
def test_deep_nesting_and_long_numbers_are_refused_across_reads(read):
    import io

    from coopctl import streaming
    from coopctl.errors import InvalidInput

    class Pieces(io.RawIOBase):  # `read` bytes at a time, whatever is asked
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def read(self, size=-1):
            chunk, self.data = self.data[:read], self.data[read:]
            return chunk

    head = b'{"format": "coopctl-export", "version": 1, "exported_at": "2026-12-01T00:00:00Z", "x": '
    deep = head + (b"[ " + b" " * 60) * 600 + b"]" * 600 + b', "orders": []}'
    with pytest.raises(InvalidInput, match="nested too deeply"):
        list(streaming.open_export(Pieces(deep), "t").orders())
    long_number = head + b'"' + b"7" * 4000 + b'", "orders": []}'
    with pytest.raises(InvalidInput, match="a number in it is too large"):
        list(streaming.open_export(Pieces(long_number), "t").orders())
    shallow = head + b"[" * 100 + b"]" * 100 + b', "y": "' + b"7" * 3999 + b'", "orders": []}'
    assert list(streaming.open_export(Pieces(shallow), "t").orders()) == []


# --------------------------------------------------------------------------- progress


def test_import_and_replay_show_a_bar_with_rate_and_time_left_on_a_terminal_only(files, tmp_path):
    from test_exchange_scale import _run_on_a_terminal

    source = files / "e300.json"
    assert source.stat().st_size > 1 << 20  # big enough for a bar
    env = {**base_env(tmp_path / "bar.db"), "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR")
    code, _, terminal = _run_on_a_terminal(["import", str(source)], env, tmp_path)
    assert code == 0
    assert b"import" in terminal and b"300 orders (" in terminal and b"/s)" in terminal and b"left" in terminal
    code, out, terminal = _run_on_a_terminal(["replay", str(source), "--summary"], env, tmp_path)
    assert code == 0 and b"replay" in terminal and out.startswith(b"300 of 300 orders reproduced")
    piped = coopctl("replay", source, "--summary", db=tmp_path / "bar.db", cwd=tmp_path)
    assert piped.returncode == 0 and piped.stderr == b""
