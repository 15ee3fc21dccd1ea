"""Crash safety: `coopctl tick` killed with SIGKILL at random points of a large run never leaves
a damaged file, a broken history or a half-applied transition, and a rerun finishes with exactly
the histories of an uninterrupted run.

Sized by COOPCTL_STRESS (default 1: 2,000 due orders in every timed status, 2,333 transitions
ticked in batches of 50, and at least 20 kills; COOPCTL_STRESS=5 is 10,000 orders and 100
kills). Where each kill lands is drawn from a seeded generator (COOPCTL_CRASH_SEED to vary it):
mostly a number of transitions into the run, watched from another connection, plus a few random
milliseconds into the batch then being decided, written or committed; sometimes a random moment
of start-up. After each kill the next run starts on the same file (and meets its hot WAL); when
a run completes, its histories are compared with an uninterrupted run's and a fresh copy starts
the next round.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from coopctl.policy import DAY, iso
from conftest import base_env, coopctl_executable
from dbtools import BASE, build, event_lists, integrity, stress, verify_all

# 1,000 orders and 12 kills by default, to keep the suite short; COOPCTL_STRESS=2 or more: 2,000 and 20 per step
ORDERS = 1000 if stress() == 1 else 2000 * stress()
KILLS = 12 if stress() == 1 else 20 * stress()
BATCH = 50
NOW = BASE + 40 * DAY  # every order of the book is due by then, cascades included
SEED = int(os.environ.get("COOPCTL_CRASH_SEED", "20261126"))


def fresh(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return target


def start_tick(db: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [coopctl_executable(), "tick", "--now", iso(NOW), "--batch", str(BATCH), "--json"],
        env=base_env(db), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def kill_at(proc: subprocess.Popen, db: Path, events: int | None, rng: random.Random) -> None:
    """SIGKILL `proc` once the database holds `events` events (watched from another connection),
    a random few milliseconds into the batch it is then working on; with `events` None, at a
    random moment of its start-up or first batch."""
    if events is None:
        time.sleep(rng.uniform(0.1, 1.5))
    else:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            while proc.poll() is None and conn.execute("SELECT count(*) FROM events").fetchone()[0] < events:
                time.sleep(0.005)
        finally:
            conn.close()
        time.sleep(rng.uniform(0, 0.05))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # (it may still exit in between: its exit code tells)


@pytest.mark.stress
def test_tick_killed_at_random_points_leaves_sound_histories_and_a_rerun_finishes_the_same(tmp_path, capsys):
    pristine = tmp_path / "pristine.db"
    build(pristine, ORDERS)
    pristine_known = verify_all(pristine)
    events_before = count(pristine, "SELECT count(*) FROM events")

    reference = fresh(pristine, tmp_path / "reference.db")
    started = time.monotonic()
    proc = start_tick(reference, tmp_path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    proc.stderr.close()
    duration = time.monotonic() - started
    expected = event_lists(reference)
    to_apply = sum(map(len, expected.values())) - events_before
    assert to_apply >= ORDERS  # every order moves at least once

    rng = random.Random(SEED)
    target = fresh(pristine, tmp_path / "killed.db")
    known = dict(pristine_known)
    kills, rounds, progress = 0, 0, []
    while kills < KILLS:
        done = count(target, "SELECT count(*) FROM events")
        remaining = events_before + to_apply - done
        proc = start_tick(target, tmp_path)
        # early points more often, so that a round takes several kills before a run completes
        kill_at(proc, target, None if rng.random() < 0.1 else done + int(rng.random() ** 2 * remaining), rng)
        code = proc.wait()
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert code in (0, -signal.SIGKILL), stderr
        killed = code == -signal.SIGKILL
        # After every kill: a sound file, every history verified and replayed, nothing half-done.
        assert integrity(target) == "ok"
        known = verify_all(target, known=known)
        applied = count(target, "SELECT count(*) FROM events") - events_before
        finished = count(target, "SELECT count(*) FROM tick_runs") == 1
        if killed and not finished:
            kills += 1
            # of this run's work (none left: killed while recording its run, after the last batch)
            progress.append((applied - (done - events_before)) / remaining if remaining else 1.0)
            assert applied < to_apply or count(target, f"SELECT count(*) FROM orders WHERE wake_at <= {NOW}") == 0
            continue
        # The run completed (before its kill, or the kill came after its last commit).
        assert event_lists(target) == expected
        rounds += 1
        target = fresh(pristine, target)
        known = dict(pristine_known)

    # The last killed run is finished by a rerun, with the histories of the uninterrupted run.
    proc = start_tick(target, tmp_path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    proc.stderr.close()
    assert integrity(target) == "ok"
    verify_all(target, known=known)
    assert event_lists(target) == expected
    assert count(target, "SELECT count(*) FROM tick_runs") == 1

    early = [p for p in progress if p == 0]
    assert len(progress) - len(early) >= KILLS // 2, f"too few kills landed after a commit: {progress}"
    with capsys.disabled():  # the figures show in CI output, also under -q
        print(
            f"\ncrash: {ORDERS} orders, {to_apply} transitions per run in batches of {BATCH}; {kills} SIGKILLs "
            f"({len(progress) - len(early)} after some batches were committed, {len(early)} before the first commit), "
            f"{rounds} runs completed between them; after every kill integrity ok and every history replays; "
            f"reruns end identical to an uninterrupted run ({duration:.1f}s; seed {SEED})"
        )
