"""`coopctl list` (SPEC section 4, "Lists"): a page of 50 as a table, how many of how many, and
the exact command of the next page (the table's last line on a terminal, stderr when piped);
--sort, keyset --after cursors that walk the whole book with no repeats or gaps, every filter;
and every malformed option refused with one `error:` line and exit 2."""

from __future__ import annotations

import json
import os
import pty
import shlex
import subprocess
from pathlib import Path

import pytest

from coopctl.policy import DAY, iso
from coopctl.store import Store, locate
from conftest import base_env, coopctl_executable
from dbtools import BASE, SCENARIOS, scenario_outcome

ORDERS = 130


@pytest.fixture
def book(db_path: Path, invoke) -> Path:
    """130 orders of 7 merchants and 11 creators in six statuses; a tick 4 days on expires the
    pending ones (orders without a deadline, which come last by deadline)."""
    store = Store(locate(str(db_path)))
    store.initialise(made_by="test")
    with store.write() as tx:
        tx.insert_new([
            scenario_outcome(i, BASE + i * 60_000_000, BASE + 10 * DAY, SCENARIOS[i % len(SCENARIOS)])
            for i in range(1, ORDERS + 1)
        ])
    store.dispose()
    assert invoke("tick", "--now", iso(BASE + 4 * DAY)).exit_code == 0
    return db_path


def every(invoke, *args: str) -> list[dict]:
    result = invoke("list", *args, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # every record: no footer
    return [json.loads(line) for line in result.stdout.splitlines()]


def walk(invoke, *args: str) -> tuple[list[int], int]:
    """Follow the next-page commands from `coopctl list ARGS` to the end: (ids in order, pages)."""
    command, ids, pages = ["list", *args], [], 0
    while True:
        result = invoke(*command)
        assert result.exit_code == 0, result.stderr
        pages += 1
        ids += [o["id"] for o in json.loads(result.stdout)]
        footer = result.stderr.strip()
        if "next page: " not in footer:
            return ids, pages
        words = shlex.split(footer.split("next page: ", 1)[1])
        assert words[:2] == ["coopctl", "list"]
        command = words[1:]


def test_a_table_shows_50_rows_and_says_how_many_of_how_many_on_stderr_when_piped(book, invoke):
    result = invoke("list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip("\n").splitlines()
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 50 and "of" not in result.stdout.split("\n")[-2]
    footer = result.stderr.strip()
    assert footer.startswith("50 of 130 orders; times in Asia/Shanghai; next page: coopctl list --after ")
    assert result.stderr.count("\n") == 1


def test_on_a_terminal_the_footer_is_the_tables_last_line(book, tmp_path):
    env = {**base_env(book), "COLUMNS": "200"}
    leader, follower = pty.openpty()
    proc = subprocess.Popen([coopctl_executable(), "list", "--limit", "3"], stdin=follower, stdout=follower,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    lines = [line for line in out.decode().replace("\r", "").splitlines() if line.strip()]
    assert lines[-1].startswith("3 of 130 orders; times in Asia/Shanghai; next page: coopctl list --limit 3 --after ")
    assert proc.stderr.read() == b""
    proc.stderr.close()


@pytest.mark.parametrize("sort", ["id", "-id", "created", "-created", "deadline", "-deadline"])
def test_the_next_page_commands_walk_the_whole_book_with_no_repeats_or_gaps(book, invoke, sort):
    expected = [o["id"] for o in every(invoke, "--sort", sort)]
    assert sorted(expected) == list(range(1, ORDERS + 1))
    ids, pages = walk(invoke, "--sort", sort, "--limit", "17", "--json")
    assert ids == expected and pages == 8
    if sort.endswith("deadline"):  # the orders without a deadline come last, in both directions
        deadlines = [o["deadline"] for o in every(invoke, "--sort", sort)]
        assert None in deadlines and deadlines.index(None) == len([d for d in deadlines if d is not None])
        assert all(d is None for d in deadlines[deadlines.index(None):])


@pytest.mark.parametrize("args", [
    ["--status", "live", "--status", "effective"],
    ["--terms", "in_force", "--sort", "deadline"],
    ["--merchant", "商家-3"],
    ["--creator", "达人-1*", "--sort", "-created"],
    ["--product", "P-1*"],
    ["--created-after", iso(BASE + 30 * 60_000_000), "--created-before", iso(BASE + 100 * 60_000_000)],
    ["--due-before", iso(BASE + 9 * DAY)],
], ids=lambda a: " ".join(a[:2]))
def test_filters_combine_and_their_pages_walk_every_match(book, invoke, args):
    everything = every(invoke, "--sort", "id")
    matches = every(invoke, *args)
    ids, _ = walk(invoke, *args, "--limit", "4", "--json")
    assert ids == [o["id"] for o in matches] and len(set(ids)) == len(ids) and ids
    assert {o["id"] for o in matches} < {o["id"] for o in everything}


def test_each_filter_selects_what_it_says(book, invoke):
    everything = every(invoke)
    assert {o["id"] for o in every(invoke, "--terms", "void")} == {o["id"] for o in everything if o["terms"] == "void"}
    assert [o["id"] for o in every(invoke, "--product", "P-12")] == [12]
    assert {o["id"] for o in every(invoke, "--merchant", "商家-3")} == {o["id"] for o in everything if o["merchant"] == "商家-3"}
    assert {o["id"] for o in every(invoke, "--creator", "达人-1*")} == {
        o["id"] for o in everything if o["creator"].startswith("达人-1")
    }
    assert every(invoke, "--status", "pending", "--terms", "in_force") == []  # AND: nothing is both
    overdue = every(invoke, "--overdue")
    assert overdue and all(o["deadline"] is not None for o in overdue)
    assert [o["deadline"] for o in overdue] == sorted(o["deadline"] for o in overdue)


def test_a_machine_format_cut_by_a_limit_says_so_on_stderr(book, invoke):
    result = invoke("list", "--format", "jsonl", "--limit", "5")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 5
    assert result.stderr.startswith("5 of 130 orders; next page: coopctl list --limit 5 --format jsonl --after ")
    assert len(every(invoke)) == ORDERS  # without --limit: every record, nothing on stderr


@pytest.mark.parametrize("args, message", [
    (["--after", "not a cursor!"], "error: --after: not a cursor of `coopctl list`"),
    (["--after", "bm90IGpzb24"], "error: --after: not a cursor of `coopctl list`"),
    (["--after", "WyJpZCIsMywzXQ", "--sort", "deadline"], "error: --after: this cursor is for --sort 'id'"),
    (["--after", "WyJpZCIsMyw0XQ"], "error: --after: not a cursor of `coopctl list`"),
    (["--sort", "price"], "error: --sort: unknown sort key 'price'"),
    (["--status", "paid"], "error: --status: unknown status 'paid'"),
    (["--terms", "signed"], "error: --terms: unknown terms state 'signed'"),
    (["--liable", "nobody"], "error: --liable: must be merchant or creator"),
    (["--limit", "100000000"], "error: --limit must be from 1 to 100000"),
    (["--limit", "5", "--all"], "error: --all and --limit cannot be given together"),
    (["--format", "xml"], "error: --format: unknown format 'xml'"),
    (["--merchant", "a\x1bb"], "error: merchant id"),
])
def test_malformed_options_are_one_error_line_and_exit_2(book, invoke, args, message):
    result = invoke("list", *args)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize("fields", [
    {"merchant": "商家*"}, {"creator": "达人-1*"}, {"product": "P-12*"}, {"merchant": "商家*", "creator": "达人-1*"},
    {"merchant": "商家*", "statuses": ("effective", "live", "expired")}, {"product": "P-12*", "sort": "deadline"},
    {"creator": "达人*", "sort": "created", "descending": True}, {"merchant": "商家-*", "sort": "deadline", "descending": True},
    {"product": "P-12*", "creator": "达人-1*"},
])
@pytest.mark.parametrize("page", [4, 50])
def test_a_prefix_searched_value_by_value_pages_exactly_as_its_range(book, fields, page, monkeypatch):
    """A prefix that matches few distinct values is searched one exact value at a time and
    merged (`Tx._prefixes_as_values`); its pages, walked with their cursors, must be those of the
    one range search (PREFIX_VALUES 0 forces it), an order with two matching products once."""
    from coopctl.config import Settings
    from coopctl.service import Service, list_page
    from coopctl.store import ListQuery, Tx

    def pages() -> list[list[int]]:
        store = Store(locate(str(book)))
        try:
            service, after, found = Service(store, Settings(), "test"), None, []
            while True:
                result = list_page(service, ListQuery(**fields), after=after, limit=page)
                found.append([o.id for o in result.orders])
                if result.next_cursor is None:
                    return found
                after = result.next_cursor
        finally:
            store.dispose()

    store = Store(locate(str(book)))
    try:
        with store.read() as tx:
            assert tx._prefixes_as_values(ListQuery(**fields))  # searched value by value indeed
    finally:
        store.dispose()
    by_value = pages()
    monkeypatch.setattr(Tx, "PREFIX_VALUES", 0)
    by_range = pages()
    assert by_value == by_range and sum(map(len, by_value)) > 0
    ids = [i for p in by_value for i in p]
    assert len(ids) == len(set(ids))
